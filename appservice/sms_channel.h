/*
 * sms_channel.h - the SMS channel (bridge/channel.h): people text the
 * service's number; Kannel's sms-service (driver "kannel") or a
 * Twilio-compatible webhook (driver "twilio") brings each text to this
 * listener (sms.listen_address:listen_port), which answers the steps before
 * agreeing (language menu, notice, confirmations) in its reply, so no
 * number is kept to send them; after agreeing, staff's words are carried
 * from the guest's feed by a worker thread through Kannel's sendsms or the
 * REST API, so a gateway that is down never blocks anything (the feed keeps
 * what is not sent yet).  Every step is decided by policy/chanrules.h.
 * docs/channels.md says how to set it up; docs/privacy.md what is kept.
 */
#ifndef THRESHOLD_SMS_CHANNEL_H
#define THRESHOLD_SMS_CHANNEL_H

#include "chan_flow.h"
#include "env.h"

typedef struct sms_channel sms_channel;

/** Called after the channel committed actions for the outbox, or grew a feed (any thread). */
typedef chf_on_queue_fn smsch_on_queue_fn;

/**
 * Read (or create, 0600) the lookup key file, bind the listener, start the
 * sender.
 * @param env  borrowed; must outlive the channel
 * @return TH_OK, TH_EIO (cannot bind, key file unusable: logged).
 */
int smsch_start(const struct txn_env *env, smsch_on_queue_fn on_queue, void *ctx, sms_channel **out);

/** The port bound (listen_port 0 in tests). */
unsigned smsch_port(sms_channel *s);

/** This channel, as bridge/channel.h sees it (ops NULL when @p s is NULL). */
struct channel smsch_channel(sms_channel *s);

/** Stop the listener and the sender, and free.  NULL is a no-op. */
void smsch_stop(sms_channel *s);

#endif
