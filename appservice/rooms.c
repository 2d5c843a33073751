/* rooms.c - the per-room record in STORE_ROOMS. */
#include "rooms.h"

#include <string.h>

#include "config.h"
#include "jsonx.h"
#include "util.h"

json_t *rooms_state_new(void)
{
	return json_pack("{s:i, s:n}", "events", 0, "bot");
}

int rooms_is_managed(const json_t *state)
{
	const char *kind = jsonx_str(state, "kind");
	return kind && (strcmp(kind, "group") == 0 || strcmp(kind, "portal") == 0);
}

enum pol_room rooms_kind(const json_t *state)
{
	const char *kind = jsonx_str(state, "kind");
	if (kind && strcmp(kind, "portal") == 0)
		return POL_ROOM_CONVERSATION;
	if (kind && strcmp(kind, "group") == 0)
		return POL_ROOM_GROUP;
	return POL_ROOM_UNMANAGED;
}

/* The record of @p room_id, or a fresh one (new reference in @p out). */
static int load(store_txn *t, const char *room_id, json_t **out)
{
	json_t *state = NULL;
	int rc = store_get_json(t, STORE_ROOMS, room_id, &state);
	if (rc == TH_ENOTFOUND || (rc == TH_OK && !json_is_object(state))) {
		json_decref(state);
		state = rooms_state_new();
	} else if (rc) {
		return rc;
	}
	*out = state;
	return TH_OK;
}

int rooms_mark_managed(store_txn *t, const char *room_id, const char *kind)
{
	json_t *state;
	int rc = load(t, room_id, &state);
	if (rc)
		return rc;
	json_object_set_new(state, "kind", json_string(kind));
	rc = store_put_json(t, STORE_ROOMS, room_id, state);
	json_decref(state);
	return rc;
}

/* spec: user and room ids are at most 255 bytes; a longer one is no one's. */
#define MAX_ID 255

int rooms_staff_set(store_txn *t, const char *room_id, const char *user_id, int joined)
{
	int rc;
	if (strlen(user_id) > MAX_ID || strlen(room_id) > MAX_ID)
		return TH_OK;
	if (joined)
		rc = store_put(t, STORE_STAFF_MEMBERS, user_id, strlen(user_id), room_id, strlen(room_id), 0);
	else
		rc = store_del_dup(t, STORE_STAFF_MEMBERS, user_id, strlen(user_id), room_id,
		                   strlen(room_id));
	return rc == TH_ENOTFOUND ? TH_OK : rc;
}

/* Stop at the first staff room of the user's that is still configured. */
static int staff_room_configured(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	const struct config_ids *rooms = ctx;
	(void)key;
	(void)klen;
	for (size_t i = 0; i < rooms->n; i++) {
		if (strlen(rooms->v[i]) == vlen && memcmp(rooms->v[i], val, vlen) == 0)
			return -TH_EEXIST; /* found: end the walk with a code of our own */
	}
	return 0;
}

int rooms_staff_has(store_txn *t, const struct config_ids *staff_rooms, const char *user_id)
{
	if (!staff_rooms->n || !user_id || strlen(user_id) > MAX_ID)
		return 0;
	return store_walk_dups(t, STORE_STAFF_MEMBERS, user_id, strlen(user_id), staff_room_configured,
	                       (void *)staff_rooms) == TH_EEXIST;
}

/* The users recorded as joined to one room, collected to be changed after the walk. */
struct members_of {
	const char *room_id;
	size_t n, cap;
	char **users;
};

static int collect_members(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct members_of *m = ctx;
	if (strlen(m->room_id) != vlen || memcmp(m->room_id, val, vlen) != 0)
		return 0;
	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 16;
		m->users = xrealloc(m->users, m->cap * sizeof(*m->users));
	}
	m->users[m->n++] = xstrndup(key, klen);
	return 0;
}

#define DEPARTED_KEY "staff_departed"

/* Note in STORE_META that @p user_id was found no longer in staff room
 * @p room_id by a read (rooms_staff_departed_take hands them on). */
static int note_departed(store_txn *t, const char *room_id, const char *user_id)
{
	json_t *list = NULL;
	int rc = store_get_json(t, STORE_META, DEPARTED_KEY, &list);
	if (rc == TH_ENOTFOUND || (rc == TH_OK && !json_is_array(list))) {
		json_decref(list);
		list = json_array();
		rc = TH_OK;
	}
	if (!rc) {
		json_array_append_new(list, json_pack("[s, s]", user_id, room_id));
		rc = store_put_json(t, STORE_META, DEPARTED_KEY, list);
	}
	json_decref(list);
	return rc;
}

int rooms_staff_departed_take(store_txn *t, json_t **out)
{
	*out = NULL;
	int rc = store_get_json(t, STORE_META, DEPARTED_KEY, out);
	if (rc == TH_ENOTFOUND)
		return TH_OK;
	if (!rc)
		rc = store_del(t, STORE_META, DEPARTED_KEY, strlen(DEPARTED_KEY));
	if (rc || !json_is_array(*out)) {
		json_decref(*out);
		*out = NULL;
	}
	return rc == TH_ENOTFOUND ? TH_OK : rc;
}

/* Make @p joined (NULL: no one) the recorded members of @p room_id, leaving
 * the users of @p keep (NULL: none) as they are; with @p note, whoever is
 * no longer there is noted as departed. */
static int reset(store_txn *t, const char *room_id, const json_t *joined, const json_t *keep, int note)
{
	struct members_of m = {room_id, 0, 0, NULL};
	int rc = store_walk(t, STORE_STAFF_MEMBERS, NULL, 0, collect_members, &m);
	for (size_t i = 0; i < m.n; i++) {
		if (!rc && !json_object_get(joined, m.users[i]) && !json_object_get(keep, m.users[i])) {
			rc = rooms_staff_set(t, room_id, m.users[i], 0);
			if (!rc && note)
				rc = note_departed(t, room_id, m.users[i]);
		}
		free(m.users[i]);
	}
	free(m.users);
	const char *user_id;
	json_t *v;
	json_object_foreach((json_t *)joined, user_id, v)
	{
		if (rc)
			break;
		if (user_id[0] == '@' && !json_object_get(keep, user_id))
			rc = rooms_staff_set(t, room_id, user_id, 1);
	}
	return rc;
}

void rooms_staff_read_begin(json_t *room)
{
	json_object_set_new(room, "staff_seen", json_object());
}

int rooms_staff_read_begin_stored(store_txn *t, const char *room_id)
{
	json_t *state;
	int rc = load(t, room_id, &state);
	if (rc)
		return rc;
	rooms_staff_read_begin(state);
	rc = store_put_json(t, STORE_ROOMS, room_id, state);
	json_decref(state);
	return rc;
}

void rooms_staff_seen(json_t *room, const char *user_id)
{
	json_t *seen = json_object_get(room, "staff_seen");
	if (json_is_object(seen))
		json_object_set_new(seen, user_id, json_true());
}

int rooms_staff_refresh(store_txn *t, const char *room_id, const json_t *joined)
{
	json_t *state;
	int rc = load(t, room_id, &state);
	if (rc)
		return rc;
	json_t *seen = json_object_get(state, "staff_seen");
	rc = reset(t, room_id, joined, json_is_object(seen) ? seen : NULL, 1);
	json_object_del(state, "staff_seen");
	if (!rc)
		rc = store_put_json(t, STORE_ROOMS, room_id, state);
	json_decref(state);
	return rc;
}

int rooms_staff_forget(store_txn *t, const char *room_id, json_t *room)
{
	json_object_del(room, "staff_seen");
	return reset(t, room_id, NULL, NULL, 0);
}

int rooms_set_service(store_txn *t, const char *room_id, const char *service)
{
	json_t *state;
	int rc = load(t, room_id, &state);
	if (rc)
		return rc;
	json_object_set_new(state, "service", json_string(service));
	rc = store_put_json(t, STORE_ROOMS, room_id, state);
	json_decref(state);
	return rc;
}

/* Stop at staff room ctx among a user's. */
static int is_room(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	const char *room_id = ctx;
	(void)key;
	(void)klen;
	return strlen(room_id) == vlen && memcmp(room_id, val, vlen) == 0 ? -TH_EEXIST : 0;
}

int rooms_staff_in(store_txn *t, const char *room_id, const char *user_id)
{
	if (!room_id || !user_id || strlen(user_id) > MAX_ID)
		return 0;
	return store_walk_dups(t, STORE_STAFF_MEMBERS, user_id, strlen(user_id), is_room, (void *)room_id) ==
	       TH_EEXIST;
}

/* The STORE_MEMBERS key of (@p room_id, @p user_id): room id, 0, user id. */
static size_t member_key(char key[2 * MAX_ID + 2], const char *room_id, const char *user_id)
{
	size_t rl = strlen(room_id), ul = strlen(user_id);
	memcpy(key, room_id, rl);
	key[rl] = '\0';
	memcpy(key + rl + 1, user_id, ul);
	return rl + 1 + ul;
}

int rooms_member_set(store_txn *t, const char *room_id, const char *user_id, const char *membership)
{
	if (strlen(user_id) > MAX_ID || strlen(room_id) > MAX_ID)
		return TH_OK;
	char key[2 * MAX_ID + 2];
	size_t klen = member_key(key, room_id, user_id);
	int keep = membership && (strcmp(membership, "join") == 0 || strcmp(membership, "invite") == 0);
	int rc;
	if (keep) {
		rc = store_put(t, STORE_MEMBERS, key, klen, membership, strlen(membership), 0);
		if (!rc)
			rc = store_put(t, STORE_MEMBER_ROOMS, user_id, strlen(user_id), room_id,
			               strlen(room_id), 0);
		return rc == TH_EEXIST ? TH_OK : rc;
	}
	rc = store_del(t, STORE_MEMBERS, key, klen);
	if (rc && rc != TH_ENOTFOUND)
		return rc;
	rc = store_del_dup(t, STORE_MEMBER_ROOMS, user_id, strlen(user_id), room_id, strlen(room_id));
	return rc == TH_ENOTFOUND ? TH_OK : rc;
}

int rooms_member_has(store_txn *t, const char *room_id, const char *user_id)
{
	if (!room_id || !user_id || strlen(user_id) > MAX_ID || strlen(room_id) > MAX_ID)
		return 0;
	char key[2 * MAX_ID + 2];
	size_t klen = member_key(key, room_id, user_id);
	const void *v;
	size_t vlen;
	return store_get(t, STORE_MEMBERS, key, klen, &v, &vlen) == TH_OK;
}

struct room_list {
	size_t n;
	char **rooms;
};

static int collect_room(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct room_list *l = ctx;
	(void)key;
	(void)klen;
	l->rooms = xrealloc(l->rooms, (l->n + 1) * sizeof(*l->rooms));
	l->rooms[l->n++] = xstrndup(val, vlen);
	return 0;
}

int rooms_member_rooms(store_txn *t, const char *user_id, char ***out, size_t *n)
{
	struct room_list l = {0, NULL};
	*out = NULL;
	*n = 0;
	if (strlen(user_id) > MAX_ID)
		return TH_OK;
	int rc = store_walk_dups(t, STORE_MEMBER_ROOMS, user_id, strlen(user_id), collect_room, &l);
	if (rc) {
		for (size_t i = 0; i < l.n; i++)
			free(l.rooms[i]);
		free(l.rooms);
		return rc;
	}
	*out = l.rooms;
	*n = l.n;
	return TH_OK;
}

/* Every record, collected to be rewritten after the walk. */
static int collect_record(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	json_t *all = ctx;
	json_t *state = json_loadb(val, vlen, 0, NULL);
	if (json_is_object(state) && klen <= MAX_ID) {
		char *room_id = xstrndup(key, klen);
		json_object_set(all, room_id, state);
		free(room_id);
	}
	json_decref(state);
	return 0;
}

/* The managed rooms' records, collected to be written after the walk. */
static int collect_managed(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	json_t *state = json_loadb(val, vlen, 0, NULL);
	int managed = rooms_is_managed(state);
	json_decref(state);
	return managed ? collect_record(ctx, key, klen, val, vlen) : 0;
}

int rooms_members_backfill(store_txn *t)
{
	const void *v;
	size_t vlen;
	int rc = store_get(t, STORE_META, "members_indexed", 15, &v, &vlen);
	if (rc != TH_ENOTFOUND)
		return rc;
	json_t *all = json_object();
	rc = store_walk(t, STORE_ROOMS, NULL, 0, collect_managed, all);
	const char *room_id;
	json_t *state;
	json_object_foreach(all, room_id, state)
	{
		const char *user;
		json_t *m;
		json_object_foreach(json_object_get(state, "guests"), user, m)
		{
			if (!rc && json_is_string(m))
				rc = rooms_member_set(t, room_id, user, json_string_value(m));
		}
		json_object_foreach(json_object_get(state, "staff"), user, m)
		{
			if (!rc)
				rc = rooms_member_set(t, room_id, user, "join");
		}
	}
	json_decref(all);
	if (!rc)
		rc = store_put(t, STORE_META, "members_indexed", 15, "1", 1, 0);
	return rc;
}

/* Who @p user_id is.  On the hot path (twice per membership event): the
 * staff-room check is one lookup in STORE_STAFF_MEMBERS, made only for
 * users no cheaper test has placed. */
enum pol_role rooms_role(const struct config *cfg, store_txn *t, const char *user_id)
{
	if (!user_id || user_id[0] != '@')
		return POL_ROLE_NONE;
	if (strcmp(user_id, cfg->bot_user_id) == 0)
		return POL_ROLE_BOT;
	if (config_user_in_namespace(cfg, user_id))
		return POL_ROLE_GUEST;
	if (config_ids_has(&cfg->leads, user_id))
		return POL_ROLE_LEAD;
	if (config_ids_has(&cfg->staff, user_id))
		return POL_ROLE_STAFF;
	if (rooms_staff_has(t, &cfg->staff_rooms, user_id))
		return POL_ROLE_STAFF;
	const char *colon = strchr(user_id, ':');
	int local = colon && strcmp(colon + 1, cfg->server_name) == 0;
	if (local && cfg->staff_all_local)
		return POL_ROLE_STAFF;
	return local ? POL_ROLE_LOCAL : POL_ROLE_REMOTE;
}

/* ---- per-user facts of a managed room, each its own key ----------------- */

static enum store_db map_db(enum rooms_map map)
{
	switch (map) {
	case ROOMS_STAFF:
		return STORE_ROOM_STAFF;
	case ROOMS_NAMES:
		return STORE_ROOM_NAMES;
	case ROOMS_GUESTS:
	default:
		return STORE_ROOM_GUESTS;
	}
}

static int ids_fit(const char *room_id, const char *user_id)
{
	return room_id && user_id && strlen(room_id) <= MAX_ID && strlen(user_id) <= MAX_ID;
}

int rooms_user_get(store_txn *t, const char *room_id, enum rooms_map map, const char *user_id,
                   char buf[ROOMS_VALUE_MAX])
{
	if (!ids_fit(room_id, user_id))
		return TH_ENOTFOUND;
	char key[2 * MAX_ID + 2];
	size_t klen = member_key(key, room_id, user_id);
	const void *v;
	size_t vlen;
	int rc = store_get(t, map_db(map), key, klen, &v, &vlen);
	if (rc)
		return rc;
	if (vlen >= ROOMS_VALUE_MAX)
		vlen = ROOMS_VALUE_MAX - 1;
	memcpy(buf, v, vlen);
	buf[vlen] = '\0';
	return TH_OK;
}

int rooms_user_set(store_txn *t, const char *room_id, enum rooms_map map, const char *user_id,
                   const char *val)
{
	if (!ids_fit(room_id, user_id))
		return TH_OK;
	char key[2 * MAX_ID + 2];
	size_t klen = member_key(key, room_id, user_id);
	if (!val) {
		int rc = store_del(t, map_db(map), key, klen);
		return rc == TH_ENOTFOUND ? TH_OK : rc;
	}
	size_t vlen = strlen(val);
	const void *old;
	size_t olen;
	/* Unchanged: no write, so a resent membership dirties no page. */
	if (store_get(t, map_db(map), key, klen, &old, &olen) == TH_OK && olen == vlen &&
	    memcmp(old, val, vlen) == 0)
		return TH_OK;
	return store_put(t, map_db(map), key, klen, val, vlen, 0);
}

/* A walk over the keys of one room: "room id, 0" is their common prefix. */
struct room_users {
	const char *prefix;
	size_t plen;
	json_t *out; /* rooms_users: collects */
	char *first; /* rooms_user_first: the first user found (256 bytes) */
	int found;
};

static int collect_user(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct room_users *ru = ctx;
	if (klen <= ru->plen || memcmp(key, ru->prefix, ru->plen) != 0)
		return 1; /* past the room's keys */
	size_t ulen = klen - ru->plen;
	if (ru->first) {
		memcpy(ru->first, (const char *)key + ru->plen, ulen); /* ulen <= MAX_ID */
		ru->first[ulen] = '\0';
		ru->found = 1;
		return 1;
	}
	char *user = xstrndup((const char *)key + ru->plen, ulen);
	json_object_set_new(ru->out, user, json_stringn(val, vlen));
	free(user);
	return 0;
}

static int walk_room(store_txn *t, const char *room_id, enum rooms_map map, struct room_users *ru)
{
	char prefix[MAX_ID + 1];
	size_t rl = strlen(room_id);
	if (rl > MAX_ID)
		return TH_OK;
	memcpy(prefix, room_id, rl);
	prefix[rl] = '\0';
	ru->prefix = prefix;
	ru->plen = rl + 1;
	return store_walk(t, map_db(map), prefix, rl + 1, collect_user, ru);
}

int rooms_users(store_txn *t, const char *room_id, enum rooms_map map, json_t **out)
{
	struct room_users ru = {0};
	ru.out = json_object();
	int rc = room_id ? walk_room(t, room_id, map, &ru) : TH_OK;
	if (rc) {
		json_decref(ru.out);
		*out = NULL;
		return rc;
	}
	*out = ru.out;
	return TH_OK;
}

int rooms_user_first(store_txn *t, const char *room_id, enum rooms_map map, char buf[256])
{
	struct room_users ru = {0};
	ru.first = buf;
	int rc = room_id ? walk_room(t, room_id, map, &ru) : TH_OK;
	if (rc)
		return rc;
	return ru.found ? TH_OK : TH_ENOTFOUND;
}

/* ---- upgrade from schema version 1 ---------------------------------------- */

int rooms_migrate_v2(store_txn *t)
{
	static const struct {
		const char *field;
		enum rooms_map map;
	} moved[] = {{"guests", ROOMS_GUESTS}, {"staff", ROOMS_STAFF}, {"names", ROOMS_NAMES}};
	/* STORE_MEMBERS is filled from the same maps: first, while they exist. */
	int rc = rooms_members_backfill(t);
	json_t *all = json_object();
	if (!rc)
		rc = store_walk(t, STORE_ROOMS, NULL, 0, collect_record, all);
	const char *room_id;
	json_t *state;
	json_object_foreach(all, room_id, state)
	{
		int managed = rooms_is_managed(state), changed = 0;
		for (size_t i = 0; !rc && i < sizeof(moved) / sizeof(moved[0]); i++) {
			json_t *m = json_object_get(state, moved[i].field);
			if (!m)
				continue;
			const char *user;
			json_t *v;
			json_object_foreach(m, user, v)
			{
				if (!rc && managed && json_is_string(v))
					rc = rooms_user_set(t, room_id, moved[i].map, user,
					                    json_string_value(v));
			}
			json_object_del(state, moved[i].field);
			changed = 1;
		}
		if (!rc && changed)
			rc = store_put_json(t, STORE_ROOMS, room_id, state);
	}
	json_decref(all);
	return rc;
}
