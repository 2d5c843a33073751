/*
 * chan_flow.c - the steps every outside channel takes (chan_flow.h): the
 * lookup key, dedupe, rate limits, policy's decision carried out, the
 * webhook listener and the sender thread.  No address is ever logged.
 */
#include "chan_flow.h"
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

#include "audit.h"
#include "chanrules.h"
#include "jsonx.h"
#include "limiter.h"
#include "log.h"
#include "sms.h"
#include "store.h"
#include "util.h"

#define NOT_READY_WAIT 20000u /* ms a message waits for a conversation room still being made */
#define SEND_BATCH     32
#define RETRY_MIN_MS   2000u
#define RETRY_MAX_MS   60000u

struct chan_flow {
	const struct txn_env *env;
	const struct chf_driver *drv;
	struct chan_ops ops;
	chf_on_queue_fn on_queue;
	void *ctx;
	unsigned char key[CHF_KEY_LEN];
	limiter *lim;
	pthread_t thread;
	int started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int kicked, stopping;
};

/* ---- the lookup key ------------------------------------------------------------- */

static int key_load(const char *name, const char *path, unsigned char key[CHF_KEY_LEN])
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	struct stat sb;
	int rc = TH_EIO;
	if (fd < 0 || fstat(fd, &sb) != 0) {
		LOG(LOG_ERROR, "%s: cannot open the lookup key file %s: %s", name, path, strerror(errno));
		goto out;
	}
	if (sb.st_mode & 077) {
		LOG(LOG_ERROR, "%s: the lookup key file %s is readable by others (chmod 600 it)", name, path);
		goto out;
	}
	if (sb.st_size == 0) { /* first start */
		if (th_random(key, CHF_KEY_LEN) || write(fd, key, CHF_KEY_LEN) != CHF_KEY_LEN ||
		    fsync(fd) != 0) {
			LOG(LOG_ERROR, "%s: cannot write the lookup key file %s", name, path);
			goto out;
		}
		rc = TH_OK;
	} else if (sb.st_size == CHF_KEY_LEN && read(fd, key, CHF_KEY_LEN) == CHF_KEY_LEN) {
		rc = TH_OK;
	} else {
		LOG(LOG_ERROR, "%s: the lookup key file %s is not %d bytes", name, path, CHF_KEY_LEN);
	}
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

/* ---- a message in ------------------------------------------------------------------- */

static const char *notice_text(const struct config_service *svc, const char *lang)
{
	for (size_t i = 0; i < svc->nnotices; i++) {
		if (strcmp(svc->notices[i].lang, lang) == 0)
			return svc->notices[i].text;
	}
	return svc->nnotices ? svc->notices[0].text : "";
}

/* spec (Kannel, Twilio, Cloud API): a gateway may deliver a message twice; each is handled once. */
int chf_seen_before(chan_flow *f, const char *id)
{
	if (!id || !*id)
		return 0;
	unsigned char when[8];
	store_u64_key(when, th_now_ms());
	store_txn *t;
	int rc = store_txn_begin(f->env->st, 1, &t);
	if (!rc) {
		rc = store_put(t, STORE_EVENTS, id, strlen(id), when, sizeof(when), STORE_NOOVERWRITE);
		if (rc)
			store_txn_abort(t);
		else
			rc = store_txn_commit(t);
	}
	return rc == TH_EEXIST;
}

/* Undo chf_seen_before's mark: the message was not handled, so the gateway's retry must be. */
static void seen_forget(chan_flow *f, const char *id)
{
	store_txn *t;
	if (!id || !*id || store_txn_begin(f->env->st, 1, &t) != TH_OK)
		return;
	if (store_del(t, STORE_EVENTS, id, strlen(id)) == TH_OK)
		store_txn_commit(t);
	else
		store_txn_abort(t);
}

int chf_limit_take(chan_flow *f, const struct config_service *svc, const unsigned char key[CHF_KEY_LEN])
{
	uint64_t now = th_mono_ms();
	unsigned pa = f->drv->per_address_per_minute, ps = f->drv->per_service_per_minute;
	/* Per address, then per service (a flood from many addresses). */
	if (lim_take(f->lim, key, CHF_KEY_LEN, pa, 60000u / pa, now) ||
	    lim_take(f->lim, svc->name, strlen(svc->name), ps, 60000u / ps, now)) {
		LOG(LOG_WARN, "%s: service %s: a message over the rate limit; not answered", f->drv->name,
		    svc->name);
		return TH_EFULL;
	}
	return TH_OK;
}

/* The person ended it: on the record as consent withdrawn (ids only). */
static int record_withdrawn(chan_flow *f, const char *guest)
{
	store_txn *t;
	int rc = store_txn_begin(f->env->st, 1, &t);
	if (rc)
		return rc;
	json_t *details = json_pack("{s:s, s:s}", "channel", f->drv->name, "keyword", "stop");
	struct audit_rec ar = {
	        .kind = AUDIT_CONSENT_WITHDRAWN, .actor = guest, .subject = guest, .details = details};
	rc = audit_append(f->env->au, t, &ar, NULL);
	json_decref(details);
	if (rc) {
		store_txn_abort(t);
		return rc;
	}
	return store_txn_commit(t);
}

/* @return TH_OK (passed on, or refused for good: logged) or a store error (to retry). */
static int forward(chan_flow *f, const char *guest, const struct chf_in *in)
{
	const char *name = f->drv->name;
	char local[CONV_MAX_LOCAL_ID + 1];
	if (in->local_id && *in->local_id && strlen(in->local_id) <= CONV_MAX_LOCAL_ID)
		memcpy(local, in->local_id, strlen(in->local_id) + 1);
	else if (th_random_hex(local, 16) != TH_OK)
		return TH_EIO;
	/* Right after agreeing the room may still be being made: the message
	 * waits for it a little (a page would retry; a gateway cannot). */
	uint64_t until = th_mono_ms() + NOT_READY_WAIT;
	for (;;) {
		enum conv_send_result res = CONV_SENT;
		int rc = in->data ? conv_send_media(f->env, guest, local, in->kind, in->data, in->len, &res,
		                                    NULL)
		                  : conv_send(f->env, guest, local, in->text, &res, NULL);
		if (rc) {
			LOG(LOG_WARN, "%s: a message could not be passed on: %s", name, th_strerror(rc));
			return rc;
		}
		if (res != CONV_NOT_READY || th_mono_ms() >= until) {
			if (res != CONV_SENT)
				LOG(LOG_WARN, "%s: a message was not passed on (result %d)", name, (int)res);
			if (res == CONV_SENT && in->data && *in->text) { /* a picture's caption follows it */
				struct chf_in words = *in;
				char cap[CONV_MAX_LOCAL_ID + 1];
				words.data = NULL;
				words.local_id = NULL;
				/* its own id, so a message handled again sends its caption once */
				size_t ll = strlen(local);
				if (ll + 2 <= CONV_MAX_LOCAL_ID) {
					memcpy(cap, local, ll);
					memcpy(cap + ll, "-c", 3);
					words.local_id = cap;
				}
				return forward(f, guest, &words);
			}
			return TH_OK;
		}
		struct timespec ts = {0, 250 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

void chf_answer_in(chan_flow *f, const struct chf_in *in, struct chf_answer *a)
{
	const struct config *cfg = f->env->cfg;
	const struct config_service *svc = in->svc;
	const char *name = f->drv->name;
	memset(a, 0, sizeof(*a));
	a->status = 200;
	a->action = POL_CHAN_REFUSE;
	/* A recorded message (chf_in.recorded) took both when it was recorded. */
	if (!in->recorded && chf_limit_take(f, svc, in->key)) {
		a->status = 429;
		return;
	}
	if (!in->recorded && chf_seen_before(f, in->dedupe)) {
		LOG(LOG_INFO, "%s: a message delivered again; handled once", name);
		a->repeat = 1;
		return;
	}
	struct conv_chan_state st;
	if (conv_chan_state(f->env->st, in->key, th_now_ms(), &st) != TH_OK) {
		if (!in->recorded)
			seen_forget(f, in->dedupe);
		a->status = 503;
		return;
	}
	const char *const *langs = (const char *const *)cfg->gw_languages.v;
	size_t nlangs = cfg->gw_languages.n, li = 0;
	struct pol_chan_facts facts = {.event = POL_CHAN_IN,
	                               .stage = (enum pol_chan_stage)st.stage,
	                               .word = pol_chan_word_of(in->text, nlangs, &li)};
	struct pol_chan_decision d;
	pol_chan_decide(&facts, &d);
	a->action = d.action;
	const char *lang = st.lang[0] ? st.lang : langs[0];
	LOG(LOG_DEBUG, "%s: service %s: %s (%s)", name, svc->name, pol_chan_action_name(d.action),
	    pol_chan_reason_name(d.reason));
	int rc = TH_OK;
	switch (d.action) {
	case POL_CHAN_ASK_LANG:
		rc = conv_chan_pending(f->env, in->key, POL_CHAN_LANG, "");
		a->say = sms_say(SMS_SAY_MENU, lang, langs, nlangs);
		break;
	case POL_CHAN_NOTICE_SEND: {
		lang = langs[li];
		rc = conv_chan_pending(f->env, in->key, POL_CHAN_NOTICE, lang);
		char *agree = sms_say(SMS_SAY_AGREE, lang, langs, nlangs);
		a->say = xasprintf("%s: %s\n\n%s", svc->display_name, notice_text(svc, lang), agree);
		free(agree);
		break;
	}
	case POL_CHAN_REMIND:
		a->say = sms_say(SMS_SAY_REMIND, lang, langs, nlangs);
		break;
	case POL_CHAN_OPEN_CONV: {
		struct conv_channel ch = {name, f->drv->by, in->address, in->key};
		rc = conv_redeem_channel(f->env, svc->name, svc->notice_version, lang, &ch, a->guest);
		if (!rc)
			a->say = sms_say(SMS_SAY_OPENED, lang, langs, nlangs);
		break;
	}
	case POL_CHAN_FORWARD:
		memcpy(a->guest, st.guest, sizeof(a->guest));
		rc = forward(f, st.guest, in);
		break;
	case POL_CHAN_END:
		rc = conv_leave(f->env, st.guest);
		if (!rc)
			rc = record_withdrawn(f, st.guest);
		if (!rc)
			a->say = sms_say(SMS_SAY_ENDED, lang, langs, nlangs);
		break;
	case POL_CHAN_ERASE: {
		/* The erasure job runs on (conv.h): the answer says it is under way.
		 * One held by an open case is answered as the page answers it. */
		char receipt[CONV_RECEIPT_LEN + 1];
		rc = conv_erase(f->env, st.guest, receipt);
		if (!rc)
			a->say = sms_say(SMS_SAY_ERASED, lang, langs, nlangs);
		else if (rc == TH_EEXIST) {
			a->say = sms_say(SMS_SAY_HELD, lang, langs, nlangs);
			rc = TH_OK;
		}
		break;
	}
	case POL_CHAN_FORGET:
		rc = conv_chan_pending(f->env, in->key, POL_CHAN_NONE, NULL);
		if (!rc)
			a->say = sms_say(SMS_SAY_FORGOT, lang, langs, nlangs);
		break;
	case POL_CHAN_CONFIRM:
		a->say = sms_say(SMS_SAY_NOTHING, lang, langs, nlangs);
		break;
	default:
		break;
	}
	if (strlen(lang) < sizeof(a->lang))
		memcpy(a->lang, lang, strlen(lang) + 1);
	if (rc) {
		LOG(LOG_WARN, "%s: service %s: %s failed: %s", name, svc->name,
		    pol_chan_action_name(d.action), th_strerror(rc));
		free(a->say);
		a->say = NULL;
		a->status = rc == TH_EFULL ? 503 : 500;
		if (!in->recorded) /* not handled: the gateway's retry is handled, not dropped as a repeat */
			seen_forget(f, in->dedupe);
		return;
	}
	if (f->on_queue)
		f->on_queue(f->ctx);
}

/* ---- the listener ------------------------------------------------------------------- */

struct chf_listener {
	struct MHD_Daemon *mhd;
	unsigned port;
	size_t max_body;
	chf_route_fn route;
	chf_request_fn on_request;
	void *ctx;
};

struct req {
	char *body;
	size_t len;
	int too_large;
};

enum MHD_Result chf_reply(struct MHD_Connection *conn, unsigned status, const char *type, char *text)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(r, "Content-Type", type);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	enum MHD_Result ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_size,
                              void **con_cls)
{
	(void)version;
	chf_listener *l = cls;
	struct req *r = *con_cls;
	if (!r) {
		if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
			return chf_reply(conn, 405, "text/plain", xstrdup("GET or POST\n"));
		if (!l->route(l->ctx, url))
			return chf_reply(conn, 404, "text/plain", xstrdup("not found\n"));
		/* the cap before a byte of the body is read */
		const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
		uint64_t n = 0;
		if (cl && (th_parse_u64(cl, UINT64_MAX, &n) != TH_OK || n > l->max_body))
			return chf_reply(conn, 413, "text/plain", xstrdup("too large\n"));
		*con_cls = xcalloc(1, sizeof(struct req));
		return MHD_YES;
	}
	if (*upload_size) {
		if (!r->too_large && r->len + *upload_size <= l->max_body) {
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
	return l->on_request(l->ctx, conn, url, method, r->body, r->len, r->too_large);
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

int chf_listen(const char *what, const char *address, unsigned port, size_t max_body, chf_route_fn route,
               chf_request_fn on_request, void *ctx, chf_listener **out)
{
	chf_listener *l = xcalloc(1, sizeof(*l));
	l->max_body = max_body;
	l->route = route;
	l->on_request = on_request;
	l->ctx = ctx;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	/* a message waits (forward) without holding up the others: a thread each, few at once */
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
	if (inet_pton(AF_INET, address, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
	} else if (inet_pton(AF_INET6, address, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		flags |= MHD_USE_IPv6;
	} else {
		LOG(LOG_ERROR, "%s '%s' is not an IP address", what, address);
		goto fail;
	}
	l->mhd = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, handle, l, MHD_OPTION_EXTERNAL_LOGGER,
	                          log_mhd, (void *)what, MHD_OPTION_SOCK_ADDR, &ss,
	                          MHD_OPTION_NOTIFY_COMPLETED, completed, l, MHD_OPTION_CONNECTION_TIMEOUT,
	                          (unsigned)30, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_END);
	if (!l->mhd) {
		LOG(LOG_ERROR, "%s: cannot listen on %s:%u", what, address, port);
		goto fail;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(l->mhd, MHD_DAEMON_INFO_BIND_PORT);
	l->port = info ? info->port : port;
	*out = l;
	return TH_OK;
fail:
	chf_listener_stop(l);
	return TH_EIO;
}

unsigned chf_listener_port(const chf_listener *l)
{
	return l ? l->port : 0;
}

void chf_listener_stop(chf_listener *l)
{
	if (!l)
		return;
	if (l->mhd)
		MHD_stop_daemon(l->mhd);
	free(l);
}

/* ---- the sender ------------------------------------------------------------------------ */

/* One round: carry what is due.  @return 1 if more may be due at once, 0 if
 * all is carried or held, -1 after a failure (retry later). */
static int send_round(chan_flow *f)
{
	json_t *due = NULL;
	int drc = conv_chan_due(f->env, f->drv->name, SEND_BATCH, &due);
	if (drc != TH_OK) {
		LOG(LOG_WARN, "%s: what is due cannot be read: %s", f->drv->name, th_strerror(drc));
		return -1;
	}
	int failed = 0;
	size_t i, held = 0;
	json_t *item;
	json_array_foreach(due, i, item)
	{
		const char *guest = jsonx_str(item, "guest"), *to = jsonx_str(item, "address");
		int rc = json_array_size(json_object_get(item, "texts")) ? f->drv->send_due(f->drv->ctx, item)
		                                                         : TH_OK;
		if (to)
			explicit_bzero((char *)to, strlen(to));
		if (rc == CHF_HELD) {
			held++;
			continue;
		}
		if (rc) {
			LOG(LOG_DEBUG, "%s: a guest's messages wait for a retry: %s", f->drv->name,
			    th_strerror(rc));
			failed = 1;
			continue; /* this one is retried; the others go on */
		}
		if (conv_chan_sent(f->env, guest,
		                   (uint64_t)json_integer_value(json_object_get(item, "upto"))))
			failed = 1;
	}
	size_t n = json_array_size(due);
	json_decref(due);
	return failed ? -1 : n == SEND_BATCH && held < n;
}

static void *sender_main(void *arg)
{
	chan_flow *f = arg;
	uint64_t wait = RETRY_MIN_MS;
	pthread_mutex_lock(&f->mu);
	while (!f->stopping) {
		if (!f->kicked) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			uint64_t ns = (uint64_t)ts.tv_nsec + (wait % 1000) * 1000000ull;
			ts.tv_sec += (time_t)(wait / 1000 + ns / 1000000000ull);
			ts.tv_nsec = (long)(ns % 1000000000ull);
			pthread_cond_timedwait(&f->cv, &f->mu, &ts);
		}
		if (f->stopping)
			break;
		f->kicked = 0;
		pthread_mutex_unlock(&f->mu);
		int r = send_round(f);
		pthread_mutex_lock(&f->mu);
		if (r > 0)
			f->kicked = 1;
		wait = r < 0 ? (wait * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : wait * 2) : RETRY_MIN_MS;
		if (r < 0)
			f->kicked = 0;
	}
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

void chf_kick(chan_flow *f)
{
	pthread_mutex_lock(&f->mu);
	f->kicked = 1;
	pthread_cond_signal(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

static void feed_grew(void *ctx)
{
	chf_kick(ctx);
}

struct channel chf_channel(chan_flow *f)
{
	struct channel c = {f ? &f->ops : NULL, f};
	return c;
}

const unsigned char *chf_key(const chan_flow *f)
{
	return f->key;
}

/* ---- start and stop ---------------------------------------------------------------------- */

int chf_start(const struct txn_env *env, const struct chf_driver *drv, chf_on_queue_fn on_queue, void *ctx,
              chan_flow **out)
{
	chan_flow *f = xcalloc(1, sizeof(*f));
	f->env = env;
	f->drv = drv;
	f->ops.name = drv->name;
	f->ops.by = drv->by;
	f->ops.caps = drv->caps;
	f->ops.feed_grew = feed_grew;
	f->on_queue = on_queue;
	f->ctx = ctx;
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	if (key_load(drv->name, drv->key_file, f->key) != TH_OK)
		goto fail;
	unsigned char lk[16];
	if (th_random(lk, sizeof(lk)) != TH_OK)
		goto fail;
	f->lim = lim_new(1024, lk);
	if (pthread_create(&f->thread, NULL, sender_main, f) != 0) {
		LOG(LOG_ERROR, "%s: cannot start the sender thread", drv->name);
		goto fail;
	}
	f->started = 1;
	f->kicked = 1; /* what was left unsent before a restart */
	*out = f;
	return TH_OK;
fail:
	chf_stop(f);
	return TH_EIO;
}

void chf_stop(chan_flow *f)
{
	if (!f)
		return;
	if (f->started) {
		pthread_mutex_lock(&f->mu);
		f->stopping = 1;
		pthread_cond_signal(&f->cv);
		pthread_mutex_unlock(&f->mu);
		pthread_join(f->thread, NULL);
	}
	lim_free(f->lim);
	explicit_bzero(f->key, sizeof(f->key));
	pthread_mutex_destroy(&f->mu);
	pthread_cond_destroy(&f->cv);
	free(f);
}
