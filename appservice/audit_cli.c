/*
 * audit_cli.c - `threshold audit verify|list|export|pubkey`: argument
 * parsing, the table/CSV/JSON Lines printers, and recording each read of the
 * log in the log before showing it.
 */
#include "audit_cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "audit_witness.h"
#include "cases.h"
#include "config.h"
#include "cs.h"
#include "log.h"
#include "store.h"
#include "util.h"

/* Which options a command takes. */
#define ACCEPT_FILTER  0x01
#define ACCEPT_FORMAT  0x02
#define ACCEPT_OUTPUT  0x04
#define ACCEPT_FILE    0x08
#define ACCEPT_FROM    0x10
#define ACCEPT_PUBKEY  0x20
#define ACCEPT_SEALED  0x40
#define ACCEPT_AGAINST 0x80

struct cli_opts {
	struct audit_filter f;
	const char *format;
	const char *output;
	const char *file;
	const char *against;
	const char *pubkey;
	uint64_t from;
	int show_sealed;
	uint64_t case_id; /* export --case ID: the records about that case's guest since it opened */
};

static void usage(FILE *out)
{
	fprintf(out,
	        "Usage: threshold audit COMMAND [OPTIONS]\n"
	        "\n"
	        "Commands:\n"
	        "  verify [--from SEQ] [--pubkey KEY] [--no-witness]\n"
	        "                         check the chain and every checkpoint signature in the store,\n"
	        "                         then the store against the checkpoints witnessed on the\n"
	        "                         homeserver (--no-witness: skip that, when it is unreachable)\n"
	        "  verify --against FILE [--pubkey KEY]\n"
	        "                         also check that the store still holds the chain that FILE,\n"
	        "                         an export kept off this machine, signed\n"
	        "  verify --file FILE [--pubkey KEY]\n"
	        "                         check an export file, without the store\n"
	        "  list [FILTERS] [--format table|jsonl|csv] [--show-sealed]\n"
	        "                         show records (recorded in the log as audit_viewed)\n"
	        "  export [FILTERS] [--format jsonl|csv] [-o FILE]\n"
	        "                         write records to FILE or stdout (recorded as audit_exported);\n"
	        "                         a jsonl export can be checked with verify --file\n"
	        "  pubkey                 print the checkpoint signing public key\n"
	        "\n"
	        "Filters:\n"
	        "  --since WHEN, --until WHEN\n"
	        "                         WHEN is a UTC date or time (2024-05-01, 2024-05-01T14:30:00Z)\n"
	        "                         or an age (90m, 24h, 7d, 2w); since is inclusive, until is not\n"
	        "  --kind KIND            e.g. contact_blocked, data_erased (see docs/audit.md)\n"
	        "  --subject ID, --room ID, --actor ID\n"
	        "  --case ID              (export) the records about one case's guest since it opened\n"
	        "\n"
	        "Exit status: 0 ok, 1 verification failed, 2 usage, 3 could not run.\n");
}

/* ---- arguments --------------------------------------------------------- */

static int fixed_digits(const char **p, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		char c = (*p)[i];
		if (c < '0' || c > '9')
			return -1;
		v = v * 10 + (c - '0');
	}
	*p += n;
	*out = v;
	return 0;
}

/* "7d"-style ages before @p now, or an ISO 8601 date or date-time in UTC. */
static int parse_when(const char *s, uint64_t now, uint64_t *out)
{
	size_t n = strlen(s);
	if (n >= 2 && strchr("smhdw", s[n - 1]) && s[0] >= '0' && s[0] <= '9') {
		char *num = xstrndup(s, n - 1);
		uint64_t v;
		int rc = th_parse_u64(num, 100000000, &v);
		free(num);
		if (rc)
			return -1;
		static const char units[] = "smhdw";
		static const uint64_t ms[] = {1000, 60000, 3600000, 86400000, 604800000};
		uint64_t age = v * ms[strchr(units, s[n - 1]) - units];
		*out = age < now ? now - age : 1;
		return 0;
	}
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	const char *p = s;
	int y, mo, d, h = 0, mi = 0, sec = 0;
	if (fixed_digits(&p, 4, &y) || *p++ != '-' || fixed_digits(&p, 2, &mo) || *p++ != '-' ||
	    fixed_digits(&p, 2, &d))
		return -1;
	if (*p == 'T' || *p == ' ') {
		p++;
		if (fixed_digits(&p, 2, &h) || *p++ != ':' || fixed_digits(&p, 2, &mi))
			return -1;
		if (*p == ':' && (p++, fixed_digits(&p, 2, &sec)))
			return -1;
	}
	if (*p == 'Z')
		p++;
	if (*p || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	time_t t = timegm(&tm);
	if (t < 0)
		return -1;
	*out = (uint64_t)t * 1000;
	return 0;
}

static int parse_args(const char *cmd, unsigned accept, int argc, char **argv, struct cli_opts *o)
{
	memset(o, 0, sizeof(*o));
	audit_filter_init(&o->f);
	uint64_t now = th_now_ms();
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		unsigned need = 0;
		if (!strcmp(a, "--since") || !strcmp(a, "--until") || !strcmp(a, "--kind") ||
		    !strcmp(a, "--subject") || !strcmp(a, "--room") || !strcmp(a, "--actor"))
			need = ACCEPT_FILTER;
		else if (!strcmp(a, "--format"))
			need = ACCEPT_FORMAT;
		else if (!strcmp(a, "-o") || !strcmp(a, "--output"))
			need = ACCEPT_OUTPUT;
		else if (!strcmp(a, "--file"))
			need = ACCEPT_FILE;
		else if (!strcmp(a, "--against"))
			need = ACCEPT_AGAINST;
		else if (!strcmp(a, "--from"))
			need = ACCEPT_FROM;
		else if (!strcmp(a, "--pubkey"))
			need = ACCEPT_PUBKEY;
		else if (!strcmp(a, "--case") && !strcmp(cmd, "export"))
			need = ACCEPT_FILTER;
		else if (!strcmp(a, "--show-sealed"))
			need = ACCEPT_SEALED;
		if (!(need & accept)) {
			fprintf(stderr,
			        "threshold: audit %s: unknown option '%s' (try `threshold audit help`)\n",
			        cmd, a);
			return -1;
		}
		if (need == ACCEPT_SEALED) {
			o->show_sealed = 1;
			continue;
		}
		if (!v) {
			fprintf(stderr, "threshold: audit %s: %s needs a value\n", cmd, a);
			return -1;
		}
		i++;
		int bad = 0;
		enum audit_kind kind;
		if (!strcmp(a, "--since"))
			bad = parse_when(v, now, &o->f.since_ms);
		else if (!strcmp(a, "--until"))
			bad = parse_when(v, now, &o->f.until_ms);
		else if (!strcmp(a, "--kind") && !(bad = audit_kind_parse(v, &kind) ? -1 : 0))
			o->f.kind = (int)kind;
		else if (!strcmp(a, "--subject"))
			o->f.subject = v;
		else if (!strcmp(a, "--room"))
			o->f.room = v;
		else if (!strcmp(a, "--actor"))
			o->f.actor = v;
		else if (!strcmp(a, "--format"))
			o->format = v;
		else if (need == ACCEPT_OUTPUT)
			o->output = v;
		else if (!strcmp(a, "--file"))
			o->file = v;
		else if (!strcmp(a, "--against"))
			o->against = v;
		else if (!strcmp(a, "--from"))
			bad = th_parse_u64(v, INT64_MAX, &o->from) ? -1 : 0;
		else if (!strcmp(a, "--pubkey"))
			o->pubkey = v;
		else if (!strcmp(a, "--case"))
			bad = th_parse_u64(v, INT64_MAX, &o->case_id) ? -1 : 0;
		if (bad) {
			fprintf(stderr, "threshold: audit %s: %s: '%s' is not %s\n", cmd, a, v,
			        !strcmp(a, "--kind") ? "a kind of record (see docs/audit.md)"
			        : !strcmp(a, "--from") || !strcmp(a, "--case")
			                ? "a sequence number"
			                : "a date (2024-05-01, 2024-05-01T14:30:00Z) or an age (24h, 7d)");
			return -1;
		}
	}
	return 0;
}

/* The filter, as facts for the audit_viewed / audit_exported record. */
static json_t *filter_json(const struct audit_filter *f)
{
	json_t *j = json_object();
	if (f->since_ms)
		json_object_set_new(j, "since_ms", json_integer((json_int_t)f->since_ms));
	if (f->until_ms)
		json_object_set_new(j, "until_ms", json_integer((json_int_t)f->until_ms));
	if (f->kind >= 0)
		json_object_set_new(j, "kind", json_string(audit_kind_name((enum audit_kind)f->kind)));
	if (f->subject)
		json_object_set_new(j, "subject", json_string(f->subject));
	if (f->room)
		json_object_set_new(j, "room", json_string(f->room));
	if (f->actor)
		json_object_set_new(j, "actor", json_string(f->actor));
	return j;
}

/* ---- recording access -------------------------------------------------- */

/* Who ran sudo, when it is a plausible login name (the variable is the caller's to set). */
static const char *sudo_user(void)
{
	const char *s = getenv("SUDO_USER");
	if (!s || !*s || strlen(s) > 32)
		return NULL;
	for (const char *p = s; *p; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      strchr("._-", *p)))
			return NULL;
	}
	return s;
}

/*
 * Append one access record in its own transaction, before anything is
 * shown, so a read that cannot be recorded does not happen.  With
 * @p checkpoint, sign a checkpoint after it and return its seq in @p head.
 * @p details: taken (decref'd here).
 */
static int record_access(store *st, audit *a, enum audit_kind kind, const char *subject, json_t *details,
                         int checkpoint, uint64_t *head)
{
	const char *su = sudo_user();
	if (su)
		json_object_set_new(details, "sudo_user", json_string(su));
	char *actor = th_cli_actor();
	struct audit_rec rec = {.kind = kind, .actor = actor, .subject = subject, .details = details};
	store_txn *t;
	int rc = store_txn_begin(st, 1, &t);
	if (!rc) {
		unsigned char hash[AUDIT_HASH_LEN];
		rc = audit_append(a, t, &rec, NULL);
		if (!rc && checkpoint)
			rc = audit_checkpoint(a, t, 0);
		if (!rc && head)
			rc = audit_head(t, head, hash);
		if (rc)
			store_txn_abort(t);
		else
			rc = store_txn_commit(t);
	}
	free(actor);
	json_decref(details);
	if (rc)
		fprintf(stderr,
		        "threshold: audit: cannot record this access in the log (%s); nothing shown\n",
		        th_strerror(rc));
	return rc;
}

static int open_all(const struct config *cfg, store **st, audit **a)
{
	*a = NULL;
	if (store_open(cfg->store_path, cfg->map_size_mb, st) != TH_OK) {
		fprintf(stderr, "threshold: audit: cannot open the store %s (see above)\n", cfg->store_path);
		return -1;
	}
	int rc = audit_open_config(*st, cfg, a);
	if (rc) {
		fprintf(stderr, "threshold: audit: cannot open the audit log: %s (see above)\n",
		        th_strerror(rc));
		store_close(*st);
		return -1;
	}
	return 0;
}

/* ---- pubkey, verify ---------------------------------------------------- */

static int cmd_pubkey(const struct config *cfg, int argc, char **argv)
{
	(void)argv;
	if (argc > 1) {
		fprintf(stderr, "threshold: audit pubkey takes no options\n");
		return AUDIT_EXIT_USAGE;
	}
	char key[AUDIT_PUBKEY_LEN + 1];
	int rc = audit_key_pubkey(cfg->audit_key_path, key);
	if (rc == TH_ENOTFOUND) { /* first use: create it as the daemon would */
		store *st;
		audit *a;
		if (open_all(cfg, &st, &a))
			return AUDIT_EXIT_ERROR;
		memcpy(key, audit_pubkey(a), sizeof(key));
		audit_close(a);
		store_close(st);
		rc = TH_OK;
	}
	if (rc) {
		fprintf(stderr, "threshold: audit: cannot read the signing key %s: %s\n", cfg->audit_key_path,
		        th_strerror(rc));
		return AUDIT_EXIT_ERROR;
	}
	printf("%s\n", key);
	return AUDIT_EXIT_OK;
}

static void print_broken(const struct audit_verify_result *res)
{
	if (res->bad_seq)
		printf("audit chain broken at seq %llu: %s\n", (unsigned long long)res->bad_seq, res->what);
	else
		printf("audit chain broken: %s\n", res->what);
}

static int verify_file(const struct cli_opts *o)
{
	struct audit_verify_result res;
	int rc = audit_verify_file(o->file, o->pubkey, &res);
	if (rc == TH_EVERIFY) {
		print_broken(&res);
		return AUDIT_EXIT_BROKEN;
	}
	if (rc) {
		fprintf(stderr, "threshold: audit: cannot verify %s: %s\n", o->file,
		        rc == TH_EIO ? strerror(errno) : th_strerror(rc));
		return rc == TH_EINVAL ? AUDIT_EXIT_USAGE : AUDIT_EXIT_ERROR;
	}
	printf("audit export ok: records %llu..%llu (%llu lines, omitted ones as hashes), %llu checkpoint "
	       "signature(s) valid, the newest at seq %llu\n",
	       (unsigned long long)res.first_seq, (unsigned long long)res.last_seq,
	       (unsigned long long)res.records, (unsigned long long)res.checkpoints,
	       (unsigned long long)res.last_checkpoint);
	if (o->pubkey)
		printf("signed by %s\n", res.pubkey);
	else
		printf("signed by %s, the key named in the file itself: compare it with the copy of the\n"
		       "public key you keep elsewhere (or pass it with --pubkey)\n",
		       res.pubkey);
	return AUDIT_EXIT_OK;
}

/*
 * Check the store against the checkpoints witnessed on the homeserver
 * (audit_witness.h), read as the bot with the registration's as_token.
 * @p outcome: static, for the audit_viewed record.
 * @return an AUDIT_EXIT_* code (printed what it found).
 */
static int verify_witness(const struct config *cfg, store *st, int skip, const char **outcome)
{
	const char *room = audit_witness_room(cfg);
	if (skip) {
		*outcome = "skipped";
		printf("witness room NOT checked (--no-witness): a rollback of the store to an earlier "
		       "checkpoint would not be noticed\n");
		return AUDIT_EXIT_OK;
	}
	if (!room) {
		*outcome = "no_room";
		printf("no witness room configured (audit.witness_room or safeguarding.room): a rollback of "
		       "the store to an earlier checkpoint cannot be noticed\n");
		return AUDIT_EXIT_OK;
	}
	*outcome = "unreachable";
	struct config c = *cfg; /* the tokens are read here only: the audit commands need no others */
	c.as_token = c.hs_token = NULL;
	char err[512];
	cs_client *cs = NULL;
	struct audit_witness *w = NULL;
	size_t n = 0;
	long status = 0;
	int code = AUDIT_EXIT_ERROR;
	if (config_load_registration(&c, err, sizeof(err)) != TH_OK) {
		fprintf(stderr,
		        "threshold: audit verify: cannot read the witness room without the bot's token "
		        "(see above); run with --no-witness to check the store alone\n");
		goto out;
	}
	if (cs_client_new(&c, &cs) != TH_OK) {
		fprintf(stderr, "threshold: audit verify: cannot set up the homeserver client\n");
		goto out;
	}
	int rc = audit_witness_read(cs, &c, &w, &n, &status);
	if (rc == TH_EHTTP) {
		fprintf(stderr,
		        "threshold: audit verify: the homeserver refused to show the witness room %s "
		        "(HTTP %ld): is the bot still in it? Run with --no-witness to check the store "
		        "alone; a rollback would then go unnoticed\n",
		        room, status);
		goto out;
	}
	if (rc) {
		fprintf(stderr,
		        "threshold: audit verify: cannot read the witness room %s: the homeserver at %s is "
		        "unreachable (%s). Run with --no-witness to check the store alone; a rollback would "
		        "then go unnoticed\n",
		        room, cfg->hs_url, th_strerror(rc));
		goto out;
	}
	struct audit_witness_result wr;
	rc = audit_witness_check(st, w, n, &wr);
	if (rc == TH_EVERIFY) {
		*outcome = "broken";
		printf("audit log does NOT match its witness room %s: %s\n", room, wr.what);
		code = AUDIT_EXIT_BROKEN;
	} else if (rc) {
		fprintf(stderr, "threshold: audit verify: cannot compare with the witness room: %s\n",
		        th_strerror(rc));
	} else {
		*outcome = "ok";
		if (wr.newest_seq)
			printf("witness room %s: %zu witnessed checkpoint(s) match the store, the "
			       "newest at seq %llu",
			       room, wr.witnessed, (unsigned long long)wr.newest_seq);
		else
			printf("witness room %s holds no checkpoint yet", room);
		if (wr.unwitnessed)
			printf("; %zu newer checkpoint(s) not posted there yet", wr.unwitnessed);
		printf("\n");
		code = AUDIT_EXIT_OK;
	}
out:
	free(w);
	cs_client_free(cs);
	free(c.as_token);
	free(c.hs_token);
	return code;
}

static int cmd_verify(const struct config *cfg, int argc, char **argv)
{
	struct cli_opts o;
	int no_witness = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--no-witness")) {
			no_witness = 1;
			for (int j = i; j + 1 < argc; j++)
				argv[j] = argv[j + 1];
			argc--;
			i--;
		}
	}
	if (parse_args("verify", ACCEPT_FILE | ACCEPT_FROM | ACCEPT_PUBKEY | ACCEPT_AGAINST, argc, argv, &o))
		return AUDIT_EXIT_USAGE;
	if ((o.file && (o.from || o.against)) || (o.against && o.from)) {
		fprintf(stderr, "threshold: audit verify: --file, --against and --from do not go together\n");
		return AUDIT_EXIT_USAGE;
	}
	if (o.file)
		return verify_file(&o);

	char key[AUDIT_PUBKEY_LEN + 1];
	if (o.pubkey) {
		/* Matrix writes keys unpadded; accept a copy that kept its '='. */
		size_t n = strlen(o.pubkey);
		if (n == AUDIT_PUBKEY_LEN + 1 && o.pubkey[n - 1] == '=')
			n--;
		if (n != AUDIT_PUBKEY_LEN) {
			fprintf(stderr, "threshold: audit verify: --pubkey: not an Ed25519 public key (43 "
			                "characters of "
			                "base64, as `threshold audit pubkey` prints)\n");
			return AUDIT_EXIT_USAGE;
		}
		memcpy(key, o.pubkey, n);
		key[n] = '\0';
	} else {
		int rc = audit_key_pubkey(cfg->audit_key_path, key);
		if (rc) {
			fprintf(stderr,
			        "threshold: audit: cannot read the signing key %s: %s; give the public key "
			        "with --pubkey\n",
			        cfg->audit_key_path, th_strerror(rc));
			return AUDIT_EXIT_ERROR;
		}
	}
	store *st;
	if (store_open(cfg->store_path, cfg->map_size_mb, &st) != TH_OK) {
		fprintf(stderr, "threshold: audit: cannot open the store %s (see above)\n", cfg->store_path);
		return AUDIT_EXIT_ERROR;
	}
	struct audit_verify_result res;
	int rc = o.against ? audit_verify_against(st, key, o.against, &res)
	                   : audit_verify(st, key, o.from, &res);
	int code = AUDIT_EXIT_OK;
	if (rc == TH_EVERIFY) {
		print_broken(&res);
		code = AUDIT_EXIT_BROKEN;
	} else if (rc) {
		fprintf(stderr, "threshold: audit: cannot verify: %s\n",
		        rc == TH_EINVAL ? "not an Ed25519 public key" : th_strerror(rc));
		store_close(st);
		return rc == TH_EINVAL ? AUDIT_EXIT_USAGE : AUDIT_EXIT_ERROR;
	} else if (!res.records) {
		printf("audit log ok: no records%s\n", o.from > 1 ? " from that sequence number on" : " yet");
	} else {
		printf("audit chain ok: records %llu..%llu, %llu checkpoint signature(s) valid",
		       (unsigned long long)res.first_seq, (unsigned long long)res.last_seq,
		       (unsigned long long)res.checkpoints);
		if (res.last_checkpoint)
			printf(", the newest at seq %llu", (unsigned long long)res.last_checkpoint);
		printf("\nsigning key %s\n", res.pubkey);
		if (o.against)
			printf("the log still holds the chain signed in %s\n", o.against);
		if (res.last_seq > res.last_checkpoint)
			printf("%llu record(s) after the newest checkpoint are not signed yet; the next "
			       "checkpoint will "
			       "cover them\n",
			       (unsigned long long)(res.last_seq - res.last_checkpoint));
	}
	const char *witness = "not_checked";
	if (code == AUDIT_EXIT_OK) {
		int wcode = verify_witness(cfg, st, no_witness, &witness);
		if (wcode != AUDIT_EXIT_OK)
			code = wcode;
	}

	/* Record the check after it ran, so it can say how it went. */
	audit *a;
	if (audit_open_config(st, cfg, &a) == TH_OK) {
		json_t *d = json_pack("{s:s, s:I, s:b, s:s, s:I}", "action", "verify", "from",
		                      (json_int_t)o.from, "against", o.against != NULL, "result",
		                      code == AUDIT_EXIT_OK ? "ok" : "broken", "bad_seq",
		                      (json_int_t)res.bad_seq);
		json_object_set_new(d, "witness", json_string(witness));
		record_access(st, a, AUDIT_AUDIT_VIEWED, NULL, d, 0, NULL);
		audit_close(a);
	} else {
		fprintf(stderr, "threshold: audit: this check could not be recorded in the log\n");
	}
	store_close(st);
	return code;
}

/* ---- list, export ------------------------------------------------------ */

static void format_time(char *out, size_t len, json_int_t ms, int with_ms)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	if (ms < 0 || !gmtime_r(&s, &tm)) {
		snprintf(out, len, "?");
		return;
	}
	size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
	if (with_ms)
		snprintf(out + n, len - n, ".%03dZ", (int)(ms % 1000));
	else
		snprintf(out + n, len - n, "Z");
}

/* One record's fields as the printers show them, each a new string. */
struct row {
	char *col[9]; /* seq, time, kind, actor, subject, room, reason, details, sealed */
};
#define TABLE_COLS 8 /* the table folds sealed into details */
#define ROW_COLS   9

static const char *const col_names[ROW_COLS] = {"seq",  "time",   "kind",    "actor", "subject",
                                                "room", "reason", "details", "sealed"};

struct list_ctx {
	audit *a;
	store_txn *t;
	FILE *out;
	const char *format; /* "table", "jsonl" or "csv" */
	int show_sealed;
	int pass; /* table: 0 measures the columns, 1 prints */
	size_t width[TABLE_COLS];
	size_t n;
};

/* The sealed detail to show: the plaintext with --show-sealed, else a marker; NULL if none. */
static char *sealed_text(struct list_ctx *c, const json_t *rec)
{
	const char *sealed = json_string_value(json_object_get(rec, "sealed"));
	if (!sealed)
		return NULL;
	if (!c->show_sealed)
		return xstrdup("[sealed]");
	char *plain = NULL;
	int rc = audit_unseal(c->a, c->t, json_string_value(json_object_get(rec, "subject")), sealed, &plain);
	if (rc == TH_OK)
		return plain;
	return xstrdup(rc == TH_ENOTFOUND ? "[erased]" : "[unreadable]");
}

/* Terminal-safe text: control bytes (C0, DEL, and C1 in UTF-8) become '?'. */
static char *clean(const char *s)
{
	char *out = xstrdup(s ? s : "-");
	for (unsigned char *p = (unsigned char *)out; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			*p = '?';
		else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
			p[0] = p[1] = '?';
	}
	return out;
}

/* ASCII-only JSON of a string, so no byte of it can drive a terminal. */
static char *quoted(const char *s)
{
	json_t *j = json_string(s);
	char *q = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_ENSURE_ASCII) : xstrdup("\"?\"");
	json_decref(j);
	return q;
}

static void row_make(struct list_ctx *c, uint64_t seq, const json_t *rec, int csv, struct row *r)
{
	char buf[40];
	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)seq);
	r->col[0] = xstrdup(buf);
	format_time(buf, sizeof(buf), json_integer_value(json_object_get(rec, "ts")), csv);
	r->col[1] = xstrdup(buf);
	static const char *const keys[] = {"kind", "actor", "subject", "room", "reason"};
	for (int i = 0; i < 5; i++) {
		const char *v = json_string_value(json_object_get(rec, keys[i]));
		r->col[2 + i] = csv ? xstrdup(v ? v : "") : clean(v);
	}
	json_t *details = json_object_get(rec, "details");
	r->col[7] =
	        json_object_size(details)
	                ? json_dumps(details, JSON_COMPACT | JSON_SORT_KEYS | (csv ? 0 : JSON_ENSURE_ASCII))
	                : xstrdup("");
	r->col[8] = sealed_text(c, rec);
	if (!csv && r->col[8]) {
		char *q = quoted(r->col[8]);
		char *both = xasprintf("%s%ssealed=%s", r->col[7], *r->col[7] ? " " : "", q);
		free(q);
		free(r->col[7]);
		r->col[7] = both;
	}
}

static void row_free(struct row *r)
{
	for (int i = 0; i < ROW_COLS; i++) {
		if (r->col[i])
			explicit_bzero(r->col[i], strlen(r->col[i])); /* may hold unsealed detail */
		free(r->col[i]);
	}
}

/*
 * One CSV cell (RFC 4180).  A cell a spreadsheet would run as a formula
 * (starting = + - @, tab or CR) is prefixed with ' - Matrix ids start with
 * @, and a record must never execute in the reader's spreadsheet.
 */
static void csv_cell(FILE *out, const char *s, int last)
{
	s = s ? s : "";
	int formula = *s && strchr("=+-@\t\r", *s);
	if (formula || strpbrk(s, ",\"\r\n")) {
		fputc('"', out);
		if (formula)
			fputc('\'', out);
		for (const char *p = s; *p; p++) {
			if (*p == '"')
				fputc('"', out);
			fputc(*p, out);
		}
		fputc('"', out);
	} else {
		fputs(s, out);
	}
	fputs(last ? "\r\n" : ",", out);
}

static int list_one(void *ctx, uint64_t seq, const json_t *rec, const char *raw, size_t rawlen)
{
	struct list_ctx *c = ctx;
	if (!strcmp(c->format, "jsonl")) {
		if (!c->show_sealed) {
			fwrite(raw, 1, rawlen, c->out);
			fputc('\n', c->out);
		} else {
			json_t *copy = json_copy((json_t *)rec);
			char *st = json_object_get(rec, "sealed") ? sealed_text(c, rec) : NULL;
			json_object_set_new(copy, "unsealed", st ? json_string(st) : json_null());
			json_dumpf(copy, c->out, JSON_COMPACT | JSON_SORT_KEYS);
			fputc('\n', c->out);
			json_decref(copy);
			if (st)
				explicit_bzero(st, strlen(st));
			free(st);
		}
		c->n++;
		return 0;
	}
	int csv = !strcmp(c->format, "csv");
	struct row r = {{0}};
	row_make(c, seq, rec, csv, &r);
	if (csv) {
		for (int i = 0; i < ROW_COLS; i++)
			csv_cell(c->out, r.col[i], 0);
		csv_cell(c->out, json_string_value(json_object_get(rec, "hash")), 1);
	} else if (c->pass == 0) {
		for (int i = 0; i < TABLE_COLS; i++) {
			size_t n = strlen(r.col[i]);
			if (n > c->width[i])
				c->width[i] = n;
		}
	} else {
		for (int i = 0; i < TABLE_COLS - 1; i++)
			fprintf(c->out, "%-*s  ", (int)c->width[i], r.col[i]);
		fprintf(c->out, "%s\n", r.col[TABLE_COLS - 1]);
	}
	row_free(&r);
	c->n++;
	return 0;
}

static void csv_header(FILE *out)
{
	for (int i = 0; i < ROW_COLS; i++)
		csv_cell(out, col_names[i], 0);
	csv_cell(out, "hash", 1);
}

/* Print the records matching @p o in @p c->format. */
static int print_records(struct list_ctx *c, const struct cli_opts *o)
{
	if (!strcmp(c->format, "csv"))
		csv_header(c->out);
	if (strcmp(c->format, "table") != 0)
		return audit_iter(c->t, &o->f, list_one, c);
	for (int i = 0; i < TABLE_COLS; i++)
		c->width[i] = strlen(col_names[i]);
	int rc = audit_iter(c->t, &o->f, list_one, c);
	if (rc)
		return rc;
	c->pass = 1;
	c->n = 0;
	for (int i = 0; i < TABLE_COLS - 1; i++) {
		char upper[16];
		size_t k = 0;
		for (; col_names[i][k] && k < sizeof(upper) - 1; k++)
			upper[k] = (char)(col_names[i][k] - 'a' + 'A');
		upper[k] = '\0';
		fprintf(c->out, "%-*s  ", (int)c->width[i], upper);
	}
	fprintf(c->out, "DETAILS\n");
	return audit_iter(c->t, &o->f, list_one, c);
}

static int format_ok(const char *cmd, const char *format, int table_ok)
{
	if (!strcmp(format, "jsonl") || !strcmp(format, "csv") || (table_ok && !strcmp(format, "table")))
		return 1;
	fprintf(stderr, "threshold: audit %s: --format must be %s\n", cmd,
	        table_ok ? "table, jsonl or csv" : "jsonl or csv");
	return 0;
}

static int cmd_list(const struct config *cfg, int argc, char **argv)
{
	struct cli_opts o;
	if (parse_args("list", ACCEPT_FILTER | ACCEPT_FORMAT | ACCEPT_SEALED, argc, argv, &o))
		return AUDIT_EXIT_USAGE;
	const char *format = o.format ? o.format : "table";
	if (!format_ok("list", format, 1))
		return AUDIT_EXIT_USAGE;
	store *st;
	audit *a;
	if (open_all(cfg, &st, &a))
		return AUDIT_EXIT_ERROR;
	json_t *d = json_pack("{s:s, s:o, s:s, s:b}", "action", "list", "filter", filter_json(&o.f), "format",
	                      format, "show_sealed", o.show_sealed);
	int code = AUDIT_EXIT_ERROR;
	store_txn *t = NULL;
	if (record_access(st, a, AUDIT_AUDIT_VIEWED, o.f.subject, d, 0, NULL) == TH_OK &&
	    store_txn_begin(st, 0, &t) == TH_OK) {
		struct list_ctx c = {a, t, stdout, format, o.show_sealed, 0, {0}, 0};
		int rc = print_records(&c, &o);
		if (rc)
			fprintf(stderr, "threshold: audit list: %s\n", th_strerror(rc));
		else if (!strcmp(format, "table"))
			fprintf(stderr, "%zu record(s)\n", c.n);
		code = rc ? AUDIT_EXIT_ERROR : AUDIT_EXIT_OK;
		store_txn_abort(t);
	}
	audit_close(a);
	store_close(st);
	return code;
}

/* Write to @p path through a private temporary file renamed into place. */
static FILE *output_open(const char *path, char **tmp)
{
	*tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
	unlink(*tmp); /* then never followed through a link, never shared */
	int fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	FILE *f = fd < 0 ? NULL : fdopen(fd, "w");
	if (!f) {
		fprintf(stderr, "threshold: audit export: cannot write %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		free(*tmp);
		*tmp = NULL;
	}
	return f;
}

static int output_close(FILE *f, const char *path, char *tmp, int ok)
{
	if (ok && (fflush(f) != 0 || fsync(fileno(f)) != 0))
		ok = 0;
	if (fclose(f) != 0)
		ok = 0;
	if (ok && rename(tmp, path) != 0)
		ok = 0;
	if (!ok) {
		fprintf(stderr, "threshold: audit export: cannot write %s: %s\n", path, strerror(errno));
		unlink(tmp);
	}
	free(tmp);
	return ok;
}

/* export --case ID: the case's guest as the subject, since the case opened. */
static int case_filter(store *st, struct cli_opts *o, char *guest, size_t len)
{
	store_txn *t;
	uint64_t opened = 0;
	int rc = store_txn_begin(st, 0, &t);
	if (!rc) {
		rc = cases_subject(t, o->case_id, guest, len, &opened);
		store_txn_abort(t);
	}
	if (rc) {
		fprintf(stderr, "threshold: audit export: case #%llu: %s\n", (unsigned long long)o->case_id,
		        rc == TH_ENOTFOUND ? "no such case" : th_strerror(rc));
		return -1;
	}
	o->f.subject = guest;
	if (o->f.since_ms < opened)
		o->f.since_ms = opened;
	return 0;
}

static int cmd_export(const struct config *cfg, int argc, char **argv)
{
	struct cli_opts o;
	if (parse_args("export", ACCEPT_FILTER | ACCEPT_FORMAT | ACCEPT_OUTPUT, argc, argv, &o))
		return AUDIT_EXIT_USAGE;
	const char *format = o.format ? o.format : "jsonl";
	if (!format_ok("export", format, 0))
		return AUDIT_EXIT_USAGE;
	int to_file = o.output && strcmp(o.output, "-") != 0;
	store *st;
	audit *a;
	if (open_all(cfg, &st, &a))
		return AUDIT_EXIT_ERROR;
	char case_guest[256] = "";
	if (o.case_id && case_filter(st, &o, case_guest, sizeof(case_guest))) {
		audit_close(a);
		store_close(st);
		return AUDIT_EXIT_ERROR;
	}
	json_t *d = json_pack("{s:s, s:o, s:s, s:s}", "action", "export", "filter", filter_json(&o.f),
	                      "format", format, "to", to_file ? "file" : "stdout");
	if (o.case_id)
		json_object_set_new(d, "case", json_integer((json_int_t)o.case_id));
	uint64_t head = 0;
	int code = AUDIT_EXIT_ERROR;
	char *tmp = NULL;
	FILE *out = NULL;
	store_txn *t = NULL;
	/* The export record and a fresh checkpoint first: the export then ends
	 * at a signed head that already says it was taken. */
	if (record_access(st, a, AUDIT_AUDIT_EXPORTED, o.f.subject, d, 1, &head) != TH_OK)
		goto out;
	out = to_file ? output_open(o.output, &tmp) : stdout;
	if (!out || store_txn_begin(st, 0, &t) != TH_OK)
		goto out;
	size_t n = 0;
	int rc;
	if (!strcmp(format, "jsonl")) {
		rc = audit_export(t, &o.f, audit_pubkey(a), head, out, &n);
	} else {
		struct list_ctx c = {a, t, out, "csv", 0, 0, {0}, 0};
		o.f.max_seq = head;
		rc = print_records(&c, &o);
		n = c.n;
		if (!rc && (fflush(out) != 0 || ferror(out)))
			rc = TH_EIO;
	}
	store_txn_abort(t);
	if (rc)
		fprintf(stderr, "threshold: audit export: %s\n", th_strerror(rc));
	if (to_file) {
		if (!output_close(out, o.output, tmp, rc == TH_OK))
			rc = TH_EIO;
		out = NULL;
	}
	if (!rc) {
		fprintf(stderr, "exported %zu record(s), up to the checkpoint at seq %llu%s%s\n", n,
		        (unsigned long long)head, to_file ? ", to " : "", to_file ? o.output : "");
		if (!strcmp(format, "jsonl") && to_file)
			fprintf(stderr, "check it with: threshold audit verify --file %s --pubkey %s\n",
			        o.output, audit_pubkey(a));
		code = AUDIT_EXIT_OK;
	}
out:
	if (to_file && out)
		output_close(out, o.output, tmp, 0);
	audit_close(a);
	store_close(st);
	return code;
}

int audit_cli_main(const struct config *cfg, int argc, char **argv)
{
	if (argc < 1) {
		usage(stderr);
		return AUDIT_EXIT_USAGE;
	}
	const char *cmd = argv[0];
	if (!strcmp(cmd, "verify"))
		return cmd_verify(cfg, argc, argv);
	if (!strcmp(cmd, "list"))
		return cmd_list(cfg, argc, argv);
	if (!strcmp(cmd, "export"))
		return cmd_export(cfg, argc, argv);
	if (!strcmp(cmd, "pubkey"))
		return cmd_pubkey(cfg, argc, argv);
	if (!strcmp(cmd, "help") || !strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
		usage(stdout);
		return AUDIT_EXIT_OK;
	}
	fprintf(stderr, "threshold: audit: unknown command '%s'\n", cmd);
	usage(stderr);
	return AUDIT_EXIT_USAGE;
}
