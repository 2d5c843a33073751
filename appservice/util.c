/* util.c - error names, aborting allocators, randomness, constant-time compare. */
#define _GNU_SOURCE
#include "util.h"

#include <pwd.h>
#include <unistd.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *const err_names[] = {
        [TH_OK] = "ok",
        [TH_ENOMEM] = "out of memory",
        [TH_EINVAL] = "invalid input",
        [TH_ETOOLARGE] = "input too large",
        [TH_ENOTFOUND] = "not found",
        [TH_EEXIST] = "already exists",
        [TH_EIO] = "input/output error",
        [TH_ESTORE] = "store error",
        [TH_EFULL] = "store full (map_size too small)",
        [TH_ECONFIG] = "configuration error",
        [TH_ENET] = "network error",
        [TH_ETIMEOUT] = "timed out",
        [TH_EHTTP] = "homeserver returned an error",
        [TH_ECRYPTO] = "cryptographic failure",
        [TH_EVERIFY] = "integrity check failed",
        [TH_ECANCELED] = "canceled",
};

const char *th_strerror(int err)
{
	if (err < 0 || (size_t)err >= sizeof(err_names) / sizeof(err_names[0]) || !err_names[err])
		return "unknown error";
	return err_names[err];
}

static void oom(size_t n)
{
	fprintf(stderr, "threshold: out of memory allocating %zu bytes\n", n);
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom(n);
	return p;
}

void *xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);
	if (!p)
		oom(n * m);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom(n);
	return q;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
	n = strnlen(s, n); /* like strndup: never reads past the string's end */
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	int r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		oom(0);
	return s;
}

int th_random(void *buf, size_t n)
{
	unsigned char *p = buf;
	while (n > 0) {
		ssize_t r = getrandom(p, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return TH_EIO;
		}
		p += r;
		n -= (size_t)r;
	}
	return TH_OK;
}

void th_hex(char *out, const void *in, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *p = in;
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

int th_random_hex(char *out, size_t n)
{
	unsigned char buf[64];
	if (n > sizeof(buf))
		return TH_EINVAL;
	int rc = th_random(buf, n);
	if (rc)
		return rc;
	th_hex(out, buf, n);
	explicit_bzero(buf, sizeof(buf));
	return TH_OK;
}

int th_consttime_eq(const void *a, size_t alen, const void *b, size_t blen)
{
	/* Walk the full length of @a whatever @b is, so the time leaks only alen. */
	const volatile unsigned char *x = a, *y = b;
	unsigned char diff = (unsigned char)(alen != blen);
	for (size_t i = 0; i < alen; i++)
		diff |= (unsigned char)(x[i] ^ (blen ? y[i % blen] : 0));
	return diff == 0;
}

uint64_t th_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t th_mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t th_mono_ms(void)
{
	return th_mono_us() / 1000u;
}

int th_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	if (!s || !*s)
		return TH_EINVAL;
	uint64_t v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return TH_EINVAL;
		unsigned d = (unsigned)(*p - '0');
		if (d > max || v > (max - d) / 10)
			return TH_EINVAL;
		v = v * 10 + d;
	}
	*out = v;
	return TH_OK;
}

int th_write_file_atomic(const char *path, const void *buf, size_t len, unsigned mode)
{
	char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
	int rc = TH_EIO;
	/* A stale file of ours goes; one put there since (a link to elsewhere)
	 * makes the open fail rather than be followed or written through. */
	unlink(tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		goto out;
	const char *p = buf;
	size_t left = len;
	while (left > 0) {
		ssize_t w = write(fd, p, left);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			unlink(tmp);
			goto out;
		}
		p += w;
		left -= (size_t)w;
	}
	if (fsync(fd) != 0 || close(fd) != 0) {
		unlink(tmp);
		goto out;
	}
	if (rename(tmp, path) != 0) {
		unlink(tmp);
		goto out;
	}
	rc = TH_OK;
out:
	free(tmp);
	return rc;
}

uint64_t th_fnv1a64_update(uint64_t h, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

uint64_t th_fnv1a64(const void *buf, size_t len)
{
	return th_fnv1a64_update(TH_FNV1A64_INIT, buf, len);
}

char *th_cli_actor(void)
{
	struct passwd *pw = getpwuid(geteuid());
	if (pw && pw->pw_name)
		return xasprintf("cli:%.64s", pw->pw_name);
	return xasprintf("cli:uid%u", (unsigned)geteuid());
}

int th_private_mode_ok(unsigned mode, char *why, size_t whylen)
{
	if (!S_ISREG(mode)) {
		snprintf(why, whylen, "is not a regular file");
		return TH_ECONFIG;
	}
	if (mode & 077) {
		snprintf(why, whylen, "is readable or writable by group or others (mode %04o): chmod 600 it",
		         mode & 07777);
		return TH_ECONFIG;
	}
	return TH_OK;
}

int th_private_file_check(const char *path, char *why, size_t whylen)
{
	struct stat st;
	if (lstat(path, &st) != 0) {
		int e = errno;
		snprintf(why, whylen, "cannot be read: %s", strerror(e));
		return e == ENOENT ? TH_ENOTFOUND : TH_ECONFIG;
	}
	return th_private_mode_ok(st.st_mode, why, whylen);
}
