/*
 * visibility.c - the rule table for what a guest's page shows, and its names.
 * Pure: no I/O, no clock, no globals beyond constant tables.
 */
#include "visibility.h"

#include <stddef.h>
#include <string.h>

#define BIT(x)     (1u << (x))
#define ANY        0u /* in a mask: matches everything */
#define STAFFISH   (BIT(POL_ROLE_STAFF) | BIT(POL_ROLE_LEAD))
#define NOT_PEOPLE (BIT(POL_ROLE_NONE) | BIT(POL_ROLE_LOCAL) | BIT(POL_ROLE_REMOTE))
#define SHOWABLE                                                                                   \
	(BIT(POL_VIEW_MESSAGE) | BIT(POL_VIEW_NOTICE) | BIT(POL_VIEW_EMOTE) | BIT(POL_VIEW_FILE) | \
	 BIT(POL_VIEW_IMAGE))
#define RELATED (BIT(POL_VIEW_REL_REPLY) | BIT(POL_VIEW_REL_THREAD) | BIT(POL_VIEW_REL_OTHER))

/* One rule: what it matches (masks: ANY or BIT() of the fact; flags: 1 only
 * if set, -1 only if not, 0 either), and what it decides. */
struct rule {
	unsigned sender, kind, rel, target;
	int command, by_target_sender, moderator, new_content, sender_erased;
	enum pol_view_action action;
	enum pol_view_reason reason;
	int strip_fallback, remember_hidden;
	enum pol_view_record record;
};

/* Read top to bottom; the first match decides.  Each row is one sentence of
 * docs/policy.md, "What a guest sees". */
static const struct rule rules[] = {
        /* A guest who erased their data: a message that arrives after is
         * redacted by the bot, shown to nobody, and recorded. */
        {BIT(POL_ROLE_GUEST), SHOWABLE | BIT(POL_VIEW_OTHER), ANY, ANY, 0, 0, 0, 0, 1, POL_VIEW_REDACT,
         POL_VIEW_R_ERASED_GUEST_LATE, 0, 0, POL_VIEW_REC_DATA_ERASED},
        /* The bot, room admin, redacts a guest's words (their erasure, a
         * late message of an erased guest): taken down in every feed. */
        {BIT(POL_ROLE_BOT), BIT(POL_VIEW_REDACTION), ANY, BIT(POL_VIEW_TARGET_VISIBLE), 0, 0, 0, 0, 0,
         POL_VIEW_REMOVE, POL_VIEW_R_REDACTION_APPLIED, 0, 0, POL_VIEW_REC_NONE},
        /* The bot speaks to staff; a stranger is being removed. */
        {BIT(POL_ROLE_BOT), ANY, ANY, ANY, 0, 0, 0, 0, 0, POL_VIEW_HIDE, POL_VIEW_R_BOT_WORDS, 0, 1,
         POL_VIEW_REC_NONE},
        {NOT_PEOPLE, ANY, ANY, ANY, 0, 0, 0, 0, 0, POL_VIEW_HIDE, POL_VIEW_R_STRANGER, 0, 0,
         POL_VIEW_REC_NONE},

        /* A call rings on the page only from staff, only in the guest's own
         * conversation while it is open; every other call signal stays out
         * (policy.h, POL_EV_GATEWAY_CALL, decides the guest's side).  A
         * SIGNAL row matches only when pol_view_facts.call_open is set. */
        {STAFFISH, BIT(POL_VIEW_CALL), ANY, ANY, 0, 0, 0, 0, 0, POL_VIEW_SIGNAL, POL_VIEW_R_CALL_SIGNAL, 0, 0,
         POL_VIEW_REC_NONE},
        {ANY, BIT(POL_VIEW_CALL), ANY, ANY, 0, 0, 0, 0, 0, POL_VIEW_HIDE, POL_VIEW_R_CALL_HIDDEN, 0, 0,
         POL_VIEW_REC_NONE},

        /* A redaction takes an entry of this room down only when its sender
         * or a moderator made it (anyone on the same server can send one; the
         * homeserver applies only those). */
        {ANY, BIT(POL_VIEW_REDACTION), ANY, BIT(POL_VIEW_TARGET_VISIBLE), 0, 1, 0, 0, 0, POL_VIEW_REMOVE,
         POL_VIEW_R_REDACTION_APPLIED, 0, 0, POL_VIEW_REC_NONE},
        {ANY, BIT(POL_VIEW_REDACTION), ANY, BIT(POL_VIEW_TARGET_VISIBLE), 0, 0, 1, 0, 0, POL_VIEW_REMOVE,
         POL_VIEW_R_REDACTION_APPLIED, 0, 0, POL_VIEW_REC_NONE},
        {ANY, BIT(POL_VIEW_REDACTION), ANY, BIT(POL_VIEW_TARGET_VISIBLE), 0, 0, 0, 0, 0, POL_VIEW_HIDE,
         POL_VIEW_R_REDACTION_REFUSED, 0, 0, POL_VIEW_REC_NONE},
        {ANY, BIT(POL_VIEW_REDACTION), ANY, ANY, 0, 0, 0, 0, 0, POL_VIEW_HIDE, POL_VIEW_R_REDACTION_ELSEWHERE,
         0, 0, POL_VIEW_REC_NONE},

        /* Reactions are never shown: a page cannot say who reacted without
         * naming staff, and one on a note would tell the guest it exists. */
        {ANY, BIT(POL_VIEW_REACTION), ANY, ANY, 0, 0, 0, 0, 0, POL_VIEW_HIDE, POL_VIEW_R_REACTION_HIDDEN, 0,
         0, POL_VIEW_REC_NONE},

        /* An edit is judged by its new content, and replaces the entry it
         * edits; it is never a second copy. */
        {ANY, ANY, BIT(POL_VIEW_REL_EDIT), BIT(POL_VIEW_TARGET_HIDDEN), 0, 0, 0, 0, 0, POL_VIEW_HIDE,
         POL_VIEW_R_EDIT_OF_HIDDEN, 0, 0, POL_VIEW_REC_NONE},
        {ANY, ANY, BIT(POL_VIEW_REL_EDIT), ANY, 1, 0, 0, 0, 0, POL_VIEW_HIDE, POL_VIEW_R_EDIT_TO_COMMAND, 0,
         0, POL_VIEW_REC_NONE},
        {ANY, ANY, BIT(POL_VIEW_REL_EDIT), ANY, 0, 0, 0, -1, 0, POL_VIEW_HIDE, POL_VIEW_R_EDIT_MALFORMED, 0,
         0, POL_VIEW_REC_NONE},
        {ANY, ANY, BIT(POL_VIEW_REL_EDIT), ANY, 0, -1, 0, 0, 0, POL_VIEW_HIDE, POL_VIEW_R_EDIT_NOT_BY_SENDER,
         0, 0, POL_VIEW_REC_NONE},
        {ANY, SHOWABLE, BIT(POL_VIEW_REL_EDIT), BIT(POL_VIEW_TARGET_VISIBLE), 0, 0, 0, 0, 0, POL_VIEW_REPLACE,
         POL_VIEW_R_EDIT_REPLACES, 0, 0, POL_VIEW_REC_NONE},
        {ANY, ANY, BIT(POL_VIEW_REL_EDIT), ANY, 0, 0, 0, 0, 0, POL_VIEW_HIDE, POL_VIEW_R_EDIT_UNKNOWN, 0, 0,
         POL_VIEW_REC_NONE},

        /* Staff's notes and commands stay with staff, and so does whatever
         * answers or continues one. */
        {STAFFISH, ANY, ANY, ANY, 1, 0, 0, 0, 0, POL_VIEW_HIDE, POL_VIEW_R_NOTE_OR_COMMAND, 0, 1,
         POL_VIEW_REC_NONE},
        {ANY, ANY, RELATED, BIT(POL_VIEW_TARGET_HIDDEN), 0, 0, 0, 0, 0, POL_VIEW_HIDE,
         POL_VIEW_R_RELATED_TO_HIDDEN, 0, 1, POL_VIEW_REC_NONE},

        /* Replies and thread replies are shown without the quote of what
         * they answer (it names its sender by user id). */
        {ANY, SHOWABLE, RELATED, ANY, 0, 0, 0, 0, 0, POL_VIEW_SHOW, POL_VIEW_R_REPLY_SHOWN, 1, 0,
         POL_VIEW_REC_NONE},
        {ANY, SHOWABLE, ANY, ANY, 0, 0, 0, 0, 0, POL_VIEW_SHOW, POL_VIEW_R_MESSAGE_SHOWN, 0, 0,
         POL_VIEW_REC_NONE},
        {ANY, ANY, ANY, ANY, 0, 0, 0, 0, 0, POL_VIEW_HIDE, POL_VIEW_R_OTHER_HIDDEN, 0, 0, POL_VIEW_REC_NONE},
};

static int has(unsigned mask, unsigned bit)
{
	return mask == ANY || (bit < 32 && (mask & (1u << bit)));
}

static int flag(int want, int fact)
{
	return want == 0 || (want == 1 && fact) || (want == -1 && !fact);
}

void pol_visibility_decide(const struct pol_view_facts *f, struct pol_view *out)
{
	memset(out, 0, sizeof(*out));
	out->action = POL_VIEW_HIDE;
	out->reason = POL_VIEW_R_NO_RULE;
	out->rule = -1;
	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		const struct rule *r = &rules[i];
		if (!has(r->sender, f->sender) || !has(r->kind, f->kind) || !has(r->rel, f->rel) ||
		    !has(r->target, f->target) || !flag(r->command, f->command) ||
		    !flag(r->by_target_sender, f->by_target_sender) || !flag(r->moderator, f->moderator) ||
		    !flag(r->new_content, f->new_content) || !flag(r->sender_erased, f->sender_erased) ||
		    (r->action == POL_VIEW_SIGNAL && !f->call_open)) /* a signal only to an open call room */
			continue;
		out->action = r->action;
		out->reason = r->reason;
		out->strip_fallback = r->strip_fallback;
		out->remember_hidden = r->remember_hidden;
		out->record = r->record;
		out->rule = (int)i;
		return;
	}
}

unsigned pol_view_rule_count(void)
{
	return sizeof(rules) / sizeof(rules[0]);
}

enum pol_view_reason pol_view_rule_reason(unsigned i)
{
	return i < pol_view_rule_count() ? rules[i].reason : POL_VIEW_R_NO_RULE;
}

static const char *const kind_names[POL_VIEW_KIND_COUNT] = {
        [POL_VIEW_OTHER] = "other",       [POL_VIEW_MESSAGE] = "message",     [POL_VIEW_NOTICE] = "notice",
        [POL_VIEW_EMOTE] = "emote",       [POL_VIEW_FILE] = "file",           [POL_VIEW_IMAGE] = "image",
        [POL_VIEW_REACTION] = "reaction", [POL_VIEW_REDACTION] = "redaction", [POL_VIEW_CALL] = "call",
};

static const char *const rel_names[POL_VIEW_REL_COUNT] = {
        [POL_VIEW_REL_NONE] = "none",     [POL_VIEW_REL_EDIT] = "edit",   [POL_VIEW_REL_REPLY] = "reply",
        [POL_VIEW_REL_THREAD] = "thread", [POL_VIEW_REL_OTHER] = "other",
};

static const char *const target_names[POL_VIEW_TARGET_COUNT] = {
        [POL_VIEW_TARGET_NONE] = "none",
        [POL_VIEW_TARGET_VISIBLE] = "visible",
        [POL_VIEW_TARGET_HIDDEN] = "hidden",
        [POL_VIEW_TARGET_UNKNOWN] = "unknown",
};

static const char *const action_names[POL_VIEW_ACTION_COUNT] = {
        [POL_VIEW_HIDE] = "hide",     [POL_VIEW_SHOW] = "show",     [POL_VIEW_REPLACE] = "replace",
        [POL_VIEW_REMOVE] = "remove", [POL_VIEW_REDACT] = "redact", [POL_VIEW_SIGNAL] = "signal",
};

static const char *const reason_names[POL_VIEW_R_COUNT] = {
        [POL_VIEW_R_NO_RULE] = "no_rule",
        [POL_VIEW_R_ERASED_GUEST_LATE] = "erased_guest_late_message",
        [POL_VIEW_R_BOT_WORDS] = "bot_words",
        [POL_VIEW_R_STRANGER] = "stranger_words",
        [POL_VIEW_R_REDACTION_APPLIED] = "redaction_applied",
        [POL_VIEW_R_REDACTION_REFUSED] = "redaction_not_allowed",
        [POL_VIEW_R_REDACTION_ELSEWHERE] = "redaction_not_in_feed",
        [POL_VIEW_R_REACTION_HIDDEN] = "reaction_hidden",
        [POL_VIEW_R_EDIT_OF_HIDDEN] = "edit_of_hidden",
        [POL_VIEW_R_EDIT_TO_COMMAND] = "edit_to_command",
        [POL_VIEW_R_EDIT_MALFORMED] = "edit_malformed",
        [POL_VIEW_R_EDIT_NOT_BY_SENDER] = "edit_not_by_sender",
        [POL_VIEW_R_EDIT_REPLACES] = "edit_replaces",
        [POL_VIEW_R_EDIT_UNKNOWN] = "edit_of_unknown",
        [POL_VIEW_R_NOTE_OR_COMMAND] = "note_or_command",
        [POL_VIEW_R_RELATED_TO_HIDDEN] = "related_to_hidden",
        [POL_VIEW_R_REPLY_SHOWN] = "reply_shown",
        [POL_VIEW_R_MESSAGE_SHOWN] = "message_shown",
        [POL_VIEW_R_OTHER_HIDDEN] = "other_hidden",
        [POL_VIEW_R_CALL_SIGNAL] = "call_signal",
        [POL_VIEW_R_CALL_HIDDEN] = "call_hidden",
};

static const char *const record_names[POL_VIEW_REC_COUNT] = {
        [POL_VIEW_REC_NONE] = "none",
        [POL_VIEW_REC_DATA_ERASED] = "data_erased",
};

#define NAME_OF(table, i) ((unsigned)(i) < sizeof(table) / sizeof(table[0]) ? table[i] : NULL)

const char *pol_view_kind_name(enum pol_view_kind k)
{
	return NAME_OF(kind_names, k);
}

const char *pol_view_rel_name(enum pol_view_rel r)
{
	return NAME_OF(rel_names, r);
}

const char *pol_view_target_name(enum pol_view_target t)
{
	return NAME_OF(target_names, t);
}

const char *pol_view_action_name(enum pol_view_action a)
{
	return NAME_OF(action_names, a);
}

const char *pol_view_reason_name(enum pol_view_reason r)
{
	return NAME_OF(reason_names, r);
}

const char *pol_view_record_name(enum pol_view_record r)
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

int pol_view_kind_from_name(const char *s)
{
	return lookup(kind_names, POL_VIEW_KIND_COUNT, s);
}

int pol_view_rel_from_name(const char *s)
{
	return lookup(rel_names, POL_VIEW_REL_COUNT, s);
}

int pol_view_target_from_name(const char *s)
{
	return lookup(target_names, POL_VIEW_TARGET_COUNT, s);
}
