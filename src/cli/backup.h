/* `lensroom backup create|verify|restore` (backup/backup.h does the work),
 * and the scheduled backups of `lensroom serve` built from the
 * configuration (LENSROOM_BACKUP_*). */
#ifndef LR_CLI_BACKUP_H
#define LR_CLI_BACKUP_H

#include "backup/backup.h"
#include "core/config.h"
#include "storage/storage.h"

extern const char lr_cli_backup_usage[];

/* argv[0] is "backup". Returns the process exit code: 0 done (verify:
 * sound), 1 failed or refused, 2 bad usage. */
int lr_cli_backup(int argc, char **argv, const char *version);

/* Scheduled backups of serve and what they own (the S3 copy's store). */
typedef struct lr_cli_backups lr_cli_backups;

/* *out is NULL when LENSROOM_BACKUP_INTERVAL is unset or 0. Non-zero (a
 * line on stderr) when the configuration is unusable. store is borrowed. */
int lr_cli_backups_start(const lr_config *cfg, lr_store *store, const char *version,
                         lr_cli_backups **out);
/* The scheduler, for /healthz; NULL for NULL. */
lr_backup_sched *lr_cli_backups_sched(lr_cli_backups *b);
void lr_cli_backups_stop(lr_cli_backups *b);

#endif
