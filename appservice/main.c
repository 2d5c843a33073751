/*
 * main.c - the threshold command: argument parsing and dispatch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit_cli.h"
#include "cases.h"
#include "config.h"
#include "daemon.h"
#include "doctor.h"
#include "guests_cli.h"
#include "invites_cli.h"
#include "log.h"
#include "retention.h"
#include "util.h"

#define DEFAULT_CONFIG "/etc/threshold/config.yaml"

static void usage(FILE *f)
{
	fprintf(f, "Usage: threshold [-c FILE] [COMMAND] [OPTIONS]\n"
	           "\n"
	           "Threshold: a Matrix application service that lets an organisation's staff\n"
	           "talk safely with people outside it.\n"
	           "\n"
	           "Commands:\n"
	           "  serve                      run the application service (the default)\n"
	           "  generate-registration [-o FILE] [--force]\n"
	           "                             write the registration file for the homeserver,\n"
	           "                             with fresh random tokens (default: the file named\n"
	           "                             by appservice.registration)\n"
	           "  check-config               check the configuration, and the registration\n"
	           "                             once it exists; exit 0 if both are valid\n"
	           "  status [--json]            show what the store holds (safe while serving)\n"
	           "  doctor [--json] [--synapse-config FILE]\n"
	           "                             check the set-up from outside: homeserver, token,\n"
	           "                             ping, rooms, hardening, gateway, files, space;\n"
	           "                             exit 0 all good, 1 needs attention, 2 cannot run\n"
	           "  invite create --service NAME [--uses N] [--expires 7d] [--json]\n"
	           "                             a personal invitation link for a guest\n"
	           "                             (docs/services.md)\n"
	           "  guest create|list|show|export [OPTIONS]\n"
	           "                             create and look up pseudonymous guests; export\n"
	           "                             one guest's data for a subject access request\n"
	           "                             (threshold guest help; docs/guests.md)\n"
	           "  hold add|remove|list [WHO --reason TEXT]\n"
	           "                             keep a guest's conversation past its retention\n"
	           "  retention report [--json]  what is kept, when it goes, and why\n"
	           "  case list [all]|show ID|take ID|note ID TEXT|close ID OUTCOME\n"
	           "                             work safeguarding cases, on the record\n"
	           "                             (docs/safeguarding-guide.md)\n"
	           "  audit verify|list|export|pubkey [OPTIONS]\n"
	           "                             review, export and verify the safeguarding audit\n"
	           "                             log (threshold audit help; docs/audit.md)\n"
	           "\n"
	           "Options:\n"
	           "  -c, --config FILE          configuration file (default " DEFAULT_CONFIG ",\n"
	           "                             or $THRESHOLD_CONFIG)\n"
	           "  -h, --help                 show this help\n"
	           "  -V, --version              show the version\n"
	           "\n"
	           "Documentation: docs/configuration.md, docs/architecture.md, docs/audit.md\n");
}

static int cmd_generate_registration(struct config *cfg, int argc, char **argv)
{
	const char *out = cfg->registration;
	int force = 0;
	for (int i = 0; i < argc; i++) {
		if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc) {
			out = argv[++i];
		} else if (!strcmp(argv[i], "--force")) {
			force = 1;
		} else {
			fprintf(stderr, "threshold: generate-registration: unknown option '%s'\n", argv[i]);
			return 2;
		}
	}
	int rc = config_write_registration(cfg, out, force);
	if (rc == TH_EEXIST) {
		fprintf(stderr,
		        "threshold: %s already exists; not overwriting it (its tokens are in use).\n"
		        "Use --force to replace it, then restart the homeserver.\n",
		        out);
		return 1;
	}
	if (rc) {
		perror(out);
		return 1;
	}
	printf("Wrote %s (mode 0600).\n"
	       "Add it to the homeserver's app_service_config_files and restart the homeserver.\n",
	       out);
	if (strcmp(out, cfg->registration) != 0)
		printf("Note: appservice.registration in %s names %s; Threshold reads its tokens from "
		       "there.\n",
		       cfg->path, cfg->registration);
	return 0;
}

/* Load the config (config_load has printed the error naming the key and
 * line if it failed) and, once it exists, the registration it names: the
 * checks `serve` makes before it opens anything. */
static int cmd_check_config(struct config *cfg, int argc)
{
	char err[512];
	if (argc > 0) {
		fprintf(stderr, "threshold: check-config takes no arguments\n");
		return 2;
	}
	if (access(cfg->registration, F_OK) == 0) {
		if (config_load_registration(cfg, err, sizeof(err)) != TH_OK)
			return 1;
		printf("%s: config OK (registration %s OK)\n", cfg->path, cfg->registration);
	} else {
		printf("%s: config OK (registration %s not written yet)\n", cfg->path, cfg->registration);
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *config_path = getenv("THRESHOLD_CONFIG");
	if (!config_path || !*config_path)
		config_path = DEFAULT_CONFIG;
	int i = 1;
	for (; i < argc; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		}
		if (!strcmp(argv[i], "-V") || !strcmp(argv[i], "--version")) {
			printf("threshold %s\n", THRESHOLD_VERSION);
			return 0;
		}
		if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) {
			if (i + 1 >= argc) {
				fprintf(stderr, "threshold: %s needs a file name\n", argv[i]);
				return 2;
			}
			config_path = argv[++i];
			continue;
		}
		if (argv[i][0] == '-') {
			fprintf(stderr, "threshold: unknown option '%s' (try --help)\n", argv[i]);
			return 2;
		}
		break;
	}
	const char *cmd = i < argc ? argv[i++] : "serve";
	int sub_argc = argc - i;
	char **sub_argv = argv + i;
	if (strcmp(cmd, "serve") && strcmp(cmd, "generate-registration") && strcmp(cmd, "status") &&
	    strcmp(cmd, "audit") && strcmp(cmd, "guest") && strcmp(cmd, "invite") && strcmp(cmd, "case") &&
	    strcmp(cmd, "check-config") && strcmp(cmd, "doctor") && strcmp(cmd, "hold") &&
	    strcmp(cmd, "retention")) {
		fprintf(stderr, "threshold: unknown command '%s' (try --help)\n", cmd);
		return 2;
	}

	struct config cfg;
	char err[512];
	if (config_load(config_path, &cfg, err, sizeof(err)) != TH_OK)
		return strcmp(cmd, "doctor") ? 1 : 2;
	log_set_level_name(cfg.log_level);

	int code;
	if (!strcmp(cmd, "guest")) {
		code = guests_cli_main(&cfg, sub_argc, sub_argv);
	} else if (!strcmp(cmd, "case")) {
		code = cases_cli_main(&cfg, sub_argc, sub_argv);
	} else if (!strcmp(cmd, "invite")) {
		code = inv_cli_main(&cfg, sub_argc, sub_argv);
	} else if (!strcmp(cmd, "audit")) {
		code = audit_cli_main(&cfg, sub_argc, sub_argv);
	} else if (!strcmp(cmd, "hold")) {
		code = retention_hold_cli_main(&cfg, sub_argc, sub_argv);
	} else if (!strcmp(cmd, "retention")) {
		code = retention_cli_main(&cfg, sub_argc, sub_argv);
	} else if (!strcmp(cmd, "doctor")) {
		code = doctor_main(&cfg, sub_argc, sub_argv);
	} else if (!strcmp(cmd, "check-config")) {
		code = cmd_check_config(&cfg, sub_argc);
	} else if (!strcmp(cmd, "generate-registration")) {
		code = cmd_generate_registration(&cfg, sub_argc, sub_argv);
	} else if (!strcmp(cmd, "status")) {
		int as_json = sub_argc == 1 && !strcmp(sub_argv[0], "--json");
		if (sub_argc > 1 || (sub_argc == 1 && !as_json)) {
			fprintf(stderr, "threshold: status takes only --json\n");
			code = 2;
		} else {
			code = daemon_status(&cfg, as_json);
		}
	} else {
		if (sub_argc > 0) {
			fprintf(stderr, "threshold: serve takes no arguments\n");
			code = 2;
		} else if (config_load_registration(&cfg, err, sizeof(err)) != TH_OK) {
			code = 1;
		} else {
			code = daemon_serve(&cfg);
		}
	}
	config_free(&cfg);
	return code;
}
