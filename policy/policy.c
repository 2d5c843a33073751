/*
 * policy.c - the rule table and the names of everything in it.
 * Pure: no I/O, no clock, no globals beyond constant tables.
 */
#include "policy.h"

#include <stddef.h>
#include <string.h>

#define ROLE(r)  (1u << (r))
#define ANY_ROLE 0u /* in a mask: matches every role */

/* One rule: what it matches, and what it decides. */
struct rule {
	enum pol_event event;
	unsigned sender_mask; /* ROLE() bits, or ANY_ROLE */
	unsigned target_mask; /* ROLE() bits, or ANY_ROLE */
	int need_bot_joined;  /* 1: only if the bot is joined; -1: only if not; 0: either */
	enum pol_reason reason;
	enum pol_action_kind action; /* 0: none */
	int refusal;
	enum pol_record record;
};

/* Read top to bottom; the first match decides.  spec-independent: these are
 * Threshold's own rules about who may move its bot. */
static const struct rule rules[] = {
	/* The bot goes where people of this homeserver ask it to, nowhere else. */
	{POL_EV_INVITE, ROLE(POL_ROLE_LOCAL), ROLE(POL_ROLE_BOT), 0, POL_R_BOT_INVITE_ACCEPTED, POL_ACT_JOIN, 0,
	 POL_REC_NONE},
	{POL_EV_INVITE, ANY_ROLE, ROLE(POL_ROLE_BOT), 0, POL_R_BOT_INVITE_REFUSED, POL_ACT_LEAVE, 0,
	 POL_REC_CONTACT_BLOCKED},
	/* Commands are answered only where the bot is, and only to local users. */
	{POL_EV_COMMAND, ANY_ROLE, ANY_ROLE, -1, POL_R_COMMAND_IGNORED, 0, 0, POL_REC_NONE},
	{POL_EV_COMMAND, ROLE(POL_ROLE_LOCAL), ANY_ROLE, 1, POL_R_COMMAND_ANSWERED, POL_ACT_REPLY, 0, POL_REC_NONE},
	{POL_EV_COMMAND, ROLE(POL_ROLE_REMOTE), ANY_ROLE, 1, POL_R_COMMAND_REFUSED, POL_ACT_REPLY, 1, POL_REC_NONE},
};

static int mask_has(unsigned mask, enum pol_role r)
{
	return mask == ANY_ROLE || (mask & ROLE(r));
}

void pol_decide(const struct pol_facts *f, struct pol_decision *out)
{
	memset(out, 0, sizeof(*out));
	out->reason = POL_R_NO_RULE;
	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		const struct rule *r = &rules[i];
		if (r->event != f->event || !mask_has(r->sender_mask, f->sender) ||
		    !mask_has(r->target_mask, f->target))
			continue;
		if ((r->need_bot_joined == 1 && !f->bot_joined) || (r->need_bot_joined == -1 && f->bot_joined))
			continue;
		out->reason = r->reason;
		out->record = r->record;
		if (r->action) {
			struct pol_action *a = &out->actions[out->nactions++];
			a->kind = r->action;
			a->refusal = r->refusal;
			a->reply = r->action == POL_ACT_REPLY ? f->command : POL_CMD_NONE;
		}
		return;
	}
}

static const char *const reason_names[POL_R_COUNT] = {
	[POL_R_NO_RULE] = "no_rule",
	[POL_R_BOT_INVITE_ACCEPTED] = "bot_invite_accepted",
	[POL_R_BOT_INVITE_REFUSED] = "bot_invite_refused",
	[POL_R_COMMAND_ANSWERED] = "command_answered",
	[POL_R_COMMAND_REFUSED] = "command_refused",
	[POL_R_COMMAND_IGNORED] = "command_ignored",
};

static const char *const role_names[POL_ROLE_COUNT] = {
	[POL_ROLE_NONE] = "none",   [POL_ROLE_BOT] = "bot",       [POL_ROLE_GUEST] = "guest",
	[POL_ROLE_LOCAL] = "local", [POL_ROLE_REMOTE] = "remote",
};

static const char *const event_names[POL_EV_COUNT] = {
	[POL_EV_OTHER] = "other",   [POL_EV_INVITE] = "invite",   [POL_EV_JOIN] = "join",
	[POL_EV_LEAVE] = "leave",   [POL_EV_MESSAGE] = "message", [POL_EV_COMMAND] = "command",
};

static const char *const command_names[] = {
	[POL_CMD_NONE] = "none",       [POL_CMD_HELP] = "help",       [POL_CMD_PING] = "ping",
	[POL_CMD_VERSION] = "version", [POL_CMD_UNKNOWN] = "unknown",
};

static const char *const action_names[] = {
	[POL_ACT_JOIN] = "join",
	[POL_ACT_LEAVE] = "leave",
	[POL_ACT_REPLY] = "reply",
};

static const char *const record_names[POL_REC_COUNT] = {
	[POL_REC_NONE] = "none",
	[POL_REC_CONTACT_BLOCKED] = "contact_blocked",
	[POL_REC_MEMBERSHIP_ENFORCED] = "membership_enforced",
};

#define NAME_OF(table, i) ((unsigned)(i) < sizeof(table) / sizeof(table[0]) ? table[i] : NULL)

const char *pol_reason_name(enum pol_reason r)
{
	return NAME_OF(reason_names, r);
}

const char *pol_role_name(enum pol_role r)
{
	return NAME_OF(role_names, r);
}

const char *pol_event_name(enum pol_event e)
{
	return NAME_OF(event_names, e);
}

const char *pol_command_name(enum pol_command c)
{
	return NAME_OF(command_names, c);
}

const char *pol_action_name(enum pol_action_kind a)
{
	return NAME_OF(action_names, a);
}

const char *pol_record_name(enum pol_record r)
{
	return NAME_OF(record_names, r);
}

static int lookup(const char *const *table, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++) {
		if (table[i] && strcmp(table[i], s) == 0)
			return (int)i;
	}
	return -1;
}

int pol_role_from_name(const char *s)
{
	return lookup(role_names, POL_ROLE_COUNT, s);
}

int pol_event_from_name(const char *s)
{
	return lookup(event_names, POL_EV_COUNT, s);
}

int pol_command_from_name(const char *s)
{
	return lookup(command_names, sizeof(command_names) / sizeof(command_names[0]), s);
}
