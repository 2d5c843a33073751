/*
 * templates.h - the JSON side of policy/exposure.h: the room templates
 * (initial state and power levels) Threshold creates conversation and group
 * rooms with, an event's content read into the judge's facts, and the
 * revert that puts a setting back to the room's own template value.  Both
 * the rooms created and the reverts come from the one table in
 * policy/exposure.c, so they cannot drift apart.
 */
#ifndef THRESHOLD_TEMPLATES_H
#define THRESHOLD_TEMPLATES_H

#include <jansson.h>

#include "exposure.h"
#include "store.h"

struct config;
struct mxev;

/** A change to a managed room's setting, judged (see templates_judge_event). */
struct templates_change {
	enum pol_setting setting;
	enum pol_template tpl;
	enum pol_exposure exposure; /* POL_EXP_NONE: safe, nothing to do */
	json_t *revert;             /* the template content to put back (new reference), or NULL:
	                               nothing to put back (safe, encryption), or nothing Threshold
	                               can change (see cannot_demote) */
	json_t *cannot_demote;      /* power levels: the users (ids, new reference) holding the bot's
	                               level, whom Matrix does not let the bot lower (spec: auth rules,
	                               m.room.power_levels), kept as they are in the revert; or NULL */
};

/**
 * A power level as the spec allows it: an integer, or (in older room
 * versions) a string of one.  @return 1 with the level in @p out, or 0.
 */
int templates_power_level(const json_t *v, long long *out);

/**
 * The room's template: @p room (its STORE_ROOMS record) is a conversation
 * ("portal") or a group room.  @return 1 with @p out set, or 0 (not a room
 * Threshold made).
 */
int templates_of(const json_t *room, enum pol_template *out);

/**
 * The template's initial state for createRoom's "initial_state" (new
 * reference): join rule (a conversation's restricted to members of
 * @p allow_room, its service's staff room), history visibility, guest access.
 * @param allow_room  borrowed; unused for a group
 */
json_t *templates_initial_state(enum pol_template tpl, const char *allow_room);

/**
 * The template's power levels (new reference): the bot at 100, @p users
 * (borrowed; may be NULL) added, and every level from the table with staff's
 * level being cfg->staff_power.
 */
json_t *templates_power_levels(const struct config *cfg, enum pol_template tpl, const json_t *users);

/**
 * Remember, on the record of new room @p room_id, the rooms its template's
 * join rule names (from @p create_body's initial state, borrowed), so that a
 * revert restores that same allow list.  Call in the commit that marks the
 * room managed.  @return TH_OK or a store error.
 */
int templates_room_created(store_txn *t, const char *room_id, const json_t *create_body);

/**
 * Judge state event @p ev in managed room @p room (its record) against the
 * room's template.  The content is judged, never the sender.
 * A revert is idempotent (the revert of a revert is itself), and is given
 * only when it differs from the content: so Threshold's own reverts, coming
 * back as events, never make another and nothing loops.
 * @param guests  the room's guests (rooms_users ROOMS_GUESTS; borrowed, NULL:
 *                none), read for m.room.power_levels only
 * @param out  written when 1 is returned; the caller releases out->revert
 *             and out->cannot_demote
 * @return 1 if @p ev is one of the table's settings in a room with a
 *         template (out->exposure says whether it exposes), else 0.
 */
int templates_judge_event(const struct config *cfg, const json_t *room, const json_t *guests,
                          const struct mxev *ev, struct templates_change *out);

#endif
