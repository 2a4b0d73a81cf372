#include "storage/spool.h"

#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "storage/storage.h"

int lr_temp_create(char *path_template)
{
    int fd = mkostemp(path_template, O_CLOEXEC);
    /* Locked before anything else happens to it: from here on a sweep by
     * another process (a restart beside a running one, `lensroom smoke`)
     * sees a live writer and leaves the file alone. */
    if (fd >= 0 && flock(fd, LOCK_EX) != 0) {
        int err = errno;
        close(fd);
        unlink(path_template);
        errno = err;
        return -1;
    }
    return fd;
}

/* prefix followed by exactly mkstemp's six letters and digits. */
static bool temp_name(const char *name, const char *prefix)
{
    size_t p = strlen(prefix);
    if (strncmp(name, prefix, p) != 0 || strlen(name + p) != 6)
        return false;
    for (const char *c = name + p; *c; c++)
        if (!isalnum((unsigned char)*c))
            return false;
    return true;
}

static bool changed_before(const struct stat *st, const struct timespec *before)
{
    return !before || st->st_ctim.tv_sec < before->tv_sec ||
           (st->st_ctim.tv_sec == before->tv_sec && st->st_ctim.tv_nsec < before->tv_nsec);
}

/* Removes dirfd/name if it is a regular file whose writer is gone: the
 * lock a writer holds until it exits is free. */
static bool remove_abandoned(int dirfd, const char *name, const struct timespec *before)
{
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat st;
    bool gone = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && changed_before(&st, before) &&
                flock(fd, LOCK_EX | LOCK_NB) == 0 && unlinkat(dirfd, name, 0) == 0;
    close(fd);
    return gone;
}

static int sweep_fd(int dirfd, const char *prefix, int depth, const struct timespec *before)
{
    DIR *d = fdopendir(dirfd);
    if (!d) {
        close(dirfd);
        return 0;
    }
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (temp_name(e->d_name, prefix)) {
            removed += remove_abandoned(dirfd, e->d_name, before);
        } else if (depth > 0 && e->d_name[0] != '.' &&
                   (e->d_type == DT_DIR || e->d_type == DT_UNKNOWN)) {
            int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0)
                removed += sweep_fd(sub, prefix, depth - 1, before);
        }
    }
    closedir(d);
    return removed;
}

int lr_temp_sweep(const char *dir, const char *prefix, int depth, const struct timespec *before)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return 0;
    int removed = sweep_fd(fd, prefix, depth, before);
    if (removed > 0)
        lr_info("storage: removed %d temp file%s left in %s by a stopped process", removed,
                removed == 1 ? "" : "s", dir);
    return removed;
}

lr_err lr_spool_open(lr_spool *s, const char *dir)
{
    /* Nameless from the start where the file system can (O_TMPFILE): a
     * crash leaves nothing. Else a named, locked file unlinked at once;
     * lr_temp_sweep takes what a crash between the two calls left. */
    s->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (s->fd < 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/" LR_SPOOL_PREFIX "XXXXXX", dir);
        s->fd = lr_temp_create(path);
        if (s->fd >= 0)
            unlink(path);
    }
    if (s->fd < 0) {
        lr_error("storage: cannot create spool file in %s: %s", dir, strerror(errno));
        return LR_ERR_IO;
    }
    s->size = 0;
    s->sha = EVP_MD_CTX_new();
    if (!s->sha || !EVP_DigestInit_ex(s->sha, EVP_sha256(), NULL)) {
        lr_spool_close(s);
        return LR_ERR_IO; /* OpenSSL could not set up SHA-256 */
    }
    return LR_OK;
}

lr_err lr_spool_write(lr_spool *s, const void *buf, size_t len)
{
    const char *p = buf;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(s->fd, p, left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            lr_error("storage: spool write failed: %s", strerror(errno));
            return LR_ERR_IO;
        }
        p += n;
        left -= (size_t)n;
    }
    EVP_DigestUpdate(s->sha, buf, len);
    s->size += len;
    return LR_OK;
}

void lr_spool_sha256_hex(lr_spool *s, char hex[65])
{
    unsigned char d[32];
    EVP_DigestFinal_ex(s->sha, d, NULL);
    lr_hex(d, 32, hex);
}

void lr_spool_close(lr_spool *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    EVP_MD_CTX_free(s->sha);
    s->sha = NULL;
}

lr_err lr_remote_store_init(lr_remote_store *r, const lr_store_ops *ops, const char *backend,
                            const char *bucket, const char *tmp_dir)
{
    r->base.ops = ops;
    r->base.backend = backend;
    r->base.bucket = lr_xstrdup(bucket);
    r->tmp_dir = lr_xstrdup(tmp_dir);
    if (lr_mkdir_p(tmp_dir, 0700) != LR_OK) {
        lr_error("storage: cannot create %s: %s", tmp_dir, strerror(errno));
        return LR_ERR_IO;
    }
    return LR_OK;
}

int lr_remote_store_sweep(lr_store *st, const struct timespec *before)
{
    return lr_temp_sweep(((lr_remote_store *)st)->tmp_dir, LR_SPOOL_PREFIX, 0, before);
}

void lr_remote_store_clear(lr_remote_store *r)
{
    free(r->base.bucket);
    free(r->base.url_prefix);
    free(r->tmp_dir);
}

void lr_secret_free(char *secret)
{
    if (secret)
        OPENSSL_cleanse(secret, strlen(secret));
    free(secret);
}

lr_err lr_spooled_open(void *store, const char *dir, const char *key, const char *content_type,
                       struct lr_store_writer **out)
{
    if (!lr_store_key_valid(key))
        return LR_ERR_INVALID;
    struct lr_store_writer *w = lr_xcalloc(1, sizeof *w);
    w->store = store;
    w->key = lr_xstrdup(key);
    w->content_type = lr_xstrdup(content_type);
    lr_err e = lr_spool_open(&w->spool, dir);
    if (e != LR_OK) {
        free(w->key);
        free(w->content_type);
        free(w);
        return e;
    }
    *out = w;
    return LR_OK;
}

lr_err lr_spooled_write(struct lr_store_writer *w, const void *buf, size_t len)
{
    return lr_spool_write(&w->spool, buf, len);
}

void lr_spooled_free(struct lr_store_writer *w)
{
    lr_spool_close(&w->spool);
    free(w->key);
    free(w->content_type);
    free(w);
}

static void spooled_op_free(void *arg)
{
    lr_spooled_op *op = arg;
    if (op->xfer.easy)
        curl_easy_cleanup(op->xfer.easy);
    op->clear(op);
    lr_spooled_free(op->w);
    free(op);
}

/* Prepares op's next request on its handle: false when there is none. */
static bool spooled_next(lr_spooled_op *op)
{
    if (!op->xfer.easy)
        op->xfer.easy = curl_easy_init();
    else
        curl_easy_reset(op->xfer.easy);
    if (!op->xfer.easy)
        abort(); /* curl could not allocate a handle: out of memory */
    return op->next(op);
}

lr_err lr_spooled_run(lr_spooled_op *op)
{
    while (spooled_next(op))
        op->answer(op, curl_easy_perform(op->xfer.easy));
    lr_err e = op->result;
    spooled_op_free(op);
    return e;
}

static void spooled_step(void *arg);

static void spooled_answered(lr_transfer *t, CURLcode rc)
{
    lr_spooled_op *op = (lr_spooled_op *)t;
    op->answer(op, rc);
    spooled_step(op);
}

/* On the loop thread: the next request, or the end. */
static void spooled_step(void *arg)
{
    lr_spooled_op *op = arg;
    if (spooled_next(op)) {
        op->xfer.done = spooled_answered;
        lr_loop_add_transfer(op->c->loop, &op->xfer);
        return;
    }
    lr_store_commit *c = op->c;
    lr_err e = op->result;
    c->op = NULL;
    spooled_op_free(op);
    c->done(c, e);
}

void lr_spooled_start(lr_spooled_op *op, lr_store_commit *c)
{
    op->c = c;
    c->op = op;
    c->op_free = spooled_op_free;
    lr_loop_post(c->loop, spooled_step, op); /* the multi is the loop thread's */
}

size_t lr_spool_read_cb(char *dst, size_t size, size_t n, void *arg)
{
    lr_spool_range *b = arg;
    size_t want = size * n < b->left ? size * n : b->left;
    if (want == 0)
        return 0;
    ssize_t got = pread(b->fd, dst, want, b->off);
    if (got < 0)
        return CURL_READFUNC_ABORT;
    b->off += got;
    b->left -= (size_t)got;
    return (size_t)got;
}

void lr_spool_curl_defaults(void *curl_easy)
{
    CURL *c = curl_easy;
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
}

lr_err lr_spool_bucket_status(long http_status)
{
    if (http_status == 401 || http_status == 403)
        return LR_ERR_DENIED;
    return http_status == 200 ? LR_OK : http_status == 0 ? LR_ERR_UNAVAILABLE : LR_ERR_NOT_FOUND;
}
