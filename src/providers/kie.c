/* Kie.ai: create a task, record its id, poll its status with backoff until
 * it ends, hand the result URL to the pipeline. Two APIs share the shape:
 * the "market" (POST /api/v1/jobs/createTask, GET /api/v1/jobs/recordInfo)
 * and Veo (POST /api/v1/veo/generate, GET /api/v1/veo/record-info). Every
 * answer is an envelope {code, msg, data}; a code other than 200 in an
 * HTTP 200 answer is a failure too.
 *
 * Failure policy. Creating: bad input (400/422) ends the task with Kie's
 * message; a rejected key (401/403) or an empty Kie account (402) ends it
 * with a log line for the operator; rate limits (429) wait and retry; 5xx,
 * 455, malformed answers and network errors retry a few times. Polling:
 * nothing but Kie's own verdict or the deadline ends a task; errors and
 * timeouts only slow the polling down. All of it runs on the loop thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "providers/remote.h"

#define CREATE_ATTEMPTS 4

typedef struct {
    lr_provider base;
    lr_loop *loop;
    lr_remote_options o;
    char *base_url, *key, *callback_base;
    unsigned char *cb_key;
} kie_provider;

enum phase { CREATING, POLLING, FINISHED };

typedef struct {
    lr_call call;
    kie_provider *kp;
    lr_provider_task *t;
    enum phase phase;
    bool veo;
    lr_timer_id timer; /* the next step, when one is scheduled (else 0) */
    int attempts;      /* consecutive failures of the current step */
    int polls;
    int not_found;
    int64_t deadline; /* monotonic ms */
    char task_id[160];
    bool warned_auth;
} kie_task;

static void kie_step(void *arg);

static void finish_fail(kie_task *k, lr_code code, const char *msg)
{
    k->phase = FINISHED;
    lr_remote_fail(k->t, k->task_id, code, msg); /* k may be gone after this */
}

static void schedule(kie_task *k, int delay_ms)
{
    if (lr_monotonic_ms() + delay_ms > k->deadline) {
        char msg[160];
        snprintf(msg, sizeof msg, "Kie.ai did not finish the task within %lld s",
                 (long long)(k->kp->o.deadline_ms / 1000));
        finish_fail(k, LR_CODE_PROVIDER_TIMEOUT, msg);
        return;
    }
    k->timer = lr_loop_timer(k->kp->loop, delay_ms, kie_step, k);
}

/* The envelope's code (HTTP status when absent), msg and data. */
static json_t *envelope(const lr_call *c, long *code, const char **msg)
{
    json_t *j = c->status ? json_loads(c->body, 0, NULL) : NULL;
    *code = c->status;
    *msg = NULL;
    if (json_is_object(j)) {
        json_t *jc = json_object_get(j, "code");
        if (json_is_integer(jc) && c->status == 200)
            *code = (long)json_integer_value(jc);
        *msg = json_string_value(json_object_get(j, "msg"));
        if (!*msg)
            *msg = json_string_value(json_object_get(j, "message"));
    } else if (j) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* A model as its page on docs.kie.ai documents it: the list field its input
 * image URLs go in, our parameter names that Kie spells differently, and
 * inputs we always send (a parameter of the same name overrides one). A
 * model not listed here (a LENSROOM_MODELS catalog) gets its parameters
 * under their own names and its input images as image_urls. */
typedef struct {
    const char *model;
    const char *images;
    const char *renames[2][2]; /* {ours, Kie's} */
    const char *fixed;         /* JSON object text, or NULL */
} kie_model;

static const kie_model kie_models[] = {
    /* docs.kie.ai/market/seedream/seedream: prompt, image_size, guidance_scale, seed */
    {"bytedance/seedream",
     NULL,
     {{NULL}},
     "{\"image_size\": \"square_hd\", \"guidance_scale\": 2.5}"},
    /* docs.kie.ai/market/google/nano-banana-edit: image_urls, aspect_ratio, output_format */
    {"google/nano-banana-edit",
     "image_urls",
     {{"aspectRatio", "aspect_ratio"}},
     "{\"output_format\": \"png\"}"},
    /* docs.kie.ai/market/google/pro-image-to-image ("nano-banana-pro"):
     * image_input, aspect_ratio, resolution, output_format */
    {"nano-banana-pro",
     "image_input",
     {{"aspectRatio", "aspect_ratio"}},
     "{\"output_format\": \"png\"}"},
    /* docs.kie.ai/veo3-api/generate-veo-3-video: fields beside prompt and model */
    {"veo3", NULL, {{"aspectRatio", "aspect_ratio"}}, NULL},
    {"veo3_fast", NULL, {{"aspectRatio", "aspect_ratio"}}, NULL},
};

static const kie_model *kie_model_find(const char *model)
{
    for (size_t i = 0; model && i < sizeof kie_models / sizeof kie_models[0]; i++) {
        if (!strcmp(kie_models[i].model, model))
            return &kie_models[i];
    }
    return NULL;
}

/* Kie's name for our parameter `name` of model km. */
static const char *kie_name(const kie_model *km, const char *name)
{
    for (size_t i = 0; km && i < 2 && km->renames[i][0]; i++) {
        if (!strcmp(km->renames[i][0], name))
            return km->renames[i][1];
    }
    return name;
}

/* The model's inputs: the fixed ones, then the generation's parameters
 * under Kie's names, into o (borrowed). */
static void put_params(json_t *o, const kie_model *km, json_t *params)
{
    json_t *fixed = km && km->fixed ? json_loads(km->fixed, 0, NULL) : NULL;
    json_object_update(o, fixed);
    json_decref(fixed);
    const char *name;
    json_t *v;
    json_object_foreach(params, name, v)
    {
        if (!json_is_null(v))
            json_object_set(o, kie_name(km, name), v);
    }
}

static json_t *create_body(const kie_task *k)
{
    const lr_provider_task *t = k->t;
    const char *model = t->model->provider_model;
    if (k->veo) {
        if (!model)
            model = "veo3";
        json_t *b = json_pack("{s:s, s:s}", "prompt", t->prompt, "model", model);
        put_params(b, kie_model_find(model), t->params);
        /* An image to start from (a graph run's upstream output): Veo's
         * image-to-video mode takes it in imageUrls. */
        if (json_array_size(t->input_urls) > 0)
            json_object_set_new(b, "imageUrls", json_deep_copy(t->input_urls));
        return b;
    }
    const kie_model *km = kie_model_find(model);
    json_t *input = json_object();
    put_params(input, km, t->params);
    json_object_set_new(input, "prompt", json_string(t->prompt));
    if (!strcmp(t->model->capability, "edit"))
        json_object_set_new(input, km && km->images ? km->images : "image_urls",
                            t->input_urls ? json_deep_copy(t->input_urls) : json_array());
    return json_pack("{s:s, s:o}", "model", model, "input", input);
}

static struct curl_slist *headers(const kie_provider *kp, bool json)
{
    char auth[600];
    snprintf(auth, sizeof auth, "Bearer %s", kp->key);
    struct curl_slist *h = lr_remote_header(NULL, "Authorization", auth);
    h = lr_remote_header(h, "Accept", "application/json");
    if (json)
        h = lr_remote_header(h, "Content-Type", "application/json");
    return h;
}

static void on_create(lr_call *c);
static void on_poll(lr_call *c);

static void start_create(kie_task *k)
{
    json_t *b = create_body(k);
    if (k->kp->callback_base) {
        char token[65], url[1024];
        lr_provider_callback_token(k->kp->cb_key, k->kp->o.callback_key_len, k->t->generation_id,
                                   k->t->variant, token);
        snprintf(url, sizeof url, "%s/api/webhooks/kie?generation=%s&variant=%d&token=%s",
                 k->kp->callback_base, k->t->generation_id, k->t->variant, token);
        json_object_set_new(b, "callBackUrl", json_string(url));
    }
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    char url[600];
    snprintf(url, sizeof url, "%s%s", k->kp->base_url,
             k->veo ? "/api/v1/veo/generate" : "/api/v1/jobs/createTask");
    k->timer = 0; /* a call is running, no timer */
    k->call.done = on_create;
    k->call.ctx = k;
    lr_call_start(k->kp->loop, &k->call, "POST", url, headers(k->kp, true), body, 60000);
    free(body);
}

static void start_poll(kie_task *k)
{
    char *esc = curl_easy_escape(NULL, k->task_id, 0);
    char url[800];
    snprintf(url, sizeof url, "%s%s%s", k->kp->base_url,
             k->veo ? "/api/v1/veo/record-info?taskId=" : "/api/v1/jobs/recordInfo?taskId=",
             esc ? esc : "");
    curl_free(esc);
    k->timer = 0; /* a call is running, no timer */
    k->call.done = on_poll;
    k->call.ctx = k;
    lr_call_start(k->kp->loop, &k->call, "GET", url, headers(k->kp, false), NULL, 30000);
}

static void kie_step(void *arg)
{
    kie_task *k = arg;
    if (atomic_load(&k->t->canceled)) {
        finish_fail(k, LR_CODE_CANCELED, "Canceled");
        return;
    }
    if (k->phase == CREATING)
        start_create(k);
    else if (k->phase == POLLING)
        start_poll(k);
}

static int poll_delay(kie_task *k)
{
    return lr_remote_backoff(k->kp->o.poll_ms, k->polls++, k->kp->o.poll_max_ms);
}

static void operator_auth_problem(kie_task *k, long code, const char *msg)
{
    if (code == 402)
        lr_error("Kie.ai refused task for generation %s: the Kie.ai account has no credits "
                 "left (402%s%s); top it up at kie.ai",
                 k->t->generation_id, msg ? ": " : "", msg ? msg : "");
    else
        lr_error("Kie.ai rejected KIE_API_KEY (%ld%s%s): check the key in the server's "
                 "environment",
                 code, msg ? ": " : "", msg ? msg : "");
}

static void on_create(lr_call *c)
{
    kie_task *k = c->ctx;
    long code;
    const char *msg;
    json_t *j = envelope(c, &code, &msg);
    const char *task_id = json_string_value(json_object_get(json_object_get(j, "data"), "taskId"));
    char text[400];
    if (c->status == 200 && code == 200 && task_id && *task_id &&
        strlen(task_id) < sizeof k->task_id) {
        snprintf(k->task_id, sizeof k->task_id, "%s", task_id);
        json_decref(j);
        k->phase = POLLING;
        k->attempts = 0;
        lr_log(LR_LOG_INFO, NULL, "generation %s output %d: Kie.ai task %s created",
               k->t->generation_id, k->t->variant, k->task_id);
        k->t->submitted(k->t, k->task_id);
        schedule(k, poll_delay(k));
        return;
    }
    snprintf(text, sizeof text, "%s", msg ? msg : "");
    json_decref(j);
    if (code == 400 || code == 422 || code == 404) {
        char m[480];
        snprintf(m, sizeof m, "Kie.ai rejected the request: %s", text[0] ? text : "invalid input");
        finish_fail(k, LR_CODE_INPUT_REJECTED, m);
        return;
    }
    if (code == 401 || code == 403 || code == 402) {
        operator_auth_problem(k, code, text[0] ? text : NULL);
        if (code == 402)
            finish_fail(k, LR_CODE_PROVIDER_OUT_OF_CREDITS,
                        "The image provider is temporarily unavailable; try again later");
        else
            finish_fail(k, LR_CODE_PROVIDER_AUTH,
                        "The image provider rejected the server's credentials");
        return;
    }
    if (code == 429) {
        int wait = c->retry_after_s >= 0 ? c->retry_after_s * 1000
                                         : lr_remote_backoff(k->kp->o.retry_ms, k->attempts, 30000);
        k->attempts++;
        lr_warn("Kie.ai rate-limited task creation for generation %s; retrying in %d ms",
                k->t->generation_id, wait);
        schedule(k, wait);
        return;
    }
    /* Network errors, 5xx, 455, malformed answers: a few more tries. */
    if (++k->attempts < CREATE_ATTEMPTS) {
        lr_warn("Kie.ai task creation for generation %s failed (%s %ld); retrying",
                k->t->generation_id, c->status ? "HTTP/code" : c->error, code);
        schedule(k, lr_remote_backoff(k->kp->o.retry_ms, k->attempts, 20000));
        return;
    }
    if (code == 455 || code == 503) {
        finish_fail(k, LR_CODE_PROVIDER_UNAVAILABLE,
                    "The image provider is under maintenance; try again later");
        return;
    }
    char m[480];
    snprintf(m, sizeof m, "Kie.ai could not create the task (%s)",
             c->status == 0 ? "no answer"
             : text[0]      ? text
                            : "server error");
    finish_fail(k, LR_CODE_PROVIDER_ERROR, m);
}

/* The first result URL in o's resultUrls / result_urls, where the value
 * may be an array or a JSON string holding one. An empty string is no URL:
 * a "success" without one is Kie's failure (provider_failed, refunded),
 * not an address for the download to refuse. malloc'd, or NULL. */
static char *first_url(json_t *o)
{
    const char *names[] = {"resultUrls", "result_urls"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(o, names[i]);
        json_t *parsed = json_is_string(v) ? json_loads(json_string_value(v), 0, NULL) : NULL;
        if (parsed)
            v = parsed;
        char *url = NULL;
        size_t j;
        json_t *u;
        json_array_foreach(v, j, u)
        {
            if (json_string_length(u) > 0) {
                url = lr_xstrdup(json_string_value(u));
                break;
            }
        }
        json_decref(parsed);
        if (url)
            return url;
    }
    return NULL;
}

/* The result URL of a finished task record: market tasks keep it in
 * resultJson (a JSON string, sometimes an object), Veo in response. */
static char *result_url(json_t *data, bool veo)
{
    json_t *holder = json_object_get(data, veo ? "response" : "resultJson");
    json_t *parsed = json_is_string(holder) ? json_loads(json_string_value(holder), 0, NULL)
                                            : json_incref(holder);
    char *url = first_url(parsed);
    json_decref(parsed);
    return url ? url : first_url(data);
}

static void succeed(kie_task *k, const char *url)
{
    k->phase = FINISHED;
    lr_provider_result r = {.ok = true, .url = url, .task_id = k->task_id};
    k->t->done(k->t, &r);
}

static void on_poll(lr_call *c)
{
    kie_task *k = c->ctx;
    if (atomic_load(&k->t->canceled)) {
        finish_fail(k, LR_CODE_CANCELED, "Canceled");
        return;
    }
    long code;
    const char *msg;
    json_t *j = envelope(c, &code, &msg);
    json_t *data = json_object_get(j, "data");
    if (c->status != 200 || code != 200 || !json_is_object(data)) {
        if (code == 401 || code == 403 || code == 402) {
            if (!k->warned_auth)
                operator_auth_problem(k, code, msg);
            k->warned_auth = true;
        } else if (code == 404 && ++k->not_found >= 5) {
            json_decref(j);
            finish_fail(k, LR_CODE_PROVIDER_FAILED, "Kie.ai no longer knows this task");
            return;
        }
        lr_warn("Kie.ai status of task %s unavailable (%s, %ld); polling again later", k->task_id,
                c->status ? "answer" : c->error, code);
        json_decref(j);
        schedule(k, c->retry_after_s > 0 ? c->retry_after_s * 1000 : poll_delay(k));
        return;
    }
    k->not_found = 0;
    bool success, failed;
    const char *why;
    if (k->veo) {
        json_t *flag = json_object_get(data, "successFlag");
        long f = json_is_integer(flag) ? (long)json_integer_value(flag) : 0;
        success = f == 1;
        failed = f != 0 && f != 1; /* -1, or 2/3 in some clients */
        why = json_string_value(json_object_get(data, "errorMessage"));
    } else {
        const char *state = json_string_value(json_object_get(data, "state"));
        success = state && !strcmp(state, "success");
        failed = state && !strcmp(state, "fail");
        why = json_string_value(json_object_get(data, "failMsg"));
    }
    if (success) {
        char *url = result_url(data, k->veo);
        json_decref(j);
        if (url) {
            succeed(k, url);
            free(url);
        } else {
            finish_fail(k, LR_CODE_PROVIDER_FAILED, "Kie.ai reported success without a result URL");
        }
        return;
    }
    if (failed) {
        char m[480];
        snprintf(m, sizeof m, "Kie.ai could not generate the %s: %s", k->veo ? "video" : "image",
                 why && *why ? why
                 : msg       ? msg
                             : "generation failed");
        json_decref(j);
        finish_fail(k, LR_CODE_PROVIDER_FAILED, m);
        return;
    }
    json_decref(j);
    /* waiting, queuing, generating, or a state we do not know: ask again */
    schedule(k, poll_delay(k));
}

static void kie_begin(void *arg)
{
    kie_task *k = arg;
    if (k->t->task_id && *k->t->task_id) {
        snprintf(k->task_id, sizeof k->task_id, "%s", k->t->task_id);
        k->phase = POLLING;
        start_poll(k);
    } else {
        start_create(k);
    }
}

static lr_err kie_submit(lr_provider *p, lr_provider_task *t)
{
    kie_provider *kp = (kie_provider *)p;
    kie_task *k = lr_xcalloc(1, sizeof *k);
    k->kp = kp;
    k->t = t;
    k->veo = !strcmp(t->model->capability, "video");
    /* The deadline counts from the generation's creation, also across restarts. */
    int64_t age = t->created_ms > 0 ? lr_now_ms() - t->created_ms : 0;
    k->deadline = lr_monotonic_ms() + kp->o.deadline_ms - (age > 0 ? age : 0);
    t->provider_data = k;
    lr_loop_post(kp->loop, kie_begin, k);
    return LR_OK;
}

/* A callback said the task changed (or it was canceled): take the next
 * step now instead of at the next tick. Loop thread. */
static void kie_poke(lr_provider *p, lr_provider_task *t)
{
    kie_task *k = t->provider_data;
    if (!k || k->phase == FINISHED || !k->timer) /* nothing scheduled: a call is running */
        return;
    if (lr_loop_cancel(k->kp->loop, k->timer))
        k->timer = lr_loop_timer(k->kp->loop, 0, kie_step, k);
}

static void kie_release(lr_provider *p, lr_provider_task *t)
{
    kie_task *k = t->provider_data;
    if (!k)
        return;
    lr_call_release(&k->call);
    free(k);
    t->provider_data = NULL;
}

static void kie_close(lr_provider *p)
{
    kie_provider *kp = (kie_provider *)p;
    free(kp->base_url);
    free(kp->key);
    free(kp->callback_base);
    free(kp->cb_key);
    free(kp);
}

static const lr_provider_ops kie_ops = {
    .submit = kie_submit,
    .poke = kie_poke,
    .release = kie_release,
    .close = kie_close,
};

lr_provider *lr_kie_new(lr_loop *loop, const lr_remote_options *o)
{
    kie_provider *kp = lr_xcalloc(1, sizeof *kp);
    kp->base.ops = &kie_ops;
    kp->base.name = "kie";
    kp->loop = loop;
    kp->o = *o;
    if (kp->o.retry_ms <= 0)
        kp->o.retry_ms = 1000;
    kp->base_url = lr_xstrdup(o->kie_base);
    size_t n = strlen(kp->base_url);
    while (n > 0 && kp->base_url[n - 1] == '/')
        kp->base_url[--n] = '\0';
    kp->key = lr_xstrdup(o->kie_key);
    kp->callback_base = o->callback_base ? lr_xstrdup(o->callback_base) : NULL;
    if (o->callback_key_len) {
        kp->cb_key = lr_xmalloc(o->callback_key_len);
        memcpy(kp->cb_key, o->callback_key, o->callback_key_len);
    }
    return &kp->base;
}
