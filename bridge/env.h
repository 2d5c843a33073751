/*
 * env.h - what the bridge works with, handed to it by the composition root
 * (appservice/daemon.c) and shared with the transaction path (txn.h): the
 * configuration, the store, the audit log and Matrix (matrix.h).  The
 * bridge names the store and the audit log here without their headers;
 * what takes them is declared in store.h and audit.h, below the bridge
 * (docs/architecture.md, "Layers").
 */
#ifndef THRESHOLD_ENV_H
#define THRESHOLD_ENV_H

struct config;
struct store;
struct audit;
struct matrix;
struct store_txn;

/* All borrowed, all outliving every call. */
struct txn_env {
	const struct config *cfg;
	struct store *st;
	struct audit *au;        /* safeguarding audit log; NULL writes no records */
	const struct matrix *mx; /* what the bridge asks of the homeserver (matrix.h) */
	/* 1 while a safeguarding case about @p guest is not closed (appservice/
	 * cases.h): it holds the guest's erasure back.  NULL: nothing holds one. */
	int (*case_open)(struct store_txn *t, const char *guest);
};

#endif
