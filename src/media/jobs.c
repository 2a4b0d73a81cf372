#include "media/jobs.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"

/* How far back the rescan looks for settled generations never queued. */
#define RESCAN_DAY_MS (24LL * 3600 * 1000)
/* Jobs yield to the request path: a thread starts its next job once no
 * generation has been submitted for QUIET_MS, or MAX_DEFER_MS after its
 * previous job ended, whichever comes first. Under a steady stream of
 * generations each thread then makes at most one job per MAX_DEFER_MS:
 * the rest wait (in the queue, then in the table) for a quieter moment,
 * instead of taking CPU, disk syncs and database writes from the
 * generations being answered. */
#define QUIET_MS 200
#define MAX_DEFER_MS 2000

typedef char gen_id[LR_UUID_LEN + 1];

struct lr_previews {
    lr_db *db;
    lr_store *store;
    lr_previews_opts o;
    lr_preview_done_fn done;
    void *done_ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    gen_id *queue; /* ring of o.queue_max ids */
    int head, count;
    gen_id *running;        /* one slot per thread, "" when idle */
    bool overflowed;        /* an id was turned away: rescan when drained */
    int64_t last_submit_ms; /* lr_monotonic_ms() of the last submit */
    atomic_bool stop;
    pthread_t *threads;
};

/* Under q->mu: id queued or running already. */
static bool known(const lr_previews *q, const char *id)
{
    for (int i = 0; i < q->count; i++) {
        if (!strcmp(q->queue[(q->head + i) % q->o.queue_max], id))
            return true;
    }
    for (int i = 0; i < q->o.threads; i++) {
        if (!strcmp(q->running[i], id))
            return true;
    }
    return false;
}

/* Under q->mu. False when the queue is full (the row waits for the rescan). */
static bool push(lr_previews *q, const char *id)
{
    if (strlen(id) != LR_UUID_LEN || known(q, id))
        return true;
    if (q->count == q->o.queue_max) {
        q->overflowed = true;
        return false;
    }
    memcpy(q->queue[(q->head + q->count) % q->o.queue_max], id, LR_UUID_LEN + 1);
    q->count++;
    pthread_cond_signal(&q->cv);
    return true;
}

void lr_previews_submit(lr_previews *q, const char *generation_id)
{
    pthread_mutex_lock(&q->mu);
    q->last_submit_ms = lr_monotonic_ms();
    push(q, generation_id);
    pthread_mutex_unlock(&q->mu);
}

int lr_previews_recover(lr_previews *q)
{
    char since[32];
    lr_time_iso(lr_now_ms() - RESCAN_DAY_MS, since);
    lr_strv ids = {0};
    if (q->db->ops->preview_pending(q->db, since, q->o.queue_max, &ids) != LR_OK)
        return -1;
    int n = 0;
    pthread_mutex_lock(&q->mu);
    for (size_t i = 0; i < ids.n && push(q, ids.v[i]); i++)
        n++;
    pthread_mutex_unlock(&q->mu);
    lr_strv_clear(&ids);
    if (n > 0)
        lr_info("previews: %d job(s) queued from the table", n);
    return n;
}

int lr_previews_pending(lr_previews *q)
{
    pthread_mutex_lock(&q->mu);
    int n = q->count;
    for (int i = 0; i < q->o.threads; i++)
        n += q->running[i][0] != '\0';
    pthread_mutex_unlock(&q->mu);
    return n;
}

/* ---- one job ------------------------------------------------------------ */

/* An output's object: {user}/{photo|video}/{id}.{ext} or {id}_{n}.{ext}.
 * *base gets {user}/{folder}/{id}[_{n}] (malloc'd), *video its folder. */
static bool output_key(const char *key, const char *id, char **base, bool *video)
{
    const char *a = strchr(key, '/');
    const char *b = a ? strchr(a + 1, '/') : NULL;
    if (!b || strchr(b + 1, '/'))
        return false;
    size_t folder = (size_t)(b - a - 1);
    bool is_video = folder == 5 && !strncmp(a + 1, "video", 5);
    if (!is_video && !(folder == 5 && !strncmp(a + 1, "photo", 5)))
        return false;
    const char *name = b + 1, *dot = strrchr(name, '.');
    size_t idn = strlen(id);
    if (!dot || strncmp(name, id, idn) != 0 || (name[idn] != '.' && name[idn] != '_'))
        return false;
    *base = lr_xstrndup(key, (size_t)(dot - key));
    *video = is_video;
    return true;
}

/* The object's bytes: mapped from the local folder, else read whole (at
 * most the bucket's limit). */
typedef struct {
    void *data;
    size_t len;
    bool mapped;
} object;

static lr_err object_load(lr_store *s, const char *key, object *out)
{
    *out = (object){0};
    if (s->ops->open_local) {
        int fd;
        struct stat st;
        lr_err e = s->ops->open_local(s, key, &fd, &st);
        if (e != LR_OK)
            return e;
        if (st.st_size <= 0 || (size_t)st.st_size > LR_STORE_MAX_BYTES) {
            close(fd);
            return LR_ERR_TOO_LARGE;
        }
        out->data = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (out->data == MAP_FAILED) {
            out->data = NULL;
            return LR_ERR_IO;
        }
        out->len = (size_t)st.st_size;
        out->mapped = true;
        return LR_OK;
    }
    char *buf = NULL;
    size_t len = 0;
    lr_err e = s->ops->read(s, key, LR_STORE_MAX_BYTES, &buf, &len);
    if (e == LR_OK)
        *out = (object){buf, len, false};
    return e;
}

static void object_free(object *o)
{
    if (o->mapped)
        munmap(o->data, o->len);
    else
        free(o->data);
    *o = (object){0};
}

static lr_err store_blob(lr_store *s, const char *key, const char *type, const lr_media_blob *b)
{
    lr_store_writer *w = NULL;
    lr_err e = s->ops->open_writer(s, key, type, &w);
    if (e != LR_OK)
        return e;
    e = s->ops->write(w, b->data, b->len);
    if (e != LR_OK) {
        s->ops->abort(w);
        return e;
    }
    return s->ops->commit(w);
}

/* A job's state: what it made, for the record. */
typedef struct {
    lr_previews *q;
    const char *id;
    lr_media_limits lim;
    json_t *outputs; /* [{poster, preview, thumb, medium, width, height}] */
    lr_strv keys;    /* objects made */
    char *poster_key, *preview_key;
    lr_media_reason why;
} job;

/* Stores blob b at {base}{suffix}; its URL goes into entry[name]. */
static lr_err keep(job *j, const char *base, const char *suffix, const char *type,
                   const lr_media_blob *b, json_t *entry, const char *name, char **key_out)
{
    char *key = NULL;
    if (asprintf(&key, "%s%s", base, suffix) < 0)
        abort();
    lr_err e = store_blob(j->q->store, key, type, b);
    if (e != LR_OK) {
        snprintf(j->why.text, sizeof j->why.text, "%s could not be stored (%s)", suffix + 1,
                 lr_strerror(e));
        free(key);
        return e;
    }
    lr_strv_push(&j->keys, key);
    char *url = lr_store_public_url(j->q->store, key);
    json_object_set_new(entry, name, json_string(url));
    free(url);
    if (key_out && !*key_out)
        *key_out = key;
    else
        free(key);
    return LR_OK;
}

static lr_err video_output(job *j, const object *src, const char *base, json_t *entry)
{
    lr_media_video_opts vo = {
        .poster_side = 1280, .preview_side = 480, .preview_s = 3, .tmp_dir = j->q->o.tmp_dir};
    lr_media_blob poster = {0}, preview = {0};
    lr_err e = lr_media_video(src->data, src->len, &j->lim, &vo, &poster, &preview, &j->why);
    if (e == LR_OK)
        e = keep(j, base, ".poster.webp", "image/webp", &poster, entry, "poster", &j->poster_key);
    if (e == LR_OK)
        e = keep(j, base, ".preview.mp4", "video/mp4", &preview, entry, "preview", &j->preview_key);
    if (e == LR_OK) {
        json_object_set_new(entry, "width", json_integer(poster.width));
        json_object_set_new(entry, "height", json_integer(poster.height));
    }
    lr_media_blob_clear(&poster);
    lr_media_blob_clear(&preview);
    return e;
}

static lr_err image_output(job *j, const object *src, const char *base, json_t *entry)
{
    lr_media_size sizes[2] = {
        {.width = 256, .height = 256, .fit = LR_FIT_CONTAIN, .quality = 80, .no_upscale = true},
        {.width = 1024, .height = 1024, .fit = LR_FIT_CONTAIN, .quality = 82, .no_upscale = true},
    };
    lr_media_blob out[2] = {{0}};
    lr_err e = lr_media_image(src->data, src->len, &j->lim, sizes, 2, out, &j->why);
    if (e == LR_OK)
        e = keep(j, base, ".thumb.webp", "image/webp", &out[0], entry, "thumb", NULL);
    if (e == LR_OK)
        e = keep(j, base, ".medium.webp", "image/webp", &out[1], entry, "medium", NULL);
    if (e == LR_OK) {
        json_object_set_new(entry, "width", json_integer(out[1].width));
        json_object_set_new(entry, "height", json_integer(out[1].height));
    }
    lr_media_blob_clear(&out[0]);
    lr_media_blob_clear(&out[1]);
    return e;
}

/* The media of one output object; its entry is added to j->outputs. */
static lr_err one_output(job *j, const char *key, const char *base, bool video)
{
    object src;
    lr_err e = object_load(j->q->store, key, &src);
    if (e != LR_OK) {
        snprintf(j->why.text, sizeof j->why.text, "the output could not be read (%s)",
                 lr_strerror(e));
        return e;
    }
    json_t *entry = json_pack("{s:s}", "source", key);
    e = video ? video_output(j, &src, base, entry) : image_output(j, &src, base, entry);
    json_array_append_new(j->outputs, entry);
    object_free(&src);
    return e;
}

/* Records the job's end; a generation deleted meanwhile gets its new
 * objects removed (its own removal did not know them). */
static bool record(job *j, bool ready, int64_t started_ms)
{
    json_t *preview = json_pack("{s:O, s:I}", "outputs", j->outputs, "durationMs",
                                (json_int_t)(lr_monotonic_ms() - started_ms));
    if (!ready)
        json_object_set_new(preview, "error",
                            json_string(j->why.text[0] ? j->why.text : "no output to preview"));
    lr_preview_req r = {.generation_id = j->id,
                        .status = ready ? "ready" : "failed",
                        .poster_path = j->poster_key,
                        .preview_path = j->preview_key,
                        .preview = preview,
                        .keys = j->keys};
    lr_err e = j->q->db->ops->preview_finish(j->q->db, &r);
    lr_metrics_add(LR_M_PREVIEW_JOBS, (const char *[]){r.status}, 1);
    lr_metrics_observe(LR_M_PREVIEW_DURATION, NULL,
                       (double)(lr_monotonic_ms() - started_ms) / 1000.0);
    if (e == LR_ERR_NOT_FOUND)
        lr_store_remove_keys(j->q->store, &j->keys);
    json_t *fields = json_pack("{s:s, s:I, s:s}", "generation_id", j->id, "duration_ms",
                               (json_int_t)(lr_monotonic_ms() - started_ms), "recorded",
                               e == LR_OK ? "yes" : lr_strerror(e));
    if (!ready)
        json_object_set(fields, "reason", json_object_get(preview, "error"));
    lr_log_fields(ready ? LR_LOG_INFO : LR_LOG_WARN, NULL,
                  ready ? "preview ready" : "preview failed", fields);
    json_decref(preview);
    return e == LR_OK;
}

static void run_job(lr_previews *q, const char *id)
{
    lr_strv keys = {0};
    lr_err e = q->db->ops->preview_claim(q->db, id, &keys);
    if (e != LR_OK) {
        if (e != LR_ERR_NOT_FOUND)
            lr_warn("preview of %s not claimed (%s); the rescan takes it up", id, lr_strerror(e));
        return;
    }
    int64_t started = lr_monotonic_ms();
    job j = {.q = q, .id = id, .lim = q->o.limits, .outputs = json_array()};
    j.lim.deadline_ms = started + q->o.time_limit_s * 1000LL;
    j.lim.stop = &q->stop;
    int made = 0;
    e = LR_OK;
    lr_log_fields(LR_LOG_INFO, NULL, "preview started", json_pack("{s:s}", "generation_id", id));
    for (size_t i = 0; e == LR_OK && i < keys.n; i++) {
        char *base = NULL;
        bool video = false;
        if (!keys.v[i] || !output_key(keys.v[i], id, &base, &video))
            continue;
        e = one_output(&j, keys.v[i], base, video);
        made += e == LR_OK;
        free(base);
    }
    /* Shutting down: the row stays processing for the next start. */
    if (!atomic_load(&q->stop) || e == LR_OK) {
        bool ready = e == LR_OK && made > 0;
        if (record(&j, ready, started) && q->done)
            q->done(q->done_ctx, id, ready);
    }
    json_decref(j.outputs);
    lr_strv_clear(&j.keys);
    free(j.poster_key);
    free(j.preview_key);
    lr_strv_clear(&keys);
}

/* ---- the threads -------------------------------------------------------- */

typedef struct {
    lr_previews *q;
    int slot;
} thread_arg;

/* Under q->mu: waits until the pipeline has been quiet for QUIET_MS, or
 * MAX_DEFER_MS have passed since last_job_ms, or the queue stops. */
static void wait_for_quiet(lr_previews *q, int64_t last_job_ms)
{
    for (;;) {
        int64_t now = lr_monotonic_ms();
        int64_t quiet_at = q->last_submit_ms + QUIET_MS, forced_at = last_job_ms + MAX_DEFER_MS;
        int64_t until = quiet_at < forced_at ? quiet_at : forced_at;
        if (atomic_load(&q->stop) || now >= until)
            return;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + (until - now) * 1000000LL;
        ts.tv_sec += ns / 1000000000LL;
        ts.tv_nsec = ns % 1000000000LL;
        pthread_cond_timedwait(&q->cv, &q->mu, &ts);
    }
}

static void *thread_main(void *arg)
{
    thread_arg a = *(thread_arg *)arg;
    free(arg);
    lr_previews *q = a.q;
    /* Linux nices threads one by one: below the workers and the loop. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), 10);
    int64_t last_job_ms = 0;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!atomic_load(&q->stop) && q->count == 0 && !q->overflowed)
            pthread_cond_wait(&q->cv, &q->mu);
        wait_for_quiet(q, last_job_ms);
        if (atomic_load(&q->stop))
            break;
        if (q->count == 0) {
            q->overflowed = false;
            pthread_mutex_unlock(&q->mu);
            lr_previews_recover(q);
            pthread_mutex_lock(&q->mu);
            continue;
        }
        memcpy(q->running[a.slot], q->queue[q->head], sizeof(gen_id));
        q->head = (q->head + 1) % q->o.queue_max;
        q->count--;
        pthread_mutex_unlock(&q->mu);
        run_job(q, q->running[a.slot]);
        last_job_ms = lr_monotonic_ms();
        pthread_mutex_lock(&q->mu);
        q->running[a.slot][0] = '\0';
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

lr_previews *lr_previews_new(lr_db *db, lr_store *store, const lr_previews_opts *o)
{
    lr_previews *q = lr_xcalloc(1, sizeof *q);
    q->db = db;
    q->store = store;
    q->o = *o;
    q->o.threads = o->threads > 0 ? o->threads : 1;
    q->o.queue_max = o->queue_max > 0 ? o->queue_max : 1;
    q->o.tmp_dir = lr_xstrdup(o->tmp_dir ? o->tmp_dir : "/tmp");
    q->queue = lr_xcalloc((size_t)q->o.queue_max, sizeof *q->queue);
    q->running = lr_xcalloc((size_t)q->o.threads, sizeof *q->running);
    q->threads = lr_xcalloc((size_t)q->o.threads, sizeof *q->threads);
    atomic_init(&q->stop, false);
    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* wait_for_quiet's deadlines */
    pthread_cond_init(&q->cv, &ca);
    pthread_condattr_destroy(&ca);
    for (int i = 0; i < q->o.threads; i++) {
        thread_arg *a = lr_xmalloc(sizeof *a);
        *a = (thread_arg){q, i};
        if (pthread_create(&q->threads[i], NULL, thread_main, a) != 0)
            abort();
    }
    return q;
}

void lr_previews_on_done(lr_previews *q, lr_preview_done_fn fn, void *ctx)
{
    q->done = fn;
    q->done_ctx = ctx;
}

void lr_previews_free(lr_previews *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    atomic_store(&q->stop, true);
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->o.threads; i++)
        pthread_join(q->threads[i], NULL);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free((char *)q->o.tmp_dir);
    free(q->queue);
    free(q->running);
    free(q->threads);
    free(q);
}
