/*
 * groups.h - staff's "!threshold group ..." commands: make a moderated group
 * room, add a guest to it or remove one by pseudonym, list its guests.
 * Policy has already decided the sender may (staff, bot joined, and for
 * add/remove/list a group room); this module turns the command into
 * outbox actions and a reply, inside the transaction's write txn.
 */
#ifndef THRESHOLD_GROUPS_H
#define THRESHOLD_GROUPS_H

#include <jansson.h>

#include "policy.h"
#include "store.h"

struct config;
struct guest;
struct mxev;

/**
 * The words after "!threshold" that name a group command.
 * @param after_prefix  starts with the word "group" (borrowed)
 * @return the command; POL_CMD_UNKNOWN for another verb or none;
 *         POL_CMD_NONE only when @p after_prefix is not "group" followed by
 *         a blank (space, tab, newline) or its end.
 */
enum pol_command groups_parse(const char *after_prefix);

/**
 * Carry out @p cmd for the sender of @p ev.
 * @param room     the room's state (borrowed; "guests" lists guest memberships)
 * @param service  for POL_CMD_GROUP_CREATE: the service the new group is
 *                 for (the config name; borrowed), or NULL: none
 * @param queued incremented per action queued
 * @return TH_OK, or a store error that must abort the transaction.
 */
int groups_execute(const struct config *cfg, store_txn *t, const struct mxev *ev, enum pol_command cmd,
                   const json_t *room, const char *service, unsigned *queued);

/**
 * The guest a "!threshold group add|remove WHO" names (a pseudonym or a
 * user id), for the facts policy decides on.
 * @param body  the command's text (borrowed)
 * @return TH_OK with @p g filled, TH_ENOTFOUND (no argument, or no such
 *         guest) or TH_ESTORE.
 */
int groups_target(store_txn *t, const char *body, struct guest *g);

/** The createRoom body of a group room made for @p creator (new reference). */
json_t *groups_room_content(const struct config *cfg, const char *name, const char *creator);

#endif
