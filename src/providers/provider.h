/* The provider interface: something that turns a prompt into one output.
 *
 * The pipeline submits one task per output (variant). A provider must call
 * task->done exactly once, from the loop thread or a worker, never from
 * inside submit. On success it hands back either a producer (bytes made
 * here, like the mock's), a URL to fetch (real providers), or text. The
 * provider never touches credits or the database: settling is the
 * pipeline's job.
 */
#ifndef LR_PROVIDER_H
#define LR_PROVIDER_H

#include <jansson.h>
#include <stdbool.h>

#include "core/err.h"
#include "pipeline/loop.h"
#include "providers/catalog.h"
#include "storage/storage.h"

typedef struct lr_provider_task lr_provider_task;

typedef struct {
    bool ok;
    const char *error_code;    /* stable code, e.g. provider_failed */
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
    void (*done)(lr_provider_task *t, const lr_provider_result *r);
    void *owner;         /* the pipeline's */
    void *provider_data; /* the provider's, for the task's lifetime */
};

typedef struct lr_provider lr_provider;

typedef struct {
    lr_err (*submit)(lr_provider *p, lr_provider_task *t);
    void (*close)(lr_provider *p);
} lr_provider_ops;

struct lr_provider {
    const lr_provider_ops *ops;
    const char *name; /* "mock" */
};

/* The development provider: after latency_ms, fails with probability
 * fail_rate, else produces a real PNG (images, edits) or MP4 (video)
 * derived from the prompt, or a text for text models. */
lr_provider *lr_provider_mock_new(lr_loop *loop, int latency_ms, double fail_rate);

#endif
