/*
 * qr.c - QR code to PNG (spec: PNG, ISO/IEC 15948: IHDR, IDAT, IEND; 1-bit
 * greyscale, filter 0 per row).
 */
#include "qr.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <qrencode.h>
#include <zlib.h>

#include "util.h"

#define SCALE 8
#define QUIET 4

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* Append one chunk (length, type, data, CRC over type and data). */
static size_t chunk(unsigned char *out, const char *type, const unsigned char *data, size_t n)
{
	put32(out, (uint32_t)n);
	memcpy(out + 4, type, 4);
	if (n)
		memcpy(out + 8, data, n);
	uLong crc = crc32(0L, out + 4, (uInt)(n + 4));
	put32(out + 8 + n, (uint32_t)crc);
	return n + 12;
}

int qr_png(const char *text, unsigned char **png, size_t *len)
{
	size_t tlen = text ? strlen(text) : 0;
	if (!tlen || tlen > QR_MAX_TEXT)
		return TH_EINVAL;
	QRcode *q = QRcode_encodeString(text, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
	if (!q)
		return TH_EIO;
	size_t side = ((size_t)q->width + 2 * QUIET) * SCALE;
	size_t stride = (side + 7) / 8 + 1; /* the filter byte, then 1 bit per pixel */
	unsigned char *raw = xcalloc(side, stride);
	for (size_t y = 0; y < side; y++) {
		unsigned char *row = raw + y * stride;
		memset(row + 1, 0xff, stride - 1); /* white (1) */
		long my = (long)(y / SCALE) - QUIET;
		for (size_t x = 0; x < side; x++) {
			long mx = (long)(x / SCALE) - QUIET;
			int dark = mx >= 0 && my >= 0 && mx < q->width && my < q->width &&
			           (q->data[my * q->width + mx] & 1);
			if (dark)
				row[1 + x / 8] &= (unsigned char)~(0x80u >> (x % 8));
		}
	}
	QRcode_free(q);
	uLongf zlen = compressBound((uLong)(side * stride));
	unsigned char *z = xmalloc(zlen);
	int zrc = compress2(z, &zlen, raw, (uLong)(side * stride), 9);
	free(raw);
	if (zrc != Z_OK) {
		free(z);
		return TH_EIO;
	}
	unsigned char ihdr[13];
	put32(ihdr, (uint32_t)side);
	put32(ihdr + 4, (uint32_t)side);
	ihdr[8] = 1;  /* bit depth */
	ihdr[9] = 0;  /* greyscale */
	ihdr[10] = 0; /* deflate */
	ihdr[11] = 0; /* filter method 0 */
	ihdr[12] = 0; /* no interlace */
	unsigned char *out = xmalloc(8 + 25 + 12 + zlen + 12);
	static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
	size_t n = 0;
	memcpy(out, sig, 8);
	n += 8;
	n += chunk(out + n, "IHDR", ihdr, sizeof(ihdr));
	n += chunk(out + n, "IDAT", z, zlen);
	n += chunk(out + n, "IEND", NULL, 0);
	free(z);
	*png = out;
	*len = n;
	return TH_OK;
}
