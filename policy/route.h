/*
 * route.h - where a guest's words go: their own conversation with staff,
 * or the one support group they are in.  The same rule on every channel
 * (the web page, SMS, later WhatsApp), so a channel that carries only
 * plain words can still take part in a group: a message that starts with
 * '#' is for the group, anything else for the conversation.  Private is
 * the default; words meant for the group go there only when the guest is
 * in exactly one group (otherwise they stay with staff, as written).
 *
 * Pure like policy.h: no I/O, no clock, no allocation.  One table in
 * route.c, first match decides; docs/policy.md ("Channels") says each
 * rule in plain words.
 */
#ifndef THRESHOLD_POLICY_ROUTE_H
#define THRESHOLD_POLICY_ROUTE_H

#include <stddef.h>

/* How many group rooms of Threshold the guest has joined. */
enum pol_route_groups {
	POL_ROUTE_GROUPS_NONE = 0,
	POL_ROUTE_GROUPS_ONE,
	POL_ROUTE_GROUPS_SEVERAL,
	POL_ROUTE_GROUPS_COUNT
};

struct pol_route_facts {
	int to_group; /* the words start with '#' (pol_route_addressed) */
	enum pol_route_groups groups;
};

enum pol_route_target {
	POL_ROUTE_CONVERSATION = 0, /* the guest's own conversation room: staff only */
	POL_ROUTE_GROUP,            /* the one group room they are in, without the '#' */
	POL_ROUTE_TARGET_COUNT
};

enum pol_route_reason {
	POL_ROUTE_R_NO_RULE = 0,
	POL_ROUTE_R_WORDS_TO_CONVERSATION, /* no '#': the conversation, as always */
	POL_ROUTE_R_WORDS_TO_GROUP,        /* '#', in one group: the group */
	POL_ROUTE_R_NOT_IN_A_GROUP,        /* '#', in no group: the conversation, as written */
	POL_ROUTE_R_SEVERAL_GROUPS,        /* '#', in several: the conversation (never a guess) */
	POL_ROUTE_R_COUNT
};

struct pol_route_decision {
	enum pol_route_target target;
	enum pol_route_reason reason;
	int rule; /* index of the rule that decided, or -1 */
};

/**
 * Decide where one message of a guest goes.
 * @param facts  borrowed
 * @param out    always written
 */
void pol_route_decide(const struct pol_route_facts *facts, struct pol_route_decision *out);

/**
 * Whether @p text is addressed to the group: its first character that is
 * not white space is '#', and words follow it.
 * @param text  borrowed, NUL-terminated
 * @param skip  out, when addressed: how many bytes to skip to the words
 *              (the '#' and the spaces after it); may be NULL
 * @return 1 if addressed to the group, else 0
 */
int pol_route_addressed(const char *text, size_t *skip);

/** Stable names, for logs and cases; NULL if out of range. */
const char *pol_route_target_name(enum pol_route_target t);
const char *pol_route_reason_name(enum pol_route_reason r);
const char *pol_route_groups_name(enum pol_route_groups g);

/** Reverse lookup for data files; -1 when unknown. */
int pol_route_groups_from_name(const char *s);

/** Number of rules, and one rule's reason (for coverage checks). */
unsigned pol_route_rule_count(void);
enum pol_route_reason pol_route_rule_reason(unsigned i);

#endif
