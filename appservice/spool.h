/*
 * spool.h - guests' files waiting to be uploaded to the homeserver, one file
 * each in the spool directory (`<store.path>/spool`), not in the LMDB map:
 * an upload of some MiB held in the map took a share of it that homeserver
 * transactions and the audit log need, for as long as the homeserver was
 * slow.
 *
 * The life of a file: spool_write() writes it and fsyncs it (and the
 * directory) BEFORE the commit that queues the outbox action naming it, so
 * a committed action never names a file that is not whole on disk.  It is
 * removed after the commit that removes the action (sent, dropped or set
 * aside), when its guest is erased, or, at the daemon's start, when no
 * queued action names it (a crash between the write and the commit, or
 * between the commit and the unlink).  Names are 32 random hex digits and
 * nothing else is ever opened there: a name from the store that is not such
 * a name is refused, so the store cannot point the spool outside its
 * directory.
 */
#ifndef THRESHOLD_SPOOL_H
#define THRESHOLD_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define SPOOL_NAME_LEN 32 /* hex digits of a spooled file's name */

/** Whether @p name is a spooled file's name (SPOOL_NAME_LEN lowercase hex digits). */
int spool_name_ok(const char *name);

/**
 * The spool directory of @p cfg's store (new string), or NULL when the
 * config names no store (a unit test's zeroed config).
 */
char *spool_dir(const struct config *cfg);

/**
 * Write @p len bytes of @p data into new file @p name (spool_name_ok) of the
 * spool, creating the directory (0700) when needed: opened
 * O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, mode 0600, written whole, fsynced,
 * and the directory fsynced.  On failure nothing is left behind.
 * @return TH_OK, TH_EINVAL (a bad name or no spool), TH_EEXIST, TH_EFULL
 *         (the file system is full: ENOSPC, EDQUOT) or TH_EIO.
 */
int spool_write(const struct config *cfg, const char *name, const void *data, size_t len);

/**
 * Read spooled file @p name whole, checking it is @p expect bytes long
 * (and, when @p fnv is not NULL, that th_fnv1a64 of it is @p fnv in 16 hex
 * digits).
 * @param out  new buffer (caller frees), written only on TH_OK
 * @return TH_OK, TH_ENOTFOUND (no such file), TH_EVERIFY (not the length or
 *         hash written: damaged), TH_EINVAL (a bad name) or TH_EIO.
 */
int spool_read(const struct config *cfg, const char *name, uint64_t expect, const char *fnv,
               unsigned char **out, size_t *outlen);

/** th_fnv1a64 of @p len bytes of @p data as 16 lowercase hex digits, in @p out (17 bytes). */
void spool_hash(const void *data, size_t len, char out[17]);

/**
 * Remove spooled file @p name.  An absent file is not an error.
 * @return TH_OK, TH_EINVAL (a bad name) or TH_EIO.
 */
int spool_remove(const struct config *cfg, const char *name);

/**
 * Bytes the spool's files take (their sizes summed), in @p out; 0 when
 * there is no spool yet.  @return TH_OK or TH_EIO.
 */
int spool_bytes(const struct config *cfg, uint64_t *out);

/**
 * Remove every spooled file for which @p keep returns 0; @p keep is given
 * each file's name.  For the daemon's start, before anything is spooled.
 * Files whose names are not spool names are left alone and counted in
 * @p strange.
 * @param removed  files removed (may be NULL)
 * @return TH_OK or TH_EIO.
 */
int spool_sweep(const struct config *cfg, int (*keep)(void *ctx, const char *name), void *ctx,
                size_t *removed, size_t *strange);

#endif
