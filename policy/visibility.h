/*
 * visibility.h - what a guest's page shows of one Matrix event, decided per
 * event and per feed: borrowed facts in (who sent it, what kind of event, how
 * it relates to another event and where that event stands in this feed),
 * a decision out (show, replace an entry, remove an entry, hide; or redact),
 * with a reason code.  Pure like policy.h: no I/O, no clock, no allocation.
 * The rules are one table in visibility.c, read top to bottom; the first row
 * that matches decides.  docs/policy.md ("What a guest sees") says each rule
 * in plain words.
 */
#ifndef THRESHOLD_POLICY_VISIBILITY_H
#define THRESHOLD_POLICY_VISIBILITY_H

#include "policy.h"

/* What the event is, as the page could show it. */
enum pol_view_kind {
	POL_VIEW_OTHER = 0, /* anything else (an unknown msgtype, a sticker, a poll...) */
	POL_VIEW_MESSAGE,   /* m.room.message, m.text */
	POL_VIEW_NOTICE,    /* m.notice */
	POL_VIEW_EMOTE,     /* m.emote */
	POL_VIEW_FILE,      /* m.file, m.audio, m.video */
	POL_VIEW_IMAGE,     /* m.image */
	POL_VIEW_REACTION,  /* m.reaction (rel_type m.annotation) */
	POL_VIEW_REDACTION, /* m.room.redaction */
	POL_VIEW_CALL,      /* a call signal: m.call.invite, candidates, answer, ..., hangup */
	POL_VIEW_KIND_COUNT
};

/* How the event relates to another (spec: m.relates_to). */
enum pol_view_rel {
	POL_VIEW_REL_NONE = 0, /* none */
	POL_VIEW_REL_EDIT,     /* rel_type m.replace */
	POL_VIEW_REL_REPLY,    /* m.in_reply_to, no rel_type */
	POL_VIEW_REL_THREAD,   /* rel_type m.thread (its m.in_reply_to counts too: see target) */
	POL_VIEW_REL_OTHER,    /* another rel_type (m.reference, ...) */
	POL_VIEW_REL_COUNT
};

/* Where the related event (edited, answered, thread root, reacted to, or
 * redacted) stands in this feed. */
enum pol_view_target {
	POL_VIEW_TARGET_NONE = 0, /* no related event */
	POL_VIEW_TARGET_VISIBLE,  /* an entry of this feed, in this room */
	POL_VIEW_TARGET_HIDDEN,   /* kept from this feed: a note, a command, the bot's words, or
	                           * something related to one of those */
	POL_VIEW_TARGET_UNKNOWN,  /* not known to this feed in this room (older than its
	                           * memory, another room, never seen) */
	POL_VIEW_TARGET_COUNT
};

struct pol_view_facts {
	enum pol_role sender; /* the event's sender */
	enum pol_view_kind kind;
	enum pol_view_rel rel;
	/* the text, as it would be shown, is a command or note ("!threshold ...",
	 * "!audit ..."): for an edit, m.new_content's body; for a reply, the body
	 * after its fallback quote */
	int command;
	/* the related event; with more than one (a thread reply that also answers
	 * an event), HIDDEN if any is hidden, else the thread root's standing */
	enum pol_view_target target;
	int by_target_sender; /* the sender also sent the related event */
	int moderator;        /* the sender's power in the room reaches its redact level */
	int new_content;      /* an edit carries m.new_content with a text body */
	int sender_erased;    /* the sender is a guest who has erased their data */
	int call_open;        /* the event's room is this guest's own conversation room, and the
	                       * conversation is open (calls: policy.h, POL_EV_GATEWAY_CALL) */
};

/* What to do with the event in this feed. */
enum pol_view_action {
	POL_VIEW_HIDE = 0, /* nothing in this feed */
	POL_VIEW_SHOW,     /* a new entry */
	POL_VIEW_REPLACE,  /* the target's entry takes the new text, marked edited */
	POL_VIEW_REMOVE,   /* the target's entry is taken down */
	POL_VIEW_REDACT,   /* in no feed; the bot redacts the event in the room */
	POL_VIEW_SIGNAL,   /* a call signal for the page, its addresses filtered (bridge/sdp.h) */
	POL_VIEW_ACTION_COUNT
};

enum pol_view_reason {
	POL_VIEW_R_NO_RULE = 0,
	POL_VIEW_R_ERASED_GUEST_LATE,   /* a message of a guest who erased their data arrived late */
	POL_VIEW_R_BOT_WORDS,           /* the bot speaks to staff, never to guests */
	POL_VIEW_R_STRANGER,            /* someone not staff nor guest: being removed */
	POL_VIEW_R_REDACTION_APPLIED,   /* its sender or a moderator took an entry down */
	POL_VIEW_R_REDACTION_REFUSED,   /* someone else tried to: the homeserver will not apply it */
	POL_VIEW_R_REDACTION_ELSEWHERE, /* nothing of this feed in this room */
	POL_VIEW_R_REACTION_HIDDEN,     /* reactions are never shown */
	POL_VIEW_R_EDIT_OF_HIDDEN,      /* an edit of a note or command */
	POL_VIEW_R_EDIT_TO_COMMAND,     /* an edit whose new text is a command or note */
	POL_VIEW_R_EDIT_MALFORMED,      /* an edit without m.new_content */
	POL_VIEW_R_EDIT_NOT_BY_SENDER,  /* spec: an edit by someone else is ignored */
	POL_VIEW_R_EDIT_REPLACES,       /* an edit of a visible message replaces its entry */
	POL_VIEW_R_EDIT_UNKNOWN,        /* an edit of something this feed does not hold */
	POL_VIEW_R_NOTE_OR_COMMAND,     /* staff's note or command to the bot */
	POL_VIEW_R_RELATED_TO_HIDDEN,   /* a reply, thread reply or other relation to a hidden event */
	POL_VIEW_R_REPLY_SHOWN,         /* a reply or thread reply, its fallback quote stripped */
	POL_VIEW_R_MESSAGE_SHOWN,       /* what staff or a guest wrote */
	POL_VIEW_R_OTHER_HIDDEN,        /* a kind of event the page does not show */
	POL_VIEW_R_CALL_SIGNAL,         /* staff's call signal in the guest's open conversation */
	POL_VIEW_R_CALL_HIDDEN,         /* any other call signal: a group, a closed conversation, the
	                                 * guest's own (its page sent it) */
	POL_VIEW_R_COUNT
};

/* What the decision asks to be written to the audit log. */
enum pol_view_record {
	POL_VIEW_REC_NONE = 0,
	POL_VIEW_REC_DATA_ERASED, /* data_erased: the late message was redacted */
	POL_VIEW_REC_COUNT
};

struct pol_view {
	enum pol_view_action action;
	enum pol_view_reason reason;
	int strip_fallback;  /* SHOW: drop the reply fallback quote from the body */
	int remember_hidden; /* remember the event as hidden, so its relatives are judged */
	enum pol_view_record record;
	int rule; /* index of the rule that decided, or -1 */
};

/**
 * Decide what one feed shows of one event.
 * @param facts  borrowed
 * @param out    always written
 */
void pol_visibility_decide(const struct pol_view_facts *facts, struct pol_view *out);

/** Stable names, for logs and cases; NULL if out of range. */
const char *pol_view_kind_name(enum pol_view_kind k);
const char *pol_view_rel_name(enum pol_view_rel r);
const char *pol_view_target_name(enum pol_view_target t);
const char *pol_view_action_name(enum pol_view_action a);
const char *pol_view_reason_name(enum pol_view_reason r);
const char *pol_view_record_name(enum pol_view_record r);

/** Reverse lookups for data files; -1 when unknown. */
int pol_view_kind_from_name(const char *s);
int pol_view_rel_from_name(const char *s);
int pol_view_target_from_name(const char *s);

/** Number of rules, and one rule's reason (for coverage checks). */
unsigned pol_view_rule_count(void);
enum pol_view_reason pol_view_rule_reason(unsigned i);

#endif
