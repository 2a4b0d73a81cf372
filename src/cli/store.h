/* The configured object storage, opened from the configuration: the
 * local folder ({data_dir}/storage), S3 or Supabase Storage. Shared by the
 * commands that need it (serve, smoke, backup). */
#ifndef LR_CLI_STORE_H
#define LR_CLI_STORE_H

#include "core/config.h"
#include "storage/storage.h"

/* bucket: NULL for the configured one (an S3 backup target names its
 * own, on the configured S3 endpoint: s3 then forces the S3 backend).
 * Prints the reason on stderr and returns non-zero when it cannot. */
int lr_cli_open_store(const lr_config *cfg, const char *s3_bucket, lr_store **store);

#endif
