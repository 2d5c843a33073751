/*
 * fuzz_config.c - libFuzzer target for the configuration loader
 * (appservice/config.c, config_load).  The input is the YAML file.
 *
 * Oracle, besides ASan and UBSan: a refused file leaves an error that names
 * the file; an accepted one holds every required key, every number within
 * its table bounds, the derived fields as config.h defines them, and the
 * registration file `threshold generate-registration` would write for it
 * must load back (config_write_registration, then config_load_registration).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzzlib.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What config.h promises of a loaded configuration. */
static void check_loaded(const struct config *c, const char *path)
{
	FUZZ_ASSERT(c->hs_url && c->server_name && c->as_id && c->listen_address && c->as_url &&
	                    c->registration && c->bot_localpart && c->bot_displayname && c->guest_prefix &&
	                    c->store_path && c->log_level && c->audit_key_path && c->bot_user_id && c->path,
	            "a loaded config lacks a string");
	FUZZ_ASSERT(strcmp(c->path, path) == 0, "path is \"%s\"", c->path);
	FUZZ_ASSERT(c->listen_port >= 1 && c->listen_port <= 65535, "listen_port %u", c->listen_port);
	FUZZ_ASSERT(c->max_body_bytes >= 1048576 && c->max_body_bytes <= 268435456, "max_body_bytes");
	FUZZ_ASSERT(c->max_json_depth >= 8 && c->max_json_depth <= 512, "max_json_depth");
	FUZZ_ASSERT(c->map_size_mb >= 16 && c->map_size_mb <= 1048576, "map_size_mb");
	FUZZ_ASSERT(c->staff_power >= 1 && c->staff_power <= 99, "staff_power");
	FUZZ_ASSERT(c->audit_checkpoint_every >= 1 && c->audit_checkpoint_seconds >= 1, "checkpoints");
	size_t n = strlen(c->hs_url);
	FUZZ_ASSERT(n == 0 || c->hs_url[n - 1] != '/', "hs_url keeps a trailing slash");
	char *bot = xasprintf("@%s:%s", c->bot_localpart, c->server_name);
	FUZZ_ASSERT(strcmp(bot, c->bot_user_id) == 0, "bot_user_id \"%s\"", c->bot_user_id);
	free(bot);
	FUZZ_ASSERT(config_user_in_namespace(c, c->bot_user_id), "the bot is outside the namespace");
	char *guest = xasprintf("@%s0123456789abcdef0123456789abcdef:%s", c->guest_prefix, c->server_name);
	FUZZ_ASSERT(config_user_in_namespace(c, guest), "a guest id is outside the namespace");
	free(guest);
	for (size_t i = 0; i < c->staff.n; i++)
		FUZZ_ASSERT(config_ids_has(&c->staff, c->staff.v[i]), "staff list");
	for (size_t i = 0; i < c->leads.n; i++)
		FUZZ_ASSERT(config_ids_has(&c->leads, c->leads.v[i]), "leads list");
	free(config_user_regex(c));
}

/* The registration written for @p c must read back with @p c. */
static void check_registration(struct config *c)
{
	char *reg = xasprintf("%s/registration.yaml", fuzz_scratch_dir());
	free(c->registration);
	c->registration = reg;
	int rc = config_write_registration(c, reg, 1);
	FUZZ_ASSERT(rc == TH_OK, "config_write_registration: %s", th_strerror(rc));
	char err[768] = "";
	rc = config_load_registration(c, err, sizeof(err));
	FUZZ_ASSERT(rc == TH_OK, "the registration written for this config does not load: %s", err);
	FUZZ_ASSERT(c->as_token && strlen(c->as_token) == 64 && c->hs_token && strlen(c->hs_token) == 64,
	            "the tokens did not come back");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fuzz_input_path(data, size);
	struct config cfg;
	char err[768] = "";
	int rc = config_load(path, &cfg, err, sizeof(err));
	if (rc != TH_OK) {
		FUZZ_ASSERT(rc == TH_ECONFIG, "config_load returned %s", th_strerror(rc));
		FUZZ_ASSERT(strncmp(err, path, strlen(path)) == 0, "the error does not name the file: %s",
		            err);
		return 0;
	}
	check_loaded(&cfg, path);
	check_registration(&cfg);
	config_free(&cfg);
	return 0;
}
