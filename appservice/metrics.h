/*
 * metrics.h - Prometheus metrics (/metrics, text exposition format 0.0.4)
 * and a health check (/health) on a listener of their own, loopback by
 * default (metrics.enabled, metrics.bind, metrics.port).
 *
 * Counters are process-wide atomics that other modules bump with one call;
 * gauges are read from the store, the outbox and the gateway at each
 * scrape.  No label carries personal data: every label value is one of a
 * fixed set of words in Threshold's code (a policy reason, a gateway route,
 * a status class), never a user id, pseudonym, room id or service name.
 */
#ifndef THRESHOLD_METRICS_H
#define THRESHOLD_METRICS_H

#include <stdint.h>

#include "gateway.h"
#include "store.h"

struct config;
typedef struct metrics metrics;

/* The plain counters (metrics.c's table has their names and help). */
enum metrics_counter {
	METRICS_TRANSACTIONS = 0, /* AS transactions committed */
	METRICS_EVENTS,           /* events handled in them (not duplicates, not skipped) */
	METRICS_SMS_IN,           /* texts taken in from the SMS gateway (not repeats, not over a limit) */
	METRICS_SMS_OUT,          /* texts the SMS gateway accepted to send */
	METRICS_WA_IN,            /* WhatsApp messages taken in (not repeats, not over a limit) */
	METRICS_WA_OUT,           /* WhatsApp messages the Graph API accepted to send */
	METRICS_SMS_DLR_ACCEPTED, /* SMS delivery reports by state (bridge/sms.h enum sms_dlr_state) */
	METRICS_SMS_DLR_BUFFERED,
	METRICS_SMS_DLR_DELIVERED,
	METRICS_SMS_DLR_FAILED,
	METRICS_NCOUNTERS
};

/** Add @p n to counter @p c.  Any thread; never fails. */
void metrics_add(enum metrics_counter c, uint64_t n);

/** Count one policy decision with reason @p reason (enum pol_reason). */
void metrics_decision(unsigned reason);

/**
 * Listen on metrics.bind:metrics.port.
 * @param cfg, st  borrowed; must outlive the listener
 * @param gw       borrowed, or NULL when the gateway is off
 * @return TH_OK or TH_EIO (cannot bind; logged).
 */
int metrics_start(const struct config *cfg, store *st, gateway *gw, metrics **out);

/** The port bound.  */
unsigned metrics_port(metrics *m);

/** Stop listening and free.  NULL is a no-op. */
void metrics_stop(metrics *m);

/** The exposition text now (new string; caller frees). */
char *metrics_render(metrics *m);

#endif
