/*
 * test_util.c - util.c's small pieces: constant-time compare, number parsing,
 * hex and randomness, the FNV-1a hash and atomic file writes.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cs.h"
#include "testlib.h"
#include "util.h"

static void test_consttime_eq(void)
{
	CHECK_EQ_INT(th_consttime_eq("secret", 6, "secret", 6), 1);
	CHECK_EQ_INT(th_consttime_eq("secret", 6, "Secret", 6), 0); /* first byte */
	CHECK_EQ_INT(th_consttime_eq("secret", 6, "secreT", 6), 0); /* last byte */
	CHECK_EQ_INT(th_consttime_eq("secret", 6, "secrets", 7), 0);
	CHECK_EQ_INT(th_consttime_eq("secrets", 7, "secret", 6), 0);
	/* b repeated to a's length must still differ: the length counts. */
	CHECK_EQ_INT(th_consttime_eq("abab", 4, "ab", 2), 0);
	CHECK_EQ_INT(th_consttime_eq("", 0, "", 0), 1);
	CHECK_EQ_INT(th_consttime_eq("", 0, "x", 1), 0);
	CHECK_EQ_INT(th_consttime_eq("x", 1, "", 0), 0);
	/* Embedded NULs are bytes like any other. */
	CHECK_EQ_INT(th_consttime_eq("a\0b", 3, "a\0c", 3), 0);
	CHECK_EQ_INT(th_consttime_eq("a\0b", 3, "a\0b", 3), 1);
}

static void test_parse_u64(void)
{
	uint64_t v = 7;
	CHECK_EQ_INT(th_parse_u64("0", UINT64_MAX, &v), TH_OK);
	CHECK_EQ_INT(v, 0);
	CHECK_EQ_INT(th_parse_u64("29333", UINT64_MAX, &v), TH_OK);
	CHECK_EQ_INT(v, 29333);
	CHECK_EQ_INT(th_parse_u64("007", UINT64_MAX, &v), TH_OK);
	CHECK_EQ_INT(v, 7);

	/* Failures leave the out-pointer alone. */
	v = 42;
	CHECK_EQ_INT(th_parse_u64("", UINT64_MAX, &v), TH_EINVAL);
	CHECK_EQ_INT(th_parse_u64(NULL, UINT64_MAX, &v), TH_EINVAL);
	CHECK_EQ_INT(th_parse_u64("12a", UINT64_MAX, &v), TH_EINVAL);
	CHECK_EQ_INT(th_parse_u64("abc", UINT64_MAX, &v), TH_EINVAL);
	CHECK_EQ_INT(th_parse_u64(" 1", UINT64_MAX, &v), TH_EINVAL);
	CHECK_EQ_INT(th_parse_u64("1 ", UINT64_MAX, &v), TH_EINVAL);
	CHECK_EQ_INT(th_parse_u64("1.5", UINT64_MAX, &v), TH_EINVAL);
	CHECK_EQ_INT(th_parse_u64("0x10", UINT64_MAX, &v), TH_EINVAL);
	CHECK_EQ_INT(th_parse_u64("-1", UINT64_MAX, &v), TH_EINVAL);
	CHECK_EQ_INT(th_parse_u64("+1", UINT64_MAX, &v), TH_EINVAL);
	CHECK_EQ_INT(v, 42);

	/* The largest uint64_t parses; one more overflows. */
	CHECK_EQ_INT(th_parse_u64("18446744073709551615", UINT64_MAX, &v), TH_OK);
	CHECK(v == UINT64_MAX);
	v = 42;
	CHECK_EQ_INT(th_parse_u64("18446744073709551616", UINT64_MAX, &v), TH_EINVAL);
	CHECK_EQ_INT(th_parse_u64("99999999999999999999", UINT64_MAX, &v), TH_EINVAL);
	CHECK_EQ_INT(v, 42);

	/* A smaller max is inclusive. */
	CHECK_EQ_INT(th_parse_u64("100", 100, &v), TH_OK);
	CHECK_EQ_INT(v, 100);
	CHECK_EQ_INT(th_parse_u64("101", 100, &v), TH_EINVAL);
	CHECK_EQ_INT(th_parse_u64("1000", 100, &v), TH_EINVAL);
	/* A max below 9: a single digit over it must not wrap the bound. */
	CHECK_EQ_INT(th_parse_u64("5", 5, &v), TH_OK);
	CHECK_EQ_INT(v, 5);
	v = 42;
	CHECK_EQ_INT(th_parse_u64("7", 5, &v), TH_EINVAL);
	CHECK_EQ_INT(th_parse_u64("07", 5, &v), TH_EINVAL);
	CHECK_EQ_INT(th_parse_u64("1", 0, &v), TH_EINVAL);
	CHECK_EQ_INT(v, 42);
}

static int all_lower_hex(const char *s)
{
	for (; *s; s++) {
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return 0;
	}
	return 1;
}

static void test_random_hex(void)
{
	char a[65], b[65];
	CHECK_EQ_INT(th_random_hex(a, 32), TH_OK);
	CHECK_EQ_INT(th_random_hex(b, 32), TH_OK);
	CHECK_EQ_INT(strlen(a), 64);
	CHECK_EQ_INT(strlen(b), 64);
	CHECK(all_lower_hex(a));
	CHECK(all_lower_hex(b));
	CHECK(strcmp(a, b) != 0);

	char big[129];
	CHECK_EQ_INT(th_random_hex(big, 64), TH_OK);
	CHECK_EQ_INT(strlen(big), 128);
	CHECK_EQ_INT(th_random_hex(big, 65), TH_EINVAL);

	char none[1] = {'x'};
	CHECK_EQ_INT(th_random_hex(none, 0), TH_OK);
	CHECK_STR(none, "");
}

static void test_hex(void)
{
	static const unsigned char in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
	char out[2 * sizeof(in) + 1];
	th_hex(out, in, sizeof(in));
	CHECK_STR(out, "00017f80abff");
	th_hex(out, in, 0);
	CHECK_STR(out, "");
}

static void test_fnv1a64(void)
{
	/* Known vectors of 64-bit FNV-1a. */
	CHECK(th_fnv1a64("", 0) == 0xcbf29ce484222325ull);
	CHECK(th_fnv1a64("a", 1) == 0xaf63dc4c8601ec8cull);
	CHECK(th_fnv1a64("foobar", 6) == 0x85944171f73967e8ull);
	CHECK(th_fnv1a64("ab", 2) != th_fnv1a64("ba", 2));
}

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char buf[256];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	return xstrndup(buf, n);
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	int n = 0;
	if (!d)
		return -1;
	for (struct dirent *e; (e = readdir(d));) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	}
	closedir(d);
	return n;
}

static void test_write_file_atomic(void)
{
	char *dir = test_tmpdir();
	char *path = xasprintf("%s/secret.yaml", dir);
	struct stat sb;

	CHECK_EQ_INT(th_write_file_atomic(path, "first\n", 6, 0600), TH_OK);
	char *text = read_all(path);
	CHECK_STR(text, "first\n");
	free(text);
	CHECK_EQ_INT(stat(path, &sb), 0);
	CHECK_EQ_INT(sb.st_mode & 07777, 0600);

	/* Replacing keeps the mode and leaves no temporary file behind. */
	CHECK_EQ_INT(th_write_file_atomic(path, "second", 6, 0600), TH_OK);
	text = read_all(path);
	CHECK_STR(text, "second");
	free(text);
	CHECK_EQ_INT(stat(path, &sb), 0);
	CHECK_EQ_INT(sb.st_mode & 07777, 0600);
	CHECK_EQ_INT(count_entries(dir), 1);

	/* An empty buffer makes an empty file. */
	CHECK_EQ_INT(th_write_file_atomic(path, "", 0, 0600), TH_OK);
	CHECK_EQ_INT(stat(path, &sb), 0);
	CHECK_EQ_INT(sb.st_size, 0);

	/* A link planted at the temporary name is never written through: the
	 * file it points at keeps its bytes. */
	char *victim = xasprintf("%s/victim", dir);
	char *tmpname = xasprintf("%s.tmp.%ld", path, (long)getpid());
	CHECK_EQ_INT(th_write_file_atomic(victim, "untouched", 9, 0600), TH_OK);
	CHECK_EQ_INT(symlink(victim, tmpname), 0);
	CHECK_EQ_INT(th_write_file_atomic(path, "third", 5, 0600), TH_OK);
	text = read_all(victim);
	CHECK_STR(text, "untouched");
	free(text);
	text = read_all(path);
	CHECK_STR(text, "third");
	free(text);
	unlink(victim);
	free(victim);
	free(tmpname);

	char *nodir = xasprintf("%s/missing/secret.yaml", dir);
	CHECK_EQ_INT(th_write_file_atomic(nodir, "x", 1, 0600), TH_EIO);
	free(nodir);

	test_rmtree(dir);
	free(path);
	free(dir);
}

static void test_strerror(void)
{
	CHECK_STR(th_strerror(TH_OK), "ok");
	CHECK_STR(th_strerror(TH_EEXIST), "already exists");
	CHECK_STR(th_strerror(TH_ECRYPTO), "cryptographic failure");
	CHECK_STR(th_strerror(-1), "unknown error");
	CHECK_STR(th_strerror(TH_EVERIFY), "integrity check failed");
	CHECK_STR(th_strerror(TH_ECANCELED), "canceled");
	CHECK_STR(th_strerror(TH_ECANCELED + 1), "unknown error");
}

/* Which homeservers refuse invites to a guest who blocks them: spec v1.18
 * or later, or the unstable flag Synapse 1.149 to 1.160 advertise (with
 * versions only up to v1.12). */
static void test_versions_invite_blocking(void)
{
	static const struct {
		const char *json, *why;
	} cases[] = {
	        {"{\"versions\":[\"v1.11\",\"v1.12\"],\"unstable_features\":{\"org.matrix.msc4380.stable\":"
	         "true}}",
	         "org.matrix.msc4380.stable"},
	        {"{\"versions\":[\"v1.12\",\"v1.18\"]}", "spec v1.18"},
	        {"{\"versions\":[\"v1.21\"]}", "spec v1.18"},
	        {"{\"versions\":[\"v1.12\"],\"unstable_features\":{\"org.matrix.msc4380.stable\":false}}",
	         NULL},
	        {"{\"versions\":[\"v1.1\",\"v1.180x\",\"v1.8\",7]}", NULL},
	        {"{\"versions\":\"v1.18\"}", NULL},
	        {"{}", NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *j = json_loads(cases[i].json, 0, NULL);
		CHECK(j != NULL);
		const char *why = "x";
		CHECK_EQ_INT(cs_versions_invite_blocking(j, &why), cases[i].why != NULL);
		if (cases[i].why)
			CHECK_STR(why, cases[i].why);
		else
			CHECK(why == NULL);
		json_decref(j);
	}
}

int main(void)
{
	test_consttime_eq();
	test_versions_invite_blocking();
	test_parse_u64();
	test_random_hex();
	test_hex();
	test_fnv1a64();
	test_write_file_atomic();
	test_strerror();
	return TEST_DONE();
}
