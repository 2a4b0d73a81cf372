/* Backend-independent storage: key rules, public URLs and the blob sink. */
#include "storage/storage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"

bool lr_store_remove_keys(lr_store *s, const lr_strv *keys)
{
    bool all = true;
    for (size_t i = 0; i < keys->n; i++) {
        lr_err e = keys->v[i] ? s->ops->remove(s, keys->v[i]) : LR_OK;
        if (e != LR_OK && e != LR_ERR_NOT_FOUND) {
            lr_warn("could not delete object %s (%s)", keys->v[i], lr_strerror(e));
            all = false;
        }
    }
    return all;
}

bool lr_store_key_valid(const char *key)
{
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || n > 1024 || key[0] == '/' || key[n - 1] == '/')
        return false;
    size_t seg = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = key[i];
        if (c == '/' || c == '\0') {
            /* empty, "." and ".." segments would alias or escape */
            if (seg == 0 || (seg == 1 && key[i - 1] == '.') ||
                (seg == 2 && key[i - 1] == '.' && key[i - 2] == '.'))
                return false;
            seg = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
        if (seg == 0 && c == '.')
            return false; /* no hidden files: temp files start with '.' */
        seg++;
    }
    return true;
}

char *lr_store_public_url(const lr_store *s, const char *key)
{
    return lr_xasprintf("%s/%s", s->url_prefix, key);
}

static void *sweep_main(void *arg)
{
    lr_store *s = arg;
    int64_t t0 = lr_monotonic_ms();
    int removed = s->ops->sweep(s, &s->sweep_before);
    lr_info("storage: leftover sweep done in %lld ms (%d removed)",
            (long long)(lr_monotonic_ms() - t0), removed);
    return NULL;
}

void lr_store_sweep_start(lr_store *s)
{
    clock_gettime(CLOCK_REALTIME, &s->sweep_before);
    s->sweeping = pthread_create(&s->sweeper, NULL, sweep_main, s) == 0;
    if (!s->sweeping) /* no thread to spare: sweep here, as a start always did */
        sweep_main(s);
}

void lr_store_close(lr_store *s)
{
    if (!s)
        return;
    if (s->sweeping)
        pthread_join(s->sweeper, NULL);
    s->ops->close(s);
}

struct lr_blob_sink {
    lr_store *store;
    lr_store_writer *w;
    char *user_id, *name, *key;
    const char *folder; /* NULL: by type (photo | video) */
    const lr_mime *mime;
    unsigned char head[LR_MIME_SNIFF_LEN];
    size_t head_len;
    size_t total, max;
};

lr_err lr_blob_begin(lr_store *s, const char *user_id, const char *name, size_t max_bytes,
                     lr_blob_sink **out)
{
    return lr_blob_begin_in(s, user_id, NULL, name, max_bytes, out);
}

lr_err lr_blob_begin_in(lr_store *s, const char *user_id, const char *folder, const char *name,
                        size_t max_bytes, lr_blob_sink **out)
{
    lr_blob_sink *k = lr_xcalloc(1, sizeof *k);
    k->store = s;
    k->folder = folder;
    k->user_id = lr_xstrdup(user_id);
    k->name = lr_xstrdup(name);
    k->max = max_bytes;
    *out = k;
    return LR_OK;
}

/* Called once enough bytes are in to name the object. */
static lr_err open_target(lr_blob_sink *k)
{
    k->mime = lr_mime_sniff(k->head, k->head_len);
    if (!k->mime)
        return LR_ERR_UNSUPPORTED;
    const char *folder = k->folder                             ? k->folder
                         : strcmp(k->mime->kind, "video") == 0 ? "video"
                                                               : "photo";
    k->key = lr_xasprintf("%s/%s/%s.%s", k->user_id, folder, k->name, k->mime->ext);
    if (!lr_store_key_valid(k->key))
        return LR_ERR_INVALID;
    lr_err e = k->store->ops->open_writer(k->store, k->key, k->mime->content_type, &k->w);
    if (e != LR_OK)
        return e;
    return k->store->ops->write(k->w, k->head, k->head_len);
}

lr_err lr_blob_write(lr_blob_sink *k, const void *buf, size_t len)
{
    if (k->total + len > k->max)
        return LR_ERR_TOO_LARGE;
    k->total += len;
    if (k->w)
        return k->store->ops->write(k->w, buf, len);
    size_t take = LR_MIME_SNIFF_LEN - k->head_len;
    if (take > len)
        take = len;
    memcpy(k->head + k->head_len, buf, take);
    k->head_len += take;
    if (k->head_len < LR_MIME_SNIFF_LEN)
        return LR_OK;
    lr_err e = open_target(k);
    if (e != LR_OK)
        return e;
    return len > take ? k->store->ops->write(k->w, (const char *)buf + take, len - take) : LR_OK;
}

static void sink_free(lr_blob_sink *k)
{
    free(k->user_id);
    free(k->name);
    free(k->key);
    free(k);
}

/* The writer holding every byte, its object named: what a commit takes.
 * On failure nothing is left open. */
static lr_err ready(lr_blob_sink *k)
{
    lr_err e = LR_OK;
    if (!k->w)
        e = k->head_len ? open_target(k) : LR_ERR_UNSUPPORTED;
    if (e != LR_OK && k->w) {
        k->store->ops->abort(k->w);
        k->w = NULL;
    }
    return e;
}

static void committed(lr_blob_sink *k, char **url, char **key)
{
    lr_metrics_add(LR_M_STORAGE_BYTES, NULL, (double)k->total);
    if (url)
        *url = lr_store_public_url(k->store, k->key);
    if (key)
        *key = lr_xstrdup(k->key);
}

lr_err lr_blob_finish(lr_blob_sink *k, char **url, char **key, const lr_mime **mime)
{
    lr_err e = ready(k);
    if (e == LR_OK) {
        e = k->store->ops->commit(k->w);
        k->w = NULL;
    }
    if (e == LR_OK) {
        committed(k, url, key);
        if (mime)
            *mime = k->mime;
    }
    sink_free(k);
    return e;
}

bool lr_store_commit_blocks(const lr_store *s)
{
    return s->ops->commit_start == NULL;
}

void lr_store_commit_release(lr_store_commit *c)
{
    if (c->op)
        c->op_free(c->op);
    c->op = NULL;
}

static void blob_committed(lr_store_commit *sc, lr_err e)
{
    lr_blob_commit *c = (lr_blob_commit *)sc;
    lr_blob_sink *k = c->sink;
    c->sink = NULL;
    if (e == LR_OK)
        committed(k, &c->url, &c->key);
    sink_free(k);
    c->done(c, e);
}

void lr_blob_commit_start(lr_blob_commit *c, lr_blob_sink *k, lr_loop *loop)
{
    c->sink = k;
    c->sc.loop = loop;
    c->sc.done = blob_committed;
    lr_err e = ready(k);
    if (e != LR_OK) {
        blob_committed(&c->sc, e);
        return;
    }
    lr_store_writer *w = k->w;
    k->w = NULL;
    if (k->store->ops->commit_start)
        k->store->ops->commit_start(w, &c->sc);
    else
        blob_committed(&c->sc, k->store->ops->commit(w));
}

void lr_blob_commit_release(lr_blob_commit *c)
{
    lr_store_commit_release(&c->sc);
    lr_blob_abort(c->sink);
    c->sink = NULL;
    free(c->url);
    free(c->key);
    c->url = c->key = NULL;
}

void lr_blob_abort(lr_blob_sink *k)
{
    if (!k)
        return;
    if (k->w)
        k->store->ops->abort(k->w);
    sink_free(k);
}
