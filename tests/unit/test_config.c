/*
 * test_config.c - config_load's defaults and its errors, which must name the
 * file, the line and the key; the registration file written and read back;
 * and the user namespace regex agreeing with config_user_in_namespace().
 */
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "retention.h"
#include "testlib.h"
#include "util.h"

static char *dir; /* this run's temporary directory */

/* Write @text as dir/config.yaml and load it; @err gets the error text. */
static int load_text(const char *text, struct config *cfg, char *err, size_t errlen)
{
	char *path = test_write_file(dir, "config.yaml", text);
	err[0] = '\0';
	int rc = config_load(path, cfg, err, errlen);
	free(path);
	return rc;
}

/* A count-and-report check that names the calling line, not this file's. */
static void expect(int ok, int at, const char *what, const char *err)
{
	test_checks++;
	if (!ok) {
		test_failures++;
		fprintf(stderr, "%s:%d: CHECK failed: %s (error text: \"%s\")\n", __FILE__, at, what, err);
	}
}

/*
 * Load @text and expect TH_ECONFIG with an error that starts
 * "<path>:<line>: " (just "<path>: " when @line is 0) and holds @needle1
 * and @needle2 (either may be NULL).  The out-struct must be left alone.
 */
static void expect_error_at(int at, const char *text, int line, const char *needle1, const char *needle2)
{
	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.listen_port = 4242; /* a sentinel: written only on success */
	char err[768];
	int rc = load_text(text, &cfg, err, sizeof(err));
	expect(rc == TH_ECONFIG, at, "config_load returns TH_ECONFIG", err);
	expect(cfg.listen_port == 4242 && cfg.hs_url == NULL, at, "out left alone on failure", err);

	char *prefix =
	        line ? xasprintf("%s/config.yaml:%d: ", dir, line) : xasprintf("%s/config.yaml: ", dir);
	expect(strncmp(err, prefix, strlen(prefix)) == 0, at, "error starts with path and line", err);
	if (strncmp(err, prefix, strlen(prefix)) != 0)
		fprintf(stderr, "    wanted the prefix \"%s\"\n", prefix);
	free(prefix);
	if (needle1)
		expect(strstr(err, needle1) != NULL, at, needle1, err);
	if (needle2)
		expect(strstr(err, needle2) != NULL, at, needle2, err);
	if (rc == TH_OK)
		config_free(&cfg);
}
#define EXPECT_ERROR(text, line, needle1, needle2) expect_error_at(__LINE__, text, line, needle1, needle2)

/* The required keys and nothing else; line numbers below count from here. */
#define MINIMAL_HS                        \
	"homeserver:\n"                   \
	"  url: http://127.0.0.1:8008/\n" \
	"  server_name: example.org\n"
#define MINIMAL_REST                                         \
	"appservice:\n"                                      \
	"  registration: /etc/threshold/registration.yaml\n" \
	"store:\n"                                           \
	"  path: /var/lib/threshold/store\n"
#define MINIMAL MINIMAL_HS MINIMAL_REST

static void test_minimal_defaults(void)
{
	struct config cfg;
	char err[768];
	CHECK_EQ_INT(load_text(MINIMAL, &cfg, err, sizeof(err)), TH_OK);
	CHECK_STR(err, "");
	CHECK_STR(cfg.hs_url, "http://127.0.0.1:8008"); /* trailing slash dropped */
	CHECK_STR(cfg.server_name, "example.org");
	CHECK_STR(cfg.as_id, "threshold");
	CHECK_STR(cfg.listen_address, "127.0.0.1");
	CHECK_EQ_INT(cfg.listen_port, 29333);
	CHECK_STR(cfg.as_url, "http://127.0.0.1:29333");
	CHECK_STR(cfg.registration, "/etc/threshold/registration.yaml");
	CHECK_STR(cfg.bot_localpart, "threshold");
	CHECK_STR(cfg.bot_displayname, "Threshold");
	CHECK_STR(cfg.guest_prefix, "guest_");
	CHECK_EQ_INT(cfg.max_body_bytes, 8388608);
	CHECK_EQ_INT(cfg.max_json_depth, 64);
	CHECK_STR(cfg.store_path, "/var/lib/threshold/store");
	CHECK_EQ_INT(cfg.map_size_mb, 1024);
	CHECK_EQ_INT(cfg.dedupe_retention_days, 7);
	CHECK_EQ_INT(cfg.client_timeout_ms, 30000);
	CHECK_EQ_INT(cfg.client_connect_timeout_ms, 5000);
	CHECK_EQ_INT(cfg.outbox_max_backoff_ms, 60000);
	CHECK_STR(cfg.log_level, "info");
	CHECK_STR(cfg.bot_user_id, "@threshold:example.org");
	CHECK(cfg.as_token == NULL && cfg.hs_token == NULL);
	char *path = xasprintf("%s/config.yaml", dir);
	CHECK_STR(cfg.path, path);
	free(path);
	config_free(&cfg);
	CHECK(cfg.hs_url == NULL && cfg.bot_user_id == NULL);

	/* A section left empty is allowed; its keys keep their defaults. */
	CHECK_EQ_INT(load_text(MINIMAL "client:\nlog:\n", &cfg, err, sizeof(err)), TH_OK);
	CHECK_EQ_INT(cfg.client_timeout_ms, 30000);
	CHECK_STR(cfg.log_level, "info");
	config_free(&cfg);

	/* The outbox: eight at once, an hour before an action is set aside; one
	 * slot alone could not keep a share free of remote actions. */
	CHECK_EQ_INT(load_text(MINIMAL, &cfg, err, sizeof(err)), TH_OK);
	CHECK_EQ_INT(cfg.outbox_concurrency, 8);
	CHECK_EQ_INT(cfg.outbox_give_up_s, 3600);
	config_free(&cfg);
	CHECK_EQ_INT(load_text(MINIMAL "outbox:\n  concurrency: 1\n", &cfg, err, sizeof(err)), TH_ECONFIG);
	CHECK(strstr(err, "outbox.concurrency") != NULL);
	CHECK_EQ_INT(load_text(MINIMAL "outbox:\n  give_up_after_seconds: 4\n", &cfg, err, sizeof(err)),
	             TH_ECONFIG);
}

/* Every key set away from its default lands in its own field. */
static void test_every_key(void)
{
	static const char text[] = "homeserver:\n"
	                           "  url: https://matrix.example.net\n"
	                           "  server_name: example.net\n"
	                           "appservice:\n"
	                           "  id: frontdesk\n"
	                           "  listen_address: 10.0.0.5\n"
	                           "  listen_port: 8009\n"
	                           "  url: http://threshold.internal:8009\n"
	                           "  registration: /srv/reg.yaml\n"
	                           "  bot_localpart: desk\n"
	                           "  bot_displayname: Front Desk\n"
	                           "  guest_prefix: visitor.\n"
	                           "  max_body_bytes: 1048576\n"
	                           "  max_json_depth: 512\n"
	                           "store:\n"
	                           "  path: /srv/store\n"
	                           "  map_size_mb: 16\n"
	                           "  dedupe_retention_days: 365\n"
	                           "client:\n"
	                           "  timeout_ms: 100\n"
	                           "  connect_timeout_ms: 600000\n"
	                           "  outbox_max_backoff_ms: 3600000\n"
	                           "outbox:\n"
	                           "  concurrency: 64\n"
	                           "  give_up_after_seconds: 5\n"
	                           "log:\n"
	                           "  level: debug\n";
	struct config cfg;
	char err[768];
	CHECK_EQ_INT(load_text(text, &cfg, err, sizeof(err)), TH_OK);
	CHECK_STR(cfg.hs_url, "https://matrix.example.net");
	CHECK_STR(cfg.server_name, "example.net");
	CHECK_STR(cfg.as_id, "frontdesk");
	CHECK_STR(cfg.listen_address, "10.0.0.5");
	CHECK_EQ_INT(cfg.listen_port, 8009);
	CHECK_STR(cfg.as_url, "http://threshold.internal:8009");
	CHECK_STR(cfg.registration, "/srv/reg.yaml");
	CHECK_STR(cfg.bot_localpart, "desk");
	CHECK_STR(cfg.bot_displayname, "Front Desk");
	CHECK_STR(cfg.guest_prefix, "visitor.");
	CHECK_EQ_INT(cfg.max_body_bytes, 1048576);
	CHECK_EQ_INT(cfg.max_json_depth, 512);
	CHECK_STR(cfg.store_path, "/srv/store");
	CHECK_EQ_INT(cfg.map_size_mb, 16);
	CHECK_EQ_INT(cfg.dedupe_retention_days, 365);
	CHECK_EQ_INT(cfg.client_timeout_ms, 100);
	CHECK_EQ_INT(cfg.client_connect_timeout_ms, 600000);
	CHECK_EQ_INT(cfg.outbox_max_backoff_ms, 3600000);
	CHECK_EQ_INT(cfg.outbox_concurrency, 64);
	CHECK_EQ_INT(cfg.outbox_give_up_s, 5);
	CHECK_STR(cfg.log_level, "debug");
	CHECK_STR(cfg.bot_user_id, "@desk:example.net");
	config_free(&cfg);
}

/* The default appservice.url must be a URL the homeserver can use. */
static void test_default_url(void)
{
	struct config cfg;
	char err[768];
	CHECK_EQ_INT(load_text(MINIMAL_HS "appservice:\n"
	                                  "  registration: r.yaml\n"
	                                  "  listen_address: 192.168.1.2\n"
	                                  "  listen_port: 8080\n"
	                                  "store:\n"
	                                  "  path: s\n",
	                       &cfg, err, sizeof(err)),
	             TH_OK);
	CHECK_STR(cfg.as_url, "http://192.168.1.2:8080");
	config_free(&cfg);
	/* An IPv6 literal needs brackets in a URL (RFC 3986 section 3.2.2). */
	CHECK_EQ_INT(load_text(MINIMAL_HS "appservice:\n"
	                                  "  registration: r.yaml\n"
	                                  "  listen_address: \"::1\"\n"
	                                  "store:\n"
	                                  "  path: s\n",
	                       &cfg, err, sizeof(err)),
	             TH_OK);
	CHECK_STR(cfg.as_url, "http://[::1]:29333");
	config_free(&cfg);
}

static void test_example_loads(void)
{
	const char *src = getenv("THRESHOLD_SOURCE_DIR");
	CHECK(src != NULL);
	if (!src)
		return;
	char *path = xasprintf("%s/config.example.yaml", src);
	struct config cfg;
	char err[768] = "";
	CHECK_EQ_INT(config_load(path, &cfg, err, sizeof(err)), TH_OK);
	CHECK_STR(err, "");
	if (err[0] == '\0') {
		CHECK_STR(cfg.hs_url, "http://127.0.0.1:8008");
		CHECK_STR(cfg.server_name, "example.org");
		CHECK_STR(cfg.as_url, "http://127.0.0.1:29333");
		CHECK_STR(cfg.registration, "/etc/threshold/registration.yaml");
		CHECK_STR(cfg.guest_prefix, "guest_");
		CHECK_STR(cfg.store_path, "/var/lib/threshold/store");
		CHECK_STR(cfg.log_level, "info");
		CHECK_STR(cfg.bot_user_id, "@threshold:example.org");
		config_free(&cfg);
	}
	free(path);
}

static void test_errors(void)
{
	/* Missing required keys: no line to point at, but the key is named. */
	EXPECT_ERROR("homeserver:\n"
	             "  server_name: example.org\n" MINIMAL_REST,
	             0, "missing required key 'homeserver.url'", NULL);
	EXPECT_ERROR(MINIMAL_HS "store:\n  path: s\n", 0, "missing required key 'appservice.registration'",
	             NULL);
	EXPECT_ERROR(MINIMAL_HS "appservice:\n  registration: r\n", 0, "missing required key 'store.path'",
	             NULL);

	/* Wrong type: a mapping where a number belongs. */
	EXPECT_ERROR(MINIMAL "client:\n"
	                     "  timeout_ms:\n"
	                     "    seconds: 30\n",
	             9, "client.timeout_ms", "expected a single value, found a mapping");
	EXPECT_ERROR(MINIMAL "log:\n"
	                     "  level: [info, debug]\n",
	             9, "log.level", "found a list");
	EXPECT_ERROR("homeserver: http://127.0.0.1:8008\n" MINIMAL_REST, 1, "homeserver",
	             "expected a mapping of keys, found a scalar");
	EXPECT_ERROR("- homeserver\n", 1, "the top level must be a mapping", NULL);

	/* Numbers: out of range both ways, and not numbers at all. */
	EXPECT_ERROR(MINIMAL_HS "appservice:\n"
	                        "  registration: r\n"
	                        "  listen_port: 70000\n"
	                        "store:\n"
	                        "  path: s\n",
	             6, "appservice.listen_port: 70000 is out of range", "(1..65535)");
	EXPECT_ERROR(MINIMAL_HS "appservice:\n"
	                        "  listen_port: 0\n"
	                        "  registration: r\n"
	                        "store:\n"
	                        "  path: s\n",
	             5, "appservice.listen_port: 0 is out of range", "(1..65535)");
	EXPECT_ERROR(MINIMAL_HS "appservice:\n"
	                        "  registration: r\n"
	                        "  max_body_bytes: 1048575\n"
	                        "store:\n"
	                        "  path: s\n",
	             6, "appservice.max_body_bytes", "(1048576..268435456)");
	EXPECT_ERROR(MINIMAL_HS "appservice:\n"
	                        "  registration: r\n"
	                        "  listen_port: abc\n"
	                        "store:\n"
	                        "  path: s\n",
	             6, "appservice.listen_port: \"abc\" is not a whole number", NULL);
	EXPECT_ERROR(MINIMAL "client:\n"
	                     "  timeout_ms: -1\n",
	             9, "client.timeout_ms: \"-1\" is not a whole number", NULL);
	EXPECT_ERROR(MINIMAL "client:\n"
	                     "  timeout_ms: 99999999999999999999999\n",
	             9, "client.timeout_ms", "not a whole number");

	/* Unknown keys and sections stop start-up, with a hint when one is close. */
	EXPECT_ERROR(MINIMAL_HS "appservice:\n"
	                        "  registration: r\n"
	                        "  listen_prot: 8080\n"
	                        "store:\n"
	                        "  path: s\n",
	             6, "unknown key 'appservice.listen_prot'", "(did you mean 'listen_port'?)");
	EXPECT_ERROR(MINIMAL "log:\n"
	                     "  colour: yes\n",
	             9, "unknown key 'log.colour'", NULL);
	EXPECT_ERROR(MINIMAL "homeservr:\n"
	                     "  url: http://x\n",
	             8, "unknown section 'homeservr'", "(did you mean 'homeserver'?)");
	EXPECT_ERROR(MINIMAL "telemetry:\n"
	                     "  port: 9000\n",
	             8, "unknown section 'telemetry'", NULL);
	EXPECT_ERROR(MINIMAL "metrics:\n"
	                     "  port: 0\n",
	             9, "metrics.port", "out of range");

	/* A key given twice is an error, reported where it comes again. */
	EXPECT_ERROR("homeserver:\n"
	             "  url: http://127.0.0.1:8008\n"
	             "  server_name: example.org\n"
	             "  server_name: example.com\n" MINIMAL_REST,
	             4, "homeserver.server_name is given twice", NULL);
	/* Even when the second one is in a repeated section. */
	EXPECT_ERROR(MINIMAL "homeserver:\n"
	                     "  url: http://127.0.0.1:9009\n",
	             9, "homeserver.url is given twice", NULL);

	/* Strings with a shape. */
	EXPECT_ERROR("homeserver:\n"
	             "  url: ftp://127.0.0.1:8008\n"
	             "  server_name: example.org\n" MINIMAL_REST,
	             2, "homeserver.url", "is not an http:// or https:// URL");
	EXPECT_ERROR("homeserver:\n"
	             "  url: 127.0.0.1:8008\n"
	             "  server_name: example.org\n" MINIMAL_REST,
	             2, "homeserver.url", "is not an http:// or https:// URL");
	EXPECT_ERROR(MINIMAL "log:\n"
	                     "  level: verbose\n",
	             9, "log.level: \"verbose\" is not one of error, warn, info, debug", NULL);
	EXPECT_ERROR(MINIMAL_HS "appservice:\n"
	                        "  registration: r\n"
	                        "  bot_localpart: Threshold\n"
	                        "store:\n"
	                        "  path: s\n",
	             6, "appservice.bot_localpart: \"Threshold\"", "may hold only a-z, 0-9 and ._=-/");
	EXPECT_ERROR(MINIMAL_HS "appservice:\n"
	                        "  registration: r\n"
	                        "  guest_prefix: \"guest:\"\n"
	                        "store:\n"
	                        "  path: s\n",
	             6, "appservice.guest_prefix", "may hold only");
	EXPECT_ERROR(MINIMAL_HS "appservice:\n"
	                        "  registration: r\n"
	                        "  id: my app\n"
	                        "store:\n"
	                        "  path: s\n",
	             6, "appservice.id", "may hold only");
	EXPECT_ERROR("homeserver:\n"
	             "  url: http://127.0.0.1:8008\n"
	             "  server_name: \"\"\n" MINIMAL_REST,
	             3, "homeserver.server_name: must not be empty", NULL);

	/* The file itself. */
	EXPECT_ERROR("homeserver:\n"
	             "  url: http://127.0.0.1:8008\n"
	             "  server_name: a: b\n" MINIMAL_REST,
	             3, "YAML syntax error", NULL);
	EXPECT_ERROR("homeserver:\n"
	             "  url: http://127.0.0.1:8008\n"
	             "  server_name: example.org\n"
	             "appservice:\n"
	             "  registration: [r\n"
	             "store:\n"
	             "  path: s\n",
	             6 /* libyaml notices the missing ']' on the next line */, "YAML syntax error", NULL);
	EXPECT_ERROR("", 0, "the file is empty", NULL);
	EXPECT_ERROR("# only a comment\n\n", 0, "the file is empty", NULL);

	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	char err[768] = "";
	char *missing = xasprintf("%s/no-such-config.yaml", dir);
	CHECK_EQ_INT(config_load(missing, &cfg, err, sizeof(err)), TH_ECONFIG);
	char *want = xasprintf("%s: cannot read: ", missing);
	CHECK(strncmp(err, want, strlen(want)) == 0);
	CHECK(strstr(err, "No such file") != NULL);
	CHECK(cfg.hs_url == NULL);
	free(want);
	free(missing);

	/* The error buffer is optional, and a short one is cut, not overrun. */
	char *path = test_write_file(dir, "config.yaml", "metrics:\n");
	CHECK_EQ_INT(config_load(path, &cfg, NULL, 0), TH_ECONFIG);
	char small[8] = "xxxxxxx";
	CHECK_EQ_INT(config_load(path, &cfg, small, 4), TH_ECONFIG);
	CHECK_EQ_INT(strlen(small), 3);
	CHECK_EQ_INT(small[5], 'x');
	free(path);
}

static int is_lower_hex(const char *s, size_t len)
{
	if (strlen(s) != len)
		return 0;
	for (; *s; s++) {
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
			return 0;
	}
	return 1;
}

/* A config for registration tests, its registration file in dir. */
static int load_for_registration(struct config *cfg, const char *extra)
{
	char *text = xasprintf(MINIMAL_HS "appservice:\n"
	                                  "  registration: %s/registration.yaml\n"
	                                  "%s"
	                                  "store:\n"
	                                  "  path: s\n",
	                       dir, extra);
	char err[768];
	int rc = load_text(text, cfg, err, sizeof(err));
	free(text);
	return rc;
}

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char buf[4096];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	return xstrndup(buf, n);
}

static void test_registration_roundtrip(void)
{
	struct config cfg;
	char err[768] = "";
	struct stat sb;
	CHECK_EQ_INT(load_for_registration(&cfg, ""), TH_OK);

	CHECK_EQ_INT(config_write_registration(&cfg, cfg.registration, 0), TH_OK);
	CHECK_EQ_INT(stat(cfg.registration, &sb), 0);
	CHECK_EQ_INT(sb.st_mode & 07777, 0600);
	CHECK_EQ_INT(config_load_registration(&cfg, err, sizeof(err)), TH_OK);
	CHECK_STR(err, "");
	CHECK(cfg.as_token && is_lower_hex(cfg.as_token, 64));
	CHECK(cfg.hs_token && is_lower_hex(cfg.hs_token, 64));
	CHECK(cfg.as_token && cfg.hs_token && strcmp(cfg.as_token, cfg.hs_token) != 0);
	char *as1 = xstrdup(cfg.as_token ? cfg.as_token : "");
	char *hs1 = xstrdup(cfg.hs_token ? cfg.hs_token : "");

	/* What the homeserver reads: the same id, url, bot and regex. */
	char *text = read_all(cfg.registration);
	char *regex = config_user_regex(&cfg);
	char *line = xasprintf("      regex: '%s'\n", regex);
	CHECK(text && strstr(text, "\nid: 'threshold'\n"));
	CHECK(text && strstr(text, "\nurl: 'http://127.0.0.1:29333'\n"));
	CHECK(text && strstr(text, "\nsender_localpart: 'threshold'\n"));
	CHECK(text && strstr(text, "    - exclusive: true\n"));
	CHECK(text && strstr(text, line));
	free(line);
	free(regex);
	free(text);

	/* An existing file is kept unless forced. */
	CHECK_EQ_INT(config_write_registration(&cfg, cfg.registration, 0), TH_EEXIST);
	CHECK_EQ_INT(config_load_registration(&cfg, err, sizeof(err)), TH_OK);
	CHECK_STR(cfg.as_token, as1);
	CHECK_STR(cfg.hs_token, hs1);

	/* A new generation has new tokens, and the mode survives the rewrite. */
	chmod(cfg.registration, 0644);
	CHECK_EQ_INT(config_write_registration(&cfg, cfg.registration, 1), TH_OK);
	CHECK_EQ_INT(stat(cfg.registration, &sb), 0);
	CHECK_EQ_INT(sb.st_mode & 07777, 0600);
	CHECK_EQ_INT(config_load_registration(&cfg, err, sizeof(err)), TH_OK);
	CHECK(cfg.as_token && is_lower_hex(cfg.as_token, 64));
	CHECK(cfg.hs_token && is_lower_hex(cfg.hs_token, 64));
	CHECK(strcmp(cfg.as_token, as1) != 0);
	CHECK(strcmp(cfg.hs_token, hs1) != 0);
	CHECK(strcmp(cfg.as_token, hs1) != 0 && strcmp(cfg.hs_token, as1) != 0);

	/* Writing into a directory that does not exist fails cleanly. */
	char *nodir = xasprintf("%s/missing/registration.yaml", dir);
	CHECK_EQ_INT(config_write_registration(&cfg, nodir, 0), TH_EIO);
	free(nodir);

	free(as1);
	free(hs1);
	config_free(&cfg);
	CHECK(cfg.as_token == NULL && cfg.hs_token == NULL);
}

/*
 * A config whose registration, as generate-registration writes it, no YAML
 * reader accepted: appservice.id "-" (a plain "-" starts a list) and a URL
 * holding a control character (written raw; YAML allows none).  Both
 * inputs are fuzz_config's oracle cases; the files are the exact inputs.
 */
static void test_registration_fuzz_cases(void)
{
	static const char dash[] = "homeserver:\n  url: http://127.0.0.1:8008/\n  server_name: example.org\n"
	                           "appservice:\n  id: \"-\"\n  bot_localpart: \"-\"\n"
	                           "  registration: /etc/threshold/registration.yaml\n"
	                           "store:\n  path: /var/lib/threshold/store\n";
	struct config cfg;
	char err[768] = "";
	CHECK_EQ_INT(load_text(dash, &cfg, err, sizeof(err)), TH_OK);
	free(cfg.registration);
	cfg.registration = xasprintf("%s/registration.yaml", dir);
	CHECK_EQ_INT(config_write_registration(&cfg, cfg.registration, 1), TH_OK);
	CHECK_EQ_INT(config_load_registration(&cfg, err, sizeof(err)), TH_OK);
	CHECK_STR(err, "");
	config_free(&cfg);

	EXPECT_ERROR(
	        "homeserver:\n  url: http://127.0.0.1:8008/\n  server_name: example.org\n"
	        "appservice:\n  url: \"http://a\\x01b\"\n  registration: /etc/threshold/registration.yaml\n"
	        "store:\n  path: /var/lib/threshold/store\n",
	        5, "appservice.url", "control characters");
	EXPECT_ERROR(MINIMAL_HS "appservice:\n  listen_address: \"127.0.0.1\\n\"\n  registration: r\n"
	                        "store:\n  path: s\n",
	             5, "appservice.listen_address", "control characters");
	EXPECT_ERROR(MINIMAL "roles:\n  staff: [\"@a\\t:example.org\"]\n", 9, "roles.staff", "not a user id");
	EXPECT_ERROR(MINIMAL_HS "appservice:\n  registration: \"reg\\0.yaml\"\nstore:\n  path: s\n", 5,
	             "appservice.registration", "control characters");
}

#define TOKEN_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define TOKEN_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

/* Load a hand-written registration; expect @want and, on error, each needle. */
static void expect_registration_at(int at, const char *text, int want, const char *needle1,
                                   const char *needle2)
{
	struct config cfg;
	char err[768] = "";
	if (load_for_registration(&cfg, "") != TH_OK) {
		expect(0, at, "the base config loads", "");
		return;
	}
	char *path = test_write_file(dir, "registration.yaml", text);
	int rc = config_load_registration(&cfg, err, sizeof(err));
	expect(rc == want, at, want == TH_OK ? "registration loads" : "registration is refused", err);
	if (want != TH_OK) {
		expect(cfg.as_token == NULL && cfg.hs_token == NULL, at, "no tokens kept on failure", err);
		expect(strncmp(err, path, strlen(path)) == 0, at, "error names the registration file", err);
	}
	if (needle1)
		expect(strstr(err, needle1) != NULL, at, needle1, err);
	if (needle2)
		expect(strstr(err, needle2) != NULL, at, needle2, err);
	free(path);
	config_free(&cfg);
}
#define EXPECT_REGISTRATION(text, want, needle1, needle2) \
	expect_registration_at(__LINE__, text, want, needle1, needle2)

static void test_registration_errors(void)
{
	EXPECT_REGISTRATION("id: threshold\n"
	                    "url: http://127.0.0.1:29333\n"
	                    "as_token: " TOKEN_A "\n"
	                    "hs_token: " TOKEN_B "\n"
	                    "sender_localpart: threshold\n",
	                    TH_OK, NULL, NULL);
	/* A different url is only a warning: the homeserver's copy decides. */
	EXPECT_REGISTRATION("id: threshold\n"
	                    "url: http://10.1.1.1:1234\n"
	                    "as_token: " TOKEN_A "\n"
	                    "hs_token: " TOKEN_B "\n"
	                    "sender_localpart: threshold\n",
	                    TH_OK, NULL, NULL);
	EXPECT_REGISTRATION("id: other\n"
	                    "as_token: " TOKEN_A "\n"
	                    "hs_token: " TOKEN_B "\n"
	                    "sender_localpart: threshold\n",
	                    TH_ECONFIG, "id 'other'", "appservice.id");
	EXPECT_REGISTRATION("as_token: " TOKEN_A "\n"
	                    "hs_token: " TOKEN_B "\n"
	                    "sender_localpart: threshold\n",
	                    TH_ECONFIG, "appservice.id", NULL);
	EXPECT_REGISTRATION("id: threshold\n"
	                    "as_token: " TOKEN_A "\n"
	                    "hs_token: " TOKEN_B "\n"
	                    "sender_localpart: desk\n",
	                    TH_ECONFIG, "sender_localpart 'desk'", "appservice.bot_localpart");
	EXPECT_REGISTRATION("id: threshold\n"
	                    "as_token: " TOKEN_A "\n"
	                    "sender_localpart: threshold\n",
	                    TH_ECONFIG, "hs_token", "generate-registration");
	EXPECT_REGISTRATION("id: threshold\n"
	                    "hs_token: " TOKEN_B "\n"
	                    "sender_localpart: threshold\n",
	                    TH_ECONFIG, "as_token", NULL);
	EXPECT_REGISTRATION("id: threshold\n"
	                    "as_token: short\n"
	                    "hs_token: " TOKEN_B "\n"
	                    "sender_localpart: threshold\n",
	                    TH_ECONFIG, "at least 16 characters", NULL);
	EXPECT_REGISTRATION("- id: threshold\n", TH_ECONFIG, "must be a mapping", NULL);
	EXPECT_REGISTRATION("", TH_ECONFIG, "empty", NULL);
	EXPECT_REGISTRATION("id: [\n", TH_ECONFIG, "YAML syntax error", NULL);

	struct config cfg;
	char err[768] = "";
	CHECK_EQ_INT(load_for_registration(&cfg, ""), TH_OK);
	char *path = xasprintf("%s/registration.yaml", dir);
	remove(path);
	CHECK_EQ_INT(config_load_registration(&cfg, err, sizeof(err)), TH_ECONFIG);
	CHECK(strstr(err, "cannot read") != NULL);
	free(path);
	config_free(&cfg);
}

/* The regex the homeserver gets and config_user_in_namespace() must agree. */
static void check_namespace(const char *extra, const char *const *ids, const int *want, size_t n)
{
	struct config cfg;
	if (load_for_registration(&cfg, extra) != TH_OK) {
		CHECK(!"config for the namespace test loads");
		return;
	}
	char *re_text = config_user_regex(&cfg);
	size_t len = strlen(re_text);
	CHECK(len > 2 && re_text[0] == '^' && re_text[len - 1] == '$');
	regex_t re;
	int crc = regcomp(&re, re_text, REG_EXTENDED | REG_NOSUB);
	CHECK_EQ_INT(crc, 0);
	for (size_t i = 0; crc == 0 && i < n; i++) {
		int by_regex = regexec(&re, ids[i], 0, NULL, 0) == 0;
		int by_code = config_user_in_namespace(&cfg, ids[i]);
		test_checks++;
		if (by_regex != want[i] || by_code != want[i]) {
			test_failures++;
			fprintf(stderr,
			        "%s:%d: namespace: \"%s\": want %d, regex %s gives %d, code gives %d\n",
			        __FILE__, __LINE__, ids[i], want[i], re_text, by_regex, by_code);
		}
	}
	CHECK_EQ_INT(config_user_in_namespace(&cfg, NULL), 0);
	if (crc == 0)
		regfree(&re);
	free(re_text);
	config_free(&cfg);
}

#define HEX32 "0123456789abcdef0123456789abcdef"

static void test_namespace(void)
{
	struct config cfg;
	CHECK_EQ_INT(load_for_registration(&cfg, ""), TH_OK);
	char *re_text = config_user_regex(&cfg);
	CHECK_STR(re_text, "^@(threshold|guest_[0-9a-f]{32}):example\\.org$");
	free(re_text);
	config_free(&cfg);

	static const char *const ids[] = {
	        "@threshold:example.org",
	        "@guest_" HEX32 ":example.org",
	        "@guest_" HEX32 "0:example.org",                      /* 33 hex */
	        "@guest_0123456789abcdef0123456789abcde:example.org", /* 31 hex */
	        "@guest_0123456789ABCDEF0123456789abcdef:example.org",
	        "@guest_:example.org",
	        "@threshold:example.com",
	        "@threshold:exampleXorg",
	        "@threshold:example.org.evil.com",
	        "@guest_" HEX32 ":example.org.evil.com",
	        "@evil.com@threshold:example.org",
	        "@xthreshold:example.org",
	        "@thresholdx:example.org",
	        "threshold:example.org",
	        "@alice:example.org",
	        "",
	};
	static const int want[] = {1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
	check_namespace("", ids, want, sizeof(ids) / sizeof(ids[0]));

	/* Localparts with regex metacharacters of their own, and a port. */
	static const char *const odd_ids[] = {
	        "@bot.desk:example.org",       "@botXdesk:example.org",      "@v.=/-" HEX32 ":example.org",
	        "@vX=/-" HEX32 ":example.org", "@bot.desk:example.org:8448",
	};
	static const int odd_want[] = {1, 0, 1, 0, 0};
	check_namespace("  bot_localpart: bot.desk\n"
	                "  guest_prefix: v.=/-\n",
	                odd_ids, odd_want, sizeof(odd_ids) / sizeof(odd_ids[0]));
}

/* Roles and safeguarding: lists of user ids, a boolean, a room id. */
static void test_roles(void)
{
	struct config cfg;
	char err[768];
	CHECK_EQ_INT(load_text(MINIMAL "roles:\n"
	                               "  staff: [\"@alice:example.org\", \"@bob:example.org\"]\n"
	                               "  staff_all_local: yes\n"
	                               "  staff_rooms: [\"!staff:example.org\"]\n"
	                               "safeguarding:\n"
	                               "  room: \"!sg:example.org\"\n"
	                               "  leads:\n"
	                               "    - \"@lead:example.org\"\n",
	                       &cfg, err, sizeof(err)),
	             TH_OK);
	CHECK_EQ_INT(cfg.staff.n, 2);
	CHECK(config_ids_has(&cfg.staff, "@bob:example.org"));
	CHECK(!config_ids_has(&cfg.staff, "@bob:example.org.evil"));
	CHECK(!config_ids_has(&cfg.staff, NULL));
	CHECK_EQ_INT(cfg.staff_all_local, 1);
	CHECK_EQ_INT(cfg.staff_rooms.n, 1);
	CHECK(config_ids_has(&cfg.staff_rooms, "!staff:example.org"));
	CHECK(!config_ids_has(&cfg.staff_rooms, "!other:example.org"));
	CHECK_STR(cfg.safeguarding_room, "!sg:example.org");
	CHECK(config_ids_has(&cfg.leads, "@lead:example.org"));
	config_free(&cfg);

	CHECK_EQ_INT(load_text(MINIMAL "roles:\n  staff:\n", &cfg, err, sizeof(err)), TH_OK);
	CHECK_EQ_INT(cfg.staff.n, 0);
	CHECK_EQ_INT(cfg.staff_all_local, 0);
	CHECK_EQ_INT(cfg.staff_rooms.n, 0);
	config_free(&cfg);

	/* The bad item's own line is named, not the key's. */
	EXPECT_ERROR(MINIMAL "roles:\n  staff:\n    - \"@alice:example.org\"\n    - alice\n", 11,
	             "roles.staff", "\"alice\" is not a user id");
	EXPECT_ERROR(MINIMAL "roles:\n  staff: \"@alice:example.org\"\n", 9, "roles.staff",
	             "expected a list of user ids");
	EXPECT_ERROR(MINIMAL
	             "roles:\n  staff_rooms:\n    - \"!a:example.org\"\n    - \"#staff:example.org\"\n",
	             11, "roles.staff_rooms", "\"#staff:example.org\" is not a room id");
	EXPECT_ERROR(MINIMAL "roles:\n  staff_rooms: \"!a:example.org\"\n", 9, "roles.staff_rooms",
	             "expected a list of room ids");
	EXPECT_ERROR(MINIMAL "roles:\n  staff_all_local: maybe\n", 9, "roles.staff_all_local",
	             "is not true or false");
	EXPECT_ERROR(MINIMAL "safeguarding:\n  room: \"#safe:example.org\"\n", 9, "safeguarding.room",
	             "is not a room id");
	EXPECT_ERROR(MINIMAL "safeguarding:\n  lead: []\n", 9, "unknown key 'safeguarding.lead'",
	             "did you mean 'leads'");
}

/* The SMS channel's keys: each checked alone with its line, and together. */
static void test_sms_keys(void)
{
#define SMS_SERVICE                 \
	"services:\n"               \
	"  texts:\n"                \
	"    display_name: Texts\n" \
	"    staff_room: \"!staff:example.org\"\n"
	EXPECT_ERROR(MINIMAL "sms:\n  listen_port: 70000\n", 9, "sms.listen_port", "out of range");
	EXPECT_ERROR(MINIMAL "sms:\n  kannel_sendsms_url: ftp://x/\n", 9, "sms.kannel_sendsms_url", "URL");
	EXPECT_ERROR(MINIMAL "sms:\n  per_number_per_minute: 0\n", 9, "sms.per_number_per_minute", NULL);
	EXPECT_ERROR(MINIMAL "sms:\n  enabled: maybe\n", 9, "sms.enabled", "true or false");
	EXPECT_ERROR(MINIMAL "sms:\n  enabled: true\n  driver: pigeon\n", 0, "sms.driver", "pigeon");
	EXPECT_ERROR(MINIMAL "sms:\n  enabled: true\n  secret: short\n", 0, "sms.secret", "16");
	EXPECT_ERROR(MINIMAL "sms:\n  enabled: true\n  secret: \"0123456789abcdef/x\"\n", 0, "sms.secret",
	             "URL path");
	EXPECT_ERROR(MINIMAL "sms:\n  enabled: true\n  secret: 0123456789abcdefgh\n", 0,
	             "sms.kannel_sendsms_url", NULL);
	EXPECT_ERROR(MINIMAL "sms:\n  enabled: true\n  driver: twilio\n", 0, "sms.twilio_auth_token", NULL);
	EXPECT_ERROR(MINIMAL SMS_SERVICE "    sms_number: \"07700 900\"\n", 0, "services.texts.sms_number",
	             "not a phone number");
	EXPECT_ERROR(MINIMAL SMS_SERVICE "    sms_number: \"+12\"\n", 0, "services.texts.sms_number",
	             "3 to 20");
	EXPECT_ERROR(MINIMAL SMS_SERVICE "    sms_number: \"+4477009\"\n"
	                                 "  other:\n"
	                                 "    display_name: Other\n"
	                                 "    staff_room: \"!other:example.org\"\n"
	                                 "    sms_number: \"+4477009\"\n",
	             0, "services.other.sms_number", "already services.texts's");
	EXPECT_ERROR(MINIMAL SMS_SERVICE
	             "sms:\n  enabled: true\n  driver: twilio\n  twilio_account_sid: AC1\n"
	             "  twilio_auth_token: t\n  twilio_webhook_url: https://x.example/sms/twilio\n",
	             0, "no service has an sms_number", NULL);

	struct config cfg;
	char err[512];
	const char *ok = MINIMAL SMS_SERVICE "    sms_number: \"+4477009\"\n"
	                                     "sms:\n  enabled: true\n  secret: 0123456789abcdefgh\n"
	                                     "  kannel_sendsms_url: http://127.0.0.1:13013/cgi-bin/sendsms\n"
	                                     "  kannel_username: u\n  kannel_password: p\n";
	CHECK_EQ_INT(load_text(ok, &cfg, err, sizeof(err)), TH_OK);
	CHECK(cfg.sms_enabled);
	CHECK_STR(cfg.sms_driver, "kannel");
	CHECK_EQ_INT(cfg.sms_listen_port, 29336);
	CHECK_EQ_INT(cfg.sms_per_number_per_minute, 10);
	CHECK_STR(cfg.services[0].sms_number, "+4477009");
	CHECK(strstr(cfg.sms_key_file, "/var/lib/threshold/store/sms-lookup.key") != NULL);
	config_free(&cfg);
#undef SMS_SERVICE
}

/* services.<name>.retention: a duration with a unit, and when it makes a
 * conversation due (retention.h). */
static void test_retention_duration(void)
{
#define SERVICE(ret)                           \
	MINIMAL "services:\n"                  \
	        "  helpline:\n"                \
	        "    display_name: Helpline\n" \
	        "    staff_room: \"!staff:example.org\"\n" ret
	struct config cfg;
	char err[768];
	CHECK_EQ_INT(load_text(SERVICE("    retention: 90m\n"), &cfg, err, sizeof(err)), TH_OK);
	CHECK_EQ_INT(cfg.nservices, 1);
	CHECK_EQ_INT(cfg.services[0].retention_s, 5400);
	json_t *conv =
	        json_pack("{s:I, s:I}", "created_ms", (json_int_t)1000000, "expires_ms", (json_int_t)7);
	CHECK(retention_due_ms(&cfg.services[0], conv) == 1000000 + 5400000ull);
	config_free(&cfg);
	CHECK_EQ_INT(load_text(SERVICE("    retention: 30d\n"), &cfg, err, sizeof(err)), TH_OK);
	CHECK_EQ_INT(cfg.services[0].retention_s, 30 * 86400);
	config_free(&cfg);
	/* Absent: the conversation's own expiry rules. */
	CHECK_EQ_INT(load_text(SERVICE(""), &cfg, err, sizeof(err)), TH_OK);
	CHECK_EQ_INT(cfg.services[0].retention_s, 0);
	CHECK(retention_due_ms(&cfg.services[0], conv) == 7);
	config_free(&cfg);
	json_decref(conv);
	EXPECT_ERROR(SERVICE("    retention: 5s\n"), 12, "services.helpline.retention: 5s is out of range",
	             NULL);
	EXPECT_ERROR(SERVICE("    retention: 2w\n"), 12, "is not a duration", "30d, 12h, 90m, 45s");
	EXPECT_ERROR(SERVICE("    retention: 30\n"), 12, "is not a duration", NULL);
	EXPECT_ERROR(SERVICE("    retention: d\n"), 12, "is not a duration", NULL);
#undef SERVICE
}

/* homeserver.admin_token_file: a file others can read is refused, naming
 * the key; 0600 is taken; one not there yet is taken (said at start). */
static void test_admin_token_file(void)
{
	char *tok = test_write_file(dir, "admin.token", "syt_admin_token\n");
	struct config cfg;
	char err[768];
	char *text = xasprintf("homeserver:\n  url: http://127.0.0.1:8008\n  server_name: example.org\n"
	                       "  admin_token_file: %s\n" MINIMAL_REST,
	                       tok);
	CHECK_EQ_INT(chmod(tok, 0644), 0);
	CHECK_EQ_INT(load_text(text, &cfg, err, sizeof(err)), TH_ECONFIG);
	CHECK(strstr(err, "homeserver.admin_token_file") != NULL);
	CHECK(strstr(err, "chmod 600") != NULL);
	CHECK_EQ_INT(chmod(tok, 0600), 0);
	CHECK_EQ_INT(load_text(text, &cfg, err, sizeof(err)), TH_OK);
	CHECK_STR(cfg.hs_admin_token_file, tok);
	config_free(&cfg);
	free(text);
	text = xasprintf("homeserver:\n  url: http://127.0.0.1:8008\n  server_name: example.org\n"
	                 "  admin_token_file: %s.missing\n" MINIMAL_REST,
	                 tok);
	CHECK_EQ_INT(load_text(text, &cfg, err, sizeof(err)), TH_OK);
	config_free(&cfg);
	free(text);
	free(tok);
}

/* services.<name>.helper: per language, a menu and answers by number or
 * keyword (policy/helper.h); each mistake names its key and line. */
static void test_helper_keys(void)
{
#define HELPER_SERVICE                             \
	"services:\n"                              \
	"  desk:\n"                                \
	"    display_name: Desk\n"                 \
	"    staff_room: \"!staff:example.org\"\n" \
	"    helper:\n"
	EXPECT_ERROR(MINIMAL HELPER_SERVICE "      en: hello\n", 13, "services.desk.helper.en",
	             "menu and answers");
	EXPECT_ERROR(MINIMAL HELPER_SERVICE "      English:\n        menu: m\n", 13, "services.desk.helper",
	             "not a language code");
	EXPECT_ERROR(MINIMAL HELPER_SERVICE "      en:\n        answers:\n          - {number: 1, text: t}\n",
	             13, "missing required key 'services.desk.helper.en.menu'", NULL);
	EXPECT_ERROR(MINIMAL HELPER_SERVICE "      en:\n        menu: m\n", 13,
	             "services.desk.helper.en.answers", "at least one");
	EXPECT_ERROR(MINIMAL HELPER_SERVICE "      en:\n        menu: m\n        answers:\n"
	                                    "          - {number: 0, text: t}\n",
	             16, "services.desk.helper.en.answers[0].number", "talk to a person");
	EXPECT_ERROR(MINIMAL HELPER_SERVICE "      en:\n        menu: m\n        answers:\n"
	                                    "          - {number: 1, text: a}\n"
	                                    "          - {number: 1, text: b}\n",
	             17, "answers[1].number", "answers[0]'s too");
	EXPECT_ERROR(MINIMAL HELPER_SERVICE "      en:\n        menu: m\n        answers:\n"
	                                    "          - {keywords: [Person], text: a}\n",
	             16, "answers[0].keywords", "talk to a person");
	EXPECT_ERROR(MINIMAL HELPER_SERVICE "      en:\n        menu: m\n        answers:\n"
	                                    "          - {keywords: [hours], text: a}\n"
	                                    "          - {keywords: [HOURS], text: b}\n",
	             17, "answers[1].keywords", "given twice");
	EXPECT_ERROR(MINIMAL HELPER_SERVICE "      en:\n        menu: m\n        answers:\n"
	                                    "          - {text: a}\n",
	             16, "answers[0]", "number, keywords, or both");
	EXPECT_ERROR(MINIMAL HELPER_SERVICE "      en:\n        menu: m\n        answers:\n"
	                                    "          - {number: 2}\n",
	             16, "answers[0]", "missing required key 'text'");
	EXPECT_ERROR(MINIMAL HELPER_SERVICE "      en:\n        menu: m\n        answers:\n"
	                                    "          - {number: 2, text: a, link: x}\n",
	             16, "answers[0]", "unknown key 'link'");
	EXPECT_ERROR(MINIMAL HELPER_SERVICE "      en:\n        menu: m\n        colour: red\n", 15,
	             "services.desk.helper.en", "unknown key 'colour'");

	/* Bounds: 20 answers, 1000 bytes of text. */
	char *many = xstrdup(MINIMAL HELPER_SERVICE "      en:\n        menu: m\n        answers:\n");
	for (int i = 1; i <= 21; i++) {
		char *more = xasprintf("%s          - {number: %d, text: t}\n", many, i);
		free(many);
		many = more;
	}
	EXPECT_ERROR(many, 36, "services.desk.helper.en.answers", "at most 20");
	free(many);
	char *big = xasprintf(MINIMAL HELPER_SERVICE "      en:\n        menu: \"%01001d\"\n", 0);
	EXPECT_ERROR(big, 14, "services.desk.helper.en.menu", "1..1000 bytes");
	free(big);

	struct config cfg;
	char err[768];
	const char *ok =
	        MINIMAL HELPER_SERVICE "      en:\n        menu: \"1 hours, 2 address\"\n"
	                               "        answers:\n"
	                               "          - {number: 1, keywords: [hours, open], text: \"9 to 5\"}\n"
	                               "          - {keywords: [\"where are you\"], text: \"Here\"}\n"
	                               "      fr:\n        menu: \"1 heures\"\n"
	                               "        answers:\n          - {number: 1, text: \"9 à 17 h\"}\n";
	CHECK_EQ_INT(load_text(ok, &cfg, err, sizeof(err)), TH_OK);
	CHECK_STR(err, "");
	if (!err[0]) {
		const struct config_service *svc = &cfg.services[0];
		CHECK_EQ_INT(svc->nhelpers, 2);
		const struct config_helper *h = config_service_helper(svc, "fr");
		CHECK_STR(h->lang, "fr");
		CHECK_STR(h->entries[0].text, "9 à 17 h");
		h = config_service_helper(svc, "ar"); /* not given: the first */
		CHECK_STR(h->lang, "en");
		CHECK_EQ_INT(h->nentries, 2);
		CHECK_EQ_INT(h->entries[0].number, 1);
		CHECK_EQ_INT(h->entries[0].words.n, 2);
		CHECK_STR(h->entries[1].words.v[0], "where are you");
		CHECK_EQ_INT(h->entries[1].number, 0);
		config_free(&cfg);
	}
	/* The example's helper speaks the page's four languages. */
	const char *src = getenv("THRESHOLD_SOURCE_DIR");
	char *path = src ? xasprintf("%s/config.example.yaml", src) : NULL;
	if (path && config_load(path, &cfg, err, sizeof(err)) == TH_OK) {
		const struct config_service *svc = config_service_find(&cfg, "helpline");
		CHECK(svc && svc->nhelpers == 4);
		for (size_t i = 0; svc && i < svc->nhelpers; i++)
			CHECK(svc->helpers[i].nentries >= 2);
		config_free(&cfg);
	} else {
		CHECK(!"config.example.yaml loads");
	}
	free(path);
#undef HELPER_SERVICE
}

int main(void)
{
	dir = test_tmpdir();
	test_minimal_defaults();
	test_every_key();
	test_default_url();
	test_example_loads();
	test_admin_token_file();
	test_errors();
	test_sms_keys();
	test_registration_roundtrip();
	test_registration_errors();
	test_registration_fuzz_cases();
	test_namespace();
	test_roles();
	test_retention_duration();
	test_helper_keys();
	test_rmtree(dir);
	free(dir);
	return TEST_DONE();
}
