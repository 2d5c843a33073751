/*
 * log.h - one logging module.  LOG() tests the level before formatting, so a
 * disabled debug line costs a comparison.  Never pass a token, a key, message
 * text or a guest's contact detail to LOG.
 */
#ifndef THRESHOLD_LOG_H
#define THRESHOLD_LOG_H

#include <stdarg.h>

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern enum log_level log_threshold;

/** Set the level by name ("error", "warn", "info", "debug"). @return 0 or -1. */
int log_set_level_name(const char *name);
const char *log_level_name(enum log_level level);

void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/**
 * libmicrohttpd's error logger (MHD_OPTION_EXTERNAL_LOGGER): one debug line
 * "<cls>: message", trailing newlines removed.
 * @param cls  a static label, e.g. "http"
 */
void log_mhd(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#define LOG(level, ...)                                  \
	do {                                             \
		if ((level) <= log_threshold)            \
			log_write((level), __VA_ARGS__); \
	} while (0)

#endif
