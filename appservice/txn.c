/*
 * txn.c - one AS transaction to one durable LMDB commit.
 */
#include "txn.h"

#include <string.h>

#include "audit.h"
#include "config.h"
#include "dedupe.h"
#include "room_counts.h"
#include "events.h"
#include "metrics.h"
#include "rooms.h"
#include "log.h"
#include "mxevent.h"
#include "util.h"

/* spec: room events, size limits: event_id, room_id, sender, type and
 * state_key are at most 255 bytes each. */
#define MAX_EVENT_ID 255

/* @return 1 if @p s is absent or within the spec's size limit. */
static int id_fits(const char *s)
{
	return !s || strlen(s) <= MAX_EVENT_ID;
}

/*
 * An event Threshold can handle: it has a non-empty event_id and room_id,
 * and none of its ids is over the spec's limit.  An empty id, or one over
 * the limit, could not be a key in the store (LMDB takes 1 to 511 bytes) or
 * a field of an audit record, so the event's transaction would fail for
 * ever; it is skipped instead.
 */
static int event_usable(const struct mxev *ev)
{
	return ev->event_id && ev->room_id && *ev->event_id && *ev->room_id && id_fits(ev->event_id) &&
	       id_fits(ev->room_id) && id_fits(ev->sender) && id_fits(ev->type) && id_fits(ev->state_key);
}

/* The rooms a transaction touched: loaded once, written once before commit
 * if more than their count of events changed (room_counts.h). */
struct room_cache {
	size_t n, cap;
	struct {
		const char *room_id; /* borrowed from the parsed batch */
		json_t *state;
		json_t *orig; /* a copy of the record as read (NULL: none yet) */
	} * v;
};

static json_t *room_get(struct room_cache *rc, store_txn *t, const char *room_id, int *err)
{
	for (size_t i = 0; i < rc->n; i++) {
		if (strcmp(rc->v[i].room_id, room_id) == 0)
			return rc->v[i].state;
	}
	json_t *state = NULL, *orig = NULL;
	int r = store_get_json(t, STORE_ROOMS, room_id, &state);
	if (r == TH_ENOTFOUND || (r == TH_OK && !json_is_object(state))) {
		json_decref(state);
		state = rooms_state_new();
	} else if (r == TH_OK) {
		orig = json_deep_copy(state);
	} else {
		*err = r;
		return NULL;
	}
	if (rc->n == rc->cap) {
		rc->cap = rc->cap ? rc->cap * 2 : 8;
		rc->v = xrealloc(rc->v, rc->cap * sizeof(*rc->v));
	}
	rc->v[rc->n].room_id = room_id;
	rc->v[rc->n].state = state;
	rc->v[rc->n].orig = orig;
	rc->n++;
	return state;
}

static json_int_t events_of(const json_t *state)
{
	return json_integer_value(json_object_get(state, "events"));
}

/* Write back the rooms whose record changed; of those whose count alone
 * did, add to their pending count instead. */
static int room_flush(struct room_cache *rc, store_txn *t)
{
	struct room_counts counts;
	int r = room_counts_load(t, &counts);
	for (size_t i = 0; !r && i < rc->n; i++) {
		json_t *state = rc->v[i].state, *orig = rc->v[i].orig;
		json_int_t before = orig ? events_of(orig) : 0, added = events_of(state) - before;
		json_object_set_new(state, "events", json_integer(before));
		if (orig && added >= 0 && json_equal(state, orig)) {
			r = added ? room_counts_add(&counts, t, rc->v[i].room_id, (uint64_t)added) : TH_OK;
			continue;
		}
		uint64_t pending = room_counts_take(&counts, rc->v[i].room_id);
		json_object_set_new(state, "events", json_integer(before + added + (json_int_t)pending));
		r = store_put_json(t, STORE_ROOMS, rc->v[i].room_id, state);
	}
	if (!r)
		r = room_counts_save(&counts, t);
	room_counts_free(&counts);
	return r;
}

static void room_cache_free(struct room_cache *rc)
{
	for (size_t i = 0; i < rc->n; i++) {
		json_decref(rc->v[i].state);
		json_decref(rc->v[i].orig);
	}
	free(rc->v);
}

/* What identifies a transaction's content, to tell a resend from a reused
 * txnId: the FNV-1a hash of its events' ids, in order, each ended by 0xFF
 * (never in UTF-8).  A resend carries the same ids; a homeserver whose
 * database was reset reuses txnIds for other events.  Events without a
 * usable id are skipped either way.  Hashing the ids, not the whole body,
 * costs a seventh as much. */
static uint64_t txn_hash(const struct mxev_batch *b)
{
	static const unsigned char sep = 0xff; /* never in UTF-8: ids cannot run together */
	uint64_t h = TH_FNV1A64_INIT;
	for (size_t i = 0; i < b->n; i++) {
		const char *id = b->events[i].event_id ? b->events[i].event_id : "";
		h = th_fnv1a64_update(h, id, strlen(id));
		h = th_fnv1a64_update(h, &sep, 1);
	}
	return h;
}

static void answer(struct txn_result *res, int status, const char *errcode, const char *error)
{
	res->status = status;
	res->errcode = errcode;
	res->error = error;
}

void txn_process(const struct txn_env *env, const char *txn_id, const char *body, size_t len,
                 struct txn_result *res)
{
	const struct config *cfg = env->cfg;
	store *st = env->st;
	memset(res, 0, sizeof(*res));
	struct mxev_batch batch = {0};
	struct mxev_error jerr;
	switch (mxev_parse(&batch, body, len, cfg->max_json_depth, &jerr)) {
	case MXEV_OK:
		break;
	case MXEV_TOO_DEEP:
		LOG(LOG_WARN, "transaction %s: JSON nested deeper than %u; refused", txn_id,
		    cfg->max_json_depth);
		return answer(res, 400, "M_BAD_JSON", "JSON nested too deeply");
	case MXEV_NOT_JSON:
		LOG(LOG_WARN, "transaction %s: not JSON (byte %zu: %s)", txn_id, jerr.offset, jerr.text);
		return answer(res, 400, "M_NOT_JSON", "Content not JSON");
	case MXEV_NOT_OBJECT:
		return answer(res, 400, "M_BAD_JSON", "Body must be a JSON object");
	case MXEV_EVENTS_NOT_ARRAY:
		return answer(res, 400, "M_BAD_JSON", "'events' must be an array");
	}

	uint64_t hash = txn_hash(&batch);
	struct room_cache rooms = {0};
	struct dedupe seen = {0};
	store_txn *t = NULL;
	int rc = store_txn_begin(st, 1, &t);
	if (rc)
		goto store_fail;

	/* spec: the homeserver may resend a transaction; a repeat is answered 200.
	 * The last few are remembered (dedupe.h); an older one resent finds its
	 * events seen, below, and changes nothing either. */
	if ((rc = dedupe_load(t, &seen)))
		goto store_fail;
	uint64_t prev_hash;
	if (dedupe_txn_find(&seen, txn_id, &prev_hash)) {
		if (prev_hash == hash) {
			store_txn_abort(t);
			dedupe_free(&seen);
			mxev_batch_free(&batch);
			LOG(LOG_DEBUG, "transaction %s: already committed", txn_id);
			return answer(res, 200, NULL, NULL);
		}
		/* Same id, other content: the homeserver's counter was reset (a new
		 * database).  Process it; event ids still keep out duplicates. */
		LOG(LOG_WARN,
		    "transaction %s: id reused with different content (was the homeserver's "
		    "database reset?); processing it",
		    txn_id);
	}

	uint64_t now = th_now_ms();
	for (size_t i = 0; i < batch.n; i++) {
		const struct mxev *ev = &batch.events[i];
		const char *event_id = ev->event_id;
		const char *room_id = ev->room_id;
		if (!event_usable(ev)) {
			LOG(LOG_WARN,
			    "transaction %s: event #%zu has no usable event_id/room_id, or an id over "
			    "%d bytes; skipped",
			    txn_id, i, MAX_EVENT_ID);
			res->skipped++;
			continue;
		}
		/* spec: events may be delivered more than once; each is handled once. */
		rc = dedupe_event_add(&seen, t, event_id, now);
		if (rc == TH_EEXIST) {
			res->skipped++;
			continue;
		}
		if (rc)
			goto store_fail;
		json_t *room = room_get(&rooms, t, room_id, &rc);
		if (!room)
			goto store_fail;
		rc = events_handle(env, t, ev, room, &res->queued);
		if (rc)
			goto store_fail;
		res->processed++;
	}
	if ((rc = room_flush(&rooms, t)))
		goto store_fail;
	/* A busy log is signed every audit.checkpoint_every records, in the same commit. */
	if (env->au && res->processed && audit_checkpoint_due(env->au, now) &&
	    (rc = audit_checkpoint(env->au, t, now)))
		goto store_fail;
	if ((rc = dedupe_save(&seen, t, txn_id, hash, now)))
		goto store_fail;
	rc = store_txn_commit(t);
	t = NULL;
	if (rc)
		goto store_fail;
	metrics_add(METRICS_TRANSACTIONS, 1);
	metrics_add(METRICS_EVENTS, res->processed);
	room_cache_free(&rooms);
	dedupe_free(&seen);
	mxev_batch_free(&batch);
	LOG(LOG_DEBUG, "transaction %s: %u events handled, %u skipped, %u actions queued", txn_id,
	    res->processed, res->skipped, res->queued);
	return answer(res, 200, NULL, NULL);

store_fail:
	store_txn_abort(t);
	room_cache_free(&rooms);
	dedupe_free(&seen);
	mxev_batch_free(&batch);
	res->processed = res->queued = 0;
	if (rc == TH_EFULL) {
		LOG(LOG_ERROR,
		    "transaction %s refused: the store is full; raise store.map_size_mb and restart "
		    "(the homeserver will resend it)",
		    txn_id);
		return answer(res, 503, "M_LIMIT_EXCEEDED", "Store full");
	}
	LOG(LOG_ERROR, "transaction %s refused: store error (%s); the homeserver will resend it", txn_id,
	    th_strerror(rc));
	return answer(res, 503, "M_UNKNOWN", "Store unavailable");
}
