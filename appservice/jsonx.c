/* jsonx.c - small jansson helpers. */
#include "jsonx.h"

const char *jsonx_str(const json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}
