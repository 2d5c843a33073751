/*
 * fuzz_witness.c - libFuzzer target for the witness reader
 * (appservice/audit_witness.c, audit_witness_page): the input is a page of
 * GET /rooms/{id}/messages as the homeserver would answer `threshold audit
 * verify`, parsed as cs.c parses it.
 *
 * Oracle, besides ASan and UBSan: every witness taken is either a redacted
 * one (seq 0, no hash) or has a positive seq and 64 lower-case hex digits;
 * each names an event id that ends in NUL within its buffer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "audit_witness.h"
#include "fuzzlib.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_quiet();
	json_t *page = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
	if (!page)
		return 0;
	struct audit_witness_list l = {NULL, 0, 0};
	audit_witness_page(page, "@threshold:test.local", &l);
	for (size_t i = 0; i < l.n; i++) {
		const struct audit_witness *w = &l.v[i];
		if (!memchr(w->event_id, 0, sizeof(w->event_id)))
			fuzz_fail("witness %zu: event id not terminated", i);
		if (w->seq == 0 && w->hash[0])
			fuzz_fail("witness %zu: redacted but has a hash", i);
		if (w->seq && (strlen(w->hash) != 64 || strspn(w->hash, "0123456789abcdef") != 64))
			fuzz_fail("witness %zu: seq %llu with a bad hash", i, (unsigned long long)w->seq);
	}
	free(l.v);
	json_decref(page);
	return 0;
}
