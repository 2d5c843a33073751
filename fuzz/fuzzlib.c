/* fuzzlib.c - see fuzzlib.h. */
#define _GNU_SOURCE /* memfd_create */
#include "fuzzlib.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sanitizer/common_interface_defs.h>

#include "log.h"
#include "util.h"

const char *fuzz_input_path(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static char path[64];
	if (fd < 0) {
		fd = memfd_create("fuzz-input", 0);
		if (fd < 0) {
			perror("memfd_create");
			abort();
		}
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	}
	if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) {
		perror("fuzz input");
		abort();
	}
	return path;
}

static char *scratch;

static void scratch_remove(void)
{
	fuzz_empty_dir(scratch);
	rmdir(scratch);
}

const char *fuzz_scratch_dir(void)
{
	char *dir = scratch;
	if (!dir) {
		const char *tmp = getenv("TMPDIR");
		struct stat sb;
		if (!tmp || !*tmp)
			tmp = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) ? "/dev/shm" : "/tmp";
		dir = xasprintf("%s/threshold-fuzz-XXXXXX", tmp);
		if (!mkdtemp(dir)) {
			perror("mkdtemp");
			abort();
		}
		scratch = dir;
		atexit(scratch_remove); /* a crash leaves it, with the input's state */
	}
	return dir;
}

void fuzz_empty_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char *p = xasprintf("%s/%s", dir, e->d_name);
		struct stat sb;
		if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
			fuzz_empty_dir(p);
			rmdir(p);
		} else {
			unlink(p);
		}
		free(p);
	}
	closedir(d);
}

void fuzz_quiet(void)
{
	const char *level = getenv("THRESHOLD_FUZZ_LOG"); /* e.g. "debug", to see one input's path */
	if (!level || log_set_level_name(level) != 0)
		log_threshold = LOG_ERROR;
}

void fuzz_fail(const char *fmt, ...)
{
	char msg[1024];
	int n = snprintf(msg, sizeof(msg), "invariant broken: ");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	/* Through the sanitizers' report channel: still printed under -close_fd_mask=2. */
	__sanitizer_report_error_summary(msg);
	abort();
}
