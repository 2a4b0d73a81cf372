/* The generation pipeline: from a reserved generation to a settled one.
 *
 * A generation is reserved first (db->reserve: credits charged, row
 * written, by lr_generation_begin), then handed here. The pipeline submits one provider task per
 * output, streams each result into storage on a worker, and when every
 * output has ended settles the generation in one transaction: success with
 * the URLs, or failed with the error and one refund covering every failed
 * output. Nothing here blocks the loop thread; nothing holds a thread
 * while a provider works.
 *
 * Providers that answer with a URL (Kie.ai) get their result downloaded on
 * the loop (libcurl multi, streamed into storage, address policy applied);
 * their task ids are recorded on the row as soon as known, so after a
 * crash lr_pipeline_recover resumes those tasks; generations without one
 * are failed and refunded. Every change of stage (submitted, downloading,
 * storing) and the final status go to the observer (the SSE hub).
 *
 * Generations begin with lr_generation_begin (generation.h), which
 * reserves and starts them; it can attach a waiter that is called exactly
 * once, with the outcome, or with the still-processing one when its wait
 * runs out first. It is called on a worker or the loop thread and must not
 * block.
 */
#ifndef LR_PIPELINE_H
#define LR_PIPELINE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"
#include "core/vocab.h"
#include "db/db.h"
#include "loop/loop.h"
#include "media/jobs.h"
#include "net/net.h"
#include "providers/catalog.h"
#include "providers/provider.h"
#include "storage/storage.h"

typedef struct lr_pipeline lr_pipeline;

#define LR_MAX_OUTPUTS 4

/* The money rule, in one place: n outputs of m with validated params cost
 * n times the unit price the catalog's price rules give
 * (lr_model_unit_price), or the quoted one, and each output that fails is
 * refunded at the unit price it was charged (begin, settle, replays and
 * cancels all use these). */
int lr_generation_charge(const lr_model *m, json_t *params, int outputs);
int lr_generation_refund(int unit_price, int failed_outputs);

/* How a generation ended (or, for a waiter whose wait ran out, that it
 * is still processing). Everything is borrowed for the duration of the
 * call that hands it over. */
typedef struct {
    const char *generation_id;
    const char *model_id;
    const char *provider;
    lr_gen_status status; /* success | failed | canceled; processing: not yet */
    lr_strv urls;         /* public URLs of the stored outputs */
    lr_strv task_ids;     /* the provider's task ids */
    const char *text;     /* text models */
    int outputs_count, succeeded_count, failed_count;
    int credits_used; /* processing: what was reserved */
    int refunded;     /* credits given back for failed outputs */
    int balance;      /* the user's balance after settling (0 while processing) */
    int64_t duration_ms;
    lr_code error; /* LR_CODE_NONE on full success */
    const char *error_message;
    const char *created_at;
} lr_outcome;

typedef void (*lr_wait_fn)(void *ctx, const lr_outcome *outcome);

/* Called on a worker or the loop thread for every stage change and once
 * with the final status (stage LR_STAGE_NONE). Must not block. */
typedef void (*lr_observer_fn)(void *ctx, const char *generation_id, lr_gen_status status,
                               lr_gen_stage stage);

/* lease_s: how long a claim on a generation holds without renewal. The
 * pipeline keeps a heartbeat of lease_s/2, renewed every lease_s/10, and
 * takes over (resumes or reaps) the work of dead processes within one
 * lease of their death. */
lr_pipeline *lr_pipeline_new(lr_db *db, lr_store *store, lr_provider *provider,
                             const lr_catalog *catalog, const lr_net_policy *net, lr_loop *loop,
                             lr_workers *workers, int lease_s);
void lr_pipeline_observe(lr_pipeline *p, lr_observer_fn fn, void *ctx);
/* A part of the domain built on generations that keeps work of its own
 * across crashes (graph runs, run.h): recover runs after every recovery of
 * generations (lr_pipeline_recover adds its count; -1: failed), release at
 * lr_pipeline_free once the loop and workers have stopped. Attached once,
 * before the first recovery; the pipeline calls it and never names it. */
typedef struct {
    int (*recover)(lr_pipeline *p);
    void (*release)(lr_pipeline *p);
} lr_pipeline_part;
void lr_pipeline_attach(lr_pipeline *p, const lr_pipeline_part *part);
/* Where a succeeded generation with stored outputs goes for its posters,
 * previews and thumbnails (after its settle, never before); NULL: none. */
void lr_pipeline_set_previews(lr_pipeline *p, lr_previews *q);
/* First delay before a failed download is retried (doubling; default 1 s). */
void lr_pipeline_set_retry(lr_pipeline *p, int retry_ms);
/* Takes over unfinished generations whose process died (its heartbeat
 * ended; for a process without one, the row's lease ran out): those with provider task ids are
 * resumed by polling the tasks, the others are failed and refunded. Returns how many were handled,
 * -1 on a database error. Called at start and then periodically; beats
 * when due, and takes nothing over in the first lease_s * 0.6 after the
 * start or after the heartbeat failed (pipeline.c's beat says why). */
int lr_pipeline_recover(lr_pipeline *p);
/* Cancels user's unfinished generation: settled as canceled with a full
 * refund (exactly once, whichever process runs it); the provider is told
 * to stop and waiters answered. NOT_FOUND; CONFLICT when already final.
 * *out (may be NULL; the caller clears it): the generation afterwards,
 * zeroed when there is none; *balance: the user's balance after the
 * refund (LR_OK only). */
lr_err lr_pipeline_cancel(lr_pipeline *p, const char *user, const char *id, lr_generation *out,
                          int *balance);
/* A provider callback said a task of generation id may have changed. */
void lr_pipeline_poke(lr_pipeline *p, const char *id, int variant);
bool lr_pipeline_is_local(lr_pipeline *p, const char *id);
/* Removes the stored objects (keys, as mark_deleted gave them) of a
 * deleted generation and, when all are gone, clears its purge_pending
 * flag; false leaves it for the periodic retry. Blocking (storage calls):
 * not for the loop thread. */
bool lr_pipeline_purge_objects(lr_pipeline *p, const char *id, const lr_strv *keys);
/* Beats once, then starts the maintenance thread: heartbeat and recovery
 * every lease_s/10 on a thread of their own (never queued behind bulk work),
 * purge retries on the workers. lr_pipeline_drain stops it. */
void lr_pipeline_start_maintenance(lr_pipeline *p);
int lr_pipeline_in_flight(lr_pipeline *p);
/* Shutdown, after the loop and workers stopped: gives up this process's
 * claims at once, so the next process resumes (or refunds) what is left
 * without waiting for the lease to run out. */
void lr_pipeline_release_claims(lr_pipeline *p);
/* Waits up to timeout_ms for in-flight generations to settle, then stops
 * the maintenance thread (before the workers stop). */
void lr_pipeline_drain(lr_pipeline *p, int64_t timeout_ms);
void lr_pipeline_free(lr_pipeline *p);

#endif
