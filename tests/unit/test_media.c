/*
 * test_media.c - what becomes of a guest's file before staff see it
 * (bridge/media.c), with real files made here: a JPEG carrying EXIF with
 * GPS, an XMP packet and a comment; a PNG with tEXt, iTXt, zTXt, eXIf and
 * tIME chunks and bytes after its end; a WebP with EXIF and XMP chunks; an
 * HTML page behind "%PDF-"; PDFs with metadata, with actions, with escaped
 * names; pictures that declare more pixels than any phone makes.  After
 * cleaning, none of the marker strings survive anywhere in the bytes, the
 * picture still decodes to the same size (turned the right way up), and
 * the name is neutral with the extension of what the bytes are.
 */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>
#include <webp/encode.h>
#include <zlib.h>

#include "media.h"
#include "testlib.h"
#include "util.h"

/* ---- small byte buffers ---------------------------------------------------- */

struct buf {
	unsigned char *p;
	size_t n;
};

static void put(struct buf *b, const void *p, size_t n)
{
	b->p = xrealloc(b->p, b->n + n + 1);
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

static void puts_(struct buf *b, const char *s)
{
	put(b, s, strlen(s));
}

static void be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static int has(const unsigned char *p, size_t n, const char *s)
{
	return memmem(p, n, s, strlen(s)) != NULL;
}

/* Left half red, right half blue: which way up a picture came out shows. */
static unsigned char *two_halves(size_t w, size_t h, size_t ch)
{
	unsigned char *px = xmalloc(w * h * ch);
	for (size_t y = 0; y < h; y++) {
		for (size_t x = 0; x < w; x++) {
			unsigned char *q = px + (y * w + x) * ch;
			q[0] = x < w / 2 ? 220 : 20;
			q[1] = 30;
			q[2] = x < w / 2 ? 20 : 220;
			if (ch == 4)
				q[3] = 255;
		}
	}
	return px;
}

/* ---- JPEG ------------------------------------------------------------------ */

/* An APP1 Exif payload: IFD0 with Orientation @p orient, ImageDescription
 * and a GPS IFD whose latitude reference and a processing-method string
 * carry marker text. */
static void exif_payload(struct buf *e, unsigned orient)
{
	static const char desc[] = "EXIF-DESC-SECRET";           /* 17 bytes with NUL */
	static const char gps[] = "GPS-SECRET-51.5074N-0.1278W"; /* 28 bytes with NUL */
	unsigned char t[256] = {0};
	memcpy(t, "Exif\0\0", 6);
	unsigned char *h = t + 6; /* TIFF header, little-endian */
	memcpy(h, "II\x2a\x00\x08\x00\x00\x00", 8);
	unsigned char *ifd = h + 8;
	ifd[0] = 3; /* three entries */
	unsigned char *en = ifd + 2;
	/* 0x0112 Orientation SHORT 1 */
	en[0] = 0x12;
	en[1] = 0x01;
	en[2] = 3;
	en[4] = 1;
	en[8] = (unsigned char)orient;
	en += 12;
	/* 0x010e ImageDescription ASCII, at offset 0x60 */
	en[0] = 0x0e;
	en[1] = 0x01;
	en[2] = 2;
	en[4] = sizeof(desc);
	le32(en + 8, 0x60);
	en += 12;
	/* 0x8825 GPSInfo LONG -> IFD at 0x80 */
	en[0] = 0x25;
	en[1] = 0x88;
	en[2] = 4;
	en[4] = 1;
	le32(en + 8, 0x80);
	memcpy(h + 0x60, desc, sizeof(desc));
	unsigned char *g = h + 0x80;
	g[0] = 1; /* one entry: 0x001b GPSProcessingMethod UNDEFINED, at 0xa0 */
	g[2] = 0x1b;
	g[4] = 7;
	g[6] = sizeof(gps);
	le32(g + 10, 0xa0);
	memcpy(h + 0xa0, gps, sizeof(gps));
	put(e, t, 6 + 0xa0 + sizeof(gps));
}

static void make_jpeg(struct buf *out, size_t w, size_t h, unsigned orient, int metadata)
{
	struct jpeg_compress_struct c;
	struct jpeg_error_mgr je;
	unsigned char *mem = NULL;
	unsigned long len = 0;
	c.err = jpeg_std_error(&je);
	jpeg_create_compress(&c);
	jpeg_mem_dest(&c, &mem, &len);
	c.image_width = (JDIMENSION)w;
	c.image_height = (JDIMENSION)h;
	c.input_components = 3;
	c.in_color_space = JCS_RGB;
	jpeg_set_defaults(&c);
	jpeg_start_compress(&c, TRUE);
	if (metadata) {
		struct buf e = {0};
		exif_payload(&e, orient);
		jpeg_write_marker(&c, JPEG_APP0 + 1, e.p, (unsigned)e.n);
		free(e.p);
		static const char xmp[] =
		        "http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>XMP-JPEG-SECRET</x:xmpmeta>";
		jpeg_write_marker(&c, JPEG_APP0 + 1, (const JOCTET *)xmp, sizeof(xmp));
		static const char icc[] = "ICC_PROFILE\0\x01\x01ICC-SECRET-DEVICE";
		jpeg_write_marker(&c, JPEG_APP0 + 2, (const JOCTET *)icc, sizeof(icc));
		jpeg_write_marker(&c, JPEG_COM, (const JOCTET *)"COMMENT-SECRET", 14);
	}
	unsigned char *px = two_halves(w, h, 3);
	while (c.next_scanline < c.image_height) {
		JSAMPROW r = px + (size_t)c.next_scanline * w * 3;
		jpeg_write_scanlines(&c, &r, 1);
	}
	jpeg_finish_compress(&c);
	jpeg_destroy_compress(&c);
	free(px);
	out->p = mem;
	out->n = len;
	if (metadata) /* and something after the end of the picture */
		puts_(out, "<html>TRAILER-SECRET</html>");
}

/* Decode @p b: its size and the colour at (x, y) (1 red, 2 blue, 0 other). */
static int jpeg_colour_at(const struct buf *b, size_t *w, size_t *h, size_t x, size_t y)
{
	struct jpeg_decompress_struct d;
	struct jpeg_error_mgr je;
	d.err = jpeg_std_error(&je);
	jpeg_create_decompress(&d);
	jpeg_mem_src(&d, b->p, (unsigned long)b->n);
	jpeg_read_header(&d, TRUE);
	d.out_color_space = JCS_RGB;
	jpeg_start_decompress(&d);
	*w = d.output_width;
	*h = d.output_height;
	unsigned char *row = xmalloc(*w * 3);
	int colour = 0;
	while (d.output_scanline < d.output_height) {
		size_t at = d.output_scanline;
		JSAMPROW r = row;
		jpeg_read_scanlines(&d, &r, 1);
		if (at == y)
			colour = row[x * 3] > 150 && row[x * 3 + 2] < 100   ? 1
			         : row[x * 3] < 100 && row[x * 3 + 2] > 150 ? 2
			                                                    : 0;
	}
	jpeg_finish_decompress(&d);
	jpeg_destroy_decompress(&d);
	free(row);
	return colour;
}

static const char *const jpeg_markers[] = {
        "Exif",        "EXIF-DESC-SECRET", "GPS-SECRET",     "XMP-JPEG-SECRET", "ns.adobe.com",
        "ICC_PROFILE", "ICC-SECRET",       "COMMENT-SECRET", "TRAILER-SECRET",  "<html"};

static void test_jpeg(void)
{
	struct buf in = {0};
	make_jpeg(&in, 64, 32, 6, 1);
	for (size_t i = 0; i < sizeof(jpeg_markers) / sizeof(jpeg_markers[0]); i++)
		CHECK(has(in.p, in.n, jpeg_markers[i])); /* the test file carries them */
	const struct media_kind *k = media_sniff(in.p, in.n);
	CHECK(k && !strcmp(k->ext, "jpg") && media_is_picture(k));
	unsigned char *out = NULL;
	size_t n = 0;
	CHECK_EQ_INT(media_clean(k, in.p, in.n, &out, &n), MEDIA_OK);
	if (!out)
		return;
	for (size_t i = 0; i < sizeof(jpeg_markers) / sizeof(jpeg_markers[0]); i++) {
		if (has(out, n, jpeg_markers[i]))
			fprintf(stderr, "survived: %s\n", jpeg_markers[i]);
		CHECK(!has(out, n, jpeg_markers[i]));
	}
	CHECK(media_sniff(out, n) == k);
	/* Orientation 6 (turn 90 degrees clockwise) is in the pixels now: 32
	 * wide, 64 high, the left half (red) on top. */
	struct buf o = {out, n};
	size_t w, h;
	CHECK_EQ_INT(jpeg_colour_at(&o, &w, &h, 16, 8), 1);
	CHECK_EQ_INT(w, 32);
	CHECK_EQ_INT(h, 64);
	CHECK_EQ_INT(jpeg_colour_at(&o, &w, &h, 16, 56), 2);
	free(out);
	free(in.p);

	/* Orientation 8 (counter-clockwise): the left half (red) at the bottom. */
	make_jpeg(&in, 64, 32, 8, 1);
	CHECK_EQ_INT(media_clean(k, in.p, in.n, &out, &n), MEDIA_OK);
	o = (struct buf){out, n};
	CHECK_EQ_INT(jpeg_colour_at(&o, &w, &h, 16, 56), 1);
	CHECK_EQ_INT(jpeg_colour_at(&o, &w, &h, 16, 8), 2);
	free(out);
	free(in.p);

	/* Damaged: a JPEG start with an HTML page after it. */
	static const char fake[] = "\xff\xd8\xff\xe0<html><script>alert(1)</script></html>";
	out = NULL;
	CHECK_EQ_INT(media_clean(k, (const unsigned char *)fake, sizeof(fake) - 1, &out, &n), MEDIA_DAMAGED);
	CHECK(out == NULL);

	/* A bomb: a small JPEG whose frame header says 60000 x 60000. */
	make_jpeg(&in, 16, 16, 1, 0);
	for (size_t i = 2; i + 9 < in.n; i++) {
		if (in.p[i] == 0xff && in.p[i + 1] == 0xc0) { /* SOF0: length, precision, height, width */
			in.p[i + 5] = 0xea;
			in.p[i + 6] = 0x60;
			in.p[i + 7] = 0xea;
			in.p[i + 8] = 0x60;
			break;
		}
	}
	clock_t t0 = clock();
	CHECK_EQ_INT(media_clean(k, in.p, in.n, &out, &n), MEDIA_TOO_LARGE);
	CHECK((clock() - t0) < CLOCKS_PER_SEC / 2); /* refused before decoding */
	free(in.p);
}

/* ---- PNG ------------------------------------------------------------------- */

static void png_chunk(struct buf *b, const char *type, const void *data, size_t n)
{
	unsigned char hdr[8];
	be32(hdr, (uint32_t)n);
	memcpy(hdr + 4, type, 4);
	put(b, hdr, 8);
	put(b, data, n);
	uLong crc = crc32(0, (const Bytef *)type, 4);
	crc = crc32(crc, (const Bytef *)data, (uInt)n);
	unsigned char c[4];
	be32(c, (uint32_t)crc);
	put(b, c, 4);
}

/* A PNG made by libpng, then metadata chunks put in before IEND by hand. */
static void make_png(struct buf *out, size_t w, size_t h)
{
	png_image im;
	memset(&im, 0, sizeof(im));
	im.version = PNG_IMAGE_VERSION;
	im.width = (png_uint_32)w;
	im.height = (png_uint_32)h;
	im.format = PNG_FORMAT_RGBA;
	unsigned char *px = two_halves(w, h, 4);
	png_alloc_size_t len = 0;
	png_image_write_to_memory(&im, NULL, &len, 0, px, 0, NULL);
	unsigned char *mem = xmalloc(len);
	CHECK(png_image_write_to_memory(&im, mem, &len, 0, px, 0, NULL));
	free(px);
	/* everything but IEND (the last 12 bytes) */
	put(out, mem, len - 12);
	static const char text[] = "Comment\0PNG-TEXT-SECRET";
	png_chunk(out, "tEXt", text, sizeof(text) - 1);
	static const char itxt[] = "XML:com.adobe.xmp\0\0\0\0\0<x:xmpmeta>PNG-ITXT-SECRET</x:xmpmeta>";
	png_chunk(out, "iTXt", itxt, sizeof(itxt) - 1);
	static const char exif[] = "MM\0*\0\0\0\x08PNG-EXIF-SECRET";
	png_chunk(out, "eXIf", exif, sizeof(exif) - 1);
	/* zTXt: keyword, NUL, method 0, deflated "PNG-ZTXT-SECRET" */
	struct buf z = {0};
	put(&z, "Author\0\0", 8);
	unsigned char defl[64];
	uLongf dl = sizeof(defl);
	compress(defl, &dl, (const Bytef *)"PNG-ZTXT-SECRET", 15);
	put(&z, defl, dl);
	png_chunk(out, "zTXt", z.p, z.n);
	free(z.p);
	static const unsigned char when[7] = {0x07, 0xea, 12, 3, 8, 15, 0};
	png_chunk(out, "tIME", when, 7);
	png_chunk(out, "IEND", "", 0);
	puts_(out, "<script>TRAILER-SECRET</script>");
	free(mem);
}

static void test_png(void)
{
	struct buf in = {0};
	make_png(&in, 40, 20);
	static const char *const markers[] = {"PNG-TEXT-SECRET",
	                                      "PNG-ITXT-SECRET",
	                                      "PNG-EXIF-SECRET",
	                                      "tEXt",
	                                      "iTXt",
	                                      "zTXt",
	                                      "eXIf",
	                                      "tIME",
	                                      "TRAILER-SECRET",
	                                      "xmpmeta"};
	for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]); i++)
		CHECK(has(in.p, in.n, markers[i]));
	const struct media_kind *k = media_sniff(in.p, in.n);
	CHECK(k && !strcmp(k->ext, "png"));
	unsigned char *out = NULL;
	size_t n = 0;
	CHECK_EQ_INT(media_clean(k, in.p, in.n, &out, &n), MEDIA_OK);
	if (!out)
		return;
	for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]); i++)
		CHECK(!has(out, n, markers[i]));
	/* The zTXt's deflated bytes are not there either. */
	CHECK(!has(out, n, "Author"));
	png_image im;
	memset(&im, 0, sizeof(im));
	im.version = PNG_IMAGE_VERSION;
	CHECK(png_image_begin_read_from_memory(&im, out, n));
	CHECK_EQ_INT(im.width, 40);
	CHECK_EQ_INT(im.height, 20);
	png_image_free(&im);
	free(out);
	free(in.p);

	/* Bombs: IHDR says 100000 x 100000, or 16000 x 16000 (each side fine,
	 * too many pixels together), with one tiny IDAT. */
	static const uint32_t sizes[][2] = {{100000, 100000}, {16000, 16000}, {1, 50000000}};
	for (size_t s = 0; s < 3; s++) {
		struct buf b = {0};
		put(&b, "\x89PNG\r\n\x1a\n", 8);
		unsigned char ihdr[13] = {0};
		be32(ihdr, sizes[s][0]);
		be32(ihdr + 4, sizes[s][1]);
		ihdr[8] = 8; /* bit depth */
		ihdr[9] = 2; /* RGB */
		png_chunk(&b, "IHDR", ihdr, 13);
		unsigned char idat[32];
		uLongf il = sizeof(idat);
		compress(idat, &il, (const Bytef *)"\0\0\0\0", 4);
		png_chunk(&b, "IDAT", idat, il);
		png_chunk(&b, "IEND", "", 0);
		clock_t t0 = clock();
		out = NULL;
		int v = media_clean(k, b.p, b.n, &out, &n);
		/* libpng itself refuses a side over 1,000,000 (damaged); ours, the rest */
		CHECK(v == MEDIA_TOO_LARGE ||
		      (v == MEDIA_DAMAGED && (sizes[s][0] > 1000000 || sizes[s][1] > 1000000)));
		CHECK(out == NULL);
		CHECK((clock() - t0) < CLOCKS_PER_SEC / 2);
		free(b.p);
	}
}

/* ---- WebP ------------------------------------------------------------------ */

static void riff_chunk(struct buf *b, const char *type, const void *data, size_t n)
{
	unsigned char hdr[8];
	memcpy(hdr, type, 4);
	le32(hdr + 4, (uint32_t)n);
	put(b, hdr, 8);
	put(b, data, n);
	if (n & 1)
		put(b, "", 1);
}

/* An extended WebP (VP8X) with EXIF and XMP chunks around a lossy picture. */
static void make_webp(struct buf *out, size_t w, size_t h, uint32_t canvas_w, uint32_t canvas_h)
{
	unsigned char *px = two_halves(w, h, 3);
	uint8_t *enc = NULL;
	size_t len = WebPEncodeRGB(px, (int)w, (int)h, (int)w * 3, 80, &enc);
	free(px);
	CHECK(len > 20);
	struct buf body = {0};
	put(&body, "WEBP", 4);
	unsigned char x[10] = {0x08 | 0x04}; /* EXIF, XMP */
	x[4] = (unsigned char)(canvas_w - 1);
	x[5] = (unsigned char)((canvas_w - 1) >> 8);
	x[6] = (unsigned char)((canvas_w - 1) >> 16);
	x[7] = (unsigned char)(canvas_h - 1);
	x[8] = (unsigned char)((canvas_h - 1) >> 8);
	x[9] = (unsigned char)((canvas_h - 1) >> 16);
	riff_chunk(&body, "VP8X", x, 10);
	put(&body, enc + 12, len - 12); /* the "VP8 " chunk */
	static const char exif[] = "II*\0\x08\0\0\0WEBP-EXIF-GPS-SECRET";
	riff_chunk(&body, "EXIF", exif, sizeof(exif) - 1);
	static const char xmp[] = "<x:xmpmeta>WEBP-XMP-SECRET</x:xmpmeta>";
	riff_chunk(&body, "XMP ", xmp, sizeof(xmp) - 1);
	unsigned char hdr[8] = {'R', 'I', 'F', 'F'};
	le32(hdr + 4, (uint32_t)body.n);
	put(out, hdr, 8);
	put(out, body.p, body.n);
	free(body.p);
	WebPFree(enc);
}

static void test_webp(void)
{
	struct buf in = {0};
	make_webp(&in, 48, 24, 48, 24);
	int w = 0, h = 0;
	CHECK(WebPGetInfo(in.p, in.n, &w, &h) && w == 48 && h == 24); /* a WebP libwebp reads */
	static const char *const markers[] = {"WEBP-EXIF-GPS-SECRET", "WEBP-XMP-SECRET", "EXIF", "XMP ",
	                                      "xmpmeta"};
	for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]); i++)
		CHECK(has(in.p, in.n, markers[i]));
	const struct media_kind *k = media_sniff(in.p, in.n);
	CHECK(k && !strcmp(k->ext, "webp"));
	unsigned char *out = NULL;
	size_t n = 0;
	CHECK_EQ_INT(media_clean(k, in.p, in.n, &out, &n), MEDIA_OK);
	if (!out)
		return;
	for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]); i++)
		CHECK(!has(out, n, markers[i]));
	CHECK(WebPGetInfo(out, n, &w, &h) && w == 48 && h == 24);
	free(out);
	free(in.p);

	/* A bomb: the extended header's canvas says 16383 x 16383. */
	in = (struct buf){0};
	make_webp(&in, 16, 16, 16383, 16383);
	out = NULL;
	int v = media_clean(k, in.p, in.n, &out, &n);
	CHECK(v == MEDIA_TOO_LARGE || v == MEDIA_DAMAGED);
	CHECK(out == NULL);
	free(in.p);
}

/* ---- GIF, names ------------------------------------------------------------ */

static void test_gif_and_names(void)
{
	static const unsigned char gif[] = "GIF89a\x01\x00\x01\x00\x00\x00\x00!\xfe\x0eGIF-COMMENT-XY\x00,"
	                                   "\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00;";
	const struct media_kind *k = media_sniff(gif, sizeof(gif) - 1);
	CHECK(k && !strcmp(k->ext, "gif") && !media_is_picture(k));
	unsigned char *out = NULL;
	size_t n;
	CHECK_EQ_INT(media_clean(k, gif, sizeof(gif) - 1, &out, &n), MEDIA_REFUSED);
	CHECK(out == NULL);

	/* An HTML application named as a picture is no kind at all. */
	static const char hta[] = "<html><hta:application/><script>new ActiveXObject('x')</script></html>";
	CHECK(media_sniff((const unsigned char *)hta, sizeof(hta) - 1) == NULL);

	/* The name is the kind's, whatever the guest's device called the file. */
	char name[MEDIA_MAX_NAME + 1];
	struct buf j = {0};
	make_jpeg(&j, 8, 8, 1, 0);
	media_neutral_name(media_sniff(j.p, j.n), 2, name);
	CHECK_STR(name, "Picture 2.jpg");
	free(j.p);
	static const char pdf[] = "%PDF-1.7\n";
	media_neutral_name(media_sniff((const unsigned char *)pdf, 9), 1, name);
	CHECK_STR(name, "Document 1.pdf");
	media_neutral_name(media_sniff((const unsigned char *)pdf, 9), 0, name);
	CHECK_STR(name, "Document.pdf");
	CHECK_STR(media_verdict_name(MEDIA_UNSAFE), "unsafe");
}

/* ---- PDF ------------------------------------------------------------------- */

/* A PDF of @p nobj objects (each "N 0 obj\n<text>\nendobj\n") with a right
 * xref table and a trailer of @p trailer. */
static void make_pdf_n(struct buf *b, const char *const *objs, const size_t *lens, size_t nobj,
                       const char *trailer)
{
	size_t off[16];
	puts_(b, "%PDF-1.4\n%\xe2\xe3\xcf\xd3\n");
	for (size_t i = 0; i < nobj; i++) {
		off[i] = b->n;
		char h[32];
		snprintf(h, sizeof(h), "%zu 0 obj\n", i + 1);
		puts_(b, h);
		put(b, objs[i], lens ? lens[i] : strlen(objs[i]));
		puts_(b, "\nendobj\n");
	}
	size_t xref = b->n;
	char line[64];
	snprintf(line, sizeof(line), "xref\n0 %zu\n0000000000 65535 f \n", nobj + 1);
	puts_(b, line);
	for (size_t i = 0; i < nobj; i++) {
		snprintf(line, sizeof(line), "%010zu 00000 n \n", off[i]);
		puts_(b, line);
	}
	snprintf(line, sizeof(line), "trailer\n<< /Size %zu ", nobj + 1);
	puts_(b, line);
	puts_(b, trailer);
	snprintf(line, sizeof(line), " >>\nstartxref\n%zu\n%%%%EOF\n", xref);
	puts_(b, line);
}

static void make_pdf(struct buf *b, const char *const *objs, size_t nobj, const char *trailer)
{
	make_pdf_n(b, objs, NULL, nobj, trailer);
}

static int pdf_verdict(const char *const *objs, size_t nobj, const char *trailer, struct buf *out)
{
	struct buf b = {0};
	make_pdf(&b, objs, nobj, trailer);
	const struct media_kind *k = media_sniff(b.p, b.n);
	unsigned char *o = NULL;
	size_t n = 0;
	int v = media_clean(k, b.p, b.n, &o, &n);
	if (v == MEDIA_OK)
		CHECK_EQ_INT(n, b.n); /* blanked in place: nothing moves */
	if (out) {
		out->p = o;
		out->n = n;
	} else {
		free(o);
	}
	free(b.p);
	return v;
}

static void test_pdf(void)
{
	static const char xmp[] =
	        "<?xpacket begin=''?><x:xmpmeta xmlns:x='adobe:ns:meta/'>"
	        "<dc:creator>XMP-PDF-SECRET Jane Doe</dc:creator></x:xmpmeta><?xpacket end='w'?>";
	char meta[512];
	snprintf(meta, sizeof(meta), "<< /Type /Metadata /Subtype /XML /Length %zu >>\nstream\n%s\nendstream",
	         sizeof(xmp), xmp);
	const char *objs[] = {
	        "<< /Type /Catalog /Pages 2 0 R /Metadata 4 0 R >>",
	        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
	        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
	        meta,
	        "<< /Author (Jane \\(J\\) Doe INFO-SECRET) /Creator <4a616e65> /Producer (Scanner (model X) "
	        "INFO-PRODUCER) /CreationDate (D:20261203081500+01'00') >>",
	};
	struct buf out = {0};
	CHECK_EQ_INT(pdf_verdict(objs, 5, "/Root 1 0 R /Info 5 0 R /ID [<0123abcd> <0123abcd>]", &out),
	             MEDIA_OK);
	static const char *const gone[] = {"INFO-SECRET", "Jane",           "4a616e65", "INFO-PRODUCER",
	                                   "20261203",    "XMP-PDF-SECRET", "xmpmeta",  "0123abcd"};
	for (size_t i = 0; out.p && i < sizeof(gone) / sizeof(gone[0]); i++)
		CHECK(!has(out.p, out.n, gone[i]));
	CHECK(out.p && has(out.p, out.n, "/Author (") && has(out.p, out.n, "startxref"));
	free(out.p);

	/* An HTML page behind %PDF-, as it reached staff as "Referral form.hta". */
	static const char poly[] =
	        "%PDF-1.4\n<html><body><script>document.write('x')</script></body></html>\n";
	unsigned char *o = NULL;
	size_t n;
	const struct media_kind *k = media_sniff((const unsigned char *)poly, sizeof(poly) - 1);
	CHECK(k && !strcmp(k->ext, "pdf"));
	CHECK(media_clean(k, (const unsigned char *)poly, sizeof(poly) - 1, &o, &n) != MEDIA_OK);
	CHECK(o == NULL);

	/* The same page inside a well-formed PDF, and after its %%EOF. */
	const char *page[] = {"<< /Type /Catalog >>", "(<html><script>alert(1)</script></html>)"};
	CHECK_EQ_INT(pdf_verdict(page, 2, "/Root 1 0 R", NULL), MEDIA_UNSAFE);
	struct buf b = {0};
	const char *plain[] = {"<< /Type /Catalog >>"};
	make_pdf(&b, plain, 1, "/Root 1 0 R");
	CHECK_EQ_INT(media_pdf_clean(b.p, b.n), MEDIA_OK);
	puts_(&b, "<html>after the end</html>");
	CHECK_EQ_INT(media_pdf_clean(b.p, b.n), MEDIA_UNSAFE);
	free(b.p);

	/* Keys that act, plainly or with #xx escapes. */
	static const char *const acting[] = {
	        "<< /Type /Catalog /OpenAction << /S /JavaScript /JS (app.alert(1)) >> >>",
	        "<< /Type /Catalog /Names << /J#61vaScript 2 0 R >> >>",
	        "<< /Type /Catalog /AA << /O << /S /Launch /F (cmd.exe) >> >> >>",
	        "<< /Type /Catalog /Names << /EmbeddedFiles 2 0 R >> >>",
	        "<< /Type /Catalog /AcroForm << /XFA 2 0 R >> >>",
	        "<< /Type /Catalog /Encrypt 2 0 R >>",
	        "<< /Type /Catalog /Bad#zzName 1 >>",
	};
	for (size_t i = 0; i < sizeof(acting) / sizeof(acting[0]); i++) {
		const char *one[] = {acting[i]};
		CHECK_EQ_INT(pdf_verdict(one, 1, "/Root 1 0 R", NULL), MEDIA_UNSAFE);
	}

	/* An object stream hiding an OpenAction in compressed data. */
	static const char hidden[] = "1 0 << /Type /Catalog /OpenAction << /S /JavaScript /JS (x) >> >>";
	unsigned char z[256];
	uLongf zl = sizeof(z);
	compress(z, &zl, (const Bytef *)hidden, sizeof(hidden) - 1);
	struct buf os = {0};
	char h[128];
	snprintf(h, sizeof(h), "<< /Type /ObjStm /N 1 /First 4 /Filter /FlateDecode /Length %lu >>\nstream\n",
	         (unsigned long)zl);
	puts_(&os, h);
	put(&os, z, zl);
	puts_(&os, "\nendstream");
	const char *withos[] = {"<< /Type /Catalog >>", (const char *)os.p};
	size_t oslens[] = {20, os.n};
	b = (struct buf){0};
	make_pdf_n(&b, withos, oslens, 2, "/Root 1 0 R");
	CHECK(!has(b.p, b.n, "OpenAction")); /* only in the compressed bytes */
	CHECK_EQ_INT(media_pdf_clean(b.p, b.n), MEDIA_UNSAFE);
	free(b.p);
	/* The same object stream with a harmless catalog: taken. */
	static const char harmless[] = "1 0 << /Type /Catalog /Pages 3 0 R >>";
	zl = sizeof(z);
	compress(z, &zl, (const Bytef *)harmless, sizeof(harmless) - 1);
	os.n = 0;
	snprintf(h, sizeof(h), "<< /Type /ObjStm /N 1 /First 4 /Filter /FlateDecode /Length %lu >>\nstream\n",
	         (unsigned long)zl);
	puts_(&os, h);
	put(&os, z, zl);
	puts_(&os, "\nendstream");
	withos[1] = (const char *)os.p;
	oslens[1] = os.n;
	b = (struct buf){0};
	make_pdf_n(&b, withos, oslens, 2, "/Root 1 0 R");
	CHECK_EQ_INT(media_pdf_clean(b.p, b.n), MEDIA_OK);
	free(b.p);
	free(os.p);

	/* Metadata it cannot blank: compressed XMP, an /Info it cannot find. */
	const char *cxmp[] = {
	        "<< /Type /Catalog /Metadata 2 0 R >>",
	        "<< /Type /Metadata /Filter /FlateDecode /Length 4 >>\nstream\nabcd\nendstream"};
	CHECK_EQ_INT(pdf_verdict(cxmp, 2, "/Root 1 0 R", NULL), MEDIA_UNSAFE);
	CHECK_EQ_INT(pdf_verdict(plain, 1, "/Root 1 0 R /Info 9 0 R", NULL), MEDIA_UNSAFE);
	/* No trailer at all. */
	static char bare[] = "%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n"
	                     "...........................................................\n";
	CHECK_EQ_INT(media_pdf_clean((unsigned char *)bare, sizeof(bare) - 1), MEDIA_DAMAGED);
}

int main(void)
{
	test_jpeg();
	test_png();
	test_webp();
	test_gif_and_names();
	test_pdf();
	return TEST_DONE();
}
