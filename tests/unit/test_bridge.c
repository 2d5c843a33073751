/*
 * test_bridge.c - the guest gateway's state: secrets (token and resume code
 * shapes, hashing by domain), invitations (create, check, consume, used up,
 * expired, unknown alike; stored only hashed; audited without the token;
 * lifetimes; pruning), feeds (order, "since", private members hidden,
 * erasure, guests never mixed), attachments (what a staff picture or file
 * puts in a guest's feed, hostile content bounded, the mxc URI kept
 * private), and conversations from redeeming an
 * invitation to leaving, resuming, erasure and expiry, read back through
 * the store, the audit log and what the bridge asked of Matrix (a fake of
 * bridge/matrix.h that records each call); and the daemon's implementation
 * of that interface (appservice/matrix_outbox.c), read back from the outbox.
 */
#define _GNU_SOURCE /* memmem */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "audit.h"
#include "config.h"
#include "conv.h"
#include "feed.h"
#include "guests.h"
#include "invites.h"
#include "jsonx.h"
#include "log.h"
#include "matrix_outbox.h"
#include "media.h"
#include "mxevent.h"
#include "rooms.h"
#include "secret.h"
#include "store.h"
#include "testlib.h"
#include "txn.h"
#include "util.h"

#define SVC_NAME   "helpline"
#define STAFF_ROOM "!staff:test.local"
#define GREETING   "Thank you for writing. Someone from the helpline will answer soon."

/* ---- a fake Matrix: every call recorded -------------------------------------- */

/*
 * Each call is appended to "calls" as {"op": method name, its arguments by
 * name}, when it is made (the bridge makes them in the transaction it then
 * commits; a refused or repeated send makes none).
 */
struct mx_fake {
	struct matrix mx;
	json_t *calls;
	const struct config *cfg; /* for guest_create */
};

static struct mx_fake fake; /* the current test's (env_init resets it) */

static int rec(void *ctx, json_t *call)
{
	struct mx_fake *f = ctx;
	CHECK(call != NULL);
	json_array_append_new(f->calls, call);
	return TH_OK;
}

static json_t *lanes_of(const char *const *after, size_t nafter)
{
	json_t *a = json_array();
	for (size_t i = 0; i < nafter; i++)
		json_array_append_new(a, json_string(after[i]));
	return a;
}

static int fake_notice(void *ctx, store_txn *t, const char *room_id, const char *user_id, const char *body,
                       const char *reply_to)
{
	(void)t;
	return rec(ctx, json_pack("{s:s, s:s, s:s, s:s, s:s*}", "op", "notice", "room_id", room_id, "user_id",
	                          user_id, "body", body, "reply_to", reply_to));
}

static int fake_notice_after(void *ctx, store_txn *t, const char *room_id, const char *user_id,
                             const char *body, const char *const *after, size_t nafter)
{
	(void)t;
	return rec(ctx, json_pack("{s:s, s:s, s:s, s:s, s:o}", "op", "notice", "room_id", room_id, "user_id",
	                          user_id, "body", body, "after", lanes_of(after, nafter)));
}

static int fake_text(void *ctx, store_txn *t, const char *room_id, const char *user_id, const char *body,
                     const char *local_id)
{
	(void)t;
	return rec(ctx, json_pack("{s:s, s:s, s:s, s:s, s:s}", "op", "text", "room_id", room_id, "user_id",
	                          user_id, "body", body, "local_id", local_id));
}

static int fake_send_media(void *ctx, store_txn *t, const struct mx_media *m)
{
	/* the bytes are the implementation's to keep (matrix.h): here, in clear */
	if (m->data) {
		int rc = store_put(t, STORE_BLOBS, m->blob, strlen(m->blob), m->data, m->size,
		                   STORE_NOOVERWRITE);
		if (rc)
			return rc;
	}
	return rec(ctx, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "op", "send_media",
	                          "room_id", m->room_id, "user_id", m->user_id, "blob", m->blob, "name",
	                          m->name, "mimetype", m->mimetype, "msgtype", m->msgtype, "local_id",
	                          m->local_id, "size", (json_int_t)m->size));
}

static int fake_qr_image(void *ctx, store_txn *t, const char *room_id, const char *user_id, const char *text,
                         const char *reply_to)
{
	(void)t;
	return rec(ctx, json_pack("{s:s, s:s, s:s, s:s, s:s*}", "op", "qr_image", "room_id", room_id,
	                          "user_id", user_id, "text", text, "reply_to", reply_to));
}

static int fake_redact(void *ctx, store_txn *t, const char *room_id, const char *user_id,
                       const char *event_id, const char *reason)
{
	(void)t;
	return rec(ctx, json_pack("{s:s, s:s, s:s, s:s, s:s*}", "op", "redact", "room_id", room_id, "user_id",
	                          user_id, "event_id", event_id, "reason", reason));
}

static int fake_join(void *ctx, store_txn *t, const char *room_id, const char *user_id, const char *after)
{
	(void)t;
	return rec(ctx, json_pack("{s:s, s:s, s:s, s:s*}", "op", "join", "room_id", room_id, "user_id",
	                          user_id, "after", after));
}

static int fake_leave(void *ctx, store_txn *t, const char *room_id, const char *user_id)
{
	(void)t;
	return rec(ctx, json_pack("{s:s, s:s, s:s}", "op", "leave", "room_id", room_id, "user_id", user_id));
}

static int fake_invite(void *ctx, store_txn *t, const char *room_id, const char *user_id, const char *target)
{
	(void)t;
	return rec(ctx, json_pack("{s:s, s:s, s:s, s:s}", "op", "invite", "room_id", room_id, "user_id",
	                          user_id, "target", target));
}

static int fake_room_name(void *ctx, store_txn *t, const char *room_id, const char *user_id,
                          const char *displayname)
{
	(void)t;
	return rec(ctx, json_pack("{s:s, s:s, s:s, s:s}", "op", "room_name", "room_id", room_id, "user_id",
	                          user_id, "displayname", displayname));
}

static int fake_displayname(void *ctx, store_txn *t, const char *user_id, const char *displayname,
                            const char *const *after, size_t nafter)
{
	(void)t;
	return rec(ctx, json_pack("{s:s, s:s, s:s, s:o}", "op", "displayname", "user_id", user_id,
	                          "displayname", displayname, "after", lanes_of(after, nafter)));
}

static int fake_deactivate(void *ctx, store_txn *t, const char *user_id, const char *const *after,
                           size_t nafter)
{
	(void)t;
	return rec(ctx, json_pack("{s:s, s:s, s:o}", "op", "deactivate", "user_id", user_id, "after",
	                          lanes_of(after, nafter)));
}

static int fake_conv_room_create(void *ctx, store_txn *t, const char *guest, const char *pseudonym,
                                 const char *service_name, const char *staff_room)
{
	(void)t;
	return rec(ctx,
	           json_pack("{s:s, s:s, s:s, s:s, s:s}", "op", "conv_room_create", "user_id", guest,
	                     "pseudonym", pseudonym, "service_name", service_name, "staff_room", staff_room));
}

static int fake_conv_room_handover(void *ctx, store_txn *t, const char *room_id, const char *guest)
{
	(void)t;
	return rec(ctx, json_pack("{s:s, s:s, s:s}", "op", "conv_room_handover", "room_id", room_id,
	                          "user_id", guest));
}

static int fake_guest_enter(void *ctx, store_txn *t, const char *room_id, const char *user_id,
                            const char *guest)
{
	(void)t;
	return rec(ctx, json_pack("{s:s, s:s, s:s, s:s}", "op", "guest_enter", "room_id", room_id, "user_id",
	                          user_id, "target", guest));
}

/* Not recorded: a guest is made as the daemon makes it (its record, audit
 * record and account actions), which the tests read back from the store. */
static int fake_guest_create(void *ctx, store_txn *t, audit *au, const char *actor, struct guest *out)
{
	return guests_create(((struct mx_fake *)ctx)->cfg, t, au, actor, out);
}

/* The erasure job, recorded as one call: {"op":"erase", "user_id":G,
 * "events":[[room, event]...], "purge":[...], "after":[...]}. */
static int fake_erase(void *ctx, store_txn *t, const struct mx_erasure *x)
{
	(void)t;
	json_t *ev = json_array();
	for (size_t i = 0; i < x->nevents; i++)
		json_array_append_new(ev, json_pack("[s, s]", x->events[2 * i], x->events[2 * i + 1]));
	return rec(ctx,
	           json_pack("{s:s, s:s, s:o, s:o, s:o}", "op", "erase", "user_id", x->guest, "events", ev,
	                     "purge", lanes_of(x->purge, x->npurge), "after", lanes_of(x->after, x->nafter)));
}

static enum mx_erase_state fake_erase_now = MX_ERASE_RUNNING;

static int fake_erase_state(void *ctx, store_txn *t, const char *guest, enum mx_erase_state *out)
{
	(void)ctx;
	(void)t;
	(void)guest;
	*out = fake_erase_now;
	return TH_OK;
}

static const struct mx_ops fake_ops = {
        .erase = fake_erase,
        .erase_state = fake_erase_state,
        .notice = fake_notice,
        .notice_after = fake_notice_after,
        .text = fake_text,
        .send_media = fake_send_media,
        .qr_image = fake_qr_image,
        .redact = fake_redact,
        .join = fake_join,
        .leave = fake_leave,
        .invite = fake_invite,
        .room_name = fake_room_name,
        .displayname = fake_displayname,
        .deactivate = fake_deactivate,
        .conv_room_create = fake_conv_room_create,
        .conv_room_handover = fake_conv_room_handover,
        .guest_enter = fake_guest_enter,
        .guest_create = fake_guest_create,
};

/* The calls recorded so far (borrowed), and how many. */
static json_t *calls(void)
{
	return fake.calls;
}

static size_t calls_len(void)
{
	return json_array_size(fake.calls);
}

/* ---- environment ---------------------------------------------------------- */

/* A store, an audit log and a config with one service, "helpline". */
static void env_init(struct test_env *e, struct txn_env *env)
{
	*env = (struct txn_env){0};
	test_env_open(e);
	struct config *cfg = &e->cfg;
	cfg->gw_public_url = xstrdup("https://chat.test.local");
	cfg->gw_session_hours = 24;
	cfg->gw_resume_codes = 1;
	cfg->services = xcalloc(1, sizeof(struct config_service));
	cfg->nservices = 1;
	struct config_service *svc = &cfg->services[0];
	svc->name = xstrdup(SVC_NAME);
	svc->display_name = xstrdup("Helpline");
	svc->staff_room = xstrdup(STAFF_ROOM);
	svc->greeting = xstrdup(GREETING);
	svc->notice_version = xstrdup("3");
	svc->notices = xcalloc(1, sizeof(struct config_notice));
	svc->notices[0].lang = xstrdup("en");
	svc->notices[0].text = xstrdup("We keep what you write for 30 days.");
	svc->nnotices = 1;
	svc->public_entry = 1;
	svc->public_per_hour = 60;
	svc->invite_uses = 1;
	svc->invite_expiry_hours = 168;
	svc->conversation_expiry_days = 30;
	env->cfg = cfg;
	env->st = e->st;
	env->au = e->au;
	json_decref(fake.calls);
	fake.calls = json_array();
	fake.mx.ops = &fake_ops;
	fake.mx.ctx = &fake;
	fake.cfg = cfg;
	env->mx = &fake.mx;
}

/* ---- reading the store back ---------------------------------------------- */

static int collect_json(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key;
	(void)klen;
	json_t *o = json_loadb(val, vlen, 0, NULL);
	if (!o)
		return TH_ESTORE;
	json_array_append_new(ctx, o);
	return 0;
}

/* Every action queued in the outbox, in order (new array): what appservice/
 * queues itself (a guest's register), and matrix_outbox.c's actions. */
static json_t *outbox_all(store *st)
{
	json_t *all = json_array();
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	CHECK_EQ_INT(store_walk(t, STORE_OUTBOX, NULL, 0, collect_json, all), TH_OK);
	store_txn_abort(t);
	return all;
}

static size_t outbox_len(store *st)
{
	json_t *all = outbox_all(st);
	size_t n = json_array_size(all);
	json_decref(all);
	return n;
}

/* The actions (or fake Matrix calls) of @p all from index @p from on with op
 * @p op and, when not NULL, the given user_id (borrowed from @p all),
 * counted in @p n. */
static json_t *find_op(json_t *all, size_t from, const char *op, const char *user_id, size_t *n)
{
	json_t *found = NULL;
	size_t count = 0;
	for (size_t i = from; i < json_array_size(all); i++) {
		json_t *a = json_array_get(all, i);
		const char *o = jsonx_str(a, "op");
		const char *u = jsonx_str(a, "user_id");
		if (!o || strcmp(o, op) != 0 || (user_id && (!u || strcmp(u, user_id) != 0)))
			continue;
		if (!found)
			found = a;
		count++;
	}
	if (n)
		*n = count;
	return found;
}

static int collect_audit(void *ctx, uint64_t seq, const json_t *rec, const char *raw, size_t rawlen)
{
	(void)seq;
	json_t *copy = json_deep_copy(rec);
	json_object_set_new(copy, "raw", json_stringn(raw, rawlen));
	json_array_append_new(ctx, copy);
	return 0;
}

/* Every audit record (with its stored bytes as "raw"), in order (new array). */
static json_t *audit_all(store *st)
{
	json_t *all = json_array();
	struct audit_filter f;
	audit_filter_init(&f);
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	CHECK_EQ_INT(audit_iter(t, &f, collect_audit, all), TH_OK);
	store_txn_abort(t);
	return all;
}

/* The last audit record of @p kind about @p subject (NULL: any), borrowed from @p all. */
static json_t *audit_find(json_t *all, const char *kind, const char *subject, size_t *n)
{
	json_t *found = NULL;
	size_t count = 0;
	size_t i;
	json_t *r;
	json_array_foreach(all, i, r)
	{
		const char *k = jsonx_str(r, "kind"), *s = jsonx_str(r, "subject");
		if (!k || strcmp(k, kind) != 0 || (subject && (!s || strcmp(s, subject) != 0)))
			continue;
		found = r;
		count++;
	}
	if (n)
		*n = count;
	return found;
}

/* Does @p needle appear in the stored bytes of any audit record? */
static int audit_mentions(json_t *all, const char *needle)
{
	size_t i;
	json_t *r;
	json_array_foreach(all, i, r)
	{
		if (strstr(jsonx_str(r, "raw") ? jsonx_str(r, "raw") : "", needle))
			return 1;
	}
	return 0;
}

struct needle {
	const char *s;
	size_t hits;
	size_t rows;
};

static int find_needle(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct needle *n = ctx;
	size_t len = strlen(n->s);
	n->rows++;
	if (memmem(key, klen, n->s, len) || memmem(val, vlen, n->s, len))
		n->hits++;
	return 0;
}

/* How many entries of @p db hold the bytes of @p s in their key or value (rows counted in @p rows). */
static size_t db_mentions(store *st, enum store_db db, const char *s, size_t *rows)
{
	struct needle n = {.s = s};
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	CHECK_EQ_INT(store_walk(t, db, NULL, 0, find_needle, &n), TH_OK);
	store_txn_abort(t);
	if (rows)
		*rows = n.rows;
	return n.hits;
}

/* The guest's conversation record (new reference), or NULL. */
static json_t *conv_record(store *st, const char *guest)
{
	json_t *c = NULL;
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	if (store_get_json(t, STORE_CONVS, guest, &c) != TH_OK)
		c = NULL;
	store_txn_abort(t);
	return c;
}

/* The guest's feed from @p since (new array). */
static json_t *feed_of(store *st, const char *guest, uint64_t since, uint64_t *next)
{
	json_t *ev = NULL;
	uint64_t nx = 0;
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	CHECK_EQ_INT(feed_read(t, guest, since, &ev, &nx), TH_OK);
	store_txn_abort(t);
	if (next)
		*next = nx;
	return ev ? ev : json_array();
}

/* ---- secrets ------------------------------------------------------------- */

static int is_b64url(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
	       c == '_';
}

static int is_resume_shape(const char *s)
{
	static const char alphabet[] = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
	if (strlen(s) != SEC_RESUME_LEN)
		return 0;
	for (size_t i = 0; i < SEC_RESUME_LEN; i++) {
		if (i % 5 == 4) {
			if (s[i] != '-')
				return 0;
		} else if (!strchr(alphabet, s[i])) {
			return 0;
		}
	}
	return 1;
}

static void test_secret(void)
{
	/* Tokens: 32 base64url characters, never the same twice. */
	enum { N = 200 };
	static char toks[N][SEC_TOKEN_LEN + 1];
	for (int i = 0; i < N; i++) {
		memset(toks[i], 'x', sizeof(toks[i]));
		CHECK_EQ_INT(sec_token_new(toks[i]), TH_OK);
		CHECK_EQ_INT(strlen(toks[i]), SEC_TOKEN_LEN);
		CHECK_EQ_INT(SEC_TOKEN_LEN, 32);
		int ok = 1;
		for (size_t j = 0; j < SEC_TOKEN_LEN; j++)
			ok &= is_b64url(toks[i][j]);
		CHECK(ok);
		CHECK(sec_token_ok(toks[i]));
		for (int j = 0; j < i; j++)
			CHECK(strcmp(toks[i], toks[j]) != 0);
	}

	/* sec_token_ok: exactly 32 of A-Z a-z 0-9 - _ */
	CHECK(sec_token_ok("ABCDEFGHIJKLMNOPQRSTUVWXYZabcd-_"));
	CHECK(sec_token_ok("0123456789abcdefghijklmnopqrstuv"));
	CHECK(!sec_token_ok(NULL));
	CHECK(!sec_token_ok(""));
	CHECK(!sec_token_ok("ABCDEFGHIJKLMNOPQRSTUVWXYZabcd-"));   /* 31 */
	CHECK(!sec_token_ok("ABCDEFGHIJKLMNOPQRSTUVWXYZabcd-_A")); /* 33 */
	CHECK(!sec_token_ok("ABCDEFGHIJKLMNOPQRSTUVWXYZabcd+/"));  /* base64, not base64url */
	CHECK(!sec_token_ok("ABCDEFGHIJKLMNOPQRSTUVWXYZabcde="));  /* padding */
	CHECK(!sec_token_ok("ABCDEFGHIJKLMNOPQRSTUVWXYZabcd _"));  /* a space */
	CHECK(!sec_token_ok("ABCDEFGHIJKLMNOPQRSTUVWXYZabcd\xc3\xa9"));

	/* Resume codes: ABCD-EFGH-JKLM-NPQR, from 32 symbols without look-alikes. */
	char codes[20][SEC_RESUME_LEN + 1];
	for (int i = 0; i < 20; i++) {
		CHECK_EQ_INT(sec_resume_new(codes[i]), TH_OK);
		CHECK(is_resume_shape(codes[i]));
		for (int j = 0; j < i; j++)
			CHECK(strcmp(codes[i], codes[j]) != 0);
	}
	char norm[SEC_RESUME_LEN + 1];
	CHECK(sec_resume_normalise(codes[0], norm));
	CHECK_STR(norm, codes[0]);
	/* As typed: lower case, spaces, no dashes, dashes in odd places. */
	char typed[64];
	size_t o = 0;
	for (size_t i = 0; codes[1][i]; i++) {
		char c = codes[1][i];
		if (c == '-') {
			typed[o++] = ' ';
			continue;
		}
		typed[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
	}
	typed[o] = '\0';
	CHECK(sec_resume_normalise(typed, norm));
	CHECK_STR(norm, codes[1]);
	CHECK(sec_resume_normalise("abcd efgh jkmn pqrs", norm));
	CHECK_STR(norm, "ABCD-EFGH-JKMN-PQRS");
	CHECK(sec_resume_normalise("ABCDEFGHJKMNPQRS", norm));
	CHECK_STR(norm, "ABCD-EFGH-JKMN-PQRS");
	CHECK(sec_resume_normalise("  a-b-c-d-e-f-g-h-j-k-m-n-p-q-r-s  ", norm));
	CHECK_STR(norm, "ABCD-EFGH-JKMN-PQRS");
	/* Look-alikes are not in the alphabet, so a code holding one is refused. */
	CHECK(!sec_resume_normalise("0BCD-EFGH-JKMN-PQRS", norm));
	CHECK(!sec_resume_normalise("OBCD-EFGH-JKMN-PQRS", norm));
	CHECK(!sec_resume_normalise("oBCD-EFGH-JKMN-PQRS", norm));
	CHECK(!sec_resume_normalise("1BCD-EFGH-JKMN-PQRS", norm));
	CHECK(!sec_resume_normalise("IBCD-EFGH-JKMN-PQRS", norm));
	CHECK(!sec_resume_normalise("iBCD-EFGH-JKMN-PQRS", norm));
	CHECK(!sec_resume_normalise("ABCD-EFGH-JKMN-PQR!", norm));
	/* Wrong lengths. */
	CHECK(!sec_resume_normalise("", norm));
	CHECK(!sec_resume_normalise("   ", norm));
	CHECK(!sec_resume_normalise("ABCD-EFGH-JKMN-PQR", norm));   /* 15 */
	CHECK(!sec_resume_normalise("ABCD-EFGH-JKMN-PQRST", norm)); /* 17 */
	CHECK(!sec_resume_normalise("ABCD-EFGH-JKMN-PQRS-ABCD-EFGH-JKMN-PQRS", norm));

	/* Hashes: the same input the same; a different domain or secret differs. */
	unsigned char a[SEC_HASH_LEN], b[SEC_HASH_LEN], c[SEC_HASH_LEN], d[SEC_HASH_LEN];
	sec_hash("invite", toks[0], a);
	sec_hash("invite", toks[0], b);
	CHECK(memcmp(a, b, SEC_HASH_LEN) == 0);
	sec_hash("session", toks[0], c);
	CHECK(memcmp(a, c, SEC_HASH_LEN) != 0);
	sec_hash("resume", toks[0], d);
	CHECK(memcmp(a, d, SEC_HASH_LEN) != 0);
	CHECK(memcmp(c, d, SEC_HASH_LEN) != 0);
	sec_hash("invite", toks[1], b);
	CHECK(memcmp(a, b, SEC_HASH_LEN) != 0);
	/* The NUL between domain and secret keeps "ab"+"c" apart from "a"+"bc". */
	sec_hash("ab", "c", a);
	sec_hash("a", "bc", b);
	CHECK(memcmp(a, b, SEC_HASH_LEN) != 0);
}

/* ---- invitations -------------------------------------------------------- */

static void test_invites(void)
{
	struct test_env e;
	struct txn_env env;
	env_init(&e, &env);
	const struct config_service *svc = &e.cfg.services[0];
	uint64_t now = th_now_ms();
	uint64_t week = now + 7 * 86400000ull;
	store_txn *t;
	struct inv_info info;

	/* Create with 2 uses; the token has the token shape and a link. */
	char tok[SEC_TOKEN_LEN + 1] = "";
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(inv_create(t, e.au, svc, NULL, 2, week, "@staff:test.local", tok), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	CHECK(sec_token_ok(tok));
	char *link = inv_link(&e.cfg, tok);
	char *want = xasprintf("https://chat.test.local/#invite=%s", tok);
	CHECK_STR(link, want);
	free(link);
	free(want);

	/* Refusals: no uses, too many, already expired, no actor. */
	char bad[SEC_TOKEN_LEN + 1] = "unset";
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(inv_create(t, e.au, svc, NULL, 0, week, "@staff:test.local", bad), TH_EINVAL);
	CHECK_EQ_INT(inv_create(t, e.au, svc, NULL, 10001, week, "@staff:test.local", bad), TH_EINVAL);
	CHECK_EQ_INT(inv_create(t, e.au, svc, NULL, 1, now - 1, "@staff:test.local", bad), TH_EINVAL);
	CHECK_EQ_INT(inv_create(t, e.au, svc, NULL, 1, week, "", bad), TH_EINVAL);
	CHECK_EQ_INT(inv_create(t, e.au, NULL, NULL, 1, week, "@staff:test.local", bad), TH_EINVAL);
	store_txn_abort(t);
	CHECK_STR(bad, "unset");

	/* Check does not use it; consume counts the uses; used up is not found. */
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	memset(&info, 0, sizeof(info));
	CHECK_EQ_INT(inv_check(t, tok, th_now_ms(), &info), TH_OK);
	CHECK_STR(info.service, SVC_NAME);
	CHECK_EQ_INT(info.uses, 2);
	CHECK_EQ_INT(info.used, 0);
	CHECK(info.expires_ms == week);
	CHECK_EQ_INT(inv_check(t, tok, th_now_ms(), &info), TH_OK);
	CHECK_EQ_INT(info.used, 0);
	CHECK_EQ_INT(inv_consume(t, tok, th_now_ms(), &info), TH_OK);
	CHECK_EQ_INT(info.used, 1);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(inv_check(t, tok, th_now_ms(), &info), TH_OK);
	CHECK_EQ_INT(info.used, 1);
	CHECK_EQ_INT(inv_consume(t, tok, th_now_ms(), &info), TH_OK);
	CHECK_EQ_INT(info.used, 2);
	CHECK_EQ_INT(inv_check(t, tok, th_now_ms(), &info), TH_ENOTFOUND);
	CHECK_EQ_INT(inv_consume(t, tok, th_now_ms(), &info), TH_ENOTFOUND);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);

	/* Expired (a few ms ahead, then wait) and unknown: the same answer. */
	char shortlived[SEC_TOKEN_LEN + 1];
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(inv_create(t, e.au, svc, NULL, 5, th_now_ms() + 30, "@staff:test.local", shortlived),
	             TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	CHECK_EQ_INT(inv_check(t, shortlived, th_now_ms(), &info), TH_OK);
	store_txn_abort(t);
	usleep(80 * 1000);
	char unknown[SEC_TOKEN_LEN + 1];
	CHECK_EQ_INT(sec_token_new(unknown), TH_OK);
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(inv_check(t, shortlived, th_now_ms(), &info), TH_ENOTFOUND);
	CHECK_EQ_INT(inv_consume(t, shortlived, th_now_ms(), &info), TH_ENOTFOUND);
	CHECK_EQ_INT(inv_check(t, unknown, th_now_ms(), &info), TH_ENOTFOUND);
	CHECK_EQ_INT(inv_consume(t, unknown, th_now_ms(), &info), TH_ENOTFOUND);
	CHECK_EQ_INT(inv_check(t, "not a token", th_now_ms(), &info), TH_ENOTFOUND);
	CHECK_EQ_INT(inv_check(t, "", th_now_ms(), &info), TH_ENOTFOUND);
	store_txn_abort(t);

	/* A fresh one, to prune around. */
	char fresh[SEC_TOKEN_LEN + 1];
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(inv_create(t, e.au, svc, NULL, 3, week, "@staff:test.local", fresh), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);

	/* The store holds hashes: no token's bytes in any key or value, and
	 * the key is sec_hash("invite", token). */
	size_t rows = 0;
	CHECK_EQ_INT(db_mentions(e.st, STORE_INVITES, tok, &rows), 0);
	CHECK_EQ_INT(rows, 3);
	CHECK_EQ_INT(db_mentions(e.st, STORE_INVITES, shortlived, NULL), 0);
	CHECK_EQ_INT(db_mentions(e.st, STORE_INVITES, fresh, NULL), 0);
	unsigned char key[SEC_HASH_LEN];
	sec_hash("invite", fresh, key);
	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	const void *v;
	size_t vlen;
	CHECK_EQ_INT(store_get(t, STORE_INVITES, key, sizeof(key), &v, &vlen), TH_OK);
	json_t *rec = json_loadb(v, vlen, 0, NULL);
	CHECK_STR(jsonx_str(rec, "service"), SVC_NAME);
	CHECK_EQ_INT(json_integer_value(json_object_get(rec, "uses")), 3);
	CHECK_EQ_INT(json_integer_value(json_object_get(rec, "used")), 0);
	CHECK(json_object_size(rec) == 5); /* service, uses, used, expires_ms, created_ms: nothing else */
	json_decref(rec);
	CHECK_EQ_INT(store_get(t, STORE_INVITES, fresh, strlen(fresh), &v, &vlen), TH_ENOTFOUND);
	store_txn_abort(t);

	/* Audited: invite_created by the staff member, without the token. */
	json_t *au = audit_all(e.st);
	size_t n = 0;
	json_t *created = audit_find(au, "invite_created", NULL, &n);
	CHECK_EQ_INT(n, 3);
	CHECK_STR(jsonx_str(created, "actor"), "@staff:test.local");
	json_t *details = json_object_get(created, "details");
	CHECK_STR(jsonx_str(details, "service"), SVC_NAME);
	CHECK_EQ_INT(json_integer_value(json_object_get(details, "uses")), 3);
	CHECK(json_integer_value(json_object_get(details, "expires_ms")) == (json_int_t)week);
	CHECK(!audit_mentions(au, tok));
	CHECK(!audit_mentions(au, shortlived));
	CHECK(!audit_mentions(au, fresh));
	json_decref(au);

	/* Lifetimes. */
	uint64_t ms = 0;
	CHECK_EQ_INT(inv_parse_duration("30s", &ms), TH_OK);
	CHECK(ms == 30000ull);
	CHECK_EQ_INT(inv_parse_duration("90m", &ms), TH_OK);
	CHECK(ms == 90ull * 60000);
	CHECK_EQ_INT(inv_parse_duration("12h", &ms), TH_OK);
	CHECK(ms == 12ull * 3600000);
	CHECK_EQ_INT(inv_parse_duration("7d", &ms), TH_OK);
	CHECK(ms == 7ull * 86400000);
	CHECK_EQ_INT(inv_parse_duration("5", &ms), TH_OK);
	CHECK(ms == 5ull * 3600000);
	CHECK_EQ_INT(inv_parse_duration("365d", &ms), TH_OK);
	CHECK(ms == 365ull * 86400000);
	ms = 42;
	CHECK_EQ_INT(inv_parse_duration("", &ms), TH_EINVAL);
	CHECK_EQ_INT(inv_parse_duration(NULL, &ms), TH_EINVAL);
	CHECK_EQ_INT(inv_parse_duration("0", &ms), TH_EINVAL);
	CHECK_EQ_INT(inv_parse_duration("0d", &ms), TH_EINVAL);
	CHECK_EQ_INT(inv_parse_duration("x", &ms), TH_EINVAL);
	CHECK_EQ_INT(inv_parse_duration("d", &ms), TH_EINVAL);
	CHECK_EQ_INT(inv_parse_duration("400d", &ms), TH_EINVAL);
	CHECK_EQ_INT(inv_parse_duration("-5h", &ms), TH_EINVAL);
	CHECK_EQ_INT(inv_parse_duration("5w", &ms), TH_EINVAL);
	CHECK_EQ_INT(inv_parse_duration("99999999999999999999999999d", &ms), TH_EINVAL);
	CHECK(ms == 42);

	/* Pruning: the used-up one goes; the expired-just-now one stays a day;
	 * the fresh one stays. */
	size_t removed = 99;
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(inv_prune(t, th_now_ms(), &removed), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	CHECK_EQ_INT(removed, 1);
	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	sec_hash("invite", tok, key);
	CHECK_EQ_INT(store_get(t, STORE_INVITES, key, sizeof(key), &v, &vlen), TH_ENOTFOUND);
	sec_hash("invite", shortlived, key);
	CHECK_EQ_INT(store_get(t, STORE_INVITES, key, sizeof(key), &v, &vlen), TH_OK);
	CHECK_EQ_INT(inv_check(t, fresh, th_now_ms(), &info), TH_OK);
	store_txn_abort(t);
	/* Two days on: the expired one goes too, the fresh one (a week) stays. */
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(inv_prune(t, th_now_ms() + 2 * 86400000ull, &removed), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	CHECK_EQ_INT(removed, 1);
	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	CHECK_EQ_INT(inv_check(t, fresh, th_now_ms(), &info), TH_OK);
	store_txn_abort(t);
	db_mentions(e.st, STORE_INVITES, "", &rows);
	CHECK_EQ_INT(rows, 1);

	test_env_close(&e);
}

/* ---- feeds ---------------------------------------------------------------- */

static void append(store *st, const char *guest, const struct feed_entry *en, uint64_t want_id)
{
	store_txn *t;
	uint64_t id = 0;
	CHECK_EQ_INT(store_txn_begin(st, 1, &t), TH_OK);
	CHECK_EQ_INT(feed_append(t, guest, en, &id), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	CHECK_EQ_INT(id, want_id);
}

static void test_feed(void)
{
	struct test_env e;
	struct txn_env env;
	env_init(&e, &env);
	const char *g = "@g:x", *g2 = "@g:xy", *g3 = "@g";
	store_txn *t;

	struct feed_entry hello = {.kind = "notice", .role = "service", .name = "Helpline", .body = "Hello"};
	struct feed_entry mine = {.kind = "message",
	                          .role = "self",
	                          .name = "Amber Otter",
	                          .body = "I need to talk",
	                          .local_id = "L1",
	                          .event_id = "$mine:test.local",
	                          .room_id = "!portal:test.local",
	                          .ts = 1700000000000ull};
	struct feed_entry staff = {.kind = "message",
	                           .role = "staff",
	                           .name = "Sam",
	                           .body = "I am here",
	                           .event_id = "$staff:test.local",
	                           .room_id = "!portal:test.local"};
	/* Interleaved with two guests whose ids extend "@g:x" or it extends. */
	append(e.st, g, &hello, 1);
	append(e.st, g2, &hello, 1);
	append(e.st, g, &mine, 2);
	append(e.st, g3, &staff, 1);
	append(e.st, g, &staff, 3);
	append(e.st, g2, &staff, 2);

	uint64_t next = 0;
	json_t *ev = feed_of(e.st, g, 0, &next);
	CHECK_EQ_INT(json_array_size(ev), 3);
	CHECK(next == 3);
	for (size_t i = 0; i < json_array_size(ev); i++) {
		json_t *x = json_array_get(ev, i);
		CHECK_EQ_INT(json_integer_value(json_object_get(x, "id")), (long long)i + 1);
		/* Private members never shown. */
		CHECK(json_object_get(x, "event_id") == NULL);
		CHECK(json_object_get(x, "room_id") == NULL);
		char *s = json_dumps(x, JSON_COMPACT);
		CHECK(s && !strstr(s, "$mine") && !strstr(s, "$staff") && !strstr(s, "!portal"));
		free(s);
	}
	json_t *x = json_array_get(ev, 0);
	CHECK_STR(jsonx_str(x, "kind"), "notice");
	CHECK_STR(jsonx_str(json_object_get(x, "from"), "role"), "service");
	CHECK_STR(jsonx_str(x, "body"), "Hello");
	CHECK(json_integer_value(json_object_get(x, "ts")) > 0);
	x = json_array_get(ev, 1);
	CHECK_STR(jsonx_str(x, "kind"), "message");
	CHECK_STR(jsonx_str(json_object_get(x, "from"), "role"), "self");
	CHECK_STR(jsonx_str(json_object_get(x, "from"), "name"), "Amber Otter");
	CHECK_STR(jsonx_str(x, "body"), "I need to talk");
	CHECK_STR(jsonx_str(x, "local_id"), "L1");
	CHECK(json_integer_value(json_object_get(x, "ts")) == 1700000000000ll);
	x = json_array_get(ev, 2);
	CHECK_STR(jsonx_str(x, "body"), "I am here");
	CHECK_STR(jsonx_str(json_object_get(x, "from"), "name"), "Sam");
	json_decref(ev);

	/* From 2: only 3.  From 3: nothing, and "since" stays. */
	ev = feed_of(e.st, g, 2, &next);
	CHECK_EQ_INT(json_array_size(ev), 1);
	CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(ev, 0), "id")), 3);
	CHECK(next == 3);
	json_decref(ev);
	ev = feed_of(e.st, g, 3, &next);
	CHECK_EQ_INT(json_array_size(ev), 0);
	CHECK(next == 3);
	json_decref(ev);

	/* The other guests see only their own. */
	ev = feed_of(e.st, g2, 0, &next);
	CHECK_EQ_INT(json_array_size(ev), 2);
	CHECK(next == 2);
	CHECK_STR(jsonx_str(json_array_get(ev, 0), "body"), "Hello");
	CHECK_STR(jsonx_str(json_array_get(ev, 1), "body"), "I am here");
	json_decref(ev);
	ev = feed_of(e.st, g3, 0, &next);
	CHECK_EQ_INT(json_array_size(ev), 1);
	json_decref(ev);
	ev = feed_of(e.st, "@nobody:x", 0, &next);
	CHECK_EQ_INT(json_array_size(ev), 0);
	CHECK(next == 0);
	json_decref(ev);

	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	CHECK_EQ_INT(feed_has_after(t, g, 0), 1);
	CHECK_EQ_INT(feed_has_after(t, g, 2), 1);
	CHECK_EQ_INT(feed_has_after(t, g, 3), 0);
	CHECK_EQ_INT(feed_has_after(t, g2, 1), 1);
	CHECK_EQ_INT(feed_has_after(t, g2, 2), 0);
	CHECK_EQ_INT(feed_has_after(t, g3, 1), 0);
	CHECK_EQ_INT(feed_has_after(t, "@nobody:x", 0), 0);
	store_txn_abort(t);

	/* Erase "@g:x": its own messages come back for redaction (not staff's),
	 * nothing of it is left, the others are untouched. */
	json_t *own = NULL;
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(feed_erase(t, g, &own), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	CHECK_EQ_INT(json_array_size(own), 1);
	CHECK_STR(jsonx_str(json_array_get(own, 0), "event_id"), "$mine:test.local");
	CHECK_STR(jsonx_str(json_array_get(own, 0), "room_id"), "!portal:test.local");
	json_decref(own);
	ev = feed_of(e.st, g, 0, &next);
	CHECK_EQ_INT(json_array_size(ev), 0);
	json_decref(ev);
	CHECK_EQ_INT(db_mentions(e.st, STORE_FEED, "@g:x", NULL),
	             3); /* only "@g:xy"'s counter and 2 entries */
	CHECK_EQ_INT(db_mentions(e.st, STORE_FEED, "I need to talk", NULL), 0);
	size_t rows = 0;
	db_mentions(e.st, STORE_FEED, "", &rows);
	CHECK_EQ_INT(rows, 3 + 2); /* "@g:xy": counter and 2 entries; "@g": counter and 1 */
	ev = feed_of(e.st, g2, 0, &next);
	CHECK_EQ_INT(json_array_size(ev), 2);
	json_decref(ev);
	ev = feed_of(e.st, g3, 0, &next);
	CHECK_EQ_INT(json_array_size(ev), 1);
	json_decref(ev);

	/* A new entry after erasure starts again at 1. */
	append(e.st, g, &hello, 1);
	/* Erasing without asking for own messages, and an empty feed. */
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(feed_erase(t, g, NULL), TH_OK);
	own = NULL;
	CHECK_EQ_INT(feed_erase(t, "@nobody:x", &own), TH_OK);
	CHECK_EQ_INT(json_array_size(own), 0);
	json_decref(own);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);

	test_env_close(&e);
}

/* ---- attachments ---------------------------------------------------------- */

static void test_media_parsing(void)
{
	char server[MEDIA_MAX_SERVER + 1], id[MEDIA_MAX_ID + 1];
	CHECK_EQ_INT(media_mxc_parse("mxc://test.local/AbC_12-x", server, id), TH_OK);
	CHECK_STR(server, "test.local");
	CHECK_STR(id, "AbC_12-x");
	CHECK_EQ_INT(media_mxc_parse("mxc://[::1]:8448/abc", server, id), TH_OK);
	CHECK_STR(server, "[::1]:8448");
	CHECK_EQ_INT(media_mxc_parse("mxc://127.0.0.1:8008/abc", server, id), TH_OK);
	static const char *const bad[] = {
	        NULL,
	        "",
	        "mxc://",
	        "mxc://test.local",
	        "mxc://test.local/",
	        "mxc:///abc",
	        "https://test.local/abc",
	        "MXC://test.local/abc",
	        "mxc://test.local/../../_synapse/admin",
	        "mxc://test.local/abc/def",
	        "mxc://test.local/abc?x=1",
	        "mxc://test.local/abc%2f",
	        "mxc://user@test.local/abc",
	        "mxc://test.local:/abc",
	        "mxc://test.local:123456/abc",
	        "mxc://test.local:80x/abc",
	        "mxc://[::1/abc",
	        "mxc://[]/abc",
	        "mxc://[::g]/abc",
	        "mxc://te st/abc",
	        "mxc://test.local/ab c",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(server, "untouched", 10);
		CHECK(media_mxc_parse(bad[i], server, id) == TH_EINVAL);
		CHECK_STR(server, "untouched");
	}
	char longid[300];
	memset(longid, 'a', sizeof(longid));
	memcpy(longid, "mxc://s/", 8);
	longid[8 + MEDIA_MAX_ID] = '\0';
	CHECK_EQ_INT(media_mxc_parse(longid, server, id), TH_OK);
	longid[8 + MEDIA_MAX_ID] = 'a';
	longid[8 + MEDIA_MAX_ID + 1] = '\0';
	CHECK_EQ_INT(media_mxc_parse(longid, server, id), TH_EINVAL);

	char name[MEDIA_MAX_NAME + 1];
	media_name_clean("../../etc/passwd", "file", name);
	CHECK_STR(name, "passwd");
	media_name_clean("C:\\Users\\sam\\leaflet.pdf", "file", name);
	CHECK_STR(name, "leaflet.pdf");
	/* No bidirectional override: "invoice<RLO>fdp.exe" must not read as "...exe.pdf". */
	media_name_clean("invoice\xe2\x80\xae"
	                 "fdp.exe",
	                 "file", name);
	CHECK_STR(name, "invoicefdp.exe");
	media_name_clean("a\x01"
	                 "b\x7f"
	                 "c\xc2\x85"
	                 "d",
	                 "file", name);
	CHECK_STR(name, "a_b_cd");
	media_name_clean("bad\xff\xfeutf8", "file", name);
	CHECK_STR(name, "bad__utf8");
	media_name_clean("", "picture", name);
	CHECK_STR(name, "picture");
	media_name_clean("..", "file", name);
	CHECK_STR(name, "file");
	media_name_clean(NULL, "file", name);
	CHECK_STR(name, "file");
	/* Bounded, and cut at a character boundary: 60 two-byte letters. */
	char big[121];
	for (int i = 0; i < 60; i++)
		memcpy(big + 2 * i, "\xc3\xa9", 2);
	big[120] = '\0';
	media_name_clean(big, "file", name);
	CHECK_EQ_INT(strlen(name), MEDIA_MAX_NAME);
	json_t *valid = json_string(name);
	CHECK(valid != NULL); /* still UTF-8 */
	json_decref(valid);

	media_ascii_name("Carte du quartier \xc3\xa9t\xc3\xa9 \"1\";.pdf", name);
	CHECK_STR(name, "Carte du quartier _t_ _1__.pdf");
	media_ascii_name("..\r\nSet-Cookie: x", name);
	CHECK_STR(name, "__Set-Cookie_ x");
	media_ascii_name("\xd8\xae\xd8\xb1\xd9\x8a\xd8\xb7\xd8\xa9.jpg", name);
	CHECK_STR(name, "_____.jpg"); /* five letters */
	media_ascii_name("", name);
	CHECK_STR(name, "file");
}

/* A message event from @p sender in @p room with @p content (JSON text). */
static struct mxev message_of(const char *sender, const char *room, const char *event_id, const char *content,
                              const char *body, const char *msgtype)
{
	struct mxev ev = {.event_id = event_id,
	                  .room_id = room,
	                  .type = "m.room.message",
	                  .sender = sender,
	                  .content = {content, strlen(content)},
	                  .content_is_object = true,
	                  .body = body,
	                  .msgtype = msgtype};
	return ev;
}

/* Deliver @p ev to conv_on_event for the guests of @p r, in one transaction. */
static void deliver(struct test_env *e, const struct mxev *ev, enum pol_role role, json_t *r)
{
	store_txn *t;
	unsigned fed = 0;
	CHECK_EQ_INT(store_txn_begin(e->st, 1, &t), TH_OK);
	struct txn_env env = {.cfg = &e->cfg, .st = e->st, .au = e->au, .mx = &fake.mx};
	CHECK_EQ_INT(conv_on_event(&env, t, ev, role, POL_ROLE_NONE, r, &fed), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
}

/* The last entry of @p guest's feed (new reference). */
static json_t *last_entry(store *st, const char *guest)
{
	uint64_t next;
	json_t *ev = feed_of(st, guest, 0, &next);
	json_t *x = json_incref(json_array_get(ev, json_array_size(ev) - 1));
	json_decref(ev);
	return x;
}

static int attachment_of(store *st, const char *guest, uint64_t id, struct media_attachment *a)
{
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	int rc = feed_attachment(t, guest, id, a);
	store_txn_abort(t);
	return rc;
}

/* Two guests with conversations, both joined to one group room (its state,
 * as events.c keeps it: a new reference). */
static json_t *two_guests_in_a_group(struct test_env *e, struct txn_env *env, struct conv_session *a,
                                     struct conv_session *b)
{
	env_init(e, env);
	struct conv_started sa, sb;
	CHECK_EQ_INT(conv_redeem(env, NULL, SVC_NAME, "3", "en", &sa), TH_OK);
	CHECK_EQ_INT(conv_redeem(env, NULL, SVC_NAME, "3", "en", &sb), TH_OK);
	CHECK_EQ_INT(conv_auth(e->st, sa.session, th_now_ms(), a), TH_OK);
	CHECK_EQ_INT(conv_auth(e->st, sb.session, th_now_ms(), b), TH_OK);
	/* Their memberships: the room's own keys (rooms.h), as events.c keeps them. */
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(e->st, 1, &t), TH_OK);
	CHECK_EQ_INT(rooms_user_set(t, "!group:test.local", ROOMS_GUESTS, a->guest, "join"), TH_OK);
	CHECK_EQ_INT(rooms_user_set(t, "!group:test.local", ROOMS_GUESTS, b->guest, "join"), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	return json_pack("{s:s}", "kind", "group");
}

static void test_attachments(void)
{
	struct test_env e;
	struct txn_env env;
	struct conv_session a, b;
	json_t *r = two_guests_in_a_group(&e, &env, &a, &b);
	const char *room = "!group:test.local", *staff = "@staff:test.local";

	/* A staff photo: an attachment with name, type and size; the mxc URI
	 * is kept but never shown. */
	struct mxev ev =
	        message_of(staff, room, "$pic:test.local",
	                   "{\"msgtype\":\"m.image\",\"body\":\"map.jpg\",\"url\":\"mxc://test.local/"
	                   "MapId123\",\"info\":{\"mimetype\":\"IMAGE/JPEG\",\"size\":48213}}",
	                   "map.jpg", "m.image");
	deliver(&e, &ev, POL_ROLE_STAFF, r);
	json_t *x = last_entry(e.st, a.guest);
	CHECK_STR(jsonx_str(x, "kind"), "message");
	CHECK_STR(jsonx_str(json_object_get(x, "from"), "role"), "staff");
	CHECK_STR(jsonx_str(x, "body"), "[picture: map.jpg]");
	json_t *at = json_object_get(x, "attachment");
	CHECK_STR(jsonx_str(at, "kind"), "picture");
	CHECK_STR(jsonx_str(at, "name"), "map.jpg");
	CHECK_STR(jsonx_str(at, "mimetype"), "image/jpeg");
	CHECK_EQ_INT(json_integer_value(json_object_get(at, "size")), 48213);
	CHECK(json_object_get(at, "caption") == NULL);
	CHECK_EQ_INT(json_object_size(at), 4);
	char *dump = json_dumps(x, JSON_COMPACT);
	CHECK(dump && !strstr(dump, "mxc") && !strstr(dump, "MapId123") && !strstr(dump, "test.local"));
	free(dump);
	uint64_t pic = (uint64_t)json_integer_value(json_object_get(x, "id"));
	json_decref(x);
	struct media_attachment got;
	CHECK_EQ_INT(attachment_of(e.st, a.guest, pic, &got), TH_OK);
	CHECK_STR(got.mxc, "mxc://test.local/MapId123");
	CHECK_STR(got.kind, "picture");
	CHECK_STR(got.name, "map.jpg");
	CHECK(got.size == 48213);
	/* The other guest has it too, under its own id; neither can name an
	 * entry that is not an attachment, or one that does not exist. */
	x = last_entry(e.st, b.guest);
	uint64_t pic_b = (uint64_t)json_integer_value(json_object_get(x, "id"));
	CHECK(json_object_get(x, "attachment") != NULL);
	json_decref(x);
	CHECK_EQ_INT(attachment_of(e.st, b.guest, pic_b, &got), TH_OK);
	CHECK_EQ_INT(attachment_of(e.st, a.guest, 1, &got), TH_ENOTFOUND); /* the greeting */
	CHECK_EQ_INT(attachment_of(e.st, a.guest, 0, &got), TH_ENOTFOUND); /* the counter */
	CHECK_EQ_INT(attachment_of(e.st, a.guest, pic + 100, &got), TH_ENOTFOUND);
	CHECK_EQ_INT(attachment_of(e.st, "@nobody:test.local", pic, &got), TH_ENOTFOUND);

	/* A leaflet with a caption: the words come with it. */
	ev = message_of(staff, room, "$pdf:test.local",
	                "{\"msgtype\":\"m.file\",\"body\":\"Our opening hours\",\"filename\":\"leaflet.pdf\","
	                "\"url\":\"mxc://test.local/Leaf\",\"info\":{\"mimetype\":\"application/pdf\"}}",
	                "Our opening hours", "m.file");
	deliver(&e, &ev, POL_ROLE_STAFF, r);
	x = last_entry(e.st, a.guest);
	at = json_object_get(x, "attachment");
	CHECK_STR(jsonx_str(at, "kind"), "file");
	CHECK_STR(jsonx_str(at, "name"), "leaflet.pdf");
	CHECK_STR(jsonx_str(at, "caption"), "Our opening hours");
	CHECK(json_object_get(at, "size") == NULL);
	CHECK_STR(jsonx_str(x, "body"), "Our opening hours\n[file: leaflet.pdf]");
	json_decref(x);

	/* Encrypted media (content.file, no url): word that it cannot be shown. */
	ev = message_of(
	        staff, room, "$enc:test.local",
	        "{\"msgtype\":\"m.image\",\"body\":\"secret.png\",\"file\":{\"url\":\"mxc://test.local/"
	        "Enc\",\"key\":{},\"iv\":\"x\",\"hashes\":{},\"v\":\"v2\"}}",
	        "secret.png", "m.image");
	deliver(&e, &ev, POL_ROLE_STAFF, r);
	x = last_entry(e.st, a.guest);
	CHECK_STR(jsonx_str(x, "body"), "[a picture was sent that cannot be shown here]");
	CHECK(json_object_get(x, "attachment") == NULL);
	uint64_t enc = (uint64_t)json_integer_value(json_object_get(x, "id"));
	json_decref(x);
	CHECK_EQ_INT(attachment_of(e.st, a.guest, enc, &got), TH_ENOTFOUND);
	CHECK_EQ_INT(db_mentions(e.st, STORE_FEED, "mxc://test.local/Enc", NULL), 0);

	/* Hostile content: a url that is not an mxc URI, a path in the name,
	 * a direction override, a mimetype with parameters, a size as text. */
	static const char *const hostile[] = {
	        "{\"msgtype\":\"m.file\",\"body\":\"x\",\"url\":\"https://evil.example/x\"}",
	        ("{\"msgtype\":\"m.file\",\"body\":\"x\",\"url\":\"mxc://test.local/../../_synapse/admin/v1/"
	         "users\"}"),
	        "{\"msgtype\":\"m.video\",\"body\":\"x\",\"url\":42}",
	};
	for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
		ev = message_of(staff, room, "$bad:test.local", hostile[i], "x", "m.file");
		deliver(&e, &ev, POL_ROLE_STAFF, r);
		x = last_entry(e.st, a.guest);
		CHECK_STR(jsonx_str(x, "body"), "[a file was sent that cannot be shown here]");
		CHECK(json_object_get(x, "attachment") == NULL);
		json_decref(x);
	}
	char *content = xasprintf(
	        "{\"msgtype\":\"m.audio\",\"body\":\"x\",\"filename\":\"../../%0300d\\u202egpj.exe\","
	        "\"url\":\"mxc://test.local/Aud\",\"info\":{\"mimetype\":\"text/html; charset=utf-8\","
	        "\"size\":\"12\"}}",
	        0);
	ev = message_of(staff, room, "$aud:test.local", content, "x", "m.audio");
	deliver(&e, &ev, POL_ROLE_STAFF, r);
	free(content);
	x = last_entry(e.st, a.guest);
	at = json_object_get(x, "attachment");
	const char *name = jsonx_str(at, "name");
	CHECK(name && strlen(name) <= MEDIA_MAX_NAME && strlen(name) > 0);
	CHECK(name && !strchr(name, '/') && !strstr(name, "\xe2\x80\xae"));
	CHECK(json_object_get(at, "mimetype") == NULL);
	CHECK(json_object_get(at, "size") == NULL);
	CHECK_STR(jsonx_str(at, "caption"), "x");
	json_decref(x);
	for (size_t i = 0; i < 2; i++) { /* a negative size, a mimetype with no subtype */
		ev = message_of(staff, room, "$neg:test.local",
		                i ? "{\"msgtype\":\"m.file\",\"body\":\"f\",\"url\":\"mxc://s/i\",\"info\":{"
		                    "\"mimetype\":\"application/\",\"size\":-5}}"
		                  : "{\"msgtype\":\"m.file\",\"body\":\"f\",\"url\":\"mxc://s/i\",\"info\":{"
		                    "\"mimetype\":\"/pdf\",\"size\":1e3}}",
		                "f", "m.file");
		deliver(&e, &ev, POL_ROLE_STAFF, r);
		x = last_entry(e.st, a.guest);
		at = json_object_get(x, "attachment");
		CHECK_STR(jsonx_str(at, "name"), "f");
		CHECK(json_object_get(at, "mimetype") == NULL && json_object_get(at, "size") == NULL);
		json_decref(x);
	}

	/* A guest's own upload, echoed: the sender sees it by name, as today;
	 * the other guest of the group gets the attachment. */
	ev = message_of(a.guest, room, "$own:test.local",
	                "{\"msgtype\":\"m.image\",\"body\":\"me.png\",\"url\":\"mxc://test.local/Own\","
	                "\"org.threshold.local_id\":\"L9\"}",
	                "me.png", "m.image");
	deliver(&e, &ev, POL_ROLE_GUEST, r);
	x = last_entry(e.st, a.guest);
	CHECK_STR(jsonx_str(json_object_get(x, "from"), "role"), "self");
	CHECK_STR(jsonx_str(x, "body"), "[picture: me.png]");
	CHECK_STR(jsonx_str(x, "local_id"), "L9");
	CHECK(json_object_get(x, "attachment") == NULL);
	json_decref(x);
	x = last_entry(e.st, b.guest);
	CHECK_STR(jsonx_str(json_object_get(x, "from"), "role"), "guest");
	CHECK_STR(jsonx_str(json_object_get(x, "from"), "name"), a.pseudonym);
	CHECK_STR(jsonx_str(json_object_get(x, "attachment"), "name"), "me.png");
	json_decref(x);

	/* Erasure takes the attachments (and their mxc URIs) with the feed. */
	CHECK(db_mentions(e.st, STORE_FEED, "mxc://test.local/MapId123", NULL) == 2);
	char receipt[CONV_RECEIPT_LEN + 1];
	CHECK_EQ_INT(conv_erase(&env, a.guest, receipt), TH_OK);
	CHECK_EQ_INT(attachment_of(e.st, a.guest, pic, &got), TH_ENOTFOUND);
	CHECK(db_mentions(e.st, STORE_FEED, "mxc://test.local/MapId123", NULL) == 1);

	json_decref(r);
	test_env_close(&e);
}

/* A redaction (v1-v10: "redacts" at the top; v11: in the content). */
static struct mxev redaction_of(const char *sender, const char *room, const char *event_id, const char *json)
{
	struct mxev ev = {.json = {json, strlen(json)},
	                  .is_object = true,
	                  .event_id = event_id,
	                  .room_id = room,
	                  .type = "m.room.redaction",
	                  .sender = sender,
	                  .content = {"{}", 2},
	                  .content_is_object = true};
	return ev;
}

/* A message taken down in Matrix goes from every guest's feed: its words
 * and attachment are gone on replay, a "removed" entry tells live pages,
 * and the picture can no longer be fetched.  A redaction of something no
 * feed holds, or of one already taken down, changes nothing. */
static void test_take_down(void)
{
	struct test_env e;
	struct txn_env env;
	struct conv_session a, b;
	json_t *r = two_guests_in_a_group(&e, &env, &a, &b);
	const char *room = "!group:test.local", *staff = "@staff:test.local";

	/* Guest A overshares in the group; a moderator takes it down (v1-v10 form). */
	struct mxev ev = message_of(a.guest, room, "$overshare:test.local",
	                            "{\"msgtype\":\"m.text\",\"body\":\"I live at 4 Elm Road\","
	                            "\"org.threshold.local_id\":\"L1\"}",
	                            "I live at 4 Elm Road", "m.text");
	deliver(&e, &ev, POL_ROLE_GUEST, r);
	json_t *x = last_entry(e.st, b.guest);
	uint64_t in_b = (uint64_t)json_integer_value(json_object_get(x, "id"));
	CHECK_STR(jsonx_str(x, "body"), "I live at 4 Elm Road");
	json_decref(x);
	x = last_entry(e.st, a.guest);
	uint64_t in_a = (uint64_t)json_integer_value(json_object_get(x, "id"));
	json_decref(x);
	CHECK(db_mentions(e.st, STORE_FEED, "4 Elm Road", NULL) == 2);
	struct mxev red = redaction_of(staff, room, "$red1:test.local",
	                               "{\"type\":\"m.room.redaction\",\"redacts\":\"$overshare:test.local\","
	                               "\"content\":{\"reason\":\"personal details\"}}");
	deliver(&e, &red, POL_ROLE_STAFF, r);
	CHECK(db_mentions(e.st, STORE_FEED, "4 Elm Road", NULL) == 0);
	x = last_entry(e.st, b.guest);
	CHECK_STR(jsonx_str(x, "kind"), "removed");
	CHECK_EQ_INT(json_integer_value(json_object_get(x, "entry")), (long long)in_b);
	CHECK(json_object_get(x, "from") == NULL && json_object_get(x, "body") == NULL);
	json_decref(x);
	uint64_t next;
	json_t *all = feed_of(e.st, b.guest, in_b - 1, &next);
	x = json_array_get(all, 0);
	CHECK_EQ_INT(json_integer_value(json_object_get(x, "id")), (long long)in_b);
	CHECK_STR(jsonx_str(x, "kind"), "message");
	CHECK(json_is_true(json_object_get(x, "removed")));
	CHECK(json_object_get(x, "body") == NULL);
	CHECK_STR(jsonx_str(json_object_get(x, "from"), "name"), a.pseudonym);
	CHECK(json_object_get(x, "event_id") == NULL); /* still private */
	json_decref(all);
	/* The writer's own page takes it down too, and keeps its local id. */
	all = feed_of(e.st, a.guest, in_a - 1, &next);
	x = json_array_get(all, 0);
	CHECK(json_is_true(json_object_get(x, "removed")));
	CHECK_STR(jsonx_str(x, "local_id"), "L1");
	CHECK_STR(jsonx_str(json_array_get(all, 1), "kind"), "removed");
	json_decref(all);

	/* Again, or something no feed holds: nothing new. */
	x = last_entry(e.st, b.guest);
	uint64_t last_b = (uint64_t)json_integer_value(json_object_get(x, "id"));
	json_decref(x);
	deliver(&e, &red, POL_ROLE_STAFF, r);
	struct mxev other =
	        redaction_of(staff, room, "$red2:test.local",
	                     "{\"type\":\"m.room.redaction\",\"redacts\":\"$unknown:test.local\"}");
	deliver(&e, &other, POL_ROLE_STAFF, r);
	struct mxev broken = redaction_of(staff, room, "$red3:test.local", "{\"type\":\"m.room.redaction\"}");
	deliver(&e, &broken, POL_ROLE_STAFF, r);
	x = last_entry(e.st, b.guest);
	CHECK_EQ_INT(json_integer_value(json_object_get(x, "id")), (long long)last_b);
	json_decref(x);

	/* Staff's picture, taken down by its sender (room v11: "redacts" in the content). */
	ev = message_of(staff, room, "$pic:test.local",
	                "{\"msgtype\":\"m.image\",\"body\":\"x.png\",\"url\":\"mxc://test.local/Wrong1\"}",
	                "x.png", "m.image");
	deliver(&e, &ev, POL_ROLE_STAFF, r);
	x = last_entry(e.st, a.guest);
	uint64_t pic = (uint64_t)json_integer_value(json_object_get(x, "id"));
	json_decref(x);
	struct media_attachment got;
	CHECK_EQ_INT(attachment_of(e.st, a.guest, pic, &got), TH_OK);
	red = redaction_of(staff, room, "$red4:test.local",
	                   "{\"type\":\"m.room.redaction\",\"content\":{\"redacts\":\"$pic:test.local\"}}");
	deliver(&e, &red, POL_ROLE_STAFF, r);
	CHECK_EQ_INT(attachment_of(e.st, a.guest, pic, &got), TH_ENOTFOUND);
	CHECK(db_mentions(e.st, STORE_FEED, "Wrong1", NULL) == 0);

	json_decref(r);
	test_env_close(&e);
}

/* A message event with an m.relates_to (JSON text of the content). */
static struct mxev related_of(const char *sender, const char *room, const char *event_id, const char *content,
                              const char *body)
{
	return message_of(sender, room, event_id, content, body, "m.text");
}

/* Every entry of @p guest's feed, as the API shows them, as one string (new). */
static char *feed_text(store *st, const char *guest)
{
	json_t *all = feed_of(st, guest, 0, NULL);
	char *s = json_dumps(all, JSON_COMPACT);
	json_decref(all);
	return s;
}

/* The message entries of @p guest's feed (new reference). */
static json_t *messages_of(store *st, const char *guest)
{
	json_t *all = feed_of(st, guest, 0, NULL), *out = json_array();
	size_t i;
	json_t *x;
	json_array_foreach(all, i, x)
	{
		if (strcmp(jsonx_str(x, "kind"), "message") == 0)
			json_array_append(out, x);
	}
	json_decref(all);
	return out;
}

/* What a guest sees is decided per event: a note, its edit, a reply to it, a
 * thread reply to it and a reply to that reply reach no feed; an edited
 * message shows once, edited; a reply shows without its fallback quote (and
 * the user id in it); a reaction shows nothing; a redaction by someone who
 * neither sent the message nor moderates does nothing, by its sender it
 * takes the message down; no entry anywhere holds a user id. */
static void test_visibility(void)
{
	struct test_env e;
	struct txn_env env;
	struct conv_session a, b;
	json_t *r = two_guests_in_a_group(&e, &env, &a, &b);
	const char *room = "!group:test.local", *staff = "@staff:test.local";

	struct mxev ev = related_of(staff, room, "$note:test.local",
	                            "{\"msgtype\":\"m.text\",\"body\":\"!threshold note secret one\"}",
	                            "!threshold note secret one");
	deliver(&e, &ev, POL_ROLE_STAFF, r);
	/* Element's edit of the note: "* " in the body, the text in m.new_content. */
	ev = related_of(staff, room, "$noteedit:test.local",
	                "{\"msgtype\":\"m.text\",\"body\":\"* !threshold note secret two\","
	                "\"m.new_content\":{\"msgtype\":\"m.text\",\"body\":\"!threshold note secret two\"},"
	                "\"m.relates_to\":{\"rel_type\":\"m.replace\",\"event_id\":\"$note:test.local\"}}",
	                "* !threshold note secret two");
	deliver(&e, &ev, POL_ROLE_STAFF, r);
	/* A reply quoting it (the fallback names staff by user id). */
	ev = related_of(
	        staff, room, "$noterep:test.local",
	        "{\"msgtype\":\"m.text\",\"body\":\"> <@staff:test.local> !threshold note secret one\\n\\n"
	        "secret three\",\"m.relates_to\":{\"m.in_reply_to\":{\"event_id\":\"$note:test.local\"}}}",
	        "> <@staff:test.local> !threshold note secret one\n\nsecret three");
	deliver(&e, &ev, POL_ROLE_STAFF, r);
	ev = related_of(staff, room, "$notethr:test.local",
	                "{\"msgtype\":\"m.text\",\"body\":\"secret four\",\"m.relates_to\":{\"rel_type\":"
	                "\"m.thread\",\"event_id\":\"$note:test.local\",\"is_falling_back\":true,"
	                "\"m.in_reply_to\":{\"event_id\":\"$note:test.local\"}}}",
	                "secret four");
	deliver(&e, &ev, POL_ROLE_STAFF, r);
	ev = related_of(staff, room, "$chain:test.local",
	                "{\"msgtype\":\"m.text\",\"body\":\"secret five\","
	                "\"m.relates_to\":{\"m.in_reply_to\":{\"event_id\":\"$noterep:test.local\"}}}",
	                "secret five");
	deliver(&e, &ev, POL_ROLE_STAFF, r);
	/* A message turned into a note by an edit, and a reaction to the note. */
	ev = related_of(staff, room, "$hello:test.local", "{\"msgtype\":\"m.text\",\"body\":\"Hello there\"}",
	                "Hello there");
	deliver(&e, &ev, POL_ROLE_STAFF, r);
	ev = related_of(staff, room, "$hello2:test.local",
	                "{\"msgtype\":\"m.text\",\"body\":\"* Hello again\","
	                "\"m.new_content\":{\"msgtype\":\"m.text\",\"body\":\"Hello again\"},"
	                "\"m.relates_to\":{\"rel_type\":\"m.replace\",\"event_id\":\"$hello:test.local\"}}",
	                "* Hello again");
	deliver(&e, &ev, POL_ROLE_STAFF, r);
	ev = related_of(staff, room, "$hello3:test.local",
	                "{\"msgtype\":\"m.text\",\"body\":\"* !threshold note secret six\","
	                "\"m.new_content\":{\"msgtype\":\"m.text\",\"body\":\"!threshold note secret six\"},"
	                "\"m.relates_to\":{\"rel_type\":\"m.replace\",\"event_id\":\"$hello:test.local\"}}",
	                "* !threshold note secret six");
	deliver(&e, &ev, POL_ROLE_STAFF, r);
	/* Someone else's "edit" of it (spec: ignored). */
	ev = related_of("@other:test.local", room, "$hello4:test.local",
	                "{\"msgtype\":\"m.text\",\"body\":\"* forged\","
	                "\"m.new_content\":{\"msgtype\":\"m.text\",\"body\":\"forged\"},"
	                "\"m.relates_to\":{\"rel_type\":\"m.replace\",\"event_id\":\"$hello:test.local\"}}",
	                "* forged");
	deliver(&e, &ev, POL_ROLE_STAFF, r);
	struct mxev react = {
	        .event_id = "$react:test.local",
	        .room_id = room,
	        .type = "m.reaction",
	        .sender = staff,
	        .content = {"{\"m.relates_to\":{\"rel_type\":\"m.annotation\",\"event_id\":"
	                    "\"$hello:test.local\",\"key\":\"x\"}}",
	                    strlen("{\"m.relates_to\":{\"rel_type\":\"m.annotation\",\"event_id\":"
	                           "\"$hello:test.local\",\"key\":\"x\"}}")},
	        .content_is_object = true};
	deliver(&e, &react, POL_ROLE_STAFF, r);

	for (int i = 0; i < 2; i++) {
		const char *g = i ? b.guest : a.guest;
		char *all = feed_text(e.st, g);
		CHECK(strstr(all, "secret") == NULL);
		CHECK(strstr(all, "forged") == NULL);
		CHECK(strstr(all, "* ") == NULL);
		json_t *msgs = messages_of(e.st, g);
		CHECK_EQ_INT(json_array_size(msgs), 1); /* the message, once */
		json_t *m = json_array_get(msgs, 0);
		CHECK_STR(jsonx_str(m, "body"), "Hello again");
		CHECK(json_is_true(json_object_get(m, "edited")));
		json_t *last = last_entry(e.st, g);
		CHECK_STR(jsonx_str(last, "kind"), "edited");
		CHECK_EQ_INT(json_integer_value(json_object_get(last, "entry")),
		             json_integer_value(json_object_get(m, "id")));
		CHECK_STR(jsonx_str(last, "body"), "Hello again");
		json_decref(last);
		json_decref(msgs);
		free(all);
	}

	/* A guest writes; staff reply, quoting the guest by user id in the fallback. */
	ev = message_of(
	        a.guest, room, "$gmsg:test.local",
	        "{\"msgtype\":\"m.text\",\"body\":\"Is anyone there?\",\"org.threshold.local_id\":\"L9\"}",
	        "Is anyone there?", "m.text");
	deliver(&e, &ev, POL_ROLE_GUEST, r);
	char *reply_content = xasprintf(
	        "{\"msgtype\":\"m.text\",\"body\":\"> <%s> Is anyone there?\\n\\nYes, we are here.\","
	        "\"format\":\"org.matrix.custom.html\",\"formatted_body\":\"<mx-reply><blockquote><a "
	        "href=\\\"https://matrix.to/#/%s\\\">%s</a></blockquote></mx-reply>Yes, we are here.\","
	        "\"m.relates_to\":{\"m.in_reply_to\":{\"event_id\":\"$gmsg:test.local\"}}}",
	        a.guest, a.guest, a.guest);
	char *reply_body = xasprintf("> <%s> Is anyone there?\n\nYes, we are here.", a.guest);
	ev = related_of(staff, room, "$rep:test.local", reply_content, reply_body);
	deliver(&e, &ev, POL_ROLE_STAFF, r);
	free(reply_content);
	free(reply_body);
	for (int i = 0; i < 2; i++) {
		json_t *last = last_entry(e.st, i ? b.guest : a.guest);
		CHECK_STR(jsonx_str(last, "body"), "Yes, we are here.");
		CHECK_STR(jsonx_str(json_object_get(last, "from"), "role"), "staff");
		json_decref(last);
	}

	/* A guest's redaction of staff's message: a guest has no power to, so
	 * the homeserver will not apply it, and no page changes.  Its sender's does. */
	json_t *before = last_entry(e.st, b.guest);
	struct mxev red = redaction_of(b.guest, room, "$red1:test.local",
	                               "{\"type\":\"m.room.redaction\",\"redacts\":\"$hello:test.local\"}");
	deliver(&e, &red, POL_ROLE_GUEST, r);
	json_t *after = last_entry(e.st, b.guest);
	CHECK(json_equal(before, after));
	json_decref(before);
	json_decref(after);
	/* Power levels that make this guest a moderator: now it may. */
	static const char pl[] = "{\"redact\":50,\"users_default\":0,\"users\":{\"@x:test.local\":100}}";
	struct mxev power = {.event_id = "$pl:test.local",
	                     .room_id = room,
	                     .type = "m.room.power_levels",
	                     .state_key = "",
	                     .sender = staff,
	                     .content = {pl, sizeof(pl) - 1},
	                     .content_is_object = true};
	deliver(&e, &power, POL_ROLE_STAFF, r);
	/* The stored levels now decide: staff at users_default 0 are no moderators either. */
	red = redaction_of("@third:test.local", room, "$red2:test.local",
	                   "{\"type\":\"m.room.redaction\",\"redacts\":\"$hello:test.local\"}");
	deliver(&e, &red, POL_ROLE_STAFF, r);
	json_t *msgs = messages_of(e.st, b.guest);
	CHECK(!json_is_true(json_object_get(json_array_get(msgs, 0), "removed")));
	json_decref(msgs);
	red = redaction_of(staff, room, "$red3:test.local",
	                   "{\"type\":\"m.room.redaction\",\"redacts\":\"$hello:test.local\"}");
	deliver(&e, &red, POL_ROLE_STAFF, r);
	msgs = messages_of(e.st, b.guest);
	CHECK(json_is_true(json_object_get(json_array_get(msgs, 0), "removed")));
	CHECK(json_object_get(json_array_get(msgs, 0), "body") == NULL);
	json_decref(msgs);
	/* The edit's words went with it. */
	CHECK(db_mentions(e.st, STORE_FEED, "Hello again", NULL) == 0);

	/* No user id in any entry of any feed. */
	for (int i = 0; i < 2; i++) {
		char *all = feed_text(e.st, i ? b.guest : a.guest);
		CHECK(strchr(all, '@') == NULL);
		free(all);
	}

	/* What a feed remembers goes with it. */
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	struct feed_mark mk;
	CHECK_EQ_INT(feed_mark_get(t, a.guest, room, "$note:test.local", &mk), TH_OK);
	CHECK_EQ_INT(mk.kind, FEED_MARK_HIDDEN);
	CHECK_EQ_INT(feed_mark_get(t, a.guest, "!elsewhere:test.local", "$note:test.local", &mk), TH_OK);
	CHECK_EQ_INT(mk.kind, FEED_MARK_UNKNOWN);
	CHECK_EQ_INT(feed_erase(t, a.guest, NULL), TH_OK);
	CHECK_EQ_INT(feed_mark_get(t, a.guest, room, "$note:test.local", &mk), TH_OK);
	CHECK_EQ_INT(mk.kind, FEED_MARK_UNKNOWN);
	CHECK_EQ_INT(feed_mark_get(t, b.guest, room, "$note:test.local", &mk), TH_OK);
	CHECK_EQ_INT(mk.kind, FEED_MARK_HIDDEN);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	/* Only B's memory of A's message names A (its sender, so A's own
	 * redaction of it, as erasure sends, is judged). */
	CHECK(db_mentions(e.st, STORE_FEED, a.guest, NULL) == 1);

	json_decref(r);
	test_env_close(&e);
}

/* A feed remembers at most FEED_MAX_MARKS events: the oldest is forgotten. */
static void test_feed_marks_bounded(void)
{
	struct test_env e;
	test_env_open(&e);
	const char *g = "@guest_x:test.local", *room = "!r:test.local";
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	for (unsigned i = 0; i < FEED_MAX_MARKS + 3; i++) {
		char id[32];
		snprintf(id, sizeof(id), "$e%u:test.local", i);
		CHECK_EQ_INT(feed_mark_put(t, g, room, id, "@s:test.local", 0), TH_OK);
	}
	struct feed_mark mk;
	CHECK_EQ_INT(feed_mark_get(t, g, room, "$e0:test.local", &mk), TH_OK);
	CHECK_EQ_INT(mk.kind, FEED_MARK_UNKNOWN);
	CHECK_EQ_INT(feed_mark_get(t, g, room, "$e2:test.local", &mk), TH_OK);
	CHECK_EQ_INT(mk.kind, FEED_MARK_UNKNOWN);
	CHECK_EQ_INT(feed_mark_get(t, g, room, "$e3:test.local", &mk), TH_OK);
	CHECK_EQ_INT(mk.kind, FEED_MARK_HIDDEN);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	CHECK(db_mentions(e.st, STORE_FEED, "$e", NULL) == FEED_MAX_MARKS * 2);
	test_env_close(&e);
}

/* ---- conversations ------------------------------------------------------- */

static char *lower_spaced(const char *code)
{
	char *s = xstrdup(code);
	for (char *p = s; *p; p++) {
		if (*p == '-')
			*p = ' ';
		else if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p + 32);
	}
	return s;
}

/* The portal room is made, as the outbox does it when create_room succeeds. */
static void room_made(struct test_env *e, const char *guest, const char *room)
{
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(e->st, 1, &t), TH_OK);
	CHECK_EQ_INT(rooms_mark_managed(t, room, "portal"), TH_OK);
	CHECK_EQ_INT(conv_room_created(&e->cfg, &fake.mx, t, guest, room), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
}

static void make_invite(struct test_env *e, unsigned uses, char *tok)
{
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(e->st, 1, &t), TH_OK);
	CHECK_EQ_INT(inv_create(t, e->au, &e->cfg.services[0], NULL, uses, th_now_ms() + 86400000ull,
	                        "@staff:test.local", tok),
	             TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
}

static void test_conv_lifecycle(void)
{
	struct test_env e;
	struct txn_env env;
	env_init(&e, &env);
	char tok[SEC_TOKEN_LEN + 1];
	make_invite(&e, 1, tok);

	/* Redeem: a guest, a session, a resume code. */
	struct conv_started st;
	memset(&st, 0, sizeof(st));
	uint64_t before = th_now_ms();
	CHECK_EQ_INT(conv_redeem(&env, tok, NULL, "3", "en", &st), TH_OK);
	CHECK(sec_token_ok(st.session));
	CHECK(is_resume_shape(st.resume));
	CHECK(st.pseudonym[0] != '\0');
	CHECK(st.expires_ms >= before + 24 * 3600000ull - 1000 &&
	      st.expires_ms <= th_now_ms() + 24 * 3600000ull);
	/* The invitation had one use. */
	struct conv_started again;
	CHECK_EQ_INT(conv_redeem(&env, tok, NULL, "3", "en", &again), TH_ENOTFOUND);
	CHECK_EQ_INT(conv_redeem(&env, "not-a-token", NULL, "3", "en", &again), TH_ENOTFOUND);

	struct conv_session s;
	memset(&s, 0, sizeof(s));
	CHECK_EQ_INT(conv_auth(e.st, st.session, th_now_ms(), &s), TH_OK);
	CHECK_STR(s.state, CONV_WAITING);
	CHECK_STR(s.service, SVC_NAME);
	CHECK_STR(s.room, "");
	CHECK_STR(s.pseudonym, st.pseudonym);
	CHECK(s.expires_ms == st.expires_ms);
	char guest[GUESTS_MAX_USER_ID + 1];
	memcpy(guest, s.guest, sizeof(guest));
	CHECK(strncmp(guest, "@guest_", 7) == 0);
	CHECK(strstr(guest, ":test.local") != NULL);
	struct conv_session bogus;
	CHECK_EQ_INT(conv_auth(e.st, "garbage", th_now_ms(), &bogus), TH_ENOTFOUND);
	char other[SEC_TOKEN_LEN + 1];
	CHECK_EQ_INT(sec_token_new(other), TH_OK);
	CHECK_EQ_INT(conv_auth(e.st, other, th_now_ms(), &bogus), TH_ENOTFOUND);

	/* Neither the session token nor the resume code is stored. */
	CHECK_EQ_INT(db_mentions(e.st, STORE_SESSIONS, st.session, NULL), 0);
	CHECK_EQ_INT(db_mentions(e.st, STORE_SESSIONS, st.resume, NULL), 0);
	CHECK_EQ_INT(db_mentions(e.st, STORE_CONVS, st.session, NULL), 0);
	CHECK_EQ_INT(db_mentions(e.st, STORE_CONVS, st.resume, NULL), 0);

	/* The queue: the guest registered and its invites blocked (guests.c,
	 * in the outbox), then the bridge asks for its conversation room,
	 * made by the guest itself, who is never invited (the homeserver would
	 * refuse it); what that room is made of: test_matrix_outbox. */
	json_t *ob = outbox_all(e.st);
	size_t n = 0;
	json_t *reg = find_op(ob, 0, "register", NULL, &n);
	CHECK_EQ_INT(n, 1);
	CHECK(reg && strstr(guest, jsonx_str(reg, "localpart") ? jsonx_str(reg, "localpart") : "~"));
	json_t *blk = find_op(ob, 0, "account_data", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(blk, "type"), "m.invite_permission_config");
	json_decref(ob);
	CHECK_EQ_INT(calls_len(), 1);
	json_t *create = find_op(calls(), 0, "conv_room_create", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(create, "pseudonym"), st.pseudonym);
	CHECK_STR(jsonx_str(create, "service_name"), "Helpline");
	CHECK_STR(jsonx_str(create, "staff_room"), STAFF_ROOM);
	size_t queued = calls_len();

	/* The audit log: consent (which notice, language, how they came) and
	 * the conversation opened; never the invitation token or a secret. */
	json_t *au = audit_all(e.st);
	json_t *consent = audit_find(au, "consent_recorded", guest, &n);
	CHECK_EQ_INT(n, 1);
	json_t *d = json_object_get(consent, "details");
	CHECK_STR(jsonx_str(d, "service"), SVC_NAME);
	CHECK_STR(jsonx_str(d, "notice_version"), "3");
	CHECK_STR(jsonx_str(d, "language"), "en");
	CHECK_STR(jsonx_str(d, "entry"), "invitation");
	json_t *opened = audit_find(au, "conversation_opened", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(json_object_get(opened, "details"), "service"), SVC_NAME);
	audit_find(au, "guest_created", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK(!audit_mentions(au, tok));
	CHECK(!audit_mentions(au, st.session));
	CHECK(!audit_mentions(au, st.resume));
	json_decref(au);

	/* The greeting is the first thing on the page. */
	uint64_t next = 0;
	json_t *ev = feed_of(e.st, guest, 0, &next);
	CHECK_EQ_INT(json_array_size(ev), 1);
	CHECK_STR(jsonx_str(json_array_get(ev, 0), "body"), GREETING);
	CHECK_STR(jsonx_str(json_array_get(ev, 0), "kind"), "notice");
	CHECK_STR(jsonx_str(json_object_get(json_array_get(ev, 0), "from"), "role"), "service");
	CHECK_STR(jsonx_str(json_object_get(json_array_get(ev, 0), "from"), "name"), "Helpline");
	json_decref(ev);

	/* Writing before the room exists: not ready, nothing queued. */
	enum conv_send_result res = CONV_REFUSED;
	CHECK_EQ_INT(conv_send(&env, guest, "L0", "too early", &res, NULL), TH_OK);
	CHECK_EQ_INT(res, CONV_NOT_READY);
	CHECK_EQ_INT(calls_len(), queued);

	/* The room is made: open, the guest invited and joined, staff told. */
	const char *room = "!portal1:test.local";
	room_made(&e, guest, room);
	CHECK_EQ_INT(conv_auth(e.st, st.session, th_now_ms(), &s), TH_OK);
	CHECK_STR(s.state, CONV_OPEN);
	CHECK_STR(s.room, room);
	ob = calls();
	/* no invite of the guest; the guest hands the room to the bot (lowers
	 * itself to 0), then the bot joins, after the guest's lane where the
	 * createRoom ran */
	find_op(ob, queued, "invite", NULL, &n);
	CHECK_EQ_INT(n, 0);
	find_op(ob, queued, "guest_enter", NULL, &n);
	CHECK_EQ_INT(n, 0);
	json_t *lower = find_op(ob, queued, "conv_room_handover", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(lower, "room_id"), room);
	json_t *join = find_op(ob, queued, "join", "@threshold:test.local", &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(join, "room_id"), room);
	CHECK_STR(jsonx_str(join, "after"), guest);
	CHECK(json_array_get(ob, queued) == lower); /* the handover first */
	json_t *told = find_op(ob, queued, "notice", "@threshold:test.local", &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(told, "room_id"), STAFF_ROOM);
	const char *tbody = jsonx_str(told, "body");
	CHECK(tbody && strstr(tbody, st.pseudonym) && strstr(tbody, room));
	queued = calls_len();

	/* Now the guest writes: one send, as the guest, carrying the local id. */
	CHECK_EQ_INT(conv_send(&env, guest, "L1", "Hello, is anyone there?", &res, NULL), TH_OK);
	CHECK_EQ_INT(res, CONV_SENT);
	ob = calls();
	CHECK_EQ_INT(json_array_size(ob), queued + 1);
	json_t *send = find_op(ob, queued, "text", NULL, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(send, "user_id"), guest);
	CHECK_STR(jsonx_str(send, "room_id"), room);
	CHECK_STR(jsonx_str(send, "body"), "Hello, is anyone there?");
	CHECK_STR(jsonx_str(send, "local_id"), "L1");
	queued = calls_len();
	/* The page retries the same message: nothing more is sent. */
	res = CONV_REFUSED;
	CHECK_EQ_INT(conv_send(&env, guest, "L1", "Hello, is anyone there?", &res, NULL), TH_OK);
	CHECK_EQ_INT(res, CONV_SENT);
	CHECK_EQ_INT(calls_len(), queued);
	CHECK_EQ_INT(conv_send(&env, guest, "L2", "Second message", &res, NULL), TH_OK);
	CHECK_EQ_INT(res, CONV_SENT);
	CHECK_EQ_INT(calls_len(), queued + 1);
	queued++;
	CHECK_EQ_INT(conv_send(&env, "@guest_nobody:test.local", "L1", "x", &res, NULL), TH_ENOTFOUND);

	/* Resume on another device: the code as typed, in lower case. */
	char *typed = lower_spaced(st.resume);
	struct conv_started st2;
	memset(&st2, 0, sizeof(st2));
	CHECK_EQ_INT(conv_resume(&env, typed, &st2), TH_OK);
	free(typed);
	CHECK(sec_token_ok(st2.session));
	CHECK(strcmp(st2.session, st.session) != 0);
	/* The code is used up: a new one, shown on the new device. */
	CHECK(sec_resume_normalise(st2.resume, (char[SEC_RESUME_LEN + 1]){0}));
	CHECK(strcmp(st2.resume, st.resume) != 0);
	CHECK_STR(st2.pseudonym, st.pseudonym);
	CHECK_EQ_INT(conv_auth(e.st, st2.session, th_now_ms(), &s), TH_OK);
	CHECK_STR(s.guest, guest);
	CHECK_STR(s.state, CONV_OPEN);
	CHECK_EQ_INT(conv_auth(e.st, st.session, th_now_ms(), &s), TH_OK); /* the first one still works */
	struct conv_started more;
	CHECK_EQ_INT(conv_resume(&env, st.resume, &more), TH_ENOTFOUND); /* the used code is dead */
	{ /* every device's feed says the conversation was continued elsewhere */
		store_txn *ft;
		json_t *evs = NULL;
		uint64_t nx = 0;
		CHECK_EQ_INT(store_txn_begin(e.st, 0, &ft), TH_OK);
		CHECK_EQ_INT(feed_read(ft, guest, 0, &evs, &nx), TH_OK);
		store_txn_abort(ft);
		json_t *last = json_array_get(evs, json_array_size(evs) - 1);
		CHECK_STR(jsonx_str(last, "kind"), "continued");
		CHECK(jsonx_str(last, "body") && strstr(jsonx_str(last, "body"), "another device"));
		json_decref(evs);
	}
	/* Resumes chained with each new code: no device is ever logged out;
	 * past 16 live sessions the resume is refused instead. */
	{
		char code[SEC_RESUME_LEN + 1];
		memcpy(code, st2.resume, sizeof(code));
		int ok = 0, refused = 0;
		for (int i = 0; i < 20; i++) {
			int rc = conv_resume(&env, code, &more);
			if (rc == TH_OK) {
				ok++;
				memcpy(code, more.resume, sizeof(code));
			} else {
				refused += rc == TH_ETOOLARGE;
			}
		}
		CHECK_EQ_INT(ok, 14); /* 16 with the first two */
		CHECK_EQ_INT(refused, 6);
		CHECK_EQ_INT(conv_auth(e.st, st.session, th_now_ms(), &s),
		             TH_OK); /* the phone in the guest's hand */
		CHECK_EQ_INT(conv_auth(e.st, st2.session, th_now_ms(), &s), TH_OK);
	}
	char wrong[SEC_RESUME_LEN + 1];
	CHECK_EQ_INT(sec_resume_new(wrong), TH_OK);
	CHECK_EQ_INT(conv_resume(&env, wrong, &st2), TH_ENOTFOUND);
	CHECK_EQ_INT(conv_resume(&env, "nonsense", &st2), TH_ENOTFOUND);

	/* A session past its expiry is refused, just as it ends. */
	CHECK_EQ_INT(conv_auth(e.st, st.session, st.expires_ms - 1, &s), TH_OK);
	CHECK_EQ_INT(conv_auth(e.st, st.session, st.expires_ms, &s), TH_ENOTFOUND);
	CHECK_EQ_INT(conv_auth(e.st, st.session, st.expires_ms + 3600000ull, &s), TH_ENOTFOUND);

	/* The guest leaves: both sessions are good for erasure only (the
	 * gateway refuses them anything else), the room is left, the page says
	 * so, staff are told, the log records it; writing is refused. */
	CHECK_EQ_INT(conv_leave(&env, guest), TH_OK);
	CHECK_EQ_INT(conv_auth(e.st, st.session, th_now_ms(), &s), TH_OK);
	CHECK_EQ_INT(s.erase_only, 1);
	CHECK_EQ_INT(conv_auth(e.st, st2.session, th_now_ms(), &s), TH_OK);
	CHECK_EQ_INT(s.erase_only, 1);
	ob = calls();
	json_t *leave = find_op(ob, queued, "leave", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(leave, "room_id"), room);
	told = find_op(ob, queued, "notice", "@threshold:test.local", &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(told, "room_id"), room);
	queued = calls_len();
	json_t *c = conv_record(e.st, guest);
	CHECK_STR(jsonx_str(c, "state"), CONV_CLOSED);
	CHECK(json_is_true(json_object_get(c, "erase_only")));
	json_decref(c);
	ev = feed_of(e.st, guest, 0, &next);
	CHECK_STR(jsonx_str(json_array_get(ev, json_array_size(ev) - 1), "kind"), "closed");
	json_decref(ev);
	au = audit_all(e.st);
	json_t *closed = audit_find(au, "conversation_closed", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(closed, "actor"), guest);
	CHECK_STR(jsonx_str(closed, "room"), room);
	json_decref(au);
	CHECK_EQ_INT(conv_send(&env, guest, "L3", "still there?", &res, NULL), TH_OK);
	CHECK_EQ_INT(res, CONV_CLOSED_NOW);
	CHECK_EQ_INT(calls_len(), queued);
	/* Leaving twice: no second leave, no second record. */
	CHECK_EQ_INT(conv_leave(&env, guest), TH_OK);
	CHECK_EQ_INT(calls_len(), queued);
	au = audit_all(e.st);
	audit_find(au, "conversation_closed", guest, &n);
	CHECK_EQ_INT(n, 1);
	json_decref(au);
	CHECK_EQ_INT(conv_leave(&env, "@guest_nobody:test.local"), TH_ENOTFOUND);

	test_env_close(&e);
}

/* The session record of @p token, edited to expire at @p exp. */
static void set_session_expiry(store *st, const char *token, uint64_t exp)
{
	unsigned char key[SEC_HASH_LEN];
	sec_hash("session", token, key);
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(st, 1, &t), TH_OK);
	const void *v;
	size_t vlen;
	CHECK_EQ_INT(store_get(t, STORE_SESSIONS, key, sizeof(key), &v, &vlen), TH_OK);
	json_t *s = json_loadb(v, vlen, 0, NULL);
	CHECK(json_is_object(s));
	json_object_set_new(s, "expires_ms", json_integer((json_int_t)exp));
	char *val = json_dumps(s, JSON_COMPACT);
	CHECK_EQ_INT(store_put(t, STORE_SESSIONS, key, sizeof(key), val, strlen(val), 0), TH_OK);
	free(val);
	json_decref(s);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
}

/* An open safeguarding case (env.case_open) holds an erasure back: nothing
 * is erased or queued but the two notices, the guest can still sign in,
 * and the answer says held (the page's 409). */
static int case_is_open(store_txn *t, const char *guest)
{
	(void)t;
	(void)guest;
	return 1;
}

static void test_conv_erase_held_by_case(void)
{
	struct test_env e;
	struct txn_env env;
	env_init(&e, &env);
	env.case_open = case_is_open;
	char tok[SEC_TOKEN_LEN + 1];
	make_invite(&e, 1, tok);
	struct conv_started st;
	CHECK_EQ_INT(conv_redeem(&env, tok, NULL, "3", "en", &st), TH_OK);
	struct conv_session s;
	CHECK_EQ_INT(conv_auth(e.st, st.session, th_now_ms(), &s), TH_OK);
	room_made(&e, s.guest, "!portal9:test.local");
	size_t queued = calls_len();
	char receipt[CONV_RECEIPT_LEN + 1] = "";
	CHECK_EQ_INT(conv_erase(&env, s.guest, receipt), TH_EEXIST);
	struct conv_session again;
	CHECK_EQ_INT(conv_auth(e.st, st.session, th_now_ms(), &again), TH_OK);
	json_t *cr = conv_record(e.st, s.guest);
	CHECK(cr != NULL);
	json_decref(cr);
	json_t *ob = calls();
	size_t n = 0;
	find_op(ob, queued, "erase", s.guest, &n);
	CHECK_EQ_INT(n, 0);
	find_op(ob, queued, "leave", s.guest, &n);
	CHECK_EQ_INT(n, 0);
	find_op(ob, queued, "notice", "@threshold:test.local", &n);
	CHECK(n >= 1); /* staff in the room (and the safeguarding room, when set) are told */
	test_env_close(&e);
}

static void test_conv_erase(void)
{
	struct test_env e;
	struct txn_env env;
	env_init(&e, &env);
	char tok[SEC_TOKEN_LEN + 1];
	make_invite(&e, 2, tok);
	struct conv_started st, keep;
	CHECK_EQ_INT(conv_redeem(&env, tok, NULL, "3", "en", &st), TH_OK);
	CHECK_EQ_INT(conv_redeem(&env, tok, NULL, "3", "fr", &keep), TH_OK); /* the second use */
	struct conv_session s, ks;
	CHECK_EQ_INT(conv_auth(e.st, st.session, th_now_ms(), &s), TH_OK);
	CHECK_EQ_INT(conv_auth(e.st, keep.session, th_now_ms(), &ks), TH_OK);
	CHECK(strcmp(s.guest, ks.guest) != 0);
	CHECK(strcmp(st.pseudonym, keep.pseudonym) != 0);
	char guest[GUESTS_MAX_USER_ID + 1];
	memcpy(guest, s.guest, sizeof(guest));
	const char *room = "!portal2:test.local";
	room_made(&e, guest, room);
	room_made(&e, ks.guest, "!portal3:test.local");
	enum conv_send_result res;
	CHECK_EQ_INT(conv_send(&env, guest, "L1", "Please delete this later", &res, NULL), TH_OK);
	CHECK_EQ_INT(res, CONV_SENT);

	/* What the homeserver echoed back: the guest's own message, and staff's. */
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	struct feed_entry mine = {.kind = "message",
	                          .role = "self",
	                          .name = st.pseudonym,
	                          .body = "Please delete this later",
	                          .local_id = "L1",
	                          .event_id = "$guestmsg:test.local",
	                          .room_id = room};
	struct feed_entry staff = {.kind = "message",
	                           .role = "staff",
	                           .name = "Sam",
	                           .body = "Of course",
	                           .event_id = "$staffmsg:test.local",
	                           .room_id = room};
	CHECK_EQ_INT(feed_append(t, guest, &mine, NULL), TH_OK);
	CHECK_EQ_INT(feed_append(t, guest, &staff, NULL), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	char *typed = lower_spaced(st.resume);

	size_t queued = calls_len();
	char receipt[CONV_RECEIPT_LEN + 1];
	CHECK_EQ_INT(conv_erase(&env, guest, receipt), TH_OK);
	CHECK_EQ_INT(strlen(receipt), CONV_RECEIPT_LEN);
	/* The receipt tells the job's state, and only what the job says. */
	enum mx_erase_state es = MX_ERASE_NONE;
	fake_erase_now = MX_ERASE_RUNNING;
	CHECK_EQ_INT(conv_erasure_state(&env, receipt, &es), TH_OK);
	CHECK_EQ_INT(es, MX_ERASE_RUNNING);
	fake_erase_now = MX_ERASE_DONE;
	CHECK_EQ_INT(conv_erasure_state(&env, receipt, &es), TH_OK);
	CHECK_EQ_INT(es, MX_ERASE_DONE);
	CHECK_EQ_INT(conv_erasure_state(&env, "ABCD-EFGH-JKLM", &es), TH_ENOTFOUND);

	/* Sessions, resume code, conversation and feed are gone. */
	struct conv_started st2;
	CHECK_EQ_INT(conv_auth(e.st, st.session, th_now_ms(), &s), TH_ENOTFOUND);
	CHECK_EQ_INT(conv_resume(&env, typed, &st2), TH_ENOTFOUND);
	free(typed);
	CHECK(conv_record(e.st, guest) == NULL);
	CHECK_EQ_INT(db_mentions(e.st, STORE_FEED, guest, NULL), 0);
	uint64_t next = 0;
	json_t *ev = feed_of(e.st, guest, 0, &next);
	CHECK_EQ_INT(json_array_size(ev), 0);
	json_decref(ev);
	/* The user record keeps only the id: erased, no pseudonym. */
	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	json_t *u = NULL;
	CHECK_EQ_INT(store_get_json(t, STORE_USERS, guest, &u), TH_OK);
	store_txn_abort(t);
	CHECK_STR(jsonx_str(u, "state"), GUESTS_STATE_ERASED);
	CHECK_STR(jsonx_str(u, "pseudonym"), "");
	CHECK_STR(jsonx_str(u, "kind"), "guest");
	json_decref(u);
	CHECK_EQ_INT(db_mentions(e.st, STORE_USERS, st.pseudonym, NULL), 0);
	/* The queue: staff told, the guest leaves (the conversation was open),
	 * the display name cleared, then the job: the guest's own message (not
	 * staff's) to be redacted by the bot, their room to be purged, the
	 * account steps after the room's lane. */
	json_t *ob = calls();
	size_t n = 0;
	find_op(ob, queued, "redact", NULL, &n);
	CHECK_EQ_INT(n, 0); /* not as the guest: in the job, by the bot */
	json_t *leave = find_op(ob, queued, "leave", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(leave, "room_id"), room);
	json_t *dn = find_op(ob, queued, "displayname", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK(dn && strcmp(jsonx_str(dn, "displayname"), st.pseudonym) != 0);
	find_op(ob, queued, "notice", "@threshold:test.local", &n);
	CHECK_EQ_INT(n, 1);
	json_t *job = find_op(ob, queued, "erase", guest, &n);
	CHECK_EQ_INT(n, 1);
	json_t *evs = json_object_get(job, "events");
	CHECK_EQ_INT(json_array_size(evs), 1);
	CHECK_STR(json_string_value(json_array_get(json_array_get(evs, 0), 0)), room);
	CHECK_STR(json_string_value(json_array_get(json_array_get(evs, 0), 1)), "$guestmsg:test.local");
	CHECK_STR(json_string_value(json_array_get(json_object_get(job, "purge"), 0)), room);
	CHECK_STR(json_string_value(json_array_get(json_object_get(job, "after"), 0)), room);
	CHECK_STR(json_string_value(json_array_get(json_object_get(dn, "after"), 0)), room);
	/* and in that order: notice, leave, display name, the job */
	CHECK(json_array_get(ob, calls_len() - 1) == job);
	CHECK(json_array_get(ob, calls_len() - 2) == dn);
	CHECK(json_array_get(ob, calls_len() - 3) == leave);
	/* The log: data_erased, and the conversation closed as erased. */
	json_t *au = audit_all(e.st);
	audit_find(au, "data_erased", guest, &n);
	CHECK_EQ_INT(n, 1);
	json_t *closed = audit_find(au, "conversation_closed", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(closed, "reason"), "erased");
	json_decref(au);
	/* Erasing again: nothing to erase. */
	CHECK_EQ_INT(conv_erase(&env, guest, receipt), TH_ENOTFOUND);

	/* A message the guest sent just before, echoed after the erasure: it
	 * reaches no feed, and the bot redacts it. */
	{
		static const char content[] = "{\"msgtype\":\"m.text\",\"body\":\"late\"}";
		struct mxev late = {.event_id = "$late:test.local",
		                    .room_id = room,
		                    .type = "m.room.message",
		                    .sender = guest,
		                    .content = {content, sizeof(content) - 1},
		                    .content_is_object = true,
		                    .body = "late",
		                    .msgtype = "m.text"};
		json_t *r = json_pack("{s:s}", "kind", "portal");
		size_t before = calls_len();
		unsigned fed = 0;
		CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
		CHECK_EQ_INT(rooms_user_set(t, room, ROOMS_GUESTS, guest, "join"), TH_OK);
		CHECK_EQ_INT(conv_on_event(&env, t, &late, POL_ROLE_GUEST, POL_ROLE_NONE, r, &fed), TH_OK);
		CHECK_EQ_INT(store_txn_commit(t), TH_OK);
		json_decref(r);
		CHECK_EQ_INT(fed, 1);
		uint64_t nx;
		json_t *none = feed_of(e.st, guest, 0, &nx);
		CHECK_EQ_INT(json_array_size(none), 0);
		json_decref(none);
		json_t *all = calls();
		CHECK_EQ_INT(json_array_size(all), before + 1);
		json_t *last = json_array_get(all, json_array_size(all) - 1);
		CHECK_STR(jsonx_str(last, "op"), "redact");
		CHECK_STR(jsonx_str(last, "event_id"), "$late:test.local");
		CHECK_STR(jsonx_str(last, "room_id"), room);
		CHECK_STR(jsonx_str(last, "user_id"), e.cfg.bot_user_id);
		/* ... decided by policy, and on the record. */
		json_t *log = audit_all(e.st);
		size_t nrec = 0;
		json_t *rec = audit_find(log, "data_erased", guest, &nrec);
		CHECK(nrec >= 2); /* the erasure itself, and the late message */
		int late_recorded = 0;
		size_t k;
		json_t *x;
		json_array_foreach(log, k, x)
		{
			const char *why = jsonx_str(x, "reason");
			if (why && strcmp(why, "erased_guest_late_message") == 0 &&
			    strcmp(jsonx_str(json_object_get(x, "details"), "event_id"),
			           "$late:test.local") == 0)
				late_recorded = 1;
		}
		CHECK(late_recorded);
		(void)rec;
		json_decref(log);
	}

	/* The other guest is untouched. */
	CHECK_EQ_INT(conv_auth(e.st, keep.session, th_now_ms(), &ks), TH_OK);
	CHECK_STR(ks.state, CONV_OPEN);
	ev = feed_of(e.st, ks.guest, 0, &next);
	CHECK_EQ_INT(json_array_size(ev), 1);
	json_decref(ev);

	/* A session whose stored expiry has passed is refused. */
	set_session_expiry(e.st, keep.session, th_now_ms() - 1000);
	CHECK_EQ_INT(conv_auth(e.st, keep.session, th_now_ms(), &ks), TH_ENOTFOUND);
	set_session_expiry(e.st, keep.session, th_now_ms() + 60000);
	CHECK_EQ_INT(conv_auth(e.st, keep.session, th_now_ms(), &ks), TH_OK);

	test_env_close(&e);
}

/* Set the conversation of @p guest to expire at @p exp. */
static void set_conv_expiry(store *st, const char *guest, uint64_t exp)
{
	store_txn *t;
	json_t *c = NULL;
	CHECK_EQ_INT(store_txn_begin(st, 1, &t), TH_OK);
	CHECK_EQ_INT(store_get_json(t, STORE_CONVS, guest, &c), TH_OK);
	json_object_set_new(c, "expires_ms", json_integer((json_int_t)exp));
	CHECK_EQ_INT(store_put_json(t, STORE_CONVS, guest, c), TH_OK);
	json_decref(c);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
}

static void test_conv_expire(void)
{
	struct test_env e;
	struct txn_env env;
	env_init(&e, &env);
	/* Two conversations through the public entry (no invitation). */
	struct conv_started old, fresh;
	CHECK_EQ_INT(conv_redeem(&env, NULL, SVC_NAME, "3", "en", &old), TH_OK);
	CHECK_EQ_INT(conv_redeem(&env, NULL, SVC_NAME, "3", "en", &fresh), TH_OK);
	struct conv_started none;
	CHECK_EQ_INT(conv_redeem(&env, NULL, "no-such-service", "3", "en", &none), TH_ENOTFOUND);
	struct conv_session os, fs;
	CHECK_EQ_INT(conv_auth(e.st, old.session, th_now_ms(), &os), TH_OK);
	CHECK_EQ_INT(conv_auth(e.st, fresh.session, th_now_ms(), &fs), TH_OK);
	json_t *au = audit_all(e.st);
	size_t n = 0;
	json_t *consent = audit_find(au, "consent_recorded", os.guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(json_object_get(consent, "details"), "entry"), "public");
	json_decref(au);
	/* The conversation lives conversation_expiry_days. */
	json_t *c = conv_record(e.st, os.guest);
	uint64_t exp = (uint64_t)json_integer_value(json_object_get(c, "expires_ms"));
	uint64_t created = (uint64_t)json_integer_value(json_object_get(c, "created_ms"));
	CHECK(exp == created + 30ull * 86400000);
	json_decref(c);
	room_made(&e, os.guest, "!old:test.local");

	/* Nothing is due yet. */
	size_t expired = 99;
	CHECK_EQ_INT(conv_expire(&env, th_now_ms(), &expired), TH_OK);
	CHECK_EQ_INT(expired, 0);

	set_conv_expiry(e.st, os.guest, th_now_ms() - 1000);
	size_t queued = calls_len();
	CHECK_EQ_INT(conv_expire(&env, th_now_ms(), &expired), TH_OK);
	CHECK_EQ_INT(expired, 1);
	/* The old one is gone: record, sessions, feed; the guest leaves its room. */
	CHECK(conv_record(e.st, os.guest) == NULL);
	CHECK_EQ_INT(conv_auth(e.st, old.session, th_now_ms(), &os), TH_ENOTFOUND);
	char *typed = lower_spaced(old.resume);
	struct conv_started st2;
	CHECK_EQ_INT(conv_resume(&env, typed, &st2), TH_ENOTFOUND);
	free(typed);
	CHECK_EQ_INT(db_mentions(e.st, STORE_FEED, os.guest, NULL), 0);
	CHECK_EQ_INT(db_mentions(e.st, STORE_SESSIONS, os.guest, NULL), 0);
	json_t *leave = find_op(calls(), queued, "leave", os.guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(leave, "room_id"), "!old:test.local");
	au = audit_all(e.st);
	json_t *closed = audit_find(au, "conversation_closed", os.guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(closed, "actor"), "threshold");
	json_decref(au);

	/* The fresh one is untouched. */
	CHECK_EQ_INT(conv_auth(e.st, fresh.session, th_now_ms(), &fs), TH_OK);
	CHECK_STR(fs.state, CONV_WAITING);
	c = conv_record(e.st, fs.guest);
	CHECK(c != NULL);
	json_decref(c);
	uint64_t next = 0;
	json_t *ev = feed_of(e.st, fs.guest, 0, &next);
	CHECK_EQ_INT(json_array_size(ev), 1);
	json_decref(ev);
	/* And once it is due (still waiting for its room), it ends too. */
	CHECK_EQ_INT(conv_expire(&env, th_now_ms(), &expired), TH_OK);
	CHECK_EQ_INT(expired, 0);
	CHECK_EQ_INT(conv_expire(&env, th_now_ms() + 31ull * 86400000, &expired), TH_OK);
	CHECK_EQ_INT(expired, 1);
	CHECK(conv_record(e.st, fs.guest) == NULL);
	CHECK_EQ_INT(conv_auth(e.st, fresh.session, th_now_ms(), &fs), TH_ENOTFOUND);

	test_env_close(&e);
}

/* The daemon's implementation of the bridge's Matrix interface: each call is
 * one outbox action of the shape outbox.h documents, in the lane and order
 * matrix.h promises, part of the caller's commit. */
static void test_matrix_outbox(void)
{
	struct test_env e;
	struct txn_env env;
	env_init(&e, &env);
	struct matrix_outbox mo;
	matrix_outbox_init(&mo, &e.cfg);
	const struct matrix *mx = &mo.mx;
	const char *guest = "@guest_0123456789abcdef0123456789abcdef:test.local";
	const char *bot = "@threshold:test.local";
	const char *room = "!portal9:test.local";
	store_txn *t;

	/* Nothing reaches the outbox from a transaction that is aborted. */
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(mx->ops->leave(mx->ctx, t, room, guest), TH_OK);
	store_txn_abort(t);
	CHECK_EQ_INT(outbox_len(e.st), 0);

	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(mx->ops->conv_room_create(mx->ctx, t, guest, "Blue Otter", "Helpline", STAFF_ROOM),
	             TH_OK);
	CHECK_EQ_INT(mx->ops->conv_room_handover(mx->ctx, t, room, guest), TH_OK);
	CHECK_EQ_INT(mx->ops->join(mx->ctx, t, room, bot, guest), TH_OK);
	CHECK_EQ_INT(mx->ops->room_name(mx->ctx, t, room, guest, "Blue Otter"), TH_OK);
	CHECK_EQ_INT(mx->ops->notice(mx->ctx, t, STAFF_ROOM, bot, "waiting", "$cmd:test.local"), TH_OK);
	CHECK_EQ_INT(mx->ops->text(mx->ctx, t, room, guest, "Hello", "L1"), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	json_t *ob = outbox_all(e.st);
	CHECK_EQ_INT(json_array_size(ob), 6);
	size_t n = 0;

	/* The guest's room: made by the guest, in the guest's lane (after its
	 * register), of the conversation template, the bot invited. */
	json_t *create = find_op(ob, 0, "create_room", NULL, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(create, "conversation"), guest);
	CHECK_STR(jsonx_str(create, "user_id"), guest);
	CHECK_STR(jsonx_str(create, "kind"), "portal");
	CHECK_STR(jsonx_str(create, "lane"), guest);
	json_t *content = json_object_get(create, "content");
	CHECK(json_is_object(content));
	CHECK_STR(jsonx_str(content, "room_version"), "10");
	CHECK_STR(json_string_value(json_array_get(json_object_get(content, "invite"), 0)), bot);
	CHECK_EQ_INT(json_array_size(json_object_get(content, "invite")), 1);
	json_t *pl_users = json_object_get(json_object_get(content, "power_level_content_override"), "users");
	CHECK_EQ_INT(json_integer_value(json_object_get(pl_users, bot)), 100);
	CHECK_EQ_INT(json_integer_value(json_object_get(pl_users, guest)), 100); /* until it lowers itself */
	CHECK_STR(jsonx_str(content, "preset"), "private_chat");
	CHECK(strstr(jsonx_str(content, "name") ? jsonx_str(content, "name") : "", "Blue Otter") != NULL);
	char *dump = json_dumps(content, JSON_COMPACT);
	CHECK(dump && strstr(dump, STAFF_ROOM) && strstr(dump, "restricted"));
	free(dump);

	/* The guest lowers itself to 0, after its lane, then the bot joins. */
	json_t *lower = find_op(ob, 0, "state", guest, &n);
	CHECK_EQ_INT(n, 2); /* and its name in the room */
	CHECK_STR(jsonx_str(lower, "room_id"), room);
	CHECK_STR(jsonx_str(lower, "type"), "m.room.power_levels");
	CHECK_STR(jsonx_str(lower, "state_key"), "");
	CHECK_STR(json_string_value(json_array_get(json_object_get(lower, "after"), 0)), guest);
	json_t *lu = json_object_get(json_object_get(lower, "content"), "users");
	CHECK(json_is_integer(json_object_get(lu, guest)));
	CHECK_EQ_INT(json_integer_value(json_object_get(lu, guest)), 0);
	CHECK_EQ_INT(json_integer_value(json_object_get(lu, bot)), 100);
	json_t *join = find_op(ob, 0, "join", bot, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(join, "room_id"), room);
	CHECK_STR(json_string_value(json_array_get(json_object_get(join, "after"), 0)), guest);
	json_t *named = json_array_get(ob, 3);
	CHECK_STR(jsonx_str(named, "type"), "m.room.member");
	CHECK_STR(jsonx_str(named, "state_key"), guest);
	CHECK_STR(jsonx_str(json_object_get(named, "content"), "displayname"), "Blue Otter");
	CHECK_STR(jsonx_str(json_object_get(named, "content"), "membership"), "join");

	/* A notice answering a command; a guest's message with its local id. */
	json_t *told = find_op(ob, 0, "send", bot, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(told, "room_id"), STAFF_ROOM);
	CHECK_STR(jsonx_str(told, "type"), "m.room.message");
	CHECK_STR(jsonx_str(json_object_get(told, "content"), "msgtype"), "m.notice");
	CHECK_STR(jsonx_str(json_object_get(json_object_get(json_object_get(told, "content"), "m.relates_to"),
	                                    "m.in_reply_to"),
	                    "event_id"),
	          "$cmd:test.local");
	json_t *send = find_op(ob, 0, "send", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(send, "room_id"), room);
	content = json_object_get(send, "content");
	CHECK_STR(jsonx_str(content, "msgtype"), "m.text");
	CHECK_STR(jsonx_str(content, "body"), "Hello");
	CHECK_STR(jsonx_str(content, "org.threshold.local_id"), "L1");
	CHECK(json_object_get(content, "m.relates_to") == NULL);
	json_decref(ob);

	/* An erasure's actions: the profile change and the deactivation wait
	 * for the rooms' lanes. */
	const char *after[] = {room, "!group:test.local"};
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(mx->ops->redact(mx->ctx, t, room, guest, "$m:test.local", "asked"), TH_OK);
	CHECK_EQ_INT(mx->ops->displayname(mx->ctx, t, guest, "Former guest", after, 2), TH_OK);
	CHECK_EQ_INT(mx->ops->deactivate(mx->ctx, t, guest, after, 2), TH_OK);
	CHECK_EQ_INT(mx->ops->invite(mx->ctx, t, room, bot, "@colleague:test.local"), TH_OK);
	CHECK_EQ_INT(mx->ops->guest_enter(mx->ctx, t, "!group:test.local", bot, guest), TH_OK);
	CHECK_EQ_INT(
	        mx->ops->qr_image(mx->ctx, t, STAFF_ROOM, bot, "https://chat.test.local/#x", "$c:test.local"),
	        TH_OK);
	CHECK_EQ_INT(store_put(t, STORE_BLOBS, "0123456789abcdef0123456789abcdef", 32, "xy", 2, 0), TH_OK);
	struct mx_media m = {.room_id = room,
	                     .user_id = guest,
	                     .blob = "0123456789abcdef0123456789abcdef",
	                     .name = "a.png",
	                     .mimetype = "image/png",
	                     .msgtype = "m.image",
	                     .local_id = "L2",
	                     .size = 2};
	CHECK_EQ_INT(mx->ops->send_media(mx->ctx, t, &m), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	ob = outbox_all(e.st);
	CHECK_EQ_INT(json_array_size(ob), 13);
	json_t *red = find_op(ob, 6, "redact", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(red, "event_id"), "$m:test.local");
	CHECK_STR(jsonx_str(red, "reason"), "asked");
	json_t *dn = find_op(ob, 6, "displayname", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(dn, "displayname"), "Former guest");
	CHECK_EQ_INT(json_array_size(json_object_get(dn, "after")), 2);
	CHECK_STR(json_string_value(json_array_get(json_object_get(dn, "after"), 1)), "!group:test.local");
	json_t *deact = find_op(ob, 6, "deactivate", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(json_string_value(json_array_get(json_object_get(deact, "after"), 0)), room);
	json_t *inv = find_op(ob, 6, "invite", bot, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(inv, "target"), "@colleague:test.local");
	json_t *enter = find_op(ob, 6, "guest_enter", bot, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(enter, "target"), guest);
	CHECK_STR(json_string_value(json_array_get(json_object_get(enter, "after"), 0)), guest);
	json_t *qr = find_op(ob, 6, "qr_image", bot, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(qr, "reply_to"), "$c:test.local");
	json_t *media = find_op(ob, 6, "send_media", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(media, "msgtype"), "m.image");
	CHECK_STR(jsonx_str(media, "local_id"), "L2");
	CHECK_EQ_INT(json_integer_value(json_object_get(media, "size")), 2);
	json_decref(ob);

	/* A call missing an id is refused, and queues nothing. */
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK(mx->ops->leave(mx->ctx, t, room, NULL) != TH_OK);
	store_txn_abort(t);
	CHECK_EQ_INT(outbox_len(e.st), 13);
	test_env_close(&e);
}

/* Notices the bot sent the staff room so far; @p last (borrowed): the newest. */
static size_t staff_notices(json_t **last)
{
	size_t n = 0;
	for (size_t i = 0; i < calls_len(); i++) {
		json_t *c = json_array_get(calls(), i);
		const char *op = jsonx_str(c, "op"), *room = jsonx_str(c, "room_id");
		if (op && room && strcmp(op, "notice") == 0 && strcmp(room, STAFF_ROOM) == 0) {
			n++;
			if (last)
				*last = c;
		}
	}
	return n;
}

/* A flood of guests is one "waiting" line a minute for staff: the first is
 * told at once, the others held and named in one grouped notice a minute
 * later, up to 10 a notice, the rest in the next. */
static void test_waiting_grouped(void)
{
	struct test_env e;
	struct txn_env env;
	env_init(&e, &env);
	e.cfg.gw_waiting_notice_s = 60; /* the default */
	size_t posted = 0;
	for (int i = 0; i < 13; i++) {
		struct conv_started st;
		struct conv_session s;
		CHECK_EQ_INT(conv_redeem(&env, NULL, SVC_NAME, "3", "en", &st), TH_OK);
		CHECK_EQ_INT(conv_auth(e.st, st.session, th_now_ms(), &s), TH_OK);
		char room[64];
		snprintf(room, sizeof(room), "!wait%d:test.local", i);
		room_made(&e, s.guest, room);
	}
	CHECK_EQ_INT(staff_notices(NULL), 1); /* only the first, at once */
	/* ... announced only once its room's set-up has run (matrix.h) */
	json_t *first = NULL;
	staff_notices(&first);
	CHECK_STR(json_string_value(json_array_get(json_object_get(first, "after"), 0)), "!wait0:test.local");
	uint64_t now = th_now_ms();
	CHECK_EQ_INT(conv_waiting_flush(&env, now + 1000, &posted), TH_OK);
	CHECK_EQ_INT(posted, 0); /* not within the minute */
	CHECK_EQ_INT(conv_waiting_flush(&env, now + 61000, &posted), TH_OK);
	CHECK_EQ_INT(posted, 1);
	json_t *last = NULL;
	CHECK_EQ_INT(staff_notices(&last), 2);
	const char *body = jsonx_str(last, "body");
	CHECK(body && strstr(body, "12 people are waiting"));
	CHECK(body && strstr(body, "!wait1:test.local") && strstr(body, "!wait10:test.local"));
	CHECK(body && !strstr(body, "!wait11:test.local") &&
	      strstr(body, "2 more, named in the next notice"));
	CHECK_EQ_INT(json_array_size(json_object_get(last, "after")), 10); /* each room named */
	/* the last two a minute after that; then nothing is left */
	CHECK_EQ_INT(conv_waiting_flush(&env, now + 62000, &posted), TH_OK);
	CHECK_EQ_INT(posted, 0);
	CHECK_EQ_INT(conv_waiting_flush(&env, now + 122000, &posted), TH_OK);
	CHECK_EQ_INT(posted, 1);
	CHECK_EQ_INT(staff_notices(&last), 3);
	body = jsonx_str(last, "body");
	CHECK(body && strstr(body, "!wait11:test.local") && strstr(body, "!wait12:test.local"));
	CHECK_EQ_INT(conv_waiting_flush(&env, now + 300000, &posted), TH_OK);
	CHECK_EQ_INT(posted, 0);
	/* waiting_notice_seconds 0: each one at once, on its own */
	e.cfg.gw_waiting_notice_s = 0;
	for (int i = 0; i < 3; i++) {
		struct conv_started st;
		struct conv_session s;
		CHECK_EQ_INT(conv_redeem(&env, NULL, SVC_NAME, "3", "en", &st), TH_OK);
		CHECK_EQ_INT(conv_auth(e.st, st.session, th_now_ms(), &s), TH_OK);
		char room[64];
		snprintf(room, sizeof(room), "!now%d:test.local", i);
		size_t mark = staff_notices(NULL);
		room_made(&e, s.guest, room);
		CHECK_EQ_INT(staff_notices(&last), mark + 1);
		body = jsonx_str(last, "body");
		CHECK(body && strstr(body, s.pseudonym) && strstr(body, room) && strstr(body, "is waiting"));
	}
	test_env_close(&e);
}

/* Edit conversation record of @p guest: @p key set to @p v (stolen). */
static void conv_set(store *st, const char *guest, const char *key, json_t *v)
{
	store_txn *t;
	json_t *c = NULL;
	CHECK_EQ_INT(store_txn_begin(st, 1, &t), TH_OK);
	CHECK_EQ_INT(store_get_json(t, STORE_CONVS, guest, &c), TH_OK);
	json_object_set_new(c, key, v);
	CHECK_EQ_INT(store_put_json(t, STORE_CONVS, guest, c), TH_OK);
	json_decref(c);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
}

/* A guest with an open conversation in @p room; their user id in @p guest. */
static void open_guest(struct test_env *e, struct txn_env *env, const char *room, char *guest)
{
	char tok[SEC_TOKEN_LEN + 1];
	make_invite(e, 1, tok);
	struct conv_started st;
	struct conv_session s;
	CHECK_EQ_INT(conv_redeem(env, tok, NULL, "3", "en", &st), TH_OK);
	CHECK_EQ_INT(conv_auth(e->st, st.session, th_now_ms(), &s), TH_OK);
	memcpy(guest, s.guest, GUESTS_MAX_USER_ID + 1);
	room_made(e, guest, room);
}

/* gateway.guest_bytes_per_hour, outbox.max_pending_guest,
 * gateway.max_blob_bytes_held: past each, nothing is kept or queued and the
 * guest is told how long to wait; the hourly budget refills. */
static void test_budgets(void)
{
	struct test_env e;
	struct txn_env env;
	env_init(&e, &env);
	char guest[GUESTS_MAX_USER_ID + 1];
	open_guest(&e, &env, "!budget:test.local", guest);
	e.cfg.gw_guest_bytes_per_hour = 65536;
	char *big = xmalloc(40001);
	memset(big, 'x', 40000);
	big[40000] = '\0';
	enum conv_send_result res = CONV_REFUSED;
	uint64_t retry = 0;
	CHECK_EQ_INT(conv_send(&env, guest, "B1", big, &res, &retry), TH_OK);
	CHECK_EQ_INT(res, CONV_SENT);
	size_t queued = calls_len();
	/* 25536 bytes left: 40000 more is over, about 13 minutes to wait */
	CHECK_EQ_INT(conv_send(&env, guest, "B2", big, &res, &retry), TH_OK);
	CHECK_EQ_INT(res, CONV_OVER_BUDGET);
	CHECK(retry > 700000 && retry < 900000);
	CHECK_EQ_INT(calls_len(), queued);
	/* a short one still fits */
	CHECK_EQ_INT(conv_send(&env, guest, "B3", "short", &res, &retry), TH_OK);
	CHECK_EQ_INT(res, CONV_SENT);
	queued = calls_len();
	/* an hour later the budget is whole again */
	conv_set(e.st, guest, "bytes_budget",
	         json_pack("{s:i, s:I}", "left", 0, "at_ms", (json_int_t)(th_now_ms() - 3600000)));
	CHECK_EQ_INT(conv_send(&env, guest, "B2", big, &res, &retry), TH_OK);
	CHECK_EQ_INT(res, CONV_SENT);
	CHECK_EQ_INT(calls_len(), queued + 1);
	queued = calls_len();
	free(big);

	/* The outbox as long as the cap allows: the guest waits (503). */
	e.cfg.gw_guest_bytes_per_hour = 0;
	e.cfg.outbox_max_pending_guest = (unsigned)outbox_len(e.st);
	CHECK(e.cfg.outbox_max_pending_guest > 0);
	retry = 0;
	CHECK_EQ_INT(conv_send(&env, guest, "B4", "hello", &res, &retry), TH_OK);
	CHECK_EQ_INT(res, CONV_BUSY);
	CHECK(retry > 0);
	CHECK_EQ_INT(calls_len(), queued);
	e.cfg.outbox_max_pending_guest += 1;
	CHECK_EQ_INT(conv_send(&env, guest, "B4", "hello", &res, &retry), TH_OK);
	CHECK_EQ_INT(res, CONV_SENT);
	e.cfg.outbox_max_pending_guest = 0;

	/* Files held for upload: past the cap, the next upload waits. */
	static const struct media_kind png = {"image/png", "m.image", "png", "Picture"};
	unsigned char *pic = xcalloc(1, 20000);
	e.cfg.gw_max_blob_bytes_held = 1;
	CHECK_EQ_INT(conv_send_media(&env, guest, "F1", &png, pic, 20000, &res, &retry), TH_OK);
	CHECK_EQ_INT(res, CONV_SENT);
	queued = calls_len();
	retry = 0;
	CHECK_EQ_INT(conv_send_media(&env, guest, "F2", &png, pic, 20000, &res, &retry), TH_OK);
	CHECK_EQ_INT(res, CONV_BUSY);
	CHECK(retry > 0);
	CHECK_EQ_INT(calls_len(), queued);
	e.cfg.gw_max_blob_bytes_held = 1u << 20;
	CHECK_EQ_INT(conv_send_media(&env, guest, "F2", &png, pic, 20000, &res, &retry), TH_OK);
	CHECK_EQ_INT(res, CONV_SENT);

	/* The conversation's bytes in all (gateway.conversation_bytes_total):
	 * counted in its record; past it, refused for good, nothing queued. */
	json_t *rec = conv_record(e.st, guest);
	json_int_t total = json_integer_value(json_object_get(rec, "bytes_total"));
	json_decref(rec);
	CHECK(total >= 2 * 40000 + 2 * 20000); /* B1, B2, F1, F2 and the short ones */
	e.cfg.gw_conversation_bytes_total = (size_t)total + 20000 + 100;
	CHECK_EQ_INT(conv_send_media(&env, guest, "F3", &png, pic, 20000, &res, &retry), TH_OK);
	CHECK_EQ_INT(res, CONV_SENT);
	queued = calls_len();
	CHECK_EQ_INT(conv_send_media(&env, guest, "F4", &png, pic, 20000, &res, &retry), TH_OK);
	CHECK_EQ_INT(res, CONV_OVER_TOTAL);
	CHECK_EQ_INT(conv_send(&env, guest, "B5",
	                       "a little more than a hundred bytes, which is more than the "
	                       "hundred bytes this conversation has left in all",
	                       &res, &retry),
	             TH_OK);
	CHECK_EQ_INT(res, CONV_OVER_TOTAL);
	CHECK_EQ_INT(calls_len(), queued);
	CHECK_EQ_INT(conv_send(&env, guest, "B6", "fits", &res, &retry), TH_OK);
	CHECK_EQ_INT(res, CONV_SENT);
	e.cfg.gw_conversation_bytes_total = 0;
	free(pic);

	/* Headroom: past the guests' share of the map, a guest's writes are
	 * refused as if the store were full; at 95% of this test's map, not. */
	store_txn *t;
	size_t used = 0, map = 0;
	CHECK_EQ_INT(store_usage_live(e.st, &used, &map), TH_OK);
	CHECK(used > 0 && used < map);
	e.cfg.guest_share_percent = 95;
	CHECK_EQ_INT(conv_guest_headroom(&env), TH_OK);
	/* Fill to past 10% (the least share a config may give), and past it
	 * guests wait; deleted again, the free list counts as room. */
	unsigned char *filler = xcalloc(1, map / 8);
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(store_put(t, STORE_META, "filler", 6, filler, map / 8, 0), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	free(filler);
	e.cfg.guest_share_percent = 10;
	CHECK_EQ_INT(conv_guest_headroom(&env), TH_EFULL);
	queued = calls_len();
	CHECK_EQ_INT(conv_send(&env, guest, "B5", "hello", &res, &retry), TH_EFULL);
	CHECK_EQ_INT(calls_len(), queued);
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(store_del(t, STORE_META, "filler", 6), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	CHECK_EQ_INT(store_usage_live(e.st, &used, &map), TH_OK);
	CHECK(used * 10 < map);
	CHECK_EQ_INT(conv_send(&env, guest, "B5", "hello", &res, &retry), TH_OK);
	CHECK_EQ_INT(res, CONV_SENT);
	test_env_close(&e);
}

/* A guest's refused sends: the first recorded, then at most one record a
 * minute carrying the count of refusals since the last one. */
static void test_refusals_counted(void)
{
	struct test_env e;
	struct txn_env env;
	env_init(&e, &env);
	char guest[GUESTS_MAX_USER_ID + 1];
	const char *room = "!refused:test.local";
	open_guest(&e, &env, room, guest);
	/* The guest is no longer in the room (staff's doing, seen before the
	 * conversation closed): policy refuses their sends. */
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(rooms_user_set(t, room, ROOMS_GUESTS, guest, "leave"), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);

	enum conv_send_result res = CONV_SENT;
	char lid[16];
	for (int i = 0; i < 200; i++) {
		snprintf(lid, sizeof(lid), "R%d", i);
		CHECK_EQ_INT(conv_send(&env, guest, lid, "let me in", &res, NULL), TH_OK);
		CHECK_EQ_INT(res, CONV_REFUSED);
	}
	json_t *au = audit_all(e.st);
	size_t n = 0;
	json_t *first = audit_find(au, "contact_blocked", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(first, "details"), "count")), 1);
	json_decref(au);
	/* A minute on: the next refusal is recorded with the 199 held back. */
	json_t *c = conv_record(e.st, guest);
	json_t *ref = json_deep_copy(json_object_get(c, "refusals"));
	json_decref(c);
	CHECK_EQ_INT(json_integer_value(json_object_get(ref, "count")), 199);
	json_object_set_new(ref, "at_ms", json_integer((json_int_t)(th_now_ms() - 61000)));
	conv_set(e.st, guest, "refusals", ref);
	CHECK_EQ_INT(conv_send(&env, guest, "R200", "let me in", &res, NULL), TH_OK);
	CHECK_EQ_INT(res, CONV_REFUSED);
	au = audit_all(e.st);
	audit_find(au, "contact_blocked", guest, &n);
	CHECK_EQ_INT(n, 2);
	size_t i;
	json_t *rec;
	json_int_t last = 0;
	json_array_foreach(au, i, rec)
	{
		if (strcmp(jsonx_str(rec, "kind") ? jsonx_str(rec, "kind") : "", "contact_blocked") == 0)
			last = json_integer_value(json_object_get(json_object_get(rec, "details"), "count"));
	}
	CHECK_EQ_INT(last, 200);
	json_decref(au);
	/* and the one after it, within the minute, is only counted */
	CHECK_EQ_INT(conv_send(&env, guest, "R201", "let me in", &res, NULL), TH_OK);
	au = audit_all(e.st);
	audit_find(au, "contact_blocked", guest, &n);
	CHECK_EQ_INT(n, 2);
	json_decref(au);
	test_env_close(&e);
}

/* Staff kick (or ban) a guest from their own conversation room: it closes,
 * every session and the resume code end, the page's feed says so, and
 * nothing more is asked of the homeserver for the guest.  A guest's own
 * leave, and staff leaving, do not close it. */
static void test_staff_removes_guest(void)
{
	const char *memberships[] = {"leave", "ban"};
	for (int k = 0; k < 2; k++) {
		struct test_env e;
		struct txn_env env;
		env_init(&e, &env);
		char tok[SEC_TOKEN_LEN + 1];
		make_invite(&e, 1, tok);
		struct conv_started st;
		struct conv_session s;
		CHECK_EQ_INT(conv_redeem(&env, tok, NULL, "3", "en", &st), TH_OK);
		CHECK_EQ_INT(conv_auth(e.st, st.session, th_now_ms(), &s), TH_OK);
		char guest[GUESTS_MAX_USER_ID + 1];
		memcpy(guest, s.guest, sizeof(guest));
		const char *room = "!kick:test.local";
		room_made(&e, guest, room);
		json_t *r = NULL;
		store_txn *t;
		CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
		CHECK_EQ_INT(store_get_json(t, STORE_ROOMS, room, &r), TH_OK);
		store_txn_abort(t);

		/* A kick of someone else by the guest's own hand is not it: the
		 * guest leaving themselves goes through conv_leave. */
		const char *content = k ? "{\"membership\":\"ban\"}" : "{\"membership\":\"leave\"}";
		struct mxev self = {.event_id = "$self",
		                    .room_id = room,
		                    .type = "m.room.member",
		                    .sender = guest,
		                    .state_key = guest,
		                    .content = {content, strlen(content)},
		                    .content_is_object = true,
		                    .membership = memberships[k]};
		unsigned fed = 0;
		CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
		CHECK_EQ_INT(conv_on_event(&env, t, &self, POL_ROLE_GUEST, POL_ROLE_GUEST, r, &fed), TH_OK);
		CHECK_EQ_INT(store_txn_commit(t), TH_OK);
		CHECK_EQ_INT(conv_auth(e.st, st.session, th_now_ms(), &s), TH_OK);
		CHECK_STR(s.state, CONV_OPEN);

		size_t queued = calls_len();
		struct mxev kick = self;
		kick.event_id = "$kick";
		kick.sender = "@staff:test.local";
		fed = 0;
		CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
		CHECK_EQ_INT(conv_on_event(&env, t, &kick, POL_ROLE_STAFF, POL_ROLE_GUEST, r, &fed), TH_OK);
		CHECK_EQ_INT(store_txn_commit(t), TH_OK);
		CHECK(fed > 0); /* the gateway's waiting polls are woken */
		/* closed; the sessions and the resume code are good for erasure only */
		json_t *c = conv_record(e.st, guest);
		CHECK_STR(jsonx_str(c, "state"), CONV_CLOSED);
		json_decref(c);
		CHECK_EQ_INT(conv_auth(e.st, st.session, th_now_ms(), &s), TH_OK);
		CHECK_EQ_INT(s.erase_only, 1);
		/* the page's feed: the closed entry it shows as closed */
		json_t *last = last_entry(e.st, guest);
		CHECK_STR(jsonx_str(last, "kind"), "closed");
		json_decref(last);
		struct conv_started again;
		CHECK_EQ_INT(conv_resume(&env, st.resume, &again), TH_OK);
		CHECK_EQ_INT(conv_auth(e.st, again.session, th_now_ms(), &s), TH_OK);
		CHECK_EQ_INT(s.erase_only, 1);
		/* no leave queued for a guest already out; the close recorded */
		size_t n = 0;
		find_op(calls(), queued, "leave", guest, &n);
		CHECK_EQ_INT(n, 0);
		json_t *au = audit_all(e.st);
		json_t *closed = audit_find(au, "conversation_closed", guest, &n);
		CHECK_EQ_INT(n, 1);
		CHECK_STR(jsonx_str(closed, "actor"), "@staff:test.local");
		json_decref(au);
		/* sends now get "closed" */
		enum conv_send_result res = CONV_SENT;
		CHECK_EQ_INT(conv_send(&env, guest, "K1", "hello?", &res, NULL), TH_OK);
		CHECK_EQ_INT(res, CONV_CLOSED_NOW);
		/* the same event again changes nothing */
		uint64_t next = 0;
		json_t *before = feed_of(e.st, guest, 0, &next);
		CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
		CHECK_EQ_INT(conv_on_event(&env, t, &kick, POL_ROLE_STAFF, POL_ROLE_GUEST, r, &fed), TH_OK);
		CHECK_EQ_INT(store_txn_commit(t), TH_OK);
		json_t *after = feed_of(e.st, guest, 0, &next);
		CHECK_EQ_INT(json_array_size(after), json_array_size(before));
		json_decref(before);
		json_decref(after);
		json_decref(r);
		test_env_close(&e);
	}
}

/* A staff display name with bidi controls (U+202E turns the rest of the
 * line round), isolates, marks and control characters reaches the guest
 * without them: in the "joined" notice and on each message. */
static void test_staff_names_cleaned(void)
{
	struct test_env e;
	struct txn_env env;
	struct conv_session a, b;
	json_t *r = two_guests_in_a_group(&e, &env, &a, &b);
	const char *room = "!group:test.local", *staff = "@staff:test.local";
	const char *content = "{\"membership\":\"join\",\"displayname\":"
	                      "\"Dr\\u202e Ann\\u200f\\u2067 Lee\\u2069\\u061c\\tTeam\\u202a\\u0001\"}";
	struct mxev join = {.event_id = "$join",
	                    .room_id = room,
	                    .type = "m.room.member",
	                    .sender = staff,
	                    .state_key = staff,
	                    .content = {content, strlen(content)},
	                    .content_is_object = true,
	                    .membership = "join"};
	store_txn *t;
	unsigned fed = 0;
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(conv_on_event(&env, t, &join, POL_ROLE_STAFF, POL_ROLE_STAFF, r, &fed), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	json_t *x = last_entry(e.st, a.guest);
	CHECK_STR(jsonx_str(x, "body"), "Dr Ann Lee Team has joined the conversation.");
	json_decref(x);
	struct mxev ev = message_of(staff, room, "$m:test.local", "{\"msgtype\":\"m.text\",\"body\":\"hi\"}",
	                            "hi", "m.text");
	deliver(&e, &ev, POL_ROLE_STAFF, r);
	x = last_entry(e.st, b.guest);
	CHECK_STR(jsonx_str(json_object_get(x, "from"), "name"), "Dr Ann Lee Team");
	char *dump = json_dumps(x, JSON_COMPACT | JSON_ENSURE_ASCII);
	CHECK(dump && !strstr(dump, "\\u202e") && !strstr(dump, "\\u2067") && !strstr(dump, "\\u200f"));
	free(dump);
	json_decref(x);
	/* A name of nothing but controls shows as "Staff". */
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(rooms_user_set(t, room, ROOMS_STAFF, staff, "\xe2\x80\xae\xe2\x81\xa6"), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	ev.event_id = "$m2:test.local";
	deliver(&e, &ev, POL_ROLE_STAFF, r);
	x = last_entry(e.st, b.guest);
	CHECK_STR(jsonx_str(json_object_get(x, "from"), "name"), "Staff");
	json_decref(x);
	json_decref(r);
	test_env_close(&e);
}

/* Binding on first open: the tab that opened a link keeps its use; a copy
 * of the link (from the browser's history) with any other claim, or none,
 * finds nothing; a shared link of many uses is not bound. */
static void test_invite_claims(void)
{
	struct test_env e;
	struct txn_env env;
	env_init(&e, &env);
	const struct config_service *svc = &e.cfg.services[0];
	uint64_t week = th_now_ms() + 7 * 86400000ull;
	store_txn *t;
	struct inv_info info;
	char one[SEC_TOKEN_LEN + 1], two[SEC_TOKEN_LEN + 1], many[SEC_TOKEN_LEN + 1];
	char a[SEC_TOKEN_LEN + 1], b[SEC_TOKEN_LEN + 1], c[SEC_TOKEN_LEN + 1];
	CHECK_EQ_INT(sec_token_new(a), TH_OK);
	CHECK_EQ_INT(sec_token_new(b), TH_OK);
	CHECK_EQ_INT(sec_token_new(c), TH_OK);
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(inv_create(t, e.au, svc, NULL, 1, week, "@staff:test.local", one), TH_OK);
	CHECK_EQ_INT(inv_create(t, e.au, svc, NULL, 2, week, "@staff:test.local", two), TH_OK);
	CHECK_EQ_INT(inv_create(t, e.au, svc, NULL, INV_BIND_MAX + 1, week, "@staff:test.local", many),
	             TH_OK);
	uint64_t now = th_now_ms();

	/* One use: bound to a; a again is fine; b, no claim, a bad claim are not. */
	CHECK_EQ_INT(inv_open(t, one, a, now, &info), TH_OK);
	CHECK_EQ_INT(inv_open(t, one, a, now, &info), TH_OK);
	CHECK_EQ_INT(inv_open(t, one, b, now, &info), TH_ENOTFOUND);
	CHECK_EQ_INT(inv_open(t, one, "short", now, &info), TH_EINVAL);
	CHECK_EQ_INT(inv_admit(t, one, NULL, now), TH_ENOTFOUND);
	CHECK_EQ_INT(inv_admit(t, one, b, now), TH_ENOTFOUND);
	/* a redeems: let go of the claim, the use counted; then nothing opens it. */
	CHECK_EQ_INT(inv_admit(t, one, a, now), TH_OK);
	CHECK_EQ_INT(inv_consume(t, one, now, &info), TH_OK);
	CHECK_EQ_INT(inv_open(t, one, a, now, &info), TH_ENOTFOUND);
	CHECK_EQ_INT(inv_check(t, one, now, &info), TH_ENOTFOUND);

	/* Two uses: a binds one; a redeem without a claim takes the other; b
	 * finds none; a still redeems. */
	CHECK_EQ_INT(inv_open(t, two, a, now, &info), TH_OK);
	CHECK_EQ_INT(inv_admit(t, two, NULL, now), TH_OK);
	CHECK_EQ_INT(inv_consume(t, two, now, &info), TH_OK);
	CHECK_EQ_INT(inv_open(t, two, b, now, &info), TH_ENOTFOUND);
	CHECK_EQ_INT(inv_admit(t, two, NULL, now), TH_ENOTFOUND);
	CHECK_EQ_INT(inv_admit(t, two, a, now), TH_OK);
	CHECK_EQ_INT(inv_consume(t, two, now, &info), TH_OK);

	/* A shared link is not bound: every claim opens it. */
	CHECK_EQ_INT(inv_open(t, many, a, now, &info), TH_OK);
	CHECK_EQ_INT(inv_open(t, many, b, now, &info), TH_OK);
	CHECK_EQ_INT(inv_open(t, many, c, now, &info), TH_OK);
	CHECK_EQ_INT(inv_admit(t, many, NULL, now), TH_OK);
	store_txn_abort(t);
	test_env_close(&e);
}

/* Give the service a helper: "en" (1 hours/open, "where are you" by keyword only) and "fr". */
static void helper_set(struct config_service *svc)
{
	svc->nhelpers = 2;
	svc->helpers = xcalloc(2, sizeof(*svc->helpers));
	struct config_helper *h = &svc->helpers[0];
	h->lang = xstrdup("en");
	h->menu = xstrdup("1 Our opening hours");
	h->nentries = 2;
	h->entries = xcalloc(2, sizeof(*h->entries));
	h->entries[0].number = 1;
	h->entries[0].words.n = 2;
	h->entries[0].words.v = xcalloc(2, sizeof(char *));
	h->entries[0].words.v[0] = xstrdup("hours");
	h->entries[0].words.v[1] = xstrdup("open");
	h->entries[0].text = xstrdup("We are open 9 to 5.");
	h->entries[1].words.n = 1;
	h->entries[1].words.v = xcalloc(1, sizeof(char *));
	h->entries[1].words.v[0] = xstrdup("where are you");
	h->entries[1].text = xstrdup("In town.");
	h = &svc->helpers[1];
	h->lang = xstrdup("fr");
	h->menu = xstrdup("1 Nos horaires");
	h->nentries = 1;
	h->entries = xcalloc(1, sizeof(*h->entries));
	h->entries[0].number = 1;
	h->entries[0].text = xstrdup("Ouvert de 9 h à 17 h.");
}

/* Notices the bot posted into @p room since call @p from, and the last one's body. */
static size_t room_notices(const char *room, size_t from, const char **last)
{
	size_t n = 0;
	for (size_t i = from; i < calls_len(); i++) {
		json_t *c = json_array_get(calls(), i);
		const char *op = jsonx_str(c, "op"), *r = jsonx_str(c, "room_id");
		if (op && r && strcmp(op, "notice") == 0 && strcmp(r, room) == 0) {
			n++;
			if (last)
				*last = jsonx_str(c, "body");
		}
	}
	return n;
}

/* Service words in the guest's feed after @p since (their bodies joined by "|"; caller frees). */
static char *service_words(store *st, const char *guest, uint64_t since, uint64_t *next)
{
	json_t *ev = feed_of(st, guest, since, next);
	char *out = xstrdup("");
	size_t i;
	json_t *x;
	json_array_foreach(ev, i, x)
	{
		const char *role = jsonx_str(json_object_get(x, "from"), "role");
		if (role && strcmp(role, "service") == 0 && strcmp(jsonx_str(x, "kind"), "notice") == 0) {
			char *more = xasprintf("%s%s|", out, jsonx_str(x, "body"));
			free(out);
			out = more;
		}
	}
	json_decref(ev);
	return out;
}

/* The homeserver's echo of the guest's text @p body (local id @p lid) in @p room. */
static void guest_echo(struct test_env *e, const char *guest, const char *room, const char *lid,
                       const char *body)
{
	static unsigned n;
	char event_id[64];
	snprintf(event_id, sizeof(event_id), "$echo%u", ++n);
	json_t *content =
	        json_pack("{s:s, s:s, s:s}", "msgtype", "m.text", "body", body, MX_LOCAL_ID_KEY, lid);
	char *cj = json_dumps(content, JSON_COMPACT);
	json_t *r = NULL;
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(e->st, 1, &t), TH_OK);
	CHECK_EQ_INT(store_get_json(t, STORE_ROOMS, room, &r), TH_OK);
	/* joined, as the homeserver's join event would have recorded */
	CHECK_EQ_INT(rooms_user_set(t, room, ROOMS_GUESTS, guest, "join"), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	struct mxev ev = message_of(guest, room, event_id, cj, body, "m.text");
	deliver(e, &ev, POL_ROLE_GUEST, r);
	json_decref(r);
	free(cj);
	json_decref(content);
}

/* The guest writes @p body (local id @p lid) through conv_send, and its echo
 * comes back from the homeserver into @p room as the AS API delivers it
 * (conv_on_event): the helper answers then.  The echo comes only when
 * conv_send queued a new text (a local id sent before queues nothing). */
static void guest_writes(struct test_env *e, struct txn_env *env, const char *guest, const char *room,
                         const char *lid, const char *body)
{
	enum conv_send_result res = CONV_REFUSED;
	size_t mark = calls_len();
	uint64_t next = 0;
	json_t *before = feed_of(e->st, guest, 0, &next);
	size_t nbefore = json_array_size(before);
	json_decref(before);
	CHECK_EQ_INT(conv_send(env, guest, lid, body, &res, NULL), TH_OK);
	CHECK_EQ_INT(res, CONV_SENT);
	json_t *after = feed_of(e->st, guest, 0, &next);
	CHECK_EQ_INT(json_array_size(after), nbefore); /* nothing in the feed before the echo */
	json_decref(after);
	if (calls_len() == mark)
		return;
	CHECK_STR(jsonx_str(json_array_get(calls(), mark), "op"), "text"); /* staff have it first */
	CHECK_EQ_INT(calls_len(), mark + 1);
	guest_echo(e, guest, room, lid, body);
}

/* Who said each entry of @p guest's feed after @p since ("self|service|"; caller frees). */
static char *feed_roles(store *st, const char *guest, uint64_t since)
{
	uint64_t next;
	json_t *ev = feed_of(st, guest, since, &next);
	char *out = xstrdup("");
	size_t i;
	json_t *x;
	json_array_foreach(ev, i, x)
	{
		char *more = xasprintf("%s%s|", out, jsonx_str(json_object_get(x, "from"), "role"));
		free(out);
		out = more;
	}
	json_decref(ev);
	return out;
}

/* The service's helper (policy/helper.h) when the guest's words come back
 * from the homeserver: the guest's words go to staff first; nothing is
 * said before their echo; then the answer follows the guest's own entry in
 * their feed as the service's words, and is in the conversation room as
 * the bot's notice; one answer to a message sent twice; the menu once;
 * "0"/"person" tells the staff room at once (once); silent once staff
 * joined while open; answers out of hours even with staff joined; in the
 * guest's language. */
static void test_helper(void)
{
	struct test_env e;
	struct txn_env env;
	env_init(&e, &env);
	helper_set(&e.cfg.services[0]);
	const char *room = "!helper:test.local";
	char guest[GUESTS_MAX_USER_ID + 1];
	open_guest(&e, &env, room, guest);
	uint64_t since = 0;
	free(service_words(e.st, guest, 0, &since)); /* the greeting */
	enum conv_send_result res = CONV_REFUSED;
	size_t mark = calls_len();
	const char *body = NULL;

	/* First words, matching nothing: sent to staff, then the menu (with the way to a person). */
	guest_writes(&e, &env, guest, room, "H1", "hello");
	char *said = feed_roles(e.st, guest, since);
	CHECK_STR(said, "self|service|"); /* the words, then the helper */
	free(said);
	said = service_words(e.st, guest, since, &since);
	CHECK_STR(said, "1 Our opening hours\n\nReply 0 to talk to a person.|");
	free(said);
	CHECK_EQ_INT(room_notices(room, mark, &body), 1);
	CHECK(body && strstr(body, "The helper showed its menu:\n> 1 Our opening hours"));

	/* "1": the answer, below the words, no menu again; staff see what was said. */
	mark = calls_len();
	guest_writes(&e, &env, guest, room, "H2", " 1 ");
	said = feed_roles(e.st, guest, since);
	CHECK_STR(said, "self|service|");
	free(said);
	said = service_words(e.st, guest, since, &since);
	CHECK_STR(said, "We are open 9 to 5.\n\nReply 0 to talk to a person.|");
	free(said);
	CHECK_EQ_INT(room_notices(room, mark, &body), 1);
	CHECK(body && strstr(body, "The helper answered 1:\n> We are open 9 to 5."));
	/* The same message again (a page's retry, same local id): not sent
	 * again, so no second echo; and an echo of it that came twice is
	 * answered once. */
	mark = calls_len();
	CHECK_EQ_INT(conv_send(&env, guest, "H2", " 1 ", &res, NULL), TH_OK);
	CHECK_EQ_INT(res, CONV_SENT);
	CHECK_EQ_INT(calls_len(), mark);
	guest_echo(&e, guest, room, "H2", " 1 ");
	CHECK_EQ_INT(calls_len(), mark);
	said = service_words(e.st, guest, since, &since);
	CHECK_STR(said, "");
	free(said);
	/* a keyword phrase in a sentence */
	guest_writes(&e, &env, guest, room, "H3", "Where are you?");
	said = service_words(e.st, guest, since, &since);
	CHECK(strstr(said, "In town.") != NULL);
	free(said);
	/* words the helper does not know: nothing more */
	mark = calls_len();
	guest_writes(&e, &env, guest, room, "H4", "thanks");
	said = service_words(e.st, guest, since, &since);
	CHECK_STR(said, "");
	free(said);
	CHECK_EQ_INT(calls_len(), mark + 1); /* the words to staff, nothing else */

	/* "0": the staff room at once, naming the pseudonym and the room; the guest told. */
	struct guest g;
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	CHECK_EQ_INT(guests_get(t, guest, &g), TH_OK);
	store_txn_abort(t);
	size_t before = staff_notices(NULL);
	guest_writes(&e, &env, guest, room, "H5", "0");
	json_t *last = NULL;
	CHECK_EQ_INT(staff_notices(&last), before + 1);
	body = jsonx_str(last, "body");
	CHECK(body && strstr(body, g.pseudonym) && strstr(body, "asked to talk to a person") &&
	      strstr(body, room));
	CHECK(body && !strstr(body, "URGENT")); /* not the help button's alarm */
	said = service_words(e.st, guest, since, &since);
	CHECK(strstr(said, "We have asked a member of staff to join you.") != NULL);
	free(said);
	/* again ("person" in a sentence): the guest is told again, staff not twice */
	guest_writes(&e, &env, guest, room, "H6", "I want a person please");
	CHECK_EQ_INT(staff_notices(NULL), before + 1);
	said = service_words(e.st, guest, since, &since);
	CHECK(strstr(said, "We have asked a member of staff") != NULL);
	free(said);

	/* A member of staff joins (open: no hours set): the helper is silent. */
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(rooms_user_set(t, room, ROOMS_STAFF, "@sam:test.local", "Sam"), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	mark = calls_len();
	guest_writes(&e, &env, guest, room, "H7", "1");
	guest_writes(&e, &env, guest, room, "H8", "0");
	said = service_words(e.st, guest, since, &since);
	CHECK_STR(said, "");
	free(said);
	CHECK_EQ_INT(calls_len(), mark + 2); /* the two texts to staff only */

	/* Out of hours (hours set, no day open): it answers even with staff joined. */
	e.cfg.services[0].hours.set = 1;
	guest_writes(&e, &env, guest, room, "H9", "open?");
	said = service_words(e.st, guest, since, &since);
	CHECK(strstr(said, "We are open 9 to 5.") != NULL);
	free(said);
	conv_set(e.st, guest, "helper", json_pack("{s:b}", "menu", 1)); /* forget the ask */
	before = staff_notices(NULL);
	guest_writes(&e, &env, guest, room, "H10", "0");
	CHECK_EQ_INT(staff_notices(&last), before + 1);
	CHECK(strstr(jsonx_str(last, "body"), "out of hours") != NULL);
	said = service_words(e.st, guest, since, &since);
	CHECK(strstr(said, "We are closed now.") != NULL);
	free(said);
	e.cfg.services[0].hours.set = 0;

	/* A guest in French gets the French helper. */
	char tok[SEC_TOKEN_LEN + 1];
	make_invite(&e, 1, tok);
	struct conv_started st;
	struct conv_session s;
	CHECK_EQ_INT(conv_redeem(&env, tok, NULL, "3", "fr", &st), TH_OK);
	CHECK_EQ_INT(conv_auth(e.st, st.session, th_now_ms(), &s), TH_OK);
	room_made(&e, s.guest, "!helper-fr:test.local");
	uint64_t fsince = 0;
	free(service_words(e.st, s.guest, 0, &fsince));
	guest_writes(&e, &env, s.guest, "!helper-fr:test.local", "F1", "1");
	said = service_words(e.st, s.guest, fsince, &fsince);
	CHECK_STR(said, "Ouvert de 9 h à 17 h.\n\nR\xc3\xa9pondez 0 pour parler \xc3\xa0 une personne.|"
	                "1 Nos horaires\n\nR\xc3\xa9pondez 0 pour parler \xc3\xa0 une personne.|");
	free(said);
	test_env_close(&e);
}

/* Words starting with '#' go to the one group the guest has joined
 * (policy/route.h), without the '#'; anything else, or '#' with no group or
 * several, to their own conversation, as written. */
static void test_words_for_the_group(void)
{
	struct test_env e;
	struct txn_env env;
	env_init(&e, &env);
	char guest[GUESTS_MAX_USER_ID + 1];
	const char *room = "!own:test.local", *g1 = "!group1:test.local", *g2 = "!group2:test.local";
	open_guest(&e, &env, room, guest);
	enum conv_send_result res = CONV_REFUSED;
	size_t n, queued = calls_len();
	json_t *sent;

	/* no group yet: '#' stays with staff */
	CHECK_EQ_INT(conv_send(&env, guest, "G0", "# anyone?", &res, NULL), TH_OK);
	CHECK_EQ_INT(res, CONV_SENT);
	sent = find_op(calls(), queued, "text", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(sent, "room_id"), room);
	CHECK_STR(jsonx_str(sent, "body"), "# anyone?");

	/* joined to one group: '#' goes there, plain words do not */
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(rooms_mark_managed(t, g1, "group"), TH_OK);
	CHECK_EQ_INT(rooms_member_set(t, g1, guest, "join"), TH_OK);
	CHECK_EQ_INT(rooms_user_set(t, g1, ROOMS_GUESTS, guest, "join"), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	queued = calls_len();
	CHECK_EQ_INT(conv_send(&env, guest, "G1", "  #  hello all", &res, NULL), TH_OK);
	CHECK_EQ_INT(res, CONV_SENT);
	sent = find_op(calls(), queued, "text", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(sent, "room_id"), g1);
	CHECK_STR(jsonx_str(sent, "body"), "hello all");
	queued = calls_len();
	CHECK_EQ_INT(conv_send(&env, guest, "G2", "just for staff", &res, NULL), TH_OK);
	sent = find_op(calls(), queued, "text", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(sent, "room_id"), room);
	/* a number or a hashtag is not the mark: private, as written */
	queued = calls_len();
	CHECK_EQ_INT(conv_send(&env, guest, "G2b", "#1 thing for staff", &res, NULL), TH_OK);
	sent = find_op(calls(), queued, "text", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(sent, "room_id"), room);
	CHECK_STR(jsonx_str(sent, "body"), "#1 thing for staff");

	/* invited to a second group (not joined): still one; joined: never a guess */
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(rooms_mark_managed(t, g2, "group"), TH_OK);
	CHECK_EQ_INT(rooms_member_set(t, g2, guest, "invite"), TH_OK);
	CHECK_EQ_INT(rooms_user_set(t, g2, ROOMS_GUESTS, guest, "invite"), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	queued = calls_len();
	CHECK_EQ_INT(conv_send(&env, guest, "G3", "# still one", &res, NULL), TH_OK);
	sent = find_op(calls(), queued, "text", guest, &n);
	CHECK_STR(jsonx_str(sent, "room_id"), g1);
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(rooms_member_set(t, g2, guest, "join"), TH_OK);
	CHECK_EQ_INT(rooms_user_set(t, g2, ROOMS_GUESTS, guest, "join"), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	queued = calls_len();
	CHECK_EQ_INT(conv_send(&env, guest, "G4", "# which one?", &res, NULL), TH_OK);
	sent = find_op(calls(), queued, "text", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(sent, "room_id"), room);
	CHECK_STR(jsonx_str(sent, "body"), "# which one?");

	/* removed from both: the conversation again */
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(rooms_member_set(t, g2, guest, "leave"), TH_OK);
	CHECK_EQ_INT(rooms_user_set(t, g2, ROOMS_GUESTS, guest, "leave"), TH_OK);
	CHECK_EQ_INT(rooms_user_set(t, g1, ROOMS_GUESTS, guest, "leave"), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	queued = calls_len();
	CHECK_EQ_INT(conv_send(&env, guest, "G5", "# gone?", &res, NULL), TH_OK);
	sent = find_op(calls(), queued, "text", guest, &n);
	CHECK_EQ_INT(n, 1);
	CHECK_STR(jsonx_str(sent, "room_id"), room);

	/* Ending the conversation (End chat, STOP) leaves the group it is in
	 * too, and no group it has left. */
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(rooms_user_set(t, g1, ROOMS_GUESTS, guest, "join"), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	queued = calls_len();
	CHECK_EQ_INT(conv_leave(&env, guest), TH_OK);
	json_t *ob = calls();
	size_t left_own = 0, left_g1 = 0, left_g2 = 0;
	for (size_t i = queued; i < json_array_size(ob); i++) {
		json_t *a = json_array_get(ob, i);
		const char *r = jsonx_str(a, "room_id");
		if (strcmp(jsonx_str(a, "op") ? jsonx_str(a, "op") : "", "leave") != 0 || !r)
			continue;
		left_own += strcmp(r, room) == 0;
		left_g1 += strcmp(r, g1) == 0;
		left_g2 += strcmp(r, g2) == 0;
	}
	CHECK_EQ_INT(left_own, 1);
	CHECK_EQ_INT(left_g1, 1);
	CHECK_EQ_INT(left_g2, 0);
	test_env_close(&e);
}

int main(void)
{
	log_threshold = LOG_WARN;
	test_secret();
	test_invites();
	test_invite_claims();
	test_feed();
	test_media_parsing();
	test_attachments();
	test_take_down();
	test_visibility();
	test_feed_marks_bounded();
	test_conv_lifecycle();
	test_conv_erase();
	test_conv_erase_held_by_case();
	test_conv_expire();
	test_waiting_grouped();
	test_budgets();
	test_helper();
	test_refusals_counted();
	test_words_for_the_group();
	test_staff_removes_guest();
	test_staff_names_cleaned();
	test_matrix_outbox();
	json_decref(fake.calls);
	return TEST_DONE();
}
