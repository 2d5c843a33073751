/*
 * fuzzlib.h - what the fuzz targets share: the input as a file that code
 * reading paths can open, a scratch directory, a quiet log, and the abort
 * that turns a broken invariant into a finding.
 */
#ifndef THRESHOLD_FUZZLIB_H
#define THRESHOLD_FUZZLIB_H

#include <stddef.h>
#include <stdint.h>

/**
 * A path ("/proc/self/fd/N", a memfd) whose content is exactly @p data.
 * The file is reused: the path is valid until the next call.
 */
const char *fuzz_input_path(const uint8_t *data, size_t size);

/** A directory made once per process under $TMPDIR (default /dev/shm, then /tmp). */
const char *fuzz_scratch_dir(void);

/** Remove everything inside @p dir, keeping @p dir. */
void fuzz_empty_dir(const char *dir);

/** Log errors only, so a run is not drowned in the daemon's warnings
 * ($THRESHOLD_FUZZ_LOG names another level, to follow one input). */
void fuzz_quiet(void);

/** Print "invariant broken: <what>" and abort: libFuzzer saves the input. */
void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define FUZZ_ASSERT(cond, ...)                  \
	do {                                    \
		if (!(cond))                    \
			fuzz_fail(__VA_ARGS__); \
	} while (0)

#endif
