/* rooms.c - the per-room record in STORE_ROOMS. */
#include "rooms.h"

#include <string.h>

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

int rooms_mark_managed(store_txn *t, const char *room_id, const char *kind)
{
	json_t *state = NULL;
	int rc = store_get_json(t, STORE_ROOMS, room_id, &state);
	if (rc == TH_ENOTFOUND || (rc == TH_OK && !json_is_object(state))) {
		json_decref(state);
		state = rooms_state_new();
	} else if (rc) {
		return rc;
	}
	json_object_set_new(state, "kind", json_string(kind));
	rc = store_put_json(t, STORE_ROOMS, room_id, state);
	json_decref(state);
	return rc;
}
