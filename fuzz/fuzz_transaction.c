/*
 * fuzz_transaction.c - libFuzzer target for the transaction body scanner
 * (appservice/mxevent.c), which reads every PUT /transactions body the
 * homeserver sends.  Each input goes to mxev_parse and to jansson; any
 * disagreement on acceptance or on an extracted member aborts, and ASan and
 * UBSan watch the scan itself.  No store, no events_handle.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "mxev_oracle.h"

/* Small enough that the fuzzer meets the cap (the daemon's default is 64). */
#define FUZZ_MAX_DEPTH 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char why[1024];
	if (mxev_oracle_check((const char *)data, size, FUZZ_MAX_DEPTH, NULL, why, sizeof(why)) != 0) {
		fprintf(stderr, "mxev_parse and jansson disagree: %s\n", why);
		abort();
	}
	return 0;
}
