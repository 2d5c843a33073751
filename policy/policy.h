/*
 * policy.h - Threshold's decisions, pure: borrowed facts in, a decision out
 * (a reason code, the actions to take, the audit record to write and whether
 * to alert the safeguarding room).  No I/O, no clock, no globals, no
 * allocation: the caller owns every byte.  The rules are one table in
 * policy.c, read top to bottom; the first row that matches decides.
 * docs/policy.md says each rule in plain words.
 */
#ifndef THRESHOLD_POLICY_H
#define THRESHOLD_POLICY_H

/* Who someone is to Threshold. */
enum pol_role {
	POL_ROLE_NONE = 0, /* no such party (e.g. an event without a target) */
	POL_ROLE_BOT,      /* Threshold's own bot user */
	POL_ROLE_GUEST,    /* a user in Threshold's guest namespace */
	POL_ROLE_STAFF,    /* configured staff, or joined to a configured staff room */
	POL_ROLE_LEAD,     /* a safeguarding lead (staff too) */
	POL_ROLE_LOCAL,    /* any other user of the homeserver's own server: a stranger */
	POL_ROLE_REMOTE,   /* a user of another server (federation): a stranger */
	POL_ROLE_COUNT
};

/* What kind of event the facts describe. */
enum pol_event {
	POL_EV_OTHER = 0,     /* anything policy has no rule for */
	POL_EV_INVITE,        /* m.room.member, membership invite */
	POL_EV_JOIN,          /* m.room.member, membership join */
	POL_EV_LEAVE,         /* m.room.member, membership leave or ban */
	POL_EV_MESSAGE,       /* m.room.message that is not a command */
	POL_EV_COMMAND,       /* m.room.message whose body is "!threshold ..." */
	POL_EV_AUDIT_COMMAND, /* m.room.message whose body is "!audit ..." (a lead's question) */
	POL_EV_AUDIT_EXPORT,  /* "!audit export [--since ...]": the log as a signed file */
	POL_EV_AUDIT_REVEAL,  /* "!audit reveal WHO REASON": break glass on a guest's sealed detail */
	POL_EV_STATE_EXPOSED, /* a state event whose content exposes the room, judged against the
	                       * room's template by pol_exposure_judge (policy/exposure.h) */
	POL_EV_GATEWAY_SEND,  /* a guest asks the gateway to send into a room (target: see pol_facts) */
	/* The other gateway actions (facts: conv, session, entry_open in pol_facts). */
	POL_EV_GATEWAY_REDEEM, /* someone opens an invitation or a service's public entry */
	POL_EV_GATEWAY_RESUME, /* someone gives a resume code for a new session */
	POL_EV_GATEWAY_UPLOAD, /* a guest sends a picture or file (as send) */
	POL_EV_GATEWAY_LEAVE,  /* a guest ends their conversation */
	POL_EV_GATEWAY_ERASE,  /* a guest asks for their data to be deleted */
	POL_EV_ENCRYPTION,     /* m.room.encryption: the room encrypted, which nothing can undo */
	POL_EV_STATE_STUCK,    /* a setting exposing the room that Threshold cannot put back (someone
	                        * holds the bot's power, which Matrix does not let it lower) */
	POL_EV_STAFF_ENDED,    /* the target stopped being staff (left a staff room of a service, or was
	                        * dropped from roles): asked once per managed room they are in */

	/* Safeguarding (appservice/cases.c, bridge/conv.c conv_help): */
	POL_EV_CONCERN_REACTION, /* staff reacted to a message with safeguarding.concern_reaction */
	POL_EV_CONCERN_KEYWORD,  /* a guest's message matched its service's concern keywords */
	POL_EV_CASE_COMMAND,     /* m.room.message whose body is "!case ..." (a lead works a case) */
	POL_EV_GATEWAY_HELP,     /* a guest asks for help now (the page's one-tap button) */
	POL_EV_GATEWAY_CALL,     /* a guest sends a call signal (m.call.*) or asks for a call */
	POL_EV_COUNT
};

/* What Threshold knows the event's room to be. */
enum pol_room {
	POL_ROOM_UNMANAGED = 0, /* a room Threshold does not manage */
	POL_ROOM_CONVERSATION,  /* a guest's conversation with a service: one guest, that service's staff */
	POL_ROOM_GROUP,         /* a service's moderated group: guests added by its staff */
	POL_ROOM_SAFEGUARDING,  /* the configured safeguarding room (not managed: no guest belongs there) */
	POL_ROOM_STAFF,         /* a configured staff room (not managed either); its members are staff */
	POL_ROOM_COUNT
};

/* The bot commands policy knows.  Parsing the text is the caller's job. */
enum pol_command {
	POL_CMD_NONE = 0,
	POL_CMD_HELP,
	POL_CMD_PING,
	POL_CMD_VERSION,
	POL_CMD_UNKNOWN,
	POL_CMD_GROUP_CREATE, /* "!threshold group create NAME": a new moderated group room */
	POL_CMD_GROUP_ADD,    /* "!threshold group add PSEUDONYM": a guest into this group room */
	POL_CMD_GROUP_REMOVE, /* "!threshold group remove PSEUDONYM" */
	POL_CMD_GROUP_LIST,   /* "!threshold group list": the guests of this room */
	POL_CMD_INVITE,       /* "!threshold invite [--uses N] [--expires 7d]": a guest invitation link */
	POL_CMD_CLOSE,        /* "!threshold close": end this conversation */
	POL_CMD_HANDOVER,     /* "!threshold handover @user": hand this conversation to a colleague */
	POL_CMD_NOTE,         /* "!threshold note TEXT": a private note the guest never sees */
	POL_CMD_CONCERN,      /* "!threshold concern [low|medium|high] TEXT": a safeguarding concern */
	POL_CMD_COUNT
};

/* A guest's conversation, as a gateway action finds it. */
enum pol_conv {
	POL_CONV_NONE = 0, /* none (never made, expired or erased) */
	POL_CONV_WAITING,  /* its room is still being made */
	POL_CONV_OPEN,
	POL_CONV_CLOSED, /* staff closed it or the guest left */
	POL_CONV_COUNT
};

struct pol_facts {
	enum pol_event event;
	enum pol_role sender; /* role of the event's sender */
	enum pol_role target; /* role of the state_key of a membership event; for
	                         POL_EV_GATEWAY_SEND: POL_ROLE_GUEST when the guest
	                         is a member of the room, else POL_ROLE_NONE */
	enum pol_room room;   /* the room the event is in */
	enum pol_command command;
	int bot_joined; /* 1 if the bot is joined to the event's room */
	/* Gateway actions only (POL_EV_GATEWAY_*): */
	enum pol_conv conv; /* the guest's conversation */
	int session;        /* the request carries a live session of the guest */
	int entry_open;     /* redeem: the invitation is good, or the service's public
	                       entry is open; resume: the code is known */
	/* 1 if the sender is staff of the room's service: for a group command, joined to
	 * the staff room of the group's service (a group of no service: any staff). */
	int sender_serves;
	/* 1 if the target belongs in the room: a guest in a conversation room, when it is
	 * their own; a guest named by "group add", when of the group's service (or of
	 * none, in a group of none); for POL_EV_STAFF_ENDED, when the target is still
	 * staff of the room's service; for POL_EV_AUDIT_REVEAL, when the room is known
	 * to be private (invite-only, unfederated, history not shared or world-readable). */
	int target_belongs;
};

enum pol_action_kind {
	POL_ACT_JOIN = 1,     /* the target (bot or guest) joins the room */
	POL_ACT_LEAVE,        /* the target leaves the room / rejects the invite */
	POL_ACT_REPLY,        /* the bot answers the command with a notice */
	POL_ACT_AUDIT_ANSWER, /* the bot answers a lead's audit question from the log */
	POL_ACT_AUDIT_EXPORT, /* the bot sends the room an export of the log (outbox: audit_export) */
	POL_ACT_GROUP,        /* the bot carries out a staff group command */
	POL_ACT_KICK,         /* the bot removes the target (or withdraws their invite) */
	POL_ACT_REVERT_STATE, /* the bot puts the room's setting back to its safe value */
	POL_ACT_CONVERSATION, /* the bot carries out a staff conversation command (bridge/conv.c) */
	POL_ACT_SEND,         /* Threshold sends the guest's message as the guest */
	POL_ACT_OPEN,         /* gateway: a guest, a session and a conversation are made */
	POL_ACT_SESSION,      /* gateway: a new session for the guest */
	POL_ACT_CLOSE,        /* gateway: the guest leaves, staff are told, sessions end */
	POL_ACT_END_SESSIONS, /* gateway: the guest's sessions end (nothing else to close) */
	POL_ACT_ERASE,        /* gateway: the guest's data is erased (conv_erase) */
	POL_ACT_CONCERN,      /* a concern about the room's guest opens or joins their case (cases.c) */
	POL_ACT_CASE,         /* the bot carries out a lead's "!case" command (cases.c) */
	POL_ACT_HELP,         /* gateway: staff and the duty leads are told at once (conv_help) */
	POL_ACT_CALL,         /* gateway: Threshold sends the guest's call signal as the guest */
	POL_ACT_COUNT
};

/* Text an action carries to a person (rendered by the caller). */
enum pol_note {
	POL_NOTE_NONE = 0,
	POL_NOTE_ADD_GUEST_PROPERLY, /* how staff add a guest to a conversation */
	POL_NOTE_USE_IN_GROUP_ROOM,  /* a group command that only works in a group room */
	POL_NOTE_NOT_IN_MANAGED,     /* why someone was removed from a managed room */
	POL_NOTE_ONLY_STAFF_INVITE,  /* why an invite by someone not staff was withdrawn */
	POL_NOTE_NOT_SERVICE_STAFF,  /* group add by staff who are not in the group's service's staff room */
	POL_NOTE_OTHER_SERVICE,      /* group add of a guest of another service */
	POL_NOTE_NO_LONGER_STAFF,    /* the neutral reason given to someone who is no longer staff */
	POL_NOTE_CASE_LEADS_ONLY,    /* cases are worked by safeguarding leads in the safeguarding room */
	POL_NOTE_CONCERN_WHERE,      /* a concern is raised in the guest's conversation room */
	POL_NOTE_COUNT
};

/* Reason codes: stable names, written into logs and audit records. */
enum pol_reason {
	POL_R_NO_RULE = 0,               /* nothing to do */
	POL_R_BOT_INVITE_ACCEPTED,       /* staff invited the bot */
	POL_R_BOT_INVITE_REFUSED,        /* someone else invited the bot */
	POL_R_GUEST_INVITE_ACCEPTED,     /* staff (or the bot) added a guest to a managed room */
	POL_R_GUEST_INVITE_UNMANAGED,    /* staff invited a guest into a room Threshold does not manage */
	POL_R_GUEST_CONTACT_BLOCKED,     /* a stranger or another guest tried to reach a guest */
	POL_R_GUEST_LEFT_UNMANAGED,      /* a guest was found joined to an unmanaged room */
	POL_R_COMMAND_ANSWERED,          /* staff asked the bot something */
	POL_R_COMMAND_REFUSED,           /* someone who may not ask the bot did */
	POL_R_COMMAND_IGNORED,           /* a command where the bot is not joined */
	POL_R_AUDIT_QUERY_ANSWERED,      /* a lead asked about the audit log in the safeguarding room */
	POL_R_AUDIT_QUERY_IGNORED,       /* anyone else, or anywhere else: no answer at all */
	POL_R_AUDIT_EXPORT_QUEUED,       /* a lead asked for an export in the safeguarding room */
	POL_R_IDENTITY_REVEALED,         /* a lead opened a guest's sealed detail, with a reason */
	POL_R_REVEAL_ROOM_NOT_PRIVATE,   /* ...refused: the safeguarding room is not known to be
	                                    invite-only, unfederated, history for members only */
	POL_R_GROUP_COMMAND,             /* staff manage a group room through the bot */
	POL_R_GROUP_COMMAND_WRONG_ROOM,  /* a group command outside a group room */
	POL_R_STRANGER_REMOVED,          /* a stranger joined a managed room */
	POL_R_STRANGER_INVITE_WITHDRAWN, /* a stranger was invited into a managed room */
	POL_R_STATE_REVERTED,            /* a managed room's setting would have exposed its members */
	POL_R_CONVERSATION_COMMAND,      /* staff manage a guest conversation or invitation */
	POL_R_GUEST_SEND_ALLOWED,        /* a guest writes into a managed room they belong to */
	POL_R_GUEST_SEND_REFUSED,        /* a guest tried to write anywhere else */
	POL_R_BOT_INVITE_STAFF_ROOM,     /* anyone in a configured staff room invited the bot there */
	POL_R_INVITER_NOT_STAFF,         /* a guest or stranger in a managed room invited staff */
	POL_R_GUEST_REDEEM_ALLOWED,      /* a good invitation or an open public entry */
	POL_R_GUEST_REDEEM_REFUSED,      /* an invitation unknown, used up or expired; entry closed */
	POL_R_GUEST_RESUME_ALLOWED,      /* a known resume code of a live conversation */
	POL_R_GUEST_RESUME_REFUSED,      /* a wrong code, or the conversation is gone */
	POL_R_GUEST_NO_SESSION,          /* a gateway action without a live session */
	POL_R_GUEST_NOT_READY,           /* the guest's room is still being made */
	POL_R_GUEST_CONV_CLOSED,         /* the conversation is closed: nothing more goes in */
	POL_R_GUEST_NO_CONVERSATION,     /* the guest has no conversation to act on */
	POL_R_GUEST_LEAVE_ALLOWED,       /* a guest leaves their conversation */
	POL_R_GUEST_LEAVE_CLOSED,        /* a guest leaves one already closed: sessions end */
	POL_R_GUEST_ERASE_ALLOWED,       /* a guest may always have their data erased */
	POL_R_BOT_INVITE_GUEST_ROOM,     /* a guest (that is, Threshold) invited the bot into its room */
	POL_R_ENCRYPTION_ENABLED,        /* a managed room was encrypted: cannot be undone, alert loudly */
	POL_R_STATE_CANNOT_REVERT,       /* a setting exposes a managed room and cannot be put back */
	POL_R_GUEST_NOT_OWN_CONV,        /* a guest invited or joined to another guest's conversation */
	POL_R_GROUP_ADD_NOT_SERVICE,     /* group add by staff outside the group's service */
	POL_R_GROUP_ADD_OTHER_SERVICE,   /* group add of another service's guest */
	POL_R_GROUP_ADD_ACROSS,          /* a lead added a guest across services (recorded) */
	POL_R_STAFF_STATUS_ENDED,        /* someone no longer staff of a service left its rooms */
	POL_R_CONCERN_RAISED,            /* staff raised a concern about a guest in their conversation */
	POL_R_CONCERN_WRONG_ROOM,        /* ...anywhere else: told where it works */
	POL_R_CONCERN_KEYWORD,           /* a guest's message matched a concern keyword list */
	POL_R_CASE_COMMAND,              /* a lead works a case in the safeguarding room */
	POL_R_CASE_REFUSED,              /* staff not a lead, or outside the safeguarding room */
	POL_R_GUEST_HELP_ALLOWED,        /* a guest with a conversation asks for help: always heard */
	POL_R_GUEST_CALL_ALLOWED,        /* a guest calls (or answers) staff in their open conversation */
	POL_R_GUEST_CALL_NOT_HERE,       /* a call anywhere but the guest's own conversation room */
	POL_R_COUNT
};

/* What the decision asks to be written to the safeguarding audit log. */
enum pol_record {
	POL_REC_NONE = 0,
	POL_REC_CONTACT_BLOCKED,     /* someone tried to reach a user Threshold protects */
	POL_REC_MEMBERSHIP_ENFORCED, /* Threshold undid a membership */
	POL_REC_AUDIT_VIEWED,        /* someone read the audit log */
	POL_REC_AUDIT_EXPORTED,      /* someone took a copy of the audit log */
	POL_REC_IDENTITY_REVEALED,   /* someone opened sealed personal detail */
	POL_REC_STATE_REVERTED,      /* Threshold undid a change to a room's settings */
	POL_REC_ENCRYPTION_ENABLED,  /* a managed room was encrypted (nothing undone: it cannot be) */
	POL_REC_ENFORCEMENT_FAILED,  /* Threshold could not carry out what policy asks */
	POL_REC_ADDED_ACROSS,        /* a lead added a guest to another service's group */
	POL_REC_COUNT
};

#define POL_MAX_ACTIONS 4

struct pol_action {
	enum pol_action_kind kind;
	enum pol_command reply; /* for POL_ACT_REPLY: what to answer */
	int refusal;            /* for POL_ACT_REPLY: answer with a refusal */
	enum pol_note note;     /* for POL_ACT_LEAVE, _KICK, _REPLY: text given with it */
};

struct pol_decision {
	enum pol_reason reason;
	enum pol_record record; /* audit record to write, or POL_REC_NONE */
	int alert;              /* 1: tell the safeguarding room (if configured) */
	int rule;               /* index of the rule that decided (pol_rule_reason), or -1: none */
	unsigned nactions;
	struct pol_action actions[POL_MAX_ACTIONS];
};

/**
 * Decide what Threshold does about one event.
 * @param facts  borrowed
 * @param out    always written
 */
void pol_decide(const struct pol_facts *facts, struct pol_decision *out);

/** Stable names, for logs, audit records and test cases; NULL if out of range. */
const char *pol_reason_name(enum pol_reason r);
const char *pol_role_name(enum pol_role r);
const char *pol_event_name(enum pol_event e);
const char *pol_room_name(enum pol_room r);
const char *pol_command_name(enum pol_command c);
const char *pol_action_name(enum pol_action_kind a);
const char *pol_record_name(enum pol_record r);
const char *pol_note_name(enum pol_note n);

/** Reverse lookups for data files; return -1 when the name is unknown. */
int pol_role_from_name(const char *s);
int pol_event_from_name(const char *s);
int pol_room_from_name(const char *s);
int pol_command_from_name(const char *s);
int pol_conv_from_name(const char *s);
const char *pol_conv_name(enum pol_conv c);

/** Number of rules in the table, and one rule's reason (for coverage checks). */
unsigned pol_rule_count(void);
enum pol_reason pol_rule_reason(unsigned i);

#endif
