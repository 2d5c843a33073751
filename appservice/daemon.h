/*
 * daemon.h - the process around the modules: start-up (store, outbox,
 * listener, bot registration, ping), the signal loop with periodic
 * maintenance, and a clean stop.  Also the read-only status report.
 */
#ifndef THRESHOLD_DAEMON_H
#define THRESHOLD_DAEMON_H

struct config;

/**
 * Run Threshold until SIGTERM or SIGINT.
 * @param cfg  loaded config with tokens (borrowed)
 * @return the process exit code: 0 after a clean stop, 1 if start-up failed.
 */
int daemon_serve(const struct config *cfg);

/**
 * Print what the store holds (counts, rooms) as text or JSON to stdout.
 * Safe while the daemon runs: it opens a read transaction only.
 * @return the process exit code.
 */
int daemon_status(const struct config *cfg, int json);

struct audit;
/**
 * Seal and open the guests' feed entries (bridge/feed.h) under the audit
 * log's per-subject keys in @p au (borrowed, outliving the feed's use).
 * The daemon does this at start; a command that reads feeds (guest
 * export) does it too, or sees no sealed entry.
 */
void daemon_feed_sealer(struct audit *au);

#endif
