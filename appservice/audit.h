/*
 * audit.h - the safeguarding audit log: append-only, hash-chained records in
 * LMDB, signed checkpoints, and personal detail sealed under per-subject keys
 * that erasure destroys (crypto-shredding).  docs/audit.md is the guide for
 * safeguarding leads and admins; this comment is the format's definition.
 *
 * RECORDS.  STORE_AUDIT maps the 8-byte big-endian sequence number (1, 2, ...)
 * to one record.  A record is appended inside the caller's LMDB write
 * transaction, the one holding the state change it describes, so the change
 * and its record commit together or not at all.
 *
 * CANONICAL ENCODING.  The body of record n is the JSON object
 *
 *   {"actor":A,"details":D,"kind":K,"reason":R,"room":M,"sealed":S,
 *    "seq":n,"subject":U,"ts":T}
 *
 * with exactly these nine keys: A, R, M, U are strings or null; K is a kind
 * name (below); D is an object (possibly {}); S is null or a sealed string
 * (below); n and T (Unix time in ms) are integers.  It is encoded as
 * jansson's json_dumps(JSON_COMPACT | JSON_SORT_KEYS): no whitespace; object
 * keys at every depth sorted by their UTF-8 bytes; strings as raw UTF-8 with
 * only '"', '\' and U+0000..U+001F escaped (\b \f \n \r \t, else \u00XX with
 * upper-case hex); integers in decimal.  Reals are refused, so the encoding
 * of a given record is a single byte string.  Then
 *
 *   body_hash(n) = SHA-256(body(n))
 *   hash(n)      = SHA-256(hash(n-1) || body_hash(n))     (32 + 32 bytes)
 *   hash(0)      = 32 zero bytes
 *
 * Hashing the body first lets an export stand in for a record it leaves out
 * by its body_hash alone (see EXPORT).  The stored value is the body with two
 * members put in front, lower-case hex:
 *
 *   {"hash":"<hash(n)>","prev":"<hash(n-1)>","actor":...}
 *
 * Verification parses the stored value, removes "hash" and "prev",
 * re-encodes the rest canonically and recomputes; it never trusts a cached
 * or stored hash it has not recomputed.  The stored value must also be
 * byte for byte the encoding above: the same content in other bytes is a
 * rewritten record (an export carries the stored bytes, one a line).  STORE_META "audit_head" holds the
 * chain head: u64 BE seq, hash(seq), u64 BE seq of the last checkpoint,
 * u64 BE its time (56 bytes), updated in the same transaction as each record.
 *
 * CHECKPOINTS.  audit_checkpoint() appends a record of kind "checkpoint"
 * (details {"previous": <seq of the previous checkpoint, 0 if none>}) and
 * signs its position with Ed25519 (libolm).  The signed message is exactly
 * the bytes
 *
 *   "threshold-audit-checkpoint/v1\n" <seq in decimal> "\n" <hash(seq) hex> "\n"
 *
 * and STORE_AUDIT_CKPT maps seq to {"hash":H,"key":K,"seq":n,"sig":G,"ts":T}
 * (K the public key and G the signature, both unpadded base64 as Matrix
 * writes ed25519 keys).  Every checkpoint record must have its signature, so
 * deleting a checkpoint is detected too.  The key is a 32-byte seed in a
 * file created 0600 at first start; a key file readable or writable by group
 * or others is refused, and so is a missing key file when the store already
 * holds checkpoints (a new key would silently replace the old).
 *
 * SEALING.  Personal detail (a flagged excerpt, an external contact handle)
 * goes in audit_rec.sealed, never in details.  It is stored as "sealed":
 * base64(nonce[12] || AES-256-GCM ciphertext || tag[16]), AAD = the subject
 * id, under a random 32-byte key per subject.  The keys are NOT in LMDB:
 * LMDB is copy-on-write, so an overwritten value can survive in a freed
 * page.  They live in a separate file of fixed 32-byte slots (mode 0600;
 * slot i at offset 32 * i); STORE_SEAL_SLOTS maps the subject to
 * u64 BE slot || state (0 live, 1 erased), STORE_META "seal_next_slot" holds
 * the next free slot.  Slots are never reused.
 *   - Creating a key writes its slot and fdatasyncs the file BEFORE the
 *     transaction that references it commits.
 *   - Erasing (audit_erase_subject) marks the slot erased and appends a
 *     data_erased record in the caller's transaction; after the commit,
 *     audit_txn_committed() overwrites the slot with zeros and fdatasyncs.
 *   - audit_open() zeroes every slot that is erased or that nothing live
 *     references (a crash between commit and shred, or an aborted
 *     transaction that had written a new key).
 * The chain still verifies after erasure (it covers the ciphertext); the
 * detail can no longer be read.  Residual risk: an SSD may keep the old
 * slot's bytes in a remapped block (wear levelling), and a backup or
 * snapshot of the key file taken before the erasure still holds the key.
 * Erasure is as good as the deletion of old backups.
 *
 * EXPORT (JSON Lines, "threshold-audit-export/v1").  Line 1 is a header
 * {"exported_ts":T,"filter":{...},"format":"threshold-audit-export/v1",
 *  "head_seq":C,"public_key":K}.  Then one or more SEGMENTS, each a run of
 * consecutive sequence numbers ending with a checkpoint line:
 *   - a record that matches the filter: its stored value, as above;
 *   - a record that does not: a stub
 *     {"body_hash":B,"hash":H,"omitted":true,"prev":P,"seq":n};
 *   - {"checkpoint":{...}} right after the record it signs.
 * A segment starts at a matching record and runs to the first checkpoint at
 * or after it, so every exported record is tied by hashes to a signed head
 * without exporting anyone else's records (a stub shows only that a record
 * existed).  A filtered export therefore carries at most about
 * checkpoint_every stubs per matching record, usually far fewer.
 * audit_verify_file() checks each segment's chain and signature without the
 * store.  An unfiltered export is one run from seq 1 to C.
 *
 * THREADS.  An audit handle may be shared by the threads of one process.
 * The chain's correctness never depends on state in the handle: every
 * append reads the head from the caller's transaction, so an aborted
 * transaction leaves nothing behind and the CLI (another process) can append
 * while the daemon runs.  The handle caches the head only as a hint for
 * audit_checkpoint_due(); each append refreshes it.
 */
#ifndef THRESHOLD_AUDIT_H
#define THRESHOLD_AUDIT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "store.h"

struct config;
typedef struct audit audit;

/* What happened.  The names (audit_kind_name) are stable: they are in the
 * hashed records.  Append new kinds at the end. */
enum audit_kind {
	AUDIT_GUEST_CREATED = 0,   /* "guest_created" */
	AUDIT_CONSENT_RECORDED,    /* "consent_recorded" */
	AUDIT_CONSENT_WITHDRAWN,   /* "consent_withdrawn" */
	AUDIT_CONTACT_BLOCKED,     /* "contact_blocked": a policy refused contact (e.g. an invite) */
	AUDIT_MEMBERSHIP_ENFORCED, /* "membership_enforced": a policy removed or kept someone out */
	AUDIT_STATE_REVERTED,      /* "state_reverted" */
	AUDIT_MESSAGE_FLAGGED,     /* "message_flagged" */
	AUDIT_REPORT_RECEIVED,     /* "report_received" */
	AUDIT_IDENTITY_REVEALED,   /* "identity_revealed" */
	AUDIT_DATA_ERASED,         /* "data_erased" (audit_erase_subject) */
	AUDIT_AUDIT_VIEWED,        /* "audit_viewed" (list, verify) */
	AUDIT_AUDIT_EXPORTED,      /* "audit_exported" */
	AUDIT_CONFIG_LOADED,       /* "config_loaded" */
	AUDIT_STARTUP,             /* "startup" */
	AUDIT_SHUTDOWN,            /* "shutdown" */
	AUDIT_CHECKPOINT,          /* "checkpoint" (audit_checkpoint only) */
	AUDIT_INVITE_CREATED,      /* "invite_created": staff or an admin made an invitation */
	AUDIT_CONVERSATION_OPENED, /* "conversation_opened": a guest started a conversation */
	AUDIT_CONVERSATION_CLOSED, /* "conversation_closed": staff closed it, or the guest left */
	AUDIT_CONVERSATION_HANDED, /* "conversation_handed_over": staff handed it to a colleague */
	AUDIT_ENCRYPTION_ENABLED,  /* "encryption_enabled": a managed room was encrypted (cannot be undone) */
	AUDIT_ENFORCEMENT_FAILED, /* "enforcement_failed": the homeserver refused a kick or revert for good */
	AUDIT_ADDED_ACROSS,       /* "guest_added_across_services": a lead added another service's guest */
	AUDIT_SUBJECT_ACCESS,     /* "subject_access_exported": everything held about a guest was exported */
	AUDIT_HOLD_PLACED,   /* "hold_placed": a lead kept a guest's or room's conversation past retention */
	AUDIT_HOLD_RELEASED, /* "hold_released": that hold was lifted */
	AUDIT_RETENTION_REMOVED, /* "retention_removed": a conversation past its retention was removed */

	/* Concerns and cases (cases.h): */
	AUDIT_CONCERN_RAISED, /* "concern_raised": a concern opened or joined a case (cases.h); text sealed */
	AUDIT_CASE_VIEWED,    /* "case_viewed": someone read a case (list, show, export) */
	AUDIT_CASE_CHANGED,   /* "case_changed": taken, noted (sealed), closed, reminded */
	AUDIT_ESCALATED,      /* "conversation_escalated": a guest waited past escalate_after */
	AUDIT_ERASURE_STEP_FAILED, /* "erasure_step_failed": a step of a guest's erasure failed (erasure.h) */
	AUDIT_ERASURE_DONE,        /* "erasure_done": a guest's erasure finished, fully or not (erasure.h) */
	AUDIT_ERASURE_HELD,  /* "erasure_held": a guest asked for erasure; something holds it (conv.c) */
	AUDIT_CALL_OFFERED,  /* "call_offered": the guest or staff rang the other (never media) */
	AUDIT_CALL_ANSWERED, /* "call_answered" */
	AUDIT_CALL_DECLINED, /* "call_declined": the one rung said no */
	AUDIT_CALL_ENDED,    /* "call_ended": hung up, with how long it lasted */
	AUDIT_NKINDS
};

/* Hard caps: a record over them is refused with TH_ETOOLARGE. */
#define AUDIT_MAX_ID        255           /* actor, subject, room (Matrix ids are <= 255) */
#define AUDIT_MAX_REASON    64            /* reason code */
#define AUDIT_MAX_SEALED    4096          /* bytes of plaintext to seal */
#define AUDIT_MAX_SEAL_DATA (1024 * 1024) /* bytes audit_seal() takes */
#define AUDIT_MAX_RECORD    65536 /* bytes of a stored record (details included); an export line's cap */

#define AUDIT_HASH_LEN   32
#define AUDIT_PUBKEY_LEN 43          /* Ed25519 public key, unpadded base64 */
#define AUDIT_SEAL_FILE  "seal-keys" /* the seal key file, in the store directory */

/** @return the stable name of @p kind, or NULL if out of range. */
const char *audit_kind_name(enum audit_kind kind);

/** @return TH_OK with the kind named @p name, or TH_EINVAL. */
int audit_kind_parse(const char *name, enum audit_kind *out);

/** One record to append.  Every pointer is borrowed for the call. */
struct audit_rec {
	enum audit_kind kind;
	uint64_t ts_ms;        /* when it happened; 0: now */
	const char *actor;     /* who acted (a Matrix id, "cli:<user>"); NULL: none */
	const char *subject;   /* whom it concerns: a pseudonymous id, never a name; NULL: none */
	const char *room;      /* room id; NULL: none */
	const char *reason;    /* a reason code such as policy's; NULL: none */
	const json_t *details; /* an object of pseudonymous facts, integers only (no reals); NULL: {} */
	const char *sealed; /* personal detail, sealed under the subject's key; needs subject; NULL: none */
};

struct audit_opts {
	const char *key_path;        /* signing seed file; created 0600 if missing */
	const char *seal_path;       /* seal key file; created 0600 if missing */
	unsigned checkpoint_every;   /* records between checkpoints (>= 1) */
	unsigned checkpoint_seconds; /* seconds between checkpoints (>= 1) */
};

/**
 * Open the audit log of @p st: load (or at first start create) the signing
 * key, open the seal key file, and zero the slots of erased or unreferenced
 * keys (in a write transaction, so no other writer is between writing a key
 * and committing it).  Refusals are logged with the path and what to do.
 * @param st   borrowed; must outlive the handle
 * @param o    borrowed for the call (paths are copied)
 * @param out  new handle on success; free with audit_close()
 * @return TH_OK, TH_ECONFIG (a key file group/world accessible, not a
 *         regular file, the wrong size, or missing while checkpoints exist),
 *         TH_EIO, TH_ESTORE (a damaged chain head, or records past it: the
 *         store was altered and nothing could be chained on), TH_EFULL or
 *         TH_ECRYPTO.  Records missing at the end are logged, not refused.
 */
int audit_open(store *st, const struct audit_opts *o, audit **out);

/** audit_open() with the paths and intervals of @p cfg (seal file in store_path). */
int audit_open_config(store *st, const struct config *cfg, audit **out);

/** Wipe the key material and free.  NULL is a no-op. */
void audit_close(audit *a);

/** The signing public key, unpadded base64 (borrowed, valid until audit_close). */
const char *audit_pubkey(const audit *a);

/**
 * The public key of the seed in @p key_path, without creating anything.
 * @param out  AUDIT_PUBKEY_LEN + 1 bytes
 * @return TH_OK, TH_ENOTFOUND (no such file), TH_ECONFIG (mode, size, type;
 *         logged), TH_EIO or TH_ECRYPTO.
 */
int audit_key_pubkey(const char *key_path, char out[AUDIT_PUBKEY_LEN + 1]);

/**
 * Append @p rec in the caller's write transaction @p t.  The head is read
 * from @p t, so if @p t aborts nothing is left behind, and the next append
 * chains onto what was committed.  Sealing for a subject that has no key yet
 * creates one (one fdatasync of the key file).
 * @param seq_out  optional: the record's sequence number
 * @return TH_OK, TH_EINVAL (bad kind or AUDIT_CHECKPOINT, which only
 *         audit_checkpoint() writes; reals in details, details not an
 *         object, sealed without subject, empty subject, invalid UTF-8),
 *         TH_ETOOLARGE,
 *         TH_ENOTFOUND (sealing for an erased subject: append it without
 *         .sealed), TH_EIO (key file), TH_ECRYPTO, TH_EFULL or TH_ESTORE.
 *         After an error the transaction should be aborted.
 */
int audit_append(audit *a, store_txn *t, const struct audit_rec *rec, uint64_t *seq_out);

/**
 * @return 1 if records were appended since the last checkpoint and either
 *         checkpoint_every of them or checkpoint_seconds have passed; else 0.
 *         A hint from the handle's cache (refreshed by every append): after
 *         an aborted transaction it may be wrong until the next append.
 */
int audit_checkpoint_due(audit *a, uint64_t now_ms);

/**
 * Append a checkpoint record and sign the head, in write transaction @p t.
 * Call when audit_checkpoint_due() says so and at clean shutdown (after the
 * shutdown record).  Does nothing if no record was appended since the last
 * checkpoint.
 * @return TH_OK, TH_ECRYPTO, TH_EFULL or TH_ESTORE.
 */
int audit_checkpoint(audit *a, store_txn *t, uint64_t now_ms);

/**
 * Erase @p subject's sealed detail: mark its key erased and append a
 * data_erased record (actor, reason as given) in @p t.  The key's slot is
 * overwritten once the caller has committed and called audit_txn_committed();
 * until then (and for ever, if @p t aborts) the committed state still rules.
 * Erasing a subject with no key, or twice, records the request again.
 * @return as audit_append().
 */
int audit_erase_subject(audit *a, store_txn *t, const char *subject, const char *actor, const char *reason);

/**
 * Call after committing a transaction that called audit_erase_subject():
 * zeroes (and fdatasyncs) the slots that the committed store marks erased.
 * Harmless at any other time, including after an abort: it checks the
 * committed state first and never zeroes a live key.  A crash before this
 * runs is repaired by the next audit_open().
 */
void audit_txn_committed(audit *a);

/**
 * Seal @p text under @p subject's key (made, and its slot synced, if the
 * subject has none), as audit_rec.sealed is sealed, for keeping outside the
 * log: a guest's feed entries and queued messages (bridge/feed.h,
 * matrix_outbox.c), so that once audit_erase_subject() destroys the key, no
 * copy of them -- in a freed LMDB page or a backup -- can be read.
 * Open with audit_unseal().
 * @param out  new string (base64) on TH_OK
 * @return TH_OK, TH_EINVAL, TH_ETOOLARGE (over AUDIT_MAX_SEAL_DATA bytes),
 *         TH_ENOTFOUND (the subject was erased), TH_EIO, TH_ECRYPTO,
 *         TH_ESTORE.  Needs a write transaction when the subject has no key.
 */
int audit_seal(audit *a, store_txn *t, const char *subject, const char *text, char **out);

/**
 * audit_seal() for bytes (a guest's picture or file waiting to be
 * uploaded): @p out a new buffer of @p outlen bytes (nonce, ciphertext,
 * tag; not base64).  Open with audit_unseal_bytes().
 * @return as audit_seal().
 */
int audit_seal_bytes(audit *a, store_txn *t, const char *subject, const void *data, size_t len,
                     unsigned char **out, size_t *outlen);

/**
 * Open what audit_seal_bytes() made.
 * @param out  new buffer of @p outlen bytes on TH_OK
 * @return as audit_unseal().
 */
int audit_unseal_bytes(audit *a, store_txn *t, const char *subject, const void *sealed, size_t len,
                       unsigned char **out, size_t *outlen);

/**
 * Open a sealed string of @p subject.
 * @param out  new NUL-terminated string (caller frees) on success
 * @return TH_OK, TH_ENOTFOUND (the subject's key was erased or never
 *         existed: the detail is gone), TH_EINVAL (not a sealed string),
 *         TH_ECRYPTO (does not decrypt: altered, or another subject's), TH_EIO
 *         or TH_ESTORE.
 */
int audit_unseal(audit *a, store_txn *t, const char *subject, const char *sealed, char **out);

/**
 * The committed chain head as seen by @p t (read or write).
 * @return TH_OK (seq 0 and a zero hash when the log is empty) or TH_ESTORE
 *         (the head value is damaged).
 */
int audit_head(store_txn *t, uint64_t *seq, unsigned char hash[AUDIT_HASH_LEN]);

/**
 * The sequence number of the newest checkpoint as seen by @p t: the
 * furthest point an export can reach (audit_export's head_seq).
 * @return TH_OK (0 when there is none yet) or TH_ESTORE.
 */
int audit_last_checkpoint(store_txn *t, uint64_t *seq);

/**
 * The canonical body of @p rec at @p seq (rec->ts_ms used as given) and its
 * chained hash after @p prev.  Pure: for tests and for re-implementers.
 * @param sealed_b64  the already sealed string for "sealed", or NULL
 *                    (rec->sealed is ignored)
 * @param body        optional: new string (caller frees), its length in @p blen
 * @return TH_OK, TH_EINVAL, TH_ETOOLARGE or TH_ECRYPTO.
 */
int audit_encode(const struct audit_rec *rec, uint64_t seq, const char *sealed_b64,
                 const unsigned char prev[AUDIT_HASH_LEN], char **body, size_t *blen,
                 unsigned char hash[AUDIT_HASH_LEN]);

/* ---- reading --------------------------------------------------------- */

/** Which records to read.  Zero / NULL / -1 fields do not filter. */
struct audit_filter {
	uint64_t since_ms;   /* ts >= since_ms */
	uint64_t until_ms;   /* ts < until_ms; 0: no bound */
	int kind;            /* an enum audit_kind, or -1 for any */
	const char *subject; /* exact match */
	const char *room;    /* exact match */
	const char *actor;   /* exact match */
	uint64_t max_seq;    /* seq <= max_seq; 0: no bound */
	uint64_t min_seq;    /* seq >= min_seq; 0: no bound (audit_iter starts its walk there) */
};

/**
 * Fill the indexes audit_iter answers from (by kind, room, actor and time)
 * from every record in the log: once, when a store made before they existed
 * is upgraded (migrate.c); audit_append keeps them after that.
 * @return TH_OK or a store error.
 */
int audit_index_build(store_txn *t);

/**
 * Upgrade to schema 4: mark every record of the log as in STORE_AUDIT_INDEX
 * (since schema 4 the newest records are kept out of it, up to 64, and put
 * there in one batch; audit_iter reads them from the log).
 * @return TH_OK or a store error.
 */
int audit_index_migrate_v4(store_txn *t);

/** A filter that matches everything (kind -1, the rest zero). */
void audit_filter_init(struct audit_filter *f);

/**
 * Called for each matching record: @p rec is the parsed stored value
 * (borrowed; "hash" and "prev" included), @p raw its bytes.  Return 0 to go
 * on, 1 to stop, or a negative TH_ code to abort with that error.
 */
typedef int (*audit_iter_fn)(void *ctx, uint64_t seq, const json_t *rec, const char *raw, size_t rawlen);

/**
 * Call @p fn for each record matching @p f, in sequence order (by the
 * audit_by_subject index when f->subject is given).
 * @return TH_OK, TH_ESTORE (including an undecodable record), or @p fn's error.
 */
int audit_iter(store_txn *t, const struct audit_filter *f, audit_iter_fn fn, void *ctx);

/**
 * Write a self-verifying export (see EXPORT above) of the records matching
 * @p f up to the checkpoint at @p head_seq (the CLI signs a fresh one first).
 * @param pubkey     the signing public key, for the header
 * @param nrecords   optional: matching records written
 * @return TH_OK, TH_ENOTFOUND (no checkpoint at @p head_seq), TH_EIO (write
 *         failed), TH_ESTORE.
 */
int audit_export(store_txn *t, const struct audit_filter *f, const char *pubkey, uint64_t head_seq, FILE *out,
                 size_t *nrecords);

/** What audit_verify found.  Always written. */
struct audit_verify_result {
	uint64_t bad_seq;         /* first bad sequence number; 0 if all holds (or not about a record) */
	char what[256];           /* what is wrong there; "" if all holds */
	uint64_t first_seq;       /* first record checked; 0 if none */
	uint64_t last_seq;        /* last record checked */
	uint64_t records;         /* records checked (stubs included, for a file) */
	uint64_t checkpoints;     /* checkpoint signatures verified */
	uint64_t last_checkpoint; /* seq of the newest verified checkpoint; 0 if none */
	char last_checkpoint_hash[2 * AUDIT_HASH_LEN + 1]; /* its hash, hex; "" if none */
	char pubkey[AUDIT_PUBKEY_LEN + 1];                 /* the key checkpoints were checked against */
};

/**
 * Verify the chain in @p st from @p from_seq (0 or 1: from the start; later:
 * the record before @p from_seq is trusted as the link) and every checkpoint
 * at or after it against @p pubkey.  Detects an edited record, a missing one,
 * reordered ones, a truncated tail (the head in meta, the last checkpoint or
 * a checkpoint record beyond the last record), a missing checkpoint, and a
 * checkpoint signed by another key.  Reads in one read transaction;
 * independent of any audit handle.
 * @param pubkey  unpadded base64 Ed25519 key (audit_key_pubkey, or one kept elsewhere)
 * @return TH_OK, TH_EVERIFY (first problem in @p res), TH_EINVAL (bad key) or TH_ESTORE.
 */
int audit_verify(store *st, const char *pubkey, uint64_t from_seq, struct audit_verify_result *res);

/**
 * Verify an export file without the store: each segment's chain, and each
 * checkpoint's signature; every record must be followed by a checkpoint.
 * @param pubkey  the expected key; NULL: trust the header's (then compare
 *                res->pubkey with a copy of the key kept elsewhere)
 * @return TH_OK, TH_EVERIFY (res says where), TH_ETOOLARGE (a line over
 *         AUDIT_MAX_RECORD), TH_EIO (cannot read) or TH_EINVAL (bad key).
 */
int audit_verify_file(const char *path, const char *pubkey, struct audit_verify_result *res);

/**
 * audit_verify() from the start, then check that the store still holds the
 * chain that export @p file (one kept off this machine) signed: the record
 * at the file's newest checkpoint must be there with the same hash.  This
 * catches what audit_verify() alone cannot: a log cut back to an earlier
 * checkpoint, or rewritten, by someone with write access to the store (and
 * perhaps the signing key) after the export was taken.
 * @return as audit_verify(); a file that does not verify is TH_EVERIFY too,
 *         with bad_seq 0.
 */
int audit_verify_against(store *st, const char *pubkey, const char *file, struct audit_verify_result *res);

#endif
