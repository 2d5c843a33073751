/*
 * audit_query.c - leads' "!audit ..." questions: parse, and answer from the
 * log.  Reads only; see audit_query.h.
 */
#include "audit_query.h"

#include <ctype.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "util.h"

#define WS           " \t\n"
#define DAY_MS       (86400ull * 1000)
#define MAX_AGE_DAYS 36600ull /* a hundred years: anything longer means everything */

static const char *skip_ws(const char *s)
{
	return s + strspn(s, WS);
}

/* "7d", "24h": an age; "2026-11-01" or "2026-11-01T09:30:00Z": a UTC time. */
static int parse_since(const char *v, size_t n, struct audit_query *q)
{
	char buf[32];
	if (n == 0 || n >= sizeof(buf))
		return -1;
	memcpy(buf, v, n);
	buf[n] = '\0';
	char unit = buf[n - 1];
	if (unit == 'd' || unit == 'h') {
		buf[n - 1] = '\0';
		uint64_t k;
		uint64_t max = unit == 'd' ? MAX_AGE_DAYS : MAX_AGE_DAYS * 24;
		if (th_parse_u64(buf, max, &k) != TH_OK || k == 0)
			return -1;
		q->since_ago_ms = k * (unit == 'd' ? DAY_MS : DAY_MS / 24);
		return 0;
	}
	unsigned y, mo, d, h = 0, mi = 0, sec = 0;
	int used = 0;
	if (sscanf(buf, "%4u-%2u-%2u%n", &y, &mo, &d, &used) != 3 || used != 10)
		return -1;
	if (buf[used]) {
		int more = 0;
		if (sscanf(buf + used, "T%2u:%2u:%2uZ%n", &h, &mi, &sec, &more) != 3 || buf[used + more])
			return -1;
	}
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 59)
		return -1;
	struct tm tm = {.tm_year = (int)y - 1900,
	                .tm_mon = (int)mo - 1,
	                .tm_mday = (int)d,
	                .tm_hour = (int)h,
	                .tm_min = (int)mi,
	                .tm_sec = (int)sec};
	time_t t = timegm(&tm);
	if (t < 0)
		return -1;
	q->since_ms = (uint64_t)t * 1000;
	return 0;
}

/* After "export": nothing, or "--since VALUE". */
static int parse_export(const char *rest, struct audit_query *q)
{
	rest = skip_ws(rest);
	if (!*rest)
		return 0;
	if (strncmp(rest, "--since", 7) != 0 || !strchr(WS, rest[7]) || !rest[7])
		return -1;
	const char *v = skip_ws(rest + 7);
	size_t n = strcspn(v, WS);
	if (parse_since(v, n, q))
		return -1;
	return *skip_ws(v + n) ? -1 : 0;
}

/* Characters (UTF-8 code points) in @p s. */
static size_t utf8_chars(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += ((unsigned char)*s & 0xc0) != 0x80;
	return n;
}

static int all_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return 0;
	}
	return n > 0;
}

/* After "reveal": WHO REASON, WHO being a user id, a "quoted pseudonym", or
 * an unquoted one: two words and an optional number ("Amber Otter 2"). */
static int parse_reveal(const char *rest, struct audit_query *q)
{
	const char *who = skip_ws(rest), *end;
	size_t wlen;
	if (*who == '"') {
		who++;
		end = strchr(who, '"');
		if (!end)
			return -1;
		wlen = (size_t)(end - who);
		end++;
	} else if (*who == '@') {
		wlen = strcspn(who, WS);
		end = who + wlen;
	} else {
		const char *p = who;
		for (int word = 0; word < 2; word++) {
			p = skip_ws(p);
			size_t n = strcspn(p, WS);
			if (!n)
				return -1;
			p += n;
		}
		const char *num = skip_ws(p);
		size_t n = strcspn(num, WS);
		if (all_digits(num, n))
			p = num + n;
		end = p;
		wlen = (size_t)(end - who);
	}
	if (wlen == 0 || (*end && !strchr(WS, *end)))
		return -1;
	if (wlen > AUDIT_QUERY_MAX_ARG)
		q->arg_too_long = 1;
	else
		memcpy(q->arg, who, wlen);
	const char *why = skip_ws(end);
	size_t rlen = strlen(why);
	while (rlen > 0 && strchr(WS, why[rlen - 1]))
		rlen--;
	if (rlen > AUDIT_QUERY_MAX_REASON)
		return -1;
	memcpy(q->reason, why, rlen);
	q->reason[rlen] = '\0';
	return utf8_chars(q->reason) >= AUDIT_QUERY_MIN_REASON ? 0 : -1;
}

uint64_t audit_query_since_ms(const struct audit_query *q, uint64_t now_ms)
{
	if (q->since_ago_ms)
		return now_ms > q->since_ago_ms ? now_ms - q->since_ago_ms : 0;
	return q->since_ms;
}

int audit_query_parse(const char *body, struct audit_query *out)
{
	if (!body)
		return 0;
	while (*body == ' ')
		body++;
	size_t plen = strlen(AUDIT_QUERY_PREFIX);
	if (strncmp(body, AUDIT_QUERY_PREFIX, plen) != 0 ||
	    (body[plen] != '\0' && body[plen] != ' ' && body[plen] != '\n' && body[plen] != '\t'))
		return 0;
	struct audit_query q;
	memset(&q, 0, sizeof(q));
	const char *verb = body + plen;
	verb += strspn(verb, " \t\n");
	size_t vlen = strcspn(verb, " \t\n");
	if (vlen == 6 && strncmp(verb, "recent", 6) == 0) {
		q.kind = AUDIT_QUERY_RECENT;
	} else if (vlen == 5 && strncmp(verb, "guest", 5) == 0) {
		const char *who = verb + vlen;
		who += strspn(who, " \t\n");
		size_t wlen = strlen(who);
		while (wlen > 0 && strchr(" \t\n", who[wlen - 1]))
			wlen--;
		q.kind = wlen ? AUDIT_QUERY_GUEST : AUDIT_QUERY_USAGE;
		if (wlen > AUDIT_QUERY_MAX_ARG)
			q.arg_too_long = 1;
		else
			memcpy(q.arg, who, wlen);
	} else if (vlen == 6 && strncmp(verb, "export", 6) == 0) {
		q.kind = parse_export(verb + vlen, &q) ? AUDIT_QUERY_USAGE : AUDIT_QUERY_EXPORT;
		q.usage_of = AUDIT_QUERY_EXPORT;
	} else if (vlen == 6 && strncmp(verb, "reveal", 6) == 0) {
		if (parse_reveal(verb + vlen, &q) == 0) {
			q.kind = AUDIT_QUERY_REVEAL;
		} else {
			memset(&q, 0, sizeof(q));
			q.kind = AUDIT_QUERY_USAGE;
		}
		q.usage_of = AUDIT_QUERY_REVEAL;
	}
	if (q.kind == AUDIT_QUERY_USAGE) {
		/* A usage answer carries nothing the sender typed. */
		enum audit_query_kind of = q.usage_of;
		memset(&q, 0, sizeof(q));
		q.usage_of = of;
	}
	*out = q;
	return 1;
}

static const char *const query_names[AUDIT_QUERY_COUNT] = {
        [AUDIT_QUERY_USAGE] = "usage",   [AUDIT_QUERY_RECENT] = "recent", [AUDIT_QUERY_GUEST] = "guest",
        [AUDIT_QUERY_EXPORT] = "export", [AUDIT_QUERY_REVEAL] = "reveal",
};

const char *audit_query_name(enum audit_query_kind kind)
{
	return (unsigned)kind < AUDIT_QUERY_COUNT ? query_names[kind] : NULL;
}

/* The newest lines seen, oldest first once the walk is done. */
struct ring {
	char *line[AUDIT_QUERY_GUEST_N];
	size_t cap;    /* lines kept: at most AUDIT_QUERY_GUEST_N */
	uint64_t seen; /* lines offered */
};

static void ring_push(struct ring *r, char *line)
{
	size_t i = (size_t)(r->seen % r->cap);
	free(r->line[i]);
	r->line[i] = line;
	r->seen++;
}

static size_t ring_len(const struct ring *r)
{
	return r->seen < r->cap ? (size_t)r->seen : r->cap;
}

/* The @p i th kept line, oldest first. */
static const char *ring_at(const struct ring *r, size_t i)
{
	size_t first = r->seen < r->cap ? 0 : (size_t)(r->seen % r->cap);
	return r->line[(first + i) % r->cap];
}

static void ring_clear(struct ring *r)
{
	for (size_t i = 0; i < AUDIT_QUERY_GUEST_N; i++) {
		free(r->line[i]);
		r->line[i] = NULL;
	}
	r->seen = 0;
}

static const char *field(const json_t *rec, const char *key)
{
	const char *s = json_string_value(json_object_get(rec, key));
	return s ? s : "-";
}

/* One record, ids only: "#12 2026-11-22T11:40:02Z contact_blocked actor=... subject=... reason=...". */
static int ring_add_record(void *ctx, uint64_t seq, const json_t *rec, const char *raw, size_t rawlen)
{
	struct ring *r = ctx;
	(void)raw;
	(void)rawlen;
	const char *kind = field(rec, "kind");
	if (strcmp(kind, audit_kind_name(AUDIT_CHECKPOINT)) == 0)
		return 0;
	char when[32] = "?";
	json_int_t ms = json_integer_value(json_object_get(rec, "ts"));
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	if (ms >= 0 && gmtime_r(&s, &tm))
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	ring_push(r, xasprintf("#%llu %s %s actor=%s subject=%s reason=%s", (unsigned long long)seq, when,
	                       kind, field(rec, "actor"), field(rec, "subject"), field(rec, "reason")));
	return 0;
}

/* header, then the newest kept lines that fit under the cap, oldest first. */
static char *render(const char *header, const struct ring *r)
{
	size_t n = ring_len(r), first = n, used = strlen(header) + 1;
	const char *cut = "\n(older records left out: the message would be too long)";
	size_t budget = AUDIT_QUERY_MAX_TEXT - strlen(cut) - 1;
	while (first > 0 && used + 1 + strlen(ring_at(r, first - 1)) <= budget) {
		used += 1 + strlen(ring_at(r, first - 1));
		first--;
	}
	size_t total = used + (first ? strlen(cut) : 0);
	char *text = xmalloc(total + 1), *p = text;
	size_t hlen = strlen(header);
	memcpy(p, header, hlen);
	p += hlen;
	if (first) {
		memcpy(p, cut, strlen(cut));
		p += strlen(cut);
	}
	for (size_t i = first; i < n; i++) {
		size_t len = strlen(ring_at(r, i));
		*p++ = '\n';
		memcpy(p, ring_at(r, i), len);
		p += len;
	}
	*p = '\0';
	return text;
}

static int answer_recent(store_txn *t, char **text)
{
	uint64_t head;
	unsigned char hash[AUDIT_HASH_LEN];
	int rc = audit_head(t, &head, hash);
	if (rc)
		return rc;
	struct ring r = {.cap = AUDIT_QUERY_RECENT_N};
	struct audit_filter f;
	audit_filter_init(&f);
	/* Read only the tail.  A checkpoint always follows at least one other
	 * record (audit_checkpoint adds none to an unchanged log), so any 2N
	 * consecutive records hold at least N that are not checkpoints. */
	uint64_t window = 2 * AUDIT_QUERY_RECENT_N;
	f.min_seq = head > window ? head - window + 1 : 0;
	rc = audit_iter(t, &f, ring_add_record, &r);
	if (!rc) {
		char *header = ring_len(&r)
		                       ? xasprintf("The last %zu audit records, oldest first:", ring_len(&r))
		                       : xstrdup("The audit log has no records yet.");
		*text = render(header, &r);
		free(header);
	}
	ring_clear(&r);
	return rc;
}

static int answer_guest(store_txn *t, const struct audit_query *q, struct audit_answer *out)
{
	if (q->arg_too_long) {
		out->text = xstrdup("No guest has a name or id that long.");
		return TH_OK;
	}
	struct guest g;
	int rc = q->arg[0] == '@' ? guests_get(t, q->arg, &g) : guests_find_by_pseudonym(t, q->arg, &g);
	if (rc == TH_ENOTFOUND) {
		out->text = xasprintf("No guest called %s.", q->arg);
		return TH_OK;
	}
	if (rc)
		return rc;
	struct ring r = {.cap = AUDIT_QUERY_GUEST_N};
	struct audit_filter f;
	audit_filter_init(&f);
	f.subject = g.user_id;
	rc = audit_iter(t, &f, ring_add_record, &r);
	if (!rc) {
		char *header;
		if (r.seen > ring_len(&r))
			header = xasprintf(
			        "Audit records about guest %s (%s): the last %zu of %llu, oldest first:",
			        g.pseudonym, g.user_id, ring_len(&r), (unsigned long long)r.seen);
		else if (r.seen)
			header = xasprintf("Audit records about guest %s (%s), oldest first:", g.pseudonym,
			                   g.user_id);
		else
			header = xasprintf("No audit records about guest %s (%s).", g.pseudonym, g.user_id);
		out->text = render(header, &r);
		free(header);
		memcpy(out->subject, g.user_id, sizeof(out->subject));
	}
	ring_clear(&r);
	return rc;
}

/* The sealed detail of one subject, opened, as lines of text. */
struct reveal {
	audit *au;
	store_txn *t;
	const char *subject;
	char *text; /* what is shown so far (new string) */
	size_t len;
	unsigned opened, erased, failed, left_out;
};

static void reveal_add(struct reveal *r, const char *line)
{
	size_t n = strlen(line);
	if (r->len + 1 + n > AUDIT_QUERY_MAX_TEXT - 1000) { /* room for the head and tail */
		r->left_out++;
		return;
	}
	r->text = xrealloc(r->text, r->len + 1 + n + 1);
	r->text[r->len++] = '\n';
	memcpy(r->text + r->len, line, n + 1);
	r->len += n;
}

static int reveal_one(void *ctx, uint64_t seq, const json_t *rec, const char *raw, size_t rawlen)
{
	struct reveal *r = ctx;
	(void)raw;
	(void)rawlen;
	const char *sealed = json_string_value(json_object_get(rec, "sealed"));
	if (!sealed)
		return 0;
	char *plain = NULL;
	int rc = audit_unseal(r->au, r->t, r->subject, sealed, &plain);
	if (rc == TH_ENOTFOUND) {
		r->erased++;
		return 0;
	}
	if (rc == TH_ESTORE || rc == TH_EIO)
		return -rc;
	char *line;
	if (rc) {
		r->failed++;
		line = xasprintf("#%llu %s: could not be opened (%s)", (unsigned long long)seq,
		                 field(rec, "kind"), th_strerror(rc));
	} else {
		for (unsigned char *p = (unsigned char *)plain; *p; p++) {
			if ((*p < 0x20 && *p != '\n') || *p == 0x7f)
				*p = '?';
		}
		r->opened++;
		line = xasprintf("#%llu %s: %s", (unsigned long long)seq, field(rec, "kind"), plain);
		explicit_bzero(plain, strlen(plain));
		free(plain);
	}
	reveal_add(r, line);
	free(line);
	return 0;
}

/* The first line says, before anything else, that this is on the record. */
#define REVEAL_WARNING AUDIT_QUERY_REVEAL_MARK " with your user id and reason."

static int answer_reveal(audit *au, store_txn *t, const struct audit_query *q, struct audit_answer *out)
{
	if (q->arg_too_long) {
		out->text = xstrdup(REVEAL_WARNING
		                    "\nNo guest has a name or id that long. Nothing was revealed.");
		return TH_OK;
	}
	struct guest g;
	int rc = q->arg[0] == '@' ? guests_get(t, q->arg, &g) : guests_find_by_pseudonym(t, q->arg, &g);
	if (rc == TH_ENOTFOUND) {
		out->text = xasprintf(REVEAL_WARNING "\nNo guest called %s. Nothing was revealed.", q->arg);
		return TH_OK;
	}
	if (rc)
		return rc;
	memcpy(out->subject, g.user_id, sizeof(out->subject));
	if (!au) {
		out->text =
		        xasprintf(REVEAL_WARNING "\nThe audit log is not open: nothing about %s (%s) can be "
		                                 "opened.",
		                  g.pseudonym, g.user_id);
		return TH_OK;
	}
	struct reveal r = {.au = au, .t = t, .subject = g.user_id};
	struct audit_filter f;
	audit_filter_init(&f);
	f.subject = g.user_id;
	rc = audit_iter(t, &f, reveal_one, &r);
	if (rc) {
		if (r.text)
			explicit_bzero(r.text, r.len);
		free(r.text);
		return rc;
	}
	char *head;
	if (r.opened || r.failed)
		head = xasprintf(REVEAL_WARNING "\nSealed detail held about guest %s (%s), by audit record:",
		                 g.pseudonym, g.user_id);
	else if (r.erased)
		head = xasprintf(REVEAL_WARNING
		                 "\nThe sealed detail about guest %s (%s) was erased: it can no "
		                 "longer be read.",
		                 g.pseudonym, g.user_id);
	else
		head = xasprintf(REVEAL_WARNING "\nNothing sealed is held about guest %s (%s).", g.pseudonym,
		                 g.user_id);
	char *tail = NULL;
	if ((r.opened || r.failed) && (r.erased || r.left_out))
		tail = xasprintf("\n(%u more erased, %u left out: the message would be too long)", r.erased,
		                 r.left_out);
	out->text = xasprintf("%s%s%s", head, r.text ? r.text : "", tail ? tail : "");
	if (r.text)
		explicit_bzero(r.text, r.len);
	free(r.text);
	free(head);
	free(tail);
	return TH_OK;
}

static char *usage_text(enum audit_query_kind of)
{
	switch (of) {
	case AUDIT_QUERY_EXPORT:
		return xstrdup("Usage: !audit export [--since 7d | 24h | YYYY-MM-DD | YYYY-MM-DDTHH:MM:SSZ]\n"
		               "Sends this room a signed export of the audit log as a file.");
	case AUDIT_QUERY_REVEAL:
		return xasprintf("Usage: !audit reveal <pseudonym or user id> <reason>\n"
		                 "The reason must be at least %d characters; it is kept in the audit log. "
		                 "Nothing was revealed.",
		                 AUDIT_QUERY_MIN_REASON);
	default:
		return xasprintf(
		        "Audit questions (safeguarding leads, in this room):\n"
		        "!audit recent - the last %d audit records\n"
		        "!audit guest <pseudonym or user id> - one guest's records (the last %d)\n"
		        "!audit export [--since 7d|24h|YYYY-MM-DD] - the log as a signed file\n"
		        "!audit reveal <pseudonym or user id> <reason> - open the sealed detail held "
		        "about a guest (recorded)",
		        AUDIT_QUERY_RECENT_N, AUDIT_QUERY_GUEST_N);
	}
}

int audit_query_answer(audit *au, store_txn *t, const struct audit_query *q, struct audit_answer *out)
{
	struct audit_answer a;
	memset(&a, 0, sizeof(a));
	int rc = TH_OK;
	switch (q->kind) {
	case AUDIT_QUERY_RECENT:
		rc = answer_recent(t, &a.text);
		break;
	case AUDIT_QUERY_GUEST:
		rc = answer_guest(t, q, &a);
		break;
	case AUDIT_QUERY_EXPORT:
		break; /* the outbox answers, with the file */
	case AUDIT_QUERY_REVEAL:
		rc = answer_reveal(au, t, q, &a);
		break;
	default:
		a.text = usage_text(q->usage_of);
		break;
	}
	if (rc) {
		audit_query_answer_free(&a);
		return rc;
	}
	*out = a;
	return TH_OK;
}

void audit_query_answer_free(struct audit_answer *a)
{
	if (!a)
		return;
	if (a->text)
		explicit_bzero(a->text, strlen(a->text)); /* a reveal's text is personal detail */
	free(a->text);
	a->text = NULL;
}
