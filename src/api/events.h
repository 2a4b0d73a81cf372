/* The Server-Sent Events hub behind GET /api/generations/{id}/events.
 *
 * Each stream watches one generation. Events carry fixed ids by stage —
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
/* Ends every stream (shutdown: clients reconnect elsewhere). */
void lr_events_close_all(lr_events *h);
void lr_events_free(lr_events *h);

#endif
