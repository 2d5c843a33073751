/* testlib.c - assertion counters and temp-directory helpers for unit tests. */
#define _XOPEN_SOURCE 700
#include "testlib.h"

#include <ftw.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "util.h"

int test_failures;
int test_checks;

int test_done(const char *name)
{
	const char *base = strrchr(name, '/');
	base = base ? base + 1 : name;
	printf("%s: %d checks, %d failed\n", base, test_checks, test_failures);
	return test_failures ? 1 : 0;
}

char *test_tmpdir(void)
{
	const char *tmp = getenv("TMPDIR");
	char *tmpl = xasprintf("%s/threshold-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(tmpl)) {
		perror("mkdtemp");
		abort();
	}
	return tmpl;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void test_rmtree(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *test_write_file(const char *dir, const char *name, const char *text)
{
	char *path = xasprintf("%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		abort();
	}
	fputs(text, f);
	fclose(f);
	return path;
}

void test_config_init(struct config *cfg, const char *dir)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->hs_url = xstrdup("http://127.0.0.1:1");
	cfg->server_name = xstrdup("test.local");
	cfg->as_id = xstrdup("threshold");
	cfg->listen_address = xstrdup("127.0.0.1");
	cfg->listen_port = 0;
	cfg->as_url = xstrdup("http://127.0.0.1:0");
	cfg->registration = xasprintf("%s/registration.yaml", dir);
	cfg->bot_localpart = xstrdup("threshold");
	cfg->bot_displayname = xstrdup("Threshold");
	cfg->guest_prefix = xstrdup("guest_");
	cfg->max_body_bytes = 1048576;
	cfg->max_json_depth = 16;
	cfg->store_path = xasprintf("%s/store", dir);
	cfg->map_size_mb = 64;
	cfg->dedupe_retention_days = 7;
	cfg->client_timeout_ms = 2000;
	cfg->client_connect_timeout_ms = 1000;
	cfg->outbox_max_backoff_ms = 2000;
	cfg->log_level = xstrdup("warn");
	cfg->audit_key_path = xasprintf("%s/audit-signing.key", dir);
	cfg->audit_checkpoint_every = 1000;
	cfg->audit_checkpoint_seconds = 300;
	cfg->as_token = xstrdup("as_secret_token_0123");
	cfg->hs_token = xstrdup("hs_secret_token_0123");
	cfg->bot_user_id = xstrdup("@threshold:test.local");
	cfg->staff.v = xcalloc(1, sizeof(char *));
	cfg->staff.v[0] = xstrdup("@staff:test.local");
	cfg->staff.n = 1;
	cfg->staff_power = 50;
	cfg->path = xasprintf("%s/config.yaml", dir);
}

void test_env_open(struct test_env *e)
{
	memset(e, 0, sizeof(*e));
	e->dir = test_tmpdir();
	test_config_init(&e->cfg, e->dir);
	CHECK_EQ_INT(store_open(e->cfg.store_path, e->cfg.map_size_mb, &e->st), TH_OK);
	CHECK_EQ_INT(audit_open_config(e->st, &e->cfg, &e->au), TH_OK);
}

void test_env_close(struct test_env *e)
{
	audit_close(e->au);
	store_close(e->st);
	test_rmtree(e->dir);
	config_free(&e->cfg);
	free(e->dir);
}
