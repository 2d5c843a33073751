/*
 * erasure.h - a guest's erasure as a durable job: what is left to do, what
 * failed, and whether it is finished, kept in the store so it survives a
 * crash and the guest's page is never told "deleted" before it is.
 *
 * The steps themselves are outbox actions (outbox.h), queued in the commit
 * that accepts the guest's request (matrix_outbox.c, mx_ops.erase), each
 * carrying "erasure": G, and carried out by whoever holds the power to do
 * them, in the order that removes data (notes: docs/privacy.md, "Erasure"):
 *   1. "redact" of every event the guest sent, as the bot (room admin) --
 *      the guest may have left or been removed and could not;
 *   2. "erase_media": the guest's uploads deleted from the homeserver's
 *      media store (admin API, hs_admin.h);
 *   3. "deactivate" with erase: true (as_token);
 *   4. "purge_room" of each room that was the guest's alone (their
 *      conversation room): deleted and purged from the homeserver's
 *      database (admin API);
 *   5. "erasure_done": the job is finished (erasure_job_finish).
 * Steps 2-5 run in the guest's lane after the rooms' lanes, so in order, and
 * each is retried with backoff while the homeserver is unreachable.  A step
 * refused for good, or set aside after outbox.give_up_after_seconds, is
 * recorded (erasure_step_failed: an erasure_step_failed audit record, an
 * alert in the safeguarding room) and the job ends "incomplete".  Without
 * homeserver.admin_token_file steps 2 and 4 are skipped, recorded as such,
 * and the job ends "incomplete" too: the guest is told plainly.
 *
 * STORE_META "erasure:" <guest> -> {"state":"running"|"done"|"incomplete",
 *   "started_ms":T, ["finished_ms":T,] "failed":[{"step":S,"why":W}...],
 *   "skipped":[S...]}.  Ids and step names only: never a word the guest
 *   wrote, nor their pseudonym.
 */
#ifndef THRESHOLD_ERASURE_H
#define THRESHOLD_ERASURE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "store.h"

struct audit;
struct config;

/** Where a guest's erasure stands. */
enum erasure_state {
	ERASURE_NONE = 0,   /* no erasure of this guest is known */
	ERASURE_RUNNING,    /* steps are still queued or being retried */
	ERASURE_DONE,       /* every step done */
	ERASURE_INCOMPLETE, /* finished, but a step failed or could not be done (recorded, alerted) */
};

/** @return "none", "running", "done" or "incomplete". */
const char *erasure_state_name(enum erasure_state s);

/**
 * Start (or restart) @p guest's job in write transaction @p t: state
 * "running", no failures.  The caller queues the steps in the same @p t.
 * @return TH_OK, TH_EINVAL (guest too long), or a store error.
 */
int erasure_job_begin(store_txn *t, const char *guest, uint64_t now_ms);

/**
 * @p guest's job state, as seen by @p t.
 * @return TH_OK (ERASURE_NONE when there is no job) or TH_ESTORE.
 */
int erasure_job_state(store_txn *t, const char *guest, enum erasure_state *out);

/**
 * A step of an erasure (an outbox action carrying "erasure") failed for
 * good: recorded on the job, in the audit log (erasure_step_failed, ids and
 * the step only) and alerted in the safeguarding room, in @p t.
 * @param au      may be NULL (no audit record)
 * @param action  the outbox action (borrowed)
 * @param why     "HTTP 403 M_FORBIDDEN", "set aside after 60 minutes"...
 * @return TH_OK or a store/audit error.
 */
int erasure_step_failed(struct audit *au, const struct config *cfg, store_txn *t, const json_t *action,
                        const char *why);

/**
 * Step @p step of @p guest's erasure could not be done by Threshold (no
 * homeserver.admin_token_file): recorded on the job, so it ends
 * "incomplete" and the safeguarding room is told what is left.
 * @return TH_OK or a store error.
 */
int erasure_step_skipped(store_txn *t, const char *guest, const char *step);

/**
 * The last step: the job ends "done" or "incomplete"; an erasure_done audit
 * record lists the failed and skipped steps (names only); when anything is
 * left, the safeguarding room is told what and what to do.
 * @param au  may be NULL
 * @return TH_OK or a store/audit error.
 */
int erasure_job_finish(struct audit *au, const struct config *cfg, store_txn *t, const char *guest);

#endif
