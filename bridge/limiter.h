/*
 * limiter.h - rate limits that protect the many from the one.
 *
 * A table of token buckets keyed by a keyed hash (SipHash-2-4, a random key
 * per start), so nobody outside can choose two keys that share a place.
 * Each bucket is kept as GCRA's "theoretical arrival time" (tat): a key may
 * take one when tat - now <= (burst - 1) * interval, and taking moves tat on
 * by one interval.  A bucket whose tat has passed is full again, which is
 * exactly what an unknown key is: forgetting it gives nothing away.
 *
 * The table is sets of LIM_WAYS entries; a key lives in one set.  A new key
 * takes a free entry of its set, or one whose bucket is full again.  No entry
 * of a key still being counted is ever taken by another: when every entry
 * of the set is counting, the new key is refused until the first of them is
 * full again (fail closed, for at most burst * interval).  The key being
 * random per start, filling one set on purpose needs about LIM_WAYS * nsets
 * keys counting at once (docs/reliability.md).
 */
#ifndef THRESHOLD_LIMITER_H
#define THRESHOLD_LIMITER_H

#include <stddef.h>
#include <stdint.h>

#define LIM_WAYS 8

typedef struct limiter limiter;

/**
 * A new table of @p nsets sets (at least 1; a power of two is not needed).
 * @param key  16 bytes of the hash key, copied: random per start (the
 *             caller reads them; tests pass a fixed one)
 * @return the table; aborts on out-of-memory.
 */
limiter *lim_new(size_t nsets, const unsigned char *key);

/** Free @p l; NULL is a no-op. */
void lim_free(limiter *l);

/**
 * Take one from @p key's bucket: at most @p burst at once, one more every
 * @p interval_ms.  Thread-safe.
 * @param key       borrowed bytes (an address, a service name, ...)
 * @param now_ms    a clock that does not go back
 * @return 0 when allowed (and counted), else how many ms until it would be.
 */
uint64_t lim_take(limiter *l, const void *key, size_t klen, unsigned burst, uint64_t interval_ms,
                  uint64_t now_ms);

/** SipHash-2-4 of @p in under the 16-byte key @p k. */
uint64_t lim_siphash24(const unsigned char k[16], const void *in, size_t n);

#endif
