/*
 * guests.h - guest identities: the users in Threshold's exclusive namespace
 * that stand for people outside the organisation.
 *
 * A guest's id is @<guest_prefix><32 hex>:<server_name>, the hex from 128
 * random bits derived from nothing (not a phone number, not a time, not a
 * counter), so the id says nothing about the person.  Threshold acts for a
 * guest only by masquerading with its as_token (?user_id=); it never logs in
 * as a guest and never hands a guest a homeserver token.
 *
 * A guest's display name is a friendly pseudonym, "Adjective Animal" ("Amber
 * Otter"), from two built-in word lists of colours and nature words and of
 * gentle animals.  Two ways to use them, chosen later by configuration:
 *   - one pseudonym per guest: the one guests_create() stores on the record,
 *     unique among all guests (case-insensitively);
 *   - unlinkable per room: guests_pseudonym_for_room() picks a fresh one,
 *     unique among the names already used in that room, and stores nothing.
 *
 * STORAGE.  STORE_USERS maps the guest's user id to exactly
 *
 *   {"kind":"guest","pseudonym":P,"created_ms":T,"state":"active"}
 *
 * and nothing else: no name, phone number, email address, IP address or
 * invite detail.  A guest erased at their request keeps only
 * {"kind":"guest","pseudonym":"","created_ms":T,"state":"erased"}.  Other users in STORE_USERS (the bot:
 * "kind":"bot") are not guests and every function here passes them by.  There is no index by pseudonym:
 * guests_find_by_pseudonym() and guests_create() walk every user record (O(number of users)), which is fine
 * for the CLI and for creating guests at human rates; add an index before using either on a hot path.
 *
 * Reading guests is not audited (ids and pseudonyms are pseudonymous);
 * creating one is (AUDIT_GUEST_CREATED, in the same transaction).
 */
#ifndef THRESHOLD_GUESTS_H
#define THRESHOLD_GUESTS_H

#include <stddef.h>
#include <stdint.h>

#include "audit.h"
#include "guest_record.h"
#include "store.h"

struct config;

/**
 * Create a guest inside the caller's write transaction @p t: a fresh random
 * id, a pseudonym unique among all guests, the STORE_USERS record, three
 * outbox actions ({"op":"register","localpart":L}, the block of invites to
 * the guest (outbox_block_invites) and {"op":"displayname",
 * "user_id":U,"displayname":P}) and an AUDIT_GUEST_CREATED record (actor
 * @p actor, subject the new id, details {"pseudonym":P}).  Nothing happens
 * on the homeserver until @p t commits and an outbox worker runs the
 * actions; if @p t aborts, nothing at all is left behind.
 * @param cfg    borrowed; guest_prefix and server_name are used
 * @param t      a write transaction (borrowed)
 * @param au     borrowed audit handle for the store @p t belongs to
 * @param actor  who creates the guest: a staff user id, "cli:<login>", ...
 *               (borrowed; non-empty, at most AUDIT_MAX_ID bytes)
 * @param out    filled on success only
 * @return TH_OK; TH_EINVAL (empty actor, or the id would exceed
 *         GUESTS_MAX_USER_ID for this guest_prefix and server_name);
 *         TH_EIO (no randomness); TH_EEXIST (the random id is taken: the
 *         randomness is broken, so this is not retried); TH_ETOOLARGE
 *         (actor too long); TH_EFULL; TH_ESTORE (including a damaged user
 *         record met while choosing the pseudonym); or another audit_append()
 *         error.  After an error the transaction should be aborted.
 */
int guests_create(const struct config *cfg, store_txn *t, audit *au, const char *actor, struct guest *out);

/**
 * guests_create(), with @p note (e.g. an emergency contact taken at an
 * in-person onboarding) sealed under the new guest's key on the
 * guest_created record (audit_rec.sealed): readable only by a lead's
 * recorded `!audit reveal`, and gone when the guest's data is erased.  It
 * is never stored anywhere else.
 * @param note  borrowed; NULL or "": none; at most AUDIT_MAX_SEALED bytes
 * @return as guests_create(); TH_ETOOLARGE for a note over AUDIT_MAX_SEALED;
 *         TH_EIO, TH_ECRYPTO from sealing.
 */
int guests_create_sealed(const struct config *cfg, store_txn *t, audit *au, const char *actor,
                         const char *note, struct guest *out);

/**
 * Find the guest whose stored pseudonym is @p pseudonym, ignoring ASCII
 * case.  Walks every user record: O(number of users).  Per-room pseudonyms
 * (guests_pseudonym_for_room) are not stored and so are not found.  If
 * records made by other means share a pseudonym, the first by user id wins.
 * @param t          any transaction (borrowed)
 * @param pseudonym  borrowed
 * @param out        filled on success only
 * @return TH_OK, TH_ENOTFOUND or TH_ESTORE.
 */
int guests_find_by_pseudonym(store_txn *t, const char *pseudonym, struct guest *out);

/**
 * Call @p fn for each guest, in user-id order (which, ids being random, is
 * no particular order: sort by created_ms to show them).  Non-guest users
 * are skipped.
 * @param fn   gets @p ctx and a guest borrowed for the call; returns 0 to go
 *             on, 1 to stop, or a negative TH_ code to stop with that error
 * @return TH_OK, TH_ESTORE (a damaged guest record stops the walk), or
 *         @p fn's error (made positive).
 */
int guests_walk(store_txn *t, int (*fn)(void *ctx, const struct guest *g), void *ctx);

/**
 * Write a random "Adjective Animal" pseudonym into @p buf.
 * @param len  size of @p buf; at least GUESTS_PSEUDONYM_LEN
 * @return @p buf, or NULL if @p len is too small or no randomness was
 *         available (then @p buf is untouched).
 */
const char *guests_random_pseudonym(char *buf, size_t len);

/**
 * Write into @p buf a pseudonym that is none of the @p ntaken names in
 * @p taken, ignoring ASCII case: random picks first; after many collisions,
 * a random pick with " 2", " 3", ... appended (always succeeds: at most
 * @p ntaken suffixes can be taken).  Cost O(@p ntaken) per try.
 * @param taken   borrowed names already used in the room (display names of
 *                anyone); NULL entries are ignored; may be NULL if @p ntaken is 0
 * @param buf     written on success only
 * @param len     size of @p buf; at least GUESTS_PSEUDONYM_LEN
 * @return TH_OK, TH_EINVAL (@p len too small) or TH_EIO (no randomness).
 */
int guests_pseudonym_for_room(const char *const *taken, size_t ntaken, char *buf, size_t len);

/* A guest's profile display name when guests.pseudonym_per_room is set. */
#define GUESTS_PROFILE_NAME "Guest"

/**
 * With guests.pseudonym_per_room: when guest @p guest_id has joined managed
 * room @p room_id and has no name there yet, pick one unique among the names
 * used in the room (and unlike the guest's own stored pseudonym), keep it as
 * the room's STORE_ROOM_NAMES key for the guest (rooms.h; @p room is
 * unused), and queue the guest's member event
 * carrying it.  Otherwise does nothing.
 * @param queued  incremented per action queued
 * @return TH_OK or a store error.
 */
int guests_name_in_room(const struct config *cfg, store_txn *t, json_t *room, const char *room_id,
                        const char *guest_id, unsigned *queued);

/* STORE_META key set once every guest's invites were queued to be blocked. */
#define GUESTS_META_INVITES_BLOCKED "guests_invites_blocked"

/**
 * Once per store: queue the outbox action that makes the homeserver refuse
 * invites to the guest (outbox_block_invites) for every active guest, and
 * set STORE_META GUESTS_META_INVITES_BLOCKED.  Guests made since get the
 * action from guests_create(), so a store that has the marker needs
 * nothing.  For stores from before invites were blocked at the homeserver.
 * @param t       a write transaction (borrowed)
 * @param queued  out: actions queued (0 when done before)
 * @return TH_OK or a store error (abort @p t then).
 */
int guests_block_invites_migrate(store_txn *t, size_t *queued);

/** Number of words in each built-in list (for tests and for sizing). */
size_t guests_adjective_count(void);
size_t guests_animal_count(void);

/** The @p i th built-in word (static), or NULL past the end. */
const char *guests_adjective(size_t i);
const char *guests_animal(size_t i);

#endif
