/*
 * fuzz_sms_common.h - what the three SMS targets (fuzz_sms_form,
 * fuzz_sms_kannel, fuzz_sms_twilio) check of bridge/sms.h on any input.
 *
 * Oracle, besides ASan and UBSan:
 *  - sms_form_parse either fails or gives an object of at most
 *    SMS_MAX_FIELDS strings, each valid UTF-8 (jansson checks) and shorter
 *    than the input; parsing twice gives the same object;
 *  - sms_in_read, on success, gives a number of "+"? and 3..20 digits for
 *    both ends, an id within SMS_MAX_ID of [A-Za-z0-9._:-], and a text of
 *    at most SMS_MAX_TEXT bytes equal to the field it came from;
 *  - a Twilio signature computed over the fields checks, and fails with
 *    one character changed;
 *  - sms_kannel_dlr_read, on success, gives the "id" field as it came (32
 *    lowercase hex) and a state other than "sent", "failed" exactly for
 *    Kannel's types 2 and 16.
 */
#ifndef THRESHOLD_FUZZ_SMS_COMMON_H
#define THRESHOLD_FUZZ_SMS_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sms.h"
#include "util.h"

static void fuzz_sms_check_number(const char *n)
{
	size_t digits = 0;
	for (const char *p = n; *p; p++) {
		if (p == n && *p == '+')
			continue;
		if (*p < '0' || *p > '9')
			abort();
		digits++;
	}
	if (digits < 3 || digits > 20)
		abort();
}

/* Parse @p data as a form; check; then read it as a text both ways. */
static void fuzz_sms_one(const uint8_t *data, size_t size, int twilio, const char *url)
{
	json_t *f = NULL, *g = NULL;
	int rc = sms_form_parse((const char *)data, size, &f);
	int rc2 = sms_form_parse((const char *)data, size, &g);
	if (rc != rc2)
		abort();
	if (rc) {
		json_decref(g);
		return;
	}
	if (!json_is_object(f) || json_object_size(f) > SMS_MAX_FIELDS || !json_equal(f, g))
		abort();
	const char *k;
	json_t *v;
	json_object_foreach(f, k, v)
	{
		if (!json_is_string(v) || json_string_length(v) >= size + 1 || strlen(k) > size)
			abort();
	}
	json_decref(g);
	struct sms_in in;
	if (sms_in_read(f, twilio, &in) == TH_OK) {
		fuzz_sms_check_number(in.from);
		fuzz_sms_check_number(in.to);
		if (strlen(in.id) > SMS_MAX_ID || strlen(in.text) > SMS_MAX_TEXT)
			abort();
		const char *text = json_string_value(json_object_get(f, twilio ? "Body" : "text"));
		if (!text || strcmp(text, in.text) != 0)
			abort();
	}
	char dlr_id[SMS_DLR_ID_LEN + 1];
	enum sms_dlr_state st;
	if (sms_kannel_dlr_read(f, dlr_id, &st) == TH_OK) {
		const char *type = json_string_value(json_object_get(f, "type"));
		if (strlen(dlr_id) != SMS_DLR_ID_LEN ||
		    strspn(dlr_id, "0123456789abcdef") != SMS_DLR_ID_LEN ||
		    strcmp(dlr_id, json_string_value(json_object_get(f, "id"))) != 0 ||
		    !sms_dlr_state_name(st) || sms_dlr_state_from_name(sms_dlr_state_name(st)) != (int)st ||
		    st == SMS_DLR_SENT || !type ||
		    (st == SMS_DLR_FAILED) != (strcmp(type, "2") == 0 || strcmp(type, "16") == 0))
			abort();
	}
	if (url) {
		char sig[SMS_TWILIO_SIG_LEN + 1];
		sms_twilio_sign("token", url, f, sig);
		if (strlen(sig) != SMS_TWILIO_SIG_LEN || !sms_twilio_check("token", url, f, sig))
			abort();
		sig[3] = sig[3] == 'A' ? 'B' : 'A';
		if (sms_twilio_check("token", url, f, sig))
			abort();
	}
	json_decref(f);
}

#endif
