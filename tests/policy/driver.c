/*
 * driver.c - runs the data-driven policy cases: every directory under the
 * cases directory (argv[1]) holds input.json (the facts, by name) and
 * expected.json (the decision, by name).  Cases run in sorted order; each
 * prints one line, and the run ends with "N passed, M failed".
 *
 * input.json:    {"event": "invite", "sender": "local", "target": "bot",
 *                 "command": "none", "bot_joined": false}
 *                and, when a rule asks for them, "sender_serves" and
 *                "target_belongs" (booleans; false when left out).
 * expected.json: {"reason": "bot_invite_accepted", "record": "none", "actions": [{"kind": "join"}]}
 *                "record" names the audit record the decision asks for.
 *                a reply action also has "reply": "<command>" and "refusal".
 *
 * A case that cannot be read, or names something policy does not know, fails:
 * a typo must never turn into a skipped case.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "policy.h"
#include "util.h"

/* "file:line: text" from a jansson error; the line only when jansson has one. */
static void json_why(char *why, size_t whylen, const char *file, const json_error_t *jerr)
{
	if (jerr->line > 0)
		snprintf(why, whylen, "%s:%d: %s", file, jerr->line, jerr->text);
	else
		snprintf(why, whylen, "%s: %s", file, jerr->text);
}

/* One fact given by name: look it up, or say what was wrong. */
static int fact_from_name(const char *key, const char *name, int (*from_name)(const char *), int *out,
                          char *why, size_t whylen)
{
	int n = from_name(name);
	if (n < 0) {
		snprintf(why, whylen, "input.json: unknown %s \"%s\"", key, name);
		return -1;
	}
	*out = n;
	return 0;
}

/* Read @path (an input.json) into @facts; on failure write the reason into @why. */
static int read_facts(const char *path, struct pol_facts *facts, char *why, size_t whylen)
{
	json_error_t jerr;
	json_t *in = json_load_file(path, 0, &jerr);
	const char *event_s, *sender_s, *target_s, *command_s, *room_s;
	int event, sender, target, command, room, joined, serves = 0, belongs = 0, rc = -1;
	if (!in) {
		json_why(why, whylen, "input.json", &jerr);
		return -1;
	}
	/* Strict: a misspelt key is an error, not a fact left at its default. */
	if (json_unpack_ex(in, &jerr, JSON_STRICT, "{s:s, s:s, s:s, s:s, s:s, s:b, s?b, s?b}", "event",
	                   &event_s, "sender", &sender_s, "target", &target_s, "room", &room_s, "command",
	                   &command_s, "bot_joined", &joined, "sender_serves", &serves, "target_belongs",
	                   &belongs) != 0) {
		json_why(why, whylen, "input.json", &jerr);
		goto out;
	}
	if (fact_from_name("event", event_s, pol_event_from_name, &event, why, whylen) ||
	    fact_from_name("sender", sender_s, pol_role_from_name, &sender, why, whylen) ||
	    fact_from_name("target", target_s, pol_role_from_name, &target, why, whylen) ||
	    fact_from_name("room", room_s, pol_room_from_name, &room, why, whylen) ||
	    fact_from_name("command", command_s, pol_command_from_name, &command, why, whylen))
		goto out;
	facts->event = (enum pol_event)event;
	facts->sender = (enum pol_role)sender;
	facts->target = (enum pol_role)target;
	facts->room = (enum pol_room)room;
	facts->command = (enum pol_command)command;
	facts->bot_joined = joined;
	facts->sender_serves = serves;
	facts->target_belongs = belongs;
	rc = 0;
out:
	json_decref(in);
	return rc;
}

/* The decision in expected.json's shape (new reference). */
static json_t *decision_to_json(const struct pol_decision *d)
{
	json_t *actions = json_array();
	for (unsigned i = 0; i < d->nactions; i++) {
		const struct pol_action *a = &d->actions[i];
		const char *kind = pol_action_name(a->kind);
		json_t *o = json_pack("{s:s}", "kind", kind ? kind : "?");
		if (a->kind == POL_ACT_REPLY || a->kind == POL_ACT_GROUP || a->kind == POL_ACT_CONVERSATION) {
			const char *reply = pol_command_name(a->reply);
			json_object_set_new(o, "reply", json_string(reply ? reply : "?"));
			json_object_set_new(o, "refusal", json_boolean(a->refusal));
		}
		if (a->note != POL_NOTE_NONE) {
			const char *note = pol_note_name(a->note);
			json_object_set_new(o, "note", json_string(note ? note : "?"));
		}
		json_array_append_new(actions, o);
	}
	const char *reason = pol_reason_name(d->reason);
	const char *record = pol_record_name(d->record);
	return json_pack("{s:s, s:s, s:b, s:o}", "reason", reason ? reason : "?", "record",
	                 record ? record : "?", "alert", d->alert, "actions", actions);
}

/* Rules of the table that decided a passing case: every rule needs one. */
#define MAX_RULES 256
static unsigned char covered[MAX_RULES];

/* Run one case; print its line.  @return 1 if it passed. */
static int run_case(const char *dir, const char *name)
{
	char why[512] = "";
	char *in_path = xasprintf("%s/%s/input.json", dir, name);
	char *exp_path = xasprintf("%s/%s/expected.json", dir, name);
	json_t *expected = NULL, *actual = NULL;
	int ok = 0;

	struct pol_facts facts;
	memset(&facts, 0, sizeof(facts));
	if (read_facts(in_path, &facts, why, sizeof(why)) != 0)
		goto out;
	json_error_t jerr;
	expected = json_load_file(exp_path, 0, &jerr);
	if (!expected) {
		json_why(why, sizeof(why), "expected.json", &jerr);
		goto out;
	}
	struct pol_decision d;
	pol_decide(&facts, &d);
	actual = decision_to_json(&d);
	ok = json_equal(expected, actual);
	if (ok && d.rule >= 0 && d.rule < MAX_RULES)
		covered[d.rule] = 1;
	if (!ok) {
		char *want = json_dumps(expected, JSON_COMPACT | JSON_SORT_KEYS);
		char *got = json_dumps(actual, JSON_COMPACT | JSON_SORT_KEYS);
		snprintf(why, sizeof(why), "decision differs\n  expected: %s\n  actual:   %s",
		         want ? want : "?", got ? got : "?");
		free(want);
		free(got);
	}
out:
	if (ok)
		printf("ok   %s\n", name);
	else
		printf("FAIL %s: %s\n", name, why);
	json_decref(expected);
	json_decref(actual);
	free(in_path);
	free(exp_path);
	return ok;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s CASES_DIR\n", argv[0]);
		return 2;
	}
	const char *dir = argv[1];
	DIR *d = opendir(dir);
	if (!d) {
		perror(dir);
		return 1;
	}
	char **names = NULL;
	size_t n = 0;
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.')
			continue;
		char *path = xasprintf("%s/%s", dir, e->d_name);
		struct stat sb;
		int is_dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
		free(path);
		if (!is_dir)
			continue; /* a README beside the cases, say */
		names = xrealloc(names, (n + 1) * sizeof(*names));
		names[n++] = xstrdup(e->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), by_name);

	unsigned passed = 0, failed = 0;
	for (size_t i = 0; i < n; i++) {
		if (run_case(dir, names[i]))
			passed++;
		else
			failed++;
		free(names[i]);
	}
	free(names);
	if (n == 0) {
		printf("no cases found in %s\n", dir);
		failed++;
	}
	for (unsigned i = 0; i < pol_rule_count(); i++) {
		if (i >= MAX_RULES || !covered[i]) {
			printf("FAIL rule %u (%s) has no passing case\n", i,
			       pol_reason_name(pol_rule_reason(i)));
			failed++;
		}
	}
	printf("%u passed, %u failed\n", passed, failed);
	return failed ? 1 : 0;
}
