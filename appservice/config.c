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
#include <strings.h>
#include <sys/stat.h>

#include <yaml.h>

#include "helper.h"
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
	OPT_USERS, /* a list of user ids */
	OPT_ROOMS, /* a list of room ids */
	OPT_WORDS, /* a list of short words (language codes) */
	OPT_TURNS, /* a list of TURN server URIs (RFC 7065): turn:host[:port][?transport=udp|tcp] */
	OPT_TEXT,  /* a string that may span lines (notices, greetings) */

	/* "30d", "12h", "90m", "45s": unsigned seconds within min..max */
	OPT_DURATION,
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
        {"homeserver", "admin_token_file", OPT_STRING, OFF(hs_admin_token_file), 0, NULL, 0, 0},
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
        {"store", "guest_share_percent", OPT_UINT, OFF(guest_share_percent), 0, "80", 10, 95},
        {"client", "timeout_ms", OPT_UINT, OFF(client_timeout_ms), 0, "30000", 100, 600000},
        {"client", "connect_timeout_ms", OPT_UINT, OFF(client_connect_timeout_ms), 0, "5000", 100, 600000},
        {"client", "outbox_max_backoff_ms", OPT_UINT, OFF(outbox_max_backoff_ms), 0, "60000", 1000, 3600000},
        {"outbox", "concurrency", OPT_UINT, OFF(outbox_concurrency), 0, "8", 2, 64},
        {"outbox", "give_up_after_seconds", OPT_UINT, OFF(outbox_give_up_s), 0, "3600", 5, 2592000},
        {"outbox", "max_pending_guest", OPT_UINT, OFF(outbox_max_pending_guest), 0, "50000", 100, 10000000},
        {"log", "level", OPT_LEVEL, OFF(log_level), 0, "info", 0, 0},
        {"roles", "staff", OPT_USERS, OFF(staff), 0, NULL, 0, 0},
        {"roles", "staff_all_local", OPT_BOOL, OFF(staff_all_local), 0, "false", 0, 0},
        {"roles", "staff_rooms", OPT_ROOMS, OFF(staff_rooms), 0, NULL, 0, 0},
        {"guests", "pseudonym_per_room", OPT_BOOL, OFF(pseudonym_per_room), 0, "false", 0, 0},
        {"rooms", "federate", OPT_BOOL, OFF(rooms_federate), 0, "false", 0, 0},
        {"rooms", "staff_power", OPT_UINT, OFF(staff_power), 0, "50", 1, 99},
        {"safeguarding", "room", OPT_ROOM, OFF(safeguarding_room), 0, NULL, 0, 0},
        {"safeguarding", "leads", OPT_USERS, OFF(leads), 0, NULL, 0, 0},
        {"safeguarding", "concern_reaction", OPT_STRING, OFF(concern_reaction), 0, "⚠️", 0, 0},
        {"safeguarding", "response_seconds_low", OPT_UINT, OFF(response_low_s), 0, "604800", 1, 31536000},
        {"safeguarding", "response_seconds_medium", OPT_UINT, OFF(response_medium_s), 0, "86400", 1,
         31536000},
        {"safeguarding", "response_seconds_high", OPT_UINT, OFF(response_high_s), 0, "3600", 1, 31536000},
        {"safeguarding", "reminder_seconds", OPT_UINT, OFF(reminder_s), 0, "3600", 1, 604800},
        {"audit", "key_file", OPT_STRING, OFF(audit_key_path), 0, NULL, 0, 0},
        {"audit", "checkpoint_every", OPT_UINT, OFF(audit_checkpoint_every), 0, "1000", 1, 1000000},
        {"audit", "checkpoint_seconds", OPT_UINT, OFF(audit_checkpoint_seconds), 0, "300", 1, 86400},
        {"audit", "witness_room", OPT_ROOM, OFF(audit_witness_room), 0, NULL, 0, 0},
        {"gateway", "listen_address", OPT_STRING, OFF(gw_listen_address), 0, "127.0.0.1", 0, 0},
        {"gateway", "listen_port", OPT_UINT, OFF(gw_listen_port), 0, "29334", 1, 65535},
        {"gateway", "public_url", OPT_URL, OFF(gw_public_url), 0, NULL, 0, 0},
        {"gateway", "page_title", OPT_STRING, OFF(gw_page_title), 0, "Notes", 0, 0},
        {"gateway", "exit_url", OPT_URL, OFF(gw_exit_url), 0, "https://www.wikipedia.org/", 0, 0},
        {"gateway", "languages", OPT_WORDS, OFF(gw_languages), 0, NULL, 0, 0},
        {"gateway", "session_hours", OPT_UINT, OFF(gw_session_hours), 0, "24", 1, 8760},
        {"gateway", "resume_codes", OPT_BOOL, OFF(gw_resume_codes), 0, "true", 0, 0},
        {"gateway", "max_body_bytes", OPT_SIZE, OFF(gw_max_body_bytes), 0, "65536", 1024, 1048576},
        {"gateway", "max_upload_bytes", OPT_SIZE, OFF(gw_max_upload_bytes), 0, "4194304", 0, 52428800},
        {"gateway", "accept_pdf", OPT_BOOL, OFF(gw_accept_pdf), 0, "false", 0, 0},
        {"gateway", "max_media_bytes", OPT_SIZE, OFF(gw_max_media_bytes), 0, "10485760", 65536, 52428800},
        {"gateway", "max_message_bytes", OPT_UINT, OFF(gw_max_message_bytes), 0, "4000", 16, 65536},
        {"gateway", "max_connections", OPT_UINT, OFF(gw_max_connections), 0, "8192", 16, 100000},
        {"gateway", "session_rate_per_minute", OPT_UINT, OFF(gw_session_rate), 0, "120", 1, 100000},
        {"gateway", "address_rate_per_minute", OPT_UINT, OFF(gw_address_rate), 0, "30", 1, 100000},
        {"gateway", "trust_forwarded_for", OPT_BOOL, OFF(gw_trust_forwarded_for), 0, "false", 0, 0},
        {"gateway", "public_per_address_per_hour", OPT_UINT, OFF(gw_public_per_address), 0, "4", 1, 10000},
        {"gateway", "max_connections_per_address", OPT_UINT, OFF(gw_max_conn_per_address), 0, "64", 0,
         100000},
        {"gateway", "max_body_bytes_in_flight", OPT_SIZE, OFF(gw_max_body_in_flight), 0, "67108864", 1048576,
         4294967296},
        {"gateway", "max_polls_per_guest", OPT_UINT, OFF(gw_max_polls_per_guest), 0, "4", 1, 1000},
        {"gateway", "guest_bytes_per_hour", OPT_SIZE, OFF(gw_guest_bytes_per_hour), 0, "8388608", 65536,
         1073741824},
        {"gateway", "conversation_bytes_total", OPT_SIZE, OFF(gw_conversation_bytes_total), 0, "268435456",
         1048576, 68719476736},
        {"gateway", "max_blob_bytes_held", OPT_SIZE, OFF(gw_max_blob_bytes_held), 0, "268435456", 1048576,
         68719476736},
        {"gateway", "waiting_notice_seconds", OPT_UINT, OFF(gw_waiting_notice_s), 0, "60", 0, 3600},
        {"calls", "enabled", OPT_BOOL, OFF(calls_enabled), 0, "false", 0, 0},
        {"calls", "turn_uris", OPT_TURNS, OFF(calls_turn_uris), 0, NULL, 0, 0},
        {"calls", "turn_shared_secret", OPT_STRING, OFF(calls_turn_secret), 0, NULL, 0, 0},
        {"calls", "turn_ttl_seconds", OPT_UINT, OFF(calls_turn_ttl_s), 0, "3600", 300, 86400},
        {"metrics", "enabled", OPT_BOOL, OFF(metrics_enabled), 0, "false", 0, 0},
        {"metrics", "bind", OPT_STRING, OFF(metrics_bind), 0, "127.0.0.1", 0, 0},
        {"metrics", "port", OPT_UINT, OFF(metrics_port), 0, "29335", 1, 65535},
        {"sms", "enabled", OPT_BOOL, OFF(sms_enabled), 0, "false", 0, 0},
        {"sms", "driver", OPT_STRING, OFF(sms_driver), 0, "kannel", 0, 0},
        {"sms", "listen_address", OPT_STRING, OFF(sms_listen_address), 0, "127.0.0.1", 0, 0},
        {"sms", "listen_port", OPT_UINT, OFF(sms_listen_port), 0, "29336", 0, 65535},
        {"sms", "secret", OPT_STRING, OFF(sms_secret), 0, NULL, 0, 0},
        {"sms", "kannel_sendsms_url", OPT_URL, OFF(sms_kannel_sendsms_url), 0, NULL, 0, 0},
        {"sms", "kannel_username", OPT_STRING, OFF(sms_kannel_username), 0, NULL, 0, 0},
        {"sms", "kannel_password", OPT_STRING, OFF(sms_kannel_password), 0, NULL, 0, 0},
        {"sms", "twilio_account_sid", OPT_STRING, OFF(sms_twilio_account_sid), 0, NULL, 0, 0},
        {"sms", "twilio_auth_token", OPT_STRING, OFF(sms_twilio_auth_token), 0, NULL, 0, 0},
        {"sms", "twilio_api_url", OPT_URL, OFF(sms_twilio_api_url), 0, "https://api.twilio.com", 0, 0},
        {"sms", "twilio_webhook_url", OPT_URL, OFF(sms_twilio_webhook_url), 0, NULL, 0, 0},
        {"sms", "per_number_per_minute", OPT_UINT, OFF(sms_per_number_per_minute), 0, "10", 1, 10000},
        {"sms", "per_service_per_minute", OPT_UINT, OFF(sms_per_service_per_minute), 0, "600", 1, 1000000},
        {"sms", "max_body_bytes", OPT_SIZE, OFF(sms_max_body_bytes), 0, "16384", 1024, 1048576},
        {"sms", "key_file", OPT_STRING, OFF(sms_key_file), 0, NULL, 0, 0},
        {"whatsapp", "enabled", OPT_BOOL, OFF(wa_enabled), 0, "false", 0, 0},
        {"whatsapp", "listen_address", OPT_STRING, OFF(wa_listen_address), 0, "127.0.0.1", 0, 0},
        {"whatsapp", "listen_port", OPT_UINT, OFF(wa_listen_port), 0, "29337", 0, 65535},
        {"whatsapp", "app_secret_file", OPT_STRING, OFF(wa_app_secret_file), 0, NULL, 0, 0},
        {"whatsapp", "verify_token_file", OPT_STRING, OFF(wa_verify_token_file), 0, NULL, 0, 0},
        {"whatsapp", "access_token_file", OPT_STRING, OFF(wa_access_token_file), 0, NULL, 0, 0},
        {"whatsapp", "graph_url", OPT_URL, OFF(wa_graph_url), 0, "https://graph.facebook.com", 0, 0},
        {"whatsapp", "api_version", OPT_STRING, OFF(wa_api_version), 0, "v21.0", 0, 0},
        {"whatsapp", "template_name", OPT_STRING, OFF(wa_template_name), 0, NULL, 0, 0},
        {"whatsapp", "template_language", OPT_STRING, OFF(wa_template_language), 0, "en", 0, 0},
        {"whatsapp", "window", OPT_DURATION, OFF(wa_window_s), 0, "24h", 1, 86400},
        {"whatsapp", "per_number_per_minute", OPT_UINT, OFF(wa_per_number_per_minute), 0, "10", 1, 10000},
        {"whatsapp", "per_service_per_minute", OPT_UINT, OFF(wa_per_service_per_minute), 0, "600", 1,
         1000000},
        {"whatsapp", "max_body_bytes", OPT_SIZE, OFF(wa_max_body_bytes), 0, "65536", 1024, 1048576},
        {"whatsapp", "max_media_bytes", OPT_SIZE, OFF(wa_max_media_bytes), 0, "5242880", 65536, 16777216},
        {"whatsapp", "key_file", OPT_STRING, OFF(wa_key_file), 0, NULL, 0, 0},
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

#define SOFF(f) offsetof(struct config_service, f)

/* The keys of each services.<name> mapping ("notice" is read by load_notices). */
static const struct option service_options[] = {
        {"service", "display_name", OPT_STRING, SOFF(display_name), 1, NULL, 0, 0},
        {"service", "staff_room", OPT_ROOM, SOFF(staff_room), 1, NULL, 0, 0},
        {"service", "greeting", OPT_TEXT, SOFF(greeting), 0,
         "Thank you for getting in touch. Someone will be with you soon.", 0, 0},
        {"service", "notice_version", OPT_STRING, SOFF(notice_version), 0, "1", 0, 0},
        {"service", "public_entry", OPT_BOOL, SOFF(public_entry), 0, "false", 0, 0},
        {"service", "public_per_hour", OPT_UINT, SOFF(public_per_hour), 0, "60", 1, 100000},
        {"service", "invite_uses", OPT_UINT, SOFF(invite_uses), 0, "1", 1, 10000},
        {"service", "invite_expiry_hours", OPT_UINT, SOFF(invite_expiry_hours), 0, "168", 1, 8760},
        {"service", "conversation_expiry_days", OPT_UINT, SOFF(conversation_expiry_days), 0, "30", 1, 3650},
        {"service", "inviters", OPT_USERS, SOFF(inviters), 0, NULL, 0, 0},
        {"service", "sms_number", OPT_STRING, SOFF(sms_number), 0, NULL, 0, 0},
        {"service", "whatsapp_phone_number_id", OPT_STRING, SOFF(wa_phone_number_id), 0, NULL, 0, 0},
        {"service", "retention", OPT_DURATION, SOFF(retention_s), 0, NULL, 10, 3153600000},
        {"service", "duty_leads", OPT_USERS, SOFF(duty_leads), 0, NULL, 0, 0},
        {"service", "escalate_after_seconds", OPT_UINT, SOFF(escalate_after_s), 0, "0", 0, 604800},
        {"service", "escalate_every_seconds", OPT_UINT, SOFF(escalate_every_s), 0, "0", 0, 604800},
};
#define NSERVICE_OPTIONS (sizeof(service_options) / sizeof(service_options[0]))
#define MAX_SERVICES     256
#define MAX_NOTICE_BYTES 16384

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

/* "!opaque:server" (spec: room identifiers), as OPT_ROOM takes it. */
static int room_id_ok(const char *s)
{
	return s[0] == '!' && strchr(s, ':') != NULL;
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

/* has_control(), allowing the newlines and tabs of a multi-line text. */
static int has_control_but_lines(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p < 0x20 && *p != '\n' && *p != '\t') || *p == 0x7f)
			return 1;
	}
	return 0;
}

/* Check and store one value; @text is the YAML scalar (or a default). */
static int set_option(struct loader *ld, void *base, const char *section, const struct option *o,
                      const char *text, size_t line)
{
	char *field = (char *)base + o->offset;
	uint64_t v;
	switch (o->type) {
	case OPT_URL:
		if (strncmp(text, "http://", 7) != 0 && strncmp(text, "https://", 8) != 0)
			return fail(ld, line, "%s.%s: \"%s\" is not an http:// or https:// URL", section,
			            o->key, text);
		goto string;
	case OPT_LOCALPART:
		if (!localpart_ok(text))
			return fail(ld, line, "%s.%s: \"%s\" may hold only a-z, 0-9 and ._=-/", section,
			            o->key, text);
		goto string;
	case OPT_LEVEL:
		if (strcmp(text, "error") && strcmp(text, "warn") && strcmp(text, "info") &&
		    strcmp(text, "debug"))
			return fail(ld, line, "%s.%s: \"%s\" is not one of error, warn, info, debug", section,
			            o->key, text);
		goto string;
	case OPT_ROOM:
		if (!room_id_ok(text))
			return fail(ld, line,
			            "%s.%s: \"%s\" is not a room id (\"!opaque:server\"); find it in "
			            "Element under Room settings, Advanced",
			            section, o->key, text);
		goto string;
	case OPT_BOOL:
		if (!strcmp(text, "true") || !strcmp(text, "yes") || !strcmp(text, "on"))
			*(int *)field = 1;
		else if (!strcmp(text, "false") || !strcmp(text, "no") || !strcmp(text, "off"))
			*(int *)field = 0;
		else
			return fail(ld, line, "%s.%s: \"%s\" is not true or false", section, o->key, text);
		return TH_OK;
	case OPT_USERS:
	case OPT_WORDS:
	case OPT_ROOMS:
	case OPT_TURNS:
		return TH_EINVAL; /* lists are read by set_list() */
	case OPT_TEXT:
	case OPT_STRING:
	string:
		if (!*text)
			return fail(ld, line, "%s.%s: must not be empty", section, o->key);
		if (o->type == OPT_TEXT ? has_control_but_lines(text) : has_control(text))
			return fail(ld, line, "%s.%s: must not hold control characters", section, o->key);
		free(*(char **)field);
		*(char **)field = xstrdup(text);
		return TH_OK;
	case OPT_DURATION: {
		size_t n = strlen(text);
		static const char units[] = "smhd";
		static const uint64_t mult[] = {1, 60, 3600, 86400};
		const char *u = n >= 2 ? strchr(units, text[n - 1]) : NULL;
		char *num = u ? xstrndup(text, n - 1) : NULL;
		int bad = !u || th_parse_u64(num, UINT64_MAX / 86400, &v) != TH_OK;
		free(num);
		if (bad)
			return fail(ld, line,
			            "%s.%s: \"%s\" is not a duration (a whole number and a unit: "
			            "30d, 12h, 90m, 45s)",
			            section, o->key, text);
		v *= mult[u - units];
		if (v < o->min || v > o->max)
			return fail(ld, line, "%s.%s: %s is out of range (%llu seconds..%llu days)", section,
			            o->key, text, (unsigned long long)o->min,
			            (unsigned long long)(o->max / 86400));
		*(unsigned *)field = (unsigned)v;
		return TH_OK;
	}
	case OPT_UINT:
	case OPT_SIZE:
		if (th_parse_u64(text, UINT64_MAX, &v) != TH_OK)
			return fail(ld, line, "%s.%s: \"%s\" is not a whole number", section, o->key, text);
		if (v < o->min || v > o->max)
			return fail(ld, line, "%s.%s: %s is out of range (%llu..%llu)", section, o->key, text,
			            (unsigned long long)o->min, (unsigned long long)o->max);
		if (o->type == OPT_UINT)
			*(unsigned *)field = (unsigned)v;
		else
			*(size_t *)field = (size_t)v;
		return TH_OK;
	}
	return TH_EINVAL;
}

/* A language code: 2..8 of a-z and "-" ("en", "pt-br"). */
static int word_ok(const char *s)
{
	size_t n = strlen(s);
	return n >= 2 && n <= 8 && strspn(s, "abcdefghijklmnopqrstuvwxyz-") == n;
}

/* RFC 7065: "turn:" or "turns:", a host (a name, IPv4, or [IPv6]), an optional port and
 * ?transport=udp|tcp; nothing else (no user part: credentials are minted per guest). */
static int turn_uri_ok(const char *s)
{
	size_t n = strlen(s);
	const char *h = strncmp(s, "turn:", 5) == 0 ? s + 5 : strncmp(s, "turns:", 6) == 0 ? s + 6 : NULL;
	if (!h || n > 255)
		return 0;
	size_t hl = h[0] == '['
	                    ? strspn(h + 1, "0123456789abcdefABCDEF:.") + 2
	                    : strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");
	if (hl < 1 || (h[0] == '[' && h[hl - 1] != ']'))
		return 0;
	const char *p = h + hl;
	if (*p == ':') {
		size_t pl = strspn(p + 1, "0123456789");
		char port[6] = {0};
		uint64_t v = 0;
		if (pl < 1 || pl > 5)
			return 0;
		memcpy(port, p + 1, pl);
		if (th_parse_u64(port, 65535, &v) != TH_OK || v == 0)
			return 0;
		p += 1 + pl;
	}
	return *p == '\0' || strcmp(p, "?transport=udp") == 0 || strcmp(p, "?transport=tcp") == 0;
}

/* Read a YAML list of user ids (OPT_USERS), room ids (OPT_ROOMS) or language
 * codes (OPT_WORDS), or an empty value, into a config_ids. */
static int set_list(struct loader *ld, void *base, const char *section, const struct option *o,
                    yaml_document_t *doc, yaml_node_t *v, size_t line)
{
	struct config_ids *list = (struct config_ids *)((char *)base + o->offset);
	const char *what = o->type == OPT_ROOMS   ? "room ids, like [\"!abc:example.org\"]"
	                   : o->type == OPT_USERS ? "user ids, like [\"@alice:example.org\"]"
	                   : o->type == OPT_TURNS
	                           ? "TURN URIs, like [\"turn:turn.example.org:3478?transport=udp\"]"
	                           : "language codes, like [en, ar]";
	if (v->type == YAML_SCALAR_NODE && v->data.scalar.length == 0)
		return TH_OK;
	if (v->type != YAML_SEQUENCE_NODE)
		return fail(ld, line, "%s.%s: expected a list of %s", section, o->key, what);
	for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
		yaml_node_t *item = yaml_document_get_node(doc, *it);
		size_t iline = item->start_mark.line + 1;
		const char *text =
		        item->type == YAML_SCALAR_NODE ? (const char *)item->data.scalar.value : "?";
		int ok = o->type == OPT_ROOMS   ? room_id_ok(text)
		         : o->type == OPT_USERS ? user_id_ok(text)
		         : o->type == OPT_TURNS ? turn_uri_ok(text)
		                                : word_ok(text);
		if (item->type != YAML_SCALAR_NODE || !ok || has_control(text) ||
		    strlen(text) != item->data.scalar.length)
			return fail(ld, iline, "%s.%s: \"%s\" is not %s", section, o->key, text,
			            o->type == OPT_ROOMS   ? "a room id (\"!opaque:server\")"
			            : o->type == OPT_USERS ? "a user id (\"@name:server\")"
			            : o->type == OPT_TURNS
			                    ? "a TURN URI (turn:host[:port][?transport=udp|tcp])"
			                    : "a language code (like en or pt-br)");
		list->v = xrealloc(list->v, (list->n + 1) * sizeof(char *));
		list->v[list->n++] = xstrdup(text);
	}
	return TH_OK;
}

int config_ids_has(const struct config_ids *list, const char *id)
{
	for (size_t i = 0; id && i < list->n; i++) {
		if (strcmp(list->v[i], id) == 0)
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

/*
 * Read the keys of one mapping @p map against @p table into @p base.
 * @p label names the mapping in messages ("gateway", "services.helpline");
 * @p section, when not NULL, selects the table rows that belong to it.
 * @p seen marks the rows given; @p extra, when given, reads a key the table
 * does not have (returns 1 if it did not know it either).
 */
typedef int (*extra_key_fn)(struct loader *ld, void *base, const char *label, yaml_document_t *doc,
                            const char *key, yaml_node_t *v, size_t line, int *rc);

static int load_keys(struct loader *ld, yaml_document_t *doc, yaml_node_t *map, const struct option *table,
                     size_t ntable, const char *section, void *base, const char *label, unsigned char *seen,
                     extra_key_fn extra)
{
	int rc;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);
		yaml_node_t *v = yaml_document_get_node(doc, p->value);
		size_t line = k->start_mark.line + 1;
		const char *key = k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "?";
		size_t idx = ntable;
		for (size_t i = 0; i < ntable; i++) {
			if ((!section || !strcmp(table[i].section, section)) && !strcmp(table[i].key, key))
				idx = i;
		}
		if (idx == ntable) {
			if (extra && extra(ld, base, label, doc, key, v, line, &rc) == 0) {
				if (rc)
					return rc;
				continue;
			}
			const char *hint = section ? suggest(section, key) : NULL;
			for (size_t i = 0; !section && !hint && i < ntable; i++) {
				if (edit_distance(key, table[i].key) <= 2)
					hint = table[i].key;
			}
			return fail(ld, line, "unknown key '%s.%s'%s%s%s", label, key,
			            hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
		}
		if (seen[idx])
			return fail(ld, line, "%s.%s is given twice", label, key);
		seen[idx] = 1;
		if (table[idx].type == OPT_USERS || table[idx].type == OPT_WORDS ||
		    table[idx].type == OPT_ROOMS || table[idx].type == OPT_TURNS) {
			if ((rc = set_list(ld, base, label, &table[idx], doc, v, line)))
				return rc;
			continue;
		}
		if (v->type != YAML_SCALAR_NODE)
			return fail(ld, line, "%s.%s: expected a single value, found %s", label, key,
			            node_kind(v));
		if (strlen((const char *)v->data.scalar.value) != v->data.scalar.length) /* a "\0" escape */
			return fail(ld, line, "%s.%s: must not hold control characters", label, key);
		if ((rc = set_option(ld, base, label, &table[idx], (const char *)v->data.scalar.value, line)))
			return rc;
	}
	return TH_OK;
}

#define MAX_KEYWORDS      1000 /* per language */
#define MAX_KEYWORD_BYTES 200

/* services.<name>.concern_keywords: a mapping of language code to a list of
 * words or phrases (cases.c matches them). */
static int load_keywords(struct loader *ld, struct config_service *svc, const char *label,
                         yaml_document_t *doc, yaml_node_t *v, size_t line)
{
	if (v->type != YAML_MAPPING_NODE)
		return fail(ld, line,
		            "%s.concern_keywords: expected a mapping of language code to a list of words, "
		            "like en: [\"hurt me\"]",
		            label);
	for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);
		yaml_node_t *l = yaml_document_get_node(doc, p->value);
		size_t kline = k->start_mark.line + 1;
		const char *lang = k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "?";
		if (!word_ok(lang))
			return fail(ld, kline,
			            "%s.concern_keywords: \"%s\" is not a language code (like en or pt-br)",
			            label, lang);
		for (size_t i = 0; i < svc->nkeywords; i++) {
			if (!strcmp(svc->keywords[i].lang, lang))
				return fail(ld, kline, "%s.concern_keywords.%s is given twice", label, lang);
		}
		if (l->type != YAML_SEQUENCE_NODE)
			return fail(ld, kline, "%s.concern_keywords.%s: expected a list of words or phrases",
			            label, lang);
		svc->keywords = xrealloc(svc->keywords, (svc->nkeywords + 1) * sizeof(*svc->keywords));
		struct config_keywords *kw = &svc->keywords[svc->nkeywords++];
		kw->lang = xstrdup(lang);
		kw->words.v = NULL;
		kw->words.n = 0;
		for (yaml_node_item_t *it = l->data.sequence.items.start; it < l->data.sequence.items.top;
		     it++) {
			yaml_node_t *w = yaml_document_get_node(doc, *it);
			size_t wline = w->start_mark.line + 1;
			const char *text =
			        w->type == YAML_SCALAR_NODE ? (const char *)w->data.scalar.value : "";
			size_t n = w->type == YAML_SCALAR_NODE ? w->data.scalar.length : 0;
			if (!n || n > MAX_KEYWORD_BYTES || strlen(text) != n || has_control(text) ||
			    strspn(text, " ") == n)
				return fail(ld, wline,
				            "%s.concern_keywords.%s: each entry must be a word or phrase of "
				            "1..%u bytes, without control characters",
				            label, lang, MAX_KEYWORD_BYTES);
			if (kw->words.n == MAX_KEYWORDS)
				return fail(ld, wline, "%s.concern_keywords.%s: at most %u entries", label,
				            lang, MAX_KEYWORDS);
			kw->words.v = xrealloc(kw->words.v, (kw->words.n + 1) * sizeof(char *));
			kw->words.v[kw->words.n++] = xstrdup(text);
		}
	}
	return TH_OK;
}

/* services.<name>.hours (a mapping of day to "09:00-17:00" or "closed"),
 * .holidays (a list of dates) and .utc_offset ("+01:00"): hours.h. */
static int load_hours(struct loader *ld, struct config_service *svc, const char *label, yaml_document_t *doc,
                      const char *key, yaml_node_t *v, size_t line)
{
	struct hours_spec *h = &svc->hours;
	if (!strcmp(key, "utc_offset")) {
		if (v->type != YAML_SCALAR_NODE ||
		    hours_parse_offset((const char *)v->data.scalar.value, &h->offset_min))
			return fail(ld, line,
			            "%s.utc_offset: expected a UTC offset like \"+01:00\" or \"-05:30\" "
			            "(-14:00..+14:00), or \"UTC\"",
			            label);
		return TH_OK;
	}
	if (!strcmp(key, "holidays")) {
		if (v->type != YAML_SEQUENCE_NODE)
			return fail(ld, line, "%s.holidays: expected a list of dates, like [\"2026-12-25\"]",
			            label);
		for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
		     it++) {
			yaml_node_t *d = yaml_document_get_node(doc, *it);
			int32_t day;
			const char *text =
			        d->type == YAML_SCALAR_NODE ? (const char *)d->data.scalar.value : "?";
			if (d->type != YAML_SCALAR_NODE || hours_parse_date(text, &day))
				return fail(ld, d->start_mark.line + 1,
				            "%s.holidays: \"%s\" is not a date (YYYY-MM-DD)", label, text);
			if (h->nholidays == HOURS_MAX_HOLIDAYS)
				return fail(ld, d->start_mark.line + 1, "%s.holidays: at most %d dates",
				            label, HOURS_MAX_HOLIDAYS);
			h->holidays = xrealloc(h->holidays, (h->nholidays + 1) * sizeof(*h->holidays));
			h->holidays[h->nholidays++] = day;
		}
		return TH_OK;
	}
	if (v->type != YAML_MAPPING_NODE)
		return fail(
		        ld, line,
		        "%s.hours: expected a mapping of day to hours, like mon: \"09:00-17:00\" (days left "
		        "out are closed)",
		        label);
	h->set = 1;
	for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);
		yaml_node_t *t = yaml_document_get_node(doc, p->value);
		size_t kline = k->start_mark.line + 1;
		const char *day = k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "?";
		int i = hours_day_index(day);
		if (i < 0)
			return fail(ld, kline,
			            "%s.hours: \"%s\" is not a day (mon, tue, wed, thu, fri, sat, sun)",
			            label, day);
		if (t->type != YAML_SCALAR_NODE ||
		    hours_parse_day((const char *)t->data.scalar.value, h->day[i], &h->nday[i]))
			return fail(ld, kline,
			            "%s.hours.%s: expected \"09:00-17:00\", up to %d ranges in order like "
			            "\"09:00-12:00, 13:00-17:00\", or \"closed\"",
			            label, day, HOURS_MAX_RANGES);
	}
	return TH_OK;
}

/* A mapping of language code to text (services.<name>.signposting). */
static int load_texts(struct loader *ld, const char *label, const char *key, yaml_document_t *doc,
                      yaml_node_t *v, size_t line, struct config_notice **out, size_t *nout)
{
	if (v->type != YAML_MAPPING_NODE)
		return fail(ld, line, "%s.%s: expected a mapping of language code to text, like en: \"...\"",
		            label, key);
	for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);
		yaml_node_t *t = yaml_document_get_node(doc, p->value);
		size_t kline = k->start_mark.line + 1;
		const char *lang = k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "?";
		if (!word_ok(lang))
			return fail(ld, kline, "%s.%s: \"%s\" is not a language code (like en or pt-br)",
			            label, key, lang);
		if (t->type != YAML_SCALAR_NODE || t->data.scalar.length == 0 ||
		    t->data.scalar.length > MAX_NOTICE_BYTES ||
		    strlen((const char *)t->data.scalar.value) != t->data.scalar.length ||
		    has_control_but_lines((const char *)t->data.scalar.value))
			return fail(ld, kline,
			            "%s.%s.%s: expected the text (1..%u bytes, no control characters but "
			            "newlines and tabs)",
			            label, key, lang, MAX_NOTICE_BYTES);
		for (size_t i = 0; i < *nout; i++) {
			if (!strcmp((*out)[i].lang, lang))
				return fail(ld, kline, "%s.%s.%s is given twice", label, key, lang);
		}
		*out = xrealloc(*out, (*nout + 1) * sizeof(**out));
		(*out)[*nout].lang = xstrdup(lang);
		(*out)[*nout].text = xstrdup((const char *)t->data.scalar.value);
		(*nout)++;
	}
	return TH_OK;
}

#define MAX_HELPER_ENTRIES    20 /* answers per language */
#define MAX_HELPER_WORDS      10 /* keywords per answer */
#define MAX_HELPER_WORD_BYTES 100
#define MAX_HELPER_TEXT_BYTES 1000 /* a menu or an answer: a few text messages at most */

/* A scalar text of 1..@p max bytes without control characters but newlines
 * and tabs, or NULL. */
static const char *helper_text(const yaml_node_t *t, size_t max)
{
	if (t->type != YAML_SCALAR_NODE || t->data.scalar.length == 0 || t->data.scalar.length > max ||
	    strlen((const char *)t->data.scalar.value) != t->data.scalar.length ||
	    has_control_but_lines((const char *)t->data.scalar.value) ||
	    strspn((const char *)t->data.scalar.value, " \t\n") == t->data.scalar.length)
		return NULL;
	return (const char *)t->data.scalar.value;
}

/* One answer of services.<name>.helper.<lang>.answers: {number, keywords, text}. */
static int load_helper_entry(struct loader *ld, const char *label, yaml_document_t *doc, yaml_node_t *v,
                             struct config_helper *h, struct config_helper_entry *e)
{
	size_t line = v->start_mark.line + 1;
	size_t idx = h->nentries - 1;
	if (v->type != YAML_MAPPING_NODE)
		return fail(ld, line,
		            "%s.answers[%zu]: expected a mapping with number and/or keywords, and text",
		            label, idx);
	for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);
		yaml_node_t *t = yaml_document_get_node(doc, p->value);
		size_t kline = k->start_mark.line + 1;
		const char *key = k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "?";
		if (!strcmp(key, "number")) {
			const char *n = t->type == YAML_SCALAR_NODE ? (const char *)t->data.scalar.value : "";
			size_t len = strlen(n);
			if (len < 1 || len > 2 || strspn(n, "0123456789") != len || n[0] == '0')
				return fail(
				        ld, kline,
				        "%s.answers[%zu].number: expected 1..99 (0 always means \"talk to "
				        "a person\")",
				        label, idx);
			e->number = (unsigned)(n[0] - '0');
			if (len == 2)
				e->number = e->number * 10 + (unsigned)(n[1] - '0');
			for (size_t i = 0; i + 1 < h->nentries; i++) {
				if (h->entries[i].number == e->number)
					return fail(ld, kline,
					            "%s.answers[%zu].number: %u is answers[%zu]'s too", label,
					            idx, e->number, i);
			}
		} else if (!strcmp(key, "keywords")) {
			if (t->type != YAML_SEQUENCE_NODE)
				return fail(ld, kline,
				            "%s.answers[%zu].keywords: expected a list of words or "
				            "phrases",
				            label, idx);
			for (yaml_node_item_t *it = t->data.sequence.items.start;
			     it < t->data.sequence.items.top; it++) {
				yaml_node_t *w = yaml_document_get_node(doc, *it);
				size_t wline = w->start_mark.line + 1;
				const char *text = helper_text(w, MAX_HELPER_WORD_BYTES);
				if (!text || strchr(text, '\n') || strchr(text, '\t'))
					return fail(
					        ld, wline,
					        "%s.answers[%zu].keywords: each must be a word or phrase of "
					        "1..%u bytes on one line",
					        label, idx, MAX_HELPER_WORD_BYTES);
				if (pol_helper_is_person_word(text))
					return fail(
					        ld, wline,
					        "%s.answers[%zu].keywords: \"%s\" already means \"talk to a "
					        "person\"",
					        label, idx, text);
				for (size_t i = 0; i < h->nentries; i++) {
					for (size_t j = 0; j < h->entries[i].words.n; j++) {
						if (!strcasecmp(h->entries[i].words.v[j], text))
							return fail(
							        ld, wline,
							        "%s.answers[%zu].keywords: \"%s\" is given "
							        "twice",
							        label, idx, text);
					}
				}
				if (e->words.n == MAX_HELPER_WORDS)
					return fail(ld, wline, "%s.answers[%zu].keywords: at most %u", label,
					            idx, MAX_HELPER_WORDS);
				e->words.v = xrealloc(e->words.v, (e->words.n + 1) * sizeof(char *));
				e->words.v[e->words.n++] = xstrdup(text);
			}
		} else if (!strcmp(key, "text")) {
			const char *text = helper_text(t, MAX_HELPER_TEXT_BYTES);
			if (!text)
				return fail(ld, kline,
				            "%s.answers[%zu].text: expected the answer (1..%u bytes, no "
				            "control characters but newlines and tabs)",
				            label, idx, MAX_HELPER_TEXT_BYTES);
			free(e->text);
			e->text = xstrdup(text);
		} else {
			return fail(ld, kline,
			            "%s.answers[%zu]: unknown key '%s' (expected number, keywords, text)",
			            label, idx, key);
		}
	}
	if (!e->text)
		return fail(ld, line, "%s.answers[%zu]: missing required key 'text'", label, idx);
	if (!e->number && !e->words.n)
		return fail(ld, line, "%s.answers[%zu]: give a number, keywords, or both", label, idx);
	return TH_OK;
}

/* services.<name>.helper: a mapping of language code to {menu, answers}
 * (policy/helper.h decides when it speaks; docs/configuration.md). */
static int load_helper(struct loader *ld, struct config_service *svc, const char *label, yaml_document_t *doc,
                       yaml_node_t *v, size_t line)
{
	if (v->type != YAML_MAPPING_NODE)
		return fail(ld, line,
		            "%s.helper: expected a mapping of language code to its menu and answers, like "
		            "en: {menu: \"...\", answers: [...]}",
		            label);
	for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);
		yaml_node_t *m = yaml_document_get_node(doc, p->value);
		size_t kline = k->start_mark.line + 1;
		const char *lang = k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "?";
		if (!word_ok(lang))
			return fail(ld, kline, "%s.helper: \"%s\" is not a language code (like en or pt-br)",
			            label, lang);
		for (size_t i = 0; i < svc->nhelpers; i++) {
			if (!strcmp(svc->helpers[i].lang, lang))
				return fail(ld, kline, "%s.helper.%s is given twice", label, lang);
		}
		if (m->type != YAML_MAPPING_NODE)
			return fail(ld, kline, "%s.helper.%s: expected a mapping with menu and answers",
			            label, lang);
		svc->helpers = xrealloc(svc->helpers, (svc->nhelpers + 1) * sizeof(*svc->helpers));
		struct config_helper *h = &svc->helpers[svc->nhelpers++];
		memset(h, 0, sizeof(*h));
		h->lang = xstrdup(lang);
		char hl[160];
		snprintf(hl, sizeof(hl), "%s.helper.%s", label, lang);
		for (yaml_node_pair_t *q = m->data.mapping.pairs.start; q < m->data.mapping.pairs.top; q++) {
			yaml_node_t *mk = yaml_document_get_node(doc, q->key);
			yaml_node_t *mv = yaml_document_get_node(doc, q->value);
			size_t mline = mk->start_mark.line + 1;
			const char *key =
			        mk->type == YAML_SCALAR_NODE ? (const char *)mk->data.scalar.value : "?";
			if (!strcmp(key, "menu")) {
				const char *text = helper_text(mv, MAX_HELPER_TEXT_BYTES);
				if (!text)
					return fail(
					        ld, mline,
					        "%s.menu: expected the menu text (1..%u bytes, no control "
					        "characters but newlines and tabs)",
					        hl, MAX_HELPER_TEXT_BYTES);
				free(h->menu);
				h->menu = xstrdup(text);
			} else if (!strcmp(key, "answers")) {
				if (mv->type != YAML_SEQUENCE_NODE)
					return fail(ld, mline, "%s.answers: expected a list of answers", hl);
				for (yaml_node_item_t *it = mv->data.sequence.items.start;
				     it < mv->data.sequence.items.top; it++) {
					yaml_node_t *a = yaml_document_get_node(doc, *it);
					if (h->nentries == MAX_HELPER_ENTRIES)
						return fail(ld, a->start_mark.line + 1,
						            "%s.answers: at most %u", hl, MAX_HELPER_ENTRIES);
					h->entries =
					        xrealloc(h->entries, (h->nentries + 1) * sizeof(*h->entries));
					struct config_helper_entry *e = &h->entries[h->nentries++];
					memset(e, 0, sizeof(*e));
					int rc = load_helper_entry(ld, hl, doc, a, h, e);
					if (rc)
						return rc;
				}
			} else {
				return fail(ld, mline, "%s: unknown key '%s' (expected menu, answers)", hl,
				            key);
			}
		}
		if (!h->menu)
			return fail(ld, kline, "missing required key '%s.menu'", hl);
		if (!h->nentries)
			return fail(ld, kline, "%s.answers: give at least one answer", hl);
	}
	return TH_OK;
}

/* services.<name>.notice: a mapping of language code to text. */
static int service_extra(struct loader *ld, void *base, const char *label, yaml_document_t *doc,
                         const char *key, yaml_node_t *v, size_t line, int *rc)
{
	struct config_service *svc = base;
	*rc = TH_OK;
	if (strcmp(key, "concern_keywords") == 0) {
		*rc = load_keywords(ld, svc, label, doc, v, line);
		return 0;
	}
	if (!strcmp(key, "hours") || !strcmp(key, "holidays") || !strcmp(key, "utc_offset")) {
		*rc = load_hours(ld, svc, label, doc, key, v, line);
		return 0;
	}
	if (strcmp(key, "helper") == 0) {
		*rc = load_helper(ld, svc, label, doc, v, line);
		return 0;
	}
	if (strcmp(key, "signposting") == 0) {
		*rc = load_texts(ld, label, "signposting", doc, v, line, &svc->signposts, &svc->nsignposts);
		return 0;
	}
	if (strcmp(key, "notice") != 0)
		return 1;
	if (v->type != YAML_MAPPING_NODE) {
		*rc = fail(ld, line,
		           "%s.notice: expected a mapping of language code to text, like en: \"...\"", label);
		return 0;
	}
	for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);
		yaml_node_t *t = yaml_document_get_node(doc, p->value);
		size_t kline = k->start_mark.line + 1;
		const char *lang = k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "?";
		if (!word_ok(lang)) {
			*rc = fail(ld, kline, "%s.notice: \"%s\" is not a language code (like en or pt-br)",
			           label, lang);
			return 0;
		}
		if (t->type != YAML_SCALAR_NODE || t->data.scalar.length == 0 ||
		    t->data.scalar.length > MAX_NOTICE_BYTES ||
		    strlen((const char *)t->data.scalar.value) != t->data.scalar.length ||
		    has_control_but_lines((const char *)t->data.scalar.value)) {
			*rc = fail(ld, kline,
			           "%s.notice.%s: expected the notice text (1..%u bytes, no control "
			           "characters but newlines and tabs)",
			           label, lang, MAX_NOTICE_BYTES);
			return 0;
		}
		for (size_t i = 0; i < svc->nnotices; i++) {
			if (!strcmp(svc->notices[i].lang, lang)) {
				*rc = fail(ld, kline, "%s.notice.%s is given twice", label, lang);
				return 0;
			}
		}
		svc->notices = xrealloc(svc->notices, (svc->nnotices + 1) * sizeof(*svc->notices));
		svc->notices[svc->nnotices].lang = xstrdup(lang);
		svc->notices[svc->nnotices].text = xstrdup((const char *)t->data.scalar.value);
		svc->nnotices++;
	}
	return 0;
}

/* The default notice, when a service gives none: plain words a guest can
 * read in a minute.  docs/services.md explains how to write one. */
#define DEFAULT_NOTICE                                                                                \
	"This chat is run by the organisation named above. You do not need to give your name. "       \
	"Your messages are kept while the conversation is open and for the time the organisation's "  \
	"policy says, then deleted. Only the organisation's staff can read them. Staff may record a " \
	"safeguarding concern. You can stop at any time, and you can ask for your messages to be "    \
	"deleted with the \"Delete my data\" button."

static int load_services(struct loader *ld, yaml_document_t *doc, yaml_node_t *map, struct config *cfg)
{
	if (map->type == YAML_SCALAR_NODE && map->data.scalar.length == 0)
		return TH_OK;
	if (map->type != YAML_MAPPING_NODE)
		return fail(ld, map->start_mark.line + 1,
		            "services: expected a mapping of service name to its settings, found %s",
		            node_kind(map));
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);
		yaml_node_t *v = yaml_document_get_node(doc, p->value);
		size_t line = k->start_mark.line + 1;
		const char *name = k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "?";
		if (k->type != YAML_SCALAR_NODE || !localpart_ok(name) || strlen(name) > 64)
			return fail(ld, line,
			            "services: \"%s\" is not a service name (1..64 of a-z, 0-9 and ._=-/)",
			            name);
		if (config_service_find(cfg, name))
			return fail(ld, line, "services.%s is given twice", name);
		if (cfg->nservices == MAX_SERVICES)
			return fail(ld, line, "services: at most %u services", MAX_SERVICES);
		if (v->type != YAML_MAPPING_NODE)
			return fail(ld, line, "services.%s: expected a mapping of keys, found %s", name,
			            node_kind(v));
		cfg->services = xrealloc(cfg->services, (cfg->nservices + 1) * sizeof(*cfg->services));
		struct config_service *svc = &cfg->services[cfg->nservices++];
		memset(svc, 0, sizeof(*svc));
		svc->name = xstrdup(name);
		char label[96];
		snprintf(label, sizeof(label), "services.%s", name);
		int rc;
		for (size_t i = 0; i < NSERVICE_OPTIONS; i++) {
			if (service_options[i].def &&
			    (rc = set_option(ld, svc, label, &service_options[i], service_options[i].def, 0)))
				return rc;
		}
		unsigned char seen[NSERVICE_OPTIONS];
		memset(seen, 0, sizeof(seen));
		if ((rc = load_keys(ld, doc, v, service_options, NSERVICE_OPTIONS, NULL, svc, label, seen,
		                    service_extra)))
			return rc;
		for (size_t i = 0; i < NSERVICE_OPTIONS; i++) {
			if (service_options[i].required && !seen[i])
				return fail(ld, line, "missing required key '%s.%s'", label,
				            service_options[i].key);
		}
		if (!svc->nnotices) {
			svc->notices = xcalloc(1, sizeof(*svc->notices));
			svc->notices[0].lang = xstrdup("en");
			svc->notices[0].text = xstrdup(DEFAULT_NOTICE);
			svc->nnotices = 1;
		}
	}
	return TH_OK;
}

/* The sms: section's keys that only make sense together (docs/channels.md). */
static int check_sms(struct loader *ld, struct config *cfg)
{
	for (size_t i = 0; i < cfg->nservices; i++) {
		const char *n = cfg->services[i].sms_number;
		size_t digits = 0;
		for (const char *p = n; p && *p; p++) {
			if ((*p < '0' || *p > '9') && !(p == n && *p == '+'))
				return fail(
				        ld, 0,
				        "services.%s.sms_number: \"%s\" is not a phone number (+ and digits)",
				        cfg->services[i].name, n);
			digits += *p != '+';
		}
		if (n && (digits < 3 || digits > 20))
			return fail(ld, 0, "services.%s.sms_number: \"%s\" needs 3 to 20 digits",
			            cfg->services[i].name, n);
		for (size_t j = 0; n && j < i; j++) {
			if (cfg->services[j].sms_number && strcmp(cfg->services[j].sms_number, n) == 0)
				return fail(ld, 0, "services.%s.sms_number: %s is already services.%s's",
				            cfg->services[i].name, n, cfg->services[j].name);
		}
	}
	if (!cfg->sms_enabled)
		return TH_OK;
	if (strcmp(cfg->sms_driver, "kannel") == 0) {
		if (!cfg->sms_secret || strlen(cfg->sms_secret) < 16)
			return fail(ld, 0,
			            "sms.secret: the kannel driver needs a shared secret of at least 16 "
			            "characters (Kannel puts it in the URL it calls)");
		for (const char *p = cfg->sms_secret; *p; p++) {
			if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
				return fail(
				        ld, 0,
				        "sms.secret: only A-Z, a-z, 0-9, - and _ (it goes in a URL path)");
		}
		if (!cfg->sms_kannel_sendsms_url || !cfg->sms_kannel_username || !cfg->sms_kannel_password)
			return fail(ld, 0,
			            "sms.kannel_sendsms_url, sms.kannel_username and sms.kannel_password are "
			            "needed with driver kannel");
	} else if (strcmp(cfg->sms_driver, "twilio") == 0) {
		if (!cfg->sms_twilio_account_sid || !cfg->sms_twilio_auth_token ||
		    !cfg->sms_twilio_webhook_url)
			return fail(
			        ld, 0,
			        "sms.twilio_account_sid, sms.twilio_auth_token and sms.twilio_webhook_url "
			        "are needed with driver twilio");
	} else {
		return fail(ld, 0, "sms.driver: \"%s\" is not kannel or twilio", cfg->sms_driver);
	}
	size_t numbers = 0;
	for (size_t i = 0; i < cfg->nservices; i++)
		numbers += cfg->services[i].sms_number != NULL;
	if (!numbers)
		return fail(ld, 0, "sms.enabled: no service has an sms_number (services.<name>.sms_number)");
	return TH_OK;
}

/* The whatsapp: section's keys that only make sense together (docs/channels.md). */
static int check_whatsapp(struct loader *ld, struct config *cfg)
{
	size_t ids = 0;
	for (size_t i = 0; i < cfg->nservices; i++) {
		const char *n = cfg->services[i].wa_phone_number_id;
		if (!n)
			continue;
		ids++;
		if (!*n || strlen(n) > 32 || strspn(n, "0123456789") != strlen(n))
			return fail(ld, 0,
			            "services.%s.whatsapp_phone_number_id: \"%s\" is not a phone number id "
			            "(1 to 32 digits, as WhatsApp Manager shows it)",
			            cfg->services[i].name, n);
		for (size_t j = 0; j < i; j++) {
			const char *m = cfg->services[j].wa_phone_number_id;
			if (m && strcmp(m, n) == 0)
				return fail(
				        ld, 0,
				        "services.%s.whatsapp_phone_number_id: %s is already services.%s's",
				        cfg->services[i].name, n, cfg->services[j].name);
		}
	}
	if (!cfg->wa_enabled)
		return TH_OK;
	const char *v = cfg->wa_api_version;
	if (v[0] != 'v' || strlen(v) > 8 || strspn(v + 1, "0123456789.") != strlen(v) - 1 || !v[1])
		return fail(ld, 0, "whatsapp.api_version: \"%s\" is not a Graph API version, like v21.0", v);
	if (!cfg->wa_template_name || !cfg->wa_template_name[0] ||
	    strspn(cfg->wa_template_name, "abcdefghijklmnopqrstuvwxyz0123456789_") !=
	            strlen(cfg->wa_template_name))
		return fail(ld, 0,
		            "whatsapp.template_name: the approved template that invites a person back "
		            "(a-z, 0-9 and _) is needed when whatsapp.enabled is true");
	const char *tl = cfg->wa_template_language;
	if (!tl[0] || strlen(tl) > 15 ||
	    strspn(tl, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_") != strlen(tl))
		return fail(ld, 0,
		            "whatsapp.template_language: \"%s\" is not a language code, like en or en_US",
		            tl);
	const char *const keys[3] = {"app_secret_file", "verify_token_file", "access_token_file"};
	const char *const files[3] = {cfg->wa_app_secret_file, cfg->wa_verify_token_file,
	                              cfg->wa_access_token_file};
	for (size_t i = 0; i < 3; i++) {
		char why[160];
		if (!files[i])
			return fail(ld, 0, "whatsapp.%s is needed when whatsapp.enabled is true", keys[i]);
		if (th_private_file_check(files[i], why, sizeof(why)) != TH_OK)
			return fail(ld, 0, "whatsapp.%s: %s %s", keys[i], files[i], why);
	}
	if (!ids)
		return fail(ld, 0,
		            "whatsapp.enabled: no service has a whatsapp_phone_number_id "
		            "(services.<name>.whatsapp_phone_number_id)");
	return TH_OK;
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
		if (options[i].def &&
		    (rc = set_option(&ld, &cfg, options[i].section, &options[i], options[i].def, 0)))
			goto fail;
	}

	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (root->type != YAML_MAPPING_NODE) {
		rc = fail(&ld, root->start_mark.line + 1, "the top level must be a mapping of sections");
		goto fail;
	}
	int services_seen = 0;
	for (yaml_node_pair_t *sp = root->data.mapping.pairs.start; sp < root->data.mapping.pairs.top; sp++) {
		yaml_node_t *sk = yaml_document_get_node(&doc, sp->key);
		yaml_node_t *sv = yaml_document_get_node(&doc, sp->value);
		size_t sline = sk->start_mark.line + 1;
		if (sk->type != YAML_SCALAR_NODE) {
			rc = fail(&ld, sline, "section names must be plain words");
			goto fail;
		}
		const char *section = (const char *)sk->data.scalar.value;
		if (strcmp(section, "services") == 0) {
			if (services_seen++) {
				rc = fail(&ld, sline, "services is given twice");
				goto fail;
			}
			if ((rc = load_services(&ld, &doc, sv, &cfg)))
				goto fail;
			continue;
		}
		int known = 0;
		for (size_t i = 0; i < NOPTIONS; i++)
			known |= strcmp(options[i].section, section) == 0;
		if (!known) {
			const char *hint = suggest(NULL, section);
			if (!hint && edit_distance(section, "services") <= 2)
				hint = "services";
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
		if ((rc = load_keys(&ld, &doc, sv, options, NOPTIONS, section, &cfg, section, seen, NULL)))
			goto fail;
	}
	for (size_t i = 0; i < NOPTIONS; i++) {
		if (options[i].required && !seen[i]) {
			rc = fail(&ld, 0, "missing required key '%s.%s'", options[i].section, options[i].key);
			goto fail;
		}
	}
	if (cfg.gw_max_body_in_flight < cfg.gw_max_upload_bytes) { /* one upload must always fit */
		rc = fail(&ld, 0,
		          "gateway.max_body_bytes_in_flight (%zu) must be at least gateway.max_upload_bytes "
		          "(%zu)",
		          cfg.gw_max_body_in_flight, cfg.gw_max_upload_bytes);
		goto fail;
	}
	if ((rc = check_sms(&ld, &cfg)))
		goto fail;
	if (!cfg.sms_key_file)
		cfg.sms_key_file = xasprintf("%s/sms-lookup.key", cfg.store_path);
	if ((rc = check_whatsapp(&ld, &cfg)))
		goto fail;
	if (!cfg.wa_key_file)
		cfg.wa_key_file = xasprintf("%s/whatsapp-lookup.key", cfg.store_path);
	if (cfg.hs_admin_token_file) { /* checked now, read only by the jobs of hs_admin.h */
		char why[160];
		/* A file not there (yet) is said at start and by doctor; one that
		 * others can read is refused here. */
		int hrc = th_private_file_check(cfg.hs_admin_token_file, why, sizeof(why));
		if (hrc != TH_OK && hrc != TH_ENOTFOUND) {
			rc = fail(&ld, 0, "homeserver.admin_token_file: %s %s", cfg.hs_admin_token_file, why);
			goto fail;
		}
	}
	if (cfg.calls_enabled && (!cfg.calls_turn_uris.n || !cfg.calls_turn_secret)) {
		rc = fail(&ld, 0,
		          "calls.enabled is true, but calls.%s is not given (calls are relayed by TURN "
		          "only: docs/calls.md)",
		          !cfg.calls_turn_uris.n ? "turn_uris" : "turn_shared_secret");
		goto fail;
	}
	if (cfg.calls_turn_secret && strlen(cfg.calls_turn_secret) < 16) {
		rc = fail(&ld, 0,
		          "calls.turn_shared_secret must be at least 16 characters (a random one: "
		          "openssl rand -hex 32)");
		goto fail;
	}
	if (!cfg.as_url) /* an IPv6 literal goes in brackets (RFC 3986, 3.2.2) */
		cfg.as_url = xasprintf(strchr(cfg.listen_address, ':') ? "http://[%s]:%u" : "http://%s:%u",
		                       cfg.listen_address, cfg.listen_port);
	if (!cfg.gw_public_url)
		cfg.gw_public_url =
		        xasprintf(strchr(cfg.gw_listen_address, ':') ? "http://[%s]:%u" : "http://%s:%u",
		                  cfg.gw_listen_address, cfg.gw_listen_port);
	/* A service's staff room is a staff room: its members are staff (they
	 * answer the service, and its conversation rooms let them in). */
	for (size_t i = 0; i < cfg.nservices; i++) {
		if (!config_ids_has(&cfg.staff_rooms, cfg.services[i].staff_room)) {
			cfg.staff_rooms.v =
			        xrealloc(cfg.staff_rooms.v, (cfg.staff_rooms.n + 1) * sizeof(char *));
			cfg.staff_rooms.v[cfg.staff_rooms.n++] = xstrdup(cfg.services[i].staff_room);
		}
	}
	if (!cfg.gw_languages.n) {
		static const char *const defaults[] = {"en", "es", "fr", "ar"};
		cfg.gw_languages.v = xcalloc(4, sizeof(char *));
		for (size_t i = 0; i < 4; i++)
			cfg.gw_languages.v[i] = xstrdup(defaults[i]);
		cfg.gw_languages.n = 4;
	}
	/* Trailing slashes would double up when paths are appended. */
	for (size_t n = strlen(cfg.hs_url); n > 0 && cfg.hs_url[n - 1] == '/'; n--)
		cfg.hs_url[n - 1] = '\0';
	for (size_t n = strlen(cfg.gw_public_url); n > 0 && cfg.gw_public_url[n - 1] == '/'; n--)
		cfg.gw_public_url[n - 1] = '\0';
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

const struct config_service *config_service_find(const struct config *cfg, const char *name)
{
	for (size_t i = 0; name && i < cfg->nservices; i++) {
		if (strcmp(cfg->services[i].name, name) == 0)
			return &cfg->services[i];
	}
	return NULL;
}

const struct config_service *config_service_by_staff_room(const struct config *cfg, const char *room_id)
{
	for (size_t i = 0; room_id && i < cfg->nservices; i++) {
		if (strcmp(cfg->services[i].staff_room, room_id) == 0)
			return &cfg->services[i];
	}
	return NULL;
}

const struct config_notice *config_service_notice(const struct config_service *svc, const char *lang)
{
	for (size_t i = 0; lang && i < svc->nnotices; i++) {
		if (strcmp(svc->notices[i].lang, lang) == 0)
			return &svc->notices[i];
	}
	return &svc->notices[0];
}

const struct config_helper *config_service_helper(const struct config_service *svc, const char *lang)
{
	for (size_t i = 0; lang && i < svc->nhelpers; i++) {
		if (strcmp(svc->helpers[i].lang, lang) == 0)
			return &svc->helpers[i];
	}
	return svc->nhelpers ? &svc->helpers[0] : NULL;
}

const struct config_notice *config_service_signpost(const struct config_service *svc, const char *lang)
{
	for (size_t i = 0; lang && i < svc->nsignposts; i++) {
		if (strcmp(svc->signposts[i].lang, lang) == 0)
			return &svc->signposts[i];
	}
	return svc->nsignposts ? &svc->signposts[0] : NULL;
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

/* Free the fields @p table describes in @p base. */
static void free_fields(const struct option *table, size_t n, void *base)
{
	for (size_t i = 0; i < n; i++) {
		void *f = (char *)base + table[i].offset;
		switch (table[i].type) {
		case OPT_UINT:
		case OPT_SIZE:
		case OPT_BOOL:
		case OPT_DURATION:
			break;
		case OPT_USERS:
		case OPT_WORDS:
		case OPT_ROOMS:
		case OPT_TURNS:
			for (size_t j = 0; j < ((struct config_ids *)f)->n; j++)
				free(((struct config_ids *)f)->v[j]);
			free(((struct config_ids *)f)->v);
			break;
		default:
			free(*(char **)f);
			*(char **)f = NULL;
		}
	}
}

void config_free(struct config *cfg)
{
	free_fields(options, NOPTIONS, cfg);
	for (size_t i = 0; i < cfg->nservices; i++) {
		struct config_service *svc = &cfg->services[i];
		free_fields(service_options, NSERVICE_OPTIONS, svc);
		for (size_t j = 0; j < svc->nnotices; j++) {
			free(svc->notices[j].lang);
			free(svc->notices[j].text);
		}
		free(svc->notices);
		for (size_t j = 0; j < svc->nkeywords; j++) {
			free(svc->keywords[j].lang);
			for (size_t w = 0; w < svc->keywords[j].words.n; w++)
				free(svc->keywords[j].words.v[w]);
			free(svc->keywords[j].words.v);
		}
		free(svc->keywords);
		for (size_t j = 0; j < svc->nsignposts; j++) {
			free(svc->signposts[j].lang);
			free(svc->signposts[j].text);
		}
		free(svc->signposts);
		for (size_t j = 0; j < svc->nhelpers; j++) {
			struct config_helper *h = &svc->helpers[j];
			for (size_t e = 0; e < h->nentries; e++) {
				for (size_t w = 0; w < h->entries[e].words.n; w++)
					free(h->entries[e].words.v[w]);
				free(h->entries[e].words.v);
				free(h->entries[e].text);
			}
			free(h->entries);
			free(h->lang);
			free(h->menu);
		}
		free(svc->helpers);
		free(svc->hours.holidays);
		free(svc->name);
	}
	free(cfg->services);
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
