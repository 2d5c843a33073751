/*
 * test_stun.c - the STUN/TURN messages `threshold doctor` sends and reads
 * (appservice/stun.h): requests as RFC 8489 lays them out, answers as coturn
 * sends them, and every malformed answer refused.
 */
#include <string.h>

#include "stun.h"
#include "testlib.h"
#include "util.h"

static const uint8_t txid[STUN_TXID_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

static void test_uri_parse(void)
{
	struct stun_uri u;
	CHECK_EQ_INT(stun_uri_parse("turn:turn.example.org", &u), TH_OK);
	CHECK_STR(u.host, "turn.example.org");
	CHECK_EQ_INT(u.port, 3478);
	CHECK_EQ_INT(u.tcp, 0);
	CHECK_EQ_INT(u.tls, 0);
	CHECK_EQ_INT(stun_uri_parse("turn:127.0.0.1:40123?transport=udp", &u), TH_OK);
	CHECK_STR(u.host, "127.0.0.1");
	CHECK_EQ_INT(u.port, 40123);
	CHECK_EQ_INT(stun_uri_parse("turn:[::1]:3479?transport=tcp", &u), TH_OK);
	CHECK_STR(u.host, "::1");
	CHECK_EQ_INT(u.port, 3479);
	CHECK_EQ_INT(u.tcp, 1);
	CHECK_EQ_INT(stun_uri_parse("turns:turn.example.org", &u), TH_OK);
	CHECK_EQ_INT(u.tls, 1);
	CHECK_EQ_INT(u.port, 5349);
	CHECK_EQ_INT(stun_uri_parse("stun:turn.example.org", &u), TH_EINVAL);
	CHECK_EQ_INT(stun_uri_parse("turn:", &u), TH_EINVAL);
	CHECK_EQ_INT(stun_uri_parse("turn:host:0", &u), TH_EINVAL);
	CHECK_EQ_INT(stun_uri_parse("turn:host:65536", &u), TH_EINVAL);
	CHECK_EQ_INT(stun_uri_parse("turn:host?transport=sctp", &u), TH_EINVAL);
	CHECK_EQ_INT(stun_uri_parse("turn:user@host", &u), TH_EINVAL);
	CHECK_EQ_INT(stun_uri_parse("turn:[::1", &u), TH_EINVAL);
}

/* The requests, byte for byte: header, REQUESTED-TRANSPORT for Allocate, FINGERPRINT last. */
static void test_requests(void)
{
	uint8_t b[STUN_REQUEST_MAX];
	size_t n = stun_request_build(STUN_BINDING, txid, b);
	CHECK_EQ_INT(n, 28);
	static const uint8_t bind_head[] = {0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42};
	CHECK(memcmp(b, bind_head, sizeof(bind_head)) == 0);
	CHECK(memcmp(b + 8, txid, STUN_TXID_LEN) == 0);
	CHECK(b[20] == 0x80 && b[21] == 0x28 && b[22] == 0 && b[23] == 4);
	/* the request reads back as a well-formed message whose FINGERPRINT checks out;
	 * it is a request, not an answer */
	struct stun_answer a;
	CHECK_EQ_INT(stun_answer_parse(b, n, txid, &a), TH_ENOTFOUND);
	b[27] ^= 1;
	CHECK_EQ_INT(stun_answer_parse(b, n, txid, &a), TH_EINVAL);

	n = stun_request_build(STUN_ALLOCATE, txid, b);
	CHECK_EQ_INT(n, 36);
	static const uint8_t alloc_head[] = {0x00, 0x03, 0x00, 0x10, 0x21, 0x12, 0xA4, 0x42};
	CHECK(memcmp(b, alloc_head, sizeof(alloc_head)) == 0);
	static const uint8_t transport[] = {0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0};
	CHECK(memcmp(b + 20, transport, sizeof(transport)) == 0);
	CHECK_EQ_INT(stun_request_build((enum stun_method)0x004, txid, b), 0);
}

/* Append attribute @p type with @p len bytes of @p v (padded) to @p m; fix the length. */
static size_t attr(uint8_t *m, size_t n, unsigned type, const void *v, size_t len)
{
	m[n] = (uint8_t)(type >> 8);
	m[n + 1] = (uint8_t)type;
	m[n + 2] = (uint8_t)(len >> 8);
	m[n + 3] = (uint8_t)len;
	memcpy(m + n + 4, v, len);
	size_t padded = (len + 3) & ~(size_t)3;
	memset(m + n + 4 + len, 0, padded - len);
	n += 4 + padded;
	m[2] = (uint8_t)((n - 20) >> 8);
	m[3] = (uint8_t)(n - 20);
	return n;
}

static size_t header(uint8_t *m, unsigned type)
{
	memset(m, 0, 20);
	m[0] = (uint8_t)(type >> 8);
	m[1] = (uint8_t)type;
	m[4] = 0x21, m[5] = 0x12, m[6] = 0xA4, m[7] = 0x42;
	memcpy(m + 8, txid, STUN_TXID_LEN);
	return 20;
}

/* coturn's answer to an Allocate without credentials. */
static size_t coturn_401(uint8_t *m)
{
	size_t n = header(m, 0x0113);
	static const uint8_t err[] = {0, 0, 4, 1, 'U', 'n', 'a', 'u', 't', 'h', 'o', 'r', 'i', 'z', 'e', 'd'};
	n = attr(m, n, 0x0009, err, sizeof(err));
	n = attr(m, n, 0x0015, "c8f1b2a46d0e5f37", 16);
	n = attr(m, n, 0x0014, "threshold.test", 14);
	return n;
}

static void test_answers(void)
{
	uint8_t m[256];
	struct stun_answer a;
	size_t n = coturn_401(m);
	CHECK_EQ_INT(stun_answer_parse(m, n, txid, &a), TH_OK);
	CHECK_EQ_INT(a.method, STUN_ALLOCATE);
	CHECK_EQ_INT(a.cls, STUN_ERROR);
	CHECK_EQ_INT(a.error_code, 401);
	CHECK(a.has_realm && a.has_nonce && !a.has_mapped);

	/* an answer to someone else's request */
	uint8_t other[STUN_TXID_LEN] = {9};
	CHECK_EQ_INT(stun_answer_parse(m, n, other, &a), TH_ENOTFOUND);

	/* a Binding success with XOR-MAPPED-ADDRESS */
	n = header(m, 0x0101);
	static const uint8_t xma[] = {0, 1, 0x21 ^ 0xC3, 0x12 ^ 0x50, 0x5e, 0x12, 0xa4, 0x43};
	n = attr(m, n, 0x0020, xma, sizeof(xma));
	CHECK_EQ_INT(stun_answer_parse(m, n, txid, &a), TH_OK);
	CHECK_EQ_INT(a.method, STUN_BINDING);
	CHECK_EQ_INT(a.cls, STUN_SUCCESS);
	CHECK(a.has_mapped);
	CHECK_EQ_INT(a.error_code, 0);
}

static void test_malformed(void)
{
	uint8_t m[256];
	struct stun_answer a;
	size_t n = coturn_401(m);
	size_t total;
	CHECK_EQ_INT(stun_message_length(m, n, &total), TH_OK);
	CHECK_EQ_INT(total, n);
	CHECK_EQ_INT(stun_message_length(m, 19, &total), TH_EINVAL);
	/* cut short, or one byte too many */
	CHECK_EQ_INT(stun_answer_parse(m, n - 4, txid, &a), TH_EINVAL);
	CHECK_EQ_INT(stun_answer_parse(m, n + 4, txid, &a), TH_EINVAL);
	/* wrong magic cookie: not STUN (an HTTP server, say) */
	m[4] = 0x22;
	CHECK_EQ_INT(stun_answer_parse(m, n, txid, &a), TH_EINVAL);
	CHECK_EQ_INT(stun_message_length((const uint8_t *)"HTTP/1.1 400 Bad Request\r\n", 26, &total),
	             TH_EINVAL);
	n = coturn_401(m);
	/* an attribute claiming more bytes than there are */
	m[20 + 3] = 200;
	CHECK_EQ_INT(stun_answer_parse(m, n, txid, &a), TH_EINVAL);
	/* ERROR-CODE with class 7, or number 100 */
	n = coturn_401(m);
	m[26] = 7;
	CHECK_EQ_INT(stun_answer_parse(m, n, txid, &a), TH_EINVAL);
	n = coturn_401(m);
	m[27] = 100;
	CHECK_EQ_INT(stun_answer_parse(m, n, txid, &a), TH_EINVAL);
	/* an error answer without ERROR-CODE */
	n = header(m, 0x0113);
	CHECK_EQ_INT(stun_answer_parse(m, n, txid, &a), TH_EINVAL);
	/* a length not a multiple of 4; one over the cap */
	n = coturn_401(m);
	m[3] |= 1;
	CHECK_EQ_INT(stun_answer_parse(m, n, txid, &a), TH_EINVAL);
	m[2] = 0x10, m[3] = 0;
	CHECK_EQ_INT(stun_message_length(m, n, &total), TH_ETOOLARGE);
	/* a FINGERPRINT that does not match what it covers, and anything after FINGERPRINT */
	uint8_t b[STUN_REQUEST_MAX + 8];
	n = stun_request_build(STUN_BINDING, txid, b);
	b[0] = 0x01, b[1] = 0x01; /* a success answer now: the CRC no longer matches */
	CHECK_EQ_INT(stun_answer_parse(b, n, txid, &a), TH_EINVAL);
	n = stun_request_build(STUN_BINDING, txid, b);
	CHECK_EQ_INT(stun_answer_parse(b, n, txid, &a), TH_ENOTFOUND); /* well formed, a request */
	n = attr(b, n, 0x0014, "r", 1);
	CHECK_EQ_INT(stun_answer_parse(b, n, txid, &a), TH_EINVAL);
}

int main(void)
{
	test_uri_parse();
	test_requests();
	test_answers();
	test_malformed();
	return test_done("test_stun");
}
