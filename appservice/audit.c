/*
 * audit.c - the hash-chained audit log, its signed checkpoints, sealing of
 * personal detail under per-subject keys kept outside LMDB, verification of
 * the store and of exports.  The format is defined in audit.h.
 */
#include "audit.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <olm/olm.h>
#include <olm/pk.h>
#include <openssl/evp.h>

#include "config.h"
#include "log.h"
#include "util.h"

#define META_HEAD      "audit_head"
#define META_SEAL_NEXT "seal_next_slot"
#define META_INDEXED   "audit_indexed" /* u64 BE: every record up to it is in STORE_AUDIT_INDEX */
#define HEAD_LEN       56              /* seq, hash, checkpoint seq, checkpoint time */

#define CKPT_PREFIX   "threshold-audit-checkpoint/v1\n"
#define EXPORT_FORMAT "threshold-audit-export/v1"

#define SEED_LEN  32
#define SLOT_LEN  32 /* one AES-256 key per slot */
#define NONCE_LEN 12
#define TAG_LEN   16

#define SLOT_LIVE   0
#define SLOT_ERASED 1
#define SLOT_NONE   UINT64_MAX /* erased before any key was made */

#define MAX_DEPTH     17  /* a record's nesting: details may nest 16 deep */
#define STORED_PREFIX 149 /* {"hash":"<64 hex>","prev":"<64 hex>", */
#define HEX_LEN       (2 * AUDIT_HASH_LEN)

static const char *const kind_names[AUDIT_NKINDS] = {
        [AUDIT_GUEST_CREATED] = "guest_created",
        [AUDIT_CONSENT_RECORDED] = "consent_recorded",
        [AUDIT_CONSENT_WITHDRAWN] = "consent_withdrawn",
        [AUDIT_CONTACT_BLOCKED] = "contact_blocked",
        [AUDIT_MEMBERSHIP_ENFORCED] = "membership_enforced",
        [AUDIT_STATE_REVERTED] = "state_reverted",
        [AUDIT_MESSAGE_FLAGGED] = "message_flagged",
        [AUDIT_REPORT_RECEIVED] = "report_received",
        [AUDIT_IDENTITY_REVEALED] = "identity_revealed",
        [AUDIT_DATA_ERASED] = "data_erased",
        [AUDIT_AUDIT_VIEWED] = "audit_viewed",
        [AUDIT_AUDIT_EXPORTED] = "audit_exported",
        [AUDIT_CONFIG_LOADED] = "config_loaded",
        [AUDIT_STARTUP] = "startup",
        [AUDIT_SHUTDOWN] = "shutdown",
        [AUDIT_CHECKPOINT] = "checkpoint",
        [AUDIT_INVITE_CREATED] = "invite_created",
        [AUDIT_CONVERSATION_OPENED] = "conversation_opened",
        [AUDIT_CONVERSATION_CLOSED] = "conversation_closed",
        [AUDIT_CONVERSATION_HANDED] = "conversation_handed_over",
        [AUDIT_ENCRYPTION_ENABLED] = "encryption_enabled",
        [AUDIT_ENFORCEMENT_FAILED] = "enforcement_failed",
        [AUDIT_ADDED_ACROSS] = "guest_added_across_services",
        [AUDIT_SUBJECT_ACCESS] = "subject_access_exported",
        [AUDIT_HOLD_PLACED] = "hold_placed",
        [AUDIT_HOLD_RELEASED] = "hold_released",
        [AUDIT_RETENTION_REMOVED] = "retention_removed",
        [AUDIT_CONCERN_RAISED] = "concern_raised",
        [AUDIT_CASE_VIEWED] = "case_viewed",
        [AUDIT_CASE_CHANGED] = "case_changed",
        [AUDIT_ESCALATED] = "conversation_escalated",
        [AUDIT_ERASURE_STEP_FAILED] = "erasure_step_failed",
        [AUDIT_ERASURE_DONE] = "erasure_done",
        [AUDIT_ERASURE_HELD] = "erasure_held",
        [AUDIT_CALL_OFFERED] = "call_offered",
        [AUDIT_CALL_ANSWERED] = "call_answered",
        [AUDIT_CALL_DECLINED] = "call_declined",
        [AUDIT_CALL_ENDED] = "call_ended",
};

/* A subject's key slot waiting to be zeroed once its erasure is committed. */
struct shred {
	char *subject;
	uint64_t slot;
};

struct audit {
	store *st;
	int seal_fd;
	unsigned every, seconds;
	void *sign_mem; /* OlmPkSigning; holds the private key */
	OlmPkSigning *sign;
	char pubkey[AUDIT_PUBKEY_LEN + 1];
	EVP_CIPHER *gcm;
	pthread_mutex_t mu; /* guards the hints, the shred list and the signer */
	uint64_t hint_head, hint_ckpt, hint_ckpt_ms;
	struct shred *shreds;
	size_t nshreds, capshreds;
};

/* The chain head as STORE_META "audit_head" holds it. */
struct head {
	uint64_t seq;
	unsigned char hash[AUDIT_HASH_LEN];
	uint64_t ckpt_seq, ckpt_ms;
};

/* One stored record, parsed and recomputed. */
struct parsed {
	uint64_t seq;
	unsigned char hash[AUDIT_HASH_LEN], prev[AUDIT_HASH_LEN];
	int is_checkpoint;
};

const char *audit_kind_name(enum audit_kind kind)
{
	if ((unsigned)kind >= AUDIT_NKINDS)
		return NULL;
	return kind_names[kind];
}

int audit_kind_parse(const char *name, enum audit_kind *out)
{
	for (int i = 0; i < AUDIT_NKINDS; i++) {
		if (strcmp(name, kind_names[i]) == 0) {
			*out = (enum audit_kind)i;
			return TH_OK;
		}
	}
	return TH_EINVAL;
}

/* ---- hashing ----------------------------------------------------------- */

static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

/* Fetch SHA-256 once: an implicit fetch on every digest costs more than the digest. */
static void sha256_init(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

/*
 * body_hash = SHA-256(body) and hash = SHA-256(prev || body_hash), with one
 * digest context for both.  @p body_hash is optional.
 */
static int record_hash(const char *body, size_t blen, const unsigned char prev[AUDIT_HASH_LEN],
                       unsigned char body_hash[AUDIT_HASH_LEN], unsigned char hash[AUDIT_HASH_LEN])
{
	pthread_once(&sha256_once, sha256_init);
	unsigned char bh[AUDIT_HASH_LEN];
	EVP_MD_CTX *ctx = sha256_md ? EVP_MD_CTX_new() : NULL;
	int ok = ctx && EVP_DigestInit_ex2(ctx, sha256_md, NULL) && EVP_DigestUpdate(ctx, body, blen) &&
	         EVP_DigestFinal_ex(ctx, bh, NULL) && EVP_DigestInit_ex2(ctx, sha256_md, NULL) &&
	         EVP_DigestUpdate(ctx, prev, AUDIT_HASH_LEN) && EVP_DigestUpdate(ctx, bh, AUDIT_HASH_LEN) &&
	         EVP_DigestFinal_ex(ctx, hash, NULL);
	EVP_MD_CTX_free(ctx);
	if (ok && body_hash)
		memcpy(body_hash, bh, AUDIT_HASH_LEN);
	return ok ? TH_OK : TH_ECRYPTO;
}

/* hash = SHA-256(prev || body_hash): a stub in an export stands in for its body. */
static int chain_hash(const unsigned char prev[AUDIT_HASH_LEN], const unsigned char body_hash[AUDIT_HASH_LEN],
                      unsigned char out[AUDIT_HASH_LEN])
{
	unsigned char buf[2 * AUDIT_HASH_LEN];
	memcpy(buf, prev, AUDIT_HASH_LEN);
	memcpy(buf + AUDIT_HASH_LEN, body_hash, AUDIT_HASH_LEN);
	pthread_once(&sha256_once, sha256_init);
	if (!sha256_md || !EVP_Digest(buf, sizeof(buf), out, NULL, sha256_md, NULL))
		return TH_ECRYPTO;
	return TH_OK;
}

static int hex_decode_hash(const char *s, unsigned char out[AUDIT_HASH_LEN])
{
	if (!s || strlen(s) != HEX_LEN)
		return TH_EINVAL;
	for (size_t i = 0; i < AUDIT_HASH_LEN; i++) {
		unsigned v = 0;
		for (int j = 0; j < 2; j++) {
			char c = s[2 * i + (size_t)j];
			if (c >= '0' && c <= '9')
				v = v * 16 + (unsigned)(c - '0');
			else if (c >= 'a' && c <= 'f')
				v = v * 16 + (unsigned)(c - 'a' + 10);
			else
				return TH_EINVAL;
		}
		out[i] = (unsigned char)v;
	}
	return TH_OK;
}

/* Padded standard base64 (the sealed format); new string. */
static char *b64_encode(const unsigned char *in, size_t n)
{
	char *out = xmalloc(4 * ((n + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, in, (int)n);
	return out;
}

/* Decode padded base64 into a new buffer. */
static int b64_decode(const char *in, unsigned char **out, size_t *outlen)
{
	size_t n = strlen(in);
	if (n == 0 || n % 4 != 0 || n > 2 * AUDIT_MAX_RECORD)
		return TH_EINVAL;
	unsigned char *buf = xmalloc(n / 4 * 3 + 1);
	int r = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)n);
	if (r < 0) {
		free(buf);
		return TH_EINVAL;
	}
	size_t len = (size_t)r;
	/* EVP_DecodeBlock counts the bytes that padding stands for. */
	if (in[n - 1] == '=')
		len--;
	if (in[n - 2] == '=')
		len--;
	*out = buf;
	*outlen = len;
	return TH_OK;
}

static int pubkey_ok(const char *k)
{
	if (!k || strlen(k) != AUDIT_PUBKEY_LEN)
		return 0;
	for (const char *p = k; *p; p++) {
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
		      *p == '+' || *p == '/'))
			return 0;
	}
	return 1;
}

/* ---- canonical encoding ----------------------------------------------- */

/*
 * Written here rather than with json_dumps(JSON_SORT_KEYS), which costs
 * about half of an append's budget; the output is the same bytes (the
 * canonical test checks both).
 */

/* A growing output buffer, always NUL-terminated. */
struct buf {
	char *p;
	size_t len, cap;
};

static void buf_put(struct buf *b, const void *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		while (b->len + n + 1 > b->cap)
			b->cap = b->cap ? 2 * b->cap : 512;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

#define BUF_LIT(b, s) buf_put((b), (s), sizeof(s) - 1)

/* A decimal integer, as printf's %lld/%llu would write it (snprintf costs more than the rest of a field). */
static void buf_int(struct buf *b, int negative, uint64_t magnitude)
{
	char d[21];
	size_t i = sizeof(d);
	do {
		d[--i] = (char)('0' + magnitude % 10);
		magnitude /= 10;
	} while (magnitude);
	if (negative)
		d[--i] = '-';
	buf_put(b, d + i, sizeof(d) - i);
}

/* A string: '"', '\' and U+0000..U+001F escaped (\b \f \n \r \t, else \u00XX), the rest raw. */
static void canon_string(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t run = 0;
	BUF_LIT(b, "\"");
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		buf_put(b, s + run, i - run);
		run = i + 1;
		switch (c) {
		case '"':
			BUF_LIT(b, "\\\"");
			break;
		case '\\':
			BUF_LIT(b, "\\\\");
			break;
		case '\b':
			BUF_LIT(b, "\\b");
			break;
		case '\f':
			BUF_LIT(b, "\\f");
			break;
		case '\n':
			BUF_LIT(b, "\\n");
			break;
		case '\r':
			BUF_LIT(b, "\\r");
			break;
		case '\t':
			BUF_LIT(b, "\\t");
			break;
		default: {
			char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
			buf_put(b, e, sizeof(e));
		}
		}
	}
	buf_put(b, s + run, n - run);
	BUF_LIT(b, "\"");
}

/* One member of an object, to sort by key bytes. */
struct member {
	const char *key;
	size_t klen;
	const json_t *val;
};

static int member_cmp(const void *x, const void *y)
{
	const struct member *a = x, *b = y;
	int c = memcmp(a->key, b->key, a->klen < b->klen ? a->klen : b->klen);
	return c ? c : (a->klen > b->klen) - (a->klen < b->klen);
}

/* Any JSON value.  TH_EINVAL for a real (no single encoding) or nesting past the cap. */
static int canon_value(struct buf *b, const json_t *j, int depth)
{
	if (depth > MAX_DEPTH)
		return TH_EINVAL;
	int rc = TH_OK;
	switch (json_typeof(j)) {
	case JSON_OBJECT: {
		size_t n = json_object_size(j), i = 0;
		struct member small[16];
		struct member *m = n <= 16 ? small : xmalloc(n * sizeof(*m));
		const char *key;
		size_t klen;
		json_t *v;
		json_object_keylen_foreach((json_t *)j, key, klen, v)
		{
			m[i++] = (struct member){key, klen, v};
		}
		qsort(m, n, sizeof(*m), member_cmp);
		BUF_LIT(b, "{");
		for (i = 0; i < n && !rc; i++) {
			if (i)
				BUF_LIT(b, ",");
			canon_string(b, m[i].key, m[i].klen);
			BUF_LIT(b, ":");
			rc = canon_value(b, m[i].val, depth + 1);
		}
		BUF_LIT(b, "}");
		if (m != small)
			free(m);
		return rc;
	}
	case JSON_ARRAY:
		BUF_LIT(b, "[");
		for (size_t i = 0; i < json_array_size(j) && !rc; i++) {
			if (i)
				BUF_LIT(b, ",");
			rc = canon_value(b, json_array_get(j, i), depth + 1);
		}
		BUF_LIT(b, "]");
		return rc;
	case JSON_STRING:
		canon_string(b, json_string_value(j), json_string_length(j));
		return TH_OK;
	case JSON_INTEGER: {
		json_int_t v = json_integer_value(j);
		buf_int(b, v < 0, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
		return TH_OK;
	}
	case JSON_TRUE:
		BUF_LIT(b, "true");
		return TH_OK;
	case JSON_FALSE:
		BUF_LIT(b, "false");
		return TH_OK;
	case JSON_NULL:
		BUF_LIT(b, "null");
		return TH_OK;
	default:
		return TH_EINVAL;
	}
}

/* RFC 3629 UTF-8 (no overlongs, surrogates or code points past U+10FFFF), as jansson requires. */
static int utf8_ok(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	while (p < end) {
		unsigned c = *p, cp, min;
		size_t len;
		if (c < 0x80) {
			p++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			len = 2, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			len = 3, cp = c & 0x0f, min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4, cp = c & 0x07, min = 0x10000;
		} else {
			return 0;
		}
		if ((size_t)(end - p) < len)
			return 0;
		for (size_t i = 1; i < len; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		p += len;
	}
	return 1;
}

/* ,"name": then the string or null. */
static int canon_field(struct buf *b, const char *name, const char *s)
{
	buf_put(b, name, strlen(name));
	if (!s) {
		BUF_LIT(b, "null");
		return TH_OK;
	}
	size_t n = strlen(s);
	if (!utf8_ok(s, n))
		return TH_EINVAL;
	canon_string(b, s, n);
	return TH_OK;
}

static int field_len_ok(const char *s, size_t max)
{
	return !s || strlen(s) <= max;
}

/* Append the canonical body of @p rec at @p seq to @p b: its nine keys in sorted order. */
static int encode_body(struct buf *b, const struct audit_rec *rec, uint64_t seq, const char *sealed)
{
	const char *kind = audit_kind_name(rec->kind);
	if (!kind || seq == 0 || seq > INT64_MAX || rec->ts_ms > INT64_MAX)
		return TH_EINVAL;
	if (!field_len_ok(rec->actor, AUDIT_MAX_ID) || !field_len_ok(rec->subject, AUDIT_MAX_ID) ||
	    !field_len_ok(rec->room, AUDIT_MAX_ID) || !field_len_ok(rec->reason, AUDIT_MAX_REASON))
		return TH_ETOOLARGE;
	if (rec->details && !json_is_object(rec->details))
		return TH_EINVAL;
	int rc = canon_field(b, "{\"actor\":", rec->actor);
	if (!rc) {
		BUF_LIT(b, ",\"details\":");
		if (rec->details)
			rc = canon_value(b, rec->details, 1);
		else
			BUF_LIT(b, "{}");
	}
	if (!rc)
		rc = canon_field(b, ",\"kind\":", kind);
	if (!rc)
		rc = canon_field(b, ",\"reason\":", rec->reason);
	if (!rc)
		rc = canon_field(b, ",\"room\":", rec->room);
	if (!rc)
		rc = canon_field(b, ",\"sealed\":", sealed);
	if (!rc) {
		BUF_LIT(b, ",\"seq\":");
		buf_int(b, 0, seq);
		rc = canon_field(b, ",\"subject\":", rec->subject);
	}
	if (!rc) {
		BUF_LIT(b, ",\"ts\":");
		buf_int(b, 0, rec->ts_ms);
		BUF_LIT(b, "}");
	}
	return rc;
}

int audit_encode(const struct audit_rec *rec, uint64_t seq, const char *sealed_b64,
                 const unsigned char prev[AUDIT_HASH_LEN], char **body, size_t *blen,
                 unsigned char hash[AUDIT_HASH_LEN])
{
	struct buf b = {0};
	int rc = encode_body(&b, rec, seq, sealed_b64);
	if (!rc && b.len + STORED_PREFIX - 1 > AUDIT_MAX_RECORD) /* as stored */
		rc = TH_ETOOLARGE;
	if (!rc)
		rc = record_hash(b.p, b.len, prev, NULL, hash);
	if (rc || !body) {
		free(b.p);
		return rc;
	}
	*body = b.p;
	*blen = b.len;
	return TH_OK;
}

/*
 * Write the stored value's prefix {"hash":H,"prev":P, into @p p, which
 * holds STORED_PREFIX bytes followed by the body after its '{' (the last
 * byte written, ',', replaces that '{').
 */
static void stored_prefix(char *p, const unsigned char hash[AUDIT_HASH_LEN],
                          const unsigned char prev[AUDIT_HASH_LEN])
{
	/* th_hex's NUL lands on a byte written next. */
	memcpy(p, "{\"hash\":\"", 9);
	th_hex(p + 9, hash, AUDIT_HASH_LEN);
	memcpy(p + 9 + HEX_LEN, "\",\"prev\":\"", 10);
	th_hex(p + 19 + HEX_LEN, prev, AUDIT_HASH_LEN);
	memcpy(p + 19 + 2 * HEX_LEN, "\",", 2);
}

/*
 * Parse a stored record and recompute its hash from its content, trusting
 * nothing stored but "prev".  @p body_hash (optional) gets its body hash.
 * @return 0, or -1 with the reason in @p why ("record N <why>").
 */
static int record_check(const char *raw, size_t len, struct parsed *p,
                        unsigned char body_hash[AUDIT_HASH_LEN], char *why, size_t whylen)
{
	json_error_t jerr;
	json_t *rec = json_loadb(raw, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(rec)) {
		snprintf(why, whylen, "is not a JSON object (%s)", rec ? "wrong type" : jerr.text);
		json_decref(rec);
		return -1;
	}
	json_t *seq = json_object_get(rec, "seq");
	unsigned char stored[AUDIT_HASH_LEN], bh[AUDIT_HASH_LEN];
	if (hex_decode_hash(json_string_value(json_object_get(rec, "hash")), stored) ||
	    hex_decode_hash(json_string_value(json_object_get(rec, "prev")), p->prev) ||
	    !json_is_integer(seq) || json_integer_value(seq) < 1) {
		snprintf(why, whylen, "is damaged: no valid hash, prev or seq");
		json_decref(rec);
		return -1;
	}
	p->seq = (uint64_t)json_integer_value(seq);
	const char *kind = json_string_value(json_object_get(rec, "kind"));
	p->is_checkpoint = kind && strcmp(kind, kind_names[AUDIT_CHECKPOINT]) == 0;
	json_object_del(rec, "hash");
	json_object_del(rec, "prev");
	struct buf b = {0};
	int rc = canon_value(&b, rec, 0);
	if (!rc)
		rc = record_hash(b.p, b.len, p->prev, bh, p->hash);
	json_decref(rec);
	if (rc) {
		free(b.p);
		snprintf(why, whylen, "cannot be re-encoded (%s)", th_strerror(rc));
		return -1;
	}
	if (memcmp(p->hash, stored, AUDIT_HASH_LEN) != 0) {
		free(b.p);
		snprintf(why, whylen, "was altered: its content does not match its hash");
		return -1;
	}
	/* The bytes must be exactly what chain_append writes: the same content
	 * in other bytes (a newline between members, say) would verify here,
	 * but an export writes the stored bytes one record a line. */
	char prefix[STORED_PREFIX + 1];
	stored_prefix(prefix, p->hash, p->prev);
	int canonical = len == STORED_PREFIX - 1 + b.len && memcmp(raw, prefix, STORED_PREFIX) == 0 &&
	                memcmp(raw + STORED_PREFIX, b.p + 1, b.len - 1) == 0;
	free(b.p);
	if (!canonical) {
		snprintf(why, whylen, "was rewritten: its content is intact but not in canonical form");
		return -1;
	}
	if (body_hash)
		memcpy(body_hash, bh, AUDIT_HASH_LEN);
	return 0;
}

/* ---- the head in STORE_META -------------------------------------------- */

static uint64_t get_u64(const unsigned char *p)
{
	return store_key_u64(p);
}

static int head_read(store_txn *t, struct head *h)
{
	const void *v;
	size_t vlen;
	memset(h, 0, sizeof(*h));
	int rc = store_get(t, STORE_META, META_HEAD, strlen(META_HEAD), &v, &vlen);
	if (rc == TH_ENOTFOUND)
		return TH_OK;
	if (rc)
		return rc;
	if (vlen != HEAD_LEN) {
		LOG(LOG_ERROR,
		    "audit: the chain head in the store is damaged (%zu bytes); run `threshold audit verify`",
		    vlen);
		return TH_ESTORE;
	}
	const unsigned char *p = v;
	h->seq = get_u64(p);
	memcpy(h->hash, p + 8, AUDIT_HASH_LEN);
	h->ckpt_seq = get_u64(p + 8 + AUDIT_HASH_LEN);
	h->ckpt_ms = get_u64(p + 16 + AUDIT_HASH_LEN);
	return TH_OK;
}

static int head_write(store_txn *t, const struct head *h)
{
	unsigned char v[HEAD_LEN];
	store_u64_key(v, h->seq);
	memcpy(v + 8, h->hash, AUDIT_HASH_LEN);
	store_u64_key(v + 8 + AUDIT_HASH_LEN, h->ckpt_seq);
	store_u64_key(v + 16 + AUDIT_HASH_LEN, h->ckpt_ms);
	return store_put(t, STORE_META, META_HEAD, strlen(META_HEAD), v, sizeof(v), 0);
}

int audit_head(store_txn *t, uint64_t *seq, unsigned char hash[AUDIT_HASH_LEN])
{
	struct head h;
	int rc = head_read(t, &h);
	if (rc)
		return rc;
	*seq = h.seq;
	memcpy(hash, h.hash, AUDIT_HASH_LEN);
	return TH_OK;
}

int audit_last_checkpoint(store_txn *t, uint64_t *seq)
{
	struct head h;
	int rc = head_read(t, &h);
	if (rc)
		return rc;
	*seq = h.ckpt_seq;
	return TH_OK;
}

static void hints_set(audit *a, const struct head *h)
{
	pthread_mutex_lock(&a->mu);
	a->hint_head = h->seq;
	a->hint_ckpt = h->ckpt_seq;
	a->hint_ckpt_ms = h->ckpt_ms;
	pthread_mutex_unlock(&a->mu);
}

/* ---- key files --------------------------------------------------------- */

/* A key file must be a regular file that only its owner can touch. */
static int check_private(const char *path, const struct stat *sb, const char *what)
{
	if (!S_ISREG(sb->st_mode)) {
		LOG(LOG_ERROR, "audit: %s (%s) is not a regular file; refusing to use it", path, what);
		return TH_ECONFIG;
	}
	if (sb->st_mode & 077) {
		LOG(LOG_ERROR,
		    "audit: %s (%s) has mode %04o: group or others can read or write it, so it "
		    "is not secret. Refusing to start. Fix it with: chmod 600 %s",
		    path, what, (unsigned)(sb->st_mode & 07777), path);
		return TH_ECONFIG;
	}
	return TH_OK;
}

static int read_full(int fd, void *buf, size_t n, off_t off)
{
	unsigned char *p = buf;
	while (n > 0) {
		ssize_t r = pread(fd, p, n, off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r == 0 ? TH_ENOTFOUND : TH_EIO;
		p += r;
		n -= (size_t)r;
		off += r;
	}
	return TH_OK;
}

static int write_full(int fd, const void *buf, size_t n, off_t off)
{
	const unsigned char *p = buf;
	while (n > 0) {
		ssize_t w = pwrite(fd, p, n, off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return TH_EIO;
		p += w;
		n -= (size_t)w;
		off += w;
	}
	return TH_OK;
}

/* Read the 32-byte signing seed.  TH_ENOTFOUND if there is no file. */
static int seed_load(const char *path, unsigned char seed[SEED_LEN])
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return TH_ENOTFOUND;
		LOG(LOG_ERROR, "audit: cannot open the signing key %s: %s", path, strerror(errno));
		return TH_EIO;
	}
	struct stat sb;
	int rc = fstat(fd, &sb) ? TH_EIO : check_private(path, &sb, "the audit signing key");
	if (!rc && sb.st_size != SEED_LEN) {
		LOG(LOG_ERROR, "audit: %s is %lld bytes, not a %d-byte signing key; refusing to use it", path,
		    (long long)sb.st_size, SEED_LEN);
		rc = TH_ECONFIG;
	}
	if (!rc && (rc = read_full(fd, seed, SEED_LEN, 0)))
		rc = TH_EIO;
	close(fd);
	return rc;
}

/* fsync the directory holding @p path, so a new name survives a crash. */
static void sync_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? xstrndup(path, slash == path ? 1 : (size_t)(slash - path)) : xstrdup(".");
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	free(dir);
}

/*
 * Create the seed file whole or not at all: write a private temporary file,
 * then link() it into place, which fails if another process got there first
 * (TH_EEXIST: load theirs instead, so both use one key).
 */
static int seed_create(const char *path, unsigned char seed[SEED_LEN])
{
	if (th_random(seed, SEED_LEN))
		return TH_EIO;
	char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
	int rc = TH_EIO;
	unlink(tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		LOG(LOG_ERROR, "audit: cannot create the signing key %s: %s", path, strerror(errno));
		goto out;
	}
	if (write_full(fd, seed, SEED_LEN, 0) || fsync(fd) != 0) {
		close(fd);
		LOG(LOG_ERROR, "audit: cannot write the signing key %s: %s", path, strerror(errno));
		goto out;
	}
	close(fd);
	if (link(tmp, path) != 0) {
		rc = errno == EEXIST ? TH_EEXIST : TH_EIO;
		if (rc == TH_EIO)
			LOG(LOG_ERROR, "audit: cannot create the signing key %s: %s", path, strerror(errno));
		goto out;
	}
	sync_parent(path);
	rc = TH_OK;
out:
	if (fd >= 0 || rc != TH_EIO)
		unlink(tmp);
	free(tmp);
	if (rc)
		explicit_bzero(seed, SEED_LEN);
	return rc;
}

/* Make a signer from @p seed; the public key goes into @p pub. */
static int signer_new(const unsigned char seed[SEED_LEN], void **mem, OlmPkSigning **sign,
                      char pub[AUDIT_PUBKEY_LEN + 1])
{
	if (olm_pk_signing_public_key_length() != AUDIT_PUBKEY_LEN ||
	    olm_pk_signing_seed_length() != SEED_LEN)
		return TH_ECRYPTO;
	*mem = xmalloc(olm_pk_signing_size());
	*sign = olm_pk_signing(*mem);
	if (olm_pk_signing_key_from_seed(*sign, pub, AUDIT_PUBKEY_LEN, seed, SEED_LEN) == olm_error()) {
		LOG(LOG_ERROR, "audit: cannot load the signing key: %s", olm_pk_signing_last_error(*sign));
		olm_clear_pk_signing(*sign);
		free(*mem);
		*mem = NULL;
		return TH_ECRYPTO;
	}
	pub[AUDIT_PUBKEY_LEN] = '\0';
	return TH_OK;
}

static void signer_free(void *mem, OlmPkSigning *sign)
{
	if (!mem)
		return;
	olm_clear_pk_signing(sign);
	free(mem);
}

int audit_key_pubkey(const char *key_path, char out[AUDIT_PUBKEY_LEN + 1])
{
	unsigned char seed[SEED_LEN];
	int rc = seed_load(key_path, seed);
	if (rc)
		return rc;
	void *mem;
	OlmPkSigning *sign;
	rc = signer_new(seed, &mem, &sign, out);
	explicit_bzero(seed, sizeof(seed));
	if (!rc)
		signer_free(mem, sign);
	return rc;
}

/* ---- seal key slots ---------------------------------------------------- */

static int slot_get(store_txn *t, const char *subject, uint64_t *slot, int *state)
{
	const void *v;
	size_t vlen;
	int rc = store_get(t, STORE_SEAL_SLOTS, subject, strlen(subject), &v, &vlen);
	if (rc)
		return rc;
	if (vlen != 9) {
		LOG(LOG_ERROR, "audit: damaged seal slot entry (%zu bytes)", vlen);
		return TH_ESTORE;
	}
	*slot = get_u64(v);
	*state = ((const unsigned char *)v)[8];
	return TH_OK;
}

static int slot_put(store_txn *t, const char *subject, uint64_t slot, int state)
{
	unsigned char v[9];
	store_u64_key(v, slot);
	v[8] = (unsigned char)state;
	return store_put(t, STORE_SEAL_SLOTS, subject, strlen(subject), v, sizeof(v), 0);
}

/* A key from the slot file; TH_ENOTFOUND for a zeroed or missing slot. */
static int key_read(audit *a, uint64_t slot, unsigned char key[SLOT_LEN])
{
	if (slot >= (uint64_t)INT64_MAX / SLOT_LEN)
		return TH_ENOTFOUND;
	int rc = read_full(a->seal_fd, key, SLOT_LEN, (off_t)(slot * SLOT_LEN));
	if (rc)
		return rc;
	unsigned char any = 0;
	for (size_t i = 0; i < SLOT_LEN; i++)
		any |= key[i];
	return any ? TH_OK : TH_ENOTFOUND;
}

/* Write a slot and make it durable: it must be on disk before any commit
 * that references it, and a shredded slot must really be zero. */
static int key_write(audit *a, uint64_t slot, const unsigned char key[SLOT_LEN])
{
	if (write_full(a->seal_fd, key, SLOT_LEN, (off_t)(slot * SLOT_LEN)) || fdatasync(a->seal_fd) != 0) {
		LOG(LOG_ERROR, "audit: cannot write the seal key file: %s", strerror(errno));
		return TH_EIO;
	}
	return TH_OK;
}

/* The subject's key, made (and synced) if it has none.  TH_ENOTFOUND if erased. */
static int seal_key(audit *a, store_txn *t, const char *subject, unsigned char key[SLOT_LEN])
{
	uint64_t slot;
	int state;
	int rc = slot_get(t, subject, &slot, &state);
	if (rc == TH_OK)
		return state == SLOT_LIVE ? key_read(a, slot, key) : TH_ENOTFOUND;
	if (rc != TH_ENOTFOUND)
		return rc;
	const void *v;
	size_t vlen;
	uint64_t next = 0;
	rc = store_get(t, STORE_META, META_SEAL_NEXT, strlen(META_SEAL_NEXT), &v, &vlen);
	if (rc == TH_OK && vlen == 8)
		next = get_u64(v);
	else if (rc != TH_ENOTFOUND)
		return TH_ESTORE;
	if ((rc = th_random(key, SLOT_LEN)))
		return rc;
	/* A slot written here but never committed holds a key nothing refers
	 * to; the next allocation overwrites it and audit_open zeroes it. */
	if ((rc = key_write(a, next, key)) || (rc = slot_put(t, subject, next, SLOT_LIVE)))
		goto fail;
	unsigned char nv[8];
	store_u64_key(nv, next + 1);
	if ((rc = store_put(t, STORE_META, META_SEAL_NEXT, strlen(META_SEAL_NEXT), nv, 8, 0)))
		goto fail;
	return TH_OK;
fail:
	explicit_bzero(key, SLOT_LEN);
	return rc;
}

static int seal_text_max(audit *a, store_txn *t, const char *subject, const char *text, size_t max,
                         char **out);

static int seal_text(audit *a, store_txn *t, const char *subject, const char *text, char **out)
{
	return seal_text_max(a, t, subject, text, AUDIT_MAX_SEALED, out);
}

int audit_seal(audit *a, store_txn *t, const char *subject, const char *text, char **out)
{
	if (!subject || !*subject || strlen(subject) > AUDIT_MAX_ID || !text)
		return TH_EINVAL;
	return seal_text_max(a, t, subject, text, AUDIT_MAX_SEAL_DATA, out);
}

/* nonce || AES-256-GCM(@p data) || tag under @p subject's key, AAD the
 * subject: @p out a new buffer of NONCE_LEN + n + TAG_LEN bytes. */
static int seal_raw(audit *a, store_txn *t, const char *subject, const unsigned char *data, size_t n,
                    unsigned char **out)
{
	if (n > INT_MAX - NONCE_LEN - TAG_LEN)
		return TH_ETOOLARGE;
	unsigned char key[SLOT_LEN];
	int rc = seal_key(a, t, subject, key);
	if (rc)
		return rc;
	unsigned char *buf = xmalloc(NONCE_LEN + n + TAG_LEN);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int l1 = 0, l2 = 0, ok = ctx && th_random(buf, NONCE_LEN) == TH_OK;
	ok = ok && EVP_EncryptInit_ex2(ctx, a->gcm, key, buf, NULL);
	ok = ok && EVP_EncryptUpdate(ctx, NULL, &l1, (const unsigned char *)subject, (int)strlen(subject));
	ok = ok && EVP_EncryptUpdate(ctx, buf + NONCE_LEN, &l1, data, (int)n);
	ok = ok && EVP_EncryptFinal_ex(ctx, buf + NONCE_LEN + l1, &l2);
	ok = ok && (size_t)(l1 + l2) == n;
	ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, buf + NONCE_LEN + n);
	EVP_CIPHER_CTX_free(ctx);
	explicit_bzero(key, sizeof(key));
	if (!ok) {
		free(buf);
		return TH_ECRYPTO;
	}
	*out = buf;
	return TH_OK;
}

static int seal_text_max(audit *a, store_txn *t, const char *subject, const char *text, size_t max,
                         char **out)
{
	size_t n = strlen(text);
	if (n > max)
		return TH_ETOOLARGE;
	unsigned char *buf = NULL;
	int rc = seal_raw(a, t, subject, (const unsigned char *)text, n, &buf);
	if (rc)
		return rc;
	*out = b64_encode(buf, NONCE_LEN + n + TAG_LEN);
	free(buf);
	return TH_OK;
}

int audit_seal_bytes(audit *a, store_txn *t, const char *subject, const void *data, size_t len,
                     unsigned char **out, size_t *outlen)
{
	if (!subject || !*subject || strlen(subject) > AUDIT_MAX_ID || (!data && len))
		return TH_EINVAL;
	int rc = seal_raw(a, t, subject, data, len, out);
	if (!rc)
		*outlen = NONCE_LEN + len + TAG_LEN;
	return rc;
}

/* Open nonce || ciphertext || tag of @p subject: @p out a new buffer of
 * @p len - NONCE_LEN - TAG_LEN bytes (plus a NUL, not counted). */
static int unseal_raw(audit *a, store_txn *t, const char *subject, const unsigned char *buf, size_t len,
                      unsigned char **out, size_t *outlen)
{
	if (!subject || !*subject || strlen(subject) > AUDIT_MAX_ID || len < NONCE_LEN + TAG_LEN ||
	    len > (size_t)INT_MAX)
		return TH_EINVAL;
	uint64_t slot;
	int state;
	int rc = slot_get(t, subject, &slot, &state);
	if (rc)
		return rc;
	if (state != SLOT_LIVE)
		return TH_ENOTFOUND;
	unsigned char key[SLOT_LEN];
	if ((rc = key_read(a, slot, key)))
		return rc;
	size_t n = len - NONCE_LEN - TAG_LEN;
	unsigned char *plain = xmalloc(n + 1);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int l1 = 0, l2 = 0;
	int ok = ctx && EVP_DecryptInit_ex2(ctx, a->gcm, key, buf, NULL);
	ok = ok && EVP_DecryptUpdate(ctx, NULL, &l1, (const unsigned char *)subject, (int)strlen(subject));
	ok = ok && EVP_DecryptUpdate(ctx, plain, &l1, buf + NONCE_LEN, (int)n);
	ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)(buf + NONCE_LEN + n));
	ok = ok && EVP_DecryptFinal_ex(ctx, plain + l1, &l2) > 0;
	EVP_CIPHER_CTX_free(ctx);
	explicit_bzero(key, sizeof(key));
	if (!ok) {
		explicit_bzero(plain, n + 1);
		free(plain);
		return TH_ECRYPTO;
	}
	plain[n] = '\0';
	*out = plain;
	*outlen = n;
	return TH_OK;
}

int audit_unseal_bytes(audit *a, store_txn *t, const char *subject, const void *sealed, size_t len,
                       unsigned char **out, size_t *outlen)
{
	return unseal_raw(a, t, subject, sealed, len, out, outlen);
}

int audit_unseal(audit *a, store_txn *t, const char *subject, const char *sealed, char **out)
{
	if (!subject || !*subject || strlen(subject) > AUDIT_MAX_ID || !sealed)
		return TH_EINVAL;
	uint64_t slot;
	int state;
	int rc = slot_get(t, subject, &slot, &state);
	if (rc)
		return rc;
	if (state != SLOT_LIVE)
		return TH_ENOTFOUND;
	unsigned char *buf;
	size_t len;
	if (b64_decode(sealed, &buf, &len))
		return TH_EINVAL;
	if (len < NONCE_LEN + TAG_LEN) {
		free(buf);
		return TH_EINVAL;
	}
	unsigned char key[SLOT_LEN];
	if ((rc = key_read(a, slot, key))) {
		free(buf);
		return rc;
	}
	size_t n = len - NONCE_LEN - TAG_LEN;
	char *plain = xmalloc(n + 1);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int l1 = 0, l2 = 0;
	int ok = ctx && EVP_DecryptInit_ex2(ctx, a->gcm, key, buf, NULL);
	ok = ok && EVP_DecryptUpdate(ctx, NULL, &l1, (const unsigned char *)subject, (int)strlen(subject));
	ok = ok && EVP_DecryptUpdate(ctx, (unsigned char *)plain, &l1, buf + NONCE_LEN, (int)n);
	ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, buf + NONCE_LEN + n);
	ok = ok && EVP_DecryptFinal_ex(ctx, (unsigned char *)plain + l1, &l2) > 0;
	EVP_CIPHER_CTX_free(ctx);
	explicit_bzero(key, sizeof(key));
	free(buf);
	if (!ok) {
		explicit_bzero(plain, n + 1);
		free(plain);
		return TH_ECRYPTO;
	}
	plain[n] = '\0';
	*out = plain;
	return TH_OK;
}

/* Which slots live subjects reference, gathered by seal_reconcile. */
struct live_map {
	unsigned char *live;
	uint64_t nslots;
	size_t beyond; /* live slots past the end of the file: their keys are lost */
};

static int mark_live(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct live_map *m = ctx;
	(void)key;
	(void)klen;
	/* A damaged entry marks nothing, so its slot is zeroed: when in doubt, forget. */
	if (vlen != 9 || ((const unsigned char *)val)[8] != SLOT_LIVE)
		return 0;
	uint64_t slot = get_u64(val);
	if (slot < m->nslots)
		m->live[slot] = 1;
	else
		m->beyond++;
	return 0;
}

#define RECONCILE_CHUNK 128 /* slots read at a time */

/*
 * Zero every slot that no live subject references: erased keys whose
 * shredding a crash cut short, and keys written by aborted transactions.
 * Runs inside a write transaction, so no other writer is between writing a
 * new key and committing the reference to it.
 */
static int seal_reconcile(audit *a, store_txn *t)
{
	struct stat sb;
	if (fstat(a->seal_fd, &sb) != 0)
		return TH_EIO;
	struct live_map m = {NULL, (uint64_t)sb.st_size / SLOT_LEN, 0};
	m.live = xcalloc(m.nslots ? (size_t)m.nslots : 1, 1);
	int rc = store_walk(t, STORE_SEAL_SLOTS, NULL, 0, mark_live, &m);
	static const unsigned char zero[SLOT_LEN];
	unsigned char buf[RECONCILE_CHUNK * SLOT_LEN];
	size_t zeroed = 0;
	for (uint64_t base = 0; !rc && base < m.nslots; base += RECONCILE_CHUNK) {
		uint64_t n = m.nslots - base < RECONCILE_CHUNK ? m.nslots - base : RECONCILE_CHUNK;
		if ((rc = read_full(a->seal_fd, buf, (size_t)n * SLOT_LEN, (off_t)(base * SLOT_LEN))))
			break;
		for (uint64_t i = 0; i < n && !rc; i++) {
			if (m.live[base + i] || memcmp(buf + i * SLOT_LEN, zero, SLOT_LEN) == 0)
				continue;
			rc = write_full(a->seal_fd, zero, SLOT_LEN, (off_t)((base + i) * SLOT_LEN));
			zeroed++;
		}
	}
	explicit_bzero(buf, sizeof(buf));
	free(m.live);
	if (!rc && zeroed && fdatasync(a->seal_fd) != 0)
		rc = TH_EIO;
	if (rc) {
		LOG(LOG_ERROR, "audit: cannot reconcile the seal key file: %s", th_strerror(rc));
		return rc == TH_ENOTFOUND ? TH_EIO : rc;
	}
	if (zeroed)
		LOG(LOG_INFO, "audit: zeroed %zu erased or unused seal key slot(s)", zeroed);
	if (m.beyond)
		LOG(LOG_ERROR,
		    "audit: the seal key file is shorter than the store expects: the sealed detail of %zu "
		    "subject(s) cannot be read (was the file replaced or restored from an old backup?)",
		    m.beyond);
	return TH_OK;
}

/* ---- open, close ------------------------------------------------------- */

/* A lost signing key must not be silently replaced once checkpoints exist. */
static int refuse_new_key(store *st, const char *path)
{
	store_txn *t;
	int rc = store_txn_begin(st, 0, &t);
	if (rc)
		return rc;
	const void *k, *v;
	size_t klen, vlen;
	rc = store_first(t, STORE_AUDIT_CKPT, &k, &klen, &v, &vlen);
	if (rc == TH_OK) {
		json_t *ck = json_loadb(v, vlen, 0, NULL);
		const char *key = json_string_value(json_object_get(ck, "key"));
		LOG(LOG_ERROR,
		    "audit: the signing key %s is missing, but the audit log holds checkpoints signed by %s. "
		    "Restore the key file from where it was kept: a new key would make every earlier "
		    "checkpoint fail verification",
		    path, key ? key : "(unreadable)");
		json_decref(ck);
		rc = TH_ECONFIG;
	} else if (rc == TH_ENOTFOUND) {
		rc = TH_OK;
	}
	store_txn_abort(t);
	return rc;
}

/* The head must not be behind the last record: nothing could be appended. */
static int head_check(store_txn *t, const struct head *h)
{
	const void *k, *v;
	size_t klen, vlen;
	int rc = store_last(t, STORE_AUDIT, &k, &klen, &v, &vlen);
	uint64_t last = 0;
	if (rc == TH_OK && klen == 8)
		last = store_key_u64(k);
	else if (rc != TH_ENOTFOUND)
		return TH_ESTORE;
	if (last > h->seq) {
		LOG(LOG_ERROR,
		    "audit: the log holds records up to seq %llu but its chain head is at %llu: the store "
		    "was altered outside Threshold and new records cannot be chained. Run `threshold audit "
		    "verify` and restore the store from a backup",
		    (unsigned long long)last, (unsigned long long)h->seq);
		return TH_ESTORE;
	}
	if (last < h->seq)
		LOG(LOG_ERROR,
		    "audit: the log ends at seq %llu but its chain head is at %llu: records were removed. "
		    "Run `threshold audit verify`",
		    (unsigned long long)last, (unsigned long long)h->seq);
	return TH_OK;
}

int audit_open(store *st, const struct audit_opts *o, audit **out)
{
	if (!o || !o->key_path || !o->seal_path || !o->checkpoint_every || !o->checkpoint_seconds)
		return TH_EINVAL;
	audit *a = xcalloc(1, sizeof(*a));
	a->st = st;
	a->seal_fd = -1;
	a->every = o->checkpoint_every;
	a->seconds = o->checkpoint_seconds;
	pthread_mutex_init(&a->mu, NULL);
	unsigned char seed[SEED_LEN];
	store_txn *t = NULL;
	struct head h;
	int created = 0;

	int rc = seed_load(o->key_path, seed);
	if (rc == TH_ENOTFOUND && (rc = refuse_new_key(st, o->key_path)) == TH_OK) {
		rc = seed_create(o->key_path, seed);
		if (rc == TH_EEXIST)
			rc = seed_load(o->key_path, seed);
		else
			created = rc == TH_OK;
	}
	if (rc)
		goto fail;
	rc = signer_new(seed, &a->sign_mem, &a->sign, a->pubkey);
	explicit_bzero(seed, sizeof(seed));
	if (rc)
		goto fail;
	if (created)
		LOG(LOG_INFO,
		    "audit: created the signing key %s; its public key is %s (keep a copy elsewhere)",
		    o->key_path, a->pubkey);
	if (!(a->gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL))) {
		rc = TH_ECRYPTO;
		goto fail;
	}
	a->seal_fd = open(o->seal_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (a->seal_fd < 0) {
		LOG(LOG_ERROR, "audit: cannot open the seal key file %s: %s", o->seal_path, strerror(errno));
		rc = TH_EIO;
		goto fail;
	}
	sync_parent(o->seal_path);
	struct stat sb;
	if (fstat(a->seal_fd, &sb) != 0) {
		rc = TH_EIO;
		goto fail;
	}
	if ((rc = check_private(o->seal_path, &sb, "the audit seal keys")))
		goto fail;
	if ((rc = store_txn_begin(st, 1, &t)))
		goto fail;
	if ((rc = seal_reconcile(a, t)) || (rc = head_read(t, &h)) || (rc = head_check(t, &h)))
		goto fail;
	store_txn_abort(t);
	hints_set(a, &h);
	*out = a;
	return TH_OK;
fail:
	explicit_bzero(seed, sizeof(seed));
	store_txn_abort(t);
	audit_close(a);
	return rc;
}

int audit_open_config(store *st, const struct config *cfg, audit **out)
{
	char *seal = xasprintf("%s/%s", cfg->store_path, AUDIT_SEAL_FILE);
	struct audit_opts o = {cfg->audit_key_path, seal, cfg->audit_checkpoint_every,
	                       cfg->audit_checkpoint_seconds};
	int rc = audit_open(st, &o, out);
	free(seal);
	return rc;
}

void audit_close(audit *a)
{
	if (!a)
		return;
	signer_free(a->sign_mem, a->sign);
	EVP_CIPHER_free(a->gcm);
	if (a->seal_fd >= 0)
		close(a->seal_fd);
	for (size_t i = 0; i < a->nshreds; i++)
		free(a->shreds[i].subject);
	free(a->shreds);
	pthread_mutex_destroy(&a->mu);
	free(a);
}

const char *audit_pubkey(const audit *a)
{
	return a->pubkey;
}

/* ---- appending --------------------------------------------------------- */

/* ---- indexes ----------------------------------------------------------- */

/*
 * STORE_AUDIT_INDEX answers `audit list --kind/--room/--actor` without a
 * scan: key 'k'|'r'|'a' then the kind name, room or actor; one 8-byte BE
 * seq per record (DUPFIXED, so numeric order).  STORE_AUDIT_BY_TIME answers
 * --since: second S -> the first seq at which the largest ts seen so far
 * reached S.  Records before that seq all have ts < S (even if the clock
 * once went back), so a walk from it misses none.  Both are written in the
 * commit that appends the record; neither is part of the chain.
 */
static int index_put_n(store_txn *t, char tag, const char *val, size_t n, const unsigned char seq[8])
{
	char key[1 + AUDIT_MAX_ID];
	if (!n || n > AUDIT_MAX_ID)
		return TH_OK;
	key[0] = tag;
	memcpy(key + 1, val, n);
	int rc = store_put(t, STORE_AUDIT_INDEX, key, n + 1, seq, 8, 0);
	return rc == TH_EEXIST ? TH_OK : rc;
}

static int index_put(store_txn *t, char tag, const char *val, const unsigned char seq[8])
{
	return index_put_n(t, tag, val, val ? strlen(val) : 0, seq);
}

static int subject_put_n(store_txn *t, const char *val, size_t n, const unsigned char seq[8])
{
	if (!n || n > AUDIT_MAX_ID)
		return TH_OK;
	int rc = store_put(t, STORE_AUDIT_BY_SUBJECT, val, n, seq, 8, 0);
	return rc == TH_EEXIST ? TH_OK : rc;
}

static int time_put(store_txn *t, uint64_t ts_ms, const unsigned char seq[8])
{
	const void *k;
	size_t klen;
	uint64_t sec = ts_ms / 1000;
	int rc = store_last(t, STORE_AUDIT_BY_TIME, &k, &klen, NULL, NULL);
	if (rc == TH_OK && klen == 8 && store_key_u64(k) >= sec)
		return TH_OK; /* not past the largest second seen: covered */
	if (rc && rc != TH_ENOTFOUND)
		return rc;
	unsigned char key[8];
	store_u64_key(key, sec);
	return store_put(t, STORE_AUDIT_BY_TIME, key, 8, seq, 8, STORE_APPEND);
}

static int index_keys(store_txn *t, const char *kind, const char *room, const char *actor,
                      const unsigned char seq[8])
{
	int rc = index_put(t, 'k', kind, seq);
	if (!rc)
		rc = index_put(t, 'r', room, seq);
	if (!rc)
		rc = index_put(t, 'a', actor, seq);
	return rc;
}

/*
 * The index's tail.  A record's 'k', 'r' and 'a' entries are not written by
 * the commit that appends it but AUDIT_INDEX_TAIL records later, all in one
 * commit: the records after META_INDEXED, the newest of the log, are read
 * by audit_iter straight from STORE_AUDIT instead.  Appended one at a time,
 * each record would write the path of three duplicate trees, one of them
 * (its kind's) as deep as the log is long; a batch of them shares those
 * pages.  Sixteen, not more: the entries of a kind share a path, but those
 * of rooms, actors and subjects fall all over trees that a big log makes
 * large, so a batch writes about a leaf an entry; at a million records a
 * batch of 64 wrote 230 pages in one commit, the slowest transactions' 1.6
 * times the empty store's (docs/performance.md).  STORE_AUDIT_BY_SUBJECT
 * likewise (audit_iter and audit_export
 * read the tail too).  STORE_AUDIT_BY_TIME is still written with the record,
 * at most once a second: audit_iter's walks start where it says.
 */
#define AUDIT_INDEX_TAIL 16

static int indexed_read(store_txn *t, uint64_t *out)
{
	const void *v;
	size_t vlen;
	*out = 0;
	int rc = store_get(t, STORE_META, META_INDEXED, strlen(META_INDEXED), &v, &vlen);
	if (rc == TH_ENOTFOUND)
		return TH_OK;
	if (rc)
		return rc;
	if (vlen != 8)
		return TH_ESTORE;
	*out = store_key_u64(v);
	return TH_OK;
}

static int indexed_write(store_txn *t, uint64_t seq)
{
	unsigned char v[8];
	store_u64_key(v, seq);
	return store_put(t, STORE_META, META_INDEXED, strlen(META_INDEXED), v, 8, 0);
}

struct index_walk {
	store_txn *t;
	int times; /* STORE_AUDIT_BY_TIME too (a rebuild), not only the three keys */
};

/* The fields the indexes key on, in the order of ix_names. */
enum { IX_KIND, IX_ROOM, IX_ACTOR, IX_SUBJECT, IX_FIELDS };
static const char *const ix_names[IX_FIELDS] = {"kind", "room", "actor", "subject"};

/*
 * Find the top-level string fields of stored record @p s that the indexes
 * key on without building the record: jansson builds every field (details,
 * hashes) and was most of a batch's cost.  Only the plain case: a key or one
 * of those values holding a backslash, or any odd shape, @return -1 and
 * the caller parses the record with jansson instead.  A field given twice
 * counts as its last, as jansson has it; a field absent or not a string is
 * left NULL.
 */
static int fields_scan(const char *s, size_t len, const char *p[IX_FIELDS], size_t n[IX_FIELDS])
{
	int depth = 0;
	for (int k = 0; k < IX_FIELDS; k++)
		p[k] = NULL, n[k] = 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '{' || c == '[') {
			depth++;
			continue;
		}
		if (c == '}' || c == ']') {
			if (--depth < 0)
				return -1;
			continue;
		}
		if (c != '"')
			continue;
		size_t st = ++i;
		int esc = 0;
		while (i < len && s[i] != '"') {
			if (s[i] == '\\')
				esc = 1, i++;
			i++;
		}
		if (i >= len)
			return -1;
		size_t sl = i - st, j = i + 1;
		if (depth != 1)
			continue;
		while (j < len && (s[j] == ' ' || s[j] == '\n' || s[j] == '\t' || s[j] == '\r'))
			j++;
		if (j >= len || s[j] != ':')
			continue; /* a value, not a key */
		if (esc)
			return -1;
		int k = 0;
		while (k < IX_FIELDS && !(strlen(ix_names[k]) == sl && memcmp(ix_names[k], s + st, sl) == 0))
			k++;
		if (k == IX_FIELDS)
			continue;
		for (j++; j < len && (s[j] == ' ' || s[j] == '\n' || s[j] == '\t' || s[j] == '\r'); j++)
			;
		p[k] = NULL, n[k] = 0;
		if (j >= len || s[j] != '"')
			continue; /* not a string: the general walk goes on over it */
		size_t vs = ++j;
		while (j < len && s[j] != '"' && s[j] != '\\')
			j++;
		if (j >= len || s[j] != '"')
			return -1;
		p[k] = s + vs;
		n[k] = j - vs;
		i = j;
	}
	return depth == 0 ? 0 : -1;
}

static int index_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct index_walk *w = ctx;
	store_txn *t = w->t;
	if (klen != 8)
		return -TH_ESTORE;
	const char *fp[IX_FIELDS];
	size_t fn[IX_FIELDS];
	if (!w->times && fields_scan(val, vlen, fp, fn) == 0) {
		int rc = index_put_n(t, 'k', fp[IX_KIND], fn[IX_KIND], key);
		if (!rc)
			rc = index_put_n(t, 'r', fp[IX_ROOM], fn[IX_ROOM], key);
		if (!rc)
			rc = index_put_n(t, 'a', fp[IX_ACTOR], fn[IX_ACTOR], key);
		if (!rc)
			rc = subject_put_n(t, fp[IX_SUBJECT], fn[IX_SUBJECT], key);
		return rc ? -rc : 0;
	}
	json_t *rec = json_loadb(val, vlen, 0, NULL);
	json_int_t ts = json_integer_value(json_object_get(rec, "ts"));
	int rc = TH_OK;
	if (json_is_object(rec)) {
		rc = index_keys(t, json_string_value(json_object_get(rec, "kind")),
		                json_string_value(json_object_get(rec, "room")),
		                json_string_value(json_object_get(rec, "actor")), key);
		const char *subject = json_string_value(json_object_get(rec, "subject"));
		if (!rc && subject)
			rc = subject_put_n(t, subject, strlen(subject), key);
		if (!rc && w->times)
			rc = time_put(t, ts > 0 ? (uint64_t)ts : 0, key);
	}
	json_decref(rec);
	return rc ? -rc : 0;
}

int audit_index_build(store_txn *t)
{
	struct index_walk w = {t, 1};
	struct head h;
	int rc = store_walk(t, STORE_AUDIT, NULL, 0, index_one, &w);
	if (!rc)
		rc = head_read(t, &h);
	return rc ? rc : indexed_write(t, h.seq);
}

int audit_index_migrate_v4(store_txn *t)
{
	struct head h;
	int rc = head_read(t, &h);
	return rc ? rc : indexed_write(t, h.seq);
}

/* Record @p seq was just appended: once AUDIT_INDEX_TAIL records wait, put
 * them all into STORE_AUDIT_INDEX. */
static int index_tail(store_txn *t, uint64_t seq)
{
	uint64_t done;
	int rc = indexed_read(t, &done);
	if (rc || seq - done < AUDIT_INDEX_TAIL)
		return rc;
	unsigned char from[8];
	store_u64_key(from, done + 1);
	struct index_walk w = {t, 0};
	rc = store_walk(t, STORE_AUDIT, from, 8, index_one, &w);
	return rc ? rc : indexed_write(t, seq);
}

/* Append @p rec after head @p h (advanced on success); the caller writes the head. */
static int chain_append(audit *a, store_txn *t, const struct audit_rec *rec, struct head *h)
{
	char *sealed = NULL;
	int rc;
	if (rec->subject && (!*rec->subject || strlen(rec->subject) > AUDIT_MAX_ID))
		return *rec->subject ? TH_ETOOLARGE : TH_EINVAL;
	if (rec->sealed) {
		if (!rec->subject)
			return TH_EINVAL;
		if ((rc = seal_text(a, t, rec->subject, rec->sealed, &sealed)))
			return rc;
	}
	struct audit_rec r = *rec;
	if (!r.ts_ms)
		r.ts_ms = th_now_ms();
	unsigned char hash[AUDIT_HASH_LEN], key[8];
	uint64_t seq = h->seq + 1;
	/* The body is written after room for the stored value's prefix, so the
	 * stored value is made in place: one buffer, no copy. */
	struct buf b = {xmalloc(1024), STORED_PREFIX - 1, 1024};
	rc = encode_body(&b, &r, seq, sealed);
	if (!rc && b.len > AUDIT_MAX_RECORD)
		rc = TH_ETOOLARGE;
	if (!rc)
		rc = record_hash(b.p + STORED_PREFIX - 1, b.len - (STORED_PREFIX - 1), h->hash, NULL, hash);
	if (rc)
		goto out;
	stored_prefix(b.p, hash, h->hash);
	store_u64_key(key, seq);
	rc = store_put(t, STORE_AUDIT, key, sizeof(key), b.p, b.len, STORE_APPEND);
	if (rc == TH_EEXIST) {
		LOG(LOG_ERROR,
		    "audit: cannot append record %llu: the log holds a later record (altered outside "
		    "Threshold?); run `threshold audit verify`",
		    (unsigned long long)seq);
		rc = TH_ESTORE;
	}
	if (!rc)
		rc = time_put(t, r.ts_ms, key);
	if (!rc)
		rc = index_tail(t, seq);
	if (!rc) {
		h->seq = seq;
		memcpy(h->hash, hash, AUDIT_HASH_LEN);
	}
out:
	free(sealed);
	free(b.p);
	return rc;
}

int audit_append(audit *a, store_txn *t, const struct audit_rec *rec, uint64_t *seq_out)
{
	if (rec->kind == AUDIT_CHECKPOINT) /* it must come with a signature */
		return TH_EINVAL;
	struct head h;
	int rc = head_read(t, &h);
	if (!rc)
		rc = chain_append(a, t, rec, &h);
	if (!rc)
		rc = head_write(t, &h);
	if (rc)
		return rc;
	hints_set(a, &h);
	if (seq_out)
		*seq_out = h.seq;
	return TH_OK;
}

int audit_checkpoint_due(audit *a, uint64_t now_ms)
{
	pthread_mutex_lock(&a->mu);
	int due = a->hint_head > a->hint_ckpt && (a->hint_head - a->hint_ckpt >= a->every ||
	                                          now_ms >= a->hint_ckpt_ms + (uint64_t)a->seconds * 1000);
	pthread_mutex_unlock(&a->mu);
	return due;
}

static char *ckpt_message(uint64_t seq, const char *hex)
{
	return xasprintf(CKPT_PREFIX "%llu\n%s\n", (unsigned long long)seq, hex);
}

int audit_checkpoint(audit *a, store_txn *t, uint64_t now_ms)
{
	struct head h;
	int rc = head_read(t, &h);
	if (rc || h.seq == 0 || h.seq == h.ckpt_seq)
		return rc;
	if (!now_ms)
		now_ms = th_now_ms();
	json_t *details = json_pack("{s:I}", "previous", (json_int_t)h.ckpt_seq);
	struct audit_rec rec = {.kind = AUDIT_CHECKPOINT, .ts_ms = now_ms, .details = details};
	rc = chain_append(a, t, &rec, &h);
	json_decref(details);
	if (rc)
		return rc;

	char hex[HEX_LEN + 1];
	th_hex(hex, h.hash, AUDIT_HASH_LEN);
	char *msg = ckpt_message(h.seq, hex);
	size_t siglen = olm_pk_signature_length();
	char *sig = xmalloc(siglen + 1);
	pthread_mutex_lock(&a->mu);
	size_t r = olm_pk_sign(a->sign, (const uint8_t *)msg, strlen(msg), (uint8_t *)sig, siglen);
	if (r == olm_error())
		LOG(LOG_ERROR, "audit: cannot sign a checkpoint: %s", olm_pk_signing_last_error(a->sign));
	pthread_mutex_unlock(&a->mu);
	free(msg);
	if (r == olm_error()) {
		free(sig);
		return TH_ECRYPTO;
	}
	sig[siglen] = '\0';
	json_t *ck = json_pack("{s:s, s:s, s:I, s:s, s:I}", "hash", hex, "key", a->pubkey, "seq",
	                       (json_int_t)h.seq, "sig", sig, "ts", (json_int_t)now_ms);
	char *v = json_dumps(ck, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(ck);
	free(sig);
	unsigned char key[8];
	store_u64_key(key, h.seq);
	rc = store_put(t, STORE_AUDIT_CKPT, key, sizeof(key), v, strlen(v), STORE_APPEND);
	free(v);
	if (rc == TH_EEXIST) {
		LOG(LOG_ERROR,
		    "audit: a checkpoint after seq %llu already exists; run `threshold audit verify`",
		    (unsigned long long)h.seq);
		rc = TH_ESTORE;
	}
	if (rc)
		return rc;
	h.ckpt_seq = h.seq;
	h.ckpt_ms = now_ms;
	if ((rc = head_write(t, &h)))
		return rc;
	hints_set(a, &h);
	return TH_OK;
}

/* ---- erasure ----------------------------------------------------------- */

int audit_erase_subject(audit *a, store_txn *t, const char *subject, const char *actor, const char *reason)
{
	if (!subject || !*subject)
		return TH_EINVAL;
	if (strlen(subject) > AUDIT_MAX_ID)
		return TH_ETOOLARGE;
	uint64_t slot = SLOT_NONE;
	int state = SLOT_ERASED;
	const char *what;
	int rc = slot_get(t, subject, &slot, &state);
	if (rc == TH_ENOTFOUND) {
		what = "none";
		slot = SLOT_NONE;
	} else if (rc) {
		return rc;
	} else {
		what = state == SLOT_LIVE ? "destroyed" : "already_erased";
	}
	int was_live = rc == TH_OK && state == SLOT_LIVE;
	if ((rc == TH_ENOTFOUND || was_live) && (rc = slot_put(t, subject, slot, SLOT_ERASED)))
		return rc;
	json_t *details = json_pack("{s:s}", "sealed_key", what);
	struct audit_rec rec = {.kind = AUDIT_DATA_ERASED,
	                        .actor = actor,
	                        .subject = subject,
	                        .reason = reason,
	                        .details = details};
	rc = audit_append(a, t, &rec, NULL);
	json_decref(details);
	if (rc || !was_live)
		return rc;
	pthread_mutex_lock(&a->mu);
	if (a->nshreds == a->capshreds) {
		a->capshreds = a->capshreds ? 2 * a->capshreds : 8;
		a->shreds = xrealloc(a->shreds, a->capshreds * sizeof(*a->shreds));
	}
	a->shreds[a->nshreds++] = (struct shred){xstrdup(subject), slot};
	pthread_mutex_unlock(&a->mu);
	return TH_OK;
}

void audit_txn_committed(audit *a)
{
	pthread_mutex_lock(&a->mu);
	struct shred *list = a->shreds;
	size_t n = a->nshreds;
	a->shreds = NULL;
	a->nshreds = a->capshreds = 0;
	pthread_mutex_unlock(&a->mu);
	if (!n)
		return;
	static const unsigned char zero[SLOT_LEN];
	store_txn *t;
	size_t done = 0;
	if (store_txn_begin(a->st, 0, &t) == TH_OK) {
		for (size_t i = 0; i < n; i++) {
			uint64_t slot;
			int state;
			/* Only what is committed as erased: after an abort the key is live. */
			if (slot_get(t, list[i].subject, &slot, &state) != TH_OK || state != SLOT_ERASED ||
			    slot != list[i].slot)
				continue;
			if (write_full(a->seal_fd, zero, SLOT_LEN, (off_t)(slot * SLOT_LEN)) == TH_OK)
				done++;
			else
				LOG(LOG_ERROR,
				    "audit: cannot zero an erased seal key (%s); retried at the next start",
				    strerror(errno));
		}
		store_txn_abort(t);
	}
	if (done && fdatasync(a->seal_fd) != 0)
		LOG(LOG_ERROR, "audit: cannot sync the seal key file (%s); retried at the next start",
		    strerror(errno));
	for (size_t i = 0; i < n; i++)
		free(list[i].subject);
	free(list);
}

/* ---- reading ----------------------------------------------------------- */

void audit_filter_init(struct audit_filter *f)
{
	memset(f, 0, sizeof(*f));
	f->kind = -1;
}

static int str_is(const json_t *rec, const char *key, const char *want)
{
	const char *s = json_string_value(json_object_get(rec, key));
	return s && want && strcmp(s, want) == 0;
}

static int matches(const struct audit_filter *f, const json_t *rec)
{
	json_int_t ts = json_integer_value(json_object_get(rec, "ts"));
	json_int_t seq = json_integer_value(json_object_get(rec, "seq"));
	if (f->min_seq && (seq < 0 || (uint64_t)seq < f->min_seq))
		return 0;
	if (f->since_ms && (ts < 0 || (uint64_t)ts < f->since_ms))
		return 0;
	if (f->until_ms && (ts < 0 || (uint64_t)ts >= f->until_ms))
		return 0;
	if (f->kind >= 0 && !str_is(rec, "kind", audit_kind_name((enum audit_kind)f->kind)))
		return 0;
	return (!f->subject || str_is(rec, "subject", f->subject)) &&
	       (!f->room || str_is(rec, "room", f->room)) && (!f->actor || str_is(rec, "actor", f->actor));
}

struct iter_ctx {
	store_txn *t;
	const struct audit_filter *f;
	audit_iter_fn fn;
	void *ctx;
	int stopped;      /* fn or max_seq ended the walk */
	uint64_t indexed; /* STORE_AUDIT_INDEX holds the records up to this seq */
};

static int iter_one(struct iter_ctx *ic, uint64_t seq, const void *val, size_t vlen)
{
	json_t *rec = json_loadb(val, vlen, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(rec)) {
		json_decref(rec);
		LOG(LOG_ERROR, "audit: record %llu cannot be read; run `threshold audit verify`",
		    (unsigned long long)seq);
		return -TH_ESTORE;
	}
	int r = matches(ic->f, rec) ? ic->fn(ic->ctx, seq, rec, val, vlen) : 0;
	json_decref(rec);
	if (r)
		ic->stopped = 1;
	return r;
}

static int iter_walk(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct iter_ctx *ic = ctx;
	if (klen != 8)
		return -TH_ESTORE;
	uint64_t seq = store_key_u64(key);
	if (ic->f->max_seq && seq > ic->f->max_seq) {
		ic->stopped = 1;
		return 1;
	}
	return iter_one(ic, seq, val, vlen);
}

static int iter_index(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct iter_ctx *ic = ctx;
	(void)key;
	(void)klen;
	if (vlen != 8)
		return -TH_ESTORE;
	uint64_t seq = store_key_u64(val);
	if (ic->f->max_seq && seq > ic->f->max_seq) {
		ic->stopped = 1;
		return 1;
	}
	if (seq > ic->indexed) /* cannot be: the tail is walked apart; do not list it twice */
		return 1;
	const void *rv;
	size_t rlen;
	int rc = store_get(ic->t, STORE_AUDIT, val, 8, &rv, &rlen);
	if (rc == TH_ENOTFOUND)
		return 0; /* a removed record: verify reports it */
	if (rc)
		return -rc;
	return iter_one(ic, seq, rv, rlen);
}

struct first_ctx {
	uint64_t seq;
	int found;
};

static int first_val(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct first_ctx *fc = ctx;
	(void)key;
	(void)klen;
	if (vlen != 8)
		return -TH_ESTORE;
	fc->seq = store_key_u64(val);
	fc->found = 1;
	return 1;
}

/* The first seq a walk for @p f need look at: its min_seq, or later where
 * STORE_AUDIT_BY_TIME shows no record before it is as recent as since_ms.
 * @return TH_OK, TH_ENOTFOUND (no record can match) or TH_ESTORE. */
static int first_seq(store_txn *t, const struct audit_filter *f, uint64_t *out)
{
	*out = f->min_seq ? f->min_seq : 1;
	if (!f->since_ms)
		return TH_OK;
	unsigned char sec[8];
	store_u64_key(sec, f->since_ms / 1000);
	struct first_ctx fc = {0, 0};
	int rc = store_walk(t, STORE_AUDIT_BY_TIME, sec, 8, first_val, &fc);
	if (rc)
		return rc;
	if (!fc.found)
		return TH_ENOTFOUND;
	if (fc.seq > *out)
		*out = fc.seq;
	return TH_OK;
}

/* After an index's walk: the records not yet in it, from seq @p from on. */
static int tail_walk(store_txn *t, struct iter_ctx *ic, uint64_t from)
{
	unsigned char key[8];
	if (ic->stopped)
		return TH_OK;
	store_u64_key(key, ic->indexed + 1 > from ? ic->indexed + 1 : from);
	return store_walk(t, STORE_AUDIT, key, sizeof(key), iter_walk, ic);
}

int audit_iter(store_txn *t, const struct audit_filter *f, audit_iter_fn fn, void *ctx)
{
	struct iter_ctx ic = {t, f, fn, ctx, 0, UINT64_MAX};
	uint64_t from;
	int rc = first_seq(t, f, &from);
	if (rc)
		return rc == TH_ENOTFOUND ? TH_OK : rc;
	unsigned char fromkey[8];
	store_u64_key(fromkey, from);
	if (f->subject) {
		size_t n = strlen(f->subject);
		if (n == 0 || n > AUDIT_MAX_ID)
			return TH_OK; /* no record can name it */
		if ((rc = indexed_read(t, &ic.indexed)) ||
		    (rc = store_walk_dups_from(t, STORE_AUDIT_BY_SUBJECT, f->subject, n, fromkey, 8,
		                               iter_index, &ic)))
			return rc;
		return tail_walk(t, &ic, from);
	}
	/* The smallest of the indexes the filter names: each record it lists is
	 * still checked against the whole filter. */
	const char *kind = f->kind >= 0 ? audit_kind_name((enum audit_kind)f->kind) : NULL;
	const struct {
		char tag;
		const char *val;
	} idx[] = {{'r', f->room}, {'a', f->actor}, {'k', kind}};
	char best[1 + AUDIT_MAX_ID];
	size_t bestlen = 0, bestn = SIZE_MAX;
	for (size_t i = 0; i < sizeof(idx) / sizeof(idx[0]); i++) {
		size_t n = idx[i].val ? strlen(idx[i].val) : 0, count;
		if (!idx[i].val)
			continue;
		if (n == 0 || n > AUDIT_MAX_ID)
			return TH_OK; /* no record can name it */
		char key[1 + AUDIT_MAX_ID];
		key[0] = idx[i].tag;
		memcpy(key + 1, idx[i].val, n);
		if ((rc = store_count_dups(t, STORE_AUDIT_INDEX, key, n + 1, &count)))
			return rc;
		if (count < bestn) {
			bestn = count;
			bestlen = n + 1;
			memcpy(best, key, bestlen);
		}
	}
	if (bestlen) {
		/* The index up to META_INDEXED, then the tail from the log itself. */
		if ((rc = indexed_read(t, &ic.indexed)))
			return rc;
		if (bestn && (rc = store_walk_dups_from(t, STORE_AUDIT_INDEX, best, bestlen, fromkey, 8,
		                                        iter_index, &ic)))
			return rc;
		return tail_walk(t, &ic, from);
	}
	return store_walk(t, STORE_AUDIT, fromkey, sizeof(fromkey), iter_walk, &ic);
}

/* ---- export ------------------------------------------------------------ */

struct export_ctx {
	store_txn *t;
	const struct audit_filter *f;
	uint64_t head_seq, next;
	FILE *out;
	int open; /* inside a segment: every record goes out, matching or as a stub */
	size_t n;
};

static int export_stub(struct export_ctx *x, uint64_t seq, const void *val, size_t vlen)
{
	struct parsed p;
	unsigned char bh[AUDIT_HASH_LEN];
	char why[160];
	if (record_check(val, vlen, &p, bh, why, sizeof(why)) || p.seq != seq) {
		LOG(LOG_ERROR, "audit: record %llu does not verify; run `threshold audit verify`",
		    (unsigned long long)seq);
		return -TH_ESTORE;
	}
	char bhx[HEX_LEN + 1], hx[HEX_LEN + 1], px[HEX_LEN + 1];
	th_hex(bhx, bh, AUDIT_HASH_LEN);
	th_hex(hx, p.hash, AUDIT_HASH_LEN);
	th_hex(px, p.prev, AUDIT_HASH_LEN);
	json_t *stub = json_pack("{s:s, s:s, s:b, s:s, s:I}", "body_hash", bhx, "hash", hx, "omitted", 1,
	                         "prev", px, "seq", (json_int_t)seq);
	json_dumpf(stub, x->out, JSON_COMPACT | JSON_SORT_KEYS);
	fputc('\n', x->out);
	json_decref(stub);
	return 0;
}

static int export_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct export_ctx *x = ctx;
	if (klen != 8)
		return -TH_ESTORE;
	uint64_t seq = store_key_u64(key);
	if (seq > x->head_seq)
		return 1;
	if (seq != x->next) {
		LOG(LOG_ERROR, "audit: record %llu is missing; run `threshold audit verify`",
		    (unsigned long long)x->next);
		return -TH_ESTORE;
	}
	x->next = seq + 1;
	json_t *rec = json_loadb(val, vlen, JSON_REJECT_DUPLICATES, NULL);
	int m = json_is_object(rec) && matches(x->f, rec);
	json_decref(rec);
	if (m) {
		fwrite(val, 1, vlen, x->out);
		fputc('\n', x->out);
		x->n++;
		x->open = 1;
	} else if (x->open || seq == x->head_seq) {
		/* Even with no match at all, the export ends in one signed segment. */
		int r = export_stub(x, seq, val, vlen);
		if (r)
			return r;
		x->open = 1;
	}
	if (x->open) {
		const void *cv;
		size_t clen;
		int rc = store_get(x->t, STORE_AUDIT_CKPT, key, 8, &cv, &clen);
		if (rc == TH_OK) {
			fprintf(x->out, "{\"checkpoint\":%.*s}\n", (int)clen, (const char *)cv);
			x->open = 0;
		} else if (rc != TH_ENOTFOUND) {
			return -rc;
		}
	}
	return seq == x->head_seq ? 1 : 0;
}

/* The first seq naming the subject, to start a subject's export there. */
static int first_dup(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key;
	(void)klen;
	if (vlen == 8)
		*(uint64_t *)ctx = store_key_u64(val);
	return 1;
}

int audit_export(store_txn *t, const struct audit_filter *f, const char *pubkey, uint64_t head_seq, FILE *out,
                 size_t *nrecords)
{
	unsigned char key[8];
	const void *v;
	size_t vlen;
	store_u64_key(key, head_seq);
	int rc = store_get(t, STORE_AUDIT_CKPT, key, 8, &v, &vlen);
	if (rc)
		return rc;
	uint64_t start = 0;
	if (f->subject && *f->subject && strlen(f->subject) <= AUDIT_MAX_ID &&
	    (rc = store_walk_dups(t, STORE_AUDIT_BY_SUBJECT, f->subject, strlen(f->subject), first_dup,
	                          &start)))
		return rc;
	if (!start && f->subject) {
		/* None indexed: the first can only be among the newest (the tail,
		 * above), or none, and then the export holds the head record
		 * alone, in the omitted form export_stub writes. */
		if ((rc = indexed_read(t, &start)))
			return rc;
		start = start + 1 < head_seq ? start + 1 : head_seq;
	}
	if (!start)
		start = 1;

	json_t *flt = json_object();
	if (f->since_ms)
		json_object_set_new(flt, "since_ms", json_integer((json_int_t)f->since_ms));
	if (f->until_ms)
		json_object_set_new(flt, "until_ms", json_integer((json_int_t)f->until_ms));
	if (f->kind >= 0 && audit_kind_name((enum audit_kind)f->kind))
		json_object_set_new(flt, "kind", json_string(audit_kind_name((enum audit_kind)f->kind)));
	if (f->subject)
		json_object_set_new(flt, "subject", json_string(f->subject));
	if (f->room)
		json_object_set_new(flt, "room", json_string(f->room));
	if (f->actor)
		json_object_set_new(flt, "actor", json_string(f->actor));
	json_t *hdr =
	        json_pack("{s:I, s:o, s:s, s:I, s:s}", "exported_ts", (json_int_t)th_now_ms(), "filter", flt,
	                  "format", EXPORT_FORMAT, "head_seq", (json_int_t)head_seq, "public_key", pubkey);
	json_dumpf(hdr, out, JSON_COMPACT | JSON_SORT_KEYS);
	fputc('\n', out);
	json_decref(hdr);

	struct export_ctx x = {t, f, head_seq, start, out, 0, 0};
	store_u64_key(key, start);
	rc = store_walk(t, STORE_AUDIT, key, 8, export_one, &x);
	if (!rc && x.next <= head_seq) {
		LOG(LOG_ERROR,
		    "audit: the log ends before the checkpoint at seq %llu; run `threshold audit verify`",
		    (unsigned long long)head_seq);
		rc = TH_ESTORE;
	}
	if (!rc && (fflush(out) != 0 || ferror(out)))
		rc = TH_EIO;
	if (!rc && nrecords)
		*nrecords = x.n;
	return rc;
}

/* ---- verification ------------------------------------------------------ */

static void bad(struct audit_verify_result *res, uint64_t seq, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Note a problem; the one at the lowest sequence number wins. */
static void bad(struct audit_verify_result *res, uint64_t seq, const char *fmt, ...)
{
	if (res->what[0] && seq >= res->bad_seq)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(res->what, sizeof(res->what), fmt, ap);
	va_end(ap);
	res->bad_seq = seq;
}

static OlmUtility *utility_new(void)
{
	return olm_utility(xmalloc(olm_utility_size()));
}

static void utility_free(OlmUtility *u)
{
	olm_clear_utility(u);
	free(u); /* olm_utility() returns the memory it was given */
}

static int sig_ok(OlmUtility *u, const char *pubkey, uint64_t seq, const char *hex, const char *sig)
{
	char buf[128];
	size_t n = strlen(sig);
	if (n >= sizeof(buf))
		return 0;
	memcpy(buf, sig, n); /* olm decodes the signature in place */
	char *msg = ckpt_message(seq, hex);
	size_t r = olm_ed25519_verify(u, pubkey, strlen(pubkey), msg, strlen(msg), buf, n);
	free(msg);
	return r != olm_error();
}

/* Check checkpoint @p ck against record @p seq's hash and @p pubkey. */
static int ckpt_check(OlmUtility *u, const json_t *ck, uint64_t seq, const unsigned char hash[AUDIT_HASH_LEN],
                      const char *pubkey, char *why, size_t whylen)
{
	const char *h = json_string_value(json_object_get(ck, "hash"));
	const char *key = json_string_value(json_object_get(ck, "key"));
	const char *sig = json_string_value(json_object_get(ck, "sig"));
	json_t *js = json_object_get(ck, "seq");
	char hex[HEX_LEN + 1];
	th_hex(hex, hash, AUDIT_HASH_LEN);
	if (!h || !key || !sig || !json_is_integer(js))
		snprintf(why, whylen, "the checkpoint at seq %llu is damaged", (unsigned long long)seq);
	else if ((uint64_t)json_integer_value(js) != seq)
		snprintf(why, whylen, "the checkpoint stored at seq %llu names seq %lld",
		         (unsigned long long)seq, (long long)json_integer_value(js));
	else if (strcmp(h, hex) != 0)
		snprintf(why, whylen,
		         "the checkpoint at seq %llu signed another chain: record %llu's hash differs",
		         (unsigned long long)seq, (unsigned long long)seq);
	else if (strcmp(key, pubkey) != 0)
		snprintf(why, whylen, "the checkpoint at seq %llu is signed by another key (%.43s)",
		         (unsigned long long)seq, key);
	else if (!sig_ok(u, pubkey, seq, hex, sig))
		snprintf(why, whylen, "the checkpoint at seq %llu has a bad signature",
		         (unsigned long long)seq);
	else
		return 0;
	return -1;
}

struct verify_ctx {
	store_txn *t;
	struct audit_verify_result *res;
	OlmUtility *util;
	const char *pubkey;
	uint64_t expect;
	int have_prev;
	unsigned char prev[AUDIT_HASH_LEN];
};

static int verify_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct verify_ctx *v = ctx;
	struct audit_verify_result *res = v->res;
	char why[200];
	struct parsed p;
	if (klen != 8) {
		bad(res, v->expect, "a record key after seq %llu is damaged",
		    (unsigned long long)(v->expect - 1));
		return 1;
	}
	uint64_t k = store_key_u64(key);
	if (k != v->expect) {
		if (k == v->expect + 1)
			bad(res, v->expect, "record %llu is missing", (unsigned long long)v->expect);
		else
			bad(res, v->expect, "records %llu..%llu are missing", (unsigned long long)v->expect,
			    (unsigned long long)(k - 1));
		return 1;
	}
	if (record_check(val, vlen, &p, NULL, why, sizeof(why))) {
		bad(res, k, "record %llu %s", (unsigned long long)k, why);
		return 1;
	}
	if (p.seq != k) {
		bad(res, k,
		    "the record stored as seq %llu says it is seq %llu: records were reordered or moved",
		    (unsigned long long)k, (unsigned long long)p.seq);
		return 1;
	}
	if (v->have_prev && memcmp(p.prev, v->prev, AUDIT_HASH_LEN) != 0) {
		if (k == 1)
			bad(res, k, "record 1 does not start the chain");
		else
			bad(res, k,
			    "record %llu does not follow record %llu: the link between them is "
			    "broken (a record was altered, removed or reordered)",
			    (unsigned long long)k, (unsigned long long)(k - 1));
		return 1;
	}
	const void *cv;
	size_t clen;
	int rc = store_get(v->t, STORE_AUDIT_CKPT, key, 8, &cv, &clen);
	if (rc == TH_OK) {
		json_t *ck = json_loadb(cv, clen, 0, NULL);
		int r = ckpt_check(v->util, ck, k, p.hash, v->pubkey, why, sizeof(why));
		json_decref(ck);
		if (r) {
			bad(res, k, "%s", why);
			return 1;
		}
		res->checkpoints++;
		res->last_checkpoint = k;
		th_hex(res->last_checkpoint_hash, p.hash, AUDIT_HASH_LEN);
	} else if (rc != TH_ENOTFOUND) {
		return -rc;
	} else if (p.is_checkpoint) {
		bad(res, k, "the signature of checkpoint record %llu is missing", (unsigned long long)k);
		return 1;
	}
	memcpy(v->prev, p.hash, AUDIT_HASH_LEN);
	v->have_prev = 1;
	if (!res->first_seq)
		res->first_seq = k;
	res->last_seq = k;
	res->records++;
	v->expect = k + 1;
	return 0;
}

/* After the walk: the head and the checkpoints must not point past the last record. */
static int verify_tail(struct verify_ctx *v, const struct head *h, uint64_t from)
{
	struct audit_verify_result *res = v->res;
	uint64_t last = v->expect - 1;
	if (h->seq > last) {
		if (h->seq == last + 1)
			bad(res, last + 1,
			    "record %llu is missing: the log ends at seq %llu but its head is at %llu "
			    "(the tail was cut off)",
			    (unsigned long long)(last + 1), (unsigned long long)last,
			    (unsigned long long)h->seq);
		else
			bad(res, last + 1,
			    "records %llu..%llu are missing: the log ends at seq %llu but its head is "
			    "at %llu (the tail was cut off)",
			    (unsigned long long)(last + 1), (unsigned long long)h->seq,
			    (unsigned long long)last, (unsigned long long)h->seq);
	} else if (res->records && h->seq < last) {
		if (h->seq == 0)
			bad(res, from, "the chain head is missing from the store");
		else
			bad(res, h->seq + 1,
			    "records %llu..%llu were added outside Threshold: the chain head is at %llu",
			    (unsigned long long)(h->seq + 1), (unsigned long long)last,
			    (unsigned long long)h->seq);
	} else if (res->records && memcmp(h->hash, v->prev, AUDIT_HASH_LEN) != 0) {
		bad(res, last, "record %llu does not match the chain head", (unsigned long long)last);
	}
	if (h->ckpt_seq > last)
		bad(res, last + 1,
		    "the newest checkpoint (seq %llu) is beyond the last record (%llu): the tail was "
		    "cut off",
		    (unsigned long long)h->ckpt_seq, (unsigned long long)last);
	const void *k, *val;
	size_t klen, vlen;
	int rc = store_last(v->t, STORE_AUDIT_CKPT, &k, &klen, &val, &vlen);
	if (rc == TH_OK && klen == 8 && store_key_u64(k) > last)
		bad(res, last + 1,
		    "a checkpoint at seq %llu is beyond the last record (%llu): the tail was cut off",
		    (unsigned long long)store_key_u64(k), (unsigned long long)last);
	return rc == TH_ENOTFOUND ? TH_OK : rc;
}

int audit_verify(store *st, const char *pubkey, uint64_t from_seq, struct audit_verify_result *res)
{
	memset(res, 0, sizeof(*res));
	if (!pubkey_ok(pubkey))
		return TH_EINVAL;
	memcpy(res->pubkey, pubkey, AUDIT_PUBKEY_LEN + 1);
	uint64_t from = from_seq > 1 ? from_seq : 1;
	store_txn *t;
	int rc = store_txn_begin(st, 0, &t);
	if (rc)
		return rc;
	struct verify_ctx v = {t, res, utility_new(), pubkey, from, 0, {0}};
	struct head h;
	if (head_read(t, &h)) {
		bad(res, 0, "the chain head in the store is damaged");
		goto out;
	}
	if (from == 1) {
		v.have_prev = 1; /* hash(0): all zero */
	} else {
		/* Trust the record before @from as the link into the checked span. */
		unsigned char key[8];
		const void *pv;
		size_t plen;
		store_u64_key(key, from - 1);
		if (store_get(t, STORE_AUDIT, key, 8, &pv, &plen) == TH_OK) {
			json_t *prev = json_loadb(pv, plen, 0, NULL);
			v.have_prev = hex_decode_hash(json_string_value(json_object_get(prev, "hash")),
			                              v.prev) == 0;
			json_decref(prev);
		}
	}
	unsigned char key[8];
	store_u64_key(key, from);
	rc = store_walk(t, STORE_AUDIT, key, 8, verify_one, &v);
	if (!rc && !res->what[0])
		rc = verify_tail(&v, &h, from);
out:
	store_txn_abort(t);
	utility_free(v.util);
	if (rc)
		return rc;
	return res->what[0] ? TH_EVERIFY : TH_OK;
}

/*
 * One line of an export into @p buf (@p cap bytes), without its newline.  A
 * NUL byte is kept as part of the line (which then is not JSON), never
 * taken for its end: fgets() would hide it.
 * @return its length, or -1 at the end of the file (*rc TH_OK), on a read
 *         error (TH_EIO) or for a line over cap - 2 bytes (TH_ETOOLARGE).
 */
static long read_line(FILE *f, char *buf, size_t cap, int *rc)
{
	size_t n = 0;
	int c;
	while ((c = getc_unlocked(f)) != EOF && c != '\n') {
		if (n + 2 >= cap) {
			*rc = TH_ETOOLARGE;
			return -1;
		}
		buf[n++] = (char)c;
	}
	if (c == EOF && (n == 0 || ferror(f))) {
		*rc = ferror(f) ? TH_EIO : TH_OK;
		return -1;
	}
	buf[n] = '\0';
	return (long)n;
}

/* Where audit_verify_file is in the file. */
struct file_state {
	struct audit_verify_result *res;
	int in_seg, have_cur;
	uint64_t seg_start, cur;
	unsigned char cur_hash[AUDIT_HASH_LEN];
};

/* Link record/stub @p seq (prev @p prev, hash @p hash) after what came before.  @return 0 or -1. */
static int file_link(struct file_state *s, uint64_t seq, const unsigned char prev[AUDIT_HASH_LEN],
                     const unsigned char hash[AUDIT_HASH_LEN])
{
	static const unsigned char zero[AUDIT_HASH_LEN];
	struct audit_verify_result *res = s->res;
	if (s->in_seg && seq != s->cur + 1) {
		bad(res, s->cur + 1,
		    seq > s->cur + 1 ? "record %llu is missing from the export"
		                     : "record %llu is out of order in the export",
		    (unsigned long long)(s->cur + 1));
		return -1;
	}
	if (!s->in_seg && s->have_cur && seq <= s->cur) {
		bad(res, seq, "record %llu is out of order in the export", (unsigned long long)seq);
		return -1;
	}
	/* Within a segment, and across two that touch, each record names the one before. */
	if ((s->in_seg || (s->have_cur && seq == s->cur + 1)) &&
	    memcmp(prev, s->cur_hash, AUDIT_HASH_LEN) != 0) {
		bad(res, seq, "record %llu does not follow record %llu: the link between them is broken",
		    (unsigned long long)seq, (unsigned long long)(seq - 1));
		return -1;
	}
	if (seq == 1 && memcmp(prev, zero, AUDIT_HASH_LEN) != 0) {
		bad(res, 1, "record 1 does not start the chain");
		return -1;
	}
	if (!s->in_seg)
		s->seg_start = seq;
	s->in_seg = 1;
	s->have_cur = 1;
	s->cur = seq;
	memcpy(s->cur_hash, hash, AUDIT_HASH_LEN);
	if (!res->first_seq)
		res->first_seq = seq;
	res->last_seq = seq;
	res->records++;
	return 0;
}

/* A stub: chain(prev, body_hash) must give its hash.  @return 0 or -1. */
static int file_stub(struct file_state *s, const json_t *o, size_t lineno)
{
	unsigned char prev[AUDIT_HASH_LEN], bh[AUDIT_HASH_LEN], hash[AUDIT_HASH_LEN], calc[AUDIT_HASH_LEN];
	json_t *js = json_object_get(o, "seq");
	if (!json_is_integer(js) || json_integer_value(js) < 1 ||
	    hex_decode_hash(json_string_value(json_object_get(o, "prev")), prev) ||
	    hex_decode_hash(json_string_value(json_object_get(o, "body_hash")), bh) ||
	    hex_decode_hash(json_string_value(json_object_get(o, "hash")), hash)) {
		bad(s->res, s->cur + 1, "line %zu: a damaged stub", lineno);
		return -1;
	}
	uint64_t seq = (uint64_t)json_integer_value(js);
	if (chain_hash(prev, bh, calc) || memcmp(calc, hash, AUDIT_HASH_LEN) != 0) {
		bad(s->res, seq, "the stub for record %llu does not match its hash", (unsigned long long)seq);
		return -1;
	}
	return file_link(s, seq, prev, hash);
}

int audit_verify_file(const char *path, const char *pubkey, struct audit_verify_result *res)
{
	memset(res, 0, sizeof(*res));
	if (pubkey && !pubkey_ok(pubkey))
		return TH_EINVAL;
	FILE *f = fopen(path, "r");
	if (!f)
		return TH_EIO;
	char *line = xmalloc(AUDIT_MAX_RECORD + 2);
	OlmUtility *util = utility_new();
	struct file_state s = {res, 0, 0, 0, 0, {0}};
	uint64_t head_seq = 0;
	size_t lineno = 1;
	int rc = TH_OK;
	char why[200];

	long n = read_line(f, line, AUDIT_MAX_RECORD + 2, &rc);
	json_t *hdr = n < 0 ? NULL : json_loadb(line, (size_t)n, 0, NULL);
	const char *hkey = json_string_value(json_object_get(hdr, "public_key"));
	if (n >= 0 && (!str_is(hdr, "format", EXPORT_FORMAT) || !pubkey_ok(hkey))) {
		bad(res, 0, "line 1 is not the header of a threshold audit export (%s)", EXPORT_FORMAT);
	} else if (n >= 0) {
		memcpy(res->pubkey, pubkey ? pubkey : hkey, AUDIT_PUBKEY_LEN + 1);
		json_int_t hs = json_integer_value(json_object_get(hdr, "head_seq"));
		head_seq = hs > 0 ? (uint64_t)hs : 0;
	}
	json_decref(hdr);

	while (!rc && !res->what[0] && (n = read_line(f, line, AUDIT_MAX_RECORD + 2, &rc)) >= 0) {
		lineno++;
		json_t *o = json_loadb(line, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
		json_t *ck = json_object_get(o, "checkpoint");
		struct parsed p;
		if (!json_is_object(o)) {
			bad(res, s.cur + 1, "line %zu is not a JSON object", lineno);
		} else if (ck) {
			if (!s.in_seg)
				bad(res, s.cur, "line %zu: a checkpoint that follows no record", lineno);
			else if (ckpt_check(util, ck, s.cur, s.cur_hash, res->pubkey, why, sizeof(why)))
				bad(res, s.cur, "%s", why);
			else {
				res->checkpoints++;
				res->last_checkpoint = s.cur;
				th_hex(res->last_checkpoint_hash, s.cur_hash, AUDIT_HASH_LEN);
				s.in_seg = 0;
			}
		} else if (json_is_true(json_object_get(o, "omitted"))) {
			file_stub(&s, o, lineno);
		} else if (record_check(line, (size_t)n, &p, NULL, why, sizeof(why))) {
			bad(res, s.cur + 1, "the record on line %zu %s", lineno, why);
		} else {
			file_link(&s, p.seq, p.prev, p.hash);
		}
		json_decref(o);
	}
	if (rc == TH_OK && !res->what[0]) {
		if (n < 0 && lineno == 1 && !res->pubkey[0])
			bad(res, 0, "the file is empty");
		else if (s.in_seg)
			bad(res, s.seg_start,
			    "records %llu..%llu are not covered by a signed checkpoint (the file was "
			    "cut short?)",
			    (unsigned long long)s.seg_start, (unsigned long long)s.cur);
		else if (!res->checkpoints)
			bad(res, 0, "the export holds no checkpoint");
		else if (head_seq != res->last_checkpoint)
			bad(res, res->last_checkpoint + 1,
			    "the export ends at checkpoint %llu but its header says %llu "
			    "(the file was cut short?)",
			    (unsigned long long)res->last_checkpoint, (unsigned long long)head_seq);
	}
	utility_free(util);
	free(line);
	fclose(f);
	if (rc)
		return rc;
	return res->what[0] ? TH_EVERIFY : TH_OK;
}

int audit_verify_against(store *st, const char *pubkey, const char *file, struct audit_verify_result *res)
{
	struct audit_verify_result kept;
	int rc = audit_verify_file(file, pubkey, &kept);
	if (rc == TH_EVERIFY) {
		memset(res, 0, sizeof(*res));
		snprintf(res->what, sizeof(res->what),
		         "the kept export %.40s does not verify itself (at seq %llu: %.140s)", file,
		         (unsigned long long)kept.bad_seq, kept.what);
		return TH_EVERIFY;
	}
	if (rc || (rc = audit_verify(st, pubkey, 0, res)))
		return rc;
	uint64_t c = kept.last_checkpoint;
	if (res->last_seq < c) {
		bad(res, res->last_seq + 1,
		    "the log ends at seq %llu, before the checkpoint at seq %llu in %s: records were removed",
		    (unsigned long long)res->last_seq, (unsigned long long)c, file);
		return TH_EVERIFY;
	}
	store_txn *t;
	if ((rc = store_txn_begin(st, 0, &t)))
		return rc;
	unsigned char key[8];
	const void *v;
	size_t vlen;
	store_u64_key(key, c);
	/* audit_verify just recomputed every stored hash, so the stored one is the chain's. */
	json_t *rec =
	        store_get(t, STORE_AUDIT, key, 8, &v, &vlen) == TH_OK ? json_loadb(v, vlen, 0, NULL) : NULL;
	if (!str_is(rec, "hash", kept.last_checkpoint_hash))
		bad(res, c, "record %llu is not the one %s signed: the log was rewritten since that export",
		    (unsigned long long)c, file);
	json_decref(rec);
	store_txn_abort(t);
	return res->what[0] ? TH_EVERIFY : TH_OK;
}
