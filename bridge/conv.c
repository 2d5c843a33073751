/*
 * conv.c - conversations between guests and a service's staff.
 */
#include "conv.h"

#include <string.h>

#include "audit.h"
#include "chanrules.h"
#include "calls.h"
#include "config.h"
#include "feed.h"
#include "guest_record.h"
#include "helper.h"
#include "invites.h"
#include "jsonx.h"
#include "log.h"
#include "matrix.h"
#include "media.h"
#include "mxevent.h"
#include "rooms.h"
#include "spool.h"
#include "route.h"
#include "util.h"
#include "visibility.h"

#define SESSION_DOMAIN "session"
#define RESUME_DOMAIN  "resume"
#define ERASURE_DOMAIN "erasure receipt"
#define MAX_LOCAL_IDS  32                /* local ids remembered per conversation, to send each once */
#define MAX_SESSIONS   16                /* live sessions per guest; a resume past this is refused */
#define WAITING_NAMES  10                /* people named in one grouped notice; the rest in the next */
#define WAITING_HELD   500               /* people held for the next notices; past it only counted */
#define WAITING_KEY    "waiting_notice/" /* STORE_META + service name */
#define LOCAL_ID_KEY   MX_LOCAL_ID_KEY
#define BUSY_RETRY_MS  30000u /* a guest refused for want of room tries again after this */
#define HOUR_MS        3600000ull
#define REFUSALS_MS    60000u /* a guest's refused sends: one audit record a minute at most */

/* ---- small store helpers ---------------------------------------------- */

static json_t *get_json(store_txn *t, enum store_db db, const void *key, size_t klen)
{
	json_t *o;
	if (store_get_jsonb(t, db, key, klen, &o) != TH_OK)
		return NULL;
	if (!json_is_object(o)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int put_json(store_txn *t, enum store_db db, const void *key, size_t klen, const json_t *o)
{
	char *val = json_dumps(o, JSON_COMPACT);
	if (!val)
		return TH_EINVAL;
	int rc = store_put(t, db, key, klen, val, strlen(val), 0);
	free(val);
	return rc;
}

static json_t *conv_get(store_txn *t, const char *guest)
{
	return get_json(t, STORE_CONVS, guest, strlen(guest));
}

static int conv_put(store_txn *t, const char *guest, const json_t *c)
{
	return put_json(t, STORE_CONVS, guest, strlen(guest), c);
}

static int chan_forget_in(store_txn *t, const char *guest, const json_t *c);

static const char *svc_label(const struct config_service *svc)
{
	return svc ? svc->display_name : "the service";
}

/* A service notice in the guest's feed. */
static int feed_notice(store_txn *t, const char *guest, const struct config_service *svc, const char *kind,
                       const char *body)
{
	struct feed_entry e = {.kind = kind, .role = "service", .name = svc_label(svc), .body = body};
	return feed_append(t, guest, &e, NULL);
}

/* ---- sessions ----------------------------------------------------------- */

/* Make a session (and, when @p with_resume, a resume code) for @p guest,
 * remembering their hashes on the conversation record @p c. */
static int session_new(const struct config *cfg, store_txn *t, const char *guest, json_t *c, int with_resume,
                       struct conv_started *out)
{
	int rc = sec_token_new(out->session);
	if (rc)
		return rc;
	unsigned char key[SEC_HASH_LEN];
	char hex[2 * SEC_HASH_LEN + 1];
	sec_hash(SESSION_DOMAIN, out->session, key);
	out->expires_ms = th_now_ms() + (uint64_t)cfg->gw_session_hours * 3600u * 1000u;
	uint64_t conv_end = (uint64_t)json_integer_value(json_object_get(c, "expires_ms"));
	if (conv_end && conv_end < out->expires_ms)
		out->expires_ms = conv_end;
	json_t *s = json_pack("{s:s, s:I}", "guest", guest, "expires_ms", (json_int_t)out->expires_ms);
	rc = put_json(t, STORE_SESSIONS, key, sizeof(key), s);
	json_decref(s);
	if (rc)
		return rc;
	th_hex(hex, key, sizeof(key));
	json_t *list = json_object_get(c, "sessions");
	if (!json_is_array(list)) {
		list = json_array();
		json_object_set_new(c, "sessions", list);
	}
	json_array_append_new(list, json_string(hex));
	while (json_array_size(list) > MAX_SESSIONS) { /* end the oldest */
		unsigned char old[SEC_HASH_LEN];
		const char *h = json_string_value(json_array_get(list, 0));
		for (size_t i = 0; h && strlen(h) == 2 * SEC_HASH_LEN && i < SEC_HASH_LEN; i++) {
			unsigned b;
			sscanf(h + 2 * i, "%2x", &b);
			old[i] = (unsigned char)b;
		}
		if (h && strlen(h) == 2 * SEC_HASH_LEN)
			store_del(t, STORE_SESSIONS, old, sizeof(old));
		json_array_remove(list, 0);
	}
	out->resume[0] = '\0';
	if (with_resume && cfg->gw_resume_codes) {
		if ((rc = sec_resume_new(out->resume)))
			return rc;
		sec_hash(RESUME_DOMAIN, out->resume, key);
		json_t *r = json_pack("{s:s}", "guest", guest);
		rc = put_json(t, STORE_SESSIONS, key, sizeof(key), r);
		json_decref(r);
		if (rc)
			return rc;
		th_hex(hex, key, sizeof(key));
		json_object_set_new(c, "resume", json_string(hex));
	}
	return TH_OK;
}

/* Delete every session and the resume code of conversation @p c. */
static int sessions_end(store_txn *t, json_t *c)
{
	json_t *list = json_object_get(c, "sessions");
	size_t i;
	json_t *h;
	json_t *resume = json_object_get(c, "resume");
	json_t *all = json_array();
	json_array_foreach(list, i, h) json_array_append(all, h);
	if (json_is_string(resume))
		json_array_append(all, resume);
	json_array_foreach(all, i, h)
	{
		const char *hex = json_string_value(h);
		if (!hex || strlen(hex) != 2 * SEC_HASH_LEN)
			continue;
		unsigned char key[SEC_HASH_LEN];
		for (size_t j = 0; j < SEC_HASH_LEN; j++) {
			unsigned b;
			sscanf(hex + 2 * j, "%2x", &b);
			key[j] = (unsigned char)b;
		}
		int rc = store_del(t, STORE_SESSIONS, key, sizeof(key));
		if (rc && rc != TH_ENOTFOUND) {
			json_decref(all);
			return rc;
		}
	}
	json_decref(all);
	json_object_set_new(c, "sessions", json_array());
	json_object_set_new(c, "resume", json_null());
	return TH_OK;
}

/* Forget the sessions of conversation @p c that expired or are gone.
 * @return how many are left. */
static size_t sessions_live(store_txn *t, json_t *c, uint64_t now)
{
	json_t *list = json_object_get(c, "sessions");
	for (size_t i = json_array_size(list); i-- > 0;) {
		const char *hex = json_string_value(json_array_get(list, i));
		unsigned char key[SEC_HASH_LEN];
		int ok = hex && strlen(hex) == 2 * SEC_HASH_LEN;
		for (size_t j = 0; ok && j < SEC_HASH_LEN; j++) {
			unsigned b;
			ok = sscanf(hex + 2 * j, "%2x", &b) == 1;
			key[j] = (unsigned char)b;
		}
		json_t *sj = ok ? get_json(t, STORE_SESSIONS, key, sizeof(key)) : NULL;
		uint64_t exp = (uint64_t)json_integer_value(json_object_get(sj, "expires_ms"));
		json_decref(sj);
		if (sj && exp > now)
			continue;
		if (sj)
			store_del(t, STORE_SESSIONS, key, sizeof(key));
		json_array_remove(list, i);
	}
	return json_array_size(list);
}

/* ---- the portal room ---------------------------------------------------- */

static int waiting_notice(const struct config *cfg, const struct matrix *mx, store_txn *t,
                          const struct config_service *svc, const char *pseudonym, const char *room_id,
                          uint64_t now);

/* Set up @p guest's conversation in its new room @p room_id.  @p room: the
 * room's state when the caller holds it (the transaction path), else NULL
 * (read and written here). */
static int room_created(const struct config *cfg, const struct matrix *mx, store_txn *t, const char *guest,
                        const char *room_id, json_t *room)
{
	json_t *c = conv_get(t, guest);
	const char *had = jsonx_str(c, "room");
	if (c && had && strcmp(had, room_id) == 0) {
		json_decref(c); /* done already: the create event and the outbox each call this */
		return TH_OK;
	}
	if (!c || had) {
		/* The guest is gone, or has its room (this one a stray): Threshold
		 * leaves it, as the guest that made it and as the bot it invited. */
		LOG(LOG_WARN, "conversation: a portal room was made for a guest who is gone or has one; "
		              "leaving it");
		json_decref(c);
		int rc = mx->ops->leave(mx->ctx, t, room_id, cfg->bot_user_id);
		if (!rc && config_user_in_namespace(cfg, guest) && strcmp(guest, cfg->bot_user_id) != 0)
			rc = mx->ops->leave(mx->ctx, t, room_id, guest);
		return rc;
	}
	const struct config_service *svc = config_service_find(cfg, jsonx_str(c, "service"));
	/* Seen from its create event, before the outbox's commit: the rooms its
	 * join rule names, as templates_room_created would record them, so a
	 * revert in between restores the same allow list. */
	if (room && svc && svc->staff_room)
		json_object_set_new(room, "allow", json_pack("[s]", svc->staff_room));
	json_object_set_new(c, "room", json_string(room_id));
	if (strcmp(jsonx_str(c, "state") ? jsonx_str(c, "state") : "", CONV_WAITING) == 0)
		json_object_set_new(c, "state", json_string(CONV_OPEN));
	int rc = conv_put(t, guest, c);
	struct guest g;
	if (!rc)
		rc = guests_get(t, guest, &g);
	/* The guest made the room at 100 (matrix.h conv_room_create): it lowers itself
	 * to 0 first, then the bot, which the guest invited, joins.  Both are
	 * queued before the guest's first message.  When the room's create
	 * event reached the transaction path first, the createRoom that made it
	 * may still be running in the guest's lane: an event sent into the room
	 * meanwhile would fork its history (the homeserver then resolves state
	 * and may lose the guest's join), so both wait for that lane. */
	if (!rc)
		rc = mx->ops->conv_room_handover(mx->ctx, t, room_id, guest);
	if (!rc)
		rc = mx->ops->join(mx->ctx, t, room_id, cfg->bot_user_id, guest);
	if (!rc && cfg->pseudonym_per_room) {
		/* One guest per portal: the stored pseudonym, unique among guests,
		 * is unique here, and is the name the guest was shown. */
		rc = rooms_user_set(t, room_id, ROOMS_NAMES, guest, g.pseudonym);
		if (!rc)
			rc = mx->ops->room_name(mx->ctx, t, room_id, guest, g.pseudonym);
	}
	if (!rc && svc) {
		/* staff see how the guest came ("by SMS"), never the address */
		const char *by = jsonx_str(c, "by");
		char *who = by ? xasprintf("%s (%s)", g.pseudonym, by) : xstrdup(g.pseudonym);
		rc = waiting_notice(cfg, mx, t, svc, who, room_id, th_now_ms());
		free(who);
	}
	json_decref(c);
	return rc;
}

/* ---- "waiting" notices, grouped ---------------------------------------------- */

/* The grouped notice of STORE_META WAITING_KEY<service>: {"last_ms":T,
 * "held":[[pseudonym, room]...], "more":N}.  New reference, or NULL. */
static json_t *waiting_get(store_txn *t, const struct config_service *svc, char key[96])
{
	snprintf(key, 96, "%s%s", WAITING_KEY, svc->name);
	return get_json(t, STORE_META, key, strlen(key));
}

/* Post one notice in @p svc's staff room naming up to WAITING_NAMES of
 * @p w's held people (the rest wait for the next minute's), and start the
 * next minute. */
static int waiting_post(const struct config *cfg, const struct matrix *mx, store_txn *t,
                        const struct config_service *svc, json_t *w, uint64_t now)
{
	json_t *held = json_object_get(w, "held");
	size_t n = json_array_size(held), more = (size_t)json_integer_value(json_object_get(w, "more"));
	size_t k = n < WAITING_NAMES ? n : WAITING_NAMES;
	char *text;
	if (n == 1 && !more) {
		text = xasprintf("%s is waiting to talk to %s. Join the conversation: https://matrix.to/#/%s",
		                 json_string_value(json_array_get(json_array_get(held, 0), 0)),
		                 svc->display_name,
		                 json_string_value(json_array_get(json_array_get(held, 0), 1)));
	} else {
		text = xasprintf("%zu people are waiting to talk to %s:", n + more, svc->display_name);
		for (size_t i = 0; i < k; i++) {
			json_t *p = json_array_get(held, i);
			char *line = xasprintf("%s\n- %s: https://matrix.to/#/%s", text,
			                       json_string_value(json_array_get(p, 0)),
			                       json_string_value(json_array_get(p, 1)));
			free(text);
			text = line;
		}
		char *line = NULL;
		if (n > k)
			line = xasprintf("%s\n- %zu more, named in the next notice in a minute", text, n - k);
		else if (more)
			line = xasprintf("%s\n- %zu more arrived too fast to be named here", text, more);
		if (line) {
			free(text);
			text = line;
		}
	}
	/* Each room named is announced once its set-up has run (matrix.h). */
	const char *rooms[WAITING_NAMES];
	for (size_t i = 0; i < k; i++)
		rooms[i] = json_string_value(json_array_get(json_array_get(held, i), 1));
	int rc = mx->ops->notice_after(mx->ctx, t, svc->staff_room, cfg->bot_user_id, text, rooms, k);
	free(text);
	for (size_t i = 0; i < k; i++)
		json_array_remove(held, 0);
	json_object_set_new(w, "last_ms", json_integer((json_int_t)now));
	if (!json_array_size(held))
		json_object_set_new(w, "more", json_integer(0));
	return rc;
}

/* Someone is waiting: tell the staff room at once if it heard nothing from
 * this service for a minute, else hold them for the next grouped notice
 * (conv_waiting_flush), so a flood of guests is one line a minute for staff. */
static int waiting_notice(const struct config *cfg, const struct matrix *mx, store_txn *t,
                          const struct config_service *svc, const char *pseudonym, const char *room_id,
                          uint64_t now)
{
	char key[96];
	json_t *w = waiting_get(t, svc, key);
	if (!w)
		w = json_pack("{s:I, s:[], s:i}", "last_ms", (json_int_t)0, "held", "more", 0);
	json_t *held = json_object_get(w, "held");
	if (!json_is_array(held)) {
		held = json_array();
		json_object_set_new(w, "held", held);
	}
	if (json_array_size(held) < WAITING_HELD)
		json_array_append_new(held, json_pack("[s, s]", pseudonym, room_id));
	else
		json_object_set_new(w, "more",
		                    json_integer(json_integer_value(json_object_get(w, "more")) + 1));
	uint64_t last = (uint64_t)json_integer_value(json_object_get(w, "last_ms"));
	uint64_t every = (uint64_t)cfg->gw_waiting_notice_s * 1000u;
	int rc = TH_OK;
	if (now < last || now - last >= every)
		rc = waiting_post(cfg, mx, t, svc, w, now);
	if (!rc)
		rc = put_json(t, STORE_META, key, strlen(key), w);
	json_decref(w);
	return rc;
}

int conv_waiting_flush(const struct txn_env *env, uint64_t now_ms, size_t *posted)
{
	const struct config *cfg = env->cfg;
	*posted = 0;
	for (size_t i = 0; i < cfg->nservices; i++) {
		const struct config_service *svc = &cfg->services[i];
		char key[96];
		store_txn *t;
		int rc = store_txn_begin(env->st, 0, &t); /* most minutes there is nothing to post */
		if (rc)
			return rc;
		json_t *w = waiting_get(t, svc, key);
		store_txn_abort(t);
		uint64_t last = (uint64_t)json_integer_value(json_object_get(w, "last_ms"));
		int due = json_array_size(json_object_get(w, "held")) > 0 &&
		          (now_ms < last || now_ms - last >= (uint64_t)cfg->gw_waiting_notice_s * 1000u);
		json_decref(w);
		if (!due)
			continue;
		if ((rc = store_txn_begin(env->st, 1, &t)))
			return rc;
		w = waiting_get(t, svc, key); /* again, inside the write transaction */
		rc = w && json_array_size(json_object_get(w, "held"))
		             ? waiting_post(cfg, env->mx, t, svc, w, now_ms)
		             : TH_OK;
		if (!rc && w)
			rc = put_json(t, STORE_META, key, strlen(key), w);
		json_decref(w);
		if (!rc)
			rc = store_txn_commit(t);
		else
			store_txn_abort(t);
		if (rc)
			return rc;
		(*posted)++;
	}
	return TH_OK;
}

/* ---- gateway actions as policy events -------------------------------------- */

/* Conversation @p c as policy sees it (NULL: none).  One without its room
 * yet is waiting, whatever its record says. */
static enum pol_conv conv_fact(const json_t *c)
{
	const char *state = jsonx_str(c, "state");
	if (!c || !state)
		return POL_CONV_NONE;
	if (strcmp(state, CONV_CLOSED) == 0)
		return POL_CONV_CLOSED;
	if (!jsonx_str(c, "room") || strcmp(state, CONV_WAITING) == 0)
		return POL_CONV_WAITING;
	return POL_CONV_OPEN;
}

/* Ask policy about gateway action @p event; @return the action it allows
 * (0: none), the reason in @p reason. */
static enum pol_action_kind gateway_decide(const struct pol_facts *f, struct pol_decision *d)
{
	pol_decide(f, d);
	if (d->reason != POL_R_GUEST_SEND_ALLOWED && d->reason != POL_R_NO_RULE)
		LOG(LOG_DEBUG, "gateway: %s: %s", pol_event_name(f->event), pol_reason_name(d->reason));
	return d->nactions ? d->actions[0].kind : (enum pol_action_kind)0;
}

int conv_room_created(const struct config *cfg, const struct matrix *mx, store_txn *t, const char *guest,
                      const char *room_id)
{
	return room_created(cfg, mx, t, guest, room_id, NULL);
}

int conv_room_seen_created(const struct txn_env *env, store_txn *t, const struct mxev *ev, json_t *room)
{
	const struct config *cfg = env->cfg;
	/* Only Threshold acts as a guest (an exclusive namespace of this
	 * server; no guest has a token): a room whose create event a guest sent
	 * is one Threshold made, and a remote server cannot send as a local
	 * user.  The caller checked the action's mark on it too. */
	if (!ev->sender || !config_user_in_namespace(cfg, ev->sender) ||
	    strcmp(ev->sender, cfg->bot_user_id) == 0)
		return TH_OK;
	json_object_set_new(room, "kind", json_string("portal"));
	/* The guest's own settings while it makes the room are Threshold's
	 * (events.c), until it lowers itself to 0. */
	json_object_set_new(room, "setup", json_string(ev->sender));
	return room_created(cfg, env->mx, t, ev->sender, ev->room_id, room);
}

/* ---- redeem, resume, auth ---------------------------------------------- */

static int chan_open_in(const struct txn_env *env, store_txn *t, const struct conv_channel *ch, json_t *c,
                        const char *guest, const char *lang);

static int redeem(const struct txn_env *env, const char *invite, const char *svc_name, const char *version,
                  const char *lang, const struct conv_channel *ch, struct conv_started *out, char *guest_out);

int conv_redeem(const struct txn_env *env, const char *invite, const char *svc_name, const char *version,
                const char *lang, struct conv_started *out)
{
	return redeem(env, invite, svc_name, version, lang, NULL, out, NULL);
}

static int redeem(const struct txn_env *env, const char *invite, const char *svc_name, const char *version,
                  const char *lang, const struct conv_channel *ch, struct conv_started *out, char *guest_out)
{
	const struct config *cfg = env->cfg;
	store_txn *t;
	int rc = conv_guest_headroom(env);
	if (rc || (rc = store_txn_begin(env->st, 1, &t)))
		return rc;
	uint64_t now = th_now_ms();
	struct inv_info inv = {0};
	/* The facts: is this entry open (a good invitation, or the service's
	 * public entry), to a service and group Threshold still runs? */
	int entry_open = 1;
	if (invite) {
		rc = inv_consume(t, invite, now, &inv);
		if (rc && rc != TH_ENOTFOUND)
			goto fail;
		entry_open = rc == TH_OK;
		svc_name = inv.service;
	}
	const char *group = inv.group[0] ? inv.group : NULL;
	if (entry_open && group) { /* the group must still be one Threshold runs */
		json_t *room = NULL;
		rc = store_get_json(t, STORE_ROOMS, group, &room);
		const char *kind = jsonx_str(room, "kind");
		entry_open = rc == TH_OK && kind && strcmp(kind, "group") == 0;
		json_decref(room);
		if (rc && rc != TH_ENOTFOUND)
			goto fail;
	}
	/* the service may have been removed from config since */
	const struct config_service *svc = entry_open && svc_name ? config_service_find(cfg, svc_name) : NULL;
	if (svc && !invite && !svc->public_entry && !ch) /* a channel's number is its entry */
		svc = NULL;
	struct pol_facts f = {.event = POL_EV_GATEWAY_REDEEM, .entry_open = svc != NULL};
	struct pol_decision d;
	if (gateway_decide(&f, &d) != POL_ACT_OPEN) {
		rc = TH_ENOTFOUND;
		goto fail;
	}
	struct guest g;
	if ((rc = env->mx->ops->guest_create(env->mx->ctx, t, env->au, "gateway", &g)))
		goto fail;
	json_t *c = json_pack("{s:s, s:n, s:s, s:I, s:I, s:s, s:[], s:n, s:[]}", "service", svc->name, "room",
	                      "state", group ? CONV_OPEN : CONV_WAITING, "created_ms", (json_int_t)now,
	                      "expires_ms",
	                      (json_int_t)(now + (uint64_t)svc->conversation_expiry_days * 86400000ull),
	                      "lang", lang, "sessions", "resume", "local_ids");
	if (group)
		json_object_set_new(c, "room", json_string(group));
	rc = session_new(cfg, t, g.user_id, c, 1, out);
	if (!rc && ch)
		rc = chan_open_in(env, t, ch, c, g.user_id, lang);
	if (!rc)
		rc = conv_put(t, g.user_id, c);
	json_decref(c);
	if (rc)
		goto fail;
	/* Consent: which notice, which language, how they came (never the token
	 * nor the address). */
	json_t *details = json_pack("{s:s, s:s, s:s, s:s}", "service", svc->name, "notice_version", version,
	                            "language", lang, "entry",
	                            ch       ? ch->name
	                            : invite ? "invitation"
	                                     : "public");
	struct audit_rec consent = {
	        .kind = AUDIT_CONSENT_RECORDED, .actor = g.user_id, .subject = g.user_id, .details = details};
	rc = audit_append(env->au, t, &consent, NULL);
	json_decref(details);
	if (rc)
		goto fail;
	details = json_pack("{s:s, s:s}", "service", svc->name, "kind", group ? "group" : "portal");
	struct audit_rec opened = {.kind = AUDIT_CONVERSATION_OPENED,
	                           .actor = g.user_id,
	                           .subject = g.user_id,
	                           .room = group,
	                           .details = details};
	rc = audit_append(env->au, t, &opened, NULL);
	json_decref(details);
	if (rc)
		goto fail;
	if (group) {
		/* A group invitation: into the moderated group room, in one action
		 * (the guest's first message is queued after it). */
		char *text = xasprintf("%s is joining this group through an invitation.", g.pseudonym);
		/* After the guest's register and block, which are in the guest's own
		 * lane (outbox.h). */
		rc = env->mx->ops->guest_enter(env->mx->ctx, t, group, cfg->bot_user_id, g.user_id);
		if (!rc)
			rc = env->mx->ops->notice(env->mx->ctx, t, group, cfg->bot_user_id, text, NULL);
		free(text);
	} else {
		/* The guest makes its room itself (matrix.h conv_room_create): nobody
		 * has to invite a guest whose invites the homeserver refuses.  In the
		 * guest's lane, after their register and block. */
		rc = env->mx->ops->conv_room_create(env->mx->ctx, t, g.user_id, g.pseudonym,
		                                    svc->display_name, svc->staff_room);
	}
	if (rc)
		goto fail;
	if ((rc = feed_notice(t, g.user_id, svc, "notice", svc->greeting)))
		goto fail;
	memcpy(out->pseudonym, g.pseudonym, sizeof(out->pseudonym));
	if (guest_out)
		memcpy(guest_out, g.user_id, sizeof(g.user_id));
	return store_txn_commit(t);
fail:
	store_txn_abort(t);
	explicit_bzero(out, sizeof(*out));
	return rc;
}

int conv_resume(const struct txn_env *env, const char *code, struct conv_started *out)
{
	char norm[SEC_RESUME_LEN + 1];
	if (!sec_resume_normalise(code, norm))
		return TH_ENOTFOUND;
	unsigned char key[SEC_HASH_LEN];
	sec_hash(RESUME_DOMAIN, norm, key);
	explicit_bzero(norm, sizeof(norm));
	store_txn *t;
	int rc = conv_guest_headroom(env);
	if (rc || (rc = store_txn_begin(env->st, 1, &t)))
		return rc;
	json_t *r = get_json(t, STORE_SESSIONS, key, sizeof(key));
	const char *guest = jsonx_str(r, "guest");
	json_t *c = guest ? conv_get(t, guest) : NULL;
	struct guest g;
	int known = c && guests_get(t, guest, &g) == TH_OK;
	struct pol_facts f = {.event = POL_EV_GATEWAY_RESUME,
	                      .entry_open = guest != NULL,
	                      .conv = known ? conv_fact(c) : POL_CONV_NONE};
	struct pol_decision d;
	if (gateway_decide(&f, &d) != POL_ACT_SESSION) {
		rc = TH_ENOTFOUND;
		goto out;
	}
	/* No device is ever logged out by a resume: past MAX_SESSIONS live
	 * sessions, the resume is refused instead. */
	if (sessions_live(t, c, th_now_ms()) >= MAX_SESSIONS) {
		rc = TH_ETOOLARGE;
		goto out;
	}
	/* The code is used up: a new one replaces it, shown on this device.
	 * Every device's page is told the conversation was continued elsewhere
	 * (a code found by someone else shows up on the guest's own phone). */
	if ((rc = store_del(t, STORE_SESSIONS, key, sizeof(key))))
		goto out;
	json_object_set_new(c, "resume", json_null());
	if ((rc = session_new(env->cfg, t, guest, c, 1, out)) || (rc = conv_put(t, guest, c)))
		goto out;
	struct feed_entry cont = {.kind = "continued",
	                          .role = "service",
	                          .name = svc_label(config_service_find(env->cfg, jsonx_str(c, "service"))),
	                          .body = "This conversation was continued on another device. Only the "
	                                  "newest code works to continue it now."};
	if ((rc = feed_append(t, guest, &cont, NULL)))
		goto out;
	memcpy(out->pseudonym, g.pseudonym, sizeof(out->pseudonym));
	json_decref(r);
	json_decref(c);
	return store_txn_commit(t);
out:
	json_decref(r);
	json_decref(c);
	store_txn_abort(t);
	return rc;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = src ? strlen(src) : 0;
	if (n >= cap)
		n = cap - 1;
	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

int conv_auth(store *st, const char *token, uint64_t now_ms, struct conv_session *out)
{
	if (!sec_token_ok(token))
		return TH_ENOTFOUND;
	unsigned char key[SEC_HASH_LEN];
	sec_hash(SESSION_DOMAIN, token, key);
	store_txn *t;
	int rc = store_txn_begin(st, 0, &t);
	if (rc)
		return rc;
	json_t *s = get_json(t, STORE_SESSIONS, key, sizeof(key));
	const char *guest = jsonx_str(s, "guest");
	uint64_t exp = (uint64_t)json_integer_value(json_object_get(s, "expires_ms"));
	json_t *c = guest ? conv_get(t, guest) : NULL;
	struct guest g;
	rc = TH_ENOTFOUND;
	if (c && exp > now_ms && guests_get(t, guest, &g) == TH_OK) {
		memset(out, 0, sizeof(*out));
		copy_str(out->guest, sizeof(out->guest), guest);
		copy_str(out->pseudonym, sizeof(out->pseudonym), g.pseudonym);
		copy_str(out->service, sizeof(out->service), jsonx_str(c, "service"));
		copy_str(out->room, sizeof(out->room), jsonx_str(c, "room"));
		copy_str(out->state, sizeof(out->state), jsonx_str(c, "state"));
		out->expires_ms = exp;
		out->erase_only = json_is_true(json_object_get(c, "erase_only"));
		rc = TH_OK;
	}
	json_decref(s);
	json_decref(c);
	store_txn_abort(t);
	return rc;
}

/* ---- what the guest does ------------------------------------------------ */

int conv_guest_headroom(const struct txn_env *env)
{
	size_t used = 0, map = 0;
	unsigned share = env->cfg->guest_share_percent;
	/* 0 (a test's zeroed config): no headroom kept.  Not known: the
	 * commit's own TH_EFULL still stops a write that does not fit. */
	if (!share || store_usage_live(env->st, &used, &map) != TH_OK || !map)
		return TH_OK;
	if ((uint64_t)used * 100 <= (uint64_t)map * share)
		return TH_OK;
	LOG(LOG_DEBUG,
	    "gateway: the store is %.1f of %.0f MiB used, past the guests' share (%u%%): "
	    "guests' writes wait until space frees",
	    used / 1048576.0, map / 1048576.0, share);
	return TH_EFULL;
}

/* The global caps on what guests queue: the outbox's length and, for an
 * upload, the files already held for it.  Plain arithmetic on the store's
 * own counts, not policy: nobody's role or the conversation's state
 * changes the answer.  @return 1 if one more may be queued. */
static int guest_queue_ok(const struct txn_env *env, store_txn *t, int upload)
{
	const struct config *cfg = env->cfg;
	size_t n = 0;
	if (cfg->outbox_max_pending_guest && store_count(t, STORE_OUTBOX, &n) == TH_OK &&
	    n >= cfg->outbox_max_pending_guest)
		return 0;
	/* Files held: those spooled, and those an older Threshold queued in
	 * the map (STORE_BLOBS, until they are sent). */
	uint64_t spooled = 0;
	if (upload && cfg->gw_max_blob_bytes_held && store_db_bytes(t, STORE_BLOBS, &n) == TH_OK &&
	    spool_bytes(cfg, &spooled) == TH_OK && n + spooled >= cfg->gw_max_blob_bytes_held)
		return 0;
	return 1;
}

/* The guest's hourly byte budget (gateway.guest_bytes_per_hour): a bucket
 * of that many bytes in conversation record @p c, refilling steadily over
 * an hour.  One message larger than the whole budget costs the whole
 * budget.  @return 0 and takes @p bytes, or the ms to wait. */
static uint64_t guest_bytes_take(const struct txn_env *env, json_t *c, size_t bytes, uint64_t now)
{
	uint64_t cap = env->cfg->gw_guest_bytes_per_hour;
	if (!cap)
		return 0;
	json_t *b = json_object_get(c, "bytes_budget");
	uint64_t left = cap, at = now;
	if (json_is_object(b)) {
		left = (uint64_t)json_integer_value(json_object_get(b, "left"));
		at = (uint64_t)json_integer_value(json_object_get(b, "at_ms"));
		uint64_t dt = now > at ? now - at : 0;
		if (dt > HOUR_MS)
			dt = HOUR_MS;
		left += dt * cap / HOUR_MS;
		if (left > cap)
			left = cap;
	}
	uint64_t cost = bytes < cap ? bytes : cap;
	if (left < cost)
		return (cost - left) * HOUR_MS / cap + 1;
	json_object_set_new(
	        c, "bytes_budget",
	        json_pack("{s:I, s:I}", "left", (json_int_t)(left - cost), "at_ms", (json_int_t)now));
	return 0;
}

/* The conversation's lifetime byte budget (gateway.conversation_bytes_total):
 * "bytes_total" in conversation record @p c counts every message and
 * upload byte it has carried.  Unlike the hourly bucket it never refills:
 * one conversation cannot grow the store (and the room) without end.
 * @return 1 and counts @p bytes, or 0 (over: nothing counted). */
static int conv_bytes_total_take(const struct txn_env *env, json_t *c, size_t bytes)
{
	uint64_t cap = env->cfg->gw_conversation_bytes_total;
	uint64_t used = (uint64_t)json_integer_value(json_object_get(c, "bytes_total"));
	if (cap && (used > cap || bytes > cap - used))
		return 0;
	json_object_set_new(c, "bytes_total", json_integer((json_int_t)(used + bytes)));
	return 1;
}

/* A refused send by @p guest: the first is recorded, then at most one
 * record a minute, carrying the count of refusals since the last record
 * (a removed guest's page retrying must not fill the audit log, which is
 * never pruned).  The counter lives in conversation record @p c. */
static int refusal_record(const struct txn_env *env, store_txn *t, const char *guest, json_t *c,
                          const char *room_id, enum pol_reason reason, uint64_t now)
{
	json_t *r = json_object_get(c, "refusals");
	uint64_t last = (uint64_t)json_integer_value(json_object_get(r, "at_ms"));
	json_int_t count = json_integer_value(json_object_get(r, "count")) + 1;
	int rc = TH_OK;
	if (!json_is_object(r) || now < last || now - last >= REFUSALS_MS) {
		json_t *details = json_pack("{s:s, s:I}", "via", "gateway", "count", count);
		struct audit_rec ar = {.kind = AUDIT_CONTACT_BLOCKED,
		                       .actor = guest,
		                       .subject = guest,
		                       .room = room_id,
		                       .reason = pol_reason_name(reason),
		                       .details = details};
		rc = audit_append(env->au, t, &ar, NULL);
		json_decref(details);
		last = now;
		count = 0;
	}
	json_object_set_new(c, "refusals",
	                    json_pack("{s:I, s:I}", "at_ms", (json_int_t)last, "count", count));
	return rc ? rc : conv_put(t, guest, c);
}

/*
 * The facts policy judges a guest's gateway action @p event by, in their
 * conversation @p c's room (conv_send, conv_send_media, calls): the room's
 * kind, and whether Threshold knows the guest in it.  The portal is theirs
 * from the moment it exists (the invite and join are queued before), so no
 * record of them yet counts as in.  The caller authenticated the session.
 * @param room  out: the room's record, or NULL (caller frees)
 * @return TH_OK or a store error.
 */
static int guest_action_facts(store_txn *t, const char *guest, const json_t *c, enum pol_event event,
                              json_t **room, struct pol_facts *f)
{
	const char *room_id = jsonx_str(c, "room");
	*room = NULL;
	if (room_id) {
		int rc = store_get_json(t, STORE_ROOMS, room_id, room);
		if (rc && rc != TH_ENOTFOUND)
			return rc;
	}
	char mb[ROOMS_VALUE_MAX];
	const char *membership =
	        room_id && rooms_user_get(t, room_id, ROOMS_GUESTS, guest, mb) == TH_OK ? mb : NULL;
	int member = !membership || strcmp(membership, "join") == 0 || strcmp(membership, "invite") == 0;
	*f = (struct pol_facts){.event = event,
	                        .sender = POL_ROLE_GUEST,
	                        .target = member ? POL_ROLE_GUEST : POL_ROLE_NONE,
	                        .room = rooms_kind(*room),
	                        .bot_joined = 1,
	                        .conv = conv_fact(c),
	                        .session = 1};
	return TH_OK;
}

/* Words for group room @p group_id (policy/route.h): the facts are that
 * room's, and the guest is in it only when joined (no record is no one).
 * @p room is replaced by the group's record. */
static int group_facts(store_txn *t, const char *guest, const char *group_id, json_t **room,
                       struct pol_facts *f)
{
	json_decref(*room);
	*room = NULL;
	int rc = store_get_json(t, STORE_ROOMS, group_id, room);
	if (rc && rc != TH_ENOTFOUND)
		return rc;
	char mb[ROOMS_VALUE_MAX];
	int joined = rooms_user_get(t, group_id, ROOMS_GUESTS, guest, mb) == TH_OK && strcmp(mb, "join") == 0;
	f->room = rooms_kind(*room);
	f->target = joined ? POL_ROLE_GUEST : POL_ROLE_NONE;
	return TH_OK;
}

/* The group rooms @p guest has joined: none, one (its id into @p group) or
 * several. */
static int guest_groups(store_txn *t, const char *guest, enum pol_route_groups *out, char group[256])
{
	char **rooms = NULL;
	size_t n = 0, joined = 0;
	*out = POL_ROUTE_GROUPS_NONE;
	int rc = rooms_member_rooms(t, guest, &rooms, &n);
	for (size_t i = 0; i < n; i++) {
		json_t *state = NULL;
		char mb[ROOMS_VALUE_MAX];
		if (!rc && store_get_json(t, STORE_ROOMS, rooms[i], &state) == TH_OK &&
		    rooms_kind(state) == POL_ROOM_GROUP &&
		    rooms_user_get(t, rooms[i], ROOMS_GUESTS, guest, mb) == TH_OK &&
		    strcmp(mb, "join") == 0 && strlen(rooms[i]) < 256) {
			if (joined++ == 0)
				memcpy(group, rooms[i], strlen(rooms[i]) + 1);
		}
		json_decref(state);
		free(rooms[i]);
	}
	free(rooms);
	if (!rc)
		*out = joined == 0   ? POL_ROUTE_GROUPS_NONE
		       : joined == 1 ? POL_ROUTE_GROUPS_ONE
		                     : POL_ROUTE_GROUPS_SEVERAL;
	return rc;
}

/* The checks every message from the gateway passes (conv_send,
 * conv_send_media): the conversation is open, the local id is new, and
 * policy agrees the guest may write into its room.  On CONV_SENT the
 * caller queues the action in @p t and commits; otherwise @p t has been
 * committed (a refusal's audit record) or must be aborted (@return != OK). */
static int send_checks(const struct txn_env *env, store_txn *t, enum pol_event event, const char *guest,
                       const char *to_room, const char *local_id, size_t bytes, json_t **conv,
                       enum conv_send_result *result, uint64_t *retry_ms)
{
	json_t *c = conv_get(t, guest);
	json_t *room = NULL;
	const char *room_id = to_room ? to_room : jsonx_str(c, "room");
	int rc = TH_OK;
	*conv = NULL;
	if (!c)
		return TH_ENOTFOUND;
	/* The same question the hot path asks, before acting for the guest:
	 * a guest writes only into an open conversation, in a managed room
	 * Threshold knows them in.  The portal is theirs from the moment it
	 * exists (the invite and join are queued before this send).  The caller
	 * authenticated the session. */
	struct pol_facts f;
	if ((rc = guest_action_facts(t, guest, c, event, &room, &f)))
		goto out;
	if (to_room && (rc = group_facts(t, guest, to_room, &room, &f)))
		goto out;
	struct pol_decision d;
	if (gateway_decide(&f, &d) == POL_ACT_SEND) {
		json_t *ids = json_object_get(c, "local_ids");
		size_t i;
		json_t *v;
		json_array_foreach(ids, i, v)
		{
			if (json_is_string(v) && strcmp(json_string_value(v), local_id) == 0) {
				*result = CONV_SENT_BEFORE; /* sent before: once is enough */
				goto out;
			}
		}
	} else if (d.reason == POL_R_GUEST_CONV_CLOSED) {
		*result = CONV_CLOSED_NOW;
		goto out;
	} else if (d.reason == POL_R_GUEST_NOT_READY) {
		*result = CONV_NOT_READY;
		goto out;
	}
	if (d.nactions == 0 || d.actions[0].kind != POL_ACT_SEND) {
		rc = d.record == POL_REC_CONTACT_BLOCKED
		             ? refusal_record(env, t, guest, c, room_id, d.reason, th_now_ms())
		             : TH_OK;
		*result = CONV_REFUSED;
		goto out;
	}
	/* The budgets, last: only a send that would go is counted. */
	uint64_t wait = guest_queue_ok(env, t, event == POL_EV_GATEWAY_UPLOAD) ? 0 : BUSY_RETRY_MS;
	*result = CONV_BUSY;
	if (!wait && !conv_bytes_total_take(env, c, bytes)) {
		*result = CONV_OVER_TOTAL;
		goto out;
	}
	if (!wait) {
		wait = guest_bytes_take(env, c, bytes, th_now_ms());
		*result = CONV_OVER_BUDGET;
	}
	if (wait) {
		if (retry_ms)
			*retry_ms = wait;
		goto out;
	}
	/* Remember the local id: the caller queues the action in this txn. */
	json_t *ids = json_object_get(c, "local_ids");
	json_array_append_new(ids, json_string(local_id));
	while (json_array_size(ids) > MAX_LOCAL_IDS)
		json_array_remove(ids, 0);
	rc = conv_put(t, guest, c);
	*result = CONV_SENT;
	json_decref(room);
	*conv = c;
	return rc;
out:
	json_decref(room);
	json_decref(c);
	return rc;
}

/* Commit what a send queued (or a refusal's audit record), or abort. */
static int send_finish(store_txn *t, int rc, enum conv_send_result *result)
{
	if (rc || (*result != CONV_SENT && *result != CONV_REFUSED)) {
		if (*result == CONV_SENT_BEFORE)
			*result = CONV_SENT; /* sent before: nothing new to commit */
		store_txn_abort(t);
		return rc;
	}
	return store_txn_commit(t);
}

/* What a guest is told on joining a group (a service's words, in their
 * language): how to write to it, and that anything else stays private. */
static const struct {
	const char *lang, *text;
} group_words[] = {
        {"en", "You are now in a support group. To write to everyone in it, start your message "
               "with # and a space, like this: # hello. Anything else stays between you and our "
               "staff."},
        {"fr", "Vous faites maintenant partie d'un groupe de soutien. Pour \xc3\xa9"
               "crire "
               "\xc3\xa0 tout le groupe, commencez votre message par # et une espace, comme "
               "ceci : # bonjour. Tout le reste reste entre vous et notre \xc3\xa9quipe."},
        {"es", "Ahora est\xc3\xa1 en un grupo de apoyo. Para escribir a todo el grupo, empiece "
               "su mensaje con # y un espacio, as\xc3\xad: # hola. Todo lo dem\xc3\xa1s queda "
               "entre usted y nuestro equipo."},
        {"ar", "\xd8\xa3\xd9\x86\xd8\xaa \xd8\xa7\xd9\x84\xd8\xa2\xd9\x86 \xd9\x81\xd9\x8a "
               "\xd9\x85\xd8\xac\xd9\x85\xd9\x88\xd8\xb9\xd8\xa9 \xd8\xaf\xd8\xb9\xd9\x85. "
               "\xd9\x84\xd9\x84\xd9\x83\xd8\xaa\xd8\xa7\xd8\xa8\xd8\xa9 "
               "\xd8\xa5\xd9\x84\xd9\x89 \xd8\xac\xd9\x85\xd9\x8a\xd8\xb9 "
               "\xd8\xa3\xd8\xb9\xd8\xb6\xd8\xa7\xd8\xa6\xd9\x87\xd8\xa7\xd8\x8c "
               "\xd8\xa7\xd8\xa8\xd8\xaf\xd8\xa3 "
               "\xd8\xb1\xd8\xb3\xd8\xa7\xd9\x84\xd8\xaa\xd9\x83 "
               "\xd8\xa8\xd8\xa7\xd9\x84\xd8\xb1\xd9\x85\xd8\xb2 # \xd8\xab\xd9\x85 "
               "\xd9\x85\xd8\xb3\xd8\xa7\xd9\x81\xd8\xa9\xd8\x8c "
               "\xd9\x87\xd9\x83\xd8\xb0\xd8\xa7: # \xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7. "
               "\xd8\xa3\xd9\x8a \xd8\xb1\xd8\xb3\xd8\xa7\xd9\x84\xd8\xa9 "
               "\xd8\xa3\xd8\xae\xd8\xb1\xd9\x89 \xd8\xaa\xd8\xa8\xd9\x82\xd9\x89 "
               "\xd8\xa8\xd9\x8a\xd9\x86\xd9\x83 \xd9\x88\xd8\xa8\xd9\x8a\xd9\x86 "
               "\xd9\x81\xd8\xb1\xd9\x8a\xd9\x82\xd9\x86\xd8\xa7."},
};

int conv_group_joined(store_txn *t, const struct config *cfg, const char *guest, const char *room_id)
{
	json_t *c = conv_get(t, guest);
	const char *own = jsonx_str(c, "room"), *lang = jsonx_str(c, "lang");
	int rc = TH_OK;
	/* A guest whose conversation is this group (came by its link) writes
	 * to it with no mark: nothing to explain. */
	if (c && (!own || strcmp(own, room_id) != 0) && conv_fact(c) != POL_CONV_CLOSED) {
		size_t w = 0;
		for (size_t i = 0; lang && i < sizeof(group_words) / sizeof(group_words[0]); i++)
			if (strcmp(group_words[i].lang, lang) == 0)
				w = i;
		rc = feed_notice(t, guest, config_service_find(cfg, jsonx_str(c, "service")), "notice",
		                 group_words[w].text);
	}
	json_decref(c);
	return rc;
}

/* ---- the automatic helper (policy/helper.h, services.<name>.helper) ----------- */

#define HELPER_ASKED_MS (15u * 60u * 1000u) /* "talk to a person" tells staff again after this */
#define HELPER_MAX_KEYS 32                  /* >= config.c's MAX_HELPER_ENTRIES */

/* The helper's own words, in the languages of the page (its language, else English). */
static const struct {
	const char *lang, *person_line, *asked, *asked_closed;
} helper_words[] = {
        {"en", "Reply 0 to talk to a person.",
         "We have asked a member of staff to join you. Please stay here: they will write to you as soon "
         "as they can.",
         "We are closed now. We have told our staff that you would like to talk to a person; someone "
         "will write to you here when we open."},
        {"fr", "R\xc3\xa9pondez 0 pour parler \xc3\xa0 une personne.",
         "Nous avons demand\xc3\xa9 \xc3\xa0 un membre de l'\xc3\xa9quipe de vous rejoindre. Restez ici : "
         "on vous \xc3\xa9"
         "crira d\xc3\xa8s que possible.",
         "Nous sommes ferm\xc3\xa9s pour le moment. Nous avons dit \xc3\xa0 l'\xc3\xa9quipe que vous "
         "souhaitez parler \xc3\xa0 une personne ; quelqu'un vous \xc3\xa9"
         "crira ici \xc3\xa0 "
         "l'ouverture."},
        {"es", "Responda 0 para hablar con una persona.",
         "Hemos pedido a un miembro del equipo que se una a la conversaci\xc3\xb3n. Qu\xc3\xa9"
         "dese "
         "aqu\xc3\xad: le escribir\xc3\xa1 lo antes posible.",
         "Ahora estamos cerrados. Hemos avisado al equipo de que quiere hablar con una persona; alguien "
         "le escribir\xc3\xa1 aqu\xc3\xad cuando abramos."},
        {"ar",
         "\xd8\xa3\xd8\xb1\xd8\xb3\xd9\x84 0 \xd9\x84\xd9\x84\xd8\xaa\xd8\xad\xd8\xaf\xd8\xab "
         "\xd9\x85\xd8\xb9 \xd8\xb4\xd8\xae\xd8\xb5.",
         "\xd8\xb7\xd9\x84\xd8\xa8\xd9\x86\xd8\xa7 \xd9\x85\xd9\x86 \xd8\xa3\xd8\xad\xd8\xaf "
         "\xd8\xa7\xd9\x84\xd9\x85\xd9\x88\xd8\xb8\xd9\x81\xd9\x8a\xd9\x86 \xd8\xa7\xd9\x84\xd8\xa7\xd9\x86"
         "\xd8\xb6\xd9\x85\xd8\xa7\xd9\x85 \xd8\xa5\xd9\x84\xd9\x8a\xd9\x83. \xd8\xa7\xd8\xa8\xd9\x82 "
         "\xd9\x87\xd9\x86\xd8\xa7\xd8\x8c \xd9\x88\xd8\xb3\xd9\x8a\xd9\x83\xd8\xaa\xd8\xa8 "
         "\xd8\xa5\xd9\x84\xd9\x8a\xd9\x83 \xd9\x81\xd9\x8a \xd8\xa3\xd9\x82\xd8\xb1\xd8\xa8 "
         "\xd9\x88\xd9\x82\xd8\xaa \xd9\x85\xd9\x85\xd9\x83\xd9\x86.",
         "\xd9\x86\xd8\xad\xd9\x86 \xd9\x85\xd8\xba\xd9\x84\xd9\x82\xd9\x88\xd9\x86 \xd8\xa7\xd9\x84\xd8\xa2"
         "\xd9\x86. \xd8\xa3\xd8\xa8\xd9\x84\xd8\xba\xd9\x86\xd8\xa7 \xd8\xa7\xd9\x84\xd9\x85\xd9\x88\xd8\xb8"
         "\xd9\x81\xd9\x8a\xd9\x86 \xd8\xa8\xd8\xa3\xd9\x86\xd9\x83 \xd8\xaa\xd8\xb1\xd9\x8a\xd8\xaf "
         "\xd8\xa7\xd9\x84\xd8\xaa\xd8\xad\xd8\xaf\xd8\xab \xd9\x85\xd8\xb9 \xd8\xb4\xd8\xae\xd8\xb5\xd8\x8c "
         "\xd9\x88\xd8\xb3\xd9\x8a\xd9\x83\xd8\xaa\xd8\xa8 \xd8\xa5\xd9\x84\xd9\x8a\xd9\x83 \xd8\xa3\xd8\xad"
         "\xd8\xaf\xd9\x87\xd9\x85 \xd9\x87\xd9\x86\xd8\xa7 \xd8\xb9\xd9\x86\xd8\xaf\xd9\x85\xd8\xa7 "
         "\xd9\x86\xd9\x81\xd8\xaa\xd8\xad."},
};

static size_t helper_words_of(const char *lang)
{
	for (size_t i = 0; lang && i < sizeof(helper_words) / sizeof(helper_words[0]); i++) {
		if (strcmp(helper_words[i].lang, lang) == 0)
			return i;
	}
	return 0;
}

/* Words of the service's to the guest's feed (the page shows them; a text
 * channel's sender carries them), and what was said to the conversation
 * room as the bot's notice, so staff see what the guest was told. */
static int helper_say(const struct txn_env *env, store_txn *t, const char *guest, const char *room_id,
                      const struct config_service *svc, const char *to_guest, const char *for_staff)
{
	int rc = feed_notice(t, guest, svc, "notice", to_guest);
	if (!rc && for_staff) {
		char *text = xstrdup(for_staff);
		for (const char *p = to_guest; *p;) { /* quoted, line by line */
			const char *nl = strchr(p, '\n');
			size_t n = nl ? (size_t)(nl - p) : strlen(p);
			char *more = xasprintf("%s\n> %.*s", text, (int)n, p);
			free(text);
			text = more;
			p += n + (nl ? 1 : 0);
		}
		rc = env->mx->ops->notice(env->mx->ctx, t, room_id, env->cfg->bot_user_id, text, NULL);
		free(text);
	}
	return rc;
}

/* "Talk to a person": the service's staff room is told at once (not held for
 * the grouped "waiting" notice), as the page's help button tells staff at
 * once, but without the safeguarding alert: asking for a person is not an
 * emergency, and the help button stays one tap away for that. */
static int helper_handover(const struct txn_env *env, store_txn *t, const char *guest, const json_t *c,
                           const char *room_id, const struct config_service *svc, int staff_joined)
{
	struct guest g;
	int rc = guests_get(t, guest, &g);
	if (rc)
		return rc;
	const char *by = jsonx_str(c, "by");
	char *text = xasprintf("%s%s%s%s asked to talk to a person (automatic helper)%s. Join the "
	                       "conversation: https://matrix.to/#/%s",
	                       g.pseudonym, by ? " (" : "", by ? by : "", by ? ")" : "",
	                       staff_joined ? ", out of hours" : "", room_id);
	rc = env->mx->ops->notice(env->mx->ctx, t, svc->staff_room, env->cfg->bot_user_id, text, NULL);
	free(text);
	return rc;
}

#define HELPER_HEARD 8 /* local ids the helper answered, remembered to answer each once */

/* Whether the helper already answered the guest's message @p local_id (NULL: not known). */
static int helper_heard(const json_t *hs, const char *local_id)
{
	size_t i;
	json_t *v;
	if (!local_id)
		return 0;
	json_array_foreach(json_object_get(hs, "heard"), i, v)
	{
		if (json_is_string(v) && strcmp(json_string_value(v), local_id) == 0)
			return 1;
	}
	return 0;
}

/* The helper's remembered state on conversation @p c (borrowed from @p c). */
static json_t *helper_state(json_t *c)
{
	json_t *hs = json_object_get(c, "helper");
	if (!json_is_object(hs)) {
		hs = json_object();
		json_object_set_new(c, "helper", hs);
	}
	return hs;
}

/*
 * After a guest's words reached their conversation room (their echo, in
 * the transaction @p t that put them in the guest's feed: helper_on_echo):
 * the service's helper, if it has one, answers them as policy/helper.h
 * decides.  Nothing here changes what staff see of the guest's words; it
 * only adds the service's answer (to the guest's feed, after the words,
 * and, as the bot's notice, to the conversation room), and staff's "talk
 * to a person" notice.  Remembers on conversation @p c whether the menu was
 * shown, when a person was asked for, and that @p local_id (NULL: not
 * known) was answered.
 */
static int helper_answer(const struct txn_env *env, store_txn *t, const char *guest, json_t *c,
                         const char *body, const char *local_id)
{
	const struct config_service *svc = config_service_find(env->cfg, jsonx_str(c, "service"));
	const char *room_id = jsonx_str(c, "room");
	if (!svc || !svc->nhelpers || !room_id)
		return TH_OK;
	const struct config_helper *h = config_service_helper(svc, jsonx_str(c, "lang"));
	struct pol_helper_key keys[HELPER_MAX_KEYS];
	size_t nkeys = h->nentries < HELPER_MAX_KEYS ? h->nentries : HELPER_MAX_KEYS;
	for (size_t i = 0; i < nkeys; i++)
		keys[i] = (struct pol_helper_key){h->entries[i].number,
		                                  (const char *const *)h->entries[i].words.v,
		                                  h->entries[i].words.n};
	size_t entry = 0;
	char buf[ROOMS_VALUE_MAX];
	uint64_t now = th_now_ms();
	json_t *hs = json_object_get(c, "helper");
	uint64_t asked_ms = (uint64_t)json_integer_value(json_object_get(hs, "asked_ms"));
	struct pol_helper_facts f = {.staff_joined = rooms_user_first(t, room_id, ROOMS_STAFF, buf) == TH_OK,
	                             .open = hours_open(&svc->hours, now, NULL),
	                             .menu_shown = json_is_true(json_object_get(hs, "menu")),
	                             .word = pol_helper_word_of(body, keys, nkeys, &entry)};
	f.asked = asked_ms && !f.staff_joined && now >= asked_ms && now - asked_ms < HELPER_ASKED_MS;
	struct pol_helper_decision d;
	pol_helper_decide(&f, &d);
	LOG(LOG_DEBUG, "helper: %s", pol_helper_reason_name(d.reason));
	if (d.action == POL_HELPER_NOTHING)
		return TH_OK;
	if (local_id) {
		json_t *state = helper_state(c), *heard = json_object_get(state, "heard");
		if (!json_is_array(heard)) {
			heard = json_array();
			json_object_set_new(state, "heard", heard);
		}
		json_array_append_new(heard, json_string(local_id));
		while (json_array_size(heard) > HELPER_HEARD)
			json_array_remove(heard, 0);
	}
	const char *person = helper_words[helper_words_of(h->lang)].person_line;
	int rc = TH_OK;
	char *text = NULL;
	switch (d.action) {
	case POL_HELPER_ANSWER: {
		char label[64];
		if (h->entries[entry].number)
			snprintf(label, sizeof(label), "The helper answered %u:", h->entries[entry].number);
		else
			snprintf(label, sizeof(label), "The helper answered:");
		text = xasprintf("%s\n\n%s", h->entries[entry].text, person);
		rc = helper_say(env, t, guest, room_id, svc, text, label);
		break;
	}
	case POL_HELPER_HANDOVER:
	case POL_HELPER_ASKED: {
		size_t w = helper_words_of(h->lang);
		const char *said = f.open ? helper_words[w].asked : helper_words[w].asked_closed;
		if (d.action == POL_HELPER_HANDOVER) {
			rc = helper_handover(env, t, guest, c, room_id, svc, f.staff_joined);
			if (!rc)
				rc = helper_say(
				        env, t, guest, room_id, svc, said,
				        "The guest asked to talk to a person; the staff room was told:");
			json_object_set_new(helper_state(c), "asked_ms", json_integer((json_int_t)now));
		} else {
			rc = helper_say(env, t, guest, room_id, svc, said, NULL);
		}
		break;
	}
	default:
		break;
	}
	free(text);
	if (!rc && d.menu) {
		text = xasprintf("%s\n\n%s", h->menu, person);
		rc = helper_say(env, t, guest, room_id, svc, text, "The helper showed its menu:");
		free(text);
		json_object_set_new(helper_state(c), "menu", json_true());
	}
	return rc ? rc : conv_put(t, guest, c);
}

/*
 * Guest @p guest's own words @p body (sent with local id @p local_id, or
 * NULL) came back from the homeserver in room @p room_id, and were put in
 * their feed in @p t (feed_event): the helper hears them now, so its answer
 * follows them in the feed, read the same way after a reload.  Only words
 * in the guest's own open conversation room; each message once, by its
 * local id, whichever way it came twice.
 */
static int helper_on_echo(const struct txn_env *env, store_txn *t, const char *guest, const char *room_id,
                          const char *body, const char *local_id)
{
	json_t *c = conv_get(t, guest);
	const char *room = jsonx_str(c, "room");
	int rc = TH_OK;
	if (c && room && strcmp(room, room_id) == 0 && conv_fact(c) == POL_CONV_OPEN &&
	    !helper_heard(json_object_get(c, "helper"), local_id))
		rc = helper_answer(env, t, guest, c, body, local_id);
	json_decref(c);
	return rc;
}

int conv_send(const struct txn_env *env, const char *guest, const char *local_id, const char *body,
              enum conv_send_result *result, uint64_t *retry_ms)
{
	store_txn *t;
	int rc = conv_guest_headroom(env);
	if (rc || (rc = store_txn_begin(env->st, 1, &t)))
		return rc;
	json_t *c = NULL;
	/* Whichever channel: words starting with '#' are for the one group the
	 * guest is in, anything else for their conversation (policy/route.h). */
	char group[256];
	size_t skip = 0;
	struct pol_route_facts rf = {.to_group = pol_route_addressed(body, &skip)};
	struct pol_route_decision rd;
	if (rf.to_group)
		rc = guest_groups(t, guest, &rf.groups, group);
	pol_route_decide(&rf, &rd);
	const char *to = rd.target == POL_ROUTE_GROUP ? group : NULL;
	if (to)
		body += skip;
	if (!rc)
		rc = send_checks(env, t, POL_EV_GATEWAY_SEND, guest, to, local_id, strlen(body), &c, result,
		                 retry_ms);
	if (!rc && *result == CONV_SENT) {
		/* The helper answers when the words reach the guest's own room
		 * (helper_on_echo); words for a group are not its business. */
		rc = env->mx->ops->text(env->mx->ctx, t, to ? to : jsonx_str(c, "room"), guest, body,
		                        local_id);
	}
	json_decref(c);
	return send_finish(t, rc, result);
}

int conv_send_media(const struct txn_env *env, const char *guest, const char *local_id,
                    const struct media_kind *kind, const unsigned char *data, size_t len,
                    enum conv_send_result *result, uint64_t *retry_ms)
{
	store_txn *t;
	int rc = conv_guest_headroom(env);
	if (rc || (rc = store_txn_begin(env->st, 1, &t)))
		return rc;
	json_t *c = NULL;
	rc = send_checks(env, t, POL_EV_GATEWAY_UPLOAD, guest, NULL, local_id, len, &c, result, retry_ms);
	char id[33];
	const char *kept = NULL;
	if (!rc && *result == CONV_SENT) {
		rc = th_random_hex(id, 16);
		/* The bytes are kept by the Matrix implementation (sealed, matrix.h). */
		/* Never the guest's own name for it: "Picture 3.jpg" (media.h). */
		json_int_t n = json_integer_value(json_object_get(c, "files_sent")) + 1;
		json_object_set_new(c, "files_sent", json_integer(n));
		char shown[MEDIA_MAX_NAME + 1];
		media_neutral_name(kind, (unsigned long)n, shown);
		if (!rc)
			rc = conv_put(t, guest, c);
		struct mx_media m = {.room_id = jsonx_str(c, "room"),
		                     .user_id = guest,
		                     .blob = id,
		                     .data = data,
		                     .name = shown,
		                     .mimetype = kind->mimetype,
		                     .msgtype = kind->msgtype,
		                     .local_id = local_id,
		                     .size = len};
		if (!rc)
			rc = env->mx->ops->send_media(env->mx->ctx, t, &m);
		kept = id; /* written, or cleaned up by send_media itself */
	}
	json_decref(c);
	rc = send_finish(t, rc, result);
	if (rc && kept && env->mx->ops->media_unkeep) /* not committed: its file goes (matrix.h) */
		env->mx->ops->media_unkeep(env->mx->ctx, kept);
	return rc;
}

/* Close conversation @p c of @p guest in @p t: the guest leaves the room
 * (unless @p gone: staff removed them already), the feed says so, and (when
 * @p end_sessions) every session ends.  @p by: who closed it (an id, for the
 * audit record). */
static int close_in(const struct txn_env *env, store_txn *t, const char *guest, json_t *c, const char *by,
                    const char *feed_text, int end_sessions, int gone)
{
	const struct config *cfg = env->cfg;
	const char *room_id = jsonx_str(c, "room");
	const struct config_service *svc = config_service_find(cfg, jsonx_str(c, "service"));
	int already = strcmp(jsonx_str(c, "state") ? jsonx_str(c, "state") : "", CONV_CLOSED) == 0;
	json_object_set_new(c, "state", json_string(CONV_CLOSED));
	int rc = TH_OK;
	if (room_id && !already && !gone)
		rc = env->mx->ops->leave(env->mx->ctx, t, room_id, guest);
	if (!rc && !already) {
		struct feed_entry e = {
		        .kind = "closed", .role = "service", .name = svc_label(svc), .body = feed_text};
		rc = feed_append(t, guest, &e, NULL);
	}
	if (!rc && end_sessions)
		rc = sessions_end(t, c);
	if (!rc)
		rc = conv_put(t, guest, c);
	if (!rc && !already) {
		json_t *details = json_pack("{s:s}", "service", svc ? svc->name : "");
		struct audit_rec ar = {.kind = AUDIT_CONVERSATION_CLOSED,
		                       .actor = by,
		                       .subject = guest,
		                       .room = room_id,
		                       .details = details};
		rc = audit_append(env->au, t, &ar, NULL);
		json_decref(details);
	}
	return rc;
}

/* A guest who ends their conversation (End chat, STOP) leaves every group
 * too: they can read and write nothing more there, so they are not left
 * listed as a member the group would think is listening. */
static int leave_groups(const struct txn_env *env, store_txn *t, const char *guest, const char *except)
{
	char **rooms = NULL;
	size_t n = 0;
	int rc = rooms_member_rooms(t, guest, &rooms, &n);
	for (size_t i = 0; i < n; i++) {
		json_t *state = NULL;
		char mb[ROOMS_VALUE_MAX];
		if (!rc && (!except || strcmp(rooms[i], except) != 0) &&
		    store_get_json(t, STORE_ROOMS, rooms[i], &state) == TH_OK &&
		    rooms_kind(state) == POL_ROOM_GROUP &&
		    rooms_user_get(t, rooms[i], ROOMS_GUESTS, guest, mb) == TH_OK &&
		    (strcmp(mb, "join") == 0 || strcmp(mb, "invite") == 0))
			rc = env->mx->ops->leave(env->mx->ctx, t, rooms[i], guest);
		json_decref(state);
		free(rooms[i]);
	}
	free(rooms);
	return rc;
}

int conv_leave(const struct txn_env *env, const char *guest)
{
	store_txn *t;
	int rc = store_txn_begin(env->st, 1, &t);
	if (rc)
		return rc;
	json_t *c = conv_get(t, guest);
	/* The caller authenticated the session; a guest may always leave. */
	struct pol_facts f = {
	        .event = POL_EV_GATEWAY_LEAVE, .sender = POL_ROLE_GUEST, .conv = conv_fact(c), .session = 1};
	struct pol_decision d;
	enum pol_action_kind act = gateway_decide(&f, &d);
	if (!c || (act != POL_ACT_CLOSE && act != POL_ACT_END_SESSIONS)) {
		json_decref(c);
		store_txn_abort(t);
		return TH_ENOTFOUND;
	}
	const char *room_id = jsonx_str(c, "room");
	struct guest g;
	rc = guests_get(t, guest, &g);
	if (!rc && room_id && act == POL_ACT_CLOSE) {
		char *text = xasprintf("%s has left the conversation.", g.pseudonym);
		rc = env->mx->ops->notice(env->mx->ctx, t, room_id, env->cfg->bot_user_id, text, NULL);
		free(text);
	}
	/* The sessions stay, for one thing only: deleting their data (conv_auth). */
	json_object_set_new(c, "erase_only", json_true());
	if (!rc)
		rc = close_in(env, t, guest, c, guest, "You left this conversation.", 0, 0);
	if (!rc && act == POL_ACT_CLOSE)
		rc = leave_groups(env, t, guest, room_id);
	json_decref(c);
	if (rc) {
		store_txn_abort(t);
		return rc;
	}
	return store_txn_commit(t);
}

int conv_help(const struct txn_env *env, const char *guest, uint64_t *when_ms)
{
	const struct config *cfg = env->cfg;
	store_txn *t;
	int rc = store_txn_begin(env->st, 1, &t);
	if (rc)
		return rc;
	json_t *c = conv_get(t, guest);
	/* The caller authenticated the session; a guest asking for help is always heard. */
	struct pol_facts f = {
	        .event = POL_EV_GATEWAY_HELP, .sender = POL_ROLE_GUEST, .conv = conv_fact(c), .session = 1};
	struct pol_decision d;
	if (!c || gateway_decide(&f, &d) != POL_ACT_HELP) {
		json_decref(c);
		store_txn_abort(t);
		return TH_ENOTFOUND;
	}
	const char *room_id = jsonx_str(c, "room");
	const char *state = jsonx_str(c, "state");
	const struct config_service *svc = config_service_find(cfg, jsonx_str(c, "service"));
	uint64_t now = th_now_ms(), seq = 0;
	json_t *details = json_pack("{s:s, s:s}", "channel", "web", "conversation", state ? state : "");
	struct audit_rec ar = {.kind = AUDIT_REPORT_RECEIVED,
	                       .ts_ms = now,
	                       .actor = guest,
	                       .subject = guest,
	                       .room = room_id,
	                       .reason = pol_reason_name(d.reason),
	                       .details = details};
	rc = env->au ? audit_append(env->au, t, &ar, &seq) : TH_OK;
	json_decref(details);
	/* Staff read it where they are: the conversation's room, or, while that
	 * room is still being made, the service's staff room. */
	const char *to = room_id && *room_id ? room_id : svc ? svc->staff_room : NULL;
	if (!rc && to) {
		char *text = xasprintf("URGENT: %s pressed \"I need help now\". Please answer them straight "
		                       "away. The safeguarding lead on duty has been told.",
		                       to == room_id ? "the guest"
		                                     : "a guest whose conversation is just starting");
		rc = env->mx->ops->notice(env->mx->ctx, t, to, cfg->bot_user_id, text, NULL);
		free(text);
	}
	if (!rc && cfg->safeguarding_room) {
		char *who = xstrdup("");
		for (size_t i = 0; svc && i < svc->duty_leads.n; i++) {
			char *more = xasprintf("%s%s ", who, svc->duty_leads.v[i]);
			free(who);
			who = more;
		}
		char *text = xasprintf("%sURGENT: guest %s asked for help now from the page (service %s, "
		                       "conversation room %s, %s). Audit record #%llu.",
		                       who, guest, svc ? svc->name : "?",
		                       room_id && *room_id ? room_id : "not made yet", state ? state : "?",
		                       (unsigned long long)seq);
		rc = env->mx->ops->notice(env->mx->ctx, t, cfg->safeguarding_room, cfg->bot_user_id, text,
		                          NULL);
		free(text);
		free(who);
	}
	json_decref(c);
	if (rc) {
		store_txn_abort(t);
		return rc;
	}
	rc = store_txn_commit(t);
	if (!rc)
		*when_ms = now;
	return rc;
}

/*
 * Whether something holds @p guest's erasure back: a safeguarding case about
 * them not yet closed (env->case_open, appservice/cases.h).  1 with @p why
 * ("case_open") when held, else 0.  When held, conv_erase erases nothing,
 * records erasure_held and tells staff and the leads (erasure_held_tell),
 * and the page tells the guest (409).  A lead's retention hold does not
 * hold an erasure: it keeps what would expire, not what the guest asks to
 * delete.
 */
static int erasure_held(const struct txn_env *env, store_txn *t, const char *guest, const char **why)
{
	*why = NULL;
	if (env->case_open && env->case_open(t, guest) == 1) {
		*why = "case_open";
		return 1;
	}
	return 0;
}

/* An erasure held back (erasure_held): an erasure_held audit record, and a
 * word to staff in the conversation room and to the leads in the
 * safeguarding room (ids only). */
static int erasure_held_tell(const struct txn_env *env, store_txn *t, const char *guest, const char *room_id,
                             const char *why)
{
	const struct config *cfg = env->cfg;
	uint64_t seq = 0;
	struct audit_rec ar = {.kind = AUDIT_ERASURE_HELD,
	                       .actor = guest,
	                       .subject = guest,
	                       .room = room_id,
	                       .reason = why ? why : "held"};
	int rc = audit_append(env->au, t, &ar, &seq);
	if (!rc && room_id)
		rc = env->mx->ops->notice(
		        env->mx->ctx, t, room_id, cfg->bot_user_id,
		        "This guest asked for their data to be deleted, but it is held for "
		        "now (a safeguarding case). They were told that staff know. Talk to "
		        "the safeguarding lead about what happens next.",
		        NULL);
	if (!rc && cfg->safeguarding_room) {
		char *text =
		        xasprintf("Guest %s asked for their data to be deleted; the erasure is held (%s). "
		                  "Audit record #%llu.",
		                  guest, why ? why : "held", (unsigned long long)seq);
		rc = env->mx->ops->notice(env->mx->ctx, t, cfg->safeguarding_room, cfg->bot_user_id, text,
		                          NULL);
		free(text);
	}
	return rc;
}

/* Whether @p room_id, the room of @p guest's conversation, is theirs alone:
 * a portal (made for one guest's conversation; a group is not), whose guest
 * as recorded, if any yet, is them.  The only room an erasure deletes. */
static int room_is_theirs(store_txn *t, const char *room_id, const char *guest)
{
	json_t *room = NULL;
	char pg[256];
	int theirs = 0;
	if (room_id && store_get_json(t, STORE_ROOMS, room_id, &room) == TH_OK) {
		const char *kind = jsonx_str(room, "kind");
		theirs = kind && strcmp(kind, "portal") == 0 &&
		         (rooms_user_first(t, room_id, ROOMS_GUESTS, pg) != TH_OK || strcmp(pg, guest) == 0);
	}
	json_decref(room);
	return theirs;
}

/* The store key of erasure receipt @p receipt. */
static void receipt_key(const char *receipt, unsigned char key[SEC_HASH_LEN])
{
	sec_hash(ERASURE_DOMAIN, receipt, key);
}

int conv_erase(const struct txn_env *env, const char *guest, char receipt[CONV_RECEIPT_LEN + 1])
{
	const struct config *cfg = env->cfg;
	store_txn *t;
	int rc = store_txn_begin(env->st, 1, &t);
	if (rc)
		return rc;
	json_t *own = NULL;
	json_t *c = conv_get(t, guest);
	/* The caller authenticated the session; a guest may always be erased. */
	struct pol_facts f = {
	        .event = POL_EV_GATEWAY_ERASE, .sender = POL_ROLE_GUEST, .conv = conv_fact(c), .session = 1};
	struct pol_decision d;
	if (!c || gateway_decide(&f, &d) != POL_ACT_ERASE) {
		json_decref(c);
		store_txn_abort(t);
		return TH_ENOTFOUND;
	}
	const char *held_why = NULL;
	if (erasure_held(env, t, guest, &held_why)) {
		/* Nothing is erased; the request is on the record, and staff and
		 * the leads are told, so the guest's page can say they know. */
		rc = erasure_held_tell(env, t, guest, jsonx_str(c, "room"), held_why);
		json_decref(c);
		if (rc) {
			store_txn_abort(t);
			return rc;
		}
		rc = store_txn_commit(t);
		return rc ? rc : TH_EEXIST;
	}
	const char *room_id = jsonx_str(c, "room");
	int open = conv_fact(c) != POL_CONV_CLOSED;
	/* A group's room is not theirs alone: only their own room is deleted. */
	int theirs = room_is_theirs(t, room_id, guest);
	/* The rooms whose lanes the profile change and the account steps wait
	 * for (outbox.h "after"): the redactions and the leave run first. */
	json_t *rooms = json_array();
	if (room_id)
		json_array_append_new(rooms, json_string(room_id));
	/* 1. What the guest wrote, to be redacted by the bot: the guest may
	 * have left or been removed, and could not. */
	rc = feed_erase(t, guest, &own);
	size_t nown = json_array_size(own), i;
	const char **events = xcalloc(2 * nown + 1, sizeof(*events));
	json_t *m;
	json_array_foreach(own, i, m)
	{
		events[2 * i] = jsonx_str(m, "room_id");
		events[2 * i + 1] = jsonx_str(m, "event_id");
		size_t j;
		json_t *r;
		int known = 0;
		json_array_foreach(rooms, j, r)
		{
			known |= strcmp(json_string_value(r), jsonx_str(m, "room_id")) == 0;
		}
		if (!known)
			json_array_append_new(rooms, json_string(jsonx_str(m, "room_id")));
	}
	/* 2. A neutral word to staff; the guest leaves if still there. */
	if (!rc && room_id)
		rc = env->mx->ops->notice(
		        env->mx->ctx, t, room_id, cfg->bot_user_id,
		        cfg->hs_admin_token_file && theirs
		                ? "This guest asked for their data to be deleted. Their messages are being "
		                  "removed, then this room will be deleted from the homeserver."
		                : "This guest asked for their data to be deleted. Their messages are being "
		                  "removed.",
		        NULL);
	if (!rc && room_id && open)
		rc = env->mx->ops->leave(env->mx->ctx, t, room_id, guest);
	/* The lanes to wait for, borrowed from @p rooms. */
	size_t nafter = json_array_size(rooms);
	const char **after = xcalloc(nafter ? nafter : 1, sizeof(*after));
	for (size_t k = 0; k < nafter; k++)
		after[k] = json_string_value(json_array_get(rooms, k));
	if (!rc)
		rc = env->mx->ops->displayname(env->mx->ctx, t, guest, "Former guest", after, nafter);
	/* 3. The job: redactions by the bot, then media, account, their room
	 * (appservice/erasure.h); the page says "deleted" only once it is done. */
	if (!rc) {
		struct mx_erasure e = {.guest = guest,
		                       .events = events,
		                       .nevents = nown,
		                       .purge = &room_id,
		                       .npurge = theirs ? 1 : 0,
		                       .after = after,
		                       .nafter = nafter};
		rc = env->mx->ops->erase(env->mx->ctx, t, &e);
	}
	free(after);
	free(events);
	json_decref(rooms);
	/* The receipt: the guest's handle on the job, and nothing else. */
	char full[SEC_RESUME_LEN + 1];
	if (!rc)
		rc = sec_resume_new(full);
	if (!rc) {
		memcpy(receipt, full, CONV_RECEIPT_LEN); /* "ABCD-EFGH-JKLM": 60 bits */
		receipt[CONV_RECEIPT_LEN] = '\0';
		unsigned char key[SEC_HASH_LEN];
		receipt_key(receipt, key);
		json_t *r = json_pack("{s:s}", "erasure", guest);
		rc = put_json(t, STORE_SESSIONS, key, sizeof(key), r);
		json_decref(r);
	}
	/* 4. Sessions, resume code, the channel's address, conversation and the pseudonym go. */
	if (!rc)
		rc = sessions_end(t, c);
	if (!rc)
		rc = chan_forget_in(t, guest, c);
	if (!rc)
		rc = store_del(t, STORE_CONVS, guest, strlen(guest));
	if (!rc) { /* the id stays known (it is in the namespace and the log); the pseudonym goes */
		struct guest g;
		uint64_t created = guests_get(t, guest, &g) == TH_OK ? g.created_ms : 0;
		json_t *u = json_pack("{s:s, s:s, s:I, s:s}", "kind", "guest", "pseudonym", "", "created_ms",
		                      (json_int_t)created, "state", GUESTS_STATE_ERASED);
		rc = store_put_json(t, STORE_USERS, guest, u);
		json_decref(u);
	}
	if (!rc) { /* opened is on the record; so is how it ended */
		json_t *details =
		        json_pack("{s:s}", "service", jsonx_str(c, "service") ? jsonx_str(c, "service") : "");
		struct audit_rec ar = {.kind = AUDIT_CONVERSATION_CLOSED,
		                       .actor = guest,
		                       .subject = guest,
		                       .room = room_id,
		                       .reason = "erased",
		                       .details = details};
		rc = audit_append(env->au, t, &ar, NULL);
		json_decref(details);
	}
	/* 5. The guest's sealing key is destroyed; the record says so. */
	if (!rc)
		rc = audit_erase_subject(env->au, t, guest, guest, "guest_request");
	json_decref(own);
	json_decref(c);
	if (rc) {
		store_txn_abort(t);
		return rc;
	}
	rc = store_txn_commit(t);
	if (!rc)
		audit_txn_committed(env->au);
	if (!rc && env->mx->ops->erased) /* their files waiting to upload (matrix.h) */
		env->mx->ops->erased(env->mx->ctx, guest);
	return rc;
}

int conv_erasure_state(const struct txn_env *env, const char *receipt, enum mx_erase_state *out)
{
	if (!receipt || strlen(receipt) != CONV_RECEIPT_LEN)
		return TH_ENOTFOUND;
	unsigned char key[SEC_HASH_LEN];
	receipt_key(receipt, key);
	store_txn *t;
	int rc = store_txn_begin(env->st, 0, &t);
	if (rc)
		return rc;
	json_t *r = get_json(t, STORE_SESSIONS, key, sizeof(key));
	const char *guest = jsonx_str(r, "erasure");
	rc = guest ? env->mx->ops->erase_state(env->mx->ctx, t, guest, out) : TH_ENOTFOUND;
	if (!rc && *out == MX_ERASE_NONE)
		rc = TH_ENOTFOUND;
	json_decref(r);
	store_txn_abort(t);
	return rc;
}

/* ---- the hot path's hook ---------------------------------------------- */

/* The name a guest feed shows for @p sender in @p room (never an id). */
static const char *sender_name(store_txn *t, const char *room_id, const char *sender, enum pol_role role,
                               struct guest *g, char buf[ROOMS_VALUE_MAX])
{
	if (role == POL_ROLE_GUEST) {
		if (rooms_user_get(t, room_id, ROOMS_NAMES, sender, buf) == TH_OK)
			return buf;
		return g && guests_get(t, sender, g) == TH_OK ? g->pseudonym : "Guest";
	}
	return rooms_user_get(t, room_id, ROOMS_STAFF, sender, buf) == TH_OK && *buf ? buf : "Staff";
}

/* Characters a name shown to a guest may not hold: controls (C0, DEL, C1),
 * the bidirectional embeddings, overrides, isolates and marks (U+202A-202E,
 * U+2066-2069, U+200E/200F, U+061C), line and paragraph separators and the
 * byte order mark.  A staff name with U+202E would turn the text after it
 * round on the guest's page. */
static int name_char_unsafe(uint32_t c)
{
	return c < 0x20 || (c >= 0x7F && c <= 0x9F) || c == 0x061C || c == 0x200E || c == 0x200F ||
	       (c >= 0x202A && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069) || c == 0x2028 || c == 0x2029 ||
	       c == 0xFEFF;
}

/* The length of the UTF-8 character at @p s (its code point in @p cp), or
 * 0 if it is not well formed. */
static size_t utf8_next(const unsigned char *s, uint32_t *cp)
{
	size_t n = 0;
	if (s[0] < 0x80)
		n = 1;
	else if ((s[0] & 0xE0) == 0xC0)
		n = 2;
	else if ((s[0] & 0xF0) == 0xE0)
		n = 3;
	else if ((s[0] & 0xF8) == 0xF0)
		n = 4;
	else
		return 0;
	uint32_t c = n == 1 ? s[0] : (uint32_t)(s[0] & (0x7F >> n));
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3F);
	}
	*cp = c;
	return n;
}

/* A display name safe to show: no controls or bidi formatting (each
 * control a space, the rest dropped), spaces at the ends trimmed, at most
 * 64 bytes of whole characters; NULL when nothing is left. */
static char *clean_name(const char *dn)
{
	if (!dn || !*dn)
		return NULL;
	size_t len = strlen(dn), o = 0;
	char *out = xmalloc(len + 1);
	const unsigned char *s = (const unsigned char *)dn;
	for (size_t i = 0; i < len;) {
		uint32_t c = 0;
		size_t n = utf8_next(s + i, &c);
		if (!n) { /* not UTF-8 (jansson's strings always are): dropped */
			i++;
			continue;
		}
		if (name_char_unsafe(c)) {
			if (c < 0x20 && o && out[o - 1] != ' ')
				out[o++] = ' ';
		} else if (o + n <= 64) {
			memcpy(out + o, s + i, n);
			o += n;
		} else {
			break;
		}
		i += n;
	}
	while (o && out[o - 1] == ' ')
		o--;
	size_t start = 0;
	while (start < o && out[start] == ' ')
		start++;
	if (start == o) {
		free(out);
		return NULL;
	}
	memmove(out, out + start, o - start);
	out[o - start] = '\0';
	return out;
}

/* A guest has a feed only while they have a conversation: not one added to
 * a group by staff alone, nor one who erased their data. */
static int has_conversation(store_txn *t, const char *guest)
{
	const void *v;
	size_t n;
	return store_get(t, STORE_CONVS, guest, strlen(guest), &v, &n) == TH_OK;
}

/* The event a redaction takes down: "redacts" at the top (rooms v1-v10) or
 * in its content (v11); NULL if neither (new string otherwise). */
static char *redacted_id(const struct mxev *ev)
{
	json_t *whole = ev->json.ptr ? json_loadb(ev->json.ptr, ev->json.len, 0, NULL) : NULL;
	const char *id = jsonx_str(whole, "redacts");
	if (!id)
		id = jsonx_str(json_object_get(whole, "content"), "redacts");
	char *out = id && *id && strlen(id) <= 255 /* as txn.c takes ids */ ? xstrdup(id) : NULL;
	json_decref(whole);
	return out;
}

/* ---- what a guest sees (policy/visibility.h) ----------------------------- */

#define MAX_POWER_USERS 256 /* users of m.room.power_levels kept for the redact check */

/* A power level as the spec allows it: an integer, or a string of one
 * (older rooms); @p dflt otherwise. */
static long long power_value(const json_t *v, long long dflt)
{
	if (json_is_integer(v))
		return json_integer_value(v);
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char *end;
		long long n = strtoll(s, &end, 10);
		if (*s && !*end)
			return n;
	}
	return dflt;
}

/* Keep what the redact check needs of the room's m.room.power_levels in
 * @p room ("power"): the redact level, users_default, and the users listed
 * (bounded: past MAX_POWER_USERS only those at or above the redact level). */
static void power_remember(json_t *room, const struct mxev *ev)
{
	json_t *content = NULL;
	if (mxev_content_json(ev, &content) != TH_OK || !json_is_object(content)) {
		json_decref(content);
		return;
	}
	/* spec: redact defaults to 50, users_default to 0 */
	long long redact = power_value(json_object_get(content, "redact"), 50);
	long long dflt = power_value(json_object_get(content, "users_default"), 0);
	json_t *users = json_object_get(content, "users");
	int all = json_object_size(users) <= MAX_POWER_USERS;
	json_t *kept = json_object();
	const char *uid;
	json_t *lv;
	json_object_foreach(users, uid, lv)
	{
		long long n = power_value(lv, dflt);
		if (all || n >= redact)
			json_object_set_new(kept, uid, json_integer(n));
	}
	json_object_set_new(room, "power",
	                    json_pack("{s:I, s:I, s:o}", "redact", (json_int_t)redact, "users_default",
	                              (json_int_t)dflt, "users", kept));
	json_decref(content);
}

/* Whether @p user may redact others' events in @p room: their power reaches
 * the redact level.  Before Threshold has seen the room's power levels, its
 * own templates say: the bot and staff moderate, guests and strangers not. */
static int is_moderator(const json_t *room, const char *user, enum pol_role role)
{
	json_t *p = json_object_get(room, "power");
	if (!json_is_object(p))
		return role == POL_ROLE_BOT || role == POL_ROLE_STAFF || role == POL_ROLE_LEAD;
	long long redact = power_value(json_object_get(p, "redact"), 50);
	long long level = power_value(json_object_get(json_object_get(p, "users"), user),
	                              power_value(json_object_get(p, "users_default"), 0));
	return level >= redact;
}

/* "!threshold ...", "!audit ..." or "!case ...", after leading white space. */
static int is_command_text(const char *s)
{
	if (!s)
		return 0;
	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	return strncmp(s, "!threshold", 10) == 0 || strncmp(s, "!audit", 6) == 0 ||
	       strncmp(s, "!case", 5) == 0;
}

/* @p body without a reply fallback (spec: CS API, "Fallbacks for rich
 * replies": lines starting with "> " at the start, then the blank line
 * after them); borrowed, points into @p body. */
static const char *strip_fallback(const char *body)
{
	const char *p = body;
	if (*p != '>')
		return body;
	while (*p == '>') {
		const char *nl = strchr(p, '\n');
		if (!nl)
			return ""; /* nothing but quote */
		p = nl + 1;
	}
	if (*p == '\n')
		p++;
	else if (p[0] == '\r' && p[1] == '\n')
		p += 2;
	return p;
}

static enum pol_view_kind view_kind(const char *type, const char *msgtype)
{
	if (strcmp(type, "m.reaction") == 0)
		return POL_VIEW_REACTION;
	if (strcmp(type, "m.room.redaction") == 0)
		return POL_VIEW_REDACTION;
	if (!msgtype)
		return POL_VIEW_OTHER;
	if (!strcmp(msgtype, "m.text"))
		return POL_VIEW_MESSAGE;
	if (!strcmp(msgtype, "m.notice"))
		return POL_VIEW_NOTICE;
	if (!strcmp(msgtype, "m.emote"))
		return POL_VIEW_EMOTE;
	if (!strcmp(msgtype, "m.image"))
		return POL_VIEW_IMAGE;
	if (!strcmp(msgtype, "m.file") || !strcmp(msgtype, "m.audio") || !strcmp(msgtype, "m.video"))
		return POL_VIEW_FILE;
	return POL_VIEW_OTHER;
}

/* An id from an event, if it is one Threshold can key on. */
static const char *id_or_null(const char *id)
{
	return id && *id && strlen(id) <= 255 ? id : NULL;
}

/* The event a late message of an erased guest is: redacted by the bot (the
 * guest's account is being deactivated), shown to nobody, on the record. */
static int redact_late(const struct txn_env *env, store_txn *t, const struct mxev *ev,
                       const struct pol_view *v, unsigned *fed)
{
	int rc = env->mx->ops->redact(env->mx->ctx, t, ev->room_id, env->cfg->bot_user_id, ev->event_id,
	                              "Deleted at the guest's request");
	if (!rc && env->au && v->record == POL_VIEW_REC_DATA_ERASED) {
		json_t *details = json_pack("{s:s, s:s}", "event_id", ev->event_id, "what", "late_message");
		struct audit_rec ar = {.kind = AUDIT_DATA_ERASED,
		                       .actor = "threshold",
		                       .subject = ev->sender,
		                       .room = ev->room_id,
		                       .reason = pol_view_reason_name(v->reason),
		                       .details = details};
		rc = audit_append(env->au, t, &ar, NULL);
		json_decref(details);
	}
	if (!rc)
		(*fed)++;
	return rc;
}

/* One message, reaction or redaction in a managed room: for each guest's
 * feed, ask policy what it shows, and do that. */
static int feed_event(const struct txn_env *env, store_txn *t, const struct mxev *ev,
                      enum pol_role sender_role, json_t *room, json_t *guests, unsigned *fed)
{
	if (!ev->event_id || !ev->sender || !ev->room_id)
		return TH_OK;
	json_t *content = NULL;
	if (ev->content_is_object)
		mxev_content_json(ev, &content);
	json_t *rel = json_object_get(content, "m.relates_to");
	const char *rel_type = jsonx_str(rel, "rel_type");
	const char *reply_id = id_or_null(jsonx_str(json_object_get(rel, "m.in_reply_to"), "event_id"));
	const char *rel_id = id_or_null(jsonx_str(rel, "event_id"));
	char *redacts = NULL;
	int staffish = sender_role == POL_ROLE_STAFF || sender_role == POL_ROLE_LEAD;

	struct pol_view_facts f = {.sender = sender_role};
	const char *msgtype = ev->msgtype, *text = ev->body;
	json_t *new_content = NULL;
	f.kind = view_kind(ev->type, msgtype);
	if (f.kind == POL_VIEW_REDACTION) {
		redacts = redacted_id(ev);
		rel_id = redacts;
		reply_id = NULL;
	} else if (f.kind == POL_VIEW_REACTION) {
		f.rel = POL_VIEW_REL_OTHER;
		reply_id = NULL;
	} else if (rel_type && strcmp(rel_type, "m.replace") == 0) {
		/* spec: an edit is judged by, and shows, m.new_content */
		f.rel = POL_VIEW_REL_EDIT;
		new_content = json_object_get(content, "m.new_content");
		text = jsonx_str(new_content, "body");
		f.new_content = text != NULL;
		if (jsonx_str(new_content, "msgtype"))
			f.kind = view_kind(ev->type, jsonx_str(new_content, "msgtype"));
		reply_id = NULL;
	} else if (rel_type && strcmp(rel_type, "m.thread") == 0) {
		f.rel = POL_VIEW_REL_THREAD;
	} else if (rel_type) {
		f.rel = POL_VIEW_REL_OTHER;
	} else if (reply_id) {
		f.rel = POL_VIEW_REL_REPLY;
		rel_id = reply_id;
		reply_id = NULL;
	} else {
		rel_id = NULL;
	}
	if (reply_id && rel_id && strcmp(reply_id, rel_id) == 0)
		reply_id = NULL;
	/* A reply's own words are what follows its fallback quote. */
	const char *own_text = text && f.rel != POL_VIEW_REL_EDIT && f.rel != POL_VIEW_REL_NONE
	                               ? strip_fallback(text)
	                               : text;
	f.command = is_command_text(own_text);
	f.moderator = f.kind == POL_VIEW_REDACTION && is_moderator(room, ev->sender, sender_role);
	if (sender_role == POL_ROLE_GUEST) {
		struct guest g;
		f.sender_erased =
		        guests_get(t, ev->sender, &g) == TH_OK && strcmp(g.state, GUESTS_STATE_ERASED) == 0;
	}

	int rc = TH_OK;
	struct pol_view v;
	if (f.sender_erased) { /* one decision for the event, not per feed */
		pol_visibility_decide(&f, &v);
		if (v.action == POL_VIEW_REDACT) {
			rc = redact_late(env, t, ev, &v, fed);
			goto out;
		}
	}
	if ((f.kind != POL_VIEW_REDACTION && f.kind != POL_VIEW_REACTION && !text &&
	     f.rel != POL_VIEW_REL_EDIT))
		goto out; /* nothing to show, nothing to remember */

	/* A picture or file: a guest who sent it sees it by name, as sent (their
	 * own upload, from the gateway); everyone else gets an attachment the page
	 * fetches through the gateway (GET /media/{id}), or word that it cannot
	 * be shown here (encrypted, or no usable mxc URI).  "body" stays a
	 * short text for a page that does not know attachments. */
	const char *body = own_text, *other_body = own_text;
	struct media_attachment att;
	int has_att = 0;
	char *own_file = NULL, *att_text = NULL, *local_id = NULL;
	if (f.rel != POL_VIEW_REL_EDIT && msgtype && content &&
	    media_attachment_read(msgtype, content, &att) == TH_OK) {
		int picture = !strcmp(att.kind, "picture");
		if (sender_role == POL_ROLE_GUEST)
			body = own_file = xasprintf("[%s: %s]", att.kind, ev->body);
		if (att.mxc[0]) {
			has_att = 1;
			att_text = xasprintf("%s%s[%s: %s]", att.caption ? att.caption : "",
			                     att.caption ? "\n" : "", att.kind, att.name);
			other_body = att_text;
		} else {
			other_body = picture ? "[a picture was sent that cannot be shown here]"
			                     : "[a file was sent that cannot be shown here]";
		}
	}
	if (sender_role == POL_ROLE_GUEST) {
		const char *lid = jsonx_str(content, LOCAL_ID_KEY);
		if (lid) /* xstrndup copies exactly n bytes: bound n by the string */
			local_id = xstrndup(lid, strnlen(lid, CONV_MAX_LOCAL_ID));
	}
	struct guest g;
	char shown[ROOMS_VALUE_MAX];
	/* cleaned again: a name kept before names were cleaned on the way in */
	char *name = clean_name(sender_name(t, ev->room_id, ev->sender, sender_role, &g, shown));
	if (!name)
		name = xstrdup(sender_role == POL_ROLE_GUEST ? "Guest" : "Staff");
	const char *gid;
	json_t *m;
	json_object_foreach(guests, gid, m)
	{
		if (rc || !json_is_string(m))
			continue;
		int self = strcmp(gid, ev->sender) == 0;
		if ((!self && strcmp(json_string_value(m), "join") != 0) || !has_conversation(t, gid))
			continue;
		/* Where what it relates to stands in this feed, in this room. */
		struct feed_mark target = {0}, reply = {0};
		struct pol_view_facts ff = f;
		if (rel_id && (rc = feed_mark_get(t, gid, ev->room_id, rel_id, &target)) == TH_EINVAL)
			rc = TH_OK;
		if (!rc && reply_id &&
		    (rc = feed_mark_get(t, gid, ev->room_id, reply_id, &reply)) == TH_EINVAL)
			rc = TH_OK;
		if (rc)
			break;
		ff.target = !rel_id                            ? POL_VIEW_TARGET_NONE
		            : target.kind == FEED_MARK_VISIBLE ? POL_VIEW_TARGET_VISIBLE
		            : target.kind == FEED_MARK_HIDDEN  ? POL_VIEW_TARGET_HIDDEN
		                                               : POL_VIEW_TARGET_UNKNOWN;
		if (reply.kind == FEED_MARK_HIDDEN)
			ff.target = POL_VIEW_TARGET_HIDDEN;
		ff.by_target_sender =
		        target.kind != FEED_MARK_UNKNOWN && strcmp(target.sender, ev->sender) == 0;
		pol_visibility_decide(&ff, &v);
		unsigned n = 0;
		switch (v.action) {
		case POL_VIEW_SHOW: {
			struct feed_entry e = {.kind = "message",
			                       .role = self       ? "self"
			                               : staffish ? "staff"
			                                          : "guest",
			                       .name = name,
			                       .body = self ? body : other_body,
			                       .local_id = self ? local_id : NULL,
			                       .event_id = ev->event_id, /* for erasure, and a redaction */
			                       .room_id = ev->room_id,
			                       .sender = ev->sender,
			                       .attachment = !self && has_att ? &att : NULL};
			rc = feed_append(t, gid, &e, NULL);
			n = rc == TH_OK;
			/* The guest's own words, as the homeserver has them: the helper's turn. */
			if (!rc && self && f.kind == POL_VIEW_MESSAGE && f.rel == POL_VIEW_REL_NONE &&
			    !own_file)
				rc = helper_on_echo(env, t, gid, ev->room_id, body, local_id);
			break;
		}
		case POL_VIEW_REPLACE:
			rc = feed_replace(t, gid, target.entry, rel_id, ev->room_id, text, &n);
			break;
		case POL_VIEW_REMOVE:
			rc = feed_remove_event(t, gid, rel_id, &n);
			break;
		case POL_VIEW_HIDE:
			if (v.remember_hidden)
				rc = feed_mark_put(t, gid, ev->room_id, ev->event_id, ev->sender, 0);
			break;
		case POL_VIEW_REDACT: /* decided above, once */
		case POL_VIEW_SIGNAL: /* call signals: calls_on_event */
		case POL_VIEW_ACTION_COUNT:
			break;
		}
		if (rc == TH_EINVAL)
			rc = TH_OK; /* a body jansson will not encode: skip it, never block the stream */
		*fed += n;
	}
	free(name);
	free(local_id);
	free(own_file);
	free(att_text);
out:
	free(redacts);
	json_decref(content);
	return rc;
}

/* Staff removed guest @p ev->state_key (a kick or a ban) from the room of
 * their own conversation: it is closed and every session of theirs ends, so
 * the page shows it closed (a waiting poll gets the "closed" entry; a later
 * request, 401) and no resume code brings them back.  Removed from another
 * room (a group they were added to), their conversation goes on. */
static int staff_removed(const struct txn_env *env, store_txn *t, const struct mxev *ev, unsigned *fed)
{
	json_t *c = conv_get(t, ev->state_key);
	const char *room_id = jsonx_str(c, "room");
	int rc = TH_OK;
	if (c && room_id && strcmp(room_id, ev->room_id) == 0 && conv_fact(c) != POL_CONV_CLOSED) {
		/* The sessions stay for erasure only (conv_auth): the guest can
		 * still have their data deleted. */
		json_object_set_new(c, "erase_only", json_true());
		rc = close_in(env, t, ev->state_key, c, ev->sender,
		              "Staff ended this conversation. You can close this page now.", 0, 1);
		if (!rc)
			(*fed)++;
	}
	json_decref(c);
	return rc;
}

/* A call signal in a managed room: bridge/calls.c judges it for each guest
 * of the room who has a conversation (calls are off: none). */
static int call_event(const struct txn_env *env, store_txn *t, const struct mxev *ev,
                      enum pol_role sender_role, unsigned *fed)
{
	if (!env->cfg->calls_enabled || !ev->sender || !ev->room_id || !ev->content_is_object)
		return TH_OK;
	json_t *guests = NULL, *content = NULL;
	int rc = rooms_users(t, ev->room_id, ROOMS_GUESTS, &guests);
	if (!rc && mxev_content_json(ev, &content) == TH_OK) {
		const char *gid;
		json_t *m;
		json_object_foreach(guests, gid, m)
		{
			if (rc || !json_is_string(m) || strcmp(json_string_value(m), "join") != 0 ||
			    !has_conversation(t, gid))
				continue;
			rc = calls_on_event(env, t, gid, ev->type, ev->room_id, ev->sender, sender_role,
			                    content, fed);
		}
	}
	json_decref(content);
	json_decref(guests);
	return rc;
}

int conv_on_event(const struct txn_env *env, store_txn *t, const struct mxev *ev, enum pol_role sender_role,
                  enum pol_role target_role, json_t *room, unsigned *fed)
{
	const char *kind = jsonx_str(room, "kind");
	if (!kind || (strcmp(kind, "portal") != 0 && strcmp(kind, "group") != 0))
		return TH_OK;
	json_t *guests = NULL;
	char shown_was[ROOMS_VALUE_MAX];

	if (strcmp(ev->type, "m.room.member") == 0 && ev->state_key && ev->membership && ev->sender &&
	    target_role == POL_ROLE_GUEST &&
	    (sender_role == POL_ROLE_STAFF || sender_role == POL_ROLE_LEAD) &&
	    strcmp(ev->sender, ev->state_key) != 0 &&
	    (strcmp(ev->membership, "leave") == 0 || strcmp(ev->membership, "ban") == 0))
		return staff_removed(env, t, ev, fed);

	if (strcmp(ev->type, "m.room.member") == 0 && ev->state_key && ev->membership) {
		int staff_target = target_role == POL_ROLE_STAFF || target_role == POL_ROLE_LEAD;
		if (!staff_target)
			return TH_OK;
		int rc = rooms_user_get(t, ev->room_id, ROOMS_STAFF, ev->state_key, shown_was);
		if (rc && rc != TH_ENOTFOUND)
			return rc;
		int was = rc == TH_OK;
		int joined = strcmp(ev->membership, "join") == 0;
		json_t *content = NULL;
		char *dn = NULL;
		if (joined && mxev_content_json(ev, &content) == TH_OK)
			dn = clean_name(jsonx_str(content, "displayname"));
		json_decref(content);
		const char *shown = dn ? dn : "A member of staff";
		char *text = NULL;
		if (joined && !was)
			text = xasprintf("%s has joined the conversation.", shown);
		else if (!joined && was && strcmp(ev->membership, "invite") != 0) {
			char *left = *shown_was ? clean_name(shown_was) : NULL;
			text = xasprintf("%s has left the conversation.", left ? left : "A member of staff");
			free(left);
		}
		rc = text ? rooms_users(t, ev->room_id, ROOMS_GUESTS, &guests) : TH_OK;
		const char *g;
		json_t *m;
		json_object_foreach(guests, g, m)
		{
			if (rc || !text || !json_is_string(m) || strcmp(json_string_value(m), "join") != 0 ||
			    !has_conversation(t, g))
				continue;
			struct feed_entry e = {
			        .kind = "notice", .role = "service", .name = "", .body = text, .ts = 0};
			rc = feed_append(t, g, &e, NULL);
			if (!rc)
				(*fed)++;
		}
		free(text);
		json_decref(guests);
		if (!rc && joined)
			rc = rooms_user_set(t, ev->room_id, ROOMS_STAFF, ev->state_key, dn ? dn : "");
		else if (!rc && strcmp(ev->membership, "invite") != 0)
			rc = rooms_user_set(t, ev->room_id, ROOMS_STAFF, ev->state_key, NULL);
		free(dn);
		return rc;
	}

	if (strcmp(ev->type, "m.room.power_levels") == 0 && ev->state_key && !*ev->state_key) {
		power_remember(room, ev);
		return TH_OK;
	}
	if (strncmp(ev->type, "m.call.", 7) == 0)
		return call_event(env, t, ev, sender_role, fed);
	if (strcmp(ev->type, "m.room.message") != 0 && strcmp(ev->type, "m.reaction") != 0 &&
	    strcmp(ev->type, "m.room.redaction") != 0)
		return TH_OK;
	int rc = rooms_users(t, ev->room_id, ROOMS_GUESTS, &guests);
	if (!rc)
		rc = feed_event(env, t, ev, sender_role, room, guests, fed);
	json_decref(guests);
	return rc;
}

/* ---- staff commands ------------------------------------------------------ */

static const struct {
	const char *verb;
	enum pol_command cmd;
} verbs[] = {
        {"invite", POL_CMD_INVITE},
        {"close", POL_CMD_CLOSE},
        {"handover", POL_CMD_HANDOVER},
        {"note", POL_CMD_NOTE},
};

enum pol_command conv_parse(const char *s)
{
	size_t n = strcspn(s, " \n\t");
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (strlen(verbs[i].verb) == n && strncmp(s, verbs[i].verb, n) == 0)
			return verbs[i].cmd;
	}
	return POL_CMD_NONE;
}

/* The words after "!threshold <verb>" (borrowed), "" if none. */
static const char *args_of(const char *body)
{
	const char *p = strstr(body, "!threshold");
	p = p ? p + 10 : body;
	while (*p == ' ')
		p++;
	p += strcspn(p, " \n\t");
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* The guest of portal room @p room (its record), into @p buf; or NULL. */
static const char *portal_guest(store_txn *t, const char *room_id, const json_t *room, char buf[256])
{
	const char *kind = jsonx_str(room, "kind");
	if (!kind || strcmp(kind, "portal") != 0)
		return NULL;
	return rooms_user_first(t, room_id, ROOMS_GUESTS, buf) == TH_OK ? buf : NULL;
}

/* "!threshold invite [--uses N] [--expires 7d]" in a service's staff room. */
static char *command_invite(const struct txn_env *env, store_txn *t, const struct mxev *ev,
                            const json_t *room, int *rc, char **qr_link)
{
	const struct config *cfg = env->cfg;
	const struct config_service *svc = config_service_by_staff_room(cfg, ev->room_id);
	const char *group = NULL;
	const char *kind = jsonx_str(room, "kind");
	const char *named = strstr(ev->body, "--service");
	if (!svc && kind && strcmp(kind, "group") == 0) {
		/* A group invitation: which service's notice the guests agree to. */
		group = ev->room_id;
		if (named) {
			const char *v = named + 9;
			while (*v == ' ')
				v++;
			char *name = xstrndup(v, strcspn(v, " \t\n"));
			svc = config_service_find(cfg, name);
			free(name);
		} else if (cfg->nservices == 1) {
			svc = &cfg->services[0];
		}
		if (!svc)
			return xstrdup(
			        "Say which service this group belongs to: !threshold invite --service NAME "
			        "(its notice is what the guests agree to).");
	}
	if (!svc)
		return xstrdup(
		        "Invitations are made in a service's staff room, or in a group room for that group.");
	if (svc->inviters.n && !config_ids_has(&svc->inviters, ev->sender))
		return xasprintf("Sorry, only the people listed as inviters for %s may make invitations.",
		                 svc->display_name);
	unsigned uses = svc->invite_uses;
	uint64_t life = (uint64_t)svc->invite_expiry_hours * 3600000ull;
	char *args = xstrdup(args_of(ev->body));
	char *save = NULL;
	int qr = 0;
	for (char *w = strtok_r(args, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
		if (!strcmp(w, "--qr")) {
			qr = 1;
			continue;
		}
		char *v = strtok_r(NULL, " \t\n", &save);
		uint64_t n;
		if (!strcmp(w, "--uses") && v && th_parse_u64(v, 10000, &n) == TH_OK && n >= 1) {
			uses = (unsigned)n;
		} else if (!strcmp(w, "--expires") && v && inv_parse_duration(v, &n) == TH_OK) {
			life = n;
		} else if (!strcmp(w, "--service") && v && group) {
			continue; /* read above */
		} else {
			free(args);
			return xstrdup(
			        "Usage: !threshold invite [--uses N] [--expires 7d] [--qr] (uses 1..10000; "
			        "expiry like 90m, 12h or 7d, at most a year; --qr: also a QR code image)");
		}
	}
	free(args);
	char token[SEC_TOKEN_LEN + 1];
	uint64_t expires = th_now_ms() + life;
	*rc = inv_create(t, env->au, svc, group, uses, expires, ev->sender, token);
	if (*rc)
		return NULL;
	char *link = inv_link(cfg, token);
	explicit_bzero(token, sizeof(token));
	if (qr) /* after the notice: the picture follows the words */
		*qr_link = xstrdup(link);
	char *text =
	        xasprintf("Invitation to %s%s, for %u %s, valid for %llu hours. Give this link to the person "
	                  "only, in a way that is safe for them:\n%s",
	                  group ? "this group, for " : "", svc->display_name, uses,
	                  uses == 1 ? "use" : "uses", (unsigned long long)(life / 3600000ull), link);
	free(link);
	return text;
}

int conv_command(const struct txn_env *env, store_txn *t, const struct mxev *ev, enum pol_command cmd,
                 json_t *room, unsigned *queued)
{
	const struct config *cfg = env->cfg;
	int rc = TH_OK;
	char *reply = NULL, *qr_link = NULL;
	char guest_buf[256];
	const char *guest = portal_guest(t, ev->room_id, room, guest_buf);
	json_t *c = guest ? conv_get(t, guest) : NULL;

	if (cmd == POL_CMD_INVITE) {
		reply = command_invite(env, t, ev, room, &rc, &qr_link);
	} else if (!c) {
		reply = xstrdup("That command works in a conversation room with a guest (the rooms Threshold "
		                "makes when someone gets in touch).");
	} else if (cmd == POL_CMD_NOTE) {
		reply = xstrdup("Noted. This note stays in this room; the guest never sees it.");
	} else if (cmd == POL_CMD_CLOSE) {
		if (strcmp(jsonx_str(c, "state") ? jsonx_str(c, "state") : "", CONV_CLOSED) == 0) {
			reply = xstrdup("This conversation is already closed.");
		} else {
			rc = close_in(env, t, guest, c, ev->sender,
			              "Staff closed this conversation. Thank you for getting in touch.", 0,
			              0);
			reply = xstrdup(
			        "Conversation closed. The guest was told and can no longer write here; this "
			        "room stays as the record.");
		}
	} else if (cmd == POL_CMD_HANDOVER) {
		const char *to = args_of(ev->body);
		size_t n = strcspn(to, " \t\n");
		char *target = xstrndup(to, n);
		enum pol_role role = rooms_role(cfg, t, target);
		int staff = role == POL_ROLE_STAFF || role == POL_ROLE_LEAD;
		if (!n || target[0] != '@') {
			reply = xstrdup("Usage: !threshold handover @colleague:server");
		} else if (!staff) {
			reply = xasprintf("%s is not staff: a conversation can only be handed to staff.",
			                  target);
		} else {
			rc = env->mx->ops->invite(env->mx->ctx, t, ev->room_id, cfg->bot_user_id, target);
			json_t *details = json_pack("{s:s}", "to", target);
			struct audit_rec ar = {.kind = AUDIT_CONVERSATION_HANDED,
			                       .actor = ev->sender,
			                       .subject = guest,
			                       .room = ev->room_id,
			                       .details = details};
			if (!rc)
				rc = audit_append(env->au, t, &ar, NULL);
			json_decref(details);
			if (!rc)
				rc = feed_notice(t, guest, config_service_find(cfg, jsonx_str(c, "service")),
				                 "notice",
				                 "Another member of staff is taking over this conversation.");
			if (!rc)
				(*queued)++;
			reply = xasprintf("Handed over: %s is invited to this conversation.", target);
		}
		free(target);
	}
	if (!rc && reply) {
		rc = env->mx->ops->notice(env->mx->ctx, t, ev->room_id, cfg->bot_user_id, reply,
		                          ev->event_id);
		if (!rc)
			(*queued)++;
	}
	if (!rc && qr_link) {
		rc = env->mx->ops->qr_image(env->mx->ctx, t, ev->room_id, cfg->bot_user_id, qr_link,
		                            ev->event_id);
		if (!rc)
			(*queued)++;
	}
	if (qr_link)
		explicit_bzero(qr_link, strlen(qr_link));
	free(qr_link);
	if (reply)
		explicit_bzero(reply, strlen(reply));
	free(reply);
	json_decref(c);
	return rc;
}

/* ---- what the hot path asks about a guest ------------------------------- */

int conv_of_guest(store_txn *t, const char *guest, char *service, size_t service_len, char *room,
                  size_t room_len)
{
	json_t *c = conv_get(t, guest);
	if (!c)
		return TH_ENOTFOUND;
	copy_str(service, service_len, jsonx_str(c, "service"));
	copy_str(room, room_len, jsonx_str(c, "room"));
	json_decref(c);
	return TH_OK;
}

/* ---- retention ------------------------------------------------------------ */

struct expired {
	char **guests;
	size_t n;
	uint64_t now;
};

static int collect_expired(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct expired *ex = ctx;
	json_t *c = json_loadb(val, vlen, 0, NULL);
	uint64_t exp = (uint64_t)json_integer_value(json_object_get(c, "expires_ms"));
	json_decref(c);
	if (exp && exp <= ex->now && klen <= GUESTS_MAX_USER_ID) {
		ex->guests = xrealloc(ex->guests, (ex->n + 1) * sizeof(char *));
		ex->guests[ex->n++] = xstrndup(key, klen);
	}
	return 0;
}

int conv_remove(const struct txn_env *env, store_txn *t, const char *guest)
{
	json_t *c = conv_get(t, guest);
	int rc = TH_OK;
	if (c)
		rc = close_in(env, t, guest, c, "threshold", "This conversation has ended.", 1, 0);
	if (!rc)
		rc = feed_erase(t, guest, NULL);
	if (!rc && c)
		rc = chan_forget_in(t, guest, c);
	if (!rc && c)
		rc = store_del(t, STORE_CONVS, guest, strlen(guest));
	json_decref(c);
	return rc;
}

int conv_expire(const struct txn_env *env, uint64_t now_ms, size_t *expired)
{
	struct expired ex = {.now = now_ms};
	store_txn *t;
	int rc = store_txn_begin(env->st, 0, &t);
	if (rc)
		return rc;
	rc = store_walk(t, STORE_CONVS, NULL, 0, collect_expired, &ex);
	store_txn_abort(t);
	size_t done = 0;
	for (size_t i = 0; !rc && i < ex.n; i++) {
		const char *guest = ex.guests[i];
		if ((rc = store_txn_begin(env->st, 1, &t)))
			break;
		if ((rc = conv_remove(env, t, guest))) {
			store_txn_abort(t);
			break;
		}
		if (!(rc = store_txn_commit(t)))
			done++;
	}
	for (size_t i = 0; i < ex.n; i++)
		free(ex.guests[i]);
	free(ex.guests);
	*expired = done;
	return rc;
}

/* ---- outside channels (channel.h, policy/chanrules.h) ------------------------------ */

/* STORE_META keys: CHAN_ADDR + the address's keyed hash -> where that
 * address stands with the service; CHAN_OUT + guest -> u64 BE, the last
 * feed entry the channel carried out. */
#define CHAN_ADDR       "chan/a/"
#define CHAN_OUT        "chan/o/"
#define CHAN_PENDING_MS (24ull * 3600 * 1000) /* an unanswered menu or notice is forgotten after a day */

static size_t chan_addr_key(unsigned char out[64], const unsigned char key[CONV_CHAN_KEY_LEN])
{
	memcpy(out, CHAN_ADDR, strlen(CHAN_ADDR));
	memcpy(out + strlen(CHAN_ADDR), key, CONV_CHAN_KEY_LEN);
	return strlen(CHAN_ADDR) + CONV_CHAN_KEY_LEN;
}

static char *chan_out_key(const char *guest, size_t *len)
{
	char *k = xasprintf(CHAN_OUT "%s", guest);
	*len = strlen(k);
	return k;
}

static int hex_to_key(const char *hex, unsigned char key[CONV_CHAN_KEY_LEN])
{
	if (!hex || strlen(hex) != 2 * CONV_CHAN_KEY_LEN)
		return TH_EINVAL;
	for (size_t i = 0; i < CONV_CHAN_KEY_LEN; i++) {
		unsigned v = 0;
		for (size_t j = 0; j < 2; j++) {
			char c = hex[2 * i + j];
			v = v * 16 + (unsigned)(c >= '0' && c <= '9'   ? c - '0'
			                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
			                                               : 0);
		}
		key[i] = (unsigned char)v;
	}
	return TH_OK;
}

/* In redeem's transaction: the new guest came by @p ch.  The address is
 * kept only sealed under the guest's key; the keyed hash finds the guest. */
static int chan_open_in(const struct txn_env *env, store_txn *t, const struct conv_channel *ch, json_t *c,
                        const char *guest, const char *lang)
{
	char *sealed = NULL;
	int rc = audit_seal(env->au, t, guest, ch->address, &sealed);
	if (rc)
		return rc;
	char hex[2 * CONV_CHAN_KEY_LEN + 1];
	th_hex(hex, ch->key, CONV_CHAN_KEY_LEN);
	json_object_set_new(c, "channel", json_string(ch->name));
	json_object_set_new(c, "by", json_string(ch->by));
	json_object_set_new(c, "address", json_string(sealed));
	json_object_set_new(c, "address_key", json_string(hex));
	free(sealed);
	unsigned char k[64];
	size_t klen = chan_addr_key(k, ch->key);
	json_t *a = json_pack("{s:s, s:s, s:s, s:I}", "stage", "open", "lang", lang, "guest", guest, "ts",
	                      (json_int_t)th_now_ms());
	rc = put_json(t, STORE_META, k, klen, a);
	json_decref(a);
	size_t olen;
	char *ok = chan_out_key(guest, &olen);
	unsigned char zero[8];
	store_u64_key(zero, 0);
	if (!rc)
		rc = store_put(t, STORE_META, ok, olen, zero, sizeof(zero), 0);
	free(ok);
	return rc;
}

/* Erasure and expiry: the address's record and the channel's cursor go
 * with the conversation (the sealed address goes with its record). */
static int chan_forget_in(store_txn *t, const char *guest, const json_t *c)
{
	unsigned char key[CONV_CHAN_KEY_LEN];
	int rc = TH_OK;
	if (hex_to_key(jsonx_str(c, "address_key"), key) == TH_OK) {
		unsigned char k[64];
		size_t klen = chan_addr_key(k, key);
		json_t *a = get_json(t, STORE_META, k, klen);
		/* the number may have started a newer conversation since: leave that one */
		if (a && jsonx_str(a, "guest") && strcmp(jsonx_str(a, "guest"), guest) == 0)
			rc = store_del(t, STORE_META, k, klen);
		json_decref(a);
		if (rc == TH_ENOTFOUND)
			rc = TH_OK;
	}
	size_t olen;
	char *ok = chan_out_key(guest, &olen);
	if (!rc)
		rc = store_del(t, STORE_META, ok, olen);
	free(ok);
	char *wk = xasprintf(CONV_CHAN_TIMES "%s", guest);
	json_t *w = get_json(t, STORE_META, wk, strlen(wk));
	if (jsonx_str(w, "dlr") && (!rc || rc == TH_ENOTFOUND)) { /* SMS: its last text's report id */
		char *dk = xasprintf(CONV_CHAN_DLR "%s", jsonx_str(w, "dlr"));
		rc = store_del(t, STORE_META, dk, strlen(dk));
		free(dk);
	}
	json_decref(w);
	if (!rc || rc == TH_ENOTFOUND)
		rc = store_del(t, STORE_META, wk, strlen(wk));
	free(wk);
	return rc == TH_ENOTFOUND ? TH_OK : rc;
}

int conv_chan_state(store *st, const unsigned char key[CONV_CHAN_KEY_LEN], uint64_t now_ms,
                    struct conv_chan_state *out)
{
	memset(out, 0, sizeof(*out));
	out->stage = POL_CHAN_NONE;
	store_txn *t;
	int rc = store_txn_begin(st, 0, &t);
	if (rc)
		return rc;
	unsigned char k[64];
	size_t klen = chan_addr_key(k, key);
	json_t *a = get_json(t, STORE_META, k, klen);
	const char *stage = jsonx_str(a, "stage"), *lang = jsonx_str(a, "lang"),
	           *guest = jsonx_str(a, "guest");
	uint64_t ts = (uint64_t)json_integer_value(json_object_get(a, "ts"));
	if (lang && strlen(lang) < sizeof(out->lang))
		memcpy(out->lang, lang, strlen(lang) + 1);
	if (stage && strcmp(stage, "open") == 0 && guest && strlen(guest) <= GUESTS_MAX_USER_ID) {
		json_t *c = conv_get(t, guest);
		const char *state = jsonx_str(c, "state");
		if (c) {
			memcpy(out->guest, guest, strlen(guest) + 1);
			out->stage =
			        state && strcmp(state, CONV_CLOSED) == 0 ? POL_CHAN_CLOSED : POL_CHAN_OPEN;
		}
		json_decref(c);
	} else if (stage && ts + CHAN_PENDING_MS > now_ms) {
		out->stage = strcmp(stage, "notice") == 0 ? POL_CHAN_NOTICE : POL_CHAN_LANG;
	}
	json_decref(a);
	store_txn_abort(t);
	return TH_OK;
}

int conv_chan_pending(const struct txn_env *env, const unsigned char key[CONV_CHAN_KEY_LEN], int stage,
                      const char *lang)
{
	store_txn *t;
	int rc = conv_guest_headroom(env);
	if (rc || (rc = store_txn_begin(env->st, 1, &t)))
		return rc;
	unsigned char k[64];
	size_t klen = chan_addr_key(k, key);
	if (stage == POL_CHAN_LANG || stage == POL_CHAN_NOTICE) {
		json_t *a = json_pack("{s:s, s:s, s:I}", "stage",
		                      stage == POL_CHAN_NOTICE ? "notice" : "language", "lang",
		                      lang ? lang : "", "ts", (json_int_t)th_now_ms());
		rc = put_json(t, STORE_META, k, klen, a);
		json_decref(a);
	} else {
		/* forget: only a record that is not a conversation's */
		json_t *a = get_json(t, STORE_META, k, klen);
		const char *s = jsonx_str(a, "stage");
		if (a && s && strcmp(s, "open") != 0)
			rc = store_del(t, STORE_META, k, klen);
		json_decref(a);
	}
	if (rc) {
		store_txn_abort(t);
		return rc;
	}
	return store_txn_commit(t);
}

int conv_redeem_channel(const struct txn_env *env, const char *svc_name, const char *version,
                        const char *lang, const struct conv_channel *ch, char guest[GUESTS_MAX_USER_ID + 1])
{
	struct conv_started started;
	if (!ch || !ch->name || !ch->by || !ch->address || !ch->key)
		return TH_EINVAL;
	int rc = redeem(env, NULL, svc_name, version, lang, ch, &started, guest);
	/* the page's session and resume code are never shown to anyone */
	explicit_bzero(&started, sizeof(started));
	return rc;
}

static char *chan_text_in(const json_t *e);

/* What one feed entry says by text, or NULL for nothing (new string).
 * Words from a group (a room other than @p conv_room, the conversation's)
 * start with "# ", as the person's own words for the group do. */
static char *chan_text_of(const json_t *e, const char *conv_room)
{
	const char *room = jsonx_str(e, "room_id");
	int group = room && conv_room && strcmp(room, conv_room) != 0;
	char *text = chan_text_in(e);
	if (text && group) {
		char *g = xasprintf("# %s", text);
		free(text);
		text = g;
	}
	return text;
}

/* chan_text_of, before the group's mark. */
static char *chan_text_in(const json_t *e)
{
	const char *kind = jsonx_str(e, "kind"), *body = jsonx_str(e, "body");
	const json_t *from = json_object_get(e, "from");
	const char *role = jsonx_str(from, "role"), *name = jsonx_str(from, "name");
	if (!kind || (role && strcmp(role, "self") == 0) || json_is_true(json_object_get(e, "removed")))
		return NULL;
	if (json_object_get(e, "attachment"))
		return xasprintf("%s%ssent a file that cannot be shown by text message.", name ? name : "",
		                 name ? " " : "");
	if (!body || !*body)
		return NULL;
	/* staff by name, another guest of a group by pseudonym: never a bare
	 * body the person would take for staff's */
	if (strcmp(kind, "message") == 0 && role && (!strcmp(role, "staff") || !strcmp(role, "guest")) &&
	    name && *name)
		return xasprintf("%s: %s", name, body);
	if (strcmp(kind, "edited") == 0)
		return xasprintf("%s%s(edited) %s", name ? name : "", name ? " " : "", body);
	if (strcmp(kind, "message") == 0 || strcmp(kind, "notice") == 0)
		return xstrdup(body);
	return NULL; /* "closed", "removed": the channel's own words say it */
}

/* The file a feed entry stands for, {"mxc", "kind", "mimetype"}, or JSON
 * null (new reference).  The mxc is kept apart from what feed_read gives. */
static json_t *chan_file_of(store_txn *t, const char *guest, const json_t *e)
{
	struct media_attachment att;
	uint64_t id = (uint64_t)json_integer_value(json_object_get(e, "id"));
	if (!json_object_get(e, "attachment") || feed_attachment(t, guest, id, &att) != TH_OK)
		return json_null();
	return json_pack("{s:s, s:s, s:s}", "mxc", att.mxc, "kind", att.kind, "mimetype", att.mimetype);
}

struct chan_walk {
	size_t max;
	json_t *guests; /* [[guest, after]...] */
};

static int collect_out(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct chan_walk *w = ctx;
	size_t pl = strlen(CHAN_OUT);
	if (klen < pl || memcmp(key, CHAN_OUT, pl) != 0 || json_array_size(w->guests) >= w->max)
		return 1; /* past the prefix: stop */
	if (vlen == 8 && klen - pl <= GUESTS_MAX_USER_ID) {
		const unsigned char *v = val;
		uint64_t after = 0;
		for (size_t i = 0; i < 8; i++)
			after = after << 8 | v[i];
		char *g = xstrndup((const char *)key + pl, klen - pl);
		json_array_append_new(w->guests, json_pack("[s, I]", g, (json_int_t)after));
		free(g);
	}
	return 0;
}

int conv_chan_due(const struct txn_env *env, const char *channel, size_t max, json_t **out)
{
	store_txn *t;
	int rc = store_txn_begin(env->st, 0, &t);
	if (rc)
		return rc;
	struct chan_walk w = {max, json_array()};
	json_t *due = json_array();
	rc = store_walk(t, STORE_META, CHAN_OUT, strlen(CHAN_OUT), collect_out, &w);
	size_t i;
	json_t *p;
	json_array_foreach(w.guests, i, p)
	{
		if (rc)
			break;
		const char *guest = json_string_value(json_array_get(p, 0));
		uint64_t after = (uint64_t)json_integer_value(json_array_get(p, 1));
		json_t *c = conv_get(t, guest);
		const char *ch = jsonx_str(c, "channel");
		if (!c || !ch || strcmp(ch, channel) != 0 || !feed_has_after(t, guest, after)) {
			json_decref(c);
			continue;
		}
		json_t *entries = NULL;
		uint64_t next = after;
		if ((rc = feed_read_rooms(t, guest, after, &entries, &next))) {
			json_decref(c);
			break;
		}
		/* policy: staff's words go out only to a person who wrote first and agreed */
		const char *state = jsonx_str(c, "state");
		struct pol_chan_facts f = {.event = POL_CHAN_OUT,
		                           .stage = state && strcmp(state, CONV_CLOSED) == 0 ? POL_CHAN_CLOSED
		                                                                             : POL_CHAN_OPEN};
		struct pol_chan_decision d;
		pol_chan_decide(&f, &d);
		json_t *texts = json_array(), *files = json_array();
		size_t j;
		json_t *e;
		json_array_foreach(entries, j, e)
		{
			char *text = d.action == POL_CHAN_SEND ? chan_text_of(e, jsonx_str(c, "room")) : NULL;
			if (text) {
				json_array_append_new(texts, json_string(text));
				json_array_append_new(files, chan_file_of(t, guest, e));
			}
			free(text);
		}
		json_decref(entries);
		char *address = NULL;
		if (json_array_size(texts)) {
			int urc = audit_unseal(env->au, t, guest,
			                       jsonx_str(c, "address") ? jsonx_str(c, "address") : "",
			                       &address);
			if (urc) { /* erased, or damaged: nothing can go out */
				LOG(LOG_WARN, "%s: a guest's address cannot be opened (%s); nothing sent",
				    channel, th_strerror(urc));
				json_array_clear(texts);
			}
		}
		if (!json_array_size(texts))
			json_array_clear(files);
		json_array_append_new(due, json_pack("{s:s, s:I, s:o, s:o, s:s?, s:s?, s:s?}", "guest", guest,
		                                     "upto", (json_int_t)next, "texts", texts, "files", files,
		                                     "address", address, "lang", jsonx_str(c, "lang"),
		                                     "service", jsonx_str(c, "service")));
		if (address) {
			explicit_bzero(address, strlen(address));
			free(address);
		}
		json_decref(c);
	}
	json_decref(w.guests);
	store_txn_abort(t);
	if (rc) {
		json_decref(due);
		return rc;
	}
	*out = due;
	return TH_OK;
}

int conv_chan_sent(const struct txn_env *env, const char *guest, uint64_t upto)
{
	store_txn *t;
	int rc = store_txn_begin(env->st, 1, &t);
	if (rc)
		return rc;
	size_t olen;
	char *k = chan_out_key(guest, &olen);
	const void *v;
	size_t vlen;
	rc = store_get(t, STORE_META, k, olen, &v, &vlen);
	if (rc == TH_OK) { /* still a channel guest (not erased meanwhile) */
		unsigned char nv[8];
		store_u64_key(nv, upto);
		rc = store_put(t, STORE_META, k, olen, nv, sizeof(nv), 0);
	}
	free(k);
	if (rc == TH_ENOTFOUND)
		rc = TH_OK;
	if (rc) {
		store_txn_abort(t);
		return rc;
	}
	return store_txn_commit(t);
}

/* ---- calls (bridge/calls.c) ---------------------------------------------- */

int conv_call_check(const struct txn_env *env, store_txn *t, const char *guest, json_t **conv,
                    enum pol_reason *reason)
{
	json_t *c = conv_get(t, guest);
	json_t *room = NULL;
	const char *room_id = jsonx_str(c, "room");
	int rc = TH_OK;
	*conv = NULL;
	struct pol_facts f;
	if ((rc = guest_action_facts(t, guest, c, POL_EV_GATEWAY_CALL, &room, &f)))
		goto out;
	struct pol_decision d;
	gateway_decide(&f, &d);
	*reason = d.reason;
	if (d.nactions && d.actions[0].kind == POL_ACT_CALL) {
		*conv = c;
		c = NULL;
	} else if (c && d.record == POL_REC_CONTACT_BLOCKED) {
		rc = refusal_record(env, t, guest, c, room_id, d.reason, th_now_ms());
	}
out:
	json_decref(room);
	json_decref(c);
	return rc;
}

json_t *conv_call_get(store_txn *t, const char *guest)
{
	return conv_get(t, guest);
}

int conv_call_put(store_txn *t, const char *guest, const json_t *c)
{
	return conv_put(t, guest, c);
}

int conv_call_record(const struct txn_env *env, store_txn *t, enum conv_call_rec what, const char *actor,
                     const char *guest, const char *room_id, const char *reason, const json_t *details)
{
	static const enum audit_kind kinds[] = {
	        [CONV_CALL_OFFERED] = AUDIT_CALL_OFFERED,
	        [CONV_CALL_ANSWERED] = AUDIT_CALL_ANSWERED,
	        [CONV_CALL_DECLINED] = AUDIT_CALL_DECLINED,
	        [CONV_CALL_ENDED] = AUDIT_CALL_ENDED,
	};
	if ((unsigned)what > CONV_CALL_ENDED)
		return TH_EINVAL;
	if (!env->au)
		return TH_OK;
	struct audit_rec ar = {.kind = kinds[what],
	                       .actor = actor,
	                       .subject = guest,
	                       .room = room_id,
	                       .reason = reason,
	                       .details = details};
	return audit_append(env->au, t, &ar, NULL);
}
