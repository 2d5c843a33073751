/*
 * policy.c - the rule table and the names of everything in it.
 * Pure: no I/O, no clock, no globals beyond constant tables.
 */
#include "policy.h"

#include <stddef.h>
#include <string.h>

#define ROLE(r)       (1u << (r))
#define ANY           0u /* in a mask: matches everything */
#define STAFFISH      (ROLE(POL_ROLE_STAFF) | ROLE(POL_ROLE_LEAD))
#define STRANGERS     (ROLE(POL_ROLE_LOCAL) | ROLE(POL_ROLE_REMOTE))
#define ROOM(r)       (1u << (r))
#define CMD(c)        (1u << (c))
#define GROUP_IN_ROOM (CMD(POL_CMD_GROUP_ADD) | CMD(POL_CMD_GROUP_REMOVE) | CMD(POL_CMD_GROUP_LIST))
#define CONVERSATION  (CMD(POL_CMD_INVITE) | CMD(POL_CMD_CLOSE) | CMD(POL_CMD_HANDOVER) | CMD(POL_CMD_NOTE))
/* Rooms a guest does not belong in: the safeguarding room and staff rooms are not managed. */
#define NOT_MANAGED (ROOM(POL_ROOM_UNMANAGED) | ROOM(POL_ROOM_SAFEGUARDING) | ROOM(POL_ROOM_STAFF))
/* The rooms Threshold manages: conversations and groups. */
#define MANAGED (ROOM(POL_ROOM_CONVERSATION) | ROOM(POL_ROOM_GROUP))
/* For the serves and belongs columns: the fact must be 1 (YES), 0 (NO), or either (0). */
#define YES 1
#define NO  -1

/* One rule: what it matches, and what it decides. */
struct rule {
	enum pol_event event;
	unsigned sender; /* ROLE() bits, or ANY */
	unsigned target; /* ROLE() bits, or ANY */
	unsigned room;   /* ROOM() bits, or ANY */
	int bot_joined;  /* 1: only if the bot is joined; -1: only if not; 0: either */
	enum pol_reason reason;
	enum pol_action_kind action; /* 0: none */
	int refusal;
	enum pol_note note;
	enum pol_record record;
	int alert;
	unsigned command; /* CMD() bits, or ANY */
	int serves;       /* YES or NO: pol_facts.sender_serves must be 1 or 0; 0: either */
	int belongs;      /* YES or NO: pol_facts.target_belongs must be 1 or 0; 0: either */
};

/* Read top to bottom; the first match decides.  Each row is one sentence of
 * docs/policy.md. */
static const struct rule rules[] = {
        /* The bot goes where staff ask it to, nowhere else. */
        {POL_EV_INVITE, STAFFISH, ROLE(POL_ROLE_BOT), ANY, 0, POL_R_BOT_INVITE_ACCEPTED, POL_ACT_JOIN, 0,
         POL_NOTE_NONE, POL_REC_NONE, 0, ANY, 0, 0},
        /* A staff room is named by the admin, and only its members can invite:
         * whoever invites the bot there is staff, though Threshold cannot know
         * it until the bot is in. */
        {POL_EV_INVITE, ANY, ROLE(POL_ROLE_BOT), ROOM(POL_ROOM_STAFF), 0, POL_R_BOT_INVITE_STAFF_ROOM,
         POL_ACT_JOIN, 0, POL_NOTE_NONE, POL_REC_NONE, 0, ANY, 0, 0},
        /* A guest's conversation room is made by the guest, who invites the
         * bot: only Threshold acts as a guest, and the room is managed from
         * its create event on (docs/architecture.md, how a guest enters a room). */
        {POL_EV_INVITE, ROLE(POL_ROLE_GUEST), ROLE(POL_ROLE_BOT), ROOM(POL_ROOM_CONVERSATION), 0,
         POL_R_BOT_INVITE_GUEST_ROOM, POL_ACT_JOIN, 0, POL_NOTE_NONE, POL_REC_NONE, 0, ANY, 0, 0},
        {POL_EV_INVITE, ANY, ROLE(POL_ROLE_BOT), ANY, 0, POL_R_BOT_INVITE_REFUSED, POL_ACT_LEAVE, 0,
         POL_NOTE_NONE, POL_REC_CONTACT_BLOCKED, 0, ANY, 0, 0},

        /* A conversation room is one guest's: no other guest is ever in it,
         * whoever invites them, and one found joined is taken out. */
        {POL_EV_INVITE, ANY, ROLE(POL_ROLE_GUEST), ROOM(POL_ROOM_CONVERSATION), 0, POL_R_GUEST_NOT_OWN_CONV,
         POL_ACT_LEAVE, 0, POL_NOTE_NONE, POL_REC_CONTACT_BLOCKED, 1, ANY, 0, NO},
        {POL_EV_JOIN, ANY, ROLE(POL_ROLE_GUEST), ROOM(POL_ROOM_CONVERSATION), 0, POL_R_GUEST_NOT_OWN_CONV,
         POL_ACT_LEAVE, 0, POL_NOTE_NONE, POL_REC_MEMBERSHIP_ENFORCED, 1, ANY, 0, NO},
        /* A guest can be reached only where the charity put them in touch. */
        {POL_EV_INVITE, STAFFISH | ROLE(POL_ROLE_BOT), ROLE(POL_ROLE_GUEST), MANAGED, 0,
         POL_R_GUEST_INVITE_ACCEPTED, POL_ACT_JOIN, 0, POL_NOTE_NONE, POL_REC_NONE, 0, ANY, 0, 0},
        {POL_EV_INVITE, STAFFISH, ROLE(POL_ROLE_GUEST), NOT_MANAGED, 0, POL_R_GUEST_INVITE_UNMANAGED,
         POL_ACT_LEAVE, 0, POL_NOTE_ADD_GUEST_PROPERLY, POL_REC_CONTACT_BLOCKED, 0, ANY, 0, 0},
        {POL_EV_INVITE, ANY, ROLE(POL_ROLE_GUEST), ANY, 0, POL_R_GUEST_CONTACT_BLOCKED, POL_ACT_LEAVE, 0,
         POL_NOTE_NONE, POL_REC_CONTACT_BLOCKED, 1, ANY, 0, 0},
        {POL_EV_JOIN, ANY, ROLE(POL_ROLE_GUEST), NOT_MANAGED, 0, POL_R_GUEST_LEFT_UNMANAGED, POL_ACT_LEAVE, 0,
         POL_NOTE_NONE, POL_REC_MEMBERSHIP_ENFORCED, 1, ANY, 0, 0},

        /* A managed room holds staff and the guests they added; nobody else.
         * (Rule order: guests' own memberships are decided above.) */
        {POL_EV_JOIN, STRANGERS, STRANGERS, MANAGED, 0, POL_R_STRANGER_REMOVED, POL_ACT_KICK, 0,
         POL_NOTE_NOT_IN_MANAGED, POL_REC_MEMBERSHIP_ENFORCED, 1, ANY, 0, 0},
        {POL_EV_INVITE, ANY, STRANGERS, MANAGED, 0, POL_R_STRANGER_INVITE_WITHDRAWN, POL_ACT_KICK, 0,
         POL_NOTE_NOT_IN_MANAGED, POL_REC_MEMBERSHIP_ENFORCED, 0, ANY, 0, 0},
        /* Only staff (and the bot) bring people in; a guest's or a stranger's
         * invite of anyone else is undone too (guests and strangers above). */
        {POL_EV_INVITE, ROLE(POL_ROLE_GUEST) | STRANGERS, STAFFISH, MANAGED, 0, POL_R_INVITER_NOT_STAFF,
         POL_ACT_KICK, 0, POL_NOTE_ONLY_STAFF_INVITE, POL_REC_MEMBERSHIP_ENFORCED, 1, ANY, 0, 0},
        /* Someone who is no longer staff of a service is taken out of its
         * conversations and groups (the caller asks once per room they are
         * in; a lead, or staff by the config, stays). */
        {POL_EV_STAFF_ENDED, ANY, ANY, MANAGED, 0, POL_R_STAFF_STATUS_ENDED, POL_ACT_KICK, 0,
         POL_NOTE_NO_LONGER_STAFF, POL_REC_MEMBERSHIP_ENFORCED, 0, ANY, 0, NO},
        /* A setting that exposes a managed room goes back to the room's
         * template value, whoever sent it: the content is judged, never the
         * sender (a homeserver admin acts as the bot).  Threshold's own
         * reverts are template values, judged safe: they never come here. */
        {POL_EV_STATE_EXPOSED, ANY, ANY, MANAGED, 0, POL_R_STATE_REVERTED, POL_ACT_REVERT_STATE, 0,
         POL_NOTE_NONE, POL_REC_STATE_REVERTED, 1, ANY, 0, 0},
        /* Encryption cannot be turned off: only the bot holds its power level,
         * so this is someone with the bot's power; say so loudly. */
        {POL_EV_ENCRYPTION, ANY, ANY, MANAGED, 0, POL_R_ENCRYPTION_ENABLED, 0, 0, POL_NOTE_NONE,
         POL_REC_ENCRYPTION_ENABLED, 1, ANY, 0, 0},
        /* Someone holds the bot's own power: Matrix does not let the bot
         * lower them, so nothing is put back; say so, on the record. */
        {POL_EV_STATE_STUCK, ANY, ANY, MANAGED, 0, POL_R_STATE_CANNOT_REVERT, 0, 0, POL_NOTE_NONE,
         POL_REC_ENFORCEMENT_FAILED, 1, ANY, 0, 0},

        /* Commands are answered only where the bot is, and only to staff. */
        {POL_EV_COMMAND, ANY, ANY, ANY, -1, POL_R_COMMAND_IGNORED, 0, 0, POL_NOTE_NONE, POL_REC_NONE, 0, ANY,
         0, 0},
        /* A concern is raised about the guest of a conversation, by staff, in
         * that room: it opens or joins the guest's case.  Anywhere else staff
         * are told where it works. */
        {POL_EV_COMMAND, STAFFISH, ANY, ROOM(POL_ROOM_CONVERSATION), 1, POL_R_CONCERN_RAISED, POL_ACT_CONCERN,
         0, POL_NOTE_NONE, POL_REC_NONE, 0, CMD(POL_CMD_CONCERN), 0, 0},
        {POL_EV_COMMAND, STAFFISH, ANY, ANY, 1, POL_R_CONCERN_WRONG_ROOM, POL_ACT_REPLY, 0,
         POL_NOTE_CONCERN_WHERE, POL_REC_NONE, 0, CMD(POL_CMD_CONCERN), 0, 0},
        /* A guest goes into a group only by the staff of the group's service,
         * and only if they are that service's guest.  A lead may cross
         * services; it is recorded. */
        {POL_EV_COMMAND, ROLE(POL_ROLE_LEAD), ROLE(POL_ROLE_GUEST), ROOM(POL_ROOM_GROUP), 1,
         POL_R_GROUP_ADD_ACROSS, POL_ACT_GROUP, 0, POL_NOTE_NONE, POL_REC_ADDED_ACROSS, 0,
         CMD(POL_CMD_GROUP_ADD), NO, 0},
        {POL_EV_COMMAND, ROLE(POL_ROLE_LEAD), ROLE(POL_ROLE_GUEST), ROOM(POL_ROOM_GROUP), 1,
         POL_R_GROUP_ADD_ACROSS, POL_ACT_GROUP, 0, POL_NOTE_NONE, POL_REC_ADDED_ACROSS, 0,
         CMD(POL_CMD_GROUP_ADD), 0, NO},
        {POL_EV_COMMAND, STAFFISH, ROLE(POL_ROLE_GUEST), ROOM(POL_ROOM_GROUP), 1, POL_R_GROUP_ADD_NOT_SERVICE,
         POL_ACT_REPLY, 0, POL_NOTE_NOT_SERVICE_STAFF, POL_REC_CONTACT_BLOCKED, 0, CMD(POL_CMD_GROUP_ADD), NO,
         0},
        {POL_EV_COMMAND, STAFFISH, ROLE(POL_ROLE_GUEST), ROOM(POL_ROOM_GROUP), 1,
         POL_R_GROUP_ADD_OTHER_SERVICE, POL_ACT_REPLY, 0, POL_NOTE_OTHER_SERVICE, POL_REC_CONTACT_BLOCKED, 0,
         CMD(POL_CMD_GROUP_ADD), 0, NO},
        {POL_EV_COMMAND, STAFFISH, ANY, ROOM(POL_ROOM_GROUP), 1, POL_R_GROUP_COMMAND, POL_ACT_GROUP, 0,
         POL_NOTE_NONE, POL_REC_NONE, 0, GROUP_IN_ROOM, 0, 0},
        /* Group commands only in group rooms: adding a guest anywhere else
         * (a conversation room above all) is refused, and recorded. */
        {POL_EV_COMMAND, STAFFISH, ANY, ANY, 1, POL_R_GROUP_COMMAND_WRONG_ROOM, POL_ACT_REPLY, 0,
         POL_NOTE_USE_IN_GROUP_ROOM, POL_REC_CONTACT_BLOCKED, 0, CMD(POL_CMD_GROUP_ADD), 0, 0},
        {POL_EV_COMMAND, STAFFISH, ANY, ANY, 1, POL_R_GROUP_COMMAND_WRONG_ROOM, POL_ACT_REPLY, 0,
         POL_NOTE_USE_IN_GROUP_ROOM, POL_REC_NONE, 0, GROUP_IN_ROOM, 0, 0},
        {POL_EV_COMMAND, STAFFISH, ANY, ROOM(POL_ROOM_UNMANAGED) | MANAGED | ROOM(POL_ROOM_STAFF), 1,
         POL_R_CONVERSATION_COMMAND, POL_ACT_CONVERSATION, 0, POL_NOTE_NONE, POL_REC_NONE, 0, CONVERSATION, 0,
         0},
        {POL_EV_COMMAND, STAFFISH, ANY, ROOM(POL_ROOM_UNMANAGED) | MANAGED | ROOM(POL_ROOM_STAFF), 1,
         POL_R_GROUP_COMMAND, POL_ACT_GROUP, 0, POL_NOTE_NONE, POL_REC_NONE, 0, CMD(POL_CMD_GROUP_CREATE), 0,
         0},
        {POL_EV_COMMAND, STAFFISH, ANY, ANY, 1, POL_R_COMMAND_ANSWERED, POL_ACT_REPLY, 0, POL_NOTE_NONE,
         POL_REC_NONE, 0, ANY, 0, 0},
        {POL_EV_COMMAND, STRANGERS, ANY, ANY, 1, POL_R_COMMAND_REFUSED, POL_ACT_REPLY, 1, POL_NOTE_NONE,
         POL_REC_NONE, 0, ANY, 0, 0},

        /* Staff's concern reaction on a message of a conversation raises a
         * concern; anyone else's reaction is only a reaction. */
        {POL_EV_CONCERN_REACTION, STAFFISH, ANY, ROOM(POL_ROOM_CONVERSATION), 1, POL_R_CONCERN_RAISED,
         POL_ACT_CONCERN, 0, POL_NOTE_NONE, POL_REC_NONE, 0, ANY, 0, 0},
        /* A guest's own words in their conversation matching the service's
         * keyword list raise a concern (the words are not copied anywhere). */
        {POL_EV_CONCERN_KEYWORD, ROLE(POL_ROLE_GUEST), ANY, ROOM(POL_ROOM_CONVERSATION), 0,
         POL_R_CONCERN_KEYWORD, POL_ACT_CONCERN, 0, POL_NOTE_NONE, POL_REC_NONE, 0, ANY, 0, 0},
        /* Cases are worked by leads, in the safeguarding room, where the bot
         * is; every read and change is recorded by cases.c.  Other staff get
         * a plain refusal; anyone else nothing. */
        {POL_EV_CASE_COMMAND, ROLE(POL_ROLE_LEAD), ANY, ROOM(POL_ROOM_SAFEGUARDING), 1, POL_R_CASE_COMMAND,
         POL_ACT_CASE, 0, POL_NOTE_NONE, POL_REC_NONE, 0, ANY, 0, 0},
        {POL_EV_CASE_COMMAND, STAFFISH, ANY, ANY, 1, POL_R_CASE_REFUSED, POL_ACT_REPLY, 1,
         POL_NOTE_CASE_LEADS_ONLY, POL_REC_NONE, 0, ANY, 0, 0},

        /* Gateway actions (send among them) are decided by gateway_rules below. */

        /* The audit log answers only leads, only in the safeguarding room, and
         * every answer is itself recorded.  Anyone else gets nothing at all:
         * not even a refusal that says the command exists. */
        {POL_EV_AUDIT_COMMAND, ROLE(POL_ROLE_LEAD), ANY, ROOM(POL_ROOM_SAFEGUARDING), 1,
         POL_R_AUDIT_QUERY_ANSWERED, POL_ACT_AUDIT_ANSWER, 0, POL_NOTE_NONE, POL_REC_AUDIT_VIEWED, 0, ANY, 0,
         0},
        {POL_EV_AUDIT_COMMAND, ANY, ANY, ANY, 0, POL_R_AUDIT_QUERY_IGNORED, 0, 0, POL_NOTE_NONE, POL_REC_NONE,
         0, ANY, 0, 0},
        /* So do a copy of the log and breaking the glass on a guest's sealed
         * detail: a lead, in the safeguarding room, on the record. */
        {POL_EV_AUDIT_EXPORT, ROLE(POL_ROLE_LEAD), ANY, ROOM(POL_ROOM_SAFEGUARDING), 1,
         POL_R_AUDIT_EXPORT_QUEUED, POL_ACT_AUDIT_EXPORT, 0, POL_NOTE_NONE, POL_REC_AUDIT_EXPORTED, 0, ANY, 0,
         0},
        {POL_EV_AUDIT_EXPORT, ANY, ANY, ANY, 0, POL_R_AUDIT_QUERY_IGNORED, 0, 0, POL_NOTE_NONE, POL_REC_NONE,
         0, ANY, 0, 0},
        {POL_EV_AUDIT_REVEAL, ROLE(POL_ROLE_LEAD), ANY, ROOM(POL_ROOM_SAFEGUARDING), 1,
         POL_R_IDENTITY_REVEALED, POL_ACT_AUDIT_ANSWER, 0, POL_NOTE_NONE, POL_REC_IDENTITY_REVEALED, 0, ANY,
         0, YES},
        /* Never into a room others could read, now or later: a plain refusal
         * to the lead, on the record (the room's facts: events.c). */
        {POL_EV_AUDIT_REVEAL, ROLE(POL_ROLE_LEAD), ANY, ROOM(POL_ROOM_SAFEGUARDING), 1,
         POL_R_REVEAL_ROOM_NOT_PRIVATE, POL_ACT_AUDIT_ANSWER, 0, POL_NOTE_NONE, POL_REC_AUDIT_VIEWED, 0, ANY,
         0, NO},
        {POL_EV_AUDIT_REVEAL, ANY, ANY, ANY, 0, POL_R_AUDIT_QUERY_IGNORED, 0, 0, POL_NOTE_NONE, POL_REC_NONE,
         0, ANY, 0, 0},
};

static int has(unsigned mask, unsigned bit)
{
	return mask == ANY || (mask & (1u << bit));
}

/* Gateway actions: what a channel asks to do for a guest.  Matched like
 * rules[] (masks ANY or bits; flags 1 only if set, -1 only if not, 0 either),
 * on the gateway facts of pol_facts; numbered after rules[]. */
#define CONV(c) (1u << (c))
struct gateway_rule {
	enum pol_event event;
	int session, entry_open;
	unsigned conv;   /* CONV() bits, or ANY */
	unsigned target; /* ROLE() bits, or ANY: POL_ROLE_GUEST when the guest is in the room */
	unsigned room;   /* ROOM() bits, or ANY: the conversation's room */
	enum pol_reason reason;
	enum pol_action_kind action;
	enum pol_record record;
};

#define LIVE (CONV(POL_CONV_WAITING) | CONV(POL_CONV_OPEN) | CONV(POL_CONV_CLOSED))

static const struct gateway_rule gateway_rules[] = {
        /* Anyone with a good invitation, or at a service's open public entry,
         * may start a conversation (after consent; the gateway rate-limits). */
        {POL_EV_GATEWAY_REDEEM, 0, 1, ANY, ANY, ANY, POL_R_GUEST_REDEEM_ALLOWED, POL_ACT_OPEN, POL_REC_NONE},
        {POL_EV_GATEWAY_REDEEM, 0, 0, ANY, ANY, ANY, POL_R_GUEST_REDEEM_REFUSED, 0, POL_REC_NONE},
        /* A resume code opens a new session of a conversation that still exists. */
        {POL_EV_GATEWAY_RESUME, 0, 1, LIVE, ANY, ANY, POL_R_GUEST_RESUME_ALLOWED, POL_ACT_SESSION,
         POL_REC_NONE},
        {POL_EV_GATEWAY_RESUME, 0, 0, ANY, ANY, ANY, POL_R_GUEST_RESUME_REFUSED, 0, POL_REC_NONE},
        /* Everything else needs a live session. */
        {POL_EV_GATEWAY_SEND, -1, 0, ANY, ANY, ANY, POL_R_GUEST_NO_SESSION, 0, POL_REC_NONE},
        {POL_EV_GATEWAY_UPLOAD, -1, 0, ANY, ANY, ANY, POL_R_GUEST_NO_SESSION, 0, POL_REC_NONE},
        {POL_EV_GATEWAY_LEAVE, -1, 0, ANY, ANY, ANY, POL_R_GUEST_NO_SESSION, 0, POL_REC_NONE},
        {POL_EV_GATEWAY_ERASE, -1, 0, ANY, ANY, ANY, POL_R_GUEST_NO_SESSION, 0, POL_REC_NONE},
        {POL_EV_GATEWAY_HELP, -1, 0, ANY, ANY, ANY, POL_R_GUEST_NO_SESSION, 0, POL_REC_NONE},
        {POL_EV_GATEWAY_CALL, -1, 0, ANY, ANY, ANY, POL_R_GUEST_NO_SESSION, 0, POL_REC_NONE},
        /* A guest writes only into an open conversation, in a managed room
         * Threshold knows them to be in; a picture or file likewise. */
        {POL_EV_GATEWAY_SEND, 0, 0, CONV(POL_CONV_CLOSED), ANY, ANY, POL_R_GUEST_CONV_CLOSED, 0,
         POL_REC_NONE},
        {POL_EV_GATEWAY_SEND, 0, 0, CONV(POL_CONV_WAITING), ANY, ANY, POL_R_GUEST_NOT_READY, 0, POL_REC_NONE},
        {POL_EV_GATEWAY_SEND, 0, 0, CONV(POL_CONV_OPEN), ROLE(POL_ROLE_GUEST), MANAGED,
         POL_R_GUEST_SEND_ALLOWED, POL_ACT_SEND, POL_REC_NONE},
        {POL_EV_GATEWAY_SEND, 0, 0, ANY, ANY, ANY, POL_R_GUEST_SEND_REFUSED, 0, POL_REC_CONTACT_BLOCKED},
        {POL_EV_GATEWAY_UPLOAD, 0, 0, CONV(POL_CONV_CLOSED), ANY, ANY, POL_R_GUEST_CONV_CLOSED, 0,
         POL_REC_NONE},
        {POL_EV_GATEWAY_UPLOAD, 0, 0, CONV(POL_CONV_WAITING), ANY, ANY, POL_R_GUEST_NOT_READY, 0,
         POL_REC_NONE},
        {POL_EV_GATEWAY_UPLOAD, 0, 0, CONV(POL_CONV_OPEN), ROLE(POL_ROLE_GUEST), MANAGED,
         POL_R_GUEST_SEND_ALLOWED, POL_ACT_SEND, POL_REC_NONE},
        {POL_EV_GATEWAY_UPLOAD, 0, 0, ANY, ANY, ANY, POL_R_GUEST_SEND_REFUSED, 0, POL_REC_CONTACT_BLOCKED},
        /* A call (its every signal, and asking for one) only in an open
         * conversation, in the guest's own conversation room, where only the
         * service's staff are: never in a group, never after it closed or the
         * guest erased their data (no conversation then). */
        {POL_EV_GATEWAY_CALL, 0, 0, CONV(POL_CONV_NONE), ANY, ANY, POL_R_GUEST_NO_CONVERSATION, 0,
         POL_REC_NONE},
        {POL_EV_GATEWAY_CALL, 0, 0, CONV(POL_CONV_CLOSED), ANY, ANY, POL_R_GUEST_CONV_CLOSED, 0,
         POL_REC_NONE},
        {POL_EV_GATEWAY_CALL, 0, 0, CONV(POL_CONV_WAITING), ANY, ANY, POL_R_GUEST_NOT_READY, 0, POL_REC_NONE},
        {POL_EV_GATEWAY_CALL, 0, 0, CONV(POL_CONV_OPEN), ROLE(POL_ROLE_GUEST), ROOM(POL_ROOM_CONVERSATION),
         POL_R_GUEST_CALL_ALLOWED, POL_ACT_CALL, POL_REC_NONE},
        {POL_EV_GATEWAY_CALL, 0, 0, ANY, ROLE(POL_ROLE_GUEST), ROOM(POL_ROOM_GROUP),
         POL_R_GUEST_CALL_NOT_HERE, 0, POL_REC_NONE},
        {POL_EV_GATEWAY_CALL, 0, 0, ANY, ANY, ANY, POL_R_GUEST_CALL_NOT_HERE, 0, POL_REC_CONTACT_BLOCKED},
        /* A guest may always leave, and always have their data erased. */
        {POL_EV_GATEWAY_LEAVE, 0, 0, CONV(POL_CONV_NONE), ANY, ANY, POL_R_GUEST_NO_CONVERSATION, 0,
         POL_REC_NONE},
        {POL_EV_GATEWAY_LEAVE, 0, 0, CONV(POL_CONV_CLOSED), ANY, ANY, POL_R_GUEST_LEAVE_CLOSED,
         POL_ACT_END_SESSIONS, POL_REC_NONE},
        {POL_EV_GATEWAY_LEAVE, 0, 0, ANY, ANY, ANY, POL_R_GUEST_LEAVE_ALLOWED, POL_ACT_CLOSE, POL_REC_NONE},
        {POL_EV_GATEWAY_ERASE, 0, 0, CONV(POL_CONV_NONE), ANY, ANY, POL_R_GUEST_NO_CONVERSATION, 0,
         POL_REC_NONE},
        {POL_EV_GATEWAY_ERASE, 0, 0, ANY, ANY, ANY, POL_R_GUEST_ERASE_ALLOWED, POL_ACT_ERASE, POL_REC_NONE},
        /* A guest asking for help is always heard while they have a
         * conversation, whatever its state (closed included: they may be in
         * danger after staff closed it); recorded by conv_help. */
        {POL_EV_GATEWAY_HELP, 0, 0, CONV(POL_CONV_NONE), ANY, ANY, POL_R_GUEST_NO_CONVERSATION, 0,
         POL_REC_NONE},
        {POL_EV_GATEWAY_HELP, 0, 0, ANY, ANY, ANY, POL_R_GUEST_HELP_ALLOWED, POL_ACT_HELP, POL_REC_NONE},
};

#define NRULES         (sizeof(rules) / sizeof(rules[0]))
#define NGATEWAY_RULES (sizeof(gateway_rules) / sizeof(gateway_rules[0]))

static int is_gateway(enum pol_event e)
{
	return e == POL_EV_GATEWAY_SEND || e == POL_EV_GATEWAY_REDEEM || e == POL_EV_GATEWAY_RESUME ||
	       e == POL_EV_GATEWAY_UPLOAD || e == POL_EV_GATEWAY_LEAVE || e == POL_EV_GATEWAY_ERASE ||
	       e == POL_EV_GATEWAY_HELP || e == POL_EV_GATEWAY_CALL;
}

static int flag_ok(int want, int fact)
{
	return want == 0 || (want == 1 && fact) || (want == -1 && !fact);
}

static void decide_gateway(const struct pol_facts *f, struct pol_decision *out)
{
	for (size_t i = 0; i < NGATEWAY_RULES; i++) {
		const struct gateway_rule *r = &gateway_rules[i];
		if (r->event != f->event || !flag_ok(r->session, f->session) ||
		    !flag_ok(r->entry_open, f->entry_open) || !has(r->conv, f->conv) ||
		    !has(r->target, f->target) || !has(r->room, f->room))
			continue;
		out->reason = r->reason;
		out->rule = (int)(NRULES + i);
		out->record = r->record;
		if (r->action)
			out->actions[out->nactions++].kind = r->action;
		return;
	}
}

void pol_decide(const struct pol_facts *f, struct pol_decision *out)
{
	memset(out, 0, sizeof(*out));
	out->reason = POL_R_NO_RULE;
	out->rule = -1;
	if (is_gateway(f->event)) {
		decide_gateway(f, out);
		return;
	}
	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		const struct rule *r = &rules[i];
		if (r->event != f->event || !has(r->sender, f->sender) || !has(r->target, f->target) ||
		    !has(r->room, f->room) || !has(r->command, f->command))
			continue;
		if ((r->bot_joined == 1 && !f->bot_joined) || (r->bot_joined == -1 && f->bot_joined))
			continue;
		if ((r->serves == YES && !f->sender_serves) || (r->serves == NO && f->sender_serves) ||
		    (r->belongs == YES && !f->target_belongs) || (r->belongs == NO && f->target_belongs))
			continue;
		out->reason = r->reason;
		out->rule = (int)i;
		out->record = r->record;
		out->alert = r->alert;
		if (r->action) {
			struct pol_action *a = &out->actions[out->nactions++];
			a->kind = r->action;
			a->refusal = r->refusal;
			a->note = r->note;
			a->reply = r->action == POL_ACT_REPLY || r->action == POL_ACT_GROUP ||
			                           r->action == POL_ACT_CONVERSATION
			                   ? f->command
			                   : POL_CMD_NONE;
		}
		return;
	}
}

unsigned pol_rule_count(void)
{
	return NRULES + NGATEWAY_RULES;
}

enum pol_reason pol_rule_reason(unsigned i)
{
	if (i < NRULES)
		return rules[i].reason;
	return i < pol_rule_count() ? gateway_rules[i - NRULES].reason : POL_R_NO_RULE;
}

static const char *const reason_names[POL_R_COUNT] = {
        [POL_R_NO_RULE] = "no_rule",
        [POL_R_BOT_INVITE_ACCEPTED] = "bot_invite_accepted",
        [POL_R_BOT_INVITE_REFUSED] = "bot_invite_refused",
        [POL_R_GUEST_INVITE_ACCEPTED] = "guest_invite_accepted",
        [POL_R_GUEST_INVITE_UNMANAGED] = "guest_invite_unmanaged",
        [POL_R_GUEST_CONTACT_BLOCKED] = "guest_contact_blocked",
        [POL_R_GUEST_LEFT_UNMANAGED] = "guest_left_unmanaged",
        [POL_R_COMMAND_ANSWERED] = "command_answered",
        [POL_R_COMMAND_REFUSED] = "command_refused",
        [POL_R_COMMAND_IGNORED] = "command_ignored",
        [POL_R_AUDIT_QUERY_ANSWERED] = "audit_query_answered",
        [POL_R_AUDIT_QUERY_IGNORED] = "audit_query_ignored",
        [POL_R_AUDIT_EXPORT_QUEUED] = "audit_export_queued",
        [POL_R_IDENTITY_REVEALED] = "identity_revealed",
        [POL_R_REVEAL_ROOM_NOT_PRIVATE] = "reveal_room_not_private",
        [POL_R_GROUP_COMMAND] = "group_command",
        [POL_R_GROUP_COMMAND_WRONG_ROOM] = "group_command_wrong_room",
        [POL_R_STRANGER_REMOVED] = "stranger_removed",
        [POL_R_STRANGER_INVITE_WITHDRAWN] = "stranger_invite_withdrawn",
        [POL_R_STATE_REVERTED] = "state_reverted",
        [POL_R_CONVERSATION_COMMAND] = "conversation_command",
        [POL_R_GUEST_SEND_ALLOWED] = "guest_send_allowed",
        [POL_R_GUEST_SEND_REFUSED] = "guest_send_refused",
        [POL_R_BOT_INVITE_STAFF_ROOM] = "bot_invite_staff_room",
        [POL_R_INVITER_NOT_STAFF] = "inviter_not_staff",
        [POL_R_GUEST_REDEEM_ALLOWED] = "guest_redeem_allowed",
        [POL_R_GUEST_REDEEM_REFUSED] = "guest_redeem_refused",
        [POL_R_GUEST_RESUME_ALLOWED] = "guest_resume_allowed",
        [POL_R_GUEST_RESUME_REFUSED] = "guest_resume_refused",
        [POL_R_GUEST_NO_SESSION] = "guest_no_session",
        [POL_R_GUEST_NOT_READY] = "guest_not_ready",
        [POL_R_GUEST_CONV_CLOSED] = "guest_conversation_closed",
        [POL_R_GUEST_NO_CONVERSATION] = "guest_no_conversation",
        [POL_R_GUEST_LEAVE_ALLOWED] = "guest_leave_allowed",
        [POL_R_GUEST_LEAVE_CLOSED] = "guest_leave_closed",
        [POL_R_GUEST_ERASE_ALLOWED] = "guest_erase_allowed",
        [POL_R_BOT_INVITE_GUEST_ROOM] = "bot_invite_guest_room",
        [POL_R_ENCRYPTION_ENABLED] = "encryption_enabled",
        [POL_R_STATE_CANNOT_REVERT] = "state_cannot_revert",
        [POL_R_GUEST_NOT_OWN_CONV] = "guest_not_own_conversation",
        [POL_R_GROUP_ADD_NOT_SERVICE] = "group_add_not_service_staff",
        [POL_R_GROUP_ADD_OTHER_SERVICE] = "group_add_other_service",
        [POL_R_GROUP_ADD_ACROSS] = "group_add_across_services",
        [POL_R_STAFF_STATUS_ENDED] = "staff_status_ended",
        [POL_R_CONCERN_RAISED] = "concern_raised",
        [POL_R_CONCERN_WRONG_ROOM] = "concern_wrong_room",
        [POL_R_CONCERN_KEYWORD] = "concern_keyword",
        [POL_R_CASE_COMMAND] = "case_command",
        [POL_R_CASE_REFUSED] = "case_refused",
        [POL_R_GUEST_HELP_ALLOWED] = "guest_help_allowed",
        [POL_R_GUEST_CALL_ALLOWED] = "guest_call_allowed",
        [POL_R_GUEST_CALL_NOT_HERE] = "guest_call_not_here",
};

static const char *const role_names[POL_ROLE_COUNT] = {
        [POL_ROLE_NONE] = "none",     [POL_ROLE_BOT] = "bot",   [POL_ROLE_GUEST] = "guest",
        [POL_ROLE_STAFF] = "staff",   [POL_ROLE_LEAD] = "lead", [POL_ROLE_LOCAL] = "local",
        [POL_ROLE_REMOTE] = "remote",
};

static const char *const event_names[POL_EV_COUNT] = {
        [POL_EV_OTHER] = "other",
        [POL_EV_INVITE] = "invite",
        [POL_EV_JOIN] = "join",
        [POL_EV_LEAVE] = "leave",
        [POL_EV_MESSAGE] = "message",
        [POL_EV_COMMAND] = "command",
        [POL_EV_AUDIT_COMMAND] = "audit_command",
        [POL_EV_AUDIT_EXPORT] = "audit_export",
        [POL_EV_AUDIT_REVEAL] = "audit_reveal",
        [POL_EV_STATE_EXPOSED] = "state_exposed",
        [POL_EV_GATEWAY_SEND] = "gateway_send",
        [POL_EV_GATEWAY_REDEEM] = "gateway_redeem",
        [POL_EV_GATEWAY_RESUME] = "gateway_resume",
        [POL_EV_GATEWAY_UPLOAD] = "gateway_upload",
        [POL_EV_GATEWAY_LEAVE] = "gateway_leave",
        [POL_EV_GATEWAY_ERASE] = "gateway_erase",
        [POL_EV_ENCRYPTION] = "encryption",
        [POL_EV_STATE_STUCK] = "state_stuck",
        [POL_EV_STAFF_ENDED] = "staff_ended",
        [POL_EV_CONCERN_REACTION] = "concern_reaction",
        [POL_EV_CONCERN_KEYWORD] = "concern_keyword",
        [POL_EV_CASE_COMMAND] = "case_command",
        [POL_EV_GATEWAY_HELP] = "gateway_help",
        [POL_EV_GATEWAY_CALL] = "gateway_call",
};

static const char *const conv_names[POL_CONV_COUNT] = {
        [POL_CONV_NONE] = "none",
        [POL_CONV_WAITING] = "waiting",
        [POL_CONV_OPEN] = "open",
        [POL_CONV_CLOSED] = "closed",
};

static const char *const room_names[POL_ROOM_COUNT] = {
        [POL_ROOM_UNMANAGED] = "unmanaged", [POL_ROOM_CONVERSATION] = "conversation",
        [POL_ROOM_GROUP] = "group",         [POL_ROOM_SAFEGUARDING] = "safeguarding",
        [POL_ROOM_STAFF] = "staff",
};

static const char *const command_names[POL_CMD_COUNT] = {
        [POL_CMD_NONE] = "none",
        [POL_CMD_HELP] = "help",
        [POL_CMD_PING] = "ping",
        [POL_CMD_VERSION] = "version",
        [POL_CMD_UNKNOWN] = "unknown",
        [POL_CMD_GROUP_CREATE] = "group_create",
        [POL_CMD_GROUP_ADD] = "group_add",
        [POL_CMD_GROUP_REMOVE] = "group_remove",
        [POL_CMD_GROUP_LIST] = "group_list",
        [POL_CMD_INVITE] = "invite",
        [POL_CMD_CLOSE] = "close",
        [POL_CMD_HANDOVER] = "handover",
        [POL_CMD_NOTE] = "note",
        [POL_CMD_CONCERN] = "concern",
};

static const char *const action_names[POL_ACT_COUNT] = {
        [POL_ACT_JOIN] = "join",
        [POL_ACT_LEAVE] = "leave",
        [POL_ACT_REPLY] = "reply",
        [POL_ACT_AUDIT_ANSWER] = "audit_answer",
        [POL_ACT_AUDIT_EXPORT] = "audit_export",
        [POL_ACT_GROUP] = "group",
        [POL_ACT_KICK] = "kick",
        [POL_ACT_REVERT_STATE] = "revert_state",
        [POL_ACT_CONVERSATION] = "conversation",
        [POL_ACT_SEND] = "send",
        [POL_ACT_OPEN] = "open",
        [POL_ACT_SESSION] = "session",
        [POL_ACT_CLOSE] = "close",
        [POL_ACT_END_SESSIONS] = "end_sessions",
        [POL_ACT_ERASE] = "erase",
        [POL_ACT_CONCERN] = "concern",
        [POL_ACT_CASE] = "case",
        [POL_ACT_HELP] = "help",
        [POL_ACT_CALL] = "call",
};

static const char *const record_names[POL_REC_COUNT] = {
        [POL_REC_NONE] = "none",
        [POL_REC_CONTACT_BLOCKED] = "contact_blocked",
        [POL_REC_MEMBERSHIP_ENFORCED] = "membership_enforced",
        [POL_REC_AUDIT_VIEWED] = "audit_viewed",
        [POL_REC_AUDIT_EXPORTED] = "audit_exported",
        [POL_REC_IDENTITY_REVEALED] = "identity_revealed",
        [POL_REC_STATE_REVERTED] = "state_reverted",
        [POL_REC_ENCRYPTION_ENABLED] = "encryption_enabled",
        [POL_REC_ENFORCEMENT_FAILED] = "enforcement_failed",
        [POL_REC_ADDED_ACROSS] = "added_across_services",
};

static const char *const note_names[POL_NOTE_COUNT] = {
        [POL_NOTE_NONE] = "none",
        [POL_NOTE_ADD_GUEST_PROPERLY] = "add_guest_properly",
        [POL_NOTE_USE_IN_GROUP_ROOM] = "use_in_group_room",
        [POL_NOTE_NOT_IN_MANAGED] = "not_in_managed",
        [POL_NOTE_ONLY_STAFF_INVITE] = "only_staff_invite",
        [POL_NOTE_NOT_SERVICE_STAFF] = "not_service_staff",
        [POL_NOTE_OTHER_SERVICE] = "other_service",
        [POL_NOTE_NO_LONGER_STAFF] = "no_longer_staff",
        [POL_NOTE_CASE_LEADS_ONLY] = "case_leads_only",
        [POL_NOTE_CONCERN_WHERE] = "concern_where",
};

#define NAME_OF(table, i) ((unsigned)(i) < sizeof(table) / sizeof(table[0]) ? table[i] : NULL)

const char *pol_reason_name(enum pol_reason r)
{
	return NAME_OF(reason_names, r);
}

const char *pol_role_name(enum pol_role r)
{
	return NAME_OF(role_names, r);
}

const char *pol_event_name(enum pol_event e)
{
	return NAME_OF(event_names, e);
}

const char *pol_room_name(enum pol_room r)
{
	return NAME_OF(room_names, r);
}

const char *pol_command_name(enum pol_command c)
{
	return NAME_OF(command_names, c);
}

const char *pol_action_name(enum pol_action_kind a)
{
	return NAME_OF(action_names, a);
}

const char *pol_record_name(enum pol_record r)
{
	return NAME_OF(record_names, r);
}

const char *pol_note_name(enum pol_note n)
{
	return NAME_OF(note_names, n);
}

static int lookup(const char *const *table, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++) {
		if (table[i] && strcmp(table[i], s) == 0)
			return (int)i;
	}
	return -1;
}

int pol_role_from_name(const char *s)
{
	return lookup(role_names, POL_ROLE_COUNT, s);
}

int pol_event_from_name(const char *s)
{
	return lookup(event_names, POL_EV_COUNT, s);
}

int pol_room_from_name(const char *s)
{
	return lookup(room_names, POL_ROOM_COUNT, s);
}

int pol_command_from_name(const char *s)
{
	return lookup(command_names, POL_CMD_COUNT, s);
}

int pol_conv_from_name(const char *s)
{
	return lookup(conv_names, POL_CONV_COUNT, s);
}

const char *pol_conv_name(enum pol_conv c)
{
	return NAME_OF(conv_names, c);
}
