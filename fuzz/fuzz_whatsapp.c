/*
 * fuzz_whatsapp.c - libFuzzer target for the WhatsApp webhook's checks
 * (bridge/whatsapp.h): the verification handshake's query, read as a form
 * (sms_form_parse, as the listener would), and X-Hub-Signature-256 over
 * the input as a raw body, and the same input as a notification's body
 * (wa_notification_parse, the channel's parser of messages and statuses).
 *
 * Oracle, besides ASan and UBSan:
 *  - a handshake accepted echoes exactly hub.challenge, 1..WA_MAX_CHALLENGE
 *    of [A-Za-z0-9_-.], only for mode "subscribe" and the right token;
 *  - the signature computed over the body checks; with one byte of the
 *    body or of the header changed it does not;
 *  - a notification read gives at most WA_MAX_ITEMS items, each a message
 *    with a from of 3..20 digits, an id, a type and ms timestamp, text
 *    within WA_MAX_TEXT, or a status of a known rank.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sms.h"
#include "util.h"
#include "whatsapp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *q = NULL;
	if (sms_form_parse((const char *)data, size, &q) == TH_OK) {
		const char *mode = json_string_value(json_object_get(q, "hub.mode"));
		const char *token = json_string_value(json_object_get(q, "hub.verify_token"));
		const char *ch = json_string_value(json_object_get(q, "hub.challenge"));
		char out[WA_MAX_CHALLENGE + 1];
		if (wa_verify(mode, token, ch, "verify-token", out)) {
			if (strcmp(mode, "subscribe") != 0 || strcmp(token, "verify-token") != 0 ||
			    strcmp(out, ch) != 0 || strlen(out) == 0 || strlen(out) > WA_MAX_CHALLENGE)
				abort();
		}
		json_decref(q);
	}
	json_t *items = NULL;
	if (wa_notification_parse((const char *)data, size, &items) == TH_OK) {
		if (!json_is_array(items) || json_array_size(items) > WA_MAX_ITEMS)
			abort();
		size_t i;
		json_t *it;
		json_array_foreach(items, i, it)
		{
			const char *kind = json_string_value(json_object_get(it, "kind"));
			const char *id = json_string_value(json_object_get(it, "id"));
			const char *from = json_string_value(json_object_get(it, "from"));
			const char *text = json_string_value(json_object_get(it, "text"));
			if (!kind || !id || !*id || strlen(id) > WA_MAX_ID ||
			    json_integer_value(json_object_get(it, "ts")) <= 0)
				abort();
			if (strcmp(kind, "message") == 0) {
				if (!from || strlen(from) < 3 || strlen(from) > 20 ||
				    strspn(from, "0123456789") != strlen(from) ||
				    !json_string_value(json_object_get(it, "type")) ||
				    (text && strlen(text) > WA_MAX_TEXT))
					abort();
			} else if (strcmp(kind, "status") != 0 ||
			           !wa_status_rank(json_string_value(json_object_get(it, "status")))) {
				abort();
			}
		}
		json_decref(items);
	}
	char sig[72];
	wa_signature("app-secret", data, size, sig);
	if (strlen(sig) != 71 || !wa_signature_check("app-secret", data, size, sig))
		abort();
	sig[70] = sig[70] == '0' ? '1' : '0';
	if (wa_signature_check("app-secret", data, size, sig))
		abort();
	sig[70] = sig[70] == '0' ? '1' : '0';
	if (size) {
		uint8_t *copy = malloc(size);
		memcpy(copy, data, size);
		copy[size / 2] ^= 1;
		if (wa_signature_check("app-secret", copy, size, sig))
			abort();
		free(copy);
	}
	return 0;
}
