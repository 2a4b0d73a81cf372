/* Group commit: many callers' writes in one transaction.
 *
 * A backend's writes (reserve, settle, set_stage, adjust, ...) are queued
 * here instead of each taking a connection and a commit of its own. One
 * writer thread (or a few) owns the backend's write connection, takes
 * every job that queued up while its previous transaction was committing
 * (at most max_jobs), and hands them to the backend's run function, which
 * executes them in ONE transaction, gives each job its own answer and
 * commits once: one WAL flush for the whole batch. There is no timer: the
 * commit in flight is the tick, so a lone request waits for nobody and a
 * busy server batches as much as arrives during a commit.
 *
 * The caller blocks in lr_db_batch_submit on its own condition variable
 * until its job is answered, so the lr_db_ops functions keep their
 * blocking signatures; such a job lives on the caller's stack, and
 * everything it points to must stay valid until submit returns. Or it
 * posts the job (lr_db_batch_post) and goes on: the job's complete
 * function runs on the writer thread once the batch committed, so a
 * request can wait for the database without holding a thread.
 */
#ifndef LR_DB_BATCH_H
#define LR_DB_BATCH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Embedded in a backend's job struct (the backend reaches its struct with
 * container_of-style arithmetic, or keeps lr_db_job first). */
typedef struct lr_db_job {
    struct lr_db_job *next;
    lr_err result; /* set by the run function */
    bool done;
    pthread_cond_t cv;
    /* Posted jobs: runs once on the writer thread after the commit, with
     * no lock held; it owns j from then on. Must not block. */
    void (*complete)(struct lr_db_job *j);
} lr_db_job;

/* Runs jobs[0..n) in one transaction on the writer's connection, setting
 * each job's result. conn is the writer's own state (see _start). Called
 * on a writer thread only. */
typedef void (*lr_db_batch_run_fn)(void *conn, lr_db_job **jobs, size_t n);

typedef struct lr_db_batch lr_db_batch;

typedef struct {
    const char *name; /* for the log: "sqlite", "postgres" */
    lr_db_batch_run_fn run;
    void **conns;    /* one per writer thread, the backend's own */
    int writers;     /* threads, one per conns[i] */
    size_t max_jobs; /* per transaction */
    /* Optional: runs on a writer thread after each batch was answered, with
     * that writer's conn: upkeep no caller should wait for. */
    void (*after)(void *conn);
} lr_db_batch_opts;

/* Starts the writer threads. */
lr_db_batch *lr_db_batch_start(const lr_db_batch_opts *o);

/* Queues j and waits until a writer has answered it; returns j->result. */
lr_err lr_db_batch_submit(lr_db_batch *b, lr_db_job *j);

/* Queues j (j->complete set; j and what it points to owned by the caller
 * until complete runs) and returns at once. */
void lr_db_batch_post(lr_db_batch *b, lr_db_job *j);

/* Answers what is queued, stops and joins the writers, logs how many jobs
 * went in how many transactions, frees b. NULL is fine. */
void lr_db_batch_stop(lr_db_batch *b);

/* Jobs and transactions so far (for tests and the log). */
void lr_db_batch_counts(lr_db_batch *b, uint64_t *jobs, uint64_t *batches);

#endif
