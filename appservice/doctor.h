/*
 * doctor.h - `threshold doctor`: checks a running set-up from outside and
 * says, in plain sentences with a fix for each, what needs attention.
 *
 * Safe while the daemon serves: the store is opened for reading only (LMDB
 * lets a reader run beside the daemon's writer), and the homeserver is asked
 * only questions that change nothing (the AS ping, versions, whoami,
 * joined_rooms, profile look-ups).
 */
#ifndef THRESHOLD_DOCTOR_H
#define THRESHOLD_DOCTOR_H

struct config;

/**
 * Run every check and print the findings (text, or one JSON object).
 * @param cfg   loaded config (borrowed); its registration is loaded here
 * @param argc, argv  the options after "doctor": --json, --synapse-config PATH
 * @return 0 all good, 1 something needs attention, 2 the checks could not run
 *         (a bad option).
 */
int doctor_main(struct config *cfg, int argc, char **argv);

#endif
