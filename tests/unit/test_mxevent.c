/* test_mxevent.c - the transaction body scanner: what it extracts, what it
 * refuses, and, for every case, agreement with jansson (mxev_oracle.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mxev_oracle.h"
#include "mxevent.h"
#include "testlib.h"
#include "util.h"

#define DEPTH 16

/* Scan and cross-check with jansson; the batch is left for the caller. */
static enum mxev_status scan_len(struct mxev_batch *b, const char *body, size_t len, unsigned depth)
{
	char why[512];
	enum mxev_status st;
	int rc = mxev_oracle_check(body, len, depth, &st, why, sizeof(why));
	if (rc)
		fprintf(stderr, "differs from jansson on \"%.*s\": %s\n", (int)(len > 300 ? 300 : len), body,
		        why);
	CHECK_EQ_INT(rc, 0);
	enum mxev_status again = mxev_parse(b, body, len, depth, NULL);
	CHECK_EQ_INT(again, st);
	return again;
}

static enum mxev_status scan(struct mxev_batch *b, const char *body)
{
	return scan_len(b, body, strlen(body), DEPTH);
}

static int slice_is(struct mxev_slice s, const char *text)
{
	return s.ptr && s.len == strlen(text) && memcmp(s.ptr, text, s.len) == 0;
}

/* A Synapse-like transaction: an invite with invite_room_state, a join, a
 * message, a state event, an ephemeral section. */
static const char synapse_txn[] =
        "{\"events\":[{\"content\":{\"displayname\":\"Guest\",\"is_direct\":true,\"membership\":\"invite\"},"
        "\"origin_server_ts\":1700000000123,\"room_id\":\"!AbCdEf:hs.example\",\"sender\":\"@alice:hs."
        "example\","
        "\"state_key\":\"@threshold:hs.example\",\"type\":\"m.room.member\",\"unsigned\":{\"age\":41,"
        "\"invite_room_state\":[{\"content\":{\"join_rule\":\"invite\"},\"sender\":\"@alice:hs.example\","
        "\"state_key\":\"\",\"type\":\"m.room.join_rules\"},{\"content\":{\"name\":\"Support\"},"
        "\"sender\":\"@alice:hs.example\",\"state_key\":\"\",\"type\":\"m.room.name\"},{\"content\":"
        "{\"avatar_url\":\"mxc://hs.example/x\",\"displayname\":\"Alice\",\"membership\":\"join\"},"
        "\"sender\":\"@alice:hs.example\",\"state_key\":\"@alice:hs.example\",\"type\":\"m.room.member\"}]},"
        "\"event_id\":\"$inv1:hs.example\",\"user_id\":\"@alice:hs.example\"},"
        "{\"content\":{\"body\":\"!threshold ping\",\"msgtype\":\"m.text\"},\"event_id\":\"$m1\","
        "\"origin_server_ts\":1700000000200,\"room_id\":\"!AbCdEf:hs.example\",\"sender\":\"@alice:hs."
        "example\","
        "\"type\":\"m.room.message\",\"unsigned\":{\"age\":3,\"transaction_id\":\"m17.1\"}},"
        "{\"content\":{\"topic\":\"Help \\u2014 "
        "here\"},\"event_id\":\"$s1\",\"room_id\":\"!AbCdEf:hs.example\","
        "\"sender\":\"@alice:hs.example\",\"state_key\":\"\",\"type\":\"m.room.topic\",\"unsigned\":{\"age\":"
        "1,"
        "\"replaces_state\":\"$old\",\"prev_content\":{\"topic\":\"Help\"}}}],"
        "\"ephemeral\":[{\"type\":\"m.typing\",\"room_id\":\"!AbCdEf:hs.example\",\"content\":{\"user_ids\":["
        "]}}],"
        "\"device_lists\":{\"changed\":[],\"left\":[]},\"device_one_time_keys_count\":{},"
        "\"org.matrix.msc3202.device_one_time_keys_count\":{}}";

static void test_valid(void)
{
	struct mxev_batch b = {0};
	CHECK_EQ_INT(scan(&b, synapse_txn), MXEV_OK);
	CHECK_EQ_INT(b.n, 3);
	if (b.n == 3) {
		const struct mxev *e = &b.events[0];
		CHECK(e->is_object);
		CHECK_STR(e->event_id, "$inv1:hs.example");
		CHECK_STR(e->room_id, "!AbCdEf:hs.example");
		CHECK_STR(e->type, "m.room.member");
		CHECK_STR(e->sender, "@alice:hs.example");
		CHECK_STR(e->state_key, "@threshold:hs.example");
		CHECK_STR(e->membership, "invite");
		CHECK(e->is_direct);
		CHECK(e->body == NULL && e->msgtype == NULL);
		CHECK(e->content_is_object);
		CHECK(slice_is(e->content,
		               "{\"displayname\":\"Guest\",\"is_direct\":true,\"membership\":\"invite\"}"));
		CHECK(e->json.ptr[0] == '{' && e->json.ptr[e->json.len - 1] == '}');
		json_t *c = NULL;
		CHECK_EQ_INT(mxev_content_json(e, &c), TH_OK);
		CHECK_STR(json_string_value(json_object_get(c, "displayname")), "Guest");
		json_decref(c);

		e = &b.events[1];
		CHECK_STR(e->type, "m.room.message");
		CHECK_STR(e->body, "!threshold ping");
		CHECK_STR(e->msgtype, "m.text");
		CHECK(e->state_key == NULL && e->membership == NULL && !e->is_direct);

		e = &b.events[2];
		CHECK_STR(e->state_key, "");
		CHECK_STR(e->type, "m.room.topic");
	}

	CHECK_EQ_INT(scan(&b, "{}"), MXEV_OK);
	CHECK_EQ_INT(b.n, 0);
	CHECK_EQ_INT(scan(&b, "{\"events\":[]}"), MXEV_OK);
	CHECK_EQ_INT(b.n, 0);
	CHECK_EQ_INT(scan(&b, "{\"events\":[],\"ephemeral\":[]}"), MXEV_OK);
	CHECK_EQ_INT(scan(&b, "{\"ephemeral\":[{\"events\":[1]}]}"), MXEV_OK);
	CHECK_EQ_INT(b.n, 0);

	/* Whitespace wherever the grammar allows it. */
	CHECK_EQ_INT(scan(&b, " \t\r\n{ \n\"events\" :\t[ {\r\"type\" : \"m.room.message\" , \"content\" "
	                      ": { \"body\" :\"hi\" , \"is_direct\" : true } } ,\n 7 ] } \n\t\r "),
	             MXEV_OK);
	CHECK_EQ_INT(b.n, 2);
	if (b.n == 2) {
		CHECK_STR(b.events[0].type, "m.room.message");
		CHECK_STR(b.events[0].body, "hi");
		CHECK(b.events[0].is_direct);
		CHECK(slice_is(b.events[0].content, "{ \"body\" :\"hi\" , \"is_direct\" : true }"));
		CHECK(slice_is(b.events[1].json, "7"));
	}
	mxev_batch_free(&b);
}

static void test_escapes(void)
{
	struct mxev_batch b = {0};
	CHECK_EQ_INT(scan(&b, "{\"events\":[{\"content\":{\"body\":\"q\\\"b\\\\s\\/b\\bf\\fn\\nr\\rt\\t"
	                      "\\u0041\\u00e9\\u00E9\\u20ac\\ud83d\\ude00\\uD83D\\uDE00\\u007f\\u0001\"}}]}"),
	             MXEV_OK);
	if (b.n == 1)
		CHECK_STR(b.events[0].body,
		          "q\"b\\s/b\bf\fn\nr\rt\tA\xc3\xa9\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
		          "\xf0\x9f\x98\x80\x7f\x01");
	/* Raw UTF-8, up to four bytes, and DEL (not a control character in JSON). */
	CHECK_EQ_INT(
	        scan(&b,
	             "{\"events\":[{\"type\":\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf"
	             " \xef\xbf\xbf \x7f\"}]}"),
	        MXEV_OK);
	if (b.n == 1)
		CHECK_STR(b.events[0].type,
		          "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf \xef\xbf\xbf \x7f");
	/* An escaped key is the same key. */
	CHECK_EQ_INT(
	        scan(&b,
	             "{\"\\u0065vents\":[{\"\\u0074ype\":\"t\",\"event\\u005fid\":\"$e\",\"c\\u006fntent\":"
	             "{\"\\u0062ody\":\"x\",\"is\\u005Fdirect\":true}}]}"),
	        MXEV_OK);
	if (b.n == 1) {
		CHECK_STR(b.events[0].type, "t");
		CHECK_STR(b.events[0].event_id, "$e");
		CHECK_STR(b.events[0].body, "x");
		CHECK(b.events[0].is_direct);
	}
	/* A long escaped key that decodes to nothing we read. */
	CHECK_EQ_INT(scan(&b,
	                  "{\"events\":[{\"\\u0074\\u0074\\u0074\\u0074\\u0074\\u0074\\u0074\\u0074\\u0074"
	                  "\\u0074\\u0074\\u0074\":1,\"typ\\n\":\"x\"}]}"),
	             MXEV_OK);
	if (b.n == 1)
		CHECK(b.events[0].type == NULL);

	/* \u0000 in a value: accepted (unlike jansson without JSON_ALLOW_NUL),
	 * the field reads as NULL, the others are intact. */
	CHECK_EQ_INT(scan(&b, "{\"events\":[{\"event_id\":\"$a\\u0000b\",\"room_id\":\"!r\",\"content\":"
	                      "{\"body\":\"x\\u0000\",\"msgtype\":\"m.text\"},\"other\":\"\\u0000\"}]}"),
	             MXEV_OK);
	if (b.n == 1) {
		CHECK(b.events[0].event_id == NULL);
		CHECK(b.events[0].body == NULL);
		CHECK_STR(b.events[0].room_id, "!r");
		CHECK_STR(b.events[0].msgtype, "m.text");
		json_t *c = NULL;
		CHECK_EQ_INT(mxev_content_json(&b.events[0], &c), TH_OK);
		CHECK_EQ_INT(json_string_length(json_object_get(c, "body")), 2);
		json_decref(c);
	}
	/* ... but never in a key, as jansson. */
	CHECK_EQ_INT(scan(&b, "{\"events\":[{\"type\\u0000\":\"x\"}]}"), MXEV_NOT_JSON);
	mxev_batch_free(&b);
}

static void test_duplicates_and_types(void)
{
	struct mxev_batch b = {0};
	/* The last value of a repeated key wins, even when it is not a string. */
	CHECK_EQ_INT(
	        scan(&b,
	             "{\"events\":[{\"type\":\"a\",\"type\":\"b\",\"sender\":\"@x\",\"sender\":5,"
	             "\"content\":{\"membership\":\"join\",\"is_direct\":true},\"content\":{\"body\":\"2\"},"
	             "\"state_key\":null,\"state_key\":\"\"}]}"),
	        MXEV_OK);
	if (b.n == 1) {
		const struct mxev *e = &b.events[0];
		CHECK_STR(e->type, "b");
		CHECK(e->sender == NULL);
		CHECK(e->membership == NULL);
		CHECK(!e->is_direct);
		CHECK_STR(e->body, "2");
		CHECK_STR(e->state_key, "");
		CHECK(slice_is(e->content, "{\"body\":\"2\"}"));
	}
	/* A repeated "events": the last one counts. */
	CHECK_EQ_INT(
	        scan(&b, "{\"events\":[{\"type\":\"1\"},{\"type\":\"2\"}],\"events\":[{\"type\":\"3\"}]}"),
	        MXEV_OK);
	CHECK_EQ_INT(b.n, 1);
	if (b.n == 1)
		CHECK_STR(b.events[0].type, "3");
	CHECK_EQ_INT(scan(&b, "{\"events\":5,\"events\":[]}"), MXEV_OK);
	CHECK_EQ_INT(scan(&b, "{\"events\":[],\"events\":5}"), MXEV_EVENTS_NOT_ARRAY);
	CHECK_EQ_INT(b.n, 0);

	/* Members of the wrong type read as absent. */
	CHECK_EQ_INT(
	        scan(&b, "{\"events\":[{\"event_id\":5,\"room_id\":null,\"type\":{},\"sender\":[\"@a\"],"
	                 "\"state_key\":false,\"content\":\"str\"},{\"type\":\"t\",\"content\":[1]},"
	                 "{\"content\":{\"membership\":true,\"body\":{\"x\":1},\"msgtype\":2.5,\"is_direct\":"
	                 "\"true\"}},{\"content\":{\"is_direct\":1}},{\"content\":{\"is_direct\":false}},"
	                 "{\"content\":null}]}"),
	        MXEV_OK);
	CHECK_EQ_INT(b.n, 6);
	if (b.n == 6) {
		const struct mxev *e = &b.events[0];
		CHECK(!e->event_id && !e->room_id && !e->type && !e->sender && !e->state_key);
		CHECK(!e->content_is_object);
		CHECK(slice_is(e->content, "\"str\""));
		json_t *c = NULL;
		CHECK_EQ_INT(mxev_content_json(e, &c), TH_OK);
		CHECK_STR(json_string_value(c), "str");
		json_decref(c);
		CHECK(slice_is(b.events[1].content, "[1]"));
		CHECK(!b.events[1].content_is_object);
		e = &b.events[2];
		CHECK(!e->membership && !e->body && !e->msgtype && !e->is_direct);
		CHECK(!b.events[3].is_direct && !b.events[4].is_direct);
		CHECK(slice_is(b.events[5].content, "null"));
	}
	/* Non-object elements: kept, with their slices, and nothing read. */
	CHECK_EQ_INT(scan(&b, "{\"events\":[42,\"s\",null,[1,{\"type\":\"x\"}],true,-1.5e3,{}]}"), MXEV_OK);
	CHECK_EQ_INT(b.n, 7);
	if (b.n == 7) {
		const char *want[] = {"42", "\"s\"", "null", "[1,{\"type\":\"x\"}]", "true", "-1.5e3", "{}"};
		for (int i = 0; i < 7; i++) {
			CHECK(slice_is(b.events[i].json, want[i]));
			CHECK_EQ_INT(b.events[i].is_object, i == 6);
			CHECK(b.events[i].type == NULL);
		}
		struct mxev_slice none = b.events[6].content;
		json_t *c = NULL;
		CHECK(none.ptr == NULL);
		CHECK_EQ_INT(mxev_content_json(&b.events[6], &c), TH_ENOTFOUND);
	}
	/* Only the members on the path body -> events -> element -> content. */
	CHECK_EQ_INT(
	        scan(&b, "{\"type\":\"top\",\"events\":[{\"unsigned\":{\"type\":\"no\",\"content\":{\"body\":"
	                 "\"no\"}},\"content\":{\"m.new_content\":{\"body\":\"no\"},\"event_id\":\"no\","
	                 "\"body\":\"yes\"}}]}"),
	        MXEV_OK);
	if (b.n == 1) {
		CHECK(b.events[0].type == NULL);
		CHECK(b.events[0].event_id == NULL);
		CHECK_STR(b.events[0].body, "yes");
	}
	mxev_batch_free(&b);
}

static void test_events_member(void)
{
	struct mxev_batch b = {0};
	CHECK_EQ_INT(scan(&b, "{\"events\":{}}"), MXEV_EVENTS_NOT_ARRAY);
	CHECK_EQ_INT(scan(&b, "{\"events\":\"x\"}"), MXEV_EVENTS_NOT_ARRAY);
	CHECK_EQ_INT(scan(&b, "{\"events\":null}"), MXEV_EVENTS_NOT_ARRAY);
	CHECK_EQ_INT(scan(&b, "{\"events\":0}"), MXEV_EVENTS_NOT_ARRAY);
	CHECK_EQ_INT(scan(&b, "[1,2]"), MXEV_NOT_OBJECT);
	CHECK_EQ_INT(scan(&b, "[]"), MXEV_NOT_OBJECT);
	CHECK_EQ_INT(scan(&b, "[{\"events\":[{}]}]"), MXEV_NOT_OBJECT);
	/* jansson (flags 0) takes only an object or array at the top. */
	CHECK_EQ_INT(scan(&b, "\"str\""), MXEV_NOT_JSON);
	CHECK_EQ_INT(scan(&b, "42"), MXEV_NOT_JSON);
	CHECK_EQ_INT(scan(&b, "null"), MXEV_NOT_JSON);
	CHECK_EQ_INT(b.n, 0);
	mxev_batch_free(&b);
}

/* head, then @p levels nested arrays around inner, then tail. */
static char *nest(const char *head, unsigned levels, const char *inner, const char *tail)
{
	size_t hl = strlen(head), il = strlen(inner), tl = strlen(tail);
	char *s = xmalloc(hl + 2 * (size_t)levels + il + tl + 1), *p = s;
	memcpy(p, head, hl);
	p += hl;
	memset(p, '[', levels);
	p += levels;
	memcpy(p, inner, il);
	p += il;
	memset(p, ']', levels);
	p += levels;
	memcpy(p, tail, tl + 1);
	return s;
}

static void test_depth(void)
{
	struct mxev_batch b = {0};
	/* The body is depth 1, "events" 2, so 14 more arrays reach 16 exactly. */
	char *s = nest("{\"events\":", 15, "", "}");
	CHECK_EQ_INT(scan(&b, s), MXEV_OK);
	free(s);
	s = nest("{\"events\":", 15, "1", "}");
	CHECK_EQ_INT(scan(&b, s), MXEV_OK);
	free(s);
	s = nest("{\"events\":", 16, "", "}");
	CHECK_EQ_INT(scan(&b, s), MXEV_TOO_DEEP);
	free(s);
	s = nest("{\"events\":", 16, "\"x\"", "}");
	CHECK_EQ_INT(scan(&b, s), MXEV_TOO_DEEP);
	free(s);
	/* Brackets inside strings are not nesting. */
	CHECK_EQ_INT(scan(&b, "{\"a\":\"[[[[[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{{{{{\"}"), MXEV_OK);
	/* Objects count as arrays do. */
	CHECK_EQ_INT(scan(&b,
	                  "{\"events\":[{\"content\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":"
	                  "{\"i\":{\"j\":{\"k\":{\"l\":{}}}}}}}}}}}}}}]}"),
	             MXEV_OK);
	CHECK_EQ_INT(scan(&b,
	                  "{\"events\":[{\"content\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":"
	                  "{\"i\":{\"j\":{\"k\":{\"l\":{\"m\":{}}}}}}}}}}}}}}}]}"),
	             MXEV_TOO_DEEP);
	/* The cap itself: 0 refuses any body, 1 only a flat one. */
	CHECK_EQ_INT(scan_len(&b, "{}", 2, 0), MXEV_TOO_DEEP);
	CHECK_EQ_INT(scan_len(&b, "{}", 2, 1), MXEV_OK);
	CHECK_EQ_INT(scan_len(&b, "{\"events\":[]}", 13, 1), MXEV_TOO_DEEP);
	CHECK_EQ_INT(scan_len(&b, "{\"events\":[]}", 13, 2), MXEV_OK);
	/* Past MXEV_DEPTH_LIMIT, whatever the caller asks. */
	s = nest("", MXEV_DEPTH_LIMIT, "", "");
	CHECK_EQ_INT(scan_len(&b, s, strlen(s), 100000), MXEV_NOT_OBJECT);
	free(s);
	s = nest("", MXEV_DEPTH_LIMIT + 1, "", "");
	CHECK_EQ_INT(mxev_parse(&b, s, strlen(s), 100000, NULL), MXEV_TOO_DEEP);
	free(s);
	/* A deep hostile body costs one pass and no recursion. */
	s = nest("{\"events\":", 1000000, "", "}");
	CHECK_EQ_INT(mxev_parse(&b, s, strlen(s), 64, NULL), MXEV_TOO_DEEP);
	free(s);
	mxev_batch_free(&b);
}

static void test_big(void)
{
	struct mxev_batch b = {0};
	/* Strings far past a chunk: the arena grows, no limit but memory. */
	size_t n = 200 * 1024;
	char *id = xmalloc(n + 1);
	memset(id, 'e', n);
	id[0] = '$';
	id[n] = '\0';
	char *body =
	        xasprintf("{\"events\":[{\"event_id\":\"%s\",\"room_id\":\"!r\"},{\"event_id\":\"%s\\n\"}]}",
	                  id, id + 1000);
	CHECK_EQ_INT(scan(&b, body), MXEV_OK);
	if (b.n == 2) {
		CHECK_EQ_INT(strlen(b.events[0].event_id), n);
		CHECK(strncmp(b.events[0].event_id, id, n) == 0);
		CHECK_EQ_INT(strlen(b.events[1].event_id), n - 1000 + 1);
		CHECK_STR(b.events[0].room_id, "!r");
	}
	free(body);
	free(id);

	/* Many events: the array grows. */
	size_t cap = 3000 * 64, len = 0;
	body = xmalloc(cap);
	len += (size_t)snprintf(body, cap, "{\"events\":[");
	for (int i = 0; i < 3000; i++)
		len += (size_t)snprintf(body + len, cap - len, "%s{\"event_id\":\"$%d\",\"type\":\"t\"}",
		                        i ? "," : "", i);
	len += (size_t)snprintf(body + len, cap - len, "]}");
	CHECK_EQ_INT(scan_len(&b, body, len, DEPTH), MXEV_OK);
	CHECK_EQ_INT(b.n, 3000);
	if (b.n == 3000)
		CHECK_STR(b.events[2999].event_id, "$2999");
	free(body);
	mxev_batch_free(&b);
}

/* The least decimal strtod rounds to infinity: 2^1024 - 2^970. */
static const char dbl_inf[] = "179769313486231580793728971405303415079934132710037826936173778980444968292764"
                              "75094664901797758720709633"
                              "028641669288791094655554785194040263065748867150582068190890200070838367627385"
                              "48458177115317644757302700"
                              "698555713669596228429148198608349364752927190741684443655107043427115596995080"
                              "93042880177904174497792";

static void test_numbers(void)
{
	static const struct {
		const char *num;
		int ok;
	} cases[] = {
	        {"0", 1},
	        {"-0", 1},
	        {"0.0", 1},
	        {"-0.0e-0", 1},
	        {"0e0", 1},
	        {"0E+0", 1},
	        {"1.5e10", 1},
	        {"1E+2", 1},
	        {"1e-400", 1}, /* underflow is fine, as strtod */
	        {"0e99999999999999999999999", 1},
	        {"0.000000000000000000000000000000e99999999999", 1},
	        {"123456789012345678901234567890.5", 1},
	        {"9223372036854775807", 1},
	        {"-9223372036854775808", 1},
	        {"9223372036854775808", 0},
	        {"-9223372036854775809", 0},
	        {"10000000000000000000", 0},
	        {"9223372036854775808.0", 1},
	        {"1e308", 1},
	        {"1.7976931348623157e308", 1},
	        {"1.7976931348623158e308", 1},
	        {"1.7976931348623159e308", 0},
	        {"-1.7976931348623159e308", 0},
	        {"1e309", 0},
	        {"-1e400", 0},
	        {"1e99999999999999999999999", 0},
	        {"0.0000000001e318", 1},
	        {"0.0000000001e319", 0},
	        {"0.00000000000000000000000000000000000000001e+349", 1},
	        {"1e-99999999999999999999", 1},
	};
	struct mxev_batch b = {0};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *body = xasprintf("{\"events\":[%s]}", cases[i].num);
		enum mxev_status st = scan(&b, body);
		if ((st == MXEV_OK) != cases[i].ok)
			fprintf(stderr, "number %s: %s\n", cases[i].num, mxev_strerror(st));
		CHECK_EQ_INT(st == MXEV_OK, cases[i].ok);
		free(body);
	}
	/* Around the overflow boundary, digit by digit (strtod via jansson agrees). */
	char *t_minus = xstrdup(dbl_inf);
	t_minus[strlen(t_minus) - 1] = '1';
	char *bodies[] = {
	        xasprintf("{\"a\":%s.0}", dbl_inf),
	        xasprintf("{\"a\":%s.9999}", t_minus),
	        xasprintf("{\"a\":0.%se309}", dbl_inf),
	        xasprintf("{\"a\":0.%s9e309}", t_minus),
	        xasprintf("{\"a\":0.%s0000001e309}", dbl_inf),
	        xasprintf("{\"a\":-%s.0}", dbl_inf),
	        xasprintf("{\"a\":%s000e-3}", dbl_inf),
	        xasprintf("{\"a\":%s}", t_minus), /* an integer: too big for a long long */
	};
	int ok[] = {0, 1, 0, 1, 0, 0, 0, 0};
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		CHECK_EQ_INT(scan(&b, bodies[i]) == MXEV_OK, ok[i]);
		free(bodies[i]);
	}
	free(t_minus);
	mxev_batch_free(&b);
}

/* Each must be refused, as jansson refuses it. */
static const struct bad {
	const char *text;
	size_t len; /* 0: strlen */
} bad_cases[] = {
        {"", 0},
        {" \n", 0},
        {"{", 0},
        {"}", 0},
        {"{\"events\":[", 0},
        {"{\"events\":[}", 0},
        {"{\"a\":}", 0},
        {"{\"a\"}", 0},
        {"{\"a\" 1}", 0},
        {"{\"a\"::1}", 0},
        {"{\"a\":1,}", 0},
        {"{,}", 0},
        {"[1,]", 0},
        {"[,1]", 0},
        {"{\"a\":[1 2]}", 0},
        {"{\"a\":1 \"b\":2}", 0},
        {"{a:1}", 0},
        {"{'a':1}", 0},
        {"{\"a\" : 'x'}", 0},
        {"{\"a\":01}", 0},
        {"{\"a\":-01}", 0},
        {"{\"a\":00}", 0},
        {"{\"a\":1.}", 0},
        {"{\"a\":.5}", 0},
        {"{\"a\":+1}", 0},
        {"{\"a\":1e}", 0},
        {"{\"a\":1e+}", 0},
        {"{\"a\":1.e5}", 0},
        {"{\"a\":-}", 0},
        {"{\"a\":- 1}", 0},
        {"{\"a\":0x10}", 0},
        {"{\"a\":NaN}", 0},
        {"{\"a\":Infinity}", 0},
        {"{\"a\":-Infinity}", 0},
        {"{\"a\":undefined}", 0},
        {"{\"a\":tru}", 0},
        {"{\"a\":truex}", 0},
        {"{\"a\":True}", 0},
        {"{\"a\":nul}", 0},
        {"{\"a\":1true}", 0},
        {"{\"a\":\"\\x\"}", 0},
        {"{\"a\":\"\\U0041\"}", 0},
        {"{\"a\":\"\\'\"}", 0},
        {"{\"a\":\"\\u12\"}", 0},
        {"{\"a\":\"\\u12G4\"}", 0},
        {"{\"a\":\"\\u", 0},
        {"{\"a\":\"\\", 0},
        {"{\"a\":\"\\ud800\"}", 0},
        {"{\"a\":\"\\udc00\"}", 0},
        {"{\"a\":\"\\ude00\\ud83d\"}", 0},
        {"{\"a\":\"\\ud800\\u0041\"}", 0},
        {"{\"a\":\"\\ud800\\ud800\"}", 0},
        {"{\"a\":\"\\ud800\\\"}", 0},
        {"{\"a\":\"\\ud800x\"}", 0},
        {"{\"a\":\"tab\there\"}", 0},
        {"{\"a\":\"nl\nhere\"}", 0},
        {"{\"a\":\"\x01\"}", 0},
        {"{\"a\":\"\x1f\"}", 0},
        {"{\"a\":\"\xc0\x80\"}", 0},
        {"{\"a\":\"\xc1\xbf\"}", 0},
        {"{\"a\":\"\xe0\x80\xaf\"}", 0},
        {"{\"a\":\"\xe0\x9f\xbf\"}", 0},
        {"{\"a\":\"\xf0\x80\x80\xaf\"}", 0},
        {"{\"a\":\"\xf0\x8f\xbf\xbf\"}", 0},
        {"{\"a\":\"\xed\xa0\x80\"}", 0},
        {"{\"a\":\"\xed\xbf\xbf\"}", 0},
        {"{\"a\":\"\xf4\x90\x80\x80\"}", 0},
        {"{\"a\":\"\xf5\x80\x80\x80\"}", 0},
        {"{\"a\":\"\xff\"}", 0},
        {"{\"a\":\"\xfe\"}", 0},
        {"{\"a\":\"\x80\"}", 0},
        {"{\"a\":\"\xc3\"}", 0},
        {"{\"a\":\"\xe2\x82\"}", 0},
        {"{\"a\":\"\xc3\xc3\xa9\"}", 0},
        {"{\"a\":\"\xe2\x82\xac", 0},
        {"{\"a\":\"\xf0\x9f\x98", 0},
        {"{\"a\":1}\xc3\xa9", 0},
        {"\xef\xbb\xbf{}", 0},
        {"\xc2\xa0{}", 0},
        {"\x0c{}", 0},
        {"{\"a\":1}\x0b", 0},
        {"{} x", 0},
        {"{}{}", 0},
        {"{}]", 0},
        {"{\"a\":1}}", 0},
        {"[1]]", 0},
        {"{\"a\":\"abc", 0},
        {"{\"a\":\"\\\"}", 0},
        {"{\"a", 0},
        {"/* c */{}", 0},
        {"{\"a\":1}//", 0},
        {"{\"\\u0000\":1}", 0},
        {"{\"events\":[{\"content\":{\"b\\u0000\":1}}]}", 0},
        {"{\"a\":9223372036854775808}", 0},
        {"{\"a\":1e309}", 0},
        /* Raw NUL bytes: refused everywhere (jansson skips some). */
        {"{\"a\":\"\0\"}", 8},
        {"{\"a\":1\0}", 8},
        {"[true\0]", 7},
        {"{\"a\":null\0}", 11},
        {"{\"a\":1}\0", 8},
        {"\0{}", 3},
        {"{\"events\":[\0]}", 14},
};

static void test_bad(void)
{
	struct mxev_batch b = {0};
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad *c = &bad_cases[i];
		size_t len = c->len ? c->len : strlen(c->text);
		struct mxev_error err = {0};
		enum mxev_status st = mxev_parse(&b, c->text, len, DEPTH, &err);
		if (st != MXEV_NOT_JSON)
			fprintf(stderr, "bad case %zu \"%.*s\": %s\n", i, (int)len, c->text,
			        mxev_strerror(st));
		CHECK_EQ_INT(st, MXEV_NOT_JSON);
		CHECK(err.text && err.text[0] && err.offset <= len);
		CHECK(b.n == 0 && b.events == NULL);
		scan_len(&b, c->text, len, DEPTH);
	}
	mxev_batch_free(&b);
}

/* Every single-byte deletion, replacement and insertion of a few valid
 * bodies, checked against jansson: a cheap, deterministic cousin of the
 * fuzz target. */
static void test_mutations(void)
{
	static const char *const seeds[] = {
	        "{\"events\":[{\"event_id\":\"$1\",\"content\":{\"body\":\"a\\u00e9\\ud83d\\ude00\",\"is_"
	        "direct\":true},"
	        "\"type\":\"t\"},-1.5e3,[null,false]]}",
	        "{\"events\":[{\"state_key\":\"\",\"content\":{\"membership\":\"join\"},\"n\":0}],\"x\":{}}",
	        "{\"events\":[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\",9223372036854775807,1e308]}",
	};
	static const char repl[] = "\"\\{}[],:0-1.eE+tfnu\x00\x1f \x7f\x80\xbf\xc2\xe0\xed\xf0\xf4\xff";
	char buf[512];
	char why[512];
	for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
		size_t n = strlen(seeds[s]);
		for (size_t i = 0; i <= n; i++) {
			for (size_t r = 0; r < sizeof(repl); r++) {
				for (int op = 0; op < 3; op++) {
					size_t len = 0;
					if ((op == 0 && r > 0) || (op != 2 && i == n))
						continue; /* deletion: once per position */
					memcpy(buf, seeds[s], i);
					len = i;
					if (op == 1 && i < n) {
						buf[len++] = repl[r];
						memcpy(buf + len, seeds[s] + i + 1, n - i - 1);
						len += n - i - 1;
					} else if (op == 2) {
						buf[len++] = repl[r];
						memcpy(buf + len, seeds[s] + i, n - i);
						len += n - i;
					} else {
						memcpy(buf + len, seeds[s] + i + 1, n - i - 1);
						len += n - i - 1;
					}
					int rc = mxev_oracle_check(buf, len, 4, NULL, why, sizeof(why));
					if (rc)
						fprintf(stderr, "mutation \"%.*s\": %s\n", (int)len, buf,
						        why);
					CHECK_EQ_INT(rc, 0);
				}
			}
		}
	}
}

int main(void)
{
	test_valid();
	test_escapes();
	test_duplicates_and_types();
	test_events_member();
	test_depth();
	test_big();
	test_numbers();
	test_bad();
	test_mutations();
	return TEST_DONE();
}
