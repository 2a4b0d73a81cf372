/* Preview jobs: the derived media of a succeeded generation, made after
 * it settled, on threads of their own.
 *
 * For each stored output of a generation ({user}/{photo|video}/{id}.{ext}
 * or {id}_{n}.{ext}) a job makes, beside it in the same store:
 *   video: {base}.poster.webp and {base}.preview.mp4 (lr_media_video);
 *   image: {base}.thumb.webp (256 px long side), {base}.medium.webp (1024).
 * The row goes preview_status processing (lr_db_ops.preview_claim) →
 * ready, or failed with the reason in metadata.preview.error
 * (preview_finish); the generation's own status, charge and answer never
 * depend on it. The objects made join storage_keys, so deleting the
 * generation removes them too.
 *
 * Bounded: `threads` threads, at nice +10 so the request path and the
 * settles on the workers go first, and each waiting for a quiet moment
 * (no generation submitted for 200 ms) but at most 2 s after its previous
 * job before it starts the next, take jobs from a queue of at most
 * `queue_max` ids; a job past that stays `none` in the table and is
 * found by the rescan that runs when the queue has drained
 * (preview_pending). A job a stopped process left (processing), or a
 * generation that settled just before the stop (none, finished in the
 * last day), is found the same way at start (lr_previews_recover).
 * Several processes on one database may make the same preview twice (the
 * objects are overwritten with the same bytes); none is lost.
 *
 * lr_previews_submit never blocks (a mutex, no I/O): the pipeline calls it
 * from the loop thread once a settle succeeded.
 */
#ifndef LR_MEDIA_JOBS_H
#define LR_MEDIA_JOBS_H

#include <stdbool.h>

#include "db/db.h"
#include "media/transform.h"
#include "storage/storage.h"

typedef struct lr_previews lr_previews;

typedef struct {
    int threads;            /* at least 1 */
    int queue_max;          /* ids held in memory */
    int time_limit_s;       /* one job, all its outputs */
    const char *tmp_dir;    /* the preview MP4 while it is written (copied) */
    lr_media_limits limits; /* deadline_ms and stop are set per job */
} lr_previews_opts;

/* Called on a preview thread when a job recorded its end (ready true:
 * every output has its media). Must not block for long. */
typedef void (*lr_preview_done_fn)(void *ctx, const char *generation_id, bool ready);

/* Starts the threads. db and store must outlive the queue. */
lr_previews *lr_previews_new(lr_db *db, lr_store *store, const lr_previews_opts *o);
/* Set before the first submit. */
void lr_previews_on_done(lr_previews *q, lr_preview_done_fn fn, void *ctx);
/* Queues the previews of succeeded generation id (ignored when queued or
 * running already; left to the rescan when the queue is full). Any thread. */
void lr_previews_submit(lr_previews *q, const char *generation_id);
/* Queues the jobs the table holds (see above); how many, -1 on a database
 * error. */
int lr_previews_recover(lr_previews *q);
/* Jobs queued or running now. */
int lr_previews_pending(lr_previews *q);
/* Stops: running jobs are interrupted (their rows stay processing and are
 * taken up again at the next start), the threads joined. q may be NULL. */
void lr_previews_free(lr_previews *q);

#endif
