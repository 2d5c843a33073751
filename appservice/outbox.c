/*
 * outbox.c - the durable action queue and the worker thread that drains it.
 *
 * Lanes (outbox.h): a dispatcher thread hands the oldest ready head of each
 * lane to a pool of worker threads, each with its own homeserver client, and
 * removes finished actions in batches.  Within a lane, actions reach the
 * homeserver in the order policy decided them (an invite is rejected before
 * the notice about it is sent); lanes do not wait for each other.
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
#include "audit_query.h"
#include "erasure.h"
#include "hs_admin.h"
#include "log.h"
#include "jsonx.h"
#include "qr.h"
#include "rooms.h"
#include "spool.h"
#include "templates.h"
#include "util.h"

#define BACKOFF_BASE_MS 500u
/* Idle, the worker rechecks the queue this often even without a wake-up, so
 * actions another process queued (threshold guest create) run promptly. */
#define IDLE_POLL_MS 1000u
/* After a store error, wait this long before touching the store again. */
#define STORE_RETRY_MS 1000u

#define META_SEQ "outbox_seq"
/* In the answer execute() hands remove_entry: an enforcement action refused for good. */
#define ENFORCE_REFUSED "enforcement_refused"
/* In the answer execute() hands remove_entry: a step of an erasure refused for good. */
#define ERASURE_REFUSED "erasure_refused"
#define META_PREFIX     "outbox_txn_prefix"
#define PREFIX_MAX      32 /* hex characters */

struct pool;

/* What an op runs with.  Each worker thread has its own copy, with its own
 * cs_client; the handle outbox_start returns has none (cs is NULL) and is
 * the dispatcher's. */
struct outbox {
	store *st;
	const struct config *cfg;
	cs_client *cs;
	struct audit *au; /* for enforcement_failed records, or NULL */
	struct outbox_hooks hooks;
	char txn_prefix[PREFIX_MAX + 1];
	struct pool *pool;
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

static struct audit *pool_audit(outbox *ob);

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

static void build_directory_visibility(const outbox *ob, uint64_t seq, const json_t *a, struct request *req)
{
	/* spec: PUT /directory/list/room/{roomId}: idempotent; the room's entry in
	 * the published room list, which no state event shows. */
	(void)ob;
	(void)seq;
	char *room = cs_escape(field(a, "room_id"));
	req->method = "PUT";
	req->path = xasprintf("/_matrix/client/v3/directory/list/room/%s", room);
	req->user_id = field(a, "user_id");
	req->body = json_pack("{s:s}", "visibility", field(a, "visibility"));
	free(room);
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
	if (!rc)
		rc = templates_room_created(t, room_id, json_object_get(a, "content"));
	if (!rc && field(a, "service"))
		rc = rooms_set_service(t, room_id, field(a, "service"));
	if (!rc && field(a, "conversation")) {
		if (ob->hooks.room_created)
			rc = ob->hooks.room_created(ob->hooks.ctx, t, field(a, "conversation"), room_id);
		else
			LOG(LOG_WARN, "outbox: a conversation room was made with nobody to tell");
	}
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

/* A guest's picture or file: read it from its spooled file (or, queued by
 * an older Threshold, from STORE_BLOBS), upload it as the guest.  A retry
 * uploads again (harmless); the message is sent once, by its own send
 * action, and the bytes are deleted in (STORE_BLOBS) or after (spool) that
 * same commit. */
static int run_send_media(outbox *ob, uint64_t seq, const json_t *a, struct cs_response *r)
{
	(void)seq;
	const char *id = field(a, "blob");
	json_t *sp = json_object_get(a, "spool");
	store_txn *t;
	int rc = store_txn_begin(ob->st, 0, &t);
	if (rc)
		return rc;
	const void *v = NULL;
	size_t len = 0;
	void *copy = NULL;
	unsigned char *file = NULL;
	if (json_is_object(sp)) {
		rc = spool_read(ob->cfg, id, (uint64_t)json_integer_value(json_object_get(sp, "bytes")),
		                jsonx_str(sp, "fnv"), &file, &len);
		if (rc == TH_EVERIFY || rc == TH_EINVAL)
			rc = TH_ENOTFOUND; /* damaged: can never be sent as it was */
		v = file;
	} else {
		rc = store_get(t, STORE_BLOBS, id, strlen(id), &v, &len);
	}
	if (rc == TH_OK && json_is_true(json_object_get(a, "sealed"))) {
		/* sealed under the guest's key (matrix_outbox.c); gone with the key */
		struct audit *au = pool_audit(ob);
		unsigned char *plain = NULL;
		size_t plen = 0;
		rc = au ? audit_unseal_bytes(au, t, field(a, "user_id"), v, len, &plain, &plen) : TH_ESTORE;
		if (rc == TH_OK) {
			copy = plain;
			len = plen;
		} else if (rc != TH_ESTORE && rc != TH_EIO) {
			rc = TH_ENOTFOUND; /* erased, or cannot ever be read */
		}
	} else if (rc == TH_OK && file) {
		copy = file;
		file = NULL;
	} else if (rc == TH_OK) {
		copy = xmalloc(len ? len : 1);
		memcpy(copy, v, len);
	}
	store_txn_abort(t);
	free(file);
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
	int rc = TH_OK;
	if (!json_object_get(
	            a, "spool")) /* an older Threshold's: in the map (a spooled file goes after the commit) */
		rc = store_del(t, STORE_BLOBS, id, strlen(id));
	if (rc && rc != TH_ENOTFOUND)
		return rc;
	rc = TH_OK;
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

/* ---- enforcement refused ------------------------------------------------ */

int outbox_enforcement_failed(const outbox *ob, store_txn *t, const json_t *a, const char *why)
{
	const json_t *enforce = json_object_get(a, "enforce");
	const char *op = field(a, "op"), *room = field(a, "room_id"), *target = field(a, "target");
	const char *reason = field(enforce, "reason") ? field(enforce, "reason") : "unknown";
	uint64_t seq = 0;
	int rc = TH_OK;
	if (ob->au) {
		json_t *details = json_pack("{s:s, s:s, s:s?, s:s?}", "op", op ? op : "?", "refused", why,
		                            "event_id", field(enforce, "event_id"), "type", field(a, "type"));
		struct audit_rec rec = {
		        .kind = AUDIT_ENFORCEMENT_FAILED,
		        .actor = field(a, "user_id"),
		        .subject = target,
		        .room = room,
		        .reason = reason,
		        .details = details,
		};
		rc = audit_append(ob->au, t, &rec, &seq);
		json_decref(details);
		if (rc)
			return rc;
	}
	LOG(LOG_ERROR, "outbox: enforcement refused: %s (%s) in %s: %s", op ? op : "?", reason,
	    room ? room : "?", why);
	if (!ob->cfg->safeguarding_room)
		return TH_OK;
	char *doing;
	if (op && strcmp(op, "kick") == 0)
		doing = xasprintf("remove %s from", target ? target : "someone");
	else if (op && strcmp(op, "directory_visibility") == 0)
		doing = xstrdup("take off the room directory");
	else
		doing = xasprintf("put back %s in", field(a, "type") ? field(a, "type") : "a setting");
	char *text = xasprintf("Threshold could NOT %s room %s (%s): the homeserver refused (%s). The room "
	                       "may still be exposed: check it now. Audit record #%llu.",
	                       doing, room ? room : "?", reason, why, (unsigned long long)seq);
	/* as the action's own user: the bot */
	json_t *notice = outbox_notice(ob->cfg->safeguarding_room, field(a, "user_id"), text, NULL);
	rc = outbox_push(t, notice);
	json_decref(notice);
	free(doing);
	free(text);
	/* An alert that cannot be queued must not keep the refused action alive. */
	return rc == TH_EINVAL ? TH_OK : rc;
}

/* ---- erasure steps (erasure.h) ------------------------------------------ */

/* A made-up answer for a run fn that did its work (or none) without one
 * request to hand back: @p status, with @p body (taken) and its errcode. */
static void answer(struct cs_response *r, long status, json_t *body)
{
	memset(r, 0, sizeof(*r));
	r->status = status;
	r->body = body;
	r->errcode = jsonx_str(body, "errcode");
}

/* The admin API handle for an erasure step: TH_OK with @p h; or TH_OK with
 * *h NULL and @p r answered: skipped (no admin token configured) or refused
 * (a token file that cannot be used: the step fails, recorded, not retried
 * for an hour against a mistake an admin must fix). */
static int admin_open(outbox *ob, hs_admin **h, struct cs_response *r)
{
	*h = NULL;
	int rc = hs_admin_open(ob->cfg, h);
	if (rc == TH_ENOTFOUND) {
		answer(r, 200, json_pack("{s:s}", "skipped", "no_admin_token"));
		return TH_OK;
	}
	if (rc == TH_ENET)
		return rc;
	if (rc) {
		answer(r, 403, json_pack("{s:s}", "errcode", "TH_ADMIN_TOKEN_UNUSABLE"));
		return TH_OK;
	}
	return TH_OK;
}

/* The answer for an admin call that failed: its status, or the error. */
static int admin_failed(int rc, long status, struct cs_response *r)
{
	if (rc == TH_EHTTP) {
		answer(r, status, json_pack("{s:s}", "errcode", "TH_ADMIN_API"));
		return TH_OK;
	}
	return rc;
}

/* {"op":"erase_media", "user_id":G, "erasure":G}: G's uploads deleted from
 * the homeserver's media store (admin API). */
static int run_erase_media(outbox *ob, uint64_t seq, const json_t *a, struct cs_response *r)
{
	(void)seq;
	hs_admin *h;
	int rc = admin_open(ob, &h, r);
	if (rc || !h)
		return rc;
	size_t n = 0;
	long status = 0;
	rc = hs_admin_user_media_delete(h, field(a, "user_id"), &n, &status);
	hs_admin_close(h);
	if (rc)
		return admin_failed(rc, status, r);
	LOG(LOG_INFO, "outbox: erasure: deleted %zu file(s) of %s from the media store", n,
	    field(a, "user_id"));
	answer(r, 200, json_pack("{s:I}", "deleted", (json_int_t)n));
	return TH_OK;
}

/* Wait up to about @p ms for room @p room's deletion to complete. */
static int purge_wait(hs_admin *h, const char *room, unsigned ms, enum hs_admin_purge *st, long *status)
{
	int rc = TH_OK;
	for (unsigned waited = 0;; waited += 250) {
		rc = hs_admin_room_delete_status(h, room, st, status);
		/* Just asked for: the homeserver may not list it for a moment. */
		if (!rc && *st == HS_ADMIN_PURGE_NONE)
			*st = HS_ADMIN_PURGE_RUNNING;
		if (rc || *st != HS_ADMIN_PURGE_RUNNING || waited >= ms)
			return rc;
		struct timespec ts = {0, 250 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

/* {"op":"purge_room", "room_id":R, "user_id":G, "lane":G, "erasure":G}: R,
 * the guest's own room, deleted and purged from the homeserver's database
 * (admin API).  Asynchronous on the homeserver: done once its status says
 * "complete"; a deletion still running is retried (with backoff) later. */
static int run_purge_room(outbox *ob, uint64_t seq, const json_t *a, struct cs_response *r)
{
	(void)seq;
	hs_admin *h;
	int rc = admin_open(ob, &h, r);
	if (rc || !h)
		return rc;
	const char *room = field(a, "room_id");
	enum hs_admin_purge st = HS_ADMIN_PURGE_NONE;
	long status = 0;
	rc = hs_admin_room_delete_status(h, room, &st, &status);
	if (!rc && (st == HS_ADMIN_PURGE_NONE || st == HS_ADMIN_PURGE_FAILED)) {
		rc = hs_admin_room_delete(h, room, &status);
		st = HS_ADMIN_PURGE_RUNNING;
	}
	if (!rc && st == HS_ADMIN_PURGE_RUNNING)
		rc = purge_wait(h, room, 20000, &st, &status);
	hs_admin_close(h);
	if (rc)
		return admin_failed(rc, status, r);
	if (st == HS_ADMIN_PURGE_COMPLETE) {
		LOG(LOG_INFO, "outbox: erasure: room %s deleted and purged", room);
		answer(r, 200, json_object());
	} else { /* still running, or failed: ask again later */
		answer(r, 503, json_pack("{s:s}", "errcode", "TH_PURGE_RUNNING"));
	}
	return TH_OK;
}

/* Is @p ev a reveal of @p guest's sealed detail, posted by the bot? */
static int is_reveal_of(const json_t *ev, const char *bot, const char *guest)
{
	const char *body = jsonx_str(json_object_get(ev, "content"), "body");
	const char *type = jsonx_str(ev, "type"), *sender = jsonx_str(ev, "sender");
	if (!body || !type || !sender || strcmp(type, "m.room.message") || strcmp(sender, bot))
		return 0;
	if (strncmp(body, AUDIT_QUERY_REVEAL_MARK, strlen(AUDIT_QUERY_REVEAL_MARK)) != 0)
		return 0;
	char *needle = xasprintf("(%s)", guest);
	int hit = strstr(body, needle) != NULL;
	free(needle);
	return hit;
}

#define REVEAL_PAGES 50 /* pages of 100 events read back at most */

/* {"op":"redact_reveals", "room_id":R, "user_id":U, "target":G, "lane":G,
 * "erasure":G}: every "!audit reveal" answer about G that U (the bot) posted
 * in the safeguarding room R is redacted, so a revealed sealed note does not
 * outlive G's erasure there.  Reads R's history back (as U); each
 * redaction's txn id is fixed by the action and the event, so a retry
 * repeats none. */
static int run_redact_reveals(outbox *ob, uint64_t seq, const json_t *a, struct cs_response *r)
{
	const char *room = field(a, "room_id"), *bot = field(a, "user_id"), *guest = field(a, "target");
	char *eroom = cs_escape(room);
	char *from = NULL;
	unsigned redacted = 0;
	int rc = TH_OK;
	for (int page = 0; page < REVEAL_PAGES; page++) {
		char *efrom = from ? cs_escape(from) : NULL;
		char *path = xasprintf("/_matrix/client/v3/rooms/%s/messages?dir=b&limit=100%s%s", eroom,
		                       efrom ? "&from=" : "", efrom ? efrom : "");
		free(efrom);
		struct cs_response m = {0};
		rc = cs_request(ob->cs, "GET", path, bot, NULL, &m);
		free(path);
		if (rc)
			break;
		if (m.status / 100 != 2) {
			*r = m; /* the answer says why */
			free(eroom);
			free(from);
			return TH_OK;
		}
		json_t *chunk = json_object_get(m.body, "chunk");
		size_t i;
		json_t *ev;
		json_array_foreach(chunk, i, ev)
		{
			if (rc || !is_reveal_of(ev, bot, guest))
				continue;
			char *eid = cs_escape(jsonx_str(ev, "event_id"));
			char *rpath = xasprintf("/_matrix/client/v3/rooms/%s/redact/%s/th%s_%llu_%u", eroom,
			                        eid, ob->txn_prefix, (unsigned long long)seq, redacted);
			json_t *body = json_pack("{s:s}", "reason", "The guest's data was erased");
			struct cs_response x = {0};
			rc = cs_request(ob->cs, "PUT", rpath, bot, body, &x);
			json_decref(body);
			free(rpath);
			free(eid);
			if (!rc && x.status / 100 != 2) {
				cs_response_clear(&m);
				*r = x;
				free(eroom);
				free(from);
				return TH_OK;
			}
			if (!rc) {
				cs_response_clear(&x);
				redacted++;
			}
		}
		const char *end = jsonx_str(m.body, "end");
		int more = end && json_array_size(chunk) > 0;
		free(from);
		from = more ? xstrdup(end) : NULL;
		cs_response_clear(&m);
		if (rc || !more)
			break;
	}
	free(eroom);
	free(from);
	if (rc)
		return rc;
	if (redacted)
		LOG(LOG_INFO, "outbox: erasure: redacted %u reveal(s) of %s's sealed detail in %s", redacted,
		    guest, room);
	answer(r, 200, json_object());
	return TH_OK;
}

/* {"op":"erasure_done", "user_id":G, "erasure":G}: no request; its done fn
 * finishes the job, after every step before it in G's lane. */
static int run_erasure_done(outbox *ob, uint64_t seq, const json_t *a, struct cs_response *r)
{
	(void)ob;
	(void)seq;
	(void)a;
	answer(r, 200, json_object());
	return TH_OK;
}

static int done_erase_media(const outbox *ob, store_txn *t, const json_t *a, const json_t *resp)
{
	(void)ob;
	return jsonx_str(resp, "skipped") ? erasure_step_skipped(t, field(a, "erasure"), "media") : TH_OK;
}

static int done_purge_room(const outbox *ob, store_txn *t, const json_t *a, const json_t *resp)
{
	(void)ob;
	return jsonx_str(resp, "skipped") ? erasure_step_skipped(t, field(a, "erasure"), "purge_room")
	                                  : TH_OK;
}

static int done_erasure_done(const outbox *ob, store_txn *t, const json_t *a, const json_t *resp)
{
	(void)resp;
	return erasure_job_finish(ob->au, ob->cfg, t, field(a, "erasure"));
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
        {"directory_visibility",
         {"room_id", "user_id", "visibility"},
         0,
         build_directory_visibility,
         NULL,
         NULL},
        {"create_room", {"user_id", "kind"}, 1, NULL, done_create_room, run_create_room},
        {"redact", {"room_id", "user_id", "event_id"}, 0, build_redact, NULL, NULL},
        {"account_data", {"user_id", "type"}, 1, build_account_data, NULL, NULL},
        {"guest_enter", {"room_id", "user_id", "target"}, 0, NULL, NULL, run_guest_enter},
        {"deactivate", {"user_id"}, 0, build_deactivate, NULL, NULL},
        {"staff_members", {"room_id", "user_id"}, 0, build_staff_members, done_staff_members, NULL},
        {"audit_export", {"room_id", "user_id", "reply_to"}, 0, NULL, done_audit_export, run_audit_export},
        {"qr_image", {"room_id", "user_id", "text"}, 0, NULL, done_qr_image, run_qr_image},
        {"erase_media", {"user_id", "erasure"}, 0, NULL, done_erase_media, run_erase_media},
        {"purge_room", {"room_id", "user_id", "erasure"}, 0, NULL, done_purge_room, run_purge_room},
        {"erasure_done", {"user_id", "erasure"}, 0, NULL, done_erasure_done, run_erasure_done},
        {"redact_reveals", {"room_id", "user_id", "target", "erasure"}, 0, NULL, NULL, run_redact_reveals},
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

/* The optional lane fields, when present, are well formed. */
static int lane_fields_ok(const json_t *action)
{
	const json_t *lane = json_object_get(action, "lane"), *after = json_object_get(action, "after"),
	             *remote = json_object_get(action, "remote");
	if (lane && (!json_string_value(lane) || !*json_string_value(lane)))
		return 0;
	if (remote && !json_is_boolean(remote))
		return 0;
	if (after) {
		size_t i;
		const json_t *v;
		if (!json_is_array(after))
			return 0;
		json_array_foreach(after, i, v)
		{
			if (!json_string_value(v) || !*json_string_value(v))
				return 0;
		}
	}
	return 1;
}

int outbox_push(store_txn *t, const json_t *action)
{
	if (!op_check(action) || !lane_fields_ok(action))
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

/* Open @p a's "sealed_content" (sealed under its "user_id"'s key) into its
 * "content".  TH_ENOTFOUND: the key is gone (the sender was erased). */
static int open_sealed(outbox *ob, json_t *a)
{
	struct audit *au = pool_audit(ob);
	if (!au)
		return TH_ESTORE; /* not wired yet: later */
	store_txn *t;
	int rc = store_txn_begin(ob->st, 0, &t);
	if (rc)
		return rc;
	char *plain = NULL;
	rc = audit_unseal(au, t, field(a, "user_id"), field(a, "sealed_content"), &plain);
	store_txn_abort(t);
	if (rc == TH_EINVAL || rc == TH_ECRYPTO)
		return TH_ENOTFOUND; /* cannot ever be read: as good as erased */
	if (rc)
		return rc;
	json_t *content = json_loads(plain, 0, NULL);
	explicit_bzero(plain, strlen(plain));
	free(plain);
	if (!json_is_object(content)) {
		json_decref(content);
		return TH_ENOTFOUND;
	}
	json_object_set_new(a, "content", content);
	json_object_del(a, "sealed_content");
	return TH_OK;
}

/*
 * Make one attempt at the action stored at @p seq.
 * @param delay_ms  on OUTBOX_RETRY, how long to wait before the next attempt
 * @param why       what went wrong ("HTTP 502", "timed out"), for the log and
 *                  a record of an action set aside
 */
static enum outbox_result execute(outbox *ob, uint64_t seq, const char *val, size_t vlen, unsigned attempt,
                                  uint64_t *delay_ms, json_t **answer, char why[96])
{
	json_t *a = json_loadb(val, vlen, 0, NULL);
	const struct op *op = op_check(a);
	if (!op) {
		LOG(LOG_WARN, "outbox: dropped action %llu: malformed in the store", (unsigned long long)seq);
		snprintf(why, 96, "malformed");
		json_decref(a);
		return OUTBOX_DROP;
	}
	if (field(a, "sealed_content")) { /* a guest's words, sealed until now */
		int orc = open_sealed(ob, a);
		if (orc == TH_ENOTFOUND) {
			LOG(LOG_INFO, "outbox: dropped %s action %llu: its sender's data was erased",
			    op->name, (unsigned long long)seq);
			snprintf(why, 96, "erased");
			json_decref(a);
			return OUTBOX_DROP;
		}
		if (orc) {
			snprintf(why, 96, "%s", th_strerror(orc));
			*delay_ms = outbox_backoff_ms(attempt, 0, ob->cfg->outbox_max_backoff_ms);
			json_decref(a);
			return OUTBOX_RETRY;
		}
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
	/* "HTTP 403 M_FORBIDDEN" or "timed out": never a body */
	if (rc)
		snprintf(why, 96, "%s", th_strerror(rc));
	else
		snprintf(why, 96, "HTTP %ld%s%.60s", r.status, r.errcode ? " " : "",
		         r.errcode ? r.errcode : "");
	for (char *p = why; *p; p++) {
		if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\\')
			*p = '?'; /* the errcode is the server's text: keep log lines whole */
	}
	switch (res) {
	case OUTBOX_DONE:
		LOG(LOG_DEBUG, "outbox: %s action %llu done", op->name, (unsigned long long)seq);
		break;
	case OUTBOX_DROP:
		LOG(LOG_WARN, "outbox: dropped %s action %llu: %s", op->name, (unsigned long long)seq, why);
		if (json_object_get(a, "enforce")) /* finish_in records and alerts it */
			*answer = json_pack("{s:s}", ENFORCE_REFUSED, why);
		else if (field(a, "erasure")) /* a step of an erasure: finish_in records and alerts it */
			*answer = json_pack("{s:s}", ERASURE_REFUSED, why);
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

/* ---- lanes ------------------------------------------------------------------
 *
 * The dispatcher thread keeps a picture of the queue in memory: each queued
 * action (an entry, at most WINDOW of them, oldest first) in the FIFO of its
 * lane.  Only a lane's head may run, and it stays the head until the commit
 * that removes it, so the next action of a lane starts only once the one
 * before it is done and removed: a crash in between re-runs the earlier one
 * first.  The store stays the truth: the picture is rebuilt from it at each
 * start, and extended with what was pushed since (sequence numbers only grow).
 */

/* Entries held in memory at most; older ones run first, so a later lane waits
 * only when more than this many actions are queued ahead of it. */
#define WINDOW 65536u

enum entry_state {
	ENTRY_QUEUED = 0, /* waiting for its turn (or its backoff) */
	ENTRY_RUNNING,    /* a worker has it */
	ENTRY_FINISHED,   /* done, dropped or set aside; its removal is not committed yet */
};

struct lane;

struct entry {
	uint64_t seq;
	struct lane *lane;
	char **after; /* lanes whose earlier actions must be gone first (owned) */
	size_t nafter;
	int remote; /* may wait on another server: runs in the remote share */
	enum entry_state state;
	unsigned attempt;       /* failed attempts so far */
	uint64_t not_before_ms; /* th_mono_ms() before which it does not run again */
	uint64_t first_fail_ms; /* th_mono_ms() of its first retryable failure; 0: none */
	int fail_recorded;      /* the store's copy says when it first failed */
	struct entry *next;     /* the next of its lane */
};

struct lane {
	char *name;
	struct entry *head, *tail;
	struct lane *hnext; /* hash chain */
};

/* A removal waiting for the next batch commit. */
struct finished {
	struct entry *e;
	char *val; /* the action as stored */
	size_t vlen;
	json_t *answer; /* for the op's done fn, or NULL */
	int set_aside;  /* failed for good: into STORE_OUTBOX_FAILED */
	char why[96];   /* the last failure, when set aside */
	struct finished *next;
};

enum slot_state {
	SLOT_IDLE = 0,
	SLOT_BUSY, /* given an action; the worker runs it */
	SLOT_DONE, /* its outcome waits for the dispatcher */
};

/* One worker thread and the action it runs.  Guarded by pool.mu but for
 * ob, which only the worker touches. */
struct slot {
	outbox ob; /* the worker's context: its own cs_client */
	pthread_t thread;
	pthread_cond_t cv;
	enum slot_state state;
	struct entry *e;
	char *val;
	size_t vlen;
	unsigned attempt;
	enum outbox_result res;
	uint64_t delay_ms;
	json_t *answer;
	char why[96];
};

struct pool {
	pthread_t dispatcher;
	pthread_mutex_t mu; /* guards stop, woken and the slots' state */
	pthread_cond_t cv;  /* the dispatcher waits on it */
	int stop;
	int woken;
	struct audit *au; /* from outbox_set_audit, for the dispatcher to take (under mu) */
	struct slot *slots;
	size_t nslots;
	size_t remote_max;   /* slots remote actions may hold at once */
	uint64_t give_up_ms; /* outbox.give_up_after_seconds */
	/* The dispatcher's alone: */
	struct lane **buckets;
	size_t nbuckets, nlanes, nentries;
	uint64_t loaded_seq; /* the highest seq in the picture */
	size_t running, running_remote;
	struct finished *batch, **batch_tail;
	struct entry **first_failed; /* nslots: failed for the first time just now */
	size_t nbatch;
	uint64_t next_commit_ms;   /* no removal commit before this (th_mono_ms) */
	struct outbox_stats stats; /* under mu */
};

/* The audit handle outbox_set_audit gave, for a worker (NULL before). */
static struct audit *pool_audit(outbox *ob)
{
	pthread_mutex_lock(&ob->pool->mu);
	struct audit *au = ob->pool->au;
	pthread_mutex_unlock(&ob->pool->mu);
	return au;
}

void outbox_set_audit(outbox *ob, struct audit *au)
{
	/* The dispatcher, which alone reads ob->au (commit_batch), takes it
	 * from the pool under the lock at its next turn. */
	pthread_mutex_lock(&ob->pool->mu);
	ob->pool->au = au;
	ob->pool->woken = 1;
	pthread_cond_signal(&ob->pool->cv);
	pthread_mutex_unlock(&ob->pool->mu);
}

static uint64_t lane_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static struct lane *lane_find(struct pool *p, const char *name)
{
	for (struct lane *l = p->buckets[lane_hash(name) % p->nbuckets]; l; l = l->hnext) {
		if (strcmp(l->name, name) == 0)
			return l;
	}
	return NULL;
}

static void lanes_grow(struct pool *p)
{
	size_t n = p->nbuckets * 2;
	struct lane **b = xcalloc(n, sizeof(*b));
	for (size_t i = 0; i < p->nbuckets; i++) {
		struct lane *l = p->buckets[i];
		while (l) {
			struct lane *next = l->hnext;
			size_t j = lane_hash(l->name) % n;
			l->hnext = b[j];
			b[j] = l;
			l = next;
		}
	}
	free(p->buckets);
	p->buckets = b;
	p->nbuckets = n;
}

static struct lane *lane_get(struct pool *p, const char *name)
{
	struct lane *l = lane_find(p, name);
	if (l)
		return l;
	if (p->nlanes >= p->nbuckets)
		lanes_grow(p);
	l = xcalloc(1, sizeof(*l));
	l->name = xstrdup(name);
	size_t i = lane_hash(name) % p->nbuckets;
	l->hnext = p->buckets[i];
	p->buckets[i] = l;
	p->nlanes++;
	return l;
}

static void entry_free(struct entry *e)
{
	for (size_t i = 0; i < e->nafter; i++)
		free(e->after[i]);
	free(e->after);
	free(e);
}

/* Take the head of its lane out of the picture (it is gone from the store). */
static void entry_remove(struct pool *p, struct entry *e)
{
	struct lane *l = e->lane;
	l->head = e->next;
	if (!l->head) {
		l->tail = NULL;
		struct lane **pp = &p->buckets[lane_hash(l->name) % p->nbuckets];
		while (*pp != l)
			pp = &(*pp)->hnext;
		*pp = l->hnext;
		free(l->name);
		free(l);
		p->nlanes--;
	}
	p->nentries--;
	entry_free(e);
}

/* The server part of a Matrix id ("!r:hs" -> "hs"), or NULL. */
static const char *id_server(const char *id)
{
	const char *c = id ? strchr(id, ':') : NULL;
	return c && c[1] ? c + 1 : NULL;
}

/* Whether the homeserver may have to wait on another server to do @p a:
 * "remote": true where it was queued, a membership change in a room another
 * server made, or an invite of another server's user. */
static int action_remote(const struct config *cfg, const json_t *a)
{
	if (json_is_true(json_object_get(a, "remote")))
		return 1;
	const char *op = field(a, "op");
	if (!op || !(strcmp(op, "join") == 0 || strcmp(op, "leave") == 0 || strcmp(op, "invite") == 0 ||
	             strcmp(op, "kick") == 0))
		return 0;
	const char *room = id_server(field(a, "room_id"));
	if (room && strcmp(room, cfg->server_name) != 0)
		return 1;
	const char *target = id_server(field(a, "target"));
	return strcmp(op, "invite") == 0 && target && strcmp(target, cfg->server_name) != 0;
}

/* The lane @p a runs in (new string): its "lane", else its room, else its user. */
static char *action_lane(const struct config *cfg, const json_t *a)
{
	if (field(a, "lane"))
		return xstrdup(field(a, "lane"));
	if (field(a, "room_id"))
		return xstrdup(field(a, "room_id"));
	if (field(a, "user_id"))
		return xstrdup(field(a, "user_id"));
	if (field(a, "localpart")) /* register: the user it makes */
		return xasprintf("@%s:%s", field(a, "localpart"), cfg->server_name);
	return xstrdup(""); /* malformed: it is dropped when it runs */
}

/* Add the action stored at @p seq to the picture. */
static void entry_add(struct pool *p, const struct config *cfg, uint64_t seq, const void *val, size_t vlen)
{
	json_t *a = json_loadb(val, vlen, 0, NULL);
	struct entry *e = xcalloc(1, sizeof(*e));
	e->seq = seq;
	char *name = action_lane(cfg, a);
	e->lane = lane_get(p, name);
	free(name);
	e->remote = action_remote(cfg, a);
	/* Failing since before this start: the time to give up runs on. */
	json_int_t since = json_integer_value(json_object_get(a, "failed_since_ms"));
	if (since > 0) {
		uint64_t wall = th_now_ms(), mono = th_mono_ms();
		uint64_t ago = wall > (uint64_t)since ? wall - (uint64_t)since : 0;
		e->first_fail_ms = mono > ago ? mono - ago : 1;
		e->fail_recorded = 1;
	}
	const json_t *after = json_object_get(a, "after");
	if (json_is_array(after) && json_array_size(after) > 0) {
		e->after = xcalloc(json_array_size(after), sizeof(char *));
		size_t i;
		const json_t *v;
		json_array_foreach(after, i, v)
		{
			if (json_string_value(v))
				e->after[e->nafter++] = xstrdup(json_string_value(v));
		}
	}
	json_decref(a);
	if (e->lane->tail)
		e->lane->tail->next = e;
	else
		e->lane->head = e;
	e->lane->tail = e;
	p->nentries++;
	p->loaded_seq = seq;
}

struct load_walk {
	struct pool *p;
	const struct config *cfg;
};

static int load_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct load_walk *w = ctx;
	if (klen != 8)
		return TH_ESTORE;
	if (w->p->nentries >= WINDOW)
		return 1;
	uint64_t seq = store_key_u64(key);
	if (seq > w->p->loaded_seq)
		entry_add(w->p, w->cfg, seq, val, vlen);
	return 0;
}

/* Add what was pushed since the last look. */
static int load_new(outbox *ob)
{
	struct pool *p = ob->pool;
	if (p->nentries >= WINDOW)
		return TH_OK;
	store_txn *t;
	int rc = store_txn_begin(ob->st, 0, &t);
	if (rc)
		return rc;
	unsigned char from[8];
	store_u64_key(from, p->loaded_seq + 1);
	struct load_walk w = {p, ob->cfg};
	rc = store_walk(t, STORE_OUTBOX, from, sizeof(from), load_one, &w);
	store_txn_abort(t);
	return rc;
}

/* Whether @p e may run now: the head of its lane, not running, past its
 * backoff, and no lane it comes after holds an older action. */
static int entry_ready(struct pool *p, const struct entry *e, uint64_t now)
{
	if (e->state != ENTRY_QUEUED || e->not_before_ms > now)
		return 0;
	for (size_t i = 0; i < e->nafter; i++) {
		const struct lane *l = lane_find(p, e->after[i]);
		if (l && l != e->lane && l->head && l->head->seq < e->seq)
			return 0;
	}
	return 1;
}

static int cmp_entry_seq(const void *a, const void *b)
{
	const struct entry *x = *(struct entry *const *)a, *y = *(struct entry *const *)b;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/*
 * Give free slots the ready lane heads, oldest first; remote ones only
 * while fewer than remote_max are running.  @p wait_ms: lowered to when the
 * next backoff ends.
 */
static void dispatch(outbox *ob, uint64_t now, uint64_t *wait_ms)
{
	struct pool *p = ob->pool;
	if (p->running >= p->nslots || p->nentries == 0)
		return;
	struct entry **ready = xmalloc(p->nlanes * sizeof(*ready));
	size_t n = 0;
	for (size_t i = 0; i < p->nbuckets; i++) {
		for (struct lane *l = p->buckets[i]; l; l = l->hnext) {
			struct entry *e = l->head;
			if (entry_ready(p, e, now))
				ready[n++] = e;
			else if (e->state == ENTRY_QUEUED && e->not_before_ms > now &&
			         e->not_before_ms - now < *wait_ms)
				*wait_ms = e->not_before_ms - now;
		}
	}
	qsort(ready, n, sizeof(*ready), cmp_entry_seq);
	store_txn *t = NULL;
	for (size_t i = 0; i < n && p->running < p->nslots; i++) {
		struct entry *e = ready[i];
		if (e->remote && p->running_remote >= p->remote_max)
			continue;
		if (!t && store_txn_begin(ob->st, 0, &t) != TH_OK) {
			t = NULL;
			break;
		}
		unsigned char key[8];
		store_u64_key(key, e->seq);
		const void *v;
		size_t vlen;
		int rc = store_get(t, STORE_OUTBOX, key, sizeof(key), &v, &vlen);
		if (rc) {
			/* Not in the store: nothing to run.  Gone from the picture too. */
			LOG(LOG_WARN, "outbox: action %llu is no longer queued", (unsigned long long)e->seq);
			entry_remove(p, e);
			continue;
		}
		pthread_mutex_lock(&p->mu);
		struct slot *s = NULL;
		/* Stopping (pool_join) since this turn began: a worker may already
		 * have left, so nothing more is handed out. */
		for (size_t j = 0; j < p->nslots && !s && !p->stop; j++) {
			if (p->slots[j].state == SLOT_IDLE)
				s = &p->slots[j];
		}
		if (s) {
			s->e = e;
			s->val = xstrndup(v, vlen);
			s->vlen = vlen;
			s->attempt = e->attempt;
			s->answer = NULL;
			s->delay_ms = 0;
			s->why[0] = '\0';
			s->state = SLOT_BUSY;
			pthread_cond_signal(&s->cv);
		}
		pthread_mutex_unlock(&p->mu);
		if (!s)
			break;
		e->state = ENTRY_RUNNING;
		p->running++;
		if (e->remote)
			p->running_remote++;
	}
	store_txn_abort(t);
	free(ready);
}

/* ---- moving aside ----------------------------------------------------------- */

#define META_FAILED_ALERTS "outbox_failed_alerts"

/* Keep @p f's action in STORE_OUTBOX_FAILED and, when there is a
 * safeguarding room, say so there as the bot (ids only). */
static int set_aside(const outbox *ob, store_txn *t, const struct finished *f)
{
	json_t *a = json_loadb(f->val, f->vlen, 0, NULL);
	const char *op = a ? field(a, "op") : NULL;
	uint64_t now = th_now_ms();
	uint64_t first = now - (th_mono_ms() - f->e->first_fail_ms);
	json_t *rec =
	        json_pack("{s:I, s:o, s:I, s:I, s:I, s:s, s:s}", "seq", (json_int_t)f->e->seq, "action",
	                  a ? json_incref(a) : json_string(f->val), "attempts", (json_int_t)f->e->attempt,
	                  "first_failure_ms", (json_int_t)first, "set_aside_ms", (json_int_t)now,
	                  "last_error", f->why, "lane", f->e->lane->name);
	char *val = json_dumps(rec, JSON_COMPACT);
	json_decref(rec);
	unsigned char key[8];
	store_u64_key(key, f->e->seq);
	int rc = store_put(t, STORE_OUTBOX_FAILED, key, sizeof(key), val, strlen(val), 0);
	free(val);
	LOG(LOG_ERROR,
	    "outbox: %s action %llu in %s failed for %llu s (%u attempts, last: %s); set aside: see "
	    "`threshold status`",
	    op ? op : "?", (unsigned long long)f->e->seq, f->e->lane->name,
	    (unsigned long long)((now - first) / 1000), f->e->attempt, f->why);
	const char *room = ob->cfg->safeguarding_room;
	/* An alert that itself cannot be delivered is not announced again. */
	int is_alert = a && room && json_is_true(json_object_get(a, "alert"));
	if (!rc && room && !is_alert) {
		char *text = xasprintf(
		        "Threshold could not deliver an action for %llu minutes and has set it aside: %s "
		        "in %s%s%s (action %llu, %u attempts, last: %s). Its room carries on without it. An "
		        "admin can see it with `threshold status`.",
		        (unsigned long long)((now - first) / 60000), op ? op : "an unreadable action",
		        field(a, "room_id") ? field(a, "room_id") : f->e->lane->name,
		        field(a, "target") ? " for " : "", field(a, "target") ? field(a, "target") : "",
		        (unsigned long long)f->e->seq, f->e->attempt, f->why);
		json_t *n = outbox_notice(room, ob->cfg->bot_user_id, text, NULL);
		json_object_set_new(n, "alert", json_true());
		free(text);
		rc = outbox_push(t, n);
		json_decref(n);
	}
	if (!rc && a && field(a, "erasure")) { /* a step of an erasure given up: on its record */
		char *why = xasprintf("set aside after %llu minutes, last: %s",
		                      (unsigned long long)((now - first) / 60000), f->why);
		rc = erasure_step_failed(ob->au, ob->cfg, t, a, why);
		free(why);
	}
	json_decref(a);
	return rc;
}

/* In @p t: what removing @p f from the queue means (its done fn, its blob,
 * or its keeping aside). */
static int finish_in(const outbox *ob, store_txn *t, const struct finished *f)
{
	unsigned char key[8];
	store_u64_key(key, f->e->seq);
	int rc = store_del(t, STORE_OUTBOX, key, sizeof(key));
	if (rc && rc != TH_ENOTFOUND)
		return rc;
	if (f->set_aside)
		return set_aside(ob, t, f);
	json_t *a = json_loadb(f->val, f->vlen, 0, NULL);
	if (f->answer && jsonx_str(f->answer, ENFORCE_REFUSED)) {
		/* An enforcement action refused for good (execute): on the record. */
		rc = outbox_enforcement_failed(ob, t, a, jsonx_str(f->answer, ENFORCE_REFUSED));
	} else if (f->answer && jsonx_str(f->answer, ERASURE_REFUSED)) {
		rc = erasure_step_failed(ob->au, ob->cfg, t, a, jsonx_str(f->answer, ERASURE_REFUSED));
	} else if (f->answer) {
		const struct op *op = op_check(a);
		rc = op && op->done ? op->done(ob, t, a, f->answer) : TH_OK;
	} else if (field(a, "blob") && !json_object_get(a, "spool")) { /* dropped: its bytes go with it */
		rc = store_del(t, STORE_BLOBS, field(a, "blob"), strlen(field(a, "blob")));
		rc = rc == TH_ENOTFOUND ? TH_OK : rc;
	} else {
		rc = TH_OK;
	}
	json_decref(a);
	return rc;
}

/* After the commit that removed @p f from the queue (sent, dropped or set
 * aside): its spooled file, if it has one, goes.  A crash before this
 * leaves the file to the sweep at the next start (outbox_spool_sweep). */
static void spool_forget(const outbox *ob, const struct finished *f)
{
	if (!memmem(f->val, f->vlen, "\"spool\"", 7))
		return; /* the common case: no file, no parse */
	json_t *a = json_loadb(f->val, f->vlen, 0, NULL);
	if (json_is_object(json_object_get(a, "spool")) && field(a, "blob"))
		spool_remove(ob->cfg, field(a, "blob"));
	json_decref(a);
}

/* The spooled file's name of queued action @p val, or NULL (new string). */
static char *spooled_name(const void *val, size_t vlen, const char *of_guest)
{
	if (!memmem(val, vlen, "\"spool\"", 7))
		return NULL;
	json_t *a = json_loadb(val, vlen, 0, NULL);
	char *name = NULL;
	if (json_is_object(json_object_get(a, "spool")) && field(a, "blob") &&
	    (!of_guest || (field(a, "user_id") && strcmp(field(a, "user_id"), of_guest) == 0)))
		name = xstrdup(field(a, "blob"));
	json_decref(a);
	return name;
}

static int spool_collect(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key;
	(void)klen;
	char *name = spooled_name(val, vlen, NULL);
	if (name)
		json_object_set_new(ctx, name, json_true());
	free(name);
	return 0;
}

static int spool_named(void *ctx, const char *name)
{
	return json_object_get(ctx, name) != NULL;
}

int outbox_spool_sweep(store *st, const struct config *cfg, size_t *removed)
{
	store_txn *t;
	int rc = store_txn_begin(st, 0, &t);
	if (rc)
		return rc;
	json_t *names = json_object();
	rc = store_walk(t, STORE_OUTBOX, NULL, 0, spool_collect, names);
	store_txn_abort(t);
	size_t n = 0, strange = 0;
	if (!rc)
		rc = spool_sweep(cfg, spool_named, names, &n, &strange);
	if (!rc && (n || strange))
		LOG(LOG_INFO,
		    "outbox: removed %zu spooled file(s) no queued action names; %zu other file(s) left "
		    "alone",
		    n, strange);
	if (!rc && removed)
		*removed = n;
	json_decref(names);
	return rc;
}

struct guest_files {
	const char *guest;
	json_t *names;
};

static int guest_collect(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key;
	(void)klen;
	struct guest_files *g = ctx;
	char *name = spooled_name(val, vlen, g->guest);
	if (name)
		json_array_append_new(g->names, json_string(name));
	free(name);
	return 0;
}

int outbox_spool_remove_guest(store *st, const struct config *cfg, const char *guest, size_t *removed)
{
	store_txn *t;
	int rc = store_txn_begin(st, 0, &t);
	if (rc)
		return rc;
	struct guest_files g = {.guest = guest, .names = json_array()};
	rc = store_walk(t, STORE_OUTBOX, NULL, 0, guest_collect, &g);
	store_txn_abort(t);
	size_t i, n = 0;
	json_t *v;
	json_array_foreach(g.names, i, v)
	{
		n += spool_remove(cfg, json_string_value(v)) == TH_OK;
	}
	json_decref(g.names);
	if (!rc && removed)
		*removed = n;
	return rc;
}

static void finished_free(struct finished *f)
{
	json_decref(f->answer);
	free(f->val);
	free(f);
}

/*
 * Commit the removals collected so far, with what follows from them, in one
 * write transaction.  Should one of them fail (a done fn's store error), each
 * is tried in a transaction of its own, and one that still fails runs again
 * later (every op is safe to repeat).
 */
static void commit_batch(outbox *ob, uint64_t now)
{
	struct pool *p = ob->pool;
	struct finished *list = p->batch;
	p->batch = NULL;
	p->batch_tail = &p->batch;
	p->nbatch = 0;
	if (!list)
		return;
	uint64_t t0 = th_mono_us();
	store_txn *t = NULL;
	int rc = store_txn_begin(ob->st, 1, &t);
	for (struct finished *f = list; !rc && f; f = f->next)
		rc = finish_in(ob, t, f);
	if (!rc)
		rc = store_txn_commit(t);
	else
		store_txn_abort(t); /* NULL when the begin failed: a no-op */
	int all = rc == TH_OK;
	uint64_t removed = 0, aside = 0, commits = all;
	while (list) {
		struct finished *f = list;
		list = f->next;
		if (!all) {
			rc = store_txn_begin(ob->st, 1, &t);
			if (!rc) {
				rc = finish_in(ob, t, f);
				if (rc)
					store_txn_abort(t);
				else
					rc = store_txn_commit(t);
			}
		}
		if (!all && rc) {
			LOG(LOG_ERROR, "outbox: removing action %llu: %s", (unsigned long long)f->e->seq,
			    th_strerror(rc));
			f->e->state = ENTRY_QUEUED;
			f->e->not_before_ms = now + STORE_RETRY_MS;
		} else {
			spool_forget(ob, f);
			entry_remove(p, f->e);
			removed++;
			aside += (uint64_t)f->set_aside;
			commits += (uint64_t)!all;
		}
		finished_free(f);
	}
	pthread_mutex_lock(&p->mu);
	p->stats.removed += removed;
	p->stats.set_aside += aside;
	p->stats.commits += commits;
	pthread_mutex_unlock(&p->mu);
	/* Leave the writer to the homeserver's transactions three times as
	 * long as this took (in microseconds: most take less than one
	 * millisecond): a backlog draining holds LMDB's one writer a quarter
	 * of the time at most, and a transaction waits behind one removal
	 * commit at most (docs/performance.md, the backlog row). */
	uint64_t t1 = th_mono_us();
	p->next_commit_ms = (t1 + 3 * (t1 - t0) + 999) / 1000; /* th_mono_ms()'s clock */
}

/* Take the outcome of a slot's action (under pool.mu).  @return 1 when the
 * action has just failed for the first time and is to be retried: the
 * caller records when (record_first_failure). */
static int collect(outbox *ob, struct slot *s, uint64_t now)
{
	struct pool *p = ob->pool;
	struct entry *e = s->e;
	p->running--;
	if (e->remote)
		p->running_remote--;
	if (s->res == OUTBOX_RETRY) {
		if (e->attempt < UINT_MAX)
			e->attempt++;
		if (!e->first_fail_ms)
			e->first_fail_ms = now ? now : 1;
		if (now - e->first_fail_ms < p->give_up_ms) {
			e->state = ENTRY_QUEUED;
			e->not_before_ms = now + s->delay_ms;
			free(s->val);
			s->val = NULL;
			return !e->fail_recorded;
		}
	}
	struct finished *f = xcalloc(1, sizeof(*f));
	f->e = e;
	f->val = s->val;
	f->vlen = s->vlen;
	f->answer = s->answer;
	f->set_aside = s->res == OUTBOX_RETRY;
	memcpy(f->why, s->why, sizeof(f->why));
	s->val = NULL;
	s->answer = NULL;
	e->state = ENTRY_FINISHED;
	*p->batch_tail = f;
	p->batch_tail = &f->next;
	p->nbatch++;
	return 0;
}

/*
 * Write into the stored action when it first failed ("failed_since_ms",
 * wall clock), so that a restart does not start its time to give up again.
 * Best effort: if the store fails, the time runs from this start only.
 */
static void record_first_failure(outbox *ob, struct entry *e)
{
	e->fail_recorded = 1;
	uint64_t since = th_now_ms() - (th_mono_ms() - e->first_fail_ms);
	unsigned char key[8];
	store_u64_key(key, e->seq);
	store_txn *t;
	int rc = store_txn_begin(ob->st, 1, &t);
	if (rc)
		goto out;
	const void *v;
	size_t vlen;
	rc = store_get(t, STORE_OUTBOX, key, sizeof(key), &v, &vlen);
	json_t *a = rc ? NULL : json_loadb(v, vlen, 0, NULL);
	if (!a) {
		store_txn_abort(t);
		goto out;
	}
	json_object_set_new(a, "failed_since_ms", json_integer((json_int_t)since));
	char *val = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	rc = val ? store_put(t, STORE_OUTBOX, key, sizeof(key), val, strlen(val), 0) : TH_EINVAL;
	free(val);
	if (rc)
		store_txn_abort(t);
	else
		rc = store_txn_commit(t);
out:
	if (rc)
		LOG(LOG_WARN, "outbox: recording when action %llu first failed: %s",
		    (unsigned long long)e->seq, th_strerror(rc));
}

static void *worker(void *arg)
{
	struct slot *s = arg;
	struct pool *p = s->ob.pool;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->stop && s->state != SLOT_BUSY)
			pthread_cond_wait(&s->cv, &p->mu);
		if (s->state != SLOT_BUSY)
			break; /* stopping, with nothing in hand */
		uint64_t seq = s->e->seq;
		char *val = s->val;
		size_t vlen = s->vlen;
		unsigned attempt = s->attempt;
		pthread_mutex_unlock(&p->mu);
		uint64_t delay = 0;
		json_t *answer = NULL;
		char why[96] = "";
		enum outbox_result res = execute(&s->ob, seq, val, vlen, attempt, &delay, &answer, why);
		pthread_mutex_lock(&p->mu);
		s->res = res;
		s->delay_ms = delay;
		s->answer = answer;
		memcpy(s->why, why, sizeof(why));
		s->state = SLOT_DONE;
		p->woken = 1;
		pthread_cond_signal(&p->cv);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

static void *dispatcher(void *arg)
{
	outbox *ob = arg;
	struct pool *p = ob->pool;
	for (;;) {
		uint64_t now = th_mono_ms();
		/* Clear the wake flag before looking, so a push committed after
		 * the look (and its outbox_wake) is never slept through. */
		pthread_mutex_lock(&p->mu);
		int stop = p->stop;
		p->woken = 0;
		ob->au = p->au;
		size_t busy = 0, nfailed = 0;
		for (size_t i = 0; i < p->nslots; i++) {
			struct slot *s = &p->slots[i];
			if (s->state == SLOT_DONE) {
				struct entry *e = s->e;
				if (collect(ob, s, now))
					p->first_failed[nfailed++] = e;
				s->state = SLOT_IDLE;
			}
			busy += s->state == SLOT_BUSY;
		}
		pthread_mutex_unlock(&p->mu);
		for (size_t i = 0; i < nfailed; i++)
			record_first_failure(ob, p->first_failed[i]);

		if (p->batch && (stop || now >= p->next_commit_ms))
			commit_batch(ob, now);
		if (stop && busy == 0 && !p->batch)
			break;

		uint64_t wait = IDLE_POLL_MS;
		if (!stop) {
			int rc = load_new(ob);
			if (rc) {
				LOG(LOG_ERROR, "outbox: reading the queue: %s", th_strerror(rc));
				wait = STORE_RETRY_MS;
			}
			dispatch(ob, th_mono_ms(), &wait);
		}
		if (p->batch) {
			uint64_t n2 = th_mono_ms();
			uint64_t until = p->next_commit_ms > n2 ? p->next_commit_ms - n2 : 0;
			if (until < wait)
				wait = until;
		}
		if (wait == 0)
			continue;
		uint64_t deadline = th_mono_ms() + wait;
		struct timespec ts = {.tv_sec = (time_t)(deadline / 1000),
		                      .tv_nsec = (long)(deadline % 1000) * 1000000L};
		pthread_mutex_lock(&p->mu);
		while (!p->woken && !(p->stop && !stop)) {
			if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) == ETIMEDOUT)
				break;
		}
		pthread_mutex_unlock(&p->mu);
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

/* Free the picture and what is left of a pool that never ran or has stopped. */
static void pool_free(struct pool *p)
{
	while (p->batch) {
		struct finished *f = p->batch;
		p->batch = f->next;
		finished_free(f);
	}
	for (size_t i = 0; i < p->nbuckets; i++) {
		struct lane *l = p->buckets[i];
		while (l) {
			struct lane *next = l->hnext;
			while (l->head) {
				struct entry *e = l->head;
				l->head = e->next;
				entry_free(e);
			}
			free(l->name);
			free(l);
			l = next;
		}
	}
	free(p->buckets);
	for (size_t i = 0; i < p->nslots; i++) {
		free(p->slots[i].val);
		json_decref(p->slots[i].answer);
	}
	free(p->slots);
	free(p->first_failed);
	free(p);
}

/* Free what outbox_start made, once every thread has ended. */
static void outbox_free(outbox *ob)
{
	struct pool *p = ob->pool;
	for (size_t i = 0; i < p->nslots; i++) {
		cs_client_free(p->slots[i].ob.cs);
		pthread_cond_destroy(&p->slots[i].cv);
	}
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	pool_free(p);
	free(ob);
}

/* Stop and join @p nthreads workers and (when @p dispatcher_up) the dispatcher. */
static void pool_join(outbox *ob, size_t nthreads, int dispatcher_up)
{
	struct pool *p = ob->pool;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_signal(&p->cv);
	for (size_t i = 0; i < p->nslots; i++)
		pthread_cond_signal(&p->slots[i].cv);
	pthread_mutex_unlock(&p->mu);
	/* The dispatcher first: it waits for the actions in hand and commits
	 * their removal. */
	if (dispatcher_up)
		pthread_join(p->dispatcher, NULL);
	for (size_t i = 0; i < nthreads; i++)
		pthread_join(p->slots[i].thread, NULL);
}

int outbox_start(store *st, const struct config *cfg, const struct outbox_hooks *hooks, outbox **out)
{
	outbox *ob = xcalloc(1, sizeof(*ob));
	ob->st = st;
	ob->cfg = cfg;
	if (hooks)
		ob->hooks = *hooks;
	int rc = load_prefix(st, ob->txn_prefix);
	if (rc) {
		free(ob);
		return rc;
	}
	struct pool *p = xcalloc(1, sizeof(*p));
	ob->pool = p;
	p->nslots = cfg->outbox_concurrency ? cfg->outbox_concurrency : 8;
	/* A quarter for actions that may wait on another server; at least one,
	 * and with two or more slots, never all. */
	p->remote_max = p->nslots / 4 ? p->nslots / 4 : 1;
	p->give_up_ms = (uint64_t)(cfg->outbox_give_up_s ? cfg->outbox_give_up_s : 3600) * 1000;
	p->nbuckets = 64;
	p->buckets = xcalloc(p->nbuckets, sizeof(*p->buckets));
	p->batch_tail = &p->batch;
	p->slots = xcalloc(p->nslots, sizeof(*p->slots));
	p->first_failed = xcalloc(p->nslots, sizeof(*p->first_failed));
	size_t made = 0;
	for (; made < p->nslots; made++) {
		struct slot *s = &p->slots[made];
		s->ob = *ob;
		if ((rc = cs_client_new(cfg, &s->ob.cs)) != TH_OK)
			break;
	}
	if (rc) {
		for (size_t i = 0; i < made; i++)
			cs_client_free(p->slots[i].ob.cs);
		pool_free(p);
		free(ob);
		return rc;
	}

	/* A monotonic clock for the waits: a wall-clock step must not stretch a backoff. */
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&p->mu, NULL);
	for (size_t i = 0; i < p->nslots; i++)
		pthread_cond_init(&p->slots[i].cv, NULL);
	size_t started = 0;
	for (; started < p->nslots; started++) {
		if (pthread_create(&p->slots[started].thread, NULL, worker, &p->slots[started]) != 0)
			break;
	}
	int dispatcher_up = started == p->nslots && pthread_create(&p->dispatcher, NULL, dispatcher, ob) == 0;
	if (!dispatcher_up) {
		LOG(LOG_ERROR, "outbox: cannot start its threads");
		pool_join(ob, started, 0);
		outbox_free(ob);
		return TH_EIO;
	}
	*out = ob;
	return TH_OK;
}

void outbox_wake(outbox *ob)
{
	struct pool *p = ob->pool;
	pthread_mutex_lock(&p->mu);
	p->woken = 1;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

void outbox_stop(outbox *ob)
{
	if (!ob)
		return;
	pool_join(ob, ob->pool->nslots, 1);
	outbox_free(ob);
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

void outbox_stats_get(outbox *ob, struct outbox_stats *out)
{
	pthread_mutex_lock(&ob->pool->mu);
	*out = ob->pool->stats;
	pthread_mutex_unlock(&ob->pool->mu);
}

static int failed_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key;
	(void)klen;
	json_t *rec = json_loadb(val, vlen, 0, NULL);
	const json_t *a = json_object_get(rec, "action");
	/* ids and counts: never a message's content */
	json_t *row = json_pack("{s:O?, s:s?, s:s?, s:s?, s:s?, s:s?, s:O?, s:O?, s:O?, s:s?}", "seq",
	                        json_object_get(rec, "seq"), "op", field(a, "op"), "lane", field(rec, "lane"),
	                        "room_id", field(a, "room_id"), "user_id", field(a, "user_id"), "target",
	                        field(a, "target"), "attempts", json_object_get(rec, "attempts"),
	                        "first_failure_ms", json_object_get(rec, "first_failure_ms"), "set_aside_ms",
	                        json_object_get(rec, "set_aside_ms"), "last_error", field(rec, "last_error"));
	if (row)
		json_array_append_new(ctx, row);
	json_decref(rec);
	return 0;
}

int outbox_failed_list(store_txn *t, json_t **out)
{
	json_t *list = json_array();
	int rc = store_walk(t, STORE_OUTBOX_FAILED, NULL, 0, failed_one, list);
	if (rc) {
		json_decref(list);
		return rc;
	}
	*out = list;
	return TH_OK;
}

int outbox_queue_read(store_txn *t, struct outbox_queue *out)
{
	struct outbox_queue s = {0};
	const void *k, *v;
	size_t klen, vlen;
	int rc = store_count(t, STORE_OUTBOX, &s.pending);
	if (!rc)
		rc = store_count(t, STORE_OUTBOX_FAILED, &s.set_aside);
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
