/*
 * helper.c - the rule table of a service's automatic helper, the words for
 * "talk to a person", the matcher of a guest's words against the helper's
 * entries, and their names.  Pure: no I/O, no clock, no globals beyond
 * constant tables.
 */
#include "helper.h"

#include <stddef.h>
#include <string.h>

#define BIT(x) (1u << (x))
#define ANY    0u /* in a mask: matches everything */
#define NO     BIT(0)
#define YES    BIT(1)

/* One rule: what it matches (masks: ANY or BIT() of the fact) and what it decides. */
struct rule {
	unsigned staff, open, shown, asked, word;
	enum pol_helper_action action;
	int menu;
	enum pol_helper_reason reason;
};

/* Read top to bottom; the first match decides.  Each row is one sentence of
 * docs/policy.md, "The helper". */
static const struct rule rules[] = {
        /* A member of staff has joined and the service is open: people talk, the helper is silent. */
        {YES, YES, ANY, ANY, ANY, POL_HELPER_NOTHING, 0, POL_HELPER_R_STAFF_HERE},
        /* "Talk to a person" comes first, whatever else: staff are told at once, once. */
        {ANY, ANY, ANY, YES, BIT(POL_HELPER_PERSON), POL_HELPER_ASKED, 0, POL_HELPER_R_PERSON_AGAIN},
        {ANY, ANY, ANY, ANY, BIT(POL_HELPER_PERSON), POL_HELPER_HANDOVER, 0, POL_HELPER_R_PERSON},
        /* An entry's number or keyword: its answer, with the menu the first time. */
        {ANY, ANY, NO, ANY, BIT(POL_HELPER_ENTRY), POL_HELPER_ANSWER, 1, POL_HELPER_R_ANSWER_FIRST},
        {ANY, ANY, ANY, ANY, BIT(POL_HELPER_ENTRY), POL_HELPER_ANSWER, 0, POL_HELPER_R_ANSWER},
        /* Anything else: the menu once, then silence (staff read it all the same). */
        {ANY, ANY, NO, ANY, ANY, POL_HELPER_MENU, 1, POL_HELPER_R_MENU_FIRST},
        {ANY, ANY, ANY, ANY, ANY, POL_HELPER_NOTHING, 0, POL_HELPER_R_NO_MATCH},
};
#define NRULES (sizeof(rules) / sizeof(rules[0]))

static int matches(unsigned mask, unsigned v)
{
	return mask == ANY || (mask & BIT(v));
}

void pol_helper_decide(const struct pol_helper_facts *f, struct pol_helper_decision *out)
{
	out->action = POL_HELPER_NOTHING;
	out->menu = 0;
	out->reason = POL_HELPER_R_NO_RULE;
	out->rule = -1;
	if (f->word >= POL_HELPER_WORD_COUNT)
		return;
	for (size_t i = 0; i < NRULES; i++) {
		const struct rule *r = &rules[i];
		if (matches(r->staff, f->staff_joined != 0) && matches(r->open, f->open != 0) &&
		    matches(r->shown, f->menu_shown != 0) && matches(r->asked, f->asked != 0) &&
		    matches(r->word, f->word)) {
			out->action = r->action;
			out->menu = r->menu;
			out->reason = r->reason;
			out->rule = (int)i;
			return;
		}
	}
}

unsigned pol_helper_rule_count(void)
{
	return NRULES;
}

enum pol_helper_reason pol_helper_rule_reason(unsigned i)
{
	return i < NRULES ? rules[i].reason : POL_HELPER_R_NO_RULE;
}

/* ---- matching ------------------------------------------------------------- */

/* The words that ask for a person in the page's languages (ASCII letters
 * compared without case; the rest as people type them). */
static const char *const person_words[] = {
        "person",
        "human",
        "someone",
        "agent", /* en */
        "humain",
        "personne",
        "conseiller",
        "conseill\xc3\xa8re", /* fr: conseillère */
        "persona",
        "humano",
        "alguien",
        "agente",                                   /* es */
        "\xd8\xb4\xd8\xae\xd8\xb5",                 /* ar: شخص */
        "\xd8\xa5\xd9\x86\xd8\xb3\xd8\xa7\xd9\x86", /* ar: إنسان */
        "\xd9\x85\xd9\x88\xd8\xb8\xd9\x81",         /* ar: موظف */
};
#define NPERSON (sizeof(person_words) / sizeof(person_words[0]))

static unsigned char fold(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

static int is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* A letter or digit for word boundaries: ASCII alphanumerics and every byte beyond ASCII. */
static int is_word_byte(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

/* Is @p kw (folded compare) in @p s[0..n) on word boundaries? */
static int has_word(const char *s, size_t n, const char *kw)
{
	size_t k = strlen(kw);
	if (k == 0 || k > n)
		return 0;
	for (size_t i = 0; i + k <= n; i++) {
		if (i > 0 && is_word_byte((unsigned char)s[i - 1]))
			continue;
		if (i + k < n && is_word_byte((unsigned char)s[i + k]))
			continue;
		size_t j = 0;
		while (j < k && fold((unsigned char)s[i + j]) == fold((unsigned char)kw[j]))
			j++;
		if (j == k)
			return 1;
	}
	return 0;
}

/* The whole message as a number 0..99 (ASCII or Arabic-Indic digits), or -1. */
static int number_of(const char *s, size_t n)
{
	int v = 0, digits = 0;
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		int d;
		if (c >= '0' && c <= '9') {
			d = c - '0';
			i++;
		} else if (c == 0xd9 && i + 1 < n && (unsigned char)s[i + 1] >= 0xa0 &&
		           (unsigned char)s[i + 1] <= 0xa9) {
			d = (unsigned char)s[i + 1] - 0xa0; /* U+0660..U+0669 */
			i += 2;
		} else {
			return -1;
		}
		if (++digits > 2)
			return -1;
		v = v * 10 + d;
	}
	return digits ? v : -1;
}

enum pol_helper_word pol_helper_word_of(const char *text, const struct pol_helper_key *keys, size_t nkeys,
                                        size_t *entry)
{
	size_t a = 0, b = text ? strlen(text) : 0;
	while (a < b && is_space((unsigned char)text[a]))
		a++;
	while (b > a && is_space((unsigned char)text[b - 1]))
		b--;
	if (b > a && (text[b - 1] == '.' || text[b - 1] == '!'))
		b--;
	if (a == b)
		return POL_HELPER_OTHER;
	const char *s = text + a;
	size_t n = b - a;
	int num = number_of(s, n);
	if (num == (int)POL_HELPER_PERSON_NUMBER)
		return POL_HELPER_PERSON;
	for (size_t i = 0; i < NPERSON; i++) {
		if (has_word(s, n, person_words[i]))
			return POL_HELPER_PERSON;
	}
	for (size_t i = 0; keys && i < nkeys; i++) {
		int hit = num > 0 && keys[i].number == (unsigned)num;
		for (size_t w = 0; !hit && num < 0 && w < keys[i].nwords; w++)
			hit = keys[i].words[w] && has_word(s, n, keys[i].words[w]);
		if (hit) {
			if (entry)
				*entry = i;
			return POL_HELPER_ENTRY;
		}
	}
	return POL_HELPER_OTHER;
}

int pol_helper_is_person_word(const char *word)
{
	size_t n = word ? strlen(word) : 0;
	for (size_t i = 0; i < NPERSON; i++) {
		if (strlen(person_words[i]) == n && has_word(word, n, person_words[i]))
			return 1;
	}
	return 0;
}

/* ---- names --------------------------------------------------------------- */

static const char *const word_names[] = {"other", "person", "entry"};
static const char *const action_names[] = {"nothing", "answer", "menu", "handover", "asked_before"};
static const char *const reason_names[] = {"no_rule",      "staff_here", "person",     "person_again",
                                           "answer_first", "answer",     "menu_first", "no_match"};

#define NAME(table, i) ((size_t)(i) < sizeof(table) / sizeof(table[0]) ? table[i] : NULL)

const char *pol_helper_word_name(enum pol_helper_word w)
{
	return NAME(word_names, w);
}
const char *pol_helper_action_name(enum pol_helper_action a)
{
	return NAME(action_names, a);
}
const char *pol_helper_reason_name(enum pol_helper_reason r)
{
	return NAME(reason_names, r);
}

int pol_helper_word_from_name(const char *s)
{
	for (size_t i = 0; s && i < sizeof(word_names) / sizeof(word_names[0]); i++) {
		if (strcmp(word_names[i], s) == 0)
			return (int)i;
	}
	return -1;
}
