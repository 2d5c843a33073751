/*
 * hours.h - a service's opening hours (services.<name>.hours, holidays,
 * utc_offset): parsing the config's words and deciding, for a moment, whether
 * the service is open and when it next opens.  Pure: the caller gives the
 * time; no clock, no I/O, no allocation but the holiday list the caller owns.
 *
 * The offset is fixed (for example "+01:00"): it does not follow daylight
 * saving time by itself; change it when the clocks change (docs/services.md).
 */
#ifndef THRESHOLD_HOURS_H
#define THRESHOLD_HOURS_H

#include <stddef.h>
#include <stdint.h>

#define HOURS_MAX_RANGES   4   /* opening ranges per day */
#define HOURS_MAX_HOLIDAYS 400 /* closed dates */

/* One opening range of a day, minutes after midnight: [from, to), to <= 1440. */
struct hours_range {
	uint16_t from, to;
};

struct hours_spec {
	int set;                                     /* 0: no hours configured, always open */
	int offset_min;                              /* local time = UTC + offset_min */
	struct hours_range day[7][HOURS_MAX_RANGES]; /* [0] Monday ... [6] Sunday */
	unsigned nday[7];
	int32_t *holidays; /* local dates, as days since 1970-01-01; owned by the config */
	size_t nholidays;
};

/** The index 0..6 (Monday first) of a day name "mon".."sun" (or the full name), or -1. */
int hours_day_index(const char *name);

/**
 * Parse a day's hours: "09:00-17:00", "09:00-12:30, 13:30-17:00", "closed"
 * or "00:00-24:00".  @return 0 on success, -1 on anything else (ranges
 * out of order, overlapping, empty, more than HOURS_MAX_RANGES).
 */
int hours_parse_day(const char *text, struct hours_range out[HOURS_MAX_RANGES], unsigned *n);

/** Parse "+01:00", "-05:30", "+00:00", "UTC" or "Z" (-14:00..+14:00).  @return 0 or -1. */
int hours_parse_offset(const char *text, int *offset_min);

/** Parse a date "2026-12-25" into days since 1970-01-01.  @return 0 or -1. */
int hours_parse_date(const char *text, int32_t *days);

/**
 * Is the service open at @p now_ms (Unix ms)?
 * @param next_open_ms  optional out: when closed, the next moment it opens
 *                      (within 31 days), or 0 if it does not open in that time
 * @return 1 open, 0 closed.
 */
int hours_open(const struct hours_spec *h, uint64_t now_ms, uint64_t *next_open_ms);

#endif
