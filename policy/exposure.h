/*
 * exposure.h - the room settings that decide who can get into a managed
 * room or read back what its guests wrote, their safe value in each room
 * template, and the judge that says whether a state event's content
 * exposes the room.  One table: the templates Threshold creates rooms with
 * and the values it reverts to are both read from it (appservice/exposure.c
 * turns it into JSON).
 *
 * Pure: the caller reads the event's content into the plain facts below
 * (no JSON here); nothing is allocated, nothing is kept.  The judge looks
 * at the content only, never at who sent it: a change sent as the bot that
 * Threshold did not make is judged like anyone's, and Threshold's own
 * reverts are template values, which the judge finds safe (so they never
 * loop).  docs/policy.md, "Room exposure", says each row in plain words.
 */
#ifndef THRESHOLD_POLICY_EXPOSURE_H
#define THRESHOLD_POLICY_EXPOSURE_H

/* The kind of room a template is for. */
enum pol_template {
	POL_TPL_CONVERSATION = 0, /* one guest and a service's staff (a portal room) */
	POL_TPL_GROUP,            /* a service's moderated group */
	POL_TPL_COUNT
};

/* The settings the table holds, one state event type each (state key ""). */
enum pol_setting {
	POL_SET_JOIN_RULES = 0, /* m.room.join_rules */
	POL_SET_HISTORY,        /* m.room.history_visibility */
	POL_SET_GUEST_ACCESS,   /* m.room.guest_access */
	POL_SET_ALIAS,          /* m.room.canonical_alias */
	POL_SET_ENCRYPTION,     /* m.room.encryption */
	POL_SET_POWER_LEVELS,   /* m.room.power_levels */
	POL_SET_COUNT
};

/* How a change to a setting is judged. */
enum pol_judge {
	POL_JUDGE_RANK = 1,  /* the value at most as open as the template's, in the row's order */
	POL_JUDGE_JOIN_RULE, /* as RANK; a restricted rule may name only the template's rooms */
	POL_JUDGE_EMPTY,     /* only "nothing" is safe (no alias at all) */
	POL_JUDGE_ABSENT,    /* the event itself is the exposure, and cannot be undone */
	POL_JUDGE_POWER,     /* power levels against the template's (struct pol_power_facts) */
};

/* What a change exposes: a stable name in each audit record and alert. */
enum pol_exposure {
	POL_EXP_NONE = 0,       /* nothing: the content is as safe as the template */
	POL_EXP_OPENED,         /* a join rule or history more open than the template's */
	POL_EXP_ALLOW_WIDENED,  /* a restricted join rule naming a room the template does not */
	POL_EXP_UNKNOWN_VALUE,  /* a value Threshold does not know: judged open (fail closed) */
	POL_EXP_GUEST_ACCESS,   /* guest_access can_join: accountless visitors could join */
	POL_EXP_ALIAS,          /* an alias: the room findable by name */
	POL_EXP_ENCRYPTION,     /* encryption on: Threshold can no longer read, relay or check */
	POL_EXP_BOT_LOWERED,    /* the bot below 100: it could no longer keep the room safe */
	POL_EXP_POWER_GIVEN,    /* someone but the bot at or above the guarded level */
	POL_EXP_GUEST_POWER,    /* a guest above 0 */
	POL_EXP_DEFAULT_RAISED, /* users_default above the template's */
	POL_EXP_LEVEL_LOWERED,  /* a guarded event level (or state_default, invite) below the template's */
	POL_EXP_MALFORMED,      /* a power level that is not a number */
	POL_EXP_COUNT
};

/* Power levels in a template, symbolically: staff's level is configured. */
enum pol_level {
	POL_LV_ZERO = 0, /* 0 */
	POL_LV_STAFF,    /* rooms.staff_power (1..99) */
	POL_LV_BOT,      /* POL_LEVEL_BOT */
};

/* The bot's level, and the level that guards every exposure setting: only
 * the bot holds it in a room Threshold made. */
#define POL_LEVEL_BOT 100

/* The top-level power-level keys a template sets, in this order. */
enum pol_power_key {
	POL_PK_USERS_DEFAULT = 0,
	POL_PK_EVENTS_DEFAULT,
	POL_PK_STATE_DEFAULT,
	POL_PK_INVITE,
	POL_PK_KICK,
	POL_PK_BAN,
	POL_PK_REDACT,
	POL_PK_COUNT
};

/* The event types whose level a template sets (in "events"), in this order. */
#define POL_GUARDED_COUNT 10

/* One row of the table. */
struct pol_setting_row {
	const char *type;                /* the state event type (state key "") */
	const char *key;                 /* the content key holding its value, or NULL */
	const char *safe[POL_TPL_COUNT]; /* the template's value; NULL: not set by the template */
	enum pol_judge judge;
	const char *order[6]; /* RANK, JOIN_RULE: values, most closed first (NULL ends) */
};

/** The row of @p s, or NULL when out of range. */
const struct pol_setting_row *pol_setting_row(enum pol_setting s);

/** The setting whose state event type is @p type, or -1. */
int pol_setting_from_type(const char *type);

/** The name of a power-level key ("users_default", ...), or NULL. */
const char *pol_power_key_name(enum pol_power_key k);
/** A template's level for @p k. */
enum pol_level pol_power_key_level(enum pol_template tpl, enum pol_power_key k);
/** The @p i th guarded event type (i < POL_GUARDED_COUNT), or NULL. */
const char *pol_guarded_type(unsigned i);
/** A template's level for the @p i th guarded event type. */
enum pol_level pol_guarded_level(enum pol_template tpl, unsigned i);
/** @p lv as a number, staff's being @p staff. */
long long pol_level_value(enum pol_level lv, long long staff);

/*
 * Power levels as the event sets them, each an effective level as the spec
 * reads it (a user not listed has users_default; an event type not listed
 * has state_default; a key not given has the spec's default).  The caller
 * computes these from the content; levels that are not integers set
 * malformed.
 */
struct pol_power_facts {
	long long bot;        /* the bot's level */
	long long others_max; /* the highest level of anyone listed but the bot (users_default included) */
	long long guests_max; /* the highest level of a guest (listed, or known in the room), or 0 */
	long long keys[POL_PK_COUNT];
	long long events[POL_GUARDED_COUNT];
	int malformed;
};

/* A change to one setting, as the caller read it from the event. */
struct pol_setting_facts {
	enum pol_setting setting;
	enum pol_template tpl;
	const char *value;            /* RANK, JOIN_RULE: the content's value (borrowed); NULL: absent or
	                                 not a string */
	unsigned allow_outside;       /* JOIN_RULE: allow entries naming anything but the template's rooms
	                                 (an entry that cannot be read counts) */
	int has_alias;                /* EMPTY: 1 if the content names an alias or alt_aliases */
	struct pol_power_facts power; /* POWER */
	long long staff;              /* rooms.staff_power, for the template's POL_LV_STAFF */
};

/**
 * Does this change expose the room, given its template?
 * @param f  borrowed
 * @return POL_EXP_NONE, or what it exposes (the first thing found).
 */
enum pol_exposure pol_exposure_judge(const struct pol_setting_facts *f);

/** Stable names, for records and test cases; NULL if out of range. */
const char *pol_exposure_name(enum pol_exposure e);
const char *pol_setting_name(enum pol_setting s);
const char *pol_template_name(enum pol_template t);
/** Reverse lookups; -1 when the name is unknown. */
int pol_exposure_from_name(const char *s);
int pol_setting_from_name(const char *s);
int pol_template_from_name(const char *s);

#endif
