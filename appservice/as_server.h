/*
 * as_server.h - the Application Service API listener (libmicrohttpd, one
 * internal polling thread: the homeserver keeps one transaction in flight).
 *
 * Every route checks "Authorization: Bearer <hs_token>" in constant time
 * before any body byte is read: missing -> 401 M_UNAUTHORIZED, wrong -> 403
 * M_FORBIDDEN.  Bodies are capped (413 M_TOO_LARGE).  Unknown routes -> 404
 * M_UNRECOGNIZED.
 *
 * Routes (and the same without the /_matrix/app/v1 prefix, for old servers):
 *   PUT  /_matrix/app/v1/transactions/{txnId}
 *   GET  /_matrix/app/v1/users/{userId}
 *   GET  /_matrix/app/v1/rooms/{alias}
 *   POST /_matrix/app/v1/ping
 */
#ifndef THRESHOLD_AS_SERVER_H
#define THRESHOLD_AS_SERVER_H

#include "txn.h"

typedef struct as_server as_server;

/** Called after each committed transaction that queued actions (any thread). */
typedef void (*as_on_commit_fn)(void *ctx);

/**
 * Bind and start serving.
 * @param env      borrowed (and what it points to); must outlive the server
 * @param on_commit,ctx  optional hook (e.g. wake the outbox)
 * @return TH_OK or TH_EIO (cannot bind; message logged).
 */
int as_server_start(const struct txn_env *env, as_on_commit_fn on_commit, void *ctx, as_server **out);

/** The port actually bound (useful when listen_port was 0 in tests). */
unsigned as_server_port(as_server *srv);

/**
 * Stop accepting, let the request in hand finish (up to a few seconds),
 * close every connection and free.  NULL is a no-op.
 */
void as_server_stop(as_server *srv);

/** Number of homeserver pings received (POST /ping), for start-up checks. */
unsigned long as_server_pings(as_server *srv);

#endif
