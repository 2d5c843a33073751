/*
 * doctor.c - `threshold doctor`: one pass over everything an admin would
 * otherwise check by hand, each finding a plain sentence with a fix.
 *
 * A finding is "ok", "note" (worth knowing, nothing to do), "skipped" (could
 * not be checked because an earlier check failed, or not configured) or
 * "attention" (something to fix; the exit status is 1).  Each has a stable
 * name (the JSON "check") so that scripts and tests can tell them apart.
 *
 * Checks of an outside service (TURN servers, an SMS gateway) run only when
 * the setting that names it is on; each is a row of checks[] below.
 */
#include "doctor.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <yaml.h>

#include "config.h"
#include "cs.h"
#include "hs_admin.h"
#include "jsonx.h"
#include "store.h"
#include "stun.h"
#include "util.h"
#include "wa_channel.h"

#define DR_MAX_BODY      (256 * 1024)
#define DR_MAX_HEADERS   (32 * 1024)
#define MAP_FULL_PERCENT 90 /* the map is "nearly full" from here on */
#define DISK_MIN_PERCENT 5  /* a disk with less free is "nearly full" */

#define TURN_WAIT_MS 2000 /* how long a TURN server has to answer */

enum dr_status { DR_OK, DR_NOTE, DR_SKIPPED, DR_ATTENTION };
static const char *const status_names[] = {"ok", "note", "skipped", "attention"};

struct doctor {
	struct config *cfg;
	json_t *findings;           /* array of {check, status, message, fix?} */
	int attention;              /* any finding needing attention */
	int registration;           /* the registration loaded: tokens known */
	int hs_up;                  /* the homeserver answered /versions */
	int token_ok;               /* the homeserver accepts the as_token */
	json_t *versions;           /* its /versions answer (new reference) or NULL */
	cs_client *cs;              /* as the appservice, once the registration loaded */
	store *st;                  /* opened read-only use, or NULL */
	const char *synapse_config; /* --synapse-config PATH, or NULL */
};

static void add(struct doctor *d, const char *check, enum dr_status st, const char *fix, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));

/* Record one finding.  @fix: what to do about it (for attention), or NULL. */
static void add(struct doctor *d, const char *check, enum dr_status st, const char *fix, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char msg[1024];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_t *f = json_pack("{s:s, s:s, s:s}", "check", check, "status", status_names[st], "message", msg);
	if (fix)
		json_object_set_new(f, "fix", json_string(fix));
	json_array_append_new(d->findings, f);
	if (st == DR_ATTENTION)
		d->attention = 1;
}

/* ---- plain HTTP, for what must be asked without the as_token ---------- */

struct dr_http {
	long status;
	char *body; /* NUL-terminated, new; NULL if none */
	size_t len;
	char *headers; /* the last response's header block, NUL-terminated, new */
	size_t hlen;
	char err[CURL_ERROR_SIZE];
};

struct buf {
	char **p;
	size_t *len;
	size_t cap;
};

static size_t buf_write(char *ptr, size_t size, size_t n, void *ctx)
{
	struct buf *b = ctx;
	size_t add_len = size * n;
	if (*b->len + add_len > b->cap)
		return 0; /* too large: curl stops with a write error */
	*b->p = xrealloc(*b->p, *b->len + add_len + 1);
	memcpy(*b->p + *b->len, ptr, add_len);
	*b->len += add_len;
	(*b->p)[*b->len] = '\0';
	return add_len;
}

static size_t header_write(char *ptr, size_t size, size_t n, void *ctx)
{
	struct buf *b = ctx;
	/* A new status line (after a redirect or a 100): keep only the last block. */
	if (size * n >= 5 && !strncmp(ptr, "HTTP/", 5))
		*b->len = 0;
	return buf_write(ptr, size, n, ctx);
}

/**
 * One request with no credentials but @p bearer (NULL: none).
 * @return TH_OK when an answer arrived (filled @p out; free with http_clear),
 *         else TH_ENET with curl's words in out->err.
 */
static int http_do(const struct config *cfg, const char *method, const char *url, const char *bearer,
                   const char *body, struct dr_http *out)
{
	memset(out, 0, sizeof(*out));
	CURL *c = curl_easy_init();
	if (!c) {
		snprintf(out->err, sizeof(out->err), "curl cannot start");
		return TH_ENET;
	}
	struct curl_slist *h = NULL;
	char *auth = NULL;
	if (bearer) {
		auth = xasprintf("Authorization: Bearer %s", bearer);
		h = curl_slist_append(h, auth);
	}
	if (body)
		h = curl_slist_append(h, "Content-Type: application/json");
	struct buf bb = {&out->body, &out->len, DR_MAX_BODY};
	struct buf hb = {&out->headers, &out->hlen, DR_MAX_HEADERS};
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (body)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, buf_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &bb);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_write);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &hb);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, out->err);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)cfg->client_timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->client_connect_timeout_ms);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	CURLcode rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
	else if (!out->err[0])
		snprintf(out->err, sizeof(out->err), "%s", curl_easy_strerror(rc));
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	free(auth);
	if (rc != CURLE_OK) {
		free(out->body);
		free(out->headers);
		out->body = out->headers = NULL;
		return TH_ENET;
	}
	return TH_OK;
}

static void http_clear(struct dr_http *r)
{
	free(r->body);
	free(r->headers);
	r->body = r->headers = NULL;
}

/* The value of header @name in @r (a copy, trimmed; caller frees), or NULL. */
static char *http_header(const struct dr_http *r, const char *name)
{
	size_t nl = strlen(name);
	for (const char *p = r->headers; p && *p;) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		if (len > nl && p[nl] == ':' && !strncasecmp(p, name, nl)) {
			const char *v = p + nl + 1;
			const char *end = p + len;
			while (v < end && (*v == ' ' || *v == '\t'))
				v++;
			while (end > v && (end[-1] == '\r' || end[-1] == ' '))
				end--;
			return xstrndup(v, (size_t)(end - v));
		}
		p = eol ? eol + 1 : p + len;
	}
	return NULL;
}

static const char *json_errcode(const json_t *body)
{
	const char *e = jsonx_str(body, "errcode");
	return e ? e : "";
}

/* ---- the checks ------------------------------------------------------- */

static void check_registration(struct doctor *d)
{
	char err[512];
	if (access(d->cfg->registration, F_OK) != 0) {
		add(d, "registration", DR_ATTENTION,
		    "Run `threshold generate-registration`, add the file to the homeserver's "
		    "app_service_config_files and restart the homeserver.",
		    "The registration file %s does not exist.", d->cfg->registration);
		return;
	}
	if (config_load_registration(d->cfg, err, sizeof(err)) != TH_OK) {
		add(d, "registration", DR_ATTENTION,
		    "Make the registration match the config (or write a new one with `threshold "
		    "generate-registration --force`, copy it to the homeserver and restart it).",
		    "The config and the registration disagree: %s", err);
		return;
	}
	d->registration = 1;
	add(d, "registration", DR_OK, NULL, "The config %s and the registration %s agree.", d->cfg->path,
	    d->cfg->registration);
}

static void check_homeserver(struct doctor *d)
{
	const struct config *cfg = d->cfg;
	char *url = xasprintf("%s/_matrix/client/versions", cfg->hs_url);
	struct dr_http r;
	int rc = http_do(cfg, "GET", url, NULL, NULL, &r);
	free(url);
	if (rc) {
		add(d, "homeserver", DR_ATTENTION,
		    "Start the homeserver, or correct homeserver.url in the config.",
		    "Cannot reach the homeserver at %s: %s.", cfg->hs_url, r.err);
		return;
	}
	json_t *v = r.status == 200 ? json_loadb(r.body ? r.body : "", r.len, 0, NULL) : NULL;
	if (!json_is_array(json_object_get(v, "versions"))) {
		add(d, "homeserver", DR_ATTENTION,
		    "Check that homeserver.url names the homeserver's client API.",
		    "%s answered /_matrix/client/versions with HTTP %ld, not a homeserver's answer.",
		    cfg->hs_url, r.status);
		json_decref(v);
		http_clear(&r);
		return;
	}
	d->hs_up = 1;
	d->versions = v;
	char *server = http_header(&r, "Server");
	http_clear(&r);
	/* Synapse says its version here (unauthenticated); a proxy may hide it. */
	char *vurl = xasprintf("%s/_synapse/admin/v1/server_version", cfg->hs_url);
	char *version = NULL;
	if (http_do(cfg, "GET", vurl, NULL, NULL, &r) == TH_OK) {
		json_t *b = r.status == 200 ? json_loadb(r.body ? r.body : "", r.len, 0, NULL) : NULL;
		if (jsonx_str(b, "server_version"))
			version = xasprintf("Synapse %s", jsonx_str(b, "server_version"));
		json_decref(b);
		http_clear(&r);
	}
	free(vurl);
	add(d, "homeserver", DR_OK, NULL, "The homeserver at %s answers (%s).", cfg->hs_url,
	    version  ? version
	    : server ? server
	             : "its software does not say its version");
	free(version);
	free(server);
}

static void check_invite_blocking(struct doctor *d)
{
	if (!d->hs_up) {
		add(d, "invite_blocking", DR_SKIPPED, NULL, "Not checked: the homeserver did not answer.");
		return;
	}
	const char *why = NULL;
	int enforced = cs_versions_invite_blocking(d->versions, &why);
	if (!enforced) {
		add(d, "invite_blocking", DR_ATTENTION,
		    "Upgrade Synapse to 1.149 or later (docs/homeserver-hardening.md).",
		    "The homeserver does not refuse invites to guests itself (it needs spec v1.18, "
		    "Synapse 1.149 or later): strangers' invites reach guests for a moment before "
		    "Threshold rejects them.");
		return;
	}
	add(d, "invite_blocking", DR_OK, NULL, "The homeserver refuses strangers' invites to guests (%s).",
	    why);
	/* What the daemon found at its last start (daemon.c keeps it). */
	store_txn *t;
	json_t *fact = NULL;
	if (d->st && store_txn_begin(d->st, 0, &t) == TH_OK) {
		store_get_json(t, STORE_META, CS_META_INVITE_BLOCKING, &fact);
		store_txn_abort(t);
	}
	if (fact && !json_is_true(json_object_get(fact, "enforced")))
		add(d, "invite_blocking_seen", DR_NOTE, NULL,
		    "When Threshold last started, the homeserver did not yet refuse invites to guests; "
		    "it does now, and Threshold will say so at its next start.");
	json_decref(fact);
}

static void check_token(struct doctor *d)
{
	if (!d->registration || !d->hs_up) {
		add(d, "as_token", DR_SKIPPED, NULL, "Not checked: %s.",
		    !d->registration ? "the registration did not load" : "the homeserver did not answer");
		return;
	}
	struct cs_response r;
	int rc = cs_request(d->cs, "GET", "/_matrix/client/v3/account/whoami", NULL, NULL, &r);
	if (rc) {
		add(d, "as_token", DR_ATTENTION, "Check the homeserver's health and its log.",
		    "The homeserver did not answer a request made with Threshold's token: %s.",
		    th_strerror(rc));
		return;
	}
	const char *who = jsonx_str(r.body, "user_id");
	if (r.status == 200 && who && !strcmp(who, d->cfg->bot_user_id)) {
		d->token_ok = 1;
		add(d, "as_token", DR_OK, NULL, "The homeserver accepts Threshold's token as %s.", who);
	} else if (r.status == 401 || r.status == 403) {
		add(d, "as_token", DR_ATTENTION,
		    "Copy the registration file to the homeserver's app_service_config_files and restart "
		    "the homeserver (it reads the file only at start).",
		    "The homeserver does not accept the as_token in %s (HTTP %ld %s): it has loaded "
		    "another registration, or none.",
		    d->cfg->registration, r.status, json_errcode(r.body));
	} else {
		add(d, "as_token", DR_ATTENTION,
		    "Make appservice.bot_localpart the registration's sender_localpart, and restart the "
		    "homeserver after changing the registration.",
		    "The homeserver answered whoami with HTTP %ld as %s, not as the bot %s.", r.status,
		    who ? who : "nobody", d->cfg->bot_user_id);
	}
	cs_response_clear(&r);
}

static void check_ping(struct doctor *d)
{
	const struct config *cfg = d->cfg;
	if (!d->token_ok) {
		add(d, "ping", DR_SKIPPED, NULL,
		    "Not checked: the homeserver does not accept Threshold's token.");
		return;
	}
	char txn[33];
	if (th_random_hex(txn, 16) != TH_OK) {
		add(d, "ping", DR_SKIPPED, NULL, "Not checked: no randomness for the ping's id.");
		return;
	}
	char *id = cs_escape(cfg->as_id);
	char *path = xasprintf("/_matrix/client/v1/appservice/%s/ping", id);
	json_t *body = json_pack("{s:s}", "transaction_id", txn);
	struct cs_response r;
	int rc = cs_request(d->cs, "POST", path, NULL, body, &r);
	json_decref(body);
	free(path);
	free(id);
	if (rc) {
		add(d, "ping", DR_ATTENTION, "Check the homeserver's health and its log.",
		    "The homeserver did not answer the ping: %s.", th_strerror(rc));
		return;
	}
	const char *e = json_errcode(r.body);
	json_t *ms = json_object_get(r.body, "duration_ms");
	if (r.status == 200) {
		add(d, "ping", DR_OK, NULL, "The homeserver reached Threshold at %s and back (%lld ms).",
		    cfg->as_url, (long long)json_integer_value(ms));
	} else if (!strcmp(e, "M_CONNECTION_FAILED") || !strcmp(e, "M_CONNECTION_TIMEOUT")) {
		add(d, "ping", DR_ATTENTION,
		    "Start Threshold (systemctl start threshold), or make appservice.url an address the "
		    "homeserver can reach and appservice.listen_address/listen_port where Threshold "
		    "listens.",
		    "The homeserver cannot reach Threshold at %s (%s): Threshold is not running, or "
		    "listens elsewhere.",
		    cfg->as_url, e);
	} else if (!strcmp(e, "M_BAD_STATUS")) {
		add(d, "ping", DR_ATTENTION,
		    "Copy the registration file to the homeserver and restart it, then restart Threshold.",
		    "Threshold refused the homeserver's ping (HTTP %lld): the hs_token the homeserver "
		    "holds is not the one in %s.",
		    (long long)json_integer_value(json_object_get(r.body, "status")), cfg->registration);
	} else {
		add(d, "ping", DR_ATTENTION,
		    "Check that appservice.id matches the registration the homeserver loaded, and that "
		    "the registration has a url.",
		    "The homeserver refused to ping Threshold: HTTP %ld %s.", r.status, e);
	}
	cs_response_clear(&r);
}

static void check_bot_admin(struct doctor *d)
{
	if (!d->token_ok) {
		add(d, "bot_admin", DR_SKIPPED, NULL,
		    "Not checked: the homeserver does not accept Threshold's token.");
		return;
	}
	char *bot = cs_escape(d->cfg->bot_user_id);
	char *path = xasprintf("/_synapse/admin/v1/users/%s/admin", bot);
	struct cs_response r;
	int rc = cs_request(d->cs, "GET", path, NULL, NULL, &r);
	free(path);
	free(bot);
	if (rc) {
		add(d, "bot_admin", DR_NOTE, NULL, "Could not ask whether the bot is a server admin: %s.",
		    th_strerror(rc));
		return;
	}
	/* Synapse's admin API answers a caller who is not an admin with 403
	 * M_FORBIDDEN; an admin caller learns the (bot's own) flag. */
	if (r.status == 403 && !strcmp(json_errcode(r.body), "M_FORBIDDEN")) {
		add(d, "bot_admin", DR_OK, NULL, "The bot %s is not a server admin.", d->cfg->bot_user_id);
	} else if (r.status == 200) {
		add(d, "bot_admin", DR_ATTENTION,
		    "Take the admin flag away, as a server admin: PUT "
		    "/_synapse/admin/v1/users/<bot>/admin with {\"admin\": false} "
		    "(docs/homeserver-hardening.md).",
		    "The bot %s is a server admin: Threshold's token can do anything on the homeserver, "
		    "and bypasses its block of invites to guests.",
		    d->cfg->bot_user_id);
	} else {
		add(d, "bot_admin", DR_NOTE, NULL,
		    "Could not tell whether the bot is a server admin (the admin API answered HTTP %ld).",
		    r.status);
	}
	cs_response_clear(&r);
}

/* homeserver.admin_token_file: what erasure can do on the homeserver. */
static void check_erasure_admin(struct doctor *d)
{
	const struct config *cfg = d->cfg;
	if (!cfg->hs_admin_token_file) {
		add(d, "erasure_admin", DR_NOTE,
		    "Make a homeserver admin user for this job (not the bot), put its access token in a "
		    "file of mode 0600 and name it in homeserver.admin_token_file (docs/privacy.md).",
		    "homeserver.admin_token_file is not set: when a guest has their data deleted, "
		    "Threshold redacts their messages and erases their account, but cannot delete their "
		    "files from the homeserver's media store nor purge their conversation room; the "
		    "redacted words stay in the homeserver's database until its "
		    "redaction_retention_period.");
		return;
	}
	char why[160];
	if (hs_admin_token_file_check(cfg->hs_admin_token_file, why, sizeof(why)) != TH_OK) {
		char fix[512];
		snprintf(fix, sizeof(fix), "Put a homeserver admin's token in %s, mode 0600.",
		         cfg->hs_admin_token_file);
		add(d, "erasure_admin", DR_ATTENTION, fix,
		    "homeserver.admin_token_file: %s %s: erasures cannot delete media or rooms.",
		    cfg->hs_admin_token_file, why);
		return;
	}
	hs_admin *h = NULL;
	int rc = hs_admin_open(cfg, &h);
	char *who = NULL;
	int is_admin = 0;
	long status = 0;
	if (!rc)
		rc = hs_admin_whoami(h, &who, &is_admin, &status);
	hs_admin_close(h);
	if (rc) {
		add(d, "erasure_admin", DR_ATTENTION,
		    "Put a valid access token of a homeserver admin in homeserver.admin_token_file.",
		    "The token in homeserver.admin_token_file does not work (%s%s).", th_strerror(rc),
		    status ? ", HTTP status above" : "");
	} else if (!strcmp(who, cfg->bot_user_id)) {
		add(d, "erasure_admin", DR_ATTENTION,
		    "Use another user's token: the bot must never be a server admin "
		    "(docs/homeserver-hardening.md).",
		    "homeserver.admin_token_file holds the bot's own token.");
	} else if (!is_admin) {
		add(d, "erasure_admin", DR_ATTENTION,
		    "Make that user a server admin, or use an admin's token.",
		    "homeserver.admin_token_file holds the token of %s, who is not a server admin: "
		    "erasures cannot delete media or rooms.",
		    who);
	} else {
		add(d, "erasure_admin", DR_OK, NULL,
		    "Erasure can delete a guest's media and conversation room (admin token of %s).", who);
	}
	free(who);
}

/* One room the bot must be joined to. */
static void need_room(struct doctor *d, const json_t *joined, const char *room, const char *what)
{
	size_t i;
	json_t *v;
	json_array_foreach(joined, i, v)
	{
		if (json_is_string(v) && !strcmp(json_string_value(v), room)) {
			add(d, "bot_rooms", DR_OK, NULL, "The bot is in %s (%s).", what, room);
			return;
		}
	}
	char fix[512];
	snprintf(fix, sizeof(fix), "Invite %s to %s from a member's account: it joins by itself.",
	         d->cfg->bot_user_id, room);
	add(d, "bot_rooms", DR_ATTENTION, fix, "The bot is not in %s (%s), so it cannot read or write there.",
	    what, room);
}

static void check_bot_rooms(struct doctor *d)
{
	const struct config *cfg = d->cfg;
	int any = cfg->safeguarding_room || cfg->staff_rooms.n || cfg->nservices;
	if (!any)
		return;
	if (!d->token_ok) {
		add(d, "bot_rooms", DR_SKIPPED, NULL,
		    "Not checked: the homeserver does not accept Threshold's token.");
		return;
	}
	struct cs_response r;
	int rc = cs_request(d->cs, "GET", "/_matrix/client/v3/joined_rooms", NULL, NULL, &r);
	if (rc || r.status != 200) {
		add(d, "bot_rooms", DR_NOTE, NULL, "Could not list the bot's rooms: %s.",
		    rc ? th_strerror(rc) : "the homeserver refused");
		if (!rc)
			cs_response_clear(&r);
		return;
	}
	json_t *joined = json_object_get(r.body, "joined_rooms");
	if (cfg->safeguarding_room)
		need_room(d, joined, cfg->safeguarding_room, "the safeguarding room");
	for (size_t i = 0; i < cfg->staff_rooms.n; i++)
		need_room(d, joined, cfg->staff_rooms.v[i], "a staff room of roles.staff_rooms");
	for (size_t i = 0; i < cfg->nservices; i++) {
		char what[320];
		snprintf(what, sizeof(what), "the staff room of the service %s", cfg->services[i].name);
		need_room(d, joined, cfg->services[i].staff_room, what);
	}
	cs_response_clear(&r);
}

/*
 * The settings of docs/homeserver-hardening.md that can be seen from
 * outside, asked so that a wrong setting shows and nothing changes.
 */
static void check_hardening_outside(struct doctor *d)
{
	const struct config *cfg = d->cfg;
	if (!d->token_ok) {
		add(d, "hardening", DR_SKIPPED, NULL,
		    "Not checked: the homeserver does not accept Threshold's token.");
		return;
	}
	struct dr_http h;
	char *bot = cs_escape(cfg->bot_user_id);
	/* require_auth_for_profile_requests: a profile without a token */
	char *url = xasprintf("%s/_matrix/client/v3/profile/%s", cfg->hs_url, bot);
	if (http_do(cfg, "GET", url, NULL, NULL, &h) == TH_OK) {
		if (h.status == 401)
			add(d, "profile_requires_auth", DR_OK, NULL,
			    "Profiles are not shown to people without an account.");
		else
			add(d, "profile_requires_auth", DR_ATTENTION,
			    "Set require_auth_for_profile_requests: true in homeserver.yaml and restart it.",
			    "Anyone without an account can look up a guest's pseudonym (a profile answered "
			    "HTTP %ld without a token).",
			    h.status);
		http_clear(&h);
	}
	free(url);
	free(bot);

	/* limit_profile_requests_to_users_who_share_rooms: the bot asks for a
	 * namespaced id nobody has, in no room with it.  Refused (403) when
	 * the limit holds; "not found" (404) tells that it does not. */
	char *probe = xasprintf("@%sdoctor-probe:%s", cfg->guest_prefix, cfg->server_name);
	char *eprobe = cs_escape(probe);
	char *path = xasprintf("/_matrix/client/v3/profile/%s", eprobe);
	struct cs_response r;
	if (cs_request(d->cs, "GET", path, NULL, NULL, &r) == TH_OK) {
		if (r.status == 403)
			add(d, "profile_shared_rooms", DR_OK, NULL,
			    "Profiles answer only people who share a room with their owner.");
		else
			add(d, "profile_shared_rooms", DR_ATTENTION,
			    "Set limit_profile_requests_to_users_who_share_rooms: true in homeserver.yaml "
			    "and "
			    "restart it.",
			    "A local stranger can probe guest ids for pseudonyms (a profile outside the "
			    "caller's rooms answered HTTP %ld, not 403).",
			    r.status);
		cs_response_clear(&r);
	}
	free(path);
	free(eprobe);
	free(probe);

	/* allow_guest_access: Matrix guest accounts (not Threshold's guests) */
	url = xasprintf("%s/_matrix/client/v3/register?kind=guest", cfg->hs_url);
	if (http_do(cfg, "POST", url, NULL, "{}", &h) == TH_OK) {
		if (h.status == 403)
			add(d, "guest_access", DR_OK, NULL, "Matrix guest accounts are off.");
		else
			add(d, "guest_access", DR_ATTENTION,
			    "Set allow_guest_access: false in homeserver.yaml and restart it.",
			    "Matrix guest accounts are on (registering one answered HTTP %ld): anyone can "
			    "get "
			    "a token without an account.",
			    h.status);
		http_clear(&h);
	}
	free(url);
	if (!d->synapse_config)
		add(d, "hardening_unseen", DR_NOTE, NULL,
		    "Not visible from outside: user_directory.search_all_users, "
		    "include_profile_data_on_invite, presence, retention and media_retention; compare "
		    "homeserver.yaml with docs/homeserver-hardening.md, or run doctor with "
		    "--synapse-config PATH.");
}

/* ---- homeserver.yaml, when given -------------------------------------- */

/* The node at dotted @path ("presence.enabled") under mapping @n, or NULL. */
static yaml_node_t *yaml_find(yaml_document_t *doc, yaml_node_t *n, const char *path)
{
	while (n && *path) {
		const char *dot = strchr(path, '.');
		size_t len = dot ? (size_t)(dot - path) : strlen(path);
		if (n->type != YAML_MAPPING_NODE)
			return NULL;
		yaml_node_t *next = NULL;
		for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
			yaml_node_t *k = yaml_document_get_node(doc, p->key);
			if (k && k->type == YAML_SCALAR_NODE && k->data.scalar.length == len &&
			    !memcmp(k->data.scalar.value, path, len)) {
				next = yaml_document_get_node(doc, p->value);
				break;
			}
		}
		n = next;
		path = dot ? dot + 1 : path + len;
	}
	return n;
}

/* 1 true, 0 false, -1 absent or not a boolean (YAML 1.1 words). */
static int yaml_bool(yaml_node_t *n)
{
	if (!n || n->type != YAML_SCALAR_NODE)
		return -1;
	const char *s = (const char *)n->data.scalar.value;
	static const char *const yes[] = {"true", "yes", "on", "y"}, *const no[] = {"false", "no", "off",
	                                                                            "n"};
	for (size_t i = 0; i < 4; i++) {
		if (!strcasecmp(s, yes[i]))
			return 1;
		if (!strcasecmp(s, no[i]))
			return 0;
	}
	return -1;
}

/* What docs/homeserver-hardening.md asks of homeserver.yaml. */
static const struct {
	const char *key;
	int want;        /* the safe value */
	int synapse_def; /* Synapse's default when the key is absent */
	const char *why;
} synapse_settings[] = {
        {"user_directory.search_all_users", 0, 0, "the user directory would list people who share no room"},
        {"require_auth_for_profile_requests", 1, 0, "anyone without an account could read pseudonyms"},
        {"limit_profile_requests_to_users_who_share_rooms", 1, 0,
         "a local stranger could probe guest ids for pseudonyms"},
        {"include_profile_data_on_invite", 0, 1, "an invite would carry the invitee's name"},
        {"allow_guest_access", 0, 0, "anyone could get a token without an account"},
        {"presence.enabled", 0, 1, "online status would show when a guest is active"},
};

static void check_synapse_config(struct doctor *d)
{
	if (!d->synapse_config)
		return;
	FILE *f = fopen(d->synapse_config, "rb");
	if (!f) {
		add(d, "synapse_config", DR_ATTENTION,
		    "Name Synapse's homeserver.yaml, readable by this user.", "Cannot read %s.",
		    d->synapse_config);
		return;
	}
	yaml_parser_t p;
	yaml_document_t doc;
	yaml_parser_initialize(&p);
	yaml_parser_set_input_file(&p, f);
	if (!yaml_parser_load(&p, &doc)) {
		add(d, "synapse_config", DR_ATTENTION, "Fix the YAML of homeserver.yaml.",
		    "%s is not valid YAML (line %zu).", d->synapse_config, p.problem_mark.line + 1);
		yaml_parser_delete(&p);
		fclose(f);
		return;
	}
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	for (size_t i = 0; i < sizeof(synapse_settings) / sizeof(synapse_settings[0]); i++) {
		int v = yaml_bool(yaml_find(&doc, root, synapse_settings[i].key));
		if (v < 0)
			v = synapse_settings[i].synapse_def;
		if (v == synapse_settings[i].want) {
			add(d, "synapse_setting", DR_OK, NULL, "homeserver.yaml: %s is %s.",
			    synapse_settings[i].key, v ? "true" : "false");
		} else {
			char fix[256];
			snprintf(fix, sizeof(fix), "Set %s: %s in homeserver.yaml and restart Synapse.",
			         synapse_settings[i].key, synapse_settings[i].want ? "true" : "false");
			add(d, "synapse_setting", DR_ATTENTION, fix, "homeserver.yaml: %s is %s: %s.",
			    synapse_settings[i].key, v ? "true" : "false", synapse_settings[i].why);
		}
	}
	yaml_node_t *rrp = yaml_find(&doc, root, "redaction_retention_period");
	const char *rrv = rrp && rrp->type == YAML_SCALAR_NODE ? (const char *)rrp->data.scalar.value : NULL;
	if (!rrv || !strcmp(rrv, "7d"))
		add(d, "synapse_setting", DR_ATTENTION,
		    "Set redaction_retention_period: 1h (or shorter) in homeserver.yaml "
		    "(docs/homeserver-hardening.md).",
		    "homeserver.yaml: redaction_retention_period is %s: the words of a redacted message, "
		    "including those of a guest who had their data deleted, stay in the homeserver's "
		    "database for 7 days.",
		    rrv ? rrv : "not set (7 days)");
	else
		add(d, "synapse_setting", DR_OK, NULL, "homeserver.yaml: redaction_retention_period is %s.",
		    rrv);
	if (yaml_bool(yaml_find(&doc, root, "retention.enabled")) != 1)
		add(d, "synapse_setting", DR_NOTE, NULL,
		    "homeserver.yaml: message retention is off: conversations stay on the homeserver "
		    "until deleted by hand; set retention to what the services' notices promise "
		    "(docs/homeserver-hardening.md).");
	yaml_document_delete(&doc);
	yaml_parser_delete(&p);
	fclose(f);
}

/* ---- the gateway ------------------------------------------------------- */

static int host_is_loopback(const char *url)
{
	const char *h = strstr(url, "://");
	h = h ? h + 3 : url;
	return !strncmp(h, "127.", 4) || !strncmp(h, "localhost", 9) || !strncmp(h, "[::1]", 5);
}

static void check_gateway(struct doctor *d)
{
	const struct config *cfg = d->cfg;
	if (!cfg->nservices || !cfg->gw_public_url)
		return;
	int https = !strncasecmp(cfg->gw_public_url, "https://", 8);
	char *url = xasprintf("%s/_threshold/gateway/v1/page", cfg->gw_public_url);
	struct dr_http h;
	int rc = http_do(cfg, "GET", url, NULL, NULL, &h);
	free(url);
	if (rc || h.status != 200) {
		char msg[CURL_ERROR_SIZE + 32];
		if (rc)
			snprintf(msg, sizeof(msg), "%s", h.err);
		else
			snprintf(msg, sizeof(msg), "HTTP %ld", h.status);
		add(d, "gateway", DR_ATTENTION,
		    "Start Threshold, and make the proxy in front of it pass gateway.public_url to "
		    "gateway.listen_address:listen_port (docs/deployment.md).",
		    "Guests cannot reach the gateway at %s (%s).", cfg->gw_public_url, msg);
		if (!rc)
			http_clear(&h);
		return;
	}
	if (!https) {
		if (host_is_loopback(cfg->gw_public_url))
			add(d, "gateway", DR_NOTE, NULL,
			    "The gateway answers at %s, plain HTTP on this machine only: fine for a trial; "
			    "guests elsewhere need HTTPS (docs/deployment.md).",
			    cfg->gw_public_url);
		else
			add(d, "gateway", DR_ATTENTION,
			    "Put a TLS proxy in front of the gateway and make gateway.public_url https:// "
			    "(docs/deployment.md).",
			    "gateway.public_url %s is plain HTTP: guests' messages would cross the network "
			    "unencrypted.",
			    cfg->gw_public_url);
		http_clear(&h);
		return;
	}
	/* Over HTTPS: the headers the guest page relies on, the last from the proxy. */
	static const struct {
		const char *name, *want; /* want: exact value, or NULL: present */
	} headers[] = {{"Content-Security-Policy", NULL},
	               {"Referrer-Policy", "no-referrer"},
	               {"X-Content-Type-Options", "nosniff"},
	               {"Strict-Transport-Security", NULL}};
	int all = 1;
	for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
		char *v = http_header(&h, headers[i].name);
		if (!v || (headers[i].want && strcasecmp(v, headers[i].want))) {
			all = 0;
			char fix[256];
			snprintf(fix, sizeof(fix), "Make the proxy pass %s through%s (docs/deployment.md).",
			         headers[i].name,
			         strcmp(headers[i].name, "Strict-Transport-Security") ? "" : ", or add it");
			add(d, "gateway_headers", DR_ATTENTION, fix,
			    "The guest page at %s arrives without %s%s%s.", cfg->gw_public_url,
			    headers[i].name, headers[i].want ? ": " : "",
			    headers[i].want ? headers[i].want : "");
		}
		free(v);
	}
	if (all)
		add(d, "gateway", DR_OK, NULL,
		    "The gateway answers over HTTPS at %s with the expected headers.", cfg->gw_public_url);
	http_clear(&h);
}

/* ---- files, the store, the disk ---------------------------------------- */

static void check_mode(struct doctor *d, const char *path, const char *what, int dir)
{
	struct stat sb;
	if (stat(path, &sb) != 0)
		return; /* a missing file is another check's finding */
	if (sb.st_mode & 077) {
		char fix[512];
		snprintf(fix, sizeof(fix), "chmod %s %s", dir ? "700" : "600", path);
		add(d, "file_modes", DR_ATTENTION, fix, "%s %s is open to other users (mode %03o).", what,
		    path, (unsigned)(sb.st_mode & 0777));
	} else {
		add(d, "file_modes", DR_OK, NULL, "%s %s is private (mode %03o).", what, path,
		    (unsigned)(sb.st_mode & 0777));
	}
}

static void check_files(struct doctor *d)
{
	const struct config *cfg = d->cfg;
	check_mode(d, cfg->registration, "The registration (it holds the tokens)", 0);
	char *key = cfg->audit_key_path ? xstrdup(cfg->audit_key_path)
	                                : xasprintf("%s/audit-signing.key", cfg->store_path);
	check_mode(d, key, "The audit signing key", 0);
	free(key);
	check_mode(d, cfg->store_path, "The store", 1);
	char *mdb = xasprintf("%s/data.mdb", cfg->store_path);
	check_mode(d, mdb, "The store's data file", 0);
	free(mdb);
}

static void check_store(struct doctor *d)
{
	const struct config *cfg = d->cfg;
	char *mdb = xasprintf("%s/data.mdb", cfg->store_path);
	int exists = access(mdb, F_OK) == 0;
	free(mdb);
	if (!exists) {
		add(d, "store", DR_ATTENTION, "Start Threshold once (threshold serve); it creates the store.",
		    "There is no store at %s yet: Threshold has not run with this config.", cfg->store_path);
		return;
	}
	if (store_open(cfg->store_path, cfg->map_size_mb, &d->st) != TH_OK) {
		d->st = NULL;
		add(d, "store", DR_ATTENTION, "See the message above; docs/reliability.md says what to do.",
		    "The store at %s cannot be opened.", cfg->store_path);
		return;
	}
	size_t used = 0, map = 0;
	if (store_usage(d->st, &used, &map) != TH_OK || !map)
		return;
	unsigned pct = (unsigned)((used * 100.0) / map);
	if (pct >= MAP_FULL_PERCENT)
		add(d, "store_map", DR_ATTENTION,
		    "Raise store.map_size_mb in the config and restart Threshold (docs/reliability.md).",
		    "The store's map is nearly full: %.1f of %.0f MiB (%u%%); when it is full Threshold "
		    "refuses the homeserver's transactions.",
		    used / 1048576.0, map / 1048576.0, pct);
	else
		add(d, "store_map", DR_OK, NULL, "The store's map has room: %.1f of %.0f MiB used (%u%%).",
		    used / 1048576.0, map / 1048576.0, pct);

	struct statvfs vs;
	if (statvfs(cfg->store_path, &vs) != 0 || !vs.f_blocks)
		return;
	double avail = (double)vs.f_bavail * vs.f_frsize, total = (double)vs.f_blocks * vs.f_frsize;
	double grow = map > used ? (double)(map - used) : 0;
	if (avail * 100.0 < total * DISK_MIN_PERCENT || avail < grow)
		add(d, "disk", DR_ATTENTION,
		    "Free space on that disk, or move the store to a larger one (docs/reliability.md).",
		    "The disk holding the store has %.0f MiB free (%.0f%%), %s.", avail / 1048576.0,
		    avail * 100.0 / total,
		    avail < grow ? "less than the store may still grow into its map"
		                 : "less than 5% of its size");
	else
		add(d, "disk", DR_OK, NULL, "The disk holding the store has %.0f MiB free (%.0f%%).",
		    avail / 1048576.0, avail * 100.0 / total);
}

/* ---- outside channels ---------------------------------------------------- */

/* The SMS gateway answers (sms.enabled): Kannel's sendsms interface, or
 * Twilio's API.  Any HTTP answer is one (an unauthenticated GET is refused
 * by both); no answer means staff's replies would wait in the queue. */
static void check_sms(struct doctor *d)
{
	const struct config *cfg = d->cfg;
	if (!cfg->sms_enabled)
		return;
	int twilio = cfg->sms_driver && strcmp(cfg->sms_driver, "twilio") == 0;
	const char *url = twilio ? cfg->sms_twilio_api_url : cfg->sms_kannel_sendsms_url;
	const char *what = twilio ? "Twilio's API" : "Kannel's sendsms interface";
	if (!url)
		return; /* config.c refuses an enabled channel without it */
	struct dr_http h;
	int rc = http_do(cfg, "GET", url, NULL, NULL, &h);
	if (rc) {
		add(d, "sms", DR_ATTENTION,
		    twilio ? "Check the machine's route to the API and sms.twilio_api_url."
		           : "Start Kannel's bearerbox and smsbox, and check sms.kannel_sendsms_url "
		             "(docs/channels.md).",
		    "%s does not answer at %s (%s): texts to people would wait in the queue.", what, url,
		    h.err);
		return;
	}
	add(d, "sms", DR_OK, NULL, "%s answers at %s (HTTP %ld).", what, url, h.status);
	http_clear(&h);
}

/* ---- TURN ------------------------------------------------------------- */

/* What one exchange with a TURN server brought back. */
struct turn_probe {
	int binding, allocate;          /* an answer to each arrived */
	struct stun_answer bind, alloc; /* the answers, when they did */
	char err[160];                  /* why nothing could be asked, or "" */
};

/* Take one message in @p buf (@p len bytes) as an answer to either request. */
static void turn_take(struct turn_probe *p, const uint8_t *buf, size_t len, const uint8_t *bind_id,
                      const uint8_t *alloc_id)
{
	struct stun_answer a;
	if (!p->binding && stun_answer_parse(buf, len, bind_id, &a) == TH_OK && a.method == STUN_BINDING) {
		p->bind = a;
		p->binding = 1;
	} else if (!p->allocate && stun_answer_parse(buf, len, alloc_id, &a) == TH_OK &&
	           a.method == STUN_ALLOCATE) {
		p->alloc = a;
		p->allocate = 1;
	}
}

/*
 * Send a Binding and an Allocate (no credentials) to @p u and collect the
 * answers for up to TURN_WAIT_MS.  Over UDP both are sent again after 0.5 s
 * and 1.5 s while unanswered (spec: RFC 8489 section 6.2.1, RTO 500 ms).
 */
static void turn_ask(const struct stun_uri *u, struct turn_probe *p)
{
	memset(p, 0, sizeof(*p));
	uint8_t bind_id[STUN_TXID_LEN], alloc_id[STUN_TXID_LEN];
	uint8_t breq[STUN_REQUEST_MAX], areq[STUN_REQUEST_MAX];
	if (th_random(bind_id, sizeof(bind_id)) != TH_OK || th_random(alloc_id, sizeof(alloc_id)) != TH_OK) {
		snprintf(p->err, sizeof(p->err), "no randomness for a transaction id");
		return;
	}
	size_t blen = stun_request_build(STUN_BINDING, bind_id, breq);
	size_t alen = stun_request_build(STUN_ALLOCATE, alloc_id, areq);
	struct addrinfo hints = {.ai_socktype = u->tcp ? SOCK_STREAM : SOCK_DGRAM}, *ai = NULL;
	char port[8];
	snprintf(port, sizeof(port), "%u", u->port);
	int gai = getaddrinfo(u->host, port, &hints, &ai);
	if (gai) {
		snprintf(p->err, sizeof(p->err), "cannot resolve its host name: %s", gai_strerror(gai));
		return;
	}
	uint64_t start = th_mono_ms(), deadline = start + TURN_WAIT_MS;
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(p->err, sizeof(p->err), "no socket: %s", strerror(errno));
		goto done;
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
		snprintf(p->err, sizeof(p->err), "cannot connect: %s", strerror(errno));
		goto done;
	}
	if (u->tcp) {
		struct pollfd pw = {.fd = fd, .events = POLLOUT};
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if (poll(&pw, 1, TURN_WAIT_MS) <= 0) {
			snprintf(p->err, sizeof(p->err), "no TCP connection within %d seconds",
			         TURN_WAIT_MS / 1000);
			goto done;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr) {
			snprintf(p->err, sizeof(p->err), "cannot connect: %s",
			         strerror(soerr ? soerr : errno));
			goto done;
		}
	}
	uint8_t buf[STUN_MESSAGE_MAX];
	size_t have = 0; /* TCP: bytes of the stream not yet taken */
	uint64_t resend[] = {start, start + 500, start + 1500};
	size_t sent = 0;
	for (;;) {
		uint64_t now = th_mono_ms();
		if ((p->binding && p->allocate) || now >= deadline)
			break;
		if (sent < (u->tcp ? 1u : 3u) && now >= resend[sent]) {
			if ((!p->binding && send(fd, breq, blen, MSG_NOSIGNAL) < 0) ||
			    (!p->allocate && send(fd, areq, alen, MSG_NOSIGNAL) < 0)) {
				snprintf(p->err, sizeof(p->err), "cannot send: %s", strerror(errno));
				break;
			}
			sent++;
		}
		uint64_t until =
		        sent < (u->tcp ? 1u : 3u) && resend[sent] < deadline ? resend[sent] : deadline;
		struct pollfd pr = {.fd = fd, .events = POLLIN};
		if (poll(&pr, 1, (int)(until > now ? until - now : 0)) <= 0)
			continue;
		ssize_t n = recv(fd, buf + have, sizeof(buf) - have, 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0) {
			/* UDP: an ICMP "port unreachable" comes back as ECONNREFUSED */
			snprintf(p->err, sizeof(p->err), "%s",
			         n < 0 ? strerror(errno) : "the connection was closed");
			break;
		}
		if (!u->tcp) {
			turn_take(p, buf, (size_t)n, bind_id, alloc_id);
			continue;
		}
		/* spec: RFC 8489 section 6.2.2: over TCP, messages follow one another, framed by their length
		 */
		have += (size_t)n;
		size_t total;
		int rc;
		while ((rc = stun_message_length(buf, have, &total)) == TH_OK && total <= have) {
			turn_take(p, buf, total, bind_id, alloc_id);
			memmove(buf, buf + total, have - total);
			have -= total;
		}
		if (rc != TH_OK && have >= STUN_HEADER_LEN) {
			snprintf(p->err, sizeof(p->err), "the answer is not STUN");
			break;
		}
	}
done:
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
}

/* The TURN servers answer (calls.enabled): for each of calls.turn_uris, an
 * Allocate without credentials must be refused with 401 and a REALM and a
 * NONCE, which only a TURN server with long-term credentials sends. */
static void check_turn(struct doctor *d)
{
	const struct config *cfg = d->cfg;
	if (!cfg->calls_enabled)
		return;
	static const char fix_down[] =
	        "Start the TURN server (coturn: systemctl start coturn), check calls.turn_uris, and that "
	        "the firewall lets this port in (docs/calls.md).";
	for (size_t i = 0; i < cfg->calls_turn_uris.n; i++) {
		const char *uri = cfg->calls_turn_uris.v[i];
		struct stun_uri u;
		if (stun_uri_parse(uri, &u) != TH_OK)
			continue; /* config.c refuses it */
		if (u.tls) {
			add(d, "turn", DR_SKIPPED, NULL,
			    "%s is TURN over TLS, which doctor does not ask; list its plain turn: URI too to "
			    "have "
			    "it checked.",
			    uri);
			continue;
		}
		const char *over = u.tcp ? "TCP" : "UDP";
		struct turn_probe p;
		turn_ask(&u, &p);
		if (p.allocate && p.alloc.cls == STUN_ERROR && p.alloc.error_code == 401 &&
		    p.alloc.has_realm && p.alloc.has_nonce) {
			add(d, "turn", DR_OK, NULL,
			    "The TURN server at %s answers over %s: it asks for credentials (401 with a "
			    "realm "
			    "and a nonce)%s.",
			    uri, over,
			    p.binding
			            ? " and answers STUN too"
			            : "; it does not answer STUN Binding requests, which calls do not need");
		} else if (p.allocate && p.alloc.cls == STUN_SUCCESS) {
			add(d, "turn", DR_ATTENTION,
			    "Turn on coturn's use-auth-secret with static-auth-secret set to "
			    "calls.turn_shared_secret (docs/calls.md).",
			    "The TURN server at %s gives out relays without credentials: anyone can use it.",
			    uri);
		} else if (p.allocate) {
			add(d, "turn", DR_ATTENTION,
			    "Point calls.turn_uris at a TURN server with long-term credentials (coturn with "
			    "use-auth-secret, docs/calls.md).",
			    "%s answers a TURN Allocate with error %u%s instead of asking for credentials: "
			    "guests' "
			    "calls would not get a relay.",
			    uri, p.alloc.error_code,
			    p.alloc.error_code == 401 ? " but no realm or nonce" : "");
		} else if (p.binding) {
			add(d, "turn", DR_ATTENTION,
			    "Point calls.turn_uris at a TURN server (coturn, docs/calls.md), not a STUN-only "
			    "one.",
			    "%s answers STUN but not TURN's Allocate: it is a STUN server, and calls need a "
			    "TURN "
			    "relay.",
			    uri);
		} else if (p.err[0]) {
			add(d, "turn", DR_ATTENTION, fix_down,
			    "Nothing answers TURN at %s over %s (%s): guests' calls could not connect.", uri,
			    over, p.err);
		} else {
			add(d, "turn", DR_ATTENTION, fix_down,
			    "Nothing answered TURN at %s over %s within %d seconds: guests' calls could not "
			    "connect.",
			    uri, over, TURN_WAIT_MS / 1000);
		}
	}
}

/* The Graph API knows each service's WhatsApp phone number id with the
 * access token (whatsapp.enabled): GET /{version}/{phone_number_id}. */
static void check_whatsapp(struct doctor *d)
{
	const struct config *cfg = d->cfg;
	char *token = NULL;
	if (!cfg->wa_enabled)
		return;
	if (wach_secret_read("access_token_file", cfg->wa_access_token_file, &token) != TH_OK) {
		add(d, "whatsapp", DR_ATTENTION, "Put the Graph API access token in it, mode 0600.",
		    "whatsapp.access_token_file %s cannot be read: WhatsApp messages cannot be sent.",
		    cfg->wa_access_token_file);
		return;
	}
	for (size_t i = 0; i < cfg->nservices; i++) {
		const char *pnid = cfg->services[i].wa_phone_number_id;
		if (!pnid)
			continue;
		char *url = xasprintf("%s/%s/%s", cfg->wa_graph_url, cfg->wa_api_version, pnid);
		struct dr_http h;
		int rc = http_do(cfg, "GET", url, token, NULL, &h);
		if (rc)
			add(d, "whatsapp", DR_ATTENTION,
			    "Check the machine's route to the Graph API and whatsapp.graph_url.",
			    "The Graph API does not answer at %s (%s): WhatsApp messages would wait in the "
			    "queue.",
			    cfg->wa_graph_url, h.err);
		else if (h.status == 401 || h.status == 403)
			add(d, "whatsapp", DR_ATTENTION,
			    "Make a new system user token with whatsapp_business_messaging and put it in "
			    "whatsapp.access_token_file.",
			    "The Graph API refused the access token (HTTP %ld) for services.%s.", h.status,
			    cfg->services[i].name);
		else if (h.status != 200)
			add(d, "whatsapp", DR_ATTENTION,
			    "Check services.<name>.whatsapp_phone_number_id against WhatsApp Manager.",
			    "The Graph API does not know phone number id %s of services.%s (HTTP %ld).", pnid,
			    cfg->services[i].name, h.status);
		else
			add(d, "whatsapp", DR_OK, NULL,
			    "The Graph API knows services.%s's phone number id with the access token.",
			    cfg->services[i].name);
		if (!rc)
			http_clear(&h);
		free(url);
	}
	explicit_bzero(token, strlen(token));
	free(token);
}

/*
 * Every check, in the order an admin would go.  A check of something not
 * configured adds no finding.
 */
static void (*const checks[])(struct doctor *) = {
        check_registration,   check_files,   check_store,         check_homeserver, check_invite_blocking,
        check_token,          check_ping,    check_bot_admin,     check_bot_rooms,  check_hardening_outside,
        check_synapse_config, check_gateway, check_erasure_admin, check_sms,        check_turn,
        check_whatsapp,
};

static void print_text(const struct doctor *d)
{
	size_t i;
	json_t *f;
	json_array_foreach(d->findings, i, f)
	{
		const char *st = jsonx_str(f, "status");
		const char *tag = !strcmp(st, "ok")          ? "ok  "
		                  : !strcmp(st, "attention") ? "FIX "
		                  : !strcmp(st, "note")      ? "note"
		                                             : "skip";
		printf("%s  %s\n", tag, jsonx_str(f, "message"));
		if (jsonx_str(f, "fix"))
			printf("      fix: %s\n", jsonx_str(f, "fix"));
	}
	printf("\n%s\n", d->attention ? "Something needs attention (FIX above)." : "All good.");
}

int doctor_main(struct config *cfg, int argc, char **argv)
{
	struct doctor d = {.cfg = cfg, .findings = json_array()};
	int as_json = 0;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			as_json = 1;
		} else if (!strcmp(argv[i], "--synapse-config") && i + 1 < argc) {
			d.synapse_config = argv[++i];
		} else {
			fprintf(stderr,
			        "threshold: doctor takes --json and --synapse-config PATH, not '%s'\n",
			        argv[i]);
			json_decref(d.findings);
			return 2;
		}
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
		/* The homeserver checks act as the appservice, once its tokens are known. */
		if (checks[i] == check_homeserver && d.registration && cs_client_new(cfg, &d.cs) != TH_OK) {
			add(&d, "homeserver", DR_ATTENTION, "Check that libcurl works here.",
			    "Cannot make an HTTP client.");
			break;
		}
		checks[i](&d);
	}
	if (as_json) {
		json_t *out = json_pack("{s:s, s:O}", "status", d.attention ? "attention" : "ok", "findings",
		                        d.findings);
		json_dumpf(out, stdout, JSON_INDENT(2));
		fputc('\n', stdout);
		json_decref(out);
	} else {
		print_text(&d);
	}
	int code = d.attention ? 1 : 0;
	cs_client_free(d.cs);
	store_close(d.st);
	json_decref(d.versions);
	json_decref(d.findings);
	curl_global_cleanup();
	return code;
}
