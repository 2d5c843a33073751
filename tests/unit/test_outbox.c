/*
 * test_outbox.c - the Client-Server API client and the outbox against a
 * scripted fake homeserver on loopback.  The fake is for fault injection
 * (5xx, 429, hangs, refusals); the real protocol is tested against Synapse
 * in tests/integration.
 */
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#include <microhttpd.h>

#include "audit.h"
#include "config.h"
#include "cs.h"
#include "jsonx.h"
#include "log.h"
#include "outbox.h"
#include "store.h"
#include "testlib.h"
#include "util.h"

/* ---- the fake homeserver ---------------------------------------------- */

/* One scripted answer. */
struct answer {
	unsigned status;
	const char *body;        /* NULL: empty */
	unsigned delay_ms;       /* hold the answer this long */
	const char *retry_after; /* Retry-After header, or NULL */
};

/* An answer for requests whose path holds @match, looked at before the
 * script: the lane tests run requests at once, in no fixed order. */
struct rule {
	const char *match;
	struct answer a;
	int sticky; /* answers every such request, never used up */
	int used;
};
#define RULES_MAX 16

/* One request as it arrived; path and query exactly as sent (not unescaped). */
struct seen {
	char method[8];
	char path[512];
	char query[512];
	char auth[128];
	char ctype[64];
	char *body;
	uint64_t t_ms;      /* th_mono_ms() at arrival */
	uint64_t t_done_ms; /* th_mono_ms() when answered */
};

#define SCRIPT_MAX 16
#define SEEN_MAX   512

static struct fake {
	struct MHD_Daemon *d;
	unsigned port;
	pthread_mutex_t mu;
	struct answer script[SCRIPT_MAX];
	size_t nscript, next;
	struct rule rules[RULES_MAX];
	size_t nrules;
	size_t inflight, max_inflight; /* requests being answered at once */
	struct seen seen[SEEN_MAX];
	size_t nseen;
	size_t nconn; /* TCP connections accepted, to see keep-alive */
} fk = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* The bytes of one request body, gathered across handler calls. */
struct upload {
	char *buf;
	size_t len;
};

/* Keep paths and query values as sent, so the test sees the client's escaping. */
static size_t keep_escaped(void *cls, struct MHD_Connection *c, char *s)
{
	(void)cls;
	(void)c;
	return strlen(s);
}

static enum MHD_Result add_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	char *q = cls;
	size_t n = strlen(q);
	(void)kind;
	snprintf(q + n, 512 - n, "%s%s=%s", n ? "&" : "", key, value ? value : "");
	return MHD_YES;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src ? src : "");
}

static enum MHD_Result fake_handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                   const char *version, const char *data, size_t *data_size, void **req_cls)
{
	(void)cls;
	(void)version;
	struct upload *up = *req_cls;
	if (!up) {
		*req_cls = xcalloc(1, sizeof(*up));
		return MHD_YES;
	}
	if (*data_size) {
		up->buf = xrealloc(up->buf, up->len + *data_size + 1);
		memcpy(up->buf + up->len, data, *data_size);
		up->len += *data_size;
		up->buf[up->len] = '\0';
		*data_size = 0;
		return MHD_YES;
	}

	struct answer a = {200, "{}", 0, NULL};
	pthread_mutex_lock(&fk.mu);
	int ruled = 0;
	for (size_t i = 0; i < fk.nrules && !ruled; i++) {
		struct rule *r = &fk.rules[i];
		if (r->used || !strstr(url, r->match))
			continue;
		a = r->a;
		r->used = !r->sticky;
		ruled = 1;
	}
	if (!ruled && fk.next < fk.nscript)
		a = fk.script[fk.next++];
	size_t idx = fk.nseen;
	if (++fk.inflight > fk.max_inflight)
		fk.max_inflight = fk.inflight;
	if (fk.nseen < SEEN_MAX) {
		struct seen *s = &fk.seen[fk.nseen];
		memset(s, 0, sizeof(*s));
		copy_str(s->method, sizeof(s->method), method);
		copy_str(s->path, sizeof(s->path), url);
		MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, add_arg, s->query);
		copy_str(s->auth, sizeof(s->auth),
		         MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"));
		copy_str(s->ctype, sizeof(s->ctype),
		         MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type"));
		s->body = xstrdup(up->buf ? up->buf : "");
		s->t_ms = th_mono_ms();
		fk.nseen++;
	}
	pthread_mutex_unlock(&fk.mu);

	if (a.delay_ms) {
		struct timespec ts = {(time_t)(a.delay_ms / 1000), (long)(a.delay_ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}
	pthread_mutex_lock(&fk.mu);
	fk.inflight--;
	if (idx < fk.nseen)
		fk.seen[idx].t_done_ms = th_mono_ms();
	pthread_mutex_unlock(&fk.mu);
	const char *body = a.body ? a.body : "";
	struct MHD_Response *r =
	        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
	MHD_add_response_header(r, "Content-Type", "application/json");
	if (a.retry_after)
		MHD_add_response_header(r, "Retry-After", a.retry_after);
	enum MHD_Result rc = MHD_queue_response(c, a.status, r);
	MHD_destroy_response(r);
	return rc;
}

static void fake_done(void *cls, struct MHD_Connection *c, void **req_cls,
                      enum MHD_RequestTerminationCode why)
{
	(void)cls;
	(void)c;
	(void)why;
	struct upload *up = *req_cls;
	if (up) {
		free(up->buf);
		free(up);
	}
	*req_cls = NULL;
}

static void fake_conn(void *cls, struct MHD_Connection *c, void **socket_ctx,
                      enum MHD_ConnectionNotificationCode code)
{
	(void)cls;
	(void)c;
	(void)socket_ctx;
	if (code != MHD_CONNECTION_NOTIFY_STARTED)
		return;
	pthread_mutex_lock(&fk.mu);
	fk.nconn++;
	pthread_mutex_unlock(&fk.mu);
}

static size_t fake_nconn(void)
{
	pthread_mutex_lock(&fk.mu);
	size_t n = fk.nconn;
	pthread_mutex_unlock(&fk.mu);
	return n;
}

static void fake_start(void)
{
	struct sockaddr_in sa = {
	        .sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	/* A thread per connection, so a held answer does not hold up the next request. */
	fk.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL,
	                        NULL, fake_handle, NULL, MHD_OPTION_SOCK_ADDR, &sa,
	                        MHD_OPTION_NOTIFY_COMPLETED, fake_done, NULL, MHD_OPTION_NOTIFY_CONNECTION,
	                        fake_conn, NULL, MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL,
	                        MHD_OPTION_END);
	if (!fk.d) {
		fprintf(stderr, "cannot start the fake homeserver\n");
		abort();
	}
	fk.port = MHD_get_daemon_info(fk.d, MHD_DAEMON_INFO_BIND_PORT)->port;
}

/* Forget what was seen and load a new script (terminated by a zero status). */
static void fake_script(const struct answer *script)
{
	pthread_mutex_lock(&fk.mu);
	for (size_t i = 0; i < fk.nseen; i++)
		free(fk.seen[i].body);
	fk.nseen = 0;
	fk.nscript = fk.next = 0;
	fk.max_inflight = 0;
	fk.nrules = 0;
	for (; script && script[fk.nscript].status && fk.nscript < SCRIPT_MAX; fk.nscript++)
		fk.script[fk.nscript] = script[fk.nscript];
	pthread_mutex_unlock(&fk.mu);
}

/* Add answers after those already scripted, keeping what was seen. */
static void fake_then(const struct answer *more)
{
	pthread_mutex_lock(&fk.mu);
	for (size_t i = 0; more[i].status && fk.nscript < SCRIPT_MAX; i++)
		fk.script[fk.nscript++] = more[i];
	pthread_mutex_unlock(&fk.mu);
}

/* Answer requests whose path holds @p match with @p a (once, or always). */
static void fake_rule(const char *match, struct answer a, int sticky)
{
	pthread_mutex_lock(&fk.mu);
	if (fk.nrules < RULES_MAX)
		fk.rules[fk.nrules++] = (struct rule){match, a, sticky, 0};
	pthread_mutex_unlock(&fk.mu);
}

static size_t fake_nseen(void)
{
	pthread_mutex_lock(&fk.mu);
	size_t n = fk.nseen;
	pthread_mutex_unlock(&fk.mu);
	return n;
}

static void fake_stop(void)
{
	MHD_stop_daemon(fk.d);
	fake_script(NULL);
}

/* @return 1 if @p json parses to a value equal to @p want's. */
static int json_eq_text(const char *json, const char *want)
{
	json_t *a = json_loads(json, 0, NULL), *b = json_loads(want, 0, NULL);
	int eq = a && b && json_equal(a, b);
	json_decref(a);
	json_decref(b);
	return eq;
}

/* ---- helpers ------------------------------------------------------------ */

static struct config cfg;

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Wait until the queue is empty and @p nreq requests were seen; 1 on success. */
static int wait_drained(outbox *ob, size_t nreq, unsigned timeout_ms)
{
	uint64_t end = th_mono_ms() + timeout_ms;
	while (th_mono_ms() < end) {
		if (outbox_pending(ob) == 0 && fake_nseen() >= nreq)
			return 1;
		sleep_ms(10);
	}
	return 0;
}

static void push(store *st, const char *json)
{
	json_t *a = json_loads(json, 0, NULL);
	store_txn *t;
	CHECK(a != NULL);
	CHECK_EQ_INT(store_txn_begin(st, 1, &t), TH_OK);
	CHECK_EQ_INT(outbox_push(t, a), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	json_decref(a);
}

static size_t stored_count(store *st)
{
	store_txn *t;
	size_t n = 0;
	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	CHECK_EQ_INT(store_count(t, STORE_OUTBOX, &n), TH_OK);
	store_txn_abort(t);
	return n;
}

/* ---- cs ----------------------------------------------------------------- */

static void test_escape(void)
{
	char *s = cs_escape("!room:example.org");
	CHECK_STR(s, "%21room%3Aexample.org");
	free(s);
	s = cs_escape("AZaz09-._~");
	CHECK_STR(s, "AZaz09-._~");
	free(s);
	s = cs_escape("a b/c?d&e=f%\xc3\xa9+@");
	CHECK_STR(s, "a%20b%2Fc%3Fd%26e%3Df%25%C3%A9%2B%40");
	free(s);
	s = cs_escape("");
	CHECK_STR(s, "");
	free(s);
}

static void test_request(cs_client *c)
{
	struct cs_response r;
	json_t *body;
	size_t conns = fake_nconn();

	/* The token, the masquerade and the parsed answer. */
	fake_script((struct answer[]){{200, "{\"user_id\":\"@g:hs\"}", 0, NULL}, {0}});
	CHECK_EQ_INT(cs_request(c, "GET", "/_matrix/client/v3/account/whoami", "@g:hs", NULL, &r), TH_OK);
	CHECK_EQ_INT(r.status, 200);
	CHECK_STR(json_string_value(json_object_get(r.body, "user_id")), "@g:hs");
	CHECK(r.errcode == NULL);
	CHECK_EQ_INT(r.retry_after_ms, 0);
	cs_response_clear(&r);
	CHECK_EQ_INT(fake_nseen(), 1);
	CHECK_STR(fk.seen[0].method, "GET");
	CHECK_STR(fk.seen[0].path, "/_matrix/client/v3/account/whoami");
	CHECK_STR(fk.seen[0].query, "user_id=%40g%3Ahs");
	CHECK_STR(fk.seen[0].auth, "Bearer tok-secret");

	/* A path with its own query gets &user_id; no user_id, no query added. */
	fake_script((struct answer[]){{404, "{\"errcode\":\"M_NOT_FOUND\",\"error\":\"x\"}", 0, NULL}, {0}});
	CHECK_EQ_INT(cs_request(c, "GET", "/x?limit=1", "@g:hs", NULL, &r), TH_OK);
	CHECK_EQ_INT(r.status, 404);
	CHECK_STR(r.errcode, "M_NOT_FOUND");
	cs_response_clear(&r);
	CHECK_STR(fk.seen[0].query, "limit=1&user_id=%40g%3Ahs");
	fake_script(NULL);
	CHECK_EQ_INT(cs_request(c, "GET", "/y", NULL, NULL, &r), TH_OK);
	cs_response_clear(&r);
	CHECK_STR(fk.seen[0].query, "");

	/* A JSON body goes out as JSON. */
	fake_script(NULL);
	body = json_pack("{s:s}", "a", "b");
	CHECK_EQ_INT(cs_request(c, "PUT", "/z", NULL, body, &r), TH_OK);
	json_decref(body);
	cs_response_clear(&r);
	CHECK_STR(fk.seen[0].method, "PUT");
	CHECK_STR(fk.seen[0].ctype, "application/json");
	CHECK(json_eq_text(fk.seen[0].body, "{\"a\":\"b\"}"));

	/* 429: the body's retry_after_ms, else the Retry-After header. */
	fake_script(
	        (struct answer[]){{429, "{\"errcode\":\"M_LIMIT_EXCEEDED\",\"retry_after_ms\":1234}", 0, "9"},
	                          {429, "{\"errcode\":\"M_LIMIT_EXCEEDED\"}", 0, "2"},
	                          {0}});
	CHECK_EQ_INT(cs_request(c, "POST", "/r", NULL, NULL, &r), TH_OK);
	CHECK_EQ_INT(r.retry_after_ms, 1234);
	cs_response_clear(&r);
	CHECK_EQ_INT(cs_request(c, "POST", "/r", NULL, NULL, &r), TH_OK);
	CHECK_EQ_INT(r.retry_after_ms, 2000);
	CHECK_STR(r.errcode, "M_LIMIT_EXCEEDED");
	cs_response_clear(&r);

	/* Not JSON: a status, no body. */
	fake_script((struct answer[]){{502, "<html>bad gateway</html>", 0, NULL}, {0}});
	CHECK_EQ_INT(cs_request(c, "GET", "/p", NULL, NULL, &r), TH_OK);
	CHECK_EQ_INT(r.status, 502);
	CHECK(r.body == NULL);
	CHECK(r.errcode == NULL);
	cs_response_clear(&r);

	/* Every answer so far came over one kept-alive connection. */
	CHECK_EQ_INT(fake_nconn() - conns, 1);

	/* Over the cap; the response is left untouched. */
	size_t big = CS_MAX_RESPONSE_BYTES + 100;
	char *huge = xmalloc(big + 1);
	memset(huge, ' ', big);
	huge[0] = '[';
	huge[big - 1] = ']';
	huge[big] = '\0';
	fake_script((struct answer[]){{200, huge, 0, NULL}, {0}});
	memset(&r, 0, sizeof(r));
	r.status = 999;
	CHECK_EQ_INT(cs_request(c, "GET", "/big", NULL, NULL, &r), TH_ETOOLARGE);
	CHECK_EQ_INT(r.status, 999);
	free(huge);

	/* A hang past client_timeout_ms, then the client still works. */
	fake_script((struct answer[]){{200, "{}", 1000, NULL}, {0}});
	uint64_t t0 = th_mono_ms();
	CHECK_EQ_INT(cs_request(c, "GET", "/hang", NULL, NULL, &r), TH_ETIMEOUT);
	CHECK(th_mono_ms() - t0 < 900);
	fake_script(NULL);
	CHECK_EQ_INT(cs_request(c, "GET", "/after", NULL, NULL, &r), TH_OK);
	CHECK_EQ_INT(r.status, 200);
	cs_response_clear(&r);

	CHECK_EQ_INT(cs_request(c, "PATCH", "/x", NULL, NULL, &r), TH_EINVAL);
}

static void test_unreachable(void)
{
	struct config bad = cfg;
	cs_client *c;
	struct cs_response r;
	/* Port 1 on loopback: nothing listens there on a test machine. */
	bad.hs_url = "http://127.0.0.1:1";
	CHECK_EQ_INT(cs_client_new(&bad, &c), TH_OK);
	CHECK_EQ_INT(cs_request(c, "GET", "/x", NULL, NULL, &r), TH_ENET);
	cs_client_free(c);
}

static void test_register_ping(cs_client *c)
{
	fake_script((struct answer[]){{400, "{\"errcode\":\"M_USER_IN_USE\"}", 0, NULL},
	                              {200, "{\"user_id\":\"@g2:hs\"}", 0, NULL},
	                              {403, "{\"errcode\":\"M_EXCLUSIVE\"}", 0, NULL},
	                              {0}});
	CHECK_EQ_INT(cs_register(c, "g1"), TH_OK);
	CHECK_EQ_INT(cs_register(c, "g2"), TH_OK);
	CHECK_EQ_INT(cs_register(c, "g3"), TH_EHTTP);
	CHECK_EQ_INT(fake_nseen(), 3);
	CHECK_STR(fk.seen[0].method, "POST");
	CHECK_STR(fk.seen[0].path, "/_matrix/client/v3/register");
	CHECK_STR(fk.seen[0].query, "");
	CHECK(json_eq_text(
	        fk.seen[0].body,
	        "{\"type\":\"m.login.application_service\",\"username\":\"g1\",\"inhibit_login\":true}"));

	fake_script((struct answer[]){{200, "{\"duration_ms\":12}", 0, NULL}, {0}});
	uint64_t ms = 0;
	CHECK_EQ_INT(cs_ping(c, &ms), TH_OK);
	CHECK_EQ_INT(ms, 12);
	CHECK_STR(fk.seen[0].path, "/_matrix/client/v1/appservice/threshold/ping");
	json_t *b = json_loads(fk.seen[0].body, 0, NULL);
	CHECK(json_string_length(json_object_get(b, "transaction_id")) >= 16);
	json_decref(b);
}

/* ---- outbox ------------------------------------------------------------- */

static void test_backoff(void)
{
	CHECK_EQ_INT(outbox_backoff_ms(0, 0, 60000), 500);
	CHECK_EQ_INT(outbox_backoff_ms(1, 0, 60000), 1000);
	CHECK_EQ_INT(outbox_backoff_ms(3, 0, 60000), 4000);
	CHECK_EQ_INT(outbox_backoff_ms(7, 0, 60000), 60000);
	CHECK_EQ_INT(outbox_backoff_ms(64, 0, 60000), 60000);
	CHECK_EQ_INT(outbox_backoff_ms(UINT_MAX, 0, 5000), 5000);
	CHECK_EQ_INT(outbox_backoff_ms(5, 700, 60000), 700);
	CHECK_EQ_INT(outbox_backoff_ms(0, 120000, 60000), 60000);
}

static void test_push_validation(store *st)
{
	static const char *const bad[] = {
	        "[]",
	        "{\"op\":\"wave\",\"room_id\":\"!r:hs\",\"user_id\":\"@g:hs\"}",
	        "{\"room_id\":\"!r:hs\",\"user_id\":\"@g:hs\"}",
	        "{\"op\":\"join\",\"user_id\":\"@g:hs\"}",
	        "{\"op\":\"join\",\"room_id\":\"\",\"user_id\":\"@g:hs\"}",
	        "{\"op\":\"leave\",\"room_id\":7,\"user_id\":\"@g:hs\"}",
	        "{\"op\":\"send\",\"room_id\":\"!r:hs\",\"user_id\":\"@g:hs\",\"type\":\"m.room.message\"}",
	        ("{\"op\":\"send\",\"room_id\":\"!r:hs\",\"user_id\":\"@g:hs\",\"type\":\"m.room.message\","
	         "\"content\":\"hi\"}"),
	        "{\"op\":\"register\"}",
	        "{\"op\":\"displayname\",\"user_id\":\"@g:hs\"}",
	};
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(st, 1, &t), TH_OK);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *a = json_loads(bad[i], 0, NULL);
		CHECK(a != NULL);
		int rc = outbox_push(t, a);
		if (rc != TH_EINVAL)
			fprintf(stderr, "accepted: %s\n", bad[i]);
		CHECK_EQ_INT(rc, TH_EINVAL);
		json_decref(a);
	}
	store_txn_abort(t);
	CHECK_EQ_INT(stored_count(st), 0);
}

/* A 500 then a 200: executed twice, then gone. */
static void test_retry_5xx(store *st, outbox *ob)
{
	fake_script((struct answer[]){{500, "{\"errcode\":\"M_UNKNOWN\"}", 0, NULL}, {0}});
	push(st, "{\"op\":\"join\",\"room_id\":\"!r:hs\",\"user_id\":\"@g:hs\"}");
	outbox_wake(ob);
	CHECK(wait_drained(ob, 2, 5000));
	sleep_ms(50);
	CHECK_EQ_INT(fake_nseen(), 2);
	for (size_t i = 0; i < 2; i++) {
		CHECK_STR(fk.seen[i].method, "POST");
		CHECK_STR(fk.seen[i].path, "/_matrix/client/v3/rooms/%21r%3Ahs/join");
		CHECK_STR(fk.seen[i].query, "user_id=%40g%3Ahs");
		CHECK_STR(fk.seen[i].auth, "Bearer tok-secret");
		CHECK(json_eq_text(fk.seen[i].body, "{}"));
	}
	CHECK(fk.seen[1].t_ms - fk.seen[0].t_ms >= 400);
}

/* A 429 with retry_after_ms: the wait is honoured. */
static void test_retry_429(store *st, outbox *ob)
{
	fake_script((struct answer[]){
	        {429, "{\"errcode\":\"M_LIMIT_EXCEEDED\",\"retry_after_ms\":700}", 0, NULL}, {0}});
	push(st, "{\"op\":\"leave\",\"room_id\":\"!r:hs\",\"user_id\":\"@g:hs\"}");
	outbox_wake(ob);
	CHECK(wait_drained(ob, 2, 5000));
	CHECK_EQ_INT(fake_nseen(), 2);
	CHECK_STR(fk.seen[0].path, "/_matrix/client/v3/rooms/%21r%3Ahs/leave");
	CHECK(fk.seen[1].t_ms - fk.seen[0].t_ms >= 650);
}

/* Room management ops: their requests, and what a created room leaves behind. */
static void test_room_ops(store *st, outbox *ob)
{
	fake_script((struct answer[]){{200, "{\"room_id\":\"!new:hs\"}", 0, NULL},
	                              {200, "{\"event_id\":\"$r\"}", 0, NULL},
	                              {200, "{}", 0, NULL},
	                              {200, "{}", 0, NULL},
	                              {200, "{\"event_id\":\"$s\"}", 0, NULL},
	                              {0}});
	push(st, "{\"op\":\"create_room\",\"user_id\":\"@bot:hs\",\"kind\":\"group\","
	         "\"content\":{\"preset\":\"private_chat\"},"
	         "\"reply\":{\"room_id\":\"!staff:hs\",\"event_id\":\"$cmd\",\"body\":\"Created\"}}");
	push(st, "{\"op\":\"invite\",\"room_id\":\"!new:hs\",\"user_id\":\"@bot:hs\",\"target\":\"@g:hs\"}");
	push(st, "{\"op\":\"kick\",\"room_id\":\"!new:hs\",\"user_id\":\"@bot:hs\",\"target\":\"@x:hs\","
	         "\"reason\":\"not here\"}");
	push(st, "{\"op\":\"state\",\"room_id\":\"!new:hs\",\"user_id\":\"@bot:hs\","
	         "\"type\":\"m.room.join_rules\",\"content\":{\"join_rule\":\"invite\"}}");
	outbox_wake(ob);
	CHECK(wait_drained(ob, 5, 5000));
	CHECK_EQ_INT(fake_nseen(), 5);
	CHECK_STR(fk.seen[0].path, "/_matrix/client/v3/createRoom");
	CHECK_STR(fk.seen[0].query, "user_id=%40bot%3Ahs");
	json_t *created = json_loads(fk.seen[0].body, 0, NULL);
	CHECK_STR(json_string_value(json_object_get(created, "preset")), "private_chat");
	const char *mark = json_string_value(
	        json_object_get(json_object_get(created, "creation_content"), "org.threshold.outbox_action"));
	CHECK(mark && strncmp(mark, "th", 2) == 0);
	json_decref(created);
	/* The new room's lane keeps its order; the reply about the room, queued
	 * by the create's own commit, is in the staff room's lane and may come
	 * between them. */
	size_t k = 1, reply = 0;
	for (size_t i = 1; i < 5; i++) {
		if (strncmp(fk.seen[i].path, "/_matrix/client/v3/rooms/%21staff%3Ahs/send/m.room.message/",
		            59) == 0)
			reply = i;
	}
	CHECK(reply > 0);
	CHECK(strstr(fk.seen[reply].body, "Created !new:hs") != NULL);
	CHECK(strstr(fk.seen[reply].body, "\"$cmd\"") != NULL);
	if (k == reply)
		k++;
	CHECK_STR(fk.seen[k].path, "/_matrix/client/v3/rooms/%21new%3Ahs/invite");
	CHECK(json_eq_text(fk.seen[k].body, "{\"user_id\":\"@g:hs\"}"));
	if (++k == reply)
		k++;
	CHECK_STR(fk.seen[k].path, "/_matrix/client/v3/rooms/%21new%3Ahs/kick");
	CHECK(json_eq_text(fk.seen[k].body, "{\"user_id\":\"@x:hs\",\"reason\":\"not here\"}"));
	if (++k == reply)
		k++;
	CHECK_STR(fk.seen[k].method, "PUT");
	CHECK_STR(fk.seen[k].path, "/_matrix/client/v3/rooms/%21new%3Ahs/state/m.room.join_rules/");
	CHECK(json_eq_text(fk.seen[k].body, "{\"join_rule\":\"invite\"}"));

	store_txn *t;
	json_t *room = NULL;
	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	CHECK_EQ_INT(store_get_json(t, STORE_ROOMS, "!new:hs", &room), TH_OK);
	CHECK_STR(json_string_value(json_object_get(room, "kind")), "group");
	json_decref(room);
	store_txn_abort(t);
}

/* The mark a createRoom request put in its room's create event (new string). */
static char *seen_mark(size_t i)
{
	pthread_mutex_lock(&fk.mu);
	json_t *b = json_loads(fk.seen[i].body ? fk.seen[i].body : "", 0, NULL);
	pthread_mutex_unlock(&fk.mu);
	const char *m = json_string_value(
	        json_object_get(json_object_get(b, "creation_content"), "org.threshold.outbox_action"));
	char *out = xstrdup(m ? m : "");
	json_decref(b);
	return out;
}

/* The head action as stored (new reference). */
static json_t *stored_head(store *st)
{
	store_txn *t;
	const void *k, *v;
	size_t klen, vlen;
	json_t *a = NULL;
	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	if (store_first(t, STORE_OUTBOX, &k, &klen, &v, &vlen) == TH_OK)
		a = json_loadb(v, vlen, 0, NULL);
	store_txn_abort(t);
	return a;
}

static void wait_seen(size_t n)
{
	uint64_t end = th_mono_ms() + 5000;
	while (fake_nseen() < n && th_mono_ms() < end)
		sleep_ms(5);
	CHECK(fake_nseen() >= n);
}

/* createRoom has no transaction id.  When its answer is lost (the room was
 * made, the answer came after the client gave up, or the daemon died
 * before its commit), the retry finds the room by the mark in its create
 * event among the creator's rooms not held as managed, and makes no second
 * room.  When no room carries the mark, the room is made, marked the same. */
/*
 * account_data: one idempotent PUT as the user.  guest_enter: allow
 * invites, the bot's invite, the guest's join, block again; a refused join
 * still ends blocked (and is dropped); a block that fails is retried from
 * the start until it is in place, never left allowing invites.
 */
static void test_guest_enter(store *st, outbox *ob)
{
	static const char *ad = "/_matrix/client/v3/user/%40g%3Ahs/account_data/m.invite_permission_config";
	fake_script(NULL);
	push(st, "{\"op\":\"account_data\",\"user_id\":\"@g:hs\",\"type\":\"m.invite_permission_config\","
	         "\"content\":{\"default_action\":\"block\"}}");
	outbox_wake(ob);
	CHECK(wait_drained(ob, 1, 5000));
	CHECK_STR(fk.seen[0].method, "PUT");
	CHECK_STR(fk.seen[0].path, ad);
	CHECK_STR(fk.seen[0].query, "user_id=%40g%3Ahs");
	CHECK(json_eq_text(fk.seen[0].body, "{\"default_action\":\"block\"}"));

	/* The join refused for good: dropped, but blocked again first. */
	fake_script((struct answer[]){{200, "{}", 0, NULL},
	                              {200, "{}", 0, NULL},
	                              {403, "{\"errcode\":\"M_FORBIDDEN\"}", 0, NULL},
	                              {200, "{}", 0, NULL},
	                              {0}});
	push(st,
	     "{\"op\":\"guest_enter\",\"room_id\":\"!grp:hs\",\"user_id\":\"@bot:hs\",\"target\":\"@g:hs\"}");
	outbox_wake(ob);
	CHECK(wait_drained(ob, 4, 5000));
	sleep_ms(50);
	CHECK_EQ_INT(fake_nseen(), 4);
	CHECK_STR(fk.seen[0].path, ad);
	CHECK(json_eq_text(fk.seen[0].body, "{\"default_action\":\"allow\"}"));
	CHECK_STR(fk.seen[1].path, "/_matrix/client/v3/rooms/%21grp%3Ahs/invite");
	CHECK_STR(fk.seen[1].query, "user_id=%40bot%3Ahs");
	CHECK(json_eq_text(fk.seen[1].body, "{\"user_id\":\"@g:hs\"}"));
	CHECK_STR(fk.seen[2].path, "/_matrix/client/v3/rooms/%21grp%3Ahs/join");
	CHECK_STR(fk.seen[2].query, "user_id=%40g%3Ahs");
	CHECK_STR(fk.seen[3].path, ad);
	CHECK(json_eq_text(fk.seen[3].body, "{\"default_action\":\"block\"}"));

	/* The block fails (500): the whole action runs again and ends blocked. */
	fake_script((struct answer[]){{200, "{}", 0, NULL},
	                              {200, "{}", 0, NULL},
	                              {200, "{}", 0, NULL},
	                              {500, "{\"errcode\":\"M_UNKNOWN\"}", 0, NULL},
	                              {0}});
	push(st,
	     "{\"op\":\"guest_enter\",\"room_id\":\"!grp:hs\",\"user_id\":\"@bot:hs\",\"target\":\"@g:hs\"}");
	outbox_wake(ob);
	CHECK(wait_drained(ob, 8, 5000));
	sleep_ms(50);
	CHECK_EQ_INT(fake_nseen(), 8);
	CHECK_STR(fk.seen[7].path, ad);
	CHECK(json_eq_text(fk.seen[7].body, "{\"default_action\":\"block\"}"));
}

static void test_create_room_lost(store *st, outbox *ob)
{
	static const char create[] =
	        "{\"op\":\"create_room\",\"user_id\":\"@bot:hs\",\"kind\":\"portal\","
	        "\"content\":{\"preset\":\"private_chat\",\"creation_content\":{\"m.federate\":false}},"
	        "\"reply\":{\"room_id\":\"!staff:hs\",\"event_id\":\"$c\",\"body\":\"Made\"}}";
	fake_script((struct answer[]){{200, "{\"room_id\":\"!lost:hs\"}", 1000, NULL}, {0}});
	push(st, create);
	outbox_wake(ob);
	wait_seen(1);
	char *mark = seen_mark(0);
	CHECK(strncmp(mark, "th", 2) == 0);
	/* The action says it was tried before its request went out. */
	json_t *head = stored_head(st);
	CHECK_STR(json_string_value(json_object_get(head, "tried")), mark);
	json_decref(head);
	/* !new:hs is managed (test_room_ops): not looked at.  Newest first. */
	char *with_mark = xasprintf("{\"creator\":\"@bot:hs\",\"org.threshold.outbox_action\":\"%s\"}", mark);
	fake_then((struct answer[]){
	        {200, "{\"joined_rooms\":[\"!lost:hs\",\"!new:hs\",\"!staff:hs\"]}", 0, NULL},
	        {200, "{\"creator\":\"@bot:hs\",\"org.threshold.outbox_action\":\"th0_1\"}", 0, NULL},
	        {200, with_mark, 0, NULL},
	        {200, "{\"event_id\":\"$m\"}", 0, NULL},
	        {0}});
	CHECK(wait_drained(ob, 5, 8000));
	sleep_ms(50);
	CHECK_EQ_INT(fake_nseen(), 5);
	CHECK_STR(fk.seen[1].method, "GET");
	CHECK_STR(fk.seen[1].path, "/_matrix/client/v3/joined_rooms");
	CHECK_STR(fk.seen[1].query, "user_id=%40bot%3Ahs");
	CHECK_STR(fk.seen[2].path, "/_matrix/client/v3/rooms/%21staff%3Ahs/state/m.room.create/");
	CHECK_STR(fk.seen[3].path, "/_matrix/client/v3/rooms/%21lost%3Ahs/state/m.room.create/");
	CHECK(strstr(fk.seen[4].path, "/rooms/%21staff%3Ahs/send/") != NULL);
	CHECK(strstr(fk.seen[4].body, "Made !lost:hs") != NULL);
	store_txn *t;
	json_t *room = NULL;
	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	CHECK_EQ_INT(store_get_json(t, STORE_ROOMS, "!lost:hs", &room), TH_OK);
	CHECK_STR(json_string_value(json_object_get(room, "kind")), "portal");
	json_decref(room);
	store_txn_abort(t);
	free(with_mark);
	free(mark);

	/* Lost again, but the homeserver holds no room with the mark: made now. */
	fake_script((struct answer[]){{200, "{\"room_id\":\"!gone:hs\"}", 1000, NULL}, {0}});
	push(st, create);
	outbox_wake(ob);
	wait_seen(1);
	fake_then((struct answer[]){{200, "{\"joined_rooms\":[]}", 0, NULL},
	                            {200, "{\"room_id\":\"!made:hs\"}", 0, NULL},
	                            {200, "{\"event_id\":\"$m2\"}", 0, NULL},
	                            {0}});
	CHECK(wait_drained(ob, 4, 8000));
	sleep_ms(50);
	CHECK_EQ_INT(fake_nseen(), 4);
	CHECK_STR(fk.seen[1].path, "/_matrix/client/v3/joined_rooms");
	CHECK_STR(fk.seen[2].path, "/_matrix/client/v3/createRoom");
	char *m0 = seen_mark(0), *m2 = seen_mark(2);
	CHECK(*m0 && strcmp(m0, m2) == 0);
	json_t *again = json_loads(fk.seen[2].body, 0, NULL);
	CHECK(json_is_false(json_object_get(json_object_get(again, "creation_content"), "m.federate")));
	json_decref(again);
	CHECK(strstr(fk.seen[3].body, "Made !made:hs") != NULL);
	free(m0);
	free(m2);
}

/* The room_created hook (outbox.h): a conversation room, once made, is told
 * to the layer above with the guest and the new room's id, in the commit
 * that removes the action (what the hook writes is there with it); a room
 * that is not a conversation is not. */
struct hook_calls {
	unsigned n;
	char guest[64], room[64];
};

static struct hook_calls hooked;

static int record_room_created(void *ctx, store_txn *t, const char *guest, const char *room_id)
{
	struct hook_calls *h = ctx;
	h->n++;
	snprintf(h->guest, sizeof(h->guest), "%s", guest);
	snprintf(h->room, sizeof(h->room), "%s", room_id);
	return store_put(t, STORE_META, "hooked", 6, room_id, strlen(room_id), 0);
}

static void test_room_created_hook(store *st, outbox *ob)
{
	fake_script((struct answer[]){{200, "{\"room_id\":\"!conv:hs\"}", 0, NULL},
	                              {200, "{\"room_id\":\"!grp:hs\"}", 0, NULL},
	                              {0}});
	unsigned before = hooked.n;
	push(st, "{\"op\":\"create_room\",\"user_id\":\"@g1:hs\",\"kind\":\"portal\",\"content\":{},"
	         "\"conversation\":\"@g1:hs\",\"lane\":\"@g1:hs\"}");
	push(st, "{\"op\":\"create_room\",\"user_id\":\"@bot:hs\",\"kind\":\"group\",\"content\":{}}");
	outbox_wake(ob);
	CHECK(wait_drained(ob, 2, 5000));
	CHECK_EQ_INT(hooked.n, before + 1);
	CHECK_STR(hooked.guest, "@g1:hs");
	CHECK_STR(hooked.room, "!conv:hs");
	store_txn *t;
	const void *v;
	size_t vlen;
	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	CHECK_EQ_INT(store_get(t, STORE_META, "hooked", 6, &v, &vlen), TH_OK);
	CHECK(vlen == 8 && memcmp(v, "!conv:hs", 8) == 0);
	json_t *room = NULL;
	CHECK_EQ_INT(store_get_json(t, STORE_ROOMS, "!conv:hs", &room), TH_OK);
	CHECK_STR(json_string_value(json_object_get(room, "kind")), "portal");
	json_decref(room);
	store_txn_abort(t);
}

/* audit_export: without a checkpoint the lead is told why there is no file;
 * then the export is uploaded (a failed upload is retried), and an m.file
 * replies to the command.  The file verifies. */
static void test_audit_export(store *st, outbox *ob, const char *dir)
{
	char *key = xasprintf("%s/audit.key", dir), *seal = xasprintf("%s/seal-keys", dir);
	struct audit_opts o = {key, seal, 1000, 3600};
	audit *au;
	CHECK_EQ_INT(audit_open(st, &o, &au), TH_OK);
	cfg.audit_key_path = key;
	const char *action = "{\"op\":\"audit_export\",\"room_id\":\"!sg:hs\",\"user_id\":\"@bot:hs\","
	                     "\"reply_to\":\"$cmd\",\"since_ms\":0}";

	fake_script(NULL);
	push(st, action);
	outbox_wake(ob);
	CHECK(wait_drained(ob, 1, 5000));
	CHECK_EQ_INT(fake_nseen(), 1);
	CHECK(strstr(fk.seen[0].path, "/send/m.room.message/") != NULL);
	CHECK(strstr(fk.seen[0].body, "No audit export: the audit log has no signed checkpoint yet.") !=
	      NULL);
	CHECK(strstr(fk.seen[0].body, "\"$cmd\"") != NULL);

	store_txn *t;
	struct audit_rec rec = {.kind = AUDIT_STARTUP, .actor = "cli:test"};
	CHECK_EQ_INT(store_txn_begin(st, 1, &t), TH_OK);
	CHECK_EQ_INT(audit_append(au, t, &rec, NULL), TH_OK);
	CHECK_EQ_INT(audit_checkpoint(au, t, 0), TH_OK);
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);

	fake_script((struct answer[]){{502, "{}", 0, NULL},
	                              {200, "{\"content_uri\":\"mxc://hs/abc\"}", 0, NULL},
	                              {200, "{\"event_id\":\"$f\"}", 0, NULL},
	                              {0}});
	push(st, action);
	outbox_wake(ob);
	CHECK(wait_drained(ob, 3, 10000));
	CHECK_EQ_INT(fake_nseen(), 3);
	for (int i = 0; i < 2; i++) {
		CHECK_STR(fk.seen[i].method, "POST");
		CHECK_STR(fk.seen[i].path, "/_matrix/media/v3/upload");
		CHECK(strstr(fk.seen[i].query, "filename=threshold-audit-") != NULL);
		CHECK(strstr(fk.seen[i].query, "user_id=%40bot%3Ahs") != NULL);
		CHECK_STR(fk.seen[i].ctype, "application/x-ndjson");
		CHECK(strncmp(fk.seen[i].body, "{\"exported_ts\":", 15) == 0);
	}
	CHECK(strncmp(fk.seen[2].path, "/_matrix/client/v3/rooms/%21sg%3Ahs/send/m.room.message/th", 58) ==
	      0);
	json_t *content = json_loads(fk.seen[2].body, 0, NULL);
	CHECK_STR(json_string_value(json_object_get(content, "msgtype")), "m.file");
	CHECK_STR(json_string_value(json_object_get(content, "url")), "mxc://hs/abc");
	const char *name = json_string_value(json_object_get(content, "body"));
	CHECK(name && strncmp(name, "threshold-audit-", 16) == 0 && strstr(name, ".jsonl"));
	json_t *info = json_object_get(content, "info");
	CHECK(json_integer_value(json_object_get(info, "size")) == (json_int_t)strlen(fk.seen[1].body));
	CHECK_STR(json_string_value(json_object_get(info, "mimetype")), "application/x-ndjson");
	CHECK_STR(json_string_value(json_object_get(
	                  json_object_get(json_object_get(content, "m.relates_to"), "m.in_reply_to"),
	                  "event_id")),
	          "$cmd");
	json_decref(content);

	char *file = xasprintf("%s/export.jsonl", dir);
	CHECK_EQ_INT(th_write_file_atomic(file, fk.seen[1].body, strlen(fk.seen[1].body), 0600), TH_OK);
	struct audit_verify_result res;
	CHECK_EQ_INT(audit_verify_file(file, audit_pubkey(au), &res), TH_OK);
	CHECK(res.records == 2 && res.checkpoints == 1);

	/* The homeserver refuses the file for good: the lead is told, once. */
	fake_script((struct answer[]){{413, "{\"errcode\":\"M_TOO_LARGE\"}", 0, NULL},
	                              {200, "{\"event_id\":\"$n\"}", 0, NULL},
	                              {0}});
	push(st, action);
	outbox_wake(ob);
	CHECK(wait_drained(ob, 2, 5000));
	CHECK_EQ_INT(fake_nseen(), 2);
	CHECK(strstr(fk.seen[1].body, "refused the upload (HTTP 413 M_TOO_LARGE)") != NULL);

	cfg.audit_key_path = NULL;
	audit_close(au);
	free(file);
	free(key);
	free(seal);
}

/* The last matching record's JSON (new reference in *ctx). */
static int keep_last(void *ctx, uint64_t seq, const json_t *rec, const char *raw, size_t rawlen)
{
	(void)seq;
	(void)raw;
	(void)rawlen;
	json_t **out = ctx;
	json_decref(*out);
	*out = json_deep_copy(rec);
	return 0;
}

/* An enforcement action (a kick, a revert) refused for good is recorded as
 * enforcement_failed and alerted in the safeguarding room; an action that
 * enforces nothing is only logged. */
static void test_enforcement_refused(store *st, outbox *ob, const char *dir)
{
	char *key = xasprintf("%s/audit.key", dir), *seal = xasprintf("%s/seal-keys", dir);
	struct audit_opts o = {key, seal, 1000, 3600};
	audit *au;
	CHECK_EQ_INT(audit_open(st, &o, &au), TH_OK);
	outbox_set_audit(ob, au);
	static char sg[] = "!sg:hs";
	cfg.safeguarding_room = sg;

	fake_script((struct answer[]){{403, "{\"errcode\":\"M_FORBIDDEN\"}", 0, NULL},
	                              {200, "{\"event_id\":\"$n\"}", 0, NULL},
	                              {0}});
	push(st, "{\"op\":\"kick\",\"room_id\":\"!r:hs\",\"user_id\":\"@bot:hs\",\"target\":\"@x:hs\","
	         "\"enforce\":{\"reason\":\"stranger_removed\",\"event_id\":\"$j\"}}");
	outbox_wake(ob);
	CHECK(wait_drained(ob, 2, 5000));
	CHECK_EQ_INT(fake_nseen(), 2);
	CHECK(strstr(fk.seen[0].path, "/kick") != NULL);
	CHECK(strstr(fk.seen[1].path, "/rooms/%21sg%3Ahs/send/m.room.message/") != NULL);
	CHECK(strstr(fk.seen[1].body, "could NOT remove @x:hs from room !r:hs (stranger_removed)") != NULL);
	CHECK(strstr(fk.seen[1].body, "HTTP 403 M_FORBIDDEN") != NULL);

	store_txn *t;
	struct audit_filter f;
	audit_filter_init(&f);
	f.kind = AUDIT_ENFORCEMENT_FAILED;
	json_t *rec = NULL;
	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	CHECK_EQ_INT(audit_iter(t, &f, keep_last, &rec), TH_OK);
	store_txn_abort(t);
	CHECK(rec != NULL);
	CHECK_STR(json_string_value(json_object_get(rec, "reason")), "stranger_removed");
	CHECK_STR(json_string_value(json_object_get(rec, "subject")), "@x:hs");
	CHECK_STR(json_string_value(json_object_get(rec, "room")), "!r:hs");
	CHECK_STR(json_string_value(json_object_get(json_object_get(rec, "details"), "refused")),
	          "HTTP 403 M_FORBIDDEN");
	CHECK_STR(json_string_value(json_object_get(json_object_get(rec, "details"), "event_id")), "$j");
	json_decref(rec);

	/* Without "enforce": dropped, no record, no alert. */
	fake_script((struct answer[]){{403, "{\"errcode\":\"M_FORBIDDEN\"}", 0, NULL}, {0}});
	push(st, "{\"op\":\"kick\",\"room_id\":\"!r:hs\",\"user_id\":\"@bot:hs\",\"target\":\"@y:hs\"}");
	outbox_wake(ob);
	CHECK(wait_drained(ob, 1, 5000));
	sleep_ms(100);
	CHECK_EQ_INT(fake_nseen(), 1);

	/* The room taken off the directory, as the bot. */
	fake_script(NULL);
	push(st, "{\"op\":\"directory_visibility\",\"room_id\":\"!r:hs\",\"user_id\":\"@bot:hs\","
	         "\"visibility\":\"private\"}");
	outbox_wake(ob);
	CHECK(wait_drained(ob, 1, 5000));
	CHECK_STR(fk.seen[0].method, "PUT");
	CHECK_STR(fk.seen[0].path, "/_matrix/client/v3/directory/list/room/%21r%3Ahs");
	CHECK_STR(fk.seen[0].query, "user_id=%40bot%3Ahs");
	CHECK(json_eq_text(fk.seen[0].body, "{\"visibility\":\"private\"}"));

	cfg.safeguarding_room = NULL;
	outbox_set_audit(ob, NULL);
	audit_close(au);
	free(key);
	free(seal);
}

/* A hang past client_timeout_ms is retried, and the retry reuses the txnId. */
static void test_send_timeout(store *st, outbox *ob, char *path_out, size_t cap)
{
	fake_script((struct answer[]){{200, "{\"event_id\":\"$1\"}", 1000, NULL}, {0}});
	push(st, "{\"op\":\"send\",\"room_id\":\"!r:hs\",\"user_id\":\"@g:hs\",\"type\":\"m.room.message\","
	         "\"content\":{\"msgtype\":\"m.notice\",\"body\":\"hello\"}}");
	outbox_wake(ob);
	CHECK(wait_drained(ob, 2, 5000));
	CHECK_EQ_INT(fake_nseen(), 2);
	CHECK_STR(fk.seen[0].method, "PUT");
	CHECK(strncmp(fk.seen[0].path, "/_matrix/client/v3/rooms/%21r%3Ahs/send/m.room.message/th", 56) == 0);
	CHECK_STR(fk.seen[1].path, fk.seen[0].path);
	CHECK_STR(fk.seen[1].query, "user_id=%40g%3Ahs");
	CHECK(json_eq_text(fk.seen[1].body, "{\"msgtype\":\"m.notice\",\"body\":\"hello\"}"));
	/* Timed out at ~300 ms, then a 500 ms backoff. */
	CHECK(fk.seen[1].t_ms - fk.seen[0].t_ms >= 600);
	copy_str(path_out, cap, fk.seen[0].path);
}

/* A 403 drops the head and the queue moves on, in order. */
static void test_drop(store *st, outbox *ob)
{
	fake_script((struct answer[]){{403, "{\"errcode\":\"M_FORBIDDEN\"}", 0, NULL}, {0}});
	push(st, "{\"op\":\"join\",\"room_id\":\"!r:hs\",\"user_id\":\"@g:hs\"}");
	push(st, "{\"op\":\"displayname\",\"user_id\":\"@g:hs\",\"displayname\":\"Blue Otter\"}");
	push(st, "{\"op\":\"register\",\"localpart\":\"g9\"}");
	outbox_wake(ob);
	CHECK(wait_drained(ob, 3, 5000));
	sleep_ms(50);
	CHECK_EQ_INT(fake_nseen(), 3);
	CHECK_STR(fk.seen[0].path, "/_matrix/client/v3/rooms/%21r%3Ahs/join");
	CHECK_STR(fk.seen[1].method, "PUT");
	CHECK_STR(fk.seen[1].path, "/_matrix/client/v3/profile/%40g%3Ahs/displayname");
	CHECK_STR(fk.seen[1].query, "user_id=%40g%3Ahs");
	CHECK(json_eq_text(fk.seen[1].body, "{\"displayname\":\"Blue Otter\"}"));
	CHECK_STR(fk.seen[2].path, "/_matrix/client/v3/register");
	CHECK_STR(fk.seen[2].query, "");
}

/* outbox_stop interrupts a long backoff; the action stays queued. */
static void test_stop_in_backoff(store *st, outbox *ob)
{
	fake_script((struct answer[]){
	        {429, "{\"errcode\":\"M_LIMIT_EXCEEDED\",\"retry_after_ms\":30000}", 0, NULL}, {0}});
	push(st, "{\"op\":\"join\",\"room_id\":\"!s:hs\",\"user_id\":\"@g:hs\"}");
	outbox_wake(ob);
	uint64_t end = th_mono_ms() + 3000;
	while (fake_nseen() < 1 && th_mono_ms() < end)
		sleep_ms(10);
	CHECK_EQ_INT(fake_nseen(), 1);
	sleep_ms(50);
	uint64_t t0 = th_mono_ms();
	outbox_stop(ob);
	CHECK(th_mono_ms() - t0 < 2000);
	CHECK_EQ_INT(stored_count(st), 1);
}

/* What was committed before the worker started runs when it starts, and a
 * drained queue never reuses a txnId. */
static void test_restart(store *st, const char *old_send_path)
{
	push(st, "{\"op\":\"send\",\"room_id\":\"!r:hs\",\"user_id\":\"@g:hs\",\"type\":\"m.room.message\","
	         "\"content\":{\"msgtype\":\"m.notice\",\"body\":\"again\"}}");
	fake_script(NULL);
	outbox *ob;
	CHECK_EQ_INT(outbox_start(st, &cfg, NULL, &ob), TH_OK);
	CHECK(wait_drained(ob, 2, 5000));
	CHECK_EQ_INT(fake_nseen(), 2);
	CHECK_STR(fk.seen[0].path, "/_matrix/client/v3/rooms/%21s%3Ahs/join");
	const char *p = fk.seen[1].path;
	CHECK(strncmp(p, "/_matrix/client/v3/rooms/%21r%3Ahs/send/m.room.message/th", 56) == 0);
	CHECK(strcmp(p, old_send_path) != 0);
	/* Same store, same prefix: everything up to the sequence number matches. */
	const char *us = strrchr(p, '_'), *old_us = strrchr(old_send_path, '_');
	CHECK(us && old_us && us - p == old_us - old_send_path &&
	      strncmp(p, old_send_path, (size_t)(us - p)) == 0);

	/* Drained empty, the next send still gets a new sequence number. */
	char prev[512];
	copy_str(prev, sizeof(prev), p);
	fake_script(NULL);
	push(st, "{\"op\":\"send\",\"room_id\":\"!r:hs\",\"user_id\":\"@g:hs\",\"type\":\"m.room.message\","
	         "\"content\":{}}");
	outbox_wake(ob);
	CHECK(wait_drained(ob, 1, 5000));
	CHECK(strcmp(fk.seen[0].path, prev) != 0);
	CHECK(strcmp(fk.seen[0].path, old_send_path) != 0);
	outbox_stop(ob);
}

/* ---- lanes ---------------------------------------------------------------- */

/* Index of the first request from @p from on whose path holds @p frag, or -1. */
static int seen_at(const char *frag, size_t from)
{
	pthread_mutex_lock(&fk.mu);
	int found = -1;
	for (size_t i = from; i < fk.nseen && found < 0; i++) {
		if (strstr(fk.seen[i].path, frag))
			found = (int)i;
	}
	pthread_mutex_unlock(&fk.mu);
	return found;
}

/* Wait for a request whose path holds @p frag; its index. */
static size_t wait_path(const char *frag, size_t from, unsigned timeout_ms)
{
	uint64_t end = th_mono_ms() + timeout_ms;
	int i;
	while ((i = seen_at(frag, from)) < 0 && th_mono_ms() < end)
		sleep_ms(5);
	CHECK(i >= 0);
	return i < 0 ? 0 : (size_t)i;
}

static outbox *lanes_start(store *st, unsigned concurrency)
{
	cfg.outbox_concurrency = concurrency;
	outbox *ob;
	CHECK_EQ_INT(outbox_start(st, &cfg, NULL, &ob), TH_OK);
	return ob;
}

/* Two leaves of rooms another server holds, each held by the homeserver:
 * the guest's message in another room reaches it while the first is still
 * held, and the second leave waits for the first (one remote slot of four). */
static void test_lanes_remote(store *st)
{
	fake_script(NULL);
	fake_rule("far1", (struct answer){200, "{}", 1500, NULL}, 0);
	fake_rule("far2", (struct answer){200, "{}", 1500, NULL}, 0);
	push(st, "{\"op\":\"leave\",\"room_id\":\"!far1:remote.example\",\"user_id\":\"@g:hs\"}");
	push(st, "{\"op\":\"leave\",\"room_id\":\"!far2:remote.example\",\"user_id\":\"@threshold:hs\"}");
	push(st,
	     "{\"op\":\"send\",\"room_id\":\"!near:hs\",\"user_id\":\"@g:hs\",\"type\":\"m.room.message\","
	     "\"content\":{\"msgtype\":\"m.text\",\"body\":\"I am in danger\"}}");
	outbox *ob = lanes_start(st, 4);
	CHECK(wait_drained(ob, 3, 8000));
	outbox_stop(ob);
	size_t f1 = wait_path("far1", 0, 10), f2 = wait_path("far2", 0, 10), near = wait_path("near", 0, 10);
	CHECK(fk.seen[near].t_ms < fk.seen[f1].t_done_ms);
	CHECK(fk.seen[f2].t_ms >= fk.seen[f1].t_done_ms);
}

/* Order within a lane, through a retry; another lane does not wait for it. */
static void test_lanes_order(store *st)
{
	fake_script(NULL);
	fake_rule("%21a%3Ahs", (struct answer){500, "{\"errcode\":\"M_UNKNOWN\"}", 0, NULL}, 0);
	for (int i = 1; i <= 3; i++) {
		char *a = xasprintf(
		        "{\"op\":\"send\",\"room_id\":\"!a:hs\",\"user_id\":\"@g:hs\",\"type\":\"m.room."
		        "message\",\"content\":{\"msgtype\":\"m.text\",\"body\":\"a%d\"}}",
		        i);
		push(st, a);
		free(a);
	}
	push(st, "{\"op\":\"send\",\"room_id\":\"!b:hs\",\"user_id\":\"@g:hs\",\"type\":\"m.room.message\","
	         "\"content\":{\"msgtype\":\"m.text\",\"body\":\"b1\"}}");
	outbox *ob = lanes_start(st, 4);
	CHECK(wait_drained(ob, 5, 8000));
	outbox_stop(ob);
	CHECK_EQ_INT(fake_nseen(), 5);
	size_t a1 = wait_path("%21a%3Ahs", 0, 10), again = wait_path("%21a%3Ahs", a1 + 1, 10);
	size_t a2 = wait_path("%21a%3Ahs", again + 1, 10), a3 = wait_path("%21a%3Ahs", a2 + 1, 10);
	size_t b1 = wait_path("%21b%3Ahs", 0, 10);
	CHECK(strstr(fk.seen[a1].body, "\"a1\"") && strstr(fk.seen[again].body, "\"a1\""));
	CHECK_STR(fk.seen[again].path, fk.seen[a1].path);
	CHECK(strstr(fk.seen[a2].body, "\"a2\"") != NULL);
	CHECK(strstr(fk.seen[a3].body, "\"a3\"") != NULL);
	CHECK(fk.seen[a2].t_ms >= fk.seen[again].t_done_ms);
	CHECK(fk.seen[a3].t_ms >= fk.seen[a2].t_done_ms);
	/* b1 went while a1 waited out its backoff */
	CHECK(fk.seen[b1].t_ms < fk.seen[again].t_ms);
}

/* No more than outbox.concurrency requests at once, and that many. */
static void test_lanes_bounded(store *st)
{
	fake_script(NULL);
	fake_rule("/send/", (struct answer){200, "{\"event_id\":\"$x\"}", 300, NULL}, 1);
	for (int i = 0; i < 12; i++) {
		char *a = xasprintf(
		        "{\"op\":\"send\",\"room_id\":\"!c%d:hs\",\"user_id\":\"@g:hs\",\"type\":\"m.room."
		        "message\",\"content\":{}}",
		        i);
		push(st, a);
		free(a);
	}
	outbox *ob = lanes_start(st, 4);
	CHECK(wait_drained(ob, 12, 8000));
	outbox_stop(ob);
	CHECK_EQ_INT(fake_nseen(), 12);
	CHECK_EQ_INT(fk.max_inflight, 4);
}

/* An erasure's shape (bridge/conv.c conv_erase): the profile change and the
 * deactivation wait for the redactions and the leave in the guest's rooms. */
static void test_lanes_after_erase(store *st)
{
	fake_script(NULL);
	fake_rule("%21eb%3Ahs/redact", (struct answer){200, "{}", 800, NULL}, 0);
	push(st, "{\"op\":\"redact\",\"room_id\":\"!ea:hs\",\"user_id\":\"@e:hs\",\"event_id\":\"$1\"}");
	push(st, "{\"op\":\"redact\",\"room_id\":\"!eb:hs\",\"user_id\":\"@e:hs\",\"event_id\":\"$2\"}");
	push(st, "{\"op\":\"leave\",\"room_id\":\"!ea:hs\",\"user_id\":\"@e:hs\"}");
	push(st, "{\"op\":\"displayname\",\"user_id\":\"@e:hs\",\"displayname\":\"Former guest\","
	         "\"after\":[\"!ea:hs\",\"!eb:hs\"]}");
	push(st, "{\"op\":\"deactivate\",\"user_id\":\"@e:hs\",\"after\":[\"!ea:hs\",\"!eb:hs\"]}");
	outbox *ob = lanes_start(st, 8);
	CHECK(wait_drained(ob, 5, 8000));
	outbox_stop(ob);
	size_t rb = wait_path("%21eb%3Ahs/redact", 0, 10), leave = wait_path("%21ea%3Ahs/leave", 0, 10);
	size_t dn = wait_path("/displayname", 0, 10), de = wait_path("/account/deactivate", 0, 10);
	CHECK(fk.seen[leave].t_ms < fk.seen[rb].t_done_ms); /* the rooms' lanes ran side by side */
	CHECK(fk.seen[dn].t_ms >= fk.seen[rb].t_done_ms);
	CHECK(fk.seen[dn].t_ms >= fk.seen[leave].t_done_ms);
	CHECK(fk.seen[de].t_ms >= fk.seen[dn].t_done_ms);
}

/* A redemption's shape (conv_redeem): register, display name and the
 * portal's create_room in the guest's lane; a group invite after the
 * register. */
static void test_lanes_after_redeem(store *st)
{
	fake_script(NULL);
	fake_rule("/register", (struct answer){200, "{\"user_id\":\"@r1:hs\"}", 600, NULL}, 0);
	fake_rule("/createRoom", (struct answer){200, "{\"room_id\":\"!p1:hs\"}", 0, NULL}, 0);
	push(st, "{\"op\":\"register\",\"localpart\":\"r1\"}");
	push(st, "{\"op\":\"displayname\",\"user_id\":\"@r1:hs\",\"displayname\":\"Blue Otter\"}");
	push(st, "{\"op\":\"create_room\",\"user_id\":\"@bot:hs\",\"kind\":\"portal\",\"content\":{},"
	         "\"lane\":\"@r1:hs\"}");
	push(st, "{\"op\":\"invite\",\"room_id\":\"!grp:hs\",\"user_id\":\"@bot:hs\",\"target\":\"@r1:hs\","
	         "\"after\":[\"@r1:hs\"]}");
	push(st, "{\"op\":\"join\",\"room_id\":\"!other:hs\",\"user_id\":\"@s:hs\"}");
	outbox *ob = lanes_start(st, 8);
	CHECK(wait_drained(ob, 5, 8000));
	outbox_stop(ob);
	size_t reg = wait_path("/register", 0, 10), dn = wait_path("/displayname", 0, 10);
	size_t cr = wait_path("/createRoom", 0, 10), inv = wait_path("%21grp%3Ahs/invite", 0, 10);
	size_t other = wait_path("%21other%3Ahs/join", 0, 10);
	CHECK(fk.seen[dn].t_ms >= fk.seen[reg].t_done_ms);
	CHECK(fk.seen[cr].t_ms >= fk.seen[dn].t_done_ms);
	CHECK(fk.seen[inv].t_ms >= fk.seen[reg].t_done_ms);
	CHECK(fk.seen[other].t_ms < fk.seen[reg].t_done_ms);
}

/* An action that keeps failing is set aside after give_up_after_seconds:
 * kept, listed, announced in the safeguarding room; its lane carries on,
 * and the other lanes never waited. */
static void test_lanes_give_up(store *st)
{
	cfg.outbox_give_up_s = 1;
	cfg.safeguarding_room = "!sg:hs";
	cfg.bot_user_id = "@bot:hs";
	fake_script(NULL);
	fake_rule("%21dead%3Ahs/join", (struct answer){502, "{}", 0, NULL}, 1);
	push(st, "{\"op\":\"join\",\"room_id\":\"!dead:hs\",\"user_id\":\"@g:hs\"}");
	push(st,
	     "{\"op\":\"send\",\"room_id\":\"!dead:hs\",\"user_id\":\"@g:hs\",\"type\":\"m.room.message\","
	     "\"content\":{\"msgtype\":\"m.text\",\"body\":\"after\"}}");
	push(st,
	     "{\"op\":\"send\",\"room_id\":\"!live:hs\",\"user_id\":\"@g:hs\",\"type\":\"m.room.message\","
	     "\"content\":{\"msgtype\":\"m.text\",\"body\":\"meanwhile\"}}");
	outbox *ob = lanes_start(st, 4);
	size_t alert = wait_path("%21sg%3Ahs/send", 0, 8000);
	CHECK(wait_drained(ob, 1, 8000));
	struct outbox_stats stats;
	outbox_stats_get(ob, &stats);
	outbox_stop(ob);
	CHECK_EQ_INT(stats.set_aside, 1);
	size_t live = wait_path("%21live%3Ahs/send", 0, 10), after = wait_path("%21dead%3Ahs/send", 0, 10);
	size_t last = 0, tries = 0;
	for (int i = 0; (i = seen_at("%21dead%3Ahs/join", (size_t)i)) >= 0; i++, tries++)
		last = (size_t)i;
	CHECK(tries >= 2);
	CHECK(fk.seen[live].t_ms < fk.seen[last].t_ms);
	CHECK(fk.seen[after].t_ms >= fk.seen[last].t_done_ms);
	/* The alert: plain words, ids only. */
	const char *body = fk.seen[alert].body;
	CHECK(strstr(body, "join in !dead:hs") != NULL);
	CHECK(strstr(body, "HTTP 502") != NULL);
	CHECK(strstr(body, "threshold status") != NULL);
	CHECK(strstr(body, "\"m.notice\"") != NULL);
	CHECK(strstr(fk.seen[alert].query, "user_id=%40bot%3Ahs") != NULL);
	/* Kept, and listed as threshold status lists it. */
	store_txn *t;
	json_t *list = NULL;
	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	CHECK_EQ_INT(outbox_failed_list(t, &list), TH_OK);
	store_txn_abort(t);
	CHECK_EQ_INT(json_array_size(list), 1);
	json_t *row = json_array_get(list, 0);
	CHECK_STR(jsonx_str(row, "op"), "join");
	CHECK_STR(jsonx_str(row, "room_id"), "!dead:hs");
	CHECK_STR(jsonx_str(row, "user_id"), "@g:hs");
	CHECK_STR(jsonx_str(row, "last_error"), "HTTP 502");
	CHECK(json_integer_value(json_object_get(row, "attempts")) == (json_int_t)tries);
	json_decref(list);
	CHECK_EQ_INT(stored_count(st), 0);
	cfg.outbox_give_up_s = 3600;
	cfg.safeguarding_room = NULL;
}

/* The time to give up runs on across a restart: the store keeps when the
 * action first failed. */
static void test_lanes_give_up_restart(store *st)
{
	cfg.outbox_give_up_s = 2;
	fake_script(NULL);
	fake_rule("%21stuck%3Ahs/join", (struct answer){502, "{}", 0, NULL}, 1);
	push(st, "{\"op\":\"join\",\"room_id\":\"!stuck:hs\",\"user_id\":\"@g:hs\"}");
	outbox *ob = lanes_start(st, 4);
	wait_path("%21stuck%3Ahs/join", 0, 5000);
	sleep_ms(100);
	outbox_stop(ob);
	json_t *head = stored_head(st);
	CHECK(json_integer_value(json_object_get(head, "failed_since_ms")) > 0);
	json_decref(head);
	sleep_ms(1700);
	uint64_t restarted = th_mono_ms();
	ob = lanes_start(st, 4);
	CHECK(wait_drained(ob, 1, 8000));
	struct outbox_stats stats;
	outbox_stats_get(ob, &stats);
	outbox_stop(ob);
	CHECK_EQ_INT(stats.set_aside, 1);
	/* Set aside well before a fresh 2 s from the restart would have run out. */
	size_t last = 0;
	for (int i = 0; (i = seen_at("%21stuck%3Ahs/join", (size_t)i)) >= 0; i++)
		last = (size_t)i;
	CHECK(fk.seen[last].t_done_ms - restarted < 1500);
	cfg.outbox_give_up_s = 3600;
}

/* A backlog drains with its removals (and a done fn's work) committed in
 * batches, not one commit per action. */
static void test_lanes_batch(store *st)
{
	fake_script(NULL);
	fake_rule("/createRoom", (struct answer){200, "{\"room_id\":\"!bc1:hs\"}", 0, NULL}, 0);
	fake_rule("/createRoom", (struct answer){200, "{\"room_id\":\"!bc2:hs\"}", 0, NULL}, 0);
	push(st, "{\"op\":\"create_room\",\"user_id\":\"@bot:hs\",\"kind\":\"group\",\"content\":{}}");
	push(st, "{\"op\":\"create_room\",\"user_id\":\"@bot:hs\",\"kind\":\"group\",\"content\":{},"
	         "\"lane\":\"second\"}");
	store_txn *t;
	CHECK_EQ_INT(store_txn_begin(st, 1, &t), TH_OK);
	for (int i = 0; i < 300; i++) {
		char *room = xasprintf("!q%d:hs", i % 30);
		json_t *a = outbox_notice(room, "@bot:hs", "backlog", NULL);
		CHECK_EQ_INT(outbox_push(t, a), TH_OK);
		json_decref(a);
		free(room);
	}
	CHECK_EQ_INT(store_txn_commit(t), TH_OK);
	outbox *ob = lanes_start(st, 8);
	CHECK(wait_drained(ob, 302, 20000));
	struct outbox_stats stats;
	outbox_stats_get(ob, &stats);
	outbox_stop(ob);
	CHECK_EQ_INT(stats.removed, 302);
	CHECK(stats.commits * 2 < stats.removed);
	json_t *room = NULL;
	CHECK_EQ_INT(store_txn_begin(st, 0, &t), TH_OK);
	CHECK_EQ_INT(store_get_json(t, STORE_ROOMS, "!bc1:hs", &room), TH_OK);
	json_decref(room);
	CHECK_EQ_INT(store_get_json(t, STORE_ROOMS, "!bc2:hs", &room), TH_OK);
	json_decref(room);
	store_txn_abort(t);
}

/* The daemon dies with an action in flight: at the next start it runs again
 * (the same request: a send keeps its txnId), then the queue moves on. */
static void test_lanes_crash(const char *dir)
{
	fake_script(NULL);
	fake_rule("%21crash%3Ahs/send", (struct answer){200, "{}", 3000, NULL}, 0);
	pid_t pid = fork();
	if (pid == 0) {
		store *cst;
		outbox *ob;
		if (store_open(dir, 16, &cst) != TH_OK)
			_exit(2);
		json_t *a = outbox_notice("!crash:hs", "@bot:hs", "in flight", NULL);
		json_t *b = outbox_notice("!crash:hs", "@bot:hs", "next", NULL);
		store_txn *t;
		if (store_txn_begin(cst, 1, &t) || outbox_push(t, a) || outbox_push(t, b) ||
		    store_txn_commit(t))
			_exit(3);
		if (outbox_start(cst, &cfg, NULL, &ob) != TH_OK)
			_exit(4);
		sleep_ms(800);
		_exit(0); /* no stop, no commit: a crash */
	}
	CHECK(pid > 0);
	int status = 0;
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK_EQ_INT(seen_at("%21crash%3Ahs/send", 0), 0);
	CHECK_EQ_INT(fake_nseen(), 1); /* the second waited behind the first */
	char first[512];
	copy_str(first, sizeof(first), fk.seen[0].path);
	fk.rules[0].used = 1;
	store *st;
	CHECK_EQ_INT(store_open(dir, 16, &st), TH_OK);
	CHECK_EQ_INT(stored_count(st), 2);
	outbox *ob = lanes_start(st, 4);
	CHECK(wait_drained(ob, 3, 8000));
	outbox_stop(ob);
	CHECK_EQ_INT(fake_nseen(), 3);
	CHECK_STR(fk.seen[1].path, first);
	CHECK(strstr(fk.seen[1].body, "in flight") != NULL);
	CHECK(strstr(fk.seen[2].body, "next") != NULL);
	store_close(st);
}

int main(void)
{
	const char *lvl = getenv("THRESHOLD_TEST_LOG");
	if (lvl)
		log_set_level_name(lvl);
	fake_start();
	char *url = xasprintf("http://127.0.0.1:%u/", fk.port);
	cfg.hs_url = url;
	cfg.as_token = "tok-secret";
	cfg.as_id = "threshold";
	cfg.server_name = "hs";
	cfg.client_timeout_ms = 300;
	cfg.client_connect_timeout_ms = 1000;
	cfg.outbox_max_backoff_ms = 60000;
	/* One at a time, oldest ready first: the tests below see requests in
	 * the order they were queued.  The lane tests start their own outbox. */
	cfg.outbox_concurrency = 1;
	cfg.outbox_give_up_s = 3600;

	test_escape();
	test_backoff();

	cs_client *c;
	CHECK_EQ_INT(cs_client_new(&cfg, &c), TH_OK);
	test_request(c);
	test_register_ping(c);
	cs_client_free(c);
	test_unreachable();

	char *dir = test_tmpdir();
	store *st;
	CHECK_EQ_INT(store_open(dir, 16, &st), TH_OK);
	test_push_validation(st);
	outbox *ob;
	struct outbox_hooks hooks = {.room_created = record_room_created, .ctx = &hooked};
	CHECK_EQ_INT(outbox_start(st, &cfg, &hooks, &ob), TH_OK);
	char send_path[512] = "";
	test_retry_5xx(st, ob);
	test_retry_429(st, ob);
	test_send_timeout(st, ob, send_path, sizeof(send_path));
	test_drop(st, ob);
	test_room_ops(st, ob);
	test_create_room_lost(st, ob);
	test_room_created_hook(st, ob);
	test_guest_enter(st, ob);
	test_audit_export(st, ob, dir);
	test_enforcement_refused(st, ob, dir);
	test_stop_in_backoff(st, ob);
	test_restart(st, send_path);

	/* Lanes: several at once, each its own order. */
	cfg.client_timeout_ms = 5000;
	test_lanes_remote(st);
	test_lanes_order(st);
	test_lanes_bounded(st);
	test_lanes_after_erase(st);
	test_lanes_after_redeem(st);
	test_lanes_give_up(st);
	test_lanes_give_up_restart(st);
	test_lanes_batch(st);
	store_close(st);
	test_lanes_crash(dir);

	test_rmtree(dir);
	free(dir);
	fake_stop();
	free(url);
	return TEST_DONE();
}
