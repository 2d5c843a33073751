/* web_assets.h - the guest page's files, embedded at build time. */
#ifndef THRESHOLD_WEB_ASSETS_H
#define THRESHOLD_WEB_ASSETS_H

#include <stddef.h>

struct web_asset {
	const char *path;         /* "/index.html", "/app.js", "/i18n/ar.json" */
	const char *content_type; /* with charset for text types */
	const unsigned char *data;
	size_t len; /* identity bytes */
	const unsigned char *gzip;
	size_t gzip_len;  /* gzip -9, mtime 0 (reproducible) */
	const char *etag; /* quoted strong etag */
};

/** The asset at @p path ("/" is "/index.html"), or NULL. */
const struct web_asset *web_asset_find(const char *path);

/** Every asset, for benches and tests (NULL-terminated). */
extern const struct web_asset *const web_assets[];

#endif
