/* lr_generation_begin, step by step: each step either fills the request
 * it builds or refuses (refuse() writes the reason into the result) and
 * undoes what the steps before it left (stored inputs, a slot). */
#include "pipeline/generation.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "pipeline/internal.h"
#include "pipeline/quote.h"
#include "storage/mime.h"

#define KEY_LIFETIME_MS (24LL * 3600 * 1000) /* an idempotency key is held this long */

/* Everything a beginning generation carries from step to step, kept on
 * the heap while its reserve is in the database. */
typedef struct {
    lr_pipeline *p;
    const lr_begin_req *q;
    lr_begin_result *out;
    const lr_model *model;
    int outputs;
    int unit;           /* price of one output: the rules' or the quote's */
    json_t *params;     /* validated */
    json_t *input_urls; /* public URLs of the input images */
    lr_strv input_keys; /* the stored ones' object keys */
    /* the reserve in flight and its answer */
    lr_reserve_req rr;
    char key_expiry[32], lease[32];
    lr_key_holder holder;
    lr_err reserved;
    lr_begin_done_fn done;
    void *ctx;
    lr_begin_result own; /* out, for lr_generation_begin_async */
} begin;

static bool refuse(begin *b, lr_code code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Records the refusal; false, so a step can `return refuse(...)`. fmt NULL:
 * the code's own message. */
static bool refuse(begin *b, lr_code code, const char *field, const char *fmt, ...)
{
    lr_begin_result *o = b->out;
    o->kind = LR_BEGIN_REFUSED;
    o->code = code;
    snprintf(o->field, sizeof o->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    lr_code_vformat(o->message, sizeof o->message, code, fmt, ap);
    va_end(ap);
    return false;
}

static bool rate_allowed(begin *b)
{
    int retry_after;
    if (!b->q->limiter || lr_ratelimit_take(b->q->limiter, b->q->user_id, &retry_after))
        return true;
    b->out->retry_after_s = retry_after;
    return refuse(b, LR_CODE_RATE_LIMITED, NULL,
                  "Too many requests: slow down and retry after the given seconds");
}

static bool is_edit(const lr_model *m)
{
    return !strcmp(m->capability, "edit");
}

/* The request's values against the catalog and the provider, in the order
 * a client is told about them. */
static bool valid(begin *b)
{
    const lr_begin_req *q = b->q;
    if (!q->model_id || !*q->model_id || !q->prompt || !q->prompt_len)
        return refuse(b, LR_CODE_MISSING_FIELDS, NULL,
                      "Missing required fields: modelId and inputs.prompt");
    if (strlen(q->prompt) != q->prompt_len)
        return refuse(b, LR_CODE_INVALID_PROMPT, "inputs.prompt",
                      "inputs.prompt must not contain NUL characters (\\u0000)");
    if (q->prompt_len > LR_MAX_PROMPT_BYTES)
        return refuse(b, LR_CODE_INVALID_PROMPT, "inputs.prompt",
                      "inputs.prompt must be at most 10000 bytes of text");
    b->model = lr_catalog_find(b->p->catalog, q->model_id);
    if (!b->model || !b->model->enabled)
        return refuse(b, LR_CODE_MODEL_NOT_FOUND, NULL, "Model not found: %.100s", q->model_id);
    if (is_edit(b->model) && !q->image_url && q->n_images == 0)
        return refuse(b, LR_CODE_MISSING_INPUT_IMAGE, NULL,
                      "This model edits an image: send inputs.imageUrl or inputs.images");
    if (!lr_provider_supports(b->p->provider, b->model)) {
        b->out->retry_after_s = 60;
        return refuse(b, LR_CODE_PROVIDER_NOT_CONFIGURED, NULL, NULL);
    }
    b->outputs = q->outputs_count ? q->outputs_count : 1;
    if (b->outputs < 1 || b->outputs > LR_MAX_OUTPUTS)
        return refuse(b, LR_CODE_INVALID_PARAMETER, "outputsCount",
                      "outputsCount must be a whole number from 1 to 4");
    char *field = NULL, *msg = NULL;
    bool ok = lr_model_validate_params(b->model, q->params, &b->params, &field, &msg) == 0;
    if (!ok)
        refuse(b, LR_CODE_INVALID_PARAMETER, field ? field : "params", "%s",
               msg ? msg : "Invalid params");
    free(field);
    free(msg);
    return ok;
}

/* The unit price: the catalog's rules, or the quote the client names
 * when it prices exactly this request. */
static bool price(begin *b)
{
    b->unit = lr_model_unit_price(b->model, b->params, b->outputs);
    if (!b->q->quote_id)
        return true;
    lr_price_line line = {
        .model = b->model, .params = b->params, .outputs = b->outputs, .unit = b->unit};
    lr_code code = lr_quote_honour(b->p, b->q->user_id, b->q->quote_id, &line, 1);
    if (code == LR_CODE_DATABASE_UNAVAILABLE)
        b->out->retry_after_s = 1;
    if (code != LR_CODE_NONE)
        return refuse(b, code, code == LR_CODE_DATABASE_UNAVAILABLE ? NULL : "quoteId", NULL);
    b->unit = line.unit;
    return true;
}

/* Stores n bytes of an input image under {user}/inputs/{generation}_{i}
 * and notes its URL and key. */
static lr_err put_input(begin *b, size_t i, const unsigned char *bytes, size_t n)
{
    char name[64], *url = NULL, *key = NULL;
    snprintf(name, sizeof name, "%s_%zu", b->out->generation_id, i);
    lr_blob_sink *sink = NULL;
    lr_err e = lr_blob_begin_in(b->p->store, b->q->user_id, "inputs", name,
                                LR_MAX_INPUT_IMAGE_BYTES, &sink);
    if (e == LR_OK) {
        e = lr_blob_write(sink, bytes, n);
        if (e == LR_OK)
            e = lr_blob_finish(sink, &url, &key, NULL);
        else
            lr_blob_abort(sink);
    }
    if (e == LR_OK) {
        json_array_append_new(b->input_urls, json_string(url));
        lr_strv_push(&b->input_keys, key);
    }
    free(url);
    free(key);
    return e;
}

/* Decodes data: URL v, checks its bytes are an image and stores it. */
static bool store_data_url(begin *b, size_t i, const char *v)
{
    const char *comma = strchr(v, ',');
    if (strncmp(v, "data:", 5) != 0 || !comma || comma - v > 100 ||
        !memmem(v, (size_t)(comma - v), ";base64", 7))
        return refuse(b, LR_CODE_INVALID_INPUT_IMAGE, "inputs.images",
                      "inputs.images entries must be base64 data URLs "
                      "(data:image/png;base64,...)");
    size_t enc = strlen(comma + 1), n = 0;
    if (enc / 4 * 3 > LR_MAX_INPUT_IMAGE_BYTES + 3)
        return refuse(b, LR_CODE_INPUT_IMAGE_TOO_LARGE, "inputs.images",
                      "An input image is larger than 10 MB");
    unsigned char *bytes = lr_b64_decode(comma + 1, enc, &n);
    const lr_mime *mime = bytes && n ? lr_mime_sniff(bytes, n) : NULL;
    lr_err e = LR_OK;
    if (!bytes || n == 0)
        refuse(b, LR_CODE_INVALID_INPUT_IMAGE, "inputs.images",
               "An input image is not valid base64");
    else if (!mime || strcmp(mime->kind, "image") != 0)
        refuse(b, LR_CODE_UNSUPPORTED_INPUT_IMAGE, "inputs.images",
               "Input images must be PNG, JPEG, WebP or GIF (checked by content)");
    else
        e = put_input(b, i, bytes, n);
    free(bytes);
    if (b->out->kind == LR_BEGIN_REFUSED)
        return false;
    if (e != LR_OK) {
        lr_log(LR_LOG_ERROR, b->q->request_id, "input image not stored: %s", lr_strerror(e));
        return refuse(b, LR_CODE_STORAGE_FAILED, NULL, "The input image could not be stored");
    }
    return true;
}

/* An edit's input images: the URL (https, public address) as given, the
 * data: URLs stored. A refusal removes what was stored. */
static bool input_images(begin *b)
{
    const lr_begin_req *q = b->q;
    b->input_urls = json_array();
    if (q->image_url) {
        const char *why = NULL;
        if (strlen(q->image_url) > LR_MAX_IMAGE_URL_BYTES ||
            !lr_net_url_allowed(b->p->net, q->image_url, &why))
            return why ? refuse(b, LR_CODE_INVALID_IMAGE_URL, "inputs.imageUrl",
                                "inputs.imageUrl is not usable: %s", why)
                       : refuse(b, LR_CODE_INVALID_IMAGE_URL, "inputs.imageUrl", NULL);
        json_array_append_new(b->input_urls, json_string(q->image_url));
    }
    if (q->n_images > LR_MAX_INPUT_IMAGES)
        return refuse(b, LR_CODE_INVALID_INPUT_IMAGE, "inputs.images", NULL);
    for (size_t i = 0; i < q->n_images; i++) {
        if (!store_data_url(b, i, q->images[i]))
            return false; /* complete removes what was stored */
    }
    return true;
}

/* The unit price g was charged: what its succeeded outputs cost each, or
 * (none succeeded) today's price for its params. */
static int replay_unit(const lr_model *m, const lr_generation *g)
{
    if (g->succeeded_count > 0)
        return g->credits_used / g->succeeded_count;
    return m ? lr_model_unit_price(m, g->params, g->outputs_count) : 0;
}

/* The answer for a retry whose key generation h holds: its end (with the
 * balance as it is now) once finished, in progress while it runs. */
static void replay(begin *b, const lr_key_holder *h)
{
    lr_pipeline *p = b->p;
    lr_begin_result *o = b->out;
    memcpy(o->generation_id, h->generation_id, sizeof o->generation_id);
    lr_err e = p->db->ops->get_generation(p->db, b->q->user_id, h->generation_id, &o->row);
    if (e != LR_OK && e != LR_ERR_NOT_FOUND) {
        lr_log(LR_LOG_ERROR, b->q->request_id, "database error: %s", lr_strerror(e));
        o->retry_after_s = 1;
        refuse(b, LR_CODE_DATABASE_UNAVAILABLE, NULL, NULL);
    } else if (!h->same_request) {
        refuse(b, LR_CODE_IDEMPOTENCY_KEY_REUSED, NULL, NULL);
    } else if (e == LR_ERR_NOT_FOUND) {
        refuse(b, LR_CODE_IDEMPOTENCY_CONFLICT, NULL,
               "The generation made with this Idempotency-Key was deleted");
    } else if (lr_generation_unfinished(&o->row)) {
        o->kind = LR_BEGIN_IN_PROGRESS;
    } else {
        const lr_generation *g = &o->row;
        const lr_model *m = g->model ? lr_catalog_find(p->catalog, g->model) : NULL;
        lr_gen_status status = LR_GEN_FAILED;
        lr_code code = LR_CODE_PROVIDER_FAILED;
        lr_gen_status_parse(g->status, &status);
        lr_code_parse(g->error_code, &code);
        int balance = 0;
        p->db->ops->balance(p->db, b->q->user_id, &balance);
        o->kind = LR_BEGIN_REPLAYED;
        o->outcome = (lr_outcome){
            .generation_id = o->generation_id,
            .model_id = g->model,
            .provider = g->provider ? g->provider : p->provider->name,
            .status = status,
            .urls = g->result_urls,
            .task_ids = g->task_ids,
            .text = g->text,
            .outputs_count = g->outputs_count,
            .succeeded_count = g->succeeded_count,
            .failed_count = g->failed_count,
            .credits_used = g->credits_used,
            .refunded = lr_generation_refund(replay_unit(m, g), g->failed_count),
            .balance = balance,
            .duration_ms = g->has_duration ? g->duration_ms : 0,
            .error = status == LR_GEN_SUCCESS && !g->error_code ? LR_CODE_NONE : code,
            .error_message = g->error_message ? g->error_message : "The generation failed",
            .created_at = g->created_at,
        };
    }
}

static void reserved(void *ctx, lr_err e);

/* Takes a slot, then hands the charge and the generation row to the
 * database (reserved runs with the answer); false with the refusal when
 * the user has no slot left. */
static bool reserve(begin *b)
{
    lr_pipeline *p = b->p;
    const lr_begin_req *q = b->q;
    lr_begin_result *o = b->out;
    lr_time_iso(lr_now_ms() - KEY_LIFETIME_MS, b->key_expiry);
    b->rr = (lr_reserve_req){
        .generation_id = o->generation_id,
        .user_id = q->user_id,
        .type = lr_model_generation_type(b->model),
        .model = b->model->id,
        .provider = lr_provider_name_for(p->provider, b->model),
        .prompt = q->prompt,
        .params = b->params,
        .outputs_count = b->outputs,
        .cost = b->unit * b->outputs,
        .created_at = o->created_at,
        .idempotency_key = q->idempotency_key,
        .request_hash = q->idempotency_key ? q->request_hash : NULL,
        .key_expired_before = q->idempotency_key ? b->key_expiry : NULL,
    };
    lr_pipeline_claim(p, &b->rr, b->lease);
    if (!lr_pipeline_admit(p, q->user_id, q->max_in_flight)) {
        o->retry_after_s = 2;
        o->limit = q->max_in_flight;
        return refuse(b, LR_CODE_TOO_MANY_GENERATIONS, NULL,
                      "Too many generations running for this user: wait for one to finish");
    }
    lr_db_reserve_async(p->db, &b->rr, &o->balance, &b->holder, reserved, b);
    return true;
}

/* A reserve the database refused: the slot goes back, and the answer is
 * the key's generation or the reason. */
static void not_reserved(begin *b)
{
    const lr_begin_req *q = b->q;
    lr_begin_result *o = b->out;
    lr_pipeline_unadmit(b->p, q->user_id);
    if (b->reserved == LR_ERR_CONFLICT) {
        replay(b, &b->holder);
    } else if (b->reserved == LR_ERR_INSUFFICIENT) {
        o->required = b->rr.cost;
        refuse(b, LR_CODE_INSUFFICIENT_CREDITS, NULL, "Insufficient credits. You have %d, need %d.",
               o->balance, b->rr.cost);
    } else {
        lr_log(LR_LOG_ERROR, q->request_id, "database error: %s", lr_strerror(b->reserved));
        o->retry_after_s = 1;
        refuse(b, LR_CODE_DATABASE_UNAVAILABLE, NULL, NULL);
    }
}

/* The reserved generation goes to the pipeline. A start that fails leaves
 * a charged row without a run: the reaper fails and refunds it. */
static void start(begin *b)
{
    const lr_begin_req *q = b->q;
    lr_begin_result *o = b->out;
    int cost = b->unit * b->outputs;
    lr_log_fields(LR_LOG_INFO, q->request_id, "generation reserved",
                  json_pack("{s:s, s:s, s:s, s:i, s:i}", "generation_id", o->generation_id,
                            "user_id", q->user_id, "model", b->model->id, "outputs", b->outputs,
                            "cost", cost));
    o->kind = LR_BEGIN_STARTED;
    o->outcome = (lr_outcome){
        .generation_id = o->generation_id,
        .model_id = b->model->id,
        .provider = lr_provider_name_for(b->p->provider, b->model),
        .status = LR_GEN_PROCESSING,
        .outputs_count = b->outputs,
        .credits_used = cost,
        .created_at = o->created_at,
    };
    lr_run_req rq = {
        .generation_id = o->generation_id,
        .user_id = q->user_id,
        .model = b->model,
        .prompt = q->prompt,
        .params = b->params,
        .outputs_count = b->outputs,
        .unit_price = b->unit,
        .created_at = o->created_at,
        .input_urls = b->input_urls,
        .input_keys = &b->input_keys,
        .request_id = q->request_id,
    };
    if (q->reserved)
        q->reserved(q->reserved_ctx, o->generation_id, b->model->id);
    bool wait = q->wait && q->wait_ms > 0;
    lr_err e = lr_pipeline_start(b->p, &rq, wait ? q->wait_ms : 0, wait ? q->wait : NULL,
                                 wait ? q->ctx : NULL);
    if (e != LR_OK)
        lr_pipeline_unadmit(b->p, q->user_id);
    o->waiting = wait && e == LR_OK;
}

/* The end of a begin: done gets the result, then b goes. */
static void complete(begin *b)
{
    if (b->out->kind != LR_BEGIN_STARTED)
        lr_store_remove_keys(b->p->store, &b->input_keys); /* not going ahead */
    json_decref(b->params);
    json_decref(b->input_urls);
    lr_strv_clear(&b->input_keys);
    b->done(b->ctx, b->out);
    lr_begin_result_clear(&b->own);
    free(b);
}

/* The reserve's answer, on the loop thread (started) or a worker (a
 * replay reads the database; a refusal may remove stored inputs). */
static void reserved_step(void *arg)
{
    begin *b = arg;
    if (b->reserved == LR_OK)
        start(b);
    else
        not_reserved(b);
    complete(b);
}

/* The database answered the reserve (on its writer thread). */
static void reserved(void *ctx, lr_err e)
{
    begin *b = ctx;
    b->reserved = e;
    if (e == LR_OK)
        lr_loop_post(b->p->loop, reserved_step, b);
    else
        lr_workers_submit(b->p->workers, reserved_step, b);
}

/* Runs the steps up to the reserve on the calling thread; the rest
 * follows the database's answer. */
static void begin_with(lr_pipeline *p, const lr_begin_req *q, lr_begin_result *out,
                       lr_begin_done_fn done, void *ctx)
{
    begin *b = lr_xcalloc(1, sizeof *b);
    *b = (begin){.p = p, .q = q, .out = out ? out : &b->own, .done = done, .ctx = ctx};
    *b->out = (lr_begin_result){0};
    lr_uuid_v7(b->out->generation_id);
    lr_time_iso(lr_now_ms(), b->out->created_at);
    if (rate_allowed(b) && valid(b) && price(b) && (!is_edit(b->model) || input_images(b)) &&
        reserve(b))
        return;
    complete(b);
}

void lr_generation_begin_async(lr_pipeline *p, const lr_begin_req *q, lr_begin_done_fn done,
                               void *ctx)
{
    begin_with(p, q, NULL, done, ctx);
}

/* lr_generation_begin waits for the asynchronous begin's end. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} begin_wait;

static void begin_waited(void *ctx, const lr_begin_result *r)
{
    (void)r;
    begin_wait *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

lr_err lr_generation_begin(lr_pipeline *p, const lr_begin_req *q, lr_begin_result *out)
{
    *out = (lr_begin_result){0};
    if (!q->user_id)
        return LR_ERR_INVALID;
    begin_wait w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    begin_with(p, q, out, begin_waited, &w);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return LR_OK;
}

void lr_begin_result_clear(lr_begin_result *r)
{
    lr_generation_clear(&r->row);
}
