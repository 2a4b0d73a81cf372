/* What the files of pipeline/ share and nothing outside it may use: the
 * pipeline's state and the steps lr_generation_begin takes in order.
 * Entry points call lr_generation_begin, never these.
 */
#ifndef LR_PIPELINE_INTERNAL_H
#define LR_PIPELINE_INTERNAL_H

#include <pthread.h>

#include "pipeline/pipeline.h"

#define BUCKETS 1024

typedef struct run run;
typedef struct user_slots user_slots;
typedef struct lr_graph_run lr_graph_run;

typedef struct {
    const char *generation_id;
    const char *user_id;
    const lr_model *model;
    const char *prompt;
    json_t *params;
    int outputs_count;
    int unit_price; /* credits charged per output: what a failed one refunds */
    const char *created_at;
    json_t *input_urls;        /* public URLs of input images, or NULL */
    const lr_strv *input_keys; /* their object keys (removed with the generation), or NULL */
    /* A node of a graph run (NULL otherwise): called once with how the
     * generation ended, after its waiters, on the loop thread or a worker;
     * must not block. The run's executor starts what comes next from it. */
    lr_wait_fn ended;
    void *ended_ctx;
    const char *request_id; /* the request that started it, for its log lines; NULL: none */
} lr_run_req;

struct lr_pipeline {
    lr_db *db;
    lr_store *store;
    lr_provider *provider;
    const lr_catalog *catalog;
    const lr_net_policy *net;
    lr_observer_fn observer;
    void *observer_ctx;
    lr_previews *previews; /* NULL: no derived media */
    lr_loop *loop;
    lr_workers *workers;
    pthread_mutex_t mu;
    pthread_cond_t idle;
    run *buckets[BUCKETS];
    int in_flight;
    user_slots *slots[BUCKETS];
    int lease_s;
    int retry_ms;                /* first delay before retrying a download */
    char owner[LR_UUID_LEN + 1]; /* this process's instance id */
    /* the maintenance thread (lease renewal, recovery); mu guards the flags */
    pthread_t maint;
    pthread_cond_t maint_cv;
    bool maint_running, maint_stop, purge_queued;
    /* the heartbeat (pipeline.c's beat): when it last took, and before when
     * this process takes no dead process's work over (INT64_MAX: while its
     * beats fail) */
    int64_t beat_ms, quiet_until_ms;
    lr_graph_run *graph_runs;     /* graph runs this process executes (mu) */
    bool draining;                /* shutting down: graph runs start no more nodes (mu) */
    const lr_pipeline_part *part; /* graph runs' recovery and release, or NULL */
};

/* Whether this process may take over the work of processes whose
 * heartbeat ended (db.h's dead), or only of those that released theirs
 * (pipeline.c's beat says when). Maintenance thread. */
bool lr_pipeline_takes_dead(const lr_pipeline *p);
/* Marks r as claimed by this process (owner and lease_until, which points
 * into buf) before it is reserved. */
void lr_pipeline_claim(lr_pipeline *p, lr_reserve_req *r, char buf[32]);
/* Per-user concurrency: admit takes one of user's max slots (max <= 0:
 * unlimited) or returns false; a started generation gives its slot back
 * when it settles; a caller that admitted but did not start calls unadmit. */
bool lr_pipeline_admit(lr_pipeline *p, const char *user, int max);
void lr_pipeline_unadmit(lr_pipeline *p, const char *user);
/* Starts a reserved, admitted generation. wait may be NULL (nobody waits). */
lr_err lr_pipeline_start(lr_pipeline *p, const lr_run_req *req, int64_t timeout_ms, lr_wait_fn wait,
                         void *ctx);
/* Resumes a reserved generation whose provider tasks (task_ids, one per
 * output, NULL where none: that output fails) a dead process started. */
lr_err lr_pipeline_resume(lr_pipeline *p, const lr_run_req *req, const lr_strv *task_ids);

#endif
