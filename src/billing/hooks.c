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

const char *const lr_hooks_event_types[] = {"generation.succeeded", "generation.failed",
                                            "generation.canceled", "generation.started",
                                            "credits.low",         "credits.purchased",
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
            known |= strlen(lr_hooks_event_types[i]) == n && !strncmp(p, lr_hooks_event_types[i], n);
        if (!known)
            return false;
        p += n;
        if (*p == ',' && !*++p)
            return false;
    }
    return true;
}

bool lr_hooks_sign(const char *secret, const char *id, int64_t ts, const char *body,
                   size_t len, char out[64])
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
    for (const char *p = uuid; *p; p++)
        if (*p != '-')
            msg[k++] = *p;
    msg[k] = '\0';
    json_t *body = json_pack("{s:s, s:s, s:o}", "type", type, "timestamp", ts, "data", data);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    lr_event_req ev = {.message_id = msg, .type = type, .payload = text,
                       .generation_id = generation_id, .filter = filter, .now_ms = now};
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

static json_t *strv_json(const lr_strv *s)
{
    json_t *a = json_array();
    for (size_t i = 0; i < s->n; i++)
        json_array_append_new(a, s->v[i] ? json_string(s->v[i]) : json_null());
    return a;
}

static json_t *generation_json(const lr_generation *g)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:i, s:i, s:i, s:i, s:s*, s:s*, s:s*, "
                     "s:s*, s:s*}",
                     "id", g->id, "userId", g->user_id, "modelId", g->model, "type", g->type,
                     "status", g->status, "urls", strv_json(&g->result_urls), "credits",
                     g->credits_used, "outputsCount", g->outputs_count, "succeededCount",
                     g->succeeded_count, "failedCount", g->failed_count, "errorCode",
                     g->error_code, "errorMessage", g->error_message, "createdAt", g->created_at,
                     "finishedAt", g->finished_at, "text", g->text);
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
                 !strcmp(g.status, "success") ? "succeeded" : g.status);
        queue_event(h, type, generation_json(&g), g.id, "completed");
        check_balance(h, g.user_id);
    }
    lr_generation_clear(&g);
    free(ev);
}

void lr_hooks_observe(void *ctx, const char *generation_id, const char *status,
                      const char *stage)
{
    (void)stage;
    lr_hooks *h = ctx;
    if (strcmp(status, "success") && strcmp(status, "failed") && strcmp(status, "canceled"))
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
                json_pack("{s:s, s:s, s:s, s:s}", "id", generation_id, "userId", user_id,
                          "modelId", model_id, "status", "processing"),
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
