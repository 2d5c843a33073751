/*
 * test_commands.c - the "!threshold ..." command parser (events.c
 * events_parse_command, groups.c groups_parse): which bodies are commands,
 * and which command.  Cases named "fuzz:" are inputs fuzz_command found.
 */
#include "events.h"
#include "groups.h"
#include "testlib.h"

static void test_commands(void)
{
	CHECK_EQ_INT(events_parse_command(NULL), POL_CMD_NONE);
	CHECK_EQ_INT(events_parse_command("hello"), POL_CMD_NONE);
	CHECK_EQ_INT(events_parse_command("!thresholds ping"), POL_CMD_NONE);
	CHECK_EQ_INT(events_parse_command("!threshold"), POL_CMD_HELP);
	CHECK_EQ_INT(events_parse_command("  !threshold ping"), POL_CMD_PING);
	CHECK_EQ_INT(events_parse_command("!threshold version"), POL_CMD_VERSION);
	CHECK_EQ_INT(events_parse_command("!threshold frobnicate"), POL_CMD_UNKNOWN);
	CHECK_EQ_INT(events_parse_command("!threshold group"), POL_CMD_UNKNOWN);
	CHECK_EQ_INT(events_parse_command("!threshold group create Art club"), POL_CMD_GROUP_CREATE);
	CHECK_EQ_INT(events_parse_command("!threshold group add Amber Otter"), POL_CMD_GROUP_ADD);
	CHECK_EQ_INT(events_parse_command("!threshold group remove Amber Otter"), POL_CMD_GROUP_REMOVE);
	CHECK_EQ_INT(events_parse_command("!threshold group list"), POL_CMD_GROUP_LIST);
	CHECK_EQ_INT(events_parse_command("!threshold group lists"), POL_CMD_UNKNOWN);
}

/* fuzz: "!threshold group" then a tab was no command at all (POL_CMD_NONE),
 * so the bot said nothing: events_parse_command ends the word "group" at a
 * tab or newline, but groups_parse wanted a space.  The exact input was
 * "!threshold group\t\0 create Tuesda" (a body ends at its NUL). */
static void test_group_then_tab(void)
{
	static const char input[] = "!threshold group\t\0 create Tuesda";
	CHECK_EQ_INT(events_parse_command(input), POL_CMD_UNKNOWN);
	CHECK_EQ_INT(events_parse_command("!threshold group\nlist"), POL_CMD_UNKNOWN);
	CHECK_EQ_INT(events_parse_command("!threshold group\tlist"), POL_CMD_GROUP_LIST);
	CHECK_EQ_INT(events_parse_command("!threshold group \t add\tAmber Otter"), POL_CMD_GROUP_ADD);
	CHECK_EQ_INT(groups_parse("group\t"), POL_CMD_UNKNOWN);
	CHECK_EQ_INT(groups_parse("groups add"), POL_CMD_NONE);
}

int main(void)
{
	test_commands();
	test_group_then_tab();
	return TEST_DONE();
}
