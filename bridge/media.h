/*
 * media.h - pictures and files: what a guest may send, what is taken out of
 * a picture before anyone else sees it, and what Threshold reads of a
 * picture or file someone sends the guest (an attachment).
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
#include <stdint.h>

#include <jansson.h>

#define MEDIA_MAX_NAME     100 /* bytes of a file name shown to the guest */
#define MEDIA_MAX_MIMETYPE 100 /* bytes of a MIME type kept (type/subtype, no parameters) */
#define MEDIA_MAX_SERVER   255 /* bytes of an mxc URI's server name */
#define MEDIA_MAX_ID       255 /* bytes of an mxc URI's media id */
#define MEDIA_MAX_MXC      (6 + MEDIA_MAX_SERVER + 1 + MEDIA_MAX_ID)

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
 * Remove location and device metadata from a PNG, JPEG or WebP in place
 * (GIF and PDF are left as they are).
 * @param len  in: the bytes; out: the bytes left (never more)
 * @return TH_OK, or TH_EINVAL if the file is damaged (refuse it).
 */
int media_strip(const struct media_kind *kind, unsigned char *buf, size_t *len);

/**
 * A picture or file sent into a conversation by someone else (staff, or
 * another guest in a group), as the guest's feed keeps it.  Everything but
 * @c mxc may be shown to the guest; @c mxc never is.
 */
struct media_attachment {
	const char *kind;                      /* "picture" (m.image) or "file" (static) */
	char name[MEDIA_MAX_NAME + 1];         /* media_name_clean()'s; never empty */
	char mimetype[MEDIA_MAX_MIMETYPE + 1]; /* lowercase "type/subtype", or "" */
	int64_t size;                          /* bytes as the sender said, or -1 */
	const char *caption;                   /* borrowed from the content: words sent with it, or NULL */
	char mxc[MEDIA_MAX_MXC + 1];           /* "mxc://server/id"; "" when it cannot be fetched */
};

/**
 * Read the content of an m.image, m.file, m.video or m.audio event (spec:
 * CS API, m.room.message msgtypes).  The name is content.filename, else
 * content.body; when both are there and differ, body is a caption.
 * Encrypted media (content.file) and a url that is not a well-formed mxc
 * URI leave @c mxc empty: the guest is told it cannot be shown.  A
 * mimetype that is not a short plain token is left out, so is a size that
 * is not a whole number.
 * @param msgtype  content.msgtype (borrowed)
 * @param content  the event's content object (borrowed; @c caption points into it)
 * @return TH_OK, or TH_EINVAL if @p msgtype is not one of the four.
 */
int media_attachment_read(const char *msgtype, const json_t *content, struct media_attachment *out);

/**
 * Split an mxc URI (spec: CS API, "Matrix Content (mxc://) URIs"): a server
 * name of hostname, IPv4 or [IPv6] characters with an optional port, and a
 * media id of A-Z a-z 0-9 _ -, each 1..255 bytes.
 * @return TH_OK (both written), or TH_EINVAL.
 */
int media_mxc_parse(const char *uri, char server[MEDIA_MAX_SERVER + 1], char id[MEDIA_MAX_ID + 1]);

/**
 * A file name fit to show: the part after the last '/' or '\\', no control
 * or bidirectional-override characters (a name must not read backwards, as
 * "invoice<RLO>fdp.exe" would), valid UTF-8, at most MEDIA_MAX_NAME bytes
 * cut at a character boundary.  @p fallback (copied, at most MEDIA_MAX_NAME
 * bytes) when nothing is left.
 */
void media_name_clean(const char *name, const char *fallback, char out[MEDIA_MAX_NAME + 1]);

/**
 * @p name (already clean) as plain ASCII for a Content-Disposition
 * filename="...": letters, digits, space and . _ - + ( ) are kept, anything
 * else becomes '_' (one per character), no leading dot or space; "file"
 * when nothing is left.
 */
void media_ascii_name(const char *name, char out[MEDIA_MAX_NAME + 1]);

#endif
