/*
 * fuzz_helper.c - libFuzzer target for the automatic helper's matcher
 * (policy/helper.h, pol_helper_word_of), which reads every word a guest
 * sends on any channel while a service's helper is on.  The input's first
 * line holds up to 8 keywords separated by '|' (entry i has number i+1 and
 * keyword i); the rest is the guest's message.
 *
 * Oracle, besides ASan and UBSan:
 *  - the word is in range, and an entry matched is one of the keys;
 *  - the same message classified twice gives the same answer;
 *  - "0" alone always means a person, whatever the keywords;
 *  - for every combination of facts the decision is one of the rules, and
 *    a person is never answered with an entry or silence unless staff are
 *    joined while the service is open.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzlib.h"
#include "helper.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_KEYS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 8192)
		return 0;
	char *in = xmalloc(size + 1);
	memcpy(in, data, size);
	in[size] = '\0';
	if (strlen(in) != size) { /* text arrives NUL-free */
		free(in);
		return 0;
	}
	char *text = strchr(in, '\n');
	if (text)
		*text++ = '\0';
	else
		text = in + size;
	const char *words[MAX_KEYS];
	struct pol_helper_key keys[MAX_KEYS];
	size_t nkeys = 0;
	for (char *p = in; *p && nkeys < MAX_KEYS;) {
		char *bar = strchr(p, '|');
		if (bar)
			*bar = '\0';
		words[nkeys] = p;
		keys[nkeys] = (struct pol_helper_key){(unsigned)nkeys + 1, &words[nkeys], 1};
		nkeys++;
		if (!bar)
			break;
		p = bar + 1;
	}
	size_t entry = SIZE_MAX, again = SIZE_MAX;
	enum pol_helper_word w = pol_helper_word_of(text, keys, nkeys, &entry);
	if (w >= POL_HELPER_WORD_COUNT)
		fuzz_fail("word %d out of range", (int)w);
	if (w == POL_HELPER_ENTRY && entry >= nkeys)
		fuzz_fail("entry %zu of %zu keys", entry, nkeys);
	if (pol_helper_word_of(text, keys, nkeys, &again) != w || (w == POL_HELPER_ENTRY && again != entry))
		fuzz_fail("not the same answer twice");
	if (pol_helper_word_of("0", keys, nkeys, NULL) != POL_HELPER_PERSON)
		fuzz_fail("\"0\" is not a person");
	for (unsigned bits = 0; bits < 16; bits++) {
		struct pol_helper_facts f = {.staff_joined = bits & 1,
		                             .open = (bits >> 1) & 1,
		                             .menu_shown = (bits >> 2) & 1,
		                             .asked = (bits >> 3) & 1,
		                             .word = w};
		struct pol_helper_decision d;
		pol_helper_decide(&f, &d);
		if (d.rule < 0 || d.action >= POL_HELPER_ACTION_COUNT)
			fuzz_fail("no rule decided");
		if (w == POL_HELPER_PERSON && !(f.staff_joined && f.open) &&
		    d.action != POL_HELPER_HANDOVER && d.action != POL_HELPER_ASKED)
			fuzz_fail("a person asked for and not handed over");
	}
	free(in);
	return 0;
}
