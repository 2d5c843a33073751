/* jsonx.c - depth-capped JSON parsing for bodies that arrive from the network. */
#include "jsonx.h"

unsigned jsonx_depth(const char *buf, size_t len, unsigned cap)
{
	unsigned depth = 0, max = 0;
	int in_string = 0;
	for (size_t i = 0; i < len; i++) {
		char c = buf[i];
		if (in_string) {
			if (c == '\\')
				i++; /* skip the escaped character */
			else if (c == '"')
				in_string = 0;
			continue;
		}
		switch (c) {
		case '"':
			in_string = 1;
			break;
		case '{':
		case '[':
			if (++depth > max) {
				max = depth;
				if (max > cap)
					return max;
			}
			break;
		case '}':
		case ']':
			if (depth > 0)
				depth--;
			break;
		default:
			break;
		}
	}
	return max;
}

enum jsonx_status jsonx_parse_object(const char *buf, size_t len, unsigned max_depth, json_t **out,
				     json_error_t *err)
{
	if (jsonx_depth(buf, len, max_depth) > max_depth)
		return JSONX_TOO_DEEP;
	json_error_t local;
	json_t *j = json_loadb(buf, len, 0, err ? err : &local);
	if (!j)
		return JSONX_BAD;
	if (!json_is_object(j)) {
		json_decref(j);
		return JSONX_NOT_OBJECT;
	}
	*out = j;
	return JSONX_OK;
}

const char *jsonx_str(const json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}
