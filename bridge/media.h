/*
 * media.h - pictures and files: what a guest may send, how a picture is
 * made clean before anyone else sees it, and what Threshold reads of a
 * picture or file someone sends the guest (an attachment).
 *
 * The type is decided from the bytes (never from the name or the browser's
 * Content-Type).  A picture (JPEG, PNG, WebP) is decoded to pixels and
 * encoded afresh: EXIF (with GPS), XMP, ICC profiles, comments, text chunks
 * and anything hidden after the picture do not survive, because the new
 * file is made from pixels alone.  A JPEG's EXIF orientation is applied to
 * the pixels first, so the picture still stands the right way up.  GIF is
 * not taken from guests (see docs/privacy.md): an animation cannot be
 * re-encoded with the libraries used here without writing a GIF encoder,
 * and a still of its first frame would not be what the guest meant to send.
 * A PDF is checked and its metadata blanked (media_pdf_clean); whether a
 * guest may send one at all is gateway.accept_pdf's choice (off by default).
 * A file's name is never the sender's: media_neutral_name().
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

/* Decoder bounds (docs/reliability.md, "decompression bombs").  A picture
 * whose header declares more is refused before a pixel is decoded: a few
 * bytes of PNG can declare 2^31 x 2^31 pixels.  40 million pixels is a
 * 7,700 x 5,200 photo, above what phone cameras make by default; decoded
 * it is at most 160 MB, and one picture is decoded at a time. */
#define MEDIA_MAX_SIDE           16383u       /* pixels a side (WebP's own limit) */
#define MEDIA_MAX_PIXELS         40000000u    /* width * height */
#define MEDIA_MAX_SCANS          500          /* scans of a progressive JPEG */
#define MEDIA_MAX_DECODER_MEMORY (256L << 20) /* libjpeg's own buffers */
#define MEDIA_JPEG_QUALITY       85           /* JPEG and lossy WebP */
#define MEDIA_MAX_PDF_BYTES      ((size_t)64 << 20)
#define MEDIA_MAX_PDF_INFLATED   ((size_t)64 << 20) /* object streams, all together */

/** What a file is. */
struct media_kind {
	const char *mimetype; /* "image/png" ... "application/pdf" */
	const char *msgtype;  /* "m.image" or "m.file" */
	const char *ext;      /* "png" ... "pdf" */
	const char *label;    /* "Picture" or "Document": the start of a neutral name */
};

/** What media_clean() and media_pdf_clean() made of a file. */
enum media_verdict {
	MEDIA_OK = 0,
	MEDIA_DAMAGED,   /* cannot be read as what its first bytes say */
	MEDIA_TOO_LARGE, /* a picture over MEDIA_MAX_SIDE / MEDIA_MAX_PIXELS */
	MEDIA_REFUSED,   /* a kind not taken: GIF, a moving WebP */
	MEDIA_UNSAFE,    /* a PDF with active content, or one this check cannot vouch for */
};

/** "ok", "damaged", "too_large", "refused", "unsafe" (for logs and tests). */
const char *media_verdict_name(int verdict);

/**
 * The kind of @p len bytes at @p buf (PNG, JPEG, GIF, WebP, PDF), or NULL.
 * Only the first bytes are read: media_clean() decides whether the rest is
 * what they say.
 */
const struct media_kind *media_sniff(const unsigned char *buf, size_t len);

/** 1 for the kinds media_clean() re-encodes (JPEG, PNG, WebP). */
int media_is_picture(const struct media_kind *kind);

/**
 * A clean copy of @p len bytes of kind @p kind.  A picture is decoded
 * (within the bounds above) and encoded again as the same kind: JPEG at
 * MEDIA_JPEG_QUALITY, PNG lossless, WebP lossy or lossless as it came.  A
 * PDF goes through media_pdf_clean().  Thread-safe (pictures one at a time).
 * @param out  new buffer (free()), written only on MEDIA_OK
 * @return an enum media_verdict.
 */
int media_clean(const struct media_kind *kind, const unsigned char *buf, size_t len, unsigned char **out,
                size_t *outlen);

/**
 * Check a PDF and blank its metadata in place (nothing moves, so its
 * cross-reference offsets stay right).  Refused (MEDIA_UNSAFE) on doubt:
 * anything but white space after the last %%EOF, HTML or script markup in
 * its plain bytes, any of the keys that act, carry files or submit
 * (/JavaScript /JS /Launch /OpenAction /AA /EmbeddedFile(s) /XFA
 * /RichMedia /SubmitForm /ImportData /GoToR /GoToE /Sound /Movie
 * /Rendition) in its bytes or its object streams, encryption, an object
 * stream that is not plain Flate, and metadata it cannot blank (an /Info
 * dictionary or XMP stream it cannot find as a top-level object, XMP that
 * is compressed or anywhere else, an embedded photo's EXIF).  Blanked: the
 * string values of every /Info dictionary, the data of every /Metadata
 * stream, the trailer's /ID.  No header at byte 0, no startxref, no %%EOF:
 * MEDIA_DAMAGED.
 * @return an enum media_verdict.
 */
int media_pdf_clean(unsigned char *buf, size_t len);

/**
 * A name for a guest's file that says nothing of the guest's device or
 * name for it: "Picture 3.jpg", "Document 1.pdf" ("Picture.jpg" when @p n
 * is 0), the extension that of the kind read from the bytes.
 */
void media_neutral_name(const struct media_kind *kind, unsigned long n, char out[MEDIA_MAX_NAME + 1]);

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
