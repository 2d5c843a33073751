/*
 * jsonx.h - bounded JSON parsing for untrusted input: a depth check before
 * jansson sees the text, and matrix error bodies.
 */
#ifndef THRESHOLD_JSONX_H
#define THRESHOLD_JSONX_H

#include <stddef.h>

#include <jansson.h>

/** Why jsonx_parse refused the input. */
enum jsonx_status {
	JSONX_OK = 0,
	JSONX_TOO_DEEP, /* nesting past the cap */
	JSONX_BAD,      /* not JSON, or not UTF-8 */
	JSONX_NOT_OBJECT,
};

/**
 * Parse @p len bytes as one JSON object, refusing nesting deeper than
 * @p max_depth (checked by a linear scan before any tree is built, so a
 * hostile body costs O(len) and no recursion).
 * @param out  new reference on JSONX_OK
 * @param err  optional: jansson's position and text on JSONX_BAD
 */
enum jsonx_status jsonx_parse_object(const char *buf, size_t len, unsigned max_depth, json_t **out,
				     json_error_t *err);

/** The nesting depth of @p buf, stopping early once it exceeds @p cap. */
unsigned jsonx_depth(const char *buf, size_t len, unsigned cap);

/** A string member of @p obj, or NULL if absent or not a string (borrowed). */
const char *jsonx_str(const json_t *obj, const char *key);

#endif
