/*
 * events.c - turn a Matrix event into policy facts, and a policy decision
 * into outbox actions.  The decisions themselves live in policy/.
 */
#include "events.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "audit_query.h"
#include "config.h"
#include "conv.h"
#include "groups.h"
#include "guests.h"
#include "jsonx.h"
#include "log.h"
#include "metrics.h"
#include "mxevent.h"
#include "outbox.h"
#include "policy.h"
#include "rooms.h"
#include "txn.h"
#include "util.h"

#define COMMAND_PREFIX "!threshold"

/* Who @p user_id is.  On the hot path (twice per membership event): the
 * staff-room check is one lookup in STORE_STAFF_MEMBERS, made only for
 * users no cheaper test has placed. */
enum pol_role events_role(const struct config *cfg, store_txn *t, const char *user_id)
{
	if (!user_id || user_id[0] != '@')
		return POL_ROLE_NONE;
	if (strcmp(user_id, cfg->bot_user_id) == 0)
		return POL_ROLE_BOT;
	if (config_user_in_namespace(cfg, user_id))
		return POL_ROLE_GUEST;
	if (config_ids_has(&cfg->leads, user_id))
		return POL_ROLE_LEAD;
	if (config_ids_has(&cfg->staff, user_id))
		return POL_ROLE_STAFF;
	if (rooms_staff_has(t, &cfg->staff_rooms, user_id))
		return POL_ROLE_STAFF;
	const char *colon = strchr(user_id, ':');
	int local = colon && strcmp(colon + 1, cfg->server_name) == 0;
	if (local && cfg->staff_all_local)
		return POL_ROLE_STAFF;
	return local ? POL_ROLE_LOCAL : POL_ROLE_REMOTE;
}

/* The configured safeguarding room first (whatever else it is), then the
 * configured staff rooms; then rooms Threshold created or staff put under
 * management, which carry a "kind". */
static enum pol_room room_of(const struct config *cfg, const char *room_id, const json_t *room)
{
	if (cfg->safeguarding_room && room_id && strcmp(room_id, cfg->safeguarding_room) == 0)
		return POL_ROOM_SAFEGUARDING;
	if (config_ids_has(&cfg->staff_rooms, room_id))
		return POL_ROOM_STAFF;
	return rooms_is_managed(room) ? POL_ROOM_MANAGED : POL_ROOM_UNMANAGED;
}

/* A power level as the spec allows it: an integer, or (in older room
 * versions) a string of one.  @return 1 with the level in @p out, or 0. */
static int power_level(const json_t *v, long long *out)
{
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return 1;
	}
	const char *s = json_string_value(v);
	char *end;
	if (!s || !*s)
		return 0;
	errno = 0;
	long long n = strtoll(s, &end, 10);
	if (errno || *end)
		return 0;
	*out = n;
	return 1;
}

/* m.room.power_levels: a guest above 0, or the bot below 100 (spec: a user
 * not listed has users_default).  The content with every guest set to 0 and
 * the bot to 100, else NULL. */
static json_t *safe_power_levels(const struct config *cfg, json_t *content)
{
	json_t *users = json_object_get(content, "users");
	long long dflt = 0, level;
	if (!power_level(json_object_get(content, "users_default"), &dflt))
		dflt = 0;
	int exposed = 0;
	const char *user_id;
	json_t *v;
	json_object_foreach(users, user_id, v)
	{
		if (strcmp(user_id, cfg->bot_user_id) != 0 && config_user_in_namespace(cfg, user_id) &&
		    (!power_level(v, &level) || level > 0))
			exposed = 1;
	}
	json_t *bot = json_object_get(users, cfg->bot_user_id);
	if (bot ? !power_level(bot, &level) || level < 100 : dflt < 100)
		exposed = 1;
	if (!exposed)
		return NULL;
	json_t *safe = json_deep_copy(content);
	json_t *safe_users = json_object_get(safe, "users");
	if (!json_is_object(safe_users)) {
		safe_users = json_object();
		json_object_set_new(safe, "users", safe_users);
	}
	json_object_foreach(safe_users, user_id, v)
	{
		if (strcmp(user_id, cfg->bot_user_id) != 0 && config_user_in_namespace(cfg, user_id))
			json_object_set_new(safe_users, user_id, json_integer(0));
	}
	json_object_set_new(safe_users, cfg->bot_user_id, json_integer(100));
	return safe;
}

/* The content that puts back a room setting that would expose a managed
 * room's members (new reference), or NULL when @p ev changes nothing that
 * matters:
 *  - join rules public/knock: anyone could get in;
 *  - history world_readable or shared: newcomers (or anyone) could read what
 *    guests said before;
 *  - power levels giving a guest power (to invite, to change the room), or
 *    taking the bot's 100 (with which it keeps the room safe);
 *  - a canonical alias: the room findable by name, and a way to ask to join. */
static json_t *exposed_setting(const struct config *cfg, const struct mxev *ev)
{
	static const struct {
		const char *type, *key, *safe;
		const char *bad[3];
	} settings[] = {
	        {"m.room.join_rules", "join_rule", "invite", {"public", "knock", "knock_restricted"}},
	        {"m.room.history_visibility",
	         "history_visibility",
	         "joined",
	         {"world_readable", "shared", NULL}},
	};
	if (!ev->state_key || *ev->state_key)
		return NULL;
	int power = strcmp(ev->type, "m.room.power_levels") == 0;
	int alias = strcmp(ev->type, "m.room.canonical_alias") == 0;
	size_t i = 0;
	while (i < sizeof(settings) / sizeof(settings[0]) && strcmp(ev->type, settings[i].type) != 0)
		i++;
	if (!power && !alias && i == sizeof(settings) / sizeof(settings[0]))
		return NULL;
	json_t *content = NULL, *safe = NULL;
	if (mxev_content_json(ev, &content) != TH_OK)
		return NULL;
	if (power) {
		safe = safe_power_levels(cfg, content);
	} else if (alias) {
		const char *a = jsonx_str(content, "alias");
		if ((a && *a) || json_array_size(json_object_get(content, "alt_aliases")) > 0)
			safe = json_object();
	} else {
		const char *value = jsonx_str(content, settings[i].key);
		int bad = 0;
		for (size_t j = 0; value && j < 3 && settings[i].bad[j]; j++)
			bad |= strcmp(value, settings[i].bad[j]) == 0;
		if (bad)
			safe = json_pack("{s:s}", settings[i].key, settings[i].safe);
	}
	json_decref(content);
	return safe;
}

/* @return 1 if power levels event @p ev leaves @p guest at 0 or less. */
static int guest_lowered(const struct mxev *ev, const char *guest)
{
	json_t *content = NULL;
	long long level = 1;
	if (mxev_content_json(ev, &content) != TH_OK)
		return 0;
	json_t *v = json_object_get(json_object_get(content, "users"), guest);
	if (!v)
		v = json_object_get(content, "users_default");
	if (!v || !power_level(v, &level))
		level = v ? 1 : 0;
	json_decref(content);
	return level <= 0;
}

enum pol_command events_parse_command(const char *body)
{
	if (!body)
		return POL_CMD_NONE;
	while (*body == ' ')
		body++;
	size_t plen = strlen(COMMAND_PREFIX);
	if (strncmp(body, COMMAND_PREFIX, plen) != 0 || (body[plen] != '\0' && body[plen] != ' '))
		return POL_CMD_NONE;
	const char *verb = body + plen;
	while (*verb == ' ')
		verb++;
	size_t vlen = strcspn(verb, " \n\t");
	static const struct {
		const char *word;
		enum pol_command cmd;
	} verbs[] = {{"help", POL_CMD_HELP}, {"ping", POL_CMD_PING}, {"version", POL_CMD_VERSION}};
	if (vlen == 0)
		return POL_CMD_HELP;
	if (vlen == 5 && strncmp(verb, "group", 5) == 0)
		return groups_parse(verb);
	enum pol_command conv = conv_parse(verb);
	if (conv != POL_CMD_NONE)
		return conv;
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (strlen(verbs[i].word) == vlen && strncmp(verb, verbs[i].word, vlen) == 0)
			return verbs[i].cmd;
	}
	return POL_CMD_UNKNOWN;
}

static const char *note_text(enum pol_note note);

static const char *reply_text(const struct pol_action *a)
{
	if (note_text(a->note))
		return note_text(a->note);
	if (a->refusal)
		return "Sorry, Threshold only takes commands from the organisation's staff.";
	switch (a->reply) {
	case POL_CMD_PING:
		return "pong: Threshold " THRESHOLD_VERSION " is running and receives this room's events.";
	case POL_CMD_VERSION:
		return "Threshold " THRESHOLD_VERSION;
	case POL_CMD_HELP:
		return "Threshold commands:\n"
		       "!threshold ping - check that Threshold receives this room's events\n"
		       "!threshold version - show Threshold's version\n"
		       "!threshold group create NAME - make a moderated group room and invite you\n"
		       "!threshold group add PSEUDONYM - add a guest to this group room\n"
		       "!threshold group remove PSEUDONYM - take a guest out of this group room\n"
		       "!threshold group list - the guests of this group room\n"
		       "!threshold invite [--uses N] [--expires 7d] - a link for a guest (in a service's "
		       "staff room; in a group room, a link into the group)\n"
		       "!threshold close - end this conversation (in a conversation room)\n"
		       "!threshold handover @colleague:server - hand this conversation over\n"
		       "!threshold note TEXT - a note for staff; the guest never sees it\n"
		       "!threshold help - this list";
	case POL_CMD_INVITE:
	case POL_CMD_CLOSE:
	case POL_CMD_HANDOVER:
	case POL_CMD_NOTE:
		return "That command works in a service's staff room (invite) or in a conversation room.";
	default:
		return "Unknown command. Try: !threshold help";
	}
}

/* Queue one action in the outbox; json is consumed. */
static int queue(store_txn *t, json_t *action, unsigned *queued)
{
	int rc = outbox_push(t, action);
	json_decref(action);
	if (rc == TH_OK)
		(*queued)++;
	return rc;
}

static const char *note_text(enum pol_note note)
{
	switch (note) {
	case POL_NOTE_ADD_GUEST_PROPERLY:
		return "Guests can only be added to conversations Threshold manages. Ask Threshold's bot "
		       "in a managed room instead (!threshold help).";
	case POL_NOTE_USE_IN_GROUP_ROOM:
		return "That command works in a group room Threshold manages. Make one with "
		       "!threshold group create NAME.";
	case POL_NOTE_NOT_IN_MANAGED:
		return "This room is managed by Threshold: only staff and the guests they add may be here.";
	case POL_NOTE_ONLY_STAFF_INVITE:
		return "This room is managed by Threshold: only staff may invite people into it.";
	default:
		return NULL;
	}
}

/* @p answer: the text for POL_ACT_AUDIT_ANSWER (borrowed), or NULL; @p safe:
 * the content for POL_ACT_REVERT_STATE (borrowed), or NULL. */
static int apply(const struct txn_env *env, store_txn *t, const struct pol_decision *d, const struct mxev *ev,
                 json_t *room, const char *answer, const json_t *safe, unsigned *queued)
{
	const struct config *cfg = env->cfg;
	const char *room_id = ev->room_id, *event_id = ev->event_id, *target = ev->state_key;
	for (unsigned i = 0; i < d->nactions; i++) {
		const struct pol_action *a = &d->actions[i];
		json_t *action = NULL;
		switch (a->kind) {
		case POL_ACT_JOIN:
		case POL_ACT_LEAVE:
			action =
			        json_pack("{s:s, s:s, s:s}", "op", a->kind == POL_ACT_JOIN ? "join" : "leave",
			                  "room_id", room_id, "user_id", target);
			if (note_text(a->note))
				json_object_set_new(action, "reason", json_string(note_text(a->note)));
			break;
		case POL_ACT_COUNT:
			break;
		case POL_ACT_REPLY:
			action = outbox_notice(room_id, cfg->bot_user_id, reply_text(a), event_id);
			break;
		case POL_ACT_AUDIT_ANSWER:
			if (answer)
				action = outbox_notice(room_id, cfg->bot_user_id, answer, event_id);
			break;
		case POL_ACT_AUDIT_EXPORT:
			break; /* queued by events_handle, which has the question */
		case POL_ACT_GROUP: {
			int rc = groups_execute(cfg, t, ev, a->reply, room, queued);
			if (rc)
				return rc;
			break;
		}
		case POL_ACT_CONVERSATION: {
			int rc = conv_command(env, t, ev, a->reply, room, queued);
			if (rc)
				return rc;
			break;
		}
		case POL_ACT_SEND:
		case POL_ACT_OPEN:
		case POL_ACT_SESSION:
		case POL_ACT_CLOSE:
		case POL_ACT_END_SESSIONS:
		case POL_ACT_ERASE:
			break; /* the gateway's, never an event's */
		case POL_ACT_KICK:
			action = json_pack("{s:s, s:s, s:s, s:s}", "op", "kick", "room_id", room_id,
			                   "user_id", cfg->bot_user_id, "target", target);
			if (note_text(a->note))
				json_object_set_new(action, "reason", json_string(note_text(a->note)));
			break;
		case POL_ACT_REVERT_STATE:
			if (safe)
				action = json_pack("{s:s, s:s, s:s, s:s, s:s, s:O}", "op", "state", "room_id",
				                   room_id, "user_id", cfg->bot_user_id, "type", ev->type,
				                   "state_key", "", "content", safe);
			break;
		}
		if (!action)
			continue;
		int rc = queue(t, action, queued);
		if (rc)
			return rc;
	}
	return TH_OK;
}

/* Write the audit record a decision asks for, naming ids only: never a room
 * name or a display name, which the sender chose and may carry a message.
 * @p q and @p answer: the audit question, for POL_REC_AUDIT_VIEWED (whose
 * subject is the guest asked about, and whose details say what was asked). */
static int record(const struct txn_env *env, store_txn *t, const struct pol_decision *d,
                  const struct mxev *ev, const struct audit_query *q, const struct audit_answer *answer,
                  uint64_t *seq)
{
	*seq = 0;
	if (!env->au || d->record == POL_REC_NONE)
		return TH_OK;
	static const enum audit_kind kinds[POL_REC_COUNT] = {
	        [POL_REC_CONTACT_BLOCKED] = AUDIT_CONTACT_BLOCKED,
	        [POL_REC_MEMBERSHIP_ENFORCED] = AUDIT_MEMBERSHIP_ENFORCED,
	        [POL_REC_AUDIT_VIEWED] = AUDIT_AUDIT_VIEWED,
	        [POL_REC_AUDIT_EXPORTED] = AUDIT_AUDIT_EXPORTED,
	        [POL_REC_IDENTITY_REVEALED] = AUDIT_IDENTITY_REVEALED,
	        [POL_REC_STATE_REVERTED] = AUDIT_STATE_REVERTED,
	};
	json_t *details;
	/* A membership concerns its state_key; a room setting concerns no one person. */
	const char *subject = ev->state_key && *ev->state_key ? ev->state_key : NULL;
	if (d->record == POL_REC_AUDIT_VIEWED) {
		details = json_pack("{s:s}", "query", audit_query_name(q->kind));
		subject = answer->subject[0] ? answer->subject : NULL;
	} else if (d->record == POL_REC_AUDIT_EXPORTED) {
		details = json_pack("{s:I, s:s}", "since_ms", (json_int_t)q->since_ms, "format", "jsonl");
		subject = NULL;
	} else if (d->record == POL_REC_IDENTITY_REVEALED) {
		/* The lead's reason, as typed: the point of breaking glass on the record. */
		details = json_pack("{s:s}", "reason", q->reason);
		subject = answer->subject[0] ? answer->subject : NULL;
	} else {
		details = json_pack("{s:s, s:b}", "event_id", ev->event_id, "is_direct", ev->is_direct);
	}
	struct audit_rec rec = {
	        .kind = kinds[d->record],
	        .ts_ms = 0,
	        .actor = ev->sender,
	        .subject = subject,
	        .room = ev->room_id,
	        .reason = pol_reason_name(d->reason),
	        .details = details,
	};
	int rc = audit_append(env->au, t, &rec, seq);
	json_decref(details);
	/* Sign the head now, so the export (made later, up to the newest
	 * checkpoint) holds the record that says it was taken. */
	if (!rc && d->record == POL_REC_AUDIT_EXPORTED)
		rc = audit_checkpoint(env->au, t, 0);
	return rc;
}

/* Tell the safeguarding room, in plain words, what happened and what
 * Threshold did; ids only, and the audit record to look up. */
static int alert(const struct config *cfg, store_txn *t, const struct pol_decision *d, const struct mxev *ev,
                 uint64_t seq, unsigned *queued)
{
	if (!d->alert || !cfg->safeguarding_room)
		return TH_OK;
	char *text;
	switch (d->reason) {
	case POL_R_GUEST_CONTACT_BLOCKED:
		text = xasprintf(
		        "Blocked contact: %s tried to invite guest %s into room %s%s. Threshold declined "
		        "the invitation for the guest. Audit record #%llu.",
		        ev->sender, ev->state_key, ev->room_id, ev->is_direct ? " as a direct message" : "",
		        (unsigned long long)seq);
		break;
	case POL_R_STRANGER_REMOVED:
		text = xasprintf(
		        "%s joined managed room %s without being added by staff. Threshold removed them. "
		        "Audit record #%llu.",
		        ev->state_key, ev->room_id, (unsigned long long)seq);
		break;
	case POL_R_STATE_REVERTED:
		text = xasprintf("%s changed %s in managed room %s in a way that would expose its members. "
		                 "Threshold put it back. Audit record #%llu.",
		                 ev->sender, ev->type, ev->room_id, (unsigned long long)seq);
		break;
	case POL_R_INVITER_NOT_STAFF:
		text = xasprintf("%s, who is not staff, invited %s into managed room %s. Threshold withdrew "
		                 "the invitation. Audit record #%llu.",
		                 ev->sender, ev->state_key, ev->room_id, (unsigned long long)seq);
		break;
	case POL_R_GUEST_LEFT_UNMANAGED:
		text = xasprintf(
		        "Guest %s was found in room %s, which Threshold does not manage. Threshold took "
		        "the guest out of it. Audit record #%llu.",
		        ev->state_key, ev->room_id, (unsigned long long)seq);
		break;
	default:
		text = xasprintf("Threshold enforced its policy (%s) in room %s. Audit record #%llu.",
		                 pol_reason_name(d->reason), ev->room_id, (unsigned long long)seq);
		break;
	}
	json_t *action = outbox_notice(cfg->safeguarding_room, cfg->bot_user_id, text, NULL);
	free(text);
	return queue(t, action, queued);
}

/* Keep the record of who is in staff room @p ev->room_id up to date: a
 * member's join or departure, or for the bot's own join a fresh read of
 * everyone there (they joined before it could see), and for its departure
 * forgetting them all (it can no longer see who leaves). */
static int staff_room_member(const struct config *cfg, store_txn *t, const struct mxev *ev, json_t *room,
                             unsigned *queued)
{
	int joined = strcmp(ev->membership, "join") == 0;
	if (strcmp(ev->state_key, cfg->bot_user_id) != 0) {
		rooms_staff_seen(room, ev->state_key);
		return rooms_staff_set(t, ev->room_id, ev->state_key, joined);
	}
	if (joined) {
		rooms_staff_read_begin(room);
		return queue(t,
		             json_pack("{s:s, s:s, s:s}", "op", "staff_members", "room_id", ev->room_id,
		                       "user_id", cfg->bot_user_id),
		             queued);
	}
	if (strcmp(ev->membership, "invite") == 0)
		return TH_OK;
	return rooms_staff_forget(t, ev->room_id, room);
}

int events_handle(const struct txn_env *env, store_txn *t, const struct mxev *ev, json_t *room,
                  unsigned *queued)
{
	const struct config *cfg = env->cfg;
	const char *type = ev->type;
	const char *sender = ev->sender;
	const char *room_id = ev->room_id;
	const char *event_id = ev->event_id;
	struct pol_facts f = {0};
	struct audit_query q = {0};
	struct audit_answer answer = {0};
	char *reply = NULL;
	json_t *safe = NULL; /* a revert's content */

	json_object_set_new(room, "events",
	                    json_integer(json_integer_value(json_object_get(room, "events")) + 1));
	if (!type || !sender || !ev->content_is_object)
		return TH_OK; /* nothing policy can use; counted as seen */

	const char *state_key = ev->state_key;
	int member_event = strcmp(type, "m.room.member") == 0 && state_key;
	/* A guest's own conversation room is managed from its first event
	 * (bridge/conv.c), whether or not the outbox has recorded it yet. */
	if (strcmp(type, "m.room.create") == 0 && state_key && !*state_key) {
		int rc = conv_room_seen_created(cfg, t, ev, room);
		if (rc)
			return rc;
	}
	/* While the guest makes its room, its settings are Threshold's own:
	 * not judged, until it lowers itself to 0. */
	const char *setup = jsonx_str(room, "setup");
	int own_setup = setup && strcmp(setup, sender) == 0 && state_key;
	if (own_setup && strcmp(type, "m.room.power_levels") == 0 && !*state_key && guest_lowered(ev, sender))
		json_object_del(room, "setup");
	f.room = room_of(cfg, room_id, room);
	/* A staff room's members are staff from this event on (their own join
	 * included); also when the room is the safeguarding room as well. */
	if (member_event && ev->membership && config_ids_has(&cfg->staff_rooms, room_id)) {
		int rc = staff_room_member(cfg, t, ev, room, queued);
		if (rc)
			return rc;
	}
	f.sender = events_role(cfg, t, sender);
	const char *bot = jsonx_str(room, "bot");
	f.bot_joined = bot && strcmp(bot, "join") == 0;

	if (member_event) {
		const char *membership = ev->membership;
		if (!membership)
			return TH_OK;
		f.target = events_role(cfg, t, state_key);
		if (f.target == POL_ROLE_BOT)
			json_object_set_new(room, "bot", json_string(membership));
		if (f.target == POL_ROLE_GUEST) {
			json_t *guests = json_object_get(room, "guests");
			if (!json_is_object(guests)) {
				guests = json_object();
				json_object_set_new(room, "guests", guests);
			}
			json_object_set_new(guests, state_key, json_string(membership));
		}
		if (strcmp(membership, "invite") == 0)
			f.event = POL_EV_INVITE;
		else if (strcmp(membership, "join") == 0)
			f.event = POL_EV_JOIN;
		else if (strcmp(membership, "leave") == 0 || strcmp(membership, "ban") == 0)
			f.event = POL_EV_LEAVE;
	} else if (state_key && !own_setup && (safe = exposed_setting(cfg, ev))) {
		f.event = POL_EV_STATE_EXPOSED;
	} else if (strcmp(type, "m.room.message") == 0) {
		f.command = events_parse_command(ev->body);
		if (f.command != POL_CMD_NONE)
			f.event = POL_EV_COMMAND;
		else if (audit_query_parse(ev->body, &q))
			f.event = q.kind == AUDIT_QUERY_EXPORT   ? POL_EV_AUDIT_EXPORT
			          : q.kind == AUDIT_QUERY_REVEAL ? POL_EV_AUDIT_REVEAL
			                                         : POL_EV_AUDIT_COMMAND;
		else
			f.event = POL_EV_MESSAGE;
	}

	struct pol_decision d;
	pol_decide(&f, &d);
	metrics_decision(d.reason);
	if (d.reason != POL_R_NO_RULE)
		LOG(LOG_INFO, "event %s in %s: %s", event_id, room_id, pol_reason_name(d.reason));
	if (d.nactions && d.actions[0].kind == POL_ACT_AUDIT_ANSWER) {
		/* Read before the audit_viewed record goes in: the answer is the log
		 * as it was when the lead asked.  A log that cannot be read gets the
		 * lead a plain answer rather than a transaction the homeserver would
		 * retry for ever. */
		int qrc = audit_query_answer(env->au, t, &q, &answer);
		if (qrc) {
			LOG(LOG_ERROR, "event %s: the audit log could not be read: %s", event_id,
			    th_strerror(qrc));
			answer.text = xstrdup("The audit log could not be read. An admin should run "
			                      "`threshold audit verify`.");
		}
	}
	/* "--since 7d" is resolved once, for the record and the action alike. */
	q.since_ms = audit_query_since_ms(&q, th_now_ms());
	q.since_ago_ms = 0;
	uint64_t seq;
	int rc = record(env, t, &d, ev, &q, &answer, &seq);
	if (!rc && answer.text)
		reply = seq ? xasprintf("%s\nThis question is audit record #%llu.", answer.text,
		                        (unsigned long long)seq)
		            : xstrdup(answer.text);
	if (!rc)
		rc = apply(env, t, &d, ev, room, reply, safe, queued);
	if (!rc && d.nactions && d.actions[0].kind == POL_ACT_AUDIT_EXPORT)
		rc = queue(t,
		           json_pack("{s:s, s:s, s:s, s:s, s:I}", "op", "audit_export", "room_id", room_id,
		                     "user_id", cfg->bot_user_id, "reply_to", event_id, "since_ms",
		                     (json_int_t)q.since_ms),
		           queued);
	if (!rc)
		rc = alert(cfg, t, &d, ev, seq, queued);
	/* What guests in a conversation see of it (bridge/conv.c). */
	if (!rc && f.room == POL_ROOM_MANAGED &&
	    (strcmp(type, "m.room.message") == 0 || ev->membership || strcmp(type, "m.room.redaction") == 0 ||
	     strcmp(type, "m.reaction") == 0 || strcmp(type, "m.room.power_levels") == 0)) {
		unsigned fed = 0;
		rc = conv_on_event(env, t, ev, f.sender, f.target, room, &fed);
		if (!rc && fed)
			(*queued)++; /* a feed grew: the commit hook wakes the gateway's waiting polls */
	}
	/* A guest now in a managed room gets its name there (per-room pseudonyms). */
	if (!rc && f.event == POL_EV_JOIN && f.target == POL_ROLE_GUEST && f.room == POL_ROOM_MANAGED)
		rc = guests_name_in_room(cfg, t, room, room_id, state_key, queued);
	if (reply) /* it may hold what a reveal unsealed */
		explicit_bzero(reply, strlen(reply));
	free(reply);
	json_decref(safe);
	audit_query_answer_free(&answer);
	return rc;
}
