/*
 * guests_cli.c - `threshold guest create|list|show`: argument parsing and
 * the table and JSON printers over guests.h.
 */
#include "guests_cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "audit.h"
#include "config.h"
#include "guests.h"
#include "store.h"
#include "subject_access.h"
#include "util.h"

static void usage(FILE *out)
{
	fprintf(out, "Usage: threshold guest COMMAND [OPTIONS]\n"
	             "\n"
	             "Commands:\n"
	             "  create [--json] [--sealed-note TEXT|-]\n"
	             "                         make a guest with a random id and pseudonym, and print them\n"
	             "                         (recorded in the audit log as guest_created); TEXT (or\n"
	             "                         stdin, for -), e.g. an emergency contact, is sealed on that\n"
	             "                         record: only a lead's recorded `!audit reveal` shows it\n"
	             "  list [--json]          show every guest, oldest first\n"
	             "  show ID_OR_PSEUDONYM [--json]\n"
	             "                         show one guest, by user id (@guest_...:server), by\n"
	             "                         localpart, or by pseudonym (\"Amber Otter\", any case)\n"
	             "  export ID_OR_PSEUDONYM [--out FILE]\n"
	             "                         everything held about one guest, as a readable file, for a\n"
	             "                         subject access request (sealed items decrypted, marked for\n"
	             "                         review; recorded as subject_access_exported)\n"
	             "\n"
	             "Exit status: 0 ok, 1 not found or could not run, 2 usage.\n");
}

static void format_time(char out[32], uint64_t ms)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	if (!gmtime_r(&s, &tm) || !strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, 32, "?");
}

/* Terminal-safe text: control bytes become '?'. */
static void clean(char *s)
{
	for (unsigned char *p = (unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			*p = '?';
	}
}

static json_t *guest_json(const struct guest *g)
{
	char when[32];
	format_time(when, g->created_ms);
	return json_pack("{s:s, s:s, s:I, s:s, s:s}", "user_id", g->user_id, "pseudonym", g->pseudonym,
	                 "created_ms", (json_int_t)g->created_ms, "created", when, "state", g->state);
}

static void print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
	printf("%s\n", s);
	free(s);
	json_decref(j);
}

static void print_guest(const struct guest *g, int as_json)
{
	if (as_json) {
		print_json(guest_json(g));
		return;
	}
	struct guest c = *g;
	clean(c.user_id);
	clean(c.pseudonym);
	clean(c.state);
	char when[32];
	format_time(when, c.created_ms);
	printf("user_id    %s\npseudonym  %s\ncreated    %s\nstate      %s\n", c.user_id, c.pseudonym, when,
	       c.state);
}

/* --json, and for create --sealed-note TEXT; the other arguments are
 * returned in order.  @p note: borrowed from argv, or NULL. */
static int parse_args(const char *cmd, int argc, char **argv, int *as_json, const char **note, char ***rest,
                      int *nrest)
{
	*as_json = 0;
	*note = NULL;
	*nrest = 0;
	*rest = xcalloc((size_t)argc + 1, sizeof(char *));
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			*as_json = 1;
		} else if (!strcmp(cmd, "create") && !strcmp(argv[i], "--sealed-note") && i + 1 < argc) {
			*note = argv[++i];
		} else if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr,
			        "threshold: guest %s: unknown option '%s' (try `threshold guest help`)\n",
			        cmd, argv[i]);
			free(*rest);
			*rest = NULL;
			return -1;
		} else {
			(*rest)[(*nrest)++] = argv[i];
		}
	}
	return 0;
}

static int open_store(const struct config *cfg, store **st)
{
	if (store_open(cfg->store_path, cfg->map_size_mb, st) != TH_OK) {
		fprintf(stderr, "threshold: guest: cannot open the store %s (see above)\n", cfg->store_path);
		return -1;
	}
	return 0;
}

/* ---- create ------------------------------------------------------------ */

/* The note to seal: @p arg, or stdin for "-" (kept out of shell history
 * and the process list).  @return a new string, or NULL after a message. */
static char *read_note(const char *arg)
{
	if (strcmp(arg, "-") != 0) {
		if (strlen(arg) > AUDIT_MAX_SEALED) {
			fprintf(stderr, "threshold: guest create: the sealed note is over %d bytes\n",
			        AUDIT_MAX_SEALED);
			return NULL;
		}
		return xstrdup(arg);
	}
	char *buf = xmalloc(AUDIT_MAX_SEALED + 2);
	size_t n = fread(buf, 1, AUDIT_MAX_SEALED + 1, stdin);
	if (ferror(stdin) || n > AUDIT_MAX_SEALED) {
		fprintf(stderr, "threshold: guest create: cannot read the sealed note from stdin%s\n",
		        n > AUDIT_MAX_SEALED ? " (over the size limit)" : "");
		free(buf);
		return NULL;
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	buf[n] = '\0';
	return buf;
}

static int cmd_create(const struct config *cfg, int as_json, const char *note_arg)
{
	char *note = NULL;
	if (note_arg && !(note = read_note(note_arg)))
		return GUESTS_EXIT_USAGE;
	store *st;
	audit *au = NULL;
	store_txn *t = NULL;
	char *actor = th_cli_actor();
	struct guest g;
	int code = GUESTS_EXIT_FAIL;
	if (open_store(cfg, &st)) {
		free(actor);
		free(note);
		return GUESTS_EXIT_FAIL;
	}
	int rc = audit_open_config(st, cfg, &au);
	if (rc) {
		fprintf(stderr, "threshold: guest: cannot open the audit log: %s (see above)\n",
		        th_strerror(rc));
		goto out;
	}
	rc = store_txn_begin(st, 1, &t);
	if (!rc)
		rc = guests_create_sealed(cfg, t, au, actor, note, &g);
	if (rc) {
		store_txn_abort(t);
	} else {
		rc = store_txn_commit(t);
	}
	if (rc) {
		fprintf(stderr, "threshold: guest: cannot create a guest: %s\n",
		        rc == TH_EINVAL
		                ? "the guest id would be longer than 255 bytes (appservice.guest_prefix "
		                  "and homeserver.server_name are too long)"
		                : th_strerror(rc));
		goto out;
	}
	print_guest(&g, as_json);
	if (note && *note)
		fprintf(stderr, "Sealed the note on the guest's guest_created audit record.\n");
	/* The daemon's outbox worker wakes for its own commits, not for ours; it
	 * looks at the queue every second when idle, and at every start. */
	fprintf(stderr, "Queued the guest's registration and display name on the homeserver; a running\n"
	                "Threshold carries them out within about a second (or when it next starts).\n");
	code = GUESTS_EXIT_OK;
out:
	audit_close(au);
	store_close(st);
	free(actor);
	if (note) {
		explicit_bzero(note, strlen(note));
		free(note);
	}
	return code;
}

/* ---- list, show -------------------------------------------------------- */

struct list {
	struct guest *v;
	size_t n, cap;
};

static int list_one(void *ctx, const struct guest *g)
{
	struct list *l = ctx;
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 64;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	l->v[l->n++] = *g;
	return 0;
}

static int by_created(const void *a, const void *b)
{
	const struct guest *x = a, *y = b;
	if (x->created_ms != y->created_ms)
		return x->created_ms < y->created_ms ? -1 : 1;
	return strcmp(x->user_id, y->user_id);
}

static void print_table(struct list *l)
{
	static const char *const head[4] = {"ID", "PSEUDONYM", "CREATED", "STATE"};
	size_t w[4];
	for (int c = 0; c < 4; c++)
		w[c] = strlen(head[c]);
	for (size_t i = 0; i < l->n; i++) {
		clean(l->v[i].user_id);
		clean(l->v[i].pseudonym);
		clean(l->v[i].state);
		size_t len[3] = {strlen(l->v[i].user_id), strlen(l->v[i].pseudonym), 20};
		for (int c = 0; c < 3; c++)
			w[c] = len[c] > w[c] ? len[c] : w[c];
	}
	printf("%-*s  %-*s  %-*s  %s\n", (int)w[0], head[0], (int)w[1], head[1], (int)w[2], head[2], head[3]);
	for (size_t i = 0; i < l->n; i++) {
		char when[32];
		format_time(when, l->v[i].created_ms);
		printf("%-*s  %-*s  %-*s  %s\n", (int)w[0], l->v[i].user_id, (int)w[1], l->v[i].pseudonym,
		       (int)w[2], when, l->v[i].state);
	}
}

static int cmd_list(const struct config *cfg, int as_json)
{
	store *st;
	store_txn *t;
	struct list l = {0};
	if (open_store(cfg, &st))
		return GUESTS_EXIT_FAIL;
	int rc = store_txn_begin(st, 0, &t);
	if (!rc) {
		rc = guests_walk(t, list_one, &l);
		store_txn_abort(t);
	}
	store_close(st);
	if (rc) {
		fprintf(stderr, "threshold: guest: cannot read the guests: %s\n", th_strerror(rc));
		free(l.v);
		return GUESTS_EXIT_FAIL;
	}
	if (l.n)
		qsort(l.v, l.n, sizeof(*l.v), by_created);
	if (as_json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < l.n; i++)
			json_array_append_new(arr, guest_json(&l.v[i]));
		print_json(arr);
	} else if (!l.n) {
		printf("No guests yet.\n");
	} else {
		print_table(&l);
	}
	free(l.v);
	return GUESTS_EXIT_OK;
}

/* A bare localpart of a guest id: the prefix and 32 lowercase hex digits. */
static int is_guest_localpart(const struct config *cfg, const char *s)
{
	size_t plen = strlen(cfg->guest_prefix);
	if (strncmp(s, cfg->guest_prefix, plen) != 0 || strlen(s + plen) != GUESTS_ID_HEX)
		return 0;
	for (const char *p = s + plen; *p; p++) {
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return 0;
	}
	return 1;
}

static int cmd_show(const struct config *cfg, int as_json, char **rest, int nrest)
{
	if (nrest == 0) {
		fprintf(stderr, "threshold: guest show: which guest? Give a user id or a pseudonym\n");
		return GUESTS_EXIT_USAGE;
	}
	/* `show Amber Otter` means the pseudonym "Amber Otter". */
	size_t n = 1;
	for (int i = 0; i < nrest; i++)
		n += strlen(rest[i]) + 1;
	char *who = xmalloc(n), *w = who;
	for (int i = 0; i < nrest; i++) {
		if (i)
			*w++ = ' ';
		size_t len = strlen(rest[i]);
		memcpy(w, rest[i], len);
		w += len;
	}
	*w = '\0';
	char *id = NULL;
	if (who[0] == '@')
		id = xstrdup(who);
	else if (is_guest_localpart(cfg, who))
		id = xasprintf("@%s:%s", who, cfg->server_name);

	store *st;
	store_txn *t;
	struct guest g;
	if (open_store(cfg, &st)) {
		free(who);
		free(id);
		return GUESTS_EXIT_FAIL;
	}
	int rc = store_txn_begin(st, 0, &t);
	if (!rc) {
		rc = id ? guests_get(t, id, &g) : guests_find_by_pseudonym(t, who, &g);
		store_txn_abort(t);
	}
	store_close(st);
	int code = GUESTS_EXIT_OK;
	if (rc == TH_ENOTFOUND) {
		clean(who);
		fprintf(stderr, "threshold: guest show: no guest %s '%s'\n", id ? "with the id" : "called",
		        who);
		code = GUESTS_EXIT_FAIL;
	} else if (rc) {
		fprintf(stderr, "threshold: guest show: cannot read the guests: %s\n", th_strerror(rc));
		code = GUESTS_EXIT_FAIL;
	} else {
		print_guest(&g, as_json);
	}
	free(who);
	free(id);
	return code;
}

int guests_cli_main(const struct config *cfg, int argc, char **argv)
{
	if (argc < 1) {
		usage(stderr);
		return GUESTS_EXIT_USAGE;
	}
	const char *cmd = argv[0];
	if (!strcmp(cmd, "help") || !strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
		usage(stdout);
		return GUESTS_EXIT_OK;
	}
	if (!strcmp(cmd, "export"))
		return subject_access_main(cfg, argc, argv);
	if (strcmp(cmd, "create") && strcmp(cmd, "list") && strcmp(cmd, "show")) {
		fprintf(stderr, "threshold: guest: unknown command '%s' (try `threshold guest help`)\n", cmd);
		return GUESTS_EXIT_USAGE;
	}
	int as_json, nrest;
	const char *note;
	char **rest;
	if (parse_args(cmd, argc, argv, &as_json, &note, &rest, &nrest))
		return GUESTS_EXIT_USAGE;
	int code;
	if (strcmp(cmd, "show") && nrest > 0) {
		fprintf(stderr, "threshold: guest %s: unexpected argument '%s'\n", cmd, rest[0]);
		code = GUESTS_EXIT_USAGE;
	} else if (!strcmp(cmd, "create")) {
		code = cmd_create(cfg, as_json, note);
	} else if (!strcmp(cmd, "list")) {
		code = cmd_list(cfg, as_json);
	} else {
		code = cmd_show(cfg, as_json, rest, nrest);
	}
	free(rest);
	return code;
}
