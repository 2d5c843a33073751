/*
 * test_hours.c - opening hours (policy/hours.h): parsing the config's words,
 * and open / next opening across days, offsets and holidays.
 */
#include <stdint.h>
#include <string.h>

#include "hours.h"
#include "testlib.h"

/* 2026-12-03 (a Thursday) at hh:mm UTC, in ms. */
static uint64_t thu(int hh, int mm)
{
	int32_t d;
	hours_parse_date("2026-12-03", &d);
	return ((uint64_t)d * 86400u + (uint64_t)hh * 3600u + (uint64_t)mm * 60u) * 1000u;
}

static void test_parse(void)
{
	struct hours_range r[HOURS_MAX_RANGES];
	unsigned n;
	CHECK_EQ_INT(hours_parse_day("09:00-17:00", r, &n), 0);
	CHECK(n == 1 && r[0].from == 540 && r[0].to == 1020);
	CHECK_EQ_INT(hours_parse_day("09:00-12:30, 13:30 - 17:00", r, &n), 0);
	CHECK(n == 2 && r[1].from == 810);
	CHECK_EQ_INT(hours_parse_day("00:00-24:00", r, &n), 0);
	CHECK(n == 1 && r[0].to == 1440);
	CHECK_EQ_INT(hours_parse_day("closed", r, &n), 0);
	CHECK(n == 0);
	CHECK_EQ_INT(hours_parse_day("17:00-09:00", r, &n), -1);              /* backwards */
	CHECK_EQ_INT(hours_parse_day("09:00-12:00, 11:00-13:00", r, &n), -1); /* overlapping */
	CHECK_EQ_INT(hours_parse_day("9:00-17:00", r, &n), -1);
	CHECK_EQ_INT(hours_parse_day("09:00-24:30", r, &n), -1);
	CHECK_EQ_INT(hours_parse_day("1-2,3-4,5-6,7-8,9-10", r, &n), -1);
	CHECK_EQ_INT(hours_parse_day("", r, &n), -1);
	int off;
	CHECK(hours_parse_offset("+01:00", &off) == 0 && off == 60);
	CHECK(hours_parse_offset("-05:30", &off) == 0 && off == -330);
	CHECK(hours_parse_offset("UTC", &off) == 0 && off == 0);
	CHECK_EQ_INT(hours_parse_offset("+15:00", &off), -1);
	CHECK_EQ_INT(hours_parse_offset("01:00", &off), -1);
	int32_t d;
	CHECK(hours_parse_date("1970-01-02", &d) == 0 && d == 1);
	CHECK_EQ_INT(hours_parse_date("2026-02-29", &d), -1);
	CHECK_EQ_INT(hours_parse_date("2028-02-29", &d), 0);
	CHECK_EQ_INT(hours_parse_date("2026-13-01", &d), -1);
	CHECK_EQ_INT(hours_day_index("mon"), 0);
	CHECK_EQ_INT(hours_day_index("sunday"), 6);
	CHECK_EQ_INT(hours_day_index("sund"), -1);
}

static void test_open(void)
{
	struct hours_spec h;
	memset(&h, 0, sizeof(h));
	uint64_t next;
	CHECK_EQ_INT(hours_open(&h, thu(3, 0), &next), 1); /* none set: always open */
	h.set = 1;
	hours_parse_day("09:00-17:00", h.day[3], &h.nday[3]); /* Thursday */
	hours_parse_day("10:00-12:00", h.day[4], &h.nday[4]); /* Friday */
	CHECK_EQ_INT(hours_open(&h, thu(9, 0), &next), 1);
	CHECK_EQ_INT(hours_open(&h, thu(16, 59), &next), 1);
	CHECK_EQ_INT(hours_open(&h, thu(17, 0), &next), 0);
	CHECK(next == thu(10, 0) + 86400000ull); /* Friday 10:00 */
	CHECK_EQ_INT(hours_open(&h, thu(8, 0), &next), 0);
	CHECK(next == thu(9, 0));
	/* An offset of +02:00: Thursday 09:00 local is 07:00 UTC. */
	h.offset_min = 120;
	CHECK_EQ_INT(hours_open(&h, thu(7, 0), &next), 1);
	CHECK_EQ_INT(hours_open(&h, thu(6, 59), &next), 0);
	CHECK(next == thu(7, 0));
	/* Friday a holiday: the next opening is a week later, Thursday 09:00 local. */
	int32_t fri;
	hours_parse_date("2026-12-04", &fri);
	h.holidays = &fri;
	h.nholidays = 1;
	CHECK_EQ_INT(hours_open(&h, thu(15, 0), &next), 0); /* 17:00 local */
	CHECK(next == thu(7, 0) + 7 * 86400000ull);
	/* Nothing open at all: closed, no next opening. */
	memset(h.nday, 0, sizeof(h.nday));
	CHECK_EQ_INT(hours_open(&h, thu(12, 0), &next), 0);
	CHECK(next == 0);
}

int main(void)
{
	test_parse();
	test_open();
	return TEST_DONE();
}
