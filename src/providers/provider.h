/* The provider interface: something that turns a prompt into one output.
 *
 * The pipeline submits one task per output (variant). A provider must call
 * task->done exactly once, from the loop thread or a worker, never from
 * inside submit. On success it hands back either a producer (bytes made
 * here, like the mock's), a URL to fetch (real providers), or text. A
 * provider with remote tasks reports the task id through task->submitted
 * as soon as it has one (the pipeline records it, so a restart can resume
 * the task), and submit with task->task_id already set resumes that task
 * instead of creating one. task->canceled asks it to stop and fail soon.
 * The provider never touches credits or the database: settling is the
 * pipeline's job. release frees the provider's per-task state; the
 * pipeline calls it after done, or at shutdown once the loop stopped.
 */
#ifndef LR_PROVIDER_H
#define LR_PROVIDER_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <stdint.h>

#include "core/err.h"
#include "core/vocab.h"
#include "loop/loop.h"
#include "providers/catalog.h"
#include "storage/storage.h"

typedef struct lr_provider_task lr_provider_task;

typedef struct {
    bool ok;
    lr_code error;             /* stable code, e.g. LR_CODE_PROVIDER_FAILED */
    const char *error_message; /* human text, safe to show the user */
    const char *task_id;       /* the provider's id for this output, or NULL */
    /* exactly one of these on success: */
    lr_err (*produce)(lr_provider_task *t, lr_blob_sink *sink); /* runs on a worker */
    const char *url;
    const char *text;
} lr_provider_result;

struct lr_provider_task {
    const char *generation_id;
    const char *user_id;
    const lr_model *model;
    const char *prompt;
    json_t *params;
    int variant;
    json_t *input_urls;  /* public URLs of input images (edit models), or NULL */
    const char *task_id; /* set when resuming a task the provider already has */
    int64_t created_ms;  /* when the generation was created (deadlines count from it) */
    atomic_bool canceled;
    void (*submitted)(lr_provider_task *t, const char *task_id);
    void (*done)(lr_provider_task *t, const lr_provider_result *r);
    void *owner;         /* the pipeline's */
    void *provider_data; /* the provider's, for the task's lifetime */
};

typedef struct lr_provider lr_provider;

typedef struct {
    lr_err (*submit)(lr_provider *p, lr_provider_task *t);
    /* Optional: take the task's next step now (a callback hinted it
     * changed, or it was canceled). Loop thread; must not call done. */
    void (*poke)(lr_provider *p, lr_provider_task *t);
    /* Optional: frees the provider's per-task state. */
    void (*release)(lr_provider *p, lr_provider_task *t);
    /* Whether this provider can run the model (configured for it). */
    bool (*supports)(lr_provider *p, const lr_model *m);
    /* The name recorded for generations of the model. */
    const char *(*name_for)(lr_provider *p, const lr_model *m);
    void (*close)(lr_provider *p);
} lr_provider_ops;

struct lr_provider {
    const lr_provider_ops *ops;
    const char *name; /* "mock" | "kie" (the router: kie + anthropic) */
};

bool lr_provider_supports(lr_provider *p, const lr_model *m);
const char *lr_provider_name_for(lr_provider *p, const lr_model *m);
void lr_provider_poke(lr_provider *p, lr_provider_task *t);
void lr_provider_release(lr_provider *p, lr_provider_task *t);

/* The development provider: after latency_ms, fails with probability
 * fail_rate, else produces a real PNG (images, edits) or MP4 (video)
 * derived from the prompt, or a text for text models. */
lr_provider *lr_provider_mock_new(lr_loop *loop, int latency_ms, double fail_rate);

typedef struct {
    const char *kie_base; /* https://api.kie.ai */
    const char *kie_key;
    const char *anthropic_base; /* https://api.anthropic.com */
    const char *anthropic_key;  /* NULL: anthropic_text is not offered */
    const char *anthropic_model;
    const char *callback_base;         /* public URL of this server for Kie's callbacks, or NULL */
    const unsigned char *callback_key; /* HMAC key for callback tokens */
    size_t callback_key_len;
    int poll_ms; /* first status poll after this, growing to poll_max_ms */
    int poll_max_ms;
    int64_t deadline_ms; /* a task unfinished after this fails (and is refunded) */
    int retry_ms;        /* first delay before retrying a failed call */
} lr_remote_options;

/* The real providers behind one router: Kie.ai (market and Veo APIs) for
 * image, edit and video models, the Anthropic Messages API for text. */
lr_provider *lr_provider_remote_new(lr_loop *loop, const lr_remote_options *o);

/* The token a Kie callback URL carries for (generation, variant):
 * hex HMAC-SHA256, out[65]. */
void lr_provider_callback_token(const unsigned char *key, size_t key_len, const char *generation_id,
                                int variant, char out[65]);
#endif
