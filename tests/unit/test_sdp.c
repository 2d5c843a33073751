/*
 * test_sdp.c - what crosses the gateway in a call's signalling
 * (bridge/sdp.h): only relay candidates, their raddr zeroed, no connection
 * address of the sender's; and TURN credentials (bridge/turn.h) as coturn
 * checks them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sdp.h"
#include "testlib.h"
#include "turn.h"
#include "util.h"

/* An offer as Chromium writes one, with all three kinds of candidate. */
static const char offer[] =
        "v=0\r\n"
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"
        "s=-\r\n"
        "t=0 0\r\n"
        "a=group:BUNDLE 0\r\n"
        "m=audio 50123 UDP/TLS/RTP/SAVPF 111\r\n"
        "c=IN IP4 203.0.113.9\r\n"
        "a=rtcp:9 IN IP4 0.0.0.0\r\n"
        "a=candidate:1 1 udp 2122260223 192.168.1.20 50123 typ host generation 0\r\n"
        "a=candidate:2 1 udp 1686052607 203.0.113.9 50123 typ srflx raddr 192.168.1.20 rport 50123\r\n"
        "a=candidate:3 1 udp 41885439 198.51.100.1 61000 typ relay raddr 203.0.113.9 rport 50123 "
        "generation 0 ufrag abcd\r\n"
        "a=candidate:4 1 tcp 1518280447 192.168.1.20 9 typ host tcptype active\r\n"
        "a=candidate:5 1 udp 2122260223 3f0c1c2e-1111-2222-3333-444455556666.local 50999 typ host\r\n"
        "a=ice-ufrag:abcd\r\n"
        "a=rtpmap:111 opus/48000/2\r\n"
        "a=fmtp:111 minptime=10;useinbandfec=1\r\n";

static void test_sdp_keeps_only_relay(void)
{
	char *out = NULL;
	unsigned dropped = 0;
	CHECK_EQ_INT(sdp_filter(offer, strlen(offer), &out, &dropped), TH_OK);
	CHECK(out != NULL);
	CHECK_EQ_INT(dropped, 4);
	/* nothing of the sender's own addresses is left */
	CHECK(strstr(out, "192.168.1.20") == NULL);
	CHECK(strstr(out, "203.0.113.9") == NULL);
	CHECK(strstr(out, ".local") == NULL);
	CHECK(strstr(out, "typ host") == NULL);
	CHECK(strstr(out, "typ srflx") == NULL);
	CHECK(strstr(out, "127.0.0.1") == NULL);
	/* the relay candidate goes through, cleaned */
	CHECK(strstr(out, "a=candidate:3 1 udp 41885439 198.51.100.1 61000 typ relay raddr 0.0.0.0 rport 0 "
	                  "generation 0 ufrag abcd\r\n") != NULL);
	CHECK(strstr(out, "c=IN IP4 0.0.0.0\r\n") != NULL);
	CHECK(strstr(out, "o=- 4611731400430051336 2 IN IP4 0.0.0.0\r\n") != NULL);
	/* everything else is untouched */
	CHECK(strstr(out, "a=fmtp:111 minptime=10;useinbandfec=1\r\n") != NULL);
	CHECK(strstr(out, "m=audio 50123 UDP/TLS/RTP/SAVPF 111\r\n") != NULL);
	/* a second pass changes nothing (a fixed point) */
	char *again = NULL;
	CHECK_EQ_INT(sdp_filter(out, strlen(out), &again, &dropped), TH_OK);
	CHECK_STR(again, out);
	CHECK_EQ_INT(dropped, 0);
	free(again);
	free(out);
}

static void test_sdp_refuses_junk(void)
{
	char *out = (char *)1;
	CHECK_EQ_INT(sdp_filter("x=0\r\n", 5, &out, NULL), TH_EINVAL);
	CHECK(out == NULL);
	CHECK_EQ_INT(sdp_filter("v=0\r\ns=\x01\r\n", 10, &out, NULL), TH_EINVAL);
	CHECK_EQ_INT(sdp_filter("v=0\r\ns=\xc3\xa9\r\n", 11, &out, NULL), TH_EINVAL);
	char nul[] = "v=0\r\na=x\0y\r\n";
	CHECK_EQ_INT(sdp_filter(nul, sizeof(nul) - 1, &out, NULL), TH_EINVAL);
	char *big = xmalloc(SDP_MAX_BYTES + 2);
	memset(big, 'a', SDP_MAX_BYTES + 1);
	memcpy(big, "v=0\n", 4);
	big[SDP_MAX_BYTES + 1] = '\0';
	CHECK_EQ_INT(sdp_filter(big, SDP_MAX_BYTES + 1, &out, NULL), TH_ETOOLARGE);
	free(big);
	/* LF-only input comes out CRLF; a malformed candidate line is dropped */
	const char *lf = "v=0\na=candidate:1 1 udp 1 1.2.3.4 5 typ\nc=IN IP6 ::1\n";
	unsigned dropped = 0;
	CHECK_EQ_INT(sdp_filter(lf, strlen(lf), &out, &dropped), TH_OK);
	CHECK_STR(out, "v=0\r\nc=IN IP4 0.0.0.0\r\n");
	CHECK_EQ_INT(dropped, 1);
	free(out);
}

static void test_candidate_filter(void)
{
	char *out = NULL;
	const char *relay =
	        "candidate:842163049 1 udp 41885695 198.51.100.1 49152 typ relay raddr 203.0.113.9 "
	        "rport 40000 generation 0 ufrag Xq network-cost 999";
	CHECK_EQ_INT(sdp_candidate_filter(relay, strlen(relay), &out), TH_OK);
	CHECK_STR(out,
	          "candidate:842163049 1 udp 41885695 198.51.100.1 49152 typ relay raddr 0.0.0.0 rport 0 "
	          "generation 0 ufrag Xq network-cost 999");
	free(out);
	const char *withpre = "a=candidate:1 1 udp 5 198.51.100.1 3 typ relay";
	CHECK_EQ_INT(sdp_candidate_filter(withpre, strlen(withpre), &out), TH_OK);
	CHECK_STR(out, withpre);
	free(out);
	const char *host = "candidate:1 1 udp 2122260223 10.0.0.5 5000 typ host generation 0";
	CHECK_EQ_INT(sdp_candidate_filter(host, strlen(host), &out), TH_ENOTFOUND);
	CHECK(out == NULL);
	const char *srflx = "candidate:1 1 udp 1 203.0.113.9 5 typ srflx raddr 10.0.0.5 rport 5000";
	CHECK_EQ_INT(sdp_candidate_filter(srflx, strlen(srflx), &out), TH_ENOTFOUND);
	const char *prflx = "candidate:1 1 udp 1 203.0.113.9 5 typ prflx";
	CHECK_EQ_INT(sdp_candidate_filter(prflx, strlen(prflx), &out), TH_ENOTFOUND);
	/* "relay" anywhere but the type is not a relay candidate */
	const char *fake = "candidate:1 1 udp 1 10.0.0.5 5 typ host relay x";
	CHECK_EQ_INT(sdp_candidate_filter(fake, strlen(fake), &out), TH_ENOTFOUND);
	CHECK_EQ_INT(sdp_candidate_filter("", 0, &out), TH_EINVAL);
	CHECK_EQ_INT(sdp_candidate_filter("candidate:1 1 udp", 17, &out), TH_EINVAL);
	/* an odd extension list, or "typ" in the wrong place, is malformed */
	const char *odd = "candidate:1 1 udp 1 198.51.100.1 5 typ relay raddr";
	CHECK_EQ_INT(sdp_candidate_filter(odd, strlen(odd), &out), TH_EINVAL);
}

static void test_turn_credentials(void)
{
	/* a known answer: secret "north",
	 * username "1633971200:someone"; the expected value from
	 * `printf %s 1633971200:someone | openssl dgst -sha1 -hmac north -binary | base64` */
	char pw[TURN_PASSWORD_MAX];
	CHECK_EQ_INT(turn_password("north", "1633971200:someone", pw), TH_OK);
	CHECK_STR(pw, "Atx6DQoWm8nH+Tv6OSp1BAZoucA=");
	CHECK_EQ_INT(turn_password("", "x", pw), TH_EINVAL);
	struct turn_cred a, b;
	CHECK_EQ_INT(turn_mint("north", 1000, 600, &a), TH_OK);
	CHECK_EQ_INT(turn_mint("north", 1000, 600, &b), TH_OK);
	CHECK(a.expiry_s == 1600);
	CHECK(strncmp(a.username, "1600:", 5) == 0);
	CHECK_EQ_INT((int)strlen(a.username), 5 + TURN_NAME_HEX);
	CHECK(strcmp(a.username, b.username) != 0); /* opaque, fresh each time */
	CHECK(strchr(a.username, '@') == NULL);
	char check[TURN_PASSWORD_MAX];
	CHECK_EQ_INT(turn_password("north", a.username, check), TH_OK);
	CHECK_STR(a.password, check);
}

int main(void)
{
	test_sdp_keeps_only_relay();
	test_sdp_refuses_junk();
	test_candidate_filter();
	test_turn_credentials();
	return test_done("test_sdp");
}
