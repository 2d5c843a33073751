/*
 * daemon.c - start-up, the signal loop, maintenance and shutdown.
 */
#include "daemon.h"

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "as_server.h"
#include "audit.h"
#include "audit_witness.h"
#include "config.h"
#include "dedupe.h"
#include "room_counts.h"
#include "cases.h"
#include "conv.h"
#include "gateway.h"
#include "guests.h"
#include "invites.h"
#include "cs.h"
#include "events.h"
#include "feed.h"
#include "hs_admin.h"
#include "jsonx.h"
#include "log.h"
#include "metrics.h"
#include "matrix_outbox.h"
#include "outbox.h"
#include "retention.h"
#include "rooms.h"
#include "sms_channel.h"
#include "wa_channel.h"
#include "store.h"
#include "util.h"

#define PRUNE_INTERVAL_MS (60u * 60u * 1000u)
#define TRIM_INTERVAL_MS  (60u * 1000u)
#define PING_RETRY_MIN_MS 2000u
#define PING_RETRY_MAX_MS 300000u

/* Who is told that a commit queued actions or grew a guest's feed: the
 * outbox, and every channel (bridge/channel.h: the web page, SMS). */
struct wakers {
	outbox *ob;
	struct channels chans;
};

static void wake_all(void *ctx)
{
	struct wakers *w = ctx;
	outbox_wake(w->ob);
	chan_feed_grew_all(&w->chans);
}

static void wake_outbox(void *ctx)
{
	outbox_wake(ctx);
}

/* Each parked guest poll holds a socket: allow as many as the hard limit. */
static void raise_fd_limit(const struct config *cfg)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	rlim_t want = (rlim_t)cfg->gw_max_connections + 256;
	if (rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
		LOG(LOG_WARN,
		    "gateway: only %llu open files are allowed; fewer than gateway.max_connections (%u) "
		    "guests "
		    "can wait at once (raise LimitNOFILE / ulimit -n)",
		    (unsigned long long)rl.rlim_cur, cfg->gw_max_connections);
}

/* Queue the bot's registration and display name (idempotent on the server). */
static int queue_bot_setup(const struct config *cfg, store *st)
{
	store_txn *t;
	int rc = store_txn_begin(st, 1, &t);
	if (rc)
		return rc;
	json_t *reg = json_pack("{s:s, s:s}", "op", "register", "localpart", cfg->bot_localpart);
	json_t *dn = json_pack("{s:s, s:s, s:s}", "op", "displayname", "user_id", cfg->bot_user_id,
	                       "displayname", cfg->bot_displayname);
	json_t *rec = json_pack("{s:s, s:s}", "kind", "bot", "displayname", cfg->bot_displayname);
	rc = outbox_push(t, reg);
	if (!rc)
		rc = outbox_push(t, dn);
	if (!rc)
		rc = store_put_json(t, STORE_USERS, cfg->bot_user_id, rec);
	json_decref(reg);
	json_decref(dn);
	json_decref(rec);
	if (rc) {
		store_txn_abort(t);
		return rc;
	}
	return store_txn_commit(t);
}

/*
 * Who is in each staff room now: memberships that changed while Threshold
 * was down, or before a room was added to roles.staff_rooms, reach it no
 * other way.  Asked once per start, of the rooms the homeserver says the bot
 * is joined to: a room it is not in yet would refuse the read (an alarming
 * "dropped ... 403" in the log of every fresh start), and the bot's join
 * there queues the same read.
 * @return 1 once queued (or nothing to do), 0 to try again later.
 */
static int queue_staff_reads(cs_client *cs, const struct config *cfg, store *st, outbox *ob)
{
	if (!cfg->staff_rooms.n)
		return 1;
	struct cs_response r;
	if (cs_request(cs, "GET", "/_matrix/client/v3/joined_rooms", NULL, NULL, &r) != TH_OK)
		return 0;
	json_t *joined = json_object_get(r.body, "joined_rooms");
	if (r.status != 200 || !json_is_array(joined)) {
		cs_response_clear(&r);
		return 0;
	}
	store_txn *t;
	int rc = store_txn_begin(st, 1, &t);
	for (size_t i = 0; !rc && i < cfg->staff_rooms.n; i++) {
		const char *room = cfg->staff_rooms.v[i];
		int in = 0;
		size_t j;
		json_t *v;
		json_array_foreach(joined, j, v)
		{
			if (json_is_string(v) && !strcmp(json_string_value(v), room))
				in = 1;
		}
		if (!in)
			continue;
		json_t *a = json_pack("{s:s, s:s, s:s, s:[s]}", "op", "staff_members", "room_id", room,
		                      "user_id", cfg->bot_user_id, "after",
		                      cfg->bot_user_id); /* after a register still queued */
		rc = rooms_staff_read_begin_stored(t, room);
		if (!rc)
			rc = outbox_push(t, a);
		json_decref(a);
	}
	cs_response_clear(&r);
	if (!rc)
		rc = store_txn_commit(t);
	else
		store_txn_abort(t);
	if (rc) {
		LOG(LOG_WARN, "cannot queue the read of the staff rooms' members: %s; will try again",
		    th_strerror(rc));
		return 0;
	}
	outbox_wake(ob);
	return 1;
}

/*
 * Who can read the safeguarding room, for "!audit reveal" (events.h,
 * events_privacy_learn): its state as the homeserver has it now.  The
 * transactions bring later changes, but not what was set before the bot
 * joined, so this is read at each start.  A room the bot is not in yet
 * (403) is read again later; until then no reveal is posted there.
 * @return 1 once learned (or nothing to learn), 0 to try again later.
 */
static int read_safeguarding_privacy(cs_client *cs, const struct config *cfg, store *st)
{
	if (!cfg->safeguarding_room)
		return 1;
	char *room = cs_escape(cfg->safeguarding_room);
	char *path = xasprintf("/_matrix/client/v3/rooms/%s/state", room);
	free(room);
	struct cs_response r;
	int rc = cs_request(cs, "GET", path, NULL, NULL, &r);
	free(path);
	if (rc != TH_OK)
		return 0;
	if (r.status != 200 || !json_is_array(r.body)) {
		cs_response_clear(&r);
		return 0;
	}
	store_txn *t;
	rc = store_txn_begin(st, 1, &t);
	size_t i;
	json_t *ev;
	json_array_foreach(r.body, i, ev)
	{
		const char *type = jsonx_str(ev, "type"), *sk = jsonx_str(ev, "state_key");
		if (!rc && type && sk && !*sk)
			rc = events_privacy_learn(t, cfg->safeguarding_room, type,
			                          json_object_get(ev, "content"));
	}
	cs_response_clear(&r);
	if (!rc)
		rc = store_txn_commit(t);
	else
		store_txn_abort(t);
	if (rc) {
		LOG(LOG_WARN, "cannot keep the safeguarding room's settings: %s; will try again",
		    th_strerror(rc));
		return 0;
	}
	return 1;
}

/* Once per store: block invites to the guests made before Threshold did
 * so at their creation (guests.h). */
static int migrate_invite_blocks(store *st)
{
	store_txn *t;
	size_t n = 0;
	int rc = store_txn_begin(st, 1, &t);
	if (rc)
		return rc;
	if ((rc = guests_block_invites_migrate(t, &n)) != TH_OK) {
		store_txn_abort(t);
		return rc;
	}
	if ((rc = store_txn_commit(t)) == TH_OK && n)
		LOG(LOG_INFO, "queued the homeserver's block of invites for %zu existing guests", n);
	return rc;
}

/*
 * Which layer keeps strangers' invites from guests: the homeserver (spec
 * v1.18, MSC4380: it refuses them before they exist), or only Threshold
 * (each invite rejected after the fact).  Said in the log at start and kept
 * in STORE_META for `threshold doctor`.
 * @return 1 once the homeserver answered, 0 to ask again later.
 */
static int check_invite_blocking(cs_client *cs, store *st)
{
	struct cs_response r = {0};
	int rc = cs_request(cs, "GET", "/_matrix/client/versions", NULL, NULL, &r);
	if (rc || r.status != 200) {
		if (rc == TH_OK)
			cs_response_clear(&r);
		LOG(LOG_WARN, "invite blocking: cannot ask the homeserver which spec versions it supports; "
		              "will ask again");
		return 0;
	}
	const char *why = NULL;
	int enforced = cs_versions_invite_blocking(r.body, &why);
	if (enforced)
		LOG(LOG_INFO,
		    "invite blocking: enforced by the homeserver (%s); Threshold also rejects "
		    "any invite that gets through",
		    why);
	else
		LOG(LOG_WARN, "invite blocking: not supported by the homeserver (needs spec v1.18, Synapse "
		              "1.149 or later); Threshold rejects invites to guests after the fact");
	cs_response_clear(&r);
	json_t *fact = json_pack("{s:b, s:s?, s:I}", "enforced", enforced, "by", why, "checked_ms",
	                         (json_int_t)th_now_ms());
	store_txn *t;
	if (store_txn_begin(st, 1, &t) == TH_OK) {
		if (store_put_json(t, STORE_META, CS_META_INVITE_BLOCKING, fact) == TH_OK)
			store_txn_commit(t);
		else
			store_txn_abort(t);
	}
	json_decref(fact);
	return 1;
}

/* Memberships of managed rooms get their own keys (once), then whoever the
 * config no longer makes staff is taken out of the rooms of the services
 * they no longer serve (events_roles_changed), before anything else runs. */
static int roles_at_start(const struct txn_env *env)
{
	store_txn *t;
	unsigned queued = 0;
	int rc = store_txn_begin(env->st, 1, &t);
	if (rc)
		return rc;
	rc = rooms_members_backfill(t);
	if (!rc)
		rc = events_roles_changed(env, t, &queued);
	if (rc) {
		store_txn_abort(t);
		return rc;
	}
	rc = store_txn_commit(t);
	if (!rc && queued)
		LOG(LOG_INFO, "roles changed since the last start: %u removals queued", queued);
	return rc;
}

/* Whoever a read of a staff room found gone while Threshold could not see
 * is taken out of the service's rooms (events_staff_departed). */
static void staff_departures(const struct txn_env *env, outbox *ob)
{
	unsigned queued = 0;
	int rc = events_staff_departed(env, &queued);
	if (rc)
		LOG(LOG_WARN, "staff who left while Threshold was stopped: %s", th_strerror(rc));
	else if (queued)
		outbox_wake(ob);
}

/* Append one lifecycle record (and a checkpoint if one is due, or @force). */
/* The outbox's room_created hook (outbox.h): the bridge sets up the
 * guest's conversation in the room it asked for (bridge/conv.h). */
static int conversation_room_created(void *ctx, store_txn *t, const char *guest, const char *room_id)
{
	const struct txn_env *env = ctx;
	return conv_room_created(env->cfg, env->mx, t, guest, room_id);
}

/* Say at start what an erasure can do on the homeserver (the token itself
 * is read only by the erasure job, hs_admin.h). */
static void erasure_admin_say(const struct config *cfg)
{
	char why[160];
	if (!cfg->hs_admin_token_file)
		LOG(LOG_WARN, "homeserver.admin_token_file is not set: an erasure redacts a guest's messages "
		              "and erases their account, but cannot delete their files from the homeserver's "
		              "media store nor purge their conversation room (docs/privacy.md)");
	else if (hs_admin_token_file_check(cfg->hs_admin_token_file, why, sizeof(why)) != TH_OK)
		LOG(LOG_ERROR,
		    "homeserver.admin_token_file: %s %s: erasures will fail to delete media and rooms",
		    cfg->hs_admin_token_file, why);
	else
		LOG(LOG_INFO,
		    "erasure: homeserver admin token in %s (read only when a guest's data is erased)",
		    cfg->hs_admin_token_file);
}

/* bridge/feed.h's sealer on the audit log's per-subject keys. */
static int feed_seal(void *ctx, store_txn *t, const char *guest, const char *text, char **out)
{
	return audit_seal(ctx, t, guest, text, out);
}

static int feed_unseal(void *ctx, store_txn *t, const char *guest, const char *sealed, char **out)
{
	return audit_unseal(ctx, t, guest, sealed, out);
}

void daemon_feed_sealer(audit *au)
{
	struct feed_sealer sealer = {.seal = feed_seal, .unseal = feed_unseal, .ctx = au};
	feed_sealer_set(&sealer);
}

static int audit_lifecycle(audit *au, store *st, enum audit_kind kind, const char *reason, json_t *details,
                           int force_checkpoint)
{
	store_txn *t;
	int rc = store_txn_begin(st, 1, &t);
	if (rc)
		goto out;
	struct audit_rec rec = {.kind = kind, .actor = "threshold", .reason = reason, .details = details};
	rc = audit_append(au, t, &rec, NULL);
	uint64_t now = th_now_ms();
	if (!rc && (force_checkpoint || audit_checkpoint_due(au, now)))
		rc = audit_checkpoint(au, t, now);
	if (rc) {
		store_txn_abort(t);
		goto out;
	}
	rc = store_txn_commit(t);
out:
	json_decref(details);
	if (rc)
		LOG(LOG_ERROR, "audit: cannot record %s: %s", audit_kind_name(kind), th_strerror(rc));
	return rc;
}

/* A checkpoint on the timer, so a quiet log is still signed every
 * audit.checkpoint_seconds. */
static void audit_tick(audit *au, store *st)
{
	uint64_t now = th_now_ms();
	if (!audit_checkpoint_due(au, now))
		return;
	store_txn *t;
	if (store_txn_begin(st, 1, &t) != TH_OK)
		return;
	int rc = audit_checkpoint(au, t, now);
	if (rc) {
		store_txn_abort(t);
		LOG(LOG_WARN, "audit: checkpoint failed: %s", th_strerror(rc));
		return;
	}
	if (store_txn_commit(t) != TH_OK)
		LOG(LOG_WARN, "audit: checkpoint commit failed");
}

/* Post each new checkpoint to the witness room (audit_witness.h). */
static void witness_tick(const struct config *cfg, store *st, outbox *ob)
{
	size_t queued = 0;
	int rc = audit_witness_queue(cfg, st, &queued);
	if (rc)
		LOG(LOG_WARN, "audit: cannot queue checkpoints for the witness room: %s", th_strerror(rc));
	else if (queued)
		outbox_wake(ob);
}

static int try_ping(cs_client *cs, const struct config *cfg)
{
	uint64_t ms = 0;
	int rc = cs_ping(cs, &ms);
	if (rc == TH_OK) {
		LOG(LOG_INFO,
		    "homeserver ping: ok (the homeserver reached Threshold at %s, round trip %llu ms)",
		    cfg->as_url, (unsigned long long)ms);
		return 1;
	}
	if (rc == TH_EHTTP)
		LOG(LOG_WARN,
		    "homeserver ping failed: the homeserver at %s could not reach Threshold at %s, "
		    "or does not know the registration '%s' (is %s in its app_service_config_files, "
		    "and was it restarted?)",
		    cfg->hs_url, cfg->as_url, cfg->as_id, cfg->registration);
	else
		LOG(LOG_WARN, "homeserver ping failed: cannot reach the homeserver at %s (%s); will retry",
		    cfg->hs_url, th_strerror(rc));
	return 0;
}

/* The retention job (retention.h) between the hourly prunes. */
static void retention_tick(const struct config *cfg, store *st, const struct txn_env *env, outbox *ob)
{
	size_t removed = 0, purged = 0;
	int rc = retention_run(env, th_now_ms(), &removed);
	if (rc)
		LOG(LOG_WARN, "removing conversations past their retention failed: %s", th_strerror(rc));
	if (removed) {
		LOG(LOG_INFO, "removed %zu conversations past their services' retention", removed);
		outbox_wake(ob);
	}
	if ((rc = retention_purge_pending(cfg, st, &purged)))
		LOG(LOG_WARN, "retention: purging rooms on the homeserver failed: %s", th_strerror(rc));
}

static void prune(const struct config *cfg, store *st, const struct txn_env *env)
{
	size_t ended = 0;
	if (env && env->au) {
		int erc = retention_run(env, th_now_ms(), &ended);
		if (erc)
			LOG(LOG_WARN, "removing conversations past their retention failed: %s",
			    th_strerror(erc));
		if (ended)
			LOG(LOG_INFO, "removed %zu conversations past their services' retention", ended);
		size_t purged = 0;
		if ((erc = retention_purge_pending(cfg, st, &purged)))
			LOG(LOG_WARN, "retention: purging rooms on the homeserver failed: %s",
			    th_strerror(erc));
	}
	uint64_t keep = (uint64_t)cfg->dedupe_retention_days * 24u * 3600u * 1000u;
	uint64_t now = th_now_ms();
	size_t removed = 0, invites = 0;
	store_txn *t;
	if (store_txn_begin(st, 1, &t) == TH_OK) {
		if (inv_prune(t, now, &invites) == TH_OK && store_txn_commit(t) == TH_OK) {
			if (invites)
				LOG(LOG_INFO, "pruned %zu used or expired invitations", invites);
		} else {
			store_txn_abort(t);
		}
	}
	int rc = store_prune(st, now > keep ? now - keep : 0, &removed);
	if (rc)
		LOG(LOG_WARN, "pruning old transaction and event ids failed: %s", th_strerror(rc));
	else if (removed)
		LOG(LOG_INFO, "pruned %zu transaction/event ids older than %u days", removed,
		    cfg->dedupe_retention_days);
}

int daemon_serve(const struct config *cfg)
{
	store *st = NULL;
	audit *au = NULL;
	outbox *ob = NULL;
	gateway *gw = NULL;
	sms_channel *sms = NULL;
	wa_channel *wa = NULL;
	as_server *srv = NULL;
	metrics *mx = NULL;
	cs_client *cs = NULL;
	int code = 1;

	/* Signals are taken by this thread alone, with sigtimedwait; every
	 * thread started below inherits the blocked mask. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	LOG(LOG_INFO, "Threshold %s starting: homeserver %s (%s), store %s", THRESHOLD_VERSION, cfg->hs_url,
	    cfg->server_name, cfg->store_path);
	if (store_open(cfg->store_path, cfg->map_size_mb, &st) != TH_OK)
		goto out;
	if (audit_open_config(st, cfg, &au) != TH_OK)
		goto out;
	LOG(LOG_INFO, "audit log signing key %s (public key %s)", cfg->audit_key_path, audit_pubkey(au));
	if (audit_lifecycle(au, st, AUDIT_STARTUP, NULL, json_pack("{s:s}", "version", THRESHOLD_VERSION),
	                    0) ||
	    audit_lifecycle(au, st, AUDIT_CONFIG_LOADED, NULL, json_pack("{s:s}", "file", cfg->path), 0))
		goto out;
	prune(cfg, st, NULL);
	erasure_admin_say(cfg);
	if (queue_bot_setup(cfg, st) != TH_OK) {
		LOG(LOG_ERROR, "cannot queue the bot's registration in the store");
		goto out;
	}
	if (migrate_invite_blocks(st) != TH_OK) {
		LOG(LOG_ERROR, "cannot queue the block of invites to existing guests in the store");
		goto out;
	}
	/* The composition root: the bridge sees Matrix through the outbox's
	 * implementation of its interface (bridge/matrix.h), and the outbox
	 * tells the bridge through a hook, never by name. */
	struct matrix_outbox mxo;
	matrix_outbox_init(&mxo, cfg);
	/* What a guest writes is sealed under their own key while Threshold
	 * holds it (their feed, their queued messages), so erasure leaves
	 * nothing readable behind in freed pages or backups. */
	mxo.au = au;
	mxo.st = st;
	daemon_feed_sealer(au);
	struct txn_env start_env = {cfg, st, au, &mxo.mx, cases_guest_open};
	if (roles_at_start(&start_env) != TH_OK) {
		LOG(LOG_ERROR, "cannot apply the configured roles to the managed rooms");
		goto out;
	}
	struct txn_env env = {cfg, st, au, &mxo.mx, cases_guest_open};
	struct outbox_hooks hooks = {.room_created = conversation_room_created, .ctx = &env};
	/* Files a crash left in the spool with no action naming them (spool.h). */
	if (outbox_spool_sweep(st, cfg, NULL) != TH_OK)
		LOG(LOG_WARN, "cannot sweep the spool of files no action names; they are kept");
	if (outbox_start(st, cfg, &hooks, &ob) != TH_OK)
		goto out;
	outbox_set_audit(ob, au); /* refused enforcement is recorded */
	if (cfg->nservices) {
		raise_fd_limit(cfg);
		if (gw_start(&env, wake_outbox, ob, &gw) != TH_OK)
			goto out;
	} else {
		LOG(LOG_INFO, "no services configured: the guest gateway is off (docs/services.md)");
	}
	struct wakers wakers = {.ob = ob};
	chan_add(&wakers.chans, gw_channel(gw));
	if (cfg->sms_enabled) {
		if (smsch_start(&env, wake_all, &wakers, &sms) != TH_OK)
			goto out;
		chan_add(&wakers.chans, smsch_channel(sms));
	}
	if (cfg->wa_enabled) {
		if (wach_start(&env, wake_all, &wakers, &wa) != TH_OK)
			goto out;
		chan_add(&wakers.chans, wach_channel(wa));
	}
	if (as_server_start(&env, wake_all, &wakers, &srv) != TH_OK)
		goto out;
	LOG(LOG_INFO, "listening for the homeserver on %s:%u", cfg->listen_address, as_server_port(srv));
	if (cfg->metrics_enabled && metrics_start(cfg, st, gw, &mx) != TH_OK)
		goto out;
	if (cs_client_new(cfg, &cs) != TH_OK)
		goto out;

	int pinged = try_ping(cs, cfg);
	int blocking_known = check_invite_blocking(cs, st);
	int staff_read = queue_staff_reads(cs, cfg, st, ob);
	int sg_read = read_safeguarding_privacy(cs, cfg, st);
	uint64_t ping_wait = PING_RETRY_MIN_MS, next_ping = th_mono_ms() + ping_wait;
	uint64_t next_prune = th_mono_ms() + 60000u, next_trim = th_mono_ms() + TRIM_INTERVAL_MS;
	uint64_t next_retention = th_mono_ms() + RETENTION_INTERVAL_MS;
	for (;;) {
		struct timespec ts = {1, 0};
		int sig = sigtimedwait(&sigs, NULL, &ts);
		if (sig == SIGTERM || sig == SIGINT) {
			LOG(LOG_INFO, "%s received: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
			break;
		}
		uint64_t now = th_mono_ms();
		if ((!pinged || !blocking_known || !staff_read || !sg_read) && now >= next_ping) {
			if (!pinged)
				pinged = try_ping(cs, cfg);
			if (!blocking_known)
				blocking_known = check_invite_blocking(cs, st);
			if (!staff_read)
				staff_read = queue_staff_reads(cs, cfg, st, ob);
			if (!sg_read)
				sg_read = read_safeguarding_privacy(cs, cfg, st);
			ping_wait = ping_wait * 2 > PING_RETRY_MAX_MS ? PING_RETRY_MAX_MS : ping_wait * 2;
			next_ping = now + ping_wait;
		}
		audit_tick(au, st);
		witness_tick(cfg, st, ob);
		staff_departures(&env, ob);
		if (cfg->nservices) { /* "waiting" notices held for their minute */
			size_t posted = 0;
			int wrc = conv_waiting_flush(&env, th_now_ms(), &posted);
			if (wrc)
				LOG(LOG_WARN, "posting grouped waiting notices failed: %s", th_strerror(wrc));
			else if (posted && ob)
				outbox_wake(ob);
		}
		if (cfg->safeguarding_room) { /* case reminders and escalations (cases.h) */
			size_t posted = 0;
			int crc = cases_tick(&env, th_now_ms(), &posted);
			if (crc)
				LOG(LOG_WARN, "case reminders and escalations failed: %s", th_strerror(crc));
			else if (posted && ob)
				outbox_wake(ob);
		}
		if (now >= next_trim) {
			/* After a burst of guests (thousands of parked polls, each
			 * with its buffers) give the freed memory back to the system. */
			malloc_trim(0);
			next_trim = now + TRIM_INTERVAL_MS;
		}
		if (now >= next_prune) {
			prune(cfg, st, &env);
			next_prune = now + PRUNE_INTERVAL_MS;
			next_retention = now + RETENTION_INTERVAL_MS;
		} else if (now >= next_retention) { /* retention runs more often than the rest of prune */
			retention_tick(cfg, st, &env, ob);
			next_retention = now + RETENTION_INTERVAL_MS;
		}
	}
	code = 0;
out:
	/* Order matters: no new transactions, then no more actions, then the store. */
	metrics_stop(mx);
	as_server_stop(srv);
	wach_stop(wa);
	smsch_stop(sms);
	gw_stop(gw);
	if (ob)
		outbox_stop(ob);
	cs_client_free(cs);
	if (au && code == 0)
		audit_lifecycle(au, st, AUDIT_SHUTDOWN, "signal", NULL, 1);
	audit_close(au);
	store_close(st);
	LOG(code == 0 ? LOG_INFO : LOG_ERROR, code == 0 ? "stopped cleanly" : "start-up failed; see above");
	return code;
}

struct status_walk {
	json_t *rooms;
	store_txn *t;
};

static int collect_room(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct status_walk *w = ctx;
	json_t *state = json_loadb(val, vlen, 0, NULL);
	json_t *events = json_object_get(state, "events");
	json_t *bot = json_object_get(state, "bot");
	char *room_id = xstrndup(key, klen);
	uint64_t pending = 0; /* counted since the record was last written (room_counts.h) */
	room_counts_pending(w->t, room_id, &pending);
	free(room_id);
	json_array_append_new(w->rooms,
	                      json_pack("{s:s%, s:I, s:O?}", "room_id", (const char *)key, klen, "events",
	                                (json_int_t)json_integer_value(events) + (json_int_t)pending,
	                                "bot_membership", json_is_string(bot) ? bot : json_null()));
	json_decref(state);
	return 0;
}

int daemon_status(const struct config *cfg, int as_json)
{
	store *st;
	if (store_open(cfg->store_path, cfg->map_size_mb, &st) != TH_OK)
		return 1;
	store_txn *t;
	if (store_txn_begin(st, 0, &t) != TH_OK) {
		store_close(st);
		return 1;
	}
	size_t ntxns = 0, nevents = 0, noutbox = 0;
	struct status_walk w = {json_array(), t};
	dedupe_count(t, &ntxns, &nevents);
	store_count(t, STORE_OUTBOX, &noutbox);
	int rc = store_walk(t, STORE_ROOMS, NULL, 0, collect_room, &w);
	json_t *failed = NULL;
	if (!rc)
		rc = outbox_failed_list(t, &failed);
	store_txn_abort(t);
	size_t used = 0, mapsize = 0, live = 0;
	store_usage(st, &used, &mapsize);
	if (store_usage_live(st, &live, &mapsize) != TH_OK)
		live = used;
	store_close(st);
	if (rc) {
		json_decref(w.rooms);
		fprintf(stderr, "threshold: cannot read the store: %s\n", th_strerror(rc));
		return 1;
	}
	json_t *out = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "transactions", (json_int_t)ntxns,
	                        "events_seen", (json_int_t)nevents, "outbox_pending", (json_int_t)noutbox,
	                        "store_bytes_used", (json_int_t)used, "store_bytes_live", (json_int_t)live,
	                        "store_map_bytes", (json_int_t)mapsize, "rooms", w.rooms);
	json_object_set_new(out, "outbox_failed", failed);
	if (as_json) {
		json_dumpf(out, stdout, JSON_INDENT(2));
		fputc('\n', stdout);
	} else {
		printf("store              %s (%.1f of %.0f MiB in use, %.1f at most so far)\n",
		       cfg->store_path, live / 1048576.0, mapsize / 1048576.0, used / 1048576.0);
		printf("transactions kept  %zu\nevent ids kept     %zu\noutbox pending     %zu\n", ntxns,
		       nevents, noutbox);
		/* Actions set aside after failing for good (outbox.h): ids only. */
		printf("outbox set aside   %zu\n", json_array_size(failed));
		size_t k;
		json_t *f;
		json_array_foreach(failed, k, f)
		{
			const char *room = jsonx_str(f, "room_id"), *target = jsonx_str(f, "target");
			printf("  action %-8lld %-12s %s%s%s, %lld attempts, last: %s\n",
			       (long long)json_integer_value(json_object_get(f, "seq")),
			       jsonx_str(f, "op") ? jsonx_str(f, "op") : "?",
			       room ? room : jsonx_str(f, "lane"), target ? " for " : "",
			       target ? target : "",
			       (long long)json_integer_value(json_object_get(f, "attempts")),
			       jsonx_str(f, "last_error") ? jsonx_str(f, "last_error") : "-");
		}
		printf("rooms              %zu\n", json_array_size(w.rooms));
		size_t i;
		json_t *r;
		json_array_foreach(w.rooms, i, r)
		{
			const char *bm = jsonx_str(r, "bot_membership");
			printf("  %-50s events %-8lld bot %s\n",
			       json_string_value(json_object_get(r, "room_id")),
			       (long long)json_integer_value(json_object_get(r, "events")), bm ? bm : "-");
		}
	}
	json_decref(out);
	return 0;
}
