/* Between admin.c and the admin backends (admin_sqlite.c, admin_pg.c).
 *
 * admin.c owns the records and their decoding; a backend owns one
 * connection and the SQL text of each query below, in its own dialect.
 * Every backend's query q takes the same parameters (text, NULL for SQL
 * NULL) and returns the same columns, in the order given here, as text.
 */
#ifndef LR_DB_ADMIN_INT_H
#define LR_DB_ADMIN_INT_H

#include <pthread.h>

#include "db/admin.h"
#include "db/rows.h"

enum {
    AQ_READY,         /* (version) -> one row when that migration is applied */
    AQ_GEN_COUNTS,    /* () -> model, status, n */
    AQ_LEDGER_TOTALS, /* () -> type, rows, amount */
    AQ_BALANCE_TOTAL, /* () -> sum of balances */
    /* The range queries take (since, until, m1, m2, d1, d2): [since, until)
     * is [since, m1) and [m2, until) read from the rows, and the whole UTC
     * days d1 (YYYY-MM-DD) up to d2 (excluded) read from the rollups
     * (range_split in admin.c). */
    AQ_DAYS,        /* (range) -> day, spent, bought, refunded, granted */
    AQ_MODEL_DAYS,  /* (range) -> day, model, n */
    AQ_MODELS,      /* (range) -> model, total, succeeded, failed, canceled, p50, p95 */
    AQ_TOP_USERS,   /* (since, until, limit) -> user_id, spent, generations */
    AQ_GENERATIONS, /* (user, status, model, since, before_created_at, before_id, limit)
                       -> the generation columns of rows.h */
    AQ_GEN_LEDGER,  /* (generation_id) -> the ledger columns of rows.h */
    AQ_AUDIT,       /* (id, actor, action, subject, detail, request_id, created_at) */
    AQ_USERS,       /* (lo, hi, after, limit, email_lo, email_hi) -> user_id, balance, bought,
                       spent, refunded, granted, last_activity, email */
    AQ_NOTE_EMAIL,  /* (user_id, email, email_lc, seen_at) */
    AQ_LINK_CREATE, /* (token_hash, user_id, expires_at, created_at) */
    AQ_LINK_USE,    /* (token_hash, now) -> user_id, when the link was unused and alive */
    AQ_COUNT
};

struct lr_admin {
    /* Runs query q with n parameters, handing each row (ncols text
     * columns) to add; called with mu held. */
    lr_err (*rows)(lr_admin *a, int q, int n, const char *const *params, lr_db_row_fn add,
                   int ncols, void *list);
    void (*close)(lr_admin *a);
    const char *latest_migration; /* the newest migration this binary applies */
    pthread_mutex_t mu;
    /* What lr_admin_note_email wrote: slot = hash(user) % N holds the user
     * and a hash of the email (collisions only cost a write). */
    pthread_mutex_t seen_mu;
    struct {
        char user[LR_UUID_LEN + 1];
        uint64_t email;
    } seen[4096];
};

lr_err lr_admin_sqlite_open(const char *path, lr_admin **out, char **errmsg);
lr_err lr_admin_pg_open(const char *url, lr_admin **out, char **errmsg);

/* The newest migration of each backend's list (sqlite.c, pg.c). */
const char *lr_db_sqlite_latest_migration(void);
const char *lr_db_pg_latest_migration(void);

#endif
