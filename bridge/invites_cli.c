/*
 * invites_cli.c - `threshold invite create`.
 */
#include "invites_cli.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "audit.h"
#include "config.h"
#include "invites.h"
#include "qr.h"
#include "store.h"
#include "util.h"

static void usage(FILE *out)
{
	fprintf(out,
	        "Usage: threshold invite create --service NAME [--uses N] [--expires DURATION] [--json]\n"
	        "\n"
	        "Make a personal invitation to a service and print its link once. Give the link only\n"
	        "to the person it is for, in a way that is safe for them.\n"
	        "  --service NAME   a service from the configuration's services section\n"
	        "  --uses N         how many conversations it can start (1..10000; default: the\n"
	        "                   service's invite_uses)\n"
	        "  --expires D      lifetime like 90m, 12h or 7d (a bare number is hours; at most a\n"
	        "                   year; default: the service's invite_expiry_hours)\n"
	        "  --json           print {\"link\",\"service\",\"uses\",\"expires_ms\"}\n"
	        "\n"
	        "Exit status: 0 ok, 1 could not run, 2 usage.\n");
}

int inv_cli_main(const struct config *cfg, int argc, char **argv)
{
	if (argc < 1 || !strcmp(argv[0], "help") || !strcmp(argv[0], "--help")) {
		usage(argc < 1 ? stderr : stdout);
		return argc < 1 ? 2 : 0;
	}
	if (strcmp(argv[0], "create") != 0) {
		fprintf(stderr, "threshold invite: unknown command '%s'\n", argv[0]);
		usage(stderr);
		return 2;
	}
	const char *service = NULL, *qr_path = NULL;
	int as_json = 0, have_uses = 0, have_life = 0;
	uint64_t uses = 0, life = 0;
	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(argv[i], "--json")) {
			as_json = 1;
		} else if (!strcmp(argv[i], "--qr") && v) {
			qr_path = v;
			i++;
		} else if (!strcmp(argv[i], "--service") && v) {
			service = v;
			i++;
		} else if (!strcmp(argv[i], "--uses") && v) {
			if (th_parse_u64(v, 10000, &uses) != TH_OK || uses < 1) {
				fprintf(stderr, "threshold invite: --uses must be 1..10000\n");
				return 2;
			}
			have_uses = 1;
			i++;
		} else if (!strcmp(argv[i], "--expires") && v) {
			if (inv_parse_duration(v, &life) != TH_OK) {
				fprintf(stderr,
				        "threshold invite: --expires takes a duration like 90m, 12h or 7d "
				        "(at most a year)\n");
				return 2;
			}
			have_life = 1;
			i++;
		} else {
			fprintf(stderr, "threshold invite: unexpected '%s'\n", argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (!service) {
		fprintf(stderr, "threshold invite: --service NAME is required\n");
		return 2;
	}
	const struct config_service *svc = config_service_find(cfg, service);
	if (!svc) {
		fprintf(stderr, "threshold invite: no service '%s' in %s (services:", service, cfg->path);
		for (size_t i = 0; i < cfg->nservices; i++)
			fprintf(stderr, " %s", cfg->services[i].name);
		fprintf(stderr, "%s)\n", cfg->nservices ? "" : " none configured");
		return 1;
	}
	if (!have_uses)
		uses = svc->invite_uses;
	if (!have_life)
		life = (uint64_t)svc->invite_expiry_hours * 3600000ull;

	store *st = NULL;
	audit *au = NULL;
	store_txn *t = NULL;
	char *actor = th_cli_actor();
	char token[SEC_TOKEN_LEN + 1];
	int code = 1, rc;
	if ((rc = store_open(cfg->store_path, cfg->map_size_mb, &st)) != TH_OK ||
	    (rc = audit_open_config(st, cfg, &au)) != TH_OK || (rc = store_txn_begin(st, 1, &t)) != TH_OK) {
		fprintf(stderr, "threshold invite: cannot open the store %s: %s\n", cfg->store_path,
		        th_strerror(rc));
		goto out;
	}
	uint64_t expires = th_now_ms() + life;
	rc = inv_create(t, au, svc, NULL, (unsigned)uses, expires, actor, token);
	if (rc == TH_OK) {
		rc = store_txn_commit(t);
		t = NULL;
	}
	if (rc) {
		fprintf(stderr, "threshold invite: could not make the invitation: %s\n", th_strerror(rc));
		goto out;
	}
	char *link = inv_link(cfg, token);
	if (qr_path) {
		unsigned char *png = NULL;
		size_t plen = 0;
		rc = qr_png(link, &png, &plen);
		if (!rc)
			rc = th_write_file_atomic(qr_path, png, plen, 0600);
		free(png);
		if (rc)
			fprintf(stderr, "threshold invite: the QR code could not be written to %s: %s\n",
			        qr_path, th_strerror(rc));
		else
			fprintf(stderr, "QR code of the link written to %s\n", qr_path);
	}
	if (as_json) {
		json_t *j = json_pack("{s:s, s:s, s:I, s:I}", "link", link, "service", svc->name, "uses",
		                      (json_int_t)uses, "expires_ms", (json_int_t)expires);
		char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
		printf("%s\n", s);
		free(s);
		json_decref(j);
	} else {
		printf("%s\n", link);
		fprintf(stderr,
		        "Invitation to %s: %llu %s, valid for %llu hours. The link is shown only now.\n",
		        svc->display_name, (unsigned long long)uses, uses == 1 ? "use" : "uses",
		        (unsigned long long)(life / 3600000ull));
	}
	explicit_bzero(link, strlen(link));
	free(link);
	code = 0;
out:
	explicit_bzero(token, sizeof(token));
	store_txn_abort(t);
	audit_close(au);
	store_close(st);
	free(actor);
	return code;
}
