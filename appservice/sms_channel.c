/*
 * sms_channel.c - the SMS channel: the webhook listener for Kannel and
 * Twilio-compatible gateways and the sender's texts: a driver of
 * chan_flow.h, which takes the steps.  No phone number is logged.
 */
#include "sms_channel.h"
#include "metrics.h"

#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <microhttpd.h>

#include "chan_flow.h"
#include "chanrules.h"
#include "config.h"
#include "jsonx.h"
#include "log.h"
#include "matrix.h"
#include "sms.h"
#include "store.h"
#include "util.h"

#define KANNEL_PATH   "/sms/kannel"
#define TWILIO_PATH   "/sms/twilio"
#define DLR_PATH      "/sms/kannel-dlr" /* + "/" + sms.secret: Kannel's delivery reports */
#define UNDELIVERED   "The last text to this person could not be delivered."
#define SECRET_HEADER "X-Threshold-Secret"

struct sms_channel {
	const struct txn_env *env;
	smsch_on_queue_fn on_queue;
	void *ctx;
	const struct config *cfg;
	struct chf_driver drv;
	chan_flow *flow;
	chf_listener *listener;
	int twilio;
	char *dlr_url; /* Kannel's way back to this listener for reports: DLR_PATH and the secret */
};

static int ascii_only(const char *s)
{
	for (; *s; s++) {
		if ((unsigned char)*s >= 0x80)
			return 0;
	}
	return 1;
}

/* ---- a text in ------------------------------------------------------------------------ */

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

/* The steps for one text (chan_flow.h); the answer goes back in the reply. */
static void answer_text(sms_channel *s, const struct sms_in *in, struct chf_answer *a)
{
	const struct config_service *svc = service_by_number(s->cfg, in->to);
	if (!svc) {
		LOG(LOG_WARN, "sms: a text to a number no service has; ignored");
		memset(a, 0, sizeof(*a));
		a->status = 200;
		return;
	}
	unsigned char key[SMS_KEY_LEN];
	sms_address_hash(chf_key(s->flow), svc->name, in->from, key);
	char *dedupe = in->id[0] ? xasprintf("sms:%s:%s", s->twilio ? "twilio" : "kannel", in->id) : NULL;
	char *local = in->id[0] ? xasprintf("sms-%s", in->id) : NULL;
	struct chf_in ci = {.svc = svc,
	                    .key = key,
	                    .address = in->from,
	                    .dedupe = dedupe,
	                    .local_id = local,
	                    .text = in->text};
	chf_answer_in(s->flow, &ci, a);
	if (a->status == 200 && !a->repeat)
		metrics_add(METRICS_SMS_IN, 1);
	explicit_bzero(key, sizeof(key));
	free(dedupe);
	free(local);
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

static int kannel_authorised(sms_channel *s, struct MHD_Connection *conn, const char *url, const char *path)
{
	const char *secret = s->cfg->sms_secret;
	const char *given = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, SECRET_HEADER);
	size_t plen = strlen(path);
	if (!given && strncmp(url, path, plen) == 0 && url[plen] == '/')
		given = url + plen + 1;
	return secret && given && th_consttime_eq(secret, strlen(secret), given, strlen(given));
}

static int route(void *ctx, const char *url)
{
	(void)ctx;
	return strncmp(url, KANNEL_PATH, strlen(KANNEL_PATH)) == 0 || strcmp(url, TWILIO_PATH) == 0;
}

/* ---- delivery reports (Kannel) ------------------------------------------------------ *
 *
 * Each text sent by Kannel gets an id (SMS_DLR_ID_LEN hex) and asks for
 * reports on it (dlr-mask, dlr-url back to this listener with the id and
 * the secret).  Kept per guest: only its last text's id and latest state
 * (conv.h CONV_CHAN_TIMES, CONV_CHAN_DLR): no number, no words; deleted
 * with the guest's channel records.  A report that the last text failed is
 * put to policy (POL_CHAN_UNDELIVERED), which tells staff in the
 * conversation room while it is open. */

static int hex_key(const char *hex, unsigned char key[SMS_KEY_LEN])
{
	if (!hex || strlen(hex) != 2 * SMS_KEY_LEN)
		return TH_EINVAL;
	for (size_t i = 0; i < SMS_KEY_LEN; i++) {
		unsigned v = 0;
		for (int j = 0; j < 2; j++) {
			char c = hex[2 * i + (size_t)j];
			v = v * 16 + (unsigned)(c >= '0' && c <= '9'   ? c - '0'
			                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
			                                               : 99);
		}
		if (v > 255)
			return TH_EINVAL;
		key[i] = (unsigned char)v;
	}
	return TH_OK;
}

/* Before a text goes out: @p id is now @p guest's last text, state "sent"; the previous id is forgotten. */
static int dlr_remember(sms_channel *s, const char *guest, const char *id)
{
	char *wk = xasprintf(CONV_CHAN_TIMES "%s", guest), *dk = xasprintf(CONV_CHAN_DLR "%s", id);
	store_txn *t;
	json_t *old = NULL,
	       *rec = json_pack("{s:s, s:s}", "dlr", id, "state", sms_dlr_state_name(SMS_DLR_SENT));
	int rc = store_txn_begin(s->env->st, 1, &t);
	if (rc)
		goto out;
	if (store_get_json(t, STORE_META, wk, &old) == TH_OK && jsonx_str(old, "dlr")) {
		char *ok = xasprintf(CONV_CHAN_DLR "%s", jsonx_str(old, "dlr"));
		rc = store_del(t, STORE_META, ok, strlen(ok));
		free(ok);
		if (rc == TH_ENOTFOUND)
			rc = TH_OK;
	}
	if (!rc)
		rc = store_put(t, STORE_META, dk, strlen(dk), guest, strlen(guest), 0);
	if (!rc)
		rc = store_put_json(t, STORE_META, wk, rec);
	if (rc)
		store_txn_abort(t);
	else
		rc = store_txn_commit(t);
out:
	json_decref(old);
	json_decref(rec);
	free(wk);
	free(dk);
	return rc;
}

/* The guest whose last text is @p id, and where their conversation stands. */
static int dlr_guest(sms_channel *s, const char *id, char guest[GUESTS_MAX_USER_ID + 1], int *stage)
{
	char *dk = xasprintf(CONV_CHAN_DLR "%s", id);
	store_txn *t;
	const void *v;
	size_t vlen;
	unsigned char key[SMS_KEY_LEN];
	int rc = store_txn_begin(s->env->st, 0, &t);
	if (rc) {
		free(dk);
		return rc;
	}
	rc = store_get(t, STORE_META, dk, strlen(dk), &v, &vlen);
	free(dk);
	if (!rc && vlen > GUESTS_MAX_USER_ID)
		rc = TH_ENOTFOUND;
	if (!rc) {
		memcpy(guest, v, vlen);
		guest[vlen] = '\0';
		json_t *c = conv_call_get(t, guest);
		rc = hex_key(jsonx_str(c, "address_key"), key);
		json_decref(c);
	}
	store_txn_abort(t);
	if (rc)
		return rc == TH_EINVAL ? TH_ENOTFOUND : rc;
	struct conv_chan_state st;
	rc = conv_chan_state(s->env->st, key, th_now_ms(), &st);
	explicit_bzero(key, sizeof(key));
	/* the number may have started a newer conversation: this one is not open */
	*stage = !rc && strcmp(st.guest, guest) == 0 ? st.stage : POL_CHAN_CLOSED;
	return rc;
}

/*
 * A report on text @p id: kept as its latest state if it is still the
 * guest's last text (a final state is not undone by a late "accepted");
 * a first "failed" is put to policy.
 * @return TH_OK (also for an id no longer known) or a store error.
 */
static int dlr_take(sms_channel *s, const char *id, enum sms_dlr_state state)
{
	char guest[GUESTS_MAX_USER_ID + 1];
	int stage = POL_CHAN_NONE;
	int rc = dlr_guest(s, id, guest, &stage);
	if (rc == TH_ENOTFOUND) {
		LOG(LOG_INFO, "sms: a delivery report (%s) on a text no longer kept",
		    sms_dlr_state_name(state));
		return TH_OK;
	}
	if (rc)
		return rc;
	char *wk = xasprintf(CONV_CHAN_TIMES "%s", guest);
	store_txn *t;
	json_t *rec = NULL;
	int told = 0;
	rc = store_txn_begin(s->env->st, 1, &t);
	if (rc) {
		free(wk);
		return rc;
	}
	if (store_get_json(t, STORE_META, wk, &rec) != TH_OK || !jsonx_str(rec, "dlr") ||
	    strcmp(jsonx_str(rec, "dlr"), id) != 0) {
		LOG(LOG_DEBUG, "sms: a delivery report (%s) on an earlier text", sms_dlr_state_name(state));
		goto done; /* only the last text's state is kept */
	}
	int was = sms_dlr_state_from_name(jsonx_str(rec, "state"));
	if ((was == SMS_DLR_DELIVERED || was == SMS_DLR_FAILED) &&
	    (state == SMS_DLR_ACCEPTED || state == SMS_DLR_BUFFERED || (int)state == was))
		goto done;
	json_object_set_new(rec, "state", json_string(sms_dlr_state_name(state)));
	rc = store_put_json(t, STORE_META, wk, rec);
	if (!rc && state == SMS_DLR_FAILED) {
		struct pol_chan_facts facts = {.event = POL_CHAN_UNDELIVERED,
		                               .stage = (enum pol_chan_stage)stage};
		struct pol_chan_decision d;
		pol_chan_decide(&facts, &d);
		LOG(LOG_INFO, "sms: the last text to a guest was not delivered: %s (%s)",
		    pol_chan_action_name(d.action), pol_chan_reason_name(d.reason));
		char svc[64], room[256];
		if (d.action == POL_CHAN_TELL_STAFF &&
		    conv_of_guest(t, guest, svc, sizeof(svc), room, sizeof(room)) == TH_OK && room[0]) {
			const struct matrix *mx = s->env->mx;
			rc = mx->ops->notice(mx->ctx, t, room, s->cfg->bot_user_id, UNDELIVERED, NULL);
			told = !rc;
		}
	}
done:
	json_decref(rec);
	free(wk);
	if (rc) {
		store_txn_abort(t);
		return rc;
	}
	rc = store_txn_commit(t);
	if (!rc && told && s->on_queue)
		s->on_queue(s->ctx);
	return rc;
}

static enum MHD_Result dlr_request(sms_channel *s, struct MHD_Connection *conn, const char *url)
{
	if (s->twilio || !kannel_authorised(s, conn, url, DLR_PATH))
		return chf_reply(conn, 404, "text/plain", xstrdup("not found\n"));
	json_t *fields = json_object();
	MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, add_arg, fields);
	char id[SMS_DLR_ID_LEN + 1];
	enum sms_dlr_state state;
	int rc = sms_kannel_dlr_read(fields, id, &state);
	json_decref(fields);
	if (rc)
		return chf_reply(conn, 400, "text/plain", xstrdup("bad request\n"));
	static const enum metrics_counter counter[SMS_DLR_COUNT] = {
	        [SMS_DLR_ACCEPTED] = METRICS_SMS_DLR_ACCEPTED,
	        [SMS_DLR_BUFFERED] = METRICS_SMS_DLR_BUFFERED,
	        [SMS_DLR_DELIVERED] = METRICS_SMS_DLR_DELIVERED,
	        [SMS_DLR_FAILED] = METRICS_SMS_DLR_FAILED};
	if (state != SMS_DLR_SENT)
		metrics_add(counter[state], 1);
	rc = dlr_take(s, id, state);
	if (rc) {
		LOG(LOG_WARN, "sms: a delivery report could not be kept: %s", th_strerror(rc));
		return chf_reply(conn, 503, "text/plain", xstrdup("try again\n"));
	}
	return chf_reply(conn, 200, "text/plain", xstrdup(""));
}

static enum MHD_Result finish(void *ctx, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *body, size_t len, int too_large)
{
	sms_channel *s = ctx;
	int twilio_route = strcmp(url, TWILIO_PATH) == 0;
	if (too_large)
		return chf_reply(conn, 413, "text/plain", xstrdup("too large\n"));
	if (strncmp(url, DLR_PATH, strlen(DLR_PATH)) == 0 &&
	    (url[strlen(DLR_PATH)] == '/' || !url[strlen(DLR_PATH)]))
		return dlr_request(s, conn, url);
	json_t *fields = NULL;
	int rc = TH_EINVAL;
	if (twilio_route) {
		if (!s->twilio || strcmp(method, "POST") != 0)
			return chf_reply(conn, 404, "text/plain", xstrdup("not found\n"));
		rc = sms_form_parse(body ? body : "", len, &fields);
		const char *sig = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Twilio-Signature");
		if (!rc && !sms_twilio_check(s->cfg->sms_twilio_auth_token, s->cfg->sms_twilio_webhook_url,
		                             fields, sig)) {
			json_decref(fields);
			LOG(LOG_WARN, "sms: a webhook without a good X-Twilio-Signature; refused");
			return chf_reply(conn, 403, "text/plain", xstrdup("forbidden\n"));
		}
	} else {
		if (s->twilio || !kannel_authorised(s, conn, url, KANNEL_PATH))
			return chf_reply(conn, 404, "text/plain", xstrdup("not found\n"));
		/* Kannel's get-url puts the text in the query; a post-url may send a form */
		fields = json_object();
		MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, add_arg, fields);
		rc = TH_OK;
		if (strcmp(method, "POST") == 0 && len) {
			json_t *form = NULL;
			rc = sms_form_parse(body, len, &form);
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
		return chf_reply(conn, rc == TH_ETOOLARGE ? 413 : 400, "text/plain",
		                 xstrdup("bad request\n"));
	}
	struct chf_answer a;
	answer_text(s, &in, &a);
	explicit_bzero(&in, sizeof(in));
	if (s->twilio)
		return chf_reply(conn, a.status, "text/xml; charset=utf-8",
		                 sms_twiml(a.status == 200 ? a.say : NULL));
	/* Kannel texts the body back to the sender (omit-empty: nothing for "");
	 * beyond ASCII as UCS-2 (X-Kannel-Coding, with accept-x-kannel-headers),
	 * or letters outside the GSM alphabet would be changed */
	char *text = a.status == 200 && a.say ? a.say : xstrdup("");
	if (text != a.say)
		free(a.say);
	struct MHD_Response *resp =
	        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(resp, "Content-Type", "text/plain; charset=utf-8");
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	if (!ascii_only(text))
		MHD_add_response_header(resp, "X-Kannel-Coding", "2");
	enum MHD_Result ret = MHD_queue_response(conn, a.status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* ---- the sender ------------------------------------------------------------------------ */

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
	(void)p;
	(void)ud;
	return size * n;
}

/* Send @p text to @p to from @p from, @p guest's.  @return TH_OK, TH_ENET, TH_EHTTP or a store error. */
static int send_one(sms_channel *s, const char *guest, const char *from, const char *to, const char *text)
{
	const struct config *cfg = s->cfg;
	char *dlr = NULL;
	if (!s->twilio && guest) {
		/* spec: Kannel sendsms dlr-mask / dlr-url (its %d: the report's type) */
		char id[SMS_DLR_ID_LEN + 1];
		int rc = th_random_hex(id, SMS_DLR_ID_LEN / 2);
		if (!rc)
			rc = dlr_remember(s, guest, id);
		if (rc)
			return rc;
		char *back = xasprintf("%s?id=%s&type=%%d", s->dlr_url, id);
		char *eback = sms_urlencode(back);
		dlr = xasprintf("&dlr-mask=%d&dlr-url=%s", SMS_DLR_MASK, eback);
		explicit_bzero(back, strlen(back));
		explicit_bzero(eback, strlen(eback));
		free(back);
		free(eback);
	}
	CURL *c = curl_easy_init();
	if (!c) {
		free(dlr);
		return TH_ENET;
	}
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
		url = xasprintf("%s%cusername=%s&password=%s&from=%s&to=%s&text=%s&charset=UTF-8&coding=%d%s",
		                cfg->sms_kannel_sendsms_url,
		                strchr(cfg->sms_kannel_sendsms_url, '?') ? '&' : '?', eu, ep, efrom, eto,
		                etext, ascii_only(text) ? 0 : 2, dlr ? dlr : "");
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
	if (dlr)
		explicit_bzero(dlr, strlen(dlr));
	free(dlr);
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

/* One guest's texts, in order (chf_driver.send_due). */
static int send_due(void *ctx, const json_t *item)
{
	sms_channel *s = ctx;
	const char *to = jsonx_str(item, "address");
	const struct config_service *sv = config_service_find(s->cfg, jsonx_str(item, "service"));
	const char *from = sv ? sv->sms_number : NULL;
	size_t j;
	json_t *t;
	json_array_foreach(json_object_get(item, "texts"), j, t)
	{
		if (!to || !from)
			return TH_EINVAL;
		int rc = send_one(s, jsonx_str(item, "guest"), from, to, json_string_value(t));
		if (rc)
			return rc;
	}
	return TH_OK;
}

/* ---- start and stop ---------------------------------------------------------------------- */

struct channel smsch_channel(sms_channel *s)
{
	return chf_channel(s ? s->flow : NULL);
}

int smsch_start(const struct txn_env *env, smsch_on_queue_fn on_queue, void *ctx, sms_channel **out)
{
	const struct config *cfg = env->cfg;
	sms_channel *s = xcalloc(1, sizeof(*s));
	s->env = env;
	s->on_queue = on_queue;
	s->ctx = ctx;
	s->cfg = cfg;
	s->twilio = strcmp(cfg->sms_driver, "twilio") == 0;
	s->drv = (struct chf_driver){.name = "sms",
	                             .by = "by SMS",
	                             .caps = CHAN_CAP_TEXT,
	                             .key_file = cfg->sms_key_file,
	                             .per_address_per_minute = cfg->sms_per_number_per_minute,
	                             .per_service_per_minute = cfg->sms_per_service_per_minute,
	                             .send_due = send_due,
	                             .ctx = s};
	if (chf_start(env, &s->drv, on_queue, ctx, &s->flow) != TH_OK ||
	    chf_listen("sms.listen_address", cfg->sms_listen_address, cfg->sms_listen_port,
	               cfg->sms_max_body_bytes, route, finish, s, &s->listener) != TH_OK)
		goto fail;
	LOG(LOG_INFO, "sms: %s webhook on %s:%u", s->twilio ? "twilio" : "kannel", cfg->sms_listen_address,
	    chf_listener_port(s->listener));
	{
		/* Kannel runs next to the listener: a wildcard address is reached on loopback */
		const char *a = cfg->sms_listen_address;
		int any = strcmp(a, "0.0.0.0") == 0 || strcmp(a, "::") == 0;
		int v6 = !any && strchr(a, ':') != NULL;
		char *esecret = sms_urlencode(cfg->sms_secret ? cfg->sms_secret : "");
		s->dlr_url = xasprintf("http://%s%s%s:%u%s/%s", v6 ? "[" : "", any ? "127.0.0.1" : a,
		                       v6 ? "]" : "", chf_listener_port(s->listener), DLR_PATH, esecret);
		explicit_bzero(esecret, strlen(esecret));
		free(esecret);
	}
	*out = s;
	return TH_OK;
fail:
	smsch_stop(s);
	return TH_EIO;
}

unsigned smsch_port(sms_channel *s)
{
	return s ? chf_listener_port(s->listener) : 0;
}

void smsch_stop(sms_channel *s)
{
	if (!s)
		return;
	chf_listener_stop(s->listener); /* first: its requests use the flow */
	chf_stop(s->flow);
	if (s->dlr_url)
		explicit_bzero(s->dlr_url, strlen(s->dlr_url));
	free(s->dlr_url);
	free(s);
}
