/*
 * retention.c - the retention job, leads' holds, the homeserver purge of
 * expired conversation rooms, and `threshold hold` / `threshold retention`.
 * retention.h describes the rules and the storage.
 */
#include "retention.h"
#include "cases.h"
#include "hs_admin.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "config.h"
#include "conv.h"
#include "guests.h"
#include "jsonx.h"
#include "log.h"
#include "util.h"

#define HOLD_PREFIX  "hold"
#define PURGE_PREFIX "purge"
#define MAX_KEY      (8 + 256)
#define MAX_REASON   500 /* bytes of a hold's reason */

/* <prefix> 0x00 <id> */
static size_t meta_key(unsigned char *key, const char *prefix, const char *id)
{
	size_t p = strlen(prefix), n = strlen(id);
	if (n > 255)
		n = 255;
	memcpy(key, prefix, p);
	key[p] = 0;
	memcpy(key + p + 1, id, n);
	return p + 1 + n;
}

uint64_t retention_due_ms(const struct config_service *svc, const json_t *conv)
{
	uint64_t created = (uint64_t)json_integer_value(json_object_get(conv, "created_ms"));
	if (svc && svc->retention_s && created)
		return created + (uint64_t)svc->retention_s * 1000u;
	return (uint64_t)json_integer_value(json_object_get(conv, "expires_ms"));
}

int retention_case_holds(store_txn *t, const char *guest)
{
	/* A case not closed keeps its guest's conversation (docs/privacy.md). */
	return cases_guest_open(t, guest) == 1;
}

static int hold_lookup(store_txn *t, const char *id, json_t **hold)
{
	unsigned char key[MAX_KEY];
	size_t klen = meta_key(key, HOLD_PREFIX, id);
	json_t *h = NULL;
	int rc = store_get_jsonb(t, STORE_META, key, klen, &h);
	if (rc == TH_ENOTFOUND)
		return 0;
	if (rc)
		return -rc;
	if (hold)
		*hold = h;
	else
		json_decref(h);
	return 1;
}

int retention_hold_get(store_txn *t, const char *guest, const char *room, json_t **hold)
{
	int r = hold_lookup(t, guest, hold);
	if (r == 0 && room)
		r = hold_lookup(t, room, hold);
	return r;
}

/* ---- the job --------------------------------------------------------- */

struct due {
	const struct config *cfg;
	uint64_t now;
	char **guests;
	size_t n;
};

static int collect_due(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct due *d = ctx;
	if (klen > GUESTS_MAX_USER_ID)
		return 0;
	json_t *c = json_loadb(val, vlen, 0, NULL);
	const struct config_service *svc =
	        config_service_find(d->cfg, jsonx_str(c, "service") ? jsonx_str(c, "service") : "");
	uint64_t due = retention_due_ms(svc, c);
	json_decref(c);
	if (due && due <= d->now) {
		d->guests = xrealloc(d->guests, (d->n + 1) * sizeof(char *));
		d->guests[d->n++] = xstrndup(key, klen);
	}
	return 0;
}

/* Remove one due conversation unless something keeps it; *gone says which. */
static int remove_one(const struct txn_env *env, const char *guest, uint64_t now, int *gone)
{
	*gone = 0;
	store_txn *t;
	int rc = store_txn_begin(env->st, 1, &t);
	if (rc)
		return rc;
	json_t *c = NULL;
	rc = store_get_json(t, STORE_CONVS, guest, &c);
	if (rc == TH_ENOTFOUND) {
		store_txn_abort(t);
		return TH_OK;
	}
	if (rc)
		goto fail;
	const char *room = jsonx_str(c, "room");
	const char *service = jsonx_str(c, "service");
	const struct config_service *svc = config_service_find(env->cfg, service ? service : "");
	uint64_t due = retention_due_ms(svc, c);
	int held = retention_hold_get(t, guest, room, NULL);
	if (held < 0) {
		rc = -held;
		goto fail;
	}
	if (!due || due > now || held || retention_case_holds(t, guest)) {
		json_decref(c);
		store_txn_abort(t);
		return TH_OK;
	}
	char *room_copy = room ? xstrdup(room) : NULL;
	json_t *details = json_pack("{s:s?, s:I, s:I}", "service", service, "due_ms", (json_int_t)due,
	                            "retention_s", (json_int_t)(svc ? svc->retention_s : 0));
	json_decref(c);
	if ((rc = conv_remove(env, t, guest))) {
		json_decref(details);
		free(room_copy);
		goto fail_nc;
	}
	if (env->au) {
		struct audit_rec rec = {.kind = AUDIT_RETENTION_REMOVED,
		                        .actor = "threshold",
		                        .subject = guest,
		                        .room = room_copy,
		                        .reason = "retention",
		                        .details = details};
		rc = audit_append(env->au, t, &rec, NULL);
	}
	json_decref(details);
	if (!rc && room_copy && env->cfg->hs_admin_token_file) {
		unsigned char key[MAX_KEY];
		size_t klen = meta_key(key, PURGE_PREFIX, room_copy);
		json_t *p = json_pack("{s:s, s:I}", "guest", guest, "since", (json_int_t)now);
		char *v = json_dumps(p, JSON_COMPACT);
		rc = store_put(t, STORE_META, key, klen, v, strlen(v), 0);
		free(v);
		json_decref(p);
	}
	free(room_copy);
	if (rc)
		goto fail_nc;
	if ((rc = store_txn_commit(t)))
		return rc;
	*gone = 1;
	return TH_OK;
fail:
	json_decref(c);
fail_nc:
	store_txn_abort(t);
	return rc;
}

int retention_run(const struct txn_env *env, uint64_t now_ms, size_t *removed)
{
	*removed = 0;
	struct due d = {env->cfg, now_ms, NULL, 0};
	store_txn *t;
	int rc = store_txn_begin(env->st, 0, &t);
	if (rc)
		return rc;
	rc = store_walk(t, STORE_CONVS, NULL, 0, collect_due, &d);
	store_txn_abort(t);
	for (size_t i = 0; !rc && i < d.n; i++) {
		int gone;
		rc = remove_one(env, d.guests[i], now_ms, &gone);
		*removed += (size_t)gone;
	}
	for (size_t i = 0; i < d.n; i++)
		free(d.guests[i]);
	free(d.guests);
	return rc;
}

/* ---- the homeserver ---------------------------------------------------- */

/* The admin token: first line of a regular file no one else can read. */
int retention_hs_room_delete(const struct config *cfg, const char *room_id, long *status)
{
	*status = 0;
	hs_admin *h = NULL;
	int rc = hs_admin_open(cfg, &h);
	if (rc)
		return rc;
	rc = hs_admin_room_delete(h, room_id, status);
	hs_admin_close(h);
	return rc;
}

struct purge_list {
	char **rooms;
	size_t n;
};

static int collect_purge(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)val;
	(void)vlen;
	struct purge_list *l = ctx;
	size_t p = strlen(PURGE_PREFIX) + 1;
	if (klen < p || memcmp(key, PURGE_PREFIX "\0", p) != 0)
		return 1;
	l->rooms = xrealloc(l->rooms, (l->n + 1) * sizeof(char *));
	l->rooms[l->n++] = xstrndup((const char *)key + p, klen - p);
	return 0;
}

static int purge_list_read(store_txn *t, struct purge_list *l)
{
	unsigned char from[8];
	memcpy(from, PURGE_PREFIX, strlen(PURGE_PREFIX));
	from[strlen(PURGE_PREFIX)] = 0;
	return store_walk(t, STORE_META, from, strlen(PURGE_PREFIX) + 1, collect_purge, l);
}

static void purge_list_free(struct purge_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->rooms[i]);
	free(l->rooms);
}

int retention_purge_pending(const struct config *cfg, store *st, size_t *done)
{
	*done = 0;
	if (!cfg->hs_admin_token_file)
		return TH_OK;
	struct purge_list l = {NULL, 0};
	store_txn *t;
	int rc = store_txn_begin(st, 0, &t);
	if (rc)
		return rc;
	rc = purge_list_read(t, &l);
	store_txn_abort(t);
	for (size_t i = 0; !rc && i < l.n; i++) {
		long status = 0;
		int hrc = retention_hs_room_delete(cfg, l.rooms[i], &status);
		int forget = hrc == TH_OK || (hrc == TH_EHTTP && (status == 400 || status == 404));
		if (hrc == TH_EHTTP && !forget)
			LOG(LOG_WARN,
			    "retention: the homeserver refused to delete room %s (HTTP %ld); will retry",
			    l.rooms[i], status);
		else if (hrc && hrc != TH_EHTTP)
			LOG(LOG_WARN,
			    "retention: cannot ask the homeserver to delete room %s: %s; will retry",
			    l.rooms[i], th_strerror(hrc));
		if (hrc == TH_ECONFIG)
			break;
		if (!forget)
			continue;
		if (hrc == TH_OK) {
			LOG(LOG_INFO, "retention: room %s is being deleted and purged on the homeserver",
			    l.rooms[i]);
			(*done)++;
		} else {
			LOG(LOG_INFO,
			    "retention: the homeserver does not know room %s (HTTP %ld); nothing to purge",
			    l.rooms[i], status);
		}
		unsigned char key[MAX_KEY];
		size_t klen = meta_key(key, PURGE_PREFIX, l.rooms[i]);
		if ((rc = store_txn_begin(st, 1, &t)))
			break;
		rc = store_del(t, STORE_META, key, klen);
		if (rc == TH_ENOTFOUND)
			rc = TH_OK;
		if (rc)
			store_txn_abort(t);
		else
			rc = store_txn_commit(t);
	}
	purge_list_free(&l);
	return rc;
}

/* ---- the CLI ------------------------------------------------------------ */

static void fmt_time(char out[32], uint64_t ms)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	if (!ms || !gmtime_r(&s, &tm) || !strftime(out, 32, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(out, 32, "-");
}

/* Terminal-safe copy: control bytes become '?'.  New string. */
static char *clean(const char *s)
{
	char *o = xstrdup(s ? s : "");
	for (unsigned char *p = (unsigned char *)o; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			*p = '?';
	return o;
}

struct room_find {
	const char *room;
	char *guest;
};

static int find_room(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct room_find *f = ctx;
	json_t *c = json_loadb(val, vlen, 0, NULL);
	const char *room = jsonx_str(c, "room");
	int hit = room && !strcmp(room, f->room);
	json_decref(c);
	if (hit)
		f->guest = xstrndup(key, klen);
	return hit;
}

/*
 * Resolve a hold's target: a room id (a conversation's room), a guest id,
 * a guest localpart or a pseudonym.  @p guest: new string; @p room: new
 * string or NULL (a guest without a conversation).
 */
static int resolve_target(const struct config *cfg, store_txn *t, const char *who, char **guest, char **room)
{
	*guest = *room = NULL;
	if (who[0] == '!') {
		struct room_find f = {who, NULL};
		int rc = store_walk(t, STORE_CONVS, NULL, 0, find_room, &f);
		if (rc)
			return rc;
		if (!f.guest)
			return TH_ENOTFOUND;
		*guest = f.guest;
		*room = xstrdup(who);
		return TH_OK;
	}
	struct guest g;
	int rc = who[0] == '@' ? guests_get(t, who, &g) : guests_find_by_pseudonym(t, who, &g);
	if (rc == TH_ENOTFOUND && who[0] != '@') {
		char *id = xasprintf("@%s:%s", who, cfg->server_name);
		rc = guests_get(t, id, &g);
		free(id);
	}
	if (rc)
		return rc;
	*guest = xstrdup(g.user_id);
	json_t *c = NULL;
	if (store_get_json(t, STORE_CONVS, g.user_id, &c) == TH_OK && jsonx_str(c, "room"))
		*room = xstrdup(jsonx_str(c, "room"));
	json_decref(c);
	return TH_OK;
}

static int open_both(const struct config *cfg, store **st, audit **a)
{
	*st = NULL;
	if (a)
		*a = NULL;
	if (store_open(cfg->store_path, cfg->map_size_mb, st) != TH_OK) {
		fprintf(stderr, "threshold: cannot open the store %s (see above)\n", cfg->store_path);
		return -1;
	}
	if (a && audit_open_config(*st, cfg, a) != TH_OK) {
		fprintf(stderr, "threshold: cannot open the audit log (see above)\n");
		store_close(*st);
		*st = NULL;
		return -1;
	}
	return 0;
}

static int hold_change(const struct config *cfg, int add, const char *who, const char *reason)
{
	store *st;
	audit *a;
	if (open_both(cfg, &st, &a))
		return 1;
	store_txn *t;
	char *guest = NULL, *room = NULL, *actor = th_cli_actor();
	int code = 1;
	int rc = store_txn_begin(st, 1, &t);
	if (rc)
		goto store_fail;
	rc = resolve_target(cfg, t, who, &guest, &room);
	if (rc == TH_ENOTFOUND) {
		char *cw = clean(who);
		fprintf(stderr, "threshold: hold: no guest or conversation room '%s'\n", cw);
		free(cw);
		store_txn_abort(t);
		goto out;
	}
	if (rc)
		goto abort;
	/* The hold is kept under what was named: a guest's id, or the room. */
	const char *key_id = who[0] == '!' ? room : guest;
	unsigned char key[MAX_KEY];
	size_t klen = meta_key(key, HOLD_PREFIX, key_id);
	json_t *old = NULL;
	int had = hold_lookup(t, key_id, &old);
	if (had < 0) {
		rc = -had;
		goto abort;
	}
	json_decref(old);
	if (add && had) {
		fprintf(stderr, "threshold: hold: %s is already held (see `threshold hold list`)\n", key_id);
		store_txn_abort(t);
		goto out;
	}
	if (!add && !had) {
		fprintf(stderr, "threshold: hold: there is no hold on %s (see `threshold hold list`)\n",
		        key_id);
		store_txn_abort(t);
		goto out;
	}
	uint64_t now = th_now_ms();
	if (add) {
		json_t *h = json_pack("{s:s, s:s?, s:s, s:I, s:s}", "guest", guest, "room", room, "by", actor,
		                      "ts", (json_int_t)now, "reason", reason);
		char *v = json_dumps(h, JSON_COMPACT);
		json_decref(h);
		rc = store_put(t, STORE_META, key, klen, v, strlen(v), 0);
		free(v);
	} else {
		rc = store_del(t, STORE_META, key, klen);
	}
	if (rc)
		goto abort;
	json_t *d = json_pack("{s:s}", "target", who[0] == '!' ? "room" : "guest");
	struct audit_rec rec = {.kind = add ? AUDIT_HOLD_PLACED : AUDIT_HOLD_RELEASED,
	                        .actor = actor,
	                        .subject = guest,
	                        .room = room,
	                        .details = d,
	                        .sealed = reason};
	rc = audit_append(a, t, &rec, NULL);
	if (rc == TH_ENOTFOUND) { /* the guest's key was erased: record it without the reason */
		rec.sealed = NULL;
		rc = audit_append(a, t, &rec, NULL);
	}
	json_decref(d);
	if (rc)
		goto abort;
	if ((rc = store_txn_commit(t)))
		goto store_fail;
	if (add)
		printf("held: the conversation of %s%s%s is kept until the hold is removed (recorded as "
		       "hold_placed)\n",
		       guest, room ? " in " : "", room ? room : " (no conversation now)");
	else
		printf("released: the conversation of %s goes at its retention time, or at the next run if "
		       "that has passed (recorded as hold_released)\n",
		       guest);
	code = 0;
	goto out;
abort:
	store_txn_abort(t);
store_fail:
	fprintf(stderr, "threshold: hold: %s\n", th_strerror(rc));
out:
	free(guest);
	free(room);
	free(actor);
	audit_close(a);
	store_close(st);
	return code;
}

struct hold_walk {
	json_t *list;
};

static int collect_hold(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct hold_walk *w = ctx;
	size_t p = strlen(HOLD_PREFIX) + 1;
	if (klen < p || memcmp(key, HOLD_PREFIX "\0", p) != 0)
		return 1;
	json_t *h = json_loadb(val, vlen, 0, NULL);
	if (json_is_object(h)) {
		json_object_set_new(h, "on", json_stringn((const char *)key + p, klen - p));
		json_array_append_new(w->list, h);
	} else {
		json_decref(h);
	}
	return 0;
}

static int holds_read(store_txn *t, json_t **out)
{
	struct hold_walk w = {json_array()};
	unsigned char from[8];
	memcpy(from, HOLD_PREFIX, strlen(HOLD_PREFIX));
	from[strlen(HOLD_PREFIX)] = 0;
	int rc = store_walk(t, STORE_META, from, strlen(HOLD_PREFIX) + 1, collect_hold, &w);
	if (rc) {
		json_decref(w.list);
		return rc;
	}
	*out = w.list;
	return TH_OK;
}

static int hold_list(const struct config *cfg)
{
	store *st;
	if (open_both(cfg, &st, NULL))
		return 1;
	store_txn *t;
	json_t *list = NULL;
	int rc = store_txn_begin(st, 0, &t);
	if (!rc) {
		rc = holds_read(t, &list);
		store_txn_abort(t);
	}
	store_close(st);
	if (rc) {
		fprintf(stderr, "threshold: hold list: %s\n", th_strerror(rc));
		return 1;
	}
	if (!json_array_size(list))
		printf("no holds\n");
	size_t i;
	json_t *h;
	json_array_foreach(list, i, h)
	{
		char when[32];
		fmt_time(when, (uint64_t)json_integer_value(json_object_get(h, "ts")));
		char *reason = clean(jsonx_str(h, "reason")), *by = clean(jsonx_str(h, "by"));
		printf("%s  guest %s  since %s  by %s  reason: %s\n", jsonx_str(h, "on"),
		       jsonx_str(h, "guest") ? jsonx_str(h, "guest") : "-", when, by, reason);
		free(reason);
		free(by);
	}
	json_decref(list);
	return 0;
}

int retention_hold_cli_main(const struct config *cfg, int argc, char **argv)
{
	const char *usage =
	        "Usage: threshold hold add WHO --reason TEXT\n"
	        "       threshold hold remove WHO [--reason TEXT]\n"
	        "       threshold hold list\n"
	        "WHO is a guest (user id, localpart or pseudonym) or a conversation's room id.\n"
	        "A hold keeps that conversation past its retention until it is removed; both are\n"
	        "recorded in the audit log (hold_placed, hold_released), the reason sealed.\n";
	if (argc < 1 || !strcmp(argv[0], "help") || !strcmp(argv[0], "--help")) {
		fputs(usage, argc < 1 ? stderr : stdout);
		return argc < 1 ? 2 : 0;
	}
	const char *cmd = argv[0];
	if (!strcmp(cmd, "list"))
		return argc == 1 ? hold_list(cfg) : (fputs(usage, stderr), 2);
	if (strcmp(cmd, "add") && strcmp(cmd, "remove")) {
		fputs(usage, stderr);
		return 2;
	}
	const char *reason = NULL;
	char *who = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--reason") && i + 1 < argc) {
			reason = argv[++i];
		} else if (argv[i][0] == '-') {
			fprintf(stderr, "threshold: hold: unknown option '%s'\n", argv[i]);
			free(who);
			return 2;
		} else {
			char *w = who ? xasprintf("%s %s", who, argv[i]) : xstrdup(argv[i]);
			free(who);
			who = w;
		}
	}
	int add = !strcmp(cmd, "add");
	if (!who || (add && (!reason || strlen(reason) < 5))) {
		fprintf(stderr, "threshold: hold %s: %s\n%s", cmd,
		        !who ? "which guest or room?"
		             : "say why with --reason (a why, not names; at least 5 characters)",
		        usage);
		free(who);
		return 2;
	}
	if (reason && strlen(reason) > MAX_REASON) {
		fprintf(stderr, "threshold: hold: --reason is over %d bytes\n", MAX_REASON);
		free(who);
		return 2;
	}
	int code = hold_change(cfg, add, who, reason);
	free(who);
	return code;
}

/* ---- retention report ------------------------------------------------- */

struct report {
	const struct config *cfg;
	store_txn *t;
	uint64_t now;
	json_t *rows;
	int rc;
};

static void fmt_span(char *out, size_t len, uint64_t ms)
{
	uint64_t s = ms / 1000;
	if (s >= 86400)
		snprintf(out, len, "%llud %lluh", (unsigned long long)(s / 86400),
		         (unsigned long long)(s % 86400 / 3600));
	else if (s >= 3600)
		snprintf(out, len, "%lluh %llum", (unsigned long long)(s / 3600),
		         (unsigned long long)(s % 3600 / 60));
	else
		snprintf(out, len, "%llum %llus", (unsigned long long)(s / 60), (unsigned long long)(s % 60));
}

static int report_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct report *r = ctx;
	char *guest = xstrndup(key, klen);
	json_t *c = json_loadb(val, vlen, 0, NULL);
	const char *service = jsonx_str(c, "service"), *room = jsonx_str(c, "room");
	const struct config_service *svc = config_service_find(r->cfg, service ? service : "");
	uint64_t due = retention_due_ms(svc, c);
	json_t *hold = NULL;
	int held = retention_hold_get(r->t, guest, room, &hold);
	int by_case = retention_case_holds(r->t, guest);
	char why[600], span[64];
	const char *status;
	if (held < 0) {
		r->rc = -held;
		json_decref(c);
		free(guest);
		return 1;
	}
	if (held) {
		char since[32];
		fmt_time(since, (uint64_t)json_integer_value(json_object_get(hold, "ts")));
		char *reason = clean(jsonx_str(hold, "reason")), *by = clean(jsonx_str(hold, "by"));
		status = "kept";
		snprintf(why, sizeof(why), "held by %s since %s (on %s): %s", by, since,
		         hold_lookup(r->t, guest, NULL) == 1 ? "the guest" : "the room", reason);
		free(reason);
		free(by);
	} else if (by_case) {
		status = "kept";
		snprintf(why, sizeof(why), "an open case about this guest keeps it");
	} else if (!due) {
		status = "kept";
		snprintf(why, sizeof(why), "no start time or expiry recorded: kept until erased");
	} else if (due <= r->now) {
		status = "due";
		snprintf(why, sizeof(why), "past its retention: removed at the next run (within %u s)",
		         RETENTION_INTERVAL_MS / 1000);
	} else {
		status = "goes";
		fmt_span(span, sizeof(span), due - r->now);
		if (svc && svc->retention_s) {
			char ret[64];
			fmt_span(ret, sizeof(ret), (uint64_t)svc->retention_s * 1000u);
			snprintf(why, sizeof(why), "in %s: %s's retention (%s after it started)", span,
			         service, ret);
		} else {
			snprintf(why, sizeof(why),
			         "in %s: when the conversation expires (%s's conversation_expiry_days)", span,
			         service ? service : "?");
		}
	}
	json_array_append_new(r->rows, json_pack("{s:s, s:s?, s:s?, s:I, s:I, s:s, s:s}", "guest", guest,
	                                         "service", service, "room", room, "started_ms",
	                                         json_integer_value(json_object_get(c, "created_ms")),
	                                         "due_ms", (json_int_t)due, "status", status, "why", why));
	json_decref(hold);
	json_decref(c);
	free(guest);
	return 0;
}

int retention_cli_main(const struct config *cfg, int argc, char **argv)
{
	int as_json = argc == 2 && !strcmp(argv[1], "--json");
	if (argc < 1 || strcmp(argv[0], "report") || (argc == 2 && !as_json) || argc > 2) {
		fprintf(stderr,
		        "Usage: threshold retention report [--json]\n"
		        "  what Threshold keeps, when each conversation goes, and why anything is kept\n");
		return 2;
	}
	store *st;
	if (open_both(cfg, &st, NULL))
		return 1;
	store_txn *t;
	struct report r = {cfg, NULL, th_now_ms(), json_array(), TH_OK};
	struct purge_list pl = {NULL, 0};
	json_t *holds = NULL;
	int rc = store_txn_begin(st, 0, &t);
	if (!rc) {
		r.t = t;
		rc = store_walk(t, STORE_CONVS, NULL, 0, report_one, &r);
		if (!rc)
			rc = r.rc;
		if (!rc)
			rc = purge_list_read(t, &pl);
		if (!rc)
			rc = holds_read(t, &holds);
		store_txn_abort(t);
	}
	store_close(st);
	if (rc) {
		fprintf(stderr, "threshold: retention report: cannot read the store: %s\n", th_strerror(rc));
		json_decref(r.rows);
		purge_list_free(&pl);
		return 1;
	}
	json_t *purges = json_array();
	for (size_t i = 0; i < pl.n; i++)
		json_array_append_new(purges, json_string(pl.rooms[i]));
	purge_list_free(&pl);
	if (as_json) {
		json_t *o = json_pack("{s:o, s:o, s:o, s:b}", "conversations", r.rows, "holds", holds,
		                      "rooms_to_purge", purges, "homeserver_purge",
		                      cfg->hs_admin_token_file != NULL);
		char *s = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
		printf("%s\n", s);
		free(s);
		json_decref(o);
		return 0;
	}
	printf("Conversations held by Threshold: %zu\n", json_array_size(r.rows));
	size_t i;
	json_t *row;
	json_array_foreach(r.rows, i, row)
	{
		char started[32];
		fmt_time(started, (uint64_t)json_integer_value(json_object_get(row, "started_ms")));
		printf("  %s  %s  started %s  %s: %s\n", jsonx_str(row, "guest"),
		       jsonx_str(row, "service") ? jsonx_str(row, "service") : "-", started,
		       jsonx_str(row, "status"), jsonx_str(row, "why"));
	}
	printf("Holds: %zu (see `threshold hold list`)\n", json_array_size(holds));
	if (cfg->hs_admin_token_file)
		printf("On the homeserver: each conversation's room is deleted and purged when it goes "
		       "(homeserver.admin_token_file); %zu room(s) waiting for that now\n",
		       json_array_size(purges));
	else
		printf("On the homeserver: rooms are NOT deleted (no homeserver.admin_token_file): their "
		       "history stays under the homeserver's own retention settings (docs/privacy.md)\n");
	json_decref(r.rows);
	json_decref(holds);
	json_decref(purges);
	return 0;
}
