/*
 * qr.h - an invitation link as a QR code image (PNG), for staff to print or
 * show on a screen.  libqrencode makes the code; the PNG is written here
 * with zlib, so nothing else is needed.
 */
#ifndef THRESHOLD_QR_H
#define THRESHOLD_QR_H

#include <stddef.h>

#define QR_MAX_TEXT 1024 /* bytes of text a code is made for */

/**
 * A black-on-white PNG of @p text as a QR code (error correction M), 8
 * pixels per module with the standard 4-module quiet zone.
 * @param png  out: a new buffer (free()), written on success
 * @return TH_OK, TH_EINVAL (empty text, or over QR_MAX_TEXT), or TH_EIO
 *         (libqrencode or zlib failed).
 */
int qr_png(const char *text, unsigned char **png, size_t *len);

#endif
