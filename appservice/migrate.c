/*
 * migrate.c - upgrading a store written by an older Threshold, once, inside
 * the one write transaction store_open runs it in: a crash midway keeps the
 * old store as it was, and the next start upgrades it again.
 */
#include "store.h"

#include "audit.h"
#include "dedupe.h"
#include "log.h"
#include "rooms.h"
#include "util.h"

int store_migrate(store_txn *t, uint64_t from)
{
	int rc = TH_OK;
	if (from < 2) {
		/* 1 -> 2: rooms' per-user facts in their own keys; audit indexes. */
		rc = rooms_migrate_v2(t);
		if (!rc)
			rc = audit_index_build(t);
		if (rc)
			LOG(LOG_ERROR, "store: upgrade to schema version 2 failed: %s", th_strerror(rc));
	}
	if (!rc && from < 3) {
		/* 2 -> 3: the last transactions in one record of STORE_TXNS (dedupe.h). */
		rc = dedupe_migrate_v3(t);
		if (rc)
			LOG(LOG_ERROR, "store: upgrade to schema version 3 failed: %s", th_strerror(rc));
	}
	if (!rc && from < 4) {
		/* 3 -> 4: the newest audit records wait outside STORE_AUDIT_INDEX (audit.c). */
		rc = audit_index_migrate_v4(t);
		if (rc)
			LOG(LOG_ERROR, "store: upgrade to schema version 4 failed: %s", th_strerror(rc));
	}
	return rc;
}
