/* The delivery engine. State under one mutex: deliveries claimed but not
 * started (ready), deliveries in flight (jobs, a list so shutdown can free
 * what the stopped loop dropped), and whether a claim is running. The
 * loop thread starts transfers; workers claim and record results. */
#include "billing/hooks.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"

#define TICK_MS 1000
#define LEASE_EXTRA_MS 15000

const char *const lr_hooks_event_types[] = {"generation.succeeded",
                                            "generation.failed",
                                            "generation.canceled",
                                            "generation.started",
                                            "credits.low",
                                            "credits.purchased",
                                            NULL};

typedef struct job {
    lr_call call;
    lr_hooks *h;
    lr_delivery d;
    int64_t t0;
    bool refused;
    char why[200];
    struct job *prev, *next;
} job;

struct lr_hooks {
    lr_hooks_opts o;
    char owner[LR_UUID_LEN + 2]; /* claim tokens are owner + ':' + batch */
    pthread_mutex_t mu;
    job *jobs;
    lr_delivery_list ready;
    int in_flight; /* claimed, not yet recorded */
    uint64_t batch;
    bool claiming, pump_posted, stopped;
};

bool lr_hooks_events_valid(const char *csv)
{
    if (!csv || !*csv)
        return false;
    for (const char *p = csv; *p;) {
        size_t n = strcspn(p, ",");
        bool known = false;
        for (int i = 0; lr_hooks_event_types[i]; i++)
            known |=
                strlen(lr_hooks_event_types[i]) == n && !strncmp(p, lr_hooks_event_types[i], n);
        if (!known)
            return false;
        p += n;
        if (*p == ',' && !*++p)
            return false;
    }
    return true;
}

bool lr_hooks_sign(const char *secret, const char *id, int64_t ts, const char *body, size_t len,
                   char out[64])
{
    if (!secret || strncmp(secret, "whsec_", 6) != 0)
        return false;
    size_t klen = 0;
    unsigned char *key = lr_b64_decode(secret + 6, strlen(secret + 6), &klen);
    if (!key || klen == 0) {
        free(key);
        return false;
    }
    char head[160];
    int n = snprintf(head, sizeof head, "%s.%lld.", id, (long long)ts);
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    unsigned char d[32];
    size_t dlen = 0;
    bool ok = EVP_MAC_init(ctx, key, klen, params) &&
              EVP_MAC_update(ctx, (const unsigned char *)head, (size_t)n) &&
              EVP_MAC_update(ctx, (const unsigned char *)body, len) &&
              EVP_MAC_final(ctx, d, &dlen, sizeof d);
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    OPENSSL_cleanse(key, klen);
    free(key);
    if (!ok)
        return false;
    memcpy(out, "v1,", 3);
    EVP_EncodeBlock((unsigned char *)out + 3, d, 32);
    return true;
}

lr_hooks *lr_hooks_new(const lr_hooks_opts *o)
{
    lr_hooks *h = lr_xcalloc(1, sizeof *h);
    h->o = *o;
    if (h->o.concurrency < 1)
        h->o.concurrency = 1;
    lr_uuid_v4(h->owner);
    pthread_mutex_init(&h->mu, NULL);
    return h;
}

/* ---- claiming ---- */

static void start_ready(void *arg);
static void pump(void *arg);

static void claim_job(void *arg)
{
    lr_hooks *h = arg;
    pthread_mutex_lock(&h->mu);
    int room = h->o.concurrency - h->in_flight;
    char token[64];
    snprintf(token, sizeof token, "%s:%llu", h->owner, (unsigned long long)++h->batch);
    pthread_mutex_unlock(&h->mu);
    lr_delivery_list got = {0};
    int64_t now = lr_now_ms();
    lr_err e = room > 0 ? lr_billing_claim(h->o.store, token, now,
                                           now + h->o.timeout_ms + LEASE_EXTRA_MS, room, &got)
                        : LR_OK;
    if (e != LR_OK)
        lr_warn("webhooks: cannot claim deliveries (%s)", lr_strerror(e));
    pthread_mutex_lock(&h->mu);
    h->ready.v = lr_xrealloc(h->ready.v, (h->ready.n + got.n + 1) * sizeof *h->ready.v);
    if (got.n)
        memcpy(h->ready.v + h->ready.n, got.v, got.n * sizeof *got.v);
    h->ready.n += got.n;
    h->in_flight += (int)got.n;
    h->claiming = false;
    pthread_mutex_unlock(&h->mu);
    free(got.v);
    if (got.n > 0)
        lr_loop_post(h->o.loop, start_ready, h);
    if (room > 0 && got.n == (size_t)room)
        lr_hooks_poke(h); /* a full batch: there may be more */
}

/* Loop thread: claims more when there is room and no claim runs. */
static void pump(void *arg)
{
    lr_hooks *h = arg;
    pthread_mutex_lock(&h->mu);
    h->pump_posted = false;
    bool go = !h->stopped && !h->claiming && h->in_flight < h->o.concurrency;
    if (go)
        h->claiming = true;
    pthread_mutex_unlock(&h->mu);
    if (go)
        lr_workers_submit(h->o.workers, claim_job, h);
}

static void tick(void *arg)
{
    lr_hooks *h = arg;
    pump(h);
    lr_loop_timer(h->o.loop, TICK_MS, tick, h);
}

void lr_hooks_start(lr_hooks *h)
{
    lr_loop_timer(h->o.loop, 0, tick, h);
}

void lr_hooks_poke(lr_hooks *h)
{
    pthread_mutex_lock(&h->mu);
    bool post = !h->pump_posted;
    h->pump_posted = true;
    pthread_mutex_unlock(&h->mu);
    if (post)
        lr_loop_post(h->o.loop, pump, h);
}

/* ---- delivering ---- */

static void job_free(job *j)
{
    lr_call_release(&j->call);
    lr_delivery_list one = {.v = lr_xmalloc(sizeof j->d), .n = 1};
    one.v[0] = j->d;
    lr_delivery_list_clear(&one);
    free(j);
}

/* The delay before attempt n+1 after n failures: doubling from retry_ms,
 * at most an hour, +-25% jitter so a recovering receiver is not hit by
 * every queued delivery at once. */
static int64_t backoff_ms(const lr_hooks *h, int failures)
{
    double d = h->o.retry_ms;
    for (int i = 1; i < failures && d < 3600e3; i++)
        d *= 2;
    if (d > 3600e3)
        d = 3600e3;
    return (int64_t)(d * (0.75 + 0.5 * lr_random_unit()));
}

static void finish_job(void *arg)
{
    job *j = arg;
    lr_hooks *h = j->h;
    int64_t now = lr_now_ms();
    bool ok =
        !j->refused && j->call.rc == CURLE_OK && j->call.status >= 200 && j->call.status < 300;
    const char *error = NULL;
    char text[260];
    if (!ok) {
        if (j->refused || j->call.refused)
            snprintf(text, sizeof text, "refused: %s", j->refused ? j->why : j->call.why);
        else if (j->call.rc != CURLE_OK)
            snprintf(text, sizeof text, "%s",
                     j->call.error[0] ? j->call.error : curl_easy_strerror(j->call.rc));
        else
            snprintf(text, sizeof text, "HTTP %ld", j->call.status);
        error = text;
    }
    int64_t next = 0;
    bool permanent = j->refused || j->call.refused;
    if (!ok && !permanent) {
        next = now + backoff_ms(h, j->d.attempts + 1);
        if (next > j->d.created_at + h->o.max_age_ms)
            next = 0;
    }
    lr_delivery_result r = {.d = &j->d,
                            .status_code = (int)j->call.status,
                            .latency_ms = j->t0 ? lr_monotonic_ms() - j->t0 : 0,
                            .error = error,
                            .delivered = ok,
                            .next_attempt_at = next,
                            .now_ms = now};
    lr_err e = lr_billing_finish(h->o.store, &r);
    if (e != LR_OK)
        lr_warn("webhooks: delivery %s not recorded (%s)", j->d.id, lr_strerror(e));
    if (!ok)
        lr_log_fields(next ? LR_LOG_INFO : LR_LOG_WARN, NULL,
                      next ? "webhook delivery failed, will retry" : "webhook delivery given up",
                      json_pack("{s:s, s:s, s:i, s:s}", "delivery_id", j->d.id, "url", j->d.url,
                                "attempt", j->d.attempts + 1, "error", error));
    pthread_mutex_lock(&h->mu);
    if (j->prev)
        j->prev->next = j->next;
    else
        h->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    h->in_flight--;
    pthread_mutex_unlock(&h->mu);
    job_free(j);
    lr_hooks_poke(h);
}

static void call_done(lr_call *c)
{
    job *j = c->ctx;
    lr_workers_submit(j->h->o.workers, finish_job, j);
}

/* Loop thread: signs and POSTs one delivery (or records why not). */
static void deliver(job *j)
{
    lr_hooks *h = j->h;
    const char *why = NULL;
    if (!j->d.secret) {
        j->refused = true;
        snprintf(j->why, sizeof j->why, "the endpoint was removed");
    } else if (!lr_net_url_allowed(h->o.policy, j->d.url, &why)) {
        j->refused = true;
        snprintf(j->why, sizeof j->why, "%s", why);
    }
    int64_t ts = lr_now_ms() / 1000;
    char sig[64], hdr[3][200];
    if (!j->refused &&
        !lr_hooks_sign(j->d.secret, j->d.id, ts, j->d.payload, strlen(j->d.payload), sig)) {
        j->refused = true;
        snprintf(j->why, sizeof j->why, "the signing secret is malformed");
    }
    if (j->refused) {
        lr_workers_submit(h->o.workers, finish_job, j);
        return;
    }
    snprintf(hdr[0], sizeof hdr[0], "webhook-id: %s", j->d.id);
    snprintf(hdr[1], sizeof hdr[1], "webhook-timestamp: %lld", (long long)ts);
    snprintf(hdr[2], sizeof hdr[2], "webhook-signature: %s", sig);
    struct curl_slist *l = curl_slist_append(NULL, "Content-Type: application/json");
    for (int i = 0; i < 3; i++)
        l = curl_slist_append(l, hdr[i]);
    j->call.policy = h->o.policy;
    j->call.max_len = 64 * 1024;
    j->call.done = call_done;
    j->call.ctx = j;
    j->t0 = lr_monotonic_ms();
    lr_call_start(h->o.loop, &j->call, "POST", j->d.url, l, j->d.payload, h->o.timeout_ms);
}

static void start_ready(void *arg)
{
    lr_hooks *h = arg;
    pthread_mutex_lock(&h->mu);
    lr_delivery_list todo = h->ready;
    h->ready = (lr_delivery_list){0};
    job **fresh = lr_xcalloc(todo.n + 1, sizeof *fresh);
    for (size_t i = 0; i < todo.n; i++) {
        job *j = fresh[i] = lr_xcalloc(1, sizeof *j);
        j->h = h;
        j->d = todo.v[i];
        j->next = h->jobs;
        if (h->jobs)
            h->jobs->prev = j;
        h->jobs = j;
    }
    pthread_mutex_unlock(&h->mu);
    free(todo.v);
    for (size_t i = 0; i < todo.n; i++)
        deliver(fresh[i]);
    free(fresh);
}

/* ---- events ---- */

static void queue_event(lr_hooks *h, const char *type, json_t *data, const char *generation_id,
                        const char *filter)
{
    char ts[32], uuid[LR_UUID_LEN + 1], msg[40];
    int64_t now = lr_now_ms();
    lr_time_iso(now, ts);
    lr_uuid_v4(uuid);
    size_t k = 0;
    for (const char *p = uuid; *p && k < 16; p++) /* 64 random bits, ids stay short */
        if (*p != '-')
            msg[k++] = *p;
    msg[k] = '\0';
    json_t *body = json_pack("{s:s, s:s, s:o}", "type", type, "timestamp", ts, "data", data);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    lr_event_req ev = {.message_id = msg,
                       .type = type,
                       .payload = text,
                       .generation_id = generation_id,
                       .filter = filter,
                       .now_ms = now};
    long queued = 0;
    lr_err e = lr_billing_enqueue(h->o.store, &ev, &queued);
    if (e != LR_OK)
        lr_warn("webhooks: %s not queued (%s)", type, lr_strerror(e));
    free(text);
    if (queued > 0)
        lr_hooks_poke(h);
}

/* credits.low once per crossing below the threshold. */
static void check_balance(lr_hooks *h, const char *user_id)
{
    int balance = 0;
    bool fire = false;
    if (h->o.low_balance <= 0 || h->o.db->ops->balance(h->o.db, user_id, &balance) != LR_OK ||
        lr_billing_low_balance(h->o.store, user_id, balance < h->o.low_balance, &fire) != LR_OK ||
        !fire)
        return;
    queue_event(h, "credits.low",
                json_pack("{s:s, s:i, s:i}", "userId", user_id, "balance", balance, "threshold",
                          h->o.low_balance),
                NULL, NULL);
}

void lr_hooks_emit(lr_hooks *h, const char *type, json_t *data, const char *user_id)
{
    if (type)
        queue_event(h, type, data, NULL, NULL);
    else
        json_decref(data);
    if (user_id)
        check_balance(h, user_id);
}

static json_t *generation_json(const lr_generation *g)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:i, s:i, s:i, s:i, s:s*, s:s*, s:s*, "
                     "s:s*, s:s*}",
                     "id", g->id, "userId", g->user_id, "modelId", g->model, "type", g->type,
                     "status", g->status, "urls", lr_strv_json(&g->result_urls), "credits",
                     g->credits_used, "outputsCount", g->outputs_count, "succeededCount",
                     g->succeeded_count, "failedCount", g->failed_count, "errorCode", g->error_code,
                     "errorMessage", g->error_message, "createdAt", g->created_at, "finishedAt",
                     g->finished_at, "text", g->text);
}

typedef struct {
    lr_hooks *h;
    char id[LR_UUID_LEN + 1];
} gen_event;

static void generation_job(void *arg)
{
    gen_event *ev = arg;
    lr_hooks *h = ev->h;
    lr_generation g = {0};
    if (h->o.db->ops->get_generation(h->o.db, NULL, ev->id, &g) == LR_OK &&
        !lr_generation_unfinished(&g)) {
        char type[40];
        snprintf(type, sizeof type, "generation.%s",
                 !strcmp(g.status, lr_gen_status_name(LR_GEN_SUCCESS)) ? "succeeded" : g.status);
        queue_event(h, type, generation_json(&g), g.id, "completed");
        check_balance(h, g.user_id);
    }
    lr_generation_clear(&g);
    free(ev);
}

void lr_hooks_observe(void *ctx, const char *generation_id, lr_gen_status status,
                      lr_gen_stage stage)
{
    (void)stage;
    lr_hooks *h = ctx;
    if (lr_gen_status_unfinished(status))
        return;
    gen_event *ev = lr_xcalloc(1, sizeof *ev);
    ev->h = h;
    snprintf(ev->id, sizeof ev->id, "%s", generation_id);
    lr_workers_submit(h->o.workers, generation_job, ev);
}

void lr_hooks_started(lr_hooks *h, const char *generation_id, const char *user_id,
                      const char *model_id)
{
    queue_event(h, "generation.started",
                json_pack("{s:s, s:s, s:s, s:s}", "id", generation_id, "userId", user_id, "modelId",
                          model_id, "status", lr_gen_status_name(LR_GEN_PROCESSING)),
                generation_id, "start");
}

void lr_hooks_free(lr_hooks *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stopped = true;
    job *j = h->jobs;
    h->jobs = NULL;
    pthread_mutex_unlock(&h->mu);
    while (j) {
        job *next = j->next;
        job_free(j);
        j = next;
    }
    lr_delivery_list_clear(&h->ready);
    lr_billing_release(h->o.store, h->owner);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
