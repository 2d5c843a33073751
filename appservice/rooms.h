/*
 * rooms.h - what Threshold keeps about a room in STORE_ROOMS: a small JSON
 * object with the number of events handled, the bot's membership, and for
 * rooms Threshold manages their kind ("group" or "portal") and the guests'
 * memberships.  Room names and topics are never kept: whoever set them may
 * have written a message into them.
 *
 *   {"events": N, "bot": "join"|..., "kind": "group", "service": "..", "setup": "..",
 *    "allow": [..], "power": {..}}
 *
 * The record holds nothing keyed by user, so its size does not grow with
 * the room (the one exception, "power", keeps at most 256 users past whom
 * only those able to redact, and is written only in managed rooms, where
 * only staff and the bot hold power).  What is per user in a managed room
 * has its own keys, each read and written alone (rooms_user_get/set):
 * STORE_ROOM_GUESTS (a guest's membership, "leave" kept), STORE_ROOM_STAFF
 * (the display name guests are shown for a member of staff) and
 * STORE_ROOM_NAMES (a guest's pseudonym in that room).
 *
 * Bound: of a room Threshold does not manage, whoever controls it can make
 * Threshold keep only this fixed record (no key per member, whatever the
 * membership events say, "guests" included); the events themselves leave
 * their event id (pruned), and the decisions their audit records and
 * outbox actions, one per event, never state that grows with the room.
 *
 * A staff room's record also holds, while a read of its members is pending,
 * "staff_seen": {"@user:..": true} (see rooms_staff_read_begin).
 *
 * Who is joined to the staff rooms (roles.staff_rooms) is kept apart, in
 * STORE_STAFF_MEMBERS: user id -> room id, one duplicate per staff room the
 * user is joined to, so that "is this sender staff?" on the hot path is one
 * B-tree lookup, never a scan or a JSON parse.
 *
 * Who is joined to or invited into each managed room (conversations and
 * groups) is kept apart as well, one key per membership, never in the
 * room's record: STORE_MEMBERS maps room id, 0, user id to "join" or
 * "invite", and STORE_MEMBER_ROOMS indexes it by user (user id -> room id,
 * one duplicate per room), so that "which managed rooms is this person in?"
 * is one walk over that person's rooms.  A membership that ends (leave,
 * kick, ban) is deleted from both.
 */
#ifndef THRESHOLD_ROOMS_H
#define THRESHOLD_ROOMS_H

#include <jansson.h>

#include "policy.h"
#include "store.h"

struct config;
struct config_ids;

/** A fresh state object for a room first seen (new reference). */
json_t *rooms_state_new(void);

/** @return 1 if @p state is a room Threshold manages (a group or portal room). */
int rooms_is_managed(const json_t *state);

/**
 * What policy knows a room Threshold made to be, from its "kind": a guest's
 * conversation ("portal"), a service's group ("group"), or, for any other
 * room, POL_ROOM_UNMANAGED (staff and safeguarding rooms are the config's
 * to say: see events.c).
 */
enum pol_room rooms_kind(const json_t *state);

/**
 * Record @p room_id as managed, of @p kind, in write txn @p t, keeping what
 * is already known about it.
 * @return TH_OK or a store error.
 */
int rooms_mark_managed(store_txn *t, const char *room_id, const char *kind);

/**
 * Record that @p user_id joined staff room @p room_id (@p joined = 1), or is
 * no longer joined to it (0: left, was kicked or banned, or only invited).
 * @return TH_OK (also when nothing changes) or a store error.
 */
int rooms_staff_set(store_txn *t, const char *room_id, const char *user_id, int joined);

/**
 * @return 1 if @p user_id is joined to a room of @p staff_rooms (as recorded
 *         by rooms_staff_set; a room no longer configured does not count),
 *         else 0.  A store error counts as "not staff": fail closed.
 */
int rooms_staff_has(store_txn *t, const struct config_ids *staff_rooms, const char *user_id);

/** Policy's role for @p user_id under @p cfg (bot, guest, lead, staff, local or remote); @p t (read or write)
 * finds staff-room members (rooms_staff_has).  The hot path asks it twice per membership event; the
 * bridge, for a handover's target. */
enum pol_role rooms_role(const struct config *cfg, store_txn *t, const char *user_id);

/**
 * Begin a read of who is joined to a staff room (the outbox's staff_members
 * action, queued by the caller): until rooms_staff_refresh, the room's
 * record remembers whose membership events were handled ("staff_seen"), so
 * that the read, which may be older than they are, does not undo them.
 * @param room  the room's state (borrowed, updated in place)
 */
void rooms_staff_read_begin(json_t *room);

/** As rooms_staff_read_begin, on the record of @p room_id in STORE_ROOMS.
 *  @return TH_OK or a store error. */
int rooms_staff_read_begin_stored(store_txn *t, const char *room_id);

/**
 * Note in @p room (borrowed, updated in place) that @p user_id's membership
 * was just recorded from an event; only while a read is pending.
 */
void rooms_staff_seen(json_t *room, const char *user_id);

/**
 * The read's answer: make @p joined (the "joined" object of the
 * homeserver's joined_members answer; its keys are the user ids) the
 * recorded membership of staff room @p room_id, except for users whose
 * events were handled since the read began, whose record stays as those
 * events left it.  Ends the read.  Whoever the read finds gone (they left
 * while Threshold could not see) is noted for rooms_staff_departed_take.  Walks the whole of
 * STORE_STAFF_MEMBERS: for the bot's own joins and each start, not every event.
 * @return TH_OK or a store error.
 */
int rooms_staff_refresh(store_txn *t, const char *room_id, const json_t *joined);

/**
 * Take the departures rooms_staff_refresh noted: @p *out is a new array of
 * [user id, staff room id] pairs, or NULL when there are none; they are
 * deleted from the store in @p t.
 * @return TH_OK or a store error.
 */
int rooms_staff_departed_take(store_txn *t, json_t **out);

/**
 * Forget everyone recorded as joined to staff room @p room_id, and any read
 * pending in @p room (its state, updated in place): the bot left, and can no
 * longer see who leaves.  Walks STORE_STAFF_MEMBERS as rooms_staff_refresh.
 * @return TH_OK or a store error.
 */
int rooms_staff_forget(store_txn *t, const char *room_id, json_t *room);

/**
 * Record @p user_id's membership of managed room @p room_id: "join" or
 * "invite" kept, anything else (leave, ban, NULL) deleted, in both
 * STORE_MEMBERS and STORE_MEMBER_ROOMS.  Ids over 255 bytes are no one's
 * and are passed by.
 * @return TH_OK (also when nothing changes) or a store error.
 */
int rooms_member_set(store_txn *t, const char *room_id, const char *user_id, const char *membership);

/**
 * @return 1 if @p user_id is recorded as joined to or invited into managed
 *         room @p room_id, else 0 (a store error counts as 0).
 */
int rooms_member_has(store_txn *t, const char *room_id, const char *user_id);

/**
 * The managed rooms @p user_id is recorded in, in room-id order: @p *out is
 * a new array of @p *n new strings (free each, then the array; NULL when 0).
 * @return TH_OK or a store error (then nothing to free).
 */
int rooms_member_rooms(store_txn *t, const char *user_id, char ***out, size_t *n);

/**
 * Once per store: fill STORE_MEMBERS from what the rooms' records already
 * said before memberships had their own keys (a managed room's "guests" and
 * its joined "staff"), then mark it done (STORE_META "members_indexed").
 * @return TH_OK or a store error.
 */
int rooms_members_backfill(store_txn *t);

/** The per-user facts of a managed room, each its own key (see above). */
enum rooms_map {
	ROOMS_GUESTS, /* guest id -> membership ("join", "invite", "leave", "ban") */
	ROOMS_STAFF,  /* staff id -> display name shown to guests ("" for none); present while joined */
	ROOMS_NAMES,  /* guest id -> pseudonym in this room */
};

/** Longest value rooms_user_get returns, with its 0. */
#define ROOMS_VALUE_MAX 256

/**
 * The fact @p map keeps about @p user_id in room @p room_id, copied into
 * @p buf (ROOMS_VALUE_MAX bytes; longer values are cut).
 * @return TH_OK, TH_ENOTFOUND (also for an id over 255 bytes) or TH_ESTORE.
 */
int rooms_user_get(store_txn *t, const char *room_id, enum rooms_map map, const char *user_id,
                   char buf[ROOMS_VALUE_MAX]);

/**
 * Set (@p val non-NULL) or delete (NULL) that fact.  Ids over 255 bytes are
 * no one's and are passed by.
 * @return TH_OK (also deleting what was not there) or a store error.
 */
int rooms_user_set(store_txn *t, const char *room_id, enum rooms_map map, const char *user_id,
                   const char *val);

/**
 * Every fact @p map keeps in room @p room_id, in user-id order: @p *out is a
 * new object user id -> string value (empty when none).  Costs the room's
 * size: for what fans out to each guest (a feed notice) or looks at all of
 * them (a power-level revert), never for a single-user question.
 * @return TH_OK or a store error (then @p *out is NULL).
 */
int rooms_users(store_txn *t, const char *room_id, enum rooms_map map, json_t **out);

/**
 * The first user (in id order) @p map keeps in @p room_id, into @p buf
 * (256 bytes): a portal's guest.  @return TH_OK, TH_ENOTFOUND or TH_ESTORE.
 */
int rooms_user_first(store_txn *t, const char *room_id, enum rooms_map map, char buf[256]);

/**
 * Upgrade a store of schema version 1 (migrate.c): move the per-user maps a
 * room's record held ("guests", "staff", "names") into their own keys, for
 * managed rooms, and drop them from every record (an unmanaged room's
 * "guests" was never read: what a stranger made Threshold keep goes).
 * @return TH_OK or a store error.
 */
int rooms_migrate_v2(store_txn *t);

/**
 * Record that room @p room_id belongs to service @p service (its config
 * name): set once, when Threshold makes a group for a service.
 * @return TH_OK or a store error.
 */
int rooms_set_service(store_txn *t, const char *room_id, const char *service);

/**
 * @return 1 if @p user_id is recorded as joined to staff room @p room_id
 *         (STORE_STAFF_MEMBERS), else 0 (a store error counts as 0).
 */
int rooms_staff_in(store_txn *t, const char *room_id, const char *user_id);

#endif
