/*
 * cases.c - safeguarding concerns, cases, reminders and escalations
 * (cases.h; the lead's guide is docs/safeguarding-guide.md).
 */
#include "cases.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "audit.h"
#include "config.h"
#include "conv.h"
#include "jsonx.h"
#include "log.h"
#include "matrix.h"
#include "mxevent.h"
#include "outbox.h"
#include "rooms.h"
#include "util.h"

#define MAX_LIST 50 /* cases listed by "!case list" */

static const char *const severity_names[3] = {"low", "medium", "high"};

/* A case's response time at @p severity, in ms. */
static uint64_t response_ms(const struct config *cfg, int severity)
{
	unsigned s = severity == 2   ? cfg->response_high_s
	             : severity == 1 ? cfg->response_medium_s
	                             : cfg->response_low_s;
	return (uint64_t)s * 1000u;
}

static int severity_of(const char *s)
{
	for (int i = 0; i < 3; i++) {
		if (s && strcmp(s, severity_names[i]) == 0)
			return i;
	}
	return -1;
}

/* ---- matching --------------------------------------------------------- */

int cases_is_command(const char *body)
{
	if (!body)
		return 0;
	while (*body == ' ')
		body++;
	size_t n = strlen(CASES_PREFIX);
	return strncmp(body, CASES_PREFIX, n) == 0 &&
	       (body[n] == '\0' || body[n] == ' ' || body[n] == '\n' || body[n] == '\t');
}

static int word_byte(unsigned char c)
{
	return isalnum(c) || c == '_' || c >= 0x80;
}

/* Length of @p body matched by phrase @p w at its start, or 0. */
static size_t match_at(const char *body, const char *w)
{
	const char *p = body;
	while (*w) {
		if (*w == ' ') {
			if (!isspace((unsigned char)*p))
				return 0;
			while (isspace((unsigned char)*p))
				p++;
			while (*w == ' ')
				w++;
			continue;
		}
		if (tolower((unsigned char)*p) != tolower((unsigned char)*w))
			return 0;
		p++;
		w++;
	}
	return (size_t)(p - body);
}

int cases_keyword_match(const struct config *cfg, const char *service, const char *body)
{
	const struct config_service *svc = service ? config_service_find(cfg, service) : NULL;
	if (!svc || !body)
		return 0;
	for (size_t l = 0; l < svc->nkeywords; l++) {
		const struct config_ids *words = &svc->keywords[l].words;
		for (size_t k = 0; k < words->n; k++) {
			const char *w = words->v[k];
			for (size_t i = 0; body[i]; i++) {
				if (i > 0 && word_byte((unsigned char)body[i - 1]) &&
				    word_byte((unsigned char)w[0]))
					continue;
				size_t n = match_at(body + i, w);
				if (n && !(word_byte((unsigned char)body[i + n]) &&
				           word_byte((unsigned char)w[strlen(w) - 1])))
					return 1;
			}
		}
	}
	return 0;
}

/* ---- the store ---------------------------------------------------------- */

static void case_key(unsigned char key[9], uint64_t id)
{
	key[0] = 'c';
	store_u64_key(key + 1, id);
}

static int case_get(store_txn *t, uint64_t id, json_t **out)
{
	unsigned char key[9];
	case_key(key, id);
	return store_get_jsonb(t, STORE_CASES, key, sizeof(key), out);
}

static int case_put(store_txn *t, const json_t *c)
{
	unsigned char key[9];
	case_key(key, (uint64_t)json_integer_value(json_object_get(c, "id")));
	char *s = json_dumps(c, JSON_COMPACT);
	if (!s)
		return TH_ENOMEM;
	int rc = store_put(t, STORE_CASES, key, sizeof(key), s, strlen(s), 0);
	free(s);
	return rc;
}

/* 'g' guest -> id of their case that is not closed; 0 when none. */
static uint64_t open_case_of(store_txn *t, const char *guest)
{
	size_t n = strlen(guest);
	char *key = xmalloc(n + 1);
	key[0] = 'g';
	memcpy(key + 1, guest, n);
	const void *v;
	size_t vlen;
	uint64_t id = 0;
	if (store_get(t, STORE_CASES, key, n + 1, &v, &vlen) == TH_OK && vlen == 8)
		id = store_key_u64(v);
	free(key);
	return id;
}

static int open_case_set(store_txn *t, const char *guest, uint64_t id)
{
	size_t n = strlen(guest);
	char *key = xmalloc(n + 1);
	key[0] = 'g';
	memcpy(key + 1, guest, n);
	unsigned char v[8];
	store_u64_key(v, id);
	int rc = id ? store_put(t, STORE_CASES, key, n + 1, v, 8, 0) : store_del(t, STORE_CASES, key, n + 1);
	if (rc == TH_ENOTFOUND)
		rc = TH_OK;
	free(key);
	return rc;
}

int cases_guest_open(store_txn *t, const char *guest)
{
	return guest && open_case_of(t, guest) != 0;
}

int cases_subject(store_txn *t, uint64_t id, char *guest, size_t guest_len, uint64_t *opened_ms)
{
	json_t *c = NULL;
	int rc = case_get(t, id, &c);
	if (rc)
		return rc;
	snprintf(guest, guest_len, "%s", jsonx_str(c, "guest") ? jsonx_str(c, "guest") : "");
	*opened_ms = (uint64_t)json_integer_value(json_object_get(c, "opened_ms"));
	json_decref(c);
	return TH_OK;
}

static void format_time(char out[32], uint64_t ms)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	if (!gmtime_r(&s, &tm) || !strftime(out, 32, "%Y-%m-%d %H:%M UTC", &tm))
		snprintf(out, 32, "?");
}

/* A notice into the safeguarding room, mentioning @p mention (may be NULL)
 * the way Matrix clients highlight (spec: m.mentions). */
static int sg_notice(const struct config *cfg, store_txn *t, const char *text,
                     const struct config_ids *mention)
{
	if (!cfg->safeguarding_room)
		return TH_OK;
	json_t *content = json_pack("{s:s, s:s}", "msgtype", "m.notice", "body", text);
	json_t *ids = json_array();
	for (size_t i = 0; mention && i < mention->n; i++)
		json_array_append_new(ids, json_string(mention->v[i]));
	json_object_set_new(content, "m.mentions", json_pack("{s:o}", "user_ids", ids));
	json_t *a = outbox_message(cfg->safeguarding_room, cfg->bot_user_id, content, NULL);
	int rc = outbox_push(t, a);
	json_decref(a);
	return rc;
}

/* "@a:x, @b:y" of @p ids, or "" (new string). */
static char *names_of(const struct config_ids *ids)
{
	char *s = xstrdup("");
	for (size_t i = 0; ids && i < ids->n; i++) {
		char *more = xasprintf("%s%s%s", s, i ? ", " : "", ids->v[i]);
		free(s);
		s = more;
	}
	return s;
}

static int record(const struct txn_env *env, store_txn *t, enum audit_kind kind, const char *actor,
                  const char *subject, const char *room, const char *reason, json_t *details,
                  const char *sealed, uint64_t *seq)
{
	struct audit_rec rec = {.kind = kind,
	                        .actor = actor,
	                        .subject = subject,
	                        .room = room,
	                        .reason = reason,
	                        .details = details,
	                        .sealed = sealed && *sealed ? sealed : NULL};
	int rc = env->au ? audit_append(env->au, t, &rec, seq) : TH_OK;
	json_decref(details);
	return rc;
}

/* ---- concerns ------------------------------------------------------------ */

struct concern {
	const char *guest, *service, *room;
	int severity;
	const char *source; /* "command", "reaction", "keyword" */
	const char *actor;
	const char *event_id; /* what it is about: the message reacted to, matched, or the command */
	const char *text;     /* words to seal, or NULL */
};

/* Open or join @p c->guest's case: record, update, alert.  @p id: out. */
static int raise_concern(const struct txn_env *env, store_txn *t, const struct concern *c, uint64_t *id,
                         int *opened, unsigned *queued)
{
	const struct config *cfg = env->cfg;
	uint64_t now = th_now_ms();
	uint64_t cid = open_case_of(t, c->guest);
	json_t *cs = NULL;
	int rc;
	*opened = 0;
	if (cid && case_get(t, cid, &cs) != TH_OK)
		cid = 0;
	if (!cid) {
		const void *v;
		size_t vlen;
		cid = 1;
		if (store_get(t, STORE_CASES, "next", 4, &v, &vlen) == TH_OK && vlen == 8)
			cid = store_key_u64(v);
		unsigned char nb[8];
		store_u64_key(nb, cid + 1);
		if ((rc = store_put(t, STORE_CASES, "next", 4, nb, 8, 0)))
			return rc;
		cs = json_pack(
		        "{s:I, s:s, s:s, s:s, s:s, s:s, s:n, s:I, s:I, s:I, s:[], s:[], s:I, s:I}", "id",
		        (json_int_t)cid, "guest", c->guest, "service", c->service ? c->service : "", "room",
		        c->room, "severity", severity_names[c->severity], "state", "open", "holder",
		        "opened_ms", (json_int_t)now, "deadline_ms",
		        (json_int_t)(now + response_ms(cfg, c->severity)), "reminded_ms", (json_int_t)0,
		        "concerns", "notes", "outcome_seq", (json_int_t)0, "closed_ms", (json_int_t)0);
		*opened = 1;
		if ((rc = open_case_set(t, c->guest, cid))) {
			json_decref(cs);
			return rc;
		}
	} else {
		int had = severity_of(jsonx_str(cs, "severity"));
		if (c->severity > had)
			json_object_set_new(cs, "severity", json_string(severity_names[c->severity]));
		uint64_t deadline = (uint64_t)json_integer_value(json_object_get(cs, "deadline_ms"));
		uint64_t sooner = now + response_ms(cfg, c->severity);
		if (sooner < deadline)
			json_object_set_new(cs, "deadline_ms", json_integer((json_int_t)sooner));
	}
	uint64_t seq = 0;
	json_t *details = json_pack("{s:I, s:s, s:s, s:b}", "case", (json_int_t)cid, "severity",
	                            severity_names[c->severity], "source", c->source, "opened", *opened);
	if (c->event_id)
		json_object_set_new(details, "event_id", json_string(c->event_id));
	rc = record(env, t, AUDIT_CONCERN_RAISED, c->actor, c->guest, c->room, "concern_raised", details,
	            c->text, &seq);
	if (!rc) {
		json_array_append_new(json_object_get(cs, "concerns"),
		                      json_pack("{s:I, s:I, s:s, s:s, s:s}", "seq", (json_int_t)seq, "ts",
		                                (json_int_t)now, "severity", severity_names[c->severity],
		                                "source", c->source, "by", c->actor));
		rc = case_put(t, cs);
	}
	if (!rc) {
		char when[32];
		format_time(when, (uint64_t)json_integer_value(json_object_get(cs, "deadline_ms")));
		const char *by = strcmp(c->source, "keyword") == 0 ? "the service's keyword list matched a "
		                                                     "message of the guest"
		                 : strcmp(c->source, "reaction") == 0 ? "a reaction by staff on a message"
		                                                      : "raised by staff";
		const struct config_service *svc = c->service ? config_service_find(cfg, c->service) : NULL;
		char *text = xasprintf(
		        "Safeguarding concern (%s) about guest %s in conversation room %s%s%s: %s%s%s. "
		        "%s case #%llu (severity %s, respond by %s). Audit record #%llu. "
		        "Read it with: !case show %llu",
		        severity_names[c->severity], c->guest, c->room, svc ? ", service " : "",
		        svc ? svc->name : "", by, strcmp(c->source, "keyword") ? " " : "",
		        strcmp(c->source, "keyword") ? c->actor : "", *opened ? "Opened" : "Joined",
		        (unsigned long long)cid, jsonx_str(cs, "severity"), when, (unsigned long long)seq,
		        (unsigned long long)cid);
		rc = sg_notice(cfg, t, text, c->severity == 2 && svc ? &svc->duty_leads : NULL);
		free(text);
		if (!rc)
			(*queued)++;
	}
	*id = cid;
	json_decref(cs);
	return rc;
}

/* "!threshold concern [low|medium|high] TEXT": the severity and the words. */
static void parse_concern(const char *body, int *severity, const char **text)
{
	const char *p = strstr(body, "concern");
	p = p ? p + 7 : body + strlen(body);
	while (*p == ' ' || *p == '\t' || *p == '\n')
		p++;
	*severity = 1;
	size_t n = strcspn(p, " \t\n");
	for (int i = 0; i < 3; i++) {
		if (n == strlen(severity_names[i]) && strncmp(p, severity_names[i], n) == 0) {
			*severity = i;
			p += n;
			while (*p == ' ' || *p == '\t' || *p == '\n')
				p++;
		}
	}
	*text = p;
}

/* The key of an m.reaction (borrowed from @p content), and what it relates to. */
static const char *reaction_key(const json_t *content, const char **event_id)
{
	const json_t *rel = json_object_get(content, "m.relates_to");
	*event_id = jsonx_str(rel, "event_id");
	const char *type = jsonx_str(rel, "rel_type");
	if (!type || strcmp(type, "m.annotation") != 0)
		return NULL;
	return jsonx_str(rel, "key");
}

int cases_reaction_is_concern(const struct config *cfg, const struct mxev *ev)
{
	if (!ev->type || strcmp(ev->type, "m.reaction") != 0 || !cfg->concern_reaction)
		return 0;
	json_t *content = NULL;
	if (mxev_content_json(ev, &content) != TH_OK)
		return 0;
	const char *eid;
	const char *key = reaction_key(content, &eid);
	/* The key with or without the emoji presentation selector (U+FE0F). */
	size_t n = key ? strlen(key) : 0, m = strlen(cfg->concern_reaction);
	int yes = key && eid &&
	          (strcmp(key, cfg->concern_reaction) == 0 ||
	           (n + 3 == m && strncmp(key, cfg->concern_reaction, n) == 0 &&
	            strcmp(cfg->concern_reaction + n, "\xef\xb8\x8f") == 0) ||
	           (m + 3 == n && strncmp(key, cfg->concern_reaction, m) == 0 &&
	            strcmp(key + m, "\xef\xb8\x8f") == 0));
	json_decref(content);
	return yes;
}

int cases_on_concern(const struct txn_env *env, store_txn *t, const struct mxev *ev, enum pol_reason reason,
                     unsigned *queued)
{
	const struct config *cfg = env->cfg;
	char guest[256], service[128] = "", room[256];
	if (rooms_user_first(t, ev->room_id, ROOMS_GUESTS, guest) != TH_OK)
		return TH_OK; /* a conversation room without its guest: nobody to raise it about */
	conv_of_guest(t, guest, service, sizeof(service), room, sizeof(room));
	struct concern c = {.guest = guest,
	                    .service = *service ? service : NULL,
	                    .room = ev->room_id,
	                    .severity = 1,
	                    .actor = ev->sender,
	                    .event_id = ev->event_id};
	json_t *content = NULL;
	int is_command = 0;
	if (reason == POL_R_CONCERN_KEYWORD) {
		c.source = "keyword";
		c.actor = "threshold";
	} else if (ev->type && strcmp(ev->type, "m.reaction") == 0) {
		c.source = "reaction";
		if (mxev_content_json(ev, &content) == TH_OK)
			reaction_key(content, &c.event_id);
	} else {
		c.source = "command";
		is_command = 1;
		parse_concern(ev->body ? ev->body : "", &c.severity, &c.text);
		if (!*c.text) {
			int rc = env->mx->ops->notice(env->mx->ctx, t, ev->room_id, cfg->bot_user_id,
			                              "Usage: !threshold concern [low|medium|high] TEXT (the "
			                              "text is sealed in the guest's case; the guest never "
			                              "sees it)",
			                              ev->event_id);
			if (!rc)
				(*queued)++;
			return rc;
		}
	}
	uint64_t id;
	int opened;
	int rc = raise_concern(env, t, &c, &id, &opened, queued);
	if (!rc && is_command) {
		/* The words are kept sealed in the case; the message that carried them
		 * goes, so erasing the guest leaves no copy in the room. */
		rc = env->mx->ops->redact(env->mx->ctx, t, ev->room_id, cfg->bot_user_id, ev->event_id,
		                          "Recorded as a sealed safeguarding concern");
		char *reply = NULL;
		if (!rc)
			reply = xasprintf(
			        "Concern recorded (%s) in case #%llu%s. Its words are sealed in the "
			        "case and your message was removed from this room; the guest never "
			        "sees any of it. The safeguarding room has been told.",
			        severity_names[c.severity], (unsigned long long)id,
			        opened ? ", opened now" : "");
		if (!rc)
			rc = env->mx->ops->notice(env->mx->ctx, t, ev->room_id, cfg->bot_user_id, reply,
			                          ev->event_id);
		free(reply);
		if (!rc)
			(*queued) += 2;
	}
	json_decref(content);
	return rc;
}

/* ---- leads' commands ----------------------------------------------------- */

static int parse_id(const char **p, uint64_t *id)
{
	while (**p == ' ' || **p == '\t')
		(*p)++;
	if (**p == '#')
		(*p)++;
	size_t n = strcspn(*p, " \t\n");
	char buf[24];
	if (!n || n >= sizeof(buf))
		return 0;
	memcpy(buf, *p, n);
	buf[n] = 0;
	*p += n;
	while (**p == ' ' || **p == '\t' || **p == '\n')
		(*p)++;
	return th_parse_u64(buf, UINT64_MAX, id) == TH_OK && *id > 0;
}

/* The sealed words of audit record @p seq (new string), or a placeholder. */
static char *words_of(const struct txn_env *env, store_txn *t, const char *guest, uint64_t seq)
{
	if (!seq || !env->au)
		return xstrdup("(no words)");
	unsigned char key[8];
	store_u64_key(key, seq);
	json_t *rec = NULL;
	if (store_get_jsonb(t, STORE_AUDIT, key, 8, &rec) != TH_OK)
		return xstrdup("(record missing)");
	const char *sealed = jsonx_str(rec, "sealed");
	char *out = NULL;
	int rc = sealed ? audit_unseal(env->au, t, guest, sealed, &out) : TH_ENOTFOUND;
	json_decref(rec);
	if (!sealed)
		return xstrdup("(no words)");
	if (rc == TH_ENOTFOUND)
		return xstrdup("(erased)");
	if (rc)
		return xstrdup("(cannot be read)");
	return out;
}

struct list_ctx {
	char *text;
	size_t n;
	int all;
	uint64_t now;
};

static int list_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct list_ctx *l = ctx;
	if (klen != 9 || ((const char *)key)[0] != 'c')
		return 1; /* past the 'c' keys */
	json_t *c = json_loadb(val, vlen, 0, NULL);
	const char *state = jsonx_str(c, "state");
	if (c && state && (l->all || strcmp(state, "closed") != 0) && l->n < MAX_LIST) {
		char when[32];
		uint64_t deadline = (uint64_t)json_integer_value(json_object_get(c, "deadline_ms"));
		format_time(when, deadline);
		char *more =
		        xasprintf("%s\n#%lld %s %s, guest %s, holder %s, %zu concern(s), respond by %s%s",
		                  l->text, (long long)json_integer_value(json_object_get(c, "id")),
		                  jsonx_str(c, "severity"), state, jsonx_str(c, "guest"),
		                  jsonx_str(c, "holder") ? jsonx_str(c, "holder") : "nobody",
		                  json_array_size(json_object_get(c, "concerns")), when,
		                  strcmp(state, "closed") && deadline <= l->now ? " (OVERDUE)" : "");
		free(l->text);
		l->text = more;
		l->n++;
	}
	json_decref(c);
	return 0;
}

static char *case_show(const struct txn_env *env, store_txn *t, const json_t *c)
{
	const char *guest = jsonx_str(c, "guest");
	char opened[32], deadline[32];
	format_time(opened, (uint64_t)json_integer_value(json_object_get(c, "opened_ms")));
	format_time(deadline, (uint64_t)json_integer_value(json_object_get(c, "deadline_ms")));
	char *s = xasprintf("Case #%lld: %s, severity %s, holder %s\nGuest %s, service %s, conversation "
	                    "room %s\nOpened %s, respond by %s",
	                    (long long)json_integer_value(json_object_get(c, "id")), jsonx_str(c, "state"),
	                    jsonx_str(c, "severity"),
	                    jsonx_str(c, "holder") ? jsonx_str(c, "holder") : "nobody", guest,
	                    jsonx_str(c, "service"), jsonx_str(c, "room"), opened, deadline);
	const char *lists[] = {"concerns", "notes"};
	for (int k = 0; k < 2; k++) {
		size_t i;
		json_t *e;
		json_array_foreach(json_object_get(c, lists[k]), i, e)
		{
			char when[32];
			format_time(when, (uint64_t)json_integer_value(json_object_get(e, "ts")));
			char *words = words_of(env, t, guest,
			                       (uint64_t)json_integer_value(json_object_get(e, "seq")));
			char *more = k == 0 ? xasprintf("%s\nConcern %s, %s, %s by %s: %s", s, when,
			                                jsonx_str(e, "severity"), jsonx_str(e, "source"),
			                                jsonx_str(e, "by"), words)
			                    : xasprintf("%s\nNote %s by %s: %s", s, when, jsonx_str(e, "by"),
			                                words);
			explicit_bzero(words, strlen(words));
			free(words);
			explicit_bzero(s, strlen(s));
			free(s);
			s = more;
		}
	}
	uint64_t oseq = (uint64_t)json_integer_value(json_object_get(c, "outcome_seq"));
	if (oseq) {
		char *words = words_of(env, t, guest, oseq);
		char *more = xasprintf("%s\nOutcome: %s", s, words);
		explicit_bzero(words, strlen(words));
		free(words);
		explicit_bzero(s, strlen(s));
		free(s);
		s = more;
	}
	return s;
}

int cases_run(const struct txn_env *env, store_txn *t, const char *actor, const char *args, char **reply,
              int *sealed)
{
	if (sealed)
		*sealed = 0;
	const char *p = args ? args : "";
	while (*p == ' ' || *p == '\t' || *p == '\n')
		p++;
	size_t vn = strcspn(p, " \t\n");
	char verb[16] = "";
	if (vn < sizeof(verb))
		memcpy(verb, p, vn), verb[vn] = 0;
	p += vn;
	uint64_t id = 0;
	json_t *c = NULL;
	int rc = TH_OK;
	*reply = NULL;
	if (!strcmp(verb, "list")) {
		while (*p == ' ')
			p++;
		struct list_ctx l = {.text = xstrdup("Cases not closed:"),
		                     .all = strncmp(p, "all", 3) == 0,
		                     .now = th_now_ms()};
		if (l.all) {
			free(l.text);
			l.text = xstrdup("All cases:");
		}
		unsigned char from[1] = {'c'};
		rc = store_walk(t, STORE_CASES, from, 1, list_one, &l);
		if (!rc && !l.n) {
			char *more = xasprintf("%s none.", l.text);
			free(l.text);
			l.text = more;
		}
		if (!rc)
			rc = record(env, t, AUDIT_CASE_VIEWED, actor, NULL, NULL, "case_list",
			            json_pack("{s:s, s:I}", "action", "list", "cases", (json_int_t)l.n), NULL,
			            NULL);
		*reply = l.text;
		return rc;
	}
	int known = !strcmp(verb, "show") || !strcmp(verb, "take") || !strcmp(verb, "note") ||
	            !strcmp(verb, "close");
	if (!known || !parse_id(&p, &id)) {
		*reply = xstrdup(
		        "Usage: !case list [all] | show ID | take ID | note ID TEXT | close ID OUTCOME");
		return TH_OK;
	}
	if ((rc = case_get(t, id, &c)) == TH_ENOTFOUND) {
		*reply = xasprintf("There is no case #%llu.", (unsigned long long)id);
		return TH_OK;
	}
	if (rc)
		return rc;
	const char *guest = jsonx_str(c, "guest");
	const char *room = jsonx_str(c, "room");
	int closed = strcmp(jsonx_str(c, "state"), "closed") == 0;
	uint64_t now = th_now_ms();
	if (!strcmp(verb, "show")) {
		rc = record(env, t, AUDIT_CASE_VIEWED, actor, guest, room, "case_show",
		            json_pack("{s:s, s:I}", "action", "show", "case", (json_int_t)id), NULL, NULL);
		if (!rc)
			*reply = case_show(env, t, c);
	} else if (closed) {
		*reply = xasprintf("Case #%llu is closed; it can be read (show) but not changed.",
		                   (unsigned long long)id);
	} else if (!strcmp(verb, "take")) {
		json_object_set_new(c, "holder", json_string(actor));
		json_object_set_new(c, "state", json_string("taken"));
		rc = record(env, t, AUDIT_CASE_CHANGED, actor, guest, room, "case_taken",
		            json_pack("{s:s, s:I}", "action", "take", "case", (json_int_t)id), NULL, NULL);
		if (!rc)
			rc = case_put(t, c);
		*reply = xasprintf("Case #%llu is now held by %s.", (unsigned long long)id, actor);
	} else if (!*p) {
		*reply = xasprintf("Usage: !case %s ID %s", verb, !strcmp(verb, "note") ? "TEXT" : "OUTCOME");
	} else if (!strcmp(verb, "note")) {
		uint64_t seq = 0;
		rc = record(env, t, AUDIT_CASE_CHANGED, actor, guest, room, "case_noted",
		            json_pack("{s:s, s:I}", "action", "note", "case", (json_int_t)id), p, &seq);
		if (!rc) {
			json_array_append_new(json_object_get(c, "notes"),
			                      json_pack("{s:I, s:I, s:s}", "seq", (json_int_t)seq, "ts",
			                                (json_int_t)now, "by", actor));
			rc = case_put(t, c);
		}
		if (sealed)
			*sealed = 1;
		*reply = xasprintf("Note added to case #%llu (sealed; audit record #%llu).",
		                   (unsigned long long)id, (unsigned long long)seq);
	} else { /* close */
		uint64_t seq = 0;
		rc = record(env, t, AUDIT_CASE_CHANGED, actor, guest, room, "case_closed",
		            json_pack("{s:s, s:I}", "action", "close", "case", (json_int_t)id), p, &seq);
		json_object_set_new(c, "state", json_string("closed"));
		json_object_set_new(c, "outcome_seq", json_integer((json_int_t)seq));
		json_object_set_new(c, "closed_ms", json_integer((json_int_t)now));
		if (!rc)
			rc = case_put(t, c);
		if (!rc && open_case_of(t, guest) == id)
			rc = open_case_set(t, guest, 0);
		if (sealed)
			*sealed = 1;
		*reply = xasprintf("Case #%llu is closed; the outcome is sealed in audit record #%llu.",
		                   (unsigned long long)id, (unsigned long long)seq);
	}
	json_decref(c);
	return rc;
}

int cases_on_command(const struct txn_env *env, store_txn *t, const struct mxev *ev, unsigned *queued)
{
	const char *body = ev->body ? ev->body : "";
	while (*body == ' ')
		body++;
	char *reply = NULL;
	int sealed = 0;
	int rc = cases_run(env, t, ev->sender, body + strlen(CASES_PREFIX), &reply, &sealed);
	/* The words are kept sealed in the case, but the lead's own message still
	 * holds them: the bot has no power to remove it in a room a lead made. */
	if (!rc && sealed && reply) {
		char *more = xasprintf("%s Your message above still holds the words: remove it (Remove, in "
		                       "Element) so they are kept only sealed, or use `threshold case` on "
		                       "the server next time.",
		                       reply);
		explicit_bzero(reply, strlen(reply));
		free(reply);
		reply = more;
	}
	if (!rc && reply) {
		rc = env->mx->ops->notice(env->mx->ctx, t, ev->room_id, env->cfg->bot_user_id, reply,
		                          ev->event_id);
		if (!rc)
			(*queued)++;
	}
	if (reply)
		explicit_bzero(reply, strlen(reply));
	free(reply);
	return rc;
}

/* ---- waiting, reminders, escalation ------------------------------------------ */

static char *wait_key(const char *room_id, size_t *klen)
{
	size_t n = strlen(room_id);
	char *key = xmalloc(n + 1);
	key[0] = 'w';
	memcpy(key + 1, room_id, n);
	*klen = n + 1;
	return key;
}

int cases_on_message(const struct config *cfg, store_txn *t, const char *room_id, const char *sender,
                     enum pol_role role)
{
	size_t klen;
	int rc = TH_OK;
	if (role == POL_ROLE_STAFF || role == POL_ROLE_LEAD) {
		char *key = wait_key(room_id, &klen);
		rc = store_del(t, STORE_CASES, key, klen);
		free(key);
		return rc == TH_ENOTFOUND ? TH_OK : rc;
	}
	if (role != POL_ROLE_GUEST)
		return TH_OK;
	char service[128] = "", room[256];
	if (conv_of_guest(t, sender, service, sizeof(service), room, sizeof(room)) != TH_OK)
		return TH_OK;
	const struct config_service *svc = config_service_find(cfg, service);
	if (!svc || !svc->escalate_after_s)
		return TH_OK;
	char *key = wait_key(room_id, &klen);
	const void *v;
	size_t vlen;
	if (store_get(t, STORE_CASES, key, klen, &v, &vlen) == TH_ENOTFOUND) {
		uint64_t now = th_now_ms();
		json_t *w =
		        json_pack("{s:s, s:s, s:I, s:I, s:i}", "guest", sender, "service", service,
		                  "since_ms", (json_int_t)now, "next_ms",
		                  (json_int_t)(now + (uint64_t)svc->escalate_after_s * 1000u), "count", 0);
		char *s = json_dumps(w, JSON_COMPACT);
		rc = store_put(t, STORE_CASES, key, klen, s, strlen(s), 0);
		free(s);
		json_decref(w);
	}
	free(key);
	return rc;
}

struct due {
	char **keys;
	size_t *lens;
	size_t n;
	uint64_t now;
};

static int collect_due(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct due *d = ctx;
	const char *k = key;
	if (!klen || (k[0] != 'g' && k[0] != 'w'))
		return k[0] > 'w';
	if (k[0] == 'w') {
		json_t *w = json_loadb(val, vlen, 0, NULL);
		uint64_t next = (uint64_t)json_integer_value(json_object_get(w, "next_ms"));
		json_decref(w);
		if (!next || next > d->now)
			return 0;
	}
	d->keys = xrealloc(d->keys, (d->n + 1) * sizeof(char *));
	d->lens = xrealloc(d->lens, (d->n + 1) * sizeof(size_t));
	d->keys[d->n] = xmalloc(klen);
	memcpy(d->keys[d->n], key, klen);
	d->lens[d->n++] = klen;
	return 0;
}

/* A case past its deadline, last reminded reminder_seconds ago or never. */
static int remind(const struct txn_env *env, store_txn *t, uint64_t id, uint64_t now, size_t *posted)
{
	const struct config *cfg = env->cfg;
	json_t *c = NULL;
	if (case_get(t, id, &c) != TH_OK)
		return TH_OK;
	uint64_t deadline = (uint64_t)json_integer_value(json_object_get(c, "deadline_ms"));
	uint64_t reminded = (uint64_t)json_integer_value(json_object_get(c, "reminded_ms"));
	int rc = TH_OK;
	if (strcmp(jsonx_str(c, "state"), "closed") != 0 && deadline <= now &&
	    (!reminded || reminded + (uint64_t)cfg->reminder_s * 1000u <= now)) {
		const struct config_service *svc = config_service_find(cfg, jsonx_str(c, "service"));
		char when[32];
		format_time(when, deadline);
		const char *holder = jsonx_str(c, "holder");
		char *text =
		        xasprintf("Reminder: case #%llu (%s, %s) was due for a response by %s and is not "
		                  "closed. Holder: %s. Guest %s, conversation room %s. !case show %llu",
		                  (unsigned long long)id, jsonx_str(c, "severity"), jsonx_str(c, "state"),
		                  when, holder ? holder : "nobody yet (!case take)", jsonx_str(c, "guest"),
		                  jsonx_str(c, "room"), (unsigned long long)id);
		json_object_set_new(c, "reminded_ms", json_integer((json_int_t)now));
		rc = sg_notice(cfg, t, text, svc ? &svc->duty_leads : NULL);
		free(text);
		if (!rc)
			rc = record(env, t, AUDIT_CASE_CHANGED, "threshold", jsonx_str(c, "guest"),
			            jsonx_str(c, "room"), "case_overdue",
			            json_pack("{s:s, s:I, s:I}", "action", "reminded", "case", (json_int_t)id,
			                      "deadline_ms", (json_int_t)deadline),
			            NULL, NULL);
		if (!rc)
			rc = case_put(t, c);
		if (!rc)
			(*posted)++;
	}
	json_decref(c);
	return rc;
}

static int escalate(const struct txn_env *env, store_txn *t, const char *key, size_t klen, uint64_t now,
                    size_t *posted)
{
	const struct config *cfg = env->cfg;
	json_t *w = NULL;
	if (store_get_jsonb(t, STORE_CASES, key, klen, &w) != TH_OK)
		return TH_OK;
	const struct config_service *svc = config_service_find(cfg, jsonx_str(w, "service"));
	char *room = xstrndup(key + 1, klen - 1);
	int rc = TH_OK;
	json_t *conv = NULL;
	const char *guest = jsonx_str(w, "guest");
	int live = guest && store_get_json(t, STORE_CONVS, guest, &conv) == TH_OK &&
	           strcmp(jsonx_str(conv, "state") ? jsonx_str(conv, "state") : "", "closed") != 0;
	json_decref(conv);
	if (!svc || !svc->escalate_after_s || !live) {
		/* Closed, left, erased or expired: nobody is waiting any more. */
		rc = store_del(t, STORE_CASES, key, klen);
		goto out;
	}
	uint64_t since = (uint64_t)json_integer_value(json_object_get(w, "since_ms"));
	json_int_t count = json_integer_value(json_object_get(w, "count")) + 1;
	unsigned every = svc->escalate_every_s ? svc->escalate_every_s : svc->escalate_after_s;
	char *who = names_of(&svc->duty_leads);
	char *text = xasprintf("%s%sA guest has been waiting %llu minute(s) with no reply from staff in "
	                       "conversation room %s (service %s, guest %s)%s. Please make sure someone "
	                       "answers.",
	                       who, *who ? ": " : "", (unsigned long long)((now - since) / 60000u), room,
	                       svc->name, jsonx_str(w, "guest"), count > 1 ? " - reminder" : "");
	free(who);
	rc = sg_notice(cfg, t, text, &svc->duty_leads);
	free(text);
	if (!rc)
		rc = record(env, t, AUDIT_ESCALATED, "threshold", jsonx_str(w, "guest"), room,
		            "guest_waiting",
		            json_pack("{s:I, s:I, s:I}", "waiting_ms", (json_int_t)(now - since), "since_ms",
		                      (json_int_t)since, "count", count),
		            NULL, NULL);
	json_object_set_new(w, "count", json_integer(count));
	json_object_set_new(w, "next_ms", json_integer((json_int_t)(now + (uint64_t)every * 1000u)));
	if (!rc) {
		char *s = json_dumps(w, JSON_COMPACT);
		rc = store_put(t, STORE_CASES, key, klen, s, strlen(s), 0);
		free(s);
	}
	if (!rc)
		(*posted)++;
out:
	free(room);
	json_decref(w);
	return rc;
}

int cases_tick(const struct txn_env *env, uint64_t now_ms, size_t *posted)
{
	*posted = 0;
	struct due d = {.now = now_ms};
	store_txn *t;
	int rc = store_txn_begin(env->st, 0, &t);
	if (rc)
		return rc;
	unsigned char from[1] = {'g'};
	rc = store_walk(t, STORE_CASES, from, 1, collect_due, &d);
	/* Cheap first look: nothing to write unless a case is overdue. */
	size_t due = 0;
	for (size_t i = 0; !rc && i < d.n; i++) {
		if (d.keys[i][0] == 'w') {
			due++;
			continue;
		}
		const void *v;
		size_t vlen;
		json_t *c = NULL;
		if (store_get(t, STORE_CASES, d.keys[i], d.lens[i], &v, &vlen) == TH_OK && vlen == 8 &&
		    case_get(t, store_key_u64(v), &c) == TH_OK) {
			uint64_t dl = (uint64_t)json_integer_value(json_object_get(c, "deadline_ms"));
			uint64_t rm = (uint64_t)json_integer_value(json_object_get(c, "reminded_ms"));
			if (dl <= now_ms && (!rm || rm + (uint64_t)env->cfg->reminder_s * 1000u <= now_ms))
				due++;
		}
		json_decref(c);
	}
	store_txn_abort(t);
	if (!rc && due && !(rc = store_txn_begin(env->st, 1, &t))) {
		for (size_t i = 0; !rc && i < d.n; i++) {
			if (d.keys[i][0] == 'w') {
				rc = escalate(env, t, d.keys[i], d.lens[i], now_ms, posted);
				continue;
			}
			const void *v;
			size_t vlen;
			if (store_get(t, STORE_CASES, d.keys[i], d.lens[i], &v, &vlen) == TH_OK && vlen == 8)
				rc = remind(env, t, store_key_u64(v), now_ms, posted);
		}
		if (rc)
			store_txn_abort(t);
		else
			rc = store_txn_commit(t);
		if (rc)
			*posted = 0;
	}
	for (size_t i = 0; i < d.n; i++)
		free(d.keys[i]);
	free(d.keys);
	free(d.lens);
	return rc;
}
