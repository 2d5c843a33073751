/*
 * test_audit_query.c - leads' "!audit ..." questions: what parses as one,
 * the answer to "recent" (the newest records, oldest first, checkpoints left
 * out, also when checkpoints crowd the tail), the answer to "guest" by
 * pseudonym and by id (the last 20, ids only, never sealed detail), a guest
 * that does not exist, an answer that stays under its size cap, and the
 * audit_filter.min_seq it reads the tail with.
 */
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "audit_query.h"
#include "config.h"
#include "guests.h"
#include "log.h"
#include "store.h"
#include "testlib.h"
#include "util.h"

static void append(struct test_env *e, store_txn *t, enum audit_kind kind, const char *actor,
                   const char *subject, const char *sealed)
{
	struct audit_rec rec = {
	        .kind = kind, .actor = actor, .subject = subject, .reason = "test_reason", .sealed = sealed};
	CHECK_EQ_INT(audit_append(e->au, t, &rec, NULL), TH_OK);
}

static size_t count_lines(const char *s)
{
	size_t n = 1;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static void test_parse(void)
{
	struct audit_query q;
	CHECK_EQ_INT(audit_query_parse(NULL, &q), 0);
	CHECK_EQ_INT(audit_query_parse("hello", &q), 0);
	CHECK_EQ_INT(audit_query_parse("!auditor recent", &q), 0);
	CHECK_EQ_INT(audit_query_parse("!threshold ping", &q), 0);

	CHECK_EQ_INT(audit_query_parse("!audit recent", &q), 1);
	CHECK_EQ_INT(q.kind, AUDIT_QUERY_RECENT);
	CHECK_EQ_INT(audit_query_parse("  !audit   recent  ", &q), 1);
	CHECK_EQ_INT(q.kind, AUDIT_QUERY_RECENT);
	CHECK_EQ_INT(audit_query_parse("!audit", &q), 1);
	CHECK_EQ_INT(q.kind, AUDIT_QUERY_USAGE);
	CHECK_EQ_INT(audit_query_parse("!audit export --since 7d", &q), 1);
	CHECK_EQ_INT(q.kind, AUDIT_QUERY_EXPORT);
	CHECK(audit_query_since_ms(&q, 10 * 86400000ull) == 3 * 86400000ull);
	CHECK_EQ_INT(audit_query_parse("!audit export", &q), 1);
	CHECK_EQ_INT(q.kind, AUDIT_QUERY_EXPORT);
	CHECK(audit_query_since_ms(&q, 10 * 86400000ull) == 0);
	CHECK_EQ_INT(audit_query_parse("!audit export --since 24h", &q), 1);
	CHECK(audit_query_since_ms(&q, 2 * 86400000ull) == 86400000ull);
	CHECK_EQ_INT(audit_query_parse("!audit export --since 1970-01-02", &q), 1);
	CHECK_EQ_INT(q.kind, AUDIT_QUERY_EXPORT);
	CHECK(audit_query_since_ms(&q, 5 * 86400000ull) == 86400000ull);
	CHECK_EQ_INT(audit_query_parse("!audit export --since 1970-01-02T01:00:00Z", &q), 1);
	CHECK(audit_query_since_ms(&q, 5 * 86400000ull) == 90000000ull);
	CHECK_EQ_INT(audit_query_parse("!audit export --since soon", &q), 1);
	CHECK_EQ_INT(q.kind, AUDIT_QUERY_USAGE);
	CHECK_EQ_INT(q.usage_of, AUDIT_QUERY_EXPORT);
	CHECK_EQ_INT(audit_query_parse("!audit export --since 7d extra", &q), 1);
	CHECK_EQ_INT(q.kind, AUDIT_QUERY_USAGE);

	CHECK_EQ_INT(audit_query_parse("!audit reveal Amber Otter worried about her safety", &q), 1);
	CHECK_EQ_INT(q.kind, AUDIT_QUERY_REVEAL);
	CHECK_STR(q.arg, "Amber Otter");
	CHECK_STR(q.reason, "worried about her safety");
	CHECK_EQ_INT(audit_query_parse("!audit reveal Amber Otter 2 worried about her safety", &q), 1);
	CHECK_STR(q.arg, "Amber Otter 2");
	CHECK_EQ_INT(audit_query_parse("!audit reveal \"Amber Otter\" worried about her safety", &q), 1);
	CHECK_STR(q.arg, "Amber Otter");
	CHECK_EQ_INT(audit_query_parse("!audit reveal @guest_ab:hs worried about her safety ", &q), 1);
	CHECK_STR(q.arg, "@guest_ab:hs");
	CHECK_STR(q.reason, "worried about her safety");
	CHECK_EQ_INT(audit_query_parse("!audit reveal Amber Otter short", &q), 1);
	CHECK_EQ_INT(q.kind, AUDIT_QUERY_USAGE);
	CHECK_EQ_INT(q.usage_of, AUDIT_QUERY_REVEAL);
	CHECK_EQ_INT(audit_query_parse("!audit reveal Amber Otter", &q), 1);
	CHECK_EQ_INT(q.kind, AUDIT_QUERY_USAGE);
	CHECK_EQ_INT(audit_query_parse("!audit reveal", &q), 1);
	CHECK_EQ_INT(q.kind, AUDIT_QUERY_USAGE);
	CHECK_EQ_INT(audit_query_parse("!audit guest", &q), 1);
	CHECK_EQ_INT(q.kind, AUDIT_QUERY_USAGE);
	CHECK_EQ_INT(audit_query_parse("!audit guest  Amber Otter \n", &q), 1);
	CHECK_EQ_INT(q.kind, AUDIT_QUERY_GUEST);
	CHECK_STR(q.arg, "Amber Otter");
	CHECK_EQ_INT(q.arg_too_long, 0);

	char long_body[600];
	memset(long_body, 'x', sizeof(long_body) - 1);
	long_body[sizeof(long_body) - 1] = '\0';
	memcpy(long_body, "!audit guest ", 13);
	CHECK_EQ_INT(audit_query_parse(long_body, &q), 1);
	CHECK_EQ_INT(q.kind, AUDIT_QUERY_GUEST);
	CHECK_EQ_INT(q.arg_too_long, 1);
	CHECK_STR(q.arg, "");

	CHECK_STR(audit_query_name(AUDIT_QUERY_RECENT), "recent");
	CHECK_STR(audit_query_name(AUDIT_QUERY_GUEST), "guest");
	CHECK_STR(audit_query_name(AUDIT_QUERY_USAGE), "usage");
	CHECK(audit_query_name(AUDIT_QUERY_COUNT) == NULL);
}

static void test_recent(void)
{
	struct test_env e;
	test_env_open(&e);
	struct audit_query q = {.kind = AUDIT_QUERY_RECENT};
	struct audit_answer a;
	store_txn *t;

	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	CHECK_EQ_INT(audit_query_answer(NULL, t, &q, &a), TH_OK);
	CHECK_STR(a.text, "The audit log has no records yet.");
	CHECK_STR(a.subject, "");
	audit_query_answer_free(&a);
	store_txn_abort(t);

	/* 15 records, then a tail as crowded with checkpoints as it can be:
	 * every other record one. */
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	char actor[64];
	for (int i = 1; i <= 15; i++) {
		snprintf(actor, sizeof(actor), "@actor%d:test.local", i);
		append(&e, t, AUDIT_REPORT_RECEIVED, actor, NULL, NULL);
	}
	for (int i = 16; i <= 20; i++) {
		CHECK_EQ_INT(audit_checkpoint(e.au, t, 0), TH_OK);
		snprintf(actor, sizeof(actor), "@actor%d:test.local", i);
		append(&e, t, AUDIT_REPORT_RECEIVED, actor, NULL, NULL);
	}
	for (int i = 0; i < 30; i++) {
		CHECK_EQ_INT(audit_checkpoint(e.au, t, 0), TH_OK);
		append(&e, t, AUDIT_STARTUP, NULL, NULL, NULL);
	}
	CHECK_EQ_INT(audit_checkpoint(e.au, t, 0), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);

	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	CHECK_EQ_INT(audit_query_answer(NULL, t, &q, &a), TH_OK);
	CHECK(a.text && strncmp(a.text, "The last 10 audit records, oldest first:\n", 41) == 0);
	CHECK_EQ_INT(count_lines(a.text), 11);
	CHECK(strstr(a.text, "checkpoint") == NULL);
	CHECK(strstr(a.text, " startup actor=- subject=- reason=test_reason") != NULL);
	/* The 30 startups came last: the reports are out of the last 10. */
	CHECK(strstr(a.text, "report_received") == NULL);
	audit_query_answer_free(&a);
	store_txn_abort(t);

	/* Sequence order, oldest first, and the fields of a line. */
	test_env_close(&e);
	test_env_open(&e);
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	for (int i = 1; i <= 3; i++) {
		snprintf(actor, sizeof(actor), "@actor%d:test.local", i);
		append(&e, t, AUDIT_CONTACT_BLOCKED, actor, "@guest_x:test.local", NULL);
	}
	CHECK_EQ_INT(audit_query_answer(NULL, t, &q, &a),
	             TH_OK); /* a write transaction sees its own records */
	CHECK(strncmp(a.text, "The last 3 audit records, oldest first:\n#1 ", 43) == 0);
	const char *one = strstr(a.text, "#1 "), *three = strstr(a.text, "#3 ");
	CHECK(one && three && one < three);
	CHECK(strstr(a.text, "Z contact_blocked actor=@actor3:test.local subject=@guest_x:test.local "
	                     "reason=test_reason") != NULL);
	audit_query_answer_free(&a);
	store_txn_abort(t);
	test_env_close(&e);
}

static void test_guest(void)
{
	struct test_env e;
	test_env_open(&e);
	store_txn *t;
	struct guest g, other;
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(guests_create(&e.cfg, t, e.au, "cli:test", &g), TH_OK);
	CHECK_EQ_INT(guests_create(&e.cfg, t, e.au, "cli:test", &other), TH_OK);
	for (int i = 0; i < 25; i++)
		append(&e, t, AUDIT_CONTACT_BLOCKED, "@mallory:test.local", g.user_id,
		       i == 24 ? "a phone number, sealed" : NULL);
	append(&e, t, AUDIT_CONTACT_BLOCKED, "@mallory:test.local", other.user_id, NULL);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);

	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	struct audit_query q = {.kind = AUDIT_QUERY_GUEST};
	struct audit_answer a;
	snprintf(q.arg, sizeof(q.arg), "%s", g.pseudonym);
	for (char *p = q.arg; *p; p++) /* found ignoring case */
		*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
	CHECK_EQ_INT(audit_query_answer(NULL, t, &q, &a), TH_OK);
	CHECK_STR(a.subject, g.user_id);
	char *want = xasprintf("Audit records about guest %s (%s): the last 20 of 26, oldest first:\n",
	                       g.pseudonym, g.user_id);
	CHECK(strncmp(a.text, want, strlen(want)) == 0);
	free(want);
	CHECK_EQ_INT(count_lines(a.text), 21);
	CHECK(strstr(a.text, "guest_created") == NULL); /* the oldest, left out */
	CHECK(strstr(a.text, other.user_id) == NULL);
	CHECK(strstr(a.text, "phone") == NULL);
	audit_query_answer_free(&a);

	snprintf(q.arg, sizeof(q.arg), "%s", other.user_id);
	CHECK_EQ_INT(audit_query_answer(NULL, t, &q, &a), TH_OK);
	CHECK_STR(a.subject, other.user_id);
	CHECK_EQ_INT(count_lines(a.text), 3); /* guest_created and the one block */
	CHECK(strstr(a.text, "guest_created actor=cli:test") != NULL);
	audit_query_answer_free(&a);

	snprintf(q.arg, sizeof(q.arg), "Nobody Here");
	CHECK_EQ_INT(audit_query_answer(NULL, t, &q, &a), TH_OK);
	CHECK_STR(a.text, "No guest called Nobody Here.");
	CHECK_STR(a.subject, "");
	audit_query_answer_free(&a);

	snprintf(q.arg, sizeof(q.arg), "%s", e.cfg.bot_user_id); /* not a guest */
	CHECK_EQ_INT(audit_query_answer(NULL, t, &q, &a), TH_OK);
	CHECK(strncmp(a.text, "No guest called ", 16) == 0);
	audit_query_answer_free(&a);

	q.arg[0] = '\0';
	q.arg_too_long = 1;
	CHECK_EQ_INT(audit_query_answer(NULL, t, &q, &a), TH_OK);
	CHECK_STR(a.text, "No guest has a name or id that long.");
	audit_query_answer_free(&a);

	struct audit_query usage = {.kind = AUDIT_QUERY_USAGE};
	CHECK_EQ_INT(audit_query_answer(NULL, t, &usage, &a), TH_OK);
	CHECK(strstr(a.text, "!audit recent") && strstr(a.text, "!audit guest"));
	audit_query_answer_free(&a);
	store_txn_abort(t);
	test_env_close(&e);
}

static int count_seq(void *ctx, uint64_t seq, const json_t *rec, const char *raw, size_t rawlen)
{
	uint64_t *c = ctx;
	(void)rec;
	(void)raw;
	(void)rawlen;
	c[0]++;
	if (!c[1])
		c[1] = seq;
	return 0;
}

/* audit_filter.min_seq, which "recent" uses to read only the tail. */
static void test_min_seq(void)
{
	struct test_env e;
	test_env_open(&e);
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	for (int i = 0; i < 10; i++)
		append(&e, t, AUDIT_CONTACT_BLOCKED, "@a:test.local", i % 2 ? "@s:test.local" : NULL, NULL);
	struct audit_filter f;
	audit_filter_init(&f);
	f.min_seq = 4;
	uint64_t c[2] = {0, 0};
	CHECK_EQ_INT(audit_iter(t, &f, count_seq, c), TH_OK);
	CHECK_EQ_INT(c[0], 7);
	CHECK_EQ_INT(c[1], 4);
	f.subject = "@s:test.local"; /* through the subject index: 2, 4, 6, 8, 10 */
	c[0] = c[1] = 0;
	CHECK_EQ_INT(audit_iter(t, &f, count_seq, c), TH_OK);
	CHECK_EQ_INT(c[0], 4);
	CHECK_EQ_INT(c[1], 4);
	store_txn_abort(t);
	test_env_close(&e);
}

/* Twenty records with the longest ids there are still fit under the cap. */
static void test_size_cap(void)
{
	struct test_env e;
	test_env_open(&e);
	store_txn *t;
	char actor[AUDIT_MAX_ID + 1], subject[AUDIT_MAX_ID + 1];
	memset(actor, 'a', AUDIT_MAX_ID);
	actor[0] = '@';
	actor[AUDIT_MAX_ID] = '\0';
	memset(subject, 's', AUDIT_MAX_ID);
	subject[0] = '@';
	subject[AUDIT_MAX_ID] = '\0';
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	for (int i = 0; i < 30; i++)
		append(&e, t, AUDIT_CONTACT_BLOCKED, actor, subject, NULL);
	struct audit_query q = {.kind = AUDIT_QUERY_RECENT};
	struct audit_answer a;
	CHECK_EQ_INT(audit_query_answer(NULL, t, &q, &a), TH_OK);
	CHECK(strlen(a.text) <= AUDIT_QUERY_MAX_TEXT);
	CHECK_EQ_INT(count_lines(a.text), 11);
	audit_query_answer_free(&a);
	store_txn_abort(t);
	test_env_close(&e);
}

/* Break glass: the sealed note comes out only through reveal, with the
 * warning first; a guest with nothing sealed, and one whose detail was
 * erased, say so. */
static void test_reveal(void)
{
	struct test_env e;
	test_env_open(&e);
	store_txn *t;
	struct guest g, plain;
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(guests_create_sealed(&e.cfg, t, e.au, "cli:test", "mum: 07700 900123", &g), TH_OK);
	CHECK_EQ_INT(guests_create_sealed(&e.cfg, t, e.au, "cli:test", NULL, &plain), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);

	struct audit_query q;
	char body[512];
	snprintf(body, sizeof(body), "!audit reveal \"%s\" she has not been seen for two days", g.pseudonym);
	CHECK_EQ_INT(audit_query_parse(body, &q), 1);
	CHECK_EQ_INT(q.kind, AUDIT_QUERY_REVEAL);
	struct audit_answer a;

	/* recent and guest never show it. */
	struct audit_query guest = {.kind = AUDIT_QUERY_GUEST};
	snprintf(guest.arg, sizeof(guest.arg), "%s", g.user_id);
	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	CHECK_EQ_INT(audit_query_answer(e.au, t, &guest, &a), TH_OK);
	CHECK(strstr(a.text, "07700") == NULL);
	audit_query_answer_free(&a);

	CHECK_EQ_INT(audit_query_answer(e.au, t, &q, &a), TH_OK);
	CHECK(strncmp(a.text, "RECORDED: ", 10) == 0);
	CHECK(strstr(a.text, "guest_created: mum: 07700 900123") != NULL);
	CHECK_STR(a.subject, g.user_id);
	audit_query_answer_free(&a);

	/* Without the audit handle nothing can be opened. */
	CHECK_EQ_INT(audit_query_answer(NULL, t, &q, &a), TH_OK);
	CHECK(strstr(a.text, "07700") == NULL);
	audit_query_answer_free(&a);

	snprintf(q.arg, sizeof(q.arg), "%s", plain.user_id);
	CHECK_EQ_INT(audit_query_answer(e.au, t, &q, &a), TH_OK);
	CHECK(strstr(a.text, "Nothing sealed is held about guest") != NULL);
	audit_query_answer_free(&a);
	snprintf(q.arg, sizeof(q.arg), "Nobody Atall");
	CHECK_EQ_INT(audit_query_answer(e.au, t, &q, &a), TH_OK);
	CHECK(strstr(a.text, "No guest called Nobody Atall. Nothing was revealed.") != NULL);
	CHECK_STR(a.subject, "");
	audit_query_answer_free(&a);
	store_txn_abort(t);

	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(audit_erase_subject(e.au, t, g.user_id, "cli:test", "request"), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	audit_txn_committed(e.au);
	snprintf(q.arg, sizeof(q.arg), "%s", g.user_id);
	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	CHECK_EQ_INT(audit_query_answer(e.au, t, &q, &a), TH_OK);
	CHECK(strstr(a.text, "was erased") != NULL);
	CHECK(strstr(a.text, "07700") == NULL);
	audit_query_answer_free(&a);
	store_txn_abort(t);
	test_env_close(&e);
}

int main(void)
{
	log_threshold = LOG_WARN;
	test_parse();
	test_recent();
	test_guest();
	test_size_cap();
	test_min_seq();
	test_reveal();
	return TEST_DONE();
}
