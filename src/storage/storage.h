/* Object storage: the interface every backend fills, and the blob sink that
 * streams a generation's output into it.
 *
 * Keys are relative paths made by the server ({userId}/{photo|video}/
 * {generationId}.{ext}); lr_store_key_valid refuses anything else (no "..",
 * no absolute paths, no empty segments, a narrow character set), and every
 * backend checks it again. Writers stream: nothing is held whole in memory.
 * A store is shared by all threads; a writer or sink belongs to one caller.
 */
#ifndef LR_STORAGE_H
#define LR_STORAGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

#include "core/err.h"
#include "core/util.h"
#include "storage/mime.h"

#define LR_STORE_MAX_BYTES (50u * 1024u * 1024u) /* the bucket's file_size_limit */

typedef struct lr_store lr_store;
typedef struct lr_store_writer lr_store_writer;

typedef struct {
    lr_err (*open_writer)(lr_store *s, const char *key, const char *content_type,
                          lr_store_writer **w);
    lr_err (*write)(lr_store_writer *w, const void *buf, size_t len);
    lr_err (*commit)(lr_store_writer *w); /* publishes atomically, frees w */
    void (*abort)(lr_store_writer *w);    /* discards, frees w */
    lr_err (*remove)(lr_store *s, const char *key);
    /* Local backends only (else NULL): an open read-only fd of the object. */
    lr_err (*open_local)(lr_store *s, const char *key, int *fd, struct stat *st);
    /* The bucket answers (LR_OK), is missing (NOT_FOUND), refuses these
     * credentials (DENIED: 401/403) or is unreachable (UNAVAILABLE). */
    lr_err (*ping)(lr_store *s);
    /* Reads a whole object of at most max bytes into *buf (malloc'd), for
     * checks like `lensroom smoke`; LR_ERR_NOT_FOUND when it is absent. */
    lr_err (*read)(lr_store *s, const char *key, size_t max, char **buf, size_t *len);
    void (*close)(lr_store *s);
} lr_store_ops;

struct lr_store {
    const lr_store_ops *ops;
    const char *backend; /* "local" | "s3" | "supabase" */
    char *bucket;
    char *url_prefix; /* public URL of the object is url_prefix/key */
};

bool lr_store_key_valid(const char *key);

/* Temp files. A writer's bytes go to a temp file named {prefix}XXXXXX
 * (mkstemp's six characters; keys never start with '.', spool files live
 * outside the bucket), on which the writer holds an exclusive flock(2)
 * for as long as it lives. lr_temp_create makes and locks one (mode 0600:
 * the caller widens it). lr_temp_sweep removes from dir, and with depth
 * > 0 from its subfolders, the temp files with that prefix no process
 * holds: what a kill -9 left. Only those names, only regular files, never
 * through a symlink; a live writer's file is never touched. Returns how
 * many it removed and logs them. */
int lr_temp_create(char *path_template);
int lr_temp_sweep(const char *dir, const char *prefix, int depth);
/* Removes every key of keys (missing ones and NULL entries count as removed);
 * logs each failure. True when all are gone. Blocking (remote backends). */
bool lr_store_remove_keys(lr_store *s, const lr_strv *keys);
/* {url_prefix}/{key}, malloc'd. */
char *lr_store_public_url(const lr_store *s, const char *key);
void lr_store_close(lr_store *s);

/* The local folder backend: objects under root/{bucket}/{key}, public at
 * {public_base}/storage/v1/object/public/{bucket}/{key} (Supabase's shape). */
lr_err lr_store_fs_open(const char *root, const char *bucket, const char *public_base,
                        lr_store **out);

typedef struct {
    const char *endpoint; /* http(s)://host[:port] */
    const char *region;
    const char *bucket;
    const char *access_key;
    const char *secret_key;
    bool path_style;        /* endpoint/bucket/key (else bucket.host/key) */
    const char *public_url; /* NULL: the object URL itself */
    const char *tmp_dir;    /* spool files for uploads */
    size_t part_size;       /* multipart above this (0: 16 MiB; S3 needs >= 5 MiB) */
} lr_s3_options;

/* The S3-protocol backend (SigV4). */
lr_err lr_store_s3_open(const lr_s3_options *o, lr_store **out);

/* Supabase Storage's REST API with the secret key (sb_secret_…: sent in
 * apikey only) or a legacy service_role JWT (apikey and Bearer); public
 * URLs {url}/storage/v1/object/public/{bucket}/{key}. */
lr_err lr_store_supabase_open(const char *url, const char *service_key, const char *bucket,
                              const char *tmp_dir, lr_store **out);

/* A sink decides the object's type from its first bytes, then names it
 * {user_id}/{photo|video}/{name}.{ext} and streams the rest; more than
 * max_bytes aborts with LR_ERR_TOO_LARGE, an unknown type with
 * LR_ERR_UNSUPPORTED. */
typedef struct lr_blob_sink lr_blob_sink;
lr_err lr_blob_begin(lr_store *s, const char *user_id, const char *name, size_t max_bytes,
                     lr_blob_sink **out);
/* The same under {user_id}/{folder}/ (a static string, e.g. "inputs"). */
lr_err lr_blob_begin_in(lr_store *s, const char *user_id, const char *folder, const char *name,
                        size_t max_bytes, lr_blob_sink **out);
lr_err lr_blob_write(lr_blob_sink *k, const void *buf, size_t len);
/* Commits; *url and *key are malloc'd (either may be NULL). Frees k. */
lr_err lr_blob_finish(lr_blob_sink *k, char **url, char **key, const lr_mime **mime);
void lr_blob_abort(lr_blob_sink *k);

#endif
