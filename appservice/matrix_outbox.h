/*
 * matrix_outbox.h - the bridge's Matrix interface (bridge/matrix.h)
 * implemented on the durable outbox: each method queues one outbox action
 * (outbox.h) in the caller's write transaction.
 */
#ifndef THRESHOLD_MATRIX_OUTBOX_H
#define THRESHOLD_MATRIX_OUTBOX_H

#include "matrix.h"

struct audit;
struct config;
struct store;

/** The implementation's context; set up by matrix_outbox_init. */
struct matrix_outbox {
	struct matrix mx;         /* hand &mx to the bridge */
	const struct config *cfg; /* borrowed */
	/* borrowed, or NULL: when set, what a guest writes is queued sealed
	 * under the guest's key (audit_seal; "sealed_content" in outbox.h), so
	 * the store's freed pages keep nothing readable once they are erased */
	struct audit *au;
	/* borrowed, or NULL: the store, read after an erasure's commit to
	 * remove the guest's spooled files (matrix.h "erased") */
	struct store *st;
};

/**
 * Make @p mo the outbox's implementation of the bridge's Matrix interface.
 * @param cfg  borrowed; must outlive @p mo (the bot's id, the room
 *             templates' settings)
 */
void matrix_outbox_init(struct matrix_outbox *mo, const struct config *cfg);

#endif
