/*
 * cases_cli.c - `threshold case list|show|take|note|close`: the leads'
 * "!case" commands on the command line, as "cli:<user>", on the record
 * (cases.h).
 */
#include "cases.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "config.h"
#include "store.h"
#include "util.h"

static void usage(FILE *out)
{
	fprintf(out, "Usage: threshold case COMMAND\n"
	             "\n"
	             "Commands (each is written to the audit log, as cli:<your login>):\n"
	             "  list [all]             the cases not closed (all: closed ones too)\n"
	             "  show ID                one case: its concerns, notes and outcome, unsealed\n"
	             "  take ID                hold the case yourself\n"
	             "  note ID TEXT           add a note (sealed under the guest's key)\n"
	             "  close ID OUTCOME       close the case with its outcome (sealed)\n"
	             "\n"
	             "Exit status: 0 ok, 1 not found or could not run, 2 usage.\n");
}

int cases_cli_main(const struct config *cfg, int argc, char **argv)
{
	if (argc < 1 || !strcmp(argv[0], "help") || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
		usage(argc < 1 ? stderr : stdout);
		return argc < 1 ? 2 : 0;
	}
	const char *verb = argv[0];
	if (strcmp(verb, "list") && strcmp(verb, "show") && strcmp(verb, "take") && strcmp(verb, "note") &&
	    strcmp(verb, "close")) {
		fprintf(stderr, "threshold: case: unknown command '%s' (try `threshold case help`)\n", verb);
		return 2;
	}
	if (strcmp(verb, "list") && argc < 2) {
		fprintf(stderr, "threshold: case %s: needs a case id\n", verb);
		return 2;
	}
	if ((!strcmp(verb, "note") || !strcmp(verb, "close")) && argc < 3) {
		fprintf(stderr, "threshold: case %s: needs the case id and the %s\n", verb,
		        !strcmp(verb, "note") ? "text" : "outcome");
		return 2;
	}
	char *args = xstrdup("");
	for (int i = 0; i < argc; i++) {
		char *more = xasprintf("%s%s%s", args, i ? " " : "", argv[i]);
		free(args);
		args = more;
	}
	store *st = NULL;
	audit *au = NULL;
	store_txn *t = NULL;
	char *actor = th_cli_actor();
	char *reply = NULL;
	int code = 1;
	if (store_open(cfg->store_path, cfg->map_size_mb, &st) != TH_OK) {
		fprintf(stderr, "threshold: case: cannot open the store %s (see above)\n", cfg->store_path);
		goto out;
	}
	int rc = audit_open_config(st, cfg, &au);
	if (rc) {
		fprintf(stderr, "threshold: case: cannot open the audit log: %s\n", th_strerror(rc));
		goto out;
	}
	struct txn_env env = {.cfg = cfg, .st = st, .au = au, .mx = NULL};
	rc = store_txn_begin(st, 1, &t);
	if (!rc)
		rc = cases_run(&env, t, actor, args, &reply, NULL);
	if (rc)
		store_txn_abort(t);
	else
		rc = store_txn_commit(t);
	if (rc) {
		fprintf(stderr, "threshold: case %s: %s\n", verb, th_strerror(rc));
		goto out;
	}
	printf("%s\n", reply ? reply : "");
	code = reply && (!strncmp(reply, "There is no case", 16) || !strncmp(reply, "Usage", 5)) ? 1 : 0;
out:
	if (reply)
		explicit_bzero(reply, strlen(reply));
	free(reply);
	free(args);
	free(actor);
	audit_close(au);
	if (st)
		store_close(st);
	return code;
}
