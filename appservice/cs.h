/*
 * cs.h - a small Client-Server API client on libcurl, acting as the
 * application service: every request carries the as_token, and acts as a
 * namespaced user with ?user_id= (spec: AS API, "Identity assertion").
 *
 * A cs_client is not thread-safe: each thread that talks to the homeserver
 * owns one.  It keeps its connection open between requests.
 * A single call makes a single attempt; retrying is the outbox's job.
 */
#ifndef THRESHOLD_CS_H
#define THRESHOLD_CS_H

#include <stdint.h>

#include <jansson.h>

struct config;
typedef struct cs_client cs_client;

/** Cap on a homeserver response body we are willing to hold. */
#define CS_MAX_RESPONSE_BYTES (1024 * 1024)

struct cs_response {
	long status;             /* HTTP status, 0 if none was received */
	json_t *body;            /* new reference, or NULL if absent / not JSON */
	const char *errcode;     /* borrowed from body: "errcode", or NULL */
	uint64_t retry_after_ms; /* from a 429's body or Retry-After header, else 0 */
};

/**
 * @param cfg  borrowed; must outlive the client (hs_url, as_token, timeouts)
 * @return TH_OK (handle in @p out) or TH_ENET if curl cannot be set up.
 */
int cs_client_new(const struct config *cfg, cs_client **out);

/**
 * cs_client_new() with another bearer token than the as_token: a server
 * admin's (appservice/hs_admin.h).  Requests made with it should pass no
 * user_id (identity assertion is the as_token's).
 * @param token  borrowed for the call (copied into the headers, wiped on free)
 */
int cs_client_new_token(const struct config *cfg, const char *token, cs_client **out);
void cs_client_free(cs_client *c);

/**
 * One request to the homeserver.
 * @param method   "GET", "PUT", "POST", "DELETE"
 * @param path     path under hs_url, already escaped, may hold a query
 *                 ("/_matrix/client/v3/rooms/%21x%3Ahs/join")
 * @param user_id  act as this namespaced user (added as ?user_id=), or NULL
 *                 to act as the appservice's sender_localpart
 * @param body     request body (borrowed) or NULL
 * @param resp     filled whenever TH_OK is returned, whatever the status;
 *                 release with cs_response_clear()
 * @return TH_OK when an HTTP answer arrived, TH_ETIMEOUT, TH_ETOOLARGE
 *         (response over CS_MAX_RESPONSE_BYTES), TH_ENET, or TH_EINVAL
 *         (unknown method, path not starting with '/', body not encodable).
 *         On an error @p resp is left untouched.
 */
int cs_request(cs_client *c, const char *method, const char *path, const char *user_id, const json_t *body,
               struct cs_response *resp);

/**
 * Upload @p len bytes of @p buf to the homeserver's media store (spec: CS
 * API, POST /_matrix/media/v3/upload).  Not idempotent: a retry stores a
 * second copy (harmless; the first is simply never referenced).
 * @param user_id       act as this namespaced user, or NULL (as cs_request)
 * @param content_type  the file's MIME type, e.g. "application/x-ndjson"
 * @param filename      the name the homeserver keeps with the file (escaped here)
 * @param buf           borrowed for the call
 * @param resp          as cs_request; on a 2xx resp->body holds "content_uri"
 * @return as cs_request; TH_EINVAL for a content type with a line break.
 */
int cs_upload(cs_client *c, const char *user_id, const char *content_type, const char *filename,
              const void *buf, size_t len, struct cs_response *resp);

/**
 * Download a file from the homeserver's media repository (spec: CS API
 * v1.11, GET /_matrix/client/v1/media/download/{serverName}/{mediaId}, with
 * the as_token: authenticated media).  The path is never logged.
 * @param server, media_id  the two parts of an mxc URI (escaped here)
 * @param max     the most bytes taken: TH_ETOOLARGE past it
 * @param cancel  optional, asked about once a second and as data comes:
 *                non-zero stops the transfer (TH_ECANCELED); @p ctx is its
 * @param resp    filled on TH_OK as cs_request (body NULL on a 2xx)
 * @param buf     out on TH_OK: a 2xx's bytes (new; caller frees; NULL when
 *                empty or not a 2xx), @p len their number
 * @return TH_OK when an HTTP answer arrived, TH_ETIMEOUT, TH_ETOOLARGE,
 *         TH_ECANCELED, TH_ENET, or TH_EINVAL (an empty part, @p max 0).
 */
int cs_download(cs_client *c, const char *server, const char *media_id, size_t max, int (*cancel)(void *ctx),
                void *ctx, struct cs_response *resp, unsigned char **buf, size_t *len);

void cs_response_clear(struct cs_response *resp);

/** Percent-escape @p s for use as one path segment or query value (new string). */
char *cs_escape(const char *s);

/**
 * Register namespaced user @p localpart (m.login.application_service,
 * inhibit_login).  "Already registered" (M_USER_IN_USE) counts as success.
 * @return TH_OK, TH_EHTTP (status/errcode logged), or a cs_request error.
 */
int cs_register(cs_client *c, const char *localpart);

/**
 * Ask the homeserver to ping us (spec: POST /_matrix/client/v1/appservice/{id}/ping).
 * @param out_ms  round trip the homeserver reported (duration_ms), on success
 * @return TH_OK, TH_EHTTP (resp errcode logged), TH_EIO (no randomness for
 *         the transaction_id), or a cs_request error.
 */
int cs_ping(cs_client *c, uint64_t *out_ms);

/**
 * Whether a homeserver whose GET /_matrix/client/versions answered
 * @p versions refuses invites to a user whose m.invite_permission_config
 * says {"default_action":"block"} (spec v1.18, MSC4380): "v1.18" or later
 * among "versions", or "org.matrix.msc4380.stable" (or "org.matrix.msc4380")
 * true among "unstable_features" (Synapse 1.149 to at least 1.160 advertise
 * only this, with versions up to v1.12).
 * @param why  out: the version or feature that says so (static), or NULL
 * @return 1 or 0.
 */
int cs_versions_invite_blocking(const json_t *versions, const char **why);

/* Where the daemon keeps that finding in STORE_META (for `threshold doctor`):
 * {"enforced":bool, "by":S|null, "checked_ms":T}. */
#define CS_META_INVITE_BLOCKING "homeserver_invite_blocking"

#endif
