/* Timer heap on a dedicated thread, woken through libcurl's multi handle
 * (curl_multi_wakeup), so provider calls and downloads share one poll with
 * the timers. The worker pool is a plain queue and condition. */
#include "loop/loop.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "core/util.h"

typedef struct {
    int64_t due;
    lr_timer_id id;
    lr_loop_fn fn;
    void *arg;
} timer;

struct lr_loop {
    pthread_t thread;
    bool running;
    bool stop;
    CURLM *multi;
    pthread_mutex_t mu;
    timer *heap;
    size_t n, cap;
    lr_timer_id next_id;
};

static void heap_swap(timer *h, size_t a, size_t b)
{
    timer t = h[a];
    h[a] = h[b];
    h[b] = t;
}

static bool earlier(const timer *a, const timer *b)
{
    return a->due < b->due || (a->due == b->due && a->id < b->id);
}

static void sift_up(timer *h, size_t i)
{
    while (i > 0 && earlier(&h[i], &h[(i - 1) / 2])) {
        heap_swap(h, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void sift_down(timer *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && earlier(&h[l], &h[m]))
            m = l;
        if (r < n && earlier(&h[r], &h[m]))
            m = r;
        if (m == i)
            return;
        heap_swap(h, i, m);
        i = m;
    }
}

static void heap_remove(lr_loop *l, size_t i)
{
    l->heap[i] = l->heap[--l->n];
    if (i < l->n) {
        sift_down(l->heap, l->n, i);
        sift_up(l->heap, i);
    }
}

lr_loop *lr_loop_new(void)
{
    lr_loop *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->multi = curl_multi_init();
    pthread_mutex_init(&l->mu, NULL);
    l->next_id = 1;
    return l;
}

/* Hands finished transfers to their owners; true when any finished. */
static bool finish_transfers(lr_loop *l)
{
    bool any = false;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(l->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *easy = m->easy_handle;
        CURLcode rc = m->data.result;
        lr_transfer *t = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
        curl_multi_remove_handle(l->multi, easy);
        any = true;
        if (t)
            t->done(t, rc);
    }
    return any;
}

static void *loop_main(void *arg)
{
    lr_loop *l = arg;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        if (l->stop) {
            pthread_mutex_unlock(&l->mu);
            break;
        }
        int64_t now = lr_monotonic_ms();
        if (l->n > 0 && l->heap[0].due <= now) {
            timer t = l->heap[0];
            heap_remove(l, 0);
            pthread_mutex_unlock(&l->mu);
            t.fn(t.arg);
            continue;
        }
        int wait = l->n > 0 ? (int)(l->heap[0].due - now) : 1000;
        pthread_mutex_unlock(&l->mu);
        int running = 0;
        curl_multi_perform(l->multi, &running);
        if (finish_transfers(l))
            continue; /* callbacks may have added timers or transfers */
        curl_multi_poll(l->multi, NULL, 0, wait, NULL);
    }
    return NULL;
}

lr_err lr_loop_start(lr_loop *l)
{
    if (pthread_create(&l->thread, NULL, loop_main, l) != 0)
        return LR_ERR_IO;
    l->running = true;
    return LR_OK;
}

void lr_loop_stop(lr_loop *l)
{
    if (!l->running)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_mutex_unlock(&l->mu);
    curl_multi_wakeup(l->multi);
    pthread_join(l->thread, NULL);
    l->running = false;
}

void lr_loop_free(lr_loop *l)
{
    if (!l)
        return;
    lr_loop_stop(l);
    curl_multi_cleanup(l->multi);
    pthread_mutex_destroy(&l->mu);
    free(l->heap);
    free(l);
}

lr_timer_id lr_loop_timer(lr_loop *l, int64_t delay_ms, lr_loop_fn fn, void *arg)
{
    pthread_mutex_lock(&l->mu);
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        timer *h = realloc(l->heap, cap * sizeof *h);
        if (!h)
            abort(); /* a lost timer would strand a generation; fail loudly */
        l->heap = h;
        l->cap = cap;
    }
    lr_timer_id id = l->next_id++;
    l->heap[l->n] = (timer){lr_monotonic_ms() + (delay_ms > 0 ? delay_ms : 0), id, fn, arg};
    sift_up(l->heap, l->n++);
    bool first = l->heap[0].id == id;
    pthread_mutex_unlock(&l->mu);
    if (first)
        curl_multi_wakeup(l->multi);
    return id;
}

void lr_loop_post(lr_loop *l, lr_loop_fn fn, void *arg)
{
    lr_loop_timer(l, 0, fn, arg);
}

void lr_loop_add_transfer(lr_loop *l, lr_transfer *t)
{
    curl_easy_setopt(t->easy, CURLOPT_PRIVATE, (char *)t);
    if (curl_multi_add_handle(l->multi, t->easy) != CURLM_OK)
        t->done(t, CURLE_FAILED_INIT);
}

bool lr_loop_cancel(lr_loop *l, lr_timer_id id)
{
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < l->n; i++) {
        if (l->heap[i].id == id) {
            heap_remove(l, i);
            pthread_mutex_unlock(&l->mu);
            return true;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return false;
}

typedef struct job {
    lr_loop_fn fn;
    void *arg;
    struct job *next;
} job;

struct lr_workers {
    pthread_t *threads;
    int n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, *tail;
    int queued, running; /* jobs waiting for a thread; jobs a thread runs */
    bool stop;
};

static void *worker_main(void *arg)
{
    lr_workers *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (!w->head && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        job *j = w->head;
        if (!j) {
            pthread_mutex_unlock(&w->mu);
            return NULL;
        }
        w->head = j->next;
        if (!w->head)
            w->tail = NULL;
        w->queued--;
        w->running++;
        pthread_mutex_unlock(&w->mu);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&w->mu);
        w->running--;
        pthread_mutex_unlock(&w->mu);
    }
}

lr_workers *lr_workers_new(int threads)
{
    lr_workers *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->threads = calloc((size_t)threads, sizeof *w->threads);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&w->threads[i], NULL, worker_main, w) != 0)
            break;
        w->n++;
    }
    return w;
}

void lr_workers_submit(lr_workers *w, lr_loop_fn fn, void *arg)
{
    job *j = malloc(sizeof *j);
    if (!j)
        abort();
    *j = (job){fn, arg, NULL};
    pthread_mutex_lock(&w->mu);
    if (w->tail)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    w->queued++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void lr_workers_depth(lr_workers *w, int *queued, int *running)
{
    pthread_mutex_lock(&w->mu);
    *queued = w->queued;
    *running = w->running;
    pthread_mutex_unlock(&w->mu);
}

void lr_workers_free(lr_workers *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->n; i++)
        pthread_join(w->threads[i], NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->threads);
    free(w);
}
