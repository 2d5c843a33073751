/*
 * audit_query.h - safeguarding leads' questions to the bot about the audit
 * log, asked in the safeguarding room:
 *
 *   !audit recent        the last AUDIT_QUERY_RECENT_N records
 *   !audit guest <who>   one guest's records (a pseudonym or a guest user id),
 *                        the last AUDIT_QUERY_GUEST_N of them
 *   !audit export [--since 7d|24h|YYYY-MM-DD[THH:MM:SSZ]]
 *                        a signed JSON Lines export of the log, sent to the
 *                        room as a file by the outbox ("audit_export" op)
 *   !audit reveal <who> <reason>
 *                        break glass: open the sealed detail held about a
 *                        guest (e.g. an emergency contact taken at
 *                        onboarding); the reason (at least
 *                        AUDIT_QUERY_MIN_REASON characters) is recorded
 *
 * This module parses the text and writes the plain-text answer from the log
 * in the caller's transaction.  Whether anyone gets an answer is policy's
 * decision (POL_EV_AUDIT_COMMAND, POL_EV_AUDIT_EXPORT, POL_EV_AUDIT_REVEAL),
 * and the record of the question (audit_viewed, audit_exported,
 * identity_revealed) is written by events.c; nothing here writes.
 *
 * The answers to recent and guest name ids only (sequence number, time,
 * kind, actor, subject, reason): never details, and never sealed personal
 * detail.  Only reveal opens sealed detail, and only after policy let it.
 */
#ifndef THRESHOLD_AUDIT_QUERY_H
#define THRESHOLD_AUDIT_QUERY_H

#include <stddef.h>

#include "audit.h"
#include "guests.h"
#include "store.h"

#define AUDIT_QUERY_PREFIX   "!audit"
#define AUDIT_QUERY_RECENT_N 10
#define AUDIT_QUERY_GUEST_N  20
#define AUDIT_QUERY_MAX_ARG  GUESTS_MAX_USER_ID /* longer names match no guest */
/* How every answer to "!audit reveal" begins: an erasure finds the reveals
 * of a guest's sealed detail in the safeguarding room by it (and by the
 * guest's id in parentheses) and redacts them (outbox.h "redact_reveals"). */
#define AUDIT_QUERY_REVEAL_MARK "RECORDED: this reveal is written to the audit log"
#define AUDIT_QUERY_MAX_TEXT    16000 /* bytes of an answer: a notice well under 64 KiB */
#define AUDIT_QUERY_MIN_REASON  10    /* characters of a reveal's reason, at least */
#define AUDIT_QUERY_MAX_REASON  500   /* bytes of a reveal's reason, at most */

/* What was asked.  The names (audit_query_name) go into audit_viewed records. */
enum audit_query_kind {
	AUDIT_QUERY_USAGE = 0, /* "usage": "!audit" alone, or a word the bot does not know */
	AUDIT_QUERY_RECENT,    /* "recent" */
	AUDIT_QUERY_GUEST,     /* "guest" */
	AUDIT_QUERY_EXPORT,    /* "export" */
	AUDIT_QUERY_REVEAL,    /* "reveal" */
	AUDIT_QUERY_COUNT
};

/** A parsed question.  Plain data. */
struct audit_query {
	enum audit_query_kind kind;
	char arg[AUDIT_QUERY_MAX_ARG + 1]; /* GUEST, REVEAL: who, as typed (trimmed); else "" */
	int arg_too_long;                  /* who was longer than AUDIT_QUERY_MAX_ARG (arg is "") */
	/* USAGE: the command whose usage to show (AUDIT_QUERY_USAGE: all of them) */
	enum audit_query_kind usage_of;
	/* EXPORT: --since, either an absolute time (since_ms) or an age
	 * (since_ago_ms, resolved by audit_query_since_ms); both 0: everything */
	uint64_t since_ms;
	uint64_t since_ago_ms;
	char reason[AUDIT_QUERY_MAX_REASON + 1]; /* REVEAL: why, as typed (trimmed) */
};

/**
 * Is @p body an audit question ("!audit" followed by nothing or a space)?
 * @param body  borrowed; NULL is not a question
 * @param out   written when the result is 1
 * @return 1 (a question, even one the bot does not understand) or 0.
 */
int audit_query_parse(const char *body, struct audit_query *out);

/** @return the stable name of @p kind, or NULL if out of range. */
const char *audit_query_name(enum audit_query_kind kind);

/** EXPORT: the earliest time (ms) to export from, given the time now; 0: all. */
uint64_t audit_query_since_ms(const struct audit_query *q, uint64_t now_ms);

/** An answer.  Free with audit_query_answer_free(). */
struct audit_answer {
	char *text; /* new string, at most AUDIT_QUERY_MAX_TEXT bytes; NULL for EXPORT */
	char subject[GUESTS_MAX_USER_ID + 1]; /* the guest asked about, if found; else "" */
};

/**
 * Answer @p q from the audit log and guest records as @p t sees them.
 * Checkpoint records are left out: they are the chain's machinery and say
 * nothing about anyone.  EXPORT is answered by the outbox, not here (the
 * text is empty).
 * @param au   the audit handle, to open sealed detail for REVEAL (borrowed;
 *             NULL: reveal says nothing can be opened)
 * @param t    any transaction (borrowed)
 * @param q    borrowed
 * @param out  filled on success only
 * @return TH_OK, or TH_ESTORE (a damaged record or guest record).
 */
int audit_query_answer(audit *au, store_txn *t, const struct audit_query *q, struct audit_answer *out);

/** Free the text of @p a (not @p a itself).  NULL is a no-op. */
void audit_query_answer_free(struct audit_answer *a);

#endif
