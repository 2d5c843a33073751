/*
 * stun.h - the few STUN/TURN messages `threshold doctor` sends to a TURN
 * server, and the reading of its answer (RFC 8489 STUN, RFC 8656 TURN).
 *
 * Pure: no sockets, no clock, no allocation.  The doctor sends a Binding
 * request (does anything speak STUN there?) and an Allocate request without
 * credentials; a TURN server with long-term credentials answers the Allocate
 * with 401 and a REALM and a NONCE, which a plain STUN server cannot.
 */
#ifndef THRESHOLD_STUN_H
#define THRESHOLD_STUN_H

#include <stddef.h>
#include <stdint.h>

#define STUN_HEADER_LEN  20
#define STUN_TXID_LEN    12
#define STUN_REQUEST_MAX 64   /* a request built here is never longer */
#define STUN_MESSAGE_MAX 2048 /* longest answer read; a larger one is TH_ETOOLARGE */
#define STUN_PORT        3478 /* turn: default port (RFC 7065) */
#define STUN_TLS_PORT    5349 /* turns: default port */
#define STUN_HOST_MAX    256

/* spec: RFC 8489 section 18.1 (methods); RFC 8656 section 17 (Allocate) */
enum stun_method { STUN_BINDING = 0x001, STUN_ALLOCATE = 0x003 };

/* spec: RFC 8489 section 5: the class bits C1 C0 */
enum stun_class { STUN_REQUEST = 0, STUN_INDICATION = 1, STUN_SUCCESS = 2, STUN_ERROR = 3 };

/* One TURN URI (RFC 7065) taken apart. */
struct stun_uri {
	char host[STUN_HOST_MAX]; /* a name or an address, without IPv6's brackets */
	unsigned port;
	int tcp; /* ?transport=tcp */
	int tls; /* turns: (TLS, or DTLS with ?transport=udp) */
};

/* What an answer says, as far as the doctor cares. */
struct stun_answer {
	unsigned method;          /* enum stun_method, or another the server chose */
	enum stun_class cls;      /* STUN_SUCCESS or STUN_ERROR for an answer */
	unsigned error_code;      /* 300..699 from ERROR-CODE; 0: none */
	int has_realm, has_nonce; /* REALM / NONCE present and not empty */
	int has_mapped;           /* XOR-MAPPED-ADDRESS or MAPPED-ADDRESS present */
	int has_fingerprint;      /* a FINGERPRINT that matched */
};

/**
 * Take a TURN URI apart: "turn:" or "turns:", a host (name, IPv4 or
 * [IPv6]), an optional ":port", an optional "?transport=udp|tcp".
 * @param out  written only on TH_OK
 * @return TH_OK or TH_EINVAL.
 */
int stun_uri_parse(const char *uri, struct stun_uri *out);

/**
 * Build a request: a Binding request, or an Allocate request asking for a
 * UDP relay (REQUESTED-TRANSPORT 17) without credentials; each ends in a
 * FINGERPRINT.
 * @param txid  the transaction id to put in it (STUN_TXID_LEN bytes, borrowed)
 * @param out   STUN_REQUEST_MAX bytes
 * @return the length written, or 0 for a method not built here.
 */
size_t stun_request_build(enum stun_method method, const uint8_t *txid, uint8_t *out);

/**
 * How long the message starting in @p buf is, header included, from its
 * header alone (for reading one message at a time from a TCP stream).
 * @return TH_OK with *total set, TH_EINVAL (not a STUN header; fewer than
 *         STUN_HEADER_LEN bytes) or TH_ETOOLARGE (over STUN_MESSAGE_MAX).
 */
int stun_message_length(const uint8_t *buf, size_t len, size_t *total);

/**
 * Read one answer: @p buf must hold exactly one STUN message.
 * @param txid  the request's transaction id (borrowed): an answer to
 *              another is TH_ENOTFOUND
 * @param out   written only on TH_OK
 * @return TH_OK (a success or error answer), TH_ENOTFOUND (well formed but
 *         not an answer to @p txid), TH_EINVAL (malformed: bad header,
 *         attribute past the end, bad ERROR-CODE, FINGERPRINT mismatch) or
 *         TH_ETOOLARGE.
 */
int stun_answer_parse(const uint8_t *buf, size_t len, const uint8_t *txid, struct stun_answer *out);

#endif
