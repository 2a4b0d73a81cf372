/* The Server-Sent Events hub behind GET /api/generations/{id}/events and
 * GET /api/runs/{id}/events.
 *
 * Each stream watches one generation, or one run (its nodes'
 * generations; see lr_events_open_run). Events carry fixed ids by stage —
 * 1 pending, 2 submitted, 3 downloading, 4 storing, 5 the final status
 * (success, failed or canceled) — so a client reconnecting with
 * Last-Event-ID gets exactly what it has not seen, from any process. Local
 * changes arrive from the pipeline's observer; generations run by another
 * process (and, as a safety net, local ones) are re-read from the database
 * on a timer, which also sends keep-alive comments. The stream ends after
 * the final event, or, when previews are on and the generation succeeded
 * with stored outputs, after the next one: 6 preview_ready or
 * preview_failed (the row with its posterUrl, previewUrl, thumbnails).
 */
#ifndef LR_API_EVENTS_H
#define LR_API_EVENTS_H

#include "app.h"
#include "http/server.h"

typedef struct lr_events lr_events;

lr_events *lr_events_new(lr_db *db, lr_pipeline *pipeline, lr_loop *loop, lr_workers *workers,
                         int keepalive_s);
/* The pipeline observer (lr_pipeline_observe(p, lr_events_observe, hub)). */
void lr_events_observe(void *hub, const char *generation_id, lr_gen_status status,
                       lr_gen_stage stage);
/* Streams of succeeded generations wait up to max_wait_s after the final
 * event for the preview event (lr_events_preview); 0 (the default): they
 * end with the final event. */
void lr_events_wait_previews(lr_events *h, int max_wait_s);
/* The preview jobs' done callback (lr_previews_on_done(q, lr_events_preview, hub)). */
void lr_events_preview(void *hub, const char *generation_id, bool ready);
/* True when g's stream has a preview event (id 6) after its final one. */
bool lr_events_preview_follows(lr_events *h, const lr_generation *g);
/* Opens a stream on req for user's generation g (its current row). */
void lr_events_open(lr_events *h, lr_req *req, const char *user, const lr_generation *g,
                    int last_event_id);
/* Opens a stream on req for user's run (its row and nodes as read now;
 * order: the indexes of all the graph's nodes, each after the nodes it
 * reads; a run with targets streams only the nodes it has).
 * levels (NULL: nothing seen) is what a reconnecting client saw, from
 * lr_events_run_cursor. Events: node.queued, node.started, node.progress
 * (with the stage), node.succeeded | node.failed (node.cached for a node
 * reused from the cache), each with the node's
 * state, then run.finished with the run; the stream ends after it. Event
 * ids are cursors: "r" and each node's level (a digit: 1 queued, 2
 * started, 3-5 a stage, 6 final) in graph order, "f" added at the end. */
void lr_events_open_run(lr_events *h, lr_req *req, const char *user, const lr_run *run,
                        const lr_run_node_list *nodes, const size_t *order, const int *levels);
/* A run stream's event id into levels[n] and *ended; false when it is not
 * one of a stream of an n-node run. */
bool lr_events_run_cursor(const char *id, size_t n, int *levels, bool *ended);
/* Ends every stream (shutdown: clients reconnect elsewhere). */
void lr_events_close_all(lr_events *h);
void lr_events_free(lr_events *h);

#endif
