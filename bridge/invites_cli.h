/*
 * invites_cli.h - `threshold invite create --service NAME [--uses N]
 * [--expires 7d] [--json]`: an admin makes a personal invitation and gets
 * the link once.  Recorded in the audit log (invite_created, actor
 * "cli:<login>"); the token is never stored or logged.  docs/services.md.
 */
#ifndef THRESHOLD_INVITES_CLI_H
#define THRESHOLD_INVITES_CLI_H

struct config;

/**
 * @param argc  arguments after "invite": argv[0] is the command
 * @return 0 ok, 1 could not run (message printed), 2 usage.
 */
int inv_cli_main(const struct config *cfg, int argc, char **argv);

#endif
