/* Selling credits through Stripe.
 *
 * Packs (LENSROOM_CREDIT_PACKS, a JSON file) say what can be bought. A
 * checkout creates a Stripe Checkout Session over Stripe's HTTP API on the
 * event loop; Stripe then calls POST /api/webhooks/stripe, whose body is
 * verified here (Stripe-Signature: HMAC-SHA256 over "t.body", any v1 of
 * any configured secret, constant-time, within the tolerance) and handled:
 *   - checkout.session.completed (paid) and
 *     checkout.session.async_payment_succeeded grant the pack's credits as
 *     one 'purchase' ledger row, keyed by the session, so however often and
 *     however concurrently Stripe delivers, a session grants once;
 *   - charge.refunded and charge.dispute.created take the credits back as
 *     far as the balance allows ('payment_refund' / 'payment_dispute') and
 *     record the rest as 'payment_uncollected' (amount 0);
 *   - anything else is acknowledged and ignored.
 * Credits move only through lr_db_ops.adjust. Blocking (database calls):
 * call lr_billing_handle_event from an HTTP thread or a worker, never the
 * loop thread.
 */
#ifndef LR_BILLING_H
#define LR_BILLING_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "billing/hooks.h"
#include "core/err.h"
#include "db/billing.h"
#include "db/db.h"
#include "loop/loop.h"

typedef struct {
    char *id;
    int credits;
    int64_t price; /* smallest currency unit */
    char *currency;
    char *stripe_price_id;
    char *name;
} lr_pack;

typedef struct {
    lr_pack *v;
    size_t n;
} lr_packs;

/* Reads and validates the pack file; *err says what is wrong. */
lr_err lr_packs_load(const char *path, lr_packs *out, char **err);
void lr_packs_free(lr_packs *p);
const lr_pack *lr_packs_find(const lr_packs *p, const char *id);

/* Whether header (Stripe-Signature) signs body under one of the
 * comma-separated secrets at most tolerance_s old at now_s. *why: static
 * text for the log when not. */
bool lr_stripe_signature_ok(const char *header, const char *body, size_t len, const char *secrets,
                            int tolerance_s, int64_t now_s, const char **why);

typedef struct {
    lr_db *db;
    lr_billing_db *store;
    const lr_packs *packs;
    lr_hooks *hooks; /* credits.purchased and credits.low; may be NULL */
    lr_loop *loop;
    const char *api_base, *secret_key; /* Stripe's API */
    const char *success_url, *cancel_url;
} lr_billing;

/* What handling an event did, for the answer and the log. */
typedef struct {
    const char *action; /* static: granted, replayed, reversed, ignored, ... */
    char user_id[LR_UUID_LEN + 1];
    int credits; /* granted or taken back */
    int uncollected;
} lr_billing_outcome;

/* Handles a verified event (borrowed). LR_ERR_INVALID: not an event
 * object; database errors as the store reports them (Stripe retries). */
lr_err lr_billing_handle_event(lr_billing *b, json_t *event, lr_billing_outcome *out);

/* A Checkout Session being created; done runs once on the loop thread
 * with LR_OK and url/session_id, or an error and a message. */
typedef struct lr_checkout lr_checkout;
typedef void (*lr_checkout_fn)(void *ctx, lr_err e, const char *url, const char *session_id,
                               const char *message);
/* Any thread. idempotency_key: sent to Stripe as Idempotency-Key. */
void lr_billing_checkout(lr_billing *b, const char *user_id, const lr_pack *pack,
                         const char *idempotency_key, lr_checkout_fn done, void *ctx);

#endif
