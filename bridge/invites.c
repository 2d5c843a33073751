/*
 * invites.c - invitation tokens, stored hashed.
 */
#include "invites.h"

#include <string.h>

#include "config.h"
#include "jsonx.h"
#include "util.h"

#define DOMAIN      "invite"
#define MAX_LIFE_MS (366ull * 24 * 3600 * 1000)
#define PRUNE_GRACE (24ull * 3600 * 1000)

int inv_create(store_txn *t, audit *au, const struct config_service *svc, const char *group, unsigned uses,
               uint64_t expires_ms, const char *actor, char *token)
{
	uint64_t now = th_now_ms();
	if (!svc || uses < 1 || uses > 10000 || expires_ms <= now || !actor || !*actor ||
	    (group && (group[0] != '!' || strlen(group) > 255)))
		return TH_EINVAL;
	char tok[SEC_TOKEN_LEN + 1];
	int rc = sec_token_new(tok);
	if (rc)
		return rc;
	unsigned char key[SEC_HASH_LEN];
	sec_hash(DOMAIN, tok, key);
	json_t *rec = json_pack("{s:s, s:i, s:i, s:I, s:I}", "service", svc->name, "uses", (int)uses, "used",
	                        0, "expires_ms", (json_int_t)expires_ms, "created_ms", (json_int_t)now);
	if (group)
		json_object_set_new(rec, "group", json_string(group));
	char *val = json_dumps(rec, JSON_COMPACT);
	json_decref(rec);
	rc = store_put(t, STORE_INVITES, key, sizeof(key), val, strlen(val), STORE_NOOVERWRITE);
	free(val);
	if (rc)
		goto out;
	json_t *details = json_pack("{s:s, s:i, s:I}", "service", svc->name, "uses", (int)uses, "expires_ms",
	                            (json_int_t)expires_ms);
	struct audit_rec ar = {
	        .kind = AUDIT_INVITE_CREATED, .actor = actor, .room = group, .details = details};
	rc = audit_append(au, t, &ar, NULL);
	json_decref(details);
	if (rc == TH_OK)
		memcpy(token, tok, sizeof(tok));
out:
	explicit_bzero(tok, sizeof(tok));
	return rc;
}

/* Read and judge the record under @p key; @p rec_out gets it (new reference). */
static int lookup(store_txn *t, const unsigned char *key, uint64_t now, struct inv_info *out,
                  json_t **rec_out)
{
	const void *v;
	size_t vlen;
	int rc = store_get(t, STORE_INVITES, key, SEC_HASH_LEN, &v, &vlen);
	if (rc)
		return rc == TH_ENOTFOUND ? TH_ENOTFOUND : rc;
	json_t *rec = json_loadb(v, vlen, 0, NULL);
	const char *svc = jsonx_str(rec, "service");
	json_int_t uses = json_integer_value(json_object_get(rec, "uses"));
	json_int_t used = json_integer_value(json_object_get(rec, "used"));
	json_int_t exp = json_integer_value(json_object_get(rec, "expires_ms"));
	if (!svc || strlen(svc) > INV_MAX_SERVICE || uses < 1) {
		json_decref(rec);
		return TH_ESTORE;
	}
	if (used >= uses || (uint64_t)exp <= now) {
		json_decref(rec);
		return TH_ENOTFOUND;
	}
	memset(out, 0, sizeof(*out));
	memcpy(out->service, svc, strlen(svc) + 1); /* length checked above */
	out->uses = (unsigned)uses;
	out->used = (unsigned)used;
	out->expires_ms = (uint64_t)exp;
	const char *group = jsonx_str(rec, "group");
	if (group && strlen(group) < sizeof(out->group))
		memcpy(out->group, group, strlen(group) + 1);
	if (rec_out)
		*rec_out = rec;
	else
		json_decref(rec);
	return TH_OK;
}

int inv_check(store_txn *t, const char *token, uint64_t now_ms, struct inv_info *out)
{
	if (!sec_token_ok(token))
		return TH_ENOTFOUND;
	unsigned char key[SEC_HASH_LEN];
	sec_hash(DOMAIN, token, key);
	return lookup(t, key, now_ms, out, NULL);
}

int inv_consume(store_txn *t, const char *token, uint64_t now_ms, struct inv_info *out)
{
	if (!sec_token_ok(token))
		return TH_ENOTFOUND;
	unsigned char key[SEC_HASH_LEN];
	sec_hash(DOMAIN, token, key);
	json_t *rec = NULL;
	int rc = lookup(t, key, now_ms, out, &rec);
	if (rc)
		return rc;
	out->used++;
	json_object_set_new(rec, "used", json_integer(out->used));
	char *val = json_dumps(rec, JSON_COMPACT);
	json_decref(rec);
	rc = store_put(t, STORE_INVITES, key, SEC_HASH_LEN, val, strlen(val), 0);
	free(val);
	return rc;
}

/* The claims bound to @p rec, its "opens" array (created when missing). */
static json_t *opens_of(json_t *rec)
{
	json_t *a = json_object_get(rec, "opens");
	if (!json_is_array(a)) {
		a = json_array();
		json_object_set_new(rec, "opens", a);
	}
	return a;
}

/* The index of @p hex in @p opens, or -1. */
static long opens_find(const json_t *opens, const char *hex)
{
	for (size_t i = 0; i < json_array_size(opens); i++) {
		const char *v = json_string_value(json_array_get(opens, i));
		if (v && strcmp(v, hex) == 0)
			return (long)i;
	}
	return -1;
}

static void claim_hex(const char *claim, char hex[2 * SEC_HASH_LEN + 1])
{
	unsigned char h[SEC_HASH_LEN];
	sec_hash("invite-claim", claim, h);
	th_hex(hex, h, sizeof(h));
}

static int put_rec(store_txn *t, const unsigned char *key, json_t *rec)
{
	char *val = json_dumps(rec, JSON_COMPACT);
	int rc = store_put(t, STORE_INVITES, key, SEC_HASH_LEN, val, strlen(val), 0);
	free(val);
	return rc;
}

int inv_open(store_txn *t, const char *token, const char *claim, uint64_t now_ms, struct inv_info *out)
{
	if (!sec_token_ok(token))
		return TH_ENOTFOUND;
	if (!claim || !sec_token_ok(claim))
		return TH_EINVAL;
	unsigned char key[SEC_HASH_LEN];
	sec_hash(DOMAIN, token, key);
	json_t *rec = NULL;
	int rc = lookup(t, key, now_ms, out, &rec);
	if (rc)
		return rc;
	if (out->uses > INV_BIND_MAX)
		goto out; /* a shared link: not bound */
	char hex[2 * SEC_HASH_LEN + 1];
	claim_hex(claim, hex);
	json_t *opens = opens_of(rec);
	if (opens_find(opens, hex) >= 0)
		goto out;
	if (out->used + json_array_size(opens) >= out->uses) {
		rc = TH_ENOTFOUND;
		goto out;
	}
	json_array_append_new(opens, json_string(hex));
	rc = put_rec(t, key, rec);
out:
	json_decref(rec);
	return rc;
}

int inv_admit(store_txn *t, const char *token, const char *claim, uint64_t now_ms)
{
	if (!sec_token_ok(token))
		return TH_ENOTFOUND;
	unsigned char key[SEC_HASH_LEN];
	sec_hash(DOMAIN, token, key);
	json_t *rec = NULL;
	struct inv_info inv;
	int rc = lookup(t, key, now_ms, &inv, &rec);
	if (rc)
		return rc;
	json_t *opens = opens_of(rec);
	long at = -1;
	if (claim && sec_token_ok(claim)) {
		char hex[2 * SEC_HASH_LEN + 1];
		claim_hex(claim, hex);
		at = opens_find(opens, hex);
	}
	if (at >= 0) {
		json_array_remove(opens, (size_t)at);
		rc = put_rec(t, key, rec);
	} else if (inv.uses <= INV_BIND_MAX && inv.used + json_array_size(opens) >= inv.uses) {
		rc = TH_ENOTFOUND;
	}
	json_decref(rec);
	return rc;
}

char *inv_link(const struct config *cfg, const char *token)
{
	return xasprintf("%s/#invite=%s", cfg->gw_public_url, token);
}

int inv_parse_duration(const char *s, uint64_t *out)
{
	if (!s || !*s)
		return TH_EINVAL;
	size_t n = strlen(s);
	uint64_t unit = 3600ull * 1000;
	char num[24];
	if (n >= sizeof(num))
		return TH_EINVAL;
	memcpy(num, s, n + 1);
	switch (num[n - 1]) {
	case 's':
		unit = 1000;
		num[n - 1] = '\0';
		break;
	case 'm':
		unit = 60ull * 1000;
		num[n - 1] = '\0';
		break;
	case 'h':
		num[n - 1] = '\0';
		break;
	case 'd':
		unit = 24ull * 3600 * 1000;
		num[n - 1] = '\0';
		break;
	default:
		break;
	}
	uint64_t v;
	if (th_parse_u64(num, MAX_LIFE_MS, &v) != TH_OK || v == 0 || v > MAX_LIFE_MS / unit)
		return TH_EINVAL;
	*out = v * unit;
	return TH_OK;
}

struct prune_ctx {
	uint64_t now;
	unsigned char (*dead)[SEC_HASH_LEN];
	size_t n;
};

static int prune_one(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct prune_ctx *pc = ctx;
	if (klen != SEC_HASH_LEN)
		return 0;
	json_t *rec = json_loadb(val, vlen, 0, NULL);
	json_int_t uses = json_integer_value(json_object_get(rec, "uses"));
	json_int_t used = json_integer_value(json_object_get(rec, "used"));
	uint64_t exp = (uint64_t)json_integer_value(json_object_get(rec, "expires_ms"));
	json_decref(rec);
	if (used >= uses || exp + PRUNE_GRACE <= pc->now) {
		pc->dead = xrealloc(pc->dead, (pc->n + 1) * sizeof(*pc->dead));
		memcpy(pc->dead[pc->n++], key, SEC_HASH_LEN);
	}
	return 0;
}

int inv_prune(store_txn *t, uint64_t now_ms, size_t *removed)
{
	struct prune_ctx pc = {.now = now_ms};
	int rc = store_walk(t, STORE_INVITES, NULL, 0, prune_one, &pc);
	for (size_t i = 0; rc == TH_OK && i < pc.n; i++)
		rc = store_del(t, STORE_INVITES, pc.dead[i], SEC_HASH_LEN);
	free(pc.dead);
	if (rc == TH_OK)
		*removed = pc.n;
	return rc;
}
