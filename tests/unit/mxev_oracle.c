/* mxev_oracle.c - mxev_parse against jansson on the same bytes. */
#include "mxev_oracle.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "util.h"

struct ctx {
	char *why;
	size_t whylen;
};

static int differ(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int differ(struct ctx *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->why, c->whylen, fmt, ap);
	va_end(ap);
	return -1;
}

/* Nesting of objects and arrays; jansson bounds the recursion at 2048. */
static unsigned tree_depth(json_t *j)
{
	unsigned d = 0, sub;
	if (json_is_object(j)) {
		const char *k;
		json_t *v;
		json_object_foreach(j, k, v)
		{
			if ((sub = tree_depth(v)) > d)
				d = sub;
		}
		return d + 1;
	}
	if (json_is_array(j)) {
		size_t i;
		json_t *v;
		json_array_foreach(j, i, v)
		{
			if ((sub = tree_depth(v)) > d)
				d = sub;
		}
		return d + 1;
	}
	return 0;
}

/* What mxev must report for member @p key of @p obj: the string, or NULL if
 * absent, not a string, or holding NUL. */
static const char *want_str(const json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);
	if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
		return NULL;
	return json_string_value(v);
}

static int same_str(struct ctx *c, size_t i, const char *name, const char *got, const char *want)
{
	if (!got != !want || (got && strcmp(got, want) != 0))
		return differ(c, "event %zu: %s: mxev \"%s\", jansson \"%s\"", i, name, got ? got : "(null)",
		              want ? want : "(null)");
	return 0;
}

static int is_ws(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* The slice must hold exactly one JSON value equal to @p want. */
static int same_slice(struct ctx *c, size_t i, const char *name, struct mxev_slice s, json_t *want)
{
	if (!s.ptr || s.len == 0)
		return differ(c, "event %zu: %s: no slice", i, name);
	if (is_ws(s.ptr[0]) || is_ws(s.ptr[s.len - 1]))
		return differ(c, "event %zu: %s: slice has surrounding whitespace", i, name);
	json_t *j = json_loadb(s.ptr, s.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	int eq = j && json_equal(j, want);
	json_decref(j);
	if (!eq)
		return differ(c, "event %zu: %s: slice \"%.*s\" is not jansson's value", i, name,
		              (int)(s.len > 200 ? 200 : s.len), s.ptr);
	return 0;
}

static int same_event(struct ctx *c, size_t i, const struct mxev *ev, json_t *e)
{
	if (ev->is_object != json_is_object(e))
		return differ(c, "event %zu: is_object %d", i, ev->is_object);
	if (same_slice(c, i, "json", ev->json, e))
		return -1;
	if (same_str(c, i, "event_id", ev->event_id, want_str(e, "event_id")) ||
	    same_str(c, i, "room_id", ev->room_id, want_str(e, "room_id")) ||
	    same_str(c, i, "type", ev->type, want_str(e, "type")) ||
	    same_str(c, i, "sender", ev->sender, want_str(e, "sender")) ||
	    same_str(c, i, "state_key", ev->state_key, want_str(e, "state_key")))
		return -1;
	json_t *content = json_object_get(e, "content");
	if (!content) {
		if (ev->content.ptr || ev->content_is_object)
			return differ(c, "event %zu: content found where jansson has none", i);
	} else {
		if (ev->content_is_object != json_is_object(content))
			return differ(c, "event %zu: content_is_object %d", i, ev->content_is_object);
		if (same_slice(c, i, "content", ev->content, content))
			return -1;
		json_t *cj = NULL;
		if (mxev_content_json(ev, &cj) != TH_OK)
			return differ(c, "event %zu: mxev_content_json failed", i);
		int eq = json_equal(cj, content);
		json_decref(cj);
		if (!eq)
			return differ(c, "event %zu: mxev_content_json differs", i);
	}
	json_t *obj = json_is_object(content) ? content : NULL;
	if (same_str(c, i, "membership", ev->membership, want_str(obj, "membership")) ||
	    same_str(c, i, "body", ev->body, want_str(obj, "body")) ||
	    same_str(c, i, "msgtype", ev->msgtype, want_str(obj, "msgtype")))
		return -1;
	if (ev->is_direct != json_is_true(json_object_get(obj, "is_direct")))
		return differ(c, "event %zu: is_direct %d", i, ev->is_direct);
	return 0;
}

int mxev_oracle_check(const char *buf, size_t len, unsigned max_depth, enum mxev_status *status, char *why,
                      size_t whylen)
{
	struct ctx c = {why, whylen};
	struct mxev_batch b = {0};
	struct mxev_error err;
	enum mxev_status st = mxev_parse(&b, buf, len, max_depth, &err);
	if (status)
		*status = st;
	why[0] = '\0';
	int rc = 0;
	json_t *root = NULL;

	if (st != MXEV_OK && (b.n || b.events || b.arena)) {
		rc = differ(&c, "refused (%s) but the batch is not empty", mxev_strerror(st));
		goto out;
	}
	if (st != MXEV_OK && err.offset > len) {
		rc = differ(&c, "error offset %zu past the end", err.offset);
		goto out;
	}
	if (memchr(buf, '\0', len)) {
		if (st != MXEV_NOT_JSON && st != MXEV_TOO_DEEP)
			rc = differ(&c, "a raw NUL byte, yet %s", mxev_strerror(st));
		goto out;
	}
	json_error_t jerr;
	root = json_loadb(buf, len, JSON_ALLOW_NUL, &jerr);
	if (!root) {
		if (st != MXEV_NOT_JSON && st != MXEV_TOO_DEEP)
			rc = differ(&c, "jansson refuses (%s), mxev says %s", jerr.text, mxev_strerror(st));
		goto out;
	}
	unsigned cap = max_depth > MXEV_DEPTH_LIMIT ? MXEV_DEPTH_LIMIT : max_depth;
	enum mxev_status want;
	json_t *events = json_object_get(root, "events");
	if (tree_depth(root) > cap)
		want = MXEV_TOO_DEEP;
	else if (!json_is_object(root))
		want = MXEV_NOT_OBJECT;
	else if (events && !json_is_array(events))
		want = MXEV_EVENTS_NOT_ARRAY;
	else
		want = MXEV_OK;
	if (st != want) {
		rc = differ(&c, "mxev says %s (at %zu: %s), jansson's tree says %s", mxev_strerror(st),
		            st ? err.offset : 0, st ? err.text : "", mxev_strerror(want));
		goto out;
	}
	if (st != MXEV_OK)
		goto out;
	if (b.n != json_array_size(events)) {
		rc = differ(&c, "%zu events, jansson %zu", b.n, json_array_size(events));
		goto out;
	}
	for (size_t i = 0; i < b.n && rc == 0; i++)
		rc = same_event(&c, i, &b.events[i], json_array_get(events, i));
out:
	json_decref(root);
	mxev_batch_free(&b);
	return rc;
}
