/*
 * media.c - sniffing and metadata stripping (spec: PNG, ISO/IEC 15948
 * chunks; JPEG, ITU T.81 markers and JFIF).
 */
#include "media.h"

#include <string.h>

#include "util.h"

static const struct media_kind kinds[] = {
        {"image/png", "m.image", "png"},      {"image/jpeg", "m.image", "jpg"},
        {"image/gif", "m.image", "gif"},      {"image/webp", "m.image", "webp"},
        {"application/pdf", "m.file", "pdf"},
};

const struct media_kind *media_sniff(const unsigned char *b, size_t n)
{
	if (n >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8))
		return &kinds[0];
	if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
		return &kinds[1];
	if (n >= 6 && (!memcmp(b, "GIF87a", 6) || !memcmp(b, "GIF89a", 6)))
		return &kinds[2];
	if (n >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4))
		return &kinds[3];
	if (n >= 5 && !memcmp(b, "%PDF-", 5))
		return &kinds[4];
	return NULL;
}

static unsigned be16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static size_t be32(const unsigned char *p)
{
	return (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
}

/* JPEG: copy SOI, then every segment but APP1..APP15 and COM, up to SOS;
 * the entropy-coded data after SOS (and EOI) as it is. */
static int strip_jpeg(unsigned char *b, size_t *len)
{
	size_t n = *len, in = 2, out = 2;
	while (in + 4 <= n) {
		if (b[in] != 0xff)
			return TH_EINVAL;
		unsigned marker = b[in + 1];
		if (marker == 0xff) { /* fill byte */
			in++;
			continue;
		}
		if (marker == 0xda) { /* start of scan: the rest is image data */
			memmove(b + out, b + in, n - in);
			*len = out + (n - in);
			return TH_OK;
		}
		if (marker == 0xd8 || marker == 0xd9 || (marker >= 0xd0 && marker <= 0xd7))
			return TH_EINVAL; /* no payload markers before the scan: damaged */
		size_t seg = be16(b + in + 2);
		if (seg < 2 || in + 2 + seg > n)
			return TH_EINVAL;
		int drop = (marker >= 0xe1 && marker <= 0xef) || marker == 0xfe;
		if (!drop) {
			memmove(b + out, b + in, 2 + seg);
			out += 2 + seg;
		}
		in += 2 + seg;
	}
	return TH_EINVAL; /* no scan */
}

/* PNG: every chunk but eXIf, tEXt, zTXt, iTXt and tIME. */
static int strip_png(unsigned char *b, size_t *len)
{
	static const char *const drop[] = {"eXIf", "tEXt", "zTXt", "iTXt", "tIME"};
	size_t n = *len, in = 8, out = 8;
	while (in + 12 <= n) {
		size_t clen = be32(b + in);
		if (clen > n - in - 12)
			return TH_EINVAL;
		int skip = 0;
		for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
			skip |= !memcmp(b + in + 4, drop[i], 4);
		int end = !memcmp(b + in + 4, "IEND", 4);
		if (!skip) {
			memmove(b + out, b + in, clen + 12);
			out += clen + 12;
		}
		in += clen + 12;
		if (end) {
			*len = out;
			return TH_OK;
		}
	}
	return TH_EINVAL; /* no IEND */
}

int media_strip(const struct media_kind *kind, unsigned char *buf, size_t *len)
{
	if (kind == &kinds[0])
		return strip_png(buf, len);
	if (kind == &kinds[1])
		return strip_jpeg(buf, len);
	return TH_OK;
}
