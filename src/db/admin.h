/* Operator reads: readiness, totals for /metrics, analytics, and the
 * generation and ledger searches behind `lensroom generations` and the
 * admin API, plus the admin audit log.
 *
 * Kept apart from lr_db (db.h), which carries the money path: these are
 * wide, read-mostly queries an operator runs now and then. lr_admin_open
 * opens its own single connection (admin_sqlite.c, admin_pg.c), so a slow
 * analytics query never holds a connection the generation path waits
 * for; calls on one lr_admin are serialised by its mutex and safe from
 * any thread. On PostgreSQL a broken connection is reset on the next call.
 *
 * Writes that move credits do not live here: an admin grant is
 * db->ops->adjust, and its audit row is written with lr_admin_audit.
 * Records are owned by the caller and released with their _clear.
 */
#ifndef LR_DB_ADMIN_H
#define LR_DB_ADMIN_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"
#include "db/db.h"

typedef struct lr_admin lr_admin;

/* url as for lr_db_open; *errmsg (malloc'd) says why it failed. */
lr_err lr_admin_open(const char *url, lr_admin **out, char **errmsg);
void lr_admin_close(lr_admin *a);

/* LR_OK when the database answers and the newest migration this binary
 * knows is applied; LR_ERR_UNAVAILABLE when it does not answer;
 * LR_ERR_CONFLICT when a migration is missing. *why: static text. */
lr_err lr_admin_ready(lr_admin *a, const char **why);

/* Database-wide totals for /metrics. */
typedef struct {
    char *model, *status;
    int64_t n;
} lr_admin_gen_count;
typedef struct {
    char *type;
    int64_t rows, amount;
} lr_admin_ledger_total;
typedef struct {
    lr_admin_gen_count *gens;
    size_t ngens;
    lr_admin_ledger_total *ledger;
    size_t nledger;
    int64_t balance_total; /* sum of every balance */
} lr_admin_totals;
lr_err lr_admin_totals_read(lr_admin *a, lr_admin_totals *out);
void lr_admin_totals_clear(lr_admin_totals *t);

/* Analytics over [since, until) (ISO-8601 UTC), days in UTC. */
typedef struct {
    char day[11]; /* YYYY-MM-DD */
    int64_t spent, bought, refunded, granted;
} lr_analytics_day;
typedef struct {
    char day[11];
    char *model;
    int64_t n;
} lr_analytics_model_day;
typedef struct {
    char *model;
    int64_t total, succeeded, failed, canceled;
    int64_t p50_ms, p95_ms; /* of finished generations with a duration; -1: none */
} lr_analytics_model;
typedef struct {
    char *user_id;
    int64_t spent, generations;
} lr_analytics_user;
typedef struct {
    lr_analytics_day *days;
    size_t ndays;
    lr_analytics_model_day *model_days;
    size_t nmodel_days;
    lr_analytics_model *models;
    size_t nmodels;
    lr_analytics_user *top;
    size_t ntop;
} lr_analytics;
lr_err lr_admin_analytics(lr_admin *a, const char *since, const char *until, int top,
                          lr_analytics *out);
void lr_analytics_clear(lr_analytics *x);

/* Any user's generations, newest first, keyset-paged. */
typedef struct {
    const char *user_id, *status, *model;      /* NULL: any */
    const char *since;                         /* created at or after; NULL: any */
    const char *before_created_at, *before_id; /* cursor, both or neither */
    int limit;
} lr_admin_gen_filter;
lr_err lr_admin_generations(lr_admin *a, const lr_admin_gen_filter *f, lr_generation_list *out);
/* The ledger rows that name a generation (its charge, its refund). */
lr_err lr_admin_generation_ledger(lr_admin *a, const char *generation_id, lr_ledger_list *out);

/* Users (one per credits row), by id, keyset-paged: ids in [lo, hi]
 * (NULL: unbounded) after `after` (NULL: from the first), and with email
 * set, only those whose email starts with it (case-insensitive: the
 * emails tokens carried, lr_admin_note_email, and on PostgreSQL with
 * Supabase, auth.users). Totals are over the user's whole ledger: bought
 * (purchase), spent (generation charges), refunded, granted (bonus and
 * adjustment, net); last_activity is the newest ledger row's time, email
 * the last one a token carried (NULL: none). */
typedef struct {
    const char *lo, *hi, *after;
    const char *email; /* a prefix; NULL: any */
    int limit;
} lr_admin_user_filter;
typedef struct {
    char *user_id;
    int64_t balance, bought, spent, refunded, granted;
    char *last_activity;
    char *email;
} lr_admin_user;
typedef struct {
    lr_admin_user *v;
    size_t n;
} lr_admin_user_list;
lr_err lr_admin_users(lr_admin *a, const lr_admin_user_filter *f, lr_admin_user_list *out);
void lr_admin_user_list_clear(lr_admin_user_list *l);

/* Records the email a verified token of user_id carried, for the search
 * above. Cheap when nothing changed (a per-process cache of what was
 * written), so every authenticated request may call it; when the admin
 * connection is busy with a long read the write is skipped and happens on
 * a later request, so a caller never waits for one. */
void lr_admin_note_email(lr_admin *a, const char *user_id, const char *email);

/* One-time sign-in links (lensroom admin-link). create: a new random
 * token (64 hex characters) for user_id, alive ttl_s seconds; only its
 * SHA-256 is stored. use: spends the token and gives its user;
 * LR_ERR_NOT_FOUND when it is unknown, spent or expired. Single use
 * holds across processes (one conditional UPDATE). */
lr_err lr_admin_link_create(lr_admin *a, const char *user_id, int ttl_s, char token[65]);
lr_err lr_admin_link_use(lr_admin *a, const char *token, char user_id[LR_UUID_LEN + 1]);

/* One admin action: who (a user id, or "cli"/"service-key"), what, on
 * whom, details (borrowed, may be NULL) and the request id (NULL from the
 * command line). */
typedef struct {
    const char *actor;
    const char *action;
    const char *subject;
    json_t *detail;
    const char *request_id;
} lr_admin_action;
lr_err lr_admin_audit(lr_admin *a, const lr_admin_action *act);

#endif
