/*
 * limiter.c - keyed token buckets in a set-associative table (limiter.h).
 */
#include "limiter.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct lim_entry {
	uint64_t key; /* 0: free */
	uint64_t tat; /* the bucket is full again from this time (ms) */
};

struct limiter {
	pthread_mutex_t mu;
	unsigned char k[16];
	size_t nsets;
	struct lim_entry *e; /* nsets * LIM_WAYS */
};

/* ---- SipHash-2-4 (Aumasson and Bernstein, reference implementation's order) ---- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                   \
	do {                       \
		v0 += v1;          \
		v1 = ROTL(v1, 13); \
		v1 ^= v0;          \
		v0 = ROTL(v0, 32); \
		v2 += v3;          \
		v3 = ROTL(v3, 16); \
		v3 ^= v2;          \
		v0 += v3;          \
		v3 = ROTL(v3, 21); \
		v3 ^= v0;          \
		v2 += v1;          \
		v1 = ROTL(v1, 17); \
		v1 ^= v2;          \
		v2 = ROTL(v2, 32); \
	} while (0)

static uint64_t le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

uint64_t lim_siphash24(const unsigned char k[16], const void *in, size_t n)
{
	const unsigned char *m = in;
	uint64_t k0 = le64(k), k1 = le64(k + 8);
	uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
	uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
	size_t full = n - n % 8;
	for (size_t i = 0; i < full; i += 8) {
		uint64_t mi = le64(m + i);
		v3 ^= mi;
		SIPROUND;
		SIPROUND;
		v0 ^= mi;
	}
	uint64_t b = (uint64_t)n << 56;
	for (size_t i = 0; i < n % 8; i++)
		b |= (uint64_t)m[full + i] << (8 * i);
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- the table ------------------------------------------------------------ */

limiter *lim_new(size_t nsets, const unsigned char *key)
{
	limiter *l = calloc(1, sizeof(*l));
	if (nsets == 0)
		nsets = 1;
	struct lim_entry *e = l ? calloc(nsets * LIM_WAYS, sizeof(*e)) : NULL;
	if (!e)
		abort(); /* out of memory, as xmalloc */
	l->e = e;
	l->nsets = nsets;
	memcpy(l->k, key, sizeof(l->k));
	pthread_mutex_init(&l->mu, NULL);
	return l;
}

void lim_free(limiter *l)
{
	if (!l)
		return;
	pthread_mutex_destroy(&l->mu);
	explicit_bzero(l->k, sizeof(l->k));
	free(l->e);
	free(l);
}

uint64_t lim_take(limiter *l, const void *key, size_t klen, unsigned burst, uint64_t interval_ms,
                  uint64_t now_ms)
{
	if (burst == 0)
		burst = 1;
	uint64_t h = lim_siphash24(l->k, key, klen);
	if (h == 0)
		h = 1; /* 0 marks a free entry */
	/* The set from the high bits, so the key in an entry and its set are not
	 * the same bits of the hash. */
	struct lim_entry *set = l->e + (size_t)((h >> 32) % l->nsets) * LIM_WAYS;
	uint64_t span = (uint64_t)(burst - 1) * interval_ms; /* how far ahead tat may run */
	uint64_t wait = 0;
	pthread_mutex_lock(&l->mu);
	struct lim_entry *mine = NULL, *spare = NULL;
	uint64_t soonest = UINT64_MAX;
	for (int i = 0; i < LIM_WAYS; i++) {
		struct lim_entry *e = &set[i];
		if (e->key == h) {
			mine = e;
			break;
		}
		if (e->key == 0 || e->tat <= now_ms) { /* free, or full again: nothing to forget */
			if (!spare)
				spare = e;
		} else if (e->tat - now_ms < soonest) {
			soonest = e->tat - now_ms;
		}
	}
	if (!mine && !spare) {
		/* Every entry here is a key still being counted: refuse the new
		 * key until the first of them is full again, rather than give
		 * any of them its budget back. */
		wait = soonest ? soonest : 1;
		goto out;
	}
	if (!mine) {
		mine = spare;
		mine->key = h;
		mine->tat = now_ms;
	}
	uint64_t tat = mine->tat > now_ms ? mine->tat : now_ms;
	if (tat - now_ms > span) {
		wait = tat - now_ms - span;
		goto out;
	}
	mine->tat = tat + interval_ms;
out:
	pthread_mutex_unlock(&l->mu);
	return wait;
}
