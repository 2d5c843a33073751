/*
 * fuzz_audit_export.c - libFuzzer target for the export reader
 * (appservice/audit.c, audit_verify_file), which `threshold audit verify
 * --file` and `--against` run on a JSON Lines export that may come from
 * anywhere.  The input is the file.  Seeds are real exports (fuzz/README.md
 * says how they were made), so mutations start from valid chains and
 * signatures.
 *
 * Oracle, besides ASan and UBSan: the result is one of the documented codes;
 * TH_ETOOLARGE only for a line over AUDIT_MAX_RECORD bytes; TH_OK means no
 * problem noted, at least one checkpoint and its hash, and no NUL byte;
 * TH_EVERIFY means a problem noted; and giving the header's own key
 * explicitly changes nothing.
 */
#include <stdint.h>
#include <string.h>

#include "audit.h"
#include "fuzzlib.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The longest line of @p data, newline not counted. */
static size_t longest_line(const uint8_t *data, size_t size)
{
	size_t best = 0, cur = 0;
	for (size_t i = 0; i < size; i++) {
		cur = data[i] == '\n' ? 0 : cur + 1;
		if (cur > best)
			best = cur;
	}
	return best;
}

static void check_result(int rc, const struct audit_verify_result *res, const uint8_t *data, size_t size)
{
	FUZZ_ASSERT(rc != TH_ETOOLARGE || longest_line(data, size) > AUDIT_MAX_RECORD,
	            "TH_ETOOLARGE, but no line is over %d bytes", AUDIT_MAX_RECORD);
	FUZZ_ASSERT(rc != TH_OK || !memchr(data, 0, size), "a file holding a NUL byte verifies");
	FUZZ_ASSERT(rc == TH_OK || rc == TH_EVERIFY || rc == TH_ETOOLARGE || rc == TH_EIO,
	            "audit_verify_file returned %s", th_strerror(rc));
	FUZZ_ASSERT(memchr(res->what, 0, sizeof(res->what)), "what is not terminated");
	FUZZ_ASSERT(memchr(res->pubkey, 0, sizeof(res->pubkey)), "pubkey is not terminated");
	if (rc == TH_OK) {
		FUZZ_ASSERT(!res->what[0], "TH_OK with a problem: %s", res->what);
		FUZZ_ASSERT(res->checkpoints > 0 && res->last_checkpoint > 0, "TH_OK without a checkpoint");
		FUZZ_ASSERT(strlen(res->last_checkpoint_hash) == 2 * AUDIT_HASH_LEN, "TH_OK without a hash");
		FUZZ_ASSERT(res->first_seq <= res->last_seq && res->records > 0, "TH_OK with no records");
	} else if (rc == TH_EVERIFY) {
		FUZZ_ASSERT(res->what[0], "TH_EVERIFY with no problem noted");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	if (!ready) {
		fuzz_quiet();
		ready = 1;
	}
	const char *path = fuzz_input_path(data, size);
	struct audit_verify_result res, again;
	int rc = audit_verify_file(path, NULL, &res);
	check_result(rc, &res, data, size);
	if (res.pubkey[0]) {
		char key[AUDIT_PUBKEY_LEN + 1];
		memcpy(key, res.pubkey, sizeof(key));
		int rc2 = audit_verify_file(path, key, &again);
		check_result(rc2, &again, data, size);
		FUZZ_ASSERT(rc2 == rc && !strcmp(again.what, res.what) && again.bad_seq == res.bad_seq,
		            "the header's own key, given explicitly, changes the result");
	}
	return 0;
}
