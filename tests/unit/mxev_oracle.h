/*
 * mxev_oracle.h - the differential check behind test_mxevent and
 * fuzz/fuzz_transaction: mxev_parse and jansson read the same bytes and must
 * agree on acceptance and on every member mxev extracts.
 *
 * jansson runs with JSON_ALLOW_NUL (mxevent.h accepts "\u0000" in values on
 * purpose).  Input holding a raw NUL byte is only checked for refusal:
 * jansson 2.14 skips one that directly follows a number or literal.
 */
#ifndef THRESHOLD_MXEV_ORACLE_H
#define THRESHOLD_MXEV_ORACLE_H

#include <stddef.h>

#include "mxevent.h"

/**
 * Scan @p buf with mxev_parse and with jansson and compare.
 * @param status  optional: what mxev_parse returned
 * @param why     on disagreement, a description (NUL-terminated)
 * @return 0 if they agree, -1 if not.
 */
int mxev_oracle_check(const char *buf, size_t len, unsigned max_depth, enum mxev_status *status, char *why,
                      size_t whylen);

#endif
