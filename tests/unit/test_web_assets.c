/*
 * test_web_assets.c - the guest page as embedded at build time
 * (bridge/gen_web_assets.py -> web_assets.c): lookup, types, ETags, and that
 * each gzip body is the identity body compressed (its trailer's CRC-32 and
 * length match), with mtime 0 so builds are reproducible.
 */
#include <stdint.h>
#include <string.h>

#include "testlib.h"
#include "web_assets.h"

static uint32_t crc32_of(const unsigned char *p, size_t n)
{
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
	}
	return ~c;
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int is_text(const char *ct)
{
	return strncmp(ct, "text/", 5) == 0 || strstr(ct, "json") || strstr(ct, "svg");
}

static void test_lookup(void)
{
	const struct web_asset *index = web_asset_find("/index.html");
	CHECK(index != NULL);
	CHECK(web_asset_find("/") == index);
	CHECK(web_asset_find("/app.js") != NULL);
	CHECK(web_asset_find("/app.css") != NULL);
	CHECK(web_asset_find("/icon.svg") != NULL);
	CHECK(web_asset_find("/i18n/en.json") != NULL);
	CHECK(web_asset_find("/i18n/ar.json") != NULL);
	CHECK(web_asset_find(NULL) == NULL);
	CHECK(web_asset_find("") == NULL);
	CHECK(web_asset_find("index.html") == NULL);
	CHECK(web_asset_find("/index.html/") == NULL);
	CHECK(web_asset_find("/../index.html") == NULL);
	CHECK(web_asset_find("/i18n/") == NULL);
	CHECK(web_asset_find("/i18n/xx.json") == NULL);
	CHECK(web_asset_find("/zzz") == NULL);
	if (index)
		CHECK_STR(index->content_type, "text/html; charset=utf-8");
	const struct web_asset *js = web_asset_find("/app.js");
	if (js)
		CHECK_STR(js->content_type, "text/javascript; charset=utf-8");
}

static void test_every_asset(void)
{
	size_t n = 0;
	const char *prev = NULL;
	for (const struct web_asset *const *ap = web_assets; *ap; ap++, n++) {
		const struct web_asset *a = *ap;
		CHECK(a->path[0] == '/');
		/* sorted and unique: web_asset_find searches by halving */
		if (prev)
			CHECK(strcmp(prev, a->path) < 0);
		prev = a->path;
		CHECK(web_asset_find(a->path) == a);
		CHECK(a->content_type && *a->content_type);
		if (is_text(a->content_type))
			CHECK(strstr(a->content_type, "charset=utf-8") != NULL);
		/* "\"" + 16 hex + "\"" */
		CHECK_EQ_INT(strlen(a->etag), 18);
		CHECK(a->etag[0] == '"' && a->etag[17] == '"');
		CHECK_EQ_INT(strspn(a->etag + 1, "0123456789abcdef"), 16);
		/* gzip: magic, deflate, mtime 0, and a trailer that matches the data */
		CHECK(a->gzip_len >= 18);
		if (a->gzip_len < 18)
			continue;
		CHECK(a->gzip[0] == 0x1f && a->gzip[1] == 0x8b && a->gzip[2] == 8);
		CHECK_EQ_INT(le32(a->gzip + 4), 0);
		CHECK_EQ_INT(le32(a->gzip + a->gzip_len - 4), (uint32_t)a->len);
		CHECK_EQ_INT(le32(a->gzip + a->gzip_len - 8), crc32_of(a->data, a->len));
	}
	CHECK(n >= 8); /* index, app.js, app.css, icon, four languages */
}

int main(void)
{
	test_lookup();
	test_every_asset();
	return TEST_DONE();
}
