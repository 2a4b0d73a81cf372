/* Spooling an upload: the bytes go to a nameless temp file while their
 * SHA-256 is computed, so a remote backend can send a signed,
 * Content-Length'd request afterwards without holding the object in
 * memory. One spool per writer; not shared between threads. */
#ifndef LR_SPOOL_H
#define LR_SPOOL_H

#include <curl/curl.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/err.h"
#include "loop/loop.h"
#include "storage/storage.h"

typedef struct {
    int fd;
    size_t size;
    EVP_MD_CTX *sha;
} lr_spool;

/* Spool files are nameless (O_TMPFILE); where the file system cannot do
 * that, they are named LR_SPOOL_PREFIX "XXXXXX" in dir for an instant. */
#define LR_SPOOL_PREFIX "spool-"

lr_err lr_spool_open(lr_spool *s, const char *dir);
lr_err lr_spool_write(lr_spool *s, const void *buf, size_t len);
/* Hex SHA-256 of everything written; call once, after the last write. */
void lr_spool_sha256_hex(lr_spool *s, char hex[65]);
void lr_spool_close(lr_spool *s);

/* The writer of the remote backends (S3, Supabase): which store, the
 * object's key and type, and its spool. The local backend has its own. */
struct lr_store_writer {
    void *store; /* the backend's own store struct */
    char *key;
    char *content_type;
    lr_spool spool;
};

/* What the remote stores (S3, Supabase) share at their head. */
typedef struct {
    lr_store base;
    char *tmp_dir; /* spool files for uploads */
} lr_remote_store;

/* Fills r's shared fields (backend: a static name; bucket and tmp_dir
 * copied) and makes tmp_dir; LR_ERR_IO when it cannot be made. */
lr_err lr_remote_store_init(lr_remote_store *r, const lr_store_ops *ops, const char *backend,
                            const char *bucket, const char *tmp_dir);
/* The sweep op of a remote store: its spool files. */
int lr_remote_store_sweep(lr_store *st, const struct timespec *before);
/* Frees the shared fields (url_prefix included), not r itself. */
void lr_remote_store_clear(lr_remote_store *r);
/* Wipes a secret (a key, a header carrying one), then frees it. */
void lr_secret_free(char *secret);

/* open_writer/write/abort for remote backends; commit is theirs. */
lr_err lr_spooled_open(void *store, const char *dir, const char *key, const char *content_type,
                       struct lr_store_writer **out);
lr_err lr_spooled_write(struct lr_store_writer *w, const void *buf, size_t len);
void lr_spooled_free(struct lr_store_writer *w);

/* A remote commit as a series of requests on one curl handle, one at a
 * time: the same steps run blocking (commit) or on the loop (commit_start).
 * The backend embeds this first in its own state and fills the three
 * functions: next prepares the next request on xfer.easy (made or reset
 * for it) or returns false when there is none, result then being final;
 * answer takes the request's outcome; clear frees the backend's parts. */
typedef struct lr_spooled_op {
    lr_transfer xfer; /* first: the loop hands it back */
    struct lr_store_writer *w;
    lr_store_commit *c; /* NULL when blocking */
    bool (*next)(struct lr_spooled_op *op);
    void (*answer)(struct lr_spooled_op *op, CURLcode rc);
    void (*clear)(struct lr_spooled_op *op);
    lr_err result;
} lr_spooled_op;

/* Runs op's requests one after another on this thread; frees op and its
 * writer; returns the result. */
lr_err lr_spooled_run(lr_spooled_op *op);
/* Runs them on c->loop (see lr_store_commit): any thread. */
void lr_spooled_start(lr_spooled_op *op, lr_store_commit *c);

/* A byte range of a spool as a libcurl read callback source. */
typedef struct {
    int fd;
    off_t off;
    size_t left;
} lr_spool_range;

size_t lr_spool_read_cb(char *dst, size_t size, size_t n, void *range);

/* The transfer options every remote backend uses: no signals, a 10 s
 * connect timeout, abort when stalled for 60 s, http(s) only. */
void lr_spool_curl_defaults(void *curl_easy);

/* What the answer to a remote backend's bucket check means: 200 reachable,
 * 401/403 LR_ERR_DENIED (wrong credentials), no answer LR_ERR_UNAVAILABLE,
 * anything else LR_ERR_NOT_FOUND (no such bucket). */
lr_err lr_spool_bucket_status(long http_status);

#endif
