/*
 * erasure.c - the bookkeeping of a guest's erasure job (erasure.h): its
 * state in STORE_META, its failures on the audit record and in the
 * safeguarding room.  The steps are outbox actions (outbox.c).
 */
#include "erasure.h"

#include <string.h>

#include "audit.h"
#include "config.h"
#include "jsonx.h"
#include "log.h"
#include "outbox.h"
#include "util.h"

#define KEY_PREFIX "erasure:"
#define KEY_MAX    512

static const char *const state_names[] = {
        [ERASURE_NONE] = "none",
        [ERASURE_RUNNING] = "running",
        [ERASURE_DONE] = "done",
        [ERASURE_INCOMPLETE] = "incomplete",
};

const char *erasure_state_name(enum erasure_state s)
{
	return (unsigned)s < sizeof(state_names) / sizeof(state_names[0]) ? state_names[s] : "none";
}

static int job_key(const char *guest, char key[KEY_MAX])
{
	if (!guest || !*guest || strlen(guest) + sizeof(KEY_PREFIX) > KEY_MAX)
		return TH_EINVAL;
	snprintf(key, KEY_MAX, KEY_PREFIX "%s", guest);
	return TH_OK;
}

/* The job of @p guest (new reference), or NULL with TH_ENOTFOUND. */
static int job_get(store_txn *t, const char *guest, json_t **out)
{
	char key[KEY_MAX];
	int rc = job_key(guest, key);
	if (rc)
		return rc;
	rc = store_get_json(t, STORE_META, key, out);
	if (rc == TH_OK && !json_is_object(*out)) {
		json_decref(*out);
		return TH_ESTORE;
	}
	return rc;
}

static int job_put(store_txn *t, const char *guest, const json_t *job)
{
	char key[KEY_MAX];
	int rc = job_key(guest, key);
	return rc ? rc : store_put_json(t, STORE_META, key, job);
}

int erasure_job_begin(store_txn *t, const char *guest, uint64_t now_ms)
{
	json_t *job = json_pack("{s:s, s:I, s:[], s:[]}", "state", "running", "started_ms",
	                        (json_int_t)now_ms, "failed", "skipped");
	int rc = job_put(t, guest, job);
	json_decref(job);
	return rc;
}

int erasure_job_state(store_txn *t, const char *guest, enum erasure_state *out)
{
	json_t *job = NULL;
	int rc = job_get(t, guest, &job);
	if (rc == TH_ENOTFOUND || rc == TH_EINVAL) {
		*out = ERASURE_NONE;
		return TH_OK;
	}
	if (rc)
		return rc;
	const char *s = jsonx_str(job, "state");
	*out = !s                             ? ERASURE_NONE
	       : strcmp(s, "running") == 0    ? ERASURE_RUNNING
	       : strcmp(s, "done") == 0       ? ERASURE_DONE
	       : strcmp(s, "incomplete") == 0 ? ERASURE_INCOMPLETE
	                                      : ERASURE_NONE;
	json_decref(job);
	return TH_OK;
}

/* Queue @p text as the bot's notice in the safeguarding room, if there is one. */
static int alert(const struct config *cfg, store_txn *t, const char *text)
{
	if (!cfg->safeguarding_room)
		return TH_OK;
	json_t *n = outbox_notice(cfg->safeguarding_room, cfg->bot_user_id, text, NULL);
	json_object_set_new(n, "alert", json_true());
	int rc = outbox_push(t, n);
	json_decref(n);
	return rc == TH_EINVAL ? TH_OK : rc; /* an alert that cannot be queued must not block the job */
}

/* A step's name as the record and the alert give it. */
static const char *step_of(const json_t *action)
{
	const char *op = jsonx_str(action, "op");
	if (!op)
		return "unknown";
	if (strcmp(op, "redact") == 0)
		return "redact";
	if (strcmp(op, "erase_media") == 0)
		return "media";
	if (strcmp(op, "deactivate") == 0)
		return "deactivate";
	if (strcmp(op, "purge_room") == 0)
		return "purge_room";
	if (strcmp(op, "redact_reveals") == 0)
		return "redact_reveals";
	return op;
}

static const char *step_words(const char *step)
{
	if (strcmp(step, "redact") == 0)
		return "redact one of their messages";
	if (strcmp(step, "media") == 0)
		return "delete their files from the homeserver's media store";
	if (strcmp(step, "deactivate") == 0)
		return "deactivate and erase their homeserver account";
	if (strcmp(step, "purge_room") == 0)
		return "delete and purge their conversation room on the homeserver";
	if (strcmp(step, "redact_reveals") == 0)
		return "redact the reveals of their sealed detail in the safeguarding room";
	return "carry out a step";
}

int erasure_step_failed(struct audit *au, const struct config *cfg, store_txn *t, const json_t *action,
                        const char *why)
{
	const char *guest = jsonx_str(action, "erasure");
	const char *room = jsonx_str(action, "room_id");
	const char *step = step_of(action);
	if (!guest)
		return TH_OK;
	json_t *job = NULL;
	int rc = job_get(t, guest, &job);
	if (rc == TH_ENOTFOUND) {
		job = json_pack("{s:s, s:I, s:[], s:[]}", "state", "running", "started_ms",
		                (json_int_t)th_now_ms(), "failed", "skipped");
		rc = TH_OK;
	}
	if (rc)
		return rc;
	json_t *failed = json_object_get(job, "failed");
	if (!json_is_array(failed)) {
		failed = json_array();
		json_object_set_new(job, "failed", failed);
	}
	if (json_array_size(failed) < 64) /* enough to act on; the audit log has every one */
		json_array_append_new(failed,
		                      json_pack("{s:s, s:s, s:s*}", "step", step, "why", why, "room", room));
	rc = job_put(t, guest, job);
	json_decref(job);
	uint64_t seq = 0;
	if (!rc && au) {
		json_t *details = json_pack("{s:s, s:s, s:s*}", "step", step, "refused", why, "event_id",
		                            jsonx_str(action, "event_id"));
		struct audit_rec rec = {.kind = AUDIT_ERASURE_STEP_FAILED,
		                        .actor = jsonx_str(action, "user_id"),
		                        .subject = guest,
		                        .room = room,
		                        .reason = "erasure",
		                        .details = details};
		rc = audit_append(au, t, &rec, &seq);
		json_decref(details);
	}
	LOG(LOG_ERROR, "erasure: step %s for %s%s%s failed: %s", step, guest, room ? " in " : "",
	    room ? room : "", why);
	if (!rc) {
		char *text =
		        xasprintf("Threshold could NOT %s for erased guest %s%s%s (%s). The guest's page "
		                  "will not say their data is deleted. Check it now. Audit record #%llu.",
		                  step_words(step), guest, room ? " in room " : "", room ? room : "", why,
		                  (unsigned long long)seq);
		rc = alert(cfg, t, text);
		free(text);
	}
	return rc;
}

int erasure_step_skipped(store_txn *t, const char *guest, const char *step)
{
	json_t *job = NULL;
	int rc = job_get(t, guest, &job);
	if (rc)
		return rc == TH_ENOTFOUND ? TH_OK : rc;
	json_t *skipped = json_object_get(job, "skipped");
	if (!json_is_array(skipped)) {
		skipped = json_array();
		json_object_set_new(job, "skipped", skipped);
	}
	size_t i;
	json_t *v;
	int known = 0;
	json_array_foreach(skipped, i, v) known |=
	        strcmp(json_string_value(v) ? json_string_value(v) : "", step) == 0;
	if (!known)
		json_array_append_new(skipped, json_string(step));
	rc = job_put(t, guest, job);
	json_decref(job);
	return rc;
}

int erasure_job_finish(struct audit *au, const struct config *cfg, store_txn *t, const char *guest)
{
	json_t *job = NULL;
	int rc = job_get(t, guest, &job);
	if (rc)
		return rc == TH_ENOTFOUND ? TH_OK : rc;
	json_t *failed = json_object_get(job, "failed"), *skipped = json_object_get(job, "skipped");
	size_t nfailed = json_array_size(failed), nskipped = json_array_size(skipped);
	int clean = !nfailed && !nskipped;
	json_object_set_new(job, "state", json_string(clean ? "done" : "incomplete"));
	json_object_set_new(job, "finished_ms", json_integer((json_int_t)th_now_ms()));
	rc = job_put(t, guest, job);
	uint64_t seq = 0;
	if (!rc && au) {
		json_t *steps = json_array();
		size_t i;
		json_t *f;
		json_array_foreach(failed, i, f)
		        json_array_append_new(steps, json_string(jsonx_str(f, "step")));
		json_t *details =
		        json_pack("{s:s, s:o, s:O}", "state", clean ? "done" : "incomplete", "failed", steps,
		                  "skipped", json_is_array(skipped) ? skipped : json_null());
		struct audit_rec rec = {.kind = AUDIT_ERASURE_DONE,
		                        .actor = "threshold",
		                        .subject = guest,
		                        .reason = clean ? "erasure_done" : "erasure_incomplete",
		                        .details = details};
		rc = audit_append(au, t, &rec, &seq);
		json_decref(details);
	}
	LOG(clean ? LOG_INFO : LOG_WARN, "erasure: %s %s (%zu step(s) failed, %zu not possible)", guest,
	    clean ? "done" : "incomplete", nfailed, nskipped);
	if (!rc && nskipped) {
		char *text = xasprintf(
		        "Erasure of guest %s finished without the steps that need a homeserver admin token "
		        "(homeserver.admin_token_file is not set): their files may still be in the "
		        "homeserver's "
		        "media store and their conversation room was not purged, so the redacted words stay "
		        "in "
		        "the homeserver's database until its redaction_retention_period. An admin must "
		        "delete "
		        "them (docs/homeserver-hardening.md). Audit record #%llu.",
		        guest, (unsigned long long)seq);
		rc = alert(cfg, t, text);
		free(text);
	}
	json_decref(job);
	return rc;
}
