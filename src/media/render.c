#include "media/render.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

#define TEMP_PREFIX ".lr-render-"
/* The cache's size is checked every this many new variants. */
#define TRIM_EVERY 32

struct lr_render {
    lr_store *store;
    char *dir;
    uint64_t max_bytes;
    int time_limit_ms;
    pthread_mutex_t busy; /* held while a variant is made */
    int since_trim;       /* under busy */
};

lr_render *lr_render_new(lr_store *store, const char *cache_dir, uint64_t max_bytes,
                         int time_limit_ms)
{
    if (mkdir(cache_dir, 0700) != 0 && errno != EEXIST) {
        lr_error("render: cannot create %s: %s", cache_dir, strerror(errno));
        return NULL;
    }
    lr_temp_sweep(cache_dir, TEMP_PREFIX, 0, NULL);
    lr_render *r = lr_xcalloc(1, sizeof *r);
    *r = (lr_render){.store = store,
                     .dir = lr_xstrdup(cache_dir),
                     .max_bytes = max_bytes,
                     .time_limit_ms = time_limit_ms};
    pthread_mutex_init(&r->busy, NULL);
    return r;
}

void lr_render_free(lr_render *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->busy);
    free(r->dir);
    free(r);
}

/* {dir}/{sha256 of what the variant depends on}.{webp|png} */
static void variant_path(const lr_render *r, const char *key, const struct stat *src,
                         const lr_media_size *s, char *out, size_t n)
{
    char id[1400];
    int len = snprintf(id, sizeof id, "%s\n%" PRIu64 "\n%" PRIu64 ".%09ld\n%d %d %d %d %d", key,
                       (uint64_t)src->st_size, (uint64_t)src->st_mtim.tv_sec, src->st_mtim.tv_nsec,
                       s->width, s->height, (int)s->fit, s->quality, (int)s->format);
    unsigned char d[32];
    char hex[65];
    EVP_Digest(id, (size_t)len, d, NULL, EVP_sha256(), NULL);
    lr_hex(d, sizeof d, hex);
    snprintf(out, n, "%s/%s.%s", r->dir, hex, s->format == LR_OUT_PNG ? "png" : "webp");
}

static lr_err open_cached(const char *path, int *fd, struct stat *st)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (*fd < 0)
        return LR_ERR_NOT_FOUND;
    if (fstat(*fd, st) != 0 || !S_ISREG(st->st_mode)) {
        close(*fd);
        return LR_ERR_NOT_FOUND;
    }
    return LR_OK;
}

typedef struct {
    char name[80];
    time_t mtime;
    off_t size;
} entry;

static int by_age(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    return (x->mtime > y->mtime) - (x->mtime < y->mtime);
}

/* Oldest variants out until the cache holds at most 3/4 of max_bytes,
 * when it holds more than max_bytes. Under r->busy. */
static void trim(lr_render *r)
{
    DIR *d = opendir(r->dir);
    if (!d)
        return;
    size_t n = 0, cap = 64;
    entry *v = lr_xmalloc(cap * sizeof *v);
    uint64_t total = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        struct stat st;
        if (de->d_name[0] == '.' || strlen(de->d_name) >= sizeof v->name ||
            fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (n == cap)
            v = lr_xrealloc(v, (cap *= 2) * sizeof *v);
        memcpy(v[n].name, de->d_name, strlen(de->d_name) + 1); /* fits: checked above */
        v[n].mtime = st.st_mtime;
        v[n].size = st.st_size;
        total += (uint64_t)st.st_size;
        n++;
    }
    if (total > r->max_bytes) {
        qsort(v, n, sizeof *v, by_age);
        for (size_t i = 0; i < n && total > r->max_bytes / 4 * 3; i++) {
            if (unlinkat(dirfd(d), v[i].name, 0) == 0)
                total -= (uint64_t)v[i].size;
        }
    }
    closedir(d);
    free(v);
}

/* Writes blob b to path through a locked temp file and a rename. */
static lr_err publish(const lr_render *r, const char *path, const lr_media_blob *b)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/" TEMP_PREFIX "XXXXXX", r->dir);
    int fd = lr_temp_create(tmp);
    if (fd < 0)
        return LR_ERR_IO;
    bool ok = write(fd, b->data, b->len) == (ssize_t)b->len && fchmod(fd, 0600) == 0 &&
              rename(tmp, path) == 0;
    if (!ok)
        unlink(tmp);
    close(fd);
    return ok ? LR_OK : LR_ERR_IO;
}

/* Makes the variant at path from the object src (mapped). Under r->busy. */
static lr_err make(lr_render *r, int src, const struct stat *sst, const lr_media_size *s,
                   const char *path, lr_media_reason *why)
{
    void *p = mmap(NULL, (size_t)sst->st_size, PROT_READ, MAP_PRIVATE, src, 0);
    if (p == MAP_FAILED)
        return LR_ERR_IO;
    lr_media_limits lim = lr_media_default_limits();
    lim.deadline_ms = lr_monotonic_ms() + r->time_limit_ms;
    lr_media_blob out = {0};
    lr_err e = lr_media_image(p, (size_t)sst->st_size, &lim, s, 1, &out, why);
    munmap(p, (size_t)sst->st_size);
    if (e == LR_OK)
        e = publish(r, path, &out);
    lr_media_blob_clear(&out);
    if (e == LR_OK && ++r->since_trim >= TRIM_EVERY) {
        r->since_trim = 0;
        trim(r);
    }
    return e;
}

lr_err lr_render_variant(lr_render *r, const char *key, const lr_media_size *s, int *fd,
                         struct stat *st, lr_media_reason *why)
{
    const char *dot = strrchr(key, '.');
    const lr_mime *mime = dot ? lr_mime_by_ext(dot + 1) : NULL;
    if (!lr_store_key_valid(key) || !mime || strcmp(mime->kind, "image") != 0 ||
        !r->store->ops->open_local)
        return LR_ERR_NOT_FOUND;
    int src;
    struct stat sst;
    if (r->store->ops->open_local(r->store, key, &src, &sst) != LR_OK)
        return LR_ERR_NOT_FOUND;
    char path[4096];
    variant_path(r, key, &sst, s, path, sizeof path);
    lr_err e = open_cached(path, fd, st);
    if (e == LR_OK || sst.st_size <= 0 || (uint64_t)sst.st_size > LR_STORE_MAX_BYTES) {
        close(src);
        return e == LR_OK ? LR_OK : LR_ERR_NOT_FOUND;
    }
    if (pthread_mutex_trylock(&r->busy) != 0) {
        close(src);
        return LR_ERR_UNAVAILABLE;
    }
    /* Made by the request that held the lock just now? */
    e = open_cached(path, fd, st);
    if (e != LR_OK) {
        e = make(r, src, &sst, s, path, why);
        if (e == LR_OK)
            e = open_cached(path, fd, st);
    }
    pthread_mutex_unlock(&r->busy);
    close(src);
    return e;
}
