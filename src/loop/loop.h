/* The event loop: one thread that owns every wait in the server.
 *
 * Timers (mock latency, infer wait limits, retries, polls) and the real
 * providers' libcurl multi transfers (API calls, downloads) all run here, so a generation that
 * waits holds no thread. Callbacks run on the loop thread and must not
 * block; CPU or disk work goes to the worker pool (lr_workers_submit),
 * which has a fixed number of threads. lr_loop_timer and lr_loop_cancel
 * may be called from any thread.
 */
#ifndef LR_LOOP_H
#define LR_LOOP_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"

typedef struct lr_loop lr_loop;
typedef void (*lr_loop_fn)(void *arg);
typedef uint64_t lr_timer_id;

lr_loop *lr_loop_new(void);
/* Starts the loop thread; LR_ERR_IO when it cannot be made. */
lr_err lr_loop_start(lr_loop *l);
/* Stops the thread; pending timers are dropped without running. */
void lr_loop_stop(lr_loop *l);
void lr_loop_free(lr_loop *l);

/* Runs fn(arg) on the loop thread after delay_ms; returns an id for cancel. */
lr_timer_id lr_loop_timer(lr_loop *l, int64_t delay_ms, lr_loop_fn fn, void *arg);
/* True when the timer was removed before running, false when it ran or
 * is running. */
bool lr_loop_cancel(lr_loop *l, lr_timer_id id);

/* Runs fn(arg) on the loop thread as soon as possible (any thread). */
void lr_loop_post(lr_loop *l, lr_loop_fn fn, void *arg);

/* A libcurl transfer driven by the loop. The owner embeds the struct in its
 * own state, sets easy and done, and adds it on the loop thread; done runs
 * there once with the result, after the handle left the multi. The owner
 * keeps the easy handle. A transfer still running at shutdown is simply
 * dropped: its owner frees the handle (curl_easy_cleanup detaches it). */
typedef struct lr_transfer {
    CURL *easy;
    void (*done)(struct lr_transfer *t, CURLcode rc);
} lr_transfer;
void lr_loop_add_transfer(lr_loop *l, lr_transfer *t);

typedef struct lr_workers lr_workers;
lr_workers *lr_workers_new(int threads);
void lr_workers_submit(lr_workers *w, lr_loop_fn fn, void *arg);
/* Jobs submitted and waiting for a thread, and jobs a thread is running
 * now (any thread; for /metrics). */
void lr_workers_depth(lr_workers *w, int *queued, int *running);
/* Runs what is queued, then joins the threads. */
void lr_workers_free(lr_workers *w);

#endif
