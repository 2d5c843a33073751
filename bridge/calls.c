/*
 * calls.c - a guest's calls with staff (calls.h): signals both ways, the
 * call's state and its audit records.
 */
#include "calls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv.h"
#include "feed.h"
#include "jsonx.h"
#include "log.h"
#include "matrix.h"
#include "sdp.h"
#include "util.h"
#include "visibility.h"

#define MAX_ID     255  /* call_id, party_id */
#define MAX_REASON 64   /* a hangup or reject reason */
#define MAX_CANDS  64   /* candidates in one m.call.candidates */
#define MAX_META   4096 /* bytes of sdp_stream_metadata */

/* The signals Threshold carries (spec: VoIP module, MSC2746). */
static const char *const types[] = {
        "m.call.invite", "m.call.candidates", "m.call.answer", "m.call.select_answer",
        "m.call.reject", "m.call.negotiate",  "m.call.hangup",
};

static int known_type(const char *type)
{
	for (size_t i = 0; type && i < sizeof(types) / sizeof(types[0]); i++) {
		if (strcmp(type, types[i]) == 0)
			return 1;
	}
	return 0;
}

/* A printable string of 1..@p max bytes, or NULL. */
static const char *short_str(const json_t *o, const char *key, size_t max)
{
	const char *s = jsonx_str(o, key);
	size_t n = s ? strlen(s) : 0;
	if (!n || n > max)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return NULL;
	}
	return s;
}

/* {"type":T, "sdp":S} with S filtered, into @p out under @p key; @return TH_OK or TH_EINVAL. */
static int copy_description(json_t *out, const json_t *in, const char *key, const char *want_type)
{
	const json_t *d = json_object_get(in, key);
	const char *type = jsonx_str(d, "type"), *sdp = jsonx_str(d, "sdp");
	if (!json_is_object(d) || !type || !sdp || (want_type && strcmp(type, want_type) != 0) ||
	    (strcmp(type, "offer") != 0 && strcmp(type, "answer") != 0))
		return TH_EINVAL;
	char *clean = NULL;
	if (sdp_filter(sdp, strlen(sdp), &clean, NULL) != TH_OK)
		return TH_EINVAL;
	json_object_set_new(out, key, json_pack("{s:s, s:s}", "type", type, "sdp", clean));
	free(clean);
	return TH_OK;
}

/* The relay candidates of @p in, cleaned, into @p out; TH_ENOTFOUND when none is left. */
static int copy_candidates(json_t *out, const json_t *in)
{
	const json_t *cands = json_object_get(in, "candidates");
	if (!json_is_array(cands) || json_array_size(cands) == 0 || json_array_size(cands) > MAX_CANDS)
		return TH_EINVAL;
	json_t *kept = json_array();
	size_t i;
	const json_t *c;
	json_array_foreach(cands, i, c)
	{
		const char *text = jsonx_str(c, "candidate");
		if (!json_is_object(c) || !text)
			continue;
		json_t *k = json_object();
		if (!*text) { /* end of candidates (spec: an empty candidate) */
			json_object_set_new(k, "candidate", json_string(""));
		} else {
			char *clean = NULL;
			if (sdp_candidate_filter(text, strlen(text), &clean) != TH_OK) {
				json_decref(k);
				continue;
			}
			json_object_set_new(k, "candidate", json_string(clean));
			free(clean);
		}
		const char *mid = short_str(c, "sdpMid", 32);
		const json_t *idx = json_object_get(c, "sdpMLineIndex");
		if (mid)
			json_object_set_new(k, "sdpMid", json_string(mid));
		if (json_is_integer(idx) && json_integer_value(idx) >= 0 && json_integer_value(idx) < 64)
			json_object_set_new(k, "sdpMLineIndex", json_integer(json_integer_value(idx)));
		json_array_append_new(kept, k);
	}
	if (json_array_size(kept) == 0) {
		json_decref(kept);
		return TH_ENOTFOUND;
	}
	json_object_set_new(out, "candidates", kept);
	return TH_OK;
}

int calls_content_filter(const char *type, const json_t *in, json_t **out)
{
	*out = NULL;
	if (!known_type(type) || !json_is_object(in))
		return TH_EINVAL;
	const char *call_id = short_str(in, "call_id", MAX_ID), *party = short_str(in, "party_id", MAX_ID);
	const json_t *version = json_object_get(in, "version");
	if (!call_id)
		return TH_EINVAL;
	json_t *o = json_pack("{s:s}", "call_id", call_id);
	if (party)
		json_object_set_new(o, "party_id", json_string(party));
	/* version "1" (MSC2746); a v0 client's integer 0 passes as it is */
	if (json_is_string(version) && strcmp(json_string_value(version), "1") == 0)
		json_object_set_new(o, "version", json_string("1"));
	else if (json_is_integer(version) && json_integer_value(version) == 0)
		json_object_set_new(o, "version", json_integer(0));
	else {
		json_decref(o);
		return TH_EINVAL;
	}
	int rc = TH_OK;
	const char *reason = short_str(in, "reason", MAX_REASON);
	if (strcmp(type, "m.call.invite") == 0) {
		const json_t *life = json_object_get(in, "lifetime");
		json_int_t ms = json_is_integer(life) ? json_integer_value(life) : 0;
		if (ms <= 0 || ms > CALLS_MAX_LIFETIME_MS)
			rc = TH_EINVAL;
		else {
			json_object_set_new(o, "lifetime", json_integer(ms));
			rc = copy_description(o, in, "offer", "offer");
		}
	} else if (strcmp(type, "m.call.answer") == 0) {
		rc = copy_description(o, in, "answer", "answer");
	} else if (strcmp(type, "m.call.negotiate") == 0) {
		const json_t *life = json_object_get(in, "lifetime");
		if (json_is_integer(life) && json_integer_value(life) > 0 &&
		    json_integer_value(life) <= CALLS_MAX_LIFETIME_MS)
			json_object_set_new(o, "lifetime", json_integer(json_integer_value(life)));
		rc = copy_description(o, in, "description", NULL);
	} else if (strcmp(type, "m.call.candidates") == 0) {
		rc = copy_candidates(o, in);
	} else if (strcmp(type, "m.call.select_answer") == 0) {
		const char *sel = short_str(in, "selected_party_id", MAX_ID);
		if (sel)
			json_object_set_new(o, "selected_party_id", json_string(sel));
		else
			rc = TH_EINVAL;
	} else if (reason) { /* hangup, reject */
		json_object_set_new(o, "reason", json_string(reason));
	}
	/* Which stream is the camera and which the microphone, muted or not
	 * (MSC3077: matrix-js-sdk needs it); never an address. */
	const json_t *meta = json_object_get(in, "org.matrix.msc3077.sdp_stream_metadata");
	if (!rc && json_is_object(meta)) {
		char *m = json_dumps(meta, JSON_COMPACT);
		if (m && strlen(m) <= MAX_META)
			json_object_set_new(o, "org.matrix.msc3077.sdp_stream_metadata",
			                    json_deep_copy(meta));
		free(m);
	}
	if (rc) {
		json_decref(o);
		return rc;
	}
	*out = o;
	return TH_OK;
}

/* 1 if SDP of @p content (offer, answer or description) has a video m-line. */
static int has_video(const json_t *content)
{
	static const char *const keys[] = {"offer", "answer", "description"};
	for (size_t i = 0; i < 3; i++) {
		const char *sdp = jsonx_str(json_object_get(content, keys[i]), "sdp");
		if (sdp && (strncmp(sdp, "m=video", 7) == 0 || strstr(sdp, "\nm=video")))
			return 1;
	}
	return 0;
}

/* The reason code recorded for a hangup or reject: a word of the spec, or "other". */
static const char *reason_code(const json_t *content)
{
	static const char *const known[] = {"ice_failed",        "invite_timeout",    "user_hangup",
	                                    "user_media_failed", "user_busy",         "unknown_error",
	                                    "ice_timeout",       "answered_elsewhere"};
	const char *r = jsonx_str(content, "reason");
	for (size_t i = 0; r && i < sizeof(known) / sizeof(known[0]); i++) {
		if (strcmp(r, known[i]) == 0)
			return known[i];
	}
	return r ? "other" : NULL;
}

/*
 * Move @p guest's call (in conversation record @p c) on by signal @p type,
 * sent by @p actor (@p by: "guest" or "staff"), and write its audit record.
 * @p changed is set when @p c must be written back.
 */
static int call_track(const struct txn_env *env, struct store_txn *t, json_t *c, const char *guest,
                      const char *room_id, const char *actor, const char *by, const char *type,
                      const json_t *content, int *changed)
{
	const char *call_id = jsonx_str(content, "call_id");
	json_t *call = json_object_get(c, "call");
	int same = json_is_object(call) && call_id && jsonx_str(call, "id") &&
	           strcmp(jsonx_str(call, "id"), call_id) == 0;
	uint64_t now = th_now_ms();
	int rc = TH_OK;
	json_t *details = NULL;
	if (strcmp(type, "m.call.invite") == 0 && !same) {
		int video = has_video(content);
		json_object_set_new(
		        c, "call",
		        json_pack("{s:s, s:s, s:I}", "id", call_id, "by", by, "offered_ms", (json_int_t)now));
		*changed = 1;
		details = json_pack("{s:s, s:b}", "by", by, "video", video);
		rc = conv_call_record(env, t, CONV_CALL_OFFERED, actor, guest, room_id, NULL, details);
	} else if (strcmp(type, "m.call.answer") == 0 && same && !json_object_get(call, "answered_ms")) {
		json_object_set_new(call, "answered_ms", json_integer((json_int_t)now));
		*changed = 1;
		details = json_pack("{s:s, s:b}", "by", by, "video", has_video(content));
		rc = conv_call_record(env, t, CONV_CALL_ANSWERED, actor, guest, room_id, NULL, details);
	} else if ((strcmp(type, "m.call.reject") == 0 || strcmp(type, "m.call.hangup") == 0) && same) {
		json_t *answered = json_object_get(call, "answered_ms");
		uint64_t from = (uint64_t)json_integer_value(answered ? answered
		                                                      : json_object_get(call, "offered_ms"));
		uint64_t secs = now > from ? (now - from) / 1000 : 0;
		/* declined: the one rung said no (a reject, or a hangup before answering by the one rung) */
		int declined =
		        !answered && (strcmp(type, "m.call.reject") == 0 ||
		                      strcmp(jsonx_str(call, "by") ? jsonx_str(call, "by") : "", by) != 0);
		if (declined) {
			details = json_pack("{s:s}", "by", by);
			rc = conv_call_record(env, t, CONV_CALL_DECLINED, actor, guest, room_id,
			                      reason_code(content), details);
		} else {
			details = json_pack("{s:s, s:b, s:I}", "by", by, "answered", answered != NULL,
			                    "duration_s", (json_int_t)(answered ? secs : 0));
			if (!answered)
				json_object_set_new(details, "rang_s", json_integer((json_int_t)secs));
			rc = conv_call_record(env, t, CONV_CALL_ENDED, actor, guest, room_id,
			                      reason_code(content), details);
		}
		json_object_del(c, "call");
		*changed = 1;
	}
	json_decref(details);
	return rc;
}

static enum calls_result result_of(enum pol_reason r)
{
	switch (r) {
	case POL_R_GUEST_CALL_ALLOWED:
		return CALLS_SENT;
	case POL_R_GUEST_NOT_READY:
		return CALLS_NOT_READY;
	case POL_R_GUEST_CONV_CLOSED:
	case POL_R_GUEST_NO_CONVERSATION:
		return CALLS_CLOSED;
	default:
		return CALLS_REFUSED;
	}
}

/* Ask policy in @p t; on CALLS_SENT @p conv holds the record (new reference). */
static int guest_check(const struct txn_env *env, struct store_txn *t, const char *guest, json_t **conv,
                       enum calls_result *result)
{
	enum pol_reason reason = POL_R_NO_RULE;
	int rc = conv_call_check(env, t, guest, conv, &reason);
	*result = rc ? CALLS_REFUSED : result_of(reason);
	return rc;
}

int calls_guest_signal(const struct txn_env *env, const char *guest, const char *type, const json_t *content,
                       enum calls_result *result)
{
	json_t *clean = NULL, *c = NULL;
	*result = CALLS_BAD_SIGNAL;
	int frc = calls_content_filter(type, content, &clean);
	if (frc == TH_ENOTFOUND)
		*result = CALLS_NOTHING;
	if (frc)
		return TH_OK;
	store_txn *t;
	int rc = store_txn_begin(env->st, 1, &t);
	if (rc)
		goto out;
	if ((rc = guest_check(env, t, guest, &c, result)) || *result != CALLS_SENT) {
		if (rc) /* else a refusal's record, if policy asked for one, is kept */
			store_txn_abort(t);
		else
			rc = store_txn_commit(t);
		goto out;
	}
	const char *room_id = jsonx_str(c, "room");
	int changed = 0;
	json_t *last = json_object_get(c, "call");
	uint64_t last_ms = (uint64_t)json_integer_value(json_object_get(last, "offered_ms")),
	         now = th_now_ms();
	if (strcmp(type, "m.call.invite") == 0 && json_is_object(last) && now >= last_ms &&
	    now - last_ms < CALLS_MIN_GAP_MS) {
		*result = CALLS_TOO_SOON;
		store_txn_abort(t);
		goto out;
	}
	char *text = json_dumps(clean, JSON_COMPACT);
	rc = text ? env->mx->ops->call_event(env->mx->ctx, t, room_id, guest, type, text) : TH_EINVAL;
	free(text);
	if (!rc)
		rc = call_track(env, t, c, guest, room_id, guest, "guest", type, clean, &changed);
	if (!rc && changed)
		rc = conv_call_put(t, guest, c);
	if (rc)
		store_txn_abort(t);
	else
		rc = store_txn_commit(t);
out:
	json_decref(c);
	json_decref(clean);
	return rc;
}

int calls_guest_may(const struct txn_env *env, const char *guest, enum calls_result *result)
{
	json_t *c = NULL;
	store_txn *t;
	int rc = store_txn_begin(env->st, 1, &t);
	if (rc)
		return rc;
	rc = guest_check(env, t, guest, &c, result);
	json_decref(c);
	if (rc) {
		store_txn_abort(t);
		return rc;
	}
	return store_txn_commit(t);
}

int calls_guest_ask(const struct txn_env *env, const char *guest, enum calls_result *result)
{
	json_t *c = NULL;
	store_txn *t;
	int rc = store_txn_begin(env->st, 1, &t);
	if (rc)
		return rc;
	if ((rc = guest_check(env, t, guest, &c, result)) || *result != CALLS_SENT) {
		json_decref(c);
		if (rc) {
			store_txn_abort(t);
			return rc;
		}
		return store_txn_commit(t);
	}
	char local_id[40];
	char hex[17];
	rc = th_random_hex(hex, 8);
	if (!rc) {
		snprintf(local_id, sizeof(local_id), "call-ask-%s", hex);
		rc = env->mx->ops->text(
		        env->mx->ctx, t, jsonx_str(c, "room"), guest,
		        "\xf0\x9f\x93\x9e I would like to talk on a call. Please call me with "
		        "this room's call button.",
		        local_id);
	}
	json_decref(c);
	if (rc) {
		store_txn_abort(t);
		return rc;
	}
	return store_txn_commit(t);
}

int calls_on_event(const struct txn_env *env, struct store_txn *t, const char *guest, const char *type,
                   const char *room_id, const char *sender, enum pol_role role, const json_t *content,
                   unsigned *fed)
{
	json_t *c = conv_call_get(t, guest);
	const char *conv_room = jsonx_str(c, "room"), *state = jsonx_str(c, "state");
	struct pol_view_facts f = {.sender = role, .kind = POL_VIEW_CALL};
	f.call_open = conv_room && state && strcmp(conv_room, room_id) == 0 && strcmp(state, CONV_OPEN) == 0;
	struct pol_view v;
	pol_visibility_decide(&f, &v);
	json_t *clean = NULL;
	int rc = TH_OK;
	if (v.action != POL_VIEW_SIGNAL || calls_content_filter(type, content, &clean) != TH_OK)
		goto out;
	/* The guest's own page learns nothing of who is ringing but "staff". */
	json_t *sig = json_pack("{s:s, s:O}", "type", type, "content", clean);
	struct feed_entry e = {.kind = "call", .role = "staff", .name = "", .call = sig};
	rc = feed_append(t, guest, &e, NULL);
	json_decref(sig);
	int changed = 0;
	if (!rc) {
		(*fed)++;
		rc = call_track(env, t, c, guest, room_id, sender, "staff", type, clean, &changed);
	}
	if (!rc && changed)
		rc = conv_call_put(t, guest, c);
out:
	json_decref(clean);
	json_decref(c);
	return rc;
}
