/* POST /api/infer: validate, reserve credits, start the generation and
 * answer when it ends (connection suspended meanwhile) or, past the wait
 * limit or with Prefer: respond-async, 202 with where to poll. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "api/api.h"
#include "api/render.h"
#include "core/log.h"
#include "storage/mime.h"

#define MAX_PROMPT_BYTES 10000

typedef struct {
    lr_req *req;
    char generation_id[LR_UUID_LEN + 1];
    char model_id[64];
    char created_at[32];
    int credits_reserved;
} infer_wait;

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

static void location_of(const char *generation_id, char out[96])
{
    snprintf(out, 96, "/api/generations/%s", generation_id);
}

static json_t *pending_body(const infer_wait *w, const char *location)
{
    return json_pack("{s:b, s:s, s:s, s:s, s:{s:s, s:s, s:s, s:i, s:s}}", "success", 1,
                     "generationId", w->generation_id, "status", "processing", "location",
                     location, "generation", "id", w->generation_id, "modelId", w->model_id,
                     "status", "processing", "creditsUsed", w->credits_reserved, "createdAt",
                     w->created_at);
}

static void answer_pending(infer_wait *w, bool resume)
{
    char location[96];
    location_of(w->generation_id, location);
    lr_req_set_header(w->req, "Location", location);
    lr_req_set_header(w->req, "Retry-After", "2");
    if (resume)
        lr_req_resume_json(w->req, 202, pending_body(w, location));
    else
        lr_req_reply_json(w->req, 202, pending_body(w, location));
}

static json_t *success_body(const lr_outcome *o)
{
    json_t *meta = json_pack("{s:s, s:s, s:O, s:I, s:i, s:i, s:i, s:s}", "modelId", o->model_id,
                             "provider", o->provider, "taskIds", o->task_ids, "duration",
                             (json_int_t)o->duration_ms, "outputsCount", o->outputs_count,
                             "succeededCount", o->succeeded_count, "failedCount",
                             o->failed_count, "generationId", o->generation_id);
    json_t *first = json_array_get(o->urls, 0);
    json_t *b = json_pack("{s:b, s:O, s:o, s:i, s:s, s:s, s:O, s:i, s:i, s:s}", "success", 1,
                          "urls", o->urls, "meta", meta, "newBalance", o->balance, "generationId",
                          o->generation_id, "status", o->status, "url",
                          first ? first : json_null(), "creditsUsed", o->credits_used, "balance",
                          o->balance, "createdAt", o->created_at);
    if (o->text)
        json_object_set_new(b, "text", json_string(o->text));
    if (o->failed_count > 0)
        json_object_set_new(b, "partialError",
                            json_pack("{s:s, s:s}", "code", o->error_code, "message",
                                      o->error_message));
    return b;
}

/* The HTTP status for a failed generation's error code. */
static int failure_status(const char *code)
{
    static const struct {
        const char *code;
        int status;
    } map[] = {
        {"internal_error", 500},          {"input_rejected", 422},
        {"provider_out_of_credits", 503}, {"provider_unavailable", 503},
        {"provider_not_configured", 503}, {"provider_timeout", 504},
        {"canceled", 409},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (!strcmp(code, map[i].code))
            return map[i].status;
    }
    return 502;
}

static json_t *failure_body(const lr_outcome *o, int refunded, int *status)
{
    bool internal = !strcmp(o->error_code, "internal_error");
    *status = failure_status(o->error_code);
    char msg[512];
    if (internal)
        snprintf(msg, sizeof msg, "%s", o->error_message);
    else
        snprintf(msg, sizeof msg, "Generation failed: %s. Your %d credits were refunded.",
                 o->error_message, refunded);
    return lr_error_body(o->error_code, msg,
                         json_pack("{s:s, s:s, s:i, s:i, s:i, s:O}", "generationId",
                                   o->generation_id, "status", o->status, "refunded",
                                   internal ? 0 : refunded, "balance", o->balance, "newBalance",
                                   o->balance, "taskIds", o->task_ids));
}

/* Pipeline callback: the generation ended (o) or the wait ran out (NULL). */
static void on_outcome(void *ctx, const lr_outcome *o)
{
    infer_wait *w = ctx;
    if (!o) {
        answer_pending(w, true);
    } else if (!strcmp(o->status, "success")) {
        lr_req_resume_json(w->req, 200, success_body(o));
    } else {
        int status;
        json_t *b = failure_body(o, w->credits_reserved, &status);
        lr_req_resume_json(w->req, status, b);
    }
    free(w);
}

/* Idempotency-Key: 1-200 visible ASCII characters, optionally as a quoted
 * sf-string. Returns false (and replies 400) when malformed. */
static bool idempotency_key(lr_req *req, char out[204], bool *present)
{
    const char *h = lr_req_header(req, "Idempotency-Key");
    *present = h != NULL;
    if (!h)
        return true;
    size_t n = strlen(h);
    if (n >= 2 && h[0] == '"' && h[n - 1] == '"') {
        h++;
        n -= 2;
    }
    bool ok = n >= 1 && n <= 200;
    for (size_t i = 0; ok && i < n; i++)
        ok = h[i] >= 0x21 && h[i] <= 0x7e && h[i] != '"';
    if (!ok) {
        lr_req_reply_error(req, 400, "invalid_idempotency_key",
                           "Idempotency-Key must be 1 to 200 visible ASCII characters", NULL);
        return false;
    }
    memcpy(out, h, n);
    out[n] = '\0';
    return true;
}

static void body_sha256(lr_req *req, char hex[65])
{
    size_t len;
    const char *body = lr_req_body(req, &len);
    unsigned char d[32];
    EVP_Digest(body, len, d, NULL, EVP_sha256(), NULL);
    lr_hex(d, 32, hex);
}

/* The answer for a retry whose key is held by generation g: the result
 * when it has finished (with the balance as it is now), 409 while it runs. */
static void replay(lr_app *app, lr_req *req, const char *user, const lr_key_holder *h)
{
    lr_generation g = {0};
    lr_err e = app->db->ops->get_generation(app->db, user, h->generation_id, &g);
    if (e != LR_OK && e != LR_ERR_NOT_FOUND) {
        lr_api_db_error(req, e);
        return;
    }
    if (!h->same_request) {
        lr_req_reply_error(req, 422, "idempotency_key_reused",
                           "This Idempotency-Key was already used with a different request",
                           json_pack("{s:s}", "generationId", h->generation_id));
        lr_generation_clear(&g);
        return;
    }
    if (e == LR_ERR_NOT_FOUND) {
        lr_req_reply_error(req, 409, "idempotency_conflict",
                           "The generation made with this Idempotency-Key was deleted", NULL);
        return;
    }
    char location[96];
    location_of(h->generation_id, location);
    if (lr_generation_unfinished(&g)) {
        lr_req_set_header(req, "Location", location);
        lr_req_set_header(req, "Retry-After", "2");
        lr_req_reply_error(req, 409, "idempotency_in_progress",
                           "A request with this Idempotency-Key is still running",
                           json_pack("{s:s, s:s}", "generationId", h->generation_id, "location",
                                     location));
        lr_generation_clear(&g);
        return;
    }
    int balance = 0;
    app->db->ops->balance(app->db, user, &balance);
    json_t *urls = lr_render_strv(&g.result_urls), *task_ids = lr_render_strv(&g.task_ids);
    lr_outcome o = {
        .generation_id = h->generation_id,
        .model_id = g.model,
        .provider = g.provider,
        .status = g.status,
        .urls = urls,
        .task_ids = task_ids,
        .text = g.text,
        .outputs_count = g.outputs_count,
        .succeeded_count = g.succeeded_count,
        .failed_count = g.failed_count,
        .credits_used = g.credits_used,
        .balance = balance,
        .duration_ms = g.has_duration ? g.duration_ms : 0,
        .error_code = g.error_code,
        .error_message = g.error_message,
        .created_at = g.created_at,
    };
    if (!o.provider)
        o.provider = app->provider->name;
    lr_req_set_header(req, "Idempotent-Replayed", "true");
    if (!strcmp(g.status, "success")) {
        lr_req_reply_json(req, 200, success_body(&o));
    } else {
        int code;
        if (!o.error_code)
            o.error_code = "provider_failed";
        if (!o.error_message)
            o.error_message = "The generation failed";
        const lr_model *m = o.model_id ? lr_catalog_find(app->catalog, o.model_id) : NULL;
        int refunded = m ? m->credit_cost * o.failed_count : 0;
        json_t *b = failure_body(&o, refunded, &code);
        lr_req_reply_json(req, code, b);
    }
    json_decref(urls);
    json_decref(task_ids);
    lr_generation_clear(&g);
}

#define MAX_INPUT_IMAGES 4
#define MAX_INPUT_IMAGE_BYTES (10u * 1024u * 1024u)

static bool has_input_image(json_t *inputs)
{
    json_t *url = json_object_get(inputs, "imageUrl");
    json_t *images = json_object_get(inputs, "images");
    return (url && !json_is_null(url)) || (json_is_array(images) && json_array_size(images) > 0);
}

/* One data:image/...;base64,... URL: decoded, type-checked by its bytes,
 * stored under {user}/inputs/. Replies and returns false on a problem. */
static bool store_data_url(lr_app *app, lr_req *req, const char *user, const char *gen_id, int i,
                           const char *v, json_t *urls, json_t *keys)
{
    const char *comma = strchr(v, ',');
    if (strncmp(v, "data:", 5) != 0 || !comma || comma - v > 100 ||
        !memmem(v, (size_t)(comma - v), ";base64", 7)) {
        lr_req_reply_error(req, 400, "invalid_input_image",
                           "inputs.images entries must be base64 data URLs "
                           "(data:image/png;base64,...)",
                           json_pack("{s:s}", "field", "inputs.images"));
        return false;
    }
    size_t enc = strlen(comma + 1);
    if (enc / 4 * 3 > MAX_INPUT_IMAGE_BYTES + 3) {
        lr_req_reply_error(req, 413, "input_image_too_large", "An input image is larger than 10 MB",
                           json_pack("{s:s}", "field", "inputs.images"));
        return false;
    }
    size_t n = 0;
    unsigned char *bytes = lr_b64_decode(comma + 1, enc, &n);
    if (!bytes || n == 0) {
        free(bytes);
        lr_req_reply_error(req, 400, "invalid_input_image", "An input image is not valid base64",
                           json_pack("{s:s}", "field", "inputs.images"));
        return false;
    }
    const lr_mime *mime = lr_mime_sniff(bytes, n);
    if (!mime || strcmp(mime->kind, "image") != 0) {
        free(bytes);
        lr_req_reply_error(req, 415, "unsupported_input_image",
                           "Input images must be PNG, JPEG, WebP or GIF (checked by content)",
                           json_pack("{s:s}", "field", "inputs.images"));
        return false;
    }
    char name[64];
    snprintf(name, sizeof name, "%s_%d", gen_id, i);
    lr_blob_sink *sink = NULL;
    char *url = NULL, *key = NULL;
    lr_err e = lr_blob_begin_in(app->store, user, "inputs", name, MAX_INPUT_IMAGE_BYTES, &sink);
    if (e == LR_OK) {
        e = lr_blob_write(sink, bytes, n);
        if (e == LR_OK)
            e = lr_blob_finish(sink, &url, &key, NULL);
        else
            lr_blob_abort(sink);
    }
    free(bytes);
    if (e != LR_OK) {
        lr_log(LR_LOG_ERROR, lr_req_id(req), "input image not stored: %s", lr_strerror(e));
        lr_req_reply_error(req, 502, "storage_failed", "The input image could not be stored",
                           NULL);
        return false;
    }
    json_array_append_new(urls, json_string(url));
    json_array_append_new(keys, json_string(key));
    free(url);
    free(key);
    return true;
}

/* The input images of an edit: inputs.imageUrl (https, public address)
 * and/or inputs.images (data URLs, stored). *urls: their public URLs. */
static bool input_images(lr_app *app, lr_req *req, const char *user, const char *gen_id,
                         json_t *inputs, json_t **urls, json_t **keys)
{
    *urls = json_array();
    *keys = json_array();
    json_t *url = json_object_get(inputs, "imageUrl");
    json_t *images = json_object_get(inputs, "images");
    if (url && !json_is_null(url)) {
        const char *why = NULL;
        if (!json_is_string(url) || json_string_length(url) > 2048 ||
            !lr_net_url_allowed(app->net, json_string_value(url), &why)) {
            char msg[200];
            snprintf(msg, sizeof msg, "inputs.imageUrl is not usable: %s",
                     why ? why : "must be an https URL of at most 2048 characters");
            lr_req_reply_error(req, 422, "invalid_image_url", msg,
                               json_pack("{s:s}", "field", "inputs.imageUrl"));
            return false;
        }
        json_array_append(*urls, url);
    }
    if (images && !json_is_null(images)) {
        if (!json_is_array(images) || json_array_size(images) > MAX_INPUT_IMAGES) {
            lr_req_reply_error(req, 400, "invalid_input_image",
                               "inputs.images must be an array of at most 4 data URLs",
                               json_pack("{s:s}", "field", "inputs.images"));
            return false;
        }
        size_t i;
        json_t *v;
        json_array_foreach(images, i, v)
        {
            if (!json_is_string(v)) {
                lr_req_reply_error(req, 400, "invalid_input_image",
                                   "inputs.images entries must be strings (data URLs)",
                                   json_pack("{s:s}", "field", "inputs.images"));
                lr_store_remove_keys(app->store, *keys);
                return false;
            }
            if (!store_data_url(app, req, user, gen_id, (int)i, json_string_value(v), *urls,
                                *keys)) {
                lr_store_remove_keys(app->store, *keys);
                return false;
            }
        }
    }
    return true;
}

void lr_api_infer(lr_app *app, lr_req *req)
{
    char user[LR_UUID_LEN + 1];
    if (!lr_api_user(app, req, true, user))
        return;
    int retry_after;
    if (!lr_ratelimit_take(app->ratelimit, user, &retry_after)) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry_after);
        lr_req_set_header(req, "Retry-After", ra);
        lr_req_reply_error(req, 429, "rate_limited",
                           "Too many requests: slow down and retry after the given seconds",
                           json_pack("{s:i}", "retryAfter", retry_after));
        return;
    }
    json_t *body = lr_api_json_body_nul(req, "inputs.prompt");
    if (!body)
        return;
    json_t *params = NULL, *input_urls = NULL, *input_keys = NULL;
    char *field = NULL, *msg = NULL;

    json_t *jmodel = json_object_get(body, "modelId");
    json_t *inputs = json_object_get(body, "inputs");
    json_t *jprompt = json_object_get(inputs, "prompt");
    if (!json_is_string(jmodel) || !json_string_length(jmodel) || !json_is_string(jprompt) ||
        !json_string_length(jprompt)) {
        lr_req_reply_error(req, 400, "missing_fields",
                           "Missing required fields: modelId and inputs.prompt", NULL);
        goto out;
    }
    const char *prompt = json_string_value(jprompt);
    if (json_string_length(jprompt) > MAX_PROMPT_BYTES ||
        strlen(prompt) != json_string_length(jprompt)) {
        lr_req_reply_error(req, 422, "invalid_prompt",
                           strlen(prompt) != json_string_length(jprompt)
                               ? "inputs.prompt must not contain NUL characters (\\u0000)"
                               : "inputs.prompt must be at most 10000 bytes of text",
                           json_pack("{s:s}", "field", "inputs.prompt"));
        goto out;
    }
    const lr_model *m = lr_catalog_find(app->catalog, json_string_value(jmodel));
    if (!m || !m->enabled) {
        char text[160];
        snprintf(text, sizeof text, "Model not found: %.100s", json_string_value(jmodel));
        lr_req_reply_error(req, 404, "model_not_found", text, NULL);
        goto out;
    }
    if (!strcmp(m->capability, "edit") && !has_input_image(inputs)) {
        lr_req_reply_error(req, 400, "missing_input_image",
                           "This model edits an image: send inputs.imageUrl or inputs.images",
                           NULL);
        goto out;
    }
    if (!lr_provider_supports(app->provider, m)) {
        lr_req_set_header(req, "Retry-After", "60");
        lr_req_reply_error(req, 503, "provider_not_configured",
                           "This model's provider is not configured on this server", NULL);
        goto out;
    }
    json_t *jcount = json_object_get(body, "outputsCount");
    int outputs = 1;
    if (jcount && !json_is_null(jcount)) {
        if (!json_is_integer(jcount) || json_integer_value(jcount) < 1 ||
            json_integer_value(jcount) > 4) {
            lr_req_reply_error(req, 422, "invalid_parameter",
                               "outputsCount must be a whole number from 1 to 4",
                               json_pack("{s:s}", "field", "outputsCount"));
            goto out;
        }
        outputs = (int)json_integer_value(jcount);
    }
    if (lr_model_validate_params(m, json_object_get(body, "params"), &params, &field, &msg) != 0) {
        lr_req_reply_error(req, 422, "invalid_parameter", msg ? msg : "Invalid params",
                           json_pack("{s:s}", "field", field ? field : "params"));
        goto out;
    }

    char key[204];
    bool has_key;
    lr_gen_hook hook;
    if (!idempotency_key(req, key, &has_key) || !lr_api_gen_hook_parse(app, req, body, &hook))
        goto out;
    char request_hash[65], key_expiry[32];
    body_sha256(req, request_hash);
    lr_time_iso(lr_now_ms() - 24LL * 3600 * 1000, key_expiry);

    bool async = false;
    long wait_s = app->cfg->wait_default_s;
    parse_prefer(lr_req_header(req, "Prefer"), &async, &wait_s);
    if (wait_s > app->cfg->wait_max_s)
        wait_s = app->cfg->wait_max_s;

    infer_wait *w = calloc(1, sizeof *w);
    if (!w)
        abort();
    w->req = req;
    lr_uuid_v4(w->generation_id);
    if (!strcmp(m->capability, "edit") &&
        !input_images(app, req, user, w->generation_id, inputs, &input_urls, &input_keys)) {
        free(w);
        goto out;
    }
    snprintf(w->model_id, sizeof w->model_id, "%s", m->id);
    lr_time_iso(lr_now_ms(), w->created_at);
    w->credits_reserved = outputs * m->credit_cost;

    lr_reserve_req rr = {
        .generation_id = w->generation_id,
        .user_id = user,
        .type = lr_model_generation_type(m),
        .model = m->id,
        .provider = lr_provider_name_for(app->provider, m),
        .prompt = prompt,
        .params = params,
        .outputs_count = outputs,
        .cost = w->credits_reserved,
        .created_at = w->created_at,
    };
    if (has_key) {
        rr.idempotency_key = key;
        rr.request_hash = request_hash;
        rr.key_expired_before = key_expiry;
    }
    char lease[32];
    lr_pipeline_claim(app->pipeline, &rr, lease);
    if (!lr_pipeline_admit(app->pipeline, user, app->cfg->user_max_in_flight)) {
        lr_req_set_header(req, "Retry-After", "2");
        lr_req_reply_error(req, 429, "too_many_generations",
                           "Too many generations running for this user: wait for one to finish",
                           json_pack("{s:i}", "limit", app->cfg->user_max_in_flight));
        lr_store_remove_keys(app->store, input_keys); /* not going ahead */
        free(w);
        goto out;
    }
    int balance = 0;
    lr_key_holder holder;
    lr_err e = app->db->ops->reserve(app->db, &rr, &balance, &holder);
    if (e != LR_OK) {
        lr_pipeline_unadmit(app->pipeline, user);
        lr_store_remove_keys(app->store, input_keys); /* not going ahead */
    }
    if (e == LR_ERR_CONFLICT) {
        replay(app, req, user, &holder);
        free(w);
        goto out;
    }
    if (e == LR_ERR_INSUFFICIENT) {
        char text[128];
        snprintf(text, sizeof text, "Insufficient credits. You have %d, need %d.", balance,
                 w->credits_reserved);
        lr_req_reply_error(req, 402, "insufficient_credits", text,
                           json_pack("{s:i, s:i}", "required", w->credits_reserved, "balance",
                                     balance));
        free(w);
        goto out;
    }
    if (e != LR_OK) {
        lr_api_db_error(req, e);
        free(w);
        goto out;
    }
    lr_log_fields(LR_LOG_INFO, lr_req_id(req), "generation reserved",
                  json_pack("{s:s, s:s, s:s, s:i, s:i}", "generation_id", w->generation_id,
                            "user_id", user, "model", m->id, "outputs", outputs, "cost",
                            w->credits_reserved));
    lr_api_gen_hook_register(app, &hook, user, w->generation_id, m->id);
    lr_run_req run = {
        .generation_id = w->generation_id,
        .user_id = user,
        .model = m,
        .prompt = prompt,
        .params = params,
        .outputs_count = outputs,
        .created_at = w->created_at,
        .input_urls = input_urls,
        .input_keys = input_keys,
    };
    if (async || wait_s == 0) {
        if (lr_pipeline_start(app->pipeline, &run, 0, NULL, NULL) != LR_OK)
            lr_pipeline_unadmit(app->pipeline, user); /* the reaper refunds it */
        answer_pending(w, false);
        free(w);
    } else {
        lr_req_suspend(req);
        if (lr_pipeline_start(app->pipeline, &run, wait_s * 1000, on_outcome, w) != LR_OK) {
            lr_pipeline_unadmit(app->pipeline, user);
            answer_pending(w, true);
            free(w);
        }
    }
out:
    free(field);
    free(msg);
    json_decref(params);
    json_decref(input_urls);
    json_decref(input_keys);
    json_decref(body);
}
