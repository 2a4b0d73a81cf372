/* Group commit (batch.h): a FIFO of waiting jobs and the writer threads
 * that drain it, one transaction per drained batch. One mutex guards the
 * queue and every job's done flag; each caller sleeps on its own
 * condition variable, so answering a batch wakes exactly its callers. */
#include "db/batch.h"

#include <stdlib.h>

#include "core/log.h"
#include "core/util.h"

typedef struct {
    lr_db_batch *b;
    void *conn;
    pthread_t tid;
} writer;

struct lr_db_batch {
    lr_db_batch_opts o;
    pthread_mutex_t mu;
    pthread_cond_t work; /* a job was queued, or stop */
    lr_db_job *head, *tail;
    bool stopping;
    uint64_t jobs, batches;
    writer *w;
};

/* Up to max jobs off the queue, into out; 0 once stopped and drained. */
static size_t take(lr_db_batch *b, lr_db_job **out)
{
    pthread_mutex_lock(&b->mu);
    while (!b->head && !b->stopping)
        pthread_cond_wait(&b->work, &b->mu);
    size_t n = 0;
    while (b->head && n < b->o.max_jobs) {
        out[n++] = b->head;
        b->head = b->head->next;
    }
    if (!b->head)
        b->tail = NULL;
    if (b->head) /* more than one batch's worth: another writer may start */
        pthread_cond_signal(&b->work);
    pthread_mutex_unlock(&b->mu);
    return n;
}

/* Wakes the waiting callers, then completes the posted jobs. A waiting
 * caller's job may be gone as soon as the lock is released, so the posted
 * ones are gathered to the front of jobs first. */
static void answer(lr_db_batch *b, lr_db_job **jobs, size_t n)
{
    size_t posted = 0;
    pthread_mutex_lock(&b->mu);
    for (size_t i = 0; i < n; i++) {
        lr_db_job *j = jobs[i];
        if (j->complete) {
            jobs[i] = jobs[posted];
            jobs[posted++] = j;
            continue;
        }
        j->done = true;
        pthread_cond_signal(&j->cv);
    }
    b->jobs += n;
    b->batches++;
    pthread_mutex_unlock(&b->mu);
    for (size_t i = 0; i < posted; i++)
        jobs[i]->complete(jobs[i]);
}

static void *writer_main(void *arg)
{
    writer *w = arg;
    lr_db_batch *b = w->b;
    lr_db_job **jobs = lr_xcalloc(b->o.max_jobs, sizeof *jobs);
    size_t n;
    while ((n = take(b, jobs)) > 0) {
        b->o.run(w->conn, jobs, n);
        answer(b, jobs, n);
        if (b->o.after)
            b->o.after(w->conn);
    }
    free(jobs);
    return NULL;
}

lr_db_batch *lr_db_batch_start(const lr_db_batch_opts *o)
{
    lr_db_batch *b = lr_xcalloc(1, sizeof *b);
    b->o = *o;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->work, NULL);
    b->w = lr_xcalloc((size_t)o->writers, sizeof *b->w);
    for (int i = 0; i < o->writers; i++) {
        b->w[i] = (writer){.b = b, .conn = o->conns[i]};
        if (pthread_create(&b->w[i].tid, NULL, writer_main, &b->w[i]) != 0) {
            lr_error("%s: cannot start a writer thread", o->name);
            abort(); /* as an allocation failure: nothing sensible is left to do */
        }
    }
    return b;
}

/* Appends j to the queue; call with b->mu held. */
static void enqueue(lr_db_batch *b, lr_db_job *j)
{
    j->next = NULL;
    j->done = false;
    j->result = LR_ERR_DB;
    if (b->tail)
        b->tail->next = j;
    else
        b->head = j;
    b->tail = j;
    pthread_cond_signal(&b->work);
}

void lr_db_batch_post(lr_db_batch *b, lr_db_job *j)
{
    pthread_mutex_lock(&b->mu);
    enqueue(b, j);
    pthread_mutex_unlock(&b->mu);
}

lr_err lr_db_batch_submit(lr_db_batch *b, lr_db_job *j)
{
    j->complete = NULL;
    pthread_cond_init(&j->cv, NULL);
    pthread_mutex_lock(&b->mu);
    enqueue(b, j);
    while (!j->done)
        pthread_cond_wait(&j->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
    pthread_cond_destroy(&j->cv);
    return j->result;
}

void lr_db_batch_counts(lr_db_batch *b, uint64_t *jobs, uint64_t *batches)
{
    pthread_mutex_lock(&b->mu);
    *jobs = b->jobs;
    *batches = b->batches;
    pthread_mutex_unlock(&b->mu);
}

void lr_db_batch_stop(lr_db_batch *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->stopping = true;
    pthread_cond_broadcast(&b->work);
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < b->o.writers; i++)
        pthread_join(b->w[i].tid, NULL);
    if (b->jobs > b->batches) /* say so only when writes were grouped */
        lr_info("%s writer: %llu writes in %llu transactions", b->o.name,
                (unsigned long long)b->jobs, (unsigned long long)b->batches);
    pthread_cond_destroy(&b->work);
    pthread_mutex_destroy(&b->mu);
    free(b->w);
    free(b);
}
