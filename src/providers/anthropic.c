/* The Anthropic Messages API for text models: one POST /v1/messages per
 * output, retried with backoff on rate limits (429), overload (529), 5xx
 * and network errors, until the deadline; a 400 is the user's input and
 * ends the task with Anthropic's message; 401/403 is the operator's key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "providers/remote.h"

#define ANTHROPIC_DEADLINE_MS (5 * 60 * 1000)

typedef struct {
    lr_provider base;
    lr_loop *loop;
    char *base_url, *key, *model;
    int retry_ms;
} anthropic_provider;

typedef struct {
    lr_call call;
    anthropic_provider *ap;
    lr_provider_task *t;
    int attempts;
    int64_t deadline;
} anthropic_task;

static void on_answer(lr_call *c);

static void send_request(void *arg)
{
    anthropic_task *a = arg;
    if (atomic_load(&a->t->canceled)) {
        lr_remote_fail(a->t, NULL, LR_CODE_CANCELED, "Canceled");
        return;
    }
    json_t *p = a->t->params;
    json_t *max = json_object_get(p, "max_tokens");
    json_t *temp = json_object_get(p, "temperature");
    json_t *b = json_pack("{s:s, s:I, s:[{s:s, s:s}]}", "model", a->ap->model, "max_tokens",
                          max ? (json_int_t)json_number_value(max) : (json_int_t)800, "messages",
                          "role", "user", "content", a->t->prompt);
    if (temp)
        json_object_set(b, "temperature", temp);
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    char url[600];
    snprintf(url, sizeof url, "%s/v1/messages", a->ap->base_url);
    struct curl_slist *h = lr_remote_header(NULL, "x-api-key", a->ap->key);
    h = lr_remote_header(h, "anthropic-version", "2023-06-01");
    h = lr_remote_header(h, "Content-Type", "application/json");
    a->call.done = on_answer;
    a->call.ctx = a;
    lr_call_start(a->ap->loop, &a->call, "POST", url, h, body, 120000);
    free(body);
}

static void retry(anthropic_task *a, const char *why)
{
    int wait = a->call.retry_after_s >= 0 ? a->call.retry_after_s * 1000
                                          : lr_remote_backoff(a->ap->retry_ms, a->attempts, 30000);
    a->attempts++;
    if (lr_monotonic_ms() + wait > a->deadline) {
        lr_remote_fail(a->t, NULL, LR_CODE_PROVIDER_UNAVAILABLE,
                       "The text provider is overloaded or unreachable; try again later");
        return;
    }
    lr_warn("Anthropic call for generation %s failed (%s); retrying in %d ms", a->t->generation_id,
            why, wait);
    lr_loop_timer(a->ap->loop, wait, send_request, a);
}

static void on_answer(lr_call *c)
{
    anthropic_task *a = c->ctx;
    json_t *j = c->status ? json_loads(c->body, 0, NULL) : NULL;
    const char *emsg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    char why[256];
    snprintf(why, sizeof why, "%.200s %ld", c->status ? "HTTP" : c->error, c->status);
    if (c->status == 200 && json_is_object(j)) {
        json_t *content = json_object_get(j, "content");
        const char *text = NULL;
        size_t i;
        json_t *part;
        json_array_foreach(content, i, part)
        {
            const char *type = json_string_value(json_object_get(part, "type"));
            if (type && !strcmp(type, "text")) {
                text = json_string_value(json_object_get(part, "text"));
                break;
            }
        }
        if (text) {
            const char *id = json_string_value(json_object_get(j, "id"));
            lr_provider_result r = {.ok = true, .text = text, .task_id = id};
            a->t->done(a->t, &r);
        } else {
            lr_remote_fail(a->t, NULL, LR_CODE_PROVIDER_FAILED,
                           "The text provider returned no text");
        }
        json_decref(j);
        return;
    }
    if (c->status == 400 || c->status == 413 || c->status == 422) {
        char m[480];
        snprintf(m, sizeof m, "The text provider rejected the request: %s",
                 emsg ? emsg : "invalid input");
        json_decref(j);
        lr_remote_fail(a->t, NULL, LR_CODE_INPUT_REJECTED, m);
        return;
    }
    if (c->status == 401 || c->status == 403) {
        lr_error("Anthropic rejected ANTHROPIC_API_KEY (%ld%s%s): check the key in the server's "
                 "environment",
                 c->status, emsg ? ": " : "", emsg ? emsg : "");
        json_decref(j);
        lr_remote_fail(a->t, NULL, LR_CODE_PROVIDER_AUTH,
                       "The text provider rejected the server's credentials");
        return;
    }
    json_decref(j);
    if (c->status == 200 && a->attempts >= 3) { /* 200 but not JSON, repeatedly */
        lr_remote_fail(a->t, NULL, LR_CODE_PROVIDER_ERROR,
                       "The text provider sent a malformed answer");
        return;
    }
    retry(a, why); /* 429, 529, 5xx, network errors, malformed answers */
}

static lr_err anthropic_submit(lr_provider *p, lr_provider_task *t)
{
    anthropic_provider *ap = (anthropic_provider *)p;
    anthropic_task *a = lr_xcalloc(1, sizeof *a);
    a->ap = ap;
    a->t = t;
    a->deadline = lr_monotonic_ms() + ANTHROPIC_DEADLINE_MS;
    t->provider_data = a;
    lr_loop_post(ap->loop, send_request, a);
    return LR_OK;
}

static void anthropic_release(lr_provider *p, lr_provider_task *t)
{
    anthropic_task *a = t->provider_data;
    if (!a)
        return;
    lr_call_release(&a->call);
    free(a);
    t->provider_data = NULL;
}

static void anthropic_close(lr_provider *p)
{
    anthropic_provider *ap = (anthropic_provider *)p;
    free(ap->base_url);
    free(ap->key);
    free(ap->model);
    free(ap);
}

static const lr_provider_ops anthropic_ops = {
    .submit = anthropic_submit,
    .release = anthropic_release,
    .close = anthropic_close,
};

lr_provider *lr_anthropic_new(lr_loop *loop, const lr_remote_options *o)
{
    anthropic_provider *ap = lr_xcalloc(1, sizeof *ap);
    ap->base.ops = &anthropic_ops;
    ap->base.name = "anthropic";
    ap->loop = loop;
    ap->base_url = lr_xstrdup(o->anthropic_base);
    size_t n = strlen(ap->base_url);
    while (n > 0 && ap->base_url[n - 1] == '/')
        ap->base_url[--n] = '\0';
    ap->key = lr_xstrdup(o->anthropic_key);
    ap->model = lr_xstrdup(o->anthropic_model);
    ap->retry_ms = o->retry_ms > 0 ? o->retry_ms : 1000;
    return &ap->base;
}
