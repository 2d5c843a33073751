/*
 * fuzz_sms_twilio.c - libFuzzer target: a Twilio-compatible webhook: the form, its fields (From, To, Body,
 * MessageSid) and X-Twilio-Signature over them (bridge/sms.h).  The oracle is in fuzz_sms_common.h.
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_sms_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_sms_one(data, size, 1, "https://threshold.example.org/sms/twilio");
	return 0;
}
