/*
 * txn.h - the hot path: one application-service transaction, from body to a
 * durable commit (spec: AS API, PUT /_matrix/app/v1/transactions/{txnId}).
 *
 *   parse with a depth cap -> txnId already committed? answer at once ->
 *   for each event not seen before, in order: policy, room state, outbox ->
 *   ONE LMDB write transaction (txnId, event ids, state, actions) ->
 *   the caller answers 200 only after that commit returned.
 */
#ifndef THRESHOLD_TXN_H
#define THRESHOLD_TXN_H

#include <stddef.h>

#include "env.h"
#include "store.h"

typedef struct audit audit;

/* What the hot path works with (struct txn_env) is the bridge's env.h: the
 * transaction path hands it to the bridge's hooks. */

/** What to answer the homeserver. */
struct txn_result {
	int status;          /* HTTP status */
	const char *errcode; /* Matrix errcode for non-200, static */
	const char *error;   /* human-readable, static */
	unsigned processed;  /* events handled (not seen before) */
	unsigned skipped;    /* events already seen, or malformed */
	unsigned queued;     /* outbox actions queued */
};

/**
 * Process one transaction.  Never answers 5xx for a bad event: a malformed
 * event is logged and skipped.  Answers 503 only when the store cannot
 * commit (full map or I/O), so the homeserver retries later.
 * @param env     borrowed
 * @param body    the whole request body (not NUL-terminated)
 * @param res     always written
 */
void txn_process(const struct txn_env *env, const char *txn_id, const char *body, size_t len,
                 struct txn_result *res);

#endif
