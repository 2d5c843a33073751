/*
 * retention.h - how long conversations are kept, and what keeps them longer.
 *
 * A conversation is due for removal at its service's `retention` after it
 * started (services.<name>.retention; without it, its expires_ms, i.e.
 * conversation_expiry_days), unless something keeps it:
 *   - a lead's HOLD on the guest or on the conversation's room
 *     (`threshold hold add WHO --reason TEXT`), recorded as hold_placed and
 *     lifted with `threshold hold remove` (hold_released);
 *   - an OPEN CASE about the guest: retention_case_holds(), a case not
 *     closed (cases.h).
 * The retention job (retention_run, from the daemon every
 * RETENTION_INTERVAL_MS) removes each due conversation from Threshold's
 * store (conv_remove: closed, the guest leaves the room, feed, sessions and
 * record deleted) with a retention_removed record in the same commit and,
 * when homeserver.admin_token_file is set, notes its room for deletion on
 * the homeserver; retention_purge_pending() then asks the homeserver's admin
 * API to delete and purge each noted room, retrying until it is accepted.
 *
 * STORAGE (STORE_META, so no new database):
 *   "hold" 0x00 <guest id or room id> -> {"guest":G, "room":R|null,
 *        "by":A, "ts":T, "reason":S}   (the reason as the lead typed it: a
 *        why, not names; it is also sealed under the guest's key on the
 *        hold_placed record)
 *   "purge" 0x00 <room id> -> {"guest":G, "since":T}
 * A hold names a guest (by id or pseudonym) or a conversation room; both
 * resolve to the guest, whose conversation it keeps.
 */
#ifndef THRESHOLD_RETENTION_H
#define THRESHOLD_RETENTION_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "env.h"
#include "store.h"

struct config;
struct config_service;

#define RETENTION_INTERVAL_MS 10000u /* how often the daemon runs the job */

/**
 * When the conversation @p conv (its STORE_CONVS record) of @p svc is due
 * for removal, in ms; 0 if never (no start time and no expiry).
 */
uint64_t retention_due_ms(const struct config_service *svc, const json_t *conv);

/**
 * The hook for "held by an open case": 1 if an open case about @p guest
 * keeps their conversation: a case not closed (cases_guest_open()).
 */
int retention_case_holds(store_txn *t, const char *guest);

/**
 * Whether a lead's hold keeps @p guest's conversation (in room @p room,
 * may be NULL).
 * @param hold  optional out: the hold record (new reference) when held
 * @return 1 held, 0 not, or a negative TH_ code.
 */
int retention_hold_get(store_txn *t, const char *guest, const char *room, json_t **hold);

/**
 * Remove every conversation past its retention that nothing keeps, one
 * write transaction each (conv_remove + retention_removed record + the room
 * noted for purging when an admin token is configured).
 * @param removed  out: conversations removed
 * @return TH_OK or the first store/audit error (what was done stays done).
 */
int retention_run(const struct txn_env *env, uint64_t now_ms, size_t *removed);

/**
 * Ask the homeserver to delete and purge each room noted by retention_run,
 * with the admin token; a noted room is forgotten once the homeserver has
 * accepted (or does not know the room).  Does nothing without
 * homeserver.admin_token_file.  Blocks for the requests.
 * @param done  out: rooms accepted for purging
 * @return TH_OK (some may wait for the next call: logged) or a store error.
 */
int retention_purge_pending(const struct config *cfg, store *st, size_t *done);

/**
 * Delete and purge room @p room_id on the homeserver through its admin API
 * (hs_admin_open + hs_admin_room_delete, with the token in
 * homeserver.admin_token_file).  Synapse then removes every member and
 * purges the room's events from its database asynchronously.
 * @param status  out: the HTTP status (0 if none)
 * @return TH_OK (accepted), TH_ENOTFOUND (no token file configured),
 *         TH_ECONFIG (token file unusable: logged), TH_EHTTP, TH_ENET,
 *         TH_ETIMEOUT.
 */
int retention_hs_room_delete(const struct config *cfg, const char *room_id, long *status);

/** `threshold hold add|remove|list ...`; @return 0 ok, 1 failed, 2 usage. */
int retention_hold_cli_main(const struct config *cfg, int argc, char **argv);

/** `threshold retention report [--json]`; @return 0 ok, 1 failed, 2 usage. */
int retention_cli_main(const struct config *cfg, int argc, char **argv);

#endif
