/*
 * config.h - Threshold's configuration, parsed once at the edge from YAML into
 * plain structs by a table (config.c's options[]): name, type, bounds, default.
 * Errors name the key and the line: "config.yaml:12: appservice.listen_port:
 * 70000 is out of range (1..65535)".
 *
 * The appservice tokens live in the registration file (the file the
 * homeserver also reads), not here, so each secret is written once.
 */
#ifndef THRESHOLD_CONFIG_H
#define THRESHOLD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "hours.h"

/* A list from the config: user ids, room ids, or words (gateway.languages). */
struct config_ids {
	char **v;
	size_t n;
};

/* One language's notice text for a service. */
struct config_notice {
	char *lang; /* "en" */
	char *text; /* plain words: who runs this, what is kept, for how long, rights */
};

/* One language's concern keywords for a service (services.<name>.concern_keywords). */
struct config_keywords {
	char *lang;              /* "en" */
	struct config_ids words; /* words or phrases, matched case-insensitively on word boundaries */
};

/* One answer of a service's helper (services.<name>.helper.<lang>.answers[]). */
struct config_helper_entry {
	unsigned number;         /* 1..99 the guest replies with, or 0: keywords only */
	struct config_ids words; /* keywords or phrases that also choose it */
	char *text;              /* the answer, as the service's words */
};

/* A service's helper in one language (services.<name>.helper.<lang>): policy/helper.h. */
struct config_helper {
	char *lang; /* "en" */
	char *menu; /* the short menu shown once; "0: talk to a person" is added to it */
	struct config_helper_entry *entries;
	size_t nentries;
};

/*
 * A service (services.<name>): a helpline, an information desk, a support
 * group.  Guests reach its staff through the gateway (docs/services.md).
 */
struct config_service {
	char *name;                    /* the key under services:, a-z0-9._=-/ */
	char *display_name;            /* what the guest sees, e.g. "Helpline" */
	char *staff_room;              /* room id where its staff are told a guest is waiting */
	char *greeting;                /* the first words the guest sees in the chat */
	char *notice_version;          /* consent is recorded against this version */
	struct config_notice *notices; /* one per language, in file order; [0] is the fallback */
	size_t nnotices;
	int public_entry;                  /* a public entry link (#service=<name>) is allowed */
	unsigned public_per_hour;          /* conversations the public link may open per hour */
	unsigned invite_uses;              /* default uses of a new personal invitation */
	unsigned invite_expiry_hours;      /* default lifetime of a new personal invitation */
	unsigned conversation_expiry_days; /* a conversation's session and feed end after this */
	struct config_ids inviters;        /* who may invite; empty: every staff member */
	char *sms_number;                  /* the number people text to reach it (sms:), or NULL */
	char *wa_phone_number_id;          /* its WhatsApp Cloud API phone number id (whatsapp:), or NULL */
	/* conversations are removed this long after they started (seconds); 0: conversation_expiry_days */
	unsigned retention_s;
	/* Safeguarding (docs/safeguarding-guide.md): */
	struct config_ids duty_leads; /* mentioned in help alerts and escalations */
	unsigned escalate_after_s;    /* a guest waiting this long for a staff reply is escalated; 0: never */
	unsigned escalate_every_s;    /* ...and again this often while waiting; 0: escalate_after_s */
	struct config_keywords *keywords; /* concern_keywords: one list per language */
	size_t nkeywords;
	/* Opening hours (hours, holidays, utc_offset) and what the page says when closed: */
	struct hours_spec hours;         /* hours.set 0: always open */
	struct config_notice *signposts; /* signposting: crisis numbers and words, one per language */
	size_t nsignposts;
	/* The automatic helper (helper): menu and answers, one per language; none: no helper. */
	struct config_helper *helpers;
	size_t nhelpers;
};

struct config {
	/* homeserver */
	char *hs_url;              /* Client-Server API base, e.g. http://127.0.0.1:8008 */
	char *server_name;         /* the homeserver's server name, e.g. example.org */
	char *hs_admin_token_file; /* a server admin's token (mode 0600), for erasure; NULL: none */

	/* appservice */
	char *as_id;          /* registration id */
	char *listen_address; /* where Threshold's AS API listens */
	unsigned listen_port;
	char *as_url;          /* how the homeserver reaches Threshold (registration url) */
	char *registration;    /* path of the registration file holding the tokens */
	char *bot_localpart;   /* the bot user, e.g. "threshold" */
	char *bot_displayname; /* the bot's display name */
	char *guest_prefix;    /* guest localparts are <prefix><32 hex> */
	size_t max_body_bytes; /* transaction body cap */
	unsigned max_json_depth;

	/* store */
	char *store_path; /* LMDB environment directory */
	size_t map_size_mb;
	unsigned dedupe_retention_days;
	unsigned guest_share_percent; /* guests' writes stop past this share of the map (headroom) */

	/* client (Client-Server API) */
	unsigned client_timeout_ms;
	unsigned client_connect_timeout_ms;
	unsigned outbox_max_backoff_ms;

	/* outbox (outbox.h: lanes) */
	unsigned outbox_concurrency;       /* actions in flight at once */
	unsigned outbox_give_up_s;         /* retry an action this long, then set it aside */
	unsigned outbox_max_pending_guest; /* guests' sends wait while the outbox is this long */

	/* log */
	char *log_level;

	/* roles: who is staff; everyone else outside the namespace is a stranger */
	struct config_ids staff;       /* explicit staff user ids */
	int staff_all_local;           /* every user of server_name is staff */
	struct config_ids staff_rooms; /* room ids: whoever is joined to one is staff */
	/* guests */
	int pseudonym_per_room; /* a different, unlinkable pseudonym in each room */
	/* managed rooms */
	int rooms_federate;   /* managed rooms may federate (m.federate) */
	unsigned staff_power; /* staff's power level in managed rooms */
	/* safeguarding */
	char *safeguarding_room; /* room id for alerts and leads' questions, or NULL */
	struct config_ids leads; /* safeguarding leads (staff too) */
	char *concern_reaction;  /* a reaction key by staff on a message raises a medium concern */
	unsigned response_low_s; /* a case's response deadline by its severity... */
	unsigned response_medium_s;
	unsigned response_high_s;
	unsigned reminder_s; /* reminders of a case past its deadline, this often */

	/* audit */
	char *audit_key_path; /* signing seed file (0600); default <store_path>/audit-signing.key */
	unsigned audit_checkpoint_every;   /* sign a checkpoint after this many records... */
	unsigned audit_checkpoint_seconds; /* ...or this long after the last one, whichever first */
	char *audit_witness_room; /* room the checkpoints are witnessed in; NULL: the safeguarding room */

	/* gateway: where guests' browsers reach Threshold (docs/gateway-api.md) */
	char *gw_listen_address;
	unsigned gw_listen_port;
	char *gw_public_url;            /* how guests reach the gateway; invitation links start with it */
	char *gw_page_title;            /* the neutral title of the guest page */
	char *gw_exit_url;              /* where quick exit goes */
	struct config_ids gw_languages; /* page languages, e.g. en es fr ar */
	unsigned gw_session_hours;      /* a session token's lifetime */
	int gw_resume_codes;            /* give guests a code to continue on another device */
	size_t gw_max_body_bytes;
	size_t gw_max_upload_bytes; /* largest picture or file a guest may send; 0: none */
	size_t gw_max_media_bytes;  /* largest picture or file the gateway fetches for a guest */
	int gw_accept_pdf;          /* guests may send PDF files (checked, metadata blanked) */
	unsigned gw_max_message_bytes;
	unsigned gw_max_connections;
	unsigned gw_session_rate;         /* requests per minute per session */
	unsigned gw_address_rate;         /* invitation/redeem/resume requests per minute per address */
	int gw_trust_forwarded_for;       /* take the client address from X-Forwarded-For (behind a proxy) */
	unsigned gw_public_per_address;   /* public entry redeems per address (IPv6: /64) per hour */
	unsigned gw_max_conn_per_address; /* connections per address when not behind a proxy; 0: no cap */
	size_t gw_max_body_in_flight;     /* request body bytes held across all connections */
	unsigned gw_max_polls_per_guest;  /* feed polls one guest may have waiting at once */
	size_t gw_guest_bytes_per_hour;   /* message and upload bytes one guest may send per hour */
	size_t gw_conversation_bytes_total; /* message and upload bytes one conversation may carry, in all */
	size_t gw_max_blob_bytes_held;      /* guests' files held in the store waiting to upload, in all */
	unsigned gw_waiting_notice_s; /* "waiting" notices grouped over this many seconds; 0: each at once */
	/* calls: audio (and video) calls between a guest's page and staff, relayed by TURN
	 * (docs/calls.md) */
	int calls_enabled;
	struct config_ids calls_turn_uris; /* turn:host:port?transport=udp ... */
	char *calls_turn_secret;           /* coturn's static-auth-secret */
	unsigned calls_turn_ttl_s;         /* how long minted TURN credentials last */
	/* metrics: /metrics and /health on a listener of their own (metrics.h) */
	int metrics_enabled;
	char *metrics_bind; /* an IP address; loopback by default */
	unsigned metrics_port;
	/* sms: the SMS channel, through Kannel or a Twilio-compatible API (docs/channels.md) */
	int sms_enabled;
	char *sms_driver; /* "kannel" or "twilio" */
	char *sms_listen_address;
	unsigned sms_listen_port;
	char *sms_secret;             /* Kannel's shared secret: in the URL path, or X-Threshold-Secret */
	char *sms_kannel_sendsms_url; /* smsbox's sendsms, e.g. http://127.0.0.1:13013/cgi-bin/sendsms */
	char *sms_kannel_username;
	char *sms_kannel_password;
	char *sms_twilio_account_sid;
	char *sms_twilio_auth_token;
	char *sms_twilio_api_url;     /* REST base, https://api.twilio.com */
	char *sms_twilio_webhook_url; /* the URL exactly as configured at Twilio (signed) */
	unsigned sms_per_number_per_minute;
	unsigned sms_per_service_per_minute;
	size_t sms_max_body_bytes; /* request body cap, checked before reading */
	char *sms_key_file;        /* the lookup hash's key (0600); default <store_path>/sms-lookup.key */
	/* whatsapp: the WhatsApp Cloud API channel (docs/channels.md) */
	int wa_enabled;
	char *wa_listen_address;
	unsigned wa_listen_port;
	char *wa_app_secret_file;   /* signs the webhooks (X-Hub-Signature-256); 0600 */
	char *wa_verify_token_file; /* the webhook's verification handshake; 0600 */
	char *wa_access_token_file; /* the Graph API's bearer token; 0600 */
	char *wa_graph_url;         /* https://graph.facebook.com */
	char *wa_api_version;       /* "v21.0" */
	char *wa_template_name;     /* the content-free template that invites the person back */
	char *wa_template_language; /* its language code, as approved ("en") */
	unsigned wa_window_s;       /* the customer-service window (24h; shorter only to test) */
	unsigned wa_per_number_per_minute;
	unsigned wa_per_service_per_minute;
	size_t wa_max_body_bytes;  /* webhook body cap, checked before reading */
	size_t wa_max_media_bytes; /* an incoming file's cap, checked before downloading */
	char *wa_key_file; /* the lookup hash's key (0600); default <store_path>/whatsapp-lookup.key */
	/* services */
	struct config_service *services;
	size_t nservices;

	/* Filled from the registration file by config_load_registration(). */
	char *as_token;
	char *hs_token;

	char *bot_user_id; /* "@<bot_localpart>:<server_name>", derived */
	char *path;        /* the file this came from (for messages) */
};

/**
 * Load and validate a configuration file.  On error prints one line naming
 * the file, line and key to stderr (and into @p err, when given).
 * @param path  file to read (borrowed)
 * @param out   filled on success; free with config_free()
 * @param err   optional buffer for the error text
 * @return TH_OK, or TH_ECONFIG.
 */
int config_load(const char *path, struct config *out, char *err, size_t errlen);

/**
 * Read the tokens from the registration file named in @p cfg, checking that
 * its id, url and sender_localpart agree with the config.
 * @return TH_OK or TH_ECONFIG (message in @p err).
 */
int config_load_registration(struct config *cfg, char *err, size_t errlen);

/**
 * Write a registration file for @p cfg with fresh random tokens to @p path
 * (mode 0600).  Refuses to overwrite an existing file unless @p force.
 * @return TH_OK, TH_EEXIST or TH_EIO.
 */
int config_write_registration(const struct config *cfg, const char *path, int force);

/** The guest/bot user namespace regex written into the registration. */
char *config_user_regex(const struct config *cfg);

/** @return 1 if @p id (a user id or a room id; NULL: no) is in @p list. */
int config_ids_has(const struct config_ids *list, const char *id);

/** The service called @p name, or NULL. */
const struct config_service *config_service_find(const struct config *cfg, const char *name);

/** The service whose staff room is @p room_id, or NULL. */
const struct config_service *config_service_by_staff_room(const struct config *cfg, const char *room_id);

/** @p svc's notice in @p lang, else its first (never NULL for a loaded service). */
const struct config_notice *config_service_notice(const struct config_service *svc, const char *lang);

/** @p svc's signposting in @p lang, else its first; NULL when it has none. */
const struct config_notice *config_service_signpost(const struct config_service *svc, const char *lang);

/** @p svc's helper in @p lang, else its first; NULL when it has none. */
const struct config_helper *config_service_helper(const struct config_service *svc, const char *lang);

/** @return 1 if @p user_id is in Threshold's user namespace (bot or guest). */
int config_user_in_namespace(const struct config *cfg, const char *user_id);

void config_free(struct config *cfg);

#endif
