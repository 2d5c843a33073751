/*
 * stun.c - STUN/TURN requests for `threshold doctor` and the reading of a
 * server's answer (see stun.h).  Every length in an answer is checked
 * against the bytes actually there before it is used.
 */
#include "stun.h"

#include <string.h>

#include "util.h"

#define STUN_COOKIE 0x2112A442u
#define FP_XOR      0x5354554Eu /* spec: RFC 8489 section 14.7: "STUN" */

/* spec: RFC 8489 section 18.3, RFC 8656 section 18 */
#define ATTR_MAPPED_ADDRESS      0x0001
#define ATTR_ERROR_CODE          0x0009
#define ATTR_REALM               0x0014
#define ATTR_NONCE               0x0015
#define ATTR_REQUESTED_TRANSPORT 0x0019
#define ATTR_XOR_MAPPED_ADDRESS  0x0020
#define ATTR_FINGERPRINT         0x8028

#define PROTO_UDP 17 /* REQUESTED-TRANSPORT: the relay the doctor asks for */

static unsigned get16(const uint8_t *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, v & 0xFFFF);
}

/* CRC-32 as zlib and FINGERPRINT compute it (reflected, polynomial 0xEDB88320). */
static uint32_t crc32_of(const uint8_t *p, size_t n)
{
	uint32_t c = 0xFFFFFFFFu;
	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
	}
	return c ^ 0xFFFFFFFFu;
}

/* spec: RFC 8489 section 5: M11..M7 C1 M6..M4 C0 M3..M0 */
static unsigned type_of(unsigned method, unsigned cls)
{
	return (method & 0x000F) | (method & 0x0070) << 1 | (method & 0x0F80) << 2 | (cls & 1) << 4 |
	       (cls & 2) << 7;
}

int stun_uri_parse(const char *uri, struct stun_uri *out)
{
	struct stun_uri u = {0};
	const char *h;
	if (!uri)
		return TH_EINVAL;
	if (strncmp(uri, "turn:", 5) == 0) {
		h = uri + 5;
	} else if (strncmp(uri, "turns:", 6) == 0) {
		h = uri + 6;
		u.tls = 1;
	} else {
		return TH_EINVAL;
	}
	size_t hl;
	const char *p;
	if (h[0] == '[') {
		hl = strspn(h + 1, "0123456789abcdefABCDEF:.");
		if (h[1 + hl] != ']')
			return TH_EINVAL;
		p = h + hl + 2;
		h++;
	} else {
		hl = strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");
		p = h + hl;
	}
	if (hl < 1 || hl >= sizeof(u.host))
		return TH_EINVAL;
	memcpy(u.host, h, hl);
	u.port = u.tls ? STUN_TLS_PORT : STUN_PORT;
	if (*p == ':') {
		size_t pl = strspn(p + 1, "0123456789");
		char port[6] = {0};
		uint64_t v = 0;
		if (pl < 1 || pl > 5)
			return TH_EINVAL;
		memcpy(port, p + 1, pl);
		if (th_parse_u64(port, 65535, &v) != TH_OK || v == 0)
			return TH_EINVAL;
		u.port = (unsigned)v;
		p += 1 + pl;
	}
	if (strcmp(p, "?transport=tcp") == 0)
		u.tcp = 1;
	else if (*p && strcmp(p, "?transport=udp") != 0)
		return TH_EINVAL;
	*out = u;
	return TH_OK;
}

size_t stun_request_build(enum stun_method method, const uint8_t *txid, uint8_t *out)
{
	size_t n = STUN_HEADER_LEN;
	if (method != STUN_BINDING && method != STUN_ALLOCATE)
		return 0;
	memset(out, 0, STUN_REQUEST_MAX);
	put16(out, type_of(method, STUN_REQUEST));
	put32(out + 4, STUN_COOKIE);
	memcpy(out + 8, txid, STUN_TXID_LEN);
	if (method == STUN_ALLOCATE) {
		/* spec: RFC 8656 section 7.1: an Allocate carries REQUESTED-TRANSPORT */
		put16(out + n, ATTR_REQUESTED_TRANSPORT);
		put16(out + n + 2, 4);
		out[n + 4] = PROTO_UDP;
		n += 8;
	}
	/* spec: RFC 8489 section 14.7: the length counts FINGERPRINT before its CRC is taken */
	put16(out + 2, (unsigned)(n + 8 - STUN_HEADER_LEN));
	put16(out + n, ATTR_FINGERPRINT);
	put16(out + n + 2, 4);
	put32(out + n + 4, crc32_of(out, n) ^ FP_XOR);
	return n + 8;
}

int stun_message_length(const uint8_t *buf, size_t len, size_t *total)
{
	if (len < STUN_HEADER_LEN || (buf[0] & 0xC0) != 0 || get32(buf + 4) != STUN_COOKIE)
		return TH_EINVAL;
	unsigned body = get16(buf + 2);
	if (body % 4 != 0)
		return TH_EINVAL;
	if (STUN_HEADER_LEN + (size_t)body > STUN_MESSAGE_MAX)
		return TH_ETOOLARGE;
	*total = STUN_HEADER_LEN + (size_t)body;
	return TH_OK;
}

int stun_answer_parse(const uint8_t *buf, size_t len, const uint8_t *txid, struct stun_answer *out)
{
	struct stun_answer a = {0};
	size_t total = 0;
	int rc = stun_message_length(buf, len, &total);
	if (rc != TH_OK)
		return rc;
	if (total != len)
		return TH_EINVAL; /* one message, whole: nothing missing, nothing after */
	unsigned t = get16(buf);
	a.method = (t & 0x000F) | (t & 0x00E0) >> 1 | (t & 0x3E00) >> 2;
	a.cls = (enum stun_class)((t >> 4 & 1) | (t >> 7 & 2));
	size_t off = STUN_HEADER_LEN;
	while (off < len) {
		if (a.has_fingerprint)
			return TH_EINVAL; /* spec: RFC 8489 section 14.7: FINGERPRINT comes last */
		if (len - off < 4)
			return TH_EINVAL;
		unsigned type = get16(buf + off), alen = get16(buf + off + 2);
		size_t padded = ((size_t)alen + 3) & ~(size_t)3;
		if (padded > len - off - 4)
			return TH_EINVAL;
		const uint8_t *v = buf + off + 4;
		switch (type) {
		case ATTR_ERROR_CODE: {
			/* spec: RFC 8489 section 14.8: 21 zero bits, class 3..6, number 0..99, reason */
			if (alen < 4 || (v[2] & 0xF8) != 0)
				return TH_EINVAL;
			unsigned cls = v[2] & 0x07, num = v[3];
			if (cls < 3 || cls > 6 || num > 99)
				return TH_EINVAL;
			a.error_code = cls * 100 + num;
			break;
		}
		case ATTR_REALM:
			a.has_realm = alen > 0;
			break;
		case ATTR_NONCE:
			a.has_nonce = alen > 0;
			break;
		case ATTR_MAPPED_ADDRESS:
		case ATTR_XOR_MAPPED_ADDRESS:
			a.has_mapped = 1;
			break;
		case ATTR_FINGERPRINT:
			if (alen != 4 || get32(v) != (crc32_of(buf, off) ^ FP_XOR))
				return TH_EINVAL;
			a.has_fingerprint = 1;
			break;
		default:
			break; /* spec: RFC 8489 section 15: an unknown attribute in an answer is ignored */
		}
		off += 4 + padded;
	}
	if (memcmp(buf + 8, txid, STUN_TXID_LEN) != 0 || (a.cls != STUN_SUCCESS && a.cls != STUN_ERROR))
		return TH_ENOTFOUND;
	if (a.cls == STUN_ERROR && a.error_code == 0)
		return TH_EINVAL; /* spec: RFC 8489 section 6.3.4: an error answer has ERROR-CODE */
	*out = a;
	return TH_OK;
}
