/*
 * config.c - YAML configuration parsed at the edge by one table of options
 * (name, type, bounds, default), in the manner of Redis's static_configs[].
 * Every error names the file, the line and the key.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <yaml.h>

#include "util.h"

enum opt_type {
	OPT_STRING,
	OPT_URL,
	OPT_UINT,
	OPT_SIZE,
	OPT_LOCALPART,
	OPT_LEVEL,
	OPT_BOOL,
	OPT_ROOM,
	OPT_USERS
};

struct option {
	const char *section;
	const char *key;
	enum opt_type type;
	size_t offset;
	int required;
	const char *def; /* default, as the YAML text would give it; NULL: none */
	uint64_t min, max;
};

#define OFF(f) offsetof(struct config, f)

static const struct option options[] = {
        {"homeserver", "url", OPT_URL, OFF(hs_url), 1, NULL, 0, 0},
        {"homeserver", "server_name", OPT_STRING, OFF(server_name), 1, NULL, 0, 0},
        {"appservice", "id", OPT_LOCALPART, OFF(as_id), 0, "threshold", 0, 0},
        {"appservice", "listen_address", OPT_STRING, OFF(listen_address), 0, "127.0.0.1", 0, 0},
        {"appservice", "listen_port", OPT_UINT, OFF(listen_port), 0, "29333", 1, 65535},
        {"appservice", "url", OPT_URL, OFF(as_url), 0, NULL, 0, 0},
        {"appservice", "registration", OPT_STRING, OFF(registration), 1, NULL, 0, 0},
        {"appservice", "bot_localpart", OPT_LOCALPART, OFF(bot_localpart), 0, "threshold", 0, 0},
        {"appservice", "bot_displayname", OPT_STRING, OFF(bot_displayname), 0, "Threshold", 0, 0},
        {"appservice", "guest_prefix", OPT_LOCALPART, OFF(guest_prefix), 0, "guest_", 0, 0},
        {"appservice", "max_body_bytes", OPT_SIZE, OFF(max_body_bytes), 0, "8388608", 1048576, 268435456},
        {"appservice", "max_json_depth", OPT_UINT, OFF(max_json_depth), 0, "64", 8, 512},
        {"store", "path", OPT_STRING, OFF(store_path), 1, NULL, 0, 0},
        {"store", "map_size_mb", OPT_SIZE, OFF(map_size_mb), 0, "1024", 16, 1048576},
        {"store", "dedupe_retention_days", OPT_UINT, OFF(dedupe_retention_days), 0, "7", 1, 365},
        {"client", "timeout_ms", OPT_UINT, OFF(client_timeout_ms), 0, "30000", 100, 600000},
        {"client", "connect_timeout_ms", OPT_UINT, OFF(client_connect_timeout_ms), 0, "5000", 100, 600000},
        {"client", "outbox_max_backoff_ms", OPT_UINT, OFF(outbox_max_backoff_ms), 0, "60000", 1000, 3600000},
        {"log", "level", OPT_LEVEL, OFF(log_level), 0, "info", 0, 0},
        {"roles", "staff", OPT_USERS, OFF(staff), 0, NULL, 0, 0},
        {"roles", "staff_all_local", OPT_BOOL, OFF(staff_all_local), 0, "false", 0, 0},
        {"guests", "pseudonym_per_room", OPT_BOOL, OFF(pseudonym_per_room), 0, "false", 0, 0},
        {"rooms", "federate", OPT_BOOL, OFF(rooms_federate), 0, "false", 0, 0},
        {"rooms", "staff_power", OPT_UINT, OFF(staff_power), 0, "50", 1, 99},
        {"safeguarding", "room", OPT_ROOM, OFF(safeguarding_room), 0, NULL, 0, 0},
        {"safeguarding", "leads", OPT_USERS, OFF(leads), 0, NULL, 0, 0},
        {"audit", "key_file", OPT_STRING, OFF(audit_key_path), 0, NULL, 0, 0},
        {"audit", "checkpoint_every", OPT_UINT, OFF(audit_checkpoint_every), 0, "1000", 1, 1000000},
        {"audit", "checkpoint_seconds", OPT_UINT, OFF(audit_checkpoint_seconds), 0, "300", 1, 86400},
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

struct loader {
	const char *path;
	char *err;
	size_t errlen;
};

static int fail(struct loader *ld, size_t line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Format "path:line: message" into the caller's buffer and onto stderr. */
static int fail(struct loader *ld, size_t line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	char full[768];
	if (line)
		snprintf(full, sizeof(full), "%s:%zu: %s", ld->path, line, msg);
	else
		snprintf(full, sizeof(full), "%s: %s", ld->path, msg);
	if (ld->err && ld->errlen)
		snprintf(ld->err, ld->errlen, "%s", full);
	fprintf(stderr, "threshold: %s\n", full);
	return TH_ECONFIG;
}

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 40 || lb > 40)
		return 99;
	size_t d[41][41];
	for (size_t i = 0; i <= la; i++)
		d[i][0] = i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = j;
	for (size_t i = 1; i <= la; i++) {
		for (size_t j = 1; j <= lb; j++) {
			size_t sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
			size_t del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
			d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
		}
	}
	return d[la][lb];
}

/* The closest known key of @section to @key, for "did you mean" hints. */
static const char *suggest(const char *section, const char *key)
{
	const char *best = NULL;
	size_t best_d = 3;
	for (size_t i = 0; i < NOPTIONS; i++) {
		const char *cand = section ? options[i].key : options[i].section;
		if (section && strcmp(options[i].section, section) != 0)
			continue;
		size_t d = edit_distance(key, cand);
		if (d < best_d) {
			best_d = d;
			best = cand;
		}
	}
	return best;
}

/* "@localpart:server" with a non-empty localpart and server (spec: user identifiers). */
static int user_id_ok(const char *s)
{
	const char *colon = strchr(s, ':');
	return s[0] == '@' && colon && colon > s + 1 && colon[1] && strlen(s) <= 255;
}

static int localpart_ok(const char *s)
{
	if (!*s)
		return 0;
	for (const char *p = s; *p; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("._=-/", *p)))
			return 0;
	}
	return 1;
}

/* Control characters (C0 and DEL): nothing here needs one, and a URL with
 * one would make a registration file no YAML reader accepts. */
static int has_control(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			return 1;
	}
	return 0;
}

/* Check and store one value; @text is the YAML scalar (or a default). */
static int set_option(struct loader *ld, struct config *cfg, const struct option *o, const char *text,
                      size_t line)
{
	char *field = (char *)cfg + o->offset;
	uint64_t v;
	switch (o->type) {
	case OPT_URL:
		if (strncmp(text, "http://", 7) != 0 && strncmp(text, "https://", 8) != 0)
			return fail(ld, line, "%s.%s: \"%s\" is not an http:// or https:// URL", o->section,
			            o->key, text);
		goto string;
	case OPT_LOCALPART:
		if (!localpart_ok(text))
			return fail(ld, line, "%s.%s: \"%s\" may hold only a-z, 0-9 and ._=-/", o->section,
			            o->key, text);
		goto string;
	case OPT_LEVEL:
		if (strcmp(text, "error") && strcmp(text, "warn") && strcmp(text, "info") &&
		    strcmp(text, "debug"))
			return fail(ld, line, "%s.%s: \"%s\" is not one of error, warn, info, debug",
			            o->section, o->key, text);
		goto string;
	case OPT_ROOM:
		if (text[0] != '!' || !strchr(text, ':'))
			return fail(ld, line,
			            "%s.%s: \"%s\" is not a room id (\"!opaque:server\"); find it in "
			            "Element under Room settings, Advanced",
			            o->section, o->key, text);
		goto string;
	case OPT_BOOL:
		if (!strcmp(text, "true") || !strcmp(text, "yes") || !strcmp(text, "on"))
			*(int *)field = 1;
		else if (!strcmp(text, "false") || !strcmp(text, "no") || !strcmp(text, "off"))
			*(int *)field = 0;
		else
			return fail(ld, line, "%s.%s: \"%s\" is not true or false", o->section, o->key, text);
		return TH_OK;
	case OPT_USERS:
		return TH_EINVAL; /* lists are read by set_users() */
	case OPT_STRING:
	string:
		if (!*text)
			return fail(ld, line, "%s.%s: must not be empty", o->section, o->key);
		if (has_control(text))
			return fail(ld, line, "%s.%s: must not hold control characters", o->section, o->key);
		free(*(char **)field);
		*(char **)field = xstrdup(text);
		return TH_OK;
	case OPT_UINT:
	case OPT_SIZE:
		if (th_parse_u64(text, UINT64_MAX, &v) != TH_OK)
			return fail(ld, line, "%s.%s: \"%s\" is not a whole number", o->section, o->key,
			            text);
		if (v < o->min || v > o->max)
			return fail(ld, line, "%s.%s: %s is out of range (%llu..%llu)", o->section, o->key,
			            text, (unsigned long long)o->min, (unsigned long long)o->max);
		if (o->type == OPT_UINT)
			*(unsigned *)field = (unsigned)v;
		else
			*(size_t *)field = (size_t)v;
		return TH_OK;
	}
	return TH_EINVAL;
}

/* Read a YAML list of user ids (or an empty value) into a config_users. */
static int set_users(struct loader *ld, struct config *cfg, const struct option *o, yaml_document_t *doc,
                     yaml_node_t *v, size_t line)
{
	struct config_users *list = (struct config_users *)((char *)cfg + o->offset);
	if (v->type == YAML_SCALAR_NODE && v->data.scalar.length == 0)
		return TH_OK;
	if (v->type != YAML_SEQUENCE_NODE)
		return fail(ld, line, "%s.%s: expected a list of user ids, like [\"@alice:example.org\"]",
		            o->section, o->key);
	for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
		yaml_node_t *item = yaml_document_get_node(doc, *it);
		size_t iline = item->start_mark.line + 1;
		if (item->type != YAML_SCALAR_NODE || !user_id_ok((const char *)item->data.scalar.value) ||
		    has_control((const char *)item->data.scalar.value) ||
		    strlen((const char *)item->data.scalar.value) != item->data.scalar.length)
			return fail(ld, iline, "%s.%s: \"%s\" is not a user id (\"@name:server\")",
			            o->section, o->key,
			            item->type == YAML_SCALAR_NODE ? (const char *)item->data.scalar.value
			                                           : "?");
		list->v = xrealloc(list->v, (list->n + 1) * sizeof(char *));
		list->v[list->n++] = xstrdup((const char *)item->data.scalar.value);
	}
	return TH_OK;
}

int config_users_has(const struct config_users *list, const char *user_id)
{
	for (size_t i = 0; user_id && i < list->n; i++) {
		if (strcmp(list->v[i], user_id) == 0)
			return 1;
	}
	return 0;
}

static const char *node_kind(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_MAPPING_NODE:
		return "a mapping";
	case YAML_SEQUENCE_NODE:
		return "a list";
	default:
		return "a scalar";
	}
}

static int load_file(struct loader *ld, yaml_document_t *doc)
{
	FILE *f = fopen(ld->path, "rb");
	if (!f)
		return fail(ld, 0, "cannot read: %s", strerror(errno));
	yaml_parser_t parser;
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, f);
	int ok = yaml_parser_load(&parser, doc);
	int rc = TH_OK;
	if (!ok) {
		rc = fail(ld, parser.problem_mark.line + 1, "YAML syntax error: %s",
		          parser.problem ? parser.problem : "unknown");
	} else if (!yaml_document_get_root_node(doc)) {
		yaml_document_delete(doc);
		rc = fail(ld, 0, "the file is empty");
	}
	yaml_parser_delete(&parser);
	fclose(f);
	return rc;
}

int config_load(const char *path, struct config *out, char *err, size_t errlen)
{
	struct loader ld = {path, err, errlen};
	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	yaml_document_t doc;
	int rc = load_file(&ld, &doc);
	if (rc)
		return rc;
	unsigned char seen[NOPTIONS];
	memset(seen, 0, sizeof(seen));

	for (size_t i = 0; i < NOPTIONS; i++) {
		if (options[i].def && (rc = set_option(&ld, &cfg, &options[i], options[i].def, 0)))
			goto fail;
	}

	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (root->type != YAML_MAPPING_NODE) {
		rc = fail(&ld, root->start_mark.line + 1, "the top level must be a mapping of sections");
		goto fail;
	}
	for (yaml_node_pair_t *sp = root->data.mapping.pairs.start; sp < root->data.mapping.pairs.top; sp++) {
		yaml_node_t *sk = yaml_document_get_node(&doc, sp->key);
		yaml_node_t *sv = yaml_document_get_node(&doc, sp->value);
		size_t sline = sk->start_mark.line + 1;
		if (sk->type != YAML_SCALAR_NODE) {
			rc = fail(&ld, sline, "section names must be plain words");
			goto fail;
		}
		const char *section = (const char *)sk->data.scalar.value;
		int known = 0;
		for (size_t i = 0; i < NOPTIONS; i++)
			known |= strcmp(options[i].section, section) == 0;
		if (!known) {
			const char *hint = suggest(NULL, section);
			rc = fail(&ld, sline, "unknown section '%s'%s%s%s", section,
			          hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
			goto fail;
		}
		if (sv->type == YAML_SCALAR_NODE && sv->data.scalar.length == 0)
			continue; /* "section:" with nothing under it */
		if (sv->type != YAML_MAPPING_NODE) {
			rc = fail(&ld, sline, "%s: expected a mapping of keys, found %s", section,
			          node_kind(sv));
			goto fail;
		}
		for (yaml_node_pair_t *p = sv->data.mapping.pairs.start; p < sv->data.mapping.pairs.top;
		     p++) {
			yaml_node_t *k = yaml_document_get_node(&doc, p->key);
			yaml_node_t *v = yaml_document_get_node(&doc, p->value);
			size_t line = k->start_mark.line + 1;
			const char *key =
			        k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "?";
			size_t idx = NOPTIONS;
			for (size_t i = 0; i < NOPTIONS; i++) {
				if (!strcmp(options[i].section, section) && !strcmp(options[i].key, key))
					idx = i;
			}
			if (idx == NOPTIONS) {
				const char *hint = suggest(section, key);
				rc = fail(&ld, line, "unknown key '%s.%s'%s%s%s", section, key,
				          hint ? " (did you mean '" : "", hint ? hint : "",
				          hint ? "'?)" : "");
				goto fail;
			}
			if (seen[idx]) {
				rc = fail(&ld, line, "%s.%s is given twice", section, key);
				goto fail;
			}
			seen[idx] = 1;
			if (options[idx].type == OPT_USERS) {
				if ((rc = set_users(&ld, &cfg, &options[idx], &doc, v, line)))
					goto fail;
				continue;
			}
			if (v->type != YAML_SCALAR_NODE) {
				rc = fail(&ld, line, "%s.%s: expected a single value, found %s", section, key,
				          node_kind(v));
				goto fail;
			}
			if (strlen((const char *)v->data.scalar.value) != v->data.scalar.length) {
				rc = fail(&ld, line, "%s.%s: must not hold control characters", section, key);
				goto fail; /* a "\0" escape would cut the value short */
			}
			if ((rc = set_option(&ld, &cfg, &options[idx], (const char *)v->data.scalar.value,
			                     line)))
				goto fail;
		}
	}
	for (size_t i = 0; i < NOPTIONS; i++) {
		if (options[i].required && !seen[i]) {
			rc = fail(&ld, 0, "missing required key '%s.%s'", options[i].section, options[i].key);
			goto fail;
		}
	}
	if (!cfg.as_url) /* an IPv6 literal goes in brackets (RFC 3986, 3.2.2) */
		cfg.as_url = xasprintf(strchr(cfg.listen_address, ':') ? "http://[%s]:%u" : "http://%s:%u",
		                       cfg.listen_address, cfg.listen_port);
	/* Trailing slashes would double up when paths are appended. */
	for (size_t n = strlen(cfg.hs_url); n > 0 && cfg.hs_url[n - 1] == '/'; n--)
		cfg.hs_url[n - 1] = '\0';
	cfg.bot_user_id = xasprintf("@%s:%s", cfg.bot_localpart, cfg.server_name);
	if (!cfg.audit_key_path)
		cfg.audit_key_path = xasprintf("%s/audit-signing.key", cfg.store_path);
	cfg.path = xstrdup(path);
	yaml_document_delete(&doc);
	*out = cfg;
	return TH_OK;
fail:
	yaml_document_delete(&doc);
	config_free(&cfg);
	return TH_ECONFIG;
}

/* A new string: @s with regex metacharacters escaped, to match literally. */
static char *regex_literal(const char *s)
{
	char *out = xmalloc(2 * strlen(s) + 1), *o = out;
	for (const char *p = s; *p; p++) {
		if (strchr("\\.^$|?*+()[]{}", *p))
			*o++ = '\\';
		*o++ = *p;
	}
	*o = '\0';
	return out;
}

char *config_user_regex(const struct config *cfg)
{
	char *bot = regex_literal(cfg->bot_localpart);
	char *guest = regex_literal(cfg->guest_prefix);
	char *server = regex_literal(cfg->server_name);
	/* spec: registration regexes are matched from the start only; anchor both ends. */
	char *out = xasprintf("^@(%s|%s[0-9a-f]{32}):%s$", bot, guest, server);
	free(bot);
	free(guest);
	free(server);
	return out;
}

int config_user_in_namespace(const struct config *cfg, const char *user_id)
{
	if (!user_id || user_id[0] != '@')
		return 0;
	if (strcmp(user_id, cfg->bot_user_id) == 0)
		return 1;
	size_t plen = strlen(cfg->guest_prefix);
	const char *p = user_id + 1;
	if (strncmp(p, cfg->guest_prefix, plen) != 0)
		return 0;
	p += plen;
	for (int i = 0; i < 32; i++, p++) {
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return 0;
	}
	return *p == ':' && strcmp(p + 1, cfg->server_name) == 0;
}

/* Single-quote a YAML scalar, doubling any quote inside. */
static char *yaml_quote(const char *s)
{
	size_t n = 2;
	for (const char *p = s; *p; p++)
		n += *p == '\'' ? 2 : 1;
	char *out = xmalloc(n + 1), *o = out;
	*o++ = '\'';
	for (const char *p = s; *p; p++) {
		if (*p == '\'')
			*o++ = '\'';
		*o++ = *p;
	}
	*o++ = '\'';
	*o = '\0';
	return out;
}

int config_write_registration(const struct config *cfg, const char *path, int force)
{
	struct stat sb;
	if (!force && stat(path, &sb) == 0)
		return TH_EEXIST;
	char as_token[65], hs_token[65];
	if (th_random_hex(as_token, 32) || th_random_hex(hs_token, 32))
		return TH_EIO;
	char *regex = config_user_regex(cfg);
	/* Every value quoted: a plain "-" would be a YAML list. */
	char *qregex = yaml_quote(regex), *qurl = yaml_quote(cfg->as_url);
	char *qid = yaml_quote(cfg->as_id), *qsender = yaml_quote(cfg->bot_localpart);
	char *text = xasprintf("# Threshold application service registration, written by\n"
	                       "# `threshold generate-registration`.  Give this file to the homeserver\n"
	                       "# (Synapse: app_service_config_files) and keep it secret: it holds both\n"
	                       "# tokens.  Threshold reads the tokens from here too.\n"
	                       "id: %s\n"
	                       "url: %s\n"
	                       "as_token: %s\n"
	                       "hs_token: %s\n"
	                       "sender_localpart: %s\n"
	                       "rate_limited: false\n"
	                       "namespaces:\n"
	                       "  users:\n"
	                       "    - exclusive: true\n"
	                       "      regex: %s\n"
	                       "  aliases: []\n"
	                       "  rooms: []\n",
	                       qid, qurl, as_token, hs_token, qsender, qregex);
	int rc = th_write_file_atomic(path, text, strlen(text), 0600);
	explicit_bzero(text, strlen(text));
	explicit_bzero(as_token, sizeof(as_token));
	explicit_bzero(hs_token, sizeof(hs_token));
	free(text);
	free(regex);
	free(qregex);
	free(qurl);
	free(qid);
	free(qsender);
	return rc;
}

int config_load_registration(struct config *cfg, char *err, size_t errlen)
{
	struct loader ld = {cfg->registration, err, errlen};
	yaml_document_t doc;
	int rc = load_file(&ld, &doc);
	if (rc)
		return rc;
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	const char *id = NULL, *as = NULL, *hs = NULL, *sender = NULL, *url = NULL;
	size_t url_line = 0;
	if (root->type != YAML_MAPPING_NODE) {
		rc = fail(&ld, 1, "a registration file must be a mapping");
		goto out;
	}
	for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(&doc, p->key);
		yaml_node_t *v = yaml_document_get_node(&doc, p->value);
		if (k->type != YAML_SCALAR_NODE || v->type != YAML_SCALAR_NODE)
			continue;
		const char *key = (const char *)k->data.scalar.value;
		const char *val = (const char *)v->data.scalar.value;
		if (!strcmp(key, "id"))
			id = val;
		else if (!strcmp(key, "as_token"))
			as = val;
		else if (!strcmp(key, "hs_token"))
			hs = val;
		else if (!strcmp(key, "sender_localpart"))
			sender = val;
		else if (!strcmp(key, "url")) {
			url = val;
			url_line = k->start_mark.line + 1;
		}
	}
	if (!as || strlen(as) < 16 || !hs || strlen(hs) < 16) {
		rc = fail(&ld, 0,
		          "as_token and hs_token must be present and at least 16 characters;"
		          " run `threshold generate-registration`");
		goto out;
	}
	if (!id || strcmp(id, cfg->as_id) != 0) {
		rc = fail(&ld, 0, "id '%s' does not match appservice.id '%s' in %s", id ? id : "", cfg->as_id,
		          cfg->path);
		goto out;
	}
	if (!sender || strcmp(sender, cfg->bot_localpart) != 0) {
		rc = fail(&ld, 0, "sender_localpart '%s' does not match appservice.bot_localpart '%s' in %s",
		          sender ? sender : "", cfg->bot_localpart, cfg->path);
		goto out;
	}
	if (url && strcmp(url, cfg->as_url) != 0)
		fprintf(stderr, "threshold: %s:%zu: warning: url '%s' differs from appservice.url '%s'\n",
		        cfg->registration, url_line, url, cfg->as_url);
	free(cfg->as_token);
	free(cfg->hs_token);
	cfg->as_token = xstrdup(as);
	cfg->hs_token = xstrdup(hs);
	rc = TH_OK;
out:
	yaml_document_delete(&doc);
	return rc;
}

void config_free(struct config *cfg)
{
	for (size_t i = 0; i < NOPTIONS; i++) {
		void *f = (char *)cfg + options[i].offset;
		switch (options[i].type) {
		case OPT_UINT:
		case OPT_SIZE:
		case OPT_BOOL:
			break;
		case OPT_USERS:
			for (size_t j = 0; j < ((struct config_users *)f)->n; j++)
				free(((struct config_users *)f)->v[j]);
			free(((struct config_users *)f)->v);
			break;
		default:
			free(*(char **)f);
			*(char **)f = NULL;
		}
	}
	if (cfg->as_token)
		explicit_bzero(cfg->as_token, strlen(cfg->as_token));
	if (cfg->hs_token)
		explicit_bzero(cfg->hs_token, strlen(cfg->hs_token));
	free(cfg->as_token);
	free(cfg->hs_token);
	free(cfg->bot_user_id);
	free(cfg->path);
	memset(cfg, 0, sizeof(*cfg));
}
