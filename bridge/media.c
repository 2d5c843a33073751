/*
 * media.c - sniffing and metadata stripping (spec: PNG, ISO/IEC 15948
 * chunks; JPEG, ITU T.81 markers and JFIF; WebP, the RIFF container of
 * RFC 9649).
 */
#include "media.h"

#include <stdio.h>
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

static size_t le32(const unsigned char *p)
{
	return (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 | (size_t)p[3] << 24;
}

static void put_le32(unsigned char *p, size_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/* WebP (RIFF): every chunk but EXIF and "XMP ", with the extended header's
 * (VP8X) EXIF and XMP flags cleared and the RIFF size made right.  Chunks
 * are FourCC, LE32 size, payload, and a pad byte when the size is odd. */
static int strip_webp(unsigned char *b, size_t *len)
{
	size_t n = *len;
	size_t riff = le32(b + 4);
	if (riff < 4 || riff > n - 8)
		return TH_EINVAL;
	n = riff + 8; /* whatever follows the RIFF is not the picture's */
	size_t in = 12, out = 12;
	int image = 0;
	while (in < n) {
		if (n - in < 8)
			return TH_EINVAL;
		size_t clen = le32(b + in + 4), whole = 8 + clen + (clen & 1);
		if (clen > n - in - 8)
			return TH_EINVAL;
		if (whole > n - in) /* the last chunk's pad byte may be missing */
			whole = n - in;
		int drop = !memcmp(b + in, "EXIF", 4) || !memcmp(b + in, "XMP ", 4);
		if (!memcmp(b + in, "VP8X", 4)) {
			if (clen < 10)
				return TH_EINVAL;
			b[in + 8] &= (unsigned char)~0x0c; /* EXIF (0x08) and XMP (0x04) present */
		}
		image |= !memcmp(b + in, "VP8 ", 4) || !memcmp(b + in, "VP8L", 4) ||
		         !memcmp(b + in, "ANMF", 4);
		if (!drop) {
			memmove(b + out, b + in, whole);
			out += whole;
		}
		in += whole;
	}
	if (!image)
		return TH_EINVAL;
	put_le32(b + 4, out - 8);
	*len = out;
	return TH_OK;
}

int media_strip(const struct media_kind *kind, unsigned char *buf, size_t *len)
{
	if (kind == &kinds[0])
		return strip_png(buf, len);
	if (kind == &kinds[1])
		return strip_jpeg(buf, len);
	if (kind == &kinds[3])
		return strip_webp(buf, len);
	return TH_OK;
}

/* ---- what someone else sent the guest ------------------------------------ */

/* The length of the valid UTF-8 sequence at @p p (at most @p n bytes), its
 * code point in @p cp; 0 if it is not one (overlong, surrogate, cut short). */
static size_t utf8_next(const unsigned char *p, size_t n, uint32_t *cp)
{
	static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
	size_t len = p[0] < 0x80             ? 1
	             : (p[0] & 0xe0) == 0xc0 ? 2
	             : (p[0] & 0xf0) == 0xe0 ? 3
	             : (p[0] & 0xf8) == 0xf0 ? 4
	                                     : 0;
	if (!len || len > n)
		return 0;
	uint32_t c = len == 1 ? p[0] : (uint32_t)(p[0] & (0x7f >> len));
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (p[i] & 0x3f);
	}
	if (c < min[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

/* Characters a shown name never holds: C0 and C1 controls, and the marks
 * and overrides that change which way text runs. */
static int unshowable(uint32_t c)
{
	return c < 0x20 || (c >= 0x7f && c <= 0x9f) || c == 0x061c || c == 0x200e || c == 0x200f ||
	       (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

void media_name_clean(const char *name, const char *fallback, char out[MEDIA_MAX_NAME + 1])
{
	const char *base = name ? name : "";
	for (const char *p = base; *p; p++) {
		if (*p == '/' || *p == '\\')
			base = p + 1;
	}
	const unsigned char *p = (const unsigned char *)base;
	size_t left = strlen(base), o = 0;
	while (left) {
		uint32_t c;
		size_t len = utf8_next(p, left, &c);
		if (!len) { /* not UTF-8: one byte becomes '_' */
			c = '_';
			len = 1;
		} else if (unshowable(c)) { /* C0 and DEL show as '_'; C1 and direction marks go */
			c = c < 0x20 || c == 0x7f ? '_' : 0;
		}
		size_t w = c == 0 ? 0 : c == '_' ? 1 : len;
		if (o + w > MEDIA_MAX_NAME)
			break;
		if (c == '_')
			out[o] = '_';
		else if (w)
			memcpy(out + o, p, w);
		o += w;
		p += len;
		left -= len;
	}
	while (o > 0 && out[o - 1] == ' ')
		o--;
	out[o] = '\0';
	if (o == 0 || strspn(out, ". ") == o) { /* nothing, or only dots: "..", "." */
		size_t n = fallback ? strlen(fallback) : 0;
		if (n > MEDIA_MAX_NAME)
			n = MEDIA_MAX_NAME;
		memcpy(out, fallback ? fallback : "", n);
		out[n] = '\0';
	}
}

void media_ascii_name(const char *name, char out[MEDIA_MAX_NAME + 1])
{
	const unsigned char *p = (const unsigned char *)(name ? name : "");
	size_t o = 0;
	while (*p && o < MEDIA_MAX_NAME) {
		unsigned char c = *p++;
		if (c >= 0x80) { /* one '_' for the whole character */
			while ((*p & 0xc0) == 0x80)
				p++;
			c = '_';
		} else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		             strchr(" ._-+()", c))) {
			c = '_';
		}
		if (o == 0 && (c == '.' || c == ' '))
			continue;
		out[o++] = (char)c;
	}
	while (o > 0 && out[o - 1] == ' ')
		o--;
	out[o] = '\0';
	if (o == 0)
		memcpy(out, "file", 5);
}

/* "type/subtype", each part an RFC 6838 restricted name (a letter or digit,
 * then up to 126 of those and !#$&^_.+-), lowercased into @p out. */
static int mimetype_ok(const char *s, char out[MEDIA_MAX_MIMETYPE + 1])
{
	size_t n = s ? strlen(s) : 0, part = 0, slashes = 0;
	if (n < 3 || n > MEDIA_MAX_MIMETYPE)
		return 0;
	for (size_t o = 0; o < n; o++) {
		char c = s[o];
		if (c >= 'A' && c <= 'Z')
			c = (char)(c + 32);
		int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		if (c == '/') {
			if (slashes++ || o == part)
				return 0;
			part = o + 1;
		} else if (!alnum && (o == part || !strchr("!#$&^_.+-", c))) {
			return 0;
		}
		out[o] = c;
	}
	out[n] = '\0';
	return slashes == 1 && part < n;
}

int media_mxc_parse(const char *uri, char server[MEDIA_MAX_SERVER + 1], char id[MEDIA_MAX_ID + 1])
{
	if (!uri || strncmp(uri, "mxc://", 6) != 0)
		return TH_EINVAL;
	const char *s = uri + 6, *slash = strchr(s, '/');
	if (!slash)
		return TH_EINVAL;
	size_t sn = (size_t)(slash - s), in = strlen(slash + 1);
	if (sn < 1 || sn > MEDIA_MAX_SERVER || in < 1 || in > MEDIA_MAX_ID)
		return TH_EINVAL;
	/* spec: appendices, server name: hostname | IPv4 | "[" IPv6 "]", then ":" port */
	size_t host = sn;
	if (s[0] == '[') {
		const char *close = memchr(s, ']', sn);
		if (!close || close == s + 1)
			return TH_EINVAL;
		host = (size_t)(close - s) + 1;
		if (strspn(s + 1, "0123456789abcdefABCDEF:.") != host - 2)
			return TH_EINVAL;
	} else {
		const char *colon = memchr(s, ':', sn);
		host = colon ? (size_t)(colon - s) : sn;
		if (host == 0 ||
		    strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") < host)
			return TH_EINVAL;
	}
	if (host < sn) { /* a port: ":" and 1..5 digits */
		size_t digits = sn - host - 1;
		if (s[host] != ':' || digits < 1 || digits > 5 || strspn(s + host + 1, "0123456789") < digits)
			return TH_EINVAL;
	}
	if (strspn(slash + 1, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != in)
		return TH_EINVAL;
	memcpy(server, s, sn);
	server[sn] = '\0';
	memcpy(id, slash + 1, in + 1);
	return TH_OK;
}

int media_attachment_read(const char *msgtype, const json_t *content, struct media_attachment *out)
{
	int picture = msgtype && !strcmp(msgtype, "m.image");
	if (!picture && !(msgtype && (!strcmp(msgtype, "m.file") || !strcmp(msgtype, "m.video") ||
	                              !strcmp(msgtype, "m.audio"))))
		return TH_EINVAL;
	memset(out, 0, sizeof(*out));
	out->kind = picture ? "picture" : "file";
	out->size = -1;
	const char *body = json_string_value(json_object_get(content, "body"));
	const char *filename = json_string_value(json_object_get(content, "filename"));
	/* spec: CS API, m.file etc.: with a filename that differs, body is a caption */
	const char *name = filename && *filename ? filename : body;
	if (filename && *filename && body && *body && strcmp(filename, body) != 0)
		out->caption = body;
	media_name_clean(name, out->kind, out->name);
	const json_t *info = json_object_get(content, "info");
	if (!mimetype_ok(json_string_value(json_object_get(info, "mimetype")), out->mimetype))
		out->mimetype[0] = '\0';
	const json_t *size = json_object_get(info, "size");
	if (json_is_integer(size) && json_integer_value(size) >= 0 &&
	    json_integer_value(size) <= (json_int_t)1 << 53)
		out->size = (int64_t)json_integer_value(size);
	/* Encrypted media (spec: "file" instead of "url") cannot be fetched here. */
	char server[MEDIA_MAX_SERVER + 1], id[MEDIA_MAX_ID + 1];
	const char *url = json_string_value(json_object_get(content, "url"));
	if (!json_object_get(content, "file") && media_mxc_parse(url, server, id) == TH_OK)
		snprintf(out->mxc, sizeof(out->mxc), "mxc://%s/%s", server, id);
	return TH_OK;
}
