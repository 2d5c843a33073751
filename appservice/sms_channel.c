/*
 * sms_channel.c - the SMS channel: the webhook listener for Kannel and
 * Twilio-compatible gateways, the steps before agreeing, and the sender
 * that carries staff's words from the feed.  No phone number is logged.
 */
#include "sms_channel.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <microhttpd.h>

#include "audit.h"
#include "chanrules.h"
#include "config.h"
#include "conv.h"
#include "jsonx.h"
#include "limiter.h"
#include "log.h"
#include "sms.h"
#include "store.h"
#include "util.h"

#define KANNEL_PATH    "/sms/kannel"
#define TWILIO_PATH    "/sms/twilio"
#define SECRET_HEADER  "X-Threshold-Secret"
#define NOT_READY_WAIT 20000u /* ms a text waits for a conversation room still being made */
#define SEND_BATCH     32
#define RETRY_MIN_MS   2000u
#define RETRY_MAX_MS   60000u

struct sms_channel {
	const struct txn_env *env;
	const struct config *cfg;
	smsch_on_queue_fn on_queue;
	void *ctx;
	unsigned char key[SMS_KEY_LEN]; /* the lookup hash's key */
	limiter *lim;
	struct MHD_Daemon *mhd;
	unsigned port;
	int twilio;
	/* the sender */
	pthread_t thread;
	int started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int kicked, stopping;
};

/* ---- the lookup key ------------------------------------------------------------- */

static int key_load(const char *path, unsigned char key[SMS_KEY_LEN])
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	struct stat sb;
	int rc = TH_EIO;
	if (fd < 0 || fstat(fd, &sb) != 0) {
		LOG(LOG_ERROR, "sms: cannot open the lookup key file %s: %s", path, strerror(errno));
		goto out;
	}
	if (sb.st_mode & 077) {
		LOG(LOG_ERROR, "sms: the lookup key file %s is readable by others (chmod 600 it)", path);
		goto out;
	}
	if (sb.st_size == 0) { /* first start */
		if (th_random(key, SMS_KEY_LEN) || write(fd, key, SMS_KEY_LEN) != SMS_KEY_LEN ||
		    fsync(fd) != 0) {
			LOG(LOG_ERROR, "sms: cannot write the lookup key file %s", path);
			goto out;
		}
		rc = TH_OK;
	} else if (sb.st_size == SMS_KEY_LEN && read(fd, key, SMS_KEY_LEN) == SMS_KEY_LEN) {
		rc = TH_OK;
	} else {
		LOG(LOG_ERROR, "sms: the lookup key file %s is not %d bytes", path, SMS_KEY_LEN);
	}
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

/* ---- answering a text ------------------------------------------------------------- */

/* What the handler answers: an HTTP status and the words to text back (or none). */
struct answer {
	unsigned status;
	char *say; /* new string or NULL */
};

static const struct config_service *service_by_number(const struct config *cfg, const char *to)
{
	/* gateways differ on the "+": Kannel's %P often has none */
	const char *t = to[0] == '+' ? to + 1 : to;
	for (size_t i = 0; i < cfg->nservices; i++) {
		const char *n = cfg->services[i].sms_number;
		if (n && strcmp(n[0] == '+' ? n + 1 : n, t) == 0)
			return &cfg->services[i];
	}
	return NULL;
}

static const char *notice_text(const struct config_service *svc, const char *lang)
{
	for (size_t i = 0; i < svc->nnotices; i++) {
		if (strcmp(svc->notices[i].lang, lang) == 0)
			return svc->notices[i].text;
	}
	return svc->nnotices ? svc->notices[0].text : "";
}

/* spec (Kannel, Twilio): a gateway may deliver a text twice; each is handled once. */
static int seen_before(sms_channel *s, const char *id)
{
	if (!*id)
		return 0;
	char *k = xasprintf("sms:%s:%s", s->twilio ? "twilio" : "kannel", id);
	unsigned char when[8];
	store_u64_key(when, th_now_ms());
	store_txn *t;
	int rc = store_txn_begin(s->env->st, 1, &t);
	if (!rc) {
		rc = store_put(t, STORE_EVENTS, k, strlen(k), when, sizeof(when), STORE_NOOVERWRITE);
		if (rc)
			store_txn_abort(t);
		else
			rc = store_txn_commit(t);
	}
	free(k);
	return rc == TH_EEXIST;
}

/* The person ended it: on the record as consent withdrawn (ids only). */
static int record_withdrawn(sms_channel *s, const char *guest)
{
	store_txn *t;
	int rc = store_txn_begin(s->env->st, 1, &t);
	if (rc)
		return rc;
	json_t *details = json_pack("{s:s, s:s}", "channel", "sms", "keyword", "stop");
	struct audit_rec ar = {
	        .kind = AUDIT_CONSENT_WITHDRAWN, .actor = guest, .subject = guest, .details = details};
	rc = audit_append(s->env->au, t, &ar, NULL);
	json_decref(details);
	if (rc) {
		store_txn_abort(t);
		return rc;
	}
	return store_txn_commit(t);
}

static void forward(sms_channel *s, const char *guest, const struct sms_in *in)
{
	char local[SMS_MAX_ID + 8];
	if (in->id[0] && strlen(in->id) + 4 <= CONV_MAX_LOCAL_ID) {
		memcpy(local, "sms-", 4);
		memcpy(local + 4, in->id, strlen(in->id) + 1);
	} else if (th_random_hex(local, 16) != TH_OK) {
		return;
	}
	/* Right after agreeing the room may still be being made: the text waits
	 * for it a little (a page would retry; a text cannot). */
	uint64_t until = th_mono_ms() + NOT_READY_WAIT;
	for (;;) {
		enum conv_send_result res = CONV_SENT;
		int rc = conv_send(s->env, guest, local, in->text, &res, NULL);
		if (rc) {
			LOG(LOG_WARN, "sms: a text could not be passed on: %s", th_strerror(rc));
			return;
		}
		if (res != CONV_NOT_READY || th_mono_ms() >= until) {
			if (res != CONV_SENT)
				LOG(LOG_WARN, "sms: a text was not passed on (result %d)", (int)res);
			return;
		}
		struct timespec ts = {0, 250 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

static struct answer answer_text(sms_channel *s, const struct sms_in *in)
{
	const struct config *cfg = s->cfg;
	struct answer a = {200, NULL};
	const struct config_service *svc = service_by_number(cfg, in->to);
	if (!svc) {
		LOG(LOG_WARN, "sms: a text to a number no service has; ignored");
		return a;
	}
	unsigned char key[SMS_KEY_LEN];
	sms_address_hash(s->key, svc->name, in->from, key);
	uint64_t now = th_mono_ms();
	/* Per number, then per service (a flood from many numbers). */
	if (lim_take(s->lim, key, sizeof(key), cfg->sms_per_number_per_minute,
	             60000u / cfg->sms_per_number_per_minute, now) ||
	    lim_take(s->lim, svc->name, strlen(svc->name), cfg->sms_per_service_per_minute,
	             60000u / cfg->sms_per_service_per_minute, now)) {
		LOG(LOG_WARN, "sms: service %s: a text over the rate limit; not answered", svc->name);
		a.status = 429;
		return a;
	}
	if (seen_before(s, in->id)) {
		LOG(LOG_INFO, "sms: a text delivered again; handled once");
		return a;
	}
	metrics_add(METRICS_SMS_IN, 1);
	struct conv_chan_state st;
	if (conv_chan_state(s->env->st, key, th_now_ms(), &st) != TH_OK) {
		a.status = 503;
		return a;
	}
	const char *const *langs = (const char *const *)cfg->gw_languages.v;
	size_t nlangs = cfg->gw_languages.n, li = 0;
	struct pol_chan_facts f = {.event = POL_CHAN_IN,
	                           .stage = (enum pol_chan_stage)st.stage,
	                           .word = pol_chan_word_of(in->text, nlangs, &li)};
	struct pol_chan_decision d;
	pol_chan_decide(&f, &d);
	const char *lang = st.lang[0] ? st.lang : langs[0];
	LOG(LOG_DEBUG, "sms: service %s: %s (%s)", svc->name, pol_chan_action_name(d.action),
	    pol_chan_reason_name(d.reason));
	int rc = TH_OK;
	switch (d.action) {
	case POL_CHAN_ASK_LANG:
		rc = conv_chan_pending(s->env, key, POL_CHAN_LANG, "");
		a.say = sms_say(SMS_SAY_MENU, lang, langs, nlangs);
		break;
	case POL_CHAN_NOTICE_SEND: {
		lang = langs[li];
		rc = conv_chan_pending(s->env, key, POL_CHAN_NOTICE, lang);
		char *agree = sms_say(SMS_SAY_AGREE, lang, langs, nlangs);
		a.say = xasprintf("%s: %s\n\n%s", svc->display_name, notice_text(svc, lang), agree);
		free(agree);
		break;
	}
	case POL_CHAN_REMIND:
		a.say = sms_say(SMS_SAY_REMIND, lang, langs, nlangs);
		break;
	case POL_CHAN_OPEN_CONV: {
		struct conv_channel ch = {"sms", "by SMS", in->from, key};
		char guest[GUESTS_MAX_USER_ID + 1];
		rc = conv_redeem_channel(s->env, svc->name, svc->notice_version, lang, &ch, guest);
		if (!rc)
			a.say = sms_say(SMS_SAY_OPENED, lang, langs, nlangs);
		break;
	}
	case POL_CHAN_FORWARD:
		forward(s, st.guest, in);
		break;
	case POL_CHAN_END:
		rc = conv_leave(s->env, st.guest);
		if (!rc)
			rc = record_withdrawn(s, st.guest);
		if (!rc)
			a.say = sms_say(SMS_SAY_ENDED, lang, langs, nlangs);
		break;
	case POL_CHAN_ERASE: {
		/* The erasure job runs on (conv.h): the text says it is under way.
		 * One held by an open case is answered as the page answers it. */
		char receipt[CONV_RECEIPT_LEN + 1];
		rc = conv_erase(s->env, st.guest, receipt);
		if (!rc)
			a.say = sms_say(SMS_SAY_ERASED, lang, langs, nlangs);
		else if (rc == TH_EEXIST) {
			a.say = sms_say(SMS_SAY_HELD, lang, langs, nlangs);
			rc = TH_OK;
		}
		break;
	}
	case POL_CHAN_FORGET:
		rc = conv_chan_pending(s->env, key, POL_CHAN_NONE, NULL);
		if (!rc)
			a.say = sms_say(SMS_SAY_FORGOT, lang, langs, nlangs);
		break;
	case POL_CHAN_CONFIRM:
		a.say = sms_say(SMS_SAY_NOTHING, lang, langs, nlangs);
		break;
	default:
		break;
	}
	explicit_bzero(key, sizeof(key));
	if (rc) {
		LOG(LOG_WARN, "sms: service %s: %s failed: %s", svc->name, pol_chan_action_name(d.action),
		    th_strerror(rc));
		free(a.say);
		a.say = NULL;
		a.status = rc == TH_EFULL ? 503 : 500;
		return a;
	}
	if (s->on_queue)
		s->on_queue(s->ctx);
	return a;
}

static int ascii_only(const char *s);

/* ---- the listener ------------------------------------------------------------------- */

struct req {
	char *body;
	size_t len;
	int too_large;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type, char *text)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(r, "Content-Type", type);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	enum MHD_Result ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result add_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	(void)kind;
	json_t *o = cls;
	if (json_object_size(o) >= SMS_MAX_FIELDS)
		return MHD_NO;
	json_t *v = json_string(value ? value : "");
	if (v && !json_object_get(o, key))
		json_object_set(o, key, v);
	json_decref(v);
	return MHD_YES;
}

static int kannel_authorised(sms_channel *s, struct MHD_Connection *conn, const char *url)
{
	const char *secret = s->cfg->sms_secret;
	const char *given = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, SECRET_HEADER);
	if (!given && strncmp(url, KANNEL_PATH "/", strlen(KANNEL_PATH) + 1) == 0)
		given = url + strlen(KANNEL_PATH) + 1;
	return secret && given && th_consttime_eq(secret, strlen(secret), given, strlen(given));
}

static enum MHD_Result finish(sms_channel *s, struct MHD_Connection *conn, const char *url,
                              const char *method, struct req *r)
{
	int twilio_route = strcmp(url, TWILIO_PATH) == 0;
	if (r->too_large)
		return reply(conn, 413, "text/plain", xstrdup("too large\n"));
	json_t *fields = NULL;
	int rc = TH_EINVAL;
	if (twilio_route) {
		if (!s->twilio || strcmp(method, "POST") != 0)
			return reply(conn, 404, "text/plain", xstrdup("not found\n"));
		rc = sms_form_parse(r->body ? r->body : "", r->len, &fields);
		const char *sig = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Twilio-Signature");
		if (!rc && !sms_twilio_check(s->cfg->sms_twilio_auth_token, s->cfg->sms_twilio_webhook_url,
		                             fields, sig)) {
			json_decref(fields);
			LOG(LOG_WARN, "sms: a webhook without a good X-Twilio-Signature; refused");
			return reply(conn, 403, "text/plain", xstrdup("forbidden\n"));
		}
	} else {
		if (s->twilio || !kannel_authorised(s, conn, url))
			return reply(conn, 404, "text/plain", xstrdup("not found\n"));
		/* Kannel's get-url puts the text in the query; a post-url may send a form */
		fields = json_object();
		MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, add_arg, fields);
		rc = TH_OK;
		if (strcmp(method, "POST") == 0 && r->len) {
			json_t *form = NULL;
			rc = sms_form_parse(r->body, r->len, &form);
			if (!rc)
				json_object_update_missing(fields, form);
			json_decref(form);
		}
	}
	struct sms_in in;
	if (!rc)
		rc = sms_in_read(fields, s->twilio, &in);
	json_decref(fields);
	if (rc) {
		explicit_bzero(&in, sizeof(in));
		return reply(conn, rc == TH_ETOOLARGE ? 413 : 400, "text/plain", xstrdup("bad request\n"));
	}
	struct answer a = answer_text(s, &in);
	explicit_bzero(&in, sizeof(in));
	if (s->twilio)
		return reply(conn, a.status, "text/xml; charset=utf-8",
		             sms_twiml(a.status == 200 ? a.say : NULL));
	/* Kannel texts the body back to the sender (omit-empty: nothing for "");
	 * beyond ASCII as UCS-2 (X-Kannel-Coding, with accept-x-kannel-headers),
	 * or letters outside the GSM alphabet would be changed */
	char *body = a.status == 200 && a.say ? a.say : xstrdup("");
	if (body != a.say)
		free(a.say);
	struct MHD_Response *resp =
	        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(resp, "Content-Type", "text/plain; charset=utf-8");
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	if (!ascii_only(body))
		MHD_add_response_header(resp, "X-Kannel-Coding", "2");
	enum MHD_Result ret = MHD_queue_response(conn, a.status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_size,
                              void **con_cls)
{
	(void)version;
	sms_channel *s = cls;
	struct req *r = *con_cls;
	if (!r) {
		if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
			return reply(conn, 405, "text/plain", xstrdup("GET or POST\n"));
		if (strncmp(url, KANNEL_PATH, strlen(KANNEL_PATH)) != 0 && strcmp(url, TWILIO_PATH) != 0)
			return reply(conn, 404, "text/plain", xstrdup("not found\n"));
		/* the cap before a byte of the body is read */
		const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
		uint64_t n = 0;
		if (cl && (th_parse_u64(cl, UINT64_MAX, &n) != TH_OK || n > s->cfg->sms_max_body_bytes))
			return reply(conn, 413, "text/plain", xstrdup("too large\n"));
		*con_cls = xcalloc(1, sizeof(struct req));
		return MHD_YES;
	}
	if (*upload_size) {
		if (!r->too_large && r->len + *upload_size <= s->cfg->sms_max_body_bytes) {
			r->body = xrealloc(r->body, r->len + *upload_size + 1);
			memcpy(r->body + r->len, upload_data, *upload_size);
			r->len += *upload_size;
			r->body[r->len] = '\0';
		} else {
			r->too_large = 1;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	return finish(s, conn, url, method, r);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)conn;
	(void)toe;
	struct req *r = *con_cls;
	if (r) {
		if (r->body)
			explicit_bzero(r->body, r->len);
		free(r->body);
		free(r);
	}
	*con_cls = NULL;
}

/* ---- the sender ------------------------------------------------------------------------ */

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
	(void)p;
	(void)ud;
	return size * n;
}

static int ascii_only(const char *s)
{
	for (; *s; s++) {
		if ((unsigned char)*s >= 0x80)
			return 0;
	}
	return 1;
}

/* Send @p text to @p to from @p from.  @return TH_OK, TH_ENET or TH_EHTTP. */
static int send_one(sms_channel *s, const char *from, const char *to, const char *text)
{
	const struct config *cfg = s->cfg;
	CURL *c = curl_easy_init();
	if (!c)
		return TH_ENET;
	char *url = NULL, *post = NULL;
	char *eto = sms_urlencode(to), *efrom = sms_urlencode(from), *etext = sms_urlencode(text);
	if (s->twilio) {
		char *esid = sms_urlencode(cfg->sms_twilio_account_sid);
		url = xasprintf("%s/2010-04-01/Accounts/%s/Messages.json", cfg->sms_twilio_api_url, esid);
		free(esid);
		post = xasprintf("To=%s&From=%s&Body=%s", eto, efrom, etext);
		curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(c, CURLOPT_USERNAME, cfg->sms_twilio_account_sid);
		curl_easy_setopt(c, CURLOPT_PASSWORD, cfg->sms_twilio_auth_token);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, post);
	} else {
		char *eu = sms_urlencode(cfg->sms_kannel_username),
		     *ep = sms_urlencode(cfg->sms_kannel_password);
		url = xasprintf("%s%cusername=%s&password=%s&from=%s&to=%s&text=%s&charset=UTF-8&coding=%d",
		                cfg->sms_kannel_sendsms_url,
		                strchr(cfg->sms_kannel_sendsms_url, '?') ? '&' : '?', eu, ep, efrom, eto,
		                etext, ascii_only(text) ? 0 : 2);
		free(eu);
		free(ep);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)cfg->client_timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->client_connect_timeout_ms);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	CURLcode cc = curl_easy_perform(c);
	long status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	/* the URL and the form hold the number and the words: wiped, never logged */
	explicit_bzero(url, strlen(url));
	free(url);
	if (post)
		explicit_bzero(post, strlen(post));
	free(post);
	explicit_bzero(eto, strlen(eto));
	explicit_bzero(etext, strlen(etext));
	free(eto);
	free(efrom);
	free(etext);
	if (cc != CURLE_OK) {
		LOG(LOG_WARN, "sms: the gateway cannot be reached: %s", curl_easy_strerror(cc));
		return TH_ENET;
	}
	if (status < 200 || status > 299) {
		LOG(LOG_WARN, "sms: the gateway refused a text: HTTP %ld", status);
		return TH_EHTTP;
	}
	metrics_add(METRICS_SMS_OUT, 1);
	return TH_OK;
}

/* One round: send what is due.  @return 1 if more may be due at once, 0 if
 * all is sent, -1 after a failure (retry later). */
static int send_round(sms_channel *s)
{
	json_t *due = NULL;
	if (conv_chan_due(s->env, "sms", SEND_BATCH, &due) != TH_OK)
		return -1;
	int failed = 0;
	size_t i;
	json_t *item;
	json_array_foreach(due, i, item)
	{
		const char *guest = jsonx_str(item, "guest"), *to = jsonx_str(item, "address");
		json_t *texts = json_object_get(item, "texts");
		const char *from = NULL;
		const char *sname = jsonx_str(item, "service");
		const struct config_service *sv = config_service_find(s->cfg, sname);
		if (sv)
			from = sv->sms_number;
		int ok = 1;
		size_t j;
		json_t *t;
		json_array_foreach(texts, j, t)
		{
			if (!to || !from || send_one(s, from, to, json_string_value(t)) != TH_OK) {
				ok = 0;
				break;
			}
		}
		if (to)
			explicit_bzero((char *)to, strlen(to));
		if (!ok) {
			failed = 1;
			continue; /* this one is retried; the others go on */
		}
		if (conv_chan_sent(s->env, guest,
		                   (uint64_t)json_integer_value(json_object_get(item, "upto"))))
			failed = 1;
	}
	size_t n = json_array_size(due);
	json_decref(due);
	return failed ? -1 : n == SEND_BATCH;
}

static void *sender_main(void *arg)
{
	sms_channel *s = arg;
	uint64_t wait = RETRY_MIN_MS;
	pthread_mutex_lock(&s->mu);
	while (!s->stopping) {
		if (!s->kicked) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			uint64_t ns = (uint64_t)ts.tv_nsec + (wait % 1000) * 1000000ull;
			ts.tv_sec += (time_t)(wait / 1000 + ns / 1000000000ull);
			ts.tv_nsec = (long)(ns % 1000000000ull);
			pthread_cond_timedwait(&s->cv, &s->mu, &ts);
		}
		if (s->stopping)
			break;
		s->kicked = 0;
		pthread_mutex_unlock(&s->mu);
		int r = send_round(s);
		pthread_mutex_lock(&s->mu);
		if (r > 0)
			s->kicked = 1;
		wait = r < 0 ? (wait * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : wait * 2) : RETRY_MIN_MS;
		if (r < 0)
			s->kicked = 0;
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

static void feed_grew(void *ctx)
{
	sms_channel *s = ctx;
	pthread_mutex_lock(&s->mu);
	s->kicked = 1;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static const struct chan_ops sms_ops = {"sms", "by SMS", CHAN_CAP_TEXT, feed_grew};

struct channel smsch_channel(sms_channel *s)
{
	struct channel c = {s ? &sms_ops : NULL, s};
	return c;
}

/* ---- start and stop ---------------------------------------------------------------------- */

int smsch_start(const struct txn_env *env, smsch_on_queue_fn on_queue, void *ctx, sms_channel **out)
{
	const struct config *cfg = env->cfg;
	sms_channel *s = xcalloc(1, sizeof(*s));
	s->env = env;
	s->cfg = cfg;
	s->on_queue = on_queue;
	s->ctx = ctx;
	s->twilio = strcmp(cfg->sms_driver, "twilio") == 0;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	if (key_load(cfg->sms_key_file, s->key) != TH_OK)
		goto fail;
	unsigned char lk[16];
	if (th_random(lk, sizeof(lk)) != TH_OK)
		goto fail;
	s->lim = lim_new(1024, lk);
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	/* a text waits (forward) without holding up the others: a thread each, few at once */
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
	if (inet_pton(AF_INET, cfg->sms_listen_address, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)cfg->sms_listen_port);
	} else if (inet_pton(AF_INET6, cfg->sms_listen_address, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)cfg->sms_listen_port);
		flags |= MHD_USE_IPv6;
	} else {
		LOG(LOG_ERROR, "sms.listen_address '%s' is not an IP address", cfg->sms_listen_address);
		goto fail;
	}
	s->mhd = MHD_start_daemon(flags, (uint16_t)cfg->sms_listen_port, NULL, NULL, handle, s,
	                          MHD_OPTION_EXTERNAL_LOGGER, log_mhd, (void *)"sms", MHD_OPTION_SOCK_ADDR,
	                          &ss, MHD_OPTION_NOTIFY_COMPLETED, completed, s,
	                          MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_CONNECTION_LIMIT,
	                          (unsigned)64, MHD_OPTION_END);
	if (!s->mhd) {
		LOG(LOG_ERROR, "sms: cannot listen on %s:%u", cfg->sms_listen_address, cfg->sms_listen_port);
		goto fail;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
	s->port = info ? info->port : cfg->sms_listen_port;
	if (pthread_create(&s->thread, NULL, sender_main, s) != 0) {
		LOG(LOG_ERROR, "sms: cannot start the sender thread");
		goto fail;
	}
	s->started = 1;
	s->kicked = 1; /* what was left unsent before a restart */
	LOG(LOG_INFO, "sms: %s webhook on %s:%u", s->twilio ? "twilio" : "kannel", cfg->sms_listen_address,
	    s->port);
	*out = s;
	return TH_OK;
fail:
	smsch_stop(s);
	return TH_EIO;
}

unsigned smsch_port(sms_channel *s)
{
	return s ? s->port : 0;
}

void smsch_stop(sms_channel *s)
{
	if (!s)
		return;
	if (s->mhd)
		MHD_stop_daemon(s->mhd);
	if (s->started) {
		pthread_mutex_lock(&s->mu);
		s->stopping = 1;
		pthread_cond_signal(&s->cv);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->thread, NULL);
	}
	lim_free(s->lim);
	explicit_bzero(s->key, sizeof(s->key));
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s);
}
