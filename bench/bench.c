/*
 * bench.c - measures the hot path against the budgets in DESIGN.md and prints
 * a table.  A measurement, not a test: it never fails on a slow machine.
 *
 *   threshold-bench [--threshold PATH] [--dir DIR] [--quick] [--table-only|--no-table]
 *                   [--members N] [--guests N] [--audit N] [--backlog N]
 *
 * First the scale table (docs/performance.md): the per-event cost of the
 * transaction path on stores of growing size, one store per row.
 *
 * DIR should be on the disk the store will live on (default: $TMPDIR), since
 * durable commits cost what that disk's fsync costs.  The audit rows use a
 * store on /dev/shm when there is one: they measure CPU, not the disk.  The
 * reads over 1,000,000 records (about 15 s of filling) run without --quick only.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <microhttpd.h>
#include <netinet/in.h>

#include "as_server.h"
#include "audit.h"
#include "config.h"
#include "log.h"
#include "outbox.h"
#include "policy.h"
#include "matrix_outbox.h"
#include "rooms.h"
#include "store.h"
#include "txn.h"
#include "util.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
	qsort(v, n, sizeof(double), cmp_double);
	size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
	return v[i];
}

struct row {
	const char *what;
	char measured[64];
	char budget[64];
	const char *verdict;
};

static struct row rows[24];
static size_t nrows;

static void add_row(const char *what, const char *budget, int ok, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static void add_row(const char *what, const char *budget, int ok, const char *fmt, ...)
{
	struct row *r = &rows[nrows++];
	r->what = what;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->measured, sizeof(r->measured), fmt, ap);
	va_end(ap);
	snprintf(r->budget, sizeof(r->budget), "%s", budget);
	r->verdict = ok < 0 ? "-" : ok ? "ok" : "OVER";
}

/* fdatasync of a 4 KiB write, as LMDB's commit does (twice: data, then meta). */
static void bench_fsync(const char *dir, size_t n, double *p50, double *p99, double *rate)
{
	char *path = xasprintf("%s/fsync-probe", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	char buf[4096];
	memset(buf, 'x', sizeof(buf));
	double *lat = xmalloc(n * sizeof(double));
	double start = now_s();
	for (size_t i = 0; i < n; i++) {
		double t0 = now_s();
		if (pwrite(fd, buf, sizeof(buf), (off_t)((i % 64) * sizeof(buf))) < 0 || fdatasync(fd) != 0) {
			perror("fsync probe");
			exit(1);
		}
		lat[i] = now_s() - t0;
	}
	*rate = (double)n / (now_s() - start);
	*p50 = pct(lat, n, 50);
	*p99 = pct(lat, n, 99);
	close(fd);
	unlink(path);
	free(lat);
	free(path);
}

/* The disk's ceiling for durable LMDB commits: one tiny put per commit.  An
 * LMDB commit syncs twice (data pages, then the meta page), so this, not a
 * bare fdatasync, is what one-event transactions can approach.  @p seq
 * numbers the probes so each writes a new key. */
/* Not inlined: callgrind leaves it out of scale_measure's count by name (docs/performance.md). */
__attribute__((noinline)) static double bench_commit_ceiling(store *st, unsigned n, uint64_t *seq)
{
	double t0 = now_s();
	for (unsigned i = 0; i < n; i++) {
		store_txn *t;
		unsigned char k[8];
		store_u64_key(k, (*seq)++);
		if (store_txn_begin(st, 1, &t) || store_put(t, STORE_META, "bench", 5, k, 8, 0) ||
		    store_txn_commit(t)) {
			fprintf(stderr, "bench: commit probe failed\n");
			exit(1);
		}
	}
	return (double)n / (now_s() - t0);
}

static void bench_commit_ceiling_done(store *st)
{
	store_txn *t;
	if (store_txn_begin(st, 1, &t) == TH_OK) {
		store_del(t, STORE_META, "bench", 5);
		store_txn_commit(t);
	}
}

/* Event @p id's id as a homeserver makes it (room versions 4 on: "$" and
 * 43 characters of URL-safe base64 of a hash), so that ids fall all over
 * events_seen rather than in one leaf, as sequential ones would. */
static const char *bench_event_id(unsigned long long id, char out[48])
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	uint64_t x = id;
	out[0] = '$';
	for (int i = 0; i < 43; i++) {
		if (i % 10 == 0) { /* splitmix64 */
			x += 0x9e3779b97f4a7c15ull;
			uint64_t z = x;
			z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
			z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
			x = z ^ (z >> 31);
		}
		out[1 + i] = b64[(x >> (6 * (i % 10))) & 63];
	}
	out[44] = 0;
	return out;
}

/* A realistic event: a text message with the fields Synapse sends. */
static size_t put_event(char *buf, size_t cap, unsigned long long id, unsigned room)
{
	char eid[48];
	return (size_t)snprintf(buf, cap,
	                        "{\"type\":\"m.room.message\",\"room_id\":\"!room%04u:bench.local\","
	                        "\"sender\":\"@staff%u:bench.local\","
	                        "\"event_id\":\"%s\",\"origin_"
	                        "server_ts\":1700000000000,"
	                        "\"content\":{\"msgtype\":\"m.text\",\"body\":\"Hello, this is message %llu; "
	                        "how are you today?\"},"
	                        "\"unsigned\":{\"age\":12,\"transaction_id\":\"m1700000000000.%llu\"}}",
	                        room, room % 7, bench_event_id(id, eid), id, id);
}

static char *make_txn(unsigned long long *next_id, unsigned nevents, size_t *len)
{
	size_t cap = (size_t)nevents * 700 + 64, n = 0;
	char *body = xmalloc(cap);
	n += (size_t)snprintf(body, cap, "{\"events\":[");
	for (unsigned i = 0; i < nevents; i++) {
		if (i)
			body[n++] = ',';
		unsigned long long id = (*next_id)++;
		n += put_event(body + n, cap - n, id, (unsigned)(id % 50));
	}
	n += (size_t)snprintf(body + n, cap - n, "]}");
	*len = n;
	return body;
}

static void bench_txns(struct config *cfg, store *st, unsigned ntxns, unsigned per, double *events_per_s,
                       double *txns_per_s)
{
	static unsigned long long next_id = 1;
	static unsigned long long txn_no = 1;
	char **bodies = xmalloc(ntxns * sizeof(char *));
	size_t *lens = xmalloc(ntxns * sizeof(size_t));
	for (unsigned i = 0; i < ntxns; i++)
		bodies[i] = make_txn(&next_id, per, &lens[i]);
	struct matrix_outbox mxo;
	matrix_outbox_init(&mxo, cfg);
	struct txn_env env = {cfg, st, NULL, &mxo.mx, NULL};
	double t0 = now_s();
	for (unsigned i = 0; i < ntxns; i++) {
		char id[32];
		snprintf(id, sizeof(id), "%llu", txn_no++);
		struct txn_result res;
		txn_process(&env, id, bodies[i], lens[i], &res);
		if (res.status != 200) {
			fprintf(stderr, "bench: transaction failed with %d\n", res.status);
			exit(1);
		}
	}
	double dt = now_s() - t0;
	*events_per_s = (double)ntxns * per / dt;
	*txns_per_s = (double)ntxns / dt;
	for (unsigned i = 0; i < ntxns; i++)
		free(bodies[i]);
	free(bodies);
	free(lens);
}

/* One-event transactions against the commit ceiling, measured in
 * alternating rounds on the same store, so that a disk whose speed drifts
 * (a neighbour's writes, a cache flushing) weighs on both alike.  The
 * figures are medians over the rounds; @p ratio is the median of each
 * round's ratio. */
/* Bytes this thread has handed the kernel (wchar): LMDB writes a commit's
 * pages from the committing thread, so this is the transaction's own commit;
 * the outbox's removal commits, in its own thread, are not in it. */
static unsigned long long written_bytes(void)
{
	unsigned long long n = 0;
	FILE *f = fopen("/proc/thread-self/io", "r");
	char line[128];
	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "wchar: %llu", &n) == 1)
			break;
	}
	if (f)
		fclose(f);
	return n;
}

static void bench_one_event(struct config *cfg, store *st, unsigned rounds, unsigned per, double *ceiling,
                            double *txns_per_s, double *ratio, double *kib_ceiling, double *kib_one)
{
	double *c = xmalloc(rounds * sizeof(double)), *o = xmalloc(rounds * sizeof(double)),
	       *r = xmalloc(rounds * sizeof(double));
	uint64_t seq = 0;
	unsigned long long wc = 0, wo = 0;
	for (unsigned i = 0; i < rounds; i++) {
		double ev_s;
		unsigned long long w0 = written_bytes();
		c[i] = bench_commit_ceiling(st, per, &seq);
		unsigned long long w1 = written_bytes();
		bench_txns(cfg, st, per, 1, &ev_s, &o[i]);
		wo += written_bytes() - w1;
		wc += w1 - w0;
		r[i] = o[i] / c[i];
	}
	*kib_ceiling = (double)wc / 1024.0 / (rounds * per);
	*kib_one = (double)wo / 1024.0 / (rounds * per);
	bench_commit_ceiling_done(st);
	*ceiling = pct(c, rounds, 50);
	*txns_per_s = pct(o, rounds, 50);
	*ratio = pct(r, rounds, 50);
	free(c);
	free(o);
	free(r);
}

static size_t sink(char *p, size_t s, size_t n, void *u)
{
	(void)p;
	(void)u;
	return s * n;
}

/* Ack latency as the homeserver sees it: HTTP PUT to the 200, keep-alive. */
static void bench_ack(struct config *cfg, store *st, unsigned n, double *p50, double *p99)
{
	as_server *srv;
	struct matrix_outbox mxo;
	matrix_outbox_init(&mxo, cfg);
	struct txn_env env = {cfg, st, NULL, &mxo.mx, NULL};
	if (as_server_start(&env, NULL, NULL, &srv) != TH_OK)
		exit(1);
	unsigned port = as_server_port(srv);
	CURL *c = curl_easy_init();
	struct curl_slist *h = NULL;
	char *auth = xasprintf("Authorization: Bearer %s", cfg->hs_token);
	h = curl_slist_append(h, auth);
	h = curl_slist_append(h, "Content-Type: application/json");
	h = curl_slist_append(h, "Expect:");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
	static unsigned long long next_id = 1000000000ull;
	double *lat = xmalloc(n * sizeof(double));
	for (unsigned i = 0; i < n; i++) {
		size_t len;
		char *body = make_txn(&next_id, 100, &len);
		char *url = xasprintf("http://127.0.0.1:%u/_matrix/app/v1/transactions/ack%u", port, i);
		curl_easy_setopt(c, CURLOPT_URL, url);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
		double t0 = now_s();
		CURLcode rc = curl_easy_perform(c);
		lat[i] = now_s() - t0;
		long status = 0;
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
		if (rc != CURLE_OK || status != 200) {
			fprintf(stderr, "bench: ack request failed (%d, %ld)\n", rc, status);
			exit(1);
		}
		free(url);
		free(body);
	}
	*p50 = pct(lat, n, 50);
	*p99 = pct(lat, n, 99);
	free(lat);
	curl_slist_free_all(h);
	free(auth);
	curl_easy_cleanup(c);
	as_server_stop(srv);
}

/* Policy decisions, each timed on its own over every combination of event,
 * sender, target, room kind and bot membership (the table's worst rows
 * included), so p99 is a real per-decision figure.  Each timing includes one
 * clock read, measured alone as @p clock_ns. */
static void bench_policy(double *p50_ns, double *p99_ns, double *mean_ns, double *clock_ns)
{
	enum { N = 1000000 };
	double *lat = xmalloc(N * sizeof(double));
	struct pol_decision d;
	volatile unsigned sinkv = 0;
	struct pol_facts f = {.command = POL_CMD_PING};
	double total = 0;
	for (unsigned i = 0; i < N; i++) {
		unsigned k = i;
		f.event = (enum pol_event)(k % POL_EV_COUNT);
		k /= POL_EV_COUNT;
		f.sender = (enum pol_role)(k % POL_ROLE_COUNT);
		k /= POL_ROLE_COUNT;
		f.target = (enum pol_role)(k % POL_ROLE_COUNT);
		k /= POL_ROLE_COUNT;
		f.room = (enum pol_room)(k % POL_ROOM_COUNT);
		f.bot_joined = (int)((k / POL_ROOM_COUNT) & 1);
		double t0 = now_s();
		pol_decide(&f, &d);
		lat[i] = now_s() - t0;
		total += lat[i];
		sinkv += d.reason;
	}
	double c0 = now_s();
	for (unsigned i = 0; i < 1000; i++)
		sinkv += (unsigned)(now_s() > c0);
	*clock_ns = (now_s() - c0) / 1000 * 1e9;
	*mean_ns = total / N * 1e9;
	*p50_ns = pct(lat, N, 50) * 1e9;
	*p99_ns = pct(lat, N, 99) * 1e9;
	(void)sinkv; /* read once: the decisions are not optimised away */
	free(lat);
}

static double thread_cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* This thread's kernel CPU time (page faults of new LMDB pages, mostly). */
static double thread_sys_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_THREAD, &ru);
	return (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* The audit benchmarks share one store of records like policy's: a stranger's
 * contact blocked, about one of SUBJECTS guests, with the event id in details. */
#define AUDIT_SUBJECTS 10000u
#define AUDIT_BATCH    10000u

struct audit_bench {
	char *dir;
	store *st;
	audit *au;
	uint64_t records;            /* appended so far */
	double cpu_s, sys_s, wall_s; /* spent in audit_append/audit_checkpoint only */
};

static void audit_subject(char *out, size_t len, unsigned i)
{
	snprintf(out, len, "@guest_%032x:bench.local", i % AUDIT_SUBJECTS);
}

/* Append @p n records in transactions of AUDIT_BATCH, signing a checkpoint
 * whenever one is due (as the daemon does); only the appends are timed: the
 * details are built before and the commit (fsync) after. */
static void audit_fill(struct audit_bench *ab, uint64_t n)
{
	json_t **details = xmalloc(AUDIT_BATCH * sizeof(json_t *));
	char(*actor)[64] = xmalloc(AUDIT_BATCH * sizeof(*actor));
	char(*subject)[64] = xmalloc(AUDIT_BATCH * sizeof(*subject));
	char(*room)[64] = xmalloc(AUDIT_BATCH * sizeof(*room));
	while (n > 0) {
		unsigned batch = n < AUDIT_BATCH ? (unsigned)n : AUDIT_BATCH;
		for (unsigned i = 0; i < batch; i++) {
			unsigned long long id = ab->records + i;
			char eid[80];
			snprintf(eid, sizeof(eid), "$%020llu_abcdefghijklmnopqrstuvwxyz0123456789", id);
			details[i] = json_pack("{s:s, s:b}", "event_id", eid, "is_direct", 0);
			snprintf(actor[i], sizeof(actor[i]), "@stranger%llu:remote.example", id % 997);
			audit_subject(subject[i], sizeof(subject[i]), (unsigned)(id * 7919u));
			snprintf(room[i], sizeof(room[i]), "!room%06llu:remote.example", id % 100000);
		}
		store_txn *t;
		if (store_txn_begin(ab->st, 1, &t) != TH_OK) {
			fprintf(stderr, "bench: audit: cannot begin a transaction\n");
			exit(1);
		}
		double c0 = thread_cpu_s(), s0 = thread_sys_s(), w0 = now_s();
		for (unsigned i = 0; i < batch; i++) {
			struct audit_rec rec = {.kind = AUDIT_CONTACT_BLOCKED,
			                        .actor = actor[i],
			                        .subject = subject[i],
			                        .room = room[i],
			                        .reason = "bot_invite_refused",
			                        .details = details[i]};
			int rc = audit_append(ab->au, t, &rec, NULL);
			uint64_t now = th_now_ms();
			if (!rc && audit_checkpoint_due(ab->au, now))
				rc = audit_checkpoint(ab->au, t, now);
			if (rc) {
				fprintf(stderr, "bench: audit append failed: %s\n", th_strerror(rc));
				exit(1);
			}
		}
		ab->cpu_s += thread_cpu_s() - c0;
		ab->sys_s += thread_sys_s() - s0;
		ab->wall_s += now_s() - w0;
		if (store_txn_commit(t) != TH_OK) {
			fprintf(stderr, "bench: audit: commit failed (map full?)\n");
			exit(1);
		}
		for (unsigned i = 0; i < batch; i++)
			json_decref(details[i]);
		ab->records += batch;
		n -= batch;
	}
	free(details);
	free(actor);
	free(subject);
	free(room);
}

/* On /dev/shm when there is one: no disk in the figures, fsync or not. */
static void audit_bench_open(struct audit_bench *ab, const char *fallback)
{
	memset(ab, 0, sizeof(*ab));
	char *tmpl = xasprintf("%s/threshold-bench-audit-XXXXXX",
	                       access("/dev/shm", W_OK) == 0 ? "/dev/shm" : fallback);
	ab->dir = mkdtemp(tmpl);
	if (!ab->dir) {
		perror("mkdtemp");
		exit(1);
	}
	char *path = xasprintf("%s/store", ab->dir);
	char *key = xasprintf("%s/audit-signing.key", ab->dir);
	char *seal = xasprintf("%s/seal-keys", ab->dir);
	struct audit_opts o = {key, seal, 1000, 300};
	if (store_open(path, 4096, &ab->st) != TH_OK || audit_open(ab->st, &o, &ab->au) != TH_OK) {
		fprintf(stderr, "bench: cannot open the audit store in %s\n", ab->dir);
		exit(1);
	}
	free(path);
	free(key);
	free(seal);
}

static void audit_bench_close(struct audit_bench *ab)
{
	audit_close(ab->au);
	store_close(ab->st);
	char *cmd = xasprintf("rm -rf '%s'", ab->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench: could not remove %s\n", ab->dir);
	free(cmd);
	free(ab->dir);
}

/* Records per second that audit_verify() checks, checkpoint signatures included. */
static double bench_audit_verify(struct audit_bench *ab, uint64_t *checked)
{
	struct audit_verify_result res;
	double t0 = now_s();
	int rc = audit_verify(ab->st, audit_pubkey(ab->au), 0, &res);
	double dt = now_s() - t0;
	if (rc != TH_OK) {
		fprintf(stderr, "bench: audit verify failed: %s (%s)\n", th_strerror(rc), res.what);
		exit(1);
	}
	*checked = res.records;
	return (double)res.records / dt;
}

static int count_rec(void *ctx, uint64_t seq, const json_t *rec, const char *raw, size_t rawlen)
{
	(void)seq;
	(void)rec;
	(void)raw;
	(void)rawlen;
	(*(size_t *)ctx)++;
	return 0;
}

/* Mean ms for one subject's records (the audit_by_subject index), over @p n
 * subjects, each in a fresh read transaction, as `audit list --subject` reads. */
static double bench_audit_by_subject(struct audit_bench *ab, unsigned n, size_t *per_subject)
{
	size_t found = 0;
	double t0 = now_s();
	for (unsigned i = 0; i < n; i++) {
		char subject[64];
		audit_subject(subject, sizeof(subject), i * 97u);
		struct audit_filter f;
		audit_filter_init(&f);
		f.subject = subject;
		store_txn *t;
		if (store_txn_begin(ab->st, 0, &t) != TH_OK ||
		    audit_iter(t, &f, count_rec, &found) != TH_OK) {
			fprintf(stderr, "bench: audit list by subject failed\n");
			exit(1);
		}
		store_txn_abort(t);
	}
	*per_subject = found / n;
	return (now_s() - t0) / n * 1e3;
}

/* ms for a filter by kind (a rare one): answered from the audit index. */
static double bench_audit_scan(struct audit_bench *ab, size_t *found)
{
	struct audit_filter f;
	audit_filter_init(&f);
	f.kind = AUDIT_DATA_ERASED;
	*found = 0;
	store_txn *t;
	double t0 = now_s();
	if (store_txn_begin(ab->st, 0, &t) != TH_OK || audit_iter(t, &f, count_rec, found) != TH_OK) {
		fprintf(stderr, "bench: audit scan failed\n");
		exit(1);
	}
	store_txn_abort(t);
	return (now_s() - t0) * 1e3;
}

/* `threshold audit list FILTER VALUE [FILTER2 VALUE2]` as a lead runs it: a
 * process, the audit_viewed record (a durable commit) and the jsonl output,
 * in ms (the best of 5).  NULL values: no second filter; a NULL @p value
 * names a subject of the log. */
static double bench_audit_cli(const char *threshold, struct audit_bench *ab, const char *filter,
                              const char *value, const char *filter2, const char *value2)
{
	char *cfgpath = xasprintf("%s/bench-audit.yaml", ab->dir);
	FILE *f = fopen(cfgpath, "w");
	if (!f) {
		free(cfgpath);
		return -1;
	}
	fprintf(f,
	        "homeserver:\n  url: http://127.0.0.1:9\n  server_name: bench.local\n"
	        "appservice:\n  registration: %s/none.yaml\n"
	        "store:\n  path: %s/store\n  map_size_mb: 4096\nlog:\n  level: error\n"
	        "audit:\n  key_file: %s/audit-signing.key\n",
	        ab->dir, ab->dir, ab->dir);
	fclose(f);
	char subject[64];
	audit_subject(subject, sizeof(subject), 4242);
	if (!value)
		value = subject;
	double best = -1;
	for (int i = 0; i < 5; i++) {
		double t0 = now_s();
		pid_t pid = fork();
		if (pid == 0) {
			int devnull = open("/dev/null", O_WRONLY);
			dup2(devnull, 1);
			dup2(devnull, 2);
			if (filter2)
				execl(threshold, threshold, "-c", cfgpath, "audit", "list", filter, value,
				      filter2, value2, "--format", "jsonl", (char *)NULL);
			else
				execl(threshold, threshold, "-c", cfgpath, "audit", "list", filter, value,
				      "--format", "jsonl", (char *)NULL);
			_exit(127);
		}
		int status;
		waitpid(pid, &status, 0);
		double ms = (now_s() - t0) * 1e3;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			best = -1;
			break;
		}
		if (best < 0 || ms < best)
			best = ms;
	}
	free(cfgpath);
	return best;
}

/* A homeserver that answers every request at once with 200 and an event id:
 * the outbox's side of the backlog costs only its own work. */
static enum MHD_Result hs_answer(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                 const char *version, const char *data, size_t *data_size, void **req_cls)
{
	(void)cls;
	(void)url;
	(void)method;
	(void)version;
	(void)data;
	if (!*req_cls) {
		*req_cls = (void *)1;
		return MHD_YES;
	}
	if (*data_size) {
		*data_size = 0;
		return MHD_YES;
	}
	static const char body[] = "{\"event_id\":\"$bench\"}";
	struct MHD_Response *r =
	        MHD_create_response_from_buffer(sizeof(body) - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
	MHD_add_response_header(r, "Content-Type", "application/json");
	enum MHD_Result rc = MHD_queue_response(c, 200, r);
	MHD_destroy_response(r);
	return rc;
}

/*
 * A homeserver in this process that answers every request at once, and
 * @p cfg's outbox pointed at it with the settings the benchmarks use.
 * cfg->hs_url is a new string; as_token is the caller's to set.
 */
static struct MHD_Daemon *local_homeserver(struct config *cfg)
{
	struct sockaddr_in sa = {
	        .sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct MHD_Daemon *hs =
	        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL,
	                         NULL, hs_answer, NULL, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_END);
	if (!hs) {
		fprintf(stderr, "bench: cannot start the local homeserver\n");
		exit(1);
	}
	cfg->hs_url =
	        xasprintf("http://127.0.0.1:%u", MHD_get_daemon_info(hs, MHD_DAEMON_INFO_BIND_PORT)->port);
	cfg->client_timeout_ms = 30000;
	cfg->client_connect_timeout_ms = 5000;
	cfg->outbox_max_backoff_ms = 60000;
	cfg->outbox_concurrency = 8;
	cfg->outbox_give_up_s = 3600;
	return hs;
}

/*
 * 100-event transactions while the outbox drains a backlog of @p backlog
 * sends (over 100 rooms) to a local homeserver that answers at once,
 * against the same transactions with the outbox idle, on a store of its
 * own.  @p drain_s: actions removed per second while draining.
 */
static void bench_backlog(struct config *cfg, const char *dir, unsigned backlog, double *idle_txn_s,
                          double *busy_txn_s, double *drain_s)
{
	struct MHD_Daemon *hs = local_homeserver(cfg);
	cfg->as_token = xstrdup("bench_as_token");
	char *path = xasprintf("%s/backlog-store", dir);
	store *st;
	if (store_open(path, 4096, &st) != TH_OK)
		exit(1);
	double ev_s, warm;
	bench_txns(cfg, st, 20, 100, &ev_s, &warm); /* a fresh store's first pages */
	bench_txns(cfg, st, 200, 100, &ev_s, idle_txn_s);

	store_txn *t;
	if (store_txn_begin(st, 1, &t) != TH_OK)
		exit(1);
	for (unsigned i = 0; i < backlog; i++) {
		char room[48];
		snprintf(room, sizeof(room), "!backlog%03u:bench.local", i % 100);
		json_t *a = outbox_notice(room, "@threshold:bench.local", "A queued notice", NULL);
		if (outbox_push(t, a) != TH_OK)
			exit(1);
		json_decref(a);
	}
	if (store_txn_commit(t) != TH_OK)
		exit(1);

	outbox *ob;
	double t0 = now_s();
	if (outbox_start(st, cfg, NULL, &ob) != TH_OK)
		exit(1);
	unsigned txns = 0;
	double busy = 0;
	size_t left = backlog;
	/* Rounds of 10 transactions, counted while the backlog is draining. */
	while ((left = outbox_pending(ob)) > backlog / 20) {
		double r0 = now_s(), tx;
		bench_txns(cfg, st, 10, 100, &ev_s, &tx);
		busy += now_s() - r0;
		txns += 10;
	}
	while (outbox_pending(ob) > 0) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	double dt = now_s() - t0;
	outbox_stop(ob);
	/* Idle again, after: the disk's speed drifts; the mean of before and after. */
	double after;
	bench_txns(cfg, st, 200, 100, &ev_s, &after);
	*idle_txn_s = (*idle_txn_s + after) / 2;
	*busy_txn_s = busy > 0 ? txns / busy : 0;
	*drain_s = backlog / dt;
	store_close(st);
	MHD_stop_daemon(hs);
	free(path);
}

/* ---- the scale table: per-event cost against the size of what is stored ---- */

/* Sizes of the table's rows (flags; --quick makes them small). */
struct scale_sizes {
	unsigned members; /* per room, in each of the 50 rooms the messages go to */
	unsigned guests;
	unsigned audit;
	unsigned backlog;
	unsigned txns100, txns1; /* transactions measured per row */
	unsigned run_in;         /* 100-event transactions of the load every row's store takes first */
};

struct scale_fig {
	double ev_s, p50_ms, p99_ms, cpu_ms, kib;
};

#define SCALE_ROOMS 50

/* Event @p id of the table's load: a message in one of SCALE_ROOMS rooms,
 * or, one in ten, a stranger's invite of a guest into a room of theirs
 * (refused: an audit record and a reject action). */
static size_t scale_event(char *buf, size_t cap, unsigned long long id, unsigned guests)
{
	char eid[48];
	if (id % 10 == 9)
		return (size_t)snprintf(
		        buf, cap,
		        "{\"type\":\"m.room.member\",\"room_id\":\"!theirs%03llu:remote.example\","
		        "\"sender\":\"@stranger%llu:remote.example\",\"state_key\":\"@guest_%032llx:bench."
		        "local\","
		        "\"event_id\":\"%s\",\"origin_server_ts\":"
		        "1700000000000,\"content\":{\"membership\":\"invite\"}}",
		        id % 20, id % 97, guests ? id % guests : id, bench_event_id(id, eid));
	return put_event(buf, cap, id, (unsigned)(id % SCALE_ROOMS));
}

static char *scale_txn(unsigned long long *next_id, unsigned n, unsigned guests, size_t *len)
{
	size_t cap = (size_t)n * 700 + 64, k = 0;
	char *body = xmalloc(cap);
	k += (size_t)snprintf(body, cap, "{\"events\":[");
	for (unsigned i = 0; i < n; i++) {
		if (i)
			body[k++] = ',';
		k += scale_event(body + k, cap - k, (*next_id)++, guests);
	}
	k += (size_t)snprintf(body + k, cap - k, "]}");
	*len = k;
	return body;
}

/* @p ntxns transactions of @p per events each: events/s, and per
 * transaction the latency to its durable commit (the ack, less HTTP), this
 * thread's CPU and the bytes handed to the kernel.  With @p ceil, ten bare
 * one-key commits on the same store after each ten transactions, their rate
 * in *ceil: the disk's drift then weighs on both alike. */
static void scale_measure(const struct txn_env *env, unsigned per, unsigned ntxns, unsigned guests,
                          struct scale_fig *out, double *ceil)
{
	static uint64_t ceil_seq;
	double ceil_s = 0;
	unsigned ceil_n = 0;
	static unsigned long long next_id = 5000000000ull, txn_no = 1;
	char **bodies = xmalloc(ntxns * sizeof(char *));
	size_t *lens = xmalloc(ntxns * sizeof(size_t));
	double *lat = xmalloc(ntxns * sizeof(double));
	for (unsigned i = 0; i < ntxns; i++)
		bodies[i] = scale_txn(&next_id, per, guests, &lens[i]);
	double cpu = 0, wall = 0;
	unsigned long long bytes = 0;
	for (unsigned i = 0; i < ntxns; i++) {
		char id[32];
		snprintf(id, sizeof(id), "scale%llu", txn_no++);
		struct txn_result res;
		unsigned long long w0 = written_bytes();
		double c0 = thread_cpu_s(), t0 = now_s();
		txn_process(env, id, bodies[i], lens[i], &res);
		lat[i] = now_s() - t0;
		cpu += thread_cpu_s() - c0;
		bytes += written_bytes() - w0;
		wall += lat[i];
		if (ceil && i % 10 == 9) {
			double k0 = now_s();
			bench_commit_ceiling(env->st, 10, &ceil_seq);
			ceil_s += now_s() - k0;
			ceil_n += 10;
		}
		if (env->au)
			audit_txn_committed(env->au);
		if (res.status != 200) {
			fprintf(stderr, "bench: transaction failed with %d\n", res.status);
			exit(1);
		}
		free(bodies[i]);
	}
	out->ev_s = (double)ntxns * per / wall;
	out->p50_ms = pct(lat, ntxns, 50) * 1e3;
	out->p99_ms = pct(lat, ntxns, 99) * 1e3;
	out->cpu_ms = cpu / ntxns * 1e3;
	out->kib = (double)bytes / 1024.0 / ntxns;
	if (ceil) {
		*ceil = ceil_n ? ceil_n / ceil_s : 0;
		bench_commit_ceiling_done(env->st);
	}
	free(bodies);
	free(lens);
	free(lat);
}

struct scale_store {
	char *dir;
	store *st;
	audit *au;
	struct matrix_outbox mxo; /* the bridge's Matrix interface, on this store's outbox */
	struct txn_env env;
};

static void scale_open(struct scale_store *ss, const struct config *cfg, const char *base, const char *name)
{
	ss->dir = xasprintf("%s/scale-%s", base, name);
	mkdir(ss->dir, 0700);
	char *path = xasprintf("%s/store", ss->dir);
	char *key = xasprintf("%s/audit-signing.key", ss->dir);
	char *seal = xasprintf("%s/seal-keys", ss->dir);
	struct audit_opts o = {key, seal, 1000, 300};
	if (store_open(path, 8192, &ss->st) != TH_OK || audit_open(ss->st, &o, &ss->au) != TH_OK) {
		fprintf(stderr, "bench: cannot open the store in %s\n", ss->dir);
		exit(1);
	}
	matrix_outbox_init(&ss->mxo, cfg);
	ss->env = (struct txn_env){cfg, ss->st, ss->au, &ss->mxo.mx, NULL};
	free(path);
	free(key);
	free(seal);
}

static void scale_close(struct scale_store *ss)
{
	audit_close(ss->au);
	store_close(ss->st);
	char *cmd = xasprintf("rm -rf '%s'", ss->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench: could not remove %s\n", ss->dir);
	free(cmd);
	free(ss->dir);
}

/* Feed @p n events made by @p make in transactions of 100, as the homeserver would. */
static void scale_feed(struct scale_store *ss, unsigned n,
                       size_t (*make)(char *buf, size_t cap, unsigned i, void *ctx), void *ctx)
{
	static unsigned long long feed_no = 1;
	size_t cap = 100 * 600 + 64;
	char *body = xmalloc(cap);
	for (unsigned i = 0; i < n;) {
		size_t k = (size_t)snprintf(body, cap, "{\"events\":[");
		for (unsigned j = 0; j < 100 && i < n; j++, i++) {
			if (j)
				body[k++] = ',';
			k += make(body + k, cap - k, i, ctx);
		}
		k += (size_t)snprintf(body + k, cap - k, "]}");
		char id[32];
		snprintf(id, sizeof(id), "feed%llu", feed_no++);
		struct txn_result res;
		txn_process(&ss->env, id, body, k, &res);
		audit_txn_committed(ss->au);
		if (res.status != 200) {
			fprintf(stderr, "bench: set-up transaction failed with %d\n", res.status);
			exit(1);
		}
	}
	free(body);
}

/* Members of the table's rooms: of the even rooms (groups Threshold
 * manages) local staff who join; of the odd ones (a stranger's), ids of the
 * guests' namespace the stranger invites (each refused and recorded). */
static size_t member_event(char *buf, size_t cap, unsigned i, void *ctx)
{
	unsigned members = *(unsigned *)ctx;
	unsigned room = i / members, m = i % members;
	if (room % 2 == 0)
		return (size_t)snprintf(
		        buf, cap,
		        "{\"type\":\"m.room.member\",\"room_id\":\"!room%04u:bench.local\","
		        "\"sender\":\"@member%u:bench.local\",\"state_key\":\"@member%u:bench.local\","
		        "\"event_id\":\"$member%u_%u\",\"content\":{\"membership\":\"join\","
		        "\"displayname\":\"Member %u\"}}",
		        room, m, m, room, m, m);
	return (size_t)snprintf(
	        buf, cap,
	        "{\"type\":\"m.room.member\",\"room_id\":\"!room%04u:bench.local\","
	        "\"sender\":\"@stranger:remote.example\",\"state_key\":\"@guest_%08x%024x:bench.local\","
	        "\"event_id\":\"$member%u_%u\",\"content\":{\"membership\":\"invite\"}}",
	        room, room, m, room, m);
}

static void scale_rooms(struct scale_store *ss, unsigned members)
{
	store_txn *t;
	if (store_txn_begin(ss->st, 1, &t))
		exit(1);
	for (unsigned r = 0; r < SCALE_ROOMS; r += 2) {
		char room[48];
		snprintf(room, sizeof(room), "!room%04u:bench.local", r);
		if (rooms_mark_managed(t, room, "group"))
			exit(1);
	}
	if (store_txn_commit(t))
		exit(1);
	scale_feed(ss, SCALE_ROOMS * members, member_event, &members);
}

static void scale_guests(struct scale_store *ss, unsigned n)
{
	for (unsigned i = 0; i < n;) {
		store_txn *t;
		if (store_txn_begin(ss->st, 1, &t))
			exit(1);
		for (unsigned j = 0; j < 10000 && i < n; j++, i++) {
			char id[80], rec[160];
			snprintf(id, sizeof(id), "@guest_%032x:bench.local", i);
			int len =
			        snprintf(rec, sizeof(rec),
			                 "{\"kind\":\"guest\",\"pseudonym\":\"Blue Otter %u\",\"created_ms\":"
			                 "1700000000000,\"state\":\"active\"}",
			                 i);
			if (store_put(t, STORE_USERS, id, strlen(id), rec, (size_t)len, 0))
				exit(1);
		}
		if (store_txn_commit(t))
			exit(1);
	}
}

/* @p n records of refused contact, 100 a commit: as many as the largest
 * transaction a homeserver sends could make, so that LMDB's free pages are
 * what such a history leaves (10,000 a commit left 18,000 free pages, whose
 * list every later commit rewrote three pages of). */
static void scale_audit(struct scale_store *ss, unsigned n)
{
	for (unsigned i = 0; i < n;) {
		store_txn *t;
		if (store_txn_begin(ss->st, 1, &t))
			exit(1);
		for (unsigned j = 0; j < 100 && i < n; j++, i++) {
			char actor[64], subject[64], room[64];
			snprintf(actor, sizeof(actor), "@stranger%u:remote.example", i % 997);
			snprintf(subject, sizeof(subject), "@guest_%032x:bench.local", (i * 7919u) % 10000u);
			snprintf(room, sizeof(room), "!room%06u:remote.example", i % 100000);
			struct audit_rec rec = {.kind = AUDIT_CONTACT_BLOCKED,
			                        .actor = actor,
			                        .subject = subject,
			                        .room = room,
			                        .reason = "bot_invite_refused"};
			int rc = audit_append(ss->au, t, &rec, NULL);
			uint64_t now = th_now_ms();
			if (!rc && audit_checkpoint_due(ss->au, now))
				rc = audit_checkpoint(ss->au, t, now);
			if (rc)
				exit(1);
		}
		if (store_txn_commit(t))
			exit(1);
		audit_txn_committed(ss->au);
	}
}

static void scale_queue(struct scale_store *ss, unsigned backlog)
{
	store_txn *t;
	if (store_txn_begin(ss->st, 1, &t) != TH_OK)
		exit(1);
	for (unsigned i = 0; i < backlog; i++) {
		char room[48];
		snprintf(room, sizeof(room), "!backlog%03u:bench.local", i % 100);
		json_t *a = outbox_notice(room, "@threshold:bench.local", "A queued notice", NULL);
		if (outbox_push(t, a) != TH_OK)
			exit(1);
		json_decref(a);
	}
	if (store_txn_commit(t) != TH_OK)
		exit(1);
}

/* The rows printed so far, for the budget lines under the table. */
#define SCALE_MAX_ROWS 8
static struct scale_done {
	char row[40];
	struct scale_fig f100, f1;
	double pct_ceil;
} scale_done[SCALE_MAX_ROWS];
static unsigned scale_ndone;

static void scale_print(const char *row, const struct scale_fig *f100, const struct scale_fig *f1,
                        double ceiling, const char *note)
{
	if (scale_ndone < SCALE_MAX_ROWS) {
		struct scale_done *d = &scale_done[scale_ndone++];
		snprintf(d->row, sizeof(d->row), "%s", row);
		d->f100 = *f100;
		d->f1 = *f1;
		d->pct_ceil = ceiling > 0 ? 100.0 * f1->ev_s / ceiling : 0;
	}
	printf("%-22s | %8.0f %6.2f %6.2f %6.2f %7.0f | %6.0f %6.2f %6.2f %6.2f %5.0f %4.0f%% | %s\n", row,
	       f100->ev_s, f100->p50_ms, f100->p99_ms, f100->cpu_ms, f100->kib, f1->ev_s, f1->p50_ms,
	       f1->p99_ms, f1->cpu_ms, f1->kib, ceiling > 0 ? 100.0 * f1->ev_s / ceiling : 0, note);
	fflush(stdout);
}

/* How far a figure is from the first row's, worse being above 1: for
 * events/s the first row's over this one's, for the others this one's over
 * the first's. */
static double scale_ratio(double first, double row, int higher_is_better)
{
	if (higher_is_better)
		return row > 0 ? first / row : 0;
	return first > 0 ? row / first : 0;
}

/* Under the table: each row's worst column against the empty store's,
 * the budget being 1.5x, and the one-event rate against the ceiling (85%). */
static void scale_budgets(void)
{
	static const char *col[] = {"events/s", "p50", "p99", "CPU", "KiB"};
	printf("\nAgainst the budgets (every row within 1.5x of the empty store; one-event transactions\n"
	       "at 85%% of the ceiling or more):\n");
	const struct scale_done *e = &scale_done[0];
	for (unsigned i = 0; i < scale_ndone; i++) {
		const struct scale_done *d = &scale_done[i];
		double worst = 0;
		char what[48] = "";
		for (int k = 0; k < 2; k++) {
			const struct scale_fig *a = k ? &e->f1 : &e->f100, *b = k ? &d->f1 : &d->f100;
			double r[5] = {scale_ratio(a->ev_s, b->ev_s, 1), scale_ratio(a->p50_ms, b->p50_ms, 0),
			               scale_ratio(a->p99_ms, b->p99_ms, 0),
			               scale_ratio(a->cpu_ms, b->cpu_ms, 0), scale_ratio(a->kib, b->kib, 0)};
			for (int c = 0; c < 5; c++) {
				if (r[c] > worst) {
					worst = r[c];
					snprintf(what, sizeof(what), "%s, %s", col[c],
					         k ? "1-event" : "100-event");
				}
			}
		}
		printf("  %-22s %s worst %.2fx (%s); %%ceil %.1f%% %s\n", d->row,
		       i == 0         ? "(the reference)"
		       : worst <= 1.5 ? "within: "
		                      : "OVER:   ",
		       worst, what, d->pct_ceil, d->pct_ceil >= 85 ? "" : "(under 85%)");
	}
}

/* The same load as the table's, @p n 100-event transactions of it, before a
 * row's store is filled, with the outbox sending the rejects it makes to the
 * homeserver in this process as they come: every row's store then has as
 * long a history (its index of event ids, LMDB's list of free pages), so
 * that a row differs from the empty store's only in what it is about. */
static void scale_run_in(struct scale_store *ss, unsigned n)
{
	outbox *ob;
	if (outbox_start(ss->st, ss->env.cfg, NULL, &ob) != TH_OK)
		exit(1);
	struct scale_fig f;
	for (unsigned done = 0; done < n; done += 100)
		scale_measure(&ss->env, 100, n - done < 100 ? n - done : 100, 0, &f, NULL);
	for (int i = 0; outbox_pending(ob) > 0; i++) {
		if (i == 6000) {
			fprintf(stderr, "bench: the run-in's rejects did not drain in 10 minutes\n");
			exit(1);
		}
		struct timespec ts = {0, 100 * 1000000L};
		nanosleep(&ts, NULL);
	}
	outbox_stop(ob);
}

/* Actions the outbox removed per removal commit between @p a and @p b. */
static double per_commit(const struct outbox_stats *a, const struct outbox_stats *b)
{
	uint64_t commits = b->commits - a->commits;
	return commits ? (double)(b->removed - a->removed) / (double)commits : 0;
}

/* One row: the 100-event and 1-event loads on @p ss as it stands, and the
 * ceiling of bare one-key commits on the same store, measured between them. */
static void scale_row(struct scale_store *ss, const struct scale_sizes *z, unsigned guests, const char *row,
                      const char *note)
{
	struct scale_fig f100, f1;
	double ceil = 0;
	scale_measure(&ss->env, 100, z->txns100, guests, &f100, NULL);
	scale_measure(&ss->env, 1, z->txns1, guests, &f1, &ceil);
	scale_print(row, &f100, &f1, ceil, note);
}

static void bench_scale(const struct config *base_cfg, const char *dir, const struct scale_sizes *z)
{
	struct config sc = *base_cfg; /* borrowed strings; local users are staff (roles.staff_all_local) */
	sc.staff_all_local = 1;
	/* The outbox sends to a homeserver in this process that answers at once
	 * (the run-in's rejects, the backlog row's queue). */
	struct MHD_Daemon *hs = local_homeserver(&sc);
	char *url = sc.hs_url;
	sc.as_token = "bench_as_token";
	const struct config *cfg = &sc;
	printf("\nPer-event cost against what is stored: 100-event and 1-event transactions, one event in\n"
	       "ten a stranger's invite of a guest (refused: an audit record and a reject action).\n"
	       "Latency is to the durable commit (the ack, less HTTP); CPU is the transaction thread's;\n"
	       "KiB is what one transaction hands the kernel; %%ceil is the 1-event rate against bare\n"
	       "one-key commits on the same store, ten of each in turn.  Every row's store first takes\n"
	       "the same %u events of the load (its history), then what the row is about.\n\n",
	       z->run_in * 100);
	printf("%-22s | %-38s | %-43s |\n", "", "100-event transactions", "1-event transactions");
	printf("%-22s | %8s %6s %6s %6s %7s | %6s %6s %6s %6s %5s %5s |\n", "store", "events/s", "p50ms",
	       "p99ms", "CPUms", "KiB", "ev/s", "p50ms", "p99ms", "CPUms", "KiB", "%ceil");
	struct scale_store ss;
	char note[128];

	scale_open(&ss, cfg, dir, "empty");
	scale_run_in(&ss, z->run_in);
	scale_row(&ss, z, 0, "empty store", "");
	scale_close(&ss);

	scale_open(&ss, cfg, dir, "rooms");
	scale_run_in(&ss, z->run_in);
	scale_rooms(&ss, z->members);
	snprintf(note, sizeof(note), "%u rooms x %u members (half a stranger's invitees)", SCALE_ROOMS,
	         z->members);
	char row[40];
	snprintf(row, sizeof(row), "rooms of %u members", z->members);
	scale_row(&ss, z, 0, row, note);
	scale_close(&ss);

	scale_open(&ss, cfg, dir, "guests");
	scale_run_in(&ss, z->run_in);
	scale_guests(&ss, z->guests);
	snprintf(row, sizeof(row), "%u guests", z->guests);
	scale_row(&ss, z, z->guests, row, "invites name existing guests");
	scale_close(&ss);

	scale_open(&ss, cfg, dir, "audit");
	scale_run_in(&ss, z->run_in);
	scale_audit(&ss, z->audit);
	snprintf(row, sizeof(row), "%u audit records", z->audit);
	scale_row(&ss, z, 0, row, "");
	scale_close(&ss);

	/* The backlog drains against the homeserver in this process. */
	scale_open(&ss, cfg, dir, "backlog");
	scale_run_in(&ss, z->run_in);
	scale_queue(&ss, z->backlog);
	outbox *ob;
	if (outbox_start(ss.st, cfg, NULL, &ob) != TH_OK)
		exit(1);
	struct scale_fig f100, f1;
	double ceil = 0;
	struct outbox_stats o0, o1, o2;
	outbox_stats_get(ob, &o0);
	double t0 = now_s();
	scale_measure(&ss.env, 100, z->txns100, 0, &f100, NULL);
	double t1 = now_s();
	outbox_stats_get(ob, &o1);
	size_t left100 = outbox_pending(ob);
	scale_measure(&ss.env, 1, z->txns1, 0, &f1, &ceil);
	outbox_stats_get(ob, &o2);
	double t2 = now_s();
	size_t left1 = outbox_pending(ob);
	outbox_stop(ob);
	snprintf(row, sizeof(row), "%u-action backlog", z->backlog);
	snprintf(note, sizeof(note), "drained %.0f/s, %.0f/s (%.0f, %.0f a commit); left %zu, %zu",
	         (double)(o1.removed - o0.removed) / (t1 - t0), (double)(o2.removed - o1.removed) / (t2 - t1),
	         per_commit(&o0, &o1), per_commit(&o1, &o2), left100, left1);
	scale_print(row, &f100, &f1, ceil, note);
	scale_close(&ss);
	MHD_stop_daemon(hs);
	free(url);
	scale_budgets();
	printf("\n");
}

/* Start the real daemon (no homeserver needed: it retries its ping) and read RssAnon. */
static long idle_rss_kib(const char *threshold, const char *dir)
{
	char *cfgpath = xasprintf("%s/bench-config.yaml", dir);
	char *reg = xasprintf("%s/bench-registration.yaml", dir);
	FILE *f = fopen(cfgpath, "w");
	fprintf(f,
	        "homeserver:\n  url: http://127.0.0.1:9\n  server_name: bench.local\n"
	        "appservice:\n  listen_port: 29399\n  registration: %s\n"
	        "store:\n  path: %s/idle-store\n  map_size_mb: 64\nlog:\n  level: error\n",
	        reg, dir);
	fclose(f);
	pid_t pid = fork();
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, 1);
		dup2(devnull, 2);
		execl(threshold, threshold, "-c", cfgpath, "generate-registration", "--force", (char *)NULL);
		_exit(127);
	}
	int status;
	waitpid(pid, &status, 0);
	pid = fork();
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, 2);
		execl(threshold, threshold, "-c", cfgpath, "serve", (char *)NULL);
		_exit(127);
	}
	sleep(3);
	char *statpath = xasprintf("/proc/%d/status", (int)pid);
	long kib = -1;
	FILE *s = fopen(statpath, "r");
	char line[256];
	while (s && fgets(line, sizeof(line), s)) {
		if (sscanf(line, "RssAnon: %ld kB", &kib) == 1)
			break;
	}
	if (s)
		fclose(s);
	kill(pid, SIGTERM);
	waitpid(pid, &status, 0);
	free(statpath);
	free(cfgpath);
	free(reg);
	return kib;
}

/* ---- which pages a one-event commit writes (bench/lmdb_pages.py reads the copies) ---- */

static void pages_copy(const char *dir, const char *name)
{
	char *cmd = xasprintf("cp '%s/scale-pages/store/data.mdb' '%s/%s.mdb'", dir, dir, name);
	if (system(cmd) != 0) {
		fprintf(stderr, "bench: could not copy the store\n");
		exit(1);
	}
	free(cmd);
}

/* A store in @p dir/scale-pages given @p fill 100-event transactions of the
 * table's load, then copies of its data file around one one-event message
 * and one one-event refused invite: DIR/{msg,inv}-{before,after}.mdb.  The
 * store is left in place for the script to read. */
static void bench_pages(const struct config *base_cfg, const char *dir, unsigned fill, unsigned naudit)
{
	struct config sc = *base_cfg;
	sc.staff_all_local = 1;
	struct scale_store ss;
	struct scale_fig f;
	scale_open(&ss, &sc, dir, "pages");
	if (naudit)
		scale_audit(&ss, naudit);               /* the table's audit row, smaller or as large */
	scale_measure(&ss.env, 100, fill, 0, &f, NULL); /* ids now a multiple of ten: messages next */
	scale_measure(&ss.env, 1, 1, 0, &f, NULL);      /* a first one-event commit settles the free list */
	pages_copy(dir, "msg-before");
	scale_measure(&ss.env, 1, 1, 0, &f, NULL);
	pages_copy(dir, "msg-after");
	printf("one-event message: %.1f KiB written\n", f.kib);
	scale_measure(&ss.env, 1, 7, 0, &f, NULL);
	pages_copy(dir, "inv-before");
	scale_measure(&ss.env, 1, 1, 0, &f, NULL); /* the tenth: a stranger's invite, refused */
	pages_copy(dir, "inv-after");
	printf("one-event refused invite: %.1f KiB written\n", f.kib);
	/* The next 40: one of them moves the record of recent event ids into events_seen (dedupe.h). */
	printf("the next 40 one-event commits, KiB each:");
	for (int i = 0; i < 40; i++) {
		scale_measure(&ss.env, 1, 1, 0, &f, NULL);
		printf(" %.0f", f.kib);
	}
	printf("\n");
	/* What the load writes on average: the batches (events_seen, the audit
	 * index) spread over the commits that did not write them. */
	double sum = 0, max = 0;
	for (int i = 0; i < 1000; i++) {
		scale_measure(&ss.env, 1, 1, 0, &f, NULL);
		sum += f.kib;
		if (f.kib > max)
			max = f.kib;
	}
	printf("the next 1000 one-event commits: %.1f KiB each on average, %.0f KiB at most\n", sum / 1000,
	       max);
	audit_close(ss.au);
	store_close(ss.st);
	free(ss.dir);
}

int main(int argc, char **argv)
{
	const char *threshold = NULL, *base = getenv("TMPDIR");
	int quick = 0, table_only = 0, no_table = 0;
	const char *pages_dir = NULL;
	unsigned pages_fill = 200, pages_audit = 0;
	struct scale_sizes z = {1000, 100000, 1000000, 10000, 300, 1000, 2000};
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--threshold") && i + 1 < argc)
			threshold = argv[++i];
		else if (!strcmp(argv[i], "--members") && i + 1 < argc)
			z.members = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--guests") && i + 1 < argc)
			z.guests = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--audit") && i + 1 < argc)
			z.audit = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--backlog") && i + 1 < argc)
			z.backlog = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--run-in") && i + 1 < argc)
			z.run_in = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--table-only"))
			table_only = 1;
		else if (!strcmp(argv[i], "--no-table"))
			no_table = 1;
		else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			base = argv[++i];
		else if (!strcmp(argv[i], "--quick"))
			quick = 1;
		else if (!strcmp(argv[i], "--pages") && i + 1 < argc)
			pages_dir = argv[++i];
		else if (!strcmp(argv[i], "--pages-fill") && i + 1 < argc)
			pages_fill = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--pages-audit") && i + 1 < argc)
			pages_audit = (unsigned)strtoul(argv[++i], NULL, 10);
		else {
			fprintf(stderr,
			        "usage: threshold-bench [--threshold PATH] [--dir DIR] [--quick] "
			        "[--table-only|--no-table]\n"
			        "       [--members N] [--guests N] [--audit N] [--backlog N] [--run-in N]\n"
			        "       threshold-bench --pages DIR [--pages-fill N] [--pages-audit N]\n");
			return 2;
		}
	}
	log_threshold = LOG_ERROR;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	char *tmpl = xasprintf("%s/threshold-bench-XXXXXX", base && *base ? base : "/tmp");
	char *dir = mkdtemp(tmpl);
	if (!dir) {
		perror("mkdtemp");
		return 1;
	}

	double f50 = 0, f99 = 0, frate = 0;
	if (!pages_dir)
		bench_fsync(dir, quick ? 200 : 1000, &f50, &f99, &frate);

	struct config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.server_name = xstrdup("bench.local");
	cfg.bot_localpart = xstrdup("threshold");
	cfg.guest_prefix = xstrdup("guest_");
	cfg.bot_user_id = xstrdup("@threshold:bench.local");
	cfg.listen_address = xstrdup("127.0.0.1");
	cfg.hs_token = xstrdup("bench_hs_token_0123456789");
	cfg.max_body_bytes = 8 * 1024 * 1024;
	cfg.max_json_depth = 64;
	if (pages_dir) {
		rmdir(dir);
		bench_pages(&cfg, pages_dir, pages_fill, pages_audit);
		config_free(&cfg);
		free(tmpl);
		curl_global_cleanup();
		return 0;
	}
	if (quick) {
		/* small, unless given: the table's shape in seconds */
		for (int i = 1; i < argc; i++) {
			if (!strcmp(argv[i], "--members") || !strcmp(argv[i], "--guests") ||
			    !strcmp(argv[i], "--audit") || !strcmp(argv[i], "--backlog") ||
			    !strcmp(argv[i], "--run-in"))
				goto sized;
		}
		z = (struct scale_sizes){100, 10000, 50000, 2000, 20, 200, 100};
	sized:;
	}
	if (quick)
		z.txns100 = 20, z.txns1 = 200;
	if (!no_table)
		bench_scale(&cfg, dir, &z);
	if (table_only) {
		char *cmd = xasprintf("rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "bench: could not remove %s\n", dir);
		free(cmd);
		config_free(&cfg);
		free(tmpl);
		curl_global_cleanup();
		return 0;
	}
	char *storepath = xasprintf("%s/store", dir);
	store *st;
	if (store_open(storepath, 4096, &st) != TH_OK)
		return 1;

	double ev_s, tx_s, ceiling, one_tx_s, one_ratio, kib_ceiling, kib_one;
	bench_txns(&cfg, st, quick ? 50 : 300, 100, &ev_s, &tx_s);
	bench_one_event(&cfg, st, quick ? 5 : 15, 100, &ceiling, &one_tx_s, &one_ratio, &kib_ceiling,
	                &kib_one);
	double a50, a99;
	bench_ack(&cfg, st, quick ? 50 : 300, &a50, &a99);
	double pol50, pol99, pol_mean, clock_ns;
	bench_policy(&pol50, &pol99, &pol_mean, &clock_ns);
	store_close(st);
	double idle_txn_s, busy_txn_s, drain_s;
	bench_backlog(&cfg, dir, 10000, &idle_txn_s, &busy_txn_s, &drain_s);
	long rss = threshold ? idle_rss_kib(threshold, dir) : -1;

	/* The audit log: append cost, then verify, then (full run) reads at 1M records. */
	struct audit_bench ab;
	audit_bench_open(&ab, dir);
	uint64_t nverify = quick ? 20000 : 200000, verified = 0;
	audit_fill(&ab, nverify);
	double append_cpu_us = ab.cpu_s / (double)ab.records * 1e6;
	double append_sys_us = ab.sys_s / (double)ab.records * 1e6;
	double verify_rate = bench_audit_verify(&ab, &verified);
	double subject_ms = -1, scan_ms = -1, cli_ms = -1, cli_kind_ms = -1, cli_room_ms = -1;
	size_t per_subject = 0, scanned = 0;
	if (!quick) {
		audit_fill(&ab, 1000000 - ab.records);
		subject_ms = bench_audit_by_subject(&ab, 200, &per_subject);
		scan_ms = bench_audit_scan(&ab, &scanned);
		if (threshold) {
			cli_ms = bench_audit_cli(threshold, &ab, "--subject", NULL, NULL, NULL);
			cli_kind_ms = bench_audit_cli(threshold, &ab, "--kind", "data_erased", NULL, NULL);
			cli_room_ms = bench_audit_cli(threshold, &ab, "--room", "!room004242:remote.example",
			                              "--since", "1h");
		}
	}
	audit_bench_close(&ab);

	char b[64];
	add_row("disk fsync (4 KiB + fdatasync)", "-", -1, "%.0f/s, p50 %.2f ms, p99 %.2f ms", frate,
	        f50 * 1e3, f99 * 1e3);
	add_row("100-event transactions, durable", ">= 75000 events/s", ev_s >= 75000,
	        "%.0f events/s (%.0f txn/s)", ev_s, tx_s);
	add_row("durable LMDB commit ceiling", "-", -1, "%.0f commits/s, %.0f KiB written each", ceiling,
	        kib_ceiling);
	snprintf(b, sizeof(b), ">= 85%% of ceiling (%.0f/s)", ceiling * 0.85);
	add_row("1-event transactions, durable", b, one_ratio >= 0.85,
	        "%.0f txn/s (%.0f%% of ceiling), %.0f KiB each", one_tx_s, 100.0 * one_ratio, kib_one);
	snprintf(b, sizeof(b), "p99 <= %.2f ms", 2 * f99 * 1e3 + 2);
	add_row("ack latency, 100 events, HTTP", b, a99 * 1e3 <= 2 * f99 * 1e3 + 2,
	        "p50 %.2f ms, p99 %.2f ms", a50 * 1e3, a99 * 1e3);
	snprintf(b, sizeof(b), ">= 50%% of idle (%.0f txn/s)", idle_txn_s);
	add_row("100-event txns, 10k backlog drains", b, busy_txn_s >= 0.5 * idle_txn_s,
	        "%.0f txn/s (%.0f%% of idle); drain %.0f/s", busy_txn_s, 100.0 * busy_txn_s / idle_txn_s,
	        drain_s);
	add_row("policy decision", "p99 <= 50 us", pol99 <= 50000, "p50 %.0f ns, p99 %.0f ns (clock %.0f ns)",
	        pol50, pol99, clock_ns);
	if (rss >= 0)
		add_row("idle daemon memory (RssAnon)", "<= 10240 KiB", rss <= 10240, "%ld KiB", rss);
	else
		add_row("idle daemon memory (RssAnon)", "<= 10240 KiB", -1,
		        "not measured (pass --threshold)");
	add_row("audit append (CPU, excl. fsync)", "<= 5 us per record", append_cpu_us <= 5.0,
	        "%.2f us CPU per record (%.2f us kernel)", append_cpu_us, append_sys_us);
	add_row("audit verify", "-", -1, "%.0f records/s (%llu records)", verify_rate,
	        (unsigned long long)verified);
	if (!quick) {
		add_row("audit list by subject, 1M records", "-", -1, "%.3f ms (%zu records of the subject)",
		        subject_ms, per_subject);
		add_row("audit list by kind, 1M (index)", "-", -1, "%.3f ms (%zu match)", scan_ms, scanned);
		if (cli_ms >= 0) {
			add_row("`audit list --subject`, 1M records", "-", -1,
			        "%.1f ms (process, record, output)", cli_ms);
			add_row("`audit list --kind` (rare), 1M", "-", -1,
			        "%.1f ms (process, record, output)", cli_kind_ms);
			add_row("`audit list --room --since 1h`, 1M", "-", -1,
			        "%.1f ms (process, record, output)", cli_room_ms);
		} else
			add_row("`audit list --subject`, 1M records", "-", -1,
			        "not measured (pass --threshold)");
	} else {
		add_row("audit list by subject, 1M records", "-", -1, "not measured (--quick)");
	}

	printf("\nThreshold %s benchmark (%s)\n\n", THRESHOLD_VERSION, quick ? "quick" : "full");
	printf("%-34s %-40s %-26s %s\n", "what", "measured", "budget", "");
	printf("%-34s %-40s %-26s %s\n", "----", "--------", "------", "");
	for (size_t i = 0; i < nrows; i++)
		printf("%-34s %-40s %-26s %s\n", rows[i].what, rows[i].measured, rows[i].budget,
		       rows[i].verdict);
	printf("\n");

	char *cmd = xasprintf("rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench: could not remove %s\n", dir);
	free(cmd);
	free(storepath);
	config_free(&cfg);
	free(tmpl);
	curl_global_cleanup();
	return 0;
}
