/*
 * chanrules.h - what a conversation by an outside channel (SMS, and later
 * WhatsApp) may do, decided per message: the person's words classified
 * (pol_chan_word: STOP, DELETE, YES, a language number, or anything else)
 * and, with where the person stands (nothing yet, asked for a language,
 * shown the notice, talking, ended), one decision out: ask for a language,
 * show the notice, open the conversation, pass the words to staff, end,
 * erase, forget, or refuse.  Staff's words out are judged too: never to a
 * number that has not written first and agreed.
 *
 * Pure like policy.h: no I/O, no clock, no allocation.  The rules are one
 * table in chanrules.c, read top to bottom; the first row that matches
 * decides.  docs/policy.md ("Channels") says each rule in plain words.
 */
#ifndef THRESHOLD_POLICY_CHANRULES_H
#define THRESHOLD_POLICY_CHANRULES_H

#include <stddef.h>

/* Which way the words go. */
enum pol_chan_event {
	POL_CHAN_IN = 0,      /* the person wrote to the service */
	POL_CHAN_OUT,         /* staff's words (or the service's) to the person */
	POL_CHAN_UNDELIVERED, /* the gateway reported the last text to the person not delivered */
	POL_CHAN_EVENT_COUNT
};

/* Where the person stands with this service on this channel. */
enum pol_chan_stage {
	POL_CHAN_NONE = 0, /* never wrote, or forgotten */
	POL_CHAN_LANG,     /* asked which language */
	POL_CHAN_NOTICE,   /* shown the notice, not agreed yet */
	POL_CHAN_OPEN,     /* agreed: a conversation (waiting or open) */
	POL_CHAN_CLOSED,   /* the conversation ended (STOP, staff, expiry) */
	POL_CHAN_STAGE_COUNT
};

/* What the person's words are, as a whole message. */
enum pol_chan_word {
	POL_CHAN_OTHER = 0, /* anything else: words for staff */
	POL_CHAN_STOP,      /* STOP, END, ARRÊT, FIN, PARAR, توقف ... */
	POL_CHAN_DELETE,    /* DELETE, SUPPRIMER, BORRAR, احذف ... */
	POL_CHAN_YES,       /* YES, OUI, SÍ, نعم ... */
	POL_CHAN_LANGNUM,   /* a number naming one of the service's languages */
	POL_CHAN_WORD_COUNT
};

struct pol_chan_facts {
	enum pol_chan_event event;
	enum pol_chan_stage stage;
	enum pol_chan_word word; /* POL_CHAN_IN only */
};

enum pol_chan_action {
	POL_CHAN_REFUSE = 0,  /* nothing is sent or kept */
	POL_CHAN_ASK_LANG,    /* answer with the language menu; keep the stage LANG */
	POL_CHAN_NOTICE_SEND, /* answer with the notice in the chosen language; stage NOTICE */
	POL_CHAN_REMIND,      /* answer: the notice still waits for YES (or STOP) */
	POL_CHAN_OPEN_CONV,   /* consent recorded, the conversation opens; nothing before it is passed on */
	POL_CHAN_FORWARD,     /* the words go to staff */
	POL_CHAN_END,         /* the conversation ends; plain confirmation */
	POL_CHAN_ERASE,       /* the person's data is erased; plain confirmation */
	POL_CHAN_FORGET,      /* before agreeing: what is kept of the number is dropped; confirmation */
	POL_CHAN_CONFIRM,     /* nothing to end or erase: a plain confirmation only */
	POL_CHAN_SEND,        /* staff's words go out to the person */
	POL_CHAN_TELL_STAFF,  /* a notice in the conversation room (no number, no words) */
	POL_CHAN_ACTION_COUNT
};

enum pol_chan_reason {
	POL_CHAN_R_NO_RULE = 0,
	POL_CHAN_R_STOP_ENDS,             /* STOP in a conversation ends it */
	POL_CHAN_R_STOP_BEFORE,           /* STOP before agreeing forgets the number */
	POL_CHAN_R_STOP_NOTHING,          /* STOP with nothing going on: confirmed */
	POL_CHAN_R_DELETE_ERASES,         /* DELETE erases the conversation, open or ended */
	POL_CHAN_R_DELETE_BEFORE,         /* DELETE before agreeing forgets the number */
	POL_CHAN_R_DELETE_NOTHING,        /* DELETE with nothing kept: confirmed */
	POL_CHAN_R_FIRST_CONTACT,         /* a first message gets the language menu, and nothing else */
	POL_CHAN_R_LANGUAGE_CHOSEN,       /* a language number gets the notice in that language */
	POL_CHAN_R_LANGUAGE_AGAIN,        /* anything else while asked for a language: the menu again */
	POL_CHAN_R_AGREED,                /* YES to the notice opens the conversation */
	POL_CHAN_R_NOT_AGREED_YET,        /* anything else after the notice: a reminder, nothing to staff */
	POL_CHAN_R_WORDS_TO_STAFF,        /* in a conversation, the words reach staff */
	POL_CHAN_R_AGAIN_AFTER_END,       /* writing again after the end starts afresh, notice first */
	POL_CHAN_R_OUT_TO_CONVERSATION,   /* staff answer a person who wrote and agreed */
	POL_CHAN_R_OUT_NOT_WRITTEN_FIRST, /* staff cannot start a conversation with a number */
	POL_CHAN_R_OUT_ENDED,             /* the conversation ended: nothing more goes out */
	POL_CHAN_R_UNDELIVERED_TOLD,      /* a text not delivered in a conversation: staff are told */
	POL_CHAN_R_UNDELIVERED_ENDED,     /* not delivered after the end: nobody to tell, nothing to do */
	POL_CHAN_R_COUNT
};

/* What the decision asks to be written to the audit log. */
enum pol_chan_record {
	POL_CHAN_REC_NONE = 0,
	POL_CHAN_REC_CONSENT,   /* consent_recorded (and conversation_opened) */
	POL_CHAN_REC_WITHDRAWN, /* consent_withdrawn: the person ended it */
	POL_CHAN_REC_ERASED,    /* data_erased */
	POL_CHAN_REC_BLOCKED,   /* contact_blocked: staff tried to write first */
	POL_CHAN_REC_COUNT
};

struct pol_chan_decision {
	enum pol_chan_action action;
	enum pol_chan_reason reason;
	enum pol_chan_record record;
	int rule; /* index of the rule that decided, or -1 */
};

/**
 * Decide one message of a channel conversation.
 * @param facts  borrowed
 * @param out    always written
 */
void pol_chan_decide(const struct pol_chan_facts *facts, struct pol_chan_decision *out);

/**
 * Classify a whole message: leading and trailing white space and one
 * trailing '.' or '!' are ignored, ASCII letters compared without case.
 * @param text    borrowed, NUL-terminated
 * @param nlangs  the service's languages: "1".."nlangs" name one
 * @param lang    out, with POL_CHAN_LANGNUM: the 0-based index; may be NULL
 * @return the word
 */
enum pol_chan_word pol_chan_word_of(const char *text, size_t nlangs, size_t *lang);

/** Stable names, for logs and cases; NULL if out of range. */
const char *pol_chan_event_name(enum pol_chan_event e);
const char *pol_chan_stage_name(enum pol_chan_stage s);
const char *pol_chan_word_name(enum pol_chan_word w);
const char *pol_chan_action_name(enum pol_chan_action a);
const char *pol_chan_reason_name(enum pol_chan_reason r);
const char *pol_chan_record_name(enum pol_chan_record r);

/** Reverse lookups for data files; -1 when unknown. */
int pol_chan_event_from_name(const char *s);
int pol_chan_stage_from_name(const char *s);
int pol_chan_word_from_name(const char *s);

/** Number of rules, and one rule's reason (for coverage checks). */
unsigned pol_chan_rule_count(void);
enum pol_chan_reason pol_chan_rule_reason(unsigned i);

#endif
