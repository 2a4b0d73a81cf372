#include "pipeline/ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

#define BUCKETS 1024

typedef struct entry {
    char user[LR_UUID_LEN + 1];
    double tokens;
    int64_t last_ms;
    struct entry *next;
} entry;

struct lr_ratelimit {
    int rate; /* tokens per minute, also the burst */
    pthread_mutex_t mu;
    entry *buckets[BUCKETS];
    unsigned calls;
};

lr_ratelimit *lr_ratelimit_new(int rate_per_min)
{
    lr_ratelimit *l = lr_xcalloc(1, sizeof *l);
    l->rate = rate_per_min;
    pthread_mutex_init(&l->mu, NULL);
    return l;
}

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % BUCKETS;
}

/* Drops entries whose bucket has refilled: they hold no information. */
static void prune(lr_ratelimit *l, int64_t now)
{
    int64_t full_after = 60000; /* an empty bucket refills within a minute */
    for (unsigned b = 0; b < BUCKETS; b++) {
        for (entry **pp = &l->buckets[b]; *pp;) {
            if (now - (*pp)->last_ms > full_after) {
                entry *dead = *pp;
                *pp = dead->next;
                free(dead);
            } else {
                pp = &(*pp)->next;
            }
        }
    }
}

bool lr_ratelimit_take(lr_ratelimit *l, const char *user, int *retry_after_s)
{
    if (!l || l->rate <= 0)
        return true;
    int64_t now = lr_monotonic_ms();
    pthread_mutex_lock(&l->mu);
    if (++l->calls % 4096 == 0)
        prune(l, now);
    entry **pp = &l->buckets[hash(user)];
    while (*pp && strcmp((*pp)->user, user) != 0)
        pp = &(*pp)->next;
    entry *e = *pp;
    if (!e) {
        e = lr_xcalloc(1, sizeof *e);
        snprintf(e->user, sizeof e->user, "%s", user);
        e->tokens = l->rate;
        e->last_ms = now;
        *pp = e;
    }
    double per_ms = l->rate / 60000.0;
    e->tokens = fmin(l->rate, e->tokens + (double)(now - e->last_ms) * per_ms);
    e->last_ms = now;
    bool ok = e->tokens >= 1.0;
    if (ok)
        e->tokens -= 1.0;
    else
        *retry_after_s = (int)ceil((1.0 - e->tokens) / per_ms / 1000.0);
    pthread_mutex_unlock(&l->mu);
    return ok;
}

void lr_ratelimit_free(lr_ratelimit *l)
{
    if (!l)
        return;
    for (unsigned b = 0; b < BUCKETS; b++) {
        for (entry *e = l->buckets[b], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    pthread_mutex_destroy(&l->mu);
    free(l);
}
