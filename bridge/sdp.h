/*
 * sdp.h - keep every address but the TURN relay's out of a call's
 * signalling.  A WebRTC offer or answer (SDP, RFC 8866) and the ICE
 * candidates sent beside it (RFC 8839) carry the sender's own addresses:
 * host candidates (its LAN address), server-reflexive ones (its public
 * address), and in a relay candidate the "raddr" of the allocation (its
 * public address again).  Threshold passes only relay candidates, with
 * raddr/rport zeroed, and blanks the SDP's connection addresses, in both
 * directions, so neither the guest nor staff learns where the other is.
 *
 * Pure: no I/O; the output is newly allocated (xmalloc: aborts on OOM).
 * Input is untrusted (network): bounded by SDP_MAX_BYTES, and any byte
 * that is not printable ASCII, TAB, CR or LF is refused.
 */
#ifndef THRESHOLD_SDP_H
#define THRESHOLD_SDP_H

#include <stddef.h>

#define SDP_MAX_BYTES     65536 /* an offer with audio and video is ~6 KB */
#define SDP_MAX_CANDIDATE 1024  /* one candidate line */

/**
 * Judge one ICE candidate (its attribute value: "candidate:1 1 udp 2 192.0.2.1
 * 3478 typ relay raddr 198.51.100.7 rport 5000 ...", with or without "a=").
 * @param out  on TH_OK: a new string, the candidate as the other side may
 *             see it (raddr 0.0.0.0, rport 0; the "a=" kept if given);
 *             NULL on any other return
 * @return TH_OK (a relay candidate, cleaned); TH_ENOTFOUND (a well-formed
 *         candidate that is not relay: drop it); TH_EINVAL (malformed: drop
 *         it too); TH_ETOOLARGE (over SDP_MAX_CANDIDATE).
 */
int sdp_candidate_filter(const char *cand, size_t len, char **out);

/**
 * The SDP @p sdp (@p len bytes) as the other side may see it: every
 * a=candidate line that is not a relay candidate is dropped, relay ones are
 * cleaned (sdp_candidate_filter), the address of each c= line becomes
 * 0.0.0.0 (IN IP4, as trickle ICE allows, RFC 8840), that of the o= line
 * 0.0.0.0, and a=rtcp: lines say port 9, 0.0.0.0.  Lines end in CRLF.
 * @param out      on TH_OK: the new SDP; NULL otherwise
 * @param dropped  optional: how many candidate lines were dropped
 * @return TH_OK; TH_EINVAL (a byte that is not printable ASCII, TAB, CR or
 *         LF; or no "v=" first line); TH_ETOOLARGE (over SDP_MAX_BYTES).
 */
int sdp_filter(const char *sdp, size_t len, char **out, unsigned *dropped);

#endif
