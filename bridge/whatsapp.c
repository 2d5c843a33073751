/*
 * whatsapp.c - the Cloud API webhook's verification handshake and signature.
 */
#include "whatsapp.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "util.h"

static int challenge_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > WA_MAX_CHALLENGE)
		return 0;
	for (; *s; s++) {
		char c = *s;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return 0;
	}
	return 1;
}

int wa_verify(const char *mode, const char *token, const char *challenge, const char *want, char *out)
{
	/* spec: developers.facebook.com/docs/graph-api/webhooks/getting-started, "Verification Requests" */
	if (!mode || strcmp(mode, "subscribe") != 0 || !token || !challenge || !want || !*want)
		return 0;
	if (!th_consttime_eq(token, strlen(token), want, strlen(want)) || !challenge_ok(challenge))
		return 0;
	memcpy(out, challenge, strlen(challenge) + 1);
	return 1;
}

void wa_signature(const char *app_secret, const void *body, size_t len, char out[72])
{
	unsigned char mac[32];
	unsigned maclen = 0;
	static const unsigned char empty[1] = {0};
	if (!HMAC(EVP_sha256(), app_secret, (int)strlen(app_secret), len ? body : empty, len, mac, &maclen))
		abort(); /* only an allocation failure gets here */
	memcpy(out, "sha256=", 7);
	th_hex(out + 7, mac, sizeof(mac));
}

int wa_signature_check(const char *app_secret, const void *body, size_t len, const char *header)
{
	char want[72];
	if (!header || !app_secret || !*app_secret)
		return 0;
	wa_signature(app_secret, body, len, want);
	return th_consttime_eq(want, strlen(want), header, strlen(header));
}

/* ---- notifications -------------------------------------------------------------- */

static int id_ok(const char *s, size_t max)
{
	size_t n = s ? strlen(s) : 0;
	return n > 0 && n <= max &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._=:-") == n;
}

static int digits_ok(const char *s, size_t min, size_t max)
{
	size_t n = s ? strlen(s) : 0;
	return n >= min && n <= max && strspn(s, "0123456789") == n;
}

/* "1700000000" (seconds, as a string) in ms; 0 when malformed. */
static uint64_t ts_of(const json_t *v)
{
	const char *s = json_string_value(v);
	uint64_t n = 0;
	if (!s || !digits_ok(s, 1, 12) || th_parse_u64(s, UINT64_MAX / 1000, &n) != TH_OK)
		return 0;
	return n * 1000;
}

static int message_of(const char *pnid, const json_t *m, json_t *out)
{
	const char *from = json_string_value(json_object_get(m, "from"));
	const char *id = json_string_value(json_object_get(m, "id"));
	const char *type = json_string_value(json_object_get(m, "type"));
	uint64_t ts = ts_of(json_object_get(m, "timestamp"));
	if (!digits_ok(from, 3, 20) || !id_ok(id, WA_MAX_ID) || !id_ok(type, 16) || !ts)
		return TH_OK;
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s}", "kind", "message", "pnid", pnid, "from", from,
	                      "id", id, "ts", (json_int_t)ts, "type", type);
	const char *text = NULL;
	if (strcmp(type, "text") == 0)
		text = json_string_value(json_object_get(json_object_get(m, "text"), "body"));
	if (strcmp(type, "image") == 0) {
		const json_t *img = json_object_get(m, "image");
		const char *mid = json_string_value(json_object_get(img, "id"));
		const char *mime = json_string_value(json_object_get(img, "mime_type"));
		text = json_string_value(json_object_get(img, "caption"));
		if (id_ok(mid, WA_MAX_ID))
			json_object_set_new(o, "media_id", json_string(mid));
		if (mime && strlen(mime) < 64)
			json_object_set_new(o, "mime_type", json_string(mime));
	}
	if (text && strlen(text) > WA_MAX_TEXT) {
		json_decref(o);
		return TH_ETOOLARGE;
	}
	if (text)
		json_object_set_new(o, "text", json_string(text));
	json_array_append_new(out, o);
	return TH_OK;
}

int wa_status_rank(const char *status)
{
	static const char *const ranks[] = {"sent", "delivered", "read", "failed"};
	for (size_t i = 0; status && i < sizeof(ranks) / sizeof(ranks[0]); i++) {
		if (strcmp(status, ranks[i]) == 0)
			return (int)i + 1;
	}
	return 0;
}

int wa_notification_parse(const char *body, size_t len, json_t **out)
{
	json_error_t err;
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
	const char *object = json_string_value(json_object_get(root, "object"));
	if (!root || !object || strcmp(object, "whatsapp_business_account") != 0) {
		json_decref(root);
		return TH_EINVAL;
	}
	json_t *items = json_array();
	int rc = TH_OK;
	size_t i, j, k, seen = 0;
	json_t *entry, *change, *v;
	json_array_foreach(json_object_get(root, "entry"), i, entry)
	{
		json_array_foreach(json_object_get(entry, "changes"), j, change)
		{
			const char *field = json_string_value(json_object_get(change, "field"));
			const json_t *value = json_object_get(change, "value");
			const char *pnid = json_string_value(
			        json_object_get(json_object_get(value, "metadata"), "phone_number_id"));
			if (!field || strcmp(field, "messages") != 0 || !digits_ok(pnid, 1, WA_MAX_PNID))
				continue;
			json_array_foreach(json_object_get(value, "messages"), k, v)
			{
				if (++seen > WA_MAX_ITEMS || (rc = message_of(pnid, v, items)))
					goto done;
			}
			json_array_foreach(json_object_get(value, "statuses"), k, v)
			{
				const char *id = json_string_value(json_object_get(v, "id"));
				const char *st = json_string_value(json_object_get(v, "status"));
				uint64_t ts = ts_of(json_object_get(v, "timestamp"));
				if (++seen > WA_MAX_ITEMS) {
					rc = TH_ETOOLARGE;
					goto done;
				}
				if (id_ok(id, WA_MAX_ID) && wa_status_rank(st) && ts)
					json_array_append_new(items,
					                      json_pack("{s:s, s:s, s:s, s:s, s:I}", "kind",
					                                "status", "pnid", pnid, "id", id,
					                                "status", st, "ts", (json_int_t)ts));
			}
		}
	}
done:
	if (seen > WA_MAX_ITEMS)
		rc = TH_ETOOLARGE;
	json_decref(root);
	if (rc) {
		json_decref(items);
		return rc;
	}
	*out = items;
	return TH_OK;
}

/* ---- what is posted ------------------------------------------------------------------ */

static char *body_of(json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!s)
		abort(); /* only an allocation failure gets here */
	return s;
}

/* spec: developers.facebook.com/docs/whatsapp/cloud-api/reference/messages */
char *wa_text_body(const char *to, const char *text)
{
	return body_of(json_pack("{s:s, s:s, s:s, s:s, s:{s:b, s:s}}", "messaging_product", "whatsapp",
	                         "recipient_type", "individual", "to", to, "type", "text", "text",
	                         "preview_url", 0, "body", text));
}

char *wa_template_body(const char *to, const char *name, const char *lang)
{
	return body_of(json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:{s:s}}}", "messaging_product", "whatsapp",
	                         "recipient_type", "individual", "to", to, "type", "template", "template",
	                         "name", name, "language", "code", lang));
}

char *wa_image_body(const char *to, const char *media_id)
{
	return body_of(json_pack("{s:s, s:s, s:s, s:s, s:{s:s}}", "messaging_product", "whatsapp",
	                         "recipient_type", "individual", "to", to, "type", "image", "image", "id",
	                         media_id));
}
