/*
 * guest_record.c - reading a guest's STORE_USERS record (guest_record.h).
 */
#include "guest_record.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "log.h"
#include "util.h"

int guests_decode(const void *key, size_t klen, const void *val, size_t vlen, struct guest *out)
{
	json_t *j = json_loadb(val, vlen, 0, NULL);
	int kl = klen > GUESTS_MAX_USER_ID ? GUESTS_MAX_USER_ID : (int)klen; /* ids are pseudonymous */
	if (!j || !json_is_object(j)) {
		json_decref(j);
		LOG(LOG_ERROR, "guests: the user record of %.*s in the store is not a JSON object", kl,
		    (const char *)key);
		return TH_ESTORE;
	}
	int rc = TH_OK;
	const char *kind = json_string_value(json_object_get(j, "kind"));
	if (!kind || strcmp(kind, "guest") != 0) {
		rc = TH_ENOTFOUND;
		goto out;
	}
	const char *pseudonym = json_string_value(json_object_get(j, "pseudonym"));
	const char *state = json_string_value(json_object_get(j, "state"));
	json_t *created = json_object_get(j, "created_ms");
	if (!pseudonym || strlen(pseudonym) >= sizeof(out->pseudonym) || !state ||
	    strlen(state) >= sizeof(out->state) || !json_is_integer(created) ||
	    json_integer_value(created) < 0 || klen == 0 || klen >= sizeof(out->user_id) ||
	    memchr(key, '\0', klen)) {
		LOG(LOG_ERROR, "guests: the guest record of %.*s in the store is damaged", kl,
		    (const char *)key);
		rc = TH_ESTORE;
		goto out;
	}
	memcpy(out->user_id, key, klen);
	out->user_id[klen] = '\0';
	snprintf(out->pseudonym, sizeof(out->pseudonym), "%s", pseudonym);
	snprintf(out->state, sizeof(out->state), "%s", state);
	out->created_ms = (uint64_t)json_integer_value(created);
out:
	json_decref(j);
	return rc;
}

int guests_get(store_txn *t, const char *user_id, struct guest *out)
{
	size_t idlen = strlen(user_id);
	if (idlen == 0 || idlen > GUESTS_MAX_USER_ID)
		return TH_ENOTFOUND; /* no such id can be stored */
	const void *val;
	size_t vlen;
	int rc = store_get(t, STORE_USERS, user_id, idlen, &val, &vlen);
	if (rc)
		return rc == TH_ENOTFOUND ? TH_ENOTFOUND : TH_ESTORE;
	struct guest g;
	rc = guests_decode(user_id, idlen, val, vlen, &g);
	if (rc == TH_OK)
		*out = g;
	return rc;
}
