#include "storage/spool.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

lr_err lr_spool_open(lr_spool *s, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/spool-XXXXXX", dir);
    s->fd = mkstemp(path);
    if (s->fd < 0) {
        lr_error("storage: cannot create spool file in %s: %s", dir, strerror(errno));
        return LR_ERR_IO;
    }
    unlink(path); /* nameless: gone on close, even after a crash */
    s->size = 0;
    s->sha = EVP_MD_CTX_new();
    if (!s->sha || !EVP_DigestInit_ex(s->sha, EVP_sha256(), NULL)) {
        lr_spool_close(s);
        return LR_ERR_NOMEM;
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

lr_err lr_spooled_init(lr_spooled *o, const char *dir, const char *key, const char *content_type)
{
    o->key = strdup(key);
    o->content_type = strdup(content_type);
    lr_err e = (o->key && o->content_type) ? lr_spool_open(&o->spool, dir) : LR_ERR_NOMEM;
    if (e != LR_OK) {
        free(o->key);
        free(o->content_type);
        o->key = o->content_type = NULL;
    }
    return e;
}

void lr_spooled_release(lr_spooled *o)
{
    lr_spool_close(&o->spool);
    free(o->key);
    free(o->content_type);
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
