/*
 * cases.h - safeguarding concerns and the cases leads work from them
 * (docs/safeguarding-guide.md).
 *
 * A concern is raised about one guest: by staff in the guest's conversation
 * room ("!threshold concern [low|medium|high] TEXT", or the configured
 * reaction on a message), or by the guest's own words matching the
 * service's concern keywords.  It opens the guest's case, or joins the one
 * open: the case's severity is the highest of its concerns, its response
 * deadline the earliest that severity gives (safeguarding.response_seconds_*).
 * The safeguarding room is told at once, with ids and no words; the words a
 * member of staff gave are sealed under the guest's key in the
 * concern_raised audit record (erasure shreds them) and the message that
 * carried them is redacted.
 *
 * Leads work cases in the safeguarding room ("!case list|show|take|note|
 * close", policy-checked) and on the command line ("threshold case ...");
 * every read is a case_viewed record and every change a case_changed record
 * (notes and outcomes sealed like concerns).  A case past its deadline and
 * not closed is reminded in the safeguarding room every
 * safeguarding.reminder_seconds.
 *
 * Escalation: a conversation whose guest has written and had no staff
 * reply for services.<name>.escalate_after_seconds is escalated to the
 * service's duty leads in the safeguarding room, and again every
 * escalate_every_seconds while it keeps waiting.
 *
 * STORE_CASES holds:
 *   'c' u64 BE id -> {"id":N,"guest":G,"service":S,"room":R,"severity":V,
 *                     "state":"open"|"taken"|"closed","holder":H|null,
 *                     "opened_ms":T,"deadline_ms":T,"reminded_ms":T,
 *                     "concerns":[{"seq":A,"ts":T,"severity":V,"source":W,"by":B}],
 *                     "notes":[{"seq":A,"ts":T,"by":B}],"outcome_seq":A,"closed_ms":T}
 *     (A: the audit record holding the sealed words, if any)
 *   'g' guest       -> u64 BE id of the guest's case that is not closed
 *   'w' room id     -> {"guest":G,"service":S,"since_ms":T,"next_ms":T,"count":N}:
 *                      the guest wrote and no staff has answered yet
 *   "next"          -> u64 BE: the next case id
 */
#ifndef THRESHOLD_CASES_H
#define THRESHOLD_CASES_H

#include <stddef.h>
#include <stdint.h>

#include "env.h"
#include "policy.h"
#include "store.h"

struct config;
struct mxev;

#define CASES_PREFIX "!case"

/** @return 1 if @p body is a "!case ..." command (after leading spaces). */
int cases_is_command(const char *body);

/**
 * @return 1 if @p body matches one of the service's concern keywords
 * (any language's list): ASCII letters compared without case, a space in a
 * phrase matching any run of white space, and the match on word boundaries
 * (a letter, digit, '_' or any non-ASCII byte next to it is no boundary).
 */
int cases_keyword_match(const struct config *cfg, const char *service, const char *body);

/** @return 1 if @p ev is an m.reaction whose key is safeguarding.concern_reaction. */
int cases_reaction_is_concern(const struct config *cfg, const struct mxev *ev);

/**
 * Carry out POL_ACT_CONCERN for @p ev in its conversation room: a
 * "!threshold concern" command, a concern reaction, or a guest's message
 * that matched the keyword list (@p reason POL_R_CONCERN_KEYWORD).  Opens
 * or joins the room's guest's case, records concern_raised, alerts the
 * safeguarding room, answers staff, and redacts a command that carried words.
 * @return TH_OK or a store/audit error (aborts the transaction).
 */
int cases_on_concern(const struct txn_env *env, store_txn *t, const struct mxev *ev, enum pol_reason reason,
                     unsigned *queued);

/**
 * Carry out POL_ACT_CASE: a lead's "!case ..." in the safeguarding room,
 * answered there.
 */
int cases_on_command(const struct txn_env *env, store_txn *t, const struct mxev *ev, unsigned *queued);

/**
 * Run one case command for @p actor (a lead's user id, or "cli:<user>"):
 * @p args is the text after "!case" / "threshold case".  Every read and
 * change is recorded in @p t.
 * @param reply   out: new string, the answer (caller frees, after zeroing:
 *                it may hold unsealed words)
 * @param sealed  optional out: 1 when words from @p args were sealed (a note
 *                or an outcome), so the message that carried them can go
 * @return TH_OK (the answer may be a refusal or a usage line) or a
 *         store/audit error.
 */
int cases_run(const struct txn_env *env, store_txn *t, const char *actor, const char *args, char **reply,
              int *sealed);

/**
 * The hot path's hook for a message in a conversation room: a guest's
 * starts the escalation clock (when the service escalates), staff's
 * stops it.  Commands and notes (POL_EV_COMMAND...) are not replies.
 */
int cases_on_message(const struct config *cfg, store_txn *t, const char *room_id, const char *sender,
                     enum pol_role role);

/**
 * Timers, about once a second: reminders of cases past their deadline, and
 * escalations of conversations waiting past their service's
 * escalate_after_seconds.
 * @param posted  out: notices queued (wake the outbox when > 0)
 */
int cases_tick(const struct txn_env *env, uint64_t now_ms, size_t *posted);

/**
 * The guest of case @p id and when it was opened, for `threshold audit
 * export --case ID`.
 * @return TH_OK, TH_ENOTFOUND or a store error.
 */
int cases_subject(store_txn *t, uint64_t id, char *guest, size_t guest_len, uint64_t *opened_ms);

/**
 * Whether @p guest has a case that is not closed (for erasure: a held
 * erasure says so).  @return 1 yes, 0 no.
 */
int cases_guest_open(store_txn *t, const char *guest);

/** `threshold case list|show|take|note|close`: @return the exit code. */
int cases_cli_main(const struct config *cfg, int argc, char **argv);

#endif
