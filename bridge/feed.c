/*
 * feed.c - per-guest ordered feeds in STORE_FEED.
 */
#define _GNU_SOURCE /* memmem */
#include "feed.h"

#include <string.h>

#include "jsonx.h"
#include "util.h"

#define MAX_GUEST 255
#define KEY_MAX   (MAX_GUEST + 1 + 8)

/* ---- sealing (feed.h feed_sealer_set) ---------------------------------- */

static struct feed_sealer sealer; /* set once at start; seal NULL: entries kept in clear */

void feed_sealer_set(const struct feed_sealer *s)
{
	if (s)
		sealer = *s;
	else
		memset(&sealer, 0, sizeof(sealer));
}

/* An entry as stored (clear JSON, or sealed under @p guest's key) as a JSON
 * object (new reference), or NULL: damaged, or sealed under a key that is
 * gone (an erased guest's). */
static json_t *entry_load(store_txn *t, const char *guest, const void *val, size_t vlen)
{
	if (vlen && ((const char *)val)[0] == '{')
		return json_loadb(val, vlen, 0, NULL);
	if (!sealer.unseal || !vlen)
		return NULL;
	char *sealed = xstrndup(val, vlen), *plain = NULL;
	json_t *o = NULL;
	if (sealer.unseal(sealer.ctx, t, guest, sealed, &plain) == TH_OK) {
		o = json_loads(plain, 0, NULL);
		explicit_bzero(plain, strlen(plain));
		free(plain);
	}
	free(sealed);
	if (o && !json_is_object(o)) {
		json_decref(o);
		o = NULL;
	}
	return o;
}

/* Store entry @p o of @p guest under @p key, sealed when a sealer is set.
 * An erased guest's key is gone: nothing is stored (TH_OK). */
static int entry_put(store_txn *t, const char *guest, const unsigned char *key, size_t klen, const json_t *o)
{
	char *val = json_dumps(o, JSON_COMPACT);
	if (!val)
		return TH_EINVAL; /* a body that is not UTF-8 */
	if (sealer.seal) {
		char *sealed = NULL;
		int rc = sealer.seal(sealer.ctx, t, guest, val, &sealed);
		explicit_bzero(val, strlen(val));
		free(val);
		if (rc == TH_ENOTFOUND)
			return TH_OK;
		if (rc)
			return rc;
		val = sealed;
	}
	int rc = store_put(t, STORE_FEED, key, klen, val, strlen(val), 0);
	free(val);
	return rc;
}

/* The entry of @p guest under @p key (new reference).  TH_ENOTFOUND, or
 * TH_ESTORE for one that cannot be read. */
static int entry_get(store_txn *t, const char *guest, const unsigned char *key, size_t klen, json_t **out)
{
	const void *v;
	size_t vlen;
	int rc = store_get(t, STORE_FEED, key, klen, &v, &vlen);
	if (rc)
		return rc;
	*out = entry_load(t, guest, v, vlen);
	return *out ? TH_OK : TH_ESTORE;
}

static size_t make_key(unsigned char *key, const char *guest, uint64_t id)
{
	size_t n = strlen(guest);
	memcpy(key, guest, n);
	key[n] = 0;
	store_u64_key(key + n + 1, id);
	return n + 9;
}

int feed_append(store_txn *t, const char *guest, const struct feed_entry *e, uint64_t *id_out)
{
	if (!guest || strlen(guest) > MAX_GUEST || !e->kind)
		return TH_EINVAL;
	unsigned char key[KEY_MAX];
	size_t klen = make_key(key, guest, 0);
	uint64_t next = 1;
	const void *v;
	size_t vlen;
	int rc = store_get(t, STORE_FEED, key, klen, &v, &vlen);
	if (rc == TH_OK && vlen == 8)
		next = store_key_u64(v);
	else if (rc != TH_ENOTFOUND && rc != TH_OK)
		return rc;
	unsigned char nv[8];
	store_u64_key(nv, next + 1);
	if ((rc = store_put(t, STORE_FEED, key, klen, nv, 8, 0)))
		return rc;

	json_t *o = json_pack("{s:I, s:s, s:I}", "id", (json_int_t)next, "kind", e->kind, "ts",
	                      (json_int_t)(e->ts ? e->ts : th_now_ms()));
	if (e->role)
		json_object_set_new(o, "from",
		                    json_pack("{s:s, s:s}", "role", e->role, "name", e->name ? e->name : ""));
	if (e->body)
		json_object_set_new(o, "body", json_string(e->body));
	if (e->local_id)
		json_object_set_new(o, "local_id", json_string(e->local_id));
	if (e->event_id)
		json_object_set_new(o, "event_id", json_string(e->event_id));
	if (e->room_id)
		json_object_set_new(o, "room_id", json_string(e->room_id));
	if (e->entry)
		json_object_set_new(o, "entry", json_integer((json_int_t)e->entry));
	if (e->call)
		json_object_set_new(o, "call", json_deep_copy(e->call));
	const struct media_attachment *a = e->attachment;
	if (a && a->mxc[0]) {
		json_t *at = json_pack("{s:s, s:s}", "kind", a->kind, "name", a->name);
		if (a->mimetype[0])
			json_object_set_new(at, "mimetype", json_string(a->mimetype));
		if (a->size >= 0)
			json_object_set_new(at, "size", json_integer((json_int_t)a->size));
		if (a->caption)
			json_object_set_new(at, "caption", json_string(a->caption));
		json_object_set_new(o, "attachment", at);
		json_object_set_new(o, "mxc", json_string(a->mxc));
	}
	klen = make_key(key, guest, next);
	rc = entry_put(t, guest, key, klen, o);
	json_decref(o);
	/* Remember what this entry shows, so edits, replies and redactions of
	 * it can be judged (a message only: a notice has no event of its own). */
	if (rc == TH_OK && e->event_id && e->room_id && e->sender && strcmp(e->kind, "message") == 0)
		rc = feed_mark_put(t, guest, e->room_id, e->event_id, e->sender, next);
	if (rc == TH_OK && id_out)
		*id_out = next;
	return rc;
}

struct read_ctx {
	store_txn *t;
	const char *guest;
	const unsigned char *prefix;
	size_t plen;
	json_t *events;
	uint64_t next;
	int any;
	int want_one; /* WANT_ANY or WANT_NEWS: stop at the first entry (that is news) */
	unsigned scanned;
	int erasing;   /* collect every key (and the guest's own events) instead */
	int keep_room; /* feed_read_rooms: "room_id" stays */
	json_t *own;
	unsigned char (*keys)[KEY_MAX];
	size_t *klens;
	size_t nkeys;
};

#define WANT_ANY      1
#define WANT_NEWS     2
#define NEWS_SCAN_MAX 32 /* own echoes looked past before calling it news anyway */

/* Whether the stored entry is a message the guest sent (from.role "self"). */
static int own_message(store_txn *t, const char *guest, const void *val, size_t vlen)
{
	json_t *o = entry_load(t, guest, val, vlen);
	json_t *from = json_object_get(o, "from");
	int own = o && jsonx_str(o, "kind") && strcmp(jsonx_str(o, "kind"), "message") == 0 &&
	          jsonx_str(from, "role") && strcmp(jsonx_str(from, "role"), "self") == 0;
	json_decref(o);
	return own;
}

static int read_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct read_ctx *rc = ctx;
	if (klen != rc->plen + 8 || memcmp(key, rc->prefix, rc->plen) != 0)
		return 1; /* past this guest's entries */
	uint64_t id = store_key_u64((const unsigned char *)key + rc->plen);
	if (rc->want_one) {
		if (id != 0 && rc->want_one == WANT_NEWS && rc->scanned++ < NEWS_SCAN_MAX &&
		    own_message(rc->t, rc->guest, val, vlen))
			return 0; /* the guest's own words, echoed: not news to them */
		rc->any = id != 0;
		return id != 0;
	}
	if (rc->erasing) {
		rc->keys = xrealloc(rc->keys, (rc->nkeys + 1) * sizeof(*rc->keys));
		rc->klens = xrealloc(rc->klens, (rc->nkeys + 1) * sizeof(*rc->klens));
		memcpy(rc->keys[rc->nkeys], key, klen);
		rc->klens[rc->nkeys++] = klen;
		if (id == 0 || !rc->own)
			return 0;
		json_t *o = entry_load(rc->t, rc->guest, val, vlen);
		json_t *from = json_object_get(o, "from");
		if (jsonx_str(o, "event_id") && jsonx_str(o, "room_id") && from &&
		    strcmp(jsonx_str(from, "role") ? jsonx_str(from, "role") : "", "self") == 0)
			json_array_append_new(rc->own,
			                      json_pack("{s:s, s:s}", "event_id", jsonx_str(o, "event_id"),
			                                "room_id", jsonx_str(o, "room_id")));
		json_decref(o);
		return 0;
	}
	if (id == 0)
		return 0;
	json_t *o = entry_load(rc->t, rc->guest, val, vlen);
	if (!json_is_object(o)) {
		json_decref(o);
		return TH_ESTORE;
	}
	json_object_del(o, "event_id");
	if (!rc->keep_room)
		json_object_del(o, "room_id");
	json_object_del(o, "mxc");
	json_array_append_new(rc->events, o);
	rc->next = id;
	return json_array_size(rc->events) >= FEED_MAX_READ;
}

static int read_from(store_txn *t, const char *guest, uint64_t since, int keep_room, json_t **events,
                     uint64_t *next)
{
	if (!guest || strlen(guest) > MAX_GUEST)
		return TH_EINVAL;
	unsigned char from[KEY_MAX];
	size_t flen = make_key(from, guest, since + 1);
	struct read_ctx rc = {.t = t,
	                      .guest = guest,
	                      .prefix = from,
	                      .plen = strlen(guest) + 1,
	                      .events = json_array(),
	                      .next = since,
	                      .keep_room = keep_room};
	int err = store_walk(t, STORE_FEED, from, flen, read_one, &rc);
	if (err) {
		json_decref(rc.events);
		return err;
	}
	*events = rc.events;
	*next = rc.next;
	return TH_OK;
}

int feed_read(store_txn *t, const char *guest, uint64_t since, json_t **events, uint64_t *next)
{
	return read_from(t, guest, since, 0, events, next);
}

int feed_read_rooms(store_txn *t, const char *guest, uint64_t since, json_t **events, uint64_t *next)
{
	return read_from(t, guest, since, 1, events, next);
}

static void copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = src ? strlen(src) : 0;
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, src ? src : "", n);
	dst[n] = '\0';
}

int feed_attachment(store_txn *t, const char *guest, uint64_t id, struct media_attachment *out)
{
	if (!guest || strlen(guest) > MAX_GUEST)
		return TH_EINVAL;
	if (id == 0) /* the counter, not an entry */
		return TH_ENOTFOUND;
	unsigned char key[KEY_MAX];
	size_t klen = make_key(key, guest, id);
	json_t *o = NULL;
	int rc = entry_get(t, guest, key, klen, &o);
	if (rc)
		return rc == TH_ENOTFOUND ? TH_ENOTFOUND : TH_ESTORE;
	json_t *at = json_object_get(o, "attachment");
	const char *mxc = jsonx_str(o, "mxc"), *kind = jsonx_str(at, "kind");
	json_t *size = json_object_get(at, "size");
	rc = TH_ENOTFOUND;
	if (json_is_object(at) && mxc && *mxc && strlen(mxc) <= MEDIA_MAX_MXC && kind) {
		memset(out, 0, sizeof(*out));
		out->kind = strcmp(kind, "picture") == 0 ? "picture" : "file";
		copy_str(out->name, sizeof(out->name), jsonx_str(at, "name"));
		copy_str(out->mimetype, sizeof(out->mimetype), jsonx_str(at, "mimetype"));
		out->size = json_is_integer(size) ? (int64_t)json_integer_value(size) : -1;
		copy_str(out->mxc, sizeof(out->mxc), mxc);
		rc = TH_OK;
	}
	json_decref(o);
	return rc;
}

/* Entries of one guest's feed made from one Matrix event and not yet removed. */
struct find_ctx {
	store_txn *t;
	const char *guest;
	const unsigned char *prefix;
	size_t plen;
	const char *event_id;
	uint64_t *ids;
	size_t n;
};

static int find_event(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct find_ctx *f = ctx;
	if (klen != f->plen + 8 || memcmp(key, f->prefix, f->plen) != 0)
		return 1; /* past this guest's entries */
	uint64_t id = store_key_u64((const unsigned char *)key + f->plen);
	size_t elen = strlen(f->event_id);
	/* Most entries do not even hold the id's bytes: parse only those that
	 * do (a sealed entry must be opened to tell). */
	int clear = vlen && ((const char *)val)[0] == '{';
	if (id == 0 || (clear && !memmem(val, vlen, f->event_id, elen)))
		return 0;
	json_t *o = entry_load(f->t, f->guest, val, vlen);
	const char *e = jsonx_str(o, "event_id"), *kind = jsonx_str(o, "kind");
	if (e && strcmp(e, f->event_id) == 0 && !json_is_true(json_object_get(o, "removed")) && kind &&
	    (strcmp(kind, "message") == 0 || (strcmp(kind, "edited") == 0 && json_object_get(o, "body")))) {
		f->ids = xrealloc(f->ids, (f->n + 1) * sizeof(*f->ids));
		f->ids[f->n++] = id;
	}
	json_decref(o);
	return 0;
}

int feed_remove_event(store_txn *t, const char *guest, const char *event_id, unsigned *removed)
{
	*removed = 0;
	if (!guest || strlen(guest) > MAX_GUEST || !event_id || !*event_id)
		return TH_EINVAL;
	unsigned char key[KEY_MAX];
	size_t klen = make_key(key, guest, 1);
	struct find_ctx f = {
	        .t = t, .guest = guest, .prefix = key, .plen = strlen(guest) + 1, .event_id = event_id};
	int rc = store_walk(t, STORE_FEED, key, klen, find_event, &f);
	for (size_t i = 0; !rc && i < f.n; i++) {
		klen = make_key(key, guest, f.ids[i]);
		json_t *o = NULL;
		if ((rc = entry_get(t, guest, key, klen, &o)) != TH_OK)
			break;
		/* What was said goes; who said it and when stay, so the page can
		 * show where a message was taken down.  An edit's new words go
		 * too (the "removed" entry for its message tells the page). */
		int edit = strcmp(jsonx_str(o, "kind") ? jsonx_str(o, "kind") : "", "edited") == 0;
		json_object_del(o, "body");
		json_object_del(o, "attachment");
		json_object_del(o, "mxc");
		if (!edit)
			json_object_set_new(o, "removed", json_true());
		rc = entry_put(t, guest, key, klen, o);
		json_decref(o);
		if (!rc && edit)
			continue;
		if (!rc) {
			struct feed_entry gone = {.kind = "removed", .entry = f.ids[i]};
			rc = feed_append(t, guest, &gone, NULL);
		}
		if (!rc)
			(*removed)++;
	}
	free(f.ids);
	return rc;
}

int feed_has_after(store_txn *t, const char *guest, uint64_t since)
{
	if (!guest || strlen(guest) > MAX_GUEST)
		return 0;
	unsigned char from[KEY_MAX];
	size_t flen = make_key(from, guest, since + 1);
	struct read_ctx rc = {
	        .t = t, .guest = guest, .prefix = from, .plen = strlen(guest) + 1, .want_one = WANT_ANY};
	return store_walk(t, STORE_FEED, from, flen, read_one, &rc) == TH_OK && rc.any;
}

int feed_has_news(store_txn *t, const char *guest, uint64_t since)
{
	if (!guest || strlen(guest) > MAX_GUEST)
		return 0;
	unsigned char from[KEY_MAX];
	size_t flen = make_key(from, guest, since + 1);
	struct read_ctx rc = {
	        .t = t, .guest = guest, .prefix = from, .plen = strlen(guest) + 1, .want_one = WANT_NEWS};
	return store_walk(t, STORE_FEED, from, flen, read_one, &rc) == TH_OK && rc.any;
}

/* ---- what a feed remembers of Matrix events ------------------------------ */

#define MAX_EVENT_ID 255
#define MARK_KEY_MAX (MAX_GUEST + 1 + MAX_EVENT_ID)
#define MARK         0x01 /* <guest> 0x01 <event id> -> JSON */
#define RING         0x02 /* <guest> 0x02 [<u64 slot>] -> event id [count] */

static size_t mark_key(unsigned char *key, const char *guest, const char *event_id)
{
	size_t g = strlen(guest), e = strlen(event_id);
	memcpy(key, guest, g);
	key[g] = MARK;
	memcpy(key + g + 1, event_id, e);
	return g + 1 + e;
}

static size_t ring_key(unsigned char *key, const char *guest, int with_slot, uint64_t slot)
{
	size_t g = strlen(guest);
	memcpy(key, guest, g);
	key[g] = RING;
	if (!with_slot)
		return g + 1;
	store_u64_key(key + g + 1, slot);
	return g + 9;
}

static int mark_ids_ok(const char *guest, const char *event_id)
{
	return guest && event_id && *event_id && strlen(guest) <= MAX_GUEST &&
	       strlen(event_id) <= MAX_EVENT_ID;
}

int feed_mark_get(store_txn *t, const char *guest, const char *room_id, const char *event_id,
                  struct feed_mark *out)
{
	memset(out, 0, sizeof(*out));
	if (!mark_ids_ok(guest, event_id) || !room_id)
		return TH_EINVAL;
	unsigned char key[MARK_KEY_MAX];
	size_t klen = mark_key(key, guest, event_id);
	json_t *o;
	int rc = store_get_jsonb(t, STORE_FEED, key, klen, &o);
	if (rc)
		return rc == TH_ENOTFOUND ? TH_OK : TH_ESTORE;
	const char *room = jsonx_str(o, "room"), *sender = jsonx_str(o, "sender");
	json_t *entry = json_object_get(o, "entry");
	/* Only an event of the same room counts: an id from elsewhere names
	 * nothing here. */
	if (room && strcmp(room, room_id) == 0 && json_is_integer(entry)) {
		out->entry = (uint64_t)json_integer_value(entry);
		out->kind = out->entry ? FEED_MARK_VISIBLE : FEED_MARK_HIDDEN;
		copy_str(out->sender, sizeof(out->sender), sender);
	}
	json_decref(o);
	return TH_OK;
}

int feed_mark_put(store_txn *t, const char *guest, const char *room_id, const char *event_id,
                  const char *sender, uint64_t entry)
{
	if (!mark_ids_ok(guest, event_id) || !room_id)
		return TH_EINVAL;
	unsigned char key[MARK_KEY_MAX];
	size_t klen = mark_key(key, guest, event_id);
	const void *v;
	size_t vlen;
	int rc = store_get(t, STORE_FEED, key, klen, &v, &vlen);
	int known = rc == TH_OK;
	if (rc && rc != TH_ENOTFOUND)
		return rc;
	json_t *o = json_pack("{s:I, s:s, s:s}", "entry", (json_int_t)entry, "room", room_id, "sender",
	                      sender ? sender : "");
	char *val = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!val)
		return TH_EINVAL;
	rc = store_put(t, STORE_FEED, key, klen, val, strlen(val), 0);
	free(val);
	if (rc || known)
		return rc;
	/* A new one: into the ring, forgetting the one whose slot it takes. */
	unsigned char rkey[KEY_MAX];
	size_t rlen = ring_key(rkey, guest, 0, 0);
	uint64_t count = 0;
	rc = store_get(t, STORE_FEED, rkey, rlen, &v, &vlen);
	if (rc == TH_OK && vlen == 8)
		count = store_key_u64(v);
	else if (rc != TH_OK && rc != TH_ENOTFOUND)
		return rc;
	unsigned char nv[8];
	store_u64_key(nv, count + 1);
	if ((rc = store_put(t, STORE_FEED, rkey, rlen, nv, 8, 0)))
		return rc;
	rlen = ring_key(rkey, guest, 1, count % FEED_MAX_MARKS);
	if (count >= FEED_MAX_MARKS) {
		rc = store_get(t, STORE_FEED, rkey, rlen, &v, &vlen);
		if (rc == TH_OK && vlen && vlen <= MAX_EVENT_ID) {
			char old[MAX_EVENT_ID + 1];
			memcpy(old, v, vlen);
			old[vlen] = '\0';
			unsigned char okey[MARK_KEY_MAX];
			size_t olen = mark_key(okey, guest, old);
			rc = store_del(t, STORE_FEED, okey, olen);
			if (rc == TH_ENOTFOUND)
				rc = TH_OK;
		} else if (rc == TH_ENOTFOUND) {
			rc = TH_OK;
		}
		if (rc)
			return rc;
	}
	return store_put(t, STORE_FEED, rkey, rlen, event_id, strlen(event_id), 0);
}

/* Keys of one guest's marks and ring, to delete them. */
struct marks_ctx {
	const char *guest;
	size_t glen;
	unsigned char (*keys)[MARK_KEY_MAX];
	size_t *klens;
	size_t n;
};

static int collect_mark(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	(void)val;
	(void)vlen;
	struct marks_ctx *m = ctx;
	const unsigned char *k = key;
	if (klen <= m->glen || klen > MARK_KEY_MAX || memcmp(k, m->guest, m->glen) != 0 ||
	    (k[m->glen] != MARK && k[m->glen] != RING))
		return 1; /* past this guest's marks */
	m->keys = xrealloc(m->keys, (m->n + 1) * sizeof(*m->keys));
	m->klens = xrealloc(m->klens, (m->n + 1) * sizeof(*m->klens));
	memcpy(m->keys[m->n], key, klen);
	m->klens[m->n++] = klen;
	return 0;
}

static int marks_erase(store_txn *t, const char *guest)
{
	unsigned char from[MARK_KEY_MAX];
	size_t g = strlen(guest);
	memcpy(from, guest, g);
	from[g] = MARK;
	struct marks_ctx m = {.guest = guest, .glen = g};
	int rc = store_walk(t, STORE_FEED, from, g + 1, collect_mark, &m);
	for (size_t i = 0; !rc && i < m.n; i++)
		rc = store_del(t, STORE_FEED, m.keys[i], m.klens[i]);
	free(m.keys);
	free(m.klens);
	return rc;
}

/* Earlier "edited" entries of @p entry after it: they lose their body. */
struct edits_ctx {
	store_txn *t;
	const char *guest;
	const unsigned char *prefix;
	size_t plen;
	uint64_t entry;
	uint64_t *ids;
	size_t n;
};

static int find_edits(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct edits_ctx *f = ctx;
	if (klen != f->plen + 8 || memcmp(key, f->prefix, f->plen) != 0)
		return 1;
	uint64_t id = store_key_u64((const unsigned char *)key + f->plen);
	int clear = vlen && ((const char *)val)[0] == '{';
	if (id == 0 || (clear && !memmem(val, vlen, "\"edited\"", 8)))
		return 0;
	json_t *o = entry_load(f->t, f->guest, val, vlen);
	const char *kind = jsonx_str(o, "kind");
	if (kind && strcmp(kind, "edited") == 0 && json_object_get(o, "body") &&
	    (uint64_t)json_integer_value(json_object_get(o, "entry")) == f->entry) {
		f->ids = xrealloc(f->ids, (f->n + 1) * sizeof(*f->ids));
		f->ids[f->n++] = id;
	}
	json_decref(o);
	return 0;
}

/* Rewrite entry @p id of @p guest with @p edit applied to its JSON. */
static int entry_rewrite(store_txn *t, const char *guest, uint64_t id, json_t *o)
{
	unsigned char key[KEY_MAX];
	size_t klen = make_key(key, guest, id);
	return entry_put(t, guest, key, klen, o);
}

int feed_replace(store_txn *t, const char *guest, uint64_t entry, const char *event_id, const char *room_id,
                 const char *body, unsigned *replaced)
{
	*replaced = 0;
	if (!guest || strlen(guest) > MAX_GUEST || !entry || !body)
		return TH_EINVAL;
	json_t *probe = json_string(body);
	if (!probe)
		return TH_EINVAL; /* not UTF-8 */
	json_decref(probe);
	unsigned char key[KEY_MAX];
	size_t klen = make_key(key, guest, entry);
	json_t *o;
	int rc = entry_get(t, guest, key, klen, &o);
	if (rc)
		return rc == TH_ENOTFOUND ? TH_OK : TH_ESTORE;
	const char *kind = jsonx_str(o, "kind");
	if (!kind || strcmp(kind, "message") != 0 || json_is_true(json_object_get(o, "removed"))) {
		json_decref(o);
		return TH_OK;
	}
	json_object_set_new(o, "body", json_string(body));
	json_object_set_new(o, "edited", json_true());
	rc = entry_rewrite(t, guest, entry, o);
	json_decref(o);
	/* An older version of the words is kept nowhere. */
	struct edits_ctx f = {
	        .t = t, .guest = guest, .prefix = key, .plen = strlen(guest) + 1, .entry = entry};
	if (!rc) {
		klen = make_key(key, guest, entry + 1);
		rc = store_walk(t, STORE_FEED, key, klen, find_edits, &f);
	}
	for (size_t i = 0; !rc && i < f.n; i++) {
		klen = make_key(key, guest, f.ids[i]);
		json_t *e;
		if ((rc = entry_get(t, guest, key, klen, &e)))
			break;
		json_object_del(e, "body");
		rc = entry_rewrite(t, guest, f.ids[i], e);
		json_decref(e);
	}
	free(f.ids);
	if (!rc) {
		struct feed_entry ed = {.kind = "edited",
		                        .entry = entry,
		                        .body = body,
		                        .event_id = event_id,
		                        .room_id = room_id};
		rc = feed_append(t, guest, &ed, NULL);
	}
	if (!rc)
		*replaced = 1;
	return rc;
}

int feed_erase(store_txn *t, const char *guest, json_t **own)
{
	if (!guest || strlen(guest) > MAX_GUEST)
		return TH_EINVAL;
	unsigned char from[KEY_MAX];
	size_t flen = make_key(from, guest, 0);
	struct read_ctx rc = {.t = t,
	                      .guest = guest,
	                      .prefix = from,
	                      .plen = strlen(guest) + 1,
	                      .erasing = 1,
	                      .own = own ? json_array() : NULL};
	int err = store_walk(t, STORE_FEED, from, flen, read_one, &rc);
	for (size_t i = 0; !err && i < rc.nkeys; i++)
		err = store_del(t, STORE_FEED, rc.keys[i], rc.klens[i]);
	free(rc.keys);
	free(rc.klens);
	if (!err)
		err = marks_erase(t, guest);
	if (err) {
		json_decref(rc.own);
		return err;
	}
	if (own)
		*own = rc.own;
	return TH_OK;
}
