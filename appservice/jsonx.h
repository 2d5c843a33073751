/*
 * jsonx.h - small jansson helpers shared by the modules that hold JSON trees
 * (room state, store values, homeserver responses).  Transaction bodies are
 * read by mxevent.h instead.
 */
#ifndef THRESHOLD_JSONX_H
#define THRESHOLD_JSONX_H

#include <jansson.h>

/** A string member of @p obj, or NULL if absent or not a string (borrowed). */
const char *jsonx_str(const json_t *obj, const char *key);

#endif
