/*
 * test_spool.c - the spool of guests' files waiting to upload (spool.h):
 * files are new and private, a link or a name from elsewhere is never
 * followed, a damaged file is told apart, the sweep keeps what is named.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "spool.h"
#include "testlib.h"
#include "util.h"

static const char *const A = "0123456789abcdef0123456789abcdef";
static const char *const B = "fedcba9876543210fedcba9876543210";

static int keep_a(void *ctx, const char *name)
{
	(void)ctx;
	return strcmp(name, A) == 0;
}

int main(void)
{
	log_threshold = LOG_ERROR;
	char *root = test_tmpdir();
	struct config cfg;
	test_config_init(&cfg, root);
	char *dir = spool_dir(&cfg);
	CHECK(dir != NULL);
	CHECK_EQ_INT(mkdir(cfg.store_path, 0700), 0); /* store_open makes it */

	/* Names: 32 lowercase hex digits, nothing else. */
	CHECK(spool_name_ok(A));
	CHECK(!spool_name_ok("0123456789ABCDEF0123456789abcdef"));
	CHECK(!spool_name_ok("../../../../../../../etc/passwd"));
	CHECK(!spool_name_ok("0123456789abcdef0123456789abcde"));
	CHECK_EQ_INT(spool_write(&cfg, "../x", "x", 1), TH_EINVAL);

	/* Written whole, 0600, in a 0700 directory; a second write of the name is refused. */
	uint64_t n = 1;
	CHECK_EQ_INT(spool_bytes(&cfg, &n), TH_OK); /* no spool yet */
	CHECK_EQ_INT((int)n, 0);
	CHECK_EQ_INT(spool_write(&cfg, A, "hello world", 11), TH_OK);
	char *path = xasprintf("%s/%s", dir, A);
	struct stat sb;
	CHECK_EQ_INT(lstat(path, &sb), 0);
	CHECK_EQ_INT((int)(sb.st_mode & 07777), 0600);
	CHECK_EQ_INT(stat(dir, &sb), 0);
	CHECK_EQ_INT((int)(sb.st_mode & 07777), 0700);
	CHECK_EQ_INT(spool_write(&cfg, A, "again", 5), TH_EEXIST);
	char h[17];
	spool_hash("hello world", 11, h);
	unsigned char *out = NULL;
	size_t len = 0;
	CHECK_EQ_INT(spool_read(&cfg, A, 11, h, &out, &len), TH_OK);
	CHECK(len == 11 && memcmp(out, "hello world", 11) == 0);
	free(out);
	/* Damaged: another length, or other bytes of the same length. */
	CHECK_EQ_INT(spool_read(&cfg, A, 12, h, &out, &len), TH_EVERIFY);
	int fd = open(path, O_WRONLY);
	CHECK(fd >= 0 && write(fd, "J", 1) == 1);
	close(fd);
	CHECK_EQ_INT(spool_read(&cfg, A, 11, h, &out, &len), TH_EVERIFY);
	CHECK_EQ_INT(spool_read(&cfg, B, 11, NULL, &out, &len), TH_ENOTFOUND);

	/* A link planted under a spool name is neither written through nor read. */
	char *target = xasprintf("%s/target", root);
	char *link = xasprintf("%s/%s", dir, B);
	free(test_write_file(root, "target", "secret"));
	CHECK_EQ_INT(symlink(target, link), 0);
	CHECK(spool_write(&cfg, B, "x", 1) != TH_OK);
	CHECK(spool_read(&cfg, B, 6, NULL, &out, &len) != TH_OK);
	FILE *f = fopen(target, "r");
	char buf[16] = {0};
	CHECK(f && fread(buf, 1, sizeof(buf) - 1, f) == 6 && strcmp(buf, "secret") == 0);
	if (f)
		fclose(f);
	CHECK_EQ_INT(unlink(link), 0);

	/* Bytes held; the sweep keeps what is named and what is not a spool name. */
	CHECK_EQ_INT(spool_write(&cfg, B, "1234", 4), TH_OK);
	free(test_write_file(dir, "notes.txt", "not ours"));
	CHECK_EQ_INT(spool_bytes(&cfg, &n), TH_OK);
	CHECK_EQ_INT((int)n, 15);
	size_t removed = 0, strange = 0;
	CHECK_EQ_INT(spool_sweep(&cfg, keep_a, NULL, &removed, &strange), TH_OK);
	CHECK_EQ_INT((int)removed, 1);
	CHECK_EQ_INT((int)strange, 1);
	CHECK_EQ_INT(access(path, F_OK), 0);
	CHECK(access(link, F_OK) != 0 && errno == ENOENT);
	CHECK_EQ_INT(spool_remove(&cfg, A), TH_OK);
	CHECK_EQ_INT(spool_remove(&cfg, A), TH_OK); /* already gone: fine */
	CHECK_EQ_INT(spool_bytes(&cfg, &n), TH_OK);
	CHECK_EQ_INT((int)n, 0);

	free(link);
	free(target);
	free(path);
	free(dir);
	config_free(&cfg);
	test_rmtree(root);
	free(root);
	return TEST_DONE();
}
