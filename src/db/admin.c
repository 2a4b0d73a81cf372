/* Operator reads over either backend: opening, the records, and turning
 * the backends' text rows into them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "core/util.h"
#include "db/admin_int.h"

lr_err lr_admin_open(const char *url, lr_admin **out, char **errmsg)
{
    lr_err e = lr_db_url_is_postgres(url) ? lr_admin_pg_open(url, out, errmsg)
                                          : lr_admin_sqlite_open(url, out, errmsg);
    if (e == LR_OK) {
        pthread_mutex_init(&(*out)->mu, NULL);
        pthread_mutex_init(&(*out)->seen_mu, NULL);
    }
    return e;
}

void lr_admin_close(lr_admin *a)
{
    if (!a)
        return;
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->seen_mu);
    a->close(a);
}

static lr_err rows(lr_admin *a, int q, int n, const char *const *params, lr_db_row_fn add,
                   int ncols, void *list)
{
    pthread_mutex_lock(&a->mu);
    lr_err e = a->rows(a, q, n, params, add, ncols, list);
    pthread_mutex_unlock(&a->mu);
    return e;
}

static int64_t to_i64(const char *s)
{
    return s ? strtoll(s, NULL, 10) : 0;
}

static void seen(const char *const *col, void *out)
{
    (void)col;
    *(bool *)out = true;
}

lr_err lr_admin_ready(lr_admin *a, const char **why)
{
    bool applied = false;
    const char *p[] = {a->latest_migration};
    lr_err e = rows(a, AQ_READY, 1, p, seen, 1, &applied);
    *why = NULL;
    if (e != LR_OK) {
        *why = "the database does not answer";
        return LR_ERR_UNAVAILABLE;
    }
    if (!applied) {
        *why = "the database schema is behind this binary (run lensroom migrate)";
        return LR_ERR_CONFLICT;
    }
    return LR_OK;
}

/* ---- totals -------------------------------------------------------- */

static void add_gen_count(const char *const *col, void *out)
{
    lr_admin_totals *t = out;
    t->gens = lr_db_grow(t->gens, t->ngens, sizeof *t->gens);
    t->gens[t->ngens++] = (lr_admin_gen_count){
        .model = lr_xstrdup(col[0]), .status = lr_xstrdup(col[1]), .n = to_i64(col[2])};
}

static void add_ledger_total(const char *const *col, void *out)
{
    lr_admin_totals *t = out;
    t->ledger = lr_db_grow(t->ledger, t->nledger, sizeof *t->ledger);
    t->ledger[t->nledger++] = (lr_admin_ledger_total){
        .type = lr_xstrdup(col[0]), .rows = to_i64(col[1]), .amount = to_i64(col[2])};
}

static void add_sum(const char *const *col, void *out)
{
    *(int64_t *)out = to_i64(col[0]);
}

lr_err lr_admin_totals_read(lr_admin *a, lr_admin_totals *out)
{
    *out = (lr_admin_totals){0};
    lr_err e = rows(a, AQ_GEN_COUNTS, 0, NULL, add_gen_count, 3, out);
    if (e == LR_OK)
        e = rows(a, AQ_LEDGER_TOTALS, 0, NULL, add_ledger_total, 3, out);
    if (e == LR_OK)
        e = rows(a, AQ_BALANCE_TOTAL, 0, NULL, add_sum, 1, &out->balance_total);
    if (e != LR_OK)
        lr_admin_totals_clear(out);
    return e;
}

void lr_admin_totals_clear(lr_admin_totals *t)
{
    for (size_t i = 0; i < t->ngens; i++) {
        free(t->gens[i].model);
        free(t->gens[i].status);
    }
    for (size_t i = 0; i < t->nledger; i++)
        free(t->ledger[i].type);
    free(t->gens);
    free(t->ledger);
    *t = (lr_admin_totals){0};
}

/* ---- analytics ----------------------------------------------------- */

static void copy_day(char dst[11], const char *src)
{
    snprintf(dst, 11, "%s", src ? src : "");
}

static void add_day(const char *const *col, void *out)
{
    lr_analytics *x = out;
    x->days = lr_db_grow(x->days, x->ndays, sizeof *x->days);
    lr_analytics_day *d = &x->days[x->ndays++];
    copy_day(d->day, col[0]);
    d->spent = to_i64(col[1]);
    d->bought = to_i64(col[2]);
    d->refunded = to_i64(col[3]);
    d->granted = to_i64(col[4]);
}

static void add_model_day(const char *const *col, void *out)
{
    lr_analytics *x = out;
    x->model_days = lr_db_grow(x->model_days, x->nmodel_days, sizeof *x->model_days);
    lr_analytics_model_day *d = &x->model_days[x->nmodel_days++];
    copy_day(d->day, col[0]);
    d->model = lr_xstrdup(col[1]);
    d->n = to_i64(col[2]);
}

static void add_model(const char *const *col, void *out)
{
    lr_analytics *x = out;
    x->models = lr_db_grow(x->models, x->nmodels, sizeof *x->models);
    x->models[x->nmodels++] = (lr_analytics_model){
        .model = lr_xstrdup(col[0]),
        .total = to_i64(col[1]),
        .succeeded = to_i64(col[2]),
        .failed = to_i64(col[3]),
        .canceled = to_i64(col[4]),
        .p50_ms = col[5] ? to_i64(col[5]) : -1,
        .p95_ms = col[6] ? to_i64(col[6]) : -1,
    };
}

static void add_user(const char *const *col, void *out)
{
    lr_analytics *x = out;
    x->top = lr_db_grow(x->top, x->ntop, sizeof *x->top);
    x->top[x->ntop++] = (lr_analytics_user){
        .user_id = lr_xstrdup(col[0]), .spent = to_i64(col[1]), .generations = to_i64(col[2])};
}

/* Splits [since, until) into the whole UTC days the rollups answer for,
 * [m1, m2) (days d1 up to d2, excluded), and the partial days around them,
 * [since, m1) and [m2, until), read from the rows. Without a whole day
 * inside, m1 = m2 = until: everything comes from the rows. */
typedef struct {
    char m1[32], m2[32], d1[11], d2[11];
} range_split;

static bool split_range(const char *since, const char *until, range_split *r)
{
    const int64_t day = 86400000;
    int64_t s = lr_time_parse_iso(since), u = lr_time_parse_iso(until);
    if (s < 0 || u < 0)
        return false;
    int64_t first = (s + day - 1) / day * day, last = u / day * day;
    int64_t m1 = first < u ? first : u;
    int64_t m2 = last > m1 ? last : m1;
    lr_time_iso(m1, r->m1);
    lr_time_iso(m2, r->m2);
    snprintf(r->d1, sizeof r->d1, "%.10s", r->m1);
    snprintf(r->d2, sizeof r->d2, "%.10s", r->m2);
    return true;
}

lr_err lr_admin_analytics(lr_admin *a, const char *since, const char *until, int top,
                          lr_analytics *out)
{
    *out = (lr_analytics){0};
    range_split r;
    if (!split_range(since, until, &r))
        return LR_ERR_INVALID;
    char lim[16];
    snprintf(lim, sizeof lim, "%d", top);
    const char *p[] = {since, until, r.m1, r.m2, r.d1, r.d2};
    const char *pt[] = {since, until, lim};
    lr_err e = rows(a, AQ_DAYS, 6, p, add_day, 5, out);
    if (e == LR_OK)
        e = rows(a, AQ_MODEL_DAYS, 6, p, add_model_day, 3, out);
    if (e == LR_OK)
        e = rows(a, AQ_MODELS, 6, p, add_model, 7, out);
    if (e == LR_OK)
        e = rows(a, AQ_TOP_USERS, 3, pt, add_user, 3, out);
    if (e != LR_OK)
        lr_analytics_clear(out);
    return e;
}

void lr_analytics_clear(lr_analytics *x)
{
    for (size_t i = 0; i < x->nmodel_days; i++)
        free(x->model_days[i].model);
    for (size_t i = 0; i < x->nmodels; i++)
        free(x->models[i].model);
    for (size_t i = 0; i < x->ntop; i++)
        free(x->top[i].user_id);
    free(x->days);
    free(x->model_days);
    free(x->models);
    free(x->top);
    *x = (lr_analytics){0};
}

/* ---- searches and the audit log ------------------------------------ */

lr_err lr_admin_generations(lr_admin *a, const lr_admin_gen_filter *f, lr_generation_list *out)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", f->limit);
    const char *p[] = {f->user_id,           f->status,    f->model, f->since,
                       f->before_created_at, f->before_id, lim};
    *out = (lr_generation_list){0};
    lr_err e = rows(a, AQ_GENERATIONS, 7, p, lr_db_add_generation, GC_COUNT, out);
    if (e != LR_OK)
        lr_generation_list_clear(out);
    return e;
}

lr_err lr_admin_generation_ledger(lr_admin *a, const char *generation_id, lr_ledger_list *out)
{
    const char *p[] = {generation_id};
    *out = (lr_ledger_list){0};
    lr_err e = rows(a, AQ_GEN_LEDGER, 1, p, lr_db_add_ledger_row, LC_COUNT, out);
    if (e != LR_OK)
        lr_ledger_list_clear(out);
    return e;
}

lr_err lr_admin_audit(lr_admin *a, const lr_admin_action *act)
{
    char id[LR_UUID_LEN + 1], at[32];
    lr_uuid_v4(id);
    lr_time_iso(lr_now_ms(), at);
    char *detail = act->detail ? json_dumps(act->detail, JSON_COMPACT) : NULL;
    const char *p[] = {
        id, act->actor, act->action, act->subject, detail ? detail : "{}", act->request_id, at};
    lr_err e = rows(a, AQ_AUDIT, 7, p, NULL, 0, NULL);
    free(detail);
    return e;
}

/* ---- users and sign-in links --------------------------------------- */

static void add_admin_user(const char *const *col, void *out)
{
    lr_admin_user_list *l = out;
    l->v = lr_db_grow(l->v, l->n, sizeof *l->v);
    l->v[l->n++] = (lr_admin_user){.user_id = lr_xstrdup(col[0]),
                                   .balance = to_i64(col[1]),
                                   .bought = to_i64(col[2]),
                                   .spent = to_i64(col[3]),
                                   .refunded = to_i64(col[4]),
                                   .granted = to_i64(col[5]),
                                   .last_activity = col[6] ? lr_xstrdup(col[6]) : NULL,
                                   .email = col[7] ? lr_xstrdup(col[7]) : NULL};
}

/* email lowercased (ASCII) into lo, and into hi the first string past
 * every one that starts with it: [lo, hi) bytewise. False when too long
 * or empty. */
static bool email_range(const char *email, char lo[256], char hi[256])
{
    size_t n = strlen(email);
    if (n == 0 || n >= 256)
        return false;
    for (size_t i = 0; i <= n; i++)
        lo[i] = (email[i] >= 'A' && email[i] <= 'Z') ? (char)(email[i] - 'A' + 'a') : email[i];
    memcpy(hi, lo, n + 1);
    hi[n - 1] = (char)((unsigned char)hi[n - 1] + 1); /* UTF-8 never holds 0xff */
    return true;
}

lr_err lr_admin_users(lr_admin *a, const lr_admin_user_filter *f, lr_admin_user_list *out)
{
    char lim[16], elo[256], ehi[256];
    snprintf(lim, sizeof lim, "%d", f->limit);
    *out = (lr_admin_user_list){0};
    if (f->email && !email_range(f->email, elo, ehi))
        return LR_ERR_INVALID;
    const char *p[] = {f->lo, f->hi, f->after, lim, f->email ? elo : NULL, f->email ? ehi : NULL};
    lr_err e = rows(a, AQ_USERS, 6, p, add_admin_user, 8, out);
    if (e != LR_OK)
        lr_admin_user_list_clear(out);
    return e;
}

void lr_admin_user_list_clear(lr_admin_user_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].user_id);
        free(l->v[i].last_activity);
        free(l->v[i].email);
    }
    free(l->v);
    *l = (lr_admin_user_list){0};
}

static uint64_t fnv(const char *s)
{
    uint64_t h = 14695981039346656037ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

void lr_admin_note_email(lr_admin *a, const char *user_id, const char *email)
{
    char lc[256], next[256];
    if (!email_range(email, lc, next) || strlen(user_id) != LR_UUID_LEN)
        return;
    uint64_t h = fnv(email);
    size_t slot = fnv(user_id) % (sizeof a->seen / sizeof a->seen[0]);
    pthread_mutex_lock(&a->seen_mu);
    bool known = !strcmp(a->seen[slot].user, user_id) && a->seen[slot].email == h;
    pthread_mutex_unlock(&a->seen_mu);
    if (known || pthread_mutex_trylock(&a->mu) != 0)
        return;
    char now[32];
    lr_time_iso(lr_now_ms(), now);
    const char *p[] = {user_id, email, lc, now};
    lr_err e = a->rows(a, AQ_NOTE_EMAIL, 4, p, NULL, 0, NULL);
    pthread_mutex_unlock(&a->mu);
    if (e != LR_OK)
        return;
    pthread_mutex_lock(&a->seen_mu);
    memcpy(a->seen[slot].user, user_id, LR_UUID_LEN + 1);
    a->seen[slot].email = h;
    pthread_mutex_unlock(&a->seen_mu);
}

static void token_hash(const char *token, char out[65])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)token, strlen(token), md);
    lr_hex(md, sizeof md, out);
}

lr_err lr_admin_link_create(lr_admin *a, const char *user_id, int ttl_s, char token[65])
{
    unsigned char raw[32];
    lr_random_bytes(raw, sizeof raw);
    lr_hex(raw, sizeof raw, token);
    char hash[65], now[32], until[32];
    token_hash(token, hash);
    int64_t ms = lr_now_ms();
    lr_time_iso(ms, now);
    lr_time_iso(ms + (int64_t)ttl_s * 1000, until);
    const char *p[] = {hash, user_id, until, now};
    return rows(a, AQ_LINK_CREATE, 4, p, NULL, 0, NULL);
}

static void copy_user(const char *const *col, void *out)
{
    snprintf(out, LR_UUID_LEN + 1, "%s", col[0] ? col[0] : "");
}

lr_err lr_admin_link_use(lr_admin *a, const char *token, char user_id[LR_UUID_LEN + 1])
{
    if (strlen(token) != 64 || strspn(token, "0123456789abcdef") != 64)
        return LR_ERR_NOT_FOUND;
    char hash[65], now[32];
    token_hash(token, hash);
    lr_time_iso(lr_now_ms(), now);
    const char *p[] = {hash, now};
    user_id[0] = '\0';
    lr_err e = rows(a, AQ_LINK_USE, 2, p, copy_user, 1, user_id);
    if (e == LR_OK && !user_id[0])
        e = LR_ERR_NOT_FOUND;
    return e;
}
