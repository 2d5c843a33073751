/*
 * fuzz_sms_kannel.c - libFuzzer target: a request from Kannel's sms-service (query or form fields from, to,
 * text, id) read by sms_in_read, and a delivery report to its dlr-url (id, type) read by
 * sms_kannel_dlr_read (bridge/sms.h).  The oracle is in fuzz_sms_common.h.
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_sms_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_sms_one(data, size, 0, NULL);
	fuzz_sms_one(data, size, 1, NULL);
	return 0;
}
