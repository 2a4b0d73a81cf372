/* lr_cli_open_store (store.h). */
#include <stdio.h>
#include <string.h>

#include "cli/store.h"

int lr_cli_open_store(const lr_config *cfg, const char *s3_bucket, lr_store **store)
{
    char dir[4096];
    lr_err e;
    const char *backend = s3_bucket ? "s3" : cfg->storage;
    if (!strcmp(backend, "s3")) {
        snprintf(dir, sizeof dir, "%s/tmp", cfg->data_dir);
        lr_s3_options o = {.endpoint = cfg->s3_endpoint,
                           .region = cfg->s3_region,
                           .bucket = s3_bucket ? s3_bucket : cfg->bucket,
                           .access_key = cfg->s3_access_key,
                           .secret_key = cfg->s3_secret_key,
                           .path_style = cfg->s3_path_style,
                           .public_url = s3_bucket ? NULL : cfg->s3_public_url,
                           .tmp_dir = dir,
                           .part_size = (size_t)cfg->s3_part_size};
        e = lr_store_s3_open(&o, store);
    } else if (!strcmp(backend, "supabase")) {
        snprintf(dir, sizeof dir, "%s/tmp", cfg->data_dir);
        e = lr_store_supabase_open(cfg->supabase_url, cfg->service_key, cfg->bucket, dir, store);
    } else {
        snprintf(dir, sizeof dir, "%s/storage", cfg->data_dir);
        e = lr_store_fs_open(dir, cfg->bucket, cfg->public_url, store);
    }
    if (e != LR_OK)
        fprintf(stderr, "storage: cannot open the %s backend: %s\n", backend, lr_strerror(e));
    return e == LR_OK ? 0 : -1;
}
