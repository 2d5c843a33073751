/*
 * fuzz_stun.c - libFuzzer target for the reading of a TURN server's answer
 * (appservice/stun.h), which `threshold doctor` takes from the network.
 * The input is read as an answer to its own transaction id (so the fuzzer
 * gets past that check) and to another, framed as TCP would frame it, and
 * taken as a TURN URI.
 *
 * Oracle, besides ASan and UBSan:
 *  - an accepted answer is a success or an error; an error carries a code
 *    in 300..699, a success may carry one only if the server sent it;
 *  - it is exactly one message: stun_message_length agrees with its size;
 *  - an answer to another transaction id is never accepted;
 *  - an accepted URI has a host of its own characters and a port 1..65535.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stun.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct stun_answer a;
	uint8_t txid[STUN_TXID_LEN] = {0};
	if (size >= STUN_HEADER_LEN)
		memcpy(txid, data + 8, STUN_TXID_LEN);
	int rc = stun_answer_parse(data, size, txid, &a);
	if (rc == TH_OK) {
		size_t total = 0;
		if (a.cls != STUN_SUCCESS && a.cls != STUN_ERROR)
			abort();
		if (a.cls == STUN_ERROR && (a.error_code < 300 || a.error_code > 699))
			abort();
		if (a.error_code && (a.error_code < 300 || a.error_code > 699))
			abort();
		if (stun_message_length(data, size, &total) != TH_OK || total != size)
			abort();
		uint8_t other[STUN_TXID_LEN];
		memcpy(other, txid, sizeof(other));
		other[0] ^= 0xFF;
		if (stun_answer_parse(data, size, other, &a) != TH_ENOTFOUND)
			abort();
	} else if (rc != TH_EINVAL && rc != TH_ENOTFOUND && rc != TH_ETOOLARGE) {
		abort();
	}
	/* as a TCP stream: whatever length the header claims, the parse of that much is safe */
	size_t total = 0;
	if (stun_message_length(data, size, &total) == TH_OK && total <= size)
		(void)stun_answer_parse(data, total, txid, &a);

	char *uri = xstrndup((const char *)data, size);
	struct stun_uri u;
	if (stun_uri_parse(uri, &u) == TH_OK) {
		size_t hl = strlen(u.host);
		if (hl == 0 || u.port == 0 || u.port > 65535 ||
		    strspn(u.host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:") != hl)
			abort();
	}
	free(uri);
	return 0;
}
