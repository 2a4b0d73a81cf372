/* `lensroom smoke`: the original design's db:smoke for whatever backends
 * are configured. Each check prints one line, "✓ name: detail" or
 * "✗ name: reason" (green/red only on a terminal, never with NO_COLOR);
 * checks that depend on a failed one are reported as skipped. Uses a
 * throwaway user (TEST_USER_ID when set) and leaves its ledger balanced.
 * Returns the process exit code: 0 when every check passed, 1 otherwise.
 */
#ifndef LR_SMOKE_H
#define LR_SMOKE_H

#include "core/config.h"
#include "db/db.h"
#include "storage/storage.h"

/* db or store may be NULL when they could not be opened (*_err says why). */
int lr_smoke_run(const lr_config *cfg, lr_db *db, const char *db_err, lr_store *store,
                 const char *store_err);

#endif
