/*
 * fuzz_gateway.c - libFuzzer target for what the guest gateway parses of a
 * guest's own bytes, beyond the HTTP (libmicrohttpd) and JSON (jansson)
 * layers: an uploaded file (bridge/media.c: media_sniff, media_strip), a
 * typed resume code (bridge/secret.c: sec_resume_normalise), and an
 * invitation lifetime from a staff command (bridge/invites.c:
 * inv_parse_duration).  The first byte chooses which; the rest is the input.
 *
 * Oracle, besides ASan and UBSan:
 *  - media: stripping never grows the file, keeps its signature, leaves no
 *    metadata it promised to remove (no APP1..APP15/COM segment before a
 *    JPEG's scan; no eXIf/tEXt/zTXt/iTXt/tIME chunk in a PNG), and stripping
 *    the result again changes nothing;
 *  - resume codes: an accepted code has the ABCD-EFGH-JKLM-NPQR shape and
 *    normalising it again gives itself;
 *  - durations: an accepted one is positive and at most a year and a day.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "invites.h"
#include "media.h"
#include "secret.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_jpeg(const unsigned char *b, size_t n)
{
	size_t i = 2;
	while (i + 4 <= n && b[i] == 0xff) {
		unsigned m = b[i + 1];
		if (m == 0xff) {
			i++;
			continue;
		}
		if (m == 0xda)
			return;
		if ((m >= 0xe1 && m <= 0xef) || m == 0xfe)
			abort(); /* metadata left before the scan */
		i += 2 + ((size_t)b[i + 2] << 8 | b[i + 3]);
	}
}

static void check_png(const unsigned char *b, size_t n)
{
	static const char *const gone[] = {"eXIf", "tEXt", "zTXt", "iTXt", "tIME"};
	for (size_t i = 8; i + 12 <= n;) {
		size_t len = (size_t)b[i] << 24 | (size_t)b[i + 1] << 16 | (size_t)b[i + 2] << 8 | b[i + 3];
		for (size_t k = 0; k < 5; k++) {
			if (!memcmp(b + i + 4, gone[k], 4))
				abort();
		}
		if (len > n - i - 12)
			abort(); /* the stripped file must be well formed */
		i += len + 12;
	}
}

static void fuzz_media(const uint8_t *data, size_t size)
{
	const struct media_kind *k = media_sniff(data, size);
	if (!k)
		return;
	unsigned char *b = malloc(size ? size : 1);
	memcpy(b, data, size);
	size_t n = size;
	if (media_strip(k, b, &n) == TH_OK) {
		if (n > size || media_sniff(b, n) != k)
			abort();
		if (!strcmp(k->mimetype, "image/jpeg"))
			check_jpeg(b, n);
		if (!strcmp(k->mimetype, "image/png"))
			check_png(b, n);
		size_t again = n;
		if (media_strip(k, b, &again) != TH_OK || again != n)
			abort(); /* stripping is idempotent */
	}
	free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t which = data[0] % 3;
	data++;
	size--;
	if (which == 0) {
		fuzz_media(data, size);
		return 0;
	}
	char *s = malloc(size + 1);
	memcpy(s, data, size);
	s[size] = '\0';
	if (which == 1) {
		char out[SEC_RESUME_LEN + 1], again[SEC_RESUME_LEN + 1];
		if (sec_resume_normalise(s, out)) {
			if (strlen(out) != SEC_RESUME_LEN || out[4] != '-' || out[9] != '-' || out[14] != '-')
				abort();
			if (!sec_resume_normalise(out, again) || strcmp(out, again) != 0)
				abort();
		}
	} else {
		uint64_t ms;
		if (inv_parse_duration(s, &ms) == TH_OK && (ms == 0 || ms > 367ull * 24 * 3600 * 1000))
			abort();
	}
	free(s);
	return 0;
}
