/*
 * outbox.c - the durable action queue and the worker thread that drains it.
 *
 * Head-of-line: the worker always runs the lowest sequence number and does
 * not look past it until it is done or dropped, so actions reach the
 * homeserver in the order policy decided them (an invite is rejected before
 * the notice about it is sent).
 *
 * Sequence numbers never repeat within a store: STORE_META "outbox_seq"
 * keeps the highest ever pushed, so an outbox drained empty does not start
 * again at 1 and hand the homeserver a Matrix transaction id it has seen.
 * STORE_META "outbox_txn_prefix" is random per store, so a wiped store does
 * not collide with the ids an older one used.
 */
#define _GNU_SOURCE /* fopencookie */
#include "outbox.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "config.h"
#include "cs.h"
#include "log.h"
#include "conv.h"
#include "jsonx.h"
#include "qr.h"
#include "rooms.h"
#include "util.h"

#define BACKOFF_BASE_MS 500u
/* Idle, the worker rechecks the queue this often even without a wake-up, so
 * actions another process queued (threshold guest create) run promptly. */
#define IDLE_POLL_MS 1000u
/* After a store error, wait this long before touching the store again. */
#define STORE_RETRY_MS 1000u

#define META_SEQ    "outbox_seq"
#define META_PREFIX "outbox_txn_prefix"
#define PREFIX_MAX  32 /* hex characters */

struct outbox {
	store *st;
	const struct config *cfg;
	cs_client *cs; /* used by the worker thread only */
	char txn_prefix[PREFIX_MAX + 1];
	pthread_t thread;
	pthread_mutex_t mu; /* guards stop and woken */
	pthread_cond_t cv;
	int stop;
	int woken;
};

/* One homeserver request an action turns into. */
struct request {
	const char *method;
	char *path;               /* escaped; new string */
	const char *user_id;      /* borrowed from the action, or NULL */
	json_t *body;             /* new reference, or NULL */
	const char *done_errcode; /* an errcode that means "already done", or NULL */
};

typedef void (*build_fn)(const outbox *ob, uint64_t seq, const json_t *a, struct request *req);
/* Instead of build: an op that does more than one request's work itself.
 * Returns as cs_request (TH_OK with @p r filled, whatever the status); the
 * done fn sees r->body. */
typedef int (*run_fn)(outbox *ob, uint64_t seq, const json_t *a, struct cs_response *r);
/* After success, in the write txn that removes the action: what follows from
 * the homeserver's answer @p resp (borrowed, may be NULL). */
typedef int (*done_fn)(const outbox *ob, store_txn *t, const json_t *a, const json_t *resp);

static const char *field(const json_t *a, const char *key)
{
	return json_string_value(json_object_get(a, key));
}

static void build_membership(const json_t *a, const char *verb, struct request *req)
{
	char *room = cs_escape(field(a, "room_id"));
	req->method = "POST";
	req->path = xasprintf("/_matrix/client/v3/rooms/%s/%s", room, verb);
	req->user_id = field(a, "user_id");
	req->body = json_object();
	/* spec: an optional reason shown with the membership change (e.g. a rejected invite) */
	if (field(a, "reason"))
		json_object_set_new(req->body, "reason", json_string(field(a, "reason")));
	free(room);
}

static void build_join(const outbox *ob, uint64_t seq, const json_t *a, struct request *req)
{
	(void)ob;
	(void)seq;
	build_membership(a, "join", req);
}

static void build_leave(const outbox *ob, uint64_t seq, const json_t *a, struct request *req)
{
	/* spec: CS API, POST /rooms/{roomId}/leave: also rejects a pending invite */
	(void)ob;
	(void)seq;
	build_membership(a, "leave", req);
}

static void build_send(const outbox *ob, uint64_t seq, const json_t *a, struct request *req)
{
	/* spec: CS API, PUT /rooms/{roomId}/send/{eventType}/{txnId}: the server
	 * dedupes on txnId, so a resend of the same outbox entry is harmless. */
	char *room = cs_escape(field(a, "room_id"));
	char *type = cs_escape(field(a, "type"));
	req->method = "PUT";
	req->path = xasprintf("/_matrix/client/v3/rooms/%s/send/%s/th%s_%llu", room, type, ob->txn_prefix,
	                      (unsigned long long)seq);
	req->user_id = field(a, "user_id");
	req->body = json_incref(json_object_get(a, "content"));
	free(room);
	free(type);
}

static void build_register(const outbox *ob, uint64_t seq, const json_t *a, struct request *req)
{
	/* cs_register's request, made here because the worker needs the status
	 * to tell a 429 or 5xx (retry) from a refusal (drop). */
	(void)ob;
	(void)seq;
	req->method = "POST";
	req->path = xstrdup("/_matrix/client/v3/register");
	req->body = json_pack("{s:s, s:s, s:b}", "type", "m.login.application_service", "username",
	                      field(a, "localpart"), "inhibit_login", 1);
	req->done_errcode = "M_USER_IN_USE";
}

static void build_displayname(const outbox *ob, uint64_t seq, const json_t *a, struct request *req)
{
	(void)ob;
	(void)seq;
	char *user = cs_escape(field(a, "user_id"));
	req->method = "PUT";
	req->path = xasprintf("/_matrix/client/v3/profile/%s/displayname", user);
	req->user_id = field(a, "user_id");
	req->body = json_pack("{s:s}", "displayname", field(a, "displayname"));
	free(user);
}

/* @verb the target: invite or kick (spec: CS API, POST /rooms/{roomId}/{invite,kick}). */
static void build_target(const json_t *a, const char *verb, struct request *req)
{
	char *room = cs_escape(field(a, "room_id"));
	req->method = "POST";
	req->path = xasprintf("/_matrix/client/v3/rooms/%s/%s", room, verb);
	req->user_id = field(a, "user_id");
	req->body = json_pack("{s:s}", "user_id", field(a, "target"));
	if (field(a, "reason"))
		json_object_set_new(req->body, "reason", json_string(field(a, "reason")));
	free(room);
}

static void build_invite(const outbox *ob, uint64_t seq, const json_t *a, struct request *req)
{
	(void)ob;
	(void)seq;
	build_target(a, "invite", req);
}

static void build_kick(const outbox *ob, uint64_t seq, const json_t *a, struct request *req)
{
	/* a kick also withdraws a pending invite */
	(void)ob;
	(void)seq;
	build_target(a, "kick", req);
}

static void build_state(const outbox *ob, uint64_t seq, const json_t *a, struct request *req)
{
	/* spec: PUT /rooms/{roomId}/state/{eventType}/{stateKey}: idempotent */
	(void)ob;
	(void)seq;
	char *room = cs_escape(field(a, "room_id"));
	char *type = cs_escape(field(a, "type"));
	char *key = cs_escape(field(a, "state_key") ? field(a, "state_key") : "");
	req->method = "PUT";
	req->path = xasprintf("/_matrix/client/v3/rooms/%s/state/%s/%s", room, type, key);
	req->user_id = field(a, "user_id");
	req->body = json_incref(json_object_get(a, "content"));
	free(room);
	free(type);
	free(key);
}

static void build_redact(const outbox *ob, uint64_t seq, const json_t *a, struct request *req)
{
	/* spec: PUT /rooms/{roomId}/redact/{eventId}/{txnId}; the txn id makes a resend harmless. */
	char *room = cs_escape(field(a, "room_id"));
	char *event = cs_escape(field(a, "event_id"));
	req->method = "PUT";
	req->path = xasprintf("/_matrix/client/v3/rooms/%s/redact/%s/th%s_%llu", room, event, ob->txn_prefix,
	                      (unsigned long long)seq);
	req->user_id = field(a, "user_id");
	req->body = field(a, "reason") ? json_pack("{s:s}", "reason", field(a, "reason")) : json_object();
	free(room);
	free(event);
}

static void build_deactivate(const outbox *ob, uint64_t seq, const json_t *a, struct request *req)
{
	/* spec: CS API, POST /account/deactivate.  Synapse lets an application
	 * service deactivate its own users without user-interactive auth;
	 * "erase" asks it to treat the user as erased (GDPR) as well. */
	(void)ob;
	(void)seq;
	req->method = "POST";
	req->path = xstrdup("/_matrix/client/v3/account/deactivate");
	req->user_id = field(a, "user_id");
	req->body = json_pack("{s:b}", "erase", 1);
}

static void build_account_data(const outbox *ob, uint64_t seq, const json_t *a, struct request *req)
{
	/* spec: CS API, PUT /user/{userId}/account_data/{type}: idempotent.  For
	 * a guest, m.invite_permission_config {"default_action":"block"} makes
	 * the homeserver refuse every invite to them (spec v1.18, MSC4380). */
	(void)ob;
	(void)seq;
	char *user = cs_escape(field(a, "user_id"));
	char *type = cs_escape(field(a, "type"));
	req->method = "PUT";
	req->path = xasprintf("/_matrix/client/v3/user/%s/account_data/%s", user, type);
	req->user_id = field(a, "user_id");
	req->body = json_incref(json_object_get(a, "content"));
	free(user);
	free(type);
}

/* ---- guest_enter -------------------------------------------------------- */

/* A guest's invite permission (spec v1.18, MSC4380): blocked, or for the
 * moment of one invite, allowed. */
static int invite_permission(outbox *ob, const char *guest, int block, struct cs_response *r)
{
	char *user = cs_escape(guest);
	char *path = xasprintf("/_matrix/client/v3/user/%s/account_data/" OUTBOX_INVITE_PERMISSION, user);
	json_t *body = json_pack("{s:s}", "default_action", block ? "block" : "allow");
	int rc = cs_request(ob->cs, "PUT", path, guest, body, r);
	json_decref(body);
	free(path);
	free(user);
	return rc;
}

/*
 * Bring guest "target" into room R, which the homeserver would refuse as an
 * invite: allow invites to the guest, invite as U (the bot), join as the
 * guest, block invites again.  Whatever happens after the first step, the
 * last is tried; if it fails the action fails retryably and the next
 * attempt blocks again (every step is idempotent).  The invite's answer is
 * not decisive: a guest already in the room is refused an invite but joins
 * (again) without harm; the join's answer is the action's.
 */
static int run_guest_enter(outbox *ob, uint64_t seq, const json_t *a, struct cs_response *r)
{
	(void)seq;
	const char *guest = field(a, "target");
	struct cs_response u = {0}, inv = {0};
	int rc = invite_permission(ob, guest, 0, &u);
	if (rc) {
		/* No answer: the homeserver may have allowed invites all the same.
		 * Block again at once, not only at the next attempt. */
		if (invite_permission(ob, guest, 1, &u) == TH_OK)
			cs_response_clear(&u);
		return rc;
	}
	if (u.status / 100 != 2) {
		*r = u; /* nothing changed: the answer says why */
		return TH_OK;
	}
	cs_response_clear(&u);
	char *room = cs_escape(field(a, "room_id"));
	char *path = xasprintf("/_matrix/client/v3/rooms/%s/invite", room);
	json_t *body = json_pack("{s:s}", "user_id", guest);
	int irc = cs_request(ob->cs, "POST", path, field(a, "user_id"), body, &inv);
	json_decref(body);
	free(path);
	int jrc = TH_ENET;
	if (irc == TH_OK) {
		path = xasprintf("/_matrix/client/v3/rooms/%s/join", room);
		body = json_object();
		jrc = cs_request(ob->cs, "POST", path, guest, body, r);
		json_decref(body);
		free(path);
	}
	free(room);
	struct cs_response b = {0};
	int brc = invite_permission(ob, guest, 1, &b);
	int blocked = brc == TH_OK && b.status / 100 == 2;
	if (brc == TH_OK)
		cs_response_clear(&b);
	if (irc == TH_OK && jrc == TH_OK && r->status / 100 != 2 && inv.status / 100 != 2) {
		cs_response_clear(r); /* the invite's refusal says more than the join's */
		*r = inv;
	} else if (irc == TH_OK) {
		cs_response_clear(&inv);
	}
	if (!blocked) {
		LOG(LOG_WARN,
		    "outbox: guest_enter action %llu: could not block invites to the guest again; "
		    "retrying",
		    (unsigned long long)seq);
		if (jrc == TH_OK)
			cs_response_clear(r);
		return brc ? brc : TH_ENET;
	}
	return irc ? irc : jrc;
}

/* ---- create_room ---------------------------------------------------------- */

/*
 * createRoom has no transaction id, so an attempt whose answer was lost (a
 * timeout, or a crash before the commit that removes the action) may have
 * made the room.  Each room therefore carries its action's mark in its
 * m.room.create content, and the action records, before its first request,
 * that it has been tried.  A tried action first looks for its room among
 * the rooms the creator is joined to that the store does not know as
 * managed (a few: staff rooms, and any room such a lost attempt made); only
 * if none carries the mark is the room made.
 */
#define CREATE_LOOK_MAX 200 /* rooms whose create event one attempt reads */

/* Record on the action at @p seq that it has been tried, with its mark. */
static int create_mark_tried(outbox *ob, uint64_t seq, const json_t *a, const char *mark)
{
	json_t *b = json_deep_copy(a);
	json_object_set_new(b, "tried", json_string(mark));
	char *val = json_dumps(b, JSON_COMPACT);
	json_decref(b);
	if (!val)
		return TH_EINVAL;
	store_txn *t;
	unsigned char key[8];
	store_u64_key(key, seq);
	int rc = store_txn_begin(ob->st, 1, &t);
	if (!rc && (rc = store_put(t, STORE_OUTBOX, key, sizeof(key), val, strlen(val), 0)) != TH_OK)
		store_txn_abort(t);
	else if (!rc)
		rc = store_txn_commit(t);
	free(val);
	return rc;
}

/* The rooms @p user_id is joined to that the store does not hold as managed,
 * newest last as the homeserver lists them; a new array, or NULL with
 * @p rc set.  Answers that are not a list of strings count as none. */
static json_t *create_candidates(outbox *ob, const char *user_id, int *rc)
{
	struct cs_response jr = {0};
	*rc = cs_request(ob->cs, "GET", "/_matrix/client/v3/joined_rooms", user_id, NULL, &jr);
	if (*rc)
		return NULL;
	if (jr.status != 200) {
		*rc = jr.status >= 500 || jr.status == 429 || jr.status == 408 ? TH_ENET : TH_OK;
		cs_response_clear(&jr);
		return *rc ? NULL : json_array();
	}
	const struct config *cfg = ob->cfg;
	int guest = cfg->bot_user_id && cfg->guest_prefix && strcmp(user_id, cfg->bot_user_id) != 0 &&
	            config_user_in_namespace(cfg, user_id);
	json_t *out = json_array();
	store_txn *t;
	if ((*rc = store_txn_begin(ob->st, 0, &t)) != TH_OK) {
		cs_response_clear(&jr);
		json_decref(out);
		return NULL;
	}
	size_t i;
	json_t *id;
	json_array_foreach(json_object_get(jr.body, "joined_rooms"), i, id)
	{
		json_t *state = NULL;
		if (!json_is_string(id))
			continue;
		/* A guest's room is managed from its create event on (events.c), which
		 * may come before this retry: a guest is in few rooms, look at all. */
		if (!guest && store_get_json(t, STORE_ROOMS, json_string_value(id), &state) == TH_OK &&
		    rooms_is_managed(state)) {
			json_decref(state);
			continue;
		}
		json_decref(state);
		json_array_append(out, id);
	}
	store_txn_abort(t);
	cs_response_clear(&jr);
	return out;
}

/* Look for the room an earlier attempt made: on success @p found is its id
 * (a new string) or NULL. */
static int create_find(outbox *ob, const char *user_id, const char *mark, char **found)
{
	*found = NULL;
	int rc;
	json_t *rooms = create_candidates(ob, user_id, &rc);
	if (!rooms)
		return rc;
	size_t n = json_array_size(rooms), looked = 0;
	for (size_t i = n; i-- > 0 && !*found && looked < CREATE_LOOK_MAX; looked++) {
		const char *room_id = json_string_value(json_array_get(rooms, i));
		char *room = cs_escape(room_id);
		char *path = xasprintf("/_matrix/client/v3/rooms/%s/state/m.room.create/", room);
		free(room);
		struct cs_response r = {0};
		rc = cs_request(ob->cs, "GET", path, user_id, NULL, &r);
		free(path);
		if (rc) {
			json_decref(rooms);
			return rc;
		}
		const char *m = r.status == 200
		                        ? json_string_value(json_object_get(r.body, OUTBOX_CREATE_MARK))
		                        : NULL;
		if (m && strcmp(m, mark) == 0)
			*found = xstrdup(room_id);
		cs_response_clear(&r);
	}
	if (!*found && looked == CREATE_LOOK_MAX)
		LOG(LOG_WARN, "outbox: looked at %d rooms for one a lost createRoom may have made; making it",
		    CREATE_LOOK_MAX);
	json_decref(rooms);
	return TH_OK;
}

static int run_create_room(outbox *ob, uint64_t seq, const json_t *a, struct cs_response *r)
{
	const char *user_id = field(a, "user_id");
	char *mark = xasprintf("th%s_%llu", ob->txn_prefix, (unsigned long long)seq);
	int rc;
	if (field(a, "tried")) {
		char *found = NULL;
		if ((rc = create_find(ob, user_id, mark, &found)) != TH_OK) {
			free(mark);
			return rc;
		}
		if (found) {
			LOG(LOG_INFO, "outbox: create_room action %llu: an earlier attempt made %s; using it",
			    (unsigned long long)seq, found);
			memset(r, 0, sizeof(*r));
			r->status = 200;
			r->body = json_pack("{s:s}", "room_id", found);
			free(found);
			free(mark);
			return TH_OK;
		}
	} else if ((rc = create_mark_tried(ob, seq, a, mark)) != TH_OK) {
		free(mark);
		return rc;
	}
	json_t *body = json_deep_copy(json_object_get(a, "content"));
	json_t *cc = json_object_get(body, "creation_content");
	if (!json_is_object(cc)) {
		cc = json_object();
		json_object_set_new(body, "creation_content", cc);
	}
	json_object_set_new(cc, OUTBOX_CREATE_MARK, json_string(mark));
	rc = cs_request(ob->cs, "POST", "/_matrix/client/v3/createRoom", user_id, body, r);
	json_decref(body);
	free(mark);
	return rc;
}

static void build_staff_members(const outbox *ob, uint64_t seq, const json_t *a, struct request *req)
{
	/* spec: CS API, GET /rooms/{roomId}/joined_members: the bot must be joined */
	(void)ob;
	(void)seq;
	char *room = cs_escape(field(a, "room_id"));
	req->method = "GET";
	req->path = xasprintf("/_matrix/client/v3/rooms/%s/joined_members", room);
	req->user_id = field(a, "user_id");
	free(room);
}

json_t *outbox_message(const char *room_id, const char *user_id, json_t *content, const char *in_reply_to)
{
	if (in_reply_to)
		json_object_set_new(content, "m.relates_to",
		                    json_pack("{s:{s:s}}", "m.in_reply_to", "event_id", in_reply_to));
	return json_pack("{s:s, s:s, s:s, s:s, s:o}", "op", "send", "room_id", room_id, "user_id", user_id,
	                 "type", "m.room.message", "content", content);
}

json_t *outbox_notice(const char *room_id, const char *user_id, const char *body, const char *in_reply_to)
{
	return outbox_message(room_id, user_id, json_pack("{s:s, s:s}", "msgtype", "m.notice", "body", body),
	                      in_reply_to);
}

json_t *outbox_block_invites(const char *guest)
{
	return json_pack("{s:s, s:s, s:s, s:{s:s}}", "op", "account_data", "user_id", guest, "type",
	                 OUTBOX_INVITE_PERMISSION, "content", "default_action", "block");
}

/* The room exists: remember it as managed and tell whoever asked for it. */
static int done_create_room(const outbox *ob, store_txn *t, const json_t *a, const json_t *resp)
{
	const char *room_id = json_string_value(json_object_get(resp, "room_id"));
	if (!room_id) {
		LOG(LOG_WARN, "outbox: the homeserver made a room but did not say its id");
		return TH_OK;
	}
	int rc = rooms_mark_managed(t, room_id, field(a, "kind"));
	if (!rc && field(a, "conversation"))
		rc = conv_room_created(ob->cfg, t, field(a, "conversation"), room_id);
	const json_t *reply = json_object_get(a, "reply");
	if (rc || !json_is_object(reply))
		return rc;
	char *body = xasprintf("%s %s", field(reply, "body") ? field(reply, "body") : "Created", room_id);
	json_t *send = field(reply, "room_id") ? outbox_notice(field(reply, "room_id"), field(a, "user_id"),
	                                                       body, field(reply, "event_id"))
	                                       : NULL;
	free(body);
	rc = send ? outbox_push(t, send) : TH_OK;
	json_decref(send);
	return rc;
}

/* Who is in a staff room now: from here on its membership events keep it up to date. */
static int done_staff_members(const outbox *ob, store_txn *t, const json_t *a, const json_t *resp)
{
	(void)ob;
	const json_t *joined = json_object_get(resp, "joined");
	if (!json_is_object(joined)) {
		LOG(LOG_WARN, "outbox: the homeserver's joined_members answer has no \"joined\"");
		return TH_OK;
	}
	int rc = rooms_staff_refresh(t, field(a, "room_id"), joined);
	if (!rc)
		LOG(LOG_INFO, "staff room %s: %zu joined", field(a, "room_id"), json_object_size(joined));
	return rc;
}

/* ---- audit_export ------------------------------------------------------ */

/* The export is held in memory to upload it, so it is capped. */
#define EXPORT_MAX_BYTES (50u * 1024 * 1024)
#define EXPORT_MIMETYPE  "application/x-ndjson"

/* A memory FILE that refuses to grow past EXPORT_MAX_BYTES (a write past it
 * fails, so audit_export stops with TH_EIO and too_large says why). */
struct capbuf {
	char *buf;
	size_t len, cap;
	int too_large;
};

static ssize_t capbuf_write(void *cookie, const char *data, size_t n)
{
	struct capbuf *b = cookie;
	if (n > EXPORT_MAX_BYTES - b->len) {
		b->too_large = 1;
		return -1;
	}
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 65536;
		while (cap < b->len + n)
			cap *= 2;
		b->buf = xrealloc(b->buf, cap);
		b->cap = cap;
	}
	memcpy(b->buf + b->len, data, n);
	b->len += n;
	return (ssize_t)n;
}

/* An answer made here rather than by the homeserver: the lead is told why
 * there is no file (done_audit_export sends it), and the action ends. */
static int export_refused(struct cs_response *r, const char *why)
{
	memset(r, 0, sizeof(*r));
	r->status = 200;
	r->body = json_pack("{s:s}", "refused", why);
	return TH_OK;
}

/*
 * Export the log up to its newest checkpoint (events.c signs one in the
 * commit that queued this action, so the export includes its own
 * audit_exported record), and upload it.  A retry exports and uploads
 * again: a second copy in the media store is harmless, and the m.file that
 * points at the file is sent once, by its own send action (stable txnId).
 */
static int run_audit_export(outbox *ob, uint64_t seq, const json_t *a, struct cs_response *r)
{
	(void)seq;
	char key[AUDIT_PUBKEY_LEN + 1];
	int rc = audit_key_pubkey(ob->cfg->audit_key_path, key);
	if (rc) {
		LOG(LOG_ERROR, "outbox: audit export: cannot read the signing key: %s", th_strerror(rc));
		return export_refused(r, "the audit log's signing key could not be read");
	}
	struct audit_filter f;
	audit_filter_init(&f);
	json_int_t since = json_integer_value(json_object_get(a, "since_ms"));
	f.since_ms = since > 0 ? (uint64_t)since : 0;

	struct capbuf b = {0};
	cookie_io_functions_t io = {.write = capbuf_write};
	FILE *out = fopencookie(&b, "w", io);
	if (!out) {
		LOG(LOG_ERROR, "outbox: audit export: cannot open a memory stream");
		return TH_EIO;
	}
	store_txn *t = NULL;
	uint64_t head = 0;
	size_t n = 0;
	rc = store_txn_begin(ob->st, 0, &t);
	if (!rc)
		rc = audit_last_checkpoint(t, &head);
	if (!rc && head == 0)
		rc = TH_ENOTFOUND;
	if (!rc)
		rc = audit_export(t, &f, key, head, out, &n);
	store_txn_abort(t);
	if (fclose(out) != 0 && !rc)
		rc = TH_EIO;
	if (b.too_large) {
		free(b.buf);
		LOG(LOG_WARN, "outbox: audit export refused: over %u MiB", EXPORT_MAX_BYTES >> 20);
		char why[128];
		snprintf(why, sizeof(why), "the export would be over %u MiB; ask for less with --since",
		         EXPORT_MAX_BYTES >> 20);
		return export_refused(r, why);
	}
	if (rc) {
		free(b.buf);
		LOG(LOG_ERROR, "outbox: audit export: %s", th_strerror(rc));
		return export_refused(r, rc == TH_ENOTFOUND ? "the audit log has no signed checkpoint yet"
		                                            : "the audit log could not be read; an admin "
		                                              "should run `threshold audit verify`");
	}

	char name[64];
	time_t now = (time_t)(th_now_ms() / 1000);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(name, sizeof(name), "threshold-audit-%Y-%m-%d.jsonl", &tm);
	rc = cs_upload(ob->cs, field(a, "user_id"), EXPORT_MIMETYPE, name, b.buf, b.len, r);
	free(b.buf);
	if (rc == TH_OK && r->status / 100 == 2) {
		if (!json_string_value(json_object_get(r->body, "content_uri"))) {
			/* A 2xx without the uri: nothing to point at; a permanent fault. */
			cs_response_clear(r);
			return export_refused(r, "the homeserver did not say where it stored the file");
		}
		json_object_set_new(r->body, "filename", json_string(name));
		json_object_set_new(r->body, "size", json_integer((json_int_t)b.len));
		json_object_set_new(r->body, "records", json_integer((json_int_t)n));
	} else if (rc == TH_OK && r->status >= 400 && r->status < 500 && r->status != 408 &&
	           r->status != 429) {
		/* Refused for good (413 M_TOO_LARGE: over the homeserver's
		 * max_upload_size; 403): tell the lead instead of dropping silently. */
		char why[128];
		snprintf(why, sizeof(why), "the homeserver refused the upload (HTTP %ld%s%.40s)", r->status,
		         r->errcode ? " " : "", r->errcode ? r->errcode : "");
		for (char *p = why; *p; p++) {
			if (*p < 0x20 || *p == 0x7f)
				*p = '?';
		}
		cs_response_clear(r);
		return export_refused(r, why);
	}
	return rc;
}

/* The file is uploaded: send it to the room, in reply to the lead (or say
 * why there is none). */
static int done_audit_export(const outbox *ob, store_txn *t, const json_t *a, const json_t *resp)
{
	(void)ob;
	const char *refused = json_string_value(json_object_get(resp, "refused"));
	const char *uri = json_string_value(json_object_get(resp, "content_uri"));
	json_t *content;
	if (refused || !uri) {
		char *body = xasprintf("No audit export: %s.", refused ? refused : "the upload failed");
		content = json_pack("{s:s, s:s}", "msgtype", "m.notice", "body", body);
		free(body);
	} else {
		/* spec: CS API, m.file: body (the file name), url, info.size, info.mimetype */
		content = json_pack("{s:s, s:s, s:s, s:s, s:{s:O, s:s}}", "msgtype", "m.file", "body",
		                    json_string_value(json_object_get(resp, "filename")), "filename",
		                    json_string_value(json_object_get(resp, "filename")), "url", uri, "info",
		                    "size", json_object_get(resp, "size"), "mimetype", EXPORT_MIMETYPE);
	}
	if (!content)
		return TH_EINVAL;
	json_t *send =
	        outbox_message(field(a, "room_id"), field(a, "user_id"), content, field(a, "reply_to"));
	int rc = outbox_push(t, send);
	json_decref(send);
	return rc;
}

/* The known ops: required non-empty string fields, then how to run them. */
/* ---- send_media ------------------------------------------------------------ */

/* A guest's picture or file: read it from STORE_BLOBS, upload it as the
 * guest.  A retry uploads again (harmless); the message is sent once, by
 * its own send action, and the bytes are deleted in that same commit. */
static int run_send_media(outbox *ob, uint64_t seq, const json_t *a, struct cs_response *r)
{
	(void)seq;
	const char *id = field(a, "blob");
	store_txn *t;
	int rc = store_txn_begin(ob->st, 0, &t);
	if (rc)
		return rc;
	const void *v;
	size_t len = 0;
	void *copy = NULL;
	rc = store_get(t, STORE_BLOBS, id, strlen(id), &v, &len);
	if (rc == TH_OK) {
		copy = xmalloc(len ? len : 1);
		memcpy(copy, v, len);
	}
	store_txn_abort(t);
	if (rc == TH_ENOTFOUND)
		return export_refused(r, "the file is gone");
	if (rc)
		return rc;
	rc = cs_upload(ob->cs, field(a, "user_id"), field(a, "mimetype"), field(a, "name"), copy, len, r);
	explicit_bzero(copy, len);
	free(copy);
	return rc;
}

static int done_send_media(const outbox *ob, store_txn *t, const json_t *a, const json_t *resp)
{
	(void)ob;
	const char *id = field(a, "blob");
	int rc = store_del(t, STORE_BLOBS, id, strlen(id));
	if (rc && rc != TH_ENOTFOUND)
		return rc;
	const char *uri = json_string_value(json_object_get(resp, "content_uri"));
	if (!uri) {
		LOG(LOG_WARN, "outbox: a guest's file was not stored: %s",
		    jsonx_str(resp, "refused") ? jsonx_str(resp, "refused") : "no content uri");
		return TH_OK;
	}
	/* spec: CS API, m.image / m.file: body (the name), url, info.mimetype, info.size */
	json_t *content =
	        json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:O}, s:s}", "msgtype", field(a, "msgtype"), "body",
	                  field(a, "name"), "filename", field(a, "name"), "url", uri, "info", "mimetype",
	                  field(a, "mimetype"), "size", json_object_get(a, "size"), "org.threshold.local_id",
	                  field(a, "local_id"));
	if (!content)
		return TH_EINVAL;
	json_t *send = outbox_message(field(a, "room_id"), field(a, "user_id"), content, NULL);
	rc = outbox_push(t, send);
	json_decref(send);
	return rc;
}

/* ---- qr_image --------------------------------------------------------------- */

/* An invitation link as a QR code: make the PNG, upload it as the bot.  A
 * retry uploads again (harmless); the m.image is sent once, by its own send
 * action.  A permanent refusal is logged and the link notice stands alone. */
static int run_qr_image(outbox *ob, uint64_t seq, const json_t *a, struct cs_response *r)
{
	(void)seq;
	unsigned char *png = NULL;
	size_t len = 0;
	int rc = qr_png(field(a, "text"), &png, &len);
	if (rc) {
		LOG(LOG_WARN, "outbox: cannot make a QR code: %s", th_strerror(rc));
		return export_refused(r, "no QR code could be made");
	}
	rc = cs_upload(ob->cs, field(a, "user_id"), "image/png", "invitation.png", png, len, r);
	explicit_bzero(png, len);
	free(png);
	if (rc == TH_OK && r->status / 100 == 2 && json_string_value(json_object_get(r->body, "content_uri")))
		json_object_set_new(r->body, "size", json_integer((json_int_t)len));
	return rc;
}

static int done_qr_image(const outbox *ob, store_txn *t, const json_t *a, const json_t *resp)
{
	(void)ob;
	const char *uri = json_string_value(json_object_get(resp, "content_uri"));
	if (!uri) {
		LOG(LOG_WARN, "outbox: the QR code was not stored: %s",
		    jsonx_str(resp, "refused") ? jsonx_str(resp, "refused") : "no content uri");
		return TH_OK;
	}
	/* spec: CS API, m.image: body, url, info.mimetype, info.size */
	json_t *content =
	        json_pack("{s:s, s:s, s:s, s:{s:s, s:O}}", "msgtype", "m.image", "body", "invitation.png",
	                  "url", uri, "info", "mimetype", "image/png", "size", json_object_get(resp, "size"));
	if (!content)
		return TH_EINVAL;
	json_t *send =
	        outbox_message(field(a, "room_id"), field(a, "user_id"), content, field(a, "reply_to"));
	int rc = outbox_push(t, send);
	json_decref(send);
	return rc;
}

static const struct op {
	const char *name;
	const char *fields[7];
	int needs_content; /* "content" must be an object */
	build_fn build;
	done_fn done; /* NULL: nothing follows */
	run_fn run;   /* instead of build, when given */
} ops[] = {
        {"join", {"room_id", "user_id"}, 0, build_join, NULL, NULL},
        {"leave", {"room_id", "user_id"}, 0, build_leave, NULL, NULL},
        {"send", {"room_id", "user_id", "type"}, 1, build_send, NULL, NULL},
        {"register", {"localpart"}, 0, build_register, NULL, NULL},
        {"displayname", {"user_id", "displayname"}, 0, build_displayname, NULL, NULL},
        {"invite", {"room_id", "user_id", "target"}, 0, build_invite, NULL, NULL},
        {"kick", {"room_id", "user_id", "target"}, 0, build_kick, NULL, NULL},
        {"state", {"room_id", "user_id", "type"}, 1, build_state, NULL, NULL},
        {"create_room", {"user_id", "kind"}, 1, NULL, done_create_room, run_create_room},
        {"redact", {"room_id", "user_id", "event_id"}, 0, build_redact, NULL, NULL},
        {"account_data", {"user_id", "type"}, 1, build_account_data, NULL, NULL},
        {"guest_enter", {"room_id", "user_id", "target"}, 0, NULL, NULL, run_guest_enter},
        {"deactivate", {"user_id"}, 0, build_deactivate, NULL, NULL},
        {"staff_members", {"room_id", "user_id"}, 0, build_staff_members, done_staff_members, NULL},
        {"audit_export", {"room_id", "user_id", "reply_to"}, 0, NULL, done_audit_export, run_audit_export},
        {"qr_image", {"room_id", "user_id", "text"}, 0, NULL, done_qr_image, run_qr_image},
        {"send_media",
         {"room_id", "user_id", "blob", "name", "mimetype", "msgtype", "local_id"},
         0,
         NULL,
         done_send_media,
         run_send_media},
};

/* @return the op @p action names if it is well formed, else NULL. */
static const struct op *op_check(const json_t *action)
{
	const char *name = field(action, "op");
	if (!json_is_object(action) || !name)
		return NULL;
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		const struct op *op = &ops[i];
		if (strcmp(op->name, name) != 0)
			continue;
		for (size_t j = 0; j < sizeof(op->fields) / sizeof(op->fields[0]) && op->fields[j]; j++) {
			const char *v = field(action, op->fields[j]);
			if (!v || !*v)
				return NULL;
		}
		if (op->needs_content && !json_is_object(json_object_get(action, "content")))
			return NULL;
		return op;
	}
	return NULL;
}

static int read_u64(store_txn *t, enum store_db db, const char *key, uint64_t *out)
{
	const void *v;
	size_t vlen;
	int rc = store_get(t, db, key, strlen(key), &v, &vlen);
	if (rc)
		return rc;
	if (vlen != 8)
		return TH_ESTORE;
	*out = store_key_u64(v);
	return TH_OK;
}

int outbox_push(store_txn *t, const json_t *action)
{
	if (!op_check(action))
		return TH_EINVAL;

	uint64_t seq = 0, high = 0;
	const void *k, *v;
	size_t klen, vlen;
	int rc = store_last(t, STORE_OUTBOX, &k, &klen, &v, &vlen);
	if (rc == TH_OK) {
		if (klen != 8)
			return TH_ESTORE;
		seq = store_key_u64(k);
	} else if (rc != TH_ENOTFOUND) {
		return rc;
	}
	rc = read_u64(t, STORE_META, META_SEQ, &high);
	if (rc == TH_OK && high > seq)
		seq = high;
	else if (rc != TH_OK && rc != TH_ENOTFOUND)
		return rc;
	seq++;

	char *val = json_dumps(action, JSON_COMPACT);
	if (!val)
		return TH_EINVAL;
	unsigned char key[8];
	store_u64_key(key, seq);
	rc = store_put(t, STORE_OUTBOX, key, sizeof(key), val, strlen(val), STORE_APPEND);
	free(val);
	if (rc)
		return rc;
	return store_put(t, STORE_META, META_SEQ, strlen(META_SEQ), key, sizeof(key), 0);
}

uint64_t outbox_backoff_ms(unsigned attempt, uint64_t retry_after_ms, uint64_t max_ms)
{
	uint64_t d;
	if (retry_after_ms > 0)
		d = retry_after_ms;
	else if (attempt >= 40) /* 500 << 40 is years; avoid shifting out */
		d = UINT64_MAX;
	else
		d = (uint64_t)BACKOFF_BASE_MS << attempt;
	return d < max_ms ? d : max_ms;
}

/*
 * What one attempt's outcome means for the action.
 *
 * - no answer (TH_ENET, TH_ETIMEOUT), a store error in an op that reads or
 *   writes the store itself (TH_ESTORE, TH_EFULL), 5xx, 408, 429, anything
 *   not 2xx/4xx: retry.  Every op is safe to repeat: join and leave are
 *   idempotent, a send reuses its txnId and create_room finds the room it
 *   made.
 * - an answer over CS_MAX_RESPONSE_BYTES (TH_ETOOLARGE): drop.  None of
 *   these endpoints answers with more than a few hundred bytes, so this is
 *   something in between (a proxy's error page) that would most likely say
 *   the same next time; retrying would wedge the queue behind it for good.
 * - other 4xx: the homeserver refused for good (403 not allowed, 404 no
 *   such room, 400 bad input): drop, unless it is the op's "already done"
 *   errcode.
 */
static enum outbox_result classify(int rc, const struct cs_response *r, const char *done_errcode)
{
	if (rc == TH_ENET || rc == TH_ETIMEOUT || rc == TH_ESTORE || rc == TH_EFULL)
		return OUTBOX_RETRY; /* the homeserver, or (in a run fn) the store, may come back */
	if (rc)
		return OUTBOX_DROP;
	if (r->status >= 200 && r->status < 300)
		return OUTBOX_DONE;
	if (done_errcode && r->errcode && strcmp(r->errcode, done_errcode) == 0)
		return OUTBOX_DONE;
	if (r->status == 408 || r->status == 429)
		return OUTBOX_RETRY;
	if (r->status >= 400 && r->status < 500)
		return OUTBOX_DROP;
	return OUTBOX_RETRY;
}

/*
 * Make one attempt at the action stored at @p seq.
 * @param delay_ms  on OUTBOX_RETRY, how long to wait before the next attempt
 */
static enum outbox_result execute(outbox *ob, uint64_t seq, const char *val, size_t vlen, unsigned attempt,
                                  uint64_t *delay_ms, json_t **answer)
{
	json_t *a = json_loadb(val, vlen, 0, NULL);
	const struct op *op = op_check(a);
	if (!op) {
		LOG(LOG_WARN, "outbox: dropped action %llu: malformed in the store", (unsigned long long)seq);
		json_decref(a);
		return OUTBOX_DROP;
	}
	struct request req = {0};
	struct cs_response r = {0};
	int rc;
	if (op->run) {
		rc = op->run(ob, seq, a, &r);
	} else {
		op->build(ob, seq, a, &req);
		rc = cs_request(ob->cs, req.method, req.path, req.user_id, req.body, &r);
	}
	enum outbox_result res = classify(rc, &r, req.done_errcode);
	char why[96]; /* "HTTP 403 M_FORBIDDEN" or "timed out": never a body */
	if (rc)
		snprintf(why, sizeof(why), "%s", th_strerror(rc));
	else
		snprintf(why, sizeof(why), "HTTP %ld%s%s", r.status, r.errcode ? " " : "",
		         r.errcode ? r.errcode : "");
	for (char *p = why; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			*p = '?'; /* the errcode is the server's text: keep log lines whole */
	}
	switch (res) {
	case OUTBOX_DONE:
		LOG(LOG_DEBUG, "outbox: %s action %llu done", op->name, (unsigned long long)seq);
		break;
	case OUTBOX_DROP:
		LOG(LOG_WARN, "outbox: dropped %s action %llu: %s", op->name, (unsigned long long)seq, why);
		break;
	case OUTBOX_RETRY:
		*delay_ms = outbox_backoff_ms(attempt, r.retry_after_ms, ob->cfg->outbox_max_backoff_ms);
		LOG(LOG_INFO, "outbox: %s action %llu attempt %u failed (%s), retrying in %llu ms", op->name,
		    (unsigned long long)seq, attempt + 1, why, (unsigned long long)*delay_ms);
		break;
	}
	if (res == OUTBOX_DONE && op->done)
		*answer = json_incref(r.body ? r.body : json_null());
	if (rc == TH_OK)
		cs_response_clear(&r);
	free(req.path);
	json_decref(req.body);
	json_decref(a);
	return res;
}

/* Copy out the first entry.  @return TH_OK, TH_ENOTFOUND or a store error. */
static int head(outbox *ob, uint64_t *seq, char **val, size_t *vlen)
{
	store_txn *t;
	int rc = store_txn_begin(ob->st, 0, &t);
	if (rc)
		return rc;
	const void *k, *v;
	size_t klen, len;
	rc = store_first(t, STORE_OUTBOX, &k, &klen, &v, &len);
	if (rc == TH_OK && klen != 8)
		rc = TH_ESTORE;
	if (rc == TH_OK) {
		*seq = store_key_u64(k);
		*val = xstrndup(v, len);
		*vlen = len;
	}
	store_txn_abort(t);
	return rc;
}

/* Remove the action and, when @p answer is given, record what follows from
 * it, in one commit. */
static int remove_entry(outbox *ob, uint64_t seq, const char *val, size_t vlen, const json_t *answer)
{
	store_txn *t;
	int rc = store_txn_begin(ob->st, 1, &t);
	if (rc)
		return rc;
	unsigned char key[8];
	store_u64_key(key, seq);
	rc = store_del(t, STORE_OUTBOX, key, sizeof(key));
	if (rc && rc != TH_ENOTFOUND) {
		store_txn_abort(t);
		return rc;
	}
	json_t *a = json_loadb(val, vlen, 0, NULL);
	if (answer) {
		const struct op *op = op_check(a);
		rc = op && op->done ? op->done(ob, t, a, answer) : TH_OK;
	} else if (field(a, "blob")) { /* dropped: its bytes go with it */
		rc = store_del(t, STORE_BLOBS, field(a, "blob"), strlen(field(a, "blob")));
		rc = rc == TH_ENOTFOUND ? TH_OK : rc;
	} else {
		rc = TH_OK;
	}
	json_decref(a);
	if (rc) {
		store_txn_abort(t);
		return rc;
	}
	return store_txn_commit(t);
}

/*
 * Sleep up to @p ms, returning early on outbox_stop, and on outbox_wake too
 * when @p wakeable (an idle worker; a backing-off one must not skip ahead).
 */
static void sleep_for(outbox *ob, uint64_t ms, int wakeable)
{
	uint64_t deadline = th_mono_ms() + ms;
	struct timespec ts = {.tv_sec = (time_t)(deadline / 1000),
	                      .tv_nsec = (long)(deadline % 1000) * 1000000L};
	pthread_mutex_lock(&ob->mu);
	while (!ob->stop && !(wakeable && ob->woken)) {
		if (pthread_cond_timedwait(&ob->cv, &ob->mu, &ts) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&ob->mu);
}

static void *worker(void *arg)
{
	outbox *ob = arg;
	uint64_t current = 0; /* the seq @attempt counts for */
	unsigned attempt = 0;
	for (;;) {
		/* Clear the wake flag before looking, so a push committed after
		 * the look (and its outbox_wake) is never slept through. */
		pthread_mutex_lock(&ob->mu);
		int stop = ob->stop;
		ob->woken = 0;
		pthread_mutex_unlock(&ob->mu);
		if (stop)
			break;

		uint64_t seq;
		char *val;
		size_t vlen;
		int rc = head(ob, &seq, &val, &vlen);
		if (rc == TH_ENOTFOUND) {
			sleep_for(ob, IDLE_POLL_MS, 1);
			continue;
		}
		if (rc) {
			LOG(LOG_ERROR, "outbox: reading the queue: %s", th_strerror(rc));
			sleep_for(ob, STORE_RETRY_MS, 0);
			continue;
		}
		if (seq != current) {
			current = seq;
			attempt = 0;
		}
		uint64_t delay = 0;
		json_t *answer = NULL;
		enum outbox_result res = execute(ob, seq, val, vlen, attempt, &delay, &answer);
		if (res == OUTBOX_RETRY) {
			free(val);
			if (attempt < UINT_MAX)
				attempt++;
			sleep_for(ob, delay, 0);
			continue;
		}
		rc = remove_entry(ob, seq, val, vlen, answer);
		json_decref(answer);
		free(val);
		if (rc) {
			/* It runs again once the store recovers; every op is safe to repeat. */
			LOG(LOG_ERROR, "outbox: removing action %llu: %s", (unsigned long long)seq,
			    th_strerror(rc));
			sleep_for(ob, STORE_RETRY_MS, 0);
		}
	}
	return NULL;
}

static int prefix_ok(const char *p, size_t n)
{
	if (n == 0 || n > PREFIX_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
			return 0;
	}
	return 1;
}

/* Read this store's txnId prefix, creating it on first use. */
static int load_prefix(store *st, char out[PREFIX_MAX + 1])
{
	store_txn *t;
	int rc = store_txn_begin(st, 1, &t);
	if (rc)
		return rc;
	const void *v;
	size_t vlen;
	rc = store_get(t, STORE_META, META_PREFIX, strlen(META_PREFIX), &v, &vlen);
	if (rc == TH_OK) {
		if (!prefix_ok(v, vlen)) {
			LOG(LOG_ERROR, "outbox: %s in the store is malformed", META_PREFIX);
			rc = TH_ESTORE;
			goto fail;
		}
		memcpy(out, v, vlen);
		out[vlen] = '\0';
		store_txn_abort(t);
		return TH_OK;
	}
	if (rc != TH_ENOTFOUND)
		goto fail;
	char hex[17];
	rc = th_random_hex(hex, 8);
	if (rc)
		goto fail;
	rc = store_put(t, STORE_META, META_PREFIX, strlen(META_PREFIX), hex, strlen(hex), 0);
	if (rc)
		goto fail;
	rc = store_txn_commit(t);
	if (rc)
		return rc;
	memcpy(out, hex, sizeof(hex));
	return TH_OK;
fail:
	store_txn_abort(t);
	return rc;
}

int outbox_start(store *st, const struct config *cfg, outbox **out)
{
	outbox *ob = xcalloc(1, sizeof(*ob));
	ob->st = st;
	ob->cfg = cfg;
	int rc = load_prefix(st, ob->txn_prefix);
	if (rc)
		goto fail_free;
	rc = cs_client_new(cfg, &ob->cs);
	if (rc)
		goto fail_free;

	/* A monotonic clock for the waits: a wall-clock step must not stretch a backoff. */
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ob->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&ob->mu, NULL);
	if (pthread_create(&ob->thread, NULL, worker, ob) != 0) {
		LOG(LOG_ERROR, "outbox: cannot start the worker thread");
		rc = TH_EIO;
		goto fail_sync;
	}
	*out = ob;
	return TH_OK;

fail_sync:
	pthread_mutex_destroy(&ob->mu);
	pthread_cond_destroy(&ob->cv);
	cs_client_free(ob->cs);
fail_free:
	free(ob);
	return rc;
}

void outbox_wake(outbox *ob)
{
	pthread_mutex_lock(&ob->mu);
	ob->woken = 1;
	pthread_cond_signal(&ob->cv);
	pthread_mutex_unlock(&ob->mu);
}

void outbox_stop(outbox *ob)
{
	if (!ob)
		return;
	pthread_mutex_lock(&ob->mu);
	ob->stop = 1;
	pthread_cond_signal(&ob->cv);
	pthread_mutex_unlock(&ob->mu);
	pthread_join(ob->thread, NULL);
	pthread_mutex_destroy(&ob->mu);
	pthread_cond_destroy(&ob->cv);
	cs_client_free(ob->cs);
	free(ob);
}

size_t outbox_pending(outbox *ob)
{
	store_txn *t;
	size_t n = 0;
	if (store_txn_begin(ob->st, 0, &t) != TH_OK)
		return 0;
	if (store_count(t, STORE_OUTBOX, &n) != TH_OK)
		n = 0;
	store_txn_abort(t);
	return n;
}

int outbox_stats_read(store_txn *t, struct outbox_stats *out)
{
	struct outbox_stats s = {0};
	const void *k, *v;
	size_t klen, vlen;
	int rc = store_count(t, STORE_OUTBOX, &s.pending);
	if (rc)
		return rc;
	rc = store_first(t, STORE_OUTBOX, &k, &klen, &v, &vlen);
	if (rc == TH_OK && klen == 8)
		s.head_seq = store_key_u64(k);
	else if (rc != TH_OK && rc != TH_ENOTFOUND)
		return rc;
	*out = s;
	return TH_OK;
}
