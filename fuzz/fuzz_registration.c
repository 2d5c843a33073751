/*
 * fuzz_registration.c - libFuzzer target for the registration file reader
 * (appservice/config.c, config_load_registration), which takes the
 * appservice tokens from the file the homeserver also reads.  The input is
 * that file; the configuration it is checked against is fixed (test.local,
 * id and bot "threshold").
 *
 * Oracle, besides ASan and UBSan: a refused file leaves an error naming it
 * and the tokens as they were; an accepted one gives tokens of at least 16
 * characters.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzzlib.h"
#include "testlib.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config cfg;
	static int ready;
	if (!ready) {
		test_config_init(&cfg, fuzz_scratch_dir());
		ready = 1;
	}
	const char *path = fuzz_input_path(data, size);
	free(cfg.registration);
	cfg.registration = xstrdup(path);
	free(cfg.as_token);
	free(cfg.hs_token);
	cfg.as_token = xstrdup("as_before_0123456789");
	cfg.hs_token = xstrdup("hs_before_0123456789");
	char err[768] = "";
	int rc = config_load_registration(&cfg, err, sizeof(err));
	if (rc != TH_OK) {
		FUZZ_ASSERT(rc == TH_ECONFIG, "config_load_registration returned %s", th_strerror(rc));
		FUZZ_ASSERT(strncmp(err, path, strlen(path)) == 0, "the error does not name the file: %s",
		            err);
		FUZZ_ASSERT(!strcmp(cfg.as_token, "as_before_0123456789") &&
		                    !strcmp(cfg.hs_token, "hs_before_0123456789"),
		            "a refused registration changed the tokens");
		return 0;
	}
	FUZZ_ASSERT(strlen(cfg.as_token) >= 16 && strlen(cfg.hs_token) >= 16, "short tokens accepted");
	return 0;
}
