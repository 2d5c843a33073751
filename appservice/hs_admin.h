/*
 * hs_admin.h - the few homeserver admin API calls erasure (and retention)
 * need, made with a server admin's token kept in its own file.
 *
 * The bot is never a server admin: its as_token would become an admin
 * credential, and admins bypass the homeserver's invite blocking
 * (docs/homeserver-hardening.md).  So steps only an admin can do -- deleting
 * a user's media, deleting and purging a room -- use another user's token,
 * named by homeserver.admin_token_file (a regular file, mode 0600, holding
 * the token on its first line).  The file is read only when such a step
 * runs (the outbox worker carrying out an erasure), never on the hot path,
 * and the token is wiped from memory when the handle is closed.
 *
 * Endpoints (Synapse admin API; not part of the Matrix spec):
 *   DELETE /_synapse/admin/v1/users/{user}/media        media the user uploaded
 *   DELETE /_synapse/admin/v2/rooms/{room}              {"purge":true,"block":true}
 *   GET    /_synapse/admin/v2/rooms/{room}/delete_status
 *
 * A handle is not thread-safe (one cs_client); open one per job step.
 */
#ifndef THRESHOLD_HS_ADMIN_H
#define THRESHOLD_HS_ADMIN_H

#include <stddef.h>

struct config;
typedef struct hs_admin hs_admin;

/** Where a room's deletion stands (hs_admin_room_delete_status). */
enum hs_admin_purge {
	HS_ADMIN_PURGE_NONE = 0, /* no deletion of this room is known */
	HS_ADMIN_PURGE_RUNNING,  /* shutting down or purging */
	HS_ADMIN_PURGE_COMPLETE, /* purged: its events are gone from the database */
	HS_ADMIN_PURGE_FAILED,   /* the homeserver gave up (try again) */
};

/**
 * Check that @p path names a regular file of mode 0600 (no group or other
 * access), without reading it.  Used by config.c at load and by doctor.
 * @param why  on failure, a sentence for the operator (no secret in it)
 * @return TH_OK, TH_ENOTFOUND (no such file), TH_ECONFIG (wrong type or mode).
 */
int hs_admin_token_file_check(const char *path, char *why, size_t whylen);

/**
 * Read the token from homeserver.admin_token_file and make a client that
 * sends it.  Call only from the job that needs it.
 * @param cfg  borrowed; must outlive the handle
 * @param out  new handle on TH_OK; free with hs_admin_close()
 * @return TH_OK; TH_ENOTFOUND (no admin_token_file configured: the steps
 *         that need it cannot be done); TH_ECONFIG (file missing, wrong
 *         mode, empty; logged naming the key); TH_EIO; TH_ENET.
 */
int hs_admin_open(const struct config *cfg, hs_admin **out);

/**
 * Who the token belongs to, and whether the homeserver treats them as a
 * server admin (for `threshold doctor`).
 * @param user_id   out on TH_OK: a new string
 * @param is_admin  out on TH_OK
 * @return TH_OK, TH_EHTTP (the token is refused: @p status), TH_ENET,
 *         TH_ETIMEOUT.
 */
int hs_admin_whoami(hs_admin *h, char **user_id, int *is_admin, long *status);

/** Wipe the token and free.  NULL is a no-op. */
void hs_admin_close(hs_admin *h);

/**
 * Delete every file @p user_id uploaded from the homeserver's media store
 * (local media only; a file on another server is not ours to delete).
 * Repeats the call until the homeserver reports none left.
 * @param deleted  optional out: how many files went
 * @param status   out: the last HTTP status (0 if none)
 * @return TH_OK (all gone), TH_EHTTP (refused: @p status says why),
 *         TH_ENET, TH_ETIMEOUT, TH_ETOOLARGE.
 */
int hs_admin_user_media_delete(hs_admin *h, const char *user_id, size_t *deleted, long *status);

/**
 * Ask the homeserver to delete room @p room_id: every local member is
 * removed, the room is blocked from being joined again and its events are
 * purged from the database (asynchronously: poll
 * hs_admin_room_delete_status).  Media the room referred to is not deleted.
 * @param status  out: the HTTP status (0 if none)
 * @return TH_OK (accepted), TH_EHTTP, TH_ENET, TH_ETIMEOUT, TH_ETOOLARGE.
 */
int hs_admin_room_delete(hs_admin *h, const char *room_id, long *status);

/**
 * Where the deletion of @p room_id stands (the newest one the homeserver
 * remembers).
 * @param out     written on TH_OK
 * @param status  out: the HTTP status (0 if none)
 * @return TH_OK, TH_EHTTP, TH_ENET, TH_ETIMEOUT, TH_ETOOLARGE.
 */
int hs_admin_room_delete_status(hs_admin *h, const char *room_id, enum hs_admin_purge *out, long *status);

#endif
