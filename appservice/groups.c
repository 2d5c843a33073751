/*
 * groups.c - moderated group rooms, run by the bot for staff.
 */
#include "groups.h"

#include <string.h>

#include "config.h"
#include "guests.h"
#include "jsonx.h"
#include "mxevent.h"
#include "outbox.h"
#include "rooms.h"
#include "templates.h"
#include "util.h"

#define MAX_NAME 120

static const struct {
	const char *verb;
	enum pol_command cmd;
} verbs[] = {
        {"create", POL_CMD_GROUP_CREATE},
        {"add", POL_CMD_GROUP_ADD},
        {"remove", POL_CMD_GROUP_REMOVE},
        {"list", POL_CMD_GROUP_LIST},
};

/* Words are separated by spaces and tabs; a word ends at a blank (a newline too). */
#define SPACES " \t"
#define BLANKS " \t\n"

/* Skip "group <verb>" and spaces; the argument, or "" (borrowed). */
static const char *argument(const char *body)
{
	const char *p = strstr(body, "group");
	if (!p)
		return "";
	p += 5;
	p += strspn(p, SPACES);
	p += strcspn(p, BLANKS);
	p += strspn(p, SPACES);
	return p;
}

enum pol_command groups_parse(const char *s)
{
	/* events_parse_command ends the word "group" at any blank: so does this. */
	if (strncmp(s, "group", 5) != 0 || (s[5] != '\0' && !strchr(BLANKS, s[5])))
		return POL_CMD_NONE;
	s += 5;
	s += strspn(s, SPACES);
	size_t n = strcspn(s, BLANKS);
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (strlen(verbs[i].verb) == n && strncmp(s, verbs[i].verb, n) == 0)
			return verbs[i].cmd;
	}
	return POL_CMD_UNKNOWN;
}

json_t *groups_room_content(const struct config *cfg, const char *name, const char *creator)
{
	/* Invite-only, history from joining, not federated unless rooms.federate,
	 * and only the bot (100) may change what decides who can get in or read
	 * back.  Staff moderate at rooms.staff_power: invite, remove, redact,
	 * rename.  The group template (policy/exposure.c). */
	json_t *users = json_pack("{s:I}", creator, (json_int_t)cfg->staff_power);
	json_t *power = templates_power_levels(cfg, POL_TPL_GROUP, users);
	json_decref(users);
	json_t *initial = templates_initial_state(POL_TPL_GROUP, NULL);
	return json_pack("{s:s, s:s, s:s, s:{s:b}, s:[s], s:o, s:o}", "name", name, "preset", "private_chat",
	                 "visibility", "private", "creation_content", "m.federate", cfg->rooms_federate,
	                 "invite", creator, "initial_state", initial, "power_level_content_override", power);
}

static int reply(const struct config *cfg, store_txn *t, const struct mxev *ev, const char *body,
                 unsigned *queued)
{
	json_t *a = outbox_notice(ev->room_id, cfg->bot_user_id, body, ev->event_id);
	int rc = outbox_push(t, a);
	json_decref(a);
	if (!rc)
		(*queued)++;
	return rc;
}

/* The guest named by @p who (a pseudonym, or a user id). */
static int find_guest(store_txn *t, const char *who, struct guest *g)
{
	if (who[0] == '@')
		return guests_get(t, who, g);
	return guests_find_by_pseudonym(t, who, g);
}

static int create(const struct config *cfg, store_txn *t, const struct mxev *ev, const char *arg,
                  const char *service, unsigned *queued)
{
	const char *name = *arg ? arg : "Support group";
	json_t *a = json_pack(
	        "{s:s, s:s, s:s, s:o, s:{s:s, s:s, s:s}}", "op", "create_room", "user_id", cfg->bot_user_id,
	        "kind", "group", "content", groups_room_content(cfg, name, ev->sender), "reply", "room_id",
	        ev->room_id, "event_id", ev->event_id, "body",
	        "Made the group room and invited you. Add guests there with !threshold group add "
	        "PSEUDONYM. Room:");
	if (service) /* done_create_room records it on the room (rooms_set_service) */
		json_object_set_new(a, "service", json_string(service));
	int rc = outbox_push(t, a);
	json_decref(a);
	if (!rc)
		(*queued)++;
	return rc;
}

static int add_or_remove(const struct config *cfg, store_txn *t, const struct mxev *ev, const char *arg,
                         int add, unsigned *queued)
{
	if (!*arg)
		return reply(cfg, t, ev,
		             add ? "Usage: !threshold group add PSEUDONYM"
		                 : "Usage: !threshold group remove PSEUDONYM",
		             queued);
	struct guest g;
	int rc = find_guest(t, arg, &g);
	if (rc == TH_ENOTFOUND) {
		char *msg = xasprintf("No guest called \"%.80s\".", arg);
		rc = reply(cfg, t, ev, msg, queued);
		free(msg);
		return rc;
	}
	if (rc)
		return rc;
	/* The homeserver refuses invites to guests: "guest_enter" lets the bot's
	 * one invite through and blocks again, as one action (outbox.h). */
	json_t *a = json_pack("{s:s, s:s, s:s, s:s}", "op", add ? "guest_enter" : "kick", "room_id",
	                      ev->room_id, "user_id", cfg->bot_user_id, "target", g.user_id);
	if (!add)
		json_object_set_new(a, "reason", json_string("Removed from the group by staff."));
	rc = outbox_push(t, a);
	json_decref(a);
	if (rc)
		return rc;
	(*queued)++;
	char *msg = xasprintf(add ? "Adding %s to this room." : "Removing %s from this room.", g.pseudonym);
	rc = reply(cfg, t, ev, msg, queued);
	free(msg);
	return rc;
}

static int list(const struct config *cfg, store_txn *t, const struct mxev *ev, const json_t *room,
                unsigned *queued)
{
	(void)room;
	json_t *guests;
	int grc = rooms_users(t, ev->room_id, ROOMS_GUESTS, &guests);
	if (grc)
		return grc;
	size_t cap = 4096, len = 0;
	char *buf = xmalloc(cap);
	len += (size_t)snprintf(buf, cap, "Guests of this room:");
	const char *id;
	json_t *m;
	unsigned n = 0;
	json_object_foreach(guests, id, m)
	{
		const char *membership = json_string_value(m);
		if (!membership || (strcmp(membership, "join") && strcmp(membership, "invite")))
			continue;
		struct guest g;
		int rc = guests_get(t, id, &g);
		if (rc && rc != TH_ENOTFOUND) {
			free(buf);
			json_decref(guests);
			return rc;
		}
		if (len + 200 > cap)
			break;
		len += (size_t)snprintf(buf + len, cap - len, "\n%s (%s)", rc ? id : g.pseudonym,
		                        strcmp(membership, "join") ? "invited" : "joined");
		n++;
	}
	json_decref(guests);
	if (n == 0)
		snprintf(buf, cap, "No guests in this room.");
	int rc = reply(cfg, t, ev, buf, queued);
	free(buf);
	return rc;
}

/* The argument's first line, without trailing blanks, into @p arg. */
static void first_line(const char *body, char arg[MAX_NAME + 1])
{
	snprintf(arg, MAX_NAME + 1, "%s", argument(body ? body : ""));
	arg[strcspn(arg, "\r\n")] = '\0';
	for (size_t n = strlen(arg); n > 0 && (arg[n - 1] == ' ' || arg[n - 1] == '\t'); n--)
		arg[n - 1] = '\0';
}

int groups_target(store_txn *t, const char *body, struct guest *g)
{
	char arg[MAX_NAME + 1];
	first_line(body, arg);
	return *arg ? find_guest(t, arg, g) : TH_ENOTFOUND;
}

int groups_execute(const struct config *cfg, store_txn *t, const struct mxev *ev, enum pol_command cmd,
                   const json_t *room, const char *service, unsigned *queued)
{
	char arg[MAX_NAME + 1];
	first_line(ev->body, arg);
	switch (cmd) {
	case POL_CMD_GROUP_CREATE:
		return create(cfg, t, ev, arg, service, queued);
	case POL_CMD_GROUP_ADD:
		return add_or_remove(cfg, t, ev, arg, 1, queued);
	case POL_CMD_GROUP_REMOVE:
		return add_or_remove(cfg, t, ev, arg, 0, queued);
	case POL_CMD_GROUP_LIST:
		return list(cfg, t, ev, room, queued);
	default:
		return TH_OK;
	}
}
