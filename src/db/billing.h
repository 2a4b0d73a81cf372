/* Payments and outgoing webhooks in the database.
 *
 * Money never moves here: a purchase or a take-back is a ledger row that
 * lr_db_ops.adjust writes (idempotent by key); this store keeps what Stripe
 * sold (payments, one per Checkout Session), which Stripe events were
 * handled, the webhook endpoints and the delivery queue.
 *
 * One SQL text per operation serves both backends: a small driver
 * (billing_sqlite.c, billing_pg.c) runs it with text parameters $1..$n and
 * hands rows back as text. On PostgreSQL the tables live in the lensroom
 * schema (the driver's search_path); the queue is claimed with FOR UPDATE
 * SKIP LOCKED, so several processes never take the same delivery. Any
 * thread may call; calls block (never on the loop thread).
 *
 * Records are owned by the caller and released with their _clear.
 */
#ifndef LR_DB_BILLING_H
#define LR_DB_BILLING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/util.h"
#include "db/db.h"

typedef struct lr_billing_db lr_billing_db;

/* Each result row as text columns (NULL where SQL NULL). */
typedef void (*lr_billing_row_fn)(const char *const *col, int ncol, void *ctx);

/* One statement of a batch; *changes (changes may be NULL) gets the rows
 * it changed. */
typedef struct {
    const char *sql;
    const char *const *params;
    int n;
    long *changes;
} lr_billing_stmt;

/* A backend: runs one statement; *changes (may be NULL) gets the rows it
 * changed. LR_ERR_UNAVAILABLE when the server is away, LR_ERR_DB (logged)
 * when the statement failed. exec_all runs n statements in one
 * transaction, all or nothing (on SQLite: one job of the ledger's writer,
 * so many rows cost one place in its next commit). */
typedef struct {
    lr_err (*exec)(lr_billing_db *db, const char *sql, const char *const *params, int n,
                   lr_billing_row_fn row, void *ctx, long *changes);
    lr_err (*exec_all)(lr_billing_db *db, const lr_billing_stmt *v, size_t n);
    void (*close)(lr_billing_db *db);
} lr_billing_driver;

struct lr_billing_db {
    const lr_billing_driver *drv;
    bool postgres;
};

/* The store beside db (opened from url, and migrated): on PostgreSQL a
 * connection of its own; on SQLite db's writer connection, borrowed per
 * statement (lr_db_sqlite_writer), so the two never contend for the file's
 * write lock. db must outlive the store. */
lr_err lr_billing_db_open(lr_db *db, const char *url, lr_billing_db **out, char **errmsg);
void lr_billing_db_close(lr_billing_db *db);
lr_err lr_billing_sqlite_open(lr_db *db, lr_billing_db **out);
lr_err lr_billing_pg_open(const char *url, lr_billing_db **out, char **errmsg);

/* ---- payments ---- */

typedef struct {
    char id[LR_UUID_LEN + 1];
    char *session_id, *payment_intent, *user_id, *pack_id, *currency, *event_id;
    int credits, credits_reversed;
    int64_t amount; /* smallest currency unit */
} lr_payment;
void lr_payment_clear(lr_payment *p);

/* Records a paid session unless one is recorded (same session_id): *out
 * is the row as stored, the first recording's. p->id is chosen here. */
lr_err lr_billing_payment_record(lr_billing_db *db, const lr_payment *p, lr_payment *out);
/* NOT_FOUND when no payment has this PaymentIntent. */
lr_err lr_billing_payment_by_intent(lr_billing_db *db, const char *intent, lr_payment *out);
/* Fills credit_transactions.payment_id of the purchase row. */
lr_err lr_billing_payment_link(lr_billing_db *db, const char *payment_id,
                               const char *transaction_id);
/* credits_reversed rises to total (never falls). */
lr_err lr_billing_payment_reversed(lr_billing_db *db, const char *payment_id, int total);
lr_err lr_billing_event_seen(lr_billing_db *db, const char *event_id, bool *seen);
lr_err lr_billing_event_done(lr_billing_db *db, const char *event_id, const char *type);

/* ---- endpoints and secrets ---- */

typedef struct {
    char *id, *url, *events; /* events: comma-separated types */
    char *secret;            /* only when created or rotated */
    int64_t created_at;
} lr_endpoint;
typedef struct {
    lr_endpoint *v;
    size_t n;
} lr_endpoint_list;
void lr_endpoint_clear(lr_endpoint *e);
void lr_endpoint_list_clear(lr_endpoint_list *l);

/* A new whsec_ secret (base64 of 24 random bytes after the prefix). */
char *lr_billing_new_secret(void);
lr_err lr_billing_endpoint_add(lr_billing_db *db, const char *url, const char *events,
                               lr_endpoint *out);
lr_err lr_billing_endpoint_list(lr_billing_db *db, lr_endpoint_list *out);
/* NOT_FOUND for an unknown id (also a malformed one). */
lr_err lr_billing_endpoint_remove(lr_billing_db *db, const char *id);
/* A new secret for endpoint id (out->secret); the one it replaces keeps
 * signing beside it until grace_until (ms since the epoch; 0: not at
 * all), so receivers can switch without a gap. */
lr_err lr_billing_endpoint_rotate(lr_billing_db *db, const char *id, int64_t grace_until,
                                  lr_endpoint *out);
/* user's secret for the webhooks of single generations, made on first use. */
lr_err lr_billing_user_secret(lr_billing_db *db, const char *user_id, char **secret);
/* events: comma-separated filter (start, output, logs, completed). */
lr_err lr_billing_generation_hook(lr_billing_db *db, const char *generation_id, const char *user_id,
                                  const char *url, const char *events);

/* ---- the delivery queue ---- */

typedef struct {
    const char *message_id;    /* 16 hex: deliveries are msg_<id>_<destination> */
    const char *type;          /* generation.succeeded, credits.low, ... */
    const char *payload;       /* the JSON body, as sent on every attempt */
    const char *generation_id; /* also to this generation's own webhook, or NULL */
    const char *filter;        /* its filter word (start, completed) */
    const char *outbox_id;     /* the outbox row (a generation id) this empties, or NULL */
    int64_t now_ms;
} lr_event_req;

/* Queues the event for every endpoint subscribed to its type (and the
 * generation's webhook); *queued (may be NULL): how many deliveries. A
 * message queued before (same message_id) is not queued twice. */
lr_err lr_billing_enqueue(lr_billing_db *db, const lr_event_req *ev, long *queued);
/* The same for n events in one transaction, each also emptying its
 * outbox row; an event without a payload only empties its row. */
lr_err lr_billing_enqueue_all(lr_billing_db *db, const lr_event_req *evs, size_t n, long *queued);

/* ---- the outbox (settle writes it, db.h) ---- */

typedef struct {
    char generation_id[LR_UUID_LEN + 1];
    char user_id[LR_UUID_LEN + 1];
    char event_type[LR_EVENT_TYPE_LEN];
} lr_outbox_row;
typedef struct {
    lr_outbox_row *v;
    size_t n;
} lr_outbox_list;

/* Claims up to limit outbox rows for token until lease_until (ms); rows
 * whose claim ran out (their process died) are taken again. The caller
 * frees out->v. */
lr_err lr_billing_outbox_claim(lr_billing_db *db, const char *token, int64_t now_ms,
                               int64_t lease_until, int limit, lr_outbox_list *out);

typedef struct {
    char *id, *endpoint_id, *url, *event_type, *payload;
    char *secret;          /* NULL: its endpoint was removed */
    char *previous_secret; /* a rotated-out secret still signing, or NULL */
    int attempts;          /* before this one */
    int64_t created_at;
} lr_delivery;
typedef struct {
    lr_delivery *v;
    size_t n;
} lr_delivery_list;
void lr_delivery_list_clear(lr_delivery_list *l);

/* Claims up to limit due deliveries for token until lease_until (ms). */
lr_err lr_billing_claim(lr_billing_db *db, const char *token, int64_t now_ms, int64_t lease_until,
                        int limit, lr_delivery_list *out);

typedef struct {
    const lr_delivery *d;
    int status_code; /* 0: no HTTP answer */
    int64_t latency_ms;
    const char *error; /* NULL on success */
    bool delivered;
    int64_t next_attempt_at; /* 0: give up (failed) */
    int64_t now_ms;
} lr_delivery_result;
/* Records the attempt in the log and the delivery's new state. */
lr_err lr_billing_finish(lr_billing_db *db, const lr_delivery_result *r);
/* The same for n attempts, in one transaction. */
lr_err lr_billing_finish_all(lr_billing_db *db, const lr_delivery_result *r, size_t n);
/* Hands back the claims whose token starts with prefix (shutdown). */
lr_err lr_billing_release(lr_billing_db *db, const char *prefix);
/* Due again now, with a fresh 24 h window. NOT_FOUND for an unknown id. */
lr_err lr_billing_replay(lr_billing_db *db, const char *delivery_id, int64_t now_ms);

typedef struct {
    char *delivery_id, *event_type, *delivery_status, *error;
    int attempt, status_code;
    int64_t latency_ms, created_at;
} lr_attempt;
typedef struct {
    lr_attempt *v;
    size_t n;
} lr_attempt_list;
void lr_attempt_list_clear(lr_attempt_list *l);
/* The newest attempts to an endpoint, newest first. */
lr_err lr_billing_attempts(lr_billing_db *db, const char *endpoint_id, int limit,
                           lr_attempt_list *out);

/* Low balance: below says where the balance is now; *fire is true once
 * per crossing from at-or-over to below. */
lr_err lr_billing_low_balance(lr_billing_db *db, const char *user_id, bool below, bool *fire);

#endif
