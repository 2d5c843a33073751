/*
 * hours.c - opening hours (hours.h).
 */
#include "hours.h"

#include <string.h>

static const char *const day_names[7] = {"monday", "tuesday",  "wednesday", "thursday",
                                         "friday", "saturday", "sunday"};

int hours_day_index(const char *name)
{
	size_t n = strlen(name);
	for (int i = 0; i < 7; i++) {
		if ((n == 3 || n == strlen(day_names[i])) && strncmp(name, day_names[i], n) == 0)
			return i;
	}
	return -1;
}

static int digits(const char **p, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if ((*p)[i] < '0' || (*p)[i] > '9')
			return -1;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return 0;
}

/* "HH:MM", 00:00..24:00, into minutes. */
static int clock_time(const char **p, int *min)
{
	int h, m;
	if (digits(p, 2, &h) || **p != ':')
		return -1;
	(*p)++;
	if (digits(p, 2, &m) || h > 24 || m > 59 || (h == 24 && m))
		return -1;
	*min = h * 60 + m;
	return 0;
}

static void spaces(const char **p)
{
	while (**p == ' ')
		(*p)++;
}

int hours_parse_day(const char *text, struct hours_range out[HOURS_MAX_RANGES], unsigned *n)
{
	const char *p = text;
	*n = 0;
	spaces(&p);
	if (strcmp(p, "closed") == 0)
		return 0;
	int last = -1;
	for (;;) {
		int from, to;
		spaces(&p);
		if (clock_time(&p, &from))
			return -1;
		spaces(&p);
		if (*p++ != '-')
			return -1;
		spaces(&p);
		if (clock_time(&p, &to) || to <= from || from < last || *n == HOURS_MAX_RANGES)
			return -1;
		out[*n].from = (uint16_t)from;
		out[*n].to = (uint16_t)to;
		(*n)++;
		last = to;
		spaces(&p);
		if (!*p)
			return 0;
		if (*p++ != ',')
			return -1;
	}
}

int hours_parse_offset(const char *text, int *offset_min)
{
	if (!strcmp(text, "UTC") || !strcmp(text, "Z")) {
		*offset_min = 0;
		return 0;
	}
	const char *p = text;
	int sign = *p == '+' ? 1 : *p == '-' ? -1 : 0;
	int h, m;
	if (!sign)
		return -1;
	p++;
	if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &m) || *p || m > 59 || h * 60 + m > 14 * 60)
		return -1;
	*offset_min = sign * (h * 60 + m);
	return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int32_t days_from_civil(int y, int m, int d)
{
	y -= m <= 2;
	int era = (y >= 0 ? y : y - 399) / 400;
	int yoe = y - era * 400;
	int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

int hours_parse_date(const char *text, int32_t *days)
{
	const char *p = text;
	int y, m, d;
	if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &m) || *p++ != '-' || digits(&p, 2, &d) || *p ||
	    y < 1970 || m < 1 || m > 12 || d < 1)
		return -1;
	static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	if (d > mdays[m - 1] || (m == 2 && d == 29 && !leap))
		return -1;
	*days = days_from_civil(y, m, d);
	return 0;
}

static int holiday(const struct hours_spec *h, int64_t day)
{
	for (size_t i = 0; i < h->nholidays; i++) {
		if (h->holidays[i] == day)
			return 1;
	}
	return 0;
}

#define DAY_MS 86400000ll

int hours_open(const struct hours_spec *h, uint64_t now_ms, uint64_t *next_open_ms)
{
	if (next_open_ms)
		*next_open_ms = 0;
	if (!h->set)
		return 1;
	int64_t local = (int64_t)now_ms + (int64_t)h->offset_min * 60000ll;
	int64_t day = local >= 0 ? local / DAY_MS : (local - DAY_MS + 1) / DAY_MS;
	int64_t minute = (local - day * DAY_MS) / 60000ll;
	/* 1970-01-01 was a Thursday: index 3 with Monday 0. */
	for (int64_t k = 0; k <= 31; k++) {
		int64_t d = day + k;
		int wd = (int)(((d % 7) + 7 + 3) % 7);
		if (holiday(h, d))
			continue;
		for (unsigned r = 0; r < h->nday[wd]; r++) {
			const struct hours_range *rg = &h->day[wd][r];
			if (k == 0 && minute >= rg->from && minute < rg->to)
				return 1;
			if (k == 0 && minute >= rg->from)
				continue; /* already past today */
			if (next_open_ms) {
				int64_t at = (d * DAY_MS + (int64_t)rg->from * 60000ll) -
				             (int64_t)h->offset_min * 60000ll;
				*next_open_ms = at > 0 ? (uint64_t)at : 0;
			}
			return 0;
		}
	}
	return 0;
}
