/* test_store.c - the LMDB store: durability of commits, aborts, sequence keys,
 * walks, pruning, schema version, and a full map that corrupts nothing. */
#include <stdlib.h>
#include <string.h>

#include "dedupe.h"
#include "log.h"
#include "store.h"
#include "testlib.h"
#include "util.h"

static void test_put_get_commit_abort(const char *dir)
{
	store *st;
	CHECK_EQ_INT(store_open(dir, 16, &st), TH_OK);
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(st, 1, &t), TH_OK);
	CHECK_EQ_INT(store_put(t, STORE_ROOMS, "!a:x", 4, "{}", 2, 0), TH_OK);
	CHECK_EQ_INT(store_put(t, STORE_ROOMS, "!a:x", 4, "{}", 2, STORE_NOOVERWRITE), TH_EEXIST);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);

	/* An aborted write leaves nothing behind. */
	CHECK_EQ_INT(store_txn_begin(st, 1, &t), TH_OK);
	CHECK_EQ_INT(store_put(t, STORE_ROOMS, "!b:x", 4, "{}", 2, 0), TH_OK);
	store_txn_abort(t);

	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	const void *v;
	size_t vl;
	CHECK_EQ_INT(store_get(t, STORE_ROOMS, "!a:x", 4, &v, &vl), TH_OK);
	CHECK_EQ_INT(store_get(t, STORE_ROOMS, "!b:x", 4, &v, &vl), TH_ENOTFOUND);
	store_txn_abort(t);
	store_close(st);

	/* Reopening sees the committed data: it was on disk. */
	CHECK_EQ_INT(store_open(dir, 16, &st), TH_OK);
	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	json_t *j = NULL;
	CHECK_EQ_INT(store_get_json(t, STORE_ROOMS, "!a:x", &j), TH_OK);
	CHECK(json_is_object(j));
	json_decref(j);
	store_txn_abort(t);
	store_close(st);
}

struct visits {
	uint64_t keys[8];
	size_t n;
};

static int record_walk(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)val;
	(void)vlen;
	struct visits *w = ctx;
	CHECK_EQ_INT(klen, 8);
	if (w->n == 8)
		return 1;
	w->keys[w->n++] = store_key_u64(key);
	return 0;
}

static void test_sequence_keys(const char *dir)
{
	store *st;
	CHECK_EQ_INT(store_open(dir, 16, &st), TH_OK);
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(st, 1, &t), TH_OK);
	/* Big-endian keys sort numerically, so appends work past 255 and 65535. */
	for (uint64_t i = 1; i <= 70000; i += 7) {
		unsigned char k[8];
		store_u64_key(k, i);
		CHECK_EQ_INT(store_put(t, STORE_OUTBOX, k, 8, "x", 1, STORE_APPEND), TH_OK);
	}
	const void *key;
	size_t klen;
	CHECK_EQ_INT(store_last(t, STORE_OUTBOX, &key, &klen, NULL, NULL), TH_OK);
	CHECK_EQ_INT(store_key_u64(key), 69994);
	CHECK_EQ_INT(store_first(t, STORE_OUTBOX, &key, &klen, NULL, NULL), TH_OK);
	CHECK_EQ_INT(store_key_u64(key), 1);
	size_t n;
	CHECK_EQ_INT(store_count(t, STORE_OUTBOX, &n), TH_OK);
	CHECK_EQ_INT(n, 10000);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);

	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	unsigned char from[8];
	store_u64_key(from, 69985); /* not a key (keys are 1 + 7k): the walk starts at 69987 */
	struct visits w = {{0}, 0};
	CHECK_EQ_INT(store_walk(t, STORE_OUTBOX, from, 8, record_walk, &w), TH_OK);
	CHECK_EQ_INT(w.n, 2);
	CHECK_EQ_INT(w.keys[0], 69987);
	CHECK_EQ_INT(w.keys[1], 69994);
	store_txn_abort(t);
	store_close(st);
}

static void test_prune(const char *dir)
{
	store *st;
	CHECK_EQ_INT(store_open(dir, 16, &st), TH_OK);
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(st, 1, &t), TH_OK);
	unsigned char old[8], recent[8];
	store_u64_key(old, 1000);
	store_u64_key(recent, 5000);
	CHECK_EQ_INT(store_put(t, STORE_EVENTS, "$old", 4, old, 8, 0), TH_OK);
	CHECK_EQ_INT(store_put(t, STORE_EVENTS, "$new", 4, recent, 8, 0), TH_OK);
	/* and in the record of recent ones (dedupe.h): two transactions, two events */
	struct dedupe d;
	CHECK_EQ_INT(dedupe_load(t, &d), TH_OK);
	CHECK_EQ_INT(dedupe_event_add(&d, t, "$r-old", 1000), TH_OK);
	CHECK_EQ_INT(dedupe_save(&d, t, "1", 11, 1000), TH_OK);
	dedupe_free(&d);
	CHECK_EQ_INT(dedupe_load(t, &d), TH_OK);
	CHECK_EQ_INT(dedupe_event_add(&d, t, "$r-old", 5000), TH_EEXIST);
	CHECK_EQ_INT(dedupe_event_add(&d, t, "$new", 5000), TH_EEXIST);
	CHECK_EQ_INT(dedupe_event_add(&d, t, "$r-new", 5000), TH_OK);
	CHECK_EQ_INT(dedupe_save(&d, t, "2", 22, 5000), TH_OK);
	dedupe_free(&d);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	size_t removed = 0;
	CHECK_EQ_INT(store_prune(st, 3000, &removed), TH_OK);
	CHECK_EQ_INT(removed, 3);
	CHECK_EQ_INT(store_txn_begin(st, 1, &t), TH_OK);
	const void *v;
	size_t vl;
	CHECK_EQ_INT(store_get(t, STORE_EVENTS, "$old", 4, &v, &vl), TH_ENOTFOUND);
	CHECK_EQ_INT(store_get(t, STORE_EVENTS, "$new", 4, &v, &vl), TH_OK);
	size_t ntx = 0, nev = 0;
	CHECK_EQ_INT(dedupe_count(t, &ntx, &nev), TH_OK);
	CHECK_EQ_INT(ntx, 1);
	CHECK_EQ_INT(nev, 2); /* $new, $r-new */
	CHECK_EQ_INT(dedupe_load(t, &d), TH_OK);
	uint64_t h = 0;
	CHECK_EQ_INT(dedupe_txn_find(&d, "1", &h), 0);
	CHECK_EQ_INT(dedupe_txn_find(&d, "2", &h), 1);
	CHECK_EQ_INT(h, 22);
	CHECK_EQ_INT(dedupe_event_add(&d, t, "$r-new", 6000), TH_EEXIST);
	CHECK_EQ_INT(dedupe_event_add(&d, t, "$r-old", 6000), TH_OK); /* pruned: new again */
	dedupe_free(&d);
	store_txn_abort(t);
	store_close(st);
}

static void test_map_full(const char *dir)
{
	store *st;
	/* The smallest map LMDB will take: fill it, then show nothing broke. */
	CHECK_EQ_INT(store_open(dir, 1, &st), TH_OK);
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(st, 1, &t), TH_OK);
	CHECK_EQ_INT(store_put(t, STORE_ROOMS, "!keep:x", 7, "{\"k\":1}", 7, 0), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);

	char big[2000];
	memset(big, 'x', sizeof(big));
	int rc = TH_OK;
	CHECK_EQ_INT(store_txn_begin(st, 1, &t), TH_OK);
	for (int i = 0; i < 100000 && rc == TH_OK; i++) {
		char key[32];
		snprintf(key, sizeof(key), "$e%d", i);
		rc = store_put(t, STORE_EVENTS, key, strlen(key), big, sizeof(big), 0);
	}
	CHECK_EQ_INT(rc, TH_EFULL);
	store_txn_abort(t);
	store_close(st);

	/* Reopen with a larger map: the committed record is intact, writes work. */
	CHECK_EQ_INT(store_open(dir, 32, &st), TH_OK);
	CHECK_EQ_INT(store_txn_begin(st, 1, &t), TH_OK);
	json_t *j = NULL;
	CHECK_EQ_INT(store_get_json(t, STORE_ROOMS, "!keep:x", &j), TH_OK);
	CHECK_EQ_INT(json_integer_value(json_object_get(j, "k")), 1);
	json_decref(j);
	CHECK_EQ_INT(store_put(t, STORE_EVENTS, "$after", 6, big, sizeof(big), 0), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	store_close(st);
}

static void test_schema_version(const char *dir)
{
	store *st;
	CHECK_EQ_INT(store_open(dir, 16, &st), TH_OK);
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(st, 1, &t), TH_OK);
	unsigned char v[8];
	store_u64_key(v, STORE_SCHEMA_VERSION + 1);
	CHECK_EQ_INT(store_put(t, STORE_META, "schema_version", 14, v, 8, 0), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	store_close(st);
	/* A store written by a newer Threshold is refused, not misread. */
	CHECK_EQ_INT(store_open(dir, 16, &st), TH_ESTORE);
}

int main(void)
{
	log_threshold = LOG_ERROR;
	const char *names[] = {"basic", "seq", "prune", "full", "schema"};
	void (*fns[])(const char *) = {test_put_get_commit_abort, test_sequence_keys, test_prune,
	                               test_map_full, test_schema_version};
	char *root = test_tmpdir();
	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
		char *dir = xasprintf("%s/%s", root, names[i]);
		fns[i](dir);
		free(dir);
	}
	test_rmtree(root);
	free(root);
	return TEST_DONE();
}
