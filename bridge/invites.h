/*
 * invites.h - invitations: how a person outside the organisation is let in.
 *
 * A personal invitation is a random token (secret.h) that staff hand to one
 * person, good for a number of uses until it expires.  STORE_INVITES maps
 * sec_hash("invite", token) to
 *
 *   {"service":S, "uses":N, "used":K, "expires_ms":T, "created_ms":T0[, "group":R]}
 *
 * "group" marks a group invitation: its guests join the existing moderated
 * group room R instead of getting a conversation room of their own.
 *
 * and nothing else: not who it was for, not how it was sent.  The token
 * itself is never stored or logged; the link is shown once.
 *
 * An unknown token, a used-up one and an expired one are the same answer
 * (TH_ENOTFOUND), so a caller cannot tell which and cannot enumerate.
 */
#ifndef THRESHOLD_INVITES_H
#define THRESHOLD_INVITES_H

#include <stdint.h>

#include "audit.h"
#include "secret.h"
#include "store.h"

struct config;
struct config_service;

#define INV_MAX_SERVICE 64

/** What an invitation lets its holder do. */
struct inv_info {
	char service[INV_MAX_SERVICE + 1];
	unsigned uses, used;
	uint64_t expires_ms;
	char group[256]; /* a group invitation's room id, or "" */
};

/**
 * Create an invitation to @p svc in write transaction @p t, with an
 * invite_created audit record (actor @p actor; details: service, uses,
 * expiry; never the token).
 * @param group       NULL, or the group room its guests join (a group invitation)
 * @param uses        1..10000
 * @param expires_ms  absolute Unix time in ms, after now
 * @param token       out: SEC_TOKEN_LEN + 1 bytes, written on success
 * @return TH_OK, TH_EINVAL, TH_EIO (no randomness), or a store/audit error.
 */
int inv_create(store_txn *t, audit *au, const struct config_service *svc, const char *group, unsigned uses,
               uint64_t expires_ms, const char *actor, char *token);

/**
 * Look at the invitation @p token without using it.
 * @return TH_OK (@p out filled), TH_ENOTFOUND (unknown, used up or expired,
 *         alike), or TH_ESTORE.
 */
int inv_check(store_txn *t, const char *token, uint64_t now_ms, struct inv_info *out);

/**
 * Use the invitation @p token once, in write transaction @p t.
 * @return as inv_check(), or TH_EFULL.
 */
int inv_consume(store_txn *t, const char *token, uint64_t now_ms, struct inv_info *out);

/*
 * Binding on first open (docs/guest-experience.md, "The link and the
 * browser's history").  The page opening a link makes a random claim, kept
 * in that browser tab only, and POST /invitation binds the invitation to it:
 * the record gets "opens": [hex sec_hash("invite-claim", claim), ...].  A
 * bound use is one no other claim can open or redeem, so the link left in
 * the browser's history is worth nothing once the guest's tab has opened it.
 * Invitations of more than INV_BIND_MAX uses are shared links, like a public
 * entry: they are not bound.
 */
#define INV_BIND_MAX 16

/**
 * Open the invitation @p token for @p claim (SEC_TOKEN_LEN base64url), in
 * write transaction @p t: a claim already bound is let in again; a new one
 * is bound while a use is neither spent nor bound to another claim.
 * @return TH_OK (@p out filled), TH_ENOTFOUND (unknown, used up, expired, or
 *         every use bound to other claims: alike), TH_EINVAL (a claim that
 *         is not a token), or a store error.
 */
int inv_open(store_txn *t, const char *token, const char *claim, uint64_t now_ms, struct inv_info *out);

/**
 * May a redeem with @p claim (NULL: none) use the invitation @p token?  In
 * write transaction @p t: a bound claim may, and is let go (the use the
 * redeem then counts, inv_consume(), takes its place); no claim or another
 * one only while a use is neither spent nor bound.
 * @return TH_OK, TH_ENOTFOUND (as inv_open()), or a store error.
 */
int inv_admit(store_txn *t, const char *token, const char *claim, uint64_t now_ms);

/** The link a guest opens: "<gateway.public_url>/#invite=<token>" (new string). */
char *inv_link(const struct config *cfg, const char *token);

/**
 * Parse a lifetime such as "30s", "90m", "12h", "7d" (a bare number is hours).
 * @return TH_OK with milliseconds in @p out, or TH_EINVAL (also above a year).
 */
int inv_parse_duration(const char *s, uint64_t *out);

/**
 * Delete invitations that expired more than a day ago, or were used up,
 * in write transaction @p t (called by the daemon's maintenance).
 * @return TH_OK (count in @p removed) or a store error.
 */
int inv_prune(store_txn *t, uint64_t now_ms, size_t *removed);

#endif
