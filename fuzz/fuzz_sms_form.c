/*
 * fuzz_sms_form.c - libFuzzer target: sms_form_parse, the form decoding every SMS webhook body goes through
 * (bridge/sms.h).  The oracle is in fuzz_sms_common.h.
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_sms_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_sms_one(data, size, 0, NULL);
	return 0;
}
