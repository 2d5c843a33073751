/*
 * fuzz_sdp.c - libFuzzer target for the call signalling filter
 * (bridge/sdp.h), which reads SDP and ICE candidates from both the guest's
 * page and staff's clients.  The input is given to sdp_filter whole, and to
 * sdp_candidate_filter.
 *
 * Oracle, besides ASan and UBSan:
 *  - an accepted SDP comes out printable, in CRLF lines, and a second pass
 *    changes nothing (a fixed point: nothing left to drop);
 *  - every a=candidate line left is a relay candidate whose raddr, if any,
 *    is 0.0.0.0; every c= line is "c=IN IP4 0.0.0.0";
 *  - a candidate accepted is a relay candidate, and filtering it again
 *    gives the same text.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzlib.h"
#include "sdp.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 1 if candidate text @p c (no "a=") is "candidate:F C T P A PORT typ relay" then name/value
 * pairs, each single-space separated, with any raddr 0.0.0.0 and rport 0. */
static int relay_ok(const char *c)
{
	char *line = xstrdup(c);
	char *tok[128];
	int k = 0;
	for (char *p = line; k < 128;) {
		tok[k++] = p;
		char *sp = strchr(p, ' ');
		if (!sp)
			break;
		*sp = '\0';
		p = sp + 1;
	}
	int ok = k >= 8 && k <= 64 && (k - 8) % 2 == 0 && strcmp(tok[6], "typ") == 0 &&
	         strcmp(tok[7], "relay") == 0;
	for (int i = 8; ok && i + 1 < k; i += 2) {
		if (strcmp(tok[i], "raddr") == 0 && strcmp(tok[i + 1], "0.0.0.0") != 0)
			ok = 0;
		if (strcmp(tok[i], "rport") == 0 && strcmp(tok[i + 1], "0") != 0)
			ok = 0;
	}
	free(line);
	return ok;
}

static void check_line(const char *s, size_t n)
{
	if (n >= 12 && memcmp(s, "a=candidate:", 12) == 0) {
		char *line = xstrndup(s + 2, n - 2);
		if (!relay_ok(line))
			abort();
		free(line);
	} else if (n >= 2 && memcmp(s, "c=", 2) == 0) {
		if (n != 16 || memcmp(s, "c=IN IP4 0.0.0.0", 16) != 0)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	char *out = NULL;
	unsigned dropped;
	if (sdp_filter(in, size, &out, &dropped) == TH_OK) {
		size_t len = strlen(out), i = 0;
		while (i < len) {
			const char *e = strstr(out + i, "\r\n");
			if (!e)
				abort(); /* every line ends in CRLF */
			check_line(out + i, (size_t)(e - (out + i)));
			i = (size_t)(e - out) + 2;
		}
		char *again = NULL;
		if (sdp_filter(out, len, &again, &dropped) != TH_OK || strcmp(again, out) != 0 || dropped)
			abort();
		free(again);
		free(out);
	} else if (out) {
		abort();
	}
	char *c = NULL;
	if (sdp_candidate_filter(in, size, &c) == TH_OK) {
		if (!relay_ok(strncmp(c, "a=", 2) == 0 ? c + 2 : c))
			abort();
		char *again = NULL;
		if (sdp_candidate_filter(c, strlen(c), &again) != TH_OK || strcmp(again, c) != 0)
			abort();
		free(again);
		free(c);
	} else if (c) {
		abort();
	}
	return 0;
}
