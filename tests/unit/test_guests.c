/*
 * test_guests.c - guest identities: the id format and its randomness, the
 * word lists and pseudonym shapes, pseudonyms kept unique in a crowded room,
 * create then get / find / walk, a record holding only the documented
 * fields, the outbox actions and audit record that come with a new guest,
 * an aborted transaction that leaves nothing, and the CLI's exit codes.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "audit.h"
#include "config.h"
#include "guests.h"
#include "guests_cli.h"
#include "log.h"
#include "store.h"
#include "testlib.h"
#include "util.h"

/* A store and audit log in a fresh directory, with the bot's user record. */
static void env_init(struct test_env *e)
{
	test_env_open(e);
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(e->st, 1, &t), TH_OK);
	json_t *bot = json_pack("{s:s, s:s}", "kind", "bot", "displayname", "Threshold");
	CHECK_EQ_INT(store_put_json(t, STORE_USERS, e->cfg.bot_user_id, bot), TH_OK);
	json_decref(bot);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
}

/* "Word" or "Word Word" (or "Word Word N" with @p numbered): ASCII letters, capitalised. */
static int is_word(const char *s, size_t n)
{
	if (n < 2 || s[0] < 'A' || s[0] > 'Z')
		return 0;
	for (size_t i = 1; i < n; i++) {
		if (s[i] < 'a' || s[i] > 'z')
			return 0;
	}
	return 1;
}

static int is_pseudonym(const char *p, int numbered)
{
	const char *sp = strchr(p, ' ');
	if (!sp || !is_word(p, (size_t)(sp - p)))
		return 0;
	const char *second = sp + 1;
	const char *sp2 = strchr(second, ' ');
	if (!sp2)
		return !numbered && is_word(second, strlen(second));
	if (!numbered || !is_word(second, (size_t)(sp2 - second)))
		return 0;
	uint64_t v;
	return th_parse_u64(sp2 + 1, 1000000, &v) == TH_OK && v >= 2 && sp2[1] != '0';
}

static void test_word_lists(void)
{
	size_t na = guests_adjective_count(), nb = guests_animal_count();
	CHECK(na >= 64);
	CHECK(nb >= 64);
	CHECK(guests_adjective(na) == NULL);
	CHECK(guests_animal(nb) == NULL);
	/* Shape, and no word twice in or across the lists. */
	for (size_t i = 0; i < na + nb; i++) {
		const char *w = i < na ? guests_adjective(i) : guests_animal(i - na);
		CHECK(is_word(w, strlen(w)));
		CHECK(strlen(w) <= 16);
		for (size_t j = i + 1; j < na + nb; j++) {
			const char *x = j < na ? guests_adjective(j) : guests_animal(j - na);
			if (strcasecmp(w, x) == 0) {
				fprintf(stderr, "word twice: %s\n", w);
				CHECK(0);
			}
		}
	}
}

static void test_random_pseudonym(void)
{
	char buf[GUESTS_PSEUDONYM_LEN];
	char small[8] = "unset";
	CHECK(guests_random_pseudonym(small, sizeof(small)) == NULL);
	CHECK_STR(small, "unset");
	size_t distinct = 0;
	char first[GUESTS_PSEUDONYM_LEN] = "";
	for (int i = 0; i < 1000; i++) {
		CHECK(guests_random_pseudonym(buf, sizeof(buf)) == buf);
		CHECK(is_pseudonym(buf, 0));
		if (i == 0)
			memcpy(first, buf, sizeof(buf));
		else if (strcmp(first, buf) != 0)
			distinct++;
	}
	CHECK(distinct > 900); /* p(same as the first) is about 1/6000 */
}

static void test_room_pseudonyms(void)
{
	char buf[GUESTS_PSEUDONYM_LEN];
	CHECK_EQ_INT(guests_pseudonym_for_room(NULL, 0, buf, sizeof(buf)), TH_OK);
	CHECK(is_pseudonym(buf, 0));
	char small[8];
	CHECK_EQ_INT(guests_pseudonym_for_room(NULL, 0, small, sizeof(small)), TH_EINVAL);

	/* Every combination taken (in lower case, to check case is ignored),
	 * then every "… 2" too: the answer is numbered and still free. */
	size_t na = guests_adjective_count(), nb = guests_animal_count(), n = na * nb;
	char **taken = xcalloc(2 * n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		taken[i] = xasprintf("%s %s", guests_adjective(i / nb), guests_animal(i % nb));
		for (char *p = taken[i]; *p; p++)
			*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
	}
	const char *const *tk = (const char *const *)taken;
	CHECK_EQ_INT(guests_pseudonym_for_room(tk, n, buf, sizeof(buf)), TH_OK);
	CHECK(is_pseudonym(buf, 1));
	CHECK(strcmp(buf + strlen(buf) - 2, " 2") == 0);
	for (size_t i = 0; i < n; i++)
		taken[n + i] = xasprintf("%s 2", taken[i]);
	CHECK_EQ_INT(guests_pseudonym_for_room(tk, 2 * n, buf, sizeof(buf)), TH_OK);
	CHECK(is_pseudonym(buf, 1));
	CHECK(strcmp(buf + strlen(buf) - 2, " 3") == 0);
	for (size_t i = 0; i < 2 * n; i++)
		CHECK(strcasecmp(buf, taken[i]) != 0);

	/* All but one combination taken, with NULL holes: never a taken name. */
	free(taken[n / 2]);
	taken[n / 2] = NULL;
	for (int round = 0; round < 20; round++) {
		CHECK_EQ_INT(guests_pseudonym_for_room(tk, n, buf, sizeof(buf)), TH_OK);
		for (size_t i = 0; i < n; i++)
			CHECK(!taken[i] || strcasecmp(buf, taken[i]) != 0);
	}
	for (size_t i = 0; i < 2 * n; i++)
		free(taken[i]);
	free(taken);

	/* A small room: distinct names for 200 members. */
	char names[200][GUESTS_PSEUDONYM_LEN];
	const char *ptrs[200];
	for (size_t i = 0; i < 200; i++) {
		CHECK_EQ_INT(guests_pseudonym_for_room(ptrs, i, names[i], sizeof(names[i])), TH_OK);
		for (size_t j = 0; j < i; j++)
			CHECK(strcasecmp(names[i], names[j]) != 0);
		ptrs[i] = names[i];
	}
}

static int id_ok(const struct config *cfg, const char *id)
{
	size_t plen = strlen(cfg->guest_prefix);
	if (id[0] != '@' || strncmp(id + 1, cfg->guest_prefix, plen) != 0)
		return 0;
	const char *hex = id + 1 + plen;
	for (int i = 0; i < GUESTS_ID_HEX; i++) {
		if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
			return 0;
	}
	return hex[GUESTS_ID_HEX] == ':' && strcmp(hex + GUESTS_ID_HEX + 1, cfg->server_name) == 0 &&
	       config_user_in_namespace(cfg, id);
}

struct collect {
	struct guest *v;
	size_t n, cap;
	size_t stop_after; /* 0: never */
};

static int collect_one(void *ctx, const struct guest *g)
{
	struct collect *c = ctx;
	if (c->n == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 16;
		c->v = xrealloc(c->v, c->cap * sizeof(*c->v));
	}
	c->v[c->n++] = *g;
	return c->stop_after && c->n == c->stop_after ? 1 : 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* 1000 guests in one transaction: ids in the namespace and distinct, pseudonyms distinct. */
static void test_many(void)
{
	struct test_env e;
	env_init(&e);
	enum { N = 1000 };
	struct guest *gs = xcalloc(N, sizeof(*gs));
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	for (int i = 0; i < N; i++)
		CHECK_EQ_INT(guests_create(&e.cfg, t, e.au, "cli:tester", &gs[i]), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);

	const char **ids = xcalloc(N, sizeof(char *));
	char **names = xcalloc(N, sizeof(char *));
	for (int i = 0; i < N; i++) {
		CHECK(id_ok(&e.cfg, gs[i].user_id));
		CHECK(is_pseudonym(gs[i].pseudonym, 1) || is_pseudonym(gs[i].pseudonym, 0));
		ids[i] = gs[i].user_id;
		names[i] = xstrdup(gs[i].pseudonym);
		for (char *p = names[i]; *p; p++)
			*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
	}
	qsort(ids, N, sizeof(*ids), cmp_str);
	qsort(names, N, sizeof(*names), cmp_str);
	size_t dup_ids = 0, dup_names = 0;
	for (int i = 1; i < N; i++) {
		dup_ids += strcmp(ids[i - 1], ids[i]) == 0;
		dup_names += strcmp(names[i - 1], names[i]) == 0;
	}
	CHECK_EQ_INT(dup_ids, 0);
	CHECK_EQ_INT(dup_names, 0);

	/* The walk sees them all (and not the bot); a walk can stop early. */
	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	struct collect c = {0};
	CHECK_EQ_INT(guests_walk(t, collect_one, &c), TH_OK);
	CHECK_EQ_INT(c.n, N);
	free(c.v);
	struct collect c3 = {.stop_after = 3};
	CHECK_EQ_INT(guests_walk(t, collect_one, &c3), TH_OK);
	CHECK_EQ_INT(c3.n, 3);
	free(c3.v);
	store_txn_abort(t);

	for (int i = 0; i < N; i++)
		free(names[i]);
	free(names);
	free(ids);
	free(gs);
	test_env_close(&e);
}

struct outbox_seen {
	int reg, dn, block;
	const struct guest *g;
	char localpart[GUESTS_MAX_USER_ID + 1];
};

static int outbox_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key;
	(void)klen;
	struct outbox_seen *o = ctx;
	json_t *a = json_loadb(val, vlen, 0, NULL);
	const char *op = json_string_value(json_object_get(a, "op"));
	if (op && !strcmp(op, "register") &&
	    !strcmp(json_string_value(json_object_get(a, "localpart")), o->localpart)) {
		CHECK_EQ_INT(json_object_size(a), 2);
		CHECK_EQ_INT(o->dn, 0); /* registered before the display name is set */
		o->reg++;
	}
	if (op && !strcmp(op, "account_data") &&
	    !strcmp(json_string_value(json_object_get(a, "user_id")), o->g->user_id)) {
		/* spec v1.18: the homeserver refuses every invite to the guest */
		CHECK_STR(json_string_value(json_object_get(a, "type")), "m.invite_permission_config");
		CHECK_STR(json_string_value(json_object_get(json_object_get(a, "content"), "default_action")),
		          "block");
		CHECK_EQ_INT(o->reg, 1); /* once the account exists */
		o->block++;
	}
	if (op && !strcmp(op, "displayname") &&
	    !strcmp(json_string_value(json_object_get(a, "user_id")), o->g->user_id)) {
		CHECK_STR(json_string_value(json_object_get(a, "displayname")), o->g->pseudonym);
		CHECK_EQ_INT(json_object_size(a), 3);
		o->dn++;
	}
	json_decref(a);
	return 0;
}

struct audit_seen {
	int n;
	const struct guest *g;
	char *sealed; /* the guest_created record's sealed pseudonym (copied) */
};

static int audit_one(void *ctx, uint64_t seq, const json_t *rec, const char *raw, size_t rawlen)
{
	(void)seq;
	(void)raw;
	(void)rawlen;
	struct audit_seen *s = ctx;
	CHECK_STR(json_string_value(json_object_get(rec, "kind")), "guest_created");
	CHECK_STR(json_string_value(json_object_get(rec, "subject")), s->g->user_id);
	CHECK_STR(json_string_value(json_object_get(rec, "actor")), "@staff:test.local");
	json_t *d = json_object_get(rec, "details");
	CHECK_EQ_INT(json_object_size(d), 1);
	/* the pseudonym is never on the record in clear: sealed under the guest's key */
	const char *sealed = json_string_value(json_object_get(d, "pseudonym_sealed"));
	CHECK(sealed != NULL && strstr(raw, s->g->pseudonym) == NULL);
	free(s->sealed);
	s->sealed = sealed ? xstrdup(sealed) : NULL;
	s->n++;
	return 0;
}

static void test_create_and_read(void)
{
	struct test_env e;
	env_init(&e);
	store_txn *t;
	struct guest g, other, got;
	uint64_t before = th_now_ms();
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(guests_create(&e.cfg, t, e.au, "@staff:test.local", &g), TH_OK);
	CHECK_EQ_INT(guests_create(&e.cfg, t, e.au, "@staff:test.local", &other), TH_OK);
	/* Visible inside the transaction that made it. */
	CHECK_EQ_INT(guests_get(t, g.user_id, &got), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	CHECK(id_ok(&e.cfg, g.user_id));
	CHECK(is_pseudonym(g.pseudonym, 0) || is_pseudonym(g.pseudonym, 1));
	CHECK_STR(g.state, GUESTS_STATE_ACTIVE);
	CHECK(g.created_ms >= before && g.created_ms <= th_now_ms());
	CHECK(strcasecmp(g.pseudonym, other.pseudonym) != 0);

	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	memset(&got, 0, sizeof(got));
	CHECK_EQ_INT(guests_get(t, g.user_id, &got), TH_OK);
	CHECK_STR(got.user_id, g.user_id);
	CHECK_STR(got.pseudonym, g.pseudonym);
	CHECK_STR(got.state, "active");
	CHECK(got.created_ms == g.created_ms);

	/* By pseudonym, in any case. */
	char lower[GUESTS_PSEUDONYM_LEN];
	memcpy(lower, g.pseudonym, sizeof(lower));
	for (char *p = lower; *p; p++)
		*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
	memset(&got, 0, sizeof(got));
	CHECK_EQ_INT(guests_find_by_pseudonym(t, lower, &got), TH_OK);
	CHECK_STR(got.user_id, g.user_id);
	CHECK_EQ_INT(guests_find_by_pseudonym(t, other.pseudonym, &got), TH_OK);
	CHECK_STR(got.user_id, other.user_id);
	CHECK_EQ_INT(guests_find_by_pseudonym(t, "Nobody Here", &got), TH_ENOTFOUND);
	CHECK_STR(got.user_id, other.user_id); /* untouched on failure */

	/* Not guests: the bot, an unknown id. */
	CHECK_EQ_INT(guests_get(t, e.cfg.bot_user_id, &got), TH_ENOTFOUND);
	CHECK_EQ_INT(guests_get(t, "@guest_00000000000000000000000000000000:test.local", &got), TH_ENOTFOUND);
	CHECK_EQ_INT(guests_get(t, "", &got), TH_ENOTFOUND);
	char huge[600];
	memset(huge, 'a', sizeof(huge) - 1);
	huge[sizeof(huge) - 1] = '\0';
	CHECK_EQ_INT(guests_get(t, huge, &got), TH_ENOTFOUND);

	struct collect c = {0};
	CHECK_EQ_INT(guests_walk(t, collect_one, &c), TH_OK);
	CHECK_EQ_INT(c.n, 2);
	free(c.v);

	/* The record: exactly the documented fields, no personal data. */
	json_t *rec = NULL;
	CHECK_EQ_INT(store_get_json(t, STORE_USERS, g.user_id, &rec), TH_OK);
	CHECK_EQ_INT(json_object_size(rec), 4);
	CHECK_STR(json_string_value(json_object_get(rec, "kind")), "guest");
	CHECK_STR(json_string_value(json_object_get(rec, "pseudonym")), g.pseudonym);
	CHECK_STR(json_string_value(json_object_get(rec, "state")), "active");
	CHECK(json_is_integer(json_object_get(rec, "created_ms")) &&
	      (uint64_t)json_integer_value(json_object_get(rec, "created_ms")) == g.created_ms);
	json_decref(rec);

	/* The outbox: register, the block of invites, then the display name. */
	struct outbox_seen o = {.g = &g};
	size_t lplen = (size_t)(strchr(g.user_id, ':') - g.user_id - 1);
	memcpy(o.localpart, g.user_id + 1, lplen);
	o.localpart[lplen] = '\0';
	CHECK_EQ_INT(store_walk(t, STORE_OUTBOX, NULL, 0, outbox_one, &o), TH_OK);
	CHECK_EQ_INT(o.reg, 1);
	CHECK_EQ_INT(o.block, 1);
	CHECK_EQ_INT(o.dn, 1);
	size_t nout;
	CHECK_EQ_INT(store_count(t, STORE_OUTBOX, &nout), TH_OK);
	CHECK_EQ_INT(nout, 6);

	/* The audit record, found by subject. */
	struct audit_filter f;
	audit_filter_init(&f);
	f.subject = g.user_id;
	struct audit_seen s = {0, &g, NULL};
	CHECK_EQ_INT(audit_iter(t, &f, audit_one, &s), TH_OK);
	CHECK_EQ_INT(s.n, 1);
	char *plain = NULL; /* only the guest's key opens it */
	CHECK_EQ_INT(audit_unseal(e.au, t, g.user_id, s.sealed, &plain), TH_OK);
	CHECK_STR(plain, g.pseudonym);
	free(plain);
	free(s.sealed);
	store_txn_abort(t);

	/* A damaged guest record is reported, not skipped. */
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	const char *bad = "{\"kind\":\"guest\",\"pseudonym\":7}";
	CHECK_EQ_INT(store_put(t, STORE_USERS, other.user_id, strlen(other.user_id), bad, strlen(bad), 0),
	             TH_OK);
	fprintf(stderr, "(two 'guest record ... is damaged' errors expected)\n");
	CHECK_EQ_INT(guests_get(t, other.user_id, &got), TH_ESTORE);
	struct collect c2 = {0};
	CHECK_EQ_INT(guests_walk(t, collect_one, &c2), TH_ESTORE);
	free(c2.v);
	store_txn_abort(t);
	test_env_close(&e);
}

static void test_abort_and_errors(void)
{
	struct test_env e;
	env_init(&e);
	store_txn *t;
	struct guest g;
	uint64_t seq0, seq1;
	unsigned char hash[AUDIT_HASH_LEN];
	size_t nout0, nout1, nusers0, nusers1;

	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	CHECK_EQ_INT(audit_head(t, &seq0, hash), TH_OK);
	CHECK_EQ_INT(store_count(t, STORE_OUTBOX, &nout0), TH_OK);
	CHECK_EQ_INT(store_count(t, STORE_USERS, &nusers0), TH_OK);
	store_txn_abort(t);

	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(guests_create(&e.cfg, t, e.au, "cli:tester", &g), TH_OK);
	store_txn_abort(t);

	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	struct guest got;
	CHECK_EQ_INT(guests_get(t, g.user_id, &got), TH_ENOTFOUND);
	CHECK_EQ_INT(guests_find_by_pseudonym(t, g.pseudonym, &got), TH_ENOTFOUND);
	CHECK_EQ_INT(audit_head(t, &seq1, hash), TH_OK);
	CHECK_EQ_INT(store_count(t, STORE_OUTBOX, &nout1), TH_OK);
	CHECK_EQ_INT(store_count(t, STORE_USERS, &nusers1), TH_OK);
	CHECK(seq1 == seq0);
	CHECK_EQ_INT(nout1, nout0);
	CHECK_EQ_INT(nusers1, nusers0);
	store_txn_abort(t);

	/* Bad arguments: nothing written to out. */
	memset(&g, 0x5a, sizeof(g));
	struct guest saved = g;
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(guests_create(&e.cfg, t, e.au, "", &g), TH_EINVAL);
	CHECK_EQ_INT(guests_create(&e.cfg, t, e.au, NULL, &g), TH_EINVAL);
	char *long_name = xcalloc(240, 1);
	memset(long_name, 'a', 239);
	char *saved_server = e.cfg.server_name;
	e.cfg.server_name = long_name; /* "@guest_" + 32 + ":" + 239 > 255 */
	CHECK_EQ_INT(guests_create(&e.cfg, t, e.au, "cli:tester", &g), TH_EINVAL);
	e.cfg.server_name = saved_server;
	free(long_name);
	CHECK(memcmp(&g, &saved, sizeof(g)) == 0);
	store_txn_abort(t);
	test_env_close(&e);
}

/* ---- the CLI ----------------------------------------------------------- */

/* Run the CLI with stdout captured into @p *out (caller frees) and stderr dropped. */
static int cli(const struct config *cfg, char **out, const char *a0, const char *a1, const char *a2,
               const char *a3)
{
	const char *args[] = {a0, a1, a2, a3};
	char *argv[5];
	int argc = 0;
	for (int i = 0; i < 4 && args[i]; i++)
		argv[argc++] = (char *)args[i];
	argv[argc] = NULL;
	char *path = xasprintf("%s.out", cfg->path); /* next to the (absent) config file */
	fflush(stdout);
	fflush(stderr);
	int saved_out = dup(1), saved_err = dup(2);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	int devnull = open("/dev/null", O_WRONLY);
	dup2(fd, 1);
	dup2(devnull, 2); /* messages: only the exit codes are checked */
	close(fd);
	close(devnull);
	int code = guests_cli_main(cfg, argc, argv);
	fflush(stdout);
	fflush(stderr);
	dup2(saved_out, 1);
	dup2(saved_err, 2);
	close(saved_out);
	close(saved_err);
	FILE *f = fopen(path, "r");
	char *text = xcalloc(65536, 1);
	if (f) {
		size_t n = fread(text, 1, 65535, f);
		text[n] = '\0';
		fclose(f);
	}
	unlink(path);
	free(path);
	if (out)
		*out = text;
	else
		free(text);
	return code;
}

static void test_cli(void)
{
	char *dir = test_tmpdir();
	struct config cfg;
	test_config_init(&cfg, dir);
	char *text;

	CHECK_EQ_INT(cli(&cfg, &text, "list", NULL, NULL, NULL), GUESTS_EXIT_OK);
	CHECK(strstr(text, "No guests") != NULL);
	free(text);

	CHECK_EQ_INT(cli(&cfg, &text, "create", "--json", NULL, NULL), GUESTS_EXIT_OK);
	json_t *made = json_loads(text, 0, NULL);
	free(text);
	CHECK(made != NULL);
	const char *id = json_string_value(json_object_get(made, "user_id"));
	const char *pseudonym = json_string_value(json_object_get(made, "pseudonym"));
	CHECK(id && id_ok(&cfg, id));
	CHECK(pseudonym && is_pseudonym(pseudonym, 0));

	CHECK_EQ_INT(cli(&cfg, &text, "create", NULL, NULL, NULL), GUESTS_EXIT_OK);
	CHECK(strstr(text, "user_id    @guest_") != NULL);
	free(text);

	CHECK_EQ_INT(cli(&cfg, &text, "list", NULL, NULL, NULL), GUESTS_EXIT_OK);
	CHECK(strncmp(text, "ID ", 3) == 0);
	CHECK(id && strstr(text, id) != NULL);
	free(text);

	CHECK_EQ_INT(cli(&cfg, &text, "list", "--json", NULL, NULL), GUESTS_EXIT_OK);
	json_t *arr = json_loads(text, 0, NULL);
	free(text);
	CHECK(json_is_array(arr) && json_array_size(arr) == 2);
	/* Oldest first; two guests made in the same millisecond may come either way. */
	json_t *first = json_array_get(arr, 0), *second = json_array_get(arr, 1);
	CHECK(json_integer_value(json_object_get(first, "created_ms")) <=
	      json_integer_value(json_object_get(second, "created_ms")));
	CHECK(id && (strcmp(json_string_value(json_object_get(first, "user_id")), id) == 0 ||
	             (strcmp(json_string_value(json_object_get(second, "user_id")), id) == 0 &&
	              json_integer_value(json_object_get(first, "created_ms")) ==
	                      json_integer_value(json_object_get(second, "created_ms")))));
	json_decref(arr);

	/* show: by id, by localpart, by pseudonym in one or two arguments, any case. */
	CHECK_EQ_INT(cli(&cfg, &text, "show", id, "--json", NULL), GUESTS_EXIT_OK);
	json_t *one = json_loads(text, 0, NULL);
	free(text);
	CHECK_STR(json_string_value(json_object_get(one, "pseudonym")), pseudonym);
	json_decref(one);
	char *localpart = xstrndup(id + 1, strchr(id, ':') - id - 1);
	CHECK_EQ_INT(cli(&cfg, &text, "show", localpart, NULL, NULL), GUESTS_EXIT_OK);
	CHECK(strstr(text, pseudonym) != NULL);
	free(text);
	free(localpart);
	char words[2][GUESTS_PSEUDONYM_LEN];
	CHECK(sscanf(pseudonym, "%63s %63s", words[0], words[1]) == 2);
	for (char *p = words[1]; *p; p++)
		*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
	CHECK_EQ_INT(cli(&cfg, &text, "show", words[0], words[1], NULL), GUESTS_EXIT_OK);
	CHECK(strstr(text, id) != NULL);
	free(text);
	CHECK_EQ_INT(cli(&cfg, &text, "show", pseudonym, NULL, NULL), GUESTS_EXIT_OK);
	CHECK(strstr(text, id) != NULL);
	free(text);

	/* Not found, usage. */
	CHECK_EQ_INT(cli(&cfg, NULL, "show", "Nobody Here", NULL, NULL), GUESTS_EXIT_FAIL);
	CHECK_EQ_INT(
	        cli(&cfg, NULL, "show", "@guest_00000000000000000000000000000000:test.local", NULL, NULL),
	        GUESTS_EXIT_FAIL);
	CHECK_EQ_INT(cli(&cfg, NULL, "show", cfg.bot_user_id, NULL, NULL), GUESTS_EXIT_FAIL);
	CHECK_EQ_INT(cli(&cfg, NULL, "show", NULL, NULL, NULL), GUESTS_EXIT_USAGE);
	CHECK_EQ_INT(cli(&cfg, NULL, "list", "--csv", NULL, NULL), GUESTS_EXIT_USAGE);
	CHECK_EQ_INT(cli(&cfg, NULL, "create", "extra", NULL, NULL), GUESTS_EXIT_USAGE);
	CHECK_EQ_INT(cli(&cfg, NULL, "delete", NULL, NULL, NULL), GUESTS_EXIT_USAGE);
	CHECK_EQ_INT(cli(&cfg, NULL, NULL, NULL, NULL, NULL), GUESTS_EXIT_USAGE);
	CHECK_EQ_INT(cli(&cfg, &text, "help", NULL, NULL, NULL), GUESTS_EXIT_OK);
	CHECK(strstr(text, "Usage: threshold guest") != NULL);
	free(text);

	/* The CLI's creations are audited with a cli: actor; its reads are not. */
	store *st;
	store_txn *t;
	CHECK_EQ_INT(store_open(cfg.store_path, cfg.map_size_mb, &st), TH_OK);
	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	uint64_t seq;
	unsigned char hash[AUDIT_HASH_LEN];
	CHECK_EQ_INT(audit_head(t, &seq, hash), TH_OK);
	CHECK(seq == 2);
	json_t *rec = NULL;
	unsigned char key[8];
	const void *v;
	size_t vl;
	store_u64_key(key, 1);
	CHECK_EQ_INT(store_get(t, STORE_AUDIT, key, 8, &v, &vl), TH_OK);
	rec = json_loadb(v, vl, 0, NULL);
	CHECK_STR(json_string_value(json_object_get(rec, "kind")), "guest_created");
	CHECK_STR(json_string_value(json_object_get(rec, "subject")), id);
	const char *actor = json_string_value(json_object_get(rec, "actor"));
	CHECK(actor && strncmp(actor, "cli:", 4) == 0 && actor[4]);
	json_decref(rec);
	store_txn_abort(t);
	store_close(st);

	json_decref(made);
	config_free(&cfg);
	test_rmtree(dir);
	free(dir);
}

/* The account_data actions in the outbox, by user id. */
static int block_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key;
	(void)klen;
	json_t *a = json_loadb(val, vlen, 0, NULL);
	const char *op = json_string_value(json_object_get(a, "op"));
	if (op && !strcmp(op, "account_data")) {
		CHECK_STR(json_string_value(json_object_get(a, "type")), "m.invite_permission_config");
		const char *u = json_string_value(json_object_get(a, "user_id"));
		json_t *n = json_object_get(ctx, u);
		json_object_set_new(ctx, u, json_integer(json_integer_value(n) + 1));
	}
	json_decref(a);
	return 0;
}

/*
 * A store from before invites were blocked at the homeserver: at the first
 * start every active guest gets the block queued, erased guests and the bot
 * none; at the next start nothing more is queued.
 */
static void test_block_invites_migrate(void)
{
	struct test_env e;
	env_init(&e);
	static const char *const old[] = {"@guest_0123456789abcdef0123456789abcdef:test.local",
	                                  "@guest_fedcba9876543210fedcba9876543210:test.local"};
	const char *erased = "@guest_00000000000000000000000000000001:test.local";
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	for (size_t i = 0; i < 2; i++) {
		json_t *rec = json_pack("{s:s, s:s, s:I, s:s}", "kind", "guest", "pseudonym",
		                        i ? "Amber Otter" : "Blue Heron", "created_ms", (json_int_t)1,
		                        "state", "active");
		CHECK_EQ_INT(store_put_json(t, STORE_USERS, old[i], rec), TH_OK);
		json_decref(rec);
	}
	json_t *rec = json_pack("{s:s, s:s, s:I, s:s}", "kind", "guest", "pseudonym", "", "created_ms",
	                        (json_int_t)1, "state", "erased");
	CHECK_EQ_INT(store_put_json(t, STORE_USERS, erased, rec), TH_OK);
	json_decref(rec);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);

	size_t n = 99;
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(guests_block_invites_migrate(t, &n), TH_OK);
	CHECK_EQ_INT(n, 2);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);

	json_t *seen = json_object();
	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	CHECK_EQ_INT(store_walk(t, STORE_OUTBOX, NULL, 0, block_one, seen), TH_OK);
	store_txn_abort(t);
	CHECK_EQ_INT(json_object_size(seen), 2);
	CHECK_EQ_INT(json_integer_value(json_object_get(seen, old[0])), 1);
	CHECK_EQ_INT(json_integer_value(json_object_get(seen, old[1])), 1);
	CHECK(json_object_get(seen, erased) == NULL);
	json_decref(seen);

	/* Once only: a second start, and guests made since, get nothing more
	 * from the migration (guests_create queues their block itself). */
	struct guest g;
	CHECK_EQ_INT(store_txn_begin(e.st, 1, &t), TH_OK);
	CHECK_EQ_INT(guests_create(&e.cfg, t, e.au, "cli:test", &g), TH_OK);
	CHECK_EQ_INT(guests_block_invites_migrate(t, &n), TH_OK);
	CHECK_EQ_INT(n, 0);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	seen = json_object();
	CHECK_EQ_INT(store_txn_begin(e.st, 0, &t), TH_OK);
	CHECK_EQ_INT(store_walk(t, STORE_OUTBOX, NULL, 0, block_one, seen), TH_OK);
	store_txn_abort(t);
	CHECK_EQ_INT(json_object_size(seen), 3);
	CHECK_EQ_INT(json_integer_value(json_object_get(seen, old[0])), 1);
	CHECK_EQ_INT(json_integer_value(json_object_get(seen, g.user_id)), 1);
	json_decref(seen);
	test_env_close(&e);
}

int main(void)
{
	log_threshold = LOG_WARN;
	test_word_lists();
	test_random_pseudonym();
	test_room_pseudonyms();
	test_create_and_read();
	test_block_invites_migrate();
	test_abort_and_errors();
	test_many();
	test_cli();
	return TEST_DONE();
}
