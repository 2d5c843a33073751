/*
 * fuzz_audit_store.c - libFuzzer target for the decoding of audit records
 * as the store holds them (appservice/audit.c: audit_verify, audit_iter,
 * audit_export; appservice/audit_query.c: the "!audit recent" answer).
 * Someone with write access to the store can put any bytes there, and
 * verify exists to find out.
 *
 * The input is laid out like an export (audit.h, EXPORT), so a real export
 * is a seed: line N after an optional header becomes record N in a fresh
 * store; a line {"checkpoint":C} stores C as the signature of the record
 * before it.  The chain head is set to the last record, with the hash that
 * record states.  Each subject string is indexed as audit_append indexes it.
 *
 * Oracle, besides ASan and UBSan: audit_verify returns a documented code
 * and notes a problem exactly when it says TH_EVERIFY; reading and exporting
 * never fail on a store that verifies; and the export of a store that
 * verifies must itself verify (audit_verify_file) with the same newest
 * checkpoint.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "audit.h"
#include "audit_query.h"
#include "fuzzlib.h"
#include "store.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The key the seeds were signed with; used when the input has no header. */
#define SEED_PUBKEY "0YePhUMj6JEmTcoeAZYF89ke/CAOLDvD21b962GdxXA"

#define MAX_RECORDS 64

static int hex_hash(const char *s, unsigned char out[AUDIT_HASH_LEN])
{
	if (!s || strlen(s) != 2 * AUDIT_HASH_LEN)
		return -1;
	for (size_t i = 0; i < AUDIT_HASH_LEN; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (unsigned char)v;
	}
	return 0;
}

struct layout {
	uint64_t last, last_ckpt;
	unsigned char last_hash[AUDIT_HASH_LEN];
	char pubkey[AUDIT_PUBKEY_LEN + 1];
	int subject_seq; /* a record with a subject, or 0 */
	char subject[AUDIT_MAX_ID + 1];
};

/* Put the input into @p t as records, checkpoints, index and head. */
static int fill(store_txn *t, const char *in, size_t size, struct layout *lo)
{
	const char *p = in, *end = in + size;
	int first = 1, rc = TH_OK;
	while (p < end && !rc) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		json_t *o = json_loadb(p, n, 0, NULL);
		json_t *ck = json_object_get(o, "checkpoint");
		const char *fmt = json_string_value(json_object_get(o, "format"));
		const char *key = json_string_value(json_object_get(o, "public_key"));
		unsigned char k[8];
		if (first && fmt) {
			if (key && strlen(key) == AUDIT_PUBKEY_LEN)
				memcpy(lo->pubkey, key, AUDIT_PUBKEY_LEN + 1);
		} else if (ck && lo->last) {
			char *v = json_dumps(ck, JSON_COMPACT);
			store_u64_key(k, lo->last);
			if (v)
				rc = store_put(t, STORE_AUDIT_CKPT, k, 8, v, strlen(v), 0);
			free(v);
			lo->last_ckpt = lo->last;
		} else if (n && lo->last < MAX_RECORDS) {
			store_u64_key(k, ++lo->last);
			rc = store_put(t, STORE_AUDIT, k, 8, p, n, 0);
			if (hex_hash(json_string_value(json_object_get(o, "hash")), lo->last_hash))
				memset(lo->last_hash, 0, AUDIT_HASH_LEN);
			const char *subject = json_string_value(json_object_get(o, "subject"));
			size_t sl = subject ? strlen(subject) : 0;
			if (!rc && sl && sl <= AUDIT_MAX_ID) {
				rc = store_put(t, STORE_AUDIT_BY_SUBJECT, subject, sl, k, 8, 0);
				if (!lo->subject_seq) {
					lo->subject_seq = (int)lo->last;
					memcpy(lo->subject, subject, sl + 1);
				}
			}
		}
		json_decref(o);
		first = 0;
		p += n + 1;
	}
	if (rc)
		return rc;
	unsigned char head[56] = {0};
	store_u64_key(head, lo->last);
	memcpy(head + 8, lo->last_hash, AUDIT_HASH_LEN);
	store_u64_key(head + 8 + AUDIT_HASH_LEN, lo->last_ckpt);
	return store_put(t, STORE_META, "audit_head", 10, head, sizeof(head), 0);
}

static int count_one(void *ctx, uint64_t seq, const json_t *rec, const char *raw, size_t rawlen)
{
	(void)seq;
	FUZZ_ASSERT(json_is_object(rec) && raw && rawlen, "audit_iter gave no record");
	(*(size_t *)ctx)++;
	return 0;
}

/* Every way the CLI and the bot read records. */
static void read_all(store *st, const struct layout *lo, int verified)
{
	store_txn *t;
	FUZZ_ASSERT(store_txn_begin(st, 0, &t) == TH_OK, "read txn");
	struct audit_filter f;
	size_t n = 0;
	audit_filter_init(&f);
	int rc = audit_iter(t, &f, count_one, &n);
	FUZZ_ASSERT(!verified || (rc == TH_OK && n == lo->last),
	            "audit_iter on a verified log: %s, %zu of %llu", th_strerror(rc), n,
	            (unsigned long long)lo->last);
	FUZZ_ASSERT(rc == TH_OK || rc == TH_ESTORE, "audit_iter returned %s", th_strerror(rc));
	if (lo->subject_seq) {
		audit_filter_init(&f);
		f.subject = lo->subject;
		f.since_ms = 1;
		f.kind = AUDIT_GUEST_CREATED;
		rc = audit_iter(t, &f, count_one, &n);
		FUZZ_ASSERT(!verified || rc == TH_OK, "audit_iter by subject on a verified log: %s",
		            th_strerror(rc));
	}
	struct audit_query q = {.kind = AUDIT_QUERY_RECENT};
	struct audit_answer a;
	rc = audit_query_answer(NULL, t, &q, &a);
	FUZZ_ASSERT(!verified || rc == TH_OK, "!audit recent on a verified log: %s", th_strerror(rc));
	if (rc == TH_OK) {
		FUZZ_ASSERT(a.text && strlen(a.text) <= AUDIT_QUERY_MAX_TEXT, "!audit recent: text");
		audit_query_answer_free(&a);
	}

	if (lo->last_ckpt) {
		char *buf = NULL;
		size_t blen = 0;
		FILE *out = open_memstream(&buf, &blen);
		audit_filter_init(&f);
		if (lo->subject_seq)
			f.subject = lo->subject;
		size_t nrec = 0;
		rc = audit_export(t, &f, lo->pubkey, lo->last_ckpt, out, &nrec);
		fclose(out);
		FUZZ_ASSERT(!verified || rc == TH_OK, "audit_export of a verified log: %s", th_strerror(rc));
		if (verified) {
			struct audit_verify_result res;
			int vr = audit_verify_file(fuzz_input_path((const uint8_t *)buf, blen), lo->pubkey,
			                           &res);
			FUZZ_ASSERT(vr == TH_OK,
			            "the export of a verified log does not verify: %s (seq %llu)", res.what,
			            (unsigned long long)res.bad_seq);
			FUZZ_ASSERT(res.last_checkpoint == lo->last_ckpt, "the export ends at %llu, not %llu",
			            (unsigned long long)res.last_checkpoint,
			            (unsigned long long)lo->last_ckpt);
		}
		free(buf);
	}
	store_txn_abort(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char *dir;
	if (!dir) {
		fuzz_quiet();
		dir = xasprintf("%s/store", fuzz_scratch_dir());
	}
	fuzz_empty_dir(dir);
	store *st;
	FUZZ_ASSERT(store_open(dir, 16, &st) == TH_OK, "store_open");
	struct layout lo;
	memset(&lo, 0, sizeof(lo));
	memcpy(lo.pubkey, SEED_PUBKEY, sizeof(lo.pubkey));
	store_txn *t;
	FUZZ_ASSERT(store_txn_begin(st, 1, &t) == TH_OK, "write txn");
	if (fill(t, (const char *)data, size, &lo) != TH_OK) {
		/* a key or value LMDB will not take (too large): nothing to read */
		store_txn_abort(t);
		store_close(st);
		return 0;
	}
	FUZZ_ASSERT(store_txn_commit(t) == TH_OK, "commit");

	struct audit_verify_result res;
	int rc = audit_verify(st, lo.pubkey, 0, &res);
	FUZZ_ASSERT(rc == TH_OK || rc == TH_EVERIFY || rc == TH_EINVAL, "audit_verify returned %s",
	            th_strerror(rc));
	FUZZ_ASSERT((rc == TH_EVERIFY) == (res.what[0] != 0), "audit_verify: %s but \"%s\"", th_strerror(rc),
	            res.what);
	FUZZ_ASSERT(rc != TH_OK || res.records == lo.last, "verified %llu of %llu records",
	            (unsigned long long)res.records, (unsigned long long)lo.last);
	read_all(st, &lo, rc == TH_OK);
	store_close(st);
	return 0;
}
