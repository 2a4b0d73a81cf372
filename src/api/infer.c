/* POST /api/infer: parse the body and headers into one lr_begin_req, call
 * lr_generation_begin, render what it answers: the end of the generation
 * when it comes within the wait (connection suspended meanwhile), else,
 * past the wait limit or with Prefer: respond-async, 202 with where to
 * poll; a replay, an idempotency conflict or a refusal at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "api/render.h"
#include "pipeline/generation.h"

/* Prefer: respond-async and/or wait=N (RFC 7240), comma-separated. */
static void parse_prefer(const char *h, bool *async, long *wait_s)
{
    if (!h)
        return;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", h);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",;", &save); tok; tok = strtok_r(NULL, ",;", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        if (!strncasecmp(tok, "respond-async", 13))
            *async = true;
        else if (!strncasecmp(tok, "wait=", 5)) {
            long v;
            char *end = tok + 5 + strcspn(tok + 5, " \t");
            *end = '\0';
            if (lr_parse_long(tok + 5, 0, 86400, &v) == 0)
                *wait_s = v;
        }
    }
}

/* Answers now (reply) or, once the request was suspended, through resume. */
static void send_json(lr_req *req, bool suspended, int status, json_t *body)
{
    if (suspended)
        lr_req_resume_json(req, status, body);
    else
        lr_req_reply_json(req, status, body);
}

static void location_of(const char *generation_id, char out[96])
{
    snprintf(out, 96, "/api/generations/%s", generation_id);
}

/* 202: still processing, poll the Location. */
static void answer_pending(lr_req *req, bool suspended, const lr_outcome *o)
{
    char location[96];
    location_of(o->generation_id, location);
    const char *status = lr_gen_status_name(o->status);
    lr_req_set_header(req, "Location", location);
    lr_req_set_header(req, "Retry-After", "2");
    send_json(req, suspended, 202,
              json_pack("{s:b, s:s, s:s, s:s, s:{s:s, s:s, s:s, s:i, s:s}}", "success", 1,
                        "generationId", o->generation_id, "status", status, "location", location,
                        "generation", "id", o->generation_id, "modelId", o->model_id, "status",
                        status, "creditsUsed", o->credits_used, "createdAt", o->created_at));
}

static json_t *success_body(const lr_outcome *o)
{
    json_t *task_ids = lr_strv_json(&o->task_ids);
    json_t *meta =
        json_pack("{s:s, s:s, s:o, s:I, s:i, s:i, s:i, s:s}", "modelId", o->model_id, "provider",
                  o->provider, "taskIds", task_ids, "duration", (json_int_t)o->duration_ms,
                  "outputsCount", o->outputs_count, "succeededCount", o->succeeded_count,
                  "failedCount", o->failed_count, "generationId", o->generation_id);
    json_t *b = json_pack("{s:b, s:o, s:o, s:i, s:s, s:s, s:s*, s:i, s:i, s:s}", "success", 1,
                          "urls", lr_strv_json(&o->urls), "meta", meta, "newBalance", o->balance,
                          "generationId", o->generation_id, "status", lr_gen_status_name(o->status),
                          "url", o->urls.n ? o->urls.v[0] : NULL, "creditsUsed", o->credits_used,
                          "balance", o->balance, "createdAt", o->created_at);
    if (o->text)
        json_object_set_new(b, "text", json_string(o->text));
    if (o->failed_count > 0 && o->error != LR_CODE_NONE)
        json_object_set_new(
            b, "partialError",
            json_pack("{s:s, s:s}", "code", lr_code_name(o->error), "message", o->error_message));
    return b;
}

/* A generation that ended without output: the status its error code maps
 * to, and what was refunded. */
static json_t *failure_body(const lr_outcome *o, int *status)
{
    bool internal = o->error == LR_CODE_INTERNAL_ERROR;
    *status = lr_code_http_status(o->error);
    char msg[512];
    if (internal)
        snprintf(msg, sizeof msg, "%s", o->error_message);
    else
        snprintf(msg, sizeof msg, "Generation failed: %s. Your %d credits were refunded.",
                 o->error_message, o->refunded);
    return lr_error_body(
        lr_code_name(o->error), msg,
        json_pack("{s:s, s:s, s:i, s:i, s:i, s:o}", "generationId", o->generation_id, "status",
                  lr_gen_status_name(o->status), "refunded", internal ? 0 : o->refunded, "balance",
                  o->balance, "newBalance", o->balance, "taskIds", lr_strv_json(&o->task_ids)));
}

static void answer_outcome(lr_req *req, bool suspended, const lr_outcome *o)
{
    int status = 200;
    if (o->status == LR_GEN_PROCESSING)
        answer_pending(req, suspended, o);
    else if (o->status == LR_GEN_SUCCESS)
        send_json(req, suspended, status, success_body(o));
    else {
        json_t *b = failure_body(o, &status);
        send_json(req, suspended, status, b);
    }
}

/* The waiter: the generation ended, or the wait ran out (processing). */
static void on_outcome(void *ctx, const lr_outcome *o)
{
    answer_outcome(ctx, true, o);
}

/* A refusal: the code's status, Retry-After when trying later helps, and
 * the details the code carries. */
static void answer_refusal(lr_req *req, bool suspended, const lr_begin_result *r)
{
    json_t *extra = json_object();
    if (r->field[0])
        json_object_set_new(extra, "field", json_string(r->field));
    if (r->code == LR_CODE_INSUFFICIENT_CREDITS) {
        json_object_set_new(extra, "required", json_integer(r->required));
        json_object_set_new(extra, "balance", json_integer(r->balance));
    } else if (r->code == LR_CODE_RATE_LIMITED) {
        json_object_set_new(extra, "retryAfter", json_integer(r->retry_after_s));
    } else if (r->code == LR_CODE_TOO_MANY_GENERATIONS) {
        json_object_set_new(extra, "limit", json_integer(r->limit));
    } else if (r->code == LR_CODE_IDEMPOTENCY_KEY_REUSED) {
        json_object_set_new(extra, "generationId", json_string(r->generation_id));
    }
    if (r->retry_after_s > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", r->retry_after_s);
        lr_req_set_header(req, "Retry-After", ra);
    }
    send_json(req, suspended, lr_code_http_status(r->code),
              lr_error_body(lr_code_name(r->code), r->message, extra));
}

static void answer(lr_req *req, bool suspended, const lr_begin_result *r)
{
    char location[96];
    switch (r->kind) {
    case LR_BEGIN_STARTED: answer_pending(req, suspended, &r->outcome); break;
    case LR_BEGIN_REPLAYED:
        lr_req_set_header(req, "Idempotent-Replayed", "true");
        answer_outcome(req, suspended, &r->outcome);
        break;
    case LR_BEGIN_IN_PROGRESS:
        location_of(r->generation_id, location);
        lr_req_set_header(req, "Location", location);
        lr_req_set_header(req, "Retry-After", "2");
        send_json(req, suspended, lr_code_http_status(LR_CODE_IDEMPOTENCY_IN_PROGRESS),
                  lr_error_body(lr_code_name(LR_CODE_IDEMPOTENCY_IN_PROGRESS),
                                lr_code_message(LR_CODE_IDEMPOTENCY_IN_PROGRESS),
                                json_pack("{s:s, s:s}", "generationId", r->generation_id,
                                          "location", location)));
        break;
    case LR_BEGIN_REFUSED: answer_refusal(req, suspended, r); break;
    }
}

/* inputs.imageUrl and inputs.images (an array of at most
 * LR_MAX_INPUT_IMAGES strings) into q; replies 422/400 when their JSON
 * types are wrong (their values are the domain's to judge). */
static bool parse_images(lr_req *req, json_t *inputs, lr_begin_req *q, const char **images)
{
    json_t *url = json_object_get(inputs, "imageUrl");
    json_t *list = json_object_get(inputs, "images");
    if (url && !json_is_null(url) && !json_is_string(url)) {
        lr_api_error(req, LR_CODE_INVALID_IMAGE_URL, NULL,
                     json_pack("{s:s}", "field", "inputs.imageUrl"));
        return false;
    }
    q->image_url = json_string_value(url);
    if (!list || json_is_null(list))
        return true;
    if (!json_is_array(list) || json_array_size(list) > LR_MAX_INPUT_IMAGES) {
        lr_api_error(req, LR_CODE_INVALID_INPUT_IMAGE, NULL,
                     json_pack("{s:s}", "field", "inputs.images"));
        return false;
    }
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        if (!json_is_string(v)) {
            lr_api_error(req, LR_CODE_INVALID_INPUT_IMAGE,
                         "inputs.images entries must be strings (data URLs)",
                         json_pack("{s:s}", "field", "inputs.images"));
            return false;
        }
        images[i] = json_string_value(v);
    }
    q->images = images;
    q->n_images = json_array_size(list);
    return true;
}

/* The body's fields into q (borrowed from body). Values of the wrong type
 * become what the domain refuses with the same answer as a bad value. */
static bool parse_body(lr_req *req, json_t *body, lr_begin_req *q, const char **images)
{
    json_t *inputs = json_object_get(body, "inputs");
    json_t *prompt = json_object_get(inputs, "prompt");
    json_t *count = json_object_get(body, "outputsCount");
    q->model_id = json_string_value(json_object_get(body, "modelId"));
    q->prompt = json_string_value(prompt);
    q->prompt_len = json_string_length(prompt);
    if (count && !json_is_null(count)) {
        json_int_t n = json_is_integer(count) ? json_integer_value(count) : -1;
        q->outputs_count = n >= 1 && n <= LR_MAX_OUTPUTS ? (int)n : -1;
    }
    q->params = json_object_get(body, "params");
    json_t *quote = json_object_get(body, "quoteId");
    if (quote && !json_is_null(quote) && !json_is_string(quote)) {
        lr_api_error(req, LR_CODE_QUOTE_NOT_FOUND, "quoteId must be a string",
                     json_pack("{s:s}", "field", "quoteId"));
        return false;
    }
    q->quote_id = json_string_value(quote);
    return parse_images(req, inputs, q, images);
}

/* A request between lr_generation_begin_async and its answer: the parsed
 * request and the buffers it points into. */
typedef struct {
    lr_app *app;
    lr_req *req;
    json_t *body;
    char user[LR_UUID_LEN + 1], key[204], hash[65];
    const char *images[LR_MAX_INPUT_IMAGES];
    lr_gen_hook hook;
    lr_begin_req q;
} infer_call;

/* A per-request webhook, recorded once the generation is reserved. */
static void hook_reserved(void *ctx, const char *generation_id, const char *model_id)
{
    infer_call *c = ctx;
    lr_api_gen_hook_register(c->app, &c->hook, c->user, generation_id, model_id);
}

/* The begin's end: answered now unless the waiter answers later. */
static void on_begun(void *ctx, const lr_begin_result *r)
{
    infer_call *c = ctx;
    if (!(r->kind == LR_BEGIN_STARTED && r->waiting))
        answer(c->req, true, r);
    json_decref(c->body);
    free(c);
}

void lr_api_infer(lr_app *app, lr_req *req)
{
    infer_call *c = lr_xcalloc(1, sizeof *c);
    bool has_key, async = false;
    c->app = app;
    c->req = req;
    if (!lr_api_user(app, req, true, c->user))
        goto fail;
    c->body = lr_api_json_body_nul(req, "inputs.prompt");
    if (!c->body)
        goto fail;
    lr_begin_req *q = &c->q;
    *q = (lr_begin_req){
        .user_id = c->user,
        .limiter = app->ratelimit,
        .max_in_flight = app->cfg->user_max_in_flight,
        .request_id = lr_req_id(req),
    };
    if (!parse_body(req, c->body, q, c->images) || !lr_api_idempotency_key(req, c->key, &has_key) ||
        !lr_api_gen_hook_parse(app, req, c->body, &c->hook))
        goto fail;
    if (c->hook.set) {
        q->reserved = hook_reserved;
        q->reserved_ctx = c;
    }
    if (has_key) {
        lr_api_body_sha256(req, c->hash);
        q->idempotency_key = c->key;
        q->request_hash = c->hash;
    }
    long wait_s = app->cfg->wait_default_s;
    parse_prefer(lr_req_header(req, "Prefer"), &async, &wait_s);
    if (wait_s > app->cfg->wait_max_s)
        wait_s = app->cfg->wait_max_s;
    if (!async && wait_s > 0) {
        q->wait_ms = wait_s * 1000LL;
        q->wait = on_outcome;
        q->ctx = req;
    }
    /* Suspended before the generation begins: no thread waits for the
     * reserve, and the generation may end (and the waiter resume the
     * request) before begin returns. */
    lr_req_suspend(req);
    lr_generation_begin_async(app->pipeline, q, on_begun, c);
    return;
fail:
    json_decref(c->body);
    free(c);
}
