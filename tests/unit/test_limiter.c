/*
 * test_limiter.c - the gateway's rate limiter (bridge/limiter.h): SipHash-2-4
 * against the reference vectors, token buckets, and a table that never gives
 * a counted key's budget back to another.
 */
#include <stdio.h>
#include <string.h>

#include "limiter.h"
#include "testlib.h"

static const unsigned char key16[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

static void test_siphash_vectors(void)
{
	/* The reference vectors: key 00..0f, messages 00, 00 01, ... */
	unsigned char msg[64];
	for (int i = 0; i < 64; i++)
		msg[i] = (unsigned char)i;
	CHECK(lim_siphash24(key16, msg, 0) == 0x726fdb47dd0e0e31ull);
	CHECK(lim_siphash24(key16, msg, 1) == 0x74f839c593dc67fdull);
	CHECK(lim_siphash24(key16, msg, 8) == 0x93f5f5799a932462ull);
	CHECK(lim_siphash24(key16, msg, 15) == 0xa129ca6149be45e5ull);
	/* another key, another hash: nobody outside can predict the table */
	unsigned char other[16] = {1};
	CHECK(lim_siphash24(other, msg, 8) != lim_siphash24(key16, msg, 8));
}

static void test_bucket(void)
{
	limiter *l = lim_new(64, key16);
	uint64_t t = 1000000;
	/* burst 3, one more every 1000 ms */
	for (int i = 0; i < 3; i++)
		CHECK_EQ_INT(lim_take(l, "a", 1, 3, 1000, t), 0);
	CHECK_EQ_INT(lim_take(l, "a", 1, 3, 1000, t), 1000);
	CHECK_EQ_INT(lim_take(l, "a", 1, 3, 1000, t + 400), 600);
	/* refused tries do not count: one back after the interval, not later */
	CHECK_EQ_INT(lim_take(l, "a", 1, 3, 1000, t + 1000), 0);
	CHECK(lim_take(l, "a", 1, 3, 1000, t + 1000) > 0);
	/* another key is not touched */
	CHECK_EQ_INT(lim_take(l, "b", 1, 3, 1000, t), 0);
	/* steady: after the whole burst refills, a full burst again */
	for (int i = 0; i < 3; i++)
		CHECK_EQ_INT(lim_take(l, "a", 1, 3, 1000, t + 10000), 0);
	CHECK(lim_take(l, "a", 1, 3, 1000, t + 10000) > 0);
	lim_free(l);
}

static void test_table_never_resets_a_counted_key(void)
{
	/* One set of LIM_WAYS entries: every key collides with every other. */
	limiter *l = lim_new(1, key16);
	uint64_t t = 5000000;
	char k[32];
	/* LIM_WAYS keys spend their whole budget (2) */
	for (int i = 0; i < LIM_WAYS; i++) {
		snprintf(k, sizeof(k), "victim-%d", i);
		CHECK_EQ_INT(lim_take(l, k, strlen(k), 2, 60000, t), 0);
		CHECK_EQ_INT(lim_take(l, k, strlen(k), 2, 60000, t), 0);
		CHECK(lim_take(l, k, strlen(k), 2, 60000, t) > 0);
	}
	/* 1,000 new keys find no entry to take: refused (fail closed, for as
	 * long as the first counted key needs to be full again) ... */
	int refused = 0;
	for (int i = 0; i < 1000; i++) {
		snprintf(k, sizeof(k), "new-%d", i);
		uint64_t w = lim_take(l, k, strlen(k), 2, 60000, t + 10);
		refused += w > 0 && w <= 2 * 60000;
	}
	CHECK_EQ_INT(refused, 1000);
	/* ... and not one victim got its budget back */
	for (int i = 0; i < LIM_WAYS; i++) {
		snprintf(k, sizeof(k), "victim-%d", i);
		CHECK(lim_take(l, k, strlen(k), 2, 60000, t + 20) > 0);
	}
	/* Once a victim's bucket is full again, a new key may take its entry:
	 * forgetting a full bucket gives nothing away. */
	CHECK_EQ_INT(lim_take(l, "late", 4, 2, 60000, t + 2 * 60000), 0);
	lim_free(l);
}

static void test_full_entries_are_reused(void)
{
	/* Many keys over time in a small table: keys whose buckets refilled
	 * make room, so new keys are served. */
	limiter *l = lim_new(4, key16);
	char k[32];
	int ok = 0;
	for (int i = 0; i < 10000; i++) {
		snprintf(k, sizeof(k), "addr-%d", i);
		ok += lim_take(l, k, strlen(k), 1, 10, 1000 + (uint64_t)i * 10) == 0;
	}
	CHECK_EQ_INT(ok, 10000);
	lim_free(l);
}

int main(void)
{
	test_siphash_vectors();
	test_bucket();
	test_table_never_resets_a_counted_key();
	test_full_entries_are_reused();
	return TEST_DONE();
}
