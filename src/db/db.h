/* The database interface: credits, the ledger and generations.
 *
 * Each backend (SQLite in sqlite.c, PostgreSQL in pg.c) fills an lr_db_ops
 * table; tests/unit/test_ledger.c runs the same conformance suite on both.
 * Every operation that moves credits is one transaction inside the
 * backend, so the money rules hold whatever happens between calls:
 *   - reserve: balance check + deduction + charge row + generation row;
 *   - settle:  final status + result/error + at most one refund row
 *              (a unique index on (generation_id) for refunds enforces it);
 *   - adjust:  balance change + ledger row, idempotent by key.
 * Balances never go below zero (CHECK constraint and guarded UPDATE).
 * All functions are safe to call from any thread; backends pool their
 * connections.
 *
 * Writes take typed requests (lr_reserve_req, lr_settle_req); reads fill
 * typed records (lr_generation, lr_ledger_row, ...) that the caller owns
 * and releases with the matching _clear function, which also accepts a
 * zeroed record. Field names are the columns', never the API's: the JSON
 * a client sees is rendered in api/render.c. json_t and lr_strv fields in requests
 * are borrowed; json_t fields in records (params, metadata: opaque objects a
 * user or admin supplied) are references the record owns.
 */
#ifndef LR_DB_H
#define LR_DB_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"
#include "core/util.h"

typedef struct lr_db lr_db;

typedef struct {
    const char *generation_id; /* chosen by the caller (UUID) */
    const char *user_id;
    const char *type;  /* photo | video | edit | text */
    const char *model; /* catalog id */
    const char *provider;
    const char *prompt;
    json_t *params; /* validated params, stored as given */
    int outputs_count;
    int cost; /* total: outputs_count x credit cost */
    const char *created_at;
    const char *owner;              /* the running process's instance id */
    const char *lease_until;        /* ISO time the claim holds until */
    const char *idempotency_key;    /* NULL: none */
    const char *request_hash;       /* SHA-256 hex of the request body */
    const char *key_expired_before; /* keys of generations created before are released */
} lr_reserve_req;

/* When reserve meets a live idempotency key it charges nothing and returns
 * LR_ERR_CONFLICT with the generation that holds the key. */
typedef struct {
    char generation_id[LR_UUID_LEN + 1];
    bool same_request;
} lr_key_holder;

typedef struct {
    const char *generation_id;
    const char *user_id;
    lr_strv result_urls;  /* public URLs */
    lr_strv storage_keys; /* object keys, for deletion later */
    lr_strv task_ids;     /* provider task ids */
    int succeeded_count;
    int failed_count;
    int refund; /* credits to give back (failed outputs) */
    const char *error_code;
    const char *error_message;
    const char *status; /* success | failed | canceled */
    const char *text;   /* text models' answer, kept in metadata */
    int64_t duration_ms;
} lr_settle_req;

typedef struct {
    const char *user_id;
    int amount; /* positive credit, negative debit */
    const char *type;
    const char *description;
    const char *idempotency_key; /* NULL: not idempotent */
    json_t *metadata;            /* may be NULL */
} lr_adjust_req;

typedef struct {
    int new_balance;
    char transaction_id[LR_UUID_LEN + 1];
    bool replayed; /* idempotency key seen before: nothing changed */
} lr_adjust_result;

typedef struct {
    const char *status;            /* NULL: any */
    const char *type;              /* NULL: any */
    const char *before_created_at; /* keyset cursor, both or neither */
    const char *before_id;
    int limit;
} lr_gen_filter;

/* A generation as stored. Strings are NULL where the column is. */
typedef struct {
    char *id, *user_id;
    char *type;  /* photo | video | edit | text */
    char *model; /* catalog id */
    char *prompt;
    char *status; /* pending | processing | success | failed | canceled */
    char *stage;  /* while processing: submitted | downloading | storing */
    char *provider;
    lr_strv result_urls; /* public URLs of the stored outputs */
    lr_strv task_ids;    /* the provider's task ids, one per output, NULL where none */
    int credits_used;    /* charged minus refunded */
    int outputs_count, succeeded_count, failed_count;
    json_t *params; /* the validated params as reserved, {} when none */
    char *error_code, *error_message;
    bool has_duration;
    int64_t duration_ms;
    char *created_at, *updated_at, *finished_at; /* ISO-8601 UTC */
    char *text;                                  /* a text model's answer */
    /* Derived media (media/jobs.h): none | processing | ready | failed;
     * the first output's poster and preview keys; preview the record the
     * job left (metadata.preview: {outputs: [{poster, preview, thumb,
     * medium}], error}), NULL when none. */
    char *preview_status;
    char *poster_path, *preview_path;
    json_t *preview;
} lr_generation;

/* One ledger row (credit_transactions). */
typedef struct {
    char *id;
    int amount; /* positive credit, negative debit */
    char *type; /* generation | refund | purchase | bonus | adjustment */
    char *description;
    json_t *metadata; /* as stored, {} when none */
    char *generation_id;
    char *created_at;
} lr_ledger_row;

/* An unfinished generation that reap_expired failed and refunded. */
typedef struct {
    char id[LR_UUID_LEN + 1];
    int refund;
} lr_reaped;

/* A deleted generation whose stored objects are still to remove. */
typedef struct {
    char *id;
    lr_strv keys;
} lr_purge;

/* A broken ledger invariant, from the audit query. */
typedef struct {
    char *kind, *subject, *detail;
} lr_violation;

/* Arrays of records: v[0..n), owned with their contents. */
typedef struct {
    lr_generation *v;
    size_t n;
} lr_generation_list;
typedef struct {
    lr_ledger_row *v;
    size_t n;
} lr_ledger_list;
typedef struct {
    lr_reaped *v;
    size_t n;
} lr_reaped_list;
typedef struct {
    lr_purge *v;
    size_t n;
} lr_purge_list;
typedef struct {
    lr_violation *v;
    size_t n;
} lr_violation_list;

/* Release what a record or list owns and zero it (the struct itself is
 * the caller's, usually on the stack). */
void lr_generation_clear(lr_generation *g);
void lr_generation_list_clear(lr_generation_list *l);
void lr_ledger_list_clear(lr_ledger_list *l);
void lr_reaped_list_clear(lr_reaped_list *l);
void lr_purge_list_clear(lr_purge_list *l);
void lr_violation_list_clear(lr_violation_list *l);

/* True for pending and processing: the generation has not settled. */
bool lr_generation_unfinished(const lr_generation *g);

/* The webhook event of a generation that ended with status (success,
 * failed, canceled): generation.succeeded, generation.failed, ... */
#define LR_EVENT_TYPE_LEN 48
void lr_generation_event_type(const char *status, char out[LR_EVENT_TYPE_LEN]);

/* A price quote as saved: lines (borrowed) is the priced request, opaque
 * to the database. */
typedef struct {
    const char *id; /* UUID chosen by the caller */
    const char *user_id;
    json_t *lines;
    int total;
    const char *created_at, *expires_at; /* ISO-8601 UTC */
} lr_quote_req;

/* A saved quote as read back; lines is a reference the record owns. */
typedef struct {
    json_t *lines;
    int total;
    bool expired; /* expires_at has passed */
} lr_quote;

void lr_quote_clear(lr_quote *q);

/* The end of a generation's preview job. json_t fields and keys are borrowed. */
typedef struct {
    const char *generation_id;
    const char *status;                     /* ready | failed */
    const char *poster_path, *preview_path; /* object keys, NULL: none */
    json_t *preview;                        /* kept as metadata.preview */
    lr_strv keys; /* the objects made, added to storage_keys (deleted with it); a view */
} lr_preview_req;
/* A graph run to reserve: one charge of total for all its nodes, the run
 * row and one pending generation row per node (cost: the node's share,
 * its run_cost). json_t fields are borrowed. */
typedef struct {
    const char *generation_id, *node_id;
    const char *type, *model, *provider;
    const char *prompt; /* the literal prompt, or the reference while unresolved */
    json_t *params;
    int outputs_count, cost;
    const char *cache_key; /* SHA-256 hex of what the node makes its outputs from */
    /* A node served from the cache (cost 0): written as succeeded with
     * the outputs of generation cached_from. */
    const char *cached_from;
    json_t *result_urls; /* its URLs (array) */
    const char *text;    /* its text (text models), or NULL */
} lr_run_node_req;

typedef struct {
    const char *run_id, *user_id;
    json_t *graph;       /* the request's graph, kept for recovery */
    json_t *charge_meta; /* the charge row's metadata: a line per node */
    const lr_run_node_req *nodes;
    size_t n;
    int total;
    const char *created_at;
    const char *owner, *lease_until;
    const char *idempotency_key, *request_hash; /* NULL: none */
} lr_run_reserve_req;

/* A run as stored. */
typedef struct {
    char *id, *user_id;
    char *status; /* running | success | failed | canceled */
    json_t *graph;
    int quoted;
    char *error_node, *error_code, *error_message;
    char *created_at, *updated_at, *finished_at;
} lr_run;

/* A node of a run as stored: its generation, in the run's terms. */
typedef struct {
    char *generation_id, *node_id;
    char *status, *stage;
    int run_cost;     /* its share of the run's charge */
    int credits_used; /* run_cost minus its refund */
    int refunded;
    int outputs_count;
    lr_strv result_urls, task_ids;
    char *text, *prompt, *image_url, *error_code, *error_message;
    char *created_at, *finished_at;
    char *cached_from; /* served from the cache: the generation it reused */
} lr_run_node;
void lr_run_node_clear(lr_run_node *n);

typedef struct {
    lr_run_node *v;
    size_t n;
} lr_run_node_list;

void lr_run_clear(lr_run *r);
void lr_run_node_list_clear(lr_run_node_list *l);

/* The answer of an asynchronous write: runs once, on a database writer
 * thread (or the caller's, see lr_db_reserve_async), with what the
 * blocking call would have returned; must not block. */
typedef void (*lr_db_done_fn)(void *ctx, lr_err e);

typedef struct {
    lr_err (*migrate)(lr_db *db);
    lr_err (*ping)(lr_db *db);
    /* LR_ERR_INSUFFICIENT with *balance set when short; nothing written.
     * LR_ERR_CONFLICT with *holder set when the idempotency key is taken. */
    lr_err (*reserve)(lr_db *db, const lr_reserve_req *r, int *balance, lr_key_holder *holder);
    /* Status and stage of an unfinished generation, and (when task_ids is
     * not NULL) the provider's task ids, one per output, null where none. */
    lr_err (*set_stage)(lr_db *db, const char *generation_id, const char *status, const char *stage,
                        const lr_strv *task_ids);
    /* LR_ERR_CONFLICT when the generation is already final (nothing written).
     * In the same transaction, a row in the webhook outbox when a webhook
     * wants to hear of this end (db/billing.h): no webhook write of its
     * own on the request path, and no event lost to a crash. */
    lr_err (*settle)(lr_db *db, const lr_settle_req *s, int *balance);
    /* reserve and settle without waiting (see lr_db_reserve_async); NULL
     * when the backend has none. */
    void (*reserve_async)(lr_db *db, const lr_reserve_req *r, int *balance, lr_key_holder *holder,
                          lr_db_done_fn done, void *ctx);
    void (*settle_async)(lr_db *db, const lr_settle_req *s, int *balance, lr_db_done_fn done,
                         void *ctx);
    lr_err (*balance)(lr_db *db, const char *user_id, int *balance);
    lr_err (*adjust)(lr_db *db, const lr_adjust_req *r, lr_adjust_result *out);
    /* user_id NULL: any user's (admin and pipeline use). NOT_FOUND for a
     * missing, deleted or (user_id set) someone else's generation. */
    lr_err (*get_generation)(lr_db *db, const char *user_id, const char *id, lr_generation *out);
    /* user_id's generations, newest first, filtered and keyset-paged by f. */
    lr_err (*list_generations)(lr_db *db, const char *user_id, const lr_gen_filter *f,
                               lr_generation_list *out);
    /* user_id's ledger rows, newest first; the cursor is both or neither. */
    lr_err (*list_transactions)(lr_db *db, const char *user_id, const char *before_created_at,
                                const char *before_id, int limit, lr_ledger_list *out);
    /* owner's heartbeat, alive until lease_until: one row, whatever the
     * backlog. A lease_until already past releases: owner's heartbeat row
     * goes and the leases of its unfinished generations and runs end, so
     * others take them over at once.
     *
     * Work claimed by another process is abandoned (claimable, reapable)
     * when its claimer's heartbeat ended (dead), or when its claimer has no
     * heartbeat row (it released, or predates heartbeats) and the row's
     * lease ran out. With dead false, only the second: a process that may
     * have missed others' beats (just started, or its database was away)
     * takes released work but no heartbeat's. */
    lr_err (*renew_leases)(lr_db *db, const char *owner, const char *lease_until);
    /* Claims for owner (until lease_until) up to limit abandoned unfinished
     * generations that have provider task ids, to resume them; *rows: the
     * generations as claimed. Concurrent claimers never take the same row. */
    lr_err (*claim_resumable)(lr_db *db, const char *owner, const char *lease_until, int limit,
                              bool dead, lr_generation_list *rows);
    /* Fails and refunds (like settle) up to limit abandoned unfinished
     * generations that have no provider task id: their process died before
     * the provider took them. Concurrent reapers never take the same row.
     * *reaped: what was. */
    lr_err (*reap_expired)(lr_db *db, const char *owner, int limit, bool dead,
                           lr_reaped_list *reaped);
    /* Hides a finished generation of user_id from its owner and queues its
     * objects for removal; *keys gets them. NOT_FOUND for missing, deleted
     * or someone else's; CONFLICT while it still runs. */
    lr_err (*mark_deleted)(lr_db *db, const char *user_id, const char *id, lr_strv *keys);
    /* The objects of deleted generations still to remove. */
    lr_err (*pending_purges)(lr_db *db, int limit, lr_purge_list *rows);
    /* All objects of generation id are gone. */
    lr_err (*purged)(lr_db *db, const char *id);
    /* Ledger invariant violations; none (n == 0) when the ledger is sound. */
    lr_err (*audit)(lr_db *db, lr_violation_list *violations);
    /* Saves a price quote (and drops quotes expired a day ago). */
    lr_err (*save_quote)(lr_db *db, const lr_quote_req *q);
    /* user_id's quote id; NOT_FOUND for a missing or someone else's. */
    lr_err (*get_quote)(lr_db *db, const char *user_id, const char *id, lr_quote *out);
    /* Marks the previews of succeeded generation id processing; *keys
     * gets its stored objects (storage_keys). NOT_FOUND unless it
     * succeeded, is a photo, video or edit, is not deleted and its
     * previews are none or processing (a job a stopped process left). */
    lr_err (*preview_claim)(lr_db *db, const char *id, lr_strv *keys);
    /* Ids of succeeded photo, video and edit generations whose previews
     * are processing, or none with finished_at after since (settled but
     * never queued: the process stopped first); oldest first. */
    lr_err (*preview_pending)(lr_db *db, const char *since, int limit, lr_strv *ids);
    /* Records a preview job's end; NOT_FOUND when the generation was
     * deleted meanwhile or its previews are not processing. */
    lr_err (*preview_finish)(lr_db *db, const lr_preview_req *r);
    /* Graph runs. reserve_run: LR_ERR_INSUFFICIENT with *balance when
     * short, LR_ERR_CONFLICT with holder (a run id) when the idempotency
     * key is taken; nothing written either way. */
    lr_err (*reserve_run)(lr_db *db, const lr_run_reserve_req *r, int *balance,
                          lr_key_holder *holder);
    /* user_id NULL: any user's. NOT_FOUND for a missing or someone else's. */
    lr_err (*get_run)(lr_db *db, const char *user_id, const char *id, lr_run *out);
    lr_err (*list_run_nodes)(lr_db *db, const char *run_id, lr_run_node_list *out);
    /* A pending node starts: processing, with its resolved prompt and
     * input image URL (NULL: none). CONFLICT when it is not pending any
     * more (canceled meanwhile). */
    lr_err (*start_node)(lr_db *db, const char *generation_id, const char *prompt,
                         const char *image_url);
    /* The run's final status; CONFLICT when it already has one. */
    lr_err (*finish_run)(lr_db *db, const char *id, const char *status, const char *error_node,
                         const char *error_code, const char *error_message);
    /* Claims for owner (until lease_until) up to limit abandoned running
     * runs (as claim_resumable), with their unfinished nodes; *ids: the
     * runs. */
    lr_err (*claim_runs)(lr_db *db, const char *owner, const char *lease_until, int limit,
                         bool dead, lr_strv *ids);
    /* The newest node of user_id's runs (of run from_run, when not NULL)
     * with cache_key that succeeded in full and is not deleted; NOT_FOUND
     * when there is none. */
    lr_err (*find_cached)(lr_db *db, const char *user_id, const char *cache_key,
                          const char *from_run, lr_run_node *out);
    void (*close)(lr_db *db);
} lr_db_ops;

struct lr_db {
    const lr_db_ops *ops;
    const char *backend; /* "sqlite" | "postgres" */
};

/* ops->reserve and ops->settle without holding the calling thread while
 * the transaction commits: the write joins the writer's next batch and
 * done(ctx, result) runs when it is answered, with *balance and *holder
 * filled as the blocking calls fill them. r / s and everything they point
 * to, balance and holder must stay valid until done runs. A backend
 * without asynchronous writes runs the blocking call and done before
 * returning. */
void lr_db_reserve_async(lr_db *db, const lr_reserve_req *r, int *balance, lr_key_holder *holder,
                         lr_db_done_fn done, void *ctx);
void lr_db_settle_async(lr_db *db, const lr_settle_req *s, int *balance, lr_db_done_fn done,
                        void *ctx);

/* postgres:// or postgresql:// URLs open PostgreSQL; anything else is a
 * SQLite file path. pool_size connections are opened (lazily for PG). */
lr_err lr_db_open(const char *url, int pool_size, lr_db **out, char **errmsg);
void lr_db_close(lr_db *db);
bool lr_db_url_is_postgres(const char *url);

/* Once, first thing in main, before any thread starts or any database is
 * opened: settings the database libraries take only then. SQLite's
 * allocation statistics go off (nothing reads them), so its allocations
 * no longer take one process-wide mutex each. */
void lr_db_library_init(void);

/* Backend constructors. */
lr_err lr_db_sqlite_open(const char *path, int pool_size, lr_db **out, char **errmsg);
lr_err lr_db_pg_open(const char *url, int pool_size, lr_db **out, char **errmsg);

/* inner measured: every operation counted and timed in the metrics
 * registry (db/metered.c). Closing it closes inner. */
lr_db *lr_db_metered(lr_db *inner);
/* Operations in progress through a metered db (0 for any other). */
int lr_db_metered_in_use(const lr_db *db);
/* SQLite only: runs fn on the backend's writer connection under its
 * write lock, so another module's statements on the same file (the
 * billing store) never wait on this process's own writer. */
struct sqlite3;
lr_err lr_db_sqlite_writer(lr_db *db, lr_err (*fn)(struct sqlite3 *h, void *ctx), void *ctx);

/* The ledger audit query, shared by the backends. */
extern const char lr_sql_audit[];

#endif
