/*
 * helper.h - a service's automatic helper (services.<name>.helper): a short
 * menu of answers, by number or keyword, given while no member of staff has
 * joined the conversation or while the service is closed, with "talk to a
 * person" always one reply away.  One decision per message the guest sends
 * (once the message has reached the conversation room, so staff, who always
 * see everything, have it; bridge/conv.c decides on its echo): answer
 * entry N, hand over to a person, show the menu, or say nothing.
 *
 * Pure like policy.h: no I/O, no clock, no allocation.  The rules are one
 * table in helper.c, read top to bottom; the first row that matches decides.
 * docs/policy.md ("The helper") says each rule in plain words.
 */
#ifndef THRESHOLD_POLICY_HELPER_H
#define THRESHOLD_POLICY_HELPER_H

#include <stddef.h>

#define POL_HELPER_PERSON_NUMBER 0u /* the number that always means "talk to a person" */

/* What the guest's words are to the helper, as a whole message. */
enum pol_helper_word {
	POL_HELPER_OTHER = 0, /* anything else */
	POL_HELPER_PERSON,    /* "0", or a word for a person: person, humain, persona, شخص ... */
	POL_HELPER_ENTRY,     /* an entry's number, or one of its keywords */
	POL_HELPER_WORD_COUNT
};

/* One entry of the helper, as the matcher needs it (the answer's text is the caller's). */
struct pol_helper_key {
	unsigned number;          /* 1..99, or 0: none (keywords only) */
	const char *const *words; /* borrowed: keywords or phrases, NUL-terminated */
	size_t nwords;
};

struct pol_helper_facts {
	int staff_joined; /* a member of staff is joined to the conversation room */
	int open;         /* the service is open now (policy/hours.h; no hours: open) */
	int menu_shown;   /* the guest has been shown the menu in this conversation */
	int asked;        /* the guest asked for a person already, and no one has joined since */
	enum pol_helper_word word;
};

enum pol_helper_action {
	POL_HELPER_NOTHING = 0, /* the helper says nothing */
	POL_HELPER_ANSWER,      /* the entry's answer, to the guest and shown to staff */
	POL_HELPER_MENU,        /* the menu */
	POL_HELPER_HANDOVER,    /* staff are told at once; the guest is told a person was asked */
	POL_HELPER_ASKED,       /* asked before: the guest is told again; staff are not told twice */
	POL_HELPER_ACTION_COUNT
};

enum pol_helper_reason {
	POL_HELPER_R_NO_RULE = 0,
	POL_HELPER_R_STAFF_HERE,   /* staff joined and the service is open: the helper is silent */
	POL_HELPER_R_PERSON,       /* the guest asked for a person */
	POL_HELPER_R_PERSON_AGAIN, /* ...again, before anyone joined */
	POL_HELPER_R_ANSWER_FIRST, /* an entry matched the first words: its answer and the menu */
	POL_HELPER_R_ANSWER,       /* an entry matched */
	POL_HELPER_R_MENU_FIRST,   /* the first words matched nothing: the menu */
	POL_HELPER_R_NO_MATCH,     /* nothing matched, the menu was shown: silent */
	POL_HELPER_R_COUNT
};

struct pol_helper_decision {
	enum pol_helper_action action;
	int menu; /* 1: the menu goes with the action (the first words the helper hears) */
	enum pol_helper_reason reason;
	int rule; /* index of the rule that decided, or -1 */
};

/**
 * Decide what the helper does about one message of the guest.
 * @param facts  borrowed
 * @param out    always written
 */
void pol_helper_decide(const struct pol_helper_facts *facts, struct pol_helper_decision *out);

/**
 * Classify a message.  A number is the whole message (white space and one
 * final '.' or '!' aside; Arabic-Indic digits count).  A word for a person
 * or an entry's keyword matches anywhere in the message on word boundaries
 * (ASCII letters compared without case; bytes beyond ASCII are letters).  A
 * person comes first: "0" and the person words always win.
 * @param text   borrowed, NUL-terminated
 * @param keys   borrowed, @p nkeys of them
 * @param entry  out with POL_HELPER_ENTRY: the index into @p keys; may be NULL
 * @return the word
 */
enum pol_helper_word pol_helper_word_of(const char *text, const struct pol_helper_key *keys, size_t nkeys,
                                        size_t *entry);

/** @return 1 if @p word (a whole keyword) is one of the built-in words for a person. */
int pol_helper_is_person_word(const char *word);

/** Stable names, for logs and cases; NULL if out of range. */
const char *pol_helper_word_name(enum pol_helper_word w);
const char *pol_helper_action_name(enum pol_helper_action a);
const char *pol_helper_reason_name(enum pol_helper_reason r);

/** Reverse lookup for data files; -1 when unknown. */
int pol_helper_word_from_name(const char *s);

/** Number of rules, and one rule's reason (for coverage checks). */
unsigned pol_helper_rule_count(void);
enum pol_helper_reason pol_helper_rule_reason(unsigned i);

#endif
