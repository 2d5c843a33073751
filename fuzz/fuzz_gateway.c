/*
 * fuzz_gateway.c - libFuzzer target for what the guest gateway parses of a
 * guest's own bytes, beyond the HTTP (libmicrohttpd) and JSON (jansson)
 * layers: an uploaded file (bridge/media.c: media_sniff, media_clean), a
 * typed resume code (bridge/secret.c: sec_resume_normalise), and an
 * invitation lifetime from a staff command (bridge/invites.c:
 * inv_parse_duration); and of what the homeserver sends about a picture or
 * file for a guest: an mxc URI and a file name (media_mxc_parse,
 * media_name_clean, media_ascii_name), and a whole m.image/m.file content
 * (media_attachment_read).  The first byte chooses which; the rest is the
 * input.
 *
 * Oracle, besides ASan and UBSan:
 *  - media: the verdict is one of enum media_verdict and a GIF is always
 *    refused; a picture made afresh is of the same kind, declares no more
 *    than MEDIA_MAX_SIDE a side and MEDIA_MAX_PIXELS in all (the decoder
 *    bounds), holds no metadata (no APP1..APP15/COM segment before a JPEG's
 *    scan; no eXIf/tEXt/zTXt/iTXt/tIME chunk in a PNG; in a WebP no EXIF or
 *    "XMP " chunk, no such flag in VP8X, and a RIFF size that is the
 *    file's), and cleaning it again succeeds; a PDF that passes keeps its
 *    length and header, and checking it again passes and changes nothing;
 *  - resume codes: an accepted code has the ABCD-EFGH-JKLM-NPQR shape and
 *    normalising it again gives itself;
 *  - durations: an accepted one is positive and at most a year and a day;
 *  - mxc URIs: an accepted one is rebuilt exactly from its two parts, each
 *    1..255 bytes, the id only of A-Z a-z 0-9 _ -;
 *  - names: a shown name is 1..100 bytes of UTF-8 with no '/', '\\',
 *    control or direction character, and cleaning it again changes
 *    nothing; its ASCII form is 1..100 bytes of letters, digits and
 *    " ._-+()", not starting with '.' or ' ';
 *  - contents: a read attachment has such a name, a mimetype that is empty
 *    or lowercase type/subtype, a size of -1 or more, and an mxc that is
 *    empty or one media_mxc_parse accepts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <webp/decode.h>

#include "invites.h"
#include "media.h"
#include "secret.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_jpeg(const unsigned char *b, size_t n)
{
	size_t i = 2;
	while (i + 4 <= n && b[i] == 0xff) {
		unsigned m = b[i + 1];
		if (m == 0xff) {
			i++;
			continue;
		}
		if (m == 0xda)
			return;
		if ((m >= 0xe1 && m <= 0xef) || m == 0xfe)
			abort(); /* metadata left before the scan */
		i += 2 + ((size_t)b[i + 2] << 8 | b[i + 3]);
	}
}

static void check_png(const unsigned char *b, size_t n)
{
	static const char *const gone[] = {"eXIf", "tEXt", "zTXt", "iTXt", "tIME"};
	for (size_t i = 8; i + 12 <= n;) {
		size_t len = (size_t)b[i] << 24 | (size_t)b[i + 1] << 16 | (size_t)b[i + 2] << 8 | b[i + 3];
		for (size_t k = 0; k < 5; k++) {
			if (!memcmp(b + i + 4, gone[k], 4))
				abort();
		}
		if (len > n - i - 12)
			abort(); /* the stripped file must be well formed */
		i += len + 12;
	}
}

static size_t le32(const unsigned char *p)
{
	return (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 | (size_t)p[3] << 24;
}

static void check_webp(const unsigned char *b, size_t n)
{
	if (n < 12 || le32(b + 4) != n - 8)
		abort(); /* the RIFF size must be the file's */
	for (size_t i = 12; i < n;) {
		if (n - i < 8)
			abort();
		size_t len = le32(b + i + 4);
		if (len > n - i - 8)
			abort();
		if (!memcmp(b + i, "EXIF", 4) || !memcmp(b + i, "XMP ", 4))
			abort(); /* metadata left */
		if (!memcmp(b + i, "VP8X", 4) && (b[i + 8] & 0x0c))
			abort(); /* the header still says there is metadata */
		i += 8 + len + (len & 1);
	}
}

/* The size a fresh picture declares is within the decoder bounds. */
static void check_bounds(const struct media_kind *k, const unsigned char *b, size_t n)
{
	uint64_t w = 0, h = 0;
	if (!strcmp(k->ext, "png") && n >= 24) {
		w = (uint64_t)b[16] << 24 | (uint64_t)b[17] << 16 | (uint64_t)b[18] << 8 | b[19];
		h = (uint64_t)b[20] << 24 | (uint64_t)b[21] << 16 | (uint64_t)b[22] << 8 | b[23];
	} else if (!strcmp(k->ext, "jpg")) {
		for (size_t i = 2; i + 9 < n; i++) {
			if (b[i] == 0xff && b[i + 1] >= 0xc0 && b[i + 1] <= 0xc2) { /* SOF0..2 */
				h = (uint64_t)b[i + 5] << 8 | b[i + 6];
				w = (uint64_t)b[i + 7] << 8 | b[i + 8];
				break;
			}
		}
	} else if (!strcmp(k->ext, "webp")) {
		int iw, ih;
		if (!WebPGetInfo(b, n, &iw, &ih))
			abort(); /* our own WebP must read */
		w = (uint64_t)iw;
		h = (uint64_t)ih;
	}
	if (w < 1 || h < 1 || w > MEDIA_MAX_SIDE || h > MEDIA_MAX_SIDE || w * h > MEDIA_MAX_PIXELS)
		abort();
}

static void fuzz_media(const uint8_t *data, size_t size)
{
	const struct media_kind *k = media_sniff(data, size);
	if (!k)
		return;
	unsigned char *b = NULL;
	size_t n = 0;
	int v = media_clean(k, data, size, &b, &n);
	if (v < MEDIA_OK || v > MEDIA_UNSAFE || (!strcmp(k->ext, "gif") && v != MEDIA_REFUSED))
		abort();
	if (v != MEDIA_OK)
		return;
	if (media_sniff(b, n) != k)
		abort();
	if (!strcmp(k->ext, "pdf")) {
		if (n != size || memcmp(b, data, 5) != 0)
			abort(); /* blanked in place */
		unsigned char *again = malloc(n);
		memcpy(again, b, n);
		if (media_pdf_clean(again, n) != MEDIA_OK || memcmp(again, b, n) != 0)
			abort(); /* checking again passes and changes nothing */
		free(again);
		free(b);
		return;
	}
	if (!strcmp(k->mimetype, "image/jpeg"))
		check_jpeg(b, n);
	if (!strcmp(k->mimetype, "image/png"))
		check_png(b, n);
	if (!strcmp(k->mimetype, "image/webp"))
		check_webp(b, n);
	check_bounds(k, b, n);
	unsigned char *b2 = NULL;
	size_t n2 = 0;
	if (media_clean(k, b, n, &b2, &n2) != MEDIA_OK)
		abort(); /* our own picture cleans again */
	free(b2);
	free(b);
}

static void check_mxc(const char *uri)
{
	char server[MEDIA_MAX_SERVER + 1], id[MEDIA_MAX_ID + 1], again[MEDIA_MAX_MXC + 16];
	if (media_mxc_parse(uri, server, id) != TH_OK)
		return;
	size_t sn = strlen(server), in = strlen(id);
	if (sn < 1 || sn > MEDIA_MAX_SERVER || in < 1 || in > MEDIA_MAX_ID)
		abort();
	if (strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != in)
		abort();
	snprintf(again, sizeof(again), "mxc://%s/%s", server, id);
	if (strcmp(again, uri) != 0)
		abort();
}

/* A shown name: 1..100 bytes of UTF-8 (jansson agrees), nothing unshowable. */
static void check_name(const char *name)
{
	size_t n = strlen(name);
	if (n < 1 || n > MEDIA_MAX_NAME || strpbrk(name, "/\\"))
		abort();
	json_t *j = json_string(name);
	if (!j)
		abort(); /* not UTF-8 */
	json_decref(j);
	static const char *const bad[] = {"\xd8\x9c",     "\xe2\x80\x8e", "\xe2\x80\x8f", "\xe2\x80\xaa",
	                                  "\xe2\x80\xab", "\xe2\x80\xac", "\xe2\x80\xad", "\xe2\x80\xae",
	                                  "\xe2\x81\xa6", "\xe2\x81\xa7", "\xe2\x81\xa8", "\xe2\x81\xa9"};
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			abort();
		if ((unsigned char)name[i] == 0xc2 && i + 1 < n && (unsigned char)name[i + 1] >= 0x80 &&
		    (unsigned char)name[i + 1] <= 0x9f)
			abort(); /* a C1 control */
	}
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		if (strstr(name, bad[k]))
			abort();
	}
	char again[MEDIA_MAX_NAME + 1], ascii[MEDIA_MAX_NAME + 1];
	media_name_clean(name, "file", again);
	if (strcmp(again, name) != 0)
		abort(); /* cleaning is idempotent */
	media_ascii_name(name, ascii);
	size_t an = strlen(ascii);
	if (an < 1 || an > MEDIA_MAX_NAME || ascii[0] == '.' || ascii[0] == ' ')
		abort();
	for (size_t i = 0; i < an; i++) {
		char c = ascii[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr(" ._-+()", c)))
			abort();
	}
}

static void fuzz_attachment(const uint8_t *data, size_t size)
{
	json_t *content = json_loadb((const char *)data, size, 0, NULL);
	static const char *const types[] = {"m.image", "m.file", "m.video", "m.audio", "m.text"};
	struct media_attachment a;
	const char *msgtype = types[size % 5];
	int rc = media_attachment_read(msgtype, content, &a);
	if ((rc == TH_OK) != (strcmp(msgtype, "m.text") != 0))
		abort();
	if (rc == TH_OK) {
		check_name(a.name);
		size_t m = strlen(a.mimetype);
		if (m && (!strchr(a.mimetype, '/') ||
		          strspn(a.mimetype, "abcdefghijklmnopqrstuvwxyz0123456789!#$&^_.+-/") != m))
			abort();
		if (a.size < -1)
			abort();
		if (a.mxc[0]) {
			char server[MEDIA_MAX_SERVER + 1], id[MEDIA_MAX_ID + 1];
			if (media_mxc_parse(a.mxc, server, id) != TH_OK)
				abort();
		}
	}
	json_decref(content);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t which = data[0] % 5;
	data++;
	size--;
	if (which == 0) {
		fuzz_media(data, size);
		return 0;
	}
	if (which == 4) {
		fuzz_attachment(data, size);
		return 0;
	}
	char *s = malloc(size + 1);
	memcpy(s, data, size);
	s[size] = '\0';
	if (which == 1) {
		char out[SEC_RESUME_LEN + 1], again[SEC_RESUME_LEN + 1];
		if (sec_resume_normalise(s, out)) {
			if (strlen(out) != SEC_RESUME_LEN || out[4] != '-' || out[9] != '-' || out[14] != '-')
				abort();
			if (!sec_resume_normalise(out, again) || strcmp(out, again) != 0)
				abort();
		}
	} else if (which == 2) {
		uint64_t ms;
		if (inv_parse_duration(s, &ms) == TH_OK && (ms == 0 || ms > 367ull * 24 * 3600 * 1000))
			abort();
	} else {
		check_mxc(s);
		char name[MEDIA_MAX_NAME + 1];
		media_name_clean(s, "file", name);
		check_name(name);
	}
	free(s);
	return 0;
}
