/*
 * audit_query.c - leads' "!audit ..." questions: parse, and answer from the
 * log.  Reads only; see audit_query.h.
 */
#include "audit_query.h"

#include <string.h>
#include <time.h>

#include "audit.h"
#include "util.h"

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
	}
	*out = q;
	return 1;
}

static const char *const query_names[AUDIT_QUERY_COUNT] = {
        [AUDIT_QUERY_USAGE] = "usage",
        [AUDIT_QUERY_RECENT] = "recent",
        [AUDIT_QUERY_GUEST] = "guest",
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

int audit_query_answer(store_txn *t, const struct audit_query *q, struct audit_answer *out)
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
	default:
		a.text = xasprintf("Audit questions (safeguarding leads, in this room):\n"
		                   "!audit recent - the last %d audit records\n"
		                   "!audit guest <pseudonym or user id> - one guest's records (the last %d)",
		                   AUDIT_QUERY_RECENT_N, AUDIT_QUERY_GUEST_N);
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
	free(a->text);
	a->text = NULL;
}
