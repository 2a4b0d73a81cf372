/* Scheduled backups (backup.h): one thread, woken by its deadline or by
 * stop. It shares nothing with the request path but the store (safe from
 * any thread) and its own status, read under a mutex. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "backup/backup.h"
#include "core/log.h"
#include "core/util.h"

struct lr_backup_sched {
    lr_backup_sched_opts o;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    bool stop;
    atomic_bool cancel;
    lr_backup_status st;
};

static void mirror_remove(void *ctx, const char *name)
{
    lr_backup_sched *s = ctx;
    lr_info("backup: rotation removed %s", name);
    if (!s->o.mirror)
        return;
    char *key = NULL;
    if (asprintf(&key, "%s%s%s", s->o.mirror_prefix, *s->o.mirror_prefix ? "/" : "", name) < 0)
        abort();
    lr_err e = s->o.mirror->ops->remove(s->o.mirror, key);
    if (e != LR_OK && e != LR_ERR_NOT_FOUND)
        lr_warn("backup: cannot remove the copy %s: %s", key, lr_strerror(e));
    free(key);
}

static void run_once(lr_backup_sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->st.running = true;
    pthread_mutex_unlock(&s->mu);
    lr_backup_result res;
    char *err = NULL;
    s->o.create.cancel = &s->cancel;
    lr_err e = lr_backup_create(&s->o.create, &res, &err);
    if (e == LR_OK && s->o.mirror)
        e = lr_backup_upload(s->o.mirror, s->o.mirror_prefix, res.path, &err);
    int kept = lr_backup_rotate(s->o.create.dir, &s->o.keep, mirror_remove, s);
    if (e == LR_OK)
        lr_info("backup: made %s (%lld bytes, %lld objects, %lld ms); %d kept", res.name,
                (long long)res.bytes, (long long)res.objects, (long long)res.duration_ms, kept);
    else
        lr_error("backup: failed: %s", err ? err : lr_strerror(e));
    pthread_mutex_lock(&s->mu);
    s->st.running = false;
    s->st.ran = true;
    s->st.ok = e == LR_OK;
    s->st.at_ms = lr_now_ms();
    s->st.duration_ms = res.duration_ms;
    s->st.bytes = e == LR_OK ? res.bytes : 0;
    s->st.kept = kept;
    s->st.made += e == LR_OK;
    snprintf(s->st.archive, sizeof s->st.archive, "%s", e == LR_OK ? res.name : "");
    snprintf(s->st.error, sizeof s->st.error, "%s", e == LR_OK ? "" : err ? err : lr_strerror(e));
    pthread_mutex_unlock(&s->mu);
    free(err);
}

static struct timespec deadline_in(int seconds)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += seconds;
    return t;
}

static void *sched_main(void *arg)
{
    lr_backup_sched *s = arg;
    /* Below the request threads: a backup takes what CPU they leave. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), 10);
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        struct timespec at = deadline_in(s->o.interval_s);
        s->st.next_at_ms = lr_now_ms() + (int64_t)s->o.interval_s * 1000;
        int rc = 0;
        while (!s->stop && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&s->cv, &s->mu, &at);
        if (s->stop)
            break;
        pthread_mutex_unlock(&s->mu);
        run_once(s);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

lr_backup_sched *lr_backup_sched_start(const lr_backup_sched_opts *o)
{
    lr_backup_sched *s = lr_xcalloc(1, sizeof *s);
    s->o = *o;
    s->st.interval_s = o->interval_s;
    atomic_init(&s->cancel, false);
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    return s;
}

void lr_backup_sched_status(lr_backup_sched *s, lr_backup_status *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    pthread_mutex_unlock(&s->mu);
}

void lr_backup_sched_stop(lr_backup_sched *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    atomic_store(&s->cancel, true);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
