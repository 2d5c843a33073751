/*
 * util.h - project-wide error codes, allocation wrappers that abort on
 * out-of-memory, bounded string helpers, randomness and constant-time compare.
 */
#ifndef THRESHOLD_UTIL_H
#define THRESHOLD_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* One error enum for the whole daemon; th_strerror() names each. */
enum th_err {
	TH_OK = 0,
	TH_ENOMEM,    /* never returned: allocation failure aborts */
	TH_EINVAL,    /* bad argument or malformed input */
	TH_ETOOLARGE, /* input over a hard cap */
	TH_ENOTFOUND, /* no such key / route / user */
	TH_EEXIST,    /* already present */
	TH_EIO,       /* file or socket failure */
	TH_ESTORE,    /* LMDB failure other than a full map */
	TH_EFULL,     /* LMDB map full: the store needs a larger map_size */
	TH_ECONFIG,   /* configuration error (message already printed) */
	TH_ENET,      /* network failure talking to the homeserver */
	TH_ETIMEOUT,  /* request timed out */
	TH_EHTTP,     /* homeserver answered with an error status */
	TH_ECRYPTO,   /* cryptographic failure */
	TH_EVERIFY,   /* an integrity check failed: the data was altered (audit log) */
	TH_ECANCELED, /* stopped on the caller's request (shutting down) */
};

/** @return a static, human-readable name for @p err. */
const char *th_strerror(int err);

/* Allocation: these never return NULL; on exhaustion they print and abort. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* At most @p n bytes of @p s, stopping at its NUL (like strndup), NUL-terminated. */
char *xstrndup(const char *s, size_t n);
/** printf into a new heap string (caller frees). */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/**
 * Fill @p buf with @p n bytes from the kernel's CSPRNG (getrandom).
 * @return TH_OK or TH_EIO.
 */
int th_random(void *buf, size_t n);

/**
 * Write @p n random bytes as lowercase hex into @p out, which must hold
 * 2 * n + 1 bytes.  @return TH_OK or TH_EIO.
 */
int th_random_hex(char *out, size_t n);

/** Lowercase-hex encode @p n bytes into @p out (2 * n + 1 bytes). */
void th_hex(char *out, const void *in, size_t n);

/**
 * Compare two byte strings in time that depends only on their lengths,
 * never on where they first differ.  @return 1 if equal, 0 otherwise.
 */
int th_consttime_eq(const void *a, size_t alen, const void *b, size_t blen);

/** Milliseconds since the Unix epoch (wall clock). */
uint64_t th_now_ms(void);
/** Monotonic milliseconds, for timeouts and backoff. */
uint64_t th_mono_ms(void);
/** The same monotonic clock in microseconds (th_mono_ms() is it over 1000). */
uint64_t th_mono_us(void);

/**
 * Parse a base-10 unsigned integer occupying all of @p s.
 * @return TH_OK, or TH_EINVAL on junk, sign, or overflow past @p max.
 */
int th_parse_u64(const char *s, uint64_t max, uint64_t *out);

/** "cli:<login name>" (or "cli:uid<N>"): who ran a command, as audit records name them (new string). */
char *th_cli_actor(void);

/** Write the whole buffer to @p path via a temporary file and rename, mode @p mode. */
int th_write_file_atomic(const char *path, const void *buf, size_t len, unsigned mode);

/** 64-bit FNV-1a (not for security: identifies content, e.g. a transaction's event ids). */
#define TH_FNV1A64_INIT 0xcbf29ce484222325ull
/** Continue hash @p h over @p len more bytes. */
uint64_t th_fnv1a64_update(uint64_t h, const void *buf, size_t len);
/** th_fnv1a64_update(TH_FNV1A64_INIT, buf, len). */
uint64_t th_fnv1a64(const void *buf, size_t len);

/**
 * Whether @p mode (st_mode) is that of a private regular file: regular,
 * nothing for group or others (a secret's file: mode 0600 or 0400).
 * @param why  on failure, a sentence for the operator naming the fix
 * @return TH_OK or TH_ECONFIG.
 */
int th_private_mode_ok(unsigned mode, char *why, size_t whylen);

/**
 * th_private_mode_ok() for the file at @p path (not followed if a link),
 * without reading it.
 * @return TH_OK, TH_ENOTFOUND (no such file) or TH_ECONFIG.
 */
int th_private_file_check(const char *path, char *why, size_t whylen);

#endif
