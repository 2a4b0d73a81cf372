/* The billing store's operations: one SQL text each, run by the driver of
 * the backend (billing.h). Parameters travel as text; integer columns get
 * them through CAST or the column's type. */
#include "db/billing.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "db/db.h"

static lr_err exec(lr_billing_db *db, const char *sql, const char *const *p, int n,
                   lr_billing_row_fn row, void *ctx, long *changes)
{
    return db->drv->exec(db, sql, p, n, row, ctx, changes);
}

#define NPARAMS(p) ((int)(sizeof(p) / sizeof((p)[0])))

static char *dup_or_null(const char *s)
{
    return s ? lr_xstrdup(s) : NULL;
}

static void fmt_i64(char out[24], int64_t v)
{
    snprintf(out, 24, "%lld", (long long)v);
}

static int64_t to_i64(const char *s)
{
    return s ? strtoll(s, NULL, 10) : 0;
}

lr_err lr_billing_db_open(lr_db *db, const char *url, lr_billing_db **out, char **errmsg)
{
    if (lr_db_url_is_postgres(url))
        return lr_billing_pg_open(url, out, errmsg);
    return lr_billing_sqlite_open(db, out);
}

void lr_billing_db_close(lr_billing_db *db)
{
    if (db)
        db->drv->close(db);
}

/* ---- payments ---- */

void lr_payment_clear(lr_payment *p)
{
    free(p->session_id);
    free(p->payment_intent);
    free(p->user_id);
    free(p->pack_id);
    free(p->currency);
    free(p->event_id);
    memset(p, 0, sizeof *p);
}

#define PAYMENT_COLUMNS                                                                            \
    "CAST(id AS TEXT), session_id, payment_intent, CAST(user_id AS TEXT), pack_id, credits, "      \
    "amount, currency, event_id, credits_reversed"

static void read_payment(const char *const *c, int n, void *ctx)
{
    (void)n;
    lr_payment *p = ctx;
    lr_payment_clear(p);
    snprintf(p->id, sizeof p->id, "%s", c[0]);
    p->session_id = dup_or_null(c[1]);
    p->payment_intent = dup_or_null(c[2]);
    p->user_id = dup_or_null(c[3]);
    p->pack_id = dup_or_null(c[4]);
    p->credits = (int)to_i64(c[5]);
    p->amount = to_i64(c[6]);
    p->currency = dup_or_null(c[7]);
    p->event_id = dup_or_null(c[8]);
    p->credits_reversed = (int)to_i64(c[9]);
}

lr_err lr_billing_payment_record(lr_billing_db *db, const lr_payment *p, lr_payment *out)
{
    char id[LR_UUID_LEN + 1], credits[24], amount[24], now[24];
    lr_uuid_v4(id);
    fmt_i64(credits, p->credits);
    fmt_i64(amount, p->amount);
    fmt_i64(now, lr_now_ms());
    const char *ins[] = {id,      p->session_id, p->payment_intent, p->user_id,  p->pack_id,
                         credits, amount,        p->currency,       p->event_id, now};
    memset(out, 0, sizeof *out);
    lr_err e = exec(db,
                    "INSERT INTO payments (id, session_id, payment_intent, user_id, pack_id, "
                    "credits, amount, currency, event_id, created_at) VALUES ($1, $2, $3, $4, $5, "
                    "$6, $7, $8, $9, $10) ON CONFLICT (session_id) DO NOTHING",
                    ins, NPARAMS(ins), NULL, NULL, NULL);
    const char *sel[] = {p->session_id};
    if (e == LR_OK)
        e = exec(db, "SELECT " PAYMENT_COLUMNS " FROM payments WHERE session_id = $1", sel, 1,
                 read_payment, out, NULL);
    if (e == LR_OK && !out->id[0])
        e = LR_ERR_DB;
    return e;
}

lr_err lr_billing_payment_by_intent(lr_billing_db *db, const char *intent, lr_payment *out)
{
    const char *p[] = {intent};
    memset(out, 0, sizeof *out);
    lr_err e = exec(db,
                    "SELECT " PAYMENT_COLUMNS " FROM payments WHERE payment_intent = $1 "
                    "ORDER BY created_at LIMIT 1",
                    p, 1, read_payment, out, NULL);
    if (e == LR_OK && !out->id[0])
        e = LR_ERR_NOT_FOUND;
    return e;
}

lr_err lr_billing_payment_link(lr_billing_db *db, const char *payment_id,
                               const char *transaction_id)
{
    const char *p[] = {payment_id, transaction_id};
    return exec(db,
                "UPDATE credit_transactions SET payment_id = $1 WHERE id = $2 "
                "AND payment_id IS NULL",
                p, 2, NULL, NULL, NULL);
}

lr_err lr_billing_payment_reversed(lr_billing_db *db, const char *payment_id, int total)
{
    char t[24];
    fmt_i64(t, total);
    const char *p[] = {payment_id, t};
    return exec(db,
                "UPDATE payments SET credits_reversed = CAST($2 AS INTEGER) WHERE id = $1 "
                "AND credits_reversed < CAST($2 AS INTEGER)",
                p, 2, NULL, NULL, NULL);
}

static void set_true(const char *const *c, int n, void *ctx)
{
    (void)c;
    (void)n;
    *(bool *)ctx = true;
}

lr_err lr_billing_event_seen(lr_billing_db *db, const char *event_id, bool *seen)
{
    const char *p[] = {event_id};
    *seen = false;
    return exec(db, "SELECT 1 FROM stripe_events WHERE id = $1", p, 1, set_true, seen, NULL);
}

lr_err lr_billing_event_done(lr_billing_db *db, const char *event_id, const char *type)
{
    char now[24];
    fmt_i64(now, lr_now_ms());
    const char *p[] = {event_id, type, now};
    return exec(db,
                "INSERT INTO stripe_events (id, type, received_at) VALUES ($1, $2, "
                "CAST($3 AS BIGINT)) ON CONFLICT (id) DO NOTHING",
                p, 3, NULL, NULL, NULL);
}

/* ---- endpoints and secrets ---- */

void lr_endpoint_clear(lr_endpoint *e)
{
    free(e->id);
    free(e->url);
    free(e->events);
    if (e->secret)
        OPENSSL_cleanse(e->secret, strlen(e->secret));
    free(e->secret);
    memset(e, 0, sizeof *e);
}

void lr_endpoint_list_clear(lr_endpoint_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        lr_endpoint_clear(&l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

char *lr_billing_new_secret(void)
{
    unsigned char key[24];
    char b64[64];
    lr_random_bytes(key, sizeof key);
    EVP_EncodeBlock((unsigned char *)b64, key, sizeof key);
    OPENSSL_cleanse(key, sizeof key);
    char *s = lr_xmalloc(strlen(b64) + 7);
    sprintf(s, "whsec_%s", b64);
    return s;
}

static void read_endpoint(const char *const *c, int n, void *ctx)
{
    (void)n;
    lr_endpoint_list *l = ctx;
    l->v = lr_xrealloc(l->v, (l->n + 1) * sizeof *l->v);
    l->v[l->n++] = (lr_endpoint){.id = lr_xstrdup(c[0]),
                                 .url = lr_xstrdup(c[1]),
                                 .events = lr_xstrdup(c[2]),
                                 .created_at = to_i64(c[3])};
}

lr_err lr_billing_endpoint_add(lr_billing_db *db, const char *url, const char *events,
                               lr_endpoint *out)
{
    char id[LR_UUID_LEN + 1], now[24];
    lr_uuid_v4(id);
    fmt_i64(now, lr_now_ms());
    char *secret = lr_billing_new_secret();
    const char *p[] = {id, url, events, secret, now};
    lr_err e = exec(db,
                    "INSERT INTO webhook_endpoints (id, url, events, secret, created_at) "
                    "VALUES ($1, $2, $3, $4, CAST($5 AS BIGINT))",
                    p, 5, NULL, NULL, NULL);
    *out = (lr_endpoint){.id = lr_xstrdup(id),
                         .url = lr_xstrdup(url),
                         .events = lr_xstrdup(events),
                         .secret = secret,
                         .created_at = to_i64(now)};
    if (e != LR_OK)
        lr_endpoint_clear(out);
    return e;
}

lr_err lr_billing_endpoint_list(lr_billing_db *db, lr_endpoint_list *out)
{
    memset(out, 0, sizeof *out);
    lr_err e = exec(db,
                    "SELECT CAST(id AS TEXT), url, events, created_at FROM webhook_endpoints "
                    "ORDER BY created_at, id",
                    NULL, 0, read_endpoint, out, NULL);
    if (e != LR_OK)
        lr_endpoint_list_clear(out);
    return e;
}

lr_err lr_billing_endpoint_remove(lr_billing_db *db, const char *id)
{
    if (!lr_uuid_valid(id, strlen(id)))
        return LR_ERR_NOT_FOUND;
    const char *p[] = {id};
    long changed = 0;
    lr_billing_stmt st[] = {
        {"DELETE FROM webhook_previous_secrets WHERE endpoint_id = $1", p, 1, NULL},
        {"DELETE FROM webhook_endpoints WHERE id = $1", p, 1, &changed}};
    lr_err e = db->drv->exec_all(db, st, 2);
    return e == LR_OK && changed == 0 ? LR_ERR_NOT_FOUND : e;
}

lr_err lr_billing_endpoint_rotate(lr_billing_db *db, const char *id, int64_t grace_until,
                                  lr_endpoint *out)
{
    memset(out, 0, sizeof *out);
    if (!lr_uuid_valid(id, strlen(id)))
        return LR_ERR_NOT_FOUND;
    char *secret = lr_billing_new_secret();
    char until[24];
    fmt_i64(until, grace_until);
    const char *keep[] = {id, until}, *swap[] = {id, secret};
    long changed = 0;
    /* The secret going out signs on until grace_until (replacing an
     * older one's grace), the new one from now. */
    lr_billing_stmt st[] = {
        {"INSERT INTO webhook_previous_secrets (endpoint_id, secret, valid_until) "
         "SELECT id, secret, CAST($2 AS BIGINT) FROM webhook_endpoints WHERE id = $1 "
         "ON CONFLICT (endpoint_id) DO UPDATE SET secret = excluded.secret, "
         "valid_until = excluded.valid_until",
         keep, 2, NULL},
        {"UPDATE webhook_endpoints SET secret = $2 WHERE id = $1", swap, 2, &changed}};
    lr_endpoint_list l = {0};
    lr_err e = db->drv->exec_all(db, st, 2);
    if (e == LR_OK && changed == 0)
        e = LR_ERR_NOT_FOUND;
    if (e == LR_OK)
        e = exec(db,
                 "SELECT CAST(id AS TEXT), url, events, created_at FROM webhook_endpoints "
                 "WHERE id = $1",
                 keep, 1, read_endpoint, &l, NULL);
    if (e == LR_OK && l.n == 0)
        e = LR_ERR_NOT_FOUND;
    if (e == LR_OK) {
        *out = l.v[0];
        out->secret = secret;
        free(l.v);
    } else {
        lr_endpoint_list_clear(&l);
        OPENSSL_cleanse(secret, strlen(secret));
        free(secret);
    }
    return e;
}

static void read_text(const char *const *c, int n, void *ctx)
{
    (void)n;
    char **out = ctx;
    free(*out);
    *out = dup_or_null(c[0]);
}

lr_err lr_billing_user_secret(lr_billing_db *db, const char *user_id, char **secret)
{
    char now[24];
    fmt_i64(now, lr_now_ms());
    char *fresh = lr_billing_new_secret();
    const char *p[] = {user_id, fresh, now};
    *secret = NULL;
    lr_err e = exec(db,
                    "INSERT INTO user_webhook_secrets (user_id, secret, created_at) "
                    "VALUES ($1, $2, CAST($3 AS BIGINT)) ON CONFLICT (user_id) DO NOTHING",
                    p, 3, NULL, NULL, NULL);
    if (e == LR_OK)
        e = exec(db, "SELECT secret FROM user_webhook_secrets WHERE user_id = $1", p, 1, read_text,
                 secret, NULL);
    if (e == LR_OK && !*secret)
        e = LR_ERR_DB;
    free(fresh);
    return e;
}

lr_err lr_billing_generation_hook(lr_billing_db *db, const char *generation_id, const char *user_id,
                                  const char *url, const char *events)
{
    char now[24];
    fmt_i64(now, lr_now_ms());
    const char *p[] = {generation_id, user_id, url, events, now};
    return exec(db,
                "INSERT INTO generation_webhooks (generation_id, user_id, url, events, "
                "created_at) VALUES ($1, $2, $3, $4, CAST($5 AS BIGINT))",
                p, 5, NULL, NULL, NULL);
}

/* ---- the delivery queue ---- */

/* One statement for both destinations. A message id queued before (an
 * outbox row taken again after its process died) adds nothing. */
#define ENQUEUE_SQL                                                                                \
    "INSERT INTO webhook_deliveries (id, endpoint_id, user_id, url, event_type, "                  \
    "payload, next_attempt_at, created_at) "                                                       \
    "SELECT 'msg_' || $1 || '_' || CAST(e.id AS TEXT), e.id, NULL, e.url, $2, $3, "                \
    "CAST($4 AS BIGINT), CAST($4 AS BIGINT) FROM webhook_endpoints e "                             \
    "WHERE ',' || e.events || ',' LIKE '%,' || $2 || ',%' "                                        \
    "UNION ALL "                                                                                   \
    "SELECT 'msg_' || $1 || '_g', NULL, h.user_id, h.url, $2, $3, "                                \
    "CAST($4 AS BIGINT), CAST($4 AS BIGINT) FROM generation_webhooks h "                           \
    "WHERE h.generation_id = $5 "                                                                  \
    "AND ',' || h.events || ',' LIKE '%,' || $6 || ',%' "                                          \
    "ON CONFLICT (id) DO NOTHING"

lr_err lr_billing_enqueue(lr_billing_db *db, const lr_event_req *ev, long *queued)
{
    return lr_billing_enqueue_all(db, ev, 1, queued);
}

lr_err lr_billing_enqueue_all(lr_billing_db *db, const lr_event_req *evs, size_t n, long *queued)
{
    /* Per event: its parameters, the insert and the outbox row's removal. */
    const char *(*p)[6] = lr_xcalloc(n + 1, sizeof *p);
    char(*now)[24] = lr_xcalloc(n + 1, sizeof *now);
    long *changes = lr_xcalloc(n + 1, sizeof *changes);
    lr_billing_stmt *st = lr_xcalloc(2 * n + 1, sizeof *st);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const lr_event_req *ev = &evs[i];
        fmt_i64(now[i], ev->now_ms);
        const char *row[6] = {ev->message_id, ev->type,          ev->payload,
                              now[i],         ev->generation_id, ev->filter};
        memcpy(p[i], row, sizeof row);
        if (ev->payload)
            st[k++] = (lr_billing_stmt){ENQUEUE_SQL, p[i], 6, &changes[i]};
        if (ev->outbox_id)
            st[k++] = (lr_billing_stmt){"DELETE FROM webhook_outbox WHERE generation_id = $1",
                                        &ev->outbox_id, 1, NULL};
    }
    lr_err e = k ? db->drv->exec_all(db, st, k) : LR_OK;
    long total = 0;
    for (size_t i = 0; i < n; i++)
        total += changes[i];
    if (queued)
        *queued = e == LR_OK ? total : 0;
    free(st);
    free(changes);
    free(now);
    free(p);
    return e;
}

#define OUTBOX_CLAIM                                                                               \
    "UPDATE webhook_outbox SET claim_token = $1, claimed_until = CAST($2 AS BIGINT) "              \
    "WHERE generation_id IN (SELECT generation_id FROM webhook_outbox "                            \
    "WHERE claimed_until IS NULL OR claimed_until < CAST($3 AS BIGINT) "                           \
    "ORDER BY created_at LIMIT CAST($4 AS INTEGER)"
#define OUTBOX_RETURNING                                                                           \
    ") RETURNING CAST(generation_id AS TEXT), CAST(user_id AS TEXT), event_type"

static void read_outbox(const char *const *c, int n, void *ctx)
{
    (void)n;
    lr_outbox_list *l = ctx;
    l->v = lr_xrealloc(l->v, (l->n + 1) * sizeof *l->v);
    lr_outbox_row *r = &l->v[l->n++];
    snprintf(r->generation_id, sizeof r->generation_id, "%s", c[0]);
    snprintf(r->user_id, sizeof r->user_id, "%s", c[1]);
    snprintf(r->event_type, sizeof r->event_type, "%s", c[2]);
}

lr_err lr_billing_outbox_claim(lr_billing_db *db, const char *token, int64_t now_ms,
                               int64_t lease_until, int limit, lr_outbox_list *out)
{
    char now[24], until[24], lim[24];
    fmt_i64(now, now_ms);
    fmt_i64(until, lease_until);
    fmt_i64(lim, limit);
    const char *p[] = {token, until, now, lim};
    memset(out, 0, sizeof *out);
    lr_err e = exec(db,
                    db->postgres ? OUTBOX_CLAIM " FOR UPDATE SKIP LOCKED" OUTBOX_RETURNING
                                 : OUTBOX_CLAIM OUTBOX_RETURNING,
                    p, 4, read_outbox, out, NULL);
    if (e != LR_OK) {
        free(out->v);
        memset(out, 0, sizeof *out);
    }
    return e;
}

void lr_delivery_list_clear(lr_delivery_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        lr_delivery *d = &l->v[i];
        free(d->id);
        free(d->endpoint_id);
        free(d->url);
        free(d->event_type);
        free(d->payload);
        char *secrets[] = {d->secret, d->previous_secret};
        for (int k = 0; k < 2; k++) {
            if (secrets[k])
                OPENSSL_cleanse(secrets[k], strlen(secrets[k]));
            free(secrets[k]);
        }
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

static void read_delivery(const char *const *c, int n, void *ctx)
{
    (void)n;
    lr_delivery_list *l = ctx;
    l->v = lr_xrealloc(l->v, (l->n + 1) * sizeof *l->v);
    l->v[l->n++] = (lr_delivery){.id = lr_xstrdup(c[0]),
                                 .endpoint_id = dup_or_null(c[1]),
                                 .url = lr_xstrdup(c[2]),
                                 .event_type = lr_xstrdup(c[3]),
                                 .payload = lr_xstrdup(c[4]),
                                 .attempts = (int)to_i64(c[5]),
                                 .created_at = to_i64(c[6]),
                                 .secret = dup_or_null(c[7]),
                                 .previous_secret = dup_or_null(c[8])};
}

/* The claim: due, unclaimed (or claimed by a process that died) rows.
 * PostgreSQL skips rows another process is claiming at the same moment;
 * SQLite runs one writer at a time anyway. */
#define CLAIM_HEAD                                                                                 \
    "UPDATE webhook_deliveries SET claim_token = $1, claimed_until = CAST($2 AS BIGINT) "          \
    "WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' "                     \
    "AND next_attempt_at <= CAST($3 AS BIGINT) "                                                   \
    "AND (claimed_until IS NULL OR claimed_until < CAST($3 AS BIGINT)) "                           \
    "ORDER BY next_attempt_at LIMIT CAST($4 AS INTEGER)"

lr_err lr_billing_claim(lr_billing_db *db, const char *token, int64_t now_ms, int64_t lease_until,
                        int limit, lr_delivery_list *out)
{
    char now[24], until[24], lim[24];
    fmt_i64(now, now_ms);
    fmt_i64(until, lease_until);
    fmt_i64(lim, limit);
    const char *p[] = {token, until, now, lim};
    memset(out, 0, sizeof *out);
    long claimed = 0;
    lr_err e = exec(db, db->postgres ? CLAIM_HEAD " FOR UPDATE SKIP LOCKED)" : CLAIM_HEAD ")", p, 4,
                    NULL, NULL, &claimed);
    if (e != LR_OK || claimed == 0)
        return e;
    e = exec(db,
             "SELECT d.id, CAST(d.endpoint_id AS TEXT), d.url, d.event_type, d.payload, "
             "d.attempts, d.created_at, COALESCE(e.secret, u.secret), "
             "CASE WHEN p.valid_until > CAST($2 AS BIGINT) THEN p.secret END "
             "FROM webhook_deliveries d "
             "LEFT JOIN webhook_endpoints e ON e.id = d.endpoint_id "
             "LEFT JOIN user_webhook_secrets u ON u.user_id = d.user_id "
             "LEFT JOIN webhook_previous_secrets p ON p.endpoint_id = d.endpoint_id "
             "WHERE d.claim_token = $1 AND d.status = 'pending'",
             (const char *[]){token, now}, 2, read_delivery, out, NULL);
    if (e != LR_OK)
        lr_delivery_list_clear(out);
    return e;
}

#define FINISH_SQL                                                                                 \
    "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, "                         \
    "last_status = CAST($3 AS INTEGER), last_error = $4, "                                         \
    "next_attempt_at = CASE WHEN $2 = 'pending' THEN CAST($5 AS BIGINT) "                          \
    "ELSE next_attempt_at END, "                                                                   \
    "delivered_at = CASE WHEN $2 = 'delivered' THEN CAST($6 AS BIGINT) END, "                      \
    "claim_token = NULL, claimed_until = NULL WHERE id = $1"
#define ATTEMPT_SQL                                                                                \
    "INSERT INTO webhook_attempts (delivery_id, endpoint_id, attempt, status_code, "               \
    "latency_ms, error, created_at) VALUES ($1, $2, CAST($3 AS INTEGER), "                         \
    "CAST($4 AS INTEGER), CAST($5 AS BIGINT), $6, CAST($7 AS BIGINT))"

/* The text parameters of one result's two statements. */
typedef struct {
    char attempt[24], code[24], latency[24], next[24], now[24];
    const char *state[6], *log[7];
} finish_params;

static void finish_fill(const lr_delivery_result *r, finish_params *f)
{
    fmt_i64(f->attempt, r->d->attempts + 1);
    fmt_i64(f->code, r->status_code);
    fmt_i64(f->latency, r->latency_ms);
    fmt_i64(f->next, r->next_attempt_at);
    fmt_i64(f->now, r->now_ms);
    const char *status = r->delivered ? "delivered" : r->next_attempt_at ? "pending" : "failed";
    const char *code = r->status_code ? f->code : NULL;
    const char *state[6] = {r->d->id, status, code, r->error, f->next, f->now};
    const char *log[7] = {r->d->id,   r->d->endpoint_id, f->attempt, code,
                          f->latency, r->error,          f->now};
    memcpy(f->state, state, sizeof state);
    memcpy(f->log, log, sizeof log);
}

lr_err lr_billing_finish(lr_billing_db *db, const lr_delivery_result *r)
{
    return lr_billing_finish_all(db, r, 1);
}

lr_err lr_billing_finish_all(lr_billing_db *db, const lr_delivery_result *r, size_t n)
{
    finish_params *f = lr_xcalloc(n + 1, sizeof *f);
    lr_billing_stmt *st = lr_xcalloc(2 * n + 1, sizeof *st);
    for (size_t i = 0; i < n; i++) {
        finish_fill(&r[i], &f[i]);
        st[2 * i] = (lr_billing_stmt){FINISH_SQL, f[i].state, 6, NULL};
        st[2 * i + 1] = (lr_billing_stmt){ATTEMPT_SQL, f[i].log, 7, NULL};
    }
    lr_err e = n ? db->drv->exec_all(db, st, 2 * n) : LR_OK;
    free(st);
    free(f);
    return e;
}

lr_err lr_billing_release(lr_billing_db *db, const char *prefix)
{
    const char *p[] = {prefix};
    return exec(db,
                "UPDATE webhook_deliveries SET claim_token = NULL, claimed_until = NULL "
                "WHERE status = 'pending' AND claim_token LIKE $1 || '%'",
                p, 1, NULL, NULL, NULL);
}

lr_err lr_billing_replay(lr_billing_db *db, const char *delivery_id, int64_t now_ms)
{
    char now[24];
    fmt_i64(now, now_ms);
    const char *p[] = {delivery_id, now};
    long changed = 0;
    lr_err e = exec(db,
                    "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = "
                    "CAST($2 AS BIGINT), created_at = CAST($2 AS BIGINT), claim_token = NULL, "
                    "claimed_until = NULL WHERE id = $1",
                    p, 2, NULL, NULL, &changed);
    return e == LR_OK && changed == 0 ? LR_ERR_NOT_FOUND : e;
}

void lr_attempt_list_clear(lr_attempt_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].delivery_id);
        free(l->v[i].event_type);
        free(l->v[i].delivery_status);
        free(l->v[i].error);
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

static void read_attempt(const char *const *c, int n, void *ctx)
{
    (void)n;
    lr_attempt_list *l = ctx;
    l->v = lr_xrealloc(l->v, (l->n + 1) * sizeof *l->v);
    l->v[l->n++] = (lr_attempt){.delivery_id = lr_xstrdup(c[0]),
                                .event_type = lr_xstrdup(c[1]),
                                .attempt = (int)to_i64(c[2]),
                                .status_code = (int)to_i64(c[3]),
                                .latency_ms = to_i64(c[4]),
                                .error = dup_or_null(c[5]),
                                .created_at = to_i64(c[6]),
                                .delivery_status = lr_xstrdup(c[7])};
}

lr_err lr_billing_attempts(lr_billing_db *db, const char *endpoint_id, int limit,
                           lr_attempt_list *out)
{
    memset(out, 0, sizeof *out);
    if (!lr_uuid_valid(endpoint_id, strlen(endpoint_id)))
        return LR_ERR_NOT_FOUND;
    char lim[24];
    fmt_i64(lim, limit);
    const char *p[] = {endpoint_id, lim};
    lr_err e = exec(db,
                    "SELECT a.delivery_id, d.event_type, a.attempt, a.status_code, a.latency_ms, "
                    "a.error, a.created_at, d.status FROM webhook_attempts a "
                    "JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE a.endpoint_id = $1 "
                    "ORDER BY a.id DESC LIMIT CAST($2 AS INTEGER)",
                    p, 2, read_attempt, out, NULL);
    if (e != LR_OK)
        lr_attempt_list_clear(out);
    return e;
}

lr_err lr_billing_low_balance(lr_billing_db *db, const char *user_id, bool below, bool *fire)
{
    const char *p[] = {user_id};
    *fire = false;
    if (!below)
        return exec(db, "UPDATE low_balance_alerts SET below = 0 WHERE user_id = $1 AND below = 1",
                    p, 1, NULL, NULL, NULL);
    return exec(db,
                "INSERT INTO low_balance_alerts (user_id, below) VALUES ($1, 1) "
                "ON CONFLICT (user_id) DO UPDATE SET below = 1 WHERE low_balance_alerts.below = 0 "
                "RETURNING user_id",
                p, 1, set_true, fire, NULL);
}
