/*
 * secret.c - random tokens and their stored hashes.
 */
#include "secret.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "util.h"

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static const char resume_alphabet[] = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"; /* 32: no I O 0 1 */

int sec_token_new(char *out)
{
	unsigned char raw[SEC_TOKEN_BYTES];
	if (th_random(raw, sizeof(raw)) != TH_OK)
		return TH_EIO;
	/* 24 bytes are exactly 32 base64 digits: 3 bytes -> 4 digits, no padding. */
	for (size_t i = 0, o = 0; i < sizeof(raw); i += 3) {
		unsigned v = (unsigned)raw[i] << 16 | (unsigned)raw[i + 1] << 8 | raw[i + 2];
		out[o++] = b64url[(v >> 18) & 63];
		out[o++] = b64url[(v >> 12) & 63];
		out[o++] = b64url[(v >> 6) & 63];
		out[o++] = b64url[v & 63];
	}
	out[SEC_TOKEN_LEN] = '\0';
	explicit_bzero(raw, sizeof(raw));
	return TH_OK;
}

int sec_resume_new(char *out)
{
	unsigned char raw[16];
	if (th_random(raw, sizeof(raw)) != TH_OK)
		return TH_EIO;
	size_t o = 0;
	for (size_t i = 0; i < 16; i++) {
		if (i && i % 4 == 0)
			out[o++] = '-';
		out[o++] = resume_alphabet[raw[i] & 31];
	}
	out[o] = '\0';
	explicit_bzero(raw, sizeof(raw));
	return TH_OK;
}

int sec_resume_normalise(const char *typed, char *out)
{
	size_t n = 0, o = 0;
	for (const char *p = typed; *p; p++) {
		char c = *p;
		if (c == ' ' || c == '-')
			continue;
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		if (!strchr(resume_alphabet, c) || n == 16)
			return 0;
		if (n && n % 4 == 0)
			out[o++] = '-';
		out[o++] = c;
		n++;
	}
	out[o] = '\0';
	return n == 16;
}

int sec_token_ok(const char *s)
{
	if (!s || strlen(s) != SEC_TOKEN_LEN)
		return 0;
	for (const char *p = s; *p; p++) {
		if (!strchr(b64url, *p))
			return 0;
	}
	return 1;
}

void sec_hash(const char *domain, const char *secret, unsigned char out[SEC_HASH_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned len = 0;
	if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) ||
	    !EVP_DigestUpdate(ctx, domain, strlen(domain) + 1) ||
	    !EVP_DigestUpdate(ctx, secret, strlen(secret)) || !EVP_DigestFinal_ex(ctx, out, &len))
		abort(); /* only an allocation failure gets here */
	EVP_MD_CTX_free(ctx);
}
