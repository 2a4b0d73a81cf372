#include "storage/spool.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "storage/storage.h"

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

lr_err lr_spooled_open(void *store, const char *dir, const char *key, const char *content_type,
                       struct lr_store_writer **out)
{
    if (!lr_store_key_valid(key))
        return LR_ERR_INVALID;
    struct lr_store_writer *w = calloc(1, sizeof *w);
    if (!w)
        return LR_ERR_NOMEM;
    w->store = store;
    w->key = strdup(key);
    w->content_type = strdup(content_type);
    lr_err e = (w->key && w->content_type) ? lr_spool_open(&w->spool, dir) : LR_ERR_NOMEM;
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
