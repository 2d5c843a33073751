/*
 * hs_admin.c - homeserver admin API calls with a server admin's token read
 * from its own 0600 file (hs_admin.h).  The token is never logged.
 */
#include "hs_admin.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "cs.h"
#include "jsonx.h"
#include "log.h"
#include "util.h"

#define TOKEN_MAX 4096 /* an access token is far shorter */

struct hs_admin {
	cs_client *cs;
};

int hs_admin_token_file_check(const char *path, char *why, size_t whylen)
{
	return th_private_file_check(path, why, whylen);
}

/* Read the token: the file's first line, trimmed.  @p out new string. */
static int token_read(const char *path, char **out)
{
	char why[160];
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		LOG(LOG_ERROR, "homeserver.admin_token_file: %s cannot be opened: %s", path, strerror(errno));
		return TH_ECONFIG;
	}
	struct stat st;
	int rc = TH_ECONFIG;
	char *buf = NULL;
	if (fstat(fd, &st) != 0 || th_private_mode_ok(st.st_mode, why, sizeof(why)) != TH_OK) {
		LOG(LOG_ERROR, "homeserver.admin_token_file: %s %s", path, why);
		goto out;
	}
	buf = xmalloc(TOKEN_MAX + 1);
	size_t len = 0;
	while (len < TOKEN_MAX) {
		ssize_t n = read(fd, buf + len, TOKEN_MAX - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = TH_EIO;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	size_t end = strcspn(buf, "\r\n");
	buf[end] = '\0';
	while (end > 0 && (buf[end - 1] == ' ' || buf[end - 1] == '\t'))
		buf[--end] = '\0';
	size_t start = strspn(buf, " \t");
	if (!buf[start]) {
		LOG(LOG_ERROR, "homeserver.admin_token_file: %s holds no token", path);
		goto out;
	}
	*out = xstrdup(buf + start);
	rc = TH_OK;
out:
	if (buf) {
		explicit_bzero(buf, TOKEN_MAX + 1);
		free(buf);
	}
	close(fd);
	return rc;
}

int hs_admin_open(const struct config *cfg, hs_admin **out)
{
	if (!cfg->hs_admin_token_file)
		return TH_ENOTFOUND;
	char *token = NULL;
	int rc = token_read(cfg->hs_admin_token_file, &token);
	if (rc)
		return rc;
	hs_admin *h = xcalloc(1, sizeof(*h));
	rc = cs_client_new_token(cfg, token, &h->cs);
	explicit_bzero(token, strlen(token));
	free(token);
	if (rc) {
		free(h);
		return rc;
	}
	*out = h;
	return TH_OK;
}

void hs_admin_close(hs_admin *h)
{
	if (!h)
		return;
	cs_client_free(h->cs);
	free(h);
}

/* One request; TH_EHTTP for an answer that is not 2xx. */
static int call(hs_admin *h, const char *method, const char *path, const json_t *body, long *status,
                json_t **resp)
{
	struct cs_response r = {0};
	*status = 0;
	int rc = cs_request(h->cs, method, path, NULL, body, &r);
	if (rc)
		return rc;
	*status = r.status;
	if (r.status / 100 != 2) {
		LOG(LOG_WARN, "hs_admin: %s %s: HTTP %ld %s", method, path, r.status,
		    r.errcode ? r.errcode : "");
		cs_response_clear(&r);
		return TH_EHTTP;
	}
	if (resp)
		*resp = json_incref(r.body);
	cs_response_clear(&r);
	return TH_OK;
}

int hs_admin_whoami(hs_admin *h, char **user_id, int *is_admin, long *status)
{
	json_t *resp = NULL;
	int rc = call(h, "GET", "/_matrix/client/v3/account/whoami", NULL, status, &resp);
	if (rc)
		return rc;
	const char *who = jsonx_str(resp, "user_id");
	if (!who) {
		json_decref(resp);
		return TH_EHTTP;
	}
	char *user = cs_escape(who);
	char *path = xasprintf("/_synapse/admin/v1/users/%s/admin", user);
	json_t *adm = NULL;
	long st = 0;
	/* A caller who is not an admin is refused (403) */
	int arc = call(h, "GET", path, NULL, &st, &adm);
	*is_admin = arc == TH_OK && json_is_true(json_object_get(adm, "admin"));
	json_decref(adm);
	free(path);
	free(user);
	*user_id = xstrdup(who);
	json_decref(resp);
	return TH_OK;
}

int hs_admin_user_media_delete(hs_admin *h, const char *user_id, size_t *deleted, long *status)
{
	char *user = cs_escape(user_id);
	/* The homeserver deletes a page of files per call (newest first); call
	 * again until a call finds none.  Bounded, in case it never says 0. */
	char *path = xasprintf("/_synapse/admin/v1/users/%s/media?limit=100", user);
	size_t total = 0;
	int rc = TH_OK;
	for (int round = 0; round < 1000; round++) {
		json_t *resp = NULL;
		rc = call(h, "DELETE", path, NULL, status, &resp);
		if (rc)
			break;
		json_int_t n = json_integer_value(json_object_get(resp, "total"));
		json_decref(resp);
		if (n <= 0)
			break;
		total += (size_t)n;
	}
	free(path);
	free(user);
	if (!rc && deleted)
		*deleted = total;
	return rc;
}

int hs_admin_room_delete(hs_admin *h, const char *room_id, long *status)
{
	char *room = cs_escape(room_id);
	char *path = xasprintf("/_synapse/admin/v2/rooms/%s", room);
	json_t *body = json_pack("{s:b, s:b}", "purge", 1, "block", 1);
	int rc = call(h, "DELETE", path, body, status, NULL);
	json_decref(body);
	free(path);
	free(room);
	return rc;
}

int hs_admin_room_delete_status(hs_admin *h, const char *room_id, enum hs_admin_purge *out, long *status)
{
	char *room = cs_escape(room_id);
	char *path = xasprintf("/_synapse/admin/v2/rooms/%s/delete_status", room);
	json_t *resp = NULL;
	int rc = call(h, "GET", path, NULL, status, &resp);
	free(path);
	free(room);
	if (rc == TH_EHTTP && *status == 404) { /* no deletion known */
		*out = HS_ADMIN_PURGE_NONE;
		return TH_OK;
	}
	if (rc)
		return rc;
	enum hs_admin_purge st = HS_ADMIN_PURGE_NONE;
	size_t i;
	json_t *r;
	/* Any complete one wins; else any running; else a failed one. */
	json_array_foreach(json_object_get(resp, "results"), i, r)
	{
		const char *s = jsonx_str(r, "status");
		enum hs_admin_purge v = !s                           ? HS_ADMIN_PURGE_NONE
		                        : strcmp(s, "complete") == 0 ? HS_ADMIN_PURGE_COMPLETE
		                        : strcmp(s, "failed") == 0   ? HS_ADMIN_PURGE_FAILED
		                                                     : HS_ADMIN_PURGE_RUNNING;
		if (v == HS_ADMIN_PURGE_COMPLETE ||
		    (v == HS_ADMIN_PURGE_RUNNING && st != HS_ADMIN_PURGE_COMPLETE) ||
		    (v == HS_ADMIN_PURGE_FAILED && st == HS_ADMIN_PURGE_NONE))
			st = v;
	}
	json_decref(resp);
	*out = st;
	return TH_OK;
}
