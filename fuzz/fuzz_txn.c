/*
 * fuzz_txn.c - libFuzzer target for the whole hot path (appservice/txn.c
 * txn_process): the body is scanned (mxevent.c), each new event goes
 * through events.c, policy/ and groups.c or audit_query.c, and everything
 * is committed into a real LMDB store with an audit log.  The input is the
 * body of one PUT /transactions.
 *
 * Each input starts from the same store (copied from a template made at
 * start-up): the bot joined to a managed group room "!managed:test.local"
 * and to the safeguarding room "!safe:test.local"; one guest,
 * @guest_00000000000000000000000000000001:test.local ("Amber Otter"),
 * with sealed detail; staff @staff:test.local and lead @lead:test.local.
 *
 * Oracle, besides ASan and UBSan:
 *  - the answer is 200 or 400, never 5xx: the contract of txn.h is that a
 *    malformed event is skipped, and a 503 makes the homeserver resend the
 *    same transaction for ever;
 *  - 400 exactly when mxev_parse refuses the body, and then nothing is
 *    processed;
 *  - resending it under the same txnId is answered 200 and changes nothing,
 *    and so is sending it again under a new txnId (every event is seen);
 *  - afterwards the audit log verifies (audit_verify).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"
#include "config.h"
#include "fuzzlib.h"
#include "mxevent.h"
#include "rooms.h"
#include "store.h"
#include "matrix_outbox.h"
#include "testlib.h"
#include "txn.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define GUEST_ID "@guest_00000000000000000000000000000001:test.local"

static struct config cfg;
static char *tmpl_dir, *work_dir;
static const char *const files[] = {"data.mdb", AUDIT_SEAL_FILE};

static void copy_file(const char *from_dir, const char *to_dir, const char *name)
{
	char *from = xasprintf("%s/%s", from_dir, name), *to = xasprintf("%s/%s", to_dir, name);
	int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	FUZZ_ASSERT(in >= 0 && out >= 0, "cannot copy %s", from);
	char buf[65536];
	ssize_t n;
	while ((n = read(in, buf, sizeof(buf))) > 0)
		FUZZ_ASSERT(write(out, buf, (size_t)n) == n, "cannot copy %s", from);
	close(in);
	close(out);
	free(from);
	free(to);
}

static void put_json(store_txn *t, enum store_db db, const char *key, const char *text)
{
	json_t *v = json_loads(text, 0, NULL);
	FUZZ_ASSERT(v && store_put_json(t, db, key, v) == TH_OK, "template: %s", key);
	json_decref(v);
}

/* The store every input starts from. */
static void make_template(void)
{
	const char *scratch = fuzz_scratch_dir();
	test_config_init(&cfg, scratch);
	free(cfg.audit_key_path);
	cfg.audit_key_path = xasprintf("%s/audit-signing.key", scratch); /* shared: the seed stays */
	free(cfg.safeguarding_room);
	cfg.safeguarding_room = xstrdup("!safe:test.local");
	cfg.leads.v = xcalloc(1, sizeof(char *));
	cfg.leads.v[0] = xstrdup("@lead:test.local");
	cfg.leads.n = 1;
	cfg.map_size_mb = 16;
	cfg.max_json_depth = 16;
	tmpl_dir = xasprintf("%s/template", scratch);
	work_dir = xasprintf("%s/work", scratch);
	mkdir(work_dir, 0700);

	store *st;
	audit *au;
	FUZZ_ASSERT(store_open(tmpl_dir, cfg.map_size_mb, &st) == TH_OK, "template store");
	struct audit_opts o = {cfg.audit_key_path, NULL, 1000, 300};
	char *seal = xasprintf("%s/%s", tmpl_dir, AUDIT_SEAL_FILE);
	o.seal_path = seal;
	FUZZ_ASSERT(audit_open(st, &o, &au) == TH_OK, "template audit");
	store_txn *t;
	FUZZ_ASSERT(store_txn_begin(st, 1, &t) == TH_OK, "template txn");
	put_json(t, STORE_USERS, GUEST_ID,
	         "{\"kind\":\"guest\",\"pseudonym\":\"Amber Otter\",\"created_ms\":1700000000000,"
	         "\"state\":\"active\"}");
	put_json(t, STORE_ROOMS, "!managed:test.local",
	         "{\"events\":0,\"bot\":\"join\",\"kind\":\"group\",\"guests\":{\"" GUEST_ID "\":\"join\"}}");
	put_json(t, STORE_ROOMS, "!safe:test.local", "{\"events\":0,\"bot\":\"join\"}");
	struct audit_rec rec = {.kind = AUDIT_GUEST_CREATED,
	                        .ts_ms = 1700000000000,
	                        .actor = "@staff:test.local",
	                        .subject = GUEST_ID,
	                        .sealed = "emergency contact: +44 7700 900000"};
	FUZZ_ASSERT(audit_append(au, t, &rec, NULL) == TH_OK, "template record");
	FUZZ_ASSERT(audit_checkpoint(au, t, 1700000000000) == TH_OK, "template checkpoint");
	FUZZ_ASSERT(store_txn_commit(t) == TH_OK, "template commit");
	audit_close(au);
	store_close(st);
	free(seal);
}

static void check_again(const struct txn_env *env, const char *txn_id, const char *body, size_t size,
                        const char *what)
{
	struct txn_result r;
	txn_process(env, txn_id, body, size, &r);
	FUZZ_ASSERT(r.status == 200 && r.processed == 0 && r.queued == 0,
	            "%s: status %d, %u processed, %u queued", what, r.status, r.processed, r.queued);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!tmpl_dir) {
		fuzz_quiet();
		make_template();
	}
	fuzz_empty_dir(work_dir);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		copy_file(tmpl_dir, work_dir, files[i]);
	store *st;
	audit *au;
	FUZZ_ASSERT(store_open(work_dir, cfg.map_size_mb, &st) == TH_OK, "store_open");
	char *seal = xasprintf("%s/%s", work_dir, AUDIT_SEAL_FILE);
	struct audit_opts o = {cfg.audit_key_path, seal, 1000, 300};
	FUZZ_ASSERT(audit_open(st, &o, &au) == TH_OK, "audit_open");
	free(seal);
	struct matrix_outbox mxo;
	matrix_outbox_init(&mxo, &cfg);
	struct txn_env env = {&cfg, st, au, &mxo.mx, NULL};

	const char *body = (const char *)data;
	struct mxev_batch b = {0};
	enum mxev_status ms = mxev_parse(&b, body, size, cfg.max_json_depth, NULL);
	mxev_batch_free(&b);

	struct txn_result r;
	txn_process(&env, "fuzz-1", body, size, &r);
	FUZZ_ASSERT(r.status == 200 || r.status == 400, "answered %d %s (%s): a bad event blocks the stream",
	            r.status, r.errcode ? r.errcode : "", r.error ? r.error : "");
	FUZZ_ASSERT((r.status == 400) == (ms != MXEV_OK), "answered %d, but mxev_parse says %s", r.status,
	            mxev_strerror(ms));
	if (r.status == 200) {
		check_again(&env, "fuzz-1", body, size, "resent under the same txnId");
		check_again(&env, "fuzz-2", body, size, "sent again under a new txnId");
	} else {
		FUZZ_ASSERT(r.processed == 0 && r.queued == 0, "a refused body was processed");
	}

	struct audit_verify_result vr;
	int rc = audit_verify(st, audit_pubkey(au), 0, &vr);
	FUZZ_ASSERT(rc == TH_OK, "the audit log does not verify after a transaction: %s (%s)",
	            th_strerror(rc), vr.what);
	audit_close(au);
	store_close(st);
	return 0;
}
