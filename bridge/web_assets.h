/* web_assets.h - the guest page's files, embedded at build time. */
#ifndef THRESHOLD_WEB_ASSETS_H
#define THRESHOLD_WEB_ASSETS_H

#include <stddef.h>

/*
 * Every file under bridge/web is turned into ${CMAKE_BINARY_DIR}/web_assets.c by
 * bridge/gen_web_assets.py when Threshold is built; nothing is read from disk
 * at run time. Every asset comes identity and gzip-compressed, with a strong
 * ETag over its identity bytes.
 */
struct web_asset {
	const char *path;         /* "/index.html", "/app.js", "/i18n/ar.json" */
	const char *content_type; /* with charset for text types */
	const unsigned char *data;
	size_t len; /* identity bytes */
	const unsigned char *gzip;
	size_t gzip_len;  /* gzip -9, mtime 0 (reproducible) */
	const char *etag; /* quoted strong etag, e.g. "\"<16 hex of sha256>\"" */
};

/** The asset at @p path ("/" is "/index.html"), or NULL. */
const struct web_asset *web_asset_find(const char *path);

/** Every asset, for benches and tests (NULL-terminated). */
extern const struct web_asset *const web_assets[];

#endif
