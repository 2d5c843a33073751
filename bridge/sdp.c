/*
 * sdp.c - drop every address but the TURN relay's from SDP and ICE
 * candidates (sdp.h).  A line-by-line rewrite: SDP is a list of
 * "<type>=<value>" lines (RFC 8866, 5), and only four kinds carry an
 * address of the sender's: a=candidate (RFC 8839, 5.1), c= (5.7), o= (5.2)
 * and a=rtcp (RFC 3605).
 */
#include "sdp.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

/* A growing output buffer (aborts on OOM through xrealloc). */
struct buf {
	char *p;
	size_t len, cap;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		b->p = xrealloc(b->p, cap);
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

/* 1 if every byte is printable ASCII or TAB (CR and LF are line ends, judged by the caller). */
static int printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c < 0x20 && c != '\t') || c > 0x7e)
			return 0;
	}
	return 1;
}

#define MAX_TOKENS 64

/* Split @p s (@p n bytes) at runs of spaces; @return the number of tokens, or -1 past @p max. */
static int tokens(const char *s, size_t n, const char **tok, size_t *tlen, int max)
{
	int k = 0;
	size_t i = 0;
	while (i < n) {
		while (i < n && s[i] == ' ')
			i++;
		if (i == n)
			break;
		if (k == max)
			return -1;
		tok[k] = s + i;
		while (i < n && s[i] != ' ')
			i++;
		tlen[k] = (size_t)(s + i - tok[k]);
		k++;
	}
	return k;
}

static int tok_is(const char *t, size_t n, const char *want)
{
	return n == strlen(want) && memcmp(t, want, n) == 0;
}

/* Judge candidate @p s (@p n bytes, printable) and append it cleaned to @p b;
 * the codes of sdp_candidate_filter. */
static int candidate_clean(const char *s, size_t n, struct buf *b)
{
	size_t pre = 0;
	if (n >= 2 && memcmp(s, "a=", 2) == 0)
		pre = 2;
	if (n - pre < 10 || memcmp(s + pre, "candidate:", 10) != 0)
		return TH_EINVAL;
	const char *tok[MAX_TOKENS];
	size_t tlen[MAX_TOKENS];
	int k = tokens(s + pre, n - pre, tok, tlen, MAX_TOKENS);
	/* candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> *(name value)
	 */
	if (k < 8 || (k - 8) % 2 != 0 || !tok_is(tok[6], tlen[6], "typ"))
		return TH_EINVAL;
	if (!tok_is(tok[7], tlen[7], "relay"))
		return TH_ENOTFOUND;
	buf_add(b, s, pre);
	for (int i = 0; i < k; i++) {
		if (i)
			buf_str(b, " ");
		if (i >= 8 && i % 2 == 1 && tok_is(tok[i - 1], tlen[i - 1], "raddr"))
			buf_str(b, "0.0.0.0");
		else if (i >= 8 && i % 2 == 1 && tok_is(tok[i - 1], tlen[i - 1], "rport"))
			buf_str(b, "0");
		else
			buf_add(b, tok[i], tlen[i]);
	}
	return TH_OK;
}

int sdp_candidate_filter(const char *cand, size_t len, char **out)
{
	*out = NULL;
	if (!cand)
		return TH_EINVAL;
	if (len > SDP_MAX_CANDIDATE)
		return TH_ETOOLARGE;
	if (!printable(cand, len))
		return TH_EINVAL;
	struct buf b = {0};
	int rc = candidate_clean(cand, len, &b);
	if (rc) {
		free(b.p);
		return rc;
	}
	*out = b.p;
	return TH_OK;
}

/* Append line @p s (@p n bytes) as the other side may see it; count a dropped candidate. */
static void line_clean(struct buf *b, const char *s, size_t n, unsigned *dropped)
{
	if (n >= 12 && memcmp(s, "a=candidate:", 12) == 0) {
		struct buf c = {0};
		if (n <= SDP_MAX_CANDIDATE && candidate_clean(s, n, &c) == TH_OK) {
			buf_add(b, c.p, c.len);
			buf_str(b, "\r\n");
		} else {
			(*dropped)++;
		}
		free(c.p);
		return;
	}
	if (n >= 2 && memcmp(s, "c=", 2) == 0) {
		buf_str(b, "c=IN IP4 0.0.0.0\r\n");
		return;
	}
	if (n >= 7 && memcmp(s, "a=rtcp:", 7) == 0) {
		buf_str(b, "a=rtcp:9 IN IP4 0.0.0.0\r\n");
		return;
	}
	if (n >= 2 && memcmp(s, "o=", 2) == 0) {
		/* o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address> */
		const char *tok[MAX_TOKENS];
		size_t tlen[MAX_TOKENS];
		int k = tokens(s + 2, n - 2, tok, tlen, MAX_TOKENS);
		buf_str(b, "o=");
		if (k == 6) {
			for (int i = 0; i < 3; i++) {
				buf_add(b, tok[i], tlen[i]);
				buf_str(b, " ");
			}
			buf_str(b, "IN IP4 0.0.0.0\r\n");
		} else {
			buf_str(b, "- 0 0 IN IP4 0.0.0.0\r\n");
		}
		return;
	}
	buf_add(b, s, n);
	buf_str(b, "\r\n");
}

int sdp_filter(const char *sdp, size_t len, char **out, unsigned *dropped)
{
	unsigned drop = 0;
	*out = NULL;
	if (dropped)
		*dropped = 0;
	if (!sdp)
		return TH_EINVAL;
	if (len > SDP_MAX_BYTES)
		return TH_ETOOLARGE;
	if (len < 2 || memcmp(sdp, "v=", 2) != 0)
		return TH_EINVAL;
	struct buf b = {0};
	size_t i = 0;
	while (i < len) {
		size_t e = i;
		while (e < len && sdp[e] != '\r' && sdp[e] != '\n')
			e++;
		if (!printable(sdp + i, e - i)) {
			free(b.p);
			return TH_EINVAL;
		}
		if (e > i)
			line_clean(&b, sdp + i, e - i, &drop);
		/* a line ends in CRLF, LF, or (leniently) a lone CR */
		if (e < len && sdp[e] == '\r')
			e++;
		if (e < len && sdp[e] == '\n')
			e++;
		i = e;
	}
	*out = b.p;
	if (dropped)
		*dropped = drop;
	return TH_OK;
}
