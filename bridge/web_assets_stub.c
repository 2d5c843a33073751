/* web_assets_stub.c - no page embedded (replaced by the generated web_assets.c). */
#include "web_assets.h"

#include <string.h>

static const unsigned char index_html[] =
        "<!doctype html><title>Threshold</title><p>The guest page is not built in.";
static const struct web_asset index_asset = {
        "/index.html", "text/html; charset=utf-8", index_html, sizeof(index_html) - 1, NULL, 0, "\"stub\""};
const struct web_asset *const web_assets[] = {&index_asset, NULL};

const struct web_asset *web_asset_find(const char *path)
{
	if (!strcmp(path, "/") || !strcmp(path, "/index.html"))
		return &index_asset;
	return NULL;
}
