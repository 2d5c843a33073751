/*
 * subject_access.h - `threshold guest export WHO [--out FILE]`: everything
 * Threshold holds about one guest, as a readable text file, for a subject
 * access request (docs/privacy.md, docs/safeguarding-guide.md).
 *
 * The file holds, in this order: the guest's record (id, pseudonym, when
 * made, state); their conversation record (service, state, dates, language;
 * never session or resume hashes, which are secrets, not data about them);
 * their conversation as their page showed it (the feed: every entry, their
 * own words and staff's replies by the names the page gave); their consents
 * (consent_recorded / consent_withdrawn); and every audit record whose
 * subject they are, with sealed detail DECRYPTED and marked for review.
 *
 * Sealed items are included because a subject access request covers
 * personal data about the person, and staff notes and concerns about them
 * usually are; but they may hold what an exemption lets the organisation
 * withhold (a third person's details, what would likely cause serious
 * harm).  Each is marked "REVIEW BEFORE DISCLOSURE", and the file's head
 * says the lead must review and redact before sending it.
 *
 * The export is recorded in the audit log (subject_access_exported: actor
 * the person running the command, subject the guest, details counts only)
 * in its own transaction BEFORE the file is written, so an export that
 * cannot be recorded is not made.  The file is created mode 0600.
 */
#ifndef THRESHOLD_SUBJECT_ACCESS_H
#define THRESHOLD_SUBJECT_ACCESS_H

struct config;

/**
 * Run `threshold guest export`.
 * @param argc  arguments after "guest": argv[0] is "export"
 * @return a GUESTS_EXIT_* code (guests_cli.h); messages on stderr.
 */
int subject_access_main(const struct config *cfg, int argc, char **argv);

#endif
