/*
 * mxevent.h - the hot path's JSON reader: one pass over a transaction body
 * (spec: AS API, PUT /_matrix/app/v1/transactions/{txnId}) that validates it
 * as strict JSON and pulls out of each event only what Threshold decides on.
 * No tree is built and nothing recurses; the nesting depth is capped while
 * scanning.  Anything else in an event is parsed on demand with jansson from
 * the event's byte slice.
 *
 * Acceptance matches jansson 2.14's json_loadb(buf, len, JSON_ALLOW_NUL)
 * followed by "is it an object", with these deliberate differences:
 *  - "\u0000" inside a string value is accepted (jansson without
 *    JSON_ALLOW_NUL refuses the whole text): one odd event must not block
 *    the transaction stream.  A field whose value contains it reads as NULL.
 *    "\u0000" in an object key is refused, as jansson always does.
 *  - A raw NUL byte is refused everywhere; jansson silently skips one that
 *    directly follows a number or true/false/null.
 *  - Nesting is capped at max_depth containers (at most MXEV_DEPTH_LIMIT);
 *    jansson's own cap is 2048 values.
 * Like jansson (flags 0): only an object or array at the top level, numbers
 * that overflow a long long (no fraction or exponent) or a double are refused,
 * and a repeated key takes its last value.
 */
#ifndef THRESHOLD_MXEVENT_H
#define THRESHOLD_MXEVENT_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

/** The deepest nesting mxev_parse accepts, whatever max_depth asks. */
#define MXEV_DEPTH_LIMIT 2047

/** Why mxev_parse refused a body. */
enum mxev_status {
	MXEV_OK = 0,
	MXEV_NOT_JSON,         /* not JSON text (or not UTF-8) */
	MXEV_TOO_DEEP,         /* more than max_depth nested objects/arrays */
	MXEV_NOT_OBJECT,       /* valid JSON, but the top level is not an object */
	MXEV_EVENTS_NOT_ARRAY, /* an "events" member that is not an array */
};

/** Bytes inside the caller's body (borrowed; not NUL-terminated). */
struct mxev_slice {
	const char *ptr; /* NULL when absent */
	size_t len;
};

/**
 * One element of the body's "events" array.  Every string is unescaped,
 * NUL-terminated and owned by the batch; it is NULL when the member is
 * absent, not a string, or contains "\u0000".  Members are read only when
 * the element is an object, and content's only when content is an object.
 */
struct mxev {
	struct mxev_slice json; /* the whole element, as sent */
	bool is_object;
	const char *event_id, *room_id, *type, *sender, *state_key;
	struct mxev_slice content; /* the "content" member's value, any type */
	bool content_is_object;
	const char *membership, *body, *msgtype; /* members of content */
	bool is_direct;                          /* content.is_direct is true */
};

struct mxev_chunk;

/**
 * The events of one body.  Zero-initialise ({0}) before the first
 * mxev_parse; free with mxev_batch_free.  Only events and n are for readers.
 */
struct mxev_batch {
	struct mxev *events; /* n elements, in body order */
	size_t n;
	size_t cap;               /* private */
	struct mxev_chunk *arena; /* private: the unescaped strings */
};

/** Where and why mxev_parse refused a body. */
struct mxev_error {
	size_t offset;    /* byte offset of the problem */
	const char *text; /* static */
};

/**
 * Scan @p len bytes of @p buf (not NUL-terminated) as one JSON object and
 * collect its "events" array (a missing "events" is zero events).  With a
 * repeated "events" key the last one counts.  Cost: one pass, O(len), no
 * recursion; allocation: the events array and the unescaped strings.
 * @param b          replaced: anything it held is freed first; on error it
 *                   holds no events
 * @param buf        borrowed; must outlive the slices in @p b
 * @param max_depth  how many objects/arrays may nest (the body itself is 1)
 * @param err        optional: where the body was refused
 * @return MXEV_OK, MXEV_NOT_JSON, MXEV_TOO_DEEP, MXEV_NOT_OBJECT or
 *         MXEV_EVENTS_NOT_ARRAY.  A body both malformed and too deep gets
 *         whichever the scan meets first.
 */
enum mxev_status mxev_parse(struct mxev_batch *b, const char *buf, size_t len, unsigned max_depth,
                            struct mxev_error *err);

/** Free what @p b holds and leave it empty, ready for another mxev_parse. */
void mxev_batch_free(struct mxev_batch *b);

/**
 * Parse @p ev's content with jansson, for what the struct does not carry.
 * Strings may hold NUL (JSON_ALLOW_NUL): use json_string_length.
 * @param out  new reference, written only on TH_OK; may be any JSON type
 * @return TH_OK, or TH_ENOTFOUND when the event has no content member.
 */
int mxev_content_json(const struct mxev *ev, json_t **out);

/** @return a static name for @p status. */
const char *mxev_strerror(enum mxev_status status);

#endif
