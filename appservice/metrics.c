/*
 * metrics.c - counters, one registration table of metric families, and the
 * small HTTP listener that serves them with /health.
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "audit.h"
#include "config.h"
#include "log.h"
#include "outbox.h"
#include "policy.h"
#include "util.h"

static _Atomic uint64_t counters[METRICS_NCOUNTERS];
static _Atomic uint64_t decisions[POL_R_COUNT];

void metrics_add(enum metrics_counter c, uint64_t n)
{
	if ((unsigned)c < METRICS_NCOUNTERS)
		atomic_fetch_add_explicit(&counters[c], n, memory_order_relaxed);
}

void metrics_decision(unsigned reason)
{
	if (reason < POL_R_COUNT)
		atomic_fetch_add_explicit(&decisions[reason], 1, memory_order_relaxed);
}

struct metrics {
	const struct config *cfg;
	store *st;
	gateway *gw;
	struct MHD_Daemon *mhd;
	unsigned port;
	pthread_mutex_t mu;    /* guards the two below */
	uint64_t head_seq;     /* the outbox's oldest action at the last scrape */
	uint64_t head_seen_ms; /* when a scrape first saw it there */
};

/* Everything one scrape reports, gathered before any text is written. */
struct snapshot {
	int store_ok;
	size_t used, map;
	struct outbox_queue ob;
	uint64_t head_age_ms;
	uint64_t audit_records, audit_unsigned, ckpt_age_ms;
	int have_ckpt;
	struct gw_stats gw;
	int gateway_on;
};

/* ---- a growing text buffer ---------------------------------------------- */

struct sb {
	char *p;
	size_t len, cap;
};

static void sb_printf(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sb *b, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (b->p && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		b->cap = (b->cap + (size_t)n + 1) * 2;
		b->p = xrealloc(b->p, b->cap);
	}
}

/* ---- the families --------------------------------------------------------- */

struct family {
	const char *name;
	const char *type; /* "counter" or "gauge" */
	const char *help;
	/* Write the family's samples; return 0 to leave the family out. */
	int (*emit)(struct sb *b, const struct family *f, const struct snapshot *s);
};

static int emit_build(struct sb *b, const struct family *f, const struct snapshot *s)
{
	(void)s;
	sb_printf(b, "%s{version=\"%s\"} 1\n", f->name, THRESHOLD_VERSION);
	return 1;
}

static int emit_transactions(struct sb *b, const struct family *f, const struct snapshot *s)
{
	(void)s;
	sb_printf(b, "%s %llu\n", f->name,
	          (unsigned long long)atomic_load_explicit(&counters[METRICS_TRANSACTIONS],
	                                                   memory_order_relaxed));
	return 1;
}

static int emit_events(struct sb *b, const struct family *f, const struct snapshot *s)
{
	(void)s;
	sb_printf(b, "%s %llu\n", f->name,
	          (unsigned long long)atomic_load_explicit(&counters[METRICS_EVENTS], memory_order_relaxed));
	return 1;
}

static int emit_channel_messages(struct sb *b, const struct family *f, const struct snapshot *s)
{
	(void)s;
	/* label values: the channel's name in the code, never an address */
	static const struct {
		const char *channel, *direction;
		enum metrics_counter c;
	} rows[] = {{"sms", "in", METRICS_SMS_IN},
	            {"sms", "out", METRICS_SMS_OUT},
	            {"whatsapp", "in", METRICS_WA_IN},
	            {"whatsapp", "out", METRICS_WA_OUT}};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		sb_printf(
		        b, "%s{channel=\"%s\",direction=\"%s\"} %llu\n", f->name, rows[i].channel,
		        rows[i].direction,
		        (unsigned long long)atomic_load_explicit(&counters[rows[i].c], memory_order_relaxed));
	return 1;
}

static int emit_channel_delivery(struct sb *b, const struct family *f, const struct snapshot *s)
{
	(void)s;
	/* label values: the channel's name and a state word, never an address or an id */
	static const struct {
		const char *state;
		enum metrics_counter c;
	} rows[] = {{"accepted", METRICS_SMS_DLR_ACCEPTED},
	            {"buffered", METRICS_SMS_DLR_BUFFERED},
	            {"delivered", METRICS_SMS_DLR_DELIVERED},
	            {"failed", METRICS_SMS_DLR_FAILED}};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		sb_printf(
		        b, "%s{channel=\"sms\",state=\"%s\"} %llu\n", f->name, rows[i].state,
		        (unsigned long long)atomic_load_explicit(&counters[rows[i].c], memory_order_relaxed));
	return 1;
}

static int emit_decisions(struct sb *b, const struct family *f, const struct snapshot *s)
{
	(void)s;
	for (unsigned r = 0; r < POL_R_COUNT; r++)
		sb_printf(b, "%s{reason=\"%s\"} %llu\n", f->name, pol_reason_name((enum pol_reason)r),
		          (unsigned long long)atomic_load_explicit(&decisions[r], memory_order_relaxed));
	return 1;
}

static int emit_outbox_pending(struct sb *b, const struct family *f, const struct snapshot *s)
{
	if (!s->store_ok)
		return 0;
	sb_printf(b, "%s %zu\n", f->name, s->ob.pending);
	return 1;
}

static int emit_outbox_set_aside(struct sb *b, const struct family *f, const struct snapshot *s)
{
	if (!s->store_ok)
		return 0;
	sb_printf(b, "%s %zu\n", f->name, s->ob.set_aside);
	return 1;
}

static int emit_outbox_age(struct sb *b, const struct family *f, const struct snapshot *s)
{
	if (!s->store_ok)
		return 0;
	sb_printf(b, "%s %.3f\n", f->name, s->head_age_ms / 1000.0);
	return 1;
}

static int emit_store_used(struct sb *b, const struct family *f, const struct snapshot *s)
{
	if (!s->store_ok)
		return 0;
	sb_printf(b, "%s %zu\n", f->name, s->used);
	return 1;
}

static int emit_store_map(struct sb *b, const struct family *f, const struct snapshot *s)
{
	if (!s->store_ok)
		return 0;
	sb_printf(b, "%s %zu\n", f->name, s->map);
	return 1;
}

static int emit_audit_records(struct sb *b, const struct family *f, const struct snapshot *s)
{
	if (!s->store_ok)
		return 0;
	sb_printf(b, "%s %llu\n", f->name, (unsigned long long)s->audit_records);
	return 1;
}

static int emit_audit_unsigned(struct sb *b, const struct family *f, const struct snapshot *s)
{
	if (!s->store_ok)
		return 0;
	sb_printf(b, "%s %llu\n", f->name, (unsigned long long)s->audit_unsigned);
	return 1;
}

static int emit_ckpt_age(struct sb *b, const struct family *f, const struct snapshot *s)
{
	if (!s->store_ok || !s->have_ckpt)
		return 0;
	sb_printf(b, "%s %.3f\n", f->name, s->ckpt_age_ms / 1000.0);
	return 1;
}

static int emit_gw_requests(struct sb *b, const struct family *f, const struct snapshot *s)
{
	if (!s->gateway_on)
		return 0;
	for (unsigned r = 0; r < GW_STATS_ROUTES; r++)
		for (unsigned c = 0; c < GW_STATS_CLASSES; c++)
			sb_printf(b, "%s{route=\"%s\",code=\"%s\"} %lu\n", f->name, gw_stats_route_name(r),
			          gw_stats_class_name(c), s->gw.requests[r][c]);
	return 1;
}

static int emit_gw_parked(struct sb *b, const struct family *f, const struct snapshot *s)
{
	if (!s->gateway_on)
		return 0;
	sb_printf(b, "%s %u\n", f->name, s->gw.waiting);
	return 1;
}

/*
 * The one registration table.  Names are stable: dashboards and alerts use
 * them.  Calls show as gateway requests on route "call" (each signal) and
 * in the audit log's call_* records; outside channels' texts here.
 */
static const struct family families[] = {
        {"threshold_build_info", "gauge", "The running version (always 1).", emit_build},
        {"threshold_transactions_total", "counter", "Homeserver transactions committed.", emit_transactions},
        {"threshold_events_total", "counter", "Events handled (duplicates and unusable ones not counted).",
         emit_events},
        {"threshold_decisions_total", "counter",
         "Policy decisions by reason (docs/policy.md); a transaction retried after a failure counts again.",
         emit_decisions},
        {"threshold_outbox_pending", "gauge", "Actions waiting in the outbox.", emit_outbox_pending},
        {"threshold_outbox_set_aside", "gauge",
         "Actions set aside after failing for good (threshold status lists them).", emit_outbox_set_aside},
        {"threshold_outbox_oldest_action_age_seconds", "gauge",
         "How long the oldest waiting action has been first in the queue, as scrapes saw it (0 when empty).",
         emit_outbox_age},
        {"threshold_gateway_requests_total", "counter",
         "Gateway requests answered, by route and status class.", emit_gw_requests},
        {"threshold_gateway_parked_polls", "gauge", "Guests' feed polls waiting for news.", emit_gw_parked},
        {"threshold_channel_messages_total", "counter",
         "Messages carried by an outside channel, by channel and direction (no address, no content).",
         emit_channel_messages},
        {"threshold_channel_delivery_total", "counter",
         "Delivery reports from the SMS gateway, by state (no address, no id).", emit_channel_delivery},
        {"threshold_store_used_bytes", "gauge", "Bytes of the store's map in use (high-water mark).",
         emit_store_used},
        {"threshold_store_map_bytes", "gauge", "The store's map size (store.map_size_mb).", emit_store_map},
        {"threshold_audit_records_total", "counter", "Records in the safeguarding audit log.",
         emit_audit_records},
        {"threshold_audit_unsigned_records", "gauge", "Audit records after the newest signed checkpoint.",
         emit_audit_unsigned},
        {"threshold_audit_checkpoint_age_seconds", "gauge", "Seconds since the newest signed checkpoint.",
         emit_ckpt_age},
};

/* STORE_META "audit_head", as audit.h lays it out: seq, hash, the last
 * checkpoint's seq and its time, u64 BE each but the hash. */
#define AUDIT_HEAD_LEN (8 + AUDIT_HASH_LEN + 8 + 8)

static void snapshot_take(metrics *m, struct snapshot *s)
{
	memset(s, 0, sizeof(*s));
	store_txn *t;
	if (store_txn_begin(m->st, 0, &t) == TH_OK) {
		s->store_ok = outbox_queue_read(t, &s->ob) == TH_OK;
		const void *v;
		size_t vlen;
		if (store_get(t, STORE_META, "audit_head", strlen("audit_head"), &v, &vlen) == TH_OK &&
		    vlen == AUDIT_HEAD_LEN) {
			const unsigned char *p = v;
			uint64_t ckpt_seq = store_key_u64(p + 8 + AUDIT_HASH_LEN);
			uint64_t ckpt_ms = store_key_u64(p + 8 + AUDIT_HASH_LEN + 8);
			s->audit_records = store_key_u64(p);
			s->audit_unsigned = s->audit_records > ckpt_seq ? s->audit_records - ckpt_seq : 0;
			s->have_ckpt = ckpt_seq > 0;
			uint64_t now = th_now_ms();
			s->ckpt_age_ms = now > ckpt_ms ? now - ckpt_ms : 0;
		}
		store_txn_abort(t);
	}
	if (s->store_ok && store_usage(m->st, &s->used, &s->map) != TH_OK)
		s->store_ok = 0;
	pthread_mutex_lock(&m->mu);
	uint64_t now = th_mono_ms();
	if (!s->ob.head_seq) {
		m->head_seq = 0;
	} else if (s->ob.head_seq != m->head_seq) {
		m->head_seq = s->ob.head_seq;
		m->head_seen_ms = now;
	}
	s->head_age_ms = m->head_seq ? now - m->head_seen_ms : 0;
	pthread_mutex_unlock(&m->mu);
	s->gateway_on = m->gw != NULL;
	gw_stats_get(m->gw, &s->gw);
}

char *metrics_render(metrics *m)
{
	struct snapshot s;
	snapshot_take(m, &s);
	struct sb b = {0};
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		const struct family *f = &families[i];
		size_t mark = b.len;
		sb_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
		if (!f->emit(&b, f, &s)) {
			b.len = mark;
			b.p[b.len] = '\0';
		}
	}
	if (!b.p)
		return xstrdup("");
	return b.p;
}

/* ---- the listener ----------------------------------------------------------- */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type, char *text)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(r, "Content-Type", type);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	enum MHD_Result ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size,
                              void **con_cls)
{
	(void)version;
	(void)upload_data;
	metrics *m = cls;
	if (!*con_cls) { /* first call: headers only */
		*con_cls = m;
		return MHD_YES;
	}
	if (*upload_data_size) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return reply(conn, 405, "text/plain; charset=utf-8", xstrdup("only GET\n"));
	if (!strcmp(url, "/metrics"))
		return reply(conn, 200, "text/plain; version=0.0.4; charset=utf-8", metrics_render(m));
	if (!strcmp(url, "/health")) {
		/* Serving, and the store answers a read: what a proxy or systemd
		 * can act on.  The homeserver's health is its own (doctor). */
		store_txn *t;
		if (store_txn_begin(m->st, 0, &t) != TH_OK)
			return reply(conn, 503, "application/json",
			             xstrdup("{\"status\":\"store unreadable\"}\n"));
		store_txn_abort(t);
		return reply(conn, 200, "application/json", xstrdup("{\"status\":\"ok\"}\n"));
	}
	return reply(conn, 404, "text/plain; charset=utf-8", xstrdup("/metrics or /health\n"));
}

int metrics_start(const struct config *cfg, store *st, gateway *gw, metrics **out)
{
	metrics *m = xcalloc(1, sizeof(*m));
	m->cfg = cfg;
	m->st = st;
	m->gw = gw;
	pthread_mutex_init(&m->mu, NULL);
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
	if (inet_pton(AF_INET, cfg->metrics_bind, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)cfg->metrics_port);
	} else if (inet_pton(AF_INET6, cfg->metrics_bind, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)cfg->metrics_port);
		flags |= MHD_USE_IPv6;
	} else {
		LOG(LOG_ERROR, "metrics.bind '%s' is not an IP address", cfg->metrics_bind);
		goto fail;
	}
	m->mhd = MHD_start_daemon(flags, (uint16_t)cfg->metrics_port, NULL, NULL, handle, m,
	                          MHD_OPTION_EXTERNAL_LOGGER, log_mhd, (void *)"metrics",
	                          MHD_OPTION_SOCK_ADDR, &ss, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
	                          MHD_OPTION_CONNECTION_LIMIT, (unsigned)16, MHD_OPTION_END);
	if (!m->mhd) {
		LOG(LOG_ERROR, "metrics: cannot listen on %s:%u (in use, or not an address of this machine?)",
		    cfg->metrics_bind, cfg->metrics_port);
		goto fail;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->mhd, MHD_DAEMON_INFO_BIND_PORT);
	m->port = info ? info->port : cfg->metrics_port;
	LOG(LOG_INFO, "metrics: /metrics and /health on %s:%u", cfg->metrics_bind, m->port);
	*out = m;
	return TH_OK;
fail:
	pthread_mutex_destroy(&m->mu);
	free(m);
	return TH_EIO;
}

unsigned metrics_port(metrics *m)
{
	return m->port;
}

void metrics_stop(metrics *m)
{
	if (!m)
		return;
	MHD_stop_daemon(m->mhd);
	pthread_mutex_destroy(&m->mu);
	free(m);
}
