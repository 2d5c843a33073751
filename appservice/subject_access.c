/*
 * subject_access.c - the subject access export of one guest: gathered in
 * one read transaction, recorded in the audit log, then written as text.
 * subject_access.h says what is in it and why.
 */
#include "subject_access.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "audit.h"
#include "config.h"
#include "daemon.h"
#include "feed.h"
#include "guests.h"
#include "guests_cli.h"
#include "jsonx.h"
#include "store.h"
#include "util.h"

#define MAX_EXPORT_BYTES (256u * 1024u * 1024u) /* a runaway guard, far above any one guest */

/* A growing text buffer. */
struct text {
	char *s;
	size_t n, cap;
	int too_large;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct text *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int need = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (need < 0 || t->too_large)
		return;
	if (t->n + (size_t)need + 1 > MAX_EXPORT_BYTES) {
		t->too_large = 1;
		return;
	}
	if (t->n + (size_t)need + 1 > t->cap) {
		t->cap = (t->n + (size_t)need + 1) * 2;
		t->s = xrealloc(t->s, t->cap);
	}
	va_start(ap, fmt);
	vsnprintf(t->s + t->n, t->cap - t->n, fmt, ap);
	va_end(ap);
	t->n += (size_t)need;
}

/* Text someone else chose, made safe for a terminal or a text editor:
 * control bytes other than a line break become '?', and each line after the
 * first is indented so it cannot pass for a heading.  New string. */
static char *clean(const char *s)
{
	if (!s)
		return xstrdup("");
	size_t lines = 1;
	for (const char *p = s; *p; p++)
		lines += *p == '\n';
	char *out = xmalloc(strlen(s) + 4 * lines + 1), *o = out;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '\n') {
			memcpy(o, "\n    ", 5);
			o += 5;
		} else {
			*o++ = (*p < 0x20 || *p == 0x7f) ? '?' : (char)*p;
		}
	}
	*o = '\0';
	return out;
}

static void fmt_time(char out[32], uint64_t ms)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	if (!ms || !gmtime_r(&s, &tm) || !strftime(out, 32, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(out, 32, "-");
}

/* ---- the conversation as the page showed it ---------------------------- */

static void feed_entry_text(struct text *t, const json_t *e)
{
	char when[32];
	fmt_time(when, (uint64_t)json_integer_value(json_object_get(e, "ts")));
	const char *kind = jsonx_str(e, "kind");
	const json_t *from = json_object_get(e, "from");
	const char *role = jsonx_str(from, "role"), *name = jsonx_str(from, "name");
	char *who;
	if (role && !strcmp(role, "self"))
		who = xasprintf("%s (the guest)", name ? name : "You");
	else if (role && !strcmp(role, "staff"))
		who = xasprintf("%s (staff)", name ? name : "Staff");
	else if (role && !strcmp(role, "guest"))
		who = xasprintf("%s (another guest)", name ? name : "Guest");
	else
		who = xstrdup(name ? name : "Service");
	char *cwho = clean(who), *body = clean(jsonx_str(e, "body"));
	free(who);
	if (kind && !strcmp(kind, "removed"))
		put(t, "[%s] (entry %lld was removed)\n", when,
		    (long long)json_integer_value(json_object_get(e, "entry")));
	else if (kind && !strcmp(kind, "edited"))
		put(t, "[%s] (entry %lld was edited to:) %s\n", when,
		    (long long)json_integer_value(json_object_get(e, "entry")), body);
	else if (kind && !strcmp(kind, "closed"))
		put(t, "[%s] (the conversation was closed) %s\n", when, body);
	else if (json_is_true(json_object_get(e, "removed")))
		put(t, "[%s] %s: (removed)\n", when, cwho);
	else
		put(t, "[%s] %s%s%s\n", when, cwho, *body ? ": " : "", body);
	const json_t *att = json_object_get(e, "attachment");
	if (att) {
		char *an = clean(jsonx_str(att, "name"));
		put(t, "      attachment: %s %s (%lld bytes; the file itself is on the homeserver)\n",
		    jsonx_str(att, "kind") ? jsonx_str(att, "kind") : "file", an,
		    (long long)json_integer_value(json_object_get(att, "size")));
		free(an);
	}
	free(cwho);
	free(body);
}

static int feed_text(store_txn *txn, const char *guest, struct text *t, size_t *count)
{
	uint64_t since = 0;
	for (;;) {
		json_t *events;
		uint64_t next;
		int rc = feed_read(txn, guest, since, &events, &next);
		if (rc)
			return rc;
		size_t i;
		json_t *e;
		json_array_foreach(events, i, e)
		{
			feed_entry_text(t, e);
			(*count)++;
		}
		size_t n = json_array_size(events);
		json_decref(events);
		if (n == 0 || next == since)
			return TH_OK;
		since = next;
	}
}

/* ---- audit records about them ------------------------------------------ */

struct rec_walk {
	audit *a;
	store_txn *t;
	const char *guest;
	struct text *consents, *records;
	size_t nconsents, nrecords, nsealed;
	int rc;
};

static int rec_one(void *ctx, uint64_t seq, const json_t *rec, const char *raw, size_t rawlen)
{
	(void)raw;
	(void)rawlen;
	struct rec_walk *w = ctx;
	char when[32];
	fmt_time(when, (uint64_t)json_integer_value(json_object_get(rec, "ts")));
	const char *kind = jsonx_str(rec, "kind");
	char *details = json_dumps(json_object_get(rec, "details"), JSON_COMPACT | JSON_SORT_KEYS);
	char *cd = clean(details), *actor = clean(jsonx_str(rec, "actor")),
	     *room = clean(jsonx_str(rec, "room"));
	free(details);
	int consent = kind && (!strcmp(kind, "consent_recorded") || !strcmp(kind, "consent_withdrawn"));
	struct text *out = consent ? w->consents : w->records;
	put(out, "#%llu  %s  %s%s%s%s%s  %s\n", (unsigned long long)seq, when, kind ? kind : "?",
	    *actor ? "  by " : "", actor, *room ? "  in " : "", room, cd);
	free(cd);
	free(actor);
	free(room);
	if (consent)
		w->nconsents++;
	else
		w->nrecords++;
	const char *sealed = jsonx_str(rec, "sealed");
	if (sealed) {
		char *plain = NULL;
		int rc = audit_unseal(w->a, w->t, w->guest, sealed, &plain);
		if (rc == TH_OK) {
			char *cp = clean(plain);
			put(out,
			    "      SEALED ITEM, decrypted for this export -- REVIEW BEFORE DISCLOSURE:\n"
			    "      %s\n",
			    cp);
			free(cp);
			free(plain);
			w->nsealed++;
		} else if (rc == TH_ENOTFOUND) {
			put(out, "      (sealed detail erased: it can no longer be read by anyone)\n");
		} else {
			put(out, "      (sealed detail that does not decrypt: %s; report this)\n",
			    th_strerror(rc));
		}
	}
	return 0;
}

/* ---- the command --------------------------------------------------------- */

/* The guest named by a user id, a localpart or a pseudonym. */
static int find_guest(const struct config *cfg, store_txn *t, const char *who, struct guest *g)
{
	if (who[0] == '@')
		return guests_get(t, who, g);
	int rc = guests_find_by_pseudonym(t, who, g);
	if (rc != TH_ENOTFOUND)
		return rc;
	char *id = xasprintf("@%s:%s", who, cfg->server_name);
	rc = guests_get(t, id, g);
	free(id);
	return rc;
}

static const char HEADER[] = "SUBJECT ACCESS EXPORT -- everything Threshold holds about one person\n"
                             "=====================================================================\n"
                             "\n"
                             "FOR THE SAFEGUARDING LEAD, BEFORE SENDING: read all of this file first.\n"
                             "Items marked \"REVIEW BEFORE DISCLOSURE\" were sealed (encrypted) in the\n"
                             "audit log: notes, concerns, contact details or flagged words about this\n"
                             "person. They are usually disclosable, but may hold another person's\n"
                             "details or something an exemption lets you withhold (for example where\n"
                             "disclosure would be likely to cause serious harm). Redact what you must\n"
                             "withhold, record why, and delete any copy you do not need once sent.\n"
                             "The homeserver (the staff's chat system) keeps its own copy of the\n"
                             "conversation room; see docs/privacy.md for what is kept where.\n"
                             "\n";

int subject_access_main(const struct config *cfg, int argc, char **argv)
{
	const char *out_path = NULL;
	char *who = NULL;
	for (int i = 1; i < argc; i++) {
		if ((!strcmp(argv[i], "--out") || !strcmp(argv[i], "-o")) && i + 1 < argc) {
			out_path = argv[++i];
		} else if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "threshold: guest export: unknown option '%s'\n", argv[i]);
			free(who);
			return GUESTS_EXIT_USAGE;
		} else {
			/* `export Amber Otter` means the pseudonym "Amber Otter". */
			char *w = who ? xasprintf("%s %s", who, argv[i]) : xstrdup(argv[i]);
			free(who);
			who = w;
		}
	}
	if (!who) {
		fprintf(stderr, "threshold: guest export: which guest? Give a user id or a pseudonym\n");
		return GUESTS_EXIT_USAGE;
	}

	int code = GUESTS_EXIT_FAIL;
	store *st = NULL;
	audit *a = NULL;
	store_txn *t = NULL;
	struct text doc = {0}, consents = {0}, records = {0}, conv = {0};
	struct guest g;
	size_t nentries = 0;
	if (store_open(cfg->store_path, cfg->map_size_mb, &st) != TH_OK) {
		fprintf(stderr, "threshold: guest export: cannot open the store %s (see above)\n",
		        cfg->store_path);
		goto out;
	}
	if (audit_open_config(st, cfg, &a) != TH_OK) {
		fprintf(stderr, "threshold: guest export: cannot open the audit log (see above)\n");
		goto out;
	}
	daemon_feed_sealer(a); /* the feed's entries are sealed under the guest's key */
	int rc = store_txn_begin(st, 0, &t);
	if (!rc)
		rc = find_guest(cfg, t, who, &g);
	if (rc == TH_ENOTFOUND) {
		char *cw = clean(who);
		fprintf(stderr, "threshold: guest export: no guest '%s'\n", cw);
		free(cw);
		goto out;
	}
	if (rc)
		goto store_fail;

	/* The conversation record, without its secrets. */
	json_t *cr = NULL;
	rc = store_get_json(t, STORE_CONVS, g.user_id, &cr);
	if (rc == TH_OK) {
		char c1[32], c2[32];
		fmt_time(c1, (uint64_t)json_integer_value(json_object_get(cr, "created_ms")));
		fmt_time(c2, (uint64_t)json_integer_value(json_object_get(cr, "expires_ms")));
		const char *svc = jsonx_str(cr, "service");
		const struct config_service *s = svc ? config_service_find(cfg, svc) : NULL;
		put(&conv,
		    "service     %s%s%s%s\nstate       %s\nstarted     %s\nends        %s\nlanguage    %s\n",
		    svc ? svc : "-", s ? " (" : "", s ? s->display_name : "", s ? ")" : "",
		    jsonx_str(cr, "state") ? jsonx_str(cr, "state") : "-", c1, c2,
		    jsonx_str(cr, "lang") ? jsonx_str(cr, "lang") : "-");
		json_decref(cr);
	} else if (rc == TH_ENOTFOUND) {
		put(&conv, "(no conversation is held: none was started, or it ended and was removed)\n");
	} else {
		goto store_fail;
	}

	struct text feed = {0};
	if ((rc = feed_text(t, g.user_id, &feed, &nentries))) {
		free(feed.s);
		goto store_fail;
	}
	struct audit_filter f;
	audit_filter_init(&f);
	f.subject = g.user_id;
	struct rec_walk w = {a, t, g.user_id, &consents, &records, 0, 0, 0, TH_OK};
	if ((rc = audit_iter(t, &f, rec_one, &w))) {
		free(feed.s);
		goto store_fail;
	}
	store_txn_abort(t);
	t = NULL;

	char now[32], made[32];
	fmt_time(now, th_now_ms());
	fmt_time(made, g.created_ms);
	char *pseud = clean(g.pseudonym);
	put(&doc, "%s", HEADER);
	put(&doc,
	    "Made          %s\nPerson        %s\nPseudonym     %s\nFirst seen    %s\nState         %s\n\n",
	    now, g.user_id, *pseud ? pseud : "(erased)", made, g.state);
	free(pseud);
	put(&doc, "1. CONVERSATION\n---------------\n%s\n", conv.s ? conv.s : "");
	put(&doc,
	    "2. THE CONVERSATION AS THEIR PAGE SHOWED IT (%zu entries)\n"
	    "-----------------------------------------------------\n%s\n",
	    nentries, feed.s ? feed.s : "(nothing is held)\n");
	free(feed.s);
	put(&doc, "3. CONSENTS (%zu)\n-----------\n%s\n", w.nconsents,
	    consents.s ? consents.s : "(none recorded)\n");
	put(&doc,
	    "4. AUDIT LOG RECORDS ABOUT THEM (%zu; %zu sealed item(s) decrypted)\n"
	    "------------------------------------------------------------------\n%s\n",
	    w.nrecords, w.nsealed, records.s ? records.s : "(none)\n");
	put(&doc, "End of export.\n");
	if (doc.too_large) {
		fprintf(stderr, "threshold: guest export: the export would be over %u MiB; not written\n",
		        MAX_EXPORT_BYTES >> 20);
		goto out;
	}

	/* On the record before anything is written. */
	char *actor = th_cli_actor();
	json_t *d = json_pack("{s:s, s:I, s:I, s:I, s:I}", "format", "text", "feed_entries",
	                      (json_int_t)nentries, "consents", (json_int_t)w.nconsents, "records",
	                      (json_int_t)w.nrecords, "sealed", (json_int_t)w.nsealed);
	struct audit_rec rec = {
	        .kind = AUDIT_SUBJECT_ACCESS, .actor = actor, .subject = g.user_id, .details = d};
	rc = store_txn_begin(st, 1, &t);
	if (!rc)
		rc = audit_append(a, t, &rec, NULL);
	if (!rc)
		rc = store_txn_commit(t);
	else
		store_txn_abort(t);
	t = NULL;
	free(actor);
	json_decref(d);
	if (rc) {
		fprintf(stderr,
		        "threshold: guest export: cannot record the export in the audit log (%s); nothing "
		        "written\n",
		        th_strerror(rc));
		goto out;
	}
	if (out_path) {
		if (th_write_file_atomic(out_path, doc.s, doc.n, 0600) != TH_OK) {
			fprintf(stderr, "threshold: guest export: cannot write %s: %s\n", out_path,
			        strerror(errno));
			goto out;
		}
		fprintf(stderr,
		        "wrote the subject access export of %s to %s (%zu conversation entries, %zu "
		        "consents, %zu "
		        "audit records, %zu sealed items decrypted); recorded as subject_access_exported.\n"
		        "Review it before sending: see the note at its top.\n",
		        g.user_id, out_path, nentries, w.nconsents, w.nrecords, w.nsealed);
	} else if (fwrite(doc.s, 1, doc.n, stdout) != doc.n || fflush(stdout)) {
		fprintf(stderr, "threshold: guest export: cannot write to standard output\n");
		goto out;
	}
	code = GUESTS_EXIT_OK;
	goto out;
store_fail:
	fprintf(stderr, "threshold: guest export: cannot read the store: %s\n", th_strerror(rc));
out:
	if (t)
		store_txn_abort(t);
	free(doc.s);
	free(consents.s);
	free(records.s);
	free(conv.s);
	free(who);
	feed_sealer_set(NULL);
	audit_close(a);
	store_close(st);
	return code;
}
