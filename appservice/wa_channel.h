/*
 * wa_channel.h - the WhatsApp channel (bridge/channel.h), through Meta's
 * Cloud API: people write to the service's WhatsApp number; Meta posts
 * each message to this listener (whatsapp.listen_address:listen_port,
 * path /whatsapp), signed with X-Hub-Signature-256, which is checked over
 * the raw body before anything is read.  The webhook is always answered
 * 200 with nothing in it; every answer (language menu, notice,
 * confirmations) and staff's words go out through the Graph API.  Staff's
 * words wait in the feed while the person's 24-hour customer-service
 * window is shut; one content-free template invites the person back, and
 * when they write again what waited goes out.  The steps are chan_flow.h's,
 * decided by policy/chanrules.h.  docs/channels.md says how to set it up;
 * docs/privacy.md what is kept.
 */
#ifndef THRESHOLD_WA_CHANNEL_H
#define THRESHOLD_WA_CHANNEL_H

#include "chan_flow.h"
#include "env.h"

typedef struct wa_channel wa_channel;

/**
 * Read the three secret files (0600), the lookup key file, bind the
 * listener, start the sender.
 * @param env  borrowed; must outlive the channel
 * @return TH_OK, TH_EIO (cannot bind, a file unusable: logged).
 */
int wach_start(const struct txn_env *env, chf_on_queue_fn on_queue, void *ctx, wa_channel **out);

/** The port bound (listen_port 0 in tests). */
unsigned wach_port(wa_channel *w);

/** This channel, as bridge/channel.h sees it (ops NULL when @p w is NULL). */
struct channel wach_channel(wa_channel *w);

/**
 * The first line of the 0600 file at @p path, trimmed: one of the
 * whatsapp.*_file secrets (@p key names it in the log).
 * @param out  new string on TH_OK (wipe it before freeing)
 * @return TH_OK, TH_EIO (cannot be read, readable by others, empty: logged).
 */
int wach_secret_read(const char *key, const char *path, char **out);

/** Stop the listener and the sender, and free.  NULL is a no-op. */
void wach_stop(wa_channel *w);

#endif
