/*
 * templates.c - the room templates and reverts as JSON, read from the one
 * exposure table in policy/exposure.c; an event's content read into the
 * judge's facts.
 */
#include "templates.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "jsonx.h"
#include "mxevent.h"
#include "util.h"

int templates_of(const json_t *room, enum pol_template *out)
{
	const char *kind = jsonx_str(room, "kind");
	if (kind && strcmp(kind, "portal") == 0)
		*out = POL_TPL_CONVERSATION;
	else if (kind && strcmp(kind, "group") == 0)
		*out = POL_TPL_GROUP;
	else
		return 0;
	return 1;
}

/* The content that sets @p s to the template's value (new reference). */
static json_t *setting_content(enum pol_setting s, enum pol_template tpl, const json_t *allow_rooms)
{
	const struct pol_setting_row *row = pol_setting_row(s);
	if (!row->key)
		return json_object(); /* an alias: none at all */
	const char *safe = row->safe[tpl];
	if (s == POL_SET_JOIN_RULES && strcmp(safe, "restricted") == 0) {
		/* spec: m.room.join_rules, restricted: "allow" lists m.room_membership conditions */
		json_t *allow = json_array();
		size_t i;
		json_t *r;
		json_array_foreach(allow_rooms, i, r)
		{
			if (json_string_value(r))
				json_array_append_new(allow, json_pack("{s:s, s:O}", "type",
				                                       "m.room_membership", "room_id", r));
		}
		if (json_array_size(allow) == 0) {
			/* No room to name: nobody joins without the bot's invite. */
			json_decref(allow);
			return json_pack("{s:s}", row->key, "invite");
		}
		return json_pack("{s:s, s:o}", row->key, safe, "allow", allow);
	}
	return json_pack("{s:s}", row->key, safe);
}

json_t *templates_initial_state(enum pol_template tpl, const char *allow_room)
{
	static const enum pol_setting in_initial[] = {POL_SET_JOIN_RULES, POL_SET_HISTORY,
	                                              POL_SET_GUEST_ACCESS};
	json_t *rooms = allow_room ? json_pack("[s]", allow_room) : json_array();
	json_t *initial = json_array();
	for (size_t i = 0; i < sizeof(in_initial) / sizeof(in_initial[0]); i++)
		json_array_append_new(initial,
		                      json_pack("{s:s, s:s, s:o}", "type",
		                                pol_setting_row(in_initial[i])->type, "state_key", "",
		                                "content", setting_content(in_initial[i], tpl, rooms)));
	json_decref(rooms);
	return initial;
}

json_t *templates_power_levels(const struct config *cfg, enum pol_template tpl, const json_t *users)
{
	long long staff = cfg->staff_power;
	json_t *pl = json_object();
	json_t *u = users ? json_deep_copy(users) : json_object();
	json_object_set_new(u, cfg->bot_user_id, json_integer(POL_LEVEL_BOT));
	json_object_set_new(pl, "users", u);
	for (unsigned k = 0; k < POL_PK_COUNT; k++)
		json_object_set_new(pl, pol_power_key_name((enum pol_power_key)k),
		                    json_integer(pol_level_value(
		                            pol_power_key_level(tpl, (enum pol_power_key)k), staff)));
	json_t *events = json_object();
	for (unsigned i = 0; i < POL_GUARDED_COUNT; i++)
		json_object_set_new(events, pol_guarded_type(i),
		                    json_integer(pol_level_value(pol_guarded_level(tpl, i), staff)));
	json_object_set_new(pl, "events", events);
	json_object_set_new(pl, "notifications", json_pack("{s:I}", "room", (json_int_t)staff));
	return pl;
}

int templates_room_created(store_txn *t, const char *room_id, const json_t *create_body)
{
	json_t *rooms = json_array();
	size_t i;
	json_t *ev;
	json_array_foreach(json_object_get(create_body, "initial_state"), i, ev)
	{
		const char *type = jsonx_str(ev, "type");
		if (!type || strcmp(type, pol_setting_row(POL_SET_JOIN_RULES)->type) != 0)
			continue;
		size_t j;
		json_t *cond;
		json_array_foreach(json_object_get(json_object_get(ev, "content"), "allow"), j, cond)
		{
			if (jsonx_str(cond, "room_id"))
				json_array_append_new(rooms, json_string(jsonx_str(cond, "room_id")));
		}
	}
	json_t *state = NULL;
	int rc = store_get_json(t, STORE_ROOMS, room_id, &state);
	if (rc == TH_OK && json_is_object(state)) {
		json_object_set(state, "allow", rooms);
		rc = store_put_json(t, STORE_ROOMS, room_id, state);
	}
	json_decref(state);
	json_decref(rooms);
	return rc == TH_ENOTFOUND ? TH_OK : rc;
}

/* A power level as the spec allows it: an integer, or (in older room
 * versions) a string of one.  @return 1 with the level in @p out, or 0. */
int templates_power_level(const json_t *v, long long *out)
{
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return 1;
	}
	const char *s = json_string_value(v);
	char *end;
	if (!s || !*s)
		return 0;
	errno = 0;
	long long n = strtoll(s, &end, 10);
	if (errno || *end)
		return 0;
	*out = n;
	return 1;
}

/* @p key of @p o as a level, @p dflt when absent; a bad one marks @p p malformed. */
static long long level_of(const json_t *o, const char *key, long long dflt, struct pol_power_facts *p)
{
	const json_t *v = json_object_get(o, key);
	long long n;
	if (!v)
		return dflt;
	if (!templates_power_level(v, &n)) {
		p->malformed = 1;
		return dflt;
	}
	return n;
}

/* spec: m.room.power_levels: the defaults of keys not given. */
static long long spec_default(enum pol_power_key k)
{
	switch (k) {
	case POL_PK_STATE_DEFAULT:
	case POL_PK_KICK:
	case POL_PK_BAN:
	case POL_PK_REDACT:
		return 50;
	default:
		return 0;
	}
}

static void power_facts(const struct config *cfg, const json_t *guests, const json_t *content,
                        struct pol_power_facts *p)
{
	for (unsigned k = 0; k < POL_PK_COUNT; k++)
		p->keys[k] = level_of(content, pol_power_key_name((enum pol_power_key)k),
		                      spec_default((enum pol_power_key)k), p);
	const json_t *events = json_object_get(content, "events");
	for (unsigned i = 0; i < POL_GUARDED_COUNT; i++) /* all state events: state_default */
		p->events[i] = level_of(events, pol_guarded_type(i), p->keys[POL_PK_STATE_DEFAULT], p);
	long long dflt = p->keys[POL_PK_USERS_DEFAULT];
	const json_t *users = json_object_get(content, "users");
	p->bot = level_of(users, cfg->bot_user_id, dflt, p);
	p->others_max = dflt;
	p->guests_max = 0;
	const char *user_id;
	json_t *v;
	json_object_foreach((json_t *)users, user_id, v)
	{
		if (strcmp(user_id, cfg->bot_user_id) == 0)
			continue;
		long long n = level_of(users, user_id, dflt, p);
		if (n > p->others_max)
			p->others_max = n;
		if (config_user_in_namespace(cfg, user_id) && n > p->guests_max)
			p->guests_max = n;
	}
	/* A guest of the room not listed has users_default. */
	json_object_foreach((json_t *)guests, user_id, v)
	{
		if (!json_object_get(users, user_id) && dflt > p->guests_max)
			p->guests_max = dflt;
	}
}

/* The rooms a template's restricted join rule may name: the ones recorded
 * when the room was made (borrowed from @p room).  A room made before they
 * were recorded names none: any restricted rule there counts as widened and
 * goes back to invite-only, closed rather than guessed (another service's
 * staff room must never be let in). */
static const json_t *allow_rooms(const json_t *room)
{
	const json_t *rooms = json_object_get(room, "allow");
	return json_is_array(rooms) ? rooms : NULL;
}

static int in_array(const json_t *a, const char *s)
{
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v)
	{
		if (json_string_value(v) && s && strcmp(json_string_value(v), s) == 0)
			return 1;
	}
	return 0;
}

/* A power-level revert: the template's, keeping who is listed at a level
 * within staff's bounds; guests (listed, or of the room) at 0, anyone above
 * staff's level down to it; but anyone at or above the bot's own level as it
 * stands stays as they are (into @p cannot_demote): spec, auth rules for
 * m.room.power_levels: a user at or above the sender's level cannot be
 * changed or removed by them, and the whole revert would be refused. */
static json_t *power_revert(const struct config *cfg, enum pol_template tpl, const json_t *guests,
                            const json_t *content, json_t *cannot_demote)
{
	json_t *users = json_object();
	const json_t *given = json_object_get(content, "users");
	long long bot = POL_LEVEL_BOT;
	if (!templates_power_level(json_object_get(given, cfg->bot_user_id), &bot) &&
	    !templates_power_level(json_object_get(content, "users_default"), &bot))
		bot = 0;
	const char *user_id;
	json_t *v;
	json_object_foreach((json_t *)given, user_id, v)
	{
		long long n;
		if (strcmp(user_id, cfg->bot_user_id) == 0)
			continue;
		if (!templates_power_level(v, &n))
			continue; /* unreadable: users_default */
		if (n >= bot) {
			json_object_set(users, user_id, v);
			json_array_append_new(cannot_demote, json_string(user_id));
			continue;
		}
		if (config_user_in_namespace(cfg, user_id))
			continue;
		if (n > (long long)cfg->staff_power)
			n = cfg->staff_power;
		json_object_set_new(users, user_id, json_integer(n));
	}
	json_object_foreach((json_t *)guests, user_id, v)
	{
		if (!json_object_get(users, user_id)) /* a guest at the bot's level stays: see above */
			json_object_set_new(users, user_id, json_integer(0));
	}
	json_object_foreach((json_t *)given, user_id, v)
	{
		if (config_user_in_namespace(cfg, user_id) && !json_object_get(users, user_id))
			json_object_set_new(users, user_id, json_integer(0));
	}
	json_t *pl = templates_power_levels(cfg, tpl, users);
	json_decref(users);
	return pl;
}

int templates_judge_event(const struct config *cfg, const json_t *room, const json_t *guests,
                          const struct mxev *ev, struct templates_change *out)
{
	enum pol_template tpl;
	if (!ev->state_key || *ev->state_key || !templates_of(room, &tpl))
		return 0;
	int s = pol_setting_from_type(ev->type);
	if (s < 0)
		return 0;
	json_t *content = NULL;
	if (mxev_content_json(ev, &content) != TH_OK)
		return 0;
	struct pol_setting_facts f;
	memset(&f, 0, sizeof(f));
	f.setting = (enum pol_setting)s;
	f.tpl = tpl;
	f.staff = cfg->staff_power;
	const json_t *allowed = allow_rooms(room);
	const struct pol_setting_row *row = pol_setting_row(f.setting);
	if (row->key)
		f.value = jsonx_str(content, row->key);
	if (f.setting == POL_SET_JOIN_RULES) {
		size_t i;
		json_t *cond;
		const json_t *allow = json_object_get(content, "allow");
		if (allow && !json_is_array(allow))
			f.allow_outside = 1;
		json_array_foreach(allow, i, cond)
		{
			const char *type = jsonx_str(cond, "type");
			if (!type || strcmp(type, "m.room_membership") != 0 ||
			    !in_array(allowed, jsonx_str(cond, "room_id")))
				f.allow_outside++;
		}
	} else if (f.setting == POL_SET_ALIAS) {
		const char *a = jsonx_str(content, "alias");
		f.has_alias = (a && *a) || json_array_size(json_object_get(content, "alt_aliases")) > 0;
	} else if (f.setting == POL_SET_POWER_LEVELS) {
		power_facts(cfg, guests, content, &f.power);
	}
	out->setting = f.setting;
	out->tpl = tpl;
	out->exposure = pol_exposure_judge(&f);
	out->revert = NULL;
	out->cannot_demote = NULL;
	if (out->exposure != POL_EXP_NONE && f.setting != POL_SET_ENCRYPTION) {
		if (f.setting == POL_SET_POWER_LEVELS) {
			out->cannot_demote = json_array();
			out->revert = power_revert(cfg, tpl, guests, content, out->cannot_demote);
			if (json_array_size(out->cannot_demote) == 0) {
				json_decref(out->cannot_demote);
				out->cannot_demote = NULL;
			}
		} else {
			out->revert = setting_content(f.setting, tpl, allowed);
		}
		/* Nothing to change that Threshold may change: no revert, so
		 * nothing loops; the caller says it could not be undone. */
		if (json_equal(out->revert, content)) {
			json_decref(out->revert);
			out->revert = NULL;
		}
	}
	json_decref(content);
	return 1;
}
