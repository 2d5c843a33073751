/*
 * matrix_outbox.c - bridge/matrix.h on the outbox: every method is one
 * outbox action (the JSON documented in outbox.h), pushed in the caller's
 * write transaction.  This file and outbox.c are the only places that know
 * the actions' shape.
 */
#include "matrix_outbox.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "audit.h"
#include "config.h"
#include "cs.h"
#include "guests.h"
#include "erasure.h"
#include "log.h"
#include "outbox.h"
#include "spool.h"
#include "templates.h"
#include "util.h"

/* Queue @p action (taken, even on failure) in @p t. */
static int push(store_txn *t, json_t *action)
{
	if (!action)
		return TH_EINVAL;
	int rc = outbox_push(t, action);
	json_decref(action);
	return rc;
}

static const struct config *cfg_of(void *ctx)
{
	return ((const struct matrix_outbox *)ctx)->cfg;
}

/* The lanes in @p after as an "after" array (new reference). */
static json_t *lanes(const char *const *after, size_t nafter)
{
	json_t *a = json_array();
	for (size_t i = 0; i < nafter; i++)
		json_array_append_new(a, json_string(after[i]));
	return a;
}

static int mo_notice(void *ctx, store_txn *t, const char *room_id, const char *user_id, const char *body,
                     const char *reply_to)
{
	(void)ctx;
	return push(t, outbox_notice(room_id, user_id, body, reply_to));
}

static int mo_notice_after(void *ctx, store_txn *t, const char *room_id, const char *user_id,
                           const char *body, const char *const *after, size_t nafter)
{
	(void)ctx;
	json_t *a = outbox_notice(room_id, user_id, body, NULL);
	json_t *lanes = json_array();
	for (size_t i = 0; i < nafter; i++)
		json_array_append_new(lanes, json_string(after[i]));
	json_object_set_new(a, "after", lanes);
	return push(t, a);
}

static int mo_text(void *ctx, store_txn *t, const char *room_id, const char *user_id, const char *body,
                   const char *local_id)
{
	const struct matrix_outbox *mo = ctx;
	json_t *content =
	        json_pack("{s:s, s:s, s:s}", "msgtype", "m.text", "body", body, MX_LOCAL_ID_KEY, local_id);
	if (!content)
		return TH_EINVAL;
	if (!mo->au)
		return push(t, outbox_message(room_id, user_id, content, NULL));
	/* Sealed under the guest's key until it is sent (outbox.h "sealed_content"). */
	char *plain = json_dumps(content, JSON_COMPACT), *sealed = NULL;
	json_decref(content);
	if (!plain)
		return TH_EINVAL;
	int rc = audit_seal(mo->au, t, user_id, plain, &sealed);
	explicit_bzero(plain, strlen(plain));
	free(plain);
	if (rc)
		return rc;
	json_t *a = outbox_message(room_id, user_id, json_object(), NULL);
	json_object_set_new(a, "sealed_content", json_string(sealed));
	free(sealed);
	return push(t, a);
}

static int mo_send_media(void *ctx, store_txn *t, const struct mx_media *m)
{
	const struct matrix_outbox *mo = ctx;
	int sealed = 0, rc = TH_OK, spooled = 0;
	char check[17] = "";
	size_t stored = 0;
	if (m->data) {
		/* In the spool, not the map (spool.h), sealed under the guest's key
		 * when it can be: gone with the key when the guest is erased. */
		unsigned char *buf = NULL;
		const void *bytes = m->data;
		stored = m->size;
		if (mo->au) {
			rc = audit_seal_bytes(mo->au, t, m->user_id, m->data, m->size, &buf, &stored);
			bytes = buf;
			sealed = 1;
		}
		if (!rc) {
			spool_hash(bytes, stored, check);
			rc = spool_write(mo->cfg, m->blob, bytes, stored);
		}
		if (buf)
			explicit_bzero(buf, stored);
		free(buf);
		spooled = 1;
	}
	if (rc)
		return rc;
	json_t *a = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "op", "send_media", "room_id",
	                      m->room_id, "user_id", m->user_id, "blob", m->blob, "name", m->name, "mimetype",
	                      m->mimetype, "msgtype", m->msgtype, "local_id", m->local_id, "size",
	                      (json_int_t)m->size);
	if (a && sealed)
		json_object_set_new(a, "sealed", json_true());
	if (a && spooled) /* outbox.h "send_media": the file, its length and check */
		json_object_set_new(a, "spool",
		                    json_pack("{s:I, s:s}", "bytes", (json_int_t)stored, "fnv", check));
	return push(t, a);
}

static int mo_qr_image(void *ctx, store_txn *t, const char *room_id, const char *user_id, const char *text,
                       const char *reply_to)
{
	(void)ctx;
	return push(t, json_pack("{s:s, s:s, s:s, s:s, s:s*}", "op", "qr_image", "room_id", room_id,
	                         "user_id", user_id, "text", text, "reply_to", reply_to));
}

static int mo_redact(void *ctx, store_txn *t, const char *room_id, const char *user_id, const char *event_id,
                     const char *reason)
{
	(void)ctx;
	return push(t, json_pack("{s:s, s:s, s:s, s:s, s:s*}", "op", "redact", "room_id", room_id, "user_id",
	                         user_id, "event_id", event_id, "reason", reason));
}

static int mo_join(void *ctx, store_txn *t, const char *room_id, const char *user_id, const char *after)
{
	(void)ctx;
	json_t *a = json_pack("{s:s, s:s, s:s}", "op", "join", "room_id", room_id, "user_id", user_id);
	if (a && after)
		json_object_set_new(a, "after", json_pack("[s]", after));
	return push(t, a);
}

static int mo_leave(void *ctx, store_txn *t, const char *room_id, const char *user_id)
{
	(void)ctx;
	return push(t, json_pack("{s:s, s:s, s:s}", "op", "leave", "room_id", room_id, "user_id", user_id));
}

static int mo_invite(void *ctx, store_txn *t, const char *room_id, const char *user_id, const char *target)
{
	(void)ctx;
	return push(t, json_pack("{s:s, s:s, s:s, s:s}", "op", "invite", "room_id", room_id, "user_id",
	                         user_id, "target", target));
}

static int mo_room_name(void *ctx, store_txn *t, const char *room_id, const char *user_id,
                        const char *displayname)
{
	(void)ctx;
	return push(t, json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:s, s:s}}", "op", "state", "room_id", room_id,
	                         "user_id", user_id, "type", "m.room.member", "state_key", user_id, "content",
	                         "membership", "join", "displayname", displayname));
}

static int mo_displayname(void *ctx, store_txn *t, const char *user_id, const char *displayname,
                          const char *const *after, size_t nafter)
{
	(void)ctx;
	return push(t, json_pack("{s:s, s:s, s:s, s:o}", "op", "displayname", "user_id", user_id,
	                         "displayname", displayname, "after", lanes(after, nafter)));
}

static int mo_deactivate(void *ctx, store_txn *t, const char *user_id, const char *const *after,
                         size_t nafter)
{
	(void)ctx;
	return push(t, json_pack("{s:s, s:s, s:o}", "op", "deactivate", "user_id", user_id, "after",
	                         lanes(after, nafter)));
}

/*
 * The power levels of a guest's conversation room.  The bot holds 100 and
 * alone changes who can get in or read back.  Staff (everyone but the
 * guest: only members of the staff room can join) moderate at
 * rooms.staff_power; the guest writes at @p guest_level: 0, but 100 while
 * the guest makes the room (see mo_conv_room_create).
 */
static json_t *portal_power(const struct config *cfg, const char *guest, int guest_level)
{
	json_t *users = json_pack("{s:i}", guest, guest_level);
	json_t *power = templates_power_levels(cfg, POL_TPL_CONVERSATION, users);
	json_decref(users);
	return power;
}

static int mo_conv_room_create(void *ctx, store_txn *t, const char *guest, const char *pseudonym,
                               const char *service_name, const char *staff_room)
{
	const struct config *cfg = cfg_of(ctx);
	/*
	 * The guest makes its own room (createRoom as the guest), so nobody
	 * ever invites the guest, whose invites the homeserver refuses
	 * (spec v1.18, MSC4380).  createRoom sends the power levels right after
	 * the creator's join and every other initial state event after them, as
	 * the creator (Synapse, handlers/room.py _send_events_for_new_room), and
	 * in room versions up to 11 requires the creator in "users": so the
	 * guest starts at 100, invites the bot (which joins at 100), and lowers
	 * itself to 0 at once (mo_conv_room_handover: a user may lower their own
	 * level; the bot could not lower a peer at 100).  Until then only
	 * Threshold acts in the room as the guest, and staff who join early have
	 * staff_power, below every setting.
	 *
	 * The room version is pinned to 10: from version 12 (MSC4289) a room's
	 * creator has unlimited power for ever and cannot be listed in "users",
	 * so a room the guest created would be the guest's, not the bot's; and
	 * Synapse's default_room_version may become 12.  Restricted joins need 8+.
	 */
	json_t *power = portal_power(cfg, guest, 100);
	/* Join rule restricted to the service's staff room (spec: room versions
	 * 8+), shared history, no guest access: the conversation template
	 * (policy/exposure.c), the same values a revert puts back. */
	json_t *initial = templates_initial_state(POL_TPL_CONVERSATION, staff_room);
	/* Element offers a one-to-one call only in a room of exactly two joined
	 * members who are not "functional": the bot is one (docs/calls.md). */
	json_array_append_new(initial,
	                      json_pack("{s:s, s:s, s:{s:[s]}}", "type", "io.element.functional_members",
	                                "state_key", "", "content", "service_members", cfg->bot_user_id));
	char *name = xasprintf("%s · %s", pseudonym, service_name);
	char *topic =
	        xasprintf("A conversation with a guest of %s. Only staff can join; the guest sees staff "
	                  "by display name. Commands: !threshold help",
	                  service_name);
	json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:s, s:{s:b}, s:o, s:o, s:[s]}", "name", name, "topic",
	                         topic, "preset", "private_chat", "visibility", "private", "room_version",
	                         "10", "creation_content", "m.federate", cfg->rooms_federate,
	                         "power_level_content_override", power, "initial_state", initial, "invite",
	                         cfg->bot_user_id);
	free(name);
	free(topic);
	/* In the guest's lane, after its register and block; "conversation":
	 * the outbox calls the bridge back when the room exists (outbox.h). */
	return push(t, json_pack("{s:s, s:s, s:s, s:o, s:s, s:s}", "op", "create_room", "user_id", guest,
	                         "kind", "portal", "content", body, "conversation", guest, "lane", guest));
}

static int mo_conv_room_handover(void *ctx, store_txn *t, const char *room_id, const char *guest)
{
	return push(t, json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:[s]}", "op", "state", "room_id", room_id,
	                         "user_id", guest, "type", "m.room.power_levels", "state_key", "", "content",
	                         portal_power(cfg_of(ctx), guest, 0), "after", guest));
}

static int mo_guest_enter(void *ctx, store_txn *t, const char *room_id, const char *user_id,
                          const char *guest)
{
	(void)ctx;
	return push(t, json_pack("{s:s, s:s, s:s, s:s, s:[s]}", "op", "guest_enter", "room_id", room_id,
	                         "user_id", user_id, "target", guest, "after", guest));
}

static int mo_guest_create(void *ctx, store_txn *t, audit *au, const char *actor, struct guest *out)
{
	return guests_create(cfg_of(ctx), t, au, actor, out);
}

/* The media fetcher: a Client-Server connection of its own. */
struct mx_fetcher {
	cs_client *cs;
};

static int mo_fetcher_new(void *ctx, struct mx_fetcher **out)
{
	struct mx_fetcher *f = xcalloc(1, sizeof(*f));
	int rc = cs_client_new(cfg_of(ctx), &f->cs);
	if (rc) {
		free(f);
		return rc;
	}
	*out = f;
	return TH_OK;
}

static int mo_fetch(struct mx_fetcher *f, const char *server, const char *media_id, size_t max,
                    int (*cancel)(void *cancel_ctx), void *cancel_ctx, struct mx_download *out)
{
	struct cs_response r;
	unsigned char *buf = NULL;
	size_t len = 0;
	int rc = cs_download(f->cs, server, media_id, max, cancel, cancel_ctx, &r, &buf, &len);
	if (rc)
		return rc;
	out->status = r.status;
	out->retry_after_ms = r.retry_after_ms;
	out->buf = buf;
	out->len = len;
	cs_response_clear(&r);
	return TH_OK;
}

static void mo_fetcher_free(struct mx_fetcher *f)
{
	if (!f)
		return;
	cs_client_free(f->cs);
	free(f);
}

/* The erasure's steps (erasure.h), each marked "erasure": G so that a
 * failure is recorded on the job. */
static int mo_erase(void *ctx, store_txn *t, const struct mx_erasure *e)
{
	const struct config *cfg = cfg_of(ctx);
	const char *g = e->guest;
	int rc = erasure_job_begin(t, g, th_now_ms());
	for (size_t i = 0; !rc && i < e->nevents; i++)
		rc = push(t, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "op", "redact", "room_id",
		                       e->events[2 * i], "user_id", cfg->bot_user_id, "event_id",
		                       e->events[2 * i + 1], "reason", "Deleted at the guest's request",
		                       "erasure", g));
	if (!rc)
		rc = push(t, json_pack("{s:s, s:s, s:s, s:o}", "op", "erase_media", "user_id", g, "erasure",
		                       g, "after", lanes(e->after, e->nafter)));
	if (!rc)
		rc = push(t, json_pack("{s:s, s:s, s:s, s:o}", "op", "deactivate", "user_id", g, "erasure", g,
		                       "after", lanes(e->after, e->nafter)));
	for (size_t i = 0; !rc && i < e->npurge; i++)
		rc = push(t, json_pack("{s:s, s:s, s:s, s:s, s:s}", "op", "purge_room", "room_id",
		                       e->purge[i], "user_id", g, "lane", g, "erasure", g));
	/* A lead's "!audit reveal" of their sealed detail does not outlive them. */
	if (!rc && cfg->safeguarding_room)
		rc = push(t, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "op", "redact_reveals", "room_id",
		                       cfg->safeguarding_room, "user_id", cfg->bot_user_id, "target", g,
		                       "lane", g, "erasure", g));
	if (!rc)
		rc = push(t, json_pack("{s:s, s:s, s:s}", "op", "erasure_done", "user_id", g, "erasure", g));
	return rc;
}

static int mo_erase_state(void *ctx, store_txn *t, const char *guest, enum mx_erase_state *out)
{
	(void)ctx;
	enum erasure_state s;
	int rc = erasure_job_state(t, guest, &s);
	if (rc)
		return rc;
	*out = s == ERASURE_RUNNING      ? MX_ERASE_RUNNING
	       : s == ERASURE_DONE       ? MX_ERASE_DONE
	       : s == ERASURE_INCOMPLETE ? MX_ERASE_INCOMPLETE
	                                 : MX_ERASE_NONE;
	return TH_OK;
}

static int mo_call_event(void *ctx, store_txn *t, const char *room_id, const char *user_id, const char *type,
                         const char *content)
{
	(void)ctx;
	json_t *c = content ? json_loads(content, JSON_REJECT_DUPLICATES, NULL) : NULL;
	if (!json_is_object(c) || !type || strncmp(type, "m.call.", 7) != 0) {
		json_decref(c);
		return TH_EINVAL;
	}
	return push(t, json_pack("{s:s, s:s, s:s, s:s, s:o}", "op", "send", "room_id", room_id, "user_id",
	                         user_id, "type", type, "content", c));
}

static void mo_media_unkeep(void *ctx, const char *blob)
{
	spool_remove(cfg_of(ctx), blob);
}

static void mo_erased(void *ctx, const char *guest)
{
	const struct matrix_outbox *mo = ctx;
	size_t n = 0;
	if (mo->st && outbox_spool_remove_guest(mo->st, mo->cfg, guest, &n) == TH_OK && n)
		LOG(LOG_INFO, "outbox: an erased guest's %zu file(s) waiting to upload removed", n);
}

static const struct mx_ops outbox_ops = {
        .notice = mo_notice,
        .notice_after = mo_notice_after,
        .text = mo_text,
        .send_media = mo_send_media,
        .qr_image = mo_qr_image,
        .redact = mo_redact,
        .join = mo_join,
        .leave = mo_leave,
        .invite = mo_invite,
        .room_name = mo_room_name,
        .displayname = mo_displayname,
        .deactivate = mo_deactivate,
        .conv_room_create = mo_conv_room_create,
        .conv_room_handover = mo_conv_room_handover,
        .guest_enter = mo_guest_enter,
        .guest_create = mo_guest_create,
        .fetcher_new = mo_fetcher_new,
        .fetch = mo_fetch,
        .fetcher_free = mo_fetcher_free,
        .erase = mo_erase,
        .erase_state = mo_erase_state,
        .call_event = mo_call_event,
        .media_unkeep = mo_media_unkeep,
        .erased = mo_erased,
};

void matrix_outbox_init(struct matrix_outbox *mo, const struct config *cfg)
{
	mo->cfg = cfg;
	mo->au = NULL; /* the caller sets it to seal guests' words */
	mo->st = NULL; /* the caller sets it to remove an erased guest's files */
	mo->mx.ops = &outbox_ops;
	mo->mx.ctx = mo;
}
