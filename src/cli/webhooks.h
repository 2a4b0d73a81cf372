/* `lensroom webhooks add|list|remove|rotate-secret`: the operator's
 * outgoing webhook endpoints, as /api/admin/webhooks manages them. */
#ifndef LR_CLI_WEBHOOKS_H
#define LR_CLI_WEBHOOKS_H

#include "core/config.h"
#include "db/billing.h"

extern const char lr_cli_webhooks_usage[];

/* argv[0] is "webhooks". Returns the exit code: 0 done, 1 failed, 2 bad
 * usage. The URL obeys the download address policy (LENSROOM_FETCH_ALLOW). */
int lr_cli_webhooks(int argc, char **argv, const lr_config *cfg, lr_billing_db *db);

#endif
