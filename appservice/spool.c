/*
 * spool.c - guests' files waiting to be uploaded, one file each in the
 * spool directory (spool.h).
 */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define SPOOL_SUBDIR "spool"

int spool_name_ok(const char *name)
{
	if (!name || strlen(name) != SPOOL_NAME_LEN)
		return 0;
	for (const char *p = name; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return 0;
	return 1;
}

char *spool_dir(const struct config *cfg)
{
	if (!cfg || !cfg->store_path || !*cfg->store_path)
		return NULL;
	return xasprintf("%s/%s", cfg->store_path, SPOOL_SUBDIR);
}

void spool_hash(const void *data, size_t len, char out[17])
{
	uint64_t h = th_fnv1a64(data, len);
	unsigned char b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(h >> (56 - 8 * i));
	th_hex(out, b, sizeof(b));
}

/* The directory, opened (created 0700 when @p create).  @return an fd or -1. */
static int dir_open(const char *dir, int create)
{
	if (create && mkdir(dir, 0700) != 0 && errno != EEXIST)
		return -1;
	return open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

static int errno_rc(int e)
{
	return e == ENOSPC || e == EDQUOT ? TH_EFULL : TH_EIO;
}

int spool_write(const struct config *cfg, const char *name, const void *data, size_t len)
{
	char *dir = spool_dir(cfg);
	if (!dir || !spool_name_ok(name)) {
		free(dir);
		return TH_EINVAL;
	}
	int rc = TH_OK, fd = -1;
	int dfd = dir_open(dir, 1);
	if (dfd < 0) {
		rc = errno_rc(errno);
		LOG(LOG_ERROR, "spool: cannot open %s: %s", dir, strerror(errno));
		goto out;
	}
	fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = errno == EEXIST ? TH_EEXIST : errno_rc(errno);
		LOG(LOG_ERROR, "spool: cannot create a file in %s: %s", dir, strerror(errno));
		goto out;
	}
	const unsigned char *p = data;
	size_t left = len;
	while (left) {
		ssize_t n = write(fd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = errno_rc(n < 0 ? errno : ENOSPC);
			goto fail;
		}
		p += n;
		left -= (size_t)n;
	}
	/* On disk before the commit that names it (spool.h). */
	if (fsync(fd) != 0 || fsync(dfd) != 0) {
		rc = errno_rc(errno);
		goto fail;
	}
	goto out;
fail:
	LOG(LOG_ERROR, "spool: writing a file in %s failed: %s", dir, strerror(errno));
	unlinkat(dfd, name, 0);
out:
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	free(dir);
	return rc;
}

int spool_read(const struct config *cfg, const char *name, uint64_t expect, const char *fnv,
               unsigned char **out, size_t *outlen)
{
	char *dir = spool_dir(cfg);
	if (!dir || !spool_name_ok(name)) {
		free(dir);
		return TH_EINVAL;
	}
	char *path = xasprintf("%s/%s", dir, name);
	free(dir);
	int rc = TH_OK;
	unsigned char *buf = NULL;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		rc = errno == ENOENT ? TH_ENOTFOUND : TH_EIO;
		goto out;
	}
	struct stat sb;
	if (fstat(fd, &sb) != 0) {
		rc = TH_EIO;
		goto out;
	}
	if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size != expect) {
		rc = TH_EVERIFY;
		goto out;
	}
	size_t len = (size_t)expect, got = 0;
	buf = xmalloc(len ? len : 1);
	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? TH_EIO : TH_EVERIFY;
			goto out;
		}
		got += (size_t)n;
	}
	if (fnv) {
		char h[17];
		spool_hash(buf, len, h);
		if (strcmp(h, fnv) != 0) {
			rc = TH_EVERIFY;
			goto out;
		}
	}
	*out = buf;
	*outlen = len;
	buf = NULL;
out:
	if (rc == TH_EVERIFY)
		LOG(LOG_ERROR, "spool: file %s is not what was written (damaged)", path);
	else if (rc == TH_EIO)
		LOG(LOG_ERROR, "spool: cannot read %s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	free(buf);
	free(path);
	return rc;
}

int spool_remove(const struct config *cfg, const char *name)
{
	char *dir = spool_dir(cfg);
	if (!dir || !spool_name_ok(name)) {
		free(dir);
		return TH_EINVAL;
	}
	char *path = xasprintf("%s/%s", dir, name);
	int rc = TH_OK;
	if (unlink(path) != 0 && errno != ENOENT) {
		LOG(LOG_ERROR, "spool: cannot remove %s: %s", path, strerror(errno));
		rc = TH_EIO;
	}
	free(path);
	free(dir);
	return rc;
}

/* Call @p fn for each spool name in the spool (stops at a nonzero return). */
static int spool_each(const struct config *cfg, int (*fn)(void *ctx, int dfd, const char *name), void *ctx,
                      size_t *strange)
{
	char *dir = spool_dir(cfg);
	if (!dir)
		return TH_OK;
	int dfd = dir_open(dir, 0);
	if (dfd < 0) {
		int e = errno;
		free(dir);
		return e == ENOENT ? TH_OK : TH_EIO;
	}
	free(dir);
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return TH_EIO;
	}
	int rc = TH_OK;
	struct dirent *de;
	while (!rc && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (!spool_name_ok(de->d_name)) {
			if (strange)
				(*strange)++;
			continue;
		}
		rc = fn(ctx, dirfd(d), de->d_name);
	}
	closedir(d);
	return rc < 0 ? TH_EIO : TH_OK;
}

static int add_size(void *ctx, int dfd, const char *name)
{
	struct stat sb;
	if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode))
		*(uint64_t *)ctx += (uint64_t)sb.st_size;
	return 0;
}

int spool_bytes(const struct config *cfg, uint64_t *out)
{
	uint64_t n = 0;
	int rc = spool_each(cfg, add_size, &n, NULL);
	if (!rc)
		*out = n;
	return rc;
}

struct sweep {
	int (*keep)(void *ctx, const char *name);
	void *ctx;
	size_t removed;
};

static int sweep_one(void *ctx, int dfd, const char *name)
{
	struct sweep *s = ctx;
	if (s->keep(s->ctx, name))
		return 0;
	if (unlinkat(dfd, name, 0) != 0 && errno != ENOENT)
		return -1;
	s->removed++;
	return 0;
}

int spool_sweep(const struct config *cfg, int (*keep)(void *ctx, const char *name), void *ctx,
                size_t *removed, size_t *strange)
{
	struct sweep s = {.keep = keep, .ctx = ctx};
	int rc = spool_each(cfg, sweep_one, &s, strange);
	if (removed)
		*removed = s.removed;
	return rc;
}
