/*
 * audit_witness.c - post each audit checkpoint (seq and hash) to the witness
 * room through the outbox, read the witnesses back, and compare them with
 * the store.  audit_witness.h explains why and the format.
 */
#include "audit_witness.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "jsonx.h"
#include "log.h"
#include "outbox.h"
#include "util.h"

#define META_WITNESS "audit_witness_seq"
#define PAGE_LIMIT   400     /* events per /messages page: well under CS_MAX_RESPONSE_BYTES */
#define MAX_WITNESS  1000000 /* witness events read at most (one a checkpoint) */
#define HEX_LEN      (2 * AUDIT_HASH_LEN)

const char *audit_witness_room(const struct config *cfg)
{
	return cfg->audit_witness_room ? cfg->audit_witness_room : cfg->safeguarding_room;
}

/* The mark: the newest checkpoint already queued for the witness room. */
static int mark_get(store_txn *t, uint64_t *seq, int *present)
{
	const void *v;
	size_t vlen;
	int rc = store_get(t, STORE_META, META_WITNESS, strlen(META_WITNESS), &v, &vlen);
	*present = 0;
	*seq = 0;
	if (rc == TH_ENOTFOUND)
		return TH_OK;
	if (rc)
		return rc;
	if (vlen != 8)
		return TH_ESTORE;
	*seq = store_key_u64(v);
	*present = 1;
	return TH_OK;
}

struct queue_walk {
	const struct config *cfg;
	const char *room;
	store_txn *t;
	size_t queued;
	uint64_t last;
	int rc;
};

/* Queue one checkpoint's witness: its seq and hash, nothing else. */
static int queue_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct queue_walk *w = ctx;
	if (klen != 8)
		return -TH_ESTORE;
	json_t *ck = json_loadb(val, vlen, 0, NULL);
	const char *hash = jsonx_str(ck, "hash");
	if (!hash || strlen(hash) != HEX_LEN) {
		json_decref(ck);
		return -TH_ESTORE;
	}
	uint64_t seq = store_key_u64(key);
	json_t *a = json_pack("{s:s, s:s, s:s, s:s, s:{s:I, s:s}}", "op", "send", "room_id", w->room,
	                      "user_id", w->cfg->bot_user_id, "type", AUDIT_WITNESS_TYPE, "content", "seq",
	                      (json_int_t)seq, "hash", hash);
	json_decref(ck);
	int rc = outbox_push(w->t, a);
	json_decref(a);
	if (rc) {
		w->rc = rc;
		return 1;
	}
	w->queued++;
	w->last = seq;
	return w->queued >= AUDIT_WITNESS_BATCH ? 1 : 0;
}

int audit_witness_queue(const struct config *cfg, store *st, size_t *queued)
{
	*queued = 0;
	const char *room = audit_witness_room(cfg);
	if (!room)
		return TH_OK;
	store_txn *t;
	uint64_t mark, newest;
	int present;
	int rc = store_txn_begin(st, 0, &t);
	if (rc)
		return rc;
	rc = mark_get(t, &mark, &present);
	if (!rc)
		rc = audit_last_checkpoint(t, &newest);
	store_txn_abort(t);
	if (rc || newest == 0 || (present && newest <= mark))
		return rc;

	if ((rc = store_txn_begin(st, 1, &t)))
		return rc;
	/* Read again under the write lock: another process may have moved it. */
	if ((rc = mark_get(t, &mark, &present)) || (rc = audit_last_checkpoint(t, &newest)))
		goto fail;
	struct queue_walk w = {cfg, room, t, 0, 0, TH_OK};
	/* First use: witness from the newest checkpoint on, not the whole history. */
	unsigned char from[8];
	store_u64_key(from, present ? mark + 1 : newest);
	if (newest == 0 || (present && newest <= mark)) {
		store_txn_abort(t);
		return TH_OK;
	}
	rc = store_walk(t, STORE_AUDIT_CKPT, from, sizeof(from), queue_one, &w);
	if (!rc)
		rc = w.rc;
	if (rc)
		goto fail;
	if (w.queued) {
		unsigned char v[8];
		store_u64_key(v, w.last);
		if ((rc = store_put(t, STORE_META, META_WITNESS, strlen(META_WITNESS), v, sizeof(v), 0)))
			goto fail;
	}
	if ((rc = store_txn_commit(t)))
		return rc;
	*queued = w.queued;
	return TH_OK;
fail:
	store_txn_abort(t);
	return rc;
}

/* ---- reading back ------------------------------------------------------ */

static void wlist_add(struct audit_witness_list *l, const json_t *ev)
{
	const char *id = jsonx_str(ev, "event_id");
	const json_t *content = json_object_get(ev, "content");
	struct audit_witness w;
	memset(&w, 0, sizeof(w));
	snprintf(w.event_id, sizeof(w.event_id), "%s", id ? id : "?");
	for (unsigned char *p = (unsigned char *)w.event_id; *p; p++) /* printed to a terminal */
		if (*p < 0x20 || *p == 0x7f)
			*p = '?';
	w.ts_ms = (uint64_t)json_integer_value(json_object_get(ev, "origin_server_ts"));
	const json_t *seq = json_object_get(content, "seq");
	const char *hash = jsonx_str(content, "hash");
	if (json_is_integer(seq) && json_integer_value(seq) > 0 && hash && strlen(hash) == HEX_LEN &&
	    strspn(hash, "0123456789abcdef") == HEX_LEN) {
		w.seq = (uint64_t)json_integer_value(seq);
		memcpy(w.hash, hash, HEX_LEN + 1);
	} else if (!json_object_get(json_object_get(ev, "unsigned"), "redacted_because") &&
	           json_object_size(content) != 0) {
		return; /* not a witness we wrote, nor one redacted: ignore */
	}
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 64;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n++] = w;
}

const char *audit_witness_page(const json_t *page, const char *bot_user_id, struct audit_witness_list *l)
{
	const json_t *chunk = json_object_get(page, "chunk");
	size_t i;
	const json_t *ev;
	json_array_foreach(chunk, i, ev)
	{
		const char *type = jsonx_str(ev, "type"), *sender = jsonx_str(ev, "sender");
		if (type && sender && !strcmp(type, AUDIT_WITNESS_TYPE) && !strcmp(sender, bot_user_id))
			wlist_add(l, ev);
	}
	return jsonx_str(page, "end");
}

int audit_witness_read(cs_client *c, const struct config *cfg, struct audit_witness **out, size_t *n,
                       long *status)
{
	*status = 0;
	const char *room = audit_witness_room(cfg);
	if (!room)
		return TH_ENOTFOUND;
	/* spec: CS API, GET /rooms/{roomId}/messages: dir=b without from starts
	 * at the end of the room's timeline; a RoomEventFilter narrows by type. */
	char *eroom = cs_escape(room);
	char *filter = cs_escape("{\"types\":[\"" AUDIT_WITNESS_TYPE "\"],\"lazy_load_members\":true}");
	char *from = NULL;
	struct audit_witness_list l = {NULL, 0, 0};
	int rc = TH_OK;
	for (;;) {
		char *efrom = from ? cs_escape(from) : NULL;
		char *path = xasprintf("/_matrix/client/v3/rooms/%s/messages?dir=b&limit=%d&filter=%s%s%s",
		                       eroom, PAGE_LIMIT, filter, efrom ? "&from=" : "", efrom ? efrom : "");
		free(efrom);
		struct cs_response resp;
		rc = cs_request(c, "GET", path, cfg->bot_user_id, NULL, &resp);
		free(path);
		if (rc)
			break;
		if (resp.status != 200) {
			*status = resp.status;
			cs_response_clear(&resp);
			rc = TH_EHTTP;
			break;
		}
		const char *end = audit_witness_page(resp.body, cfg->bot_user_id, &l);
		int more = end && json_array_size(json_object_get(resp.body, "chunk")) > 0 &&
		           (!from || strcmp(end, from) != 0);
		free(from);
		from = more ? xstrdup(end) : NULL;
		cs_response_clear(&resp);
		if (!more)
			break;
		if (l.n > MAX_WITNESS) {
			rc = TH_ETOOLARGE;
			break;
		}
	}
	free(from);
	free(filter);
	free(eroom);
	if (rc) {
		free(l.v);
		return rc;
	}
	*out = l.v;
	*n = l.n;
	return TH_OK;
}

/* ---- comparing --------------------------------------------------------- */

static void say(struct audit_witness_result *res, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(struct audit_witness_result *res, const char *fmt, ...)
{
	if (res->what[0])
		return; /* the first problem is the one reported */
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(res->what, sizeof(res->what), fmt, ap);
	va_end(ap);
}

static int count_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)key;
	(void)klen;
	(void)val;
	(void)vlen;
	(*(size_t *)ctx)++;
	return 0;
}

int audit_witness_check(store *st, const struct audit_witness *w, size_t n, struct audit_witness_result *res)
{
	memset(res, 0, sizeof(*res));
	res->witnessed = n;
	store_txn *t;
	int rc = store_txn_begin(st, 0, &t);
	if (rc)
		return rc;
	if ((rc = audit_last_checkpoint(t, &res->store_ckpt)))
		goto out;
	const struct audit_witness *newest = NULL;
	for (size_t i = 0; i < n; i++)
		if (w[i].seq && (!newest || w[i].seq > newest->seq))
			newest = &w[i];
	if (newest)
		res->newest_seq = newest->seq;
	/* A rollback first: it is the finding that matters most. */
	if (newest && res->store_ckpt < newest->seq)
		say(res,
		    "ROLLED BACK: the witness room saw a signed checkpoint at seq %llu (event %s), but the "
		    "store's newest checkpoint is at seq %llu: the log was cut back or replaced by an older "
		    "copy, and the records after seq %llu are missing",
		    (unsigned long long)newest->seq, newest->event_id, (unsigned long long)res->store_ckpt,
		    (unsigned long long)res->store_ckpt);
	for (size_t i = 0; i < n; i++) {
		if (!w[i].seq) {
			say(res,
			    "a witness event was redacted (event %s): only someone with the bot's token "
			    "could do that, for example to hide a rollback",
			    w[i].event_id);
			continue;
		}
		unsigned char key[8];
		store_u64_key(key, w[i].seq);
		json_t *ck = NULL;
		int grc = store_get_jsonb(t, STORE_AUDIT_CKPT, key, sizeof(key), &ck);
		if (grc == TH_ENOTFOUND) {
			say(res,
			    "DIVERGES: the witness room saw a signed checkpoint at seq %llu (event %s) that "
			    "the store does not hold: the log was rolled back and rewritten from an "
			    "earlier point",
			    (unsigned long long)w[i].seq, w[i].event_id);
			continue;
		}
		if (grc) {
			rc = grc;
			goto out;
		}
		const char *hash = jsonx_str(ck, "hash");
		if (!hash || strcmp(hash, w[i].hash) != 0)
			say(res,
			    "DIVERGES: the checkpoint at seq %llu in the store has hash %.16s..., but the "
			    "witness room saw %.16s... (event %s): the log was replaced from that point on",
			    (unsigned long long)w[i].seq, hash ? hash : "?", w[i].hash, w[i].event_id);
		json_decref(ck);
	}
	/* Checkpoints after the newest witnessed one are waiting to be posted. */
	if (res->store_ckpt > res->newest_seq) {
		unsigned char from[8];
		store_u64_key(from, res->newest_seq + 1);
		size_t cnt = 0;
		rc = store_walk(t, STORE_AUDIT_CKPT, from, sizeof(from), count_one, &cnt);
		if (rc)
			goto out;
		res->unwitnessed = cnt;
	}
	rc = res->what[0] ? TH_EVERIFY : TH_OK;
out:
	store_txn_abort(t);
	return rc;
}
