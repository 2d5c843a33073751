/*
 * Built only by the layers_bridge_include test, with threshold_bridge's
 * include path: it must fail to compile, because bridge/ cannot see an
 * appservice/ header such as the outbox's (docs/architecture.md, "Layers").
 */
#include "outbox.h"

int layers_probe(void);

int layers_probe(void)
{
	return 0;
}
