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
 * Gateway actions add "conv" (none|waiting|open|closed), "session" and
 * "entry_open" (booleans); each is optional (none, false).
 *
 * A case with "decide": "visibility" asks what a guest's feed shows
 * (policy/visibility.h) instead:
 * input.json:    {"decide": "visibility", "sender": "staff", "kind": "message",
 *                 "rel": "edit", "target": "visible", "command": false,
 *                 "by_target_sender": true, "moderator": false,
 *                 "new_content": true, "sender_erased": false}
 *                ("call_open", optional, false when left out: the room is the guest's open
 *                conversation, for call signals)
 * expected.json: {"action": "replace", "reason": "edit_replaces",
 *                 "strip_fallback": false, "remember_hidden": false, "record": "none"}
 *
 * Every rule of both tables needs a passing case.
 *
 * A case with "decide": "channel" asks what a channel conversation (SMS)
 * does with one message (policy/chanrules.h) instead:
 * input.json:    {"decide": "channel", "event": "in", "stage": "notice", "text": "oui"}
 *                ("text" is classified by pol_chan_word_of with "languages"
 *                (default 4) languages; or give "word" by name instead)
 * expected.json: {"action": "open", "reason": "agreed", "record": "consent_recorded"}
 * Every rule of its table needs a passing case too.
 *
 * A case with "decide": "helper" asks what a service's automatic helper does
 * with one message of the guest (policy/helper.h):
 * input.json:    {"decide": "helper", "staff_joined": false, "open": true,
 *                 "menu_shown": false, "asked": false, "text": "1"}
 *                ("text" is classified by pol_helper_word_of against "entries",
 *                [{"number": 1, "words": ["hours"]}...], by default 1 "hours"/"open"
 *                and 2 "address"/"where"; or give "word" by name instead)
 * expected.json: {"action": "answer", "menu": true, "reason": "answer_first", "entry": 0}
 *                ("entry" only for an entry matched by "text"; "word" compared when given)
 * Every rule of its table needs a passing case too.
 *
 * A case with "decide": "route" asks where a guest's words go
 * (policy/route.h): {"decide": "route", "text": "# hello all", "groups": "one"}
 * ("text" is read by pol_route_addressed; "groups" none|one|several)
 * expected.json: {"target": "group", "reason": "words_to_group"}
 * Every rule of its table needs a passing case too.
 *
 * A case whose input.json has "setting" asks the exposure judge instead
 * (policy/exposure.h): does this content expose a room of this template?
 *
 * input.json:    {"setting": "join_rules", "template": "conversation", "value": "public",
 *                 "allow_outside": 0}
 *                {"setting": "power_levels", "template": "group", "staff": 50,
 *                 "power": {"others_max": 100, "events": {"m.room.encryption": 50}}}
 *                ("power" gives only what differs from the template's own levels,
 *                read with "staff" (default 50) as staff's level; "has_alias" for
 *                canonical_alias)
 * expected.json: {"exposure": "power_given"}
 *
 * Every rule of the table, every setting and every exposure name needs a
 * passing case, or the run fails.
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

#include "chanrules.h"
#include "exposure.h"
#include "helper.h"
#include "policy.h"
#include "route.h"
#include "visibility.h"
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
	const char *conv_s = "none";
	int session = 0, entry_open = 0, conv;
	/* Strict: a misspelt key is an error, not a fact left at its default. */
	if (json_unpack_ex(in, &jerr, JSON_STRICT, "{s:s, s:s, s:s, s:s, s:s, s:b, s?s, s?b, s?b, s?b, s?b}",
	                   "event", &event_s, "sender", &sender_s, "target", &target_s, "room", &room_s,
	                   "command", &command_s, "bot_joined", &joined, "conv", &conv_s, "session", &session,
	                   "entry_open", &entry_open, "sender_serves", &serves, "target_belongs",
	                   &belongs) != 0) {
		json_why(why, whylen, "input.json", &jerr);
		goto out;
	}
	if (fact_from_name("conv", conv_s, pol_conv_from_name, &conv, why, whylen))
		goto out;
	facts->conv = (enum pol_conv)conv;
	facts->session = session;
	facts->entry_open = entry_open;
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

/* Read a visibility case's @path into @facts; on failure write the reason into @why. */
static int read_view_facts(const char *path, struct pol_view_facts *facts, char *why, size_t whylen)
{
	json_error_t jerr;
	json_t *in = json_load_file(path, 0, &jerr);
	const char *decide, *sender_s, *kind_s, *rel_s, *target_s;
	int sender, kind, rel, target, command, by_sender, moderator, new_content, erased, call_open = 0,
	                                                                                   rc = -1;
	if (!in) {
		json_why(why, whylen, "input.json", &jerr);
		return -1;
	}
	if (json_unpack_ex(in, &jerr, JSON_STRICT, "{s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:b, s:b, s:b, s?b}",
	                   "decide", &decide, "sender", &sender_s, "kind", &kind_s, "rel", &rel_s, "target",
	                   &target_s, "command", &command, "by_target_sender", &by_sender, "moderator",
	                   &moderator, "new_content", &new_content, "sender_erased", &erased, "call_open",
	                   &call_open) != 0) {
		json_why(why, whylen, "input.json", &jerr);
		goto out;
	}
	if (fact_from_name("sender", sender_s, pol_role_from_name, &sender, why, whylen) ||
	    fact_from_name("kind", kind_s, pol_view_kind_from_name, &kind, why, whylen) ||
	    fact_from_name("rel", rel_s, pol_view_rel_from_name, &rel, why, whylen) ||
	    fact_from_name("target", target_s, pol_view_target_from_name, &target, why, whylen))
		goto out;
	facts->sender = (enum pol_role)sender;
	facts->kind = (enum pol_view_kind)kind;
	facts->rel = (enum pol_view_rel)rel;
	facts->target = (enum pol_view_target)target;
	facts->command = command;
	facts->by_target_sender = by_sender;
	facts->moderator = moderator;
	facts->new_content = new_content;
	facts->sender_erased = erased;
	facts->call_open = call_open;
	rc = 0;
out:
	json_decref(in);
	return rc;
}

static json_t *view_to_json(const struct pol_view *v)
{
	const char *action = pol_view_action_name(v->action), *reason = pol_view_reason_name(v->reason),
	           *record = pol_view_record_name(v->record);
	return json_pack("{s:s, s:s, s:b, s:b, s:s}", "action", action ? action : "?", "reason",
	                 reason ? reason : "?", "strip_fallback", v->strip_fallback, "remember_hidden",
	                 v->remember_hidden, "record", record ? record : "?");
}

/* 1 if @path (an input.json) asks for the visibility decision. */
static int is_view_case(const char *path)
{
	json_t *in = json_load_file(path, 0, NULL);
	const char *d = json_string_value(json_object_get(in, "decide"));
	int view = d && strcmp(d, "visibility") == 0;
	json_decref(in);
	return view;
}

/* Settings and exposures judged by a passing case: every one needs one. */
static unsigned char setting_covered[POL_SET_COUNT], exposure_covered[POL_EXP_COUNT];

/* The template's own power levels, as a judge case's starting point. */
static void power_from_template(struct pol_setting_facts *f)
{
	struct pol_power_facts *p = &f->power;
	p->bot = POL_LEVEL_BOT;
	p->others_max = f->staff;
	p->guests_max = 0;
	for (unsigned k = 0; k < POL_PK_COUNT; k++)
		p->keys[k] = pol_level_value(pol_power_key_level(f->tpl, (enum pol_power_key)k), f->staff);
	for (unsigned i = 0; i < POL_GUARDED_COUNT; i++)
		p->events[i] = pol_level_value(pol_guarded_level(f->tpl, i), f->staff);
}

/* Overrides from a case's "power" object; on failure write the reason into @why. */
static int read_power(const json_t *o, struct pol_power_facts *p, char *why, size_t whylen)
{
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)o, key, v)
	{
		long long n = json_integer_value(v);
		if (strcmp(key, "events") == 0 && json_is_object(v)) {
			const char *type;
			json_t *lv;
			json_object_foreach(v, type, lv)
			{
				unsigned i = 0;
				while (i < POL_GUARDED_COUNT && strcmp(pol_guarded_type(i), type) != 0)
					i++;
				if (i == POL_GUARDED_COUNT || !json_is_integer(lv)) {
					snprintf(why, whylen,
					         "input.json: power.events: \"%s\" is not guarded", type);
					return -1;
				}
				p->events[i] = json_integer_value(lv);
			}
			continue;
		}
		if (strcmp(key, "malformed") == 0 && json_is_boolean(v)) {
			p->malformed = json_is_true(v);
			continue;
		}
		if (!json_is_integer(v))
			goto bad;
		if (strcmp(key, "bot") == 0) {
			p->bot = n;
		} else if (strcmp(key, "others_max") == 0) {
			p->others_max = n;
		} else if (strcmp(key, "guests_max") == 0) {
			p->guests_max = n;
		} else {
			unsigned k = 0;
			while (k < POL_PK_COUNT &&
			       strcmp(pol_power_key_name((enum pol_power_key)k), key) != 0)
				k++;
			if (k == POL_PK_COUNT)
				goto bad;
			p->keys[k] = n;
		}
	}
	return 0;
bad:
	snprintf(why, whylen, "input.json: power: unknown or malformed \"%s\"", key);
	return -1;
}

/* Run a judge case (input @in, already loaded); @return 1 if it passed. */
static int run_judge(json_t *in, const char *exp_path, char *why, size_t whylen)
{
	json_error_t jerr;
	const char *setting_s, *tpl_s, *value = NULL;
	json_t *power = NULL;
	int allow_outside = 0, has_alias = 0, staff = 50, ok = 0;
	if (json_unpack_ex(in, &jerr, JSON_STRICT, "{s:s, s:s, s?s, s?i, s?b, s?i, s?o}", "setting",
	                   &setting_s, "template", &tpl_s, "value", &value, "allow_outside", &allow_outside,
	                   "has_alias", &has_alias, "staff", &staff, "power", &power) != 0) {
		json_why(why, whylen, "input.json", &jerr);
		return 0;
	}
	struct pol_setting_facts f;
	memset(&f, 0, sizeof(f));
	int setting = pol_setting_from_name(setting_s), tpl = pol_template_from_name(tpl_s);
	if (setting < 0 || tpl < 0) {
		snprintf(why, whylen, "input.json: unknown setting or template");
		return 0;
	}
	f.setting = (enum pol_setting)setting;
	f.tpl = (enum pol_template)tpl;
	f.value = value;
	f.allow_outside = (unsigned)allow_outside;
	f.has_alias = has_alias;
	f.staff = staff;
	power_from_template(&f);
	if (power && read_power(power, &f.power, why, whylen) != 0)
		return 0;
	json_t *expected = json_load_file(exp_path, 0, &jerr);
	if (!expected) {
		json_why(why, whylen, "expected.json", &jerr);
		return 0;
	}
	enum pol_exposure e = pol_exposure_judge(&f);
	json_t *actual = json_pack("{s:s}", "exposure", pol_exposure_name(e) ? pol_exposure_name(e) : "?");
	ok = json_equal(expected, actual);
	if (ok) {
		setting_covered[setting] = 1;
		exposure_covered[e] = 1;
	} else {
		char *want = json_dumps(expected, JSON_COMPACT | JSON_SORT_KEYS);
		char *got = json_dumps(actual, JSON_COMPACT | JSON_SORT_KEYS);
		snprintf(why, whylen, "judgement differs\n  expected: %s\n  actual:   %s", want ? want : "?",
		         got ? got : "?");
		free(want);
		free(got);
	}
	json_decref(expected);
	json_decref(actual);
	return ok;
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
static unsigned char covered_view[MAX_RULES];
static unsigned char covered_chan[MAX_RULES];
static unsigned char covered_helper[MAX_RULES];
static unsigned char covered_route[MAX_RULES];

/* A route case (policy/route.h): @return 1 if it passed. */
static int run_route(const json_t *in, const char *exp_path, char *why, size_t whylen)
{
	const char *text = json_string_value(json_object_get(in, "text"));
	int g = pol_route_groups_from_name(json_string_value(json_object_get(in, "groups")));
	if (!text || g < 0) {
		snprintf(why, whylen, "input.json: no text, or unknown groups");
		return 0;
	}
	struct pol_route_facts f = {.to_group = pol_route_addressed(text, NULL),
	                            .groups = (enum pol_route_groups)g};
	json_error_t jerr;
	json_t *expected = json_load_file(exp_path, 0, &jerr);
	if (!expected) {
		json_why(why, whylen, "expected.json", &jerr);
		return 0;
	}
	struct pol_route_decision d;
	pol_route_decide(&f, &d);
	json_t *actual = json_pack("{s:s, s:s}", "target", pol_route_target_name(d.target), "reason",
	                           pol_route_reason_name(d.reason));
	int ok = json_equal(expected, actual);
	if (ok && d.rule >= 0 && d.rule < MAX_RULES)
		covered_route[d.rule] = 1;
	if (!ok) {
		char *want = json_dumps(expected, JSON_COMPACT | JSON_SORT_KEYS);
		char *got = json_dumps(actual, JSON_COMPACT | JSON_SORT_KEYS);
		snprintf(why, whylen, "decision differs\n  expected: %s\n  actual:   %s", want ? want : "?",
		         got ? got : "?");
		free(want);
		free(got);
	}
	json_decref(expected);
	json_decref(actual);
	return ok;
}

#define HELPER_MAX_KEYS  16
#define HELPER_MAX_WORDS 8

/* A helper case (policy/helper.h): @return 1 if it passed. */
static int run_helper(const json_t *in, const char *exp_path, char *why, size_t whylen)
{
	static const char *const w1[] = {"hours", "open"}, *const w2[] = {"address", "where"};
	struct pol_helper_key keys[HELPER_MAX_KEYS] = {{1, w1, 2}, {2, w2, 2}};
	const char *words[HELPER_MAX_KEYS][HELPER_MAX_WORDS];
	size_t nkeys = 2;
	json_t *ents = json_object_get(in, "entries");
	if (ents) {
		nkeys = json_array_size(ents) < HELPER_MAX_KEYS ? json_array_size(ents) : HELPER_MAX_KEYS;
		for (size_t i = 0; i < nkeys; i++) {
			json_t *e = json_array_get(ents, i), *ws = json_object_get(e, "words");
			size_t nw = json_array_size(ws) < HELPER_MAX_WORDS ? json_array_size(ws)
			                                                   : HELPER_MAX_WORDS;
			for (size_t w = 0; w < nw; w++)
				words[i][w] = json_string_value(json_array_get(ws, w));
			keys[i] = (struct pol_helper_key){
			        (unsigned)json_integer_value(json_object_get(e, "number")), words[i], nw};
		}
	}
	const char *text = json_string_value(json_object_get(in, "text"));
	const char *word = json_string_value(json_object_get(in, "word"));
	size_t entry = 0;
	int w = text   ? (int)pol_helper_word_of(text, keys, nkeys, &entry)
	        : word ? pol_helper_word_from_name(word)
	               : (int)POL_HELPER_OTHER;
	if (w < 0) {
		snprintf(why, whylen, "input.json: unknown word");
		return 0;
	}
	struct pol_helper_facts f = {.staff_joined = json_is_true(json_object_get(in, "staff_joined")),
	                             .open = json_is_true(json_object_get(in, "open")),
	                             .menu_shown = json_is_true(json_object_get(in, "menu_shown")),
	                             .asked = json_is_true(json_object_get(in, "asked")),
	                             .word = (enum pol_helper_word)w};
	json_error_t jerr;
	json_t *expected = json_load_file(exp_path, 0, &jerr);
	if (!expected) {
		json_why(why, whylen, "expected.json", &jerr);
		return 0;
	}
	struct pol_helper_decision d;
	pol_helper_decide(&f, &d);
	json_t *actual = json_pack("{s:s, s:b, s:s}", "action", pol_helper_action_name(d.action), "menu",
	                           d.menu, "reason", pol_helper_reason_name(d.reason));
	if (text && f.word == POL_HELPER_ENTRY)
		json_object_set_new(actual, "entry", json_integer((json_int_t)entry));
	if (json_object_get(expected, "word"))
		json_object_set_new(actual, "word", json_string(pol_helper_word_name(f.word)));
	int ok = json_equal(expected, actual);
	if (ok && d.rule >= 0 && d.rule < MAX_RULES)
		covered_helper[d.rule] = 1;
	if (!ok) {
		char *want = json_dumps(expected, JSON_COMPACT | JSON_SORT_KEYS);
		char *got = json_dumps(actual, JSON_COMPACT | JSON_SORT_KEYS);
		snprintf(why, whylen, "decision differs\n  expected: %s\n  actual:   %s", want ? want : "?",
		         got ? got : "?");
		free(want);
		free(got);
	}
	json_decref(expected);
	json_decref(actual);
	return ok;
}

/* A channel case (policy/chanrules.h): @return 1 if it passed. */
static int run_channel(const json_t *in, const char *exp_path, char *why, size_t whylen)
{
	struct pol_chan_facts f = {0};
	int ev = pol_chan_event_from_name(json_string_value(json_object_get(in, "event")));
	int st = pol_chan_stage_from_name(json_string_value(json_object_get(in, "stage")));
	const char *text = json_string_value(json_object_get(in, "text"));
	const char *word = json_string_value(json_object_get(in, "word"));
	json_t *nl = json_object_get(in, "languages");
	int w = text   ? (int)pol_chan_word_of(text, nl ? (size_t)json_integer_value(nl) : 4, NULL)
	        : word ? pol_chan_word_from_name(word)
	               : (int)POL_CHAN_OTHER;
	if (ev < 0 || st < 0 || w < 0) {
		snprintf(why, whylen, "input.json: unknown event, stage or word");
		return 0;
	}
	f.event = (enum pol_chan_event)ev;
	f.stage = (enum pol_chan_stage)st;
	f.word = (enum pol_chan_word)w;
	json_error_t jerr;
	json_t *expected = json_load_file(exp_path, 0, &jerr);
	if (!expected) {
		json_why(why, whylen, "expected.json", &jerr);
		return 0;
	}
	struct pol_chan_decision d;
	pol_chan_decide(&f, &d);
	json_t *actual = json_pack("{s:s, s:s, s:s}", "action", pol_chan_action_name(d.action), "reason",
	                           pol_chan_reason_name(d.reason), "record", pol_chan_record_name(d.record));
	if (json_object_get(expected, "word"))
		json_object_set_new(actual, "word", json_string(pol_chan_word_name(f.word)));
	int ok = json_equal(expected, actual);
	if (ok && d.rule >= 0 && d.rule < MAX_RULES)
		covered_chan[d.rule] = 1;
	if (!ok) {
		char *want = json_dumps(expected, JSON_COMPACT | JSON_SORT_KEYS);
		char *got = json_dumps(actual, JSON_COMPACT | JSON_SORT_KEYS);
		snprintf(why, whylen, "decision differs\n  expected: %s\n  actual:   %s", want ? want : "?",
		         got ? got : "?");
		free(want);
		free(got);
	}
	json_decref(expected);
	json_decref(actual);
	return ok;
}

/* Run one case; print its line.  @return 1 if it passed. */
static int run_case(const char *dir, const char *name)
{
	char why[512] = "";
	char *in_path = xasprintf("%s/%s/input.json", dir, name);
	char *exp_path = xasprintf("%s/%s/expected.json", dir, name);
	json_t *expected = NULL, *actual = NULL;
	int ok = 0;

	struct pol_facts facts;
	struct pol_view_facts vfacts;
	int view = is_view_case(in_path);
	memset(&facts, 0, sizeof(facts));
	memset(&vfacts, 0, sizeof(vfacts));
	json_error_t jerr;
	json_t *in = json_load_file(in_path, 0, &jerr);
	if (in && json_object_get(in, "setting")) {
		ok = run_judge(in, exp_path, why, sizeof(why));
		json_decref(in);
		goto out;
	}
	const char *decide = json_string_value(json_object_get(in, "decide"));
	if (decide && strcmp(decide, "channel") == 0) {
		ok = run_channel(in, exp_path, why, sizeof(why));
		json_decref(in);
		goto out;
	}
	if (decide && strcmp(decide, "helper") == 0) {
		ok = run_helper(in, exp_path, why, sizeof(why));
		json_decref(in);
		goto out;
	}
	if (decide && strcmp(decide, "route") == 0) {
		ok = run_route(in, exp_path, why, sizeof(why));
		json_decref(in);
		goto out;
	}
	json_decref(in);
	if (view ? read_view_facts(in_path, &vfacts, why, sizeof(why)) != 0
	         : read_facts(in_path, &facts, why, sizeof(why)) != 0)
		goto out;
	expected = json_load_file(exp_path, 0, &jerr);
	if (!expected) {
		json_why(why, sizeof(why), "expected.json", &jerr);
		goto out;
	}
	if (view) {
		struct pol_view v;
		pol_visibility_decide(&vfacts, &v);
		actual = view_to_json(&v);
		ok = json_equal(expected, actual);
		if (ok && v.rule >= 0 && v.rule < MAX_RULES)
			covered_view[v.rule] = 1;
	} else {
		struct pol_decision d;
		pol_decide(&facts, &d);
		actual = decision_to_json(&d);
		ok = json_equal(expected, actual);
		if (ok && d.rule >= 0 && d.rule < MAX_RULES)
			covered[d.rule] = 1;
	}
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
	for (unsigned i = 0; i < pol_view_rule_count(); i++) {
		if (i >= MAX_RULES || !covered_view[i]) {
			printf("FAIL visibility rule %u (%s) has no passing case\n", i,
			       pol_view_reason_name(pol_view_rule_reason(i)));
			failed++;
		}
	}
	for (unsigned i = 0; i < pol_chan_rule_count(); i++) {
		if (i >= MAX_RULES || !covered_chan[i]) {
			printf("FAIL channel rule %u (%s) has no passing case\n", i,
			       pol_chan_reason_name(pol_chan_rule_reason(i)));
			failed++;
		}
	}
	for (unsigned i = 0; i < pol_helper_rule_count(); i++) {
		if (i >= MAX_RULES || !covered_helper[i]) {
			printf("FAIL helper rule %u (%s) has no passing case\n", i,
			       pol_helper_reason_name(pol_helper_rule_reason(i)));
			failed++;
		}
	}
	for (unsigned i = 0; i < pol_route_rule_count(); i++) {
		if (i >= MAX_RULES || !covered_route[i]) {
			printf("FAIL route rule %u (%s) has no passing case\n", i,
			       pol_route_reason_name(pol_route_rule_reason(i)));
			failed++;
		}
	}
	for (unsigned i = 0; i < POL_SET_COUNT; i++) {
		if (!setting_covered[i]) {
			printf("FAIL setting %s has no passing judge case\n",
			       pol_setting_name((enum pol_setting)i));
			failed++;
		}
	}
	for (unsigned i = 0; i < POL_EXP_COUNT; i++) {
		if (!exposure_covered[i]) {
			printf("FAIL exposure %s has no passing judge case\n",
			       pol_exposure_name((enum pol_exposure)i));
			failed++;
		}
	}
	printf("%u passed, %u failed\n", passed, failed);
	return failed ? 1 : 0;
}
