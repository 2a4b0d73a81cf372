/* The delivery engine. State under one mutex: deliveries claimed but not
 * started (ready), deliveries in flight (jobs, a list so shutdown can free
 * what the stopped loop dropped), attempts answered but not yet recorded
 * (done), and which database job is queued or running. The loop thread
 * starts transfers; the engine's own worker thread does every database
 * call (claiming the outbox and deliveries, recording results), so a
 * slow commit never holds a thread the pipeline stores outputs on, and
 * whatever piled up while one call ran goes in the next, as one
 * transaction. */
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
#define OUTBOX_BATCH 256 /* outbox rows turned into deliveries per transaction */
#define OUTBOX_LEASE_MS 60000

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
    int64_t t0, ended; /* monotonic ms: sent, answered */
    bool refused;
    char why[200];
    struct job *prev, *next; /* in jobs while in flight, then in done */
} job;

struct lr_hooks {
    lr_hooks_opts o;
    lr_workers *db;              /* one thread: every database call of the engine */
    char owner[LR_UUID_LEN + 2]; /* claim tokens are owner + ':' + batch */
    pthread_mutex_t mu;
    job *jobs, *done;
    lr_delivery_list ready;
    int in_flight; /* claimed, not yet recorded */
    uint64_t batch;
    bool claiming, pump_posted, stopped;
    bool draining, drain_again, recording;
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
    h->db = lr_workers_new(1);
    return h;
}

/* A claim token: this process, and which claim. */
static void next_token(lr_hooks *h, char token[64])
{
    snprintf(token, 64, "%s:%llu", h->owner, (unsigned long long)++h->batch);
}

/* ---- claiming ---- */

static void start_ready(void *arg);
static void pump(void *arg);

static void claim_job(void *arg)
{
    lr_hooks *h = arg;
    pthread_mutex_lock(&h->mu);
    int room = h->stopped ? 0 : h->o.concurrency - h->in_flight;
    char token[64];
    next_token(h, token);
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
        lr_workers_submit(h->db, claim_job, h);
}

static void request_drain(lr_hooks *h);

/* Every second: due retries, and outbox rows a dead process left. */
static void tick(void *arg)
{
    lr_hooks *h = arg;
    pump(h);
    request_drain(h);
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

int64_t lr_hooks_backoff_ms(int retry_ms, int failures, double unit)
{
    double d = retry_ms;
    for (int i = 1; i < failures && d < 3600e3; i++)
        d *= 2;
    if (d > 3600e3)
        d = 3600e3;
    return (int64_t)(d * (0.75 + 0.5 * unit));
}

static int64_t backoff_ms(const lr_hooks *h, int failures)
{
    return lr_hooks_backoff_ms(h->o.retry_ms, failures, lr_random_unit());
}

/* What one attempt came to, for the record and the log. */
typedef struct {
    bool ok;
    char error[260];
    int64_t next_attempt_at;
} verdict;

static void judge(const lr_hooks *h, const job *j, int64_t now, verdict *v)
{
    v->ok = !j->refused && j->call.rc == CURLE_OK && j->call.status >= 200 && j->call.status < 300;
    v->error[0] = '\0';
    v->next_attempt_at = 0;
    if (v->ok)
        return;
    if (j->refused || j->call.refused)
        snprintf(v->error, sizeof v->error, "refused: %s", j->refused ? j->why : j->call.why);
    else if (j->call.rc != CURLE_OK)
        snprintf(v->error, sizeof v->error, "%s",
                 j->call.error[0] ? j->call.error : curl_easy_strerror(j->call.rc));
    else
        snprintf(v->error, sizeof v->error, "HTTP %ld", j->call.status);
    if (!j->refused && !j->call.refused) {
        v->next_attempt_at = now + backoff_ms(h, j->d.attempts + 1);
        if (v->next_attempt_at > j->d.created_at + h->o.max_age_ms)
            v->next_attempt_at = 0;
    }
}

/* Engine thread: every answered attempt so far, recorded in one
 * transaction; then room for more. */
static void record_job(void *arg)
{
    lr_hooks *h = arg;
    for (;;) {
        pthread_mutex_lock(&h->mu);
        job *batch = h->done;
        h->done = NULL;
        h->recording = batch != NULL;
        pthread_mutex_unlock(&h->mu);
        if (!batch)
            return;
        size_t n = 0;
        for (job *j = batch; j; j = j->next)
            n++;
        lr_delivery_result *r = lr_xcalloc(n, sizeof *r);
        verdict *v = lr_xcalloc(n, sizeof *v);
        int64_t now = lr_now_ms();
        size_t i = 0;
        for (job *j = batch; j; j = j->next, i++) {
            judge(h, j, now, &v[i]);
            r[i] = (lr_delivery_result){.d = &j->d,
                                        .status_code = (int)j->call.status,
                                        .latency_ms = j->t0 ? j->ended - j->t0 : 0,
                                        .error = v[i].ok ? NULL : v[i].error,
                                        .delivered = v[i].ok,
                                        .next_attempt_at = v[i].next_attempt_at,
                                        .now_ms = now};
        }
        lr_err e = lr_billing_finish_all(h->o.store, r, n);
        if (e != LR_OK)
            lr_warn("webhooks: %zu delivery attempts not recorded (%s); they are retried once "
                    "their claim runs out",
                    n, lr_strerror(e));
        i = 0;
        for (job *j = batch, *next; j; j = next, i++) {
            next = j->next;
            if (!v[i].ok)
                lr_log_fields(v[i].next_attempt_at ? LR_LOG_INFO : LR_LOG_WARN, NULL,
                              v[i].next_attempt_at ? "webhook delivery failed, will retry"
                                                   : "webhook delivery given up",
                              json_pack("{s:s, s:s, s:i, s:s}", "delivery_id", j->d.id, "url",
                                        j->d.url, "attempt", j->d.attempts + 1, "error",
                                        v[i].error));
            job_free(j);
        }
        free(r);
        free(v);
        pthread_mutex_lock(&h->mu);
        h->in_flight -= (int)n;
        pthread_mutex_unlock(&h->mu);
        lr_hooks_poke(h);
    }
}

/* Any thread: the attempt is over; it joins the next record. */
static void attempt_done(job *j)
{
    lr_hooks *h = j->h;
    j->ended = lr_monotonic_ms();
    pthread_mutex_lock(&h->mu);
    if (j->prev)
        j->prev->next = j->next;
    else if (h->jobs == j)
        h->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    j->prev = NULL;
    j->next = h->done;
    h->done = j;
    bool go = !h->recording;
    h->recording = true;
    pthread_mutex_unlock(&h->mu);
    if (go)
        lr_workers_submit(h->db, record_job, h);
}

static void call_done(lr_call *c)
{
    attempt_done(c->ctx);
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
    char sig[64], old[64], hdr[3][200];
    size_t len = j->d.payload ? strlen(j->d.payload) : 0;
    if (!j->refused && !lr_hooks_sign(j->d.secret, j->d.id, ts, j->d.payload, len, sig)) {
        j->refused = true;
        snprintf(j->why, sizeof j->why, "the signing secret is malformed");
    }
    if (j->refused) {
        attempt_done(j);
        return;
    }
    /* During a rotation's grace the old secret signs too: a receiver
     * still on it verifies the second signature (space-separated). */
    bool both = j->d.previous_secret &&
                lr_hooks_sign(j->d.previous_secret, j->d.id, ts, j->d.payload, len, old);
    snprintf(hdr[0], sizeof hdr[0], "webhook-id: %s", j->d.id);
    snprintf(hdr[1], sizeof hdr[1], "webhook-timestamp: %lld", (long long)ts);
    snprintf(hdr[2], sizeof hdr[2], "webhook-signature: %s%s%s", sig, both ? " " : "",
             both ? old : "");
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

/* A message id: 16 hex digits, random, or (key set) derived from key,
 * so an outbox row taken twice queues one message. */
static void message_id(const char *key, char out[17])
{
    unsigned char d[32];
    if (key) {
        unsigned int n = 0;
        EVP_Digest(key, strlen(key), d, &n, EVP_sha256(), NULL);
    } else {
        lr_random_bytes(d, 8);
    }
    lr_hex(d, 8, out);
}

/* The body every attempt sends: {type, timestamp, data (stolen)}. */
static char *event_body(const char *type, json_t *data, int64_t now)
{
    char ts[32];
    lr_time_iso(now, ts);
    json_t *body = json_pack("{s:s, s:s, s:o}", "type", type, "timestamp", ts, "data", data);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}

static void queue_event(lr_hooks *h, const char *type, json_t *data, const char *generation_id,
                        const char *filter)
{
    char msg[17];
    int64_t now = lr_now_ms();
    message_id(NULL, msg);
    char *text = event_body(type, data, now);
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

/* ---- the outbox: settled generations' events ---- */

static json_t *generation_json(const lr_generation *g);

/* One claimed outbox row as an event (payload NULL when its generation
 * is gone: the row is only removed). */
static void outbox_event(lr_hooks *h, const lr_outbox_row *row, int64_t now, lr_event_req *ev,
                         char msg[17])
{
    char key[LR_UUID_LEN + LR_EVENT_TYPE_LEN + 2];
    snprintf(key, sizeof key, "%s:%s", row->event_type, row->generation_id);
    message_id(key, msg);
    lr_generation g = {0};
    char *text = NULL;
    if (h->o.db->ops->get_generation(h->o.db, NULL, row->generation_id, &g) == LR_OK &&
        !lr_generation_unfinished(&g))
        text = event_body(row->event_type, generation_json(&g), now);
    lr_generation_clear(&g);
    *ev = (lr_event_req){.message_id = msg,
                         .type = row->event_type,
                         .payload = text,
                         .generation_id = row->generation_id,
                         .filter = "completed",
                         .outbox_id = row->generation_id,
                         .now_ms = now};
}

/* Engine thread: claims outbox rows, renders their events and queues
 * them all in one transaction; again while rows keep coming. */
static void drain_job(void *arg)
{
    lr_hooks *h = arg;
    for (;;) {
        pthread_mutex_lock(&h->mu);
        bool go = !h->stopped && h->drain_again;
        h->drain_again = false;
        h->draining = go;
        char token[64];
        next_token(h, token);
        pthread_mutex_unlock(&h->mu);
        if (!go)
            return;
        lr_outbox_list rows = {0};
        int64_t now = lr_now_ms();
        lr_err e = lr_billing_outbox_claim(h->o.store, token, now, now + OUTBOX_LEASE_MS,
                                           OUTBOX_BATCH, &rows);
        if (e != LR_OK)
            lr_warn("webhooks: cannot read the outbox (%s)", lr_strerror(e));
        lr_event_req *evs = lr_xcalloc(rows.n + 1, sizeof *evs);
        char(*msgs)[17] = lr_xcalloc(rows.n + 1, sizeof *msgs);
        for (size_t i = 0; i < rows.n; i++)
            outbox_event(h, &rows.v[i], now, &evs[i], msgs[i]);
        long queued = 0;
        if (rows.n && (e = lr_billing_enqueue_all(h->o.store, evs, rows.n, &queued)) != LR_OK)
            lr_warn("webhooks: %zu events not queued yet (%s); retried when their claim runs out",
                    rows.n, lr_strerror(e));
        for (size_t i = 0; i < rows.n; i++) {
            free((char *)evs[i].payload);
            if (e == LR_OK && (i == 0 || strcmp(rows.v[i].user_id, rows.v[i - 1].user_id)))
                check_balance(h, rows.v[i].user_id);
        }
        free(evs);
        free(msgs);
        if (queued > 0)
            lr_hooks_poke(h);
        if (rows.n == OUTBOX_BATCH) {
            pthread_mutex_lock(&h->mu);
            h->drain_again = true; /* a full batch: there may be more */
            pthread_mutex_unlock(&h->mu);
        }
        free(rows.v);
    }
}

/* Any thread: the outbox is looked at once more after whatever drain is
 * under way, so a row settled during one is never left for the tick. */
static void request_drain(lr_hooks *h)
{
    pthread_mutex_lock(&h->mu);
    h->drain_again = true;
    bool go = !h->draining && !h->stopped;
    h->draining = true;
    pthread_mutex_unlock(&h->mu);
    if (go)
        lr_workers_submit(h->db, drain_job, h);
}

void lr_hooks_observe(void *ctx, const char *generation_id, lr_gen_status status,
                      lr_gen_stage stage)
{
    (void)generation_id;
    (void)stage;
    if (!lr_gen_status_unfinished(status))
        request_drain(ctx);
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
    pthread_mutex_unlock(&h->mu);
    lr_workers_free(h->db); /* what is queued runs: answered attempts are recorded */
    pthread_mutex_lock(&h->mu);
    job *j = h->jobs;
    h->jobs = NULL;
    pthread_mutex_unlock(&h->mu);
    while (j) {
        job *next = j->next;
        job_free(j);
        j = next;
    }
    for (job *d = h->done, *next; d; d = next) {
        next = d->next;
        job_free(d);
    }
    lr_delivery_list_clear(&h->ready);
    lr_billing_release(h->o.store, h->owner);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
