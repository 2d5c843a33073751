/*
 * testlib.h - the few assertions unit tests need.  A failed CHECK prints the
 * file, line and expression and marks the test failed; the test goes on so
 * one run shows every failure.  Each test binary ends with TEST_DONE().
 */
#ifndef THRESHOLD_TESTLIB_H
#define THRESHOLD_TESTLIB_H

#include <stdio.h>
#include <string.h>

extern int test_failures;
extern int test_checks;

#define CHECK(expr)                                                                              \
	do {                                                                                     \
		test_checks++;                                                                   \
		if (!(expr)) {                                                                   \
			test_failures++;                                                         \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #expr); \
		}                                                                                \
	} while (0)

#define CHECK_EQ_INT(a, b)                                                                          \
	do {                                                                                        \
		long long a_ = (long long)(a), b_ = (long long)(b);                                 \
		test_checks++;                                                                      \
		if (a_ != b_) {                                                                     \
			test_failures++;                                                            \
			fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__, \
			        __LINE__, #a, #b, a_, b_);                                          \
		}                                                                                   \
	} while (0)

#define CHECK_STR(a, b)                                                                                 \
	do {                                                                                            \
		const char *a_ = (a), *b_ = (b);                                                        \
		test_checks++;                                                                          \
		if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                                \
			test_failures++;                                                                \
			fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n", __FILE__, \
			        __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");              \
		}                                                                                       \
	} while (0)

/** Print a summary and return the process exit code. */
int test_done(const char *name);
#define TEST_DONE() test_done(__FILE__)

/** A fresh empty directory under $TMPDIR (caller frees; removed by test_rmtree). */
char *test_tmpdir(void);
void test_rmtree(const char *path);
/** Write @p text to @p dir/@p name; returns the new path (caller frees). */
char *test_write_file(const char *dir, const char *name, const char *text);

struct config;
/**
 * Fill @p cfg as config_load would for a homeserver "test.local" with the
 * store in @p dir/store, tokens "as_secret_token_0123" / "hs_secret_token_0123",
 * listen port 0 (any free port), and one staff member, @staff:test.local.
 * Free with config_free().
 */
void test_config_init(struct config *cfg, const char *dir);

#include "audit.h"
#include "config.h"
#include "store.h"

/* A config (test_config_init), a store and an audit log in a fresh directory. */
struct test_env {
	char *dir;
	struct config cfg;
	store *st;
	audit *au;
};

/** Open @p e; a failure is a failed CHECK. */
void test_env_open(struct test_env *e);
/** Close @p e and remove its directory. */
void test_env_close(struct test_env *e);
#endif
