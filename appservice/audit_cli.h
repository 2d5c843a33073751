/*
 * audit_cli.h - `threshold audit ...`: verify the chain, list and export
 * records, print the signing public key.  Reading or exporting the log is
 * itself recorded in it (audit_viewed, audit_exported).  docs/audit.md shows
 * the commands with examples.
 */
#ifndef THRESHOLD_AUDIT_CLI_H
#define THRESHOLD_AUDIT_CLI_H

struct config;

/* Exit codes of audit_cli_main. */
#define AUDIT_EXIT_OK     0 /* done; for verify: the chain holds */
#define AUDIT_EXIT_BROKEN 1 /* verify: the chain or a signature does not hold */
#define AUDIT_EXIT_USAGE  2 /* bad command line */
#define AUDIT_EXIT_ERROR  3 /* could not run: store, key file or output unusable (message printed) */

/**
 * Run one audit command.
 * @param cfg   borrowed; store_path, audit_key_path and the checkpoint
 *              intervals are used
 * @param argc  arguments after "audit": argv[0] is the command
 *              (verify, list, export, pubkey, help), the rest its options
 * @return an AUDIT_EXIT_* code.  Results go to stdout, messages to stderr.
 */
int audit_cli_main(const struct config *cfg, int argc, char **argv);

#endif
