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
#include "pipeline/run.h"

/* Event ids: 1 pending, then one per stage in order, then the final one. */
#define EV_PENDING 1
#define EV_OF_STAGE(s) ((int)(s) + EV_PENDING)
#define EV_FINAL (EV_OF_STAGE(LR_STAGE_STORING) + 1)
#define EV_PREVIEW (EV_FINAL + 1)
#define TICK_MS 1000
#define REMOTE_POLL_MS 2000
#define LOCAL_POLL_MS 10000

/* What a run's stream follows: its nodes (graph order) and the level of
 * each the client has seen. */
typedef struct {
    size_t n;
    char (*node_ids)[LR_NODE_ID_MAX + 1];
    char (*gen_ids)[LR_UUID_LEN + 1];
    size_t *order;
    int *levels;
} run_watch;

typedef struct watcher {
    lr_stream *s;
    run_watch *run; /* a run's stream (id: the run's), or NULL */
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

static void watcher_free(watcher *w)
{
    if (w->run) {
        free(w->run->node_ids);
        free(w->run->gen_ids);
        free(w->run->order);
        free(w->run->levels);
        free(w->run);
    }
    free(w);
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
    watcher_free(w);
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

/* The run a watched run stream follows that has node generation id:
 * its id into run (false: none). Call with h->mu held. */
static bool run_watching(lr_events *h, const char *id, char run[LR_UUID_LEN + 1])
{
    for (watcher *w = h->list; w; w = w->next) {
        for (size_t i = 0; w->run && i < w->run->n; i++) {
            if (!strcmp(w->run->gen_ids[i], id)) {
                memcpy(run, w->id, LR_UUID_LEN + 1);
                return true;
            }
        }
    }
    return false;
}

static void poll_run(lr_events *h, const char *id);

typedef struct {
    lr_events *h;
    char id[LR_UUID_LEN + 1];
} run_poll;

static void run_poll_job(void *arg)
{
    run_poll *q = arg;
    poll_run(q->h, q->id);
    free(q);
}

void lr_events_observe(void *hub, const char *id, lr_gen_status status, lr_gen_stage stage)
{
    lr_events *h = hub;
    char run[LR_UUID_LEN + 1];
    pthread_mutex_lock(&h->mu);
    bool watched = any_watcher(h, id);
    /* a node's end may start the nodes below it: its run is read again */
    bool node = !lr_gen_status_unfinished(status) && run_watching(h, id, run);
    pthread_mutex_unlock(&h->mu);
    if (node) { /* read on a worker: the observer may be called on the loop thread */
        run_poll *q = lr_xmalloc(sizeof *q);
        q->h = h;
        memcpy(q->id, run, sizeof q->id);
        lr_workers_submit(h->workers, run_poll_job, q);
    }
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

/* ---- run streams ---- */

/* A node's level: 1 queued, 2 started, 3-5 its stage, 6 final. */
static int node_level(const lr_run_node *n)
{
    lr_gen_status status = LR_GEN_PROCESSING;
    lr_gen_stage stage = LR_STAGE_NONE;
    lr_gen_status_parse(n->status, &status);
    lr_gen_stage_parse(n->stage, &stage);
    if (status == LR_GEN_PENDING)
        return 1;
    if (!lr_gen_status_unfinished(status))
        return 6;
    return stage == LR_STAGE_NONE ? 2 : 2 + (int)stage;
}

/* The stream's cursor after the levels it has sent. */
static void run_cursor(const run_watch *rw, bool ended, char *out)
{
    *out++ = 'r';
    for (size_t i = 0; i < rw->n; i++)
        *out++ = (char)('0' + rw->levels[i]);
    if (ended)
        *out++ = 'f';
    *out = '\0';
}

bool lr_events_run_cursor(const char *id, size_t n, int *levels, bool *ended)
{
    size_t len = strlen(id);
    *ended = len == n + 2 && id[n + 1] == 'f';
    if (id[0] != 'r' || (len != n + 1 && !*ended))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (id[i + 1] < '0' || id[i + 1] > '6')
            return false;
        levels[i] = id[i + 1] - '0';
    }
    return true;
}

static void write_run_event(watcher *w, const char *event, json_t *data, bool ended)
{
    char *cursor = lr_xmalloc(w->run->n + 3);
    run_cursor(w->run, ended, cursor);
    char *text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    size_t n = strlen(text) + strlen(event) + strlen(cursor) + 32;
    char *buf = lr_xmalloc(n);
    int len = snprintf(buf, n, "id: %s\nevent: %s\ndata: %s\n\n", cursor, event, text);
    lr_stream_write(w->s, buf, (size_t)len);
    free(buf);
    free(text);
    free(cursor);
    w->last_write_ms = lr_monotonic_ms();
}

static json_t *node_event(const lr_run *r, const lr_run_node *n)
{
    json_t *j = lr_render_run_node(r->graph, n);
    json_object_set_new(j, "runId", json_string(r->id));
    return j;
}

/* Brings one node of w up to its row: the events it has not sent, in
 * order (started only for a node that ran; a node from the cache is
 * queued, then cached). */
static void node_up(watcher *w, size_t i, const lr_run *r, const lr_run_node *n)
{
    int *level = &w->run->levels[i], target = node_level(n);
    if (target <= *level)
        return;
    bool final = target == 6;
    bool ran = !final || (n->error_code == NULL || strcmp(n->error_code, "upstream_failed") != 0);
    if (*level < 1) {
        *level = 1;
        write_run_event(w, "node.queued", node_event(r, n), false);
    }
    if (n->cached_from) { /* its outputs are an earlier node's: it never runs */
        *level = 6;
        write_run_event(w, "node.cached", node_event(r, n), false);
        return;
    }
    if (*level < 2 && target >= 2 && ran && strcmp(n->status, "canceled") != 0) {
        *level = 2;
        write_run_event(w, "node.started", node_event(r, n), false);
    }
    if (!final && target >= 3) {
        *level = target;
        write_run_event(w, "node.progress", node_event(r, n), false);
        return;
    }
    if (final) {
        *level = 6;
        write_run_event(w, !strcmp(n->status, "success") ? "node.succeeded" : "node.failed",
                        node_event(r, n), false);
    }
}

/* Brings w up to the run as read; true when the stream is finished.
 * Call with h->mu held. */
static bool catch_up_run(watcher *w, const lr_run *r, const lr_run_node_list *nodes)
{
    run_watch *rw = w->run;
    bool all_final = true;
    for (size_t k = 0; k < rw->n; k++) {
        size_t i = rw->order[k];
        for (size_t j = 0; j < nodes->n; j++) {
            if (nodes->v[j].node_id && !strcmp(nodes->v[j].node_id, rw->node_ids[i]))
                node_up(w, i, r, &nodes->v[j]);
        }
        all_final &= rw->levels[i] == 6;
    }
    if (!all_final || !strcmp(r->status, "running"))
        return false;
    write_run_event(w, "run.finished", lr_render_run(r, nodes), true);
    lr_stream_close(w->s);
    return true;
}

static void apply_run(lr_events *h, const lr_run *r, const lr_run_node_list *nodes)
{
    pthread_mutex_lock(&h->mu);
    for (watcher *w = h->list, *next; w; w = next) {
        next = w->next;
        if (w->run && !strcmp(w->id, r->id) && catch_up_run(w, r, nodes))
            unlink_watcher(h, w);
    }
    pthread_mutex_unlock(&h->mu);
}

static void poll_run(lr_events *h, const char *id)
{
    lr_run r;
    lr_run_node_list nodes = {0};
    if (h->db->ops->get_run(h->db, NULL, id, &r) != LR_OK)
        return;
    if (h->db->ops->list_run_nodes(h->db, id, &nodes) == LR_OK)
        apply_run(h, &r, &nodes);
    lr_run_node_list_clear(&nodes);
    lr_run_clear(&r);
}

static void tick_timer(void *arg);

/* With h->mu held: a new watcher whose stream is already complete (or the
 * hub stopping) goes; another joins the list the tick polls. */
static void adopt(lr_events *h, watcher *w, bool done)
{
    if (!done) {
        w->next = h->list;
        h->list = w;
        if (!h->tick_running) {
            h->tick_running = true;
            lr_loop_timer(h->loop, TICK_MS, tick_timer, h);
        }
        return;
    }
    if (h->stopping)
        lr_stream_close(w->s);
    lr_stream_release(w->s);
    watcher_free(w);
}

/* On a worker: keep-alives, gone clients, and re-reads from the database. */
static void tick_job(void *arg)
{
    lr_events *h = arg;
    int64_t now = lr_monotonic_ms();
    size_t n = 0, cap = 16;
    char(*ids)[LR_UUID_LEN + 1] = lr_xmalloc(cap * sizeof *ids);
    bool *runs = lr_xmalloc(cap * sizeof *runs);
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
        /* a run's nodes start without an event the hub sees: runs are read every tick */
        int every = w->run                                     ? TICK_MS
                    : lr_pipeline_is_local(h->pipeline, w->id) ? LOCAL_POLL_MS
                                                               : REMOTE_POLL_MS;
        if (now - w->last_poll_ms >= every) {
            w->last_poll_ms = now;
            if (n == cap) {
                ids = lr_xrealloc(ids, 2 * cap * sizeof *ids);
                runs = lr_xrealloc(runs, 2 * cap * sizeof *runs);
                cap *= 2;
            }
            memcpy(ids[n], w->id, LR_UUID_LEN + 1);
            runs[n++] = w->run != NULL;
        }
    }
    bool stopping = h->stopping || !h->list; /* the next open starts it again */
    if (stopping)
        h->tick_running = false;
    pthread_mutex_unlock(&h->mu);
    for (size_t i = 0; i < n; i++) {
        if (runs[i])
            poll_run(h, ids[i]);
        else
            poll_row(h, ids[i]);
    }
    free(ids);
    free(runs);
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
    adopt(h, w, h->stopping || catch_up(h, w, status, stage, row));
    pthread_mutex_unlock(&h->mu);
    json_decref(row);
}

void lr_events_open_run(lr_events *h, lr_req *req, const char *user, const lr_run *run,
                        const lr_run_node_list *nodes, const size_t *order, const int *levels)
{
    lr_stream *s = lr_req_reply_stream(req, 200, "text/event-stream; charset=utf-8");
    if (!s) {
        lr_api_error(req, LR_CODE_INTERNAL_ERROR, NULL, NULL);
        return;
    }
    size_t n = nodes->n, gn = json_array_size(json_object_get(run->graph, "nodes")), k = 0;
    run_watch *rw = lr_xcalloc(1, sizeof *rw);
    *rw = (run_watch){.n = n,
                      .node_ids = lr_xcalloc(n ? n : 1, sizeof *rw->node_ids),
                      .gen_ids = lr_xcalloc(n ? n : 1, sizeof *rw->gen_ids),
                      .order = lr_xcalloc(n ? n : 1, sizeof *rw->order),
                      .levels = lr_xcalloc(n ? n : 1, sizeof *rw->levels)};
    /* the run's nodes (a run with targets has fewer than its graph), in
     * graph order; slot: each graph node's place among them, or -1 */
    long *slot = lr_xcalloc(gn ? gn : 1, sizeof *slot);
    for (size_t i = 0; i < gn; i++) {
        json_t *g = json_array_get(json_object_get(run->graph, "nodes"), i);
        const char *id = json_string_value(json_object_get(g, "id"));
        slot[i] = -1;
        for (size_t j = 0; id && k < n && j < n; j++) {
            if (nodes->v[j].node_id && !strcmp(nodes->v[j].node_id, id)) {
                snprintf(rw->node_ids[k], sizeof rw->node_ids[k], "%s", id);
                snprintf(rw->gen_ids[k], sizeof rw->gen_ids[k], "%s", nodes->v[j].generation_id);
                slot[i] = (long)k++;
                break;
            }
        }
    }
    for (size_t i = 0, o = 0; i < gn; i++) {
        if (order[i] < gn && slot[order[i]] >= 0 && o < n)
            rw->order[o++] = (size_t)slot[order[i]];
    }
    free(slot);
    if (levels)
        memcpy(rw->levels, levels, n * sizeof *levels);
    watcher *w = lr_xcalloc(1, sizeof *w);
    w->s = s;
    w->run = rw;
    snprintf(w->id, sizeof w->id, "%s", run->id);
    snprintf(w->user, sizeof w->user, "%s", user);
    w->last_write_ms = w->last_poll_ms = lr_monotonic_ms();
    lr_stream_write(s, "retry: 2000\n\n", 13);
    pthread_mutex_lock(&h->mu);
    adopt(h, w, h->stopping || catch_up_run(w, run, nodes));
    pthread_mutex_unlock(&h->mu);
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
