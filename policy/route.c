/*
 * route.c - the rule table for where a guest's words go (route.h).
 * Pure: no I/O, no clock, no globals beyond constant tables.
 */
#include "route.h"

#include <string.h>

#define BIT(x) (1u << (x))
#define ANY    0u /* in a mask: matches everything */

struct rule {
	unsigned to_group, groups; /* masks: ANY or BIT() of the fact (to_group: BIT(0) or BIT(1)) */
	enum pol_route_target target;
	enum pol_route_reason reason;
};

/* Read top to bottom; the first match decides.  Each row is one sentence
 * of docs/policy.md, "Channels". */
static const struct rule rules[] = {
        /* Words without '#' go to the guest's own conversation, as always. */
        {BIT(0), ANY, POL_ROUTE_CONVERSATION, POL_ROUTE_R_WORDS_TO_CONVERSATION},
        /* '#' and exactly one group: the group hears them, under the guest's
         * pseudonym in that group. */
        {BIT(1), BIT(POL_ROUTE_GROUPS_ONE), POL_ROUTE_GROUP, POL_ROUTE_R_WORDS_TO_GROUP},
        /* Otherwise private wins: staff read them, '#' and all. */
        {BIT(1), BIT(POL_ROUTE_GROUPS_NONE), POL_ROUTE_CONVERSATION, POL_ROUTE_R_NOT_IN_A_GROUP},
        {BIT(1), BIT(POL_ROUTE_GROUPS_SEVERAL), POL_ROUTE_CONVERSATION, POL_ROUTE_R_SEVERAL_GROUPS},
};

#define NRULES (sizeof(rules) / sizeof(rules[0]))

static int mask_has(unsigned mask, unsigned v)
{
	return mask == ANY || (v < 32 && (mask & BIT(v)));
}

void pol_route_decide(const struct pol_route_facts *facts, struct pol_route_decision *out)
{
	/* No rule matched: the conversation, the private side. */
	out->target = POL_ROUTE_CONVERSATION;
	out->reason = POL_ROUTE_R_NO_RULE;
	out->rule = -1;
	unsigned to_group = facts->to_group ? 1u : 0u;
	for (size_t i = 0; i < NRULES; i++) {
		const struct rule *r = &rules[i];
		if (!mask_has(r->to_group, to_group) || !mask_has(r->groups, (unsigned)facts->groups))
			continue;
		out->target = r->target;
		out->reason = r->reason;
		out->rule = (int)i;
		return;
	}
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int pol_route_addressed(const char *text, size_t *skip)
{
	size_t i = 0;
	while (is_space(text[i]))
		i++;
	if (text[i] != '#')
		return 0;
	i++;
	/* "# " and words: a deliberate mark.  "#1", "#MeToo" and "#hello"
	 * stay private, so a hashtag or a number never takes a private word
	 * to the group by accident; the texts a phone gets from a group show
	 * the same "# " (chan_text_of). */
	if (!is_space(text[i]))
		return 0;
	while (is_space(text[i]))
		i++;
	if (!text[i])
		return 0; /* "#" alone: nothing for the group */
	if (skip)
		*skip = i;
	return 1;
}

static const char *const target_names[] = {"conversation", "group"};
static const char *const reason_names[] = {"no_rule", "words_to_conversation", "words_to_group",
                                           "not_in_a_group", "several_groups"};
static const char *const groups_names[] = {"none", "one", "several"};

const char *pol_route_target_name(enum pol_route_target t)
{
	return (unsigned)t < POL_ROUTE_TARGET_COUNT ? target_names[t] : NULL;
}

const char *pol_route_reason_name(enum pol_route_reason r)
{
	return (unsigned)r < POL_ROUTE_R_COUNT ? reason_names[r] : NULL;
}

const char *pol_route_groups_name(enum pol_route_groups g)
{
	return (unsigned)g < POL_ROUTE_GROUPS_COUNT ? groups_names[g] : NULL;
}

int pol_route_groups_from_name(const char *s)
{
	for (unsigned i = 0; s && i < POL_ROUTE_GROUPS_COUNT; i++) {
		if (strcmp(s, groups_names[i]) == 0)
			return (int)i;
	}
	return -1;
}

unsigned pol_route_rule_count(void)
{
	return (unsigned)NRULES;
}

enum pol_route_reason pol_route_rule_reason(unsigned i)
{
	return i < NRULES ? rules[i].reason : POL_ROUTE_R_NO_RULE;
}
