/*
 * events.c - turn a Matrix event into policy facts, and a policy decision
 * into outbox actions.  The decisions themselves live in policy/.
 */
#include "events.h"

#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "audit_query.h"
#include "cases.h"
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
#include "templates.h"
#include "txn.h"
#include "util.h"

#define COMMAND_PREFIX "!threshold"

/* The configured safeguarding room first (whatever else it is), then the
 * configured staff rooms; then rooms Threshold created, which carry a
 * "kind" (rooms.c): "portal", a guest's conversation, or "group". */
static enum pol_room room_of(const struct config *cfg, const char *room_id, const json_t *room)
{
	if (cfg->safeguarding_room && room_id && strcmp(room_id, cfg->safeguarding_room) == 0)
		return POL_ROOM_SAFEGUARDING;
	if (config_ids_has(&cfg->staff_rooms, room_id))
		return POL_ROOM_STAFF;
	return rooms_kind(room);
}

static int is_managed(enum pol_room room)
{
	return room == POL_ROOM_CONVERSATION || room == POL_ROOM_GROUP;
}

static int staffish(enum pol_role role)
{
	return role == POL_ROLE_STAFF || role == POL_ROLE_LEAD;
}

#define SERVICE_LEN 128 /* a service's config name, as conv_of_guest copies it */

/* The service managed room @p room_id belongs to: a group's, recorded when
 * it was made for one ("service"); a conversation's, its guest's.  @p *svc
 * is the service (NULL when the config no longer has it).
 * @return 1 if the room has a service, 0 if not (a group made outside any
 *         service, or a room whose guest is gone). */
static int room_service(const struct config *cfg, store_txn *t, const char *room_id, const json_t *room,
                        const struct config_service **svc)
{
	const char *name = jsonx_str(room, "service");
	*svc = NULL;
	if (name) {
		*svc = config_service_find(cfg, name);
		return 1;
	}
	if (rooms_kind(room) != POL_ROOM_CONVERSATION)
		return 0;
	const char *gid;
	json_t *m, *guests = NULL; /* a conversation's: one guest */
	int found = 0;
	rooms_users(t, room_id, ROOMS_GUESTS, &guests);
	json_object_foreach(guests, gid, m)
	{
		char service[SERVICE_LEN], own[256];
		if (conv_of_guest(t, gid, service, sizeof(service), own, sizeof(own)) == TH_OK &&
		    strcmp(own, room_id) == 0) {
			*svc = config_service_find(cfg, service);
			found = 1;
			break;
		}
	}
	json_decref(guests);
	return found;
}

/* Whether @p user_id is staff of @p svc: a lead, staff by the config
 * (roles.staff, roles.staff_all_local), or joined to the service's staff
 * room. */
static int staff_of_service(const struct config *cfg, store_txn *t, const char *user_id,
                            const struct config_service *svc)
{
	if (config_ids_has(&cfg->leads, user_id) || config_ids_has(&cfg->staff, user_id))
		return 1;
	const char *colon = strchr(user_id, ':');
	if (cfg->staff_all_local && colon && strcmp(colon + 1, cfg->server_name) == 0 &&
	    !config_user_in_namespace(cfg, user_id))
		return 1;
	return rooms_staff_in(t, svc->staff_room, user_id);
}

/* 1 if guest @p guest is in their own room: the conversation (or group) their
 * conversation record names is @p room_id. */
static int own_room(store_txn *t, const char *guest, const char *room_id)
{
	char service[SERVICE_LEN], own[256];
	return conv_of_guest(t, guest, service, sizeof(service), own, sizeof(own)) == TH_OK &&
	       strcmp(own, room_id) == 0;
}

/* The facts of "!threshold group add WHO" in group room @p room: the guest
 * named (target; @p guest_id filled), whether the sender is in the staff room
 * of the group's service (a group of no service: any staff), and whether the
 * guest is of the group's service (a guest of no service may join any group;
 * a group of no service takes only guests of none), or this group is theirs. */
static int group_add_facts(const struct config *cfg, store_txn *t, const struct mxev *ev, const json_t *room,
                           struct pol_facts *f, char *guest_id, size_t guest_len)
{
	struct guest g;
	int rc = groups_target(t, ev->body, &g);
	if (rc == TH_ENOTFOUND)
		return TH_OK; /* no target: the group command says there is no such guest */
	if (rc)
		return rc;
	snprintf(guest_id, guest_len, "%s", g.user_id);
	f->target = POL_ROLE_GUEST;
	if (f->room != POL_ROOM_GROUP)
		return TH_OK;
	const struct config_service *svc;
	int has = room_service(cfg, t, ev->room_id, room, &svc);
	/* Joined to the staff room itself: being staff elsewhere, by the config or
	 * as a lead, is not serving this service (a lead crosses, recorded). */
	f->sender_serves = !has || (svc && rooms_staff_in(t, svc->staff_room, ev->sender));
	char service[SERVICE_LEN], own[256];
	rc = conv_of_guest(t, g.user_id, service, sizeof(service), own, sizeof(own));
	if (rc && rc != TH_ENOTFOUND)
		return rc;
	int guest_has = rc == TH_OK && *service;
	if (rc == TH_OK && strcmp(own, ev->room_id) == 0)
		f->target_belongs = 1;
	else if (!guest_has)
		f->target_belongs = 1;
	else
		f->target_belongs = has && strcmp(service, jsonx_str(room, "service")) == 0;
	return TH_OK;
}

/* The service a group made from room @p room_id is for: the service whose
 * staff room it is, or the service of the managed room it was asked in;
 * NULL: none. */
static const char *service_here(const struct config *cfg, store_txn *t, const char *room_id,
                                const json_t *room)
{
	const struct config_service *svc = config_service_by_staff_room(cfg, room_id);
	if (!svc && rooms_kind(room) != POL_ROOM_UNMANAGED)
		room_service(cfg, t, room_id, room, &svc);
	return svc ? svc->name : NULL;
}

/* @return 1 if power levels event @p ev leaves @p guest at 0 or less. */
/* Whether create event @p ev carries a create_room action's mark (outbox.h):
 * a room Threshold asked for. */
static int create_marked(const struct mxev *ev)
{
	json_t *content = NULL;
	if (mxev_content_json(ev, &content) != TH_OK)
		return 0;
	int marked = json_is_string(json_object_get(content, OUTBOX_CREATE_MARK));
	json_decref(content);
	return marked;
}

static int guest_lowered(const struct mxev *ev, const char *guest)
{
	json_t *content = NULL;
	long long level = 1;
	if (mxev_content_json(ev, &content) != TH_OK)
		return 0;
	json_t *v = json_object_get(json_object_get(content, "users"), guest);
	if (!v)
		v = json_object_get(content, "users_default");
	if (!v || !templates_power_level(v, &level))
		level = v ? 1 : 0;
	json_decref(content);
	return level <= 0;
}

/* The guests of @p ev's room into @p *out (new), for a power-level change:
 * the only setting whose judgement looks at them.  @return *out. */
static const json_t *room_guests(store_txn *t, const struct mxev *ev, json_t **out)
{
	if (!*out && strcmp(ev->type, "m.room.power_levels") == 0)
		rooms_users(t, ev->room_id, ROOMS_GUESTS, out);
	return *out;
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
	} verbs[] = {{"help", POL_CMD_HELP},
	             {"ping", POL_CMD_PING},
	             {"version", POL_CMD_VERSION},
	             {"concern", POL_CMD_CONCERN}};
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
		       "!threshold group add PSEUDONYM - add a guest of this group's service to this group "
		       "room\n"
		       "!threshold group remove PSEUDONYM - take a guest out of this group room\n"
		       "!threshold group list - the guests of this group room\n"
		       "!threshold invite [--uses N] [--expires 7d] - a link for a guest (in a service's "
		       "staff room; in a group room, a link into the group)\n"
		       "!threshold close - end this conversation (in a conversation room)\n"
		       "!threshold handover @colleague:server - hand this conversation over\n"
		       "!threshold note TEXT - a note for staff; the guest never sees it\n"
		       "!threshold concern [low|medium|high] TEXT - a safeguarding concern about this "
		       "conversation's guest (sealed; the guest never sees it)\n"
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
		return "That command works in a group room Threshold manages; nobody was added or removed "
		       "here. Make a group with !threshold group create NAME.";
	case POL_NOTE_NOT_IN_MANAGED:
		return "This room is managed by Threshold: only staff and the guests they add may be here.";
	case POL_NOTE_ONLY_STAFF_INVITE:
		return "This room is managed by Threshold: only staff may invite people into it.";
	case POL_NOTE_NOT_SERVICE_STAFF:
		return "Sorry, you can add guests only to a group of a service whose staff room you are in. "
		       "Nobody was added.";
	case POL_NOTE_OTHER_SERVICE:
		return "Sorry, that guest is in touch with another service and cannot be added to this "
		       "group. Nobody was added. A safeguarding lead can help.";
	case POL_NOTE_CASE_LEADS_ONLY:
		return "Sorry, cases are worked only by safeguarding leads, in the safeguarding room.";
	case POL_NOTE_CONCERN_WHERE:
		return "A concern is raised in the conversation room with the guest it is about: "
		       "!threshold concern [low|medium|high] TEXT.";
	case POL_NOTE_NO_LONGER_STAFF:
		return "Your access to this service's conversations has ended.";
	default:
		return NULL;
	}
}

/* What an enforcement action enforces (new reference): the decision's
 * reason and the event it answers, for outbox_enforcement_failed. */
static json_t *enforce_of(const struct pol_decision *d, const struct mxev *ev)
{
	return json_pack("{s:s, s:s}", "reason", pol_reason_name(d->reason), "event_id", ev->event_id);
}

/* @p answer: the text for POL_ACT_AUDIT_ANSWER (borrowed), or NULL; @p safe:
 * the content for POL_ACT_REVERT_STATE (borrowed), or NULL.  A kick or a
 * revert carries "enforce": what it enforces, so that a permanent refusal is
 * recorded and alerted (outbox_enforcement_failed) instead of passing
 * silently. */
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
			/* Leaving or rejecting a room Threshold does not run may wait
			 * on the server that holds it: the outbox's remote share. */
			if (!rooms_is_managed(room))
				json_object_set_new(action, "remote", json_true());
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
			const char *svc =
			        a->reply == POL_CMD_GROUP_CREATE ? service_here(cfg, t, room_id, room) : NULL;
			int rc = groups_execute(cfg, t, ev, a->reply, room, svc, queued);
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
		case POL_ACT_CONCERN: {
			int rc = cases_on_concern(env, t, ev, d->reason, queued);
			if (rc)
				return rc;
			break;
		}
		case POL_ACT_CASE: {
			int rc = cases_on_command(env, t, ev, queued);
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
		case POL_ACT_HELP:
		case POL_ACT_CALL:
			break; /* the gateway's, never an event's */
		case POL_ACT_KICK:
			action = json_pack("{s:s, s:s, s:s, s:s}", "op", "kick", "room_id", room_id,
			                   "user_id", cfg->bot_user_id, "target", target);
			if (note_text(a->note))
				json_object_set_new(action, "reason", json_string(note_text(a->note)));
			json_object_set_new(action, "enforce", enforce_of(d, ev));
			if (!rooms_is_managed(room))
				json_object_set_new(action, "remote", json_true());
			break;
		case POL_ACT_REVERT_STATE:
			if (!safe)
				break;
			action = json_pack("{s:s, s:s, s:s, s:s, s:s, s:O, s:o}", "op", "state", "room_id",
			                   room_id, "user_id", cfg->bot_user_id, "type", ev->type,
			                   "state_key", "", "content", safe, "enforce", enforce_of(d, ev));
			/* Whoever could make this change could also have published the
			 * room to the directory, which no event shows: take it off. */
			int qrc = queue(t, action, queued);
			if (qrc)
				return qrc;
			action = json_pack("{s:s, s:s, s:s, s:s, s:o}", "op", "directory_visibility",
			                   "room_id", room_id, "user_id", cfg->bot_user_id, "visibility",
			                   "private", "enforce", enforce_of(d, ev));
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
                  const struct mxev *ev, const char *target, const struct audit_query *q,
                  const struct audit_answer *answer, const struct templates_change *xc, uint64_t *seq)
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
	        [POL_REC_ENCRYPTION_ENABLED] = AUDIT_ENCRYPTION_ENABLED,
	        [POL_REC_ENFORCEMENT_FAILED] = AUDIT_ENFORCEMENT_FAILED,
	        [POL_REC_ADDED_ACROSS] = AUDIT_ADDED_ACROSS,
	};
	json_t *details;
	/* A membership concerns its state_key; a room setting concerns no one person. */
	const char *subject = ev->state_key && *ev->state_key ? ev->state_key : NULL;
	if (!subject && target && *target)
		subject = target; /* the guest a command named */
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
	} else if (d->record == POL_REC_STATE_REVERTED || d->record == POL_REC_ENCRYPTION_ENABLED ||
	           (d->record == POL_REC_ENFORCEMENT_FAILED && d->reason == POL_R_STATE_CANNOT_REVERT)) {
		/* What the change exposed, and what was done: the setting put back to
		 * the room's template value (and the room taken off the directory),
		 * or nothing, because nothing can undo it (and who keeps the bot's
		 * power).  A refused revert adds an enforcement_failed record. */
		details =
		        json_pack("{s:s, s:s, s:s, s:s, s:s}", "event_id", ev->event_id, "setting",
		                  pol_setting_name(xc->setting), "exposure", pol_exposure_name(xc->exposure),
		                  "template", pol_template_name(xc->tpl), "action",
		                  d->record == POL_REC_STATE_REVERTED ? "revert_queued" : "none_possible");
		if (xc->cannot_demote)
			json_object_set(details, "cannot_demote", xc->cannot_demote);
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
                 const struct templates_change *xc, uint64_t seq, unsigned *queued)
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
		text = xasprintf("%s changed %s in managed room %s in a way that would expose its members "
		                 "(%s). Threshold is putting back the room's own %s setting and taking the "
		                 "room off the room directory; if that is refused you will be told. Audit "
		                 "record #%llu.",
		                 ev->sender, ev->type, ev->room_id, pol_exposure_name(xc->exposure),
		                 pol_template_name(xc->tpl), (unsigned long long)seq);
		if (xc->cannot_demote) { /* spec: auth rules; they keep it */
			char *who = json_dumps(xc->cannot_demote, JSON_COMPACT);
			char *more =
			        xasprintf("%s Threshold cannot lower %s, who hold the bot's own power: a "
			                  "homeserver admin must, or move the conversation to a new room.",
			                  text, who ? who : "someone");
			free(who);
			free(text);
			text = more;
		}
		break;
	case POL_R_STATE_CANNOT_REVERT: {
		char *who = xc->cannot_demote ? json_dumps(xc->cannot_demote, JSON_COMPACT) : NULL;
		text = xasprintf(
		        "URGENT: %s changed %s in managed room %s so that it exposes its members "
		        "(%s), and Threshold cannot put it back: %s hold%s the bot's own power, which "
		        "Matrix does not let the bot lower. A homeserver admin must lower them, or "
		        "move the conversation to a new room. Audit record #%llu.",
		        ev->sender, ev->type, ev->room_id, pol_exposure_name(xc->exposure),
		        who ? who : "someone",
		        xc->cannot_demote && json_array_size(xc->cannot_demote) > 1 ? "" : "s",
		        (unsigned long long)seq);
		free(who);
		break;
	}
	case POL_R_ENCRYPTION_ENABLED:
		text = xasprintf("URGENT: %s turned on encryption in managed room %s. This cannot be undone: "
		                 "Threshold can no longer read, relay or check anything said there, and the "
		                 "guest's messages may stop reaching staff. Move the conversation to a new "
		                 "room and find out how this account got the power to do it. Audit record "
		                 "#%llu.",
		                 ev->sender, ev->room_id, (unsigned long long)seq);
		break;
	case POL_R_INVITER_NOT_STAFF:
		text = xasprintf("%s, who is not staff, invited %s into managed room %s. Threshold withdrew "
		                 "the invitation. Audit record #%llu.",
		                 ev->sender, ev->state_key, ev->room_id, (unsigned long long)seq);
		break;
	case POL_R_GUEST_NOT_OWN_CONV:
		text = xasprintf("Guest %s was %s conversation room %s, which is another guest's. Threshold "
		                 "took the guest out. Audit record #%llu.",
		                 ev->state_key,
		                 ev->membership && strcmp(ev->membership, "join") == 0 ? "joined to"
		                                                                       : "invited into",
		                 ev->room_id, (unsigned long long)seq);
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

/* Take @p user_id out of each managed room they are in where policy finds
 * they are no longer staff of the room's service: the rooms of the services
 * whose staff room is @p staff_room, which they just left (NULL: every room,
 * the config's roles having changed).  Each removal is a kick by the bot
 * and a membership_enforced record, in @p t. */
int events_staff_ended(const struct txn_env *env, store_txn *t, const char *user_id, const char *staff_room,
                       unsigned *queued)
{
	const struct config *cfg = env->cfg;
	char **rooms;
	size_t n;
	int rc = rooms_member_rooms(t, user_id, &rooms, &n);
	if (rc)
		return rc;
	enum pol_role role = rooms_role(cfg, t, user_id);
	for (size_t i = 0; i < n; i++) {
		json_t *room = NULL;
		if (rc || store_get_json(t, STORE_ROOMS, rooms[i], &room) != TH_OK)
			goto next;
		const struct config_service *svc;
		int has = room_service(cfg, t, rooms[i], room, &svc);
		if (staff_room && svc && strcmp(svc->staff_room, staff_room) != 0)
			goto next; /* another service's room: leaving this staff room changes nothing there */
		const char *bot = jsonx_str(room, "bot");
		struct pol_facts f = {.event = POL_EV_STAFF_ENDED,
		                      .sender = POL_ROLE_BOT,
		                      .target = role,
		                      .room = rooms_kind(room),
		                      .bot_joined = bot && strcmp(bot, "join") == 0,
		                      /* a room of no service (or of one the config lost): staff of any */
		                      .target_belongs = has && svc ? staff_of_service(cfg, t, user_id, svc)
		                                                   : staffish(role)};
		struct pol_decision d;
		pol_decide(&f, &d);
		if (d.reason == POL_R_NO_RULE)
			goto next;
		LOG(LOG_INFO, "member of %s: %s", rooms[i], pol_reason_name(d.reason));
		for (unsigned k = 0; !rc && k < d.nactions; k++) {
			if (d.actions[k].kind != POL_ACT_KICK)
				continue;
			json_t *kick = json_pack("{s:s, s:s, s:s, s:s}", "op", "kick", "room_id", rooms[i],
			                         "user_id", cfg->bot_user_id, "target", user_id);
			if (note_text(d.actions[k].note))
				json_object_set_new(kick, "reason",
				                    json_string(note_text(d.actions[k].note)));
			rc = queue(t, kick, queued);
		}
		if (!rc && env->au && d.record == POL_REC_MEMBERSHIP_ENFORCED) {
			json_t *details = staff_room ? json_pack("{s:s}", "left_staff_room", staff_room)
			                             : json_pack("{s:s}", "cause", "roles_changed");
			struct audit_rec rec = {.kind = AUDIT_MEMBERSHIP_ENFORCED,
			                        .actor = cfg->bot_user_id,
			                        .subject = user_id,
			                        .room = rooms[i],
			                        .reason = pol_reason_name(d.reason),
			                        .details = details};
			rc = audit_append(env->au, t, &rec, NULL);
			json_decref(details);
		}
	next:
		json_decref(room);
		free(rooms[i]);
	}
	free(rooms);
	return rc;
}

int events_staff_departed(const struct txn_env *env, unsigned *queued)
{
	store_txn *t;
	const void *v;
	size_t vlen;
	int rc = store_txn_begin(env->st, 0, &t);
	if (rc)
		return rc;
	rc = store_get(t, STORE_META, "staff_departed", 14, &v, &vlen);
	store_txn_abort(t);
	if (rc == TH_ENOTFOUND)
		return TH_OK; /* the usual case: a read, no write */
	if (rc || (rc = store_txn_begin(env->st, 1, &t)))
		return rc;
	json_t *pairs;
	rc = rooms_staff_departed_take(t, &pairs);
	size_t i;
	json_t *p;
	json_array_foreach(pairs, i, p)
	{
		const char *user = json_string_value(json_array_get(p, 0));
		const char *room = json_string_value(json_array_get(p, 1));
		if (!rc && user && room)
			rc = events_staff_ended(env, t, user, room, queued);
	}
	json_decref(pairs);
	if (rc) {
		store_txn_abort(t);
		return rc;
	}
	return store_txn_commit(t);
}

static json_t *ids_json(const struct config_ids *ids)
{
	json_t *a = json_array();
	for (size_t i = 0; i < ids->n; i++)
		json_array_append_new(a, json_string(ids->v[i]));
	return a;
}

/* The distinct users of STORE_MEMBER_ROOMS of this server (a walk's context). */
struct local_members {
	const char *server;
	json_t *users; /* a set: user id -> true */
};

static int collect_local(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct local_members *lm = ctx;
	(void)val;
	(void)vlen;
	char *user = xstrndup(key, klen);
	const char *colon = strchr(user, ':');
	if (colon && strcmp(colon + 1, lm->server) == 0)
		json_object_set_new(lm->users, user, json_true());
	free(user);
	return 0;
}

int events_roles_changed(const struct txn_env *env, store_txn *t, unsigned *queued)
{
	const struct config *cfg = env->cfg;
	json_t *was = NULL;
	int rc = store_get_json(t, STORE_META, "roles", &was);
	if (rc && rc != TH_ENOTFOUND)
		return rc;
	json_t *dropped = json_object(); /* a set of user ids */
	if (rc == TH_OK) {
		const char *lists[] = {"staff", "leads"};
		for (size_t i = 0; i < 2; i++) {
			size_t k;
			json_t *v;
			json_array_foreach(json_object_get(was, lists[i]), k, v)
			{
				const char *id = json_string_value(v);
				if (id && !config_ids_has(&cfg->staff, id) &&
				    !config_ids_has(&cfg->leads, id))
					json_object_set_new(dropped, id, json_true());
			}
		}
		if (json_is_true(json_object_get(was, "staff_all_local")) && !cfg->staff_all_local) {
			struct local_members lm = {cfg->server_name, dropped};
			rc = store_walk(t, STORE_MEMBER_ROOMS, NULL, 0, collect_local, &lm);
		}
	}
	rc = rc == TH_ENOTFOUND ? TH_OK : rc;
	const char *user;
	json_t *v;
	json_object_foreach(dropped, user, v)
	{
		if (!rc && !config_user_in_namespace(cfg, user))
			rc = events_staff_ended(env, t, user, NULL, queued);
	}
	json_decref(dropped);
	json_decref(was);
	if (rc)
		return rc;
	json_t *now = json_pack("{s:o, s:o, s:b}", "staff", ids_json(&cfg->staff), "leads",
	                        ids_json(&cfg->leads), "staff_all_local", cfg->staff_all_local);
	rc = store_put_json(t, STORE_META, "roles", now);
	json_decref(now);
	return rc;
}

/* Keep the record of who is in staff room @p ev->room_id up to date: a
 * member's join or departure, or for the bot's own join a fresh read of
 * everyone there (they joined before it could see), and for its departure
 * forgetting them all (it can no longer see who leaves).  A member who
 * leaves may stop being staff of the room's service: policy decides, per
 * managed room they are in, in this same transaction. */
static int staff_room_member(const struct txn_env *env, store_txn *t, const struct mxev *ev, json_t *room,
                             unsigned *queued)
{
	const struct config *cfg = env->cfg;
	int joined = strcmp(ev->membership, "join") == 0;
	if (strcmp(ev->state_key, cfg->bot_user_id) != 0) {
		rooms_staff_seen(room, ev->state_key);
		int rc = rooms_staff_set(t, ev->room_id, ev->state_key, joined);
		if (!rc && (strcmp(ev->membership, "leave") == 0 || strcmp(ev->membership, "ban") == 0))
			rc = events_staff_ended(env, t, ev->state_key, ev->room_id, queued);
		return rc;
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

#define PRIVACY_KEY "privacy/" /* STORE_META + room id: what events_privacy_learn learned */

int events_privacy_learn(store_txn *t, const char *room_id, const char *type, const json_t *content)
{
	const char *field = NULL;
	json_t *value = NULL;
	if (strcmp(type, "m.room.create") == 0) { /* spec: m.federate defaults to true */
		json_t *fed = json_object_get(content, "m.federate");
		field = "federate";
		value = json_boolean(!json_is_boolean(fed) || json_is_true(fed));
	} else if (strcmp(type, "m.room.join_rules") == 0) {
		const char *jr = jsonx_str(content, "join_rule");
		field = "join_rule";
		value = json_string(jr ? jr : "");
	} else if (strcmp(type, "m.room.history_visibility") == 0) {
		const char *hv = jsonx_str(content, "history_visibility");
		field = "history_visibility";
		value = json_string(hv ? hv : "");
	}
	if (!field)
		return TH_OK;
	char *key = xasprintf(PRIVACY_KEY "%s", room_id);
	json_t *known = NULL;
	int rc = store_get_json(t, STORE_META, key, &known);
	if (rc == TH_ENOTFOUND || !json_is_object(known)) {
		json_decref(known);
		known = json_object();
		rc = TH_OK;
	}
	if (!rc) {
		json_object_set_new(known, field, value);
		value = NULL;
		rc = store_put_json(t, STORE_META, key, known);
	}
	json_decref(value);
	json_decref(known);
	free(key);
	return rc;
}

int events_room_private(store_txn *t, const char *room_id)
{
	char *key = xasprintf(PRIVACY_KEY "%s", room_id);
	json_t *known = NULL;
	int ok = 0;
	if (store_get_json(t, STORE_META, key, &known) == TH_OK) {
		const char *jr = jsonx_str(known, "join_rule");
		const char *hv = jsonx_str(known, "history_visibility");
		json_t *fed = json_object_get(known, "federate");
		/* spec: history_visibility "shared" is the default when unset */
		ok = jr && strcmp(jr, "invite") == 0 && json_is_false(fed) && hv &&
		     (strcmp(hv, "joined") == 0 || strcmp(hv, "invited") == 0);
	}
	json_decref(known);
	free(key);
	return ok;
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
	struct templates_change xc = {0}; /* a room setting judged against its template */
	char target_id[256] = "";         /* the guest a group command names */
	json_t *guests = NULL;            /* the room's, read for a power-level change only */

	json_object_set_new(room, "events",
	                    json_integer(json_integer_value(json_object_get(room, "events")) + 1));
	if (!type || !sender || !ev->content_is_object)
		return TH_OK; /* nothing policy can use; counted as seen */

	const char *state_key = ev->state_key;
	int member_event = strcmp(type, "m.room.member") == 0 && state_key;
	/* A guest's own conversation room is managed from its first event
	 * (bridge/conv.c), whether or not the outbox has recorded it yet. */
	if (strcmp(type, "m.room.create") == 0 && state_key && !*state_key && create_marked(ev)) {
		int rc = conv_room_seen_created(env, t, ev, room);
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
	/* Who can read the safeguarding room, for "!audit reveal". */
	if (f.room == POL_ROOM_SAFEGUARDING && state_key && !*state_key) {
		json_t *content = NULL;
		int rc = mxev_content_json(ev, &content);
		if (rc == TH_OK)
			rc = events_privacy_learn(t, room_id, type, content);
		json_decref(content);
		if (rc && rc != TH_ENOTFOUND)
			return rc;
	}
	/* A staff room's members are staff from this event on (their own join
	 * included); also when the room is the safeguarding room as well. */
	if (member_event && ev->membership && config_ids_has(&cfg->staff_rooms, room_id)) {
		int rc = staff_room_member(env, t, ev, room, queued);
		if (rc)
			return rc;
	}
	f.sender = rooms_role(cfg, t, sender);
	const char *bot = jsonx_str(room, "bot");
	f.bot_joined = bot && strcmp(bot, "join") == 0;

	if (member_event) {
		const char *membership = ev->membership;
		if (!membership)
			return TH_OK;
		f.target = rooms_role(cfg, t, state_key);
		if (f.target == POL_ROLE_BOT)
			json_object_set_new(room, "bot", json_string(membership));
		/* Who is in a managed room: its own keys (rooms.c), one per member. */
		if (is_managed(f.room) && f.target != POL_ROLE_BOT) {
			int rc = rooms_member_set(t, room_id, state_key, membership);
			if (rc)
				return rc;
		}
		/* A conversation room is one guest's own. */
		if (f.target == POL_ROLE_GUEST && f.room == POL_ROOM_CONVERSATION)
			f.target_belongs = own_room(t, state_key, room_id);
		/* A guest's membership, kept for managed rooms only: of a room
		 * Threshold does not manage it keeps nothing per member (the
		 * bound, rooms.h), however many of its namespace a stranger
		 * invites there. */
		if (f.target == POL_ROLE_GUEST && is_managed(f.room)) {
			char was[ROOMS_VALUE_MAX] = "";
			int joined = strcmp(membership, "join") == 0, rc = TH_OK;
			if (joined && f.room == POL_ROOM_GROUP &&
			    rooms_user_get(t, room_id, ROOMS_GUESTS, state_key, was) != TH_OK)
				was[0] = '\0';
			rc = rooms_user_set(t, room_id, ROOMS_GUESTS, state_key, membership);
			/* Newly in a group: told how to write to it. */
			if (!rc && joined && f.room == POL_ROOM_GROUP && strcmp(was, "join") != 0)
				rc = conv_group_joined(t, cfg, state_key, room_id);
			if (rc)
				return rc;
		}
		if (strcmp(membership, "invite") == 0)
			f.event = POL_EV_INVITE;
		else if (strcmp(membership, "join") == 0)
			f.event = POL_EV_JOIN;
		else if (strcmp(membership, "leave") == 0 || strcmp(membership, "ban") == 0)
			f.event = POL_EV_LEAVE;
	} else if (state_key && !own_setup && is_managed(f.room) &&
	           templates_judge_event(cfg, room, room_guests(t, ev, &guests), ev, &xc) &&
	           xc.exposure != POL_EXP_NONE) {
		/* The content, judged against the room's template; never the sender.
		 * (A guest's own settings while it makes its room are Threshold's.) */
		f.event = xc.exposure == POL_EXP_ENCRYPTION ? POL_EV_ENCRYPTION
		          : xc.revert                       ? POL_EV_STATE_EXPOSED
		                                            : POL_EV_STATE_STUCK;
	} else if (strcmp(type, "m.room.message") == 0) {
		f.command = events_parse_command(ev->body);
		if (f.command != POL_CMD_NONE)
			f.event = POL_EV_COMMAND;
		else if (cases_is_command(ev->body))
			f.event = POL_EV_CASE_COMMAND;
		else if (audit_query_parse(ev->body, &q))
			f.event = q.kind == AUDIT_QUERY_EXPORT   ? POL_EV_AUDIT_EXPORT
			          : q.kind == AUDIT_QUERY_REVEAL ? POL_EV_AUDIT_REVEAL
			                                         : POL_EV_AUDIT_COMMAND;
		else
			f.event = POL_EV_MESSAGE;
		/* A guest's words matching the service's concern keywords
		 * (cases.h); the conversation's waiting clock either way. */
		if (f.room == POL_ROOM_CONVERSATION && f.event == POL_EV_MESSAGE) {
			int rc = cases_on_message(cfg, t, room_id, sender, f.sender);
			if (rc)
				return rc;
			char service[SERVICE_LEN] = "", own[8];
			if (f.sender == POL_ROLE_GUEST &&
			    conv_of_guest(t, sender, service, sizeof(service), own, sizeof(own)) !=
			            TH_ENOTFOUND &&
			    cases_keyword_match(cfg, service, ev->body))
				f.event = POL_EV_CONCERN_KEYWORD;
		}
	} else if (f.room == POL_ROOM_CONVERSATION && cases_reaction_is_concern(cfg, ev)) {
		f.event = POL_EV_CONCERN_REACTION;
	}

	/* A reveal goes only into a room known to be private (events_room_private). */
	if (f.event == POL_EV_AUDIT_REVEAL)
		f.target_belongs = events_room_private(t, room_id);
	/* Whom "group add" names, and whether they and the sender belong to the group's service. */
	if (f.event == POL_EV_COMMAND && f.command == POL_CMD_GROUP_ADD) {
		int rc = group_add_facts(cfg, t, ev, room, &f, target_id, sizeof(target_id));
		if (rc)
			return rc;
	}
	struct pol_decision d;
	pol_decide(&f, &d);
	metrics_decision(d.reason);
	if (d.reason != POL_R_NO_RULE)
		LOG(LOG_INFO, "event %s in %s: %s", event_id, room_id, pol_reason_name(d.reason));
	if (d.reason == POL_R_REVEAL_ROOM_NOT_PRIVATE) {
		answer.text = xstrdup(
		        "RECORDED: this request is written to the audit log.\nNothing was revealed: this "
		        "room "
		        "is not known to be private. A reveal is only posted into a safeguarding room that "
		        "is "
		        "invite-only, not federated (m.federate false when it was made) and whose history "
		        "only "
		        "members can read (\"joined\" or \"invited\", not \"shared\" or \"world_readable\"). "
		        "Change the room's settings, or make a new room like that and name it in "
		        "safeguarding.room.");
	} else if (d.nactions && d.actions[0].kind == POL_ACT_AUDIT_ANSWER) {
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
	int rc = record(env, t, &d, ev, target_id, &q, &answer, &xc, &seq);
	if (!rc && answer.text)
		reply = seq ? xasprintf("%s\nThis question is audit record #%llu.", answer.text,
		                        (unsigned long long)seq)
		            : xstrdup(answer.text);
	if (!rc)
		rc = apply(env, t, &d, ev, room, reply, xc.revert, queued);
	if (!rc && d.nactions && d.actions[0].kind == POL_ACT_AUDIT_EXPORT)
		rc = queue(t,
		           json_pack("{s:s, s:s, s:s, s:s, s:I}", "op", "audit_export", "room_id", room_id,
		                     "user_id", cfg->bot_user_id, "reply_to", event_id, "since_ms",
		                     (json_int_t)q.since_ms),
		           queued);
	if (!rc)
		rc = alert(cfg, t, &d, ev, &xc, seq, queued);
	/* What guests in a conversation see of it (bridge/conv.c). */
	if (!rc && is_managed(f.room) &&
	    (strcmp(type, "m.room.message") == 0 || ev->membership || strcmp(type, "m.room.redaction") == 0 ||
	     strcmp(type, "m.reaction") == 0 || strcmp(type, "m.room.power_levels") == 0 ||
	     strncmp(type, "m.call.", 7) == 0)) {
		unsigned fed = 0;
		/* Someone who was staff here and is no longer (rule 25 took them
		 * out) still leaves as staff, for the guests' notice. */
		enum pol_role was = f.target;
		char shown[ROOMS_VALUE_MAX];
		if (f.event == POL_EV_LEAVE &&
		    rooms_user_get(t, room_id, ROOMS_STAFF, state_key, shown) == TH_OK)
			was = POL_ROLE_STAFF;
		rc = conv_on_event(env, t, ev, f.sender, was, room, &fed);
		if (!rc && fed)
			(*queued)++; /* a feed grew: the commit hook wakes the gateway's waiting polls */
	}
	/* A guest now in a managed room gets its name there (per-room pseudonyms). */
	if (!rc && f.event == POL_EV_JOIN && f.target == POL_ROLE_GUEST && is_managed(f.room))
		rc = guests_name_in_room(cfg, t, room, room_id, state_key, queued);
	if (reply) /* it may hold what a reveal unsealed */
		explicit_bzero(reply, strlen(reply));
	free(reply);
	json_decref(xc.revert);
	json_decref(xc.cannot_demote);
	json_decref(guests);
	audit_query_answer_free(&answer);
	return rc;
}
