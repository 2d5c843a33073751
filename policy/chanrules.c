/*
 * chanrules.c - the rule table for conversations by an outside channel (SMS),
 * the keywords people use to stop, erase and agree, and their names.
 * Pure: no I/O, no clock, no globals beyond constant tables.
 */
#include "chanrules.h"

#include <stddef.h>
#include <string.h>

#define BIT(x) (1u << (x))
#define ANY    0u /* in a mask: matches everything */
#define BEFORE (BIT(POL_CHAN_LANG) | BIT(POL_CHAN_NOTICE))
#define TALK   (BIT(POL_CHAN_OTHER) | BIT(POL_CHAN_YES) | BIT(POL_CHAN_LANGNUM))

/* One rule: what it matches (masks: ANY or BIT() of the fact) and what it decides. */
struct rule {
	unsigned event, stage, word;
	enum pol_chan_action action;
	enum pol_chan_reason reason;
	enum pol_chan_record record;
};

/* Read top to bottom; the first match decides.  Each row is one sentence of
 * docs/policy.md, "Channels". */
static const struct rule rules[] = {
        /* Staff's words go out only to a person who wrote first and agreed:
         * no conversation is ever started from the service's side. */
        {BIT(POL_CHAN_OUT), BIT(POL_CHAN_OPEN), ANY, POL_CHAN_SEND, POL_CHAN_R_OUT_TO_CONVERSATION,
         POL_CHAN_REC_NONE},
        {BIT(POL_CHAN_OUT), BIT(POL_CHAN_CLOSED), ANY, POL_CHAN_REFUSE, POL_CHAN_R_OUT_ENDED,
         POL_CHAN_REC_NONE},
        {BIT(POL_CHAN_OUT), ANY, ANY, POL_CHAN_REFUSE, POL_CHAN_R_OUT_NOT_WRITTEN_FIRST,
         POL_CHAN_REC_BLOCKED},

        /* STOP and DELETE work at every step, before anything else. */
        {BIT(POL_CHAN_IN), BIT(POL_CHAN_OPEN), BIT(POL_CHAN_STOP), POL_CHAN_END, POL_CHAN_R_STOP_ENDS,
         POL_CHAN_REC_WITHDRAWN},
        {BIT(POL_CHAN_IN), BEFORE, BIT(POL_CHAN_STOP), POL_CHAN_FORGET, POL_CHAN_R_STOP_BEFORE,
         POL_CHAN_REC_NONE},
        {BIT(POL_CHAN_IN), ANY, BIT(POL_CHAN_STOP), POL_CHAN_CONFIRM, POL_CHAN_R_STOP_NOTHING,
         POL_CHAN_REC_NONE},
        {BIT(POL_CHAN_IN), BIT(POL_CHAN_OPEN) | BIT(POL_CHAN_CLOSED), BIT(POL_CHAN_DELETE), POL_CHAN_ERASE,
         POL_CHAN_R_DELETE_ERASES, POL_CHAN_REC_ERASED},
        {BIT(POL_CHAN_IN), BEFORE, BIT(POL_CHAN_DELETE), POL_CHAN_FORGET, POL_CHAN_R_DELETE_BEFORE,
         POL_CHAN_REC_NONE},
        {BIT(POL_CHAN_IN), ANY, BIT(POL_CHAN_DELETE), POL_CHAN_CONFIRM, POL_CHAN_R_DELETE_NOTHING,
         POL_CHAN_REC_NONE},

        /* In a conversation, whatever else the person writes reaches staff. */
        {BIT(POL_CHAN_IN), BIT(POL_CHAN_OPEN), TALK, POL_CHAN_FORWARD, POL_CHAN_R_WORDS_TO_STAFF,
         POL_CHAN_REC_NONE},

        /* Before agreeing, nothing reaches staff: the language menu, then the
         * notice in that language, then YES opens the conversation. */
        {BIT(POL_CHAN_IN), BIT(POL_CHAN_NONE), TALK, POL_CHAN_ASK_LANG, POL_CHAN_R_FIRST_CONTACT,
         POL_CHAN_REC_NONE},
        {BIT(POL_CHAN_IN), BIT(POL_CHAN_CLOSED), TALK, POL_CHAN_ASK_LANG, POL_CHAN_R_AGAIN_AFTER_END,
         POL_CHAN_REC_NONE},
        {BIT(POL_CHAN_IN), BEFORE, BIT(POL_CHAN_LANGNUM), POL_CHAN_NOTICE_SEND, POL_CHAN_R_LANGUAGE_CHOSEN,
         POL_CHAN_REC_NONE},
        {BIT(POL_CHAN_IN), BIT(POL_CHAN_LANG), TALK, POL_CHAN_ASK_LANG, POL_CHAN_R_LANGUAGE_AGAIN,
         POL_CHAN_REC_NONE},
        {BIT(POL_CHAN_IN), BIT(POL_CHAN_NOTICE), BIT(POL_CHAN_YES), POL_CHAN_OPEN_CONV, POL_CHAN_R_AGREED,
         POL_CHAN_REC_CONSENT},
        {BIT(POL_CHAN_IN), BIT(POL_CHAN_NOTICE), TALK, POL_CHAN_REMIND, POL_CHAN_R_NOT_AGREED_YET,
         POL_CHAN_REC_NONE},

        /* A delivery report says the last text did not reach the phone:
         * staff, who may be waiting for an answer, are told while the
         * conversation is open; after the end there is nobody to tell. */
        {BIT(POL_CHAN_UNDELIVERED), BIT(POL_CHAN_OPEN), ANY, POL_CHAN_TELL_STAFF, POL_CHAN_R_UNDELIVERED_TOLD,
         POL_CHAN_REC_NONE},
        {BIT(POL_CHAN_UNDELIVERED), ANY, ANY, POL_CHAN_REFUSE, POL_CHAN_R_UNDELIVERED_ENDED,
         POL_CHAN_REC_NONE},
};
#define NRULES (sizeof(rules) / sizeof(rules[0]))

static int matches(unsigned mask, unsigned v)
{
	return mask == ANY || (mask & BIT(v));
}

void pol_chan_decide(const struct pol_chan_facts *f, struct pol_chan_decision *out)
{
	out->action = POL_CHAN_REFUSE;
	out->reason = POL_CHAN_R_NO_RULE;
	out->record = POL_CHAN_REC_NONE;
	out->rule = -1;
	if (f->event >= POL_CHAN_EVENT_COUNT || f->stage >= POL_CHAN_STAGE_COUNT ||
	    f->word >= POL_CHAN_WORD_COUNT)
		return;
	for (size_t i = 0; i < NRULES; i++) {
		const struct rule *r = &rules[i];
		if (matches(r->event, f->event) && matches(r->stage, f->stage) && matches(r->word, f->word)) {
			out->action = r->action;
			out->reason = r->reason;
			out->record = r->record;
			out->rule = (int)i;
			return;
		}
	}
}

unsigned pol_chan_rule_count(void)
{
	return NRULES;
}

enum pol_chan_reason pol_chan_rule_reason(unsigned i)
{
	return i < NRULES ? rules[i].reason : POL_CHAN_R_NO_RULE;
}

/* ---- keywords ------------------------------------------------------------ */

/* Each word as written after ASCII letters are upper-cased (letters beyond
 * ASCII are listed in the forms people type). */
static const char *const stop_words[] = {
        "STOP",
        "END",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "QUIT", /* en */
        "ARRET",
        "ARRÊT",
        "ARRêT",
        "FIN", /* fr */
        "PARAR",
        "ALTO",
        "BASTA",                                    /* es */
        "\xd8\xaa\xd9\x88\xd9\x82\xd9\x81",         /* ar: توقف */
        "\xd8\xa5\xd9\x86\xd9\x87\xd8\xa7\xd8\xa1", /* ar: إنهاء */
};
static const char *const delete_words[] = {
        "DELETE",
        "ERASE", /* en */
        "SUPPRIMER",
        "EFFACER", /* fr */
        "BORRAR",
        "ELIMINAR",                         /* es */
        "\xd8\xa7\xd8\xad\xd8\xb0\xd9\x81", /* ar: احذف */
        "\xd8\xad\xd8\xb0\xd9\x81",         /* ar: حذف */
};
static const char *const yes_words[] = {
        "YES",
        "Y",
        "AGREE",
        "OK", /* en */
        "OUI",
        "D'ACCORD", /* fr */
        "SI",
        "SÍ",
        "Sí",                       /* es */
        "\xd9\x86\xd8\xb9\xd9\x85", /* ar: نعم */
};

static int in_list(const char *s, size_t n, const char *const *list, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		if (strlen(list[i]) == n && memcmp(list[i], s, n) == 0)
			return 1;
	}
	return 0;
}

static int is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

enum pol_chan_word pol_chan_word_of(const char *text, size_t nlangs, size_t *lang)
{
	char w[32];
	size_t a = 0, b = text ? strlen(text) : 0;
	while (a < b && is_space((unsigned char)text[a]))
		a++;
	/* "#STOP" (words for a group, policy/route.h) still stops: a keyword
	 * is never passed on to the group */
	if (a < b && text[a] == '#')
		a++;
	while (a < b && is_space((unsigned char)text[a]))
		a++;
	while (b > a && is_space((unsigned char)text[b - 1]))
		b--;
	if (b > a && (text[b - 1] == '.' || text[b - 1] == '!'))
		b--;
	size_t n = b - a;
	if (n == 0 || n >= sizeof(w))
		return POL_CHAN_OTHER;
	for (size_t i = 0; i < n; i++) {
		char c = text[a + i];
		w[i] = c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
	}
	w[n] = '\0';
	if (in_list(w, n, stop_words, sizeof(stop_words) / sizeof(stop_words[0])))
		return POL_CHAN_STOP;
	if (in_list(w, n, delete_words, sizeof(delete_words) / sizeof(delete_words[0])))
		return POL_CHAN_DELETE;
	if (in_list(w, n, yes_words, sizeof(yes_words) / sizeof(yes_words[0])))
		return POL_CHAN_YES;
	if (n <= 2 && w[0] >= '1' && w[0] <= '9' && (n == 1 || (w[1] >= '0' && w[1] <= '9'))) {
		size_t v = (size_t)(w[0] - '0');
		if (n == 2)
			v = v * 10 + (size_t)(w[1] - '0');
		if (v >= 1 && v <= nlangs) {
			if (lang)
				*lang = v - 1;
			return POL_CHAN_LANGNUM;
		}
	}
	return POL_CHAN_OTHER;
}

/* ---- names --------------------------------------------------------------- */

static const char *const event_names[] = {"in", "out", "undelivered"};
static const char *const stage_names[] = {"none", "language", "notice", "open", "closed"};
static const char *const word_names[] = {"other", "stop", "delete", "yes", "language_number"};
static const char *const action_names[] = {"refuse", "ask_language", "send_notice", "remind",
                                           "open",   "forward",      "end",         "erase",
                                           "forget", "confirm",      "send",        "tell_staff"};
static const char *const reason_names[] = {"no_rule",
                                           "stop_ends",
                                           "stop_before_agreeing",
                                           "stop_nothing",
                                           "delete_erases",
                                           "delete_before_agreeing",
                                           "delete_nothing",
                                           "first_contact",
                                           "language_chosen",
                                           "language_again",
                                           "agreed",
                                           "not_agreed_yet",
                                           "words_to_staff",
                                           "again_after_end",
                                           "out_to_conversation",
                                           "out_not_written_first",
                                           "out_ended",
                                           "undelivered_told",
                                           "undelivered_after_end"};
static const char *const record_names[] = {"none", "consent_recorded", "consent_withdrawn", "data_erased",
                                           "contact_blocked"};

#define NAME(table, i) ((size_t)(i) < sizeof(table) / sizeof(table[0]) ? table[i] : NULL)

const char *pol_chan_event_name(enum pol_chan_event e)
{
	return NAME(event_names, e);
}
const char *pol_chan_stage_name(enum pol_chan_stage s)
{
	return NAME(stage_names, s);
}
const char *pol_chan_word_name(enum pol_chan_word w)
{
	return NAME(word_names, w);
}
const char *pol_chan_action_name(enum pol_chan_action a)
{
	return NAME(action_names, a);
}
const char *pol_chan_reason_name(enum pol_chan_reason r)
{
	return NAME(reason_names, r);
}
const char *pol_chan_record_name(enum pol_chan_record r)
{
	return NAME(record_names, r);
}

static int from_name(const char *const *table, size_t n, const char *s)
{
	for (size_t i = 0; s && i < n; i++) {
		if (strcmp(table[i], s) == 0)
			return (int)i;
	}
	return -1;
}

int pol_chan_event_from_name(const char *s)
{
	return from_name(event_names, sizeof(event_names) / sizeof(event_names[0]), s);
}
int pol_chan_stage_from_name(const char *s)
{
	return from_name(stage_names, sizeof(stage_names) / sizeof(stage_names[0]), s);
}
int pol_chan_word_from_name(const char *s)
{
	return from_name(word_names, sizeof(word_names) / sizeof(word_names[0]), s);
}

_Static_assert(sizeof(action_names) / sizeof(action_names[0]) == POL_CHAN_ACTION_COUNT, "action names");
_Static_assert(sizeof(reason_names) / sizeof(reason_names[0]) == POL_CHAN_R_COUNT, "reason names");
_Static_assert(sizeof(record_names) / sizeof(record_names[0]) == POL_CHAN_REC_COUNT, "record names");
_Static_assert(sizeof(stage_names) / sizeof(stage_names[0]) == POL_CHAN_STAGE_COUNT, "stage names");
_Static_assert(sizeof(word_names) / sizeof(word_names[0]) == POL_CHAN_WORD_COUNT, "word names");
