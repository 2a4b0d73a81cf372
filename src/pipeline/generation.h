/* Beginning a generation: the one call every entry point makes (POST
 * /api/infer today; graph runs, the command line and webhooks later), so
 * the money protocol is written once and knows nothing of HTTP.
 *
 * lr_generation_begin takes a request already parsed into typed fields
 * and, in this order: applies the caller's request-rate limit; checks the
 * values (prompt, model, outputs, params, input images) against the
 * catalog and the provider; stores uploaded input images; reserves the
 * credits and writes the generation (one transaction, charging
 * lr_generation_charge); takes one of the user's in-flight slots; and
 * starts the pipeline. A retry carrying an idempotency key that a
 * generation already holds charges nothing: the answer is that
 * generation (replayed), or in progress while it runs. Every refusal
 * leaves nothing behind: no credit moved, no row, no stored input.
 *
 * The result is typed; the caller renders it. Strings in it are owned by
 * the result (lr_begin_result_clear releases them). Input images are
 * stored on the calling thread (blocking storage calls): call it on a
 * request thread or a worker, never on the loop thread.
 */
#ifndef LR_GENERATION_H
#define LR_GENERATION_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/vocab.h"
#include "pipeline/pipeline.h"
#include "pipeline/ratelimit.h"

#define LR_MAX_PROMPT_BYTES 10000
#define LR_MAX_INPUT_IMAGES 4
#define LR_MAX_INPUT_IMAGE_BYTES (10u * 1024u * 1024u)
#define LR_MAX_IMAGE_URL_BYTES 2048

/* The money rule (lr_generation_charge, lr_generation_refund) and
 * LR_MAX_OUTPUTS are in pipeline.h: settle applies it too. */

typedef struct {
    const char *user_id;
    const char *model_id; /* catalog id; NULL or "": refused (missing_fields) */
    const char *prompt;   /* NULL or "": refused (missing_fields) */
    size_t prompt_len;    /* its bytes: a NUL before the end is refused */
    int outputs_count;    /* 0: one; outside 1..LR_MAX_OUTPUTS: refused */
    json_t *params;       /* borrowed, as the client sent it; NULL: defaults */
    /* Input images of an edit (ignored for other models): a public https
     * URL and/or data: URLs (base64), which are decoded, checked by
     * content and stored under {user}/inputs/ before reserving. */
    const char *image_url;
    const char *const *images;
    size_t n_images;             /* at most LR_MAX_INPUT_IMAGES */
    const char *quote_id;        /* NULL: today's prices; else a quote to honour */
    const char *idempotency_key; /* NULL: none */
    const char *request_hash;    /* with a key: SHA-256 hex of the request */
    lr_ratelimit *limiter;       /* NULL: no request-rate limit */
    int max_in_flight;           /* the user's running generations; <= 0: unlimited */
    /* wait != NULL: called once, from a worker or the loop thread, with
     * the outcome, or with the still-processing one after wait_ms. */
    int64_t wait_ms;
    lr_wait_fn wait;
    void *ctx;
    const char *request_id; /* for the log, or NULL */
    /* Called once the credits are reserved, before the run starts (so
     * nothing of the run can happen first), with the generation's id:
     * an entry point records what belongs to it (a per-request webhook). */
    void (*reserved)(void *ctx, const char *generation_id, const char *model_id);
    void *reserved_ctx;
} lr_begin_req;

typedef enum {
    LR_BEGIN_STARTED,     /* charged and running: outcome is the processing one */
    LR_BEGIN_REPLAYED,    /* the key's generation had finished: outcome is its end */
    LR_BEGIN_IN_PROGRESS, /* the key's generation still runs (generation_id) */
    LR_BEGIN_REFUSED,     /* nothing charged: code, message and the details */
} lr_begin_kind;

typedef struct {
    lr_begin_kind kind;
    /* STARTED: whether req->wait will be called (false when nobody waits,
     * or the pipeline could not start and the reaper will refund it). */
    bool waiting;
    lr_outcome outcome; /* STARTED and REPLAYED */
    char generation_id[LR_UUID_LEN + 1];
    /* REFUSED */
    lr_code code;
    char message[256];
    char field[64];        /* the request field at fault, or "" */
    int retry_after_s;     /* > 0: when trying again makes sense */
    int required, balance; /* insufficient_credits */
    int limit;             /* too_many_generations */
    /* owned storage the outcome points into */
    char created_at[32];
    lr_generation row;
} lr_begin_result;

/* Fills *out (always, whatever kind); LR_OK, or LR_ERR_INVALID when req
 * lacks a user. Waits for the reserve's commit: never on the loop thread. */
lr_err lr_generation_begin(lr_pipeline *p, const lr_begin_req *req, lr_begin_result *out);

/* lr_generation_begin without holding the calling thread while the
 * reserve commits: the checks run on the calling thread, the reserve
 * joins the database's next batch, and done(ctx, result) runs exactly
 * once: on the calling thread when refused before the reserve, else on
 * the loop thread (started) or a worker (replayed, refused). The result
 * is released when done returns. req (user_id set) and everything it
 * points to must stay valid until done runs. */
typedef void (*lr_begin_done_fn)(void *ctx, const lr_begin_result *r);
void lr_generation_begin_async(lr_pipeline *p, const lr_begin_req *req, lr_begin_done_fn done,
                               void *ctx);
void lr_begin_result_clear(lr_begin_result *r);

#endif
