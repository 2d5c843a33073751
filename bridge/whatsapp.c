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
