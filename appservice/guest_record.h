/*
 * guest_record.h - a guest's record in STORE_USERS as the store keeps it
 * (its format: guests.h, "STORAGE"), and reading it.  Below the bridge
 * (docs/architecture.md, "Layers"): the bridge reads guests' records
 * through this header; creating a guest, which also makes its Matrix
 * account, is the Matrix interface's (bridge/matrix.h, guest_create;
 * guests_create in guests.h).
 */
#ifndef THRESHOLD_GUEST_RECORD_H
#define THRESHOLD_GUEST_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define GUESTS_ID_HEX        32  /* hex digits after the prefix: 128 random bits */
#define GUESTS_MAX_USER_ID   255 /* spec: a user id is at most 255 bytes */
#define GUESTS_PSEUDONYM_LEN 64  /* bytes a pseudonym buffer must hold, NUL included */
#define GUESTS_STATE_LEN     16  /* bytes of struct guest.state, NUL included */
#define GUESTS_STATE_ACTIVE  "active"
#define GUESTS_STATE_ERASED  "erased" /* erased at the guest's request: pseudonym "" (bridge/conv.c) */

/** One guest, as stored.  Plain data, no pointers: copy it freely. */
struct guest {
	char user_id[GUESTS_MAX_USER_ID + 1]; /* "@guest_<32 hex>:example.org" */
	char pseudonym[GUESTS_PSEUDONYM_LEN]; /* "Amber Otter" (maybe "Amber Otter 2") */
	uint64_t created_ms;                  /* Unix time in ms */
	char state[GUESTS_STATE_LEN];         /* GUESTS_STATE_ACTIVE (more states later) */
};

/**
 * Look a guest up by user id.
 * @param t        any transaction (borrowed)
 * @param user_id  borrowed
 * @param out      filled on success only
 * @return TH_OK; TH_ENOTFOUND (no such user, or a user that is not a guest,
 *         such as the bot); TH_ESTORE (the record is damaged or the store failed).
 */
int guests_get(store_txn *t, const char *user_id, struct guest *out);

/**
 * Decode the STORE_USERS entry @p key -> @p val into @p out (for walks
 * over STORE_USERS; guests_get for one user).
 * @return TH_OK, TH_ENOTFOUND (a user that is not a guest) or TH_ESTORE.
 */
int guests_decode(const void *key, size_t klen, const void *val, size_t vlen, struct guest *out);

#endif
