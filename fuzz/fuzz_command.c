/*
 * fuzz_command.c - libFuzzer target for the two parsers of chat commands,
 * which read any message body in any room the bot is in:
 * "!threshold ..." (appservice/events.c events_parse_command, with
 * groups.c groups_parse) and "!audit ..." (appservice/audit_query.c
 * audit_query_parse).  The input is the body; it ends at its first NUL
 * byte, as a body from mxev_parse does.
 *
 * Oracle, besides ASan and UBSan, from the grammar in the headers:
 *  - a body is a command exactly when, after leading spaces, it starts with
 *    the prefix and then ends or has a blank (and an "!audit" question then
 *    is never a "!threshold" command);
 *  - an audit question's fields are NUL-terminated within their arrays;
 *    a usage answer carries nothing the sender typed; a guest question
 *    names someone; a reveal names someone and gives a reason of at least
 *    AUDIT_QUERY_MIN_REASON characters; an export's --since is one of
 *    an absolute time or an age within a hundred years;
 *  - what was taken from the body is a part of it;
 *  - parsing twice gives the same result.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "audit_query.h"
#include "events.h"
#include "fuzzlib.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* After leading spaces, @p body starts with @p prefix and then a blank in @p after or its end. */
static int has_prefix(const char *body, const char *prefix, const char *after)
{
	while (*body == ' ')
		body++;
	size_t n = strlen(prefix);
	return strncmp(body, prefix, n) == 0 && (body[n] == '\0' || strchr(after, body[n]));
}

static size_t utf8_chars(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += ((unsigned char)*s & 0xc0) != 0x80;
	return n;
}

static void check_threshold(const char *body)
{
	enum pol_command c = events_parse_command(body);
	FUZZ_ASSERT((unsigned)c < POL_CMD_COUNT, "command %d out of range", (int)c);
	FUZZ_ASSERT(events_parse_command(body) == c, "not deterministic");
	int is = has_prefix(body, "!threshold", " ");
	FUZZ_ASSERT(is == (c != POL_CMD_NONE), "\"!threshold\" prefix %s but command %d",
	            is ? "present" : "absent", (int)c);
}

static void check_audit(const char *body)
{
	struct audit_query q, again;
	memset(&q, 0xa5, sizeof(q)); /* what the parser leaves unwritten shows */
	int r = audit_query_parse(body, &q);
	FUZZ_ASSERT(r == 0 || r == 1, "audit_query_parse returned %d", r);
	int is = has_prefix(body, "!audit", " \t\n");
	FUZZ_ASSERT(is == r, "\"!audit\" prefix %s but result %d", is ? "present" : "absent", r);
	if (!r)
		return;
	FUZZ_ASSERT(events_parse_command(body) == POL_CMD_NONE, "both an audit question and a command");
	FUZZ_ASSERT((unsigned)q.kind < AUDIT_QUERY_COUNT, "kind %d", (int)q.kind);
	FUZZ_ASSERT((unsigned)q.usage_of < AUDIT_QUERY_COUNT, "usage_of %d", (int)q.usage_of);
	FUZZ_ASSERT(memchr(q.arg, 0, sizeof(q.arg)), "arg not terminated");
	FUZZ_ASSERT(memchr(q.reason, 0, sizeof(q.reason)), "reason not terminated");
	FUZZ_ASSERT(!q.arg_too_long || !q.arg[0], "arg_too_long with an arg");
	FUZZ_ASSERT(!q.arg[0] || strstr(body, q.arg), "arg \"%s\" is not in the body", q.arg);
	FUZZ_ASSERT(!q.reason[0] || strstr(body, q.reason), "reason is not in the body");
	FUZZ_ASSERT(!q.since_ms || !q.since_ago_ms, "both since_ms and since_ago_ms");
	FUZZ_ASSERT(q.since_ago_ms <= 36600ull * 86400 * 1000, "since_ago_ms %llu",
	            (unsigned long long)q.since_ago_ms);
	switch (q.kind) {
	case AUDIT_QUERY_USAGE:
		FUZZ_ASSERT(!q.arg[0] && !q.reason[0] && !q.arg_too_long && !q.since_ms && !q.since_ago_ms,
		            "a usage answer carries what the sender typed");
		break;
	case AUDIT_QUERY_RECENT:
		FUZZ_ASSERT(!q.arg[0] && !q.reason[0], "recent with an argument");
		break;
	case AUDIT_QUERY_GUEST:
		FUZZ_ASSERT(q.arg[0] || q.arg_too_long, "guest names no one");
		break;
	case AUDIT_QUERY_EXPORT:
		FUZZ_ASSERT(!q.arg[0] && !q.reason[0], "export with an argument");
		break;
	case AUDIT_QUERY_REVEAL:
		FUZZ_ASSERT(q.arg[0] || q.arg_too_long, "reveal names no one");
		FUZZ_ASSERT(utf8_chars(q.reason) >= AUDIT_QUERY_MIN_REASON, "reveal's reason too short");
		break;
	default:
		break;
	}
	FUZZ_ASSERT(audit_query_name(q.kind) != NULL, "unnamed kind");
	(void)audit_query_since_ms(&q, th_now_ms());
	memset(&again, 0x5a, sizeof(again));
	FUZZ_ASSERT(audit_query_parse(body, &again) == 1, "not deterministic");
	FUZZ_ASSERT(again.kind == q.kind && again.usage_of == q.usage_of && !strcmp(again.arg, q.arg) &&
	                    again.arg_too_long == q.arg_too_long && again.since_ms == q.since_ms &&
	                    again.since_ago_ms == q.since_ago_ms && !strcmp(again.reason, q.reason),
	            "not deterministic");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *body = xmalloc(size + 1);
	memcpy(body, data, size);
	body[size] = '\0';
	check_threshold(body);
	check_audit(body);
	FUZZ_ASSERT(events_parse_command(NULL) == POL_CMD_NONE && !audit_query_parse(NULL, NULL),
	            "NULL is not a command");
	free(body);
	return 0;
}
