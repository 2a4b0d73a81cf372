/* Outgoing webhooks (Standard Webhooks): events queued in the database and
 * delivered on the event loop.
 *
 * An event (a generation ended, a balance crossed below the threshold,
 * credits were bought) becomes one queued delivery per endpoint subscribed
 * to its type, plus one to the generation's own webhook when its request
 * named one. A timer on the loop has a worker claim due deliveries; each
 * is POSTed by libcurl on the loop (no thread per delivery), signed with
 * webhook-id (the same on every attempt), webhook-timestamp and
 * webhook-signature ("v1," + base64 HMAC-SHA256 of id.timestamp.body
 * under the endpoint's whsec_ secret). A 2xx answer delivers it; anything
 * else is retried with exponential backoff and jitter until max_age after
 * it was queued. Addresses obey the download policy (https, no private
 * address unless allowed) at registration and on every connection.
 *
 * A generation's end reaches the queue through the outbox that settle
 * writes in its own transaction (db.h): the observer only wakes the
 * engine, which turns outbox rows into deliveries, many per transaction.
 * A rotated endpoint secret signs beside the new one during its grace
 * (webhook-signature then holds two space-separated signatures).
 *
 * The engine's database calls run on a thread of its own (never the
 * pipeline's workers, never the loop). The observer may be called from
 * any thread and does not block; emit and started block (database).
 */
#ifndef LR_HOOKS_H
#define LR_HOOKS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"
#include "core/vocab.h"
#include "db/billing.h"
#include "db/db.h"
#include "loop/loop.h"
#include "net/net.h"

typedef struct lr_hooks lr_hooks;

typedef struct {
    lr_db *db;
    lr_billing_db *store;
    lr_loop *loop;
    const lr_net_policy *policy;
    int retry_ms;       /* first retry delay */
    int64_t max_age_ms; /* retried this long after queuing */
    int timeout_ms;     /* one attempt */
    int concurrency;    /* deliveries in flight at most */
    int low_balance;    /* credits.low threshold, 0: never */
} lr_hooks_opts;

/* The event types endpoints subscribe to, NULL-terminated. */
extern const char *const lr_hooks_event_types[];
/* Whether csv is a non-empty comma-separated list of known types. */
bool lr_hooks_events_valid(const char *csv);

lr_hooks *lr_hooks_new(const lr_hooks_opts *o);
/* Starts polling the queue (loop thread or before the loop runs). */
void lr_hooks_start(lr_hooks *h);
/* lr_observer_fn of the pipeline. */
void lr_hooks_observe(void *ctx, const char *generation_id, lr_gen_status status,
                      lr_gen_stage stage);
/* Queues type with data (stolen) for the endpoints; checks user's
 * balance against the low threshold too when user_id is set. Blocking
 * (database): HTTP threads and workers. */
void lr_hooks_emit(lr_hooks *h, const char *type, json_t *data, const char *user_id);
/* A generation with its own webhook started: "start" subscribers hear it.
 * Blocking (database). */
void lr_hooks_started(lr_hooks *h, const char *generation_id, const char *user_id,
                      const char *model_id);
/* Looks at the queue now rather than at the next tick (any thread). */
void lr_hooks_poke(lr_hooks *h);
/* After the loop stopped: records what was answered, hands this
 * process's claims back and frees everything. */
void lr_hooks_free(lr_hooks *h);

/* The delay before the next attempt after failures (>= 1) failed ones:
 * retry_ms doubling with each failure, at most an hour, times 0.75 +
 * 0.5 x unit (unit in [0, 1): the jitter, +-25 %, so a receiver that
 * comes back is not hit by every queued delivery at once). */
int64_t lr_hooks_backoff_ms(int retry_ms, int failures, double unit);

/* "v1,<base64 HMAC-SHA256(key, id.ts.body)>" where key is the base64
 * after "whsec_". false when the secret is malformed. */
bool lr_hooks_sign(const char *secret, const char *id, int64_t ts, const char *body, size_t len,
                   char out[64]);

#endif
