/* Object storage: the interface every backend fills, and the blob sink that
 * streams a generation's output into it.
 *
 * Keys are relative paths made by the server ({userId}/{photo|video}/
 * {generationId}.{ext}); lr_store_key_valid refuses anything else (no "..",
 * no absolute paths, no empty segments, a narrow character set), and every
 * backend checks it again. Writers stream: nothing is held whole in memory.
 * A store is shared by all threads; a writer or sink belongs to one caller.
 *
 * Committing a remote object is an upload. It can block its caller
 * (commit, lr_blob_finish: the CLI, a request's input image) or run on the
 * event loop without holding any thread (commit_start, lr_blob_commit_start:
 * the pipeline's outputs); the local folder's commit is a rename after an
 * fdatasync, so it is done in place, on the caller's (worker) thread.
 */
#ifndef LR_STORAGE_H
#define LR_STORAGE_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <time.h>

#include "core/err.h"
#include "core/util.h"
#include "loop/loop.h"
#include "storage/mime.h"

#define LR_STORE_MAX_BYTES (50u * 1024u * 1024u) /* the bucket's file_size_limit */

typedef struct lr_store lr_store;
typedef struct lr_store_writer lr_store_writer;

/* An upload started with commit_start, embedded in its owner's state (as
 * lr_fetch is). The owner sets loop and done; done runs once, on the loop
 * thread, when the object is durably stored (LR_OK) or is not. Until then
 * op holds the backend's state; lr_store_commit_release frees it when the
 * commit never finished (the loop stopped first) and is a no-op after
 * done. */
typedef struct lr_store_commit {
    lr_loop *loop;
    void (*done)(struct lr_store_commit *c, lr_err e);
    void *op;
    void (*op_free)(void *op);
} lr_store_commit;
void lr_store_commit_release(lr_store_commit *c);

typedef struct {
    lr_err (*open_writer)(lr_store *s, const char *key, const char *content_type,
                          lr_store_writer **w);
    lr_err (*write)(lr_store_writer *w, const void *buf, size_t len);
    lr_err (*commit)(lr_store_writer *w); /* publishes atomically, frees w */
    /* Remote backends only (else NULL): commit without blocking, the
     * requests streamed from the spool on c->loop (any thread may start
     * it; a large object goes up in parts). Takes w. */
    void (*commit_start)(lr_store_writer *w, lr_store_commit *c);
    void (*abort)(lr_store_writer *w); /* discards, frees w */
    lr_err (*remove)(lr_store *s, const char *key);
    /* Local backends only (else NULL): an open read-only fd of the object. */
    lr_err (*open_local)(lr_store *s, const char *key, int *fd, struct stat *st);
    /* The bucket answers (LR_OK), is missing (NOT_FOUND), refuses these
     * credentials (DENIED: 401/403) or is unreachable (UNAVAILABLE). */
    lr_err (*ping)(lr_store *s);
    /* Removes what a killed process left (lr_temp_sweep: the local
     * folder's temp files, a remote backend's spool files), changed before
     * `before`; returns how many. May walk the whole bucket: see
     * lr_store_sweep_start. */
    int (*sweep)(lr_store *s, const struct timespec *before);
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
    pthread_t sweeper;
    bool sweeping; /* sweeper runs or is to be joined */
    struct timespec sweep_before;
};

bool lr_store_key_valid(const char *key);

/* Temp files. A writer's bytes go to a temp file named {prefix}XXXXXX
 * (mkstemp's six characters; keys never start with '.', spool files live
 * outside the bucket), on which the writer holds an exclusive flock(2)
 * for as long as it lives. lr_temp_create makes and locks one (mode 0600:
 * the caller widens it). lr_temp_sweep removes from dir, and with depth
 * > 0 from its subfolders, the temp files with that prefix no process
 * holds: what a kill -9 left. Only those names, only regular files, never
 * through a symlink; a live writer's file is never touched. With before
 * set, only files whose status changed before it: a writer of this
 * process that has made its file but not locked it yet is left alone.
 * Returns how many it removed and logs them. */
int lr_temp_create(char *path_template);
int lr_temp_sweep(const char *dir, const char *prefix, int depth, const struct timespec *before);
/* Runs the store's sweep on a thread of its own, over what was there
 * before this call, and logs "storage: leftover sweep done" when it
 * ends: a large bucket tree does not delay the start. Call it before the
 * store is first written to; lr_store_close waits for the sweep. */
void lr_store_sweep_start(lr_store *s);
/* True when the store's commit is local disk work (fdatasync: run it on
 * a worker), false when it is an upload that commit_start runs on the loop. */
bool lr_store_commit_blocks(const lr_store *s);
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

/* lr_blob_finish without blocking, embedded in the owner's state: set
 * done and ctx, then start. lr_blob_commit_start takes k; a remote store
 * uploads on loop and done runs on the loop thread; the local store
 * commits inside the call (so call it from a worker) and done runs before
 * it returns. On LR_OK url and key are set (malloc'd: take them, or
 * release frees them). release also frees a commit cut off by shutdown
 * (loop stopped); call it once, on a zeroed or finished struct too. */
typedef struct lr_blob_commit {
    lr_store_commit sc; /* first */
    lr_blob_sink *sink; /* while it runs */
    char *url, *key;
    void (*done)(struct lr_blob_commit *c, lr_err e);
    void *ctx;
} lr_blob_commit;
void lr_blob_commit_start(lr_blob_commit *c, lr_blob_sink *k, lr_loop *loop);
void lr_blob_commit_release(lr_blob_commit *c);

#endif
