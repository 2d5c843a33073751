/*
 * gateway.h - the guest gateway: an HTTP JSON API (docs/gateway-api.md) and
 * the guest page, on their own listener (gateway.listen_address/port).
 *
 * libmicrohttpd with one internal epoll thread.  A feed long poll does not
 * hold a thread: its connection is suspended (MHD_suspend_connection) and
 * resumed by the gateway's waiter thread when the guest's feed grows
 * (gw_notify, after a commit) or its timeout passes, so thousands of idle
 * guests cost a small buffer each.  A picture or file the guest's page asks
 * for (GET /media/{id}) is fetched from the homeserver by the gateway's one
 * fetcher thread, the connection suspended meanwhile, from a small bounded
 * queue (503 when it is full); nothing fetched is kept.
 *
 * Every request is authorised against the session's own conversation; a
 * guest can name nothing else.  Bodies are capped, requests rate-limited per
 * session and per address (429 with retry_after_ms).  No token, code or
 * address is logged.
 */
#ifndef THRESHOLD_GATEWAY_H
#define THRESHOLD_GATEWAY_H

#include "channel.h"
#include "env.h"

typedef struct gateway gateway;

/** Called after the gateway committed actions for the outbox (any thread). */
typedef void (*gw_on_queue_fn)(void *ctx);

/**
 * Bind gateway.listen_address:listen_port and start serving.
 * @param env  borrowed; must outlive the gateway
 * @return TH_OK, or TH_EIO (cannot bind or start a thread; logged).
 */
int gw_start(const struct txn_env *env, gw_on_queue_fn on_queue, void *ctx, gateway **out);

/** The port bound (when listen_port was 0 in tests). */
unsigned gw_port(gateway *gw);

/** New feed entries are committed: wake waiting long polls.  Safe from any thread; NULL is a no-op. */
void gw_notify(gateway *gw);

/** Feed connections waiting right now (for status and benches). */
unsigned gw_waiting(gateway *gw);

/* Requests answered, by route and by status class, for metrics (no personal
 * data: a route is one of a fixed set of words, a class "2xx" to "5xx"). */
#define GW_STATS_ROUTES  15
#define GW_STATS_CLASSES 5
struct gw_stats {
	unsigned long requests[GW_STATS_ROUTES][GW_STATS_CLASSES];
	unsigned waiting; /* parked feed polls right now */
};

/** Copy the counters (any thread).  NULL @p gw gives zeros. */
void gw_stats_get(gateway *gw, struct gw_stats *out);

/** The stable names: a route ("page", "send", ... "static" for the page's
 *  files and unknown paths) and a status class ("2xx", "3xx", "4xx", "429",
 *  "5xx"); NULL out of range. */
const char *gw_stats_route_name(unsigned i);
const char *gw_stats_class_name(unsigned i);

/**
 * The gateway as a channel (channel.h): the web page, whose feed_grew is
 * gw_notify.  ops NULL when @p gw is NULL.
 */
struct channel gw_channel(gateway *gw);

/**
 * Answer every waiting poll and media request (a download in progress is cut
 * short, queued ones get 503), stop, and free.  NULL is a no-op.
 */
void gw_stop(gateway *gw);

#endif
