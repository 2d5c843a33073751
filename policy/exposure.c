/*
 * exposure.c - the exposure table, the two room templates' power levels,
 * and the judge.  Pure: constant tables and arithmetic on the caller's facts.
 */
#include "exposure.h"

#include <stddef.h>
#include <string.h>

#define ZERO  POL_LV_ZERO
#define STAFF POL_LV_STAFF
#define BOT   POL_LV_BOT

/* Read as: setting, content key, {conversation, group} template value, how
 * a change is judged, and for a ranked value the values from most closed to
 * most open.  A value not in the order is unknown: judged open. */
static const struct pol_setting_row rows[POL_SET_COUNT] = {
        /* Who can get in.  A conversation lets members of its service's staff
         * room join (restricted, spec: room version 8+) so colleagues can pick
         * it up; a group is invite-only. */
        [POL_SET_JOIN_RULES] = {"m.room.join_rules",
                                "join_rule",
                                {"restricted", "invite"},
                                POL_JUDGE_JOIN_RULE,
                                {"invite", "private", "restricted", "knock_restricted", "knock", "public"}},
        /* Who reads back.  A conversation shares its history with members, so
         * staff who join later read what the guest wrote while waiting (only
         * staff can become members); in a group, a newcomer reads from their
         * join on, never other guests' earlier words. */
        [POL_SET_HISTORY] = {"m.room.history_visibility",
                             "history_visibility",
                             {"shared", "joined"},
                             POL_JUDGE_RANK,
                             {"joined", "invited", "shared", "world_readable"}},
        /* Accountless visitors never join. */
        [POL_SET_GUEST_ACCESS] = {"m.room.guest_access",
                                  "guest_access",
                                  {"forbidden", "forbidden"},
                                  POL_JUDGE_RANK,
                                  {"forbidden", "can_join"}},
        /* No name to find the room by. */
        [POL_SET_ALIAS] = {"m.room.canonical_alias", NULL, {NULL, NULL}, POL_JUDGE_EMPTY, {NULL}},
        /* Never encrypted: Threshold must read the room to relay, check and
         * audit it, and encryption cannot be turned off. */
        [POL_SET_ENCRYPTION] = {"m.room.encryption", NULL, {NULL, NULL}, POL_JUDGE_ABSENT, {NULL}},
        /* Only the bot holds the power to change any of the above. */
        [POL_SET_POWER_LEVELS] = {"m.room.power_levels", NULL, {NULL, NULL}, POL_JUDGE_POWER, {NULL}},
};

/* The templates' top-level levels: {conversation, group}.  In a conversation
 * everyone but the guest (listed at 0) is staff, who join through the staff
 * room, so users_default is staff's level and only the bot invites; in a
 * group staff are listed and invite. */
static const struct {
	const char *name;
	enum pol_level level[POL_TPL_COUNT];
} power_keys[POL_PK_COUNT] = {
        [POL_PK_USERS_DEFAULT] = {"users_default", {STAFF, ZERO}},
        [POL_PK_EVENTS_DEFAULT] = {"events_default", {ZERO, ZERO}},
        [POL_PK_STATE_DEFAULT] = {"state_default", {BOT, BOT}},
        [POL_PK_INVITE] = {"invite", {BOT, STAFF}},
        [POL_PK_KICK] = {"kick", {STAFF, STAFF}},
        [POL_PK_BAN] = {"ban", {STAFF, STAFF}},
        [POL_PK_REDACT] = {"redact", {STAFF, STAFF}},
};

/* The templates' "events" levels: every setting above at the bot's level. */
static const struct {
	const char *type;
	enum pol_level level[POL_TPL_COUNT];
} guarded[POL_GUARDED_COUNT] = {
        {"m.room.power_levels", {BOT, BOT}},
        {"m.room.join_rules", {BOT, BOT}},
        {"m.room.history_visibility", {BOT, BOT}},
        {"m.room.guest_access", {BOT, BOT}},
        {"m.room.canonical_alias", {BOT, BOT}},
        {"m.room.encryption", {BOT, BOT}},
        {"m.room.server_acl", {BOT, BOT}},
        {"m.room.tombstone", {BOT, BOT}},
        {"m.room.name", {BOT, STAFF}},
        {"m.room.topic", {BOT, STAFF}},
};

const struct pol_setting_row *pol_setting_row(enum pol_setting s)
{
	return (unsigned)s < POL_SET_COUNT ? &rows[s] : NULL;
}

int pol_setting_from_type(const char *type)
{
	for (unsigned i = 0; type && i < POL_SET_COUNT; i++) {
		if (strcmp(rows[i].type, type) == 0)
			return (int)i;
	}
	return -1;
}

const char *pol_power_key_name(enum pol_power_key k)
{
	return (unsigned)k < POL_PK_COUNT ? power_keys[k].name : NULL;
}

enum pol_level pol_power_key_level(enum pol_template tpl, enum pol_power_key k)
{
	return (unsigned)k < POL_PK_COUNT && (unsigned)tpl < POL_TPL_COUNT ? power_keys[k].level[tpl] : BOT;
}

const char *pol_guarded_type(unsigned i)
{
	return i < POL_GUARDED_COUNT ? guarded[i].type : NULL;
}

enum pol_level pol_guarded_level(enum pol_template tpl, unsigned i)
{
	return i < POL_GUARDED_COUNT && (unsigned)tpl < POL_TPL_COUNT ? guarded[i].level[tpl] : BOT;
}

long long pol_level_value(enum pol_level lv, long long staff)
{
	switch (lv) {
	case POL_LV_ZERO:
		return 0;
	case POL_LV_STAFF:
		return staff;
	case POL_LV_BOT:
		break;
	}
	return POL_LEVEL_BOT;
}

/* Position of @p value in @p row's order, or -1 when unknown. */
static int rank(const struct pol_setting_row *row, const char *value)
{
	for (int i = 0; value && i < (int)(sizeof(row->order) / sizeof(row->order[0])) && row->order[i];
	     i++) {
		if (strcmp(row->order[i], value) == 0)
			return i;
	}
	return -1;
}

static enum pol_exposure judge_power(const struct pol_setting_facts *f)
{
	const struct pol_power_facts *p = &f->power;
	if (p->malformed)
		return POL_EXP_MALFORMED;
	if (p->bot < POL_LEVEL_BOT)
		return POL_EXP_BOT_LOWERED;
	if (p->guests_max > 0)
		return POL_EXP_GUEST_POWER;
	if (p->keys[POL_PK_USERS_DEFAULT] >
	    pol_level_value(pol_power_key_level(f->tpl, POL_PK_USERS_DEFAULT), f->staff))
		return POL_EXP_DEFAULT_RAISED;
	if (p->others_max >= POL_LEVEL_BOT)
		return POL_EXP_POWER_GIVEN;
	for (unsigned k = POL_PK_EVENTS_DEFAULT; k < POL_PK_COUNT; k++) {
		if (p->keys[k] <
		    pol_level_value(pol_power_key_level(f->tpl, (enum pol_power_key)k), f->staff))
			return POL_EXP_LEVEL_LOWERED;
	}
	for (unsigned i = 0; i < POL_GUARDED_COUNT; i++) {
		if (p->events[i] < pol_level_value(pol_guarded_level(f->tpl, i), f->staff))
			return POL_EXP_LEVEL_LOWERED;
	}
	return POL_EXP_NONE;
}

enum pol_exposure pol_exposure_judge(const struct pol_setting_facts *f)
{
	const struct pol_setting_row *row = pol_setting_row(f->setting);
	if (!row || (unsigned)f->tpl >= POL_TPL_COUNT)
		return POL_EXP_UNKNOWN_VALUE;
	switch (row->judge) {
	case POL_JUDGE_RANK:
	case POL_JUDGE_JOIN_RULE: {
		int have = rank(row, f->value), safe = rank(row, row->safe[f->tpl]);
		if (have < 0)
			return POL_EXP_UNKNOWN_VALUE;
		if (have > safe)
			return f->setting == POL_SET_GUEST_ACCESS ? POL_EXP_GUEST_ACCESS : POL_EXP_OPENED;
		/* A restricted rule lets in the members of the rooms it names:
		 * only the template's may be named. */
		if (row->judge == POL_JUDGE_JOIN_RULE && f->allow_outside &&
		    (strcmp(f->value, "restricted") == 0 || strcmp(f->value, "knock_restricted") == 0))
			return POL_EXP_ALLOW_WIDENED;
		return POL_EXP_NONE;
	}
	case POL_JUDGE_EMPTY:
		return f->has_alias ? POL_EXP_ALIAS : POL_EXP_NONE;
	case POL_JUDGE_ABSENT:
		return POL_EXP_ENCRYPTION;
	case POL_JUDGE_POWER:
		return judge_power(f);
	}
	return POL_EXP_UNKNOWN_VALUE;
}

static const char *const exposure_names[POL_EXP_COUNT] = {
        [POL_EXP_NONE] = "none",
        [POL_EXP_OPENED] = "opened",
        [POL_EXP_ALLOW_WIDENED] = "allow_widened",
        [POL_EXP_UNKNOWN_VALUE] = "unknown_value",
        [POL_EXP_GUEST_ACCESS] = "guest_access",
        [POL_EXP_ALIAS] = "alias",
        [POL_EXP_ENCRYPTION] = "encryption",
        [POL_EXP_BOT_LOWERED] = "bot_lowered",
        [POL_EXP_POWER_GIVEN] = "power_given",
        [POL_EXP_GUEST_POWER] = "guest_power",
        [POL_EXP_DEFAULT_RAISED] = "users_default_raised",
        [POL_EXP_LEVEL_LOWERED] = "level_lowered",
        [POL_EXP_MALFORMED] = "malformed",
};

static const char *const setting_names[POL_SET_COUNT] = {
        [POL_SET_JOIN_RULES] = "join_rules",     [POL_SET_HISTORY] = "history_visibility",
        [POL_SET_GUEST_ACCESS] = "guest_access", [POL_SET_ALIAS] = "canonical_alias",
        [POL_SET_ENCRYPTION] = "encryption",     [POL_SET_POWER_LEVELS] = "power_levels",
};

static const char *const template_names[POL_TPL_COUNT] = {
        [POL_TPL_CONVERSATION] = "conversation",
        [POL_TPL_GROUP] = "group",
};

const char *pol_exposure_name(enum pol_exposure e)
{
	return (unsigned)e < POL_EXP_COUNT ? exposure_names[e] : NULL;
}

const char *pol_setting_name(enum pol_setting s)
{
	return (unsigned)s < POL_SET_COUNT ? setting_names[s] : NULL;
}

const char *pol_template_name(enum pol_template t)
{
	return (unsigned)t < POL_TPL_COUNT ? template_names[t] : NULL;
}

static int lookup(const char *const *table, unsigned n, const char *s)
{
	for (unsigned i = 0; s && i < n; i++) {
		if (table[i] && strcmp(table[i], s) == 0)
			return (int)i;
	}
	return -1;
}

int pol_exposure_from_name(const char *s)
{
	return lookup(exposure_names, POL_EXP_COUNT, s);
}

int pol_setting_from_name(const char *s)
{
	return lookup(setting_names, POL_SET_COUNT, s);
}

int pol_template_from_name(const char *s)
{
	return lookup(template_names, POL_TPL_COUNT, s);
}
