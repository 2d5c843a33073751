/*
 * cs.c - Client-Server API client on one reused libcurl easy handle.
 *
 * The as_token travels only in the Authorization header, set once per
 * client; nothing here ever logs it, a request body or a response body.
 * Redirects are not followed, so the token never goes to a host other than
 * hs_url.
 */
#include "cs.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "config.h"
#include "log.h"
#include "util.h"

/* A Retry-After above a day is nonsense; cap it before multiplying. */
#define RETRY_AFTER_MAX_S 86400u

struct cs_client {
	const struct config *cfg;
	CURL *curl;
	struct curl_slist *hdr_plain; /* Authorization, no Expect */
	struct curl_slist *hdr_json;  /* the same plus Content-Type */
	char *base;                   /* hs_url without a trailing '/' */
};

/* One response being received: the body with its hard cap, and headers. */
struct rx {
	char *buf;
	size_t len, cap;
	size_t max; /* the most body taken */
	int too_large;
	uint64_t retry_after_ms; /* from Retry-After, 0 if none */
	int raw;                 /* a 2xx body is bytes for the caller, not JSON */
	const char *what;        /* logged instead of the path (which may name a file), or NULL */
	int (*cancel)(void *ctx);
	void *cancel_ctx;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int client_new(const struct config *cfg, const char *token, cs_client **out)
{
	pthread_once(&global_once, global_init);
	if (global_rc != CURLE_OK) {
		LOG(LOG_ERROR, "cs: curl_global_init failed: %s", curl_easy_strerror(global_rc));
		return TH_ENET;
	}
	CURL *curl = curl_easy_init();
	if (!curl) {
		LOG(LOG_ERROR, "cs: curl_easy_init failed");
		return TH_ENET;
	}
	cs_client *c = xcalloc(1, sizeof(*c));
	c->cfg = cfg;
	c->curl = curl;

	size_t n = strlen(cfg->hs_url);
	while (n > 0 && cfg->hs_url[n - 1] == '/')
		n--;
	c->base = xstrndup(cfg->hs_url, n);

	/* "Expect:" stops curl pausing for a 100-continue on larger bodies. */
	char *auth = xasprintf("Authorization: Bearer %s", token ? token : "");
	const char *common[] = {auth, "Expect:"};
	for (size_t i = 0; i < sizeof(common) / sizeof(common[0]); i++) {
		c->hdr_plain = curl_slist_append(c->hdr_plain, common[i]);
		c->hdr_json = curl_slist_append(c->hdr_json, common[i]);
	}
	c->hdr_json = curl_slist_append(c->hdr_json, "Content-Type: application/json");
	explicit_bzero(auth, strlen(auth));
	free(auth);
	if (!c->hdr_plain || !c->hdr_json) {
		/* curl_slist_append only fails when out of memory. */
		fprintf(stderr, "threshold: out of memory building request headers\n");
		abort();
	}
	*out = c;
	return TH_OK;
}

int cs_client_new(const struct config *cfg, cs_client **out)
{
	return client_new(cfg, cfg->as_token, out);
}

int cs_client_new_token(const struct config *cfg, const char *token, cs_client **out)
{
	return client_new(cfg, token, out);
}

static void slist_free_wiped(struct curl_slist *l)
{
	for (struct curl_slist *p = l; p; p = p->next)
		explicit_bzero(p->data, strlen(p->data));
	curl_slist_free_all(l);
}

void cs_client_free(cs_client *c)
{
	if (!c)
		return;
	curl_easy_cleanup(c->curl);
	slist_free_wiped(c->hdr_plain);
	slist_free_wiped(c->hdr_json);
	free(c->base);
	free(c);
}

void cs_response_clear(struct cs_response *resp)
{
	json_decref(resp->body);
	memset(resp, 0, sizeof(*resp));
}

char *cs_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	char *out = xmalloc(3 * n + 1), *p = out;
	for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
		/* RFC 3986 unreserved characters pass; everything else is escaped. */
		if ((*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') ||
		    *q == '-' || *q == '.' || *q == '_' || *q == '~') {
			*p++ = (char)*q;
		} else {
			*p++ = '%';
			*p++ = hex[*q >> 4];
			*p++ = hex[*q & 15];
		}
	}
	*p = '\0';
	return out;
}

static size_t rx_body(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct rx *rx = ctx;
	size_t n = size * nmemb;
	if (n > rx->max - rx->len) {
		rx->too_large = 1;
		return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
	}
	if (rx->len + n + 1 > rx->cap) {
		size_t cap = rx->cap ? rx->cap : 4096;
		while (cap < rx->len + n + 1)
			cap *= 2;
		rx->buf = xrealloc(rx->buf, cap);
		rx->cap = cap;
	}
	memcpy(rx->buf + rx->len, data, n);
	rx->len += n;
	rx->buf[rx->len] = '\0';
	return n;
}

static size_t rx_header(char *data, size_t size, size_t nmemb, void *ctx)
{
	struct rx *rx = ctx;
	size_t n = size * nmemb;
	static const char name[] = "Retry-After:";
	const size_t nlen = sizeof(name) - 1;

	/* A new status line (after a 1xx) starts a new set of headers. */
	if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
		rx->retry_after_ms = 0;
		return n;
	}
	if (n <= nlen || strncasecmp(data, name, nlen) != 0)
		return n;
	/* spec: CS API, rate limiting: Retry-After in seconds (an HTTP-date is ignored) */
	char val[32];
	size_t i = nlen, j = 0;
	while (i < n && (data[i] == ' ' || data[i] == '\t'))
		i++;
	while (i < n && j + 1 < sizeof(val) && data[i] != '\r' && data[i] != '\n' && data[i] != ' ')
		val[j++] = data[i++];
	val[j] = '\0';
	uint64_t s;
	if (th_parse_u64(val, UINT64_MAX, &s) == TH_OK)
		rx->retry_after_ms = (s > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : s) * 1000u;
	return n;
}

static int rx_progress(void *ctx, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	struct rx *rx = ctx;
	return rx->cancel(rx->cancel_ctx) != 0; /* non-zero aborts with CURLE_ABORTED_BY_CALLBACK */
}

static int method_ok(const char *m)
{
	return strcmp(m, "GET") == 0 || strcmp(m, "PUT") == 0 || strcmp(m, "POST") == 0 ||
	       strcmp(m, "DELETE") == 0;
}

/* Set every option for one request; curl_easy_reset keeps the live connection. */
static int setup(cs_client *c, const char *method, const char *url, const char *payload, size_t plen,
                 struct curl_slist *headers, struct rx *rx)
{
	CURL *h = c->curl;
	CURLcode e = CURLE_OK;
	curl_easy_reset(h);
#define SET(opt, val)                                      \
	do {                                               \
		if (e == CURLE_OK)                         \
			e = curl_easy_setopt(h, opt, val); \
	} while (0)
	SET(CURLOPT_URL, url);
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_NOSIGNAL, 1L);
	/* Straight to hs_url: an environment proxy must never see the as_token. */
	SET(CURLOPT_PROXY, "");
	SET(CURLOPT_TIMEOUT_MS, (long)c->cfg->client_timeout_ms);
	SET(CURLOPT_CONNECTTIMEOUT_MS, (long)c->cfg->client_connect_timeout_ms);
	SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)rx->max);
	SET(CURLOPT_HTTPHEADER, headers);
	SET(CURLOPT_WRITEFUNCTION, rx_body);
	SET(CURLOPT_WRITEDATA, rx);
	SET(CURLOPT_HEADERFUNCTION, rx_header);
	SET(CURLOPT_HEADERDATA, rx);
	if (rx->cancel) {
		SET(CURLOPT_XFERINFOFUNCTION, rx_progress);
		SET(CURLOPT_XFERINFODATA, rx);
		SET(CURLOPT_NOPROGRESS, 0L);
	}
	if (strcmp(method, "GET") == 0) {
		SET(CURLOPT_HTTPGET, 1L);
	} else {
		SET(CURLOPT_CUSTOMREQUEST, method);
		if (payload || strcmp(method, "DELETE") != 0) {
			/* POST and PUT always carry a body, if only an empty one. */
			SET(CURLOPT_POSTFIELDS, payload ? payload : "");
			SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(payload ? plen : 0));
		}
	}
#undef SET
	if (e != CURLE_OK) {
		LOG(LOG_ERROR, "cs: curl_easy_setopt: %s", curl_easy_strerror(e));
		return TH_ENET;
	}
	return TH_OK;
}

static uint64_t body_retry_after(const json_t *body)
{
	/* spec: CS API, M_LIMIT_EXCEEDED carries retry_after_ms */
	json_int_t v = json_integer_value(json_object_get(body, "retry_after_ms"));
	return v > 0 ? (uint64_t)v : 0;
}

/* One request with @p payload (@p plen bytes, or NULL) sent with @p headers,
 * received into @p rx (set up by the caller; its buf is the caller's to free). */
static int perform(cs_client *c, const char *method, const char *path, const char *user_id,
                   const char *payload, size_t plen, struct curl_slist *headers, struct rx *rxp,
                   struct cs_response *resp)
{
	struct rx rx0 = {.max = CS_MAX_RESPONSE_BYTES};
	struct rx *rx = rxp ? rxp : &rx0;
	char *url = NULL, *uid = NULL;
	int rc = TH_EINVAL;
	if (!method_ok(method) || path[0] != '/')
		goto out;
	if (user_id) {
		/* spec: AS API, identity assertion: ?user_id= on any CS API request */
		uid = cs_escape(user_id);
		url = xasprintf("%s%s%cuser_id=%s", c->base, path, strchr(path, '?') ? '&' : '?', uid);
	} else {
		url = xasprintf("%s%s", c->base, path);
	}
	rc = setup(c, method, url, payload, plen, headers, rx);
	if (rc)
		goto out;

	uint64_t t0 = th_mono_ms();
	CURLcode e = curl_easy_perform(c->curl);
	uint64_t took = th_mono_ms() - t0;
	long status = 0;
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
	const char *shown = rx->what ? rx->what : path;
	int shownlen = (int)strcspn(shown, "?");
	if (e != CURLE_OK) {
		if (rx->too_large || e == CURLE_FILESIZE_EXCEEDED)
			rc = TH_ETOOLARGE;
		else if (e == CURLE_OPERATION_TIMEDOUT)
			rc = TH_ETIMEOUT;
		else
			rc = TH_ENET;
		LOG(LOG_DEBUG, "cs: %s %.*s failed after %llu ms: %s", method, shownlen, shown,
		    (unsigned long long)took, rc == TH_ETOOLARGE ? th_strerror(rc) : curl_easy_strerror(e));
		goto out;
	}
	LOG(LOG_DEBUG, "cs: %s %.*s %ld in %llu ms", method, shownlen, shown, status,
	    (unsigned long long)took);

	memset(resp, 0, sizeof(*resp));
	resp->status = status;
	if (rx->len > 0 && !(rx->raw && status / 100 == 2))
		resp->body = json_loadb(rx->buf, rx->len, 0, NULL);
	resp->errcode = json_string_value(json_object_get(resp->body, "errcode"));
	if (status == 429) {
		uint64_t b = body_retry_after(resp->body);
		resp->retry_after_ms = b ? b : rx->retry_after_ms;
	}
	rc = TH_OK;
out:
	if (rx == &rx0)
		free(rx0.buf);
	free(url);
	free(uid);
	return rc;
}

int cs_request(cs_client *c, const char *method, const char *path, const char *user_id, const json_t *body,
               struct cs_response *resp)
{
	char *payload = NULL;
	if (body && !(payload = json_dumps(body, JSON_COMPACT)))
		return TH_EINVAL;
	int rc = perform(c, method, path, user_id, payload, payload ? strlen(payload) : 0,
	                 payload ? c->hdr_json : c->hdr_plain, NULL, resp);
	free(payload);
	return rc;
}

int cs_upload(cs_client *c, const char *user_id, const char *content_type, const char *filename,
              const void *buf, size_t len, struct cs_response *resp)
{
	if (!content_type || strpbrk(content_type, "\r\n") || !filename || (!buf && len))
		return TH_EINVAL;
	/* The plain headers (Authorization, no Expect) and this upload's type. */
	struct curl_slist *headers = NULL;
	for (struct curl_slist *p = c->hdr_plain; p; p = p->next)
		headers = curl_slist_append(headers, p->data);
	char *ct = xasprintf("Content-Type: %s", content_type);
	headers = curl_slist_append(headers, ct);
	free(ct);
	if (!headers) {
		fprintf(stderr, "threshold: out of memory building request headers\n");
		abort();
	}
	/* spec: CS API, POST /_matrix/media/v3/upload?filename=: the body is the
	 * file, its type in Content-Type; the answer holds "content_uri". */
	char *name = cs_escape(filename);
	char *path = xasprintf("/_matrix/media/v3/upload?filename=%s", name);
	/* curl sends an empty string for a NULL body; make "no bytes" explicit. */
	int rc = perform(c, "POST", path, user_id, buf ? buf : "", len, headers, NULL, resp);
	free(path);
	free(name);
	slist_free_wiped(headers);
	return rc;
}

int cs_download(cs_client *c, const char *server, const char *media_id, size_t max, int (*cancel)(void *ctx),
                void *ctx, struct cs_response *resp, unsigned char **buf, size_t *len)
{
	if (!server || !*server || !media_id || !*media_id || max == 0)
		return TH_EINVAL;
	/* spec: CS API v1.11, GET /_matrix/client/v1/media/download/{serverName}/{mediaId}:
	 * authenticated media, here as the appservice's sender. */
	char *s = cs_escape(server), *m = cs_escape(media_id);
	char *path = xasprintf("/_matrix/client/v1/media/download/%s/%s", s, m);
	struct rx rx = {.max = max, .raw = 1, .what = "media download", .cancel = cancel, .cancel_ctx = ctx};
	struct cs_response r;
	int rc = perform(c, "GET", path, NULL, NULL, 0, c->hdr_plain, &rx, &r);
	free(path);
	free(s);
	free(m);
	if (rc == TH_ENET && cancel && cancel(ctx))
		rc = TH_ECANCELED;
	if (rc) {
		free(rx.buf);
		return rc;
	}
	*resp = r;
	if (r.status / 100 == 2) {
		*buf = (unsigned char *)rx.buf;
		*len = rx.len;
	} else {
		free(rx.buf);
		*buf = NULL;
		*len = 0;
	}
	return TH_OK;
}

int cs_register(cs_client *c, const char *localpart)
{
	/* spec: AS API, "Client-Server API extensions": registering namespaced users */
	json_t *body = json_pack("{s:s, s:s, s:b}", "type", "m.login.application_service", "username",
	                         localpart, "inhibit_login", 1);
	struct cs_response r;
	int rc = cs_request(c, "POST", "/_matrix/client/v3/register", NULL, body, &r);
	json_decref(body);
	if (rc)
		return rc;
	if (r.status / 100 == 2 || (r.errcode && strcmp(r.errcode, "M_USER_IN_USE") == 0)) {
		rc = TH_OK;
	} else {
		LOG(LOG_WARN, "cs: register failed: HTTP %ld %s", r.status, r.errcode ? r.errcode : "");
		rc = TH_EHTTP;
	}
	cs_response_clear(&r);
	return rc;
}

int cs_ping(cs_client *c, uint64_t *out_ms)
{
	char txn[33];
	int rc = th_random_hex(txn, 16);
	if (rc)
		return rc;
	char *id = cs_escape(c->cfg->as_id ? c->cfg->as_id : "");
	char *path = xasprintf("/_matrix/client/v1/appservice/%s/ping", id);
	json_t *body = json_pack("{s:s}", "transaction_id", txn);
	struct cs_response r;
	rc = cs_request(c, "POST", path, NULL, body, &r);
	json_decref(body);
	free(path);
	free(id);
	if (rc)
		return rc;
	json_t *d = json_object_get(r.body, "duration_ms");
	if (r.status == 200 && json_is_integer(d) && json_integer_value(d) >= 0) {
		*out_ms = (uint64_t)json_integer_value(d);
	} else {
		LOG(LOG_WARN, "cs: ping failed: HTTP %ld %s", r.status, r.errcode ? r.errcode : "");
		rc = TH_EHTTP;
	}
	cs_response_clear(&r);
	return rc;
}

int cs_versions_invite_blocking(const json_t *versions, const char **why)
{
	static const char *const features[] = {"org.matrix.msc4380.stable", "org.matrix.msc4380"};
	*why = NULL;
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(versions, "versions"), i, v)
	{
		/* "v1.N": a spec version the homeserver implements in full */
		const char *s = json_string_value(v);
		unsigned minor = 0;
		int n = 0;
		if (s && sscanf(s, "v1.%u%n", &minor, &n) == 1 && s[n] == '\0' && minor >= 18) {
			*why = "spec v1.18";
			return 1;
		}
	}
	const json_t *unstable = json_object_get(versions, "unstable_features");
	for (size_t k = 0; k < sizeof(features) / sizeof(features[0]); k++) {
		if (json_is_true(json_object_get(unstable, features[k]))) {
			*why = features[k];
			return 1;
		}
	}
	return 0;
}
