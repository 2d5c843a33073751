/*
 * guests_cli.h - `threshold guest create|list|show`: make a guest by hand
 * and look guests up.  Creating one is recorded in the audit log
 * (guest_created); reading guests is not, since ids and pseudonyms are
 * pseudonymous.  docs/guests.md shows the commands.
 */
#ifndef THRESHOLD_GUESTS_CLI_H
#define THRESHOLD_GUESTS_CLI_H

struct config;

/* Exit codes of guests_cli_main. */
#define GUESTS_EXIT_OK    0 /* done */
#define GUESTS_EXIT_FAIL  1 /* no such guest, or could not run (message printed) */
#define GUESTS_EXIT_USAGE 2 /* bad command line */

/**
 * Run one guest command.
 * @param cfg   borrowed; store_path, map_size_mb, guest_prefix, server_name
 *              and (for create) the audit settings are used
 * @param argc  arguments after "guest": argv[0] is the command (create,
 *              list, show, help), the rest its options
 * @return a GUESTS_EXIT_* code.  Results go to stdout, messages to stderr.
 */
int guests_cli_main(const struct config *cfg, int argc, char **argv);

#endif
