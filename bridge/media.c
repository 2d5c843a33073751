/*
 * media.c - what a file is (read from its bytes), pictures decoded and
 * encoded afresh so that nothing but their pixels survives (libjpeg,
 * libpng's simplified API, libwebp), and PDFs checked and their metadata
 * blanked (ISO 32000).
 */
#include "media.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>
#include <webp/encode.h>
#include <zlib.h>

#include "util.h"

static const struct media_kind kinds[] = {
        {"image/png", "m.image", "png", "Picture"},       {"image/jpeg", "m.image", "jpg", "Picture"},
        {"image/gif", "m.image", "gif", "Picture"},       {"image/webp", "m.image", "webp", "Picture"},
        {"application/pdf", "m.file", "pdf", "Document"},
};
#define KIND_PNG  (&kinds[0])
#define KIND_JPEG (&kinds[1])
#define KIND_GIF  (&kinds[2])
#define KIND_WEBP (&kinds[3])
#define KIND_PDF  (&kinds[4])

const struct media_kind *media_sniff(const unsigned char *b, size_t n)
{
	if (n >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8))
		return KIND_PNG;
	if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
		return KIND_JPEG;
	if (n >= 6 && (!memcmp(b, "GIF87a", 6) || !memcmp(b, "GIF89a", 6)))
		return KIND_GIF;
	if (n >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4))
		return KIND_WEBP;
	if (n >= 5 && !memcmp(b, "%PDF-", 5))
		return KIND_PDF;
	return NULL;
}

int media_is_picture(const struct media_kind *kind)
{
	return kind == KIND_PNG || kind == KIND_JPEG || kind == KIND_WEBP;
}

void media_neutral_name(const struct media_kind *kind, unsigned long n, char out[MEDIA_MAX_NAME + 1])
{
	if (n)
		snprintf(out, MEDIA_MAX_NAME + 1, "%s %lu.%s", kind->label, n, kind->ext);
	else
		snprintf(out, MEDIA_MAX_NAME + 1, "%s.%s", kind->label, kind->ext);
}

/* ---- pictures: decoded to pixels, encoded again ---------------------------- */

/* One picture is decoded at a time, so the pixels held at once are bounded
 * by one picture's (MEDIA_MAX_PIXELS * 4 bytes) however many guests send. */
static pthread_mutex_t pixels_mu = PTHREAD_MUTEX_INITIALIZER;

static int size_ok(unsigned long w, unsigned long h)
{
	return w >= 1 && h >= 1 && w <= MEDIA_MAX_SIDE && h <= MEDIA_MAX_SIDE &&
	       (uint64_t)w * h <= MEDIA_MAX_PIXELS;
}

/* Decoded pixels: 8 bits per channel, rows packed. */
struct pixels {
	unsigned char *px;
	size_t w, h, ch; /* ch: 1 grey, 3 RGB, 4 RGBA */
};

/* Row @p y of @p p as it is shown with EXIF orientation @p o (1..8; TIFF
 * 6.0 / Exif 2.32 tag 0x0112), into @p row (the shown width * ch bytes).
 * Shown width and height are swapped for 5..8. */
static void row_oriented(const struct pixels *p, int o, size_t y, unsigned char *row)
{
	size_t sw = o >= 5 ? p->h : p->w;
	for (size_t x = 0; x < sw; x++) {
		size_t sx, sy;
		switch (o) {
		case 2:
			sx = p->w - 1 - x;
			sy = y;
			break;
		case 3:
			sx = p->w - 1 - x;
			sy = p->h - 1 - y;
			break;
		case 4:
			sx = x;
			sy = p->h - 1 - y;
			break;
		case 5:
			sx = y;
			sy = x;
			break;
		case 6:
			sx = y;
			sy = p->h - 1 - x;
			break;
		case 7:
			sx = p->w - 1 - y;
			sy = p->h - 1 - x;
			break;
		case 8:
			sx = p->w - 1 - y;
			sy = x;
			break;
		default:
			sx = x;
			sy = y;
			break;
		}
		memcpy(row + x * p->ch, p->px + (sy * p->w + sx) * p->ch, p->ch);
	}
}

static unsigned rd16(const unsigned char *p, int le)
{
	return le ? (unsigned)p[0] | (unsigned)p[1] << 8 : (unsigned)p[0] << 8 | p[1];
}

static size_t rd32(const unsigned char *p, int le)
{
	return le ? (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 | (size_t)p[3] << 24
	          : (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
}

/* The orientation (1..8) in an APP1 Exif payload, 1 when there is none or
 * it cannot be read. */
static int exif_orientation(const unsigned char *b, size_t n)
{
	if (n < 14 || memcmp(b, "Exif\0\0", 6) != 0)
		return 1;
	b += 6;
	n -= 6;
	int le = b[0] == 'I' && b[1] == 'I';
	if (!le && !(b[0] == 'M' && b[1] == 'M'))
		return 1;
	if (rd16(b + 2, le) != 42)
		return 1;
	size_t ifd = rd32(b + 4, le);
	if (ifd > n - 2)
		return 1;
	size_t count = rd16(b + ifd, le);
	for (size_t i = 0; i < count; i++) {
		size_t e = ifd + 2 + 12 * i;
		if (e > n - 12)
			return 1;
		if (rd16(b + e, le) == 0x0112 && rd16(b + e + 2, le) == 3) { /* SHORT */
			unsigned v = rd16(b + e + 8, le);
			return v >= 1 && v <= 8 ? (int)v : 1;
		}
	}
	return 1;
}

struct jerr {
	struct jpeg_error_mgr pub;
	jmp_buf jb;
};

static void jerr_exit(j_common_ptr c)
{
	longjmp(((struct jerr *)c->err)->jb, 1);
}

static void jerr_quiet(j_common_ptr c, int level)
{
	(void)c;
	(void)level;
}

/* A progressive JPEG can hold thousands of tiny scans, each a pass over the
 * whole picture: more than MEDIA_MAX_SCANS is refused (as libjpeg-turbo's
 * TJFLAG_LIMITSCANS does). */
static void jprogress(j_common_ptr c)
{
	if (c->is_decompressor && ((j_decompress_ptr)c)->input_scan_number > MEDIA_MAX_SCANS)
		jerr_exit(c);
}

static int jpeg_encode(const struct pixels *p, int orient, unsigned char **out, size_t *outlen)
{
	struct jpeg_compress_struct c;
	struct jerr je;
	unsigned char *volatile row = NULL;
	unsigned char *buf = NULL;
	unsigned long blen = 0;
	c.err = jpeg_std_error(&je.pub);
	je.pub.error_exit = jerr_exit;
	je.pub.emit_message = jerr_quiet;
	if (setjmp(je.jb)) {
		jpeg_destroy_compress(&c);
		free(row);
		free(buf);
		return MEDIA_DAMAGED;
	}
	jpeg_create_compress(&c);
	jpeg_mem_dest(&c, &buf, &blen);
	c.image_width = (JDIMENSION)(orient >= 5 ? p->h : p->w);
	c.image_height = (JDIMENSION)(orient >= 5 ? p->w : p->h);
	c.input_components = (int)p->ch;
	c.in_color_space = p->ch == 1 ? JCS_GRAYSCALE : JCS_RGB;
	jpeg_set_defaults(&c);
	jpeg_set_quality(&c, MEDIA_JPEG_QUALITY, TRUE);
	c.optimize_coding = TRUE;
	/* write_JFIF_header stays on: a JFIF APP0 says only "1:1 pixels". */
	jpeg_start_compress(&c, TRUE);
	row = xmalloc((size_t)c.image_width * p->ch);
	while (c.next_scanline < c.image_height) {
		row_oriented(p, orient, c.next_scanline, row);
		JSAMPROW r = row;
		jpeg_write_scanlines(&c, &r, 1);
	}
	jpeg_finish_compress(&c);
	jpeg_destroy_compress(&c);
	free(row);
	*out = buf;
	*outlen = blen;
	return MEDIA_OK;
}

static int clean_jpeg(const unsigned char *b, size_t n, unsigned char **out, size_t *outlen)
{
	struct jpeg_decompress_struct d;
	struct jerr je;
	struct jpeg_progress_mgr pm = {.progress_monitor = jprogress};
	struct pixels p = {0};
	unsigned char *volatile px = NULL;
	volatile int rc = MEDIA_DAMAGED;
	d.err = jpeg_std_error(&je.pub);
	je.pub.error_exit = jerr_exit;
	je.pub.emit_message = jerr_quiet;
	if (setjmp(je.jb)) {
		jpeg_destroy_decompress(&d);
		free(px);
		return rc;
	}
	jpeg_create_decompress(&d);
	d.progress = &pm;
	d.mem->max_memory_to_use = MEDIA_MAX_DECODER_MEMORY;
	jpeg_save_markers(&d, JPEG_APP0 + 1, 0xffff); /* read for the orientation, then dropped */
	jpeg_mem_src(&d, b, (unsigned long)n);
	jpeg_read_header(&d, TRUE);
	int orient = 1;
	for (jpeg_saved_marker_ptr m = d.marker_list; m; m = m->next) {
		if (m->marker == JPEG_APP0 + 1 && (orient = exif_orientation(m->data, m->data_length)) != 1)
			break;
	}
	if (!size_ok(d.image_width, d.image_height)) {
		rc = MEDIA_TOO_LARGE;
		jerr_exit((j_common_ptr)&d);
	}
	d.out_color_space = d.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
	jpeg_start_decompress(&d);
	p.w = d.output_width;
	p.h = d.output_height;
	p.ch = (size_t)d.output_components;
	if ((p.ch != 1 && p.ch != 3) || !size_ok(p.w, p.h))
		jerr_exit((j_common_ptr)&d);
	px = xmalloc(p.w * p.h * p.ch);
	while (d.output_scanline < d.output_height) {
		JSAMPROW r = px + (size_t)d.output_scanline * p.w * p.ch;
		jpeg_read_scanlines(&d, &r, 1);
	}
	jpeg_finish_decompress(&d);
	jpeg_destroy_decompress(&d);
	p.px = px;
	int erc = jpeg_encode(&p, orient, out, outlen);
	free(px);
	return erc;
}

static int clean_png_pixels(const unsigned char *b, size_t n, unsigned char **out, size_t *outlen);

/* Before libpng sees a PNG: only the chunks that make its pixels (IHDR,
 * PLTE, tRNS, gAMA, sRGB, IDAT, IEND), each whole inside the file, and a
 * size within bounds.  So libpng never allocates for a chunk longer than
 * the file (it would for a length of 2^31 - 1), and never inflates a text
 * or profile chunk (zTXt, iTXt, iCCP: a deflate bomb of up to 1,032 times
 * its size).  @return MEDIA_OK with @p keep (new, free()) and its length. */
static int png_prefilter(const unsigned char *b, size_t n, unsigned char **keep, size_t *klen)
{
	static const char *const kept[] = {"IHDR", "PLTE", "tRNS", "gAMA", "sRGB", "IDAT", "IEND"};
	unsigned char *k = xmalloc(n);
	size_t in = 8, out = 8;
	memcpy(k, b, 8);
	while (in + 12 <= n) {
		size_t clen = rd32(b + in, 0);
		if (clen > n - in - 12)
			break;
		if (in == 8) {
			if (memcmp(b + in + 4, "IHDR", 4) != 0 || clen != 13)
				break;
			if (!size_ok(rd32(b + in + 8, 0), rd32(b + in + 12, 0))) {
				free(k);
				return MEDIA_TOO_LARGE;
			}
		}
		for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
			if (!memcmp(b + in + 4, kept[i], 4)) {
				memcpy(k + out, b + in, clen + 12);
				out += clen + 12;
				break;
			}
		}
		if (!memcmp(b + in + 4, "IEND", 4)) {
			*keep = k;
			*klen = out;
			return MEDIA_OK;
		}
		in += clen + 12;
	}
	free(k);
	return MEDIA_DAMAGED;
}

static int clean_png(const unsigned char *b, size_t n, unsigned char **out, size_t *outlen)
{
	unsigned char *pre = NULL;
	size_t plen = 0;
	int prc = png_prefilter(b, n, &pre, &plen);
	if (prc != MEDIA_OK)
		return prc;
	int rc = clean_png_pixels(pre, plen, out, outlen);
	free(pre);
	return rc;
}

static int clean_png_pixels(const unsigned char *b, size_t n, unsigned char **out, size_t *outlen)
{
	png_image im;
	memset(&im, 0, sizeof(im));
	im.version = PNG_IMAGE_VERSION;
	unsigned char *px = NULL, *buf = NULL;
	int rc = MEDIA_DAMAGED;
	if (n < 8 || !png_image_begin_read_from_memory(&im, b, n))
		goto fail;
	if (!size_ok(im.width, im.height)) {
		rc = MEDIA_TOO_LARGE;
		goto fail;
	}
	/* 8 bits a channel, grey or RGB, with alpha when it has one; no palette:
	 * a palette PNG comes out RGB(A), a little larger. */
	im.format &= PNG_FORMAT_FLAG_ALPHA | PNG_FORMAT_FLAG_COLOR;
	px = xmalloc(PNG_IMAGE_SIZE(im));
	if (!png_image_finish_read(&im, NULL, px, 0, NULL))
		goto fail;
	png_alloc_size_t blen = 0;
	if (!png_image_write_to_memory(&im, NULL, &blen, 0, px, 0, NULL) || blen == 0)
		goto fail;
	buf = xmalloc(blen);
	if (!png_image_write_to_memory(&im, buf, &blen, 0, px, 0, NULL))
		goto fail;
	png_image_free(&im);
	free(px);
	*out = buf;
	*outlen = blen;
	return MEDIA_OK;
fail:
	png_image_free(&im);
	free(px);
	free(buf);
	return rc;
}

static int clean_webp(const unsigned char *b, size_t n, unsigned char **out, size_t *outlen)
{
	WebPBitstreamFeatures f;
	if (WebPGetFeatures(b, n, &f) != VP8_STATUS_OK)
		return MEDIA_DAMAGED;
	if (f.has_animation)
		return MEDIA_REFUSED; /* a moving picture: not taken (docs/privacy.md) */
	if (f.width < 1 || f.height < 1 || !size_ok((unsigned long)f.width, (unsigned long)f.height))
		return MEDIA_TOO_LARGE;
	int w, h;
	uint8_t *px = f.has_alpha ? WebPDecodeRGBA(b, n, &w, &h) : WebPDecodeRGB(b, n, &w, &h);
	if (!px)
		return MEDIA_DAMAGED;
	int ch = f.has_alpha ? 4 : 3;
	uint8_t *enc = NULL;
	size_t elen;
	if (f.format == 2) /* lossless in, lossless out */
		elen = f.has_alpha ? WebPEncodeLosslessRGBA(px, w, h, w * ch, &enc)
		                   : WebPEncodeLosslessRGB(px, w, h, w * ch, &enc);
	else
		elen = f.has_alpha ? WebPEncodeRGBA(px, w, h, w * ch, MEDIA_JPEG_QUALITY, &enc)
		                   : WebPEncodeRGB(px, w, h, w * ch, MEDIA_JPEG_QUALITY, &enc);
	WebPFree(px);
	if (!elen || !enc) {
		WebPFree(enc);
		return MEDIA_DAMAGED;
	}
	*out = xmalloc(elen); /* libwebp's buffers go back through WebPFree */
	memcpy(*out, enc, elen);
	*outlen = elen;
	WebPFree(enc);
	return MEDIA_OK;
}

int media_clean(const struct media_kind *kind, const unsigned char *buf, size_t len, unsigned char **out,
                size_t *outlen)
{
	int rc;
	if (kind == KIND_PDF) {
		unsigned char *copy = xmalloc(len ? len : 1);
		memcpy(copy, buf, len);
		rc = media_pdf_clean(copy, len);
		if (rc != MEDIA_OK) {
			free(copy);
			return rc;
		}
		*out = copy;
		*outlen = len;
		return MEDIA_OK;
	}
	if (!media_is_picture(kind))
		return MEDIA_REFUSED; /* GIF: not taken, see media.h */
	pthread_mutex_lock(&pixels_mu);
	rc = kind == KIND_JPEG  ? clean_jpeg(buf, len, out, outlen)
	     : kind == KIND_PNG ? clean_png(buf, len, out, outlen)
	                        : clean_webp(buf, len, out, outlen);
	pthread_mutex_unlock(&pixels_mu);
	if (rc == MEDIA_OK && media_sniff(*out, *outlen) != kind) { /* never: the encoders' own output */
		free(*out);
		return MEDIA_DAMAGED;
	}
	return rc;
}

const char *media_verdict_name(int verdict)
{
	switch (verdict) {
	case MEDIA_OK:
		return "ok";
	case MEDIA_DAMAGED:
		return "damaged";
	case MEDIA_TOO_LARGE:
		return "too_large";
	case MEDIA_REFUSED:
		return "refused";
	case MEDIA_UNSAFE:
		return "unsafe";
	default:
		return "?";
	}
}

/* ---- PDF: a conservative check, and its metadata blanked in place ----------
 * (spec: ISO 32000-1 / -2, 7.2 lexical conventions, 7.5 file structure,
 * 14.3 metadata).  Nothing here parses a PDF as a reader would: the bytes
 * are read as PDF tokens, every name is compared after #xx escapes are
 * undone, and anything this reading cannot vouch for refuses the file. */

/* Keys that make a PDF act when opened or clicked, carry other files, or
 * hold forms that submit: refused wherever they appear. */
static const char *const pdf_banned[] = {
        "JavaScript", "JS",    "Launch",    "EmbeddedFile", "EmbeddedFiles", "OpenAction",
        "AA",         "XFA",   "RichMedia", "SubmitForm",   "ImportData",    "GoToR",
        "GoToE",      "Sound", "Movie",     "Encrypt",      "Rendition",
};

static int pdf_delim(unsigned char c)
{
	return c == 0 || c == '\t' || c == '\n' || c == '\f' || c == '\r' || c == ' ' || c == '(' ||
	       c == ')' || c == '<' || c == '>' || c == '[' || c == ']' || c == '{' || c == '}' || c == '/' ||
	       c == '%';
}

static int hexval(unsigned char c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
	                              : -1;
}

/* Every name token in @p b (n bytes), #xx undone, compared with the banned
 * list; also refused: a name whose escape is broken.  1 if clean. */
static int pdf_names_ok(const unsigned char *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (b[i] != '/')
			continue;
		char name[32];
		size_t o = 0, j = i + 1;
		int long_name = 0;
		while (j < n && !pdf_delim(b[j])) {
			unsigned char c = b[j++];
			if (c == '#') {
				if (j + 2 > n || hexval(b[j]) < 0 || hexval(b[j + 1]) < 0)
					return 0;
				c = (unsigned char)(hexval(b[j]) << 4 | hexval(b[j + 1]));
				j += 2;
			}
			if (o < sizeof(name) - 1)
				name[o++] = (char)c;
			else
				long_name = 1;
		}
		name[o] = '\0';
		for (size_t k = 0; !long_name && k < sizeof(pdf_banned) / sizeof(pdf_banned[0]); k++) {
			if (!strcmp(name, pdf_banned[k]))
				return 0;
		}
		i = j - 1;
	}
	return 1;
}

static const unsigned char *findn(const unsigned char *b, size_t n, const char *s, size_t k)
{
	for (size_t i = 0; k <= n && i <= n - k; i++) {
		if (b[i] == (unsigned char)s[0] && !memcmp(b + i, s, k))
			return b + i;
	}
	return NULL;
}

static const unsigned char *find(const unsigned char *b, size_t n, const char *s)
{
	return findn(b, n, s, strlen(s));
}

static int find_nocase(const unsigned char *b, size_t n, const char *s)
{
	size_t k = strlen(s);
	for (size_t i = 0; k <= n && i <= n - k; i++) {
		size_t m = 0;
		while (m < k && (b[i + m] | 0x20) == (unsigned char)s[m])
			m++;
		if (m == k)
			return 1;
	}
	return 0;
}

static int pdf_ws(unsigned char c)
{
	return c == 0 || c == '\t' || c == '\n' || c == '\f' || c == '\r' || c == ' ';
}

/* "N G" then @p word ("R" or "obj") at @p p: the object number in @p num. */
static size_t pdf_ref(const unsigned char *b, size_t n, size_t p, const char *word, unsigned long *num,
                      unsigned long *gen)
{
	unsigned long v[2] = {0, 0};
	for (int k = 0; k < 2; k++) {
		while (p < n && pdf_ws(b[p]))
			p++;
		size_t d = 0;
		while (p < n && b[p] >= '0' && b[p] <= '9' && d < 10)
			v[k] = v[k] * 10 + (unsigned long)(b[p++] - '0'), d++;
		if (!d)
			return 0;
	}
	while (p < n && pdf_ws(b[p]))
		p++;
	size_t k = strlen(word);
	if (p + k > n || memcmp(b + p, word, k) != 0 || (p + k < n && !pdf_delim(b[p + k])))
		return 0;
	*num = v[0];
	*gen = v[1];
	return p + k;
}

/* Where the body of object N G starts (just past "obj") as a top-level
 * object, at each place it is defined (an updated file defines it again):
 * calls @p fn for each; 0 if there is none. */
static int pdf_each_obj(unsigned char *b, size_t n, unsigned long num, unsigned long gen,
                        int (*fn)(unsigned char *b, size_t n, size_t at))
{
	int found = 0;
	for (const unsigned char *p = b; (p = find(p, n - (size_t)(p - b), "obj")) != NULL; p += 3) {
		size_t at = (size_t)(p - b), s = at;
		/* back over "N G " */
		while (s > 0 && (pdf_ws(b[s - 1]) || (b[s - 1] >= '0' && b[s - 1] <= '9')))
			s--;
		unsigned long on, og;
		size_t end = pdf_ref(b, n, s, "obj", &on, &og);
		if (end != at + 3 || on != num || og != gen)
			continue;
		if (!fn(b, n, end))
			return 0;
		found = 1;
	}
	return found;
}

/* The dictionary that starts at or after @p at: [*start, *end) holds "<<...>>". */
static int pdf_dict(const unsigned char *b, size_t n, size_t at, size_t *start, size_t *end)
{
	while (at < n && pdf_ws(b[at]))
		at++;
	if (at + 2 > n || b[at] != '<' || b[at + 1] != '<')
		return 0;
	*start = at;
	int depth = 0;
	for (size_t i = at; i + 1 < n; i++) {
		if (b[i] == '(') { /* a literal string: skip it, with nesting and escapes */
			int pd = 0;
			for (; i < n; i++) {
				if (b[i] == '\\')
					i++;
				else if (b[i] == '(')
					pd++;
				else if (b[i] == ')' && --pd == 0)
					break;
			}
			continue;
		}
		if (b[i] == '<' && b[i + 1] == '<') {
			depth++;
			i++;
		} else if (b[i] == '>' && b[i + 1] == '>') {
			i++;
			if (--depth == 0) {
				*end = i + 1;
				return 1;
			}
		}
	}
	return 0;
}

/* The document information dictionary at @p at: every string value made
 * blank (literal strings become spaces, hex strings zeros), so no offset in
 * the file moves.  A value by reference (N G R) refuses: it could be a
 * string elsewhere. */
static int pdf_blank_info(unsigned char *b, size_t n, size_t at)
{
	size_t s, e;
	if (!pdf_dict(b, n, at, &s, &e))
		return 0;
	for (size_t i = s + 2; i + 2 < e; i++) {
		if (b[i] == '(') {
			int pd = 0;
			for (; i < e; i++) {
				if (b[i] == '\\') {
					b[i] = ' ';
					if (i + 1 < e)
						b[++i] = ' ';
				} else if (b[i] == '(') {
					if (pd++)
						b[i] = ' ';
				} else if (b[i] == ')') {
					if (--pd == 0)
						break;
					b[i] = ' ';
				} else {
					b[i] = ' ';
				}
			}
		} else if (b[i] == '<' && b[i + 1] != '<') {
			for (i++; i < e && b[i] != '>'; i++) {
				if (!pdf_ws(b[i]))
					b[i] = '0';
			}
		} else if (b[i] == 'R' && pdf_delim(b[i + 1]) && i > 0 && pdf_ws(b[i - 1])) {
			return 0;
		}
	}
	return 1;
}

/* A metadata stream at @p at: not filtered, its data made spaces. */
static int pdf_blank_stream(unsigned char *b, size_t n, size_t at)
{
	size_t s, e;
	if (!pdf_dict(b, n, at, &s, &e))
		return 0;
	if (find(b + s, e - s, "/Filter") || find(b + s, e - s, "Decode") || find(b + s, e - s, "/ObjStm") ||
	    !find(b + s, e - s, "/Metadata"))
		return 0; /* compressed XMP, or not a metadata stream: cannot be blanked in place */
	size_t d = e;
	while (d < n && pdf_ws(b[d]))
		d++;
	if (n - d < 6 || memcmp(b + d, "stream", 6) != 0)
		return 0; /* the data must follow its dictionary */
	d += 6;
	if (d < n && b[d] == '\r')
		d++;
	if (d < n && b[d] == '\n')
		d++;
	const unsigned char *es = find(b + d, n - d, "endstream");
	if (!es || find(b + d, (size_t)(es - b) - d, "endobj"))
		return 0; /* no end, or one past another object's: doubt */
	for (size_t i = d; i < (size_t)(es - b); i++)
		b[i] = ' ';
	return 1;
}

/* Each "/Key N G R" in @p hay (which may be inflated object-stream text,
 * not @p b): the object it names in @p b handled by @p fn.  0 on doubt. */
static int pdf_each_ref(unsigned char *b, size_t n, const unsigned char *hay, size_t hn, const char *key,
                        int (*fn)(unsigned char *b, size_t n, size_t at))
{
	size_t k = strlen(key);
	for (const unsigned char *p = hay; (p = find(p, hn - (size_t)(p - hay), key)) != NULL; p += k) {
		size_t at = (size_t)(p - hay) + k;
		if (at < hn && !pdf_delim(hay[at]))
			continue; /* a longer name */
		size_t v = at;
		while (v < hn && pdf_ws(hay[v]))
			v++;
		if (v < hn && (hay[v] == '/' || hay[v] == '>' || hay[v] == ']'))
			continue; /* a value itself ("/Type /Metadata"), not a key */
		unsigned long num, gen;
		if (!pdf_ref(hay, hn, at, "R", &num, &gen))
			return 0; /* a direct value, or none we can read */
		if (!pdf_each_obj(b, n, num, gen, fn))
			return 0; /* inside an object stream, or missing */
	}
	return 1;
}

static int pdf_metadata_blank(unsigned char *b, size_t n, const unsigned char *hay, size_t hn)
{
	/* Streams first: an /Info found inside stream data that is then blanked
	 * is not found at all (and refuses), the same on every pass. */
	return pdf_each_ref(b, n, hay, hn, "/Metadata", pdf_blank_stream) &&
	       pdf_each_ref(b, n, hay, hn, "/Info", pdf_blank_info);
}

/* Inflate the data of the stream whose dictionary is [s, e): into a new
 * buffer (free()), at most @p cap bytes.  0 when it is not plain Flate. */
static int pdf_inflate(const unsigned char *b, size_t n, size_t e, size_t cap, unsigned char **out,
                       size_t *outlen)
{
	const unsigned char *st = find(b + e, n - e, "stream");
	if (!st || (size_t)(st - b) - e > 16)
		return 0;
	size_t d = (size_t)(st - b) + 6;
	if (d < n && b[d] == '\r')
		d++;
	if (d < n && b[d] == '\n')
		d++;
	const unsigned char *es = find(b + d, n - d, "endstream");
	if (!es)
		return 0;
	z_stream z;
	memset(&z, 0, sizeof(z));
	if (inflateInit(&z) != Z_OK)
		return 0;
	size_t have = 0, size = 65536;
	unsigned char *o = xmalloc(size);
	z.next_in = (unsigned char *)(uintptr_t)(b + d);
	z.avail_in = (uInt)((size_t)(es - b) - d);
	int zr;
	do {
		if (have == size) {
			if (size >= cap)
				break;
			size = size * 2 > cap ? cap : size * 2;
			o = xrealloc(o, size);
		}
		z.next_out = o + have;
		z.avail_out = (uInt)(size - have);
		zr = inflate(&z, Z_NO_FLUSH);
		have = size - z.avail_out;
	} while (zr == Z_OK);
	inflateEnd(&z);
	if (zr != Z_STREAM_END) {
		free(o);
		return 0;
	}
	*out = o;
	*outlen = have;
	return 1;
}

/* The end of a PDF: "startxref", an offset that points at "xref" or an
 * object, "%%EOF", and nothing but white space after it (a polyglot's other
 * file often trails the PDF). */
static int pdf_trailer(const unsigned char *b, size_t n)
{
	size_t tail = n > 1024 ? n - 1024 : 0, eof = 0;
	for (const unsigned char *p = b + tail; (p = find(p, n - (size_t)(p - b), "%%EOF")) != NULL; p++)
		eof = (size_t)(p - b);
	if (!eof)
		return MEDIA_DAMAGED;
	for (size_t i = eof + 5; i < n; i++) {
		if (!pdf_ws(b[i]))
			return MEDIA_UNSAFE;
	}
	const unsigned char *sx = NULL;
	for (const unsigned char *p = b + tail; (p = find(p, eof - (size_t)(p - b), "startxref")) != NULL;
	     p++)
		sx = p;
	if (!sx)
		return MEDIA_DAMAGED;
	size_t p = (size_t)(sx - b) + 9, xref = 0, digits = 0;
	while (p < eof && pdf_ws(b[p]))
		p++;
	while (p < eof && b[p] >= '0' && b[p] <= '9' && digits < 12)
		xref = xref * 10 + (size_t)(b[p++] - '0'), digits++;
	if (!digits || xref >= n ||
	    !(memcmp(b + xref, "xref", n - xref < 4 ? n - xref : 4) == 0 ||
	      (b[xref] >= '0' && b[xref] <= '9')))
		return MEDIA_DAMAGED;
	return MEDIA_OK;
}

static int pdf_clean_once(unsigned char *b, size_t n)
{
	if (n < 64 || n > MEDIA_MAX_PDF_BYTES || memcmp(b, "%PDF-", 5) != 0 ||
	    !((b[5] == '1' || b[5] == '2') && b[6] == '.'))
		return MEDIA_DAMAGED;
	int rc = pdf_trailer(b, n);
	if (rc != MEDIA_OK)
		return rc;
	/* Markup or a script anywhere in the plain bytes: a polyglot. */
	static const char *const markup[] = {"<html", "<script", "<!doctype", "<body",
	                                     "<svg",  "<iframe", "<?php"};
	for (size_t i = 0; i < sizeof(markup) / sizeof(markup[0]); i++) {
		if (find_nocase(b, n, markup[i]))
			return MEDIA_UNSAFE;
	}
	if (!pdf_names_ok(b, n))
		return MEDIA_UNSAFE;
	/* Object streams hide dictionaries in compressed data: each is inflated
	 * (with a cap on all of them together) and read the same way. */
	size_t budget = MEDIA_MAX_PDF_INFLATED;
	for (const unsigned char *q = b; (q = find(q, n - (size_t)(q - b), "/ObjStm")) != NULL; q += 7) {
		size_t at = (size_t)(q - b), s = at, e;
		/* the dictionary this name is in: back to its "<<" */
		while (s > 0 && !(b[s - 1] == '<' && s >= 2 && b[s - 2] == '<'))
			s--;
		if (s < 2 || !pdf_dict(b, n, s - 2, &s, &e) || e <= at)
			return MEDIA_UNSAFE;
		if (!find(b + s, e - s, "/FlateDecode") || find(b + s, e - s, "/DecodeParms"))
			return MEDIA_UNSAFE;
		unsigned char *in;
		size_t inlen;
		if (!budget || !pdf_inflate(b, n, e, budget, &in, &inlen))
			return MEDIA_UNSAFE;
		budget -= inlen;
		int ok = pdf_names_ok(in, inlen) && pdf_metadata_blank(b, n, in, inlen) &&
		         !find(in, inlen, "stream");
		free(in);
		if (!ok)
			return MEDIA_UNSAFE;
	}
	if (!pdf_metadata_blank(b, n, b, n))
		return MEDIA_UNSAFE;
	/* The file identifier (trailer /ID) links copies of one document: zeros. */
	for (const unsigned char *q = b; (q = find(q, n - (size_t)(q - b), "/ID")) != NULL; q += 3) {
		size_t i = (size_t)(q - b) + 3;
		if (i < n && !pdf_delim(b[i]))
			continue;
		while (i < n && pdf_ws(b[i]))
			i++;
		if (i >= n || b[i] != '[')
			continue;
		for (i++; i < n && b[i] != ']'; i++) {
			if (hexval(b[i]) >= 0)
				b[i] = '0';
			else if (b[i] != '<' && b[i] != '>' && !pdf_ws(b[i]))
				return MEDIA_UNSAFE; /* not two hex strings */
		}
	}
	/* Metadata still there after that (XMP elsewhere, a photo's EXIF in an
	 * embedded JPEG): not removed here, so the file is refused. */
	if (find(b, n, "<x:xmpmeta") || find(b, n, "<?xpacket") || findn(b, n, "Exif\0\0", 6) ||
	    find(b, n, "http://ns.adobe.com/xap/"))
		return MEDIA_UNSAFE;
	/* Blanking must have left the file's structure as it was. */
	return pdf_trailer(b, n) == MEDIA_OK ? MEDIA_OK : MEDIA_UNSAFE;
}

int media_pdf_clean(unsigned char *b, size_t n)
{
	int rc = pdf_clean_once(b, n);
	if (rc != MEDIA_OK)
		return rc;
	/* The blanked file must be a fixed point: checked again it passes and
	 * nothing more is blanked.  A file where one pass uncovers more to blank
	 * (names built so that blanking shifts what the scan sees) is refused on
	 * doubt rather than passed half-cleaned. */
	unsigned char *again = xmalloc(n);
	memcpy(again, b, n);
	rc = pdf_clean_once(again, n);
	int settled = rc == MEDIA_OK && memcmp(again, b, n) == 0;
	free(again);
	return settled ? MEDIA_OK : MEDIA_UNSAFE;
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
