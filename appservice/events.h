/*
 * events.h - from one Matrix event to Threshold's reaction: build the policy
 * facts, ask policy, and record what follows (room state, outbox actions)
 * inside the caller's write transaction.
 */
#ifndef THRESHOLD_EVENTS_H
#define THRESHOLD_EVENTS_H

#include <jansson.h>

#include "policy.h"
#include "store.h"

struct config;
struct mxev;
struct txn_env;

/**
 * Handle one new (not yet seen) event.
 * @param env    borrowed; its audit log (if any) gets the records policy asks for
 * @param t      the transaction's write txn; actions are queued in it
 * @param ev     borrowed: an event with event_id and room_id (see mxevent.h)
 * @param room   the room's state object (borrowed, updated in place; the
 *               caller writes it back before commit)
 * @param queued incremented by the number of outbox actions queued, and once
 *               when guests' feeds grew (both need a wake-up after the commit)
 * @return TH_OK (also for events Threshold ignores or cannot use), or a
 *         store error (TH_EFULL, TH_ESTORE) that must abort the transaction.
 */
int events_handle(const struct txn_env *env, store_txn *t, const struct mxev *ev, json_t *room,
                  unsigned *queued);

/**
 * Someone may have stopped being staff: @p user_id left staff room
 * @p staff_room (NULL: the roles in the config changed).  For each managed
 * room they are recorded in (rooms_member_rooms) whose service's staff room
 * is @p staff_room (any, for NULL; a room of no service goes by their role
 * alone), policy decides (POL_EV_STAFF_ENDED); a removal is a kick by the
 * bot with a neutral reason and a membership_enforced record, in @p t.
 * @return TH_OK or a store or audit error (aborts the transaction).
 */
int events_staff_ended(const struct txn_env *env, store_txn *t, const char *user_id, const char *staff_room,
                       unsigned *queued);

/**
 * At start: compare the roles of the config (roles.staff, safeguarding
 * leads, roles.staff_all_local) with those the last start saw (STORE_META
 * "roles"); everyone dropped goes through events_staff_ended().  Then keep
 * the current roles for the next start.  The first start only keeps them.
 * @return TH_OK or a store or audit error (aborts @p t).
 */
int events_roles_changed(const struct txn_env *env, store_txn *t, unsigned *queued);

/**
 * The departures a read of a staff room found (rooms_staff_departed_take):
 * each goes through events_staff_ended(), in one write transaction of its
 * own.  Called by the daemon once a second; a no-op when there are none.
 * @param queued  incremented per action queued (the caller wakes the outbox)
 * @return TH_OK or a store or audit error (nothing is taken then).
 */
int events_staff_departed(const struct txn_env *env, unsigned *queued);

/**
 * Which "!threshold ..." command a message body is: "!threshold ping" is
 * POL_CMD_PING, "!threshold" alone POL_CMD_HELP, a word the bot does not
 * know POL_CMD_UNKNOWN.  Pure; exposed for the fuzz target.
 * @param body  borrowed; NULL is not a command
 * @return the command, or POL_CMD_NONE when @p body is not one.
 */
enum pol_command events_parse_command(const char *body);

/**
 * Learn one state event of room @p room_id that says who can read it:
 * m.room.create (m.federate), m.room.join_rules, m.room.history_visibility
 * (any other type is ignored).  Kept in STORE_META under "privacy/" + room id
 * for events_room_private().  Fed by the transactions' events for the
 * safeguarding room, and at each start by the room's whole state read from
 * the homeserver (daemon.c): what was set before the bot joined reaches
 * Threshold no other way.
 * @param content  borrowed
 * @return TH_OK, or a store error.
 */
int events_privacy_learn(store_txn *t, const char *room_id, const char *type, const json_t *content);

/**
 * @return 1 if room @p room_id is known to be invite-only, unfederated and
 *         with history for members only (not "shared" or "world_readable");
 *         0 if not, or not known (nothing learned yet).
 */
int events_room_private(store_txn *t, const char *room_id);

#endif
