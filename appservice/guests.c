/*
 * guests.c - guest identities: random ids, friendly pseudonyms from two
 * built-in word lists, the STORE_USERS record, and the outbox and audit
 * entries that go with creating a guest.
 */
#include "guests.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "config.h"
#include "log.h"
#include "outbox.h"
#include "rooms.h"
#include "util.h"

/*
 * The words.  Rules for adding one: a single word of plain ASCII letters,
 * capitalised, easy to read and say; nothing that describes a person
 * (mood, looks, body, cleverness, age, size, origin or skin tone), nothing
 * used as an insult or slur in English slang, nothing sexual, and no word
 * that makes a loaded phrase with a word in the other list.  Colours and
 * places in nature are fine for adjectives; animals seen as gentle or
 * admired are fine, those used as insults (pig, rat, snake, ape, cow, dog,
 * goose, ...) are not.  The tests check the shape and that no word repeats.
 */
static const char *const adjectives[] = {
        /* colours and gems */
        "Amber", "Aqua", "Azure", "Bronze", "Cobalt", "Copper", "Coral", "Crimson", "Cyan", "Denim",
        "Emerald", "Golden", "Indigo", "Lilac", "Lime", "Magenta", "Mauve", "Mint", "Opal", "Pearl", "Ruby",
        "Sage", "Sapphire", "Silver", "Teal", "Topaz", "Turquoise", "Violet",
        /* nature, seasons, times of day */
        "Alpine", "Arctic", "Autumn", "Birch", "Canyon", "Cedar", "Clover", "Coastal", "Dawn", "Dusk",
        "Evening", "Fern", "Forest", "Garden", "Glacier", "Harvest", "Hazel", "Heather", "Juniper", "Lagoon",
        "Lakeside", "Lunar", "Maple", "Marble", "Meadow", "Misty", "Moonlit", "Morning", "Moss", "Ocean",
        "Orchard", "Pebble", "Pine", "Polar", "Prairie", "River", "Rowan", "Solar", "Spring", "Starlit",
        "Summer", "Sunlit", "Thistle", "Tidal", "Valley", "Velvet", "Willow", "Winter", "Woodland"};

static const char *const animals[] = {
        /* mammals */
        "Alpaca", "Antelope", "Armadillo", "Badger", "Bison", "Capybara", "Chinchilla", "Deer", "Dolphin",
        "Elk", "Ferret", "Foal", "Gazelle", "Giraffe", "Hamster", "Hare", "Hedgehog", "Ibex", "Jaguar",
        "Kangaroo", "Koala", "Lemur", "Leopard", "Lion", "Llama", "Lynx", "Marmot", "Meerkat", "Mongoose",
        "Narwhal", "Ocelot", "Okapi", "Orca", "Otter", "Pangolin", "Panda", "Platypus", "Pony", "Puma",
        "Rabbit", "Reindeer", "Seal", "Squirrel", "Stoat", "Tapir", "Tiger", "Vole", "Wallaby", "Wombat",
        "Zebra",
        /* birds */
        "Condor", "Crane", "Curlew", "Dove", "Eagle", "Falcon", "Finch", "Flamingo", "Hawk", "Heron",
        "Hummingbird", "Ibis", "Jay", "Kestrel", "Kingfisher", "Kite", "Lark", "Osprey", "Owl", "Pelican",
        "Penguin", "Plover", "Puffin", "Raven", "Robin", "Sparrow", "Starling", "Swan", "Toucan", "Wren",
        /* and the rest */
        "Bee", "Beetle", "Butterfly", "Cricket", "Dragonfly", "Firefly", "Gecko", "Moth", "Octopus", "Salmon",
        "Seahorse", "Turtle"};

#define NADJ (sizeof(adjectives) / sizeof(adjectives[0]))
#define NANI (sizeof(animals) / sizeof(animals[0]))

/* Random picks before falling back to numbered names. */
#define ROOM_RANDOM_TRIES 64

size_t guests_adjective_count(void)
{
	return NADJ;
}

size_t guests_animal_count(void)
{
	return NANI;
}

const char *guests_adjective(size_t i)
{
	return i < NADJ ? adjectives[i] : NULL;
}

const char *guests_animal(size_t i)
{
	return i < NANI ? animals[i] : NULL;
}

/* A uniform index below @p n (rejection sampling: no modulo bias). */
static int random_index(size_t n, size_t *out)
{
	uint32_t limit = UINT32_MAX - (uint32_t)(((uint64_t)UINT32_MAX + 1) % n);
	for (;;) {
		uint32_t r;
		if (th_random(&r, sizeof(r)) != TH_OK)
			return TH_EIO;
		if (r <= limit) {
			*out = r % n;
			return TH_OK;
		}
	}
}

/* A random "Adjective Animal" into @p buf (GUESTS_PSEUDONYM_LEN bytes). */
static int pick(char buf[GUESTS_PSEUDONYM_LEN])
{
	size_t a, b;
	if (random_index(NADJ, &a) || random_index(NANI, &b))
		return TH_EIO;
	snprintf(buf, GUESTS_PSEUDONYM_LEN, "%s %s", adjectives[a], animals[b]);
	return TH_OK;
}

const char *guests_random_pseudonym(char *buf, size_t len)
{
	char cand[GUESTS_PSEUDONYM_LEN];
	if (!buf || len < GUESTS_PSEUDONYM_LEN || pick(cand))
		return NULL;
	memcpy(buf, cand, sizeof(cand));
	return buf;
}

static int is_taken(const char *const *taken, size_t ntaken, const char *name)
{
	for (size_t i = 0; i < ntaken; i++) {
		if (taken[i] && strcasecmp(taken[i], name) == 0)
			return 1;
	}
	return 0;
}

int guests_pseudonym_for_room(const char *const *taken, size_t ntaken, char *buf, size_t len)
{
	char cand[GUESTS_PSEUDONYM_LEN];
	if (!buf || len < GUESTS_PSEUDONYM_LEN || (ntaken && !taken))
		return TH_EINVAL;
	for (int i = 0; i < ROOM_RANDOM_TRIES; i++) {
		if (pick(cand))
			return TH_EIO;
		if (!is_taken(taken, ntaken, cand))
			goto found;
	}
	/* A crowded room: number a random pick.  Of "base 2" .. "base ntaken+2"
	 * at most ntaken are taken, so this ends. */
	char base[GUESTS_PSEUDONYM_LEN];
	if (pick(base))
		return TH_EIO;
	for (size_t n = 2;; n++) {
		snprintf(cand, sizeof(cand), "%.40s %zu", base, n); /* words are short */
		if (!is_taken(taken, ntaken, cand))
			goto found;
	}
found:
	memcpy(buf, cand, sizeof(cand));
	return TH_OK;
}

/* ---- records ----------------------------------------------------------- */

struct walk_ctx {
	int (*fn)(void *ctx, const struct guest *g);
	void *ctx;
};

static int walk_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct walk_ctx *w = ctx;
	struct guest g;
	int rc = guests_decode(key, klen, val, vlen, &g);
	if (rc == TH_ENOTFOUND)
		return 0;
	if (rc)
		return -rc;
	return w->fn(w->ctx, &g);
}

int guests_walk(store_txn *t, int (*fn)(void *ctx, const struct guest *g), void *ctx)
{
	struct walk_ctx w = {fn, ctx};
	return store_walk(t, STORE_USERS, NULL, 0, walk_one, &w);
}

struct find_ctx {
	const char *pseudonym;
	struct guest *out;
	int found;
};

static int find_one(void *ctx, const struct guest *g)
{
	struct find_ctx *f = ctx;
	if (strcasecmp(g->pseudonym, f->pseudonym) != 0)
		return 0;
	*f->out = *g;
	f->found = 1;
	return 1;
}

int guests_find_by_pseudonym(store_txn *t, const char *pseudonym, struct guest *out)
{
	struct guest g;
	struct find_ctx f = {pseudonym, &g, 0};
	int rc = guests_walk(t, find_one, &f);
	if (rc)
		return rc;
	if (!f.found)
		return TH_ENOTFOUND;
	*out = g;
	return TH_OK;
}

/* Every stored pseudonym, to keep a new one apart from them. */
struct names {
	char **v;
	size_t n, cap;
};

static int collect_one(void *ctx, const struct guest *g)
{
	struct names *ns = ctx;
	if (ns->n == ns->cap) {
		ns->cap = ns->cap ? 2 * ns->cap : 64;
		ns->v = xrealloc(ns->v, ns->cap * sizeof(*ns->v));
	}
	ns->v[ns->n++] = xstrdup(g->pseudonym);
	return 0;
}

/* A pseudonym no other guest has (guests_pseudonym_for_room over all of them). */
static int unique_pseudonym(store_txn *t, char buf[GUESTS_PSEUDONYM_LEN])
{
	struct names ns = {0};
	int rc = guests_walk(t, collect_one, &ns);
	if (!rc)
		rc = guests_pseudonym_for_room((const char *const *)ns.v, ns.n, buf, GUESTS_PSEUDONYM_LEN);
	for (size_t i = 0; i < ns.n; i++)
		free(ns.v[i]);
	free(ns.v);
	return rc;
}

int guests_create(const struct config *cfg, store_txn *t, audit *au, const char *actor, struct guest *out)
{
	return guests_create_sealed(cfg, t, au, actor, NULL, out);
}

int guests_create_sealed(const struct config *cfg, store_txn *t, audit *au, const char *actor,
                         const char *note, struct guest *out)
{
	if (!actor || !*actor)
		return TH_EINVAL;
	struct guest g;
	memset(&g, 0, sizeof(g));
	char hex[GUESTS_ID_HEX + 1];
	char *localpart = NULL;
	json_t *rec = NULL, *reg = NULL, *dn = NULL, *blk = NULL, *details = NULL;
	char *body = NULL;
	struct audit_rec ar = {.kind = AUDIT_GUEST_CREATED, .actor = actor};

	/* Check the id fits before spending randomness on it. */
	size_t idlen = 1 + strlen(cfg->guest_prefix) + GUESTS_ID_HEX + 1 + strlen(cfg->server_name);
	if (idlen > GUESTS_MAX_USER_ID)
		return TH_EINVAL;
	int rc = th_random_hex(hex, GUESTS_ID_HEX / 2);
	if (rc)
		return TH_EIO;
	localpart = xasprintf("%s%s", cfg->guest_prefix, hex);
	snprintf(g.user_id, sizeof(g.user_id), "@%s:%s", localpart, cfg->server_name);

	rc = unique_pseudonym(t, g.pseudonym);
	if (rc)
		goto out;
	g.created_ms = th_now_ms();
	snprintf(g.state, sizeof(g.state), "%s", GUESTS_STATE_ACTIVE);

	/* The record holds exactly the documented fields, in this order. */
	rec = json_pack("{s:s, s:s, s:I, s:s}", "kind", "guest", "pseudonym", g.pseudonym, "created_ms",
	                (json_int_t)g.created_ms, "state", g.state);
	body = json_dumps(rec, JSON_COMPACT);
	rc = store_put(t, STORE_USERS, g.user_id, strlen(g.user_id), body, strlen(body), STORE_NOOVERWRITE);
	if (rc == TH_EEXIST)
		LOG(LOG_ERROR, "guests: a new random guest id is already taken; the system's randomness is "
		               "broken");
	if (rc)
		goto out;

	reg = json_pack("{s:s, s:s}", "op", "register", "localpart", localpart);
	/* With per-room pseudonyms the profile name must not link the rooms:
	 * everyone sees "Guest" there, and each room its own pseudonym. */
	dn = json_pack("{s:s, s:s, s:s}", "op", "displayname", "user_id", g.user_id, "displayname",
	               cfg->pseudonym_per_room ? GUESTS_PROFILE_NAME : g.pseudonym);
	/* Invites to the guest are refused by the homeserver itself from the
	 * start (spec v1.18); Threshold brings the guest into rooms without one. */
	blk = outbox_block_invites(g.user_id);
	if ((rc = outbox_push(t, reg)) || (rc = outbox_push(t, blk)) || (rc = outbox_push(t, dn)))
		goto out;

	/* The pseudonym is identifying text: on the record only sealed under
	 * the guest's key, so it goes with the key when the guest is erased. */
	char *sealed_name = NULL;
	if ((rc = audit_seal(au, t, g.user_id, g.pseudonym, &sealed_name)))
		goto out;
	details = json_pack("{s:s}", "pseudonym_sealed", sealed_name);
	free(sealed_name);
	ar.subject = g.user_id;
	ar.details = details;
	ar.sealed = note && *note ? note : NULL;
	rc = audit_append(au, t, &ar, NULL);
	if (rc)
		goto out;
	*out = g;
out:
	free(localpart);
	free(body);
	json_decref(rec);
	json_decref(reg);
	json_decref(blk);
	json_decref(dn);
	json_decref(details);
	return rc;
}

/* Guests whose invites the homeserver should block. */
static int collect_active(void *ctx, const struct guest *g)
{
	if (strcmp(g->state, GUESTS_STATE_ACTIVE) == 0)
		json_array_append_new(ctx, json_string(g->user_id));
	return 0;
}

int guests_block_invites_migrate(store_txn *t, size_t *queued)
{
	*queued = 0;
	const void *v;
	size_t vlen;
	int rc = store_get(t, STORE_META, GUESTS_META_INVITES_BLOCKED, strlen(GUESTS_META_INVITES_BLOCKED),
	                   &v, &vlen);
	if (rc != TH_ENOTFOUND)
		return rc; /* done before (TH_OK), or a store error */
	json_t *ids = json_array();
	rc = guests_walk(t, collect_active, ids);
	size_t i;
	json_t *id;
	json_array_foreach(ids, i, id)
	{
		if (rc)
			break;
		json_t *a = outbox_block_invites(json_string_value(id));
		rc = outbox_push(t, a);
		json_decref(a);
		if (!rc)
			(*queued)++;
	}
	json_decref(ids);
	if (!rc)
		rc = store_put(t, STORE_META, GUESTS_META_INVITES_BLOCKED,
		               strlen(GUESTS_META_INVITES_BLOCKED), "1", 1, 0);
	return rc;
}

int guests_name_in_room(const struct config *cfg, store_txn *t, json_t *room, const char *room_id,
                        const char *guest_id, unsigned *queued)
{
	if (!cfg->pseudonym_per_room)
		return TH_OK;
	(void)room;
	char have[ROOMS_VALUE_MAX];
	int rc = rooms_user_get(t, room_id, ROOMS_NAMES, guest_id, have);
	if (rc == TH_OK)
		return TH_OK; /* named here already (this is our own member event coming back) */
	if (rc != TH_ENOTFOUND)
		return rc;
	/* The names of the room, read only when a guest first joins it. */
	json_t *names;
	if ((rc = rooms_users(t, room_id, ROOMS_NAMES, &names)))
		return rc;

	/* Taken: every name already used in the room, and the guest's own stored
	 * pseudonym (which staff may know from elsewhere). */
	size_t n = json_object_size(names) + 1, i = 0;
	const char **taken = xcalloc(n, sizeof(*taken));
	const char *k;
	json_t *v;
	json_object_foreach(names, k, v)
	{
		taken[i++] = json_string_value(v);
	}
	struct guest g;
	rc = guests_get(t, guest_id, &g);
	if (rc && rc != TH_ENOTFOUND) {
		free(taken);
		json_decref(names);
		return rc;
	}
	if (rc == TH_OK)
		taken[i++] = g.pseudonym;
	char name[GUESTS_PSEUDONYM_LEN];
	rc = guests_pseudonym_for_room(taken, i, name, sizeof(name));
	free(taken);
	json_decref(names);
	if (rc)
		return rc == TH_EIO ? TH_OK : rc; /* no randomness: keep the neutral name */
	if ((rc = rooms_user_set(t, room_id, ROOMS_NAMES, guest_id, name)))
		return rc;
	json_t *a = json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:s, s:s}}", "op", "state", "room_id", room_id,
	                      "user_id", guest_id, "type", "m.room.member", "state_key", guest_id, "content",
	                      "membership", "join", "displayname", name);
	rc = outbox_push(t, a);
	json_decref(a);
	if (!rc)
		(*queued)++;
	return rc;
}
