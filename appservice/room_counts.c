/*
 * room_counts.c - events counted per room, pending in one record of
 * STORE_TXNS until the room's record is written anyway (room_counts.h).
 */
#include "room_counts.h"

#include <string.h>

#include <jansson.h>

#include "log.h"
#include "util.h"

#define FORMAT 1

int room_counts_load(store_txn *t, struct room_counts *rc)
{
	memset(rc, 0, sizeof(*rc));
	const void *val;
	size_t vlen;
	int r = store_get(t, STORE_TXNS, ROOM_COUNTS_KEY, strlen(ROOM_COUNTS_KEY), &val, &vlen);
	if (r == TH_ENOTFOUND)
		return TH_OK;
	if (r)
		return r;
	const unsigned char *p = val;
	size_t off = 1;
	while (vlen && off < vlen && off + 1 + p[off] + 8 <= vlen)
		off += 1 + p[off] + 8;
	if (!vlen || p[0] != FORMAT || off != vlen) {
		LOG(LOG_ERROR, "store: the record of rooms' pending event counts is damaged");
		return TH_ESTORE;
	}
	rc->len = vlen - 1;
	rc->buf = xmalloc(rc->len ? rc->len : 1);
	memcpy(rc->buf, p + 1, rc->len);
	return TH_OK;
}

void room_counts_free(struct room_counts *rc)
{
	free(rc->buf);
	memset(rc, 0, sizeof(*rc));
}

/* Offset of @p room_id's entry, or rc->len if it has none. */
static size_t find(const struct room_counts *rc, const char *room_id, size_t idlen)
{
	size_t off = 0;
	while (off < rc->len) {
		if (rc->buf[off] == idlen && memcmp(rc->buf + off + 1, room_id, idlen) == 0)
			return off;
		off += 1 + rc->buf[off] + 8;
	}
	return rc->len;
}

/* Remove the entry at @p off. */
static void drop(struct room_counts *rc, size_t off)
{
	size_t l = 1 + rc->buf[off] + 8;
	memmove(rc->buf + off, rc->buf + off + l, rc->len - off - l);
	rc->len -= l;
	rc->dirty = 1;
}

uint64_t room_counts_take(struct room_counts *rc, const char *room_id)
{
	size_t idlen = strlen(room_id), off = find(rc, room_id, idlen);
	if (off == rc->len)
		return 0;
	uint64_t n = store_key_u64(rc->buf + off + 1 + idlen);
	drop(rc, off);
	return n;
}

/* Add @p n to the "events" of @p room_id's record; a room with no record
 * (none is deleted today) keeps none. */
static int fold(store_txn *t, const char *room_id, size_t idlen, uint64_t n)
{
	json_t *state = NULL;
	int r = store_get_jsonb(t, STORE_ROOMS, room_id, idlen, &state);
	if (r == TH_ENOTFOUND)
		return TH_OK;
	if (r)
		return r;
	char *key = xstrndup(room_id, idlen);
	json_object_set_new(state, "events",
	                    json_integer(json_integer_value(json_object_get(state, "events")) + (json_int_t)n));
	r = store_put_json(t, STORE_ROOMS, key, state);
	free(key);
	json_decref(state);
	return r;
}

int room_counts_add(struct room_counts *rc, store_txn *t, const char *room_id, uint64_t n)
{
	size_t idlen = strlen(room_id);
	if (idlen > 255)
		return fold(t, room_id, idlen, n);
	n += room_counts_take(rc, room_id);
	size_t need = 1 + idlen + 8;
	/* Make room: fold the oldest counts into their records. */
	while (rc->len && 1 + rc->len + need > ROOM_COUNTS_BYTES) {
		size_t off = 0, last = 0;
		while (off < rc->len) {
			last = off;
			off += 1 + rc->buf[off] + 8;
		}
		size_t l = rc->buf[last];
		int r = fold(t, (const char *)rc->buf + last + 1, l, store_key_u64(rc->buf + last + 1 + l));
		if (r)
			return r;
		drop(rc, last);
	}
	unsigned char *nb = xmalloc(rc->len + need);
	nb[0] = (unsigned char)idlen;
	memcpy(nb + 1, room_id, idlen);
	store_u64_key(nb + 1 + idlen, n);
	if (rc->len)
		memcpy(nb + need, rc->buf, rc->len);
	free(rc->buf);
	rc->buf = nb;
	rc->len += need;
	rc->dirty = 1;
	return TH_OK;
}

int room_counts_save(struct room_counts *rc, store_txn *t)
{
	if (!rc->dirty)
		return TH_OK;
	unsigned char *rec = xmalloc(1 + rc->len);
	rec[0] = FORMAT;
	if (rc->len)
		memcpy(rec + 1, rc->buf, rc->len);
	int r = store_put(t, STORE_TXNS, ROOM_COUNTS_KEY, strlen(ROOM_COUNTS_KEY), rec, 1 + rc->len, 0);
	free(rec);
	if (!r)
		rc->dirty = 0;
	return r;
}

int room_counts_pending(store_txn *t, const char *room_id, uint64_t *n)
{
	struct room_counts rc;
	int r = room_counts_load(t, &rc);
	*n = 0;
	if (!r) {
		size_t idlen = strlen(room_id), off = find(&rc, room_id, idlen);
		if (off < rc.len)
			*n = store_key_u64(rc.buf + off + 1 + idlen);
	}
	room_counts_free(&rc);
	return r;
}
