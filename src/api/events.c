/* Watchers in one list under one mutex; events are written to the HTTP
 * stream while the mutex is held, so a watcher's events never interleave
 * or go backwards. Database reads happen outside it, on workers. */
#include "api/events.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/render.h"
#include "core/log.h"
#include "core/util.h"

/* Event ids: 1 pending, then one per stage in order, then the final one. */
#define EV_PENDING 1
#define EV_OF_STAGE(s) ((int)(s) + EV_PENDING)
#define EV_FINAL (EV_OF_STAGE(LR_STAGE_STORING) + 1)
#define EV_PREVIEW (EV_FINAL + 1)
#define TICK_MS 1000
#define REMOTE_POLL_MS 2000
#define LOCAL_POLL_MS 10000

typedef struct watcher {
    lr_stream *s;
    char id[LR_UUID_LEN + 1];
    char user[LR_UUID_LEN + 1];
    bool has_file;    /* image/video: storing happens on success */
    bool downloads;   /* and downloading (a remote provider; the mock renders in place) */
    bool previews;    /* a success is followed by preview_ready or preview_failed */
    int64_t final_ms; /* when the final event went out (0: not yet) */
    int last;         /* last event id sent */
    int64_t last_write_ms, last_poll_ms;
    struct watcher *next;
} watcher;

struct lr_events {
    lr_db *db;
    lr_pipeline *pipeline;
    lr_loop *loop;
    lr_workers *workers;
    int keepalive_ms;
    int preview_wait_ms; /* 0: previews off, the stream ends after the final event */
    pthread_mutex_t mu;
    watcher *list;
    bool stopping, tick_running;
};

static int stage_event(lr_gen_stage stage)
{
    /* processing without a stage: handed to the provider */
    return EV_OF_STAGE(stage == LR_STAGE_NONE ? LR_STAGE_SUBMITTED : stage);
}

static const char *event_name(int id)
{
    return id == EV_PENDING ? lr_gen_status_name(LR_GEN_PENDING)
                            : lr_gen_stage_name((lr_gen_stage)(id - EV_PENDING));
}

/* A row's status and stage; an unknown status reads as processing. */
static void row_state(const lr_generation *g, lr_gen_status *status, lr_gen_stage *stage)
{
    if (!lr_gen_status_parse(g->status, status))
        *status = LR_GEN_PROCESSING;
    if (!lr_gen_stage_parse(g->stage, stage))
        *stage = LR_STAGE_NONE;
}

/* Writes one event; takes the reference to data. */
static void write_event(watcher *w, int id, const char *event, json_t *data)
{
    char *text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    size_t n = strlen(text) + strlen(event) + 64;
    char *buf = lr_xmalloc(n);
    int len = snprintf(buf, n, "id: %d\nevent: %s\ndata: %s\n\n", id, event, text);
    lr_stream_write(w->s, buf, (size_t)len);
    free(buf);
    free(text);
    w->last = id;
    w->last_write_ms = lr_monotonic_ms();
}

/* Sends the stage events after w's last up to target, skipping
 * downloading where the provider never downloads. */
static void stages_upto(watcher *w, int target)
{
    for (int i = w->last + 1; i <= target; i++) {
        if (i == EV_OF_STAGE(LR_STAGE_DOWNLOADING) && !w->downloads)
            continue;
        lr_gen_status st = i == EV_PENDING ? LR_GEN_PENDING : LR_GEN_PROCESSING;
        write_event(w, i, event_name(i),
                    json_pack("{s:s, s:s, s:s}", "generationId", w->id, "status",
                              lr_gen_status_name(st), "stage", event_name(i)));
    }
}

/* Whether a succeeded generation's stream has a preview event to come:
 * its job ended (ready, failed), runs (processing) or is about to start
 * (none, settled within the wait; an older none was never queued, as for
 * generations made before previews were on). */
static bool preview_expected(const lr_events *h, const char *preview_status,
                             const char *finished_at)
{
    if (h->preview_wait_ms <= 0 || !preview_status)
        return false;
    if (strcmp(preview_status, "none") != 0)
        return true;
    int64_t finished = finished_at ? lr_time_parse_iso(finished_at) : -1;
    return finished > 0 && lr_now_ms() - finished < h->preview_wait_ms;
}

bool lr_events_preview_follows(lr_events *h, const lr_generation *g)
{
    return g->status && !strcmp(g->status, lr_gen_status_name(LR_GEN_SUCCESS)) && g->type &&
           strcmp(g->type, "text") != 0 &&
           preview_expected(h, g->preview_status ? g->preview_status : "none", g->finished_at);
}

/* After a success with stored outputs: the preview event once the job
 * ended (the row says ready or failed). True when the stream is finished. */
static bool preview_event(lr_events *h, watcher *w, lr_gen_status status, json_t *g)
{
    const char *ps = json_string_value(json_object_get(g, "previewStatus"));
    if (!w->previews || status != LR_GEN_SUCCESS || w->last >= EV_PREVIEW ||
        !preview_expected(h, ps, json_string_value(json_object_get(g, "finishedAt")))) {
        lr_stream_close(w->s);
        return true;
    }
    bool ready = !strcmp(ps, "ready");
    if (!ready && strcmp(ps, "failed") != 0)
        return false; /* none or processing: the job has not ended */
    json_t *data = json_deep_copy(g);
    json_object_set_new(data, "generationId", json_string(w->id));
    write_event(w, EV_PREVIEW, ready ? "preview_ready" : "preview_failed", data);
    lr_stream_close(w->s);
    return true;
}

/* Brings w up to (status, stage); g is the row for the final event (may be
 * NULL for stage changes). Returns true when the stream is finished. Call
 * with h->mu held. */
static bool catch_up(lr_events *h, watcher *w, lr_gen_status status, lr_gen_stage stage, json_t *g)
{
    if (!lr_gen_status_unfinished(status)) {
        if (w->last >= EV_FINAL) {
            if (!g || w->last >= EV_PREVIEW || !w->previews || status != LR_GEN_SUCCESS)
                return true;
            if (!w->final_ms)
                w->final_ms = lr_monotonic_ms();
            return preview_event(h, w, status, g);
        }
        /* every generation was pending and handed on; a stored file also
         * went through storing (and downloading, from a remote provider) */
        bool stored = status == LR_GEN_SUCCESS && w->has_file;
        stages_upto(w, EV_OF_STAGE(stored ? LR_STAGE_STORING : LR_STAGE_SUBMITTED));
        const char *name = lr_gen_status_name(status);
        json_t *data = g ? json_deep_copy(g) : json_pack("{s:s, s:s}", "id", w->id, "status", name);
        json_object_set_new(data, "generationId", json_string(w->id));
        write_event(w, EV_FINAL, name, data);
        w->final_ms = lr_monotonic_ms();
        return g ? preview_event(h, w, status, g) : (lr_stream_close(w->s), true);
    }
    stages_upto(w, status == LR_GEN_PENDING ? EV_PENDING : stage_event(stage));
    return false;
}

static void unlink_watcher(lr_events *h, watcher *w)
{
    for (watcher **pw = &h->list; *pw; pw = &(*pw)->next) {
        if (*pw == w) {
            *pw = w->next;
            break;
        }
    }
    lr_stream_release(w->s);
    free(w);
}

static bool any_watcher(lr_events *h, const char *id)
{
    for (watcher *w = h->list; w; w = w->next) {
        if (!strcmp(w->id, id))
            return true;
    }
    return false;
}

/* Applies a state to every watcher of id. */
static void apply(lr_events *h, const char *id, lr_gen_status status, lr_gen_stage stage, json_t *g)
{
    pthread_mutex_lock(&h->mu);
    for (watcher *w = h->list, *next; w; w = next) {
        next = w->next;
        if (strcmp(w->id, id) != 0)
            continue;
        if (catch_up(h, w, status, stage, g))
            unlink_watcher(h, w);
    }
    pthread_mutex_unlock(&h->mu);
}

void lr_events_observe(void *hub, const char *id, lr_gen_status status, lr_gen_stage stage)
{
    lr_events *h = hub;
    pthread_mutex_lock(&h->mu);
    bool watched = any_watcher(h, id);
    pthread_mutex_unlock(&h->mu);
    if (!watched)
        return;
    lr_generation g = {0};
    json_t *row = NULL;
    if (!lr_gen_status_unfinished(status) &&
        h->db->ops->get_generation(h->db, NULL, id, &g) == LR_OK)
        row = lr_render_generation(&g);
    apply(h, id, status, stage, row);
    json_decref(row);
    lr_generation_clear(&g);
}

void lr_events_preview(void *hub, const char *id, bool ready)
{
    (void)ready; /* the row says which */
    lr_events_observe(hub, id, LR_GEN_SUCCESS, LR_STAGE_NONE);
}

void lr_events_wait_previews(lr_events *h, int max_wait_s)
{
    h->preview_wait_ms = max_wait_s * 1000;
}

static void poll_row(lr_events *h, const char *id)
{
    lr_generation g = {0};
    if (h->db->ops->get_generation(h->db, NULL, id, &g) != LR_OK)
        return;
    lr_gen_status status;
    lr_gen_stage stage;
    row_state(&g, &status, &stage);
    json_t *row = lr_gen_status_unfinished(status) ? NULL : lr_render_generation(&g);
    apply(h, id, status, stage, row);
    json_decref(row);
    lr_generation_clear(&g);
}

static void tick_timer(void *arg);

/* On a worker: keep-alives, gone clients, and re-reads from the database. */
static void tick_job(void *arg)
{
    lr_events *h = arg;
    int64_t now = lr_monotonic_ms();
    size_t n = 0, cap = 16;
    char(*ids)[LR_UUID_LEN + 1] = lr_xmalloc(cap * sizeof *ids);
    pthread_mutex_lock(&h->mu);
    for (watcher *w = h->list, *next; w; w = next) {
        next = w->next;
        if (w->final_ms && now - w->final_ms > h->preview_wait_ms) {
            lr_stream_close(w->s); /* the preview job never reported: give up waiting */
            unlink_watcher(h, w);
            continue;
        }
        if (now - w->last_write_ms >= h->keepalive_ms) {
            w->last_write_ms = now;
            if (!lr_stream_write(w->s, ": keep-alive\n\n", 14)) {
                unlink_watcher(h, w); /* the client went away */
                continue;
            }
        }
        int every = lr_pipeline_is_local(h->pipeline, w->id) ? LOCAL_POLL_MS : REMOTE_POLL_MS;
        if (now - w->last_poll_ms >= every) {
            w->last_poll_ms = now;
            if (n == cap) {
                ids = lr_xrealloc(ids, 2 * cap * sizeof *ids);
                cap *= 2;
            }
            memcpy(ids[n++], w->id, LR_UUID_LEN + 1);
        }
    }
    bool stopping = h->stopping || !h->list; /* the next open starts it again */
    if (stopping)
        h->tick_running = false;
    pthread_mutex_unlock(&h->mu);
    for (size_t i = 0; i < n; i++)
        poll_row(h, ids[i]);
    free(ids);
    if (!stopping)
        lr_loop_timer(h->loop, TICK_MS, tick_timer, h);
}

static void tick_timer(void *arg)
{
    lr_events *h = arg;
    lr_workers_submit(h->workers, tick_job, h);
}

lr_events *lr_events_new(lr_db *db, lr_pipeline *pipeline, lr_loop *loop, lr_workers *workers,
                         int keepalive_s)
{
    lr_events *h = lr_xcalloc(1, sizeof *h);
    *h = (lr_events){.db = db,
                     .pipeline = pipeline,
                     .loop = loop,
                     .workers = workers,
                     .keepalive_ms = keepalive_s * 1000};
    pthread_mutex_init(&h->mu, NULL);
    return h;
}

void lr_events_open(lr_events *h, lr_req *req, const char *user, const lr_generation *g,
                    int last_event_id)
{
    lr_stream *s = lr_req_reply_stream(req, 200, "text/event-stream; charset=utf-8");
    if (!s) {
        lr_api_error(req, LR_CODE_INTERNAL_ERROR, NULL, NULL);
        return;
    }
    watcher *w = lr_xcalloc(1, sizeof *w);
    w->s = s;
    snprintf(w->id, sizeof w->id, "%s", g->id);
    snprintf(w->user, sizeof w->user, "%s", user);
    w->has_file = g->type && strcmp(g->type, "text") != 0;
    w->downloads = w->has_file && !(g->provider && !strcmp(g->provider, "mock"));
    w->previews = w->has_file && h->preview_wait_ms > 0;
    w->last = last_event_id;
    w->last_write_ms = w->last_poll_ms = lr_monotonic_ms();
    lr_stream_write(s, "retry: 2000\n\n", 13);
    lr_gen_status status;
    lr_gen_stage stage;
    row_state(g, &status, &stage);
    json_t *row = lr_gen_status_unfinished(status) ? NULL : lr_render_generation(g);
    pthread_mutex_lock(&h->mu);
    bool done = h->stopping || catch_up(h, w, status, stage, row);
    if (done) {
        if (h->stopping)
            lr_stream_close(s);
        lr_stream_release(s);
        free(w);
    } else {
        w->next = h->list;
        h->list = w;
        if (!h->tick_running) {
            h->tick_running = true;
            lr_loop_timer(h->loop, TICK_MS, tick_timer, h);
        }
    }
    pthread_mutex_unlock(&h->mu);
    json_decref(row);
}

void lr_events_close_all(lr_events *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stopping = true;
    while (h->list) {
        watcher *w = h->list;
        lr_stream_close(w->s);
        unlink_watcher(h, w);
    }
    pthread_mutex_unlock(&h->mu);
}

void lr_events_free(lr_events *h)
{
    if (!h)
        return;
    lr_events_close_all(h);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
