/*
 * media.h - pictures and files a guest sends: what is accepted, and what is
 * taken out of them before anyone else sees them.
 *
 * The type is decided from the bytes (never from the name or the browser's
 * Content-Type): PNG, JPEG, GIF, WebP and PDF.  Metadata that can say where
 * or when a photo was taken, or on what device, is removed: a JPEG loses its
 * APP1..APP15 and COM segments (EXIF with GPS, XMP, maker notes), a PNG its
 * eXIf, tEXt, zTXt, iTXt and tIME chunks.  GIF, WebP and PDF are passed on
 * as they are (docs/services.md says so).
 */
#ifndef THRESHOLD_MEDIA_H
#define THRESHOLD_MEDIA_H

#include <stddef.h>

/** What a guest's file is. */
struct media_kind {
	const char *mimetype; /* "image/png" ... "application/pdf" */
	const char *msgtype;  /* "m.image" or "m.file" */
	const char *ext;      /* "png" ... "pdf" */
};

/**
 * The kind of @p len bytes at @p buf, or NULL if it is not one Threshold
 * accepts.
 */
const struct media_kind *media_sniff(const unsigned char *buf, size_t len);

/**
 * Remove location and device metadata from a PNG or JPEG in place.
 * @param len  in: the bytes; out: the bytes left (never more)
 * @return TH_OK, or TH_EINVAL if the file is damaged (refuse it).
 */
int media_strip(const struct media_kind *kind, unsigned char *buf, size_t *len);

#endif
