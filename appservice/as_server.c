/*
 * as_server.c - the Application Service API over libmicrohttpd.
 */
#include "as_server.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <microhttpd.h>

#include "config.h"
#include "log.h"
#include "txn.h"
#include "util.h"

#define PREFIX         "/_matrix/app/v1"
#define MAX_TXN_ID     255
#define MAX_SMALL_BODY 65536      /* ping and other small bodies */
#define DRAIN_MAX      (1u << 20) /* bytes over a cap read and discarded to answer 413 */

struct as_server {
	const struct txn_env *env;
	const struct config *cfg;
	store *st;
	as_on_commit_fn on_commit;
	void *ctx;
	struct MHD_Daemon *mhd;
	atomic_int in_flight;
	atomic_ulong pings;
};

/* Per-request state, from the first call of the handler to completion. */
struct request {
	int auth_checked;
	int too_large;
	size_t cap;
	size_t len, alloc;
	char *body;
};

static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned status, const char *text)
{
	struct MHD_Response *r =
	        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	MHD_add_response_header(r, "Cache-Control", "no-store");
	enum MHD_Result ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *conn, unsigned status, const char *errcode,
                                  const char *error)
{
	json_t *j = json_pack("{s:s, s:s}", "errcode", errcode, "error", error);
	char *text = json_dumps(j, JSON_COMPACT);
	enum MHD_Result ret = send_json(conn, status, text);
	free(text);
	json_decref(j);
	return ret;
}

/* 0: authorised; otherwise the HTTP status already queued. */
static int check_auth(as_server *srv, struct MHD_Connection *conn)
{
	const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (!h || strncmp(h, "Bearer ", 7) != 0) {
		send_error(conn, 401, "M_UNAUTHORIZED", "Missing access token");
		return 401;
	}
	const char *tok = h + 7;
	if (!th_consttime_eq(tok, strlen(tok), srv->cfg->hs_token, strlen(srv->cfg->hs_token))) {
		LOG(LOG_WARN, "request with a wrong hs_token refused");
		send_error(conn, 403, "M_FORBIDDEN", "Bad token");
		return 403;
	}
	return 0;
}

/* If @url is PREFIX/<name>/<rest> or /<name>/<rest>, return <rest>, else NULL. */
static const char *route_arg(const char *url, const char *name)
{
	if (strncmp(url, PREFIX, strlen(PREFIX)) == 0)
		url += strlen(PREFIX);
	size_t n = strlen(name);
	if (url[0] != '/' || strncmp(url + 1, name, n) != 0)
		return NULL;
	url += 1 + n;
	if (url[0] == '\0')
		return url;
	if (url[0] != '/')
		return NULL;
	return url + 1;
}

static enum MHD_Result do_transaction(as_server *srv, struct MHD_Connection *conn, const char *txn_id,
                                      struct request *rq)
{
	if (!*txn_id || strlen(txn_id) > MAX_TXN_ID || strchr(txn_id, '/'))
		return send_error(conn, 400, "M_INVALID_PARAM", "Bad transaction id");
	struct txn_result res;
	txn_process(srv->env, txn_id, rq->body ? rq->body : "", rq->len, &res);
	if (res.status != 200)
		return send_error(conn, (unsigned)res.status, res.errcode, res.error);
	if (res.queued && srv->on_commit)
		srv->on_commit(srv->ctx);
	return send_json(conn, 200, "{}");
}

static enum MHD_Result do_user(as_server *srv, struct MHD_Connection *conn, const char *user_id)
{
	/* spec: 200 if the user exists (the AS created it), else 404 M_NOT_FOUND.
	 * Threshold never creates users on demand: a guest exists only once made. */
	if (config_user_in_namespace(srv->cfg, user_id)) {
		store_txn *t;
		if (store_txn_begin(srv->st, 0, &t) == TH_OK) {
			const void *v;
			size_t vl;
			int rc = store_get(t, STORE_USERS, user_id, strlen(user_id), &v, &vl);
			store_txn_abort(t);
			if (rc == TH_OK || strcmp(user_id, srv->cfg->bot_user_id) == 0)
				return send_json(conn, 200, "{}");
		}
	}
	return send_error(conn, 404, "M_NOT_FOUND", "No such user");
}

static enum MHD_Result route(as_server *srv, struct MHD_Connection *conn, const char *url, const char *method,
                             struct request *rq)
{
	const char *arg;
	if ((arg = route_arg(url, "transactions")) && *arg) {
		if (strcmp(method, "PUT") != 0)
			return send_error(conn, 405, "M_UNRECOGNIZED", "Method not allowed");
		return do_transaction(srv, conn, arg, rq);
	}
	if ((arg = route_arg(url, "users")) && *arg) {
		if (strcmp(method, "GET") != 0)
			return send_error(conn, 405, "M_UNRECOGNIZED", "Method not allowed");
		return do_user(srv, conn, arg);
	}
	if ((arg = route_arg(url, "rooms")) && *arg) {
		if (strcmp(method, "GET") != 0)
			return send_error(conn, 405, "M_UNRECOGNIZED", "Method not allowed");
		/* Threshold makes no rooms on demand for aliases. */
		return send_error(conn, 404, "M_NOT_FOUND", "No such room alias");
	}
	if ((arg = route_arg(url, "ping")) && !*arg) {
		if (strcmp(method, "POST") != 0)
			return send_error(conn, 405, "M_UNRECOGNIZED", "Method not allowed");
		atomic_fetch_add(&srv->pings, 1);
		LOG(LOG_DEBUG, "the homeserver pinged Threshold");
		return send_json(conn, 200, "{}");
	}
	return send_error(conn, 404, "M_UNRECOGNIZED", "Unrecognized request");
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	(void)version;
	as_server *srv = cls;
	struct request *rq = *con_cls;

	if (!rq) {
		/* First call: headers only.  Decide on auth and size before any body. */
		rq = xcalloc(1, sizeof(*rq));
		*con_cls = rq;
		atomic_fetch_add(&srv->in_flight, 1);
		if (check_auth(srv, conn))
			return MHD_YES;
		rq->auth_checked = 1;
		rq->cap = route_arg(url, "transactions") ? srv->cfg->max_body_bytes : MAX_SMALL_BODY;
		const char *cl =
		        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		uint64_t n;
		if (cl && th_parse_u64(cl, UINT64_MAX, &n) == TH_OK && n > rq->cap) {
			/* A little over: read and discard it, answer at the end (closing
			 * with the body unread resets the connection, and a sender may
			 * see the reset instead of the 413).  Far over: refuse now. */
			if (n - rq->cap <= DRAIN_MAX) {
				rq->too_large = 2;
				return MHD_YES;
			}
			LOG(LOG_WARN, "request body of %llu bytes refused (cap %zu)", (unsigned long long)n,
			    rq->cap);
			send_error(conn, 413, "M_TOO_LARGE", "Request body too large");
			rq->too_large = 1;
		}
		return MHD_YES;
	}
	if (rq->too_large == 2 && *upload_size == 0) {
		rq->too_large = 1;
		LOG(LOG_WARN, "request body over the %zu-byte cap refused", rq->cap);
		return send_error(conn, 413, "M_TOO_LARGE", "Request body too large");
	}
	if (!rq->auth_checked || rq->too_large) {
		*upload_size = 0; /* a response is queued (or will be); drop the rest */
		return MHD_YES;
	}
	if (*upload_size > 0) {
		size_t n = *upload_size;
		*upload_size = 0;
		if (rq->len + n > rq->cap) {
			rq->too_large = 2; /* chunked body past the cap: discard, answer at the end */
			free(rq->body);
			rq->body = NULL;
			rq->len = rq->alloc = 0;
			return MHD_YES;
		}
		if (rq->len + n > rq->alloc) {
			rq->alloc = rq->len + n > 2 * rq->alloc ? rq->len + n : 2 * rq->alloc;
			rq->body = xrealloc(rq->body, rq->alloc);
		}
		memcpy(rq->body + rq->len, upload, n);
		rq->len += n;
		return MHD_YES;
	}
	return route(srv, conn, url, method, rq);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
	(void)conn;
	(void)toe;
	as_server *srv = cls;
	struct request *rq = *con_cls;
	if (!rq)
		return;
	free(rq->body);
	free(rq);
	*con_cls = NULL;
	atomic_fetch_sub(&srv->in_flight, 1);
}

int as_server_start(const struct txn_env *env, as_on_commit_fn on_commit, void *ctx, as_server **out)
{
	const struct config *cfg = env->cfg;
	as_server *srv = xcalloc(1, sizeof(*srv));
	srv->env = env;
	srv->cfg = cfg;
	srv->st = env->st;
	srv->on_commit = on_commit;
	srv->ctx = ctx;

	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
	if (inet_pton(AF_INET, cfg->listen_address, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)cfg->listen_port);
	} else if (inet_pton(AF_INET6, cfg->listen_address, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)cfg->listen_port);
		flags |= MHD_USE_IPv6;
	} else {
		LOG(LOG_ERROR, "appservice.listen_address '%s' is not an IP address", cfg->listen_address);
		free(srv);
		return TH_EIO;
	}
	srv->mhd = MHD_start_daemon(
	        flags, (uint16_t)cfg->listen_port, NULL, NULL, handle, srv, MHD_OPTION_EXTERNAL_LOGGER,
	        log_mhd, (void *)"http", MHD_OPTION_SOCK_ADDR, &ss, MHD_OPTION_NOTIFY_COMPLETED, completed,
	        srv, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)90, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
	        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)32, MHD_OPTION_END);
	if (!srv->mhd) {
		LOG(LOG_ERROR, "cannot listen on %s:%u (in use, or not an address of this machine?)",
		    cfg->listen_address, cfg->listen_port);
		free(srv);
		return TH_EIO;
	}
	*out = srv;
	return TH_OK;
}

unsigned as_server_port(as_server *srv)
{
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
	return info ? info->port : 0;
}

unsigned long as_server_pings(as_server *srv)
{
	return atomic_load(&srv->pings);
}

void as_server_stop(as_server *srv)
{
	if (!srv)
		return;
	MHD_socket fd = MHD_quiesce_daemon(srv->mhd);
	/* The transaction in hand finishes and is answered; wait up to 10 s. */
	for (int i = 0; i < 1000 && atomic_load(&srv->in_flight) > 0; i++) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	MHD_stop_daemon(srv->mhd);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
	free(srv);
}
