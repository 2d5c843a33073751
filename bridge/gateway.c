/*
 * gateway.c - the guest gateway's HTTP layer: routes, limits, long polls,
 * pictures and files fetched for the guest, and the page's files.  What each
 * request does lives in conv.c and invites.c.
 */
#define _GNU_SOURCE /* POLLRDHUP */
#include "gateway.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <microhttpd.h>

#include "calls.h"
#include "config.h"
#include "conv.h"
#include "feed.h"
#include "hours.h"
#include "invites.h"
#include "jsonx.h"
#include "limiter.h"
#include "log.h"
#include "matrix.h"
#include "media.h"
#include "turn.h"
#include "util.h"
#include "web_assets.h"

#define API             "/_threshold/gateway/v1"
#define FEED_DEFAULT_MS 25000u
#define FEED_MAX_MS     60000u
#define LIM_SETS        4096u /* sets of LIM_WAYS entries per limiter table */
#define LIM_SVC_SETS    64u
#define POLLS_RETRY_MS  10000u /* when a guest has max_polls_per_guest waiting */
#define CONN_MEMORY     (8u * 1024u)
#define CONN_TIMEOUT_S  90u
#define GW_DRAIN_MS     10000u /* how long stopping waits for resumed polls to be sent */
#define MAX_ADDR        64
#define DRAIN_MAX       (1u << 20) /* bytes over a cap read and discarded to answer 413 */
#define MEDIA_QUEUE_MAX 16u        /* media fetches waiting for the fetcher; 503 past it */
/* Fetched bytes held until sent (slow phones take a while): past this, new
 * media requests get 503.  Above gateway.max_media_bytes' highest value, so
 * one file always fits. */
#define MEDIA_HELD_MAX (64u << 20)

/* Security headers on everything the gateway answers.  blob: pictures are
 * the ones the page fetched with its session (GET /media/{id}). */
static const char *const csp =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/* A picture or file is never a document: opened on its own it runs nothing. */
static const char *const media_csp = "sandbox; default-src 'none'; frame-ancestors 'none'";

struct waiter;
struct media_job;

struct gateway {
	const struct txn_env *env;
	const struct config *cfg;
	gw_on_queue_fn on_queue;
	void *ctx;
	struct MHD_Daemon *mhd;
	unsigned port;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stop;
	int notified;
	struct waiter *waiters; /* doubly linked, under mu */
	unsigned nwaiting;
	unsigned nheld; /* polls and media requests parked, or resumed and not yet answered (under mu) */
	pthread_cond_t drained; /* signalled when nheld falls to 0 */
	/* the media fetcher: one thread, a bounded queue (under mu) */
	pthread_t fetcher;
	pthread_cond_t fetch_cv;
	struct media_job *jobs, *jobs_tail;
	unsigned njobs;
	struct mx_fetcher *fetch; /* the fetcher's own (matrix.h) */
	size_t media_held;        /* bytes fetched and not yet sent or freed (under mu) */
	size_t body_in_flight;    /* request body bytes held or promised (under mu) */
	/* Rate limits (limiter.h), one table per kind so one kind cannot crowd
	 * out another: invitation/redeem/resume per address, requests per
	 * guest, public entry redeems per address and service, per service. */
	limiter *lim_addr, *lim_session, *lim_public_addr, *lim_service;
	char origin[256]; /* gateway.public_url's origin, for cross-site checks */
	_Atomic unsigned long requests[GW_STATS_ROUTES][GW_STATS_CLASSES]; /* answered (gw_stats_get) */
};

/* A suspended feed poll. */
struct waiter {
	struct waiter *prev, *next;
	struct MHD_Connection *conn;
	char guest[GUESTS_MAX_USER_ID + 1];
	uint64_t since;
	uint64_t deadline; /* monotonic ms */
	int hung_up;       /* its peer closed the connection while it waited */
};

/*
 * A picture or file to fetch for a suspended connection.  It holds copies of
 * all it needs.  Made by the handler, it is the fetcher's while RUNNING and
 * otherwise its request's (rq->job); states change under gw->mu.  A
 * connection that completes while its job RUNS marks it orphaned and the
 * fetcher frees it instead of resuming the connection (libmicrohttpd does
 * not complete a suspended connection before MHD_stop_daemon, which runs
 * after the fetcher is joined; this keeps even that case safe).
 */
enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

struct media_job {
	struct media_job *next; /* in gw->jobs while QUEUED */
	struct MHD_Connection *conn;
	char server[MEDIA_MAX_SERVER + 1];
	char media_id[MEDIA_MAX_ID + 1];
	char filename[MEDIA_MAX_NAME + 1]; /* ASCII, for Content-Disposition */
	enum job_state state;
	int orphaned;
	/* The answer (the fetcher's until DONE): 200 with the bytes, or an error. */
	unsigned status;
	const char *errcode, *error; /* static */
	uint64_t retry_after_ms;
	const char *mimetype; /* a picture's sniffed type; NULL: a download */
	unsigned char *buf;
	size_t len;
};

/* Per-request state, from the first call of the handler to completion. */
struct req {
	size_t cap; /* the most body this route takes */
	size_t len, alloc;
	char *body;
	int too_large;
	size_t reserved; /* counted in gw->body_in_flight until completion */
	int route;       /* index in routes[], or -1 */
	/* Refused on its headers (before any body byte is kept): the answer,
	 * sent once the body has been read and thrown away. */
	int refused;
	unsigned r_status;
	const char *r_errcode, *r_error; /* static */
	uint64_t r_retry;
	int authed; /* a session route whose token was good: s is its session */
	struct conv_session s;
	int resumed; /* a long poll that was suspended and is now answered */
	struct waiter w;
	int in_list;
	int held; /* counted in gw->nheld until the connection completes */
	struct media_job *job;
};

/* ---- responses ------------------------------------------------------------ */

/* 1 while calls.enabled: the page may then ask for the microphone and camera
 * (docs/calls.md); set once by gw_start, read by every answer. */
static _Atomic int calls_media;

static void security_headers(struct MHD_Response *r, const char *policy)
{
	MHD_add_response_header(r, "Content-Security-Policy", policy);
	MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(r, "X-Frame-Options", "DENY");
	MHD_add_response_header(r, "Cross-Origin-Opener-Policy", "same-origin");
	MHD_add_response_header(r, "Cross-Origin-Resource-Policy", "same-origin");
	MHD_add_response_header(r, "Permissions-Policy",
	                        atomic_load_explicit(&calls_media, memory_order_relaxed)
	                                ? "camera=(self), microphone=(self), geolocation=()"
	                                : "camera=(), microphone=(), geolocation=()");
	/* Nothing the gateway sends is kept by the browser's cache: on a shared
	 * phone a cached page is a trace that the site was visited. */
	MHD_add_response_header(r, "Cache-Control", "no-store");
}

static void common_headers(struct MHD_Response *r)
{
	security_headers(r, csp);
}

/* The status of the answer queued on this thread by the request in hand,
 * read by handle() to count it (gw_stats_get); 0: none queued yet. */
static __thread unsigned queued_status;

static enum MHD_Result queue_response(struct MHD_Connection *conn, unsigned status, struct MHD_Response *r)
{
	queued_status = status;
	return MHD_queue_response(conn, status, r);
}

/*
 * An API answer's headers: only what keeps JSON safe.  nosniff (never run or
 * shown as anything but JSON: with it, and JSON's type, a cross-site <script>
 * or <img> gets nothing, ORB blocks it), no-store (never cached on a shared
 * phone).  The page's policies (CSP, framing, opener, referrer, permissions)
 * govern documents, and an API answer is never one: they ride on the page
 * and its files, not on every poll, where they were most of the bytes an
 * idle chat costs (docs/performance.md).
 */
static void json_headers(struct MHD_Response *r)
{
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(r, "Cache-Control", "no-store");
}

static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned status, json_t *j)
{
	char *text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!text)
		text = xstrdup("{}");
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	json_headers(r);
	if (status == 413) /* nothing more from this client on this connection */
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
	enum MHD_Result ret = queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

/*
 * 202 with no body, for a message or file taken (POST /send, /upload): the
 * page knows its own local_id, and an answer with nothing in it has nothing
 * to sniff or to store, so it carries no Content-Type, nosniff or
 * Cache-Control either (and a POST's answer is never cached without them).
 * Some 120 bytes less on every message a guest sends (docs/performance.md).
 */
static enum MHD_Result send_accepted(struct MHD_Connection *conn)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret = queue_response(conn, 202, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *conn, unsigned status, const char *errcode,
                                  const char *error, uint64_t retry_after_ms)
{
	json_t *j = json_pack("{s:s, s:s}", "errcode", errcode, "error", error);
	if (retry_after_ms)
		json_object_set_new(j, "retry_after_ms", json_integer((json_int_t)retry_after_ms));
	return send_json(conn, status, j);
}

static enum MHD_Result store_failed(struct MHD_Connection *conn, int rc)
{
	if (rc == TH_EFULL) { /* past the guests' share of the store (conv_guest_headroom), or full */
		LOG(LOG_WARN, "gateway: the store failed: %s (or past the guests' share of it)",
		    th_strerror(rc));
		return send_error(
		        conn, 503, "TH_UNAVAILABLE",
		        "This cannot be saved just now, and nothing was kept. Please try again in a "
		        "little while.",
		        30000);
	}
	LOG(LOG_ERROR, "gateway: the store failed: %s", th_strerror(rc));
	return send_error(conn, 503, "TH_UNAVAILABLE",
	                  "This could not be saved just now, and nothing was kept. Please try again.", 2000);
}

/* ---- limits --------------------------------------------------------------- */

/* Take one from @p key's bucket in @p l: @p per_period at once, refilling
 * steadily over @p period_ms.  @return 0 if allowed, else the ms to wait. */
static uint64_t rate_take(limiter *l, const void *key, size_t klen, unsigned per_period, uint64_t period_ms)
{
	uint64_t interval = per_period ? period_ms / per_period : period_ms;
	return lim_take(l, key, klen, per_period, interval ? interval : 1, th_mono_ms());
}

/* The client's address as a limiter key (never logged): IPv4 by address,
 * IPv6 by its /64 (what one subscriber or machine is given; counting whole
 * addresses would let one host take 2^64 budgets), IPv4-mapped IPv6 as
 * IPv4.  @return the key's length. */
static size_t client_key(gateway *gw, struct MHD_Connection *conn, unsigned char out[MAX_ADDR])
{
	const struct sockaddr *sa = NULL;
	struct sockaddr_storage fwd;
	if (gw->cfg->gw_trust_forwarded_for) {
		const char *xff = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Forwarded-For");
		if (xff && *xff) { /* the last hop is the one our proxy added */
			const char *last = strrchr(xff, ',');
			last = last ? last + 1 : xff;
			while (*last == ' ')
				last++;
			char text[MAX_ADDR];
			size_t n = strcspn(last, " ");
			if (n >= sizeof(text))
				n = sizeof(text) - 1;
			memcpy(text, last, n);
			text[n] = '\0';
			memset(&fwd, 0, sizeof(fwd));
			struct sockaddr_in *f4 = (struct sockaddr_in *)&fwd;
			struct sockaddr_in6 *f6 = (struct sockaddr_in6 *)&fwd;
			if (inet_pton(AF_INET, text, &f4->sin_addr) == 1) {
				f4->sin_family = AF_INET;
				sa = (const struct sockaddr *)&fwd;
			} else if (inet_pton(AF_INET6, text, &f6->sin6_addr) == 1) {
				f6->sin6_family = AF_INET6;
				sa = (const struct sockaddr *)&fwd;
			} else { /* not an address: count it by its text */
				out[0] = 't';
				memcpy(out + 1, text, n);
				return n + 1;
			}
		}
	}
	if (!sa) {
		const union MHD_ConnectionInfo *ci =
		        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		sa = ci ? ci->client_addr : NULL;
	}
	if (sa && sa->sa_family == AF_INET) {
		out[0] = 4;
		memcpy(out + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return 5;
	}
	if (sa && sa->sa_family == AF_INET6) {
		const unsigned char *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		if (memcmp(a, mapped, sizeof(mapped)) == 0) {
			out[0] = 4;
			memcpy(out + 1, a + 12, 4);
			return 5;
		}
		out[0] = 6;
		memcpy(out + 1, a, 8); /* the /64 */
		return 9;
	}
	out[0] = '?';
	return 1;
}

/* ---- cross-site requests ------------------------------------------------------ */

/* The origin of @p url as browsers write it in Origin: "scheme://host[:port]",
 * lower case, without the scheme's default port.  @return 0, or -1 if
 * @p url has no scheme and host (the origin "null" included). */
static int origin_of(const char *url, char *out, size_t cap)
{
	const char *sep = strstr(url, "://");
	if (!sep || sep == url)
		return -1;
	size_t slen = (size_t)(sep - url), alen = strcspn(sep + 3, "/?#");
	if (alen == 0 || slen + 3 + alen >= cap)
		return -1;
	for (size_t i = 0; i < slen + 3 + alen; i++) {
		char c = url[i];
		out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	size_t n = slen + 3 + alen;
	out[n] = '\0';
	if (slen == 5 && strncmp(out, "https", 5) == 0 && n > 4 && strcmp(out + n - 4, ":443") == 0)
		out[n - 4] = '\0';
	else if (slen == 4 && strncmp(out, "http", 4) == 0 && n > 3 && strcmp(out + n - 3, ":80") == 0)
		out[n - 3] = '\0';
	return 0;
}

/* Is this request from another site's page?  Browsers send Sec-Fetch-Site on
 * every request (Chromium 76, Firefox 90, Safari 16.4) and Origin on every
 * POST (the Fetch standard: any method but GET and HEAD, same-origin
 * requests included); a client that is not a browser sends neither
 * and is not a page anyone was tricked into.  Our own origin is
 * gateway.public_url's, or the one the Host header names (a proxy that
 * keeps Host, or a test on another port).  "same-site" is refused too: a
 * sibling subdomain's page is not the guest page. */
static int cross_site(gateway *gw, struct MHD_Connection *conn)
{
	const char *site = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-Fetch-Site");
	if (site && (strcmp(site, "cross-site") == 0 || strcmp(site, "same-site") == 0))
		return 1;
	const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
	if (!origin)
		return 0;
	char got[256], own[300];
	if (origin_of(origin, got, sizeof(got)) != 0)
		return 1; /* "null": a sandboxed frame, a file, a redirect across sites */
	if (gw->origin[0] && strcmp(got, gw->origin) == 0)
		return 0;
	const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
	const char *sep = strstr(got, "://");
	if (!host || !*host || strlen(host) > 200 || !sep)
		return 1;
	snprintf(own, sizeof(own), "%.*s%s", (int)(sep + 3 - got), got, host);
	char norm[256];
	return origin_of(own, norm, sizeof(norm)) != 0 || strcmp(got, norm) != 0;
}

/* Is the request's media type @p want (parameters such as charset allowed)? */
static int media_type_is(const char *ct, const char *want)
{
	size_t n = strlen(want);
	return ct && strncasecmp(ct, want, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* JSON routes take application/json: a page elsewhere can send a POST without
 * asking first only as text/plain, a form or multipart, so requiring JSON
 * makes the browser ask (CORS preflight), and the gateway never says yes.
 * An upload's body is the file: any type but those three, and not none (a
 * Blob without a type is sent without one, also without asking). */
static int content_type_ok(struct MHD_Connection *conn, int upload)
{
	const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
	if (!upload)
		return media_type_is(ct, "application/json");
	return ct && *ct && !media_type_is(ct, "text/plain") &&
	       !media_type_is(ct, "application/x-www-form-urlencoded") &&
	       !media_type_is(ct, "multipart/form-data");
}

/* ---- request helpers -------------------------------------------------------- */

static const char *bearer(struct MHD_Connection *conn)
{
	const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (!h || strncmp(h, "Bearer ", 7) != 0)
		return NULL;
	return h + 7;
}

/* Parse the request body as a JSON object; NULL (and an answer sent) if not. */
static json_t *body_object(struct MHD_Connection *conn, struct req *rq, enum MHD_Result *ret)
{
	json_error_t err;
	json_t *j = rq->len ? json_loadb(rq->body, rq->len, JSON_REJECT_DUPLICATES, &err) : NULL;
	if (!json_is_object(j)) {
		json_decref(j);
		*ret = send_error(conn, 400, "TH_BAD_REQUEST", "The body must be a JSON object.", 0);
		return NULL;
	}
	return j;
}

static int local_id_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n < 1 || n > CONV_MAX_LOCAL_ID)
		return 0;
	for (const char *p = s; *p; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '-' || *p == '_'))
			return 0;
	}
	return 1;
}

/* ---- page and invitations ------------------------------------------------------ */

static const char *lang_name(const char *code, const char **dir)
{
	static const struct {
		const char *code, *name, *dir;
	} known[] = {
	        {"en", "English", "ltr"},  {"es", "Español", "ltr"},    {"fr", "Français", "ltr"},
	        {"ar", "العربية", "rtl"},  {"fa", "فارسی", "rtl"},      {"ur", "اردو", "rtl"},
	        {"he", "עברית", "rtl"},    {"uk", "Українська", "ltr"}, {"ru", "Русский", "ltr"},
	        {"pl", "Polski", "ltr"},   {"pt", "Português", "ltr"},  {"de", "Deutsch", "ltr"},
	        {"it", "Italiano", "ltr"}, {"ro", "Română", "ltr"},     {"tr", "Türkçe", "ltr"},
	        {"so", "Soomaali", "ltr"}, {"ti", "ትግርኛ", "ltr"},       {"ps", "پښتو", "rtl"},
	};
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		if (!strcmp(known[i].code, code)) {
			*dir = known[i].dir;
			return known[i].name;
		}
	}
	*dir = "ltr";
	return code;
}

static enum MHD_Result handle_page(gateway *gw, struct MHD_Connection *conn)
{
	const struct config *cfg = gw->cfg;
	json_t *langs = json_array();
	for (size_t i = 0; i < cfg->gw_languages.n; i++) {
		const char *dir, *name = lang_name(cfg->gw_languages.v[i], &dir);
		json_array_append_new(langs, json_pack("{s:s, s:s, s:s}", "code", cfg->gw_languages.v[i],
		                                       "name", name, "dir", dir));
	}
	return send_json(conn, 200,
	                 json_pack("{s:s, s:s, s:o, s:b, s:I, s:b}", "title", cfg->gw_page_title, "exit_url",
	                           cfg->gw_exit_url, "languages", langs, "resume_codes", cfg->gw_resume_codes,
	                           "max_upload_bytes", (json_int_t)cfg->gw_max_upload_bytes, "accept_pdf",
	                           cfg->gw_accept_pdf));
}

static json_t *service_json(const struct config_service *svc)
{
	json_t *notices = json_object();
	for (size_t i = 0; i < svc->nnotices; i++)
		json_object_set_new(notices, svc->notices[i].lang, json_string(svc->notices[i].text));
	return json_pack("{s:{s:s, s:s, s:s}, s:{s:s, s:o}}", "service", "name", svc->name, "display_name",
	                 svc->display_name, "greeting", svc->greeting, "notice", "version",
	                 svc->notice_version, "languages", notices);
}

static enum MHD_Result invalid_invite(struct MHD_Connection *conn)
{
	return send_error(
	        conn, 404, "TH_INVITE_INVALID",
	        "This link does not work any more. It may have been used already, or it has expired. "
	        "Please ask the organisation for a new one.",
	        0);
}

/* The service an invitation or public entry names, or NULL (answer sent). */
static const struct config_service *resolve_entry(gateway *gw, struct MHD_Connection *conn, const json_t *j,
                                                  enum MHD_Result *ret)
{
	const char *invite = jsonx_str(j, "invite"), *service = jsonx_str(j, "service");
	if (!invite == !service) {
		*ret = send_error(conn, 400, "TH_BAD_REQUEST",
		                  "Give exactly one of \"invite\" or \"service\".", 0);
		return NULL;
	}
	const struct config_service *svc = NULL;
	if (invite) {
		store_txn *t;
		int rc = store_txn_begin(gw->env->st, 0, &t);
		if (rc) {
			*ret = store_failed(conn, rc);
			return NULL;
		}
		struct inv_info inv;
		rc = inv_check(t, invite, th_now_ms(), &inv);
		store_txn_abort(t);
		if (rc == TH_OK)
			svc = config_service_find(gw->cfg, inv.service);
		else if (rc != TH_ENOTFOUND) {
			*ret = store_failed(conn, rc);
			return NULL;
		}
	} else {
		svc = config_service_find(gw->cfg, service);
		if (svc && !svc->public_entry)
			svc = NULL;
	}
	if (!svc)
		*ret = invalid_invite(conn);
	return svc;
}

/*
 * An invitation opened (@p open: inv_open(), binding it to the page's claim)
 * or redeemed (inv_admit()), in a write transaction of its own.
 * @return 1 when let in, else 0 with the answer sent in @p ret.
 */
static int bind_invite(gateway *gw, struct MHD_Connection *conn, const char *invite, const char *claim,
                       int open, enum MHD_Result *ret)
{
	store_txn *t;
	int rc = store_txn_begin(gw->env->st, 1, &t);
	if (rc) {
		*ret = store_failed(conn, rc);
		return 0;
	}
	struct inv_info inv;
	rc = open ? inv_open(t, invite, claim, th_now_ms(), &inv) : inv_admit(t, invite, claim, th_now_ms());
	if (rc == TH_OK)
		rc = store_txn_commit(t);
	else
		store_txn_abort(t);
	if (rc == TH_EINVAL)
		*ret = send_error(conn, 400, "TH_BAD_REQUEST", "claim must be 32 base64url characters.", 0);
	else if (rc == TH_ENOTFOUND)
		*ret = invalid_invite(conn);
	else if (rc)
		*ret = store_failed(conn, rc);
	return rc == TH_OK;
}

/* Whether @p svc is open now, when it opens, and its crisis signposting in
 * every language (docs/gateway-api.md, "hours"; new reference). */
static json_t *hours_json(const struct config_service *svc)
{
	uint64_t opens = 0;
	int open = hours_open(&svc->hours, th_now_ms(), &opens);
	json_t *signs = json_object();
	for (size_t i = 0; i < svc->nsignposts; i++)
		json_object_set_new(signs, svc->signposts[i].lang, json_string(svc->signposts[i].text));
	json_t *h = json_pack("{s:b, s:o}", "open", open, "signposting", signs);
	if (!open && opens)
		json_object_set_new(h, "opens_ms", json_integer((json_int_t)opens));
	return h;
}

static enum MHD_Result handle_invitation(gateway *gw, struct MHD_Connection *conn, struct req *rq)
{
	enum MHD_Result ret;
	json_t *j = body_object(conn, rq, &ret);
	if (!j)
		return ret;
	const char *invite = jsonx_str(j, "invite"), *claim = jsonx_str(j, "claim");
	/* With a claim, bind; without, only look (a use bound to a page's claim
	 * is not free, so a copy of the link shows nothing either way). */
	if (invite && !bind_invite(gw, conn, invite, claim, claim != NULL, &ret)) {
		json_decref(j);
		return ret;
	}
	const struct config_service *svc = resolve_entry(gw, conn, j, &ret);
	json_decref(j);
	if (!svc)
		return ret;
	json_t *out = service_json(svc);
	json_object_set_new(out, "hours", hours_json(svc));
	return send_json(conn, 200, out);
}

static json_t *started_json(const struct conv_started *s)
{
	json_t *j = json_pack("{s:s, s:I, s:s}", "session", s->session, "expires_ms",
	                      (json_int_t)s->expires_ms, "pseudonym", s->pseudonym);
	if (s->resume[0])
		json_object_set_new(j, "resume_code", json_string(s->resume));
	return j;
}

/*
 * A public entry's conversations have two budgets, both token buckets that
 * refill steadily (docs/reliability.md, "Budgets"): the service's,
 * public_per_hour at once and one more every hour / public_per_hour; and
 * each address's (an IPv6 /64), gateway.public_per_address_per_hour but
 * never more than a tenth of the service's.  The address pays first, so a
 * client past its own budget takes nothing from the service's: one client
 * alone can spend at most a tenth of it, and while it floods, others start
 * conversations from what is left and what refills.
 * @return 1 when both allow (counted), else 0 with the answer sent in @p ret.
 */
static int public_budget(gateway *gw, struct MHD_Connection *conn, const struct config_service *svc,
                         enum MHD_Result *ret)
{
	unsigned per_addr = gw->cfg->gw_public_per_address, tenth = svc->public_per_hour / 10;
	if (per_addr > (tenth ? tenth : 1))
		per_addr = tenth ? tenth : 1;
	unsigned char key[MAX_ADDR + 66];
	size_t nlen = strnlen(svc->name, 65) + 1;
	memcpy(key, svc->name, nlen - 1);
	key[nlen - 1] = '\0';
	size_t klen = nlen + client_key(gw, conn, key + nlen);
	uint64_t wait = rate_take(gw->lim_public_addr, key, klen, per_addr, 3600000u);
	explicit_bzero(key, sizeof(key));
	if (wait) {
		*ret = send_error(conn, 429, "TH_LIMIT_EXCEEDED",
		                  "Several conversations were started from this connection recently. Please "
		                  "try again later, or go on with the one you started.",
		                  wait);
		return 0;
	}
	wait = rate_take(gw->lim_service, svc->name, strlen(svc->name), svc->public_per_hour, 3600000u);
	if (wait) {
		*ret = send_error(
		        conn, 429, "TH_LIMIT_EXCEEDED",
		        "Many people are getting in touch right now. Please try again a little later.", wait);
		return 0;
	}
	return 1;
}

static enum MHD_Result handle_redeem(gateway *gw, struct MHD_Connection *conn, struct req *rq)
{
	enum MHD_Result ret;
	json_t *j = body_object(conn, rq, &ret);
	if (!j)
		return ret;
	const struct config_service *svc = resolve_entry(gw, conn, j, &ret);
	if (!svc)
		goto out;
	json_t *consent = json_object_get(j, "consent");
	const char *version = jsonx_str(consent, "version"), *lang = jsonx_str(consent, "language");
	if (!json_is_object(consent) || !json_is_true(json_object_get(consent, "agreed"))) {
		ret = send_error(conn, 400, "TH_BAD_REQUEST",
		                 "consent.agreed must be true: a conversation starts only after agreeing.",
		                 0);
		goto out;
	}
	if (!version || strcmp(version, svc->notice_version) != 0) {
		ret = send_error(
		        conn, 400, "TH_BAD_REQUEST",
		        "consent.version is not the service's current notice version; read it again.", 0);
		goto out;
	}
	if (!lang || strlen(lang) < 2 || strlen(lang) > 8 ||
	    strspn(lang, "abcdefghijklmnopqrstuvwxyz-") != strlen(lang)) {
		ret = send_error(conn, 400, "TH_BAD_REQUEST",
		                 "consent.language must be a language code like \"en\".", 0);
		goto out;
	}
	const char *invite = jsonx_str(j, "invite");
	if (!invite && !public_budget(gw, conn, svc, &ret)) /* a public entry link */
		goto out;
	if (invite && !bind_invite(gw, conn, invite, jsonx_str(j, "claim"), 0, &ret))
		goto out;
	struct conv_started st;
	int rc = conv_redeem(gw->env, invite, invite ? NULL : svc->name, version, lang, &st);
	if (rc == TH_ENOTFOUND)
		ret = invalid_invite(conn);
	else if (rc)
		ret = store_failed(conn, rc);
	else {
		LOG(LOG_INFO, "gateway: a conversation started with %s", svc->name);
		if (gw->on_queue)
			gw->on_queue(gw->ctx);
		ret = send_json(conn, 200, started_json(&st));
	}
	explicit_bzero(&st, sizeof(st));
out:
	json_decref(j);
	return ret;
}

static enum MHD_Result handle_resume(gateway *gw, struct MHD_Connection *conn, struct req *rq)
{
	enum MHD_Result ret;
	json_t *j = body_object(conn, rq, &ret);
	if (!j)
		return ret;
	const char *code = jsonx_str(j, "resume_code");
	struct conv_started st;
	int rc = code ? conv_resume(gw->env, code, &st) : TH_ENOTFOUND;
	if (rc == TH_ENOTFOUND)
		ret = send_error(conn, 401, "TH_SESSION_INVALID",
		                 "That code does not match a conversation. A code works once: after it is "
		                 "used, the page where it was used shows the new one.",
		                 0);
	else if (rc == TH_ETOOLARGE)
		ret = send_error(
		        conn, 429, "TH_LIMIT_EXCEEDED",
		        "This conversation is already open on too many devices. Please go on with one "
		        "of them.",
		        3600000u);
	else if (rc)
		ret = store_failed(conn, rc);
	else
		ret = send_json(conn, 200, started_json(&st));
	explicit_bzero(&st, sizeof(st));
	json_decref(j);
	return ret;
}

/* ---- the conversation ----------------------------------------------------------- */

/* GET erasure/{receipt}: where an erasure stands, for the page that asked
 * for it ("erasing" until every step is done). */
static enum MHD_Result handle_erasure(gateway *gw, struct MHD_Connection *conn, const char *receipt)
{
	enum mx_erase_state st;
	int rc = conv_erasure_state(gw->env, receipt, &st);
	if (rc == TH_ENOTFOUND)
		return send_error(conn, 404, "TH_NOT_FOUND", "No such receipt.", 0);
	if (rc)
		return store_failed(conn, rc);
	const char *name = st == MX_ERASE_DONE         ? "deleted"
	                   : st == MX_ERASE_INCOMPLETE ? "incomplete"
	                                               : "erasing";
	return send_json(conn, 200, json_pack("{s:s, s:s}", "state", name, "receipt", receipt));
}

static enum MHD_Result handle_session(gateway *gw, struct MHD_Connection *conn, const struct conv_session *s)
{
	const struct config_service *svc = config_service_find(gw->cfg, s->service);
	json_t *out =
	        json_pack("{s:s, s:{s:s, s:s}, s:s, s:I, s:b, s:b}", "pseudonym", s->pseudonym, "service",
	                  "name", s->service, "display_name", svc ? svc->display_name : s->service, "state",
	                  s->state, "expires_ms", (json_int_t)s->expires_ms, "erase_only",
	                  s->erase_only ? 1 : 0, "calls", gw->cfg->calls_enabled);
	if (svc)
		json_object_set_new(out, "hours", hours_json(svc));
	return send_json(conn, 200, out);
}

/* A send past a budget (conv.h): the guest's own hourly bytes (429), or a
 * cap shared by every guest (503); either way nothing was kept. */
static enum MHD_Result budget_refused(struct MHD_Connection *conn, enum conv_send_result result,
                                      uint64_t retry)
{
	if (result == CONV_OVER_TOTAL) /* no wait helps: a 413 (gateway-api.md) */
		return send_error(conn, 413, "TH_CONVERSATION_FULL",
		                  "This conversation cannot take any more messages or files: it has "
		                  "reached its size limit. Nothing was kept.",
		                  0);
	if (result == CONV_OVER_BUDGET)
		return send_error(
		        conn, 429, "TH_LIMIT_EXCEEDED",
		        "You have sent a lot in the last hour. Please wait a little before sending more.",
		        retry ? retry : 1000);
	return send_error(conn, 503, "TH_UNAVAILABLE",
	                  "Many messages are waiting to be delivered just now, and this one was not kept. "
	                  "Please try again in a little while.",
	                  retry ? retry : 30000);
}

static enum MHD_Result handle_send(gateway *gw, struct MHD_Connection *conn, struct req *rq,
                                   const struct conv_session *s)
{
	enum MHD_Result ret;
	json_t *j = body_object(conn, rq, &ret);
	if (!j)
		return ret;
	const char *local_id = jsonx_str(j, "local_id"), *body = jsonx_str(j, "body");
	if (!local_id_ok(local_id)) {
		ret = send_error(conn, 400, "TH_BAD_REQUEST", "local_id must be 1-64 of A-Z a-z 0-9 - _.", 0);
	} else if (!body || !*body) {
		ret = send_error(conn, 400, "TH_BAD_REQUEST", "body must be a non-empty string.", 0);
	} else if (strlen(body) > gw->cfg->gw_max_message_bytes) {
		ret = send_error(conn, 413, "TH_TOO_LARGE", "That message is too long. Please split it.", 0);
	} else {
		enum conv_send_result result = CONV_SENT;
		uint64_t retry = 0;
		int rc = conv_send(gw->env, s->guest, local_id, body, &result, &retry);
		if (rc == TH_ENOTFOUND)
			ret = send_error(conn, 401, "TH_SESSION_INVALID", "This conversation has ended.", 0);
		else if (rc)
			ret = store_failed(conn, rc);
		else if (result == CONV_OVER_BUDGET || result == CONV_OVER_TOTAL || result == CONV_BUSY)
			ret = budget_refused(conn, result, retry);
		else if (result == CONV_NOT_READY)
			ret = send_error(conn, 409, "TH_NOT_READY", "The conversation is being set up.", 500);
		else if (result == CONV_CLOSED_NOW)
			ret = send_error(conn, 410, "TH_CLOSED", "This conversation was closed.", 0);
		else if (result == CONV_REFUSED)
			ret = send_error(conn, 403, "TH_FORBIDDEN", "This conversation cannot take messages.",
			                 0);
		else {
			if (gw->on_queue)
				gw->on_queue(gw->ctx);
			ret = send_accepted(conn);
		}
	}
	json_decref(j);
	return ret;
}

static enum MHD_Result handle_upload(gateway *gw, struct MHD_Connection *conn, struct req *rq,
                                     const struct conv_session *s)
{
	if (!gw->cfg->gw_max_upload_bytes)
		return send_error(conn, 403, "TH_FORBIDDEN", "Sending pictures and files is turned off here.",
		                  0);
	const char *local_id = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "local_id");
	if (!local_id_ok(local_id))
		return send_error(conn, 400, "TH_BAD_REQUEST", "local_id must be 1-64 of A-Z a-z 0-9 - _.",
		                  0);
	if (!rq->len)
		return send_error(conn, 400, "TH_BAD_REQUEST", "The body must be the file.", 0);
	/* The kind from the bytes, the file made afresh (media.h); the name the
	 * guest's device gave it is not even asked for. */
	const struct media_kind *kind = media_sniff((const unsigned char *)rq->body, rq->len);
	int pdf = kind && strcmp(kind->ext, "pdf") == 0;
	if (!kind || (!media_is_picture(kind) && !(pdf && gw->cfg->gw_accept_pdf)))
		return send_error(
		        conn, 415, "TH_UNSUPPORTED",
		        gw->cfg->gw_accept_pdf
		                ? "Only photos and pictures (JPEG, PNG, WebP) and PDF files can be sent."
		                : "Only photos and pictures (JPEG, PNG, WebP) can be sent here.",
		        0);
	unsigned char *clean = NULL;
	size_t len = 0;
	int verdict = media_clean(kind, (const unsigned char *)rq->body, rq->len, &clean, &len);
	if (verdict == MEDIA_TOO_LARGE)
		return send_error(conn, 413, "TH_TOO_LARGE",
		                  "That picture has too many pixels. Please send a smaller one.", 0);
	if (verdict == MEDIA_REFUSED)
		return send_error(conn, 415, "TH_UNSUPPORTED",
		                  "Moving pictures cannot be sent. Please send a photo or a still picture.",
		                  0);
	if (verdict == MEDIA_UNSAFE)
		return send_error(
		        conn, 415, "TH_UNSAFE_FILE",
		        "This PDF cannot be sent: it has parts that could act when it is opened, or "
		        "details about it that cannot be removed. A photo of it can be sent instead.",
		        0);
	if (verdict != MEDIA_OK)
		return send_error(conn, 415, "TH_DAMAGED", "That file seems damaged.", 0);
	enum conv_send_result result = CONV_SENT;
	uint64_t retry = 0;
	int rc = conv_send_media(gw->env, s->guest, local_id, kind, clean, len, &result, &retry);
	free(clean);
	if (rc == TH_ENOTFOUND)
		return send_error(conn, 401, "TH_SESSION_INVALID", "This conversation has ended.", 0);
	if (rc)
		return store_failed(conn, rc);
	if (result == CONV_OVER_BUDGET || result == CONV_OVER_TOTAL || result == CONV_BUSY)
		return budget_refused(conn, result, retry);
	if (result == CONV_NOT_READY)
		return send_error(conn, 409, "TH_NOT_READY", "The conversation is being set up.", 500);
	if (result == CONV_CLOSED_NOW)
		return send_error(conn, 410, "TH_CLOSED", "This conversation was closed.", 0);
	if (result == CONV_REFUSED)
		return send_error(conn, 403, "TH_FORBIDDEN", "This conversation cannot take messages.", 0);
	if (gw->on_queue)
		gw->on_queue(gw->ctx);
	return send_accepted(conn);
}

static enum MHD_Result answer_feed(gateway *gw, struct MHD_Connection *conn, const char *guest,
                                   uint64_t since)
{
	store_txn *t;
	int rc = store_txn_begin(gw->env->st, 0, &t);
	if (rc)
		return store_failed(conn, rc);
	json_t *events = NULL;
	uint64_t next = since;
	rc = feed_read(t, guest, since, &events, &next);
	json_t *c = NULL;
	if (!rc)
		store_get_json(t, STORE_CONVS, guest, &c);
	store_txn_abort(t);
	if (rc)
		return store_failed(conn, rc);
	const char *state = jsonx_str(c, "state");
	json_t *j = json_pack("{s:o, s:I, s:s}", "events", events, "next", (json_int_t)next, "state",
	                      state ? state : CONV_CLOSED);
	json_decref(c);
	return send_json(conn, 200, j);
}

static void waiter_unlink(gateway *gw, struct waiter *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		gw->waiters = w->next;
	if (w->next)
		w->next->prev = w->prev;
	w->prev = w->next = NULL;
	gw->nwaiting--;
}

static enum MHD_Result handle_feed(gateway *gw, struct MHD_Connection *conn, struct req *rq,
                                   const struct conv_session *s)
{
	if (rq->resumed) /* the wait is over: answer with what there is */
		return answer_feed(gw, conn, rq->w.guest, rq->w.since);
	uint64_t since = 0, timeout = FEED_DEFAULT_MS;
	const char *sv = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "since");
	const char *tv = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "timeout_ms");
	if ((sv && *sv && th_parse_u64(sv, UINT64_MAX / 2, &since) != TH_OK) ||
	    (tv && *tv && th_parse_u64(tv, UINT64_MAX / 2, &timeout) != TH_OK))
		return send_error(conn, 400, "TH_BAD_REQUEST", "since and timeout_ms must be whole numbers.",
		                  0);
	if (timeout > FEED_MAX_MS)
		timeout = FEED_MAX_MS;
	store_txn *t;
	int rc = store_txn_begin(gw->env->st, 0, &t);
	if (rc)
		return store_failed(conn, rc);
	/* A first read (since 0) answers with whatever there is; after that,
	 * the guest's own echoed messages alone do not end the wait. */
	int ready = since == 0 ? feed_has_after(t, s->guest, since) : feed_has_news(t, s->guest, since);
	store_txn_abort(t);
	if (ready || timeout == 0)
		return answer_feed(gw, conn, s->guest, since);
	/* Nothing yet: park the connection without a thread. */
	memcpy(rq->w.guest, s->guest, sizeof(rq->w.guest));
	rq->w.since = since;
	rq->w.deadline = th_mono_ms() + timeout;
	rq->w.conn = conn;
	pthread_mutex_lock(&gw->mu);
	if (gw->stop) {
		pthread_mutex_unlock(&gw->mu);
		return answer_feed(gw, conn, s->guest, since);
	}
	/* A guest's waiting polls, all their sessions together, are capped.  The
	 * new one is refused rather than the oldest answered: an answered poll
	 * comes straight back, so pages past the cap would take turns evicting
	 * each other for ever; refused, the extra page waits retry_after_ms
	 * (its next poll, without waiting, still brings what is new). */
	unsigned mine = 0;
	for (struct waiter *w = gw->waiters; w; w = w->next)
		mine += strcmp(w->guest, s->guest) == 0;
	if (mine >= gw->cfg->gw_max_polls_per_guest) {
		pthread_mutex_unlock(&gw->mu);
		return send_error(
		        conn, 429, "TH_LIMIT_EXCEEDED",
		        "This conversation is open in too many windows or devices at once. Close the "
		        "ones you do not use.",
		        POLLS_RETRY_MS);
	}
	rq->w.next = gw->waiters;
	rq->w.prev = NULL;
	if (gw->waiters)
		gw->waiters->prev = &rq->w;
	gw->waiters = &rq->w;
	gw->nwaiting++;
	gw->nheld++;
	rq->in_list = 1;
	rq->held = 1;
	MHD_suspend_connection(conn);
	pthread_cond_signal(&gw->cv); /* the deadline may be the nearest */
	pthread_mutex_unlock(&gw->mu);
	return MHD_YES;
}

/* ---- pictures and files for the guest ------------------------------------------ */

/* One answer for every id that names no picture or file of this guest's own
 * feed: an unknown id, another kind of entry, or not a number. */
static enum MHD_Result no_media(struct MHD_Connection *conn)
{
	return send_error(conn, 404, "TH_NOT_FOUND", "There is no such picture or file here.", 0);
}

/* Free @p j, and give back the bytes it holds; gw->mu held. */
static void job_free(gateway *gw, struct media_job *j)
{
	if (j->buf)
		gw->media_held -= j->len;
	free(j->buf);
	free(j);
}

/* A fetched file being sent: freed by libmicrohttpd once sent (or not). */
struct held {
	gateway *gw;
	unsigned char *buf;
	size_t len;
};

static void held_free(void *cls)
{
	struct held *h = cls;
	pthread_mutex_lock(&h->gw->mu);
	h->gw->media_held -= h->len;
	pthread_mutex_unlock(&h->gw->mu);
	free(h->buf);
	free(h);
}

/* GET /media/{id}: look the entry up in the caller's own feed, then park the
 * connection and hand the fetch to the fetcher thread (fetch_main). */
static enum MHD_Result handle_media(gateway *gw, struct MHD_Connection *conn, struct req *rq,
                                    const struct conv_session *s, const char *idtext)
{
	uint64_t id;
	if (th_parse_u64(idtext, UINT64_MAX / 2, &id) != TH_OK)
		return no_media(conn);
	store_txn *t;
	int rc = store_txn_begin(gw->env->st, 0, &t);
	if (rc)
		return store_failed(conn, rc);
	struct media_attachment att;
	rc = feed_attachment(t, s->guest, id, &att);
	store_txn_abort(t);
	if (rc == TH_ENOTFOUND || rc == TH_EINVAL)
		return no_media(conn);
	if (rc)
		return store_failed(conn, rc);
	struct media_job *j = xcalloc(1, sizeof(*j));
	if (media_mxc_parse(att.mxc, j->server, j->media_id) != TH_OK) {
		free(j);
		return no_media(conn);
	}
	media_ascii_name(att.name, j->filename);
	j->conn = conn;
	pthread_mutex_lock(&gw->mu);
	if (gw->stop || gw->njobs >= MEDIA_QUEUE_MAX || gw->media_held >= MEDIA_HELD_MAX) {
		int stopping = gw->stop;
		pthread_mutex_unlock(&gw->mu);
		free(j);
		return send_error(conn, 503, "TH_UNAVAILABLE",
		                  stopping
		                          ? "This service is restarting. Please try again in a moment."
		                          : "Many pictures and files are being fetched right now. Please try "
		                            "again in a moment.",
		                  stopping ? 5000 : 1000);
	}
	if (gw->jobs_tail)
		gw->jobs_tail->next = j;
	else
		gw->jobs = j;
	gw->jobs_tail = j;
	gw->njobs++;
	gw->nheld++;
	rq->job = j;
	rq->held = 1;
	MHD_suspend_connection(conn);
	pthread_cond_signal(&gw->fetch_cv);
	pthread_mutex_unlock(&gw->mu);
	return MHD_YES;
}

/* The fetcher is done and resumed us: answer from its buffer. */
static enum MHD_Result answer_media(gateway *gw, struct MHD_Connection *conn, struct req *rq)
{
	struct media_job *j = rq->job;
	rq->job = NULL;
	enum MHD_Result ret;
	if (j->status != 200) {
		ret = send_error(conn, j->status, j->errcode, j->error, j->retry_after_ms);
		pthread_mutex_lock(&gw->mu);
		job_free(gw, j);
		pthread_mutex_unlock(&gw->mu);
		return ret;
	}
	/* The bytes go to the response, which gives them back when sent. */
	struct held *h = xmalloc(sizeof(*h));
	*h = (struct held){gw, j->buf, j->len};
	j->buf = NULL;
	struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback_cls(
	        h->len, h->buf ? (void *)h->buf : (void *)"", held_free, h);
	if (!r)
		held_free(h);
	if (r) {
		/* Only the four picture types the page shows are served as what
		 * they are; everything else is a download the browser never renders. */
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
		                        j->mimetype ? j->mimetype : "application/octet-stream");
		if (!j->mimetype) {
			char *cd = xasprintf("attachment; filename=\"%s\"", j->filename);
			MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_DISPOSITION, cd);
			free(cd);
		}
		security_headers(r, media_csp);
		ret = queue_response(conn, 200, r);
		MHD_destroy_response(r);
	} else {
		ret = MHD_NO;
	}
	free(j);
	return ret;
}

/* ---- the page's files --------------------------------------------------------- */

/* A document (the page, the SVG icon, which could hold script) gets every
 * policy; a script, style sheet or strings file is never shown as a
 * document (nosniff), so the document policies would be bytes for nothing
 * on each of them. */
static void asset_headers(struct MHD_Response *r, const char *type)
{
	if (!strncmp(type, "text/html", 9) || !strncmp(type, "image/svg", 9)) {
		common_headers(r);
		return;
	}
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(r, "Cross-Origin-Resource-Policy", "same-origin");
	MHD_add_response_header(r, "Cache-Control", "no-store");
}

static enum MHD_Result handle_asset(struct MHD_Connection *conn, const char *url)
{
	const struct web_asset *a = web_asset_find(url);
	if (!a)
		return send_error(conn, 404, "TH_NOT_FOUND", "Not found.", 0);
	const char *inm = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
	const char *ae = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT_ENCODING);
	int gz = a->gzip && ae && strstr(ae, "gzip");
	struct MHD_Response *r;
	unsigned status = 200;
	if (inm && a->etag && strcmp(inm, a->etag) == 0) {
		r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
		status = 304;
	} else {
		r = MHD_create_response_from_buffer(gz ? a->gzip_len : a->len,
		                                    (void *)(gz ? a->gzip : a->data), MHD_RESPMEM_PERSISTENT);
		if (gz)
			MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_ENCODING, "gzip");
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, a->content_type);
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_VARY, "Accept-Encoding");
	if (a->etag)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, a->etag);
	asset_headers(r, a->content_type);
	enum MHD_Result ret = queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* POST /call/{signal,turn,ask}: a call's signals from the page, TURN
 * credentials for it, and asking staff for one (bridge/calls.h). */
static enum MHD_Result handle_call(gateway *gw, struct MHD_Connection *conn, struct req *rq,
                                   const struct conv_session *s, const char *what)
{
	const struct config *cfg = gw->cfg;
	enum MHD_Result ret;
	if (!cfg->calls_enabled)
		return send_error(conn, 404, "TH_NOT_FOUND", "Calls are not offered here.", 0);
	json_t *j = body_object(conn, rq, &ret);
	if (!j)
		return ret;
	enum calls_result result = CALLS_BAD_SIGNAL;
	int rc = TH_ENOTFOUND;
	if (strcmp(what, "signal") == 0)
		rc = calls_guest_signal(gw->env, s->guest, jsonx_str(j, "type"),
		                        json_object_get(j, "content"), &result);
	else if (strcmp(what, "turn") == 0 || strcmp(what, "ask") == 0)
		rc = what[0] == 't' ? calls_guest_may(gw->env, s->guest, &result)
		                    : calls_guest_ask(gw->env, s->guest, &result);
	json_decref(j);
	if (rc == TH_ENOTFOUND)
		return send_error(conn, 404, "TH_NOT_FOUND", "No such endpoint.", 0);
	if (rc)
		return store_failed(conn, rc);
	switch (result) {
	case CALLS_SENT:
		break;
	case CALLS_NOTHING:
		return send_json(conn, 202, json_pack("{s:b}", "sent", 0));
	case CALLS_TOO_SOON:
		return send_error(conn, 429, "TH_LIMIT_EXCEEDED", "A call was started a moment ago.",
		                  CALLS_MIN_GAP_MS);
	case CALLS_NOT_READY:
		return send_error(conn, 409, "TH_NOT_READY", "The conversation is being set up.", 500);
	case CALLS_CLOSED:
		return send_error(conn, 410, "TH_CLOSED", "This conversation was closed.", 0);
	case CALLS_REFUSED:
		return send_error(conn, 403, "TH_FORBIDDEN", "Calls are not possible in this conversation.",
		                  0);
	case CALLS_BAD_SIGNAL:
		return send_error(conn, 400, "TH_BAD_REQUEST", "Not a call signal that can be sent.", 0);
	}
	if (what[0] != 't') {
		if (gw->on_queue)
			gw->on_queue(gw->ctx);
		return send_json(conn, 202, json_pack("{s:b}", "sent", 1));
	}
	struct turn_cred cred;
	if ((rc = turn_mint(cfg->calls_turn_secret, th_now_ms() / 1000, cfg->calls_turn_ttl_s, &cred)))
		return store_failed(conn, rc);
	json_t *uris = json_array();
	for (size_t i = 0; i < cfg->calls_turn_uris.n; i++)
		json_array_append_new(uris, json_string(cfg->calls_turn_uris.v[i]));
	ret = send_json(conn, 200,
	                json_pack("{s:s, s:s, s:o, s:I}", "username", cred.username, "password",
	                          cred.password, "uris", uris, "ttl", (json_int_t)cfg->calls_turn_ttl_s));
	explicit_bzero(&cred, sizeof(cred));
	return ret;
}

/* ---- dispatch ------------------------------------------------------------------ */

enum route {
	R_NONE = 0,
	R_PAGE,
	R_INVITATION,
	R_REDEEM,
	R_RESUME,
	R_SESSION,
	R_SEND,
	R_FEED,
	R_LEAVE,
	R_ERASE,
	R_UPLOAD,
	R_MEDIA,
	R_HELP,
	R_ERASURE,
	R_CALL,
};

static const struct {
	const char *path;
	const char *method;
	enum route route;
	int session;   /* needs a session token */
	int addr_rate; /* counts against the per-address limit */
	int prefix;    /* the path is a prefix; the rest is the argument */
} routes[] = {
        {API "/page", "GET", R_PAGE, 0, 0, 0},
        {API "/invitation", "POST", R_INVITATION, 0, 1, 0},
        {API "/redeem", "POST", R_REDEEM, 0, 1, 0},
        {API "/resume", "POST", R_RESUME, 0, 1, 0},
        {API "/session", "GET", R_SESSION, 1, 0, 0},
        {API "/send", "POST", R_SEND, 1, 0, 0},
        {API "/feed", "GET", R_FEED, 1, 0, 0},
        {API "/leave", "POST", R_LEAVE, 1, 0, 0},
        {API "/erase", "POST", R_ERASE, 1, 0, 0},
        {API "/upload", "POST", R_UPLOAD, 1, 0, 0},
        {API "/media/", "GET", R_MEDIA, 1, 0, 1},
        {API "/help", "POST", R_HELP, 1, 0, 0},
        /* an erasure's receipt is its own key (60 bits): no session, no count */
        {API "/erasure/", "GET", R_ERASURE, 0, 0, 1},
        {API "/call/", "POST", R_CALL, 1, 0, 1},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

static int route_find(const char *url)
{
	for (size_t i = 0; i < NROUTES; i++) {
		size_t plen = strlen(routes[i].path);
		if (routes[i].prefix ? strncmp(routes[i].path, url, plen) == 0
		                     : strcmp(routes[i].path, url) == 0)
			return (int)i;
	}
	return -1;
}

/* Note a refusal on @p rq, to send once its body is read.  @return -1. */
static int refuse(struct req *rq, unsigned status, const char *errcode, const char *error,
                  uint64_t retry_after_ms)
{
	rq->refused = 1;
	rq->r_status = status;
	rq->r_errcode = errcode;
	rq->r_error = error;
	rq->r_retry = retry_after_ms;
	return -1;
}

/* Hold @p n more body bytes for @p rq within gateway.max_body_bytes_in_flight.
 * @return 0, or -1 (refused, 503 noted on @p rq). */
static int body_reserve(gateway *gw, struct req *rq, size_t n)
{
	pthread_mutex_lock(&gw->mu);
	int ok = gw->body_in_flight + n <= gw->cfg->gw_max_body_in_flight;
	if (ok) {
		gw->body_in_flight += n;
		rq->reserved += n;
	}
	pthread_mutex_unlock(&gw->mu);
	if (!ok)
		return refuse(
		        rq, 503, "TH_UNAVAILABLE",
		        "Many pictures and messages are arriving right now. Please try again in a moment.",
		        2000);
	return 0;
}

/*
 * What the headers alone decide, before any body byte is kept: a POST from
 * another site's page or of the wrong type, the per-address limit, the
 * session token and its limit, and room for the declared body.  A refusal
 * is noted on @p rq; the body is then read and thrown away (or not read,
 * when far over DRAIN_MAX) and the refusal sent.
 * @return 0, or -1 when refused.
 */
static int precheck(gateway *gw, struct MHD_Connection *conn, struct req *rq, uint64_t declared)
{
	size_t i = (size_t)rq->route;
	if (strcmp(routes[i].method, "POST") == 0) {
		if (cross_site(gw, conn))
			return refuse(
			        rq, 403, "TH_CROSS_SITE",
			        "This request came from another site's page, so it was refused. Please open "
			        "the conversation page itself.",
			        0);
		if (!content_type_ok(conn, routes[i].route == R_UPLOAD))
			return refuse(rq, 415, "TH_CONTENT_TYPE",
			              routes[i].route == R_UPLOAD
			                      ? "An upload's Content-Type must be the file's type or "
			                        "application/octet-stream."
			                      : "The body must be sent as Content-Type: application/json.",
			              0);
	}
	if (routes[i].addr_rate) {
		unsigned char key[MAX_ADDR];
		size_t klen = client_key(gw, conn, key);
		uint64_t wait = rate_take(gw->lim_addr, key, klen, gw->cfg->gw_address_rate, 60000u);
		explicit_bzero(key, sizeof(key));
		if (wait)
			return refuse(rq, 429, "TH_LIMIT_EXCEEDED", "Too many tries. Please wait a moment.",
			              wait);
	}
	if (routes[i].session) {
		const char *token = bearer(conn);
		int rc = token ? conv_auth(gw->env->st, token, th_now_ms(), &rq->s) : TH_ENOTFOUND;
		if (rc == TH_ENOTFOUND)
			return refuse(rq, 401, "TH_SESSION_INVALID",
			              "This conversation has ended or the session expired.", 0);
		if (rc) {
			LOG(LOG_ERROR, "gateway: the store failed: %s", th_strerror(rc));
			return refuse(
			        rq, 503, "TH_UNAVAILABLE",
			        "This could not be saved just now, and nothing was kept. Please try again.",
			        2000);
		}
		uint64_t wait = rate_take(gw->lim_session, rq->s.guest, strlen(rq->s.guest),
		                          gw->cfg->gw_session_rate, 60000u);
		if (wait)
			return refuse(rq, 429, "TH_LIMIT_EXCEEDED",
			              "Too many requests. Please wait a moment.", wait);
		/* A conversation the guest ended, or staff removed them from: its
		 * sessions are good for deleting their data, and nothing else. */
		if (rq->s.erase_only && routes[i].route != R_ERASE && routes[i].route != R_SESSION)
			return refuse(rq, 401, "TH_SESSION_INVALID",
			              "This conversation has ended or the session expired.", 0);
		rq->authed = 1;
	}
	if (declared > 0 && declared <= rq->cap)
		return body_reserve(gw, rq, (size_t)declared);
	return 0;
}

static enum MHD_Result send_refusal(struct MHD_Connection *conn, struct req *rq)
{
	return send_error(conn, rq->r_status, rq->r_errcode, rq->r_error, rq->r_retry);
}

/* POST /help: "I need help now" (docs/gateway-api.md).  Staff and the
 * duty leads are told at once; a second tap within HELP_REPEAT_MS is
 * confirmed the same way but alerts nobody again (the session limiter). */
#define HELP_REPEAT_MS 60000u
static enum MHD_Result handle_help(gateway *gw, struct MHD_Connection *conn, const struct conv_session *s)
{
	char key[GUESTS_MAX_USER_ID + 6];
	int klen = snprintf(key, sizeof(key), "help:%s", s->guest);
	if (rate_take(gw->lim_session, key, (size_t)klen, 1, HELP_REPEAT_MS))
		return send_json(conn, 200, json_pack("{s:b, s:b}", "received", 1, "repeat", 1));
	uint64_t when = 0;
	int rc = conv_help(gw->env, s->guest, &when);
	if (rc == TH_ENOTFOUND)
		return send_error(conn, 404, "TH_NOT_FOUND", "There is no conversation to ask in.", 0);
	if (rc)
		return store_failed(conn, rc);
	LOG(LOG_INFO, "gateway: a guest asked for help now");
	if (gw->on_queue)
		gw->on_queue(gw->ctx);
	return send_json(conn, 200,
	                 json_pack("{s:b, s:b, s:I}", "received", 1, "repeat", 0, "at_ms", (json_int_t)when));
}

static enum MHD_Result dispatch(gateway *gw, struct MHD_Connection *conn, const char *url, const char *method,
                                struct req *rq)
{
	size_t i = rq->route >= 0 ? (size_t)rq->route : NROUTES;
	if (i == NROUTES) {
		if (strncmp(url, API, strlen(API)) == 0 || strncmp(url, "/_", 2) == 0)
			return send_error(conn, 404, "TH_NOT_FOUND", "No such endpoint.", 0);
		if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
			return send_error(conn, 405, "TH_METHOD", "Only GET here.", 0);
		return handle_asset(conn, url);
	}
	if (strcmp(routes[i].method, method) != 0)
		return send_error(conn, 405, "TH_METHOD", "Wrong method for this endpoint.", 0);
	if (rq->too_large)
		return send_error(conn, 413, "TH_TOO_LARGE", "The request is too large.", 0);
	if (routes[i].session && !rq->authed) /* precheck answers first; never reached */
		return send_error(conn, 401, "TH_SESSION_INVALID",
		                  "This conversation has ended or the session expired.", 0);
	const struct conv_session s = rq->s;
	switch (routes[i].route) {
	case R_PAGE:
		return handle_page(gw, conn);
	case R_INVITATION:
		return handle_invitation(gw, conn, rq);
	case R_REDEEM:
		return handle_redeem(gw, conn, rq);
	case R_RESUME:
		return handle_resume(gw, conn, rq);
	case R_SESSION:
		return handle_session(gw, conn, &s);
	case R_SEND:
		return handle_send(gw, conn, rq, &s);
	case R_FEED:
		return handle_feed(gw, conn, rq, &s);
	case R_LEAVE: {
		int rc = conv_leave(gw->env, s.guest);
		if (rc && rc != TH_ENOTFOUND)
			return store_failed(conn, rc);
		if (gw->on_queue)
			gw->on_queue(gw->ctx);
		gw_notify(gw);
		return send_json(conn, 200, json_object());
	}
	case R_ERASE: {
		enum MHD_Result ret;
		json_t *j = body_object(conn, rq, &ret);
		if (!j)
			return ret;
		int confirmed = json_is_true(json_object_get(j, "confirm"));
		json_decref(j);
		if (!confirmed)
			return send_error(conn, 400, "TH_BAD_REQUEST", "confirm must be true.", 0);
		char receipt[CONV_RECEIPT_LEN + 1];
		int rc = conv_erase(gw->env, s.guest, receipt);
		if (rc == TH_EEXIST)
			return send_error(
			        conn, 409, "TH_ERASURE_HELD",
			        "Your data cannot be deleted just now: the service must keep it for a "
			        "while to keep someone safe. Staff and the safeguarding lead have been "
			        "told you asked. Please ask them what happens next.",
			        0);
		if (rc == TH_ENOTFOUND)
			return send_error(conn, 401, "TH_SESSION_INVALID",
			                  "This conversation has ended or the session expired.", 0);
		if (rc)
			return store_failed(conn, rc);
		LOG(LOG_INFO, "gateway: a guest asked for their data to be deleted; erasure queued");
		if (gw->on_queue)
			gw->on_queue(gw->ctx);
		/* Not "erased": the homeserver's part is still to come (GET erasure/{receipt}). */
		return send_json(conn, 202, json_pack("{s:s, s:s}", "state", "erasing", "receipt", receipt));
	}
	case R_ERASURE:
		return handle_erasure(gw, conn, url + strlen(routes[i].path));
	case R_UPLOAD:
		return handle_upload(gw, conn, rq, &s);
	case R_MEDIA:
		return handle_media(gw, conn, rq, &s, url + strlen(routes[i].path));
	case R_HELP:
		return handle_help(gw, conn, &s);
	case R_CALL:
		return handle_call(gw, conn, rq, &s, url + strlen(routes[i].path));
	case R_NONE:
		break;
	}
	return send_error(conn, 404, "TH_NOT_FOUND", "No such endpoint.", 0);
}

static enum MHD_Result handle_request(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version, const char *upload_data,
                                      size_t *upload_data_size, void **con_cls)
{
	(void)version;
	gateway *gw = cls;
	struct req *rq = *con_cls;
	if (!rq) {
		rq = xcalloc(1, sizeof(*rq));
		*con_cls = rq;
		rq->route = route_find(url);
		rq->cap = strcmp(url, API "/upload") == 0 ? gw->cfg->gw_max_upload_bytes
		                                          : gw->cfg->gw_max_body_bytes;
		const char *cl =
		        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		uint64_t declared = 0;
		if (!cl || th_parse_u64(cl, UINT64_MAX / 2, &declared) != TH_OK)
			declared = 0;
		if (rq->route >= 0 && strcmp(routes[rq->route].method, method) == 0)
			precheck(gw, conn, rq, declared);
		/* Refused on its headers: nothing of the body is kept.  A body up to
		 * DRAIN_MAX is read and thrown away before the answer; further
		 * over, the answer goes at once and the connection closes. */
		if (rq->refused)
			return declared <= DRAIN_MAX ? MHD_YES : send_refusal(conn, rq);
		if (declared > rq->cap) {
			rq->too_large = 1;
			/* A little over: read it and throw it away, then answer 413 (see
			 * dispatch).  Closing with the body unread makes the kernel
			 * reset the connection, and a client still sending may see
			 * the reset, not the answer.  Far over: refuse before reading. */
			if (declared - rq->cap <= DRAIN_MAX)
				return MHD_YES;
			return send_error(conn, 413, "TH_TOO_LARGE", "The request is too large.", 0);
		}
		return MHD_YES;
	}
	if (*upload_data_size) {
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		if (rq->refused || rq->too_large)
			return MHD_YES; /* read and thrown away */
		if (rq->len + n > rq->cap) {
			rq->too_large = 1;
			return MHD_YES;
		}
		/* A body without Content-Length (chunked) is counted as it comes. */
		if (rq->len + n > rq->reserved && body_reserve(gw, rq, rq->len + n - rq->reserved) != 0)
			return MHD_YES;
		if (rq->len + n > rq->alloc) {
			rq->alloc = rq->len + n + 256;
			rq->body = xrealloc(rq->body, rq->alloc);
		}
		memcpy(rq->body + rq->len, upload_data, n);
		rq->len += n;
		return MHD_YES;
	}
	if (rq->refused)
		return send_refusal(conn, rq);
	if (rq->job) { /* resumed: the fetcher is done with the job */
		pthread_mutex_lock(&gw->mu);
		int done = rq->job->state == JOB_DONE;
		pthread_mutex_unlock(&gw->mu);
		if (done)
			return answer_media(gw, conn, rq);
	}
	if (rq->in_list) { /* resumed: the waiter thread unlinked us */
		rq->in_list = 0;
		rq->resumed = 1;
	}
	enum MHD_Result ret = dispatch(gw, conn, url, method, rq);
	return ret;
}

_Static_assert(R_CALL + 1 == GW_STATS_ROUTES, "gw_stats: one row per route");

static const char *const route_names[GW_STATS_ROUTES] = {
        "static", "page",  "invitation", "redeem", "resume", "session", "send", "feed",
        "leave",  "erase", "upload",     "media",  "help",   "erasure", "call",
};
static const char *const class_names[GW_STATS_CLASSES] = {"2xx", "3xx", "4xx", "429", "5xx"};

const char *gw_stats_route_name(unsigned i)
{
	return i < GW_STATS_ROUTES ? route_names[i] : NULL;
}

const char *gw_stats_class_name(unsigned i)
{
	return i < GW_STATS_CLASSES ? class_names[i] : NULL;
}

/* Count the answer handle_request queued, if it did (a parked poll is
 * counted when it is answered). */
static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size,
                              void **con_cls)
{
	gateway *gw = cls;
	queued_status = 0;
	enum MHD_Result ret =
	        handle_request(cls, conn, url, method, version, upload_data, upload_data_size, con_cls);
	unsigned st = queued_status;
	if (st >= 200 && st < 600) {
		unsigned route = R_NONE;
		for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
			size_t plen = strlen(routes[i].path);
			if (routes[i].prefix ? strncmp(routes[i].path, url, plen) == 0
			                     : strcmp(routes[i].path, url) == 0) {
				route = routes[i].route;
				break;
			}
		}
		unsigned cls_i = st == 429 ? 3 : st >= 500 ? 4 : st >= 400 ? 2 : st >= 300 ? 1 : 0;
		atomic_fetch_add_explicit(&gw->requests[route][cls_i], 1, memory_order_relaxed);
	}
	return ret;
}

void gw_stats_get(gateway *gw, struct gw_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!gw)
		return;
	for (unsigned r = 0; r < GW_STATS_ROUTES; r++)
		for (unsigned c = 0; c < GW_STATS_CLASSES; c++)
			out->requests[r][c] = atomic_load_explicit(&gw->requests[r][c], memory_order_relaxed);
	out->waiting = gw_waiting(gw);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
	(void)conn;
	(void)toe;
	gateway *gw = cls;
	struct req *rq = *con_cls;
	if (!rq)
		return;
	if (rq->held) {
		pthread_mutex_lock(&gw->mu);
		if (rq->in_list && rq->w.conn) /* died while parked, still linked */
			waiter_unlink(gw, &rq->w);
		struct media_job *j = rq->job;
		if (j && j->state == JOB_QUEUED) { /* died while waiting its turn */
			struct media_job **p = &gw->jobs, *prev = NULL;
			while (*p != j) {
				prev = *p;
				p = &(*p)->next;
			}
			*p = j->next;
			if (gw->jobs_tail == j)
				gw->jobs_tail = prev;
			gw->njobs--;
			job_free(gw, j);
		} else if (j && j->state == JOB_RUNNING) {
			j->orphaned = 1; /* the fetcher frees it */
		} else if (j) {
			job_free(gw, j);
		}
		rq->job = NULL;
		if (--gw->nheld == 0)
			pthread_cond_broadcast(&gw->drained);
		pthread_mutex_unlock(&gw->mu);
	}
	if (rq->reserved) {
		pthread_mutex_lock(&gw->mu);
		gw->body_in_flight -= rq->reserved;
		pthread_mutex_unlock(&gw->mu);
	}
	if (rq->body)
		explicit_bzero(rq->body, rq->len);
	free(rq->body);
	explicit_bzero(&rq->s, sizeof(rq->s));
	free(rq);
	*con_cls = NULL;
}

/* ---- the waiter thread ------------------------------------------------------- */

/* libmicrohttpd does not watch a suspended connection, so a page that went
 * away while its poll was parked (quick exit, a closed tab, a lost network)
 * would keep its socket and connection slot until the poll's timeout.  Once
 * a second the waiter looks at every parked socket, without blocking, and
 * lets go of those whose peer hung up.  Called with gw->mu held. */
static void mark_hung_up(gateway *gw)
{
	size_t n = gw->nwaiting, i = 0;
	if (n == 0)
		return;
	struct pollfd *p = xmalloc(n * sizeof(*p));
	struct waiter **ws = xmalloc(n * sizeof(*ws));
	for (struct waiter *w = gw->waiters; w && i < n; w = w->next) {
		const union MHD_ConnectionInfo *ci =
		        MHD_get_connection_info(w->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		if (!ci)
			continue;
		p[i] = (struct pollfd){.fd = ci->connect_fd, .events = POLLRDHUP};
		ws[i++] = w;
	}
	if (i && poll(p, (nfds_t)i, 0) > 0) {
		for (size_t k = 0; k < i; k++) {
			if (p[k].revents & (POLLRDHUP | POLLHUP | POLLERR))
				ws[k]->hung_up = 1;
		}
	}
	free(p);
	free(ws);
}

static void *waiter_main(void *arg)
{
	gateway *gw = arg;
	uint64_t hup_check = 0;
	pthread_mutex_lock(&gw->mu);
	for (;;) {
		uint64_t now = th_mono_ms(), next = now + 1000;
		for (struct waiter *w = gw->waiters; w; w = w->next) {
			if (w->deadline < next)
				next = w->deadline;
		}
		if (!gw->stop && !gw->notified && next > now) {
			uint64_t until = th_now_ms() + (next - now);
			struct timespec ts = {.tv_sec = (time_t)(until / 1000),
			                      .tv_nsec = (long)(until % 1000) * 1000000L};
			pthread_cond_timedwait(&gw->cv, &gw->mu, &ts);
		}
		int check = gw->notified;
		gw->notified = 0;
		now = th_mono_ms();
		if (now >= hup_check) {
			mark_hung_up(gw);
			hup_check = now + 1000;
		}
		store_txn *t = NULL;
		if (check && gw->waiters && store_txn_begin(gw->env->st, 0, &t) != TH_OK)
			t = NULL;
		for (struct waiter *w = gw->waiters, *nx; w; w = nx) {
			nx = w->next;
			if (gw->stop || w->hung_up || w->deadline <= now ||
			    (t && feed_has_news(t, w->guest, w->since))) {
				struct MHD_Connection *conn = w->conn;
				waiter_unlink(gw, w);
				w->conn = NULL;
				MHD_resume_connection(conn);
			}
		}
		if (t)
			store_txn_abort(t);
		if (gw->stop && !gw->waiters)
			break;
	}
	pthread_mutex_unlock(&gw->mu);
	return NULL;
}

void gw_notify(gateway *gw)
{
	if (!gw)
		return;
	pthread_mutex_lock(&gw->mu);
	gw->notified = 1;
	pthread_cond_signal(&gw->cv);
	pthread_mutex_unlock(&gw->mu);
}

unsigned gw_waiting(gateway *gw)
{
	pthread_mutex_lock(&gw->mu);
	unsigned n = gw->nwaiting;
	pthread_mutex_unlock(&gw->mu);
	return n;
}

/* ---- the media fetcher thread ------------------------------------------------------ */

static void job_error(struct media_job *j, unsigned status, const char *errcode, const char *error,
                      uint64_t retry_after_ms)
{
	j->status = status;
	j->errcode = errcode;
	j->error = error;
	j->retry_after_ms = retry_after_ms;
}

/* mx_ops.fetch's cancel: stopping cuts a slow download short. */
static int fetch_canceled(void *ctx)
{
	gateway *gw = ctx;
	pthread_mutex_lock(&gw->mu);
	int stop = gw->stop;
	pthread_mutex_unlock(&gw->mu);
	return stop;
}

/* Fetch @p j's file from the homeserver and decide the answer.  A picture
 * the page may show (PNG, JPEG, GIF, WebP, read from the bytes) goes out as
 * what it is, decoded and encoded afresh so that no metadata of the
 * sender's survives (media_clean); anything else, GIF included, as a
 * download.  Nothing is kept. */
static void media_fetch(gateway *gw, struct media_job *j)
{
	const struct matrix *mx = gw->env->mx;
	struct mx_download r = {0};
	int rc = mx->ops->fetch(gw->fetch, j->server, j->media_id, gw->cfg->gw_max_media_bytes,
	                        fetch_canceled, gw, &r);
	unsigned char *buf = r.buf;
	size_t len = r.len;
	if (rc == TH_ETOOLARGE) {
		job_error(j, 502, "TH_TOO_LARGE",
		          "This file is too large to open here. Please ask for it to be sent another way.",
		          0);
		return;
	}
	if (rc == TH_ECANCELED) {
		job_error(j, 503, "TH_UNAVAILABLE",
		          "This service is restarting. Please try again in a moment.", 5000);
		return;
	}
	if (rc) {
		LOG(LOG_INFO, "gateway: fetching a picture or file from the homeserver failed: %s",
		    th_strerror(rc));
		job_error(j, 502, "TH_UNAVAILABLE",
		          "This picture or file cannot be fetched just now. Please try again in a moment.",
		          5000);
		return;
	}
	long status = r.status;
	uint64_t retry = r.retry_after_ms;
	if (status == 404) {
		job_error(j, 404, "TH_NOT_FOUND", "This picture or file is no longer available.", 0);
	} else if (status / 100 != 2) {
		LOG(LOG_INFO, "gateway: the homeserver answered HTTP %ld for a picture or file", status);
		job_error(j, 502, "TH_UNAVAILABLE",
		          "This picture or file cannot be fetched just now. Please try again in a moment.",
		          retry ? (retry < 60000 ? retry : 60000) : 5000);
	} else {
		const struct media_kind *k = media_sniff(buf, len);
		int picture = k && media_is_picture(k);
		unsigned char *clean = NULL;
		size_t clen = 0;
		int verdict = picture ? media_clean(k, buf, len, &clean, &clen) : MEDIA_OK;
		if (verdict != MEDIA_OK) { /* damaged, or too many pixels: not made afresh, not shown */
			job_error(j, 502, "TH_UNSUPPORTED", "This picture cannot be shown here.", 0);
		} else {
			if (picture) {
				free(buf);
				buf = clean;
				len = clen;
			}
			j->status = 200;
			j->mimetype = picture ? k->mimetype : NULL;
			j->buf = buf;
			j->len = len;
			buf = NULL;
		}
	}
	free(buf);
}

/* One job at a time, in order.  Once stopping, the jobs still queued are
 * answered 503 without fetching, and the thread ends when none is left. */
static void *fetch_main(void *arg)
{
	gateway *gw = arg;
	pthread_mutex_lock(&gw->mu);
	for (;;) {
		while (!gw->jobs && !gw->stop)
			pthread_cond_wait(&gw->fetch_cv, &gw->mu);
		struct media_job *j = gw->jobs;
		if (!j)
			break; /* stopping, and nothing left */
		gw->jobs = j->next;
		if (!gw->jobs)
			gw->jobs_tail = NULL;
		gw->njobs--;
		j->next = NULL;
		j->state = JOB_RUNNING;
		int stopping = gw->stop;
		pthread_mutex_unlock(&gw->mu);
		if (stopping)
			job_error(j, 503, "TH_UNAVAILABLE",
			          "This service is restarting. Please try again in a moment.", 5000);
		else
			media_fetch(gw, j);
		pthread_mutex_lock(&gw->mu);
		j->state = JOB_DONE;
		if (j->buf)
			gw->media_held += j->len;
		if (j->orphaned)
			job_free(gw, j);
		else
			MHD_resume_connection(j->conn);
	}
	pthread_mutex_unlock(&gw->mu);
	return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------ */

/* Decode %xx in the path and arguments, except where that would make a NUL:
 * "/index.html%00.js" or ".../erase%00.png" must not be cut short into
 * another path, so such text stays as sent (and matches nothing). */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
	(void)cls;
	(void)conn;
	if (strstr(s, "%00"))
		return strlen(s);
	return MHD_http_unescape(s);
}

int gw_start(const struct txn_env *env, gw_on_queue_fn on_queue, void *ctx, gateway **out)
{
	const struct config *cfg = env->cfg;
	gateway *gw = xcalloc(1, sizeof(*gw));
	gw->env = env;
	gw->cfg = cfg;
	atomic_store_explicit(&calls_media, cfg->calls_enabled ? 1 : 0, memory_order_relaxed);
	gw->on_queue = on_queue;
	gw->ctx = ctx;
	pthread_mutex_init(&gw->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_cond_init(&gw->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&gw->drained, NULL);
	pthread_cond_init(&gw->fetch_cv, NULL);
	int waiter = 0, fetcher = 0;
	unsigned char lk[4][16];
	if (th_random(lk, sizeof(lk)) != TH_OK) { /* a key nobody outside can know */
		LOG(LOG_ERROR, "gateway: no randomness for the rate limiter's key");
		goto fail;
	}
	gw->lim_addr = lim_new(LIM_SETS, lk[0]);
	gw->lim_session = lim_new(LIM_SETS, lk[1]);
	gw->lim_public_addr = lim_new(LIM_SETS, lk[2]);
	gw->lim_service = lim_new(LIM_SVC_SETS, lk[3]);
	explicit_bzero(lk, sizeof(lk));
	if (origin_of(cfg->gw_public_url, gw->origin, sizeof(gw->origin)) != 0)
		gw->origin[0] = '\0';

	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	/* poll(), not epoll: with libmicrohttpd 0.9.75's epoll, once
	 * max_connections (or the open-file limit) was reached the gateway never
	 * accepted again (tests/integration/test_hostile.py). */
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG |
	                 MHD_ALLOW_SUSPEND_RESUME;
	if (inet_pton(AF_INET, cfg->gw_listen_address, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)cfg->gw_listen_port);
	} else if (inet_pton(AF_INET6, cfg->gw_listen_address, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)cfg->gw_listen_port);
		flags |= MHD_USE_IPv6;
	} else {
		LOG(LOG_ERROR, "gateway.listen_address '%s' is not an IP address", cfg->gw_listen_address);
		goto fail;
	}
	if (env->mx->ops->fetcher_new(env->mx->ctx, &gw->fetch) != TH_OK)
		goto fail;
	if (!(waiter = pthread_create(&gw->thread, NULL, waiter_main, gw) == 0) ||
	    !(fetcher = pthread_create(&gw->fetcher, NULL, fetch_main, gw) == 0)) {
		LOG(LOG_ERROR, "gateway: cannot start a thread");
		goto fail;
	}
	gw->mhd = MHD_start_daemon(flags, (uint16_t)cfg->gw_listen_port, NULL, NULL, handle, gw,
	                           MHD_OPTION_EXTERNAL_LOGGER, log_mhd, (void *)"gateway http",
	                           MHD_OPTION_SOCK_ADDR, &ss, MHD_OPTION_NOTIFY_COMPLETED, completed, gw,
	                           MHD_OPTION_CONNECTION_TIMEOUT, CONN_TIMEOUT_S, MHD_OPTION_CONNECTION_LIMIT,
	                           cfg->gw_max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
	                           /* behind a proxy every guest has its address: no cap (0) */
	                           cfg->gw_trust_forwarded_for ? 0u : cfg->gw_max_conn_per_address,
	                           MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY,
	                           MHD_OPTION_CONNECTION_MEMORY_INCREMENT, (size_t)1024,
	                           MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL, MHD_OPTION_END);
	if (!gw->mhd) {
		LOG(LOG_ERROR, "gateway: cannot listen on %s:%u (in use, or not an address of this machine?)",
		    cfg->gw_listen_address, cfg->gw_listen_port);
		goto fail;
	}
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(gw->mhd, MHD_DAEMON_INFO_BIND_PORT);
	gw->port = di ? di->port : cfg->gw_listen_port;
	LOG(LOG_INFO, "gateway: guests reach Threshold at %s (listening on %s:%u)", cfg->gw_public_url,
	    cfg->gw_listen_address, gw->port);
	*out = gw;
	return TH_OK;
fail:
	pthread_mutex_lock(&gw->mu);
	gw->stop = 1;
	pthread_cond_signal(&gw->cv);
	pthread_cond_signal(&gw->fetch_cv);
	pthread_mutex_unlock(&gw->mu);
	if (waiter)
		pthread_join(gw->thread, NULL);
	if (fetcher)
		pthread_join(gw->fetcher, NULL);
	gw->env->mx->ops->fetcher_free(gw->fetch);
	pthread_cond_destroy(&gw->cv);
	pthread_cond_destroy(&gw->drained);
	pthread_cond_destroy(&gw->fetch_cv);
	pthread_mutex_destroy(&gw->mu);
	lim_free(gw->lim_addr);
	lim_free(gw->lim_session);
	lim_free(gw->lim_public_addr);
	lim_free(gw->lim_service);
	free(gw);
	return TH_EIO;
}

unsigned gw_port(gateway *gw)
{
	return gw->port;
}

void gw_stop(gateway *gw)
{
	if (!gw)
		return;
	/* Answer every parked poll (the waiter resumes them) and every media
	 * request (the fetcher cuts its download short and answers the queued
	 * ones 503), then stop. */
	pthread_mutex_lock(&gw->mu);
	gw->stop = 1;
	pthread_cond_signal(&gw->cv);
	pthread_cond_signal(&gw->fetch_cv);
	pthread_mutex_unlock(&gw->mu);
	pthread_join(gw->thread, NULL);
	pthread_join(gw->fetcher, NULL);
	/* Resuming only asks libmicrohttpd's thread to answer; stopping the
	 * daemon at once would close those connections unanswered. Wait until
	 * each resumed poll has been sent, for at most GW_DRAIN_MS. */
	uint64_t until = th_now_ms() + GW_DRAIN_MS;
	struct timespec ts = {.tv_sec = (time_t)(until / 1000), .tv_nsec = (long)(until % 1000) * 1000000L};
	pthread_mutex_lock(&gw->mu);
	while (gw->nheld > 0) {
		if (pthread_cond_timedwait(&gw->drained, &gw->mu, &ts) == ETIMEDOUT) {
			LOG(LOG_WARN, "gateway: %u feed polls or media requests not answered before stopping",
			    gw->nheld);
			break;
		}
	}
	pthread_mutex_unlock(&gw->mu);
	MHD_stop_daemon(gw->mhd);
	gw->env->mx->ops->fetcher_free(gw->fetch);
	pthread_cond_destroy(&gw->cv);
	pthread_cond_destroy(&gw->drained);
	pthread_cond_destroy(&gw->fetch_cv);
	pthread_mutex_destroy(&gw->mu);
	lim_free(gw->lim_addr);
	lim_free(gw->lim_session);
	lim_free(gw->lim_public_addr);
	lim_free(gw->lim_service);
	free(gw);
}

/* ---- the web page as a channel (channel.h) ------------------------------- */

static void gw_chan_feed_grew(void *ctx)
{
	gw_notify(ctx);
}

static const struct chan_ops gw_chan_ops = {"web", "by the web page", CHAN_CAP_TEXT | CHAN_CAP_FILES,
                                            gw_chan_feed_grew};

struct channel gw_channel(gateway *gw)
{
	struct channel c = {gw ? &gw_chan_ops : NULL, gw};
	return c;
}
