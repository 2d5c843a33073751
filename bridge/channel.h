/*
 * channel.h - a channel: the way a guest's words come in and staff's words
 * go out (the web page, SMS, WhatsApp).  A conversation does not
 * depend on its channel: the same room, pseudonym, notice, audit and
 * erasure, whichever way the words arrive.  Staff's words reach a guest by
 * being appended to the guest's feed (feed.h) in the commit that learned of
 * them; each channel then carries what is new in the feed to its outside
 * address: the web page reads it with a long poll, the SMS and WhatsApp channels send
 * it as texts.  Everything a channel does passes policy first
 * (policy/policy.h for the web page, policy/chanrules.h for SMS and WhatsApp).
 *
 * An interface like matrix.h: a table of function pointers plus a context,
 * each method's contract above it.
 */
#ifndef THRESHOLD_CHANNEL_H
#define THRESHOLD_CHANNEL_H

#include <stddef.h>

/* What a channel can carry to the guest. */
#define CHAN_CAP_TEXT  0x1u /* words */
#define CHAN_CAP_FILES 0x2u /* pictures and files */
#define CHAN_CAP_CALLS 0x4u /* audio and video calls */

#define CHAN_MAX 4

struct chan_ops {
	/* The channel's name as the conversation record keeps it ("web", "sms"). */
	const char *name;
	/* How staff are told the guest came ("by SMS"); never the address. */
	const char *by;
	/* CHAN_CAP_* */
	unsigned caps;
	/**
	 * Guests' feeds grew in a commit that just ended (staff wrote, the
	 * service spoke, a conversation ended): carry what is new to the
	 * outside addresses.  Must not block (it wakes the channel's own
	 * worker, which reads the feeds itself: nothing is lost if the channel
	 * is down, the feed keeps it).  Any thread.
	 */
	void (*feed_grew)(void *ctx);
};

/** One channel: borrowed, outliving every call. */
struct channel {
	const struct chan_ops *ops;
	void *ctx;
};

/** The channels a daemon runs. */
struct channels {
	struct channel v[CHAN_MAX];
	size_t n;
};

/** Add @p c (ops NULL: nothing) to @p set; at most CHAN_MAX. */
static inline void chan_add(struct channels *set, struct channel c)
{
	if (c.ops && set->n < CHAN_MAX)
		set->v[set->n++] = c;
}

/** Tell every channel of @p set that feeds grew. */
static inline void chan_feed_grew_all(const struct channels *set)
{
	for (size_t i = 0; set && i < set->n; i++)
		set->v[i].ops->feed_grew(set->v[i].ctx);
}

#endif
