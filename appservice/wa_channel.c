/*
 * wa_channel.c - the WhatsApp channel: the Cloud API webhook (handshake,
 * signature, messages, statuses), the Graph API calls that answer and
 * carry staff's words, pictures in, and the 24-hour window.  A driver of
 * chan_flow.h, which takes the steps.  No phone number is logged.
 */
#include "wa_channel.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <microhttpd.h>

#include "audit.h"
#include "chanrules.h"
#include "config.h"
#include "jsonx.h"
#include "log.h"
#include "matrix.h"
#include "media.h"
#include "metrics.h"
#include "sms.h"
#include "store.h"
#include "util.h"
#include "whatsapp.h"

#define WEBHOOK_PATH "/whatsapp"
#define SECRET_MAX   1024
#define REPLY_MAX    65536 /* bytes of a Graph API answer read */
/* CONV_CHAN_TIMES + guest holds two times (ms): */
#define LAST_IN        0 /* when the person last wrote (Meta's timestamp of the message) */
#define INVITED        1 /* when the template last invited them back */
#define STATUS_PREFIX  "whatsapp:status:"
#define MESSAGE_PREFIX "whatsapp:"
/* STORE_META INBOX_PREFIX + 16 hex ms + 4 hex sequence: a message recorded
 * by the webhook, not yet handled: {"guest", "sealed"} (below). */
#define INBOX_PREFIX   "chan/in/whatsapp/"
#define INBOX_KEY_MAX  64
#define INBOX_RETRY_MS 2000u

struct wa_channel {
	const struct txn_env *env;
	const struct config *cfg;
	struct chf_driver drv;
	chan_flow *flow;
	chf_listener *listener;
	char *app_secret, *verify_token, *access_token;
	struct mx_fetcher *fetch; /* the sender thread's, made when a picture first goes out */
	/* the worker that handles recorded messages (INBOX_PREFIX) */
	pthread_t worker;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int worker_started, kicked, stopping;
	unsigned seq; /* the inbox keys' sequence, under mu */
};

/* ---- secrets ------------------------------------------------------------------------ */

int wach_secret_read(const char *key, const char *path, char **out)
{
	char why[160] = "", buf[SECRET_MAX + 1];
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat sb;
	ssize_t n = -1;
	if (fd >= 0 && fstat(fd, &sb) == 0 && th_private_mode_ok(sb.st_mode, why, sizeof(why)) == TH_OK)
		n = read(fd, buf, SECRET_MAX);
	else if (!why[0]) /* open or fstat failed; a mode refused says why itself */
		snprintf(why, sizeof(why), "%s", strerror(errno));
	if (fd >= 0)
		close(fd);
	if (n < 0) {
		LOG(LOG_ERROR, "whatsapp.%s: %s %s", key, path, why);
		return TH_EIO;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	size_t len = strlen(buf);
	while (len && (buf[len - 1] == ' ' || buf[len - 1] == '\t'))
		buf[--len] = '\0';
	if (!len) {
		LOG(LOG_ERROR, "whatsapp.%s: %s is empty", key, path);
		return TH_EIO;
	}
	*out = xstrdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return TH_OK;
}

static void secret_free(char *s)
{
	if (s)
		explicit_bzero(s, strlen(s));
	free(s);
}

/* ---- the Graph API ------------------------------------------------------------------- */

struct body {
	unsigned char *p;
	size_t len, max;
	int over;
};

static size_t collect(char *p, size_t size, size_t n, void *ud)
{
	struct body *b = ud;
	size_t add = size * n;
	if (b->over || b->len + add > b->max) {
		b->over = 1;
		return 0; /* stops the transfer: past the cap */
	}
	b->p = xrealloc(b->p, b->len + add + 1);
	memcpy(b->p + b->len, p, add);
	b->len += add;
	b->p[b->len] = '\0';
	return add;
}

/*
 * One call with the access token: GET @p url, or POST @p json, or POST the
 * multipart @p mime.  At most @p max bytes of the answer are kept.
 * @param out  the answer (free out->p), on TH_OK
 * @return TH_OK (with @p status), TH_ENET, TH_ETOOLARGE.
 */
static int graph_call(wa_channel *w, const char *url, const char *json, curl_mime *mime, size_t max,
                      long *status, struct body *out)
{
	CURL *c = curl_easy_init();
	if (!c)
		return TH_ENET;
	struct curl_slist *h = NULL;
	char *auth = xasprintf("Authorization: Bearer %s", w->access_token);
	h = curl_slist_append(h, auth);
	if (json) {
		h = curl_slist_append(h, "Content-Type: application/json");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
	} else if (mime) {
		curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
	}
	struct body b = {NULL, 0, max, 0};
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)w->cfg->client_timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)w->cfg->client_connect_timeout_ms);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	CURLcode cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	explicit_bzero(auth, strlen(auth));
	free(auth);
	if (b.over) {
		free(b.p);
		return TH_ETOOLARGE;
	}
	if (cc != CURLE_OK) {
		free(b.p);
		LOG(LOG_WARN, "whatsapp: the Graph API cannot be reached: %s", curl_easy_strerror(cc));
		return TH_ENET;
	}
	*out = b;
	return TH_OK;
}

/* POST @p json (wiped after: it holds the number and the words) to the service's /messages. */
static int post_message(wa_channel *w, const char *pnid, char *json, const char *what)
{
	char *url = xasprintf("%s/%s/%s/messages", w->cfg->wa_graph_url, w->cfg->wa_api_version, pnid);
	long status = 0;
	struct body b = {0};
	int rc = graph_call(w, url, json, NULL, REPLY_MAX, &status, &b);
	explicit_bzero(json, strlen(json));
	free(json);
	free(url);
	free(b.p);
	if (rc)
		return rc;
	if (status < 200 || status > 299) {
		LOG(LOG_WARN, "whatsapp: the Graph API refused %s: HTTP %ld", what, status);
		return TH_EHTTP;
	}
	metrics_add(METRICS_WA_OUT, 1);
	return TH_OK;
}

/* ---- what is kept per guest (no number: ids and times) ------------------------------------- */

/* The guest's time @p which (LAST_IN, INVITED); 0 when none. */
static uint64_t guest_time(store *st, const char *guest, int which)
{
	char *k = xasprintf(CONV_CHAN_TIMES "%s", guest);
	store_txn *t;
	uint64_t v = 0;
	const void *val;
	size_t vlen;
	if (store_txn_begin(st, 0, &t) == TH_OK) {
		if (store_get(t, STORE_META, k, strlen(k), &val, &vlen) == TH_OK && vlen == 16)
			v = store_key_u64((const unsigned char *)val + 8 * which);
		store_txn_abort(t);
	}
	free(k);
	return v;
}

/* Set the guest's time @p which to @p ms, or leave a later time there. */
static int guest_time_put(store *st, const char *guest, int which, uint64_t ms)
{
	char *k = xasprintf(CONV_CHAN_TIMES "%s", guest);
	store_txn *t;
	const void *val;
	size_t vlen;
	unsigned char v[16] = {0};
	int rc = store_txn_begin(st, 1, &t);
	if (!rc) {
		if (store_get(t, STORE_META, k, strlen(k), &val, &vlen) == TH_OK && vlen == sizeof(v))
			memcpy(v, val, sizeof(v));
		if (store_key_u64(v + 8 * which) >= ms) {
			store_txn_abort(t);
			free(k);
			return TH_OK;
		}
		store_u64_key(v + 8 * which, ms);
		rc = store_put(t, STORE_META, k, strlen(k), v, sizeof(v), 0);
		if (rc)
			store_txn_abort(t);
		else
			rc = store_txn_commit(t);
	}
	free(k);
	return rc;
}

/* ---- a message in ---------------------------------------------------------------------- */

static const struct config_service *service_by_pnid(const struct config *cfg, const char *pnid)
{
	for (size_t i = 0; i < cfg->nservices; i++) {
		const char *n = cfg->services[i].wa_phone_number_id;
		if (n && strcmp(n, pnid) == 0)
			return &cfg->services[i];
	}
	return NULL;
}

/*
 * A picture the person sent: its URL and size asked of the Graph API, the
 * size checked against whatsapp.max_media_bytes before a byte is
 * downloaded, the bytes fetched with the token and made clean.
 * @param out  new buffer (free()) on TH_OK, with its kind
 * @return TH_OK, TH_ETOOLARGE, TH_EINVAL (not a picture taken, or not
 *         clean), TH_ENET / TH_EHTTP.
 */
static int picture_fetch(wa_channel *w, const char *media_id, const struct media_kind **kind,
                         unsigned char **out, size_t *outlen)
{
	size_t cap = w->cfg->wa_max_media_bytes;
	char *url = xasprintf("%s/%s/%s", w->cfg->wa_graph_url, w->cfg->wa_api_version, media_id);
	long status = 0;
	struct body b = {0};
	int rc = graph_call(w, url, NULL, NULL, REPLY_MAX, &status, &b);
	free(url);
	if (rc)
		return rc;
	json_t *info = status == 200 && b.p ? json_loadb((const char *)b.p, b.len, 0, NULL) : NULL;
	free(b.p);
	const char *where = jsonx_str(info, "url");
	json_int_t size = json_integer_value(json_object_get(info, "file_size"));
	if (!where || (strncmp(where, "https://", 8) != 0 && strncmp(where, "http://", 7) != 0)) {
		LOG(LOG_WARN, "whatsapp: a picture's media id was not answered (HTTP %ld)", status);
		json_decref(info);
		return TH_EHTTP;
	}
	if (size <= 0 || (uint64_t)size > cap) {
		LOG(LOG_INFO,
		    "whatsapp: a picture of %lld bytes is over whatsapp.max_media_bytes; not fetched",
		    (long long)size);
		json_decref(info);
		return TH_ETOOLARGE;
	}
	b = (struct body){0};
	rc = graph_call(w, where, NULL, NULL, cap, &status, &b);
	json_decref(info);
	if (rc)
		return rc;
	if (status != 200 || !b.len) {
		free(b.p);
		return TH_EHTTP;
	}
	const struct media_kind *k = media_sniff(b.p, b.len);
	int verdict = k && media_is_picture(k) ? media_clean(k, b.p, b.len, out, outlen) : MEDIA_REFUSED;
	free(b.p);
	if (verdict != MEDIA_OK) {
		LOG(LOG_INFO, "whatsapp: a picture was not taken: %s", media_verdict_name(verdict));
		return TH_EINVAL;
	}
	*kind = k;
	return TH_OK;
}

/*
 * Take one message (an item of wa_notification_parse) through the steps.
 * @param recorded  1: from the inbox (limits and dedupe were taken when it
 *                  was recorded)
 * @return the step's HTTP-like status: 200 (done, or refused for good),
 *         429 (over a limit), 5xx (a step failed: to be handled again).
 */
static unsigned answer_message(wa_channel *w, const json_t *m, int recorded)
{
	const struct config_service *svc = service_by_pnid(w->cfg, jsonx_str(m, "pnid"));
	const char *from = jsonx_str(m, "from"), *id = jsonx_str(m, "id"), *type = jsonx_str(m, "type");
	if (!svc || !from || !id || !type) {
		LOG(LOG_WARN, "whatsapp: a message to a phone number id no service has; ignored");
		return 200;
	}
	unsigned char key[CHF_KEY_LEN];
	chan_address_hash(chf_key(w->flow), "whatsapp", svc->name, from, key);
	const char *text = jsonx_str(m, "text") ? jsonx_str(m, "text") : "";
	const char *media_id = jsonx_str(m, "media_id");
	char *dedupe = xasprintf(MESSAGE_PREFIX "%s", id);
	char *local = xasprintf("wa-%s", id);
	struct chf_in in = {.svc = svc,
	                    .key = key,
	                    .address = from,
	                    .dedupe = dedupe,
	                    .local_id = local,
	                    .text = text,
	                    .recorded = recorded};
	unsigned char *data = NULL;
	/* A picture is fetched only for a conversation that is open: before
	 * agreeing nothing reaches staff, so nothing is downloaded. */
	struct conv_chan_state st;
	if (strcmp(type, "image") == 0 && media_id &&
	    conv_chan_state(w->env->st, key, th_now_ms(), &st) == TH_OK && st.stage == POL_CHAN_OPEN &&
	    !pol_chan_word_of(text, w->cfg->gw_languages.n, NULL)) {
		if (picture_fetch(w, media_id, &in.kind, &data, &in.len) == TH_OK)
			in.data = data;
		else if (!*text) /* staff are told, as the page tells of what it cannot show */
			in.text = "[a picture was sent that could not be passed on]";
	} else if (strcmp(type, "text") != 0 && strcmp(type, "image") != 0) {
		LOG(LOG_INFO, "whatsapp: a message of type %s is not carried", type);
		in.text = "[a message was sent that cannot be shown here: only words and pictures come "
		          "through]";
	}
	struct chf_answer a;
	chf_answer_in(w->flow, &in, &a);
	free(data);
	free(dedupe);
	free(local);
	explicit_bzero(key, sizeof(key));
	if (a.status == 200 && !a.repeat)
		metrics_add(METRICS_WA_IN, 1);
	/* the window opens again: what waited for it may go out */
	if (a.guest[0] && (a.action == POL_CHAN_OPEN_CONV || a.action == POL_CHAN_FORWARD)) {
		uint64_t ts = (uint64_t)json_integer_value(json_object_get(m, "ts"));
		if (guest_time_put(w->env->st, a.guest, LAST_IN, ts) == TH_OK)
			chf_kick(w->flow);
	}
	if (a.say) /* they just wrote: inside the window */
		post_message(w, svc->wa_phone_number_id, wa_text_body(from, a.say), "an answer");
	free(a.say);
	return a.status;
}

/* ---- the inbox: messages recorded by the webhook, handled by the worker ------------------ *
 *
 * A message to an open conversation may take long to handle (a picture
 * downloaded, a room still being made): the webhook records it and
 * answers Meta at once.  The record is {"guest": G, "sealed": S}, S the
 * message (the number, its words, ids and time) sealed under G's key
 * (audit_seal), as the conversation record keeps the number: erasing the
 * guest makes it unreadable.  It is written in the same commit as the
 * message id's dedupe mark, and deleted once handled; a message handled
 * again after a crash in between reaches the room once (conv_send's local
 * id).  Messages before agreeing (no guest yet, no key to seal under, and
 * nothing slow to do) are handled in the webhook as before.
 */

/*
 * Record @p m for the worker if its number has an open conversation.
 * @return 1 recorded (or a repeat: nothing to do), 0 not for the inbox
 *         (handle it now), or a negative TH_ code: answer 5xx so Meta
 *         retries (nothing was recorded, the dedupe mark neither).
 */
static int inbox_record(wa_channel *w, const json_t *m)
{
	const struct config_service *svc = service_by_pnid(w->cfg, jsonx_str(m, "pnid"));
	const char *from = jsonx_str(m, "from"), *id = jsonx_str(m, "id");
	if (!svc || !from || !id)
		return 0;
	unsigned char key[CHF_KEY_LEN];
	chan_address_hash(chf_key(w->flow), "whatsapp", svc->name, from, key);
	struct conv_chan_state st;
	int rc = conv_chan_state(w->env->st, key, th_now_ms(), &st);
	if (rc || st.stage != POL_CHAN_OPEN || !st.guest[0]) {
		explicit_bzero(key, sizeof(key));
		return rc ? -TH_ESTORE : 0;
	}
	rc = chf_limit_take(w->flow, svc, key);
	explicit_bzero(key, sizeof(key));
	if (rc)
		return 1; /* over a limit: not answered, as chf_answer_in does */
	char *dedupe = xasprintf(MESSAGE_PREFIX "%s", id);
	char *plain = json_dumps(m, JSON_COMPACT);
	char *sealed = NULL;
	unsigned char when[8];
	char k[INBOX_KEY_MAX];
	store_u64_key(when, th_now_ms());
	pthread_mutex_lock(&w->mu);
	snprintf(k, sizeof(k), INBOX_PREFIX "%016llx%04x", (unsigned long long)th_now_ms(),
	         w->seq++ & 0xffffu);
	pthread_mutex_unlock(&w->mu);
	store_txn *t = NULL;
	json_t *rec = NULL;
	int repeat = 0;
	rc = plain ? store_txn_begin(w->env->st, 1, &t) : TH_EINVAL;
	if (!rc) {
		/* spec: Meta retries a delivery; its message id is handled once */
		rc = store_put(t, STORE_EVENTS, dedupe, strlen(dedupe), when, sizeof(when),
		               STORE_NOOVERWRITE);
		repeat = rc == TH_EEXIST;
	}
	if (!rc)
		rc = audit_seal(w->env->au, t, st.guest, plain, &sealed);
	if (!rc) {
		rec = json_pack("{s:s, s:s}", "guest", st.guest, "sealed", sealed);
		rc = store_put_json(t, STORE_META, k, rec);
	}
	if (!rc)
		rc = store_txn_commit(t);
	else if (t)
		store_txn_abort(t);
	json_decref(rec);
	free(sealed);
	if (plain)
		explicit_bzero(plain, strlen(plain));
	free(plain);
	free(dedupe);
	if (repeat) {
		LOG(LOG_INFO, "whatsapp: a message delivered again; handled once");
		return 1;
	}
	if (rc == TH_ENOTFOUND) /* the guest was erased this instant: the steps decide now */
		return 0;
	if (rc) {
		LOG(LOG_WARN, "whatsapp: a message could not be recorded: %s", th_strerror(rc));
		return -rc;
	}
	pthread_mutex_lock(&w->mu);
	w->kicked = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return 1;
}

struct inbox_first {
	char key[INBOX_KEY_MAX];
	char *val;          /* new */
	const json_t *held; /* guests whose message failed this round: passed by */
};

static int inbox_first_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct inbox_first *f = ctx;
	if (klen < strlen(INBOX_PREFIX) || memcmp(key, INBOX_PREFIX, strlen(INBOX_PREFIX)) != 0 ||
	    klen >= sizeof(f->key))
		return 1; /* past the inbox */
	json_t *rec = json_loadb(val, vlen, 0, NULL);
	const char *guest = jsonx_str(rec, "guest");
	/* A person whose message failed this round waits for the next, with
	 * their later ones (their order kept); nobody else waits for them. */
	int held = guest && json_object_get(f->held, guest);
	json_decref(rec);
	if (held)
		return 0;
	memcpy(f->key, key, klen);
	f->key[klen] = '\0';
	f->val = xmalloc(vlen + 1);
	memcpy(f->val, val, vlen);
	f->val[vlen] = '\0';
	return 1;
}

static int inbox_delete(wa_channel *w, const char *k)
{
	store_txn *t;
	int rc = store_txn_begin(w->env->st, 1, &t);
	if (rc)
		return rc;
	rc = store_del(t, STORE_META, k, strlen(k));
	if (rc && rc != TH_ENOTFOUND) {
		store_txn_abort(t);
		return rc;
	}
	return store_txn_commit(t);
}

/* Handle the oldest recorded message of a guest not in @p held (borrowed).
 * @return 1 one was handled (look again), 0 nothing more to handle this
 * round, -1 the store failed (retry later), -2 that guest's message
 * failed: added to @p held, look again for others. */
static int inbox_handle_one(wa_channel *w, json_t *held)
{
	struct inbox_first f = {{0}, NULL, held};
	store_txn *t;
	if (store_txn_begin(w->env->st, 0, &t) != TH_OK)
		return -1;
	int rc = store_walk(t, STORE_META, INBOX_PREFIX, strlen(INBOX_PREFIX), inbox_first_one, &f);
	if (rc || !f.val) {
		store_txn_abort(t);
		free(f.val);
		return rc ? -1 : 0;
	}
	json_t *rec = json_loads(f.val, 0, NULL);
	free(f.val);
	char *plain = NULL;
	const char *guest = jsonx_str(rec, "guest"), *sealed = jsonx_str(rec, "sealed");
	rc = guest && sealed ? audit_unseal(w->env->au, t, guest, sealed, &plain) : TH_EINVAL;
	store_txn_abort(t);
	char who[GUESTS_MAX_USER_ID + 1] = "";
	if (guest && strlen(guest) <= GUESTS_MAX_USER_ID)
		memcpy(who, guest, strlen(guest) + 1);
	json_decref(rec);
	if (rc == TH_ENOTFOUND || rc == TH_EINVAL || rc == TH_ECRYPTO) {
		/* erased with the guest (or damaged): nothing can be done with it */
		LOG(LOG_INFO, "whatsapp: a recorded message is gone with its guest; dropped");
		return inbox_delete(w, f.key) ? -1 : 1;
	}
	if (rc)
		return -1;
	json_t *m = json_loads(plain, 0, NULL);
	explicit_bzero(plain, strlen(plain));
	free(plain);
	unsigned status = m ? answer_message(w, m, 1) : 200;
	const char *from = jsonx_str(m, "from");
	if (from)
		explicit_bzero((char *)from, strlen(from));
	json_decref(m);
	if (status >= 500) { /* kept: handled again after a pause */
		json_object_set_new(held, who, json_true());
		return -2;
	}
	return inbox_delete(w, f.key) ? -1 : 1;
}

static void *worker_main(void *arg)
{
	wa_channel *w = arg;
	pthread_mutex_lock(&w->mu);
	while (!w->stopping) {
		if (!w->kicked) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += INBOX_RETRY_MS / 1000;
			pthread_cond_timedwait(&w->cv, &w->mu, &ts);
			if (w->stopping)
				break;
		}
		w->kicked = 0;
		pthread_mutex_unlock(&w->mu);
		json_t *held = json_object();
		int r;
		while ((r = inbox_handle_one(w, held)) > 0 || r == -2) {
			pthread_mutex_lock(&w->mu);
			int stop = w->stopping;
			pthread_mutex_unlock(&w->mu);
			if (stop)
				break;
		}
		json_decref(held);
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* Statuses come out of order and again: each id keeps its furthest. */
static void take_status(wa_channel *w, const json_t *s)
{
	const char *id = jsonx_str(s, "id"), *status = jsonx_str(s, "status");
	int rank = wa_status_rank(status), best = 0;
	char *mine = xasprintf(STATUS_PREFIX "%s:%d", id, rank);
	if (chf_seen_before(w->flow, mine)) /* recorded now if it was not */
		best = rank;
	free(mine);
	for (int r = rank + 1; r <= 4; r++) {
		char *k = xasprintf(STATUS_PREFIX "%s:%d", id, r);
		store_txn *t;
		const void *v;
		size_t vlen;
		if (store_txn_begin(w->env->st, 0, &t) == TH_OK) {
			if (store_get(t, STORE_EVENTS, k, strlen(k), &v, &vlen) == TH_OK)
				best = r;
			store_txn_abort(t);
		}
		free(k);
	}
	if (best > rank)
		LOG(LOG_INFO, "whatsapp: a message's status %s came after a later one; kept the later",
		    status);
	else if (best == rank)
		LOG(LOG_DEBUG, "whatsapp: a message's status %s came again", status);
	else
		LOG(LOG_DEBUG, "whatsapp: a message is %s", status);
}

/* ---- the webhook --------------------------------------------------------------------------- */

static int route(void *ctx, const char *url)
{
	(void)ctx;
	return strcmp(url, WEBHOOK_PATH) == 0;
}

static enum MHD_Result on_request(void *ctx, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *body, size_t len, int too_large)
{
	(void)url;
	wa_channel *w = ctx;
	if (strcmp(method, "GET") == 0) { /* the verification handshake */
		char out[WA_MAX_CHALLENGE + 1];
		const char *mode = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "hub.mode");
		const char *token =
		        MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "hub.verify_token");
		const char *ch = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "hub.challenge");
		if (!wa_verify(mode, token, ch, w->verify_token, out)) {
			LOG(LOG_WARN, "whatsapp: a verification request without the verify token; refused");
			return chf_reply(conn, 403, "text/plain", xstrdup("forbidden\n"));
		}
		LOG(LOG_INFO, "whatsapp: the webhook was verified");
		return chf_reply(conn, 200, "text/plain", xstrdup(out));
	}
	if (too_large)
		return chf_reply(conn, 413, "text/plain", xstrdup("too large\n"));
	/* spec: X-Hub-Signature-256 over the raw bytes, before they are read */
	const char *sig = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Hub-Signature-256");
	if (!wa_signature_check(w->app_secret, body ? body : "", len, sig)) {
		LOG(LOG_WARN, "whatsapp: a webhook without a good X-Hub-Signature-256; refused");
		return chf_reply(conn, 403, "text/plain", xstrdup("forbidden\n"));
	}
	json_t *items = NULL;
	int rc = wa_notification_parse(body ? body : "", len, &items);
	if (rc)
		return chf_reply(conn, rc == TH_ETOOLARGE ? 413 : 400, "text/plain",
		                 xstrdup("bad request\n"));
	size_t i;
	json_t *it;
	unsigned status = 200;
	json_array_foreach(items, i, it)
	{
		if (strcmp(jsonx_str(it, "kind"), "message") == 0) {
			/* to an open conversation: recorded, handled by the worker */
			int r = inbox_record(w, it);
			unsigned s = r < 0 ? 500 : r == 0 ? answer_message(w, it, 0) : 200;
			if (s >= 500)
				status = 500;
		} else {
			take_status(w, it);
		}
		const char *from = jsonx_str(it, "from");
		if (from)
			explicit_bzero((char *)from, strlen(from));
	}
	json_decref(items);
	/* Meta is answered 200 (the words go back by the Graph API); 500 when a
	 * message could not be recorded or handled, so Meta delivers it again */
	return chf_reply(conn, status, "text/plain", xstrdup(status == 200 ? "" : "try again\n"));
}

/* ---- the sender ------------------------------------------------------------------------ */

/*
 * A picture staff sent, to @p to: fetched from the homeserver (the
 * fetcher of matrix.h), uploaded to /{phone_number_id}/media, sent by its
 * media id.  From the sender thread only.
 * @return TH_OK, TH_EINVAL (not a JPEG or PNG, too large, gone: send the
 *         words for it instead), or TH_ENET / TH_EHTTP (retry later).
 */
static int send_picture(wa_channel *w, const char *pnid, const char *to, const json_t *file)
{
	const struct matrix *mx = w->env->mx;
	const char *mime = jsonx_str(file, "mimetype"), *kind = jsonx_str(file, "kind");
	char server[MEDIA_MAX_SERVER + 1], id[MEDIA_MAX_ID + 1];
	/* spec: the Cloud API takes image/jpeg and image/png pictures up to 5 MB */
	if (!kind || strcmp(kind, "picture") != 0 || !mime ||
	    (strcmp(mime, "image/jpeg") != 0 && strcmp(mime, "image/png") != 0) ||
	    media_mxc_parse(jsonx_str(file, "mxc"), server, id) != TH_OK) {
		LOG(LOG_DEBUG, "whatsapp: a file staff sent (%s, %s) goes as words", kind ? kind : "-",
		    mime ? mime : "-");
		return TH_EINVAL;
	}
	if (!w->fetch && mx->ops->fetcher_new(mx->ctx, &w->fetch) != TH_OK) {
		LOG(LOG_WARN, "whatsapp: no connection to the homeserver's media repository");
		return TH_ENET;
	}
	struct mx_download dl = {0};
	int rc = mx->ops->fetch(w->fetch, server, id, w->cfg->wa_max_media_bytes, NULL, NULL, &dl);
	if (rc || dl.status != 200 || !dl.buf) {
		free(dl.buf);
		LOG(LOG_INFO, "whatsapp: a picture staff sent could not be fetched (%s, HTTP %ld)",
		    th_strerror(rc), dl.status);
		return rc == TH_ENET || rc == TH_ETIMEOUT || dl.status >= 500 ? TH_ENET : TH_EINVAL;
	}
	CURL *c = curl_easy_init();
	if (!c) {
		free(dl.buf);
		return TH_ENET;
	}
	curl_mime *form = curl_mime_init(c); /* c only owns it: graph_call posts it with its own */
	curl_mimepart *part = curl_mime_addpart(form);
	curl_mime_name(part, "messaging_product");
	curl_mime_data(part, "whatsapp", CURL_ZERO_TERMINATED);
	part = curl_mime_addpart(form);
	curl_mime_name(part, "type");
	curl_mime_data(part, mime, CURL_ZERO_TERMINATED);
	part = curl_mime_addpart(form);
	curl_mime_name(part, "file");
	curl_mime_data(part, (const char *)dl.buf, dl.len);
	curl_mime_filename(part, strcmp(mime, "image/png") == 0 ? "picture.png" : "picture.jpg");
	curl_mime_type(part, mime);
	char *url = xasprintf("%s/%s/%s/media", w->cfg->wa_graph_url, w->cfg->wa_api_version, pnid);
	long status = 0;
	struct body b = {0};
	rc = graph_call(w, url, NULL, form, REPLY_MAX, &status, &b);
	curl_mime_free(form);
	curl_easy_cleanup(c);
	free(dl.buf);
	free(url);
	json_t *up = !rc && status == 200 && b.p ? json_loadb((const char *)b.p, b.len, 0, NULL) : NULL;
	free(b.p);
	const char *media_id = jsonx_str(up, "id");
	if (!rc && (!media_id || strlen(media_id) > WA_MAX_ID)) {
		LOG(LOG_WARN, "whatsapp: the Graph API refused a picture's upload: HTTP %ld", status);
		rc = status >= 500 || status == 429 ? TH_EHTTP : TH_EINVAL;
	}
	if (!rc)
		rc = post_message(w, pnid, wa_image_body(to, media_id), "a picture");
	json_decref(up);
	return rc;
}

/* One guest's due entries (chf_driver.send_due): out now inside the
 * window; else held, and the person invited back once. */
static int send_due(void *ctx, const json_t *item)
{
	wa_channel *w = ctx;
	const char *guest = jsonx_str(item, "guest"), *to = jsonx_str(item, "address");
	const struct config_service *sv = config_service_find(w->cfg, jsonx_str(item, "service"));
	const char *pnid = sv ? sv->wa_phone_number_id : NULL;
	if (!to || !pnid)
		return TH_EINVAL;
	uint64_t last = guest_time(w->env->st, guest, LAST_IN), now = th_now_ms();
	if (!last) /* opened this instant: its time is being written (answer_message kicks again) */
		return CHF_HELD;
	if (last + (uint64_t)w->cfg->wa_window_s * 1000u <= now) {
		if (guest_time(w->env->st, guest, INVITED) > last)
			return CHF_HELD;
		/* a template shows on the lock screen: the configured, content-free one */
		int rc = post_message(
		        w, pnid, wa_template_body(to, w->cfg->wa_template_name, w->cfg->wa_template_language),
		        "the invitation template");
		if (!rc)
			rc = guest_time_put(w->env->st, guest, INVITED, now);
		if (!rc)
			LOG(LOG_INFO,
			    "whatsapp: the window is shut; staff's words wait, the person was invited back");
		return rc ? rc : CHF_HELD;
	}
	size_t j;
	json_t *t;
	json_array_foreach(json_object_get(item, "texts"), j, t)
	{
		const json_t *file = json_array_get(json_object_get(item, "files"), j);
		int rc = json_is_object(file) ? send_picture(w, pnid, to, file) : TH_EINVAL;
		if (rc == TH_EINVAL) /* not a picture WhatsApp takes: the words for it */
			rc = post_message(w, pnid, wa_text_body(to, json_string_value(t)), "a message");
		if (rc)
			return rc;
	}
	return TH_OK;
}

/* ---- start and stop ---------------------------------------------------------------------- */

struct channel wach_channel(wa_channel *w)
{
	return chf_channel(w ? w->flow : NULL);
}

int wach_start(const struct txn_env *env, chf_on_queue_fn on_queue, void *ctx, wa_channel **out)
{
	const struct config *cfg = env->cfg;
	wa_channel *w = xcalloc(1, sizeof(*w));
	w->env = env;
	w->cfg = cfg;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->drv = (struct chf_driver){.name = "whatsapp",
	                             .by = "by WhatsApp",
	                             .caps = CHAN_CAP_TEXT | CHAN_CAP_FILES,
	                             .key_file = cfg->wa_key_file,
	                             .per_address_per_minute = cfg->wa_per_number_per_minute,
	                             .per_service_per_minute = cfg->wa_per_service_per_minute,
	                             .send_due = send_due,
	                             .ctx = w};
	if (wach_secret_read("app_secret_file", cfg->wa_app_secret_file, &w->app_secret) ||
	    wach_secret_read("verify_token_file", cfg->wa_verify_token_file, &w->verify_token) ||
	    wach_secret_read("access_token_file", cfg->wa_access_token_file, &w->access_token))
		goto fail;
	if (chf_start(env, &w->drv, on_queue, ctx, &w->flow) != TH_OK)
		goto fail;
	w->kicked = 1; /* what was recorded and not handled before a restart */
	if (pthread_create(&w->worker, NULL, worker_main, w) != 0) {
		LOG(LOG_ERROR, "whatsapp: cannot start the worker thread");
		goto fail;
	}
	w->worker_started = 1;
	if (chf_listen("whatsapp.listen_address", cfg->wa_listen_address, cfg->wa_listen_port,
	               cfg->wa_max_body_bytes, route, on_request, w, &w->listener) != TH_OK)
		goto fail;
	LOG(LOG_INFO, "whatsapp: webhook on %s:%u%s", cfg->wa_listen_address, chf_listener_port(w->listener),
	    WEBHOOK_PATH);
	*out = w;
	return TH_OK;
fail:
	wach_stop(w);
	return TH_EIO;
}

unsigned wach_port(wa_channel *w)
{
	return w ? chf_listener_port(w->listener) : 0;
}

void wach_stop(wa_channel *w)
{
	if (!w)
		return;
	chf_listener_stop(w->listener); /* first: its requests use the flow */
	if (w->worker_started) {
		pthread_mutex_lock(&w->mu);
		w->stopping = 1;
		pthread_cond_signal(&w->cv);
		pthread_mutex_unlock(&w->mu);
		pthread_join(w->worker, NULL); /* a message being handled is finished, or kept */
	}
	chf_stop(w->flow);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	if (w->fetch)
		w->env->mx->ops->fetcher_free(w->fetch);
	secret_free(w->app_secret);
	secret_free(w->verify_token);
	secret_free(w->access_token);
	free(w);
}
