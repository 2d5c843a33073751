/* test_as_server.c - the AS API over real HTTP on loopback: token checks
 * before the body, body caps (declared and chunked), JSON errors, routes,
 * the users query and ping.  Uses libcurl as the client. */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "as_server.h"
#include "config.h"
#include "log.h"
#include "store.h"
#include "matrix_outbox.h"
#include "testlib.h"
#include "util.h"

static struct config cfg;
static store *st;
static unsigned port;
static int commits;

struct reply {
	long status;
	char body[4096];
	size_t len;
};

static size_t on_data(char *p, size_t sz, size_t n, void *ud)
{
	struct reply *r = ud;
	size_t take = sz * n;
	if (take > sizeof(r->body) - 1 - r->len)
		take = sizeof(r->body) - 1 - r->len;
	memcpy(r->body + r->len, p, take);
	r->len += take;
	r->body[r->len] = '\0';
	return sz * n;
}

/* One request.  @token NULL: no Authorization header.  @chunked: no Content-Length. */
static void req(const char *method, const char *path, const char *token, const char *body, size_t blen,
                int chunked /* 1: chunked; 2: Expect: 100-continue */, struct reply *r)
{
	memset(r, 0, sizeof(*r));
	CURL *c = curl_easy_init();
	char *url = xasprintf("http://127.0.0.1:%u%s", port, path);
	struct curl_slist *h = NULL;
	char *auth = token ? xasprintf("Authorization: Bearer %s", token) : NULL;
	if (auth)
		h = curl_slist_append(h, auth);
	h = curl_slist_append(h, "Content-Type: application/json");
	if (chunked == 1)
		h = curl_slist_append(h, "Transfer-Encoding: chunked");
	/* 2: ask before sending the body, as curl does for large ones, so an
	 * early refusal is read before the body goes (otherwise the server's
	 * close with the body unread may reset the connection first). */
	h = curl_slist_append(h, chunked == 2 ? "Expect: 100-continue" : "Expect:");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		if (chunked != 1)
			curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
	}
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
	CURLcode rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	curl_slist_free_all(h);
	free(auth);
	free(url);
	curl_easy_cleanup(c);
}

static int has_errcode(const struct reply *r, const char *errcode)
{
	json_t *j = json_loads(r->body, 0, NULL);
	const char *e = json_string_value(json_object_get(j, "errcode"));
	int ok = e && strcmp(e, errcode) == 0;
	json_decref(j);
	return ok;
}

#define TOKEN "hs_secret_token_0123"
#define TXN   "/_matrix/app/v1/transactions/"

static void test_auth(void)
{
	struct reply r;
	const char *body = "{\"events\":[]}";
	req("PUT", TXN "a1", NULL, body, strlen(body), 0, &r);
	CHECK_EQ_INT(r.status, 401);
	CHECK(has_errcode(&r, "M_UNAUTHORIZED"));
	req("PUT", TXN "a1", "hs_secret_token_0124", body, strlen(body), 0, &r);
	CHECK_EQ_INT(r.status, 403);
	CHECK(has_errcode(&r, "M_FORBIDDEN"));
	req("PUT", TXN "a1", "hs_secret_token_012", body, strlen(body), 0, &r);
	CHECK_EQ_INT(r.status, 403);
	req("PUT", TXN "a1", "as_secret_token_0123", body, strlen(body), 0, &r); /* the other token */
	CHECK_EQ_INT(r.status, 403);
	req("PUT", TXN "a1", TOKEN, body, strlen(body), 0, &r);
	CHECK_EQ_INT(r.status, 200);
	CHECK_STR(r.body, "{}");
	/* Every route checks the token, not only transactions. */
	req("GET", "/_matrix/app/v1/users/@threshold:test.local", NULL, NULL, 0, 0, &r);
	CHECK_EQ_INT(r.status, 401);
	req("POST", "/_matrix/app/v1/ping", "nope", "{}", 2, 0, &r);
	CHECK_EQ_INT(r.status, 403);
	req("GET", "/nothing/here", NULL, NULL, 0, 0, &r);
	CHECK_EQ_INT(r.status, 401);
}

static void test_bodies(void)
{
	struct reply r;
	req("PUT", TXN "b1", TOKEN, "{\"events\":[", 11, 0, &r);
	CHECK_EQ_INT(r.status, 400);
	CHECK(has_errcode(&r, "M_NOT_JSON"));

	size_t big = cfg.max_body_bytes + 1;
	char *body = xmalloc(big + 1);
	memset(body, ' ', big);
	body[0] = '{';
	body[big - 1] = '}';
	body[big] = '\0';
	/* A little over: read, thrown away and answered 413, every time (an
	 * answer before the body would race the reset of closing on it). */
	for (int i = 0; i < 20; i++) {
		req("PUT", TXN "b2", TOKEN, body, big, 0, &r);
		CHECK_EQ_INT(r.status, 413);
		CHECK(has_errcode(&r, "M_TOO_LARGE"));
	}
	/* Far over (past the 1 MiB read to answer cleanly): refused before the
	 * body; asked first, as curl does for large bodies, the sender hears it. */
	size_t far = cfg.max_body_bytes + (2u << 20);
	char *huge = xmalloc(far);
	memset(huge, ' ', far);
	req("PUT", TXN "b2x", TOKEN, huge, far, 2, &r);
	CHECK_EQ_INT(r.status, 413);
	CHECK(has_errcode(&r, "M_TOO_LARGE"));
	free(huge);
	/* Without a Content-Length the cap still holds, while reading. */
	req("PUT", TXN "b3", TOKEN, body, big, 1, &r);
	CHECK_EQ_INT(r.status, 413);
	/* Exactly at the cap is accepted. */
	body[big - 2] = '}';
	req("PUT", TXN "b4", TOKEN, body, big - 1, 0, &r);
	CHECK_EQ_INT(r.status, 200);
	free(body);

	/* Deep nesting is a 400, not a crash or a stack overflow. */
	size_t n = 100000;
	char *deep = xmalloc(2 * n + 3);
	deep[0] = '{';
	memset(deep + 1, '[', n);
	memset(deep + 1 + n, ']', n);
	deep[2 * n + 1] = '}';
	deep[2 * n + 2] = '\0';
	req("PUT", TXN "b5", TOKEN, deep, 2 * n + 2, 0, &r);
	CHECK_EQ_INT(r.status, 400);
	free(deep);

	/* Chunked body under the cap works like any other. */
	const char *ok = "{\"events\":[{\"event_id\":\"$c1\",\"room_id\":\"!r:test.local\",\"type\":\"m.room."
	                 "message\","
	                 "\"sender\":\"@a:test.local\",\"content\":{\"body\":\"x\"}}]}";
	req("PUT", TXN "b6", TOKEN, ok, strlen(ok), 1, &r);
	CHECK_EQ_INT(r.status, 200);
}

static void test_routes(void)
{
	struct reply r;
	req("GET", "/_matrix/app/v1/nothing", TOKEN, NULL, 0, 0, &r);
	CHECK_EQ_INT(r.status, 404);
	CHECK(has_errcode(&r, "M_UNRECOGNIZED"));
	req("GET", TXN "x", TOKEN, NULL, 0, 0, &r);
	CHECK_EQ_INT(r.status, 405);
	/* legacy, unprefixed path */
	req("PUT", "/transactions/legacy1", TOKEN, "{\"events\":[]}", 13, 0, &r);
	CHECK_EQ_INT(r.status, 200);

	req("GET", "/_matrix/app/v1/users/@threshold:test.local", TOKEN, NULL, 0, 0, &r);
	CHECK_EQ_INT(r.status, 200);
	/* A guest-shaped id Threshold never created does not exist. */
	req("GET", "/_matrix/app/v1/users/@guest_0123456789abcdef0123456789abcdef:test.local", TOKEN, NULL, 0,
	    0, &r);
	CHECK_EQ_INT(r.status, 404);
	CHECK(has_errcode(&r, "M_NOT_FOUND"));
	req("GET", "/_matrix/app/v1/users/@someone:test.local", TOKEN, NULL, 0, 0, &r);
	CHECK_EQ_INT(r.status, 404);
	req("GET", "/_matrix/app/v1/rooms/%23any:test.local", TOKEN, NULL, 0, 0, &r);
	CHECK_EQ_INT(r.status, 404);
}

static void on_commit(void *ctx)
{
	(void)ctx;
	commits++;
}

static void test_ping_and_commit_hook(as_server *srv)
{
	struct reply r;
	unsigned long before = as_server_pings(srv);
	req("POST", "/_matrix/app/v1/ping", TOKEN, "{\"transaction_id\":\"t\"}", 22, 0, &r);
	CHECK_EQ_INT(r.status, 200);
	CHECK_EQ_INT(as_server_pings(srv), before + 1);

	/* A transaction that queues an action calls the hook (which wakes the outbox). */
	int before_commits = commits;
	const char *invite = "{\"events\":[{\"event_id\":\"$i1\",\"room_id\":\"!h:test.local\","
	                     "\"type\":\"m.room.member\",\"state_key\":\"@threshold:test.local\","
	                     "\"sender\":\"@staff:test.local\",\"content\":{\"membership\":\"invite\"}}]}";
	req("PUT", TXN "h1", TOKEN, invite, strlen(invite), 0, &r);
	CHECK_EQ_INT(r.status, 200);
	CHECK_EQ_INT(commits, before_commits + 1);
	/* Replayed: answered, not processed again, so no second wake-up. */
	req("PUT", TXN "h1", TOKEN, invite, strlen(invite), 0, &r);
	CHECK_EQ_INT(r.status, 200);
	CHECK_EQ_INT(commits, before_commits + 1);
}

int main(void)
{
	log_threshold = LOG_ERROR;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	char *dir = test_tmpdir();
	test_config_init(&cfg, dir);
	CHECK_EQ_INT(store_open(cfg.store_path, cfg.map_size_mb, &st), TH_OK);
	as_server *srv = NULL;
	struct matrix_outbox mxo;
	matrix_outbox_init(&mxo, &cfg);
	struct txn_env env = {&cfg, st, NULL, &mxo.mx, NULL};
	CHECK_EQ_INT(as_server_start(&env, on_commit, NULL, &srv), TH_OK);
	if (!srv)
		return TEST_DONE();
	port = as_server_port(srv);
	CHECK(port > 0);
	test_auth();
	test_bodies();
	test_routes();
	test_ping_and_commit_hook(srv);
	as_server_stop(srv);
	store_close(st);
	config_free(&cfg);
	test_rmtree(dir);
	free(dir);
	curl_global_cleanup();
	return TEST_DONE();
}
