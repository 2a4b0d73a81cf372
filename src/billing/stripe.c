/* Stripe: the webhook's signature and events, and Checkout Sessions. */
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing/billing.h"
#include "core/log.h"
#include "core/util.h"
#include "net/net.h"

#define MAX_V1 8

/* ---- Stripe-Signature ---- */

/* t= and the v1= values of the header (length-carrying; others ignored). */
typedef struct {
    int64_t t;
    bool has_t;
    const char *v1[MAX_V1];
    size_t v1_len[MAX_V1];
    int n;
} sig_header;

static void parse_sig_header(const char *h, sig_header *s)
{
    memset(s, 0, sizeof *s);
    while (*h) {
        size_t len = strcspn(h, ",");
        const char *eq = memchr(h, '=', len);
        if (eq) {
            size_t klen = (size_t)(eq - h), vlen = len - klen - 1;
            while (klen > 0 && h[0] == ' ') {
                h++;
                klen--;
            }
            if (klen == 1 && h[0] == 't' && vlen > 0 && vlen < 20) {
                char num[24];
                memcpy(num, eq + 1, vlen);
                num[vlen] = '\0';
                long v;
                if (lr_parse_long(num, 0, 1L << 40, &v) == 0) {
                    s->t = v;
                    s->has_t = true;
                }
            } else if (klen == 2 && !memcmp(h, "v1", 2) && s->n < MAX_V1) {
                s->v1[s->n] = eq + 1;
                s->v1_len[s->n++] = vlen;
            }
        }
        h += len;
        if (*h == ',')
            h++;
    }
}

/* Hex HMAC-SHA256 of "t.body" under key. */
static void stripe_mac(const char *key, size_t key_len, int64_t t, const char *body, size_t len,
                       char hex[65])
{
    char ts[24];
    int n = snprintf(ts, sizeof ts, "%lld.", (long long)t);
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    unsigned char d[32];
    size_t dlen = 0;
    EVP_MAC_init(ctx, (const unsigned char *)key, key_len, params);
    EVP_MAC_update(ctx, (const unsigned char *)ts, (size_t)n);
    EVP_MAC_update(ctx, (const unsigned char *)body, len);
    EVP_MAC_final(ctx, d, &dlen, sizeof d);
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    lr_hex(d, 32, hex);
}

bool lr_stripe_signature_ok(const char *header, const char *body, size_t len, const char *secrets,
                            int tolerance_s, int64_t now_s, const char **why)
{
    sig_header s;
    if (!header || !secrets) {
        *why = !header ? "no Stripe-Signature header" : "no webhook secret configured";
        return false;
    }
    parse_sig_header(header, &s);
    if (!s.has_t || s.n == 0) {
        *why = "Stripe-Signature has no timestamp or no v1 signature";
        return false;
    }
    bool match = false;
    for (const char *p = secrets; *p && !match;) {
        size_t klen = strcspn(p, ", ");
        if (klen > 0) {
            char hex[65];
            stripe_mac(p, klen, s.t, body, len, hex);
            for (int i = 0; i < s.n; i++)
                match |= lr_ct_equal(hex, 64, s.v1[i], s.v1_len[i]);
            OPENSSL_cleanse(hex, sizeof hex);
        }
        p += klen;
        p += strspn(p, ", ");
    }
    if (!match) {
        *why = "no v1 signature matches a configured secret";
        return false;
    }
    if (now_s - s.t > tolerance_s) {
        *why = "the signature's timestamp is outside the tolerance";
        return false;
    }
    *why = NULL;
    return true;
}

/* ---- events ---- */

static const char *str_at(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* adjust, once more when it failed: two deliveries of one event racing
 * on PostgreSQL make the loser's INSERT hit the idempotency index; the
 * second call sees the winner's row and reports a replay. */
static lr_err adjust_retry(lr_billing *b, const lr_adjust_req *r, lr_adjust_result *res)
{
    lr_err e = b->db->ops->adjust(b->db, r, res);
    if (e == LR_ERR_DB)
        e = b->db->ops->adjust(b->db, r, res);
    return e;
}

/* One ledger row of a payment for user (meta stolen), idempotent by key. */
static lr_err payment_row(lr_billing *b, const char *user, int amount, const char *type,
                          const char *desc, const char *key, json_t *meta, lr_adjust_result *res)
{
    lr_adjust_req ar = {.user_id = user,
                        .amount = amount,
                        .type = type,
                        .description = desc,
                        .idempotency_key = key,
                        .metadata = meta};
    lr_err e = adjust_retry(b, &ar, res);
    json_decref(meta);
    return e;
}

/* The paid session's user, pack and credits, from what checkout put in
 * it (client_reference_id, metadata) and the pack file. */
static bool session_terms(lr_billing *b, json_t *obj, const char **user, const char **pack_id,
                          int *credits)
{
    json_t *meta = json_object_get(obj, "metadata");
    *user = str_at(obj, "client_reference_id");
    if (!*user)
        *user = str_at(meta, "user_id");
    *pack_id = str_at(meta, "pack_id");
    const lr_pack *pack = lr_packs_find(b->packs, *pack_id);
    long n = 0;
    const char *c = str_at(meta, "credits");
    if (c && lr_parse_long(c, 1, 100000000, &n) == 0)
        *credits = (int)n;
    else
        *credits = pack ? pack->credits : 0;
    return *user && lr_uuid_valid(*user, strlen(*user)) && *pack_id && *credits > 0;
}

static lr_err grant(lr_billing *b, const char *event_id, json_t *obj, lr_billing_outcome *out)
{
    const char *session = str_at(obj, "id"), *user, *pack_id;
    int credits;
    if (!session ||
        strcmp(str_at(obj, "payment_status") ? str_at(obj, "payment_status") : "", "paid") != 0) {
        out->action = "unpaid";
        return LR_OK;
    }
    if (!session_terms(b, obj, &user, &pack_id, &credits)) {
        lr_warn("stripe: session %s carries no LensRoom user and pack; ignored", session);
        out->action = "not_ours";
        return LR_OK;
    }
    json_t *amount = json_object_get(obj, "amount_total");
    const char *currency = str_at(obj, "currency");
    lr_payment want = {.session_id = (char *)session,
                       .payment_intent = (char *)str_at(obj, "payment_intent"),
                       .user_id = (char *)user,
                       .pack_id = (char *)pack_id,
                       .currency = (char *)(currency ? currency : "usd"),
                       .event_id = (char *)event_id,
                       .credits = credits,
                       .amount = json_is_integer(amount) ? json_integer_value(amount) : 0};
    lr_payment pay;
    lr_err e = lr_billing_payment_record(b->store, &want, &pay);
    if (e != LR_OK)
        return e;
    char key[300], desc[160];
    snprintf(key, sizeof key, "stripe:session:%s", pay.session_id);
    const lr_pack *pack = lr_packs_find(b->packs, pay.pack_id);
    snprintf(desc, sizeof desc, "Purchase: %s (%d credits)", pack ? pack->name : pay.pack_id,
             pay.credits);
    json_t *meta = json_pack("{s:s, s:s, s:s*, s:I, s:s, s:s, s:s}", "stripe_event_id", event_id,
                             "stripe_session_id", pay.session_id, "stripe_payment_intent",
                             pay.payment_intent, "amount", (json_int_t)pay.amount, "currency",
                             pay.currency, "pack_id", pay.pack_id, "payment_id", pay.id);
    lr_adjust_result res;
    e = payment_row(b, pay.user_id, pay.credits, "purchase", desc, key, meta, &res);
    if (e == LR_OK)
        e = lr_billing_payment_link(b->store, pay.id, res.transaction_id);
    if (e == LR_OK) {
        out->action = res.replayed ? "replayed" : "granted";
        snprintf(out->user_id, sizeof out->user_id, "%s", pay.user_id);
        out->credits = res.replayed ? 0 : pay.credits;
        if (!res.replayed && b->hooks)
            lr_hooks_emit(b->hooks, "credits.purchased",
                          json_pack("{s:s, s:i, s:i, s:s, s:s, s:I, s:s}", "userId", pay.user_id,
                                    "credits", pay.credits, "balance", res.new_balance, "packId",
                                    pay.pack_id, "paymentId", pay.id, "amount",
                                    (json_int_t)pay.amount, "currency", pay.currency),
                          pay.user_id);
    }
    lr_payment_clear(&pay);
    return e;
}

/* Takes up to delta credits back from the payment's user, as far as the
 * balance allows; *taken: how many. Keyed by the event: a redelivery
 * changes nothing. */
static lr_err take_back(lr_billing *b, const lr_payment *pay, const char *event_id,
                        const char *type, int delta, int *taken, bool *replayed)
{
    char key[300], desc[160];
    snprintf(key, sizeof key, "stripe:%s", event_id);
    snprintf(desc, sizeof desc, "%s of payment %s",
             !strcmp(type, "payment_refund") ? "Refund" : "Dispute", pay->session_id);
    *taken = 0;
    *replayed = false;
    for (int attempt = 0; attempt < 5; attempt++) {
        int balance = 0;
        lr_err e = b->db->ops->balance(b->db, pay->user_id, &balance);
        if (e != LR_OK)
            return e;
        int take = balance < delta ? balance : delta;
        if (take <= 0)
            return LR_OK;
        json_t *meta = json_pack("{s:s, s:s, s:s}", "stripe_event_id", event_id,
                                 "stripe_session_id", pay->session_id, "payment_id", pay->id);
        lr_adjust_result res;
        e = payment_row(b, pay->user_id, -take, type, desc, key, meta, &res);
        if (e == LR_ERR_INSUFFICIENT)
            continue; /* spent meanwhile: look at the balance again */
        if (e == LR_ERR_CONFLICT || (e == LR_OK && res.replayed)) {
            *replayed = true; /* an earlier delivery of this event took its share */
            return LR_OK;
        }
        if (e == LR_OK)
            *taken = take;
        return e;
    }
    return LR_OK;
}

static lr_err reverse(lr_billing *b, const char *event_id, json_t *obj, bool dispute,
                      lr_billing_outcome *out)
{
    const char *intent = str_at(obj, "payment_intent");
    json_t *portion = json_object_get(obj, dispute ? "amount" : "amount_refunded");
    lr_payment pay;
    lr_err e = intent ? lr_billing_payment_by_intent(b->store, intent, &pay) : LR_ERR_NOT_FOUND;
    if (e == LR_ERR_NOT_FOUND) {
        lr_warn("stripe: %s for an unknown payment (%s); ignored", dispute ? "dispute" : "refund",
                intent ? intent : "no payment_intent");
        out->action = "unknown_payment";
        return LR_OK;
    }
    if (e != LR_OK)
        return e;
    int64_t part = json_is_integer(portion) ? json_integer_value(portion) : pay.amount;
    int64_t target =
        pay.amount > 0 ? (pay.credits * part + pay.amount - 1) / pay.amount : pay.credits;
    if (target > pay.credits)
        target = pay.credits;
    int delta = (int)target - pay.credits_reversed;
    snprintf(out->user_id, sizeof out->user_id, "%s", pay.user_id);
    out->action = "already_reversed";
    int taken = 0;
    bool replayed = false;
    const char *type = dispute ? "payment_dispute" : "payment_refund";
    if (delta > 0)
        e = take_back(b, &pay, event_id, type, delta, &taken, &replayed);
    if (e == LR_OK && delta > 0 && !replayed && taken < delta) {
        char key[300], desc[160];
        snprintf(key, sizeof key, "stripe:%s:uncollected", event_id);
        snprintf(desc, sizeof desc, "Could not take back %d credits (already spent)",
                 delta - taken);
        json_t *meta = json_pack("{s:s, s:s, s:i, s:s}", "stripe_event_id", event_id, "reason",
                                 type, "uncollected", delta - taken, "payment_id", pay.id);
        lr_adjust_result res;
        e = payment_row(b, pay.user_id, 0, "payment_uncollected", desc, key, meta, &res);
        if (e == LR_ERR_CONFLICT)
            e = LR_OK;
        out->uncollected = delta - taken;
    }
    if (e == LR_OK && delta > 0) {
        e = lr_billing_payment_reversed(b->store, pay.id, (int)target);
        out->action = replayed ? "replayed" : "reversed";
        out->credits = taken;
        if (b->hooks && taken > 0)
            lr_hooks_emit(b->hooks, NULL, NULL, pay.user_id);
    }
    lr_payment_clear(&pay);
    return e;
}

lr_err lr_billing_handle_event(lr_billing *b, json_t *event, lr_billing_outcome *out)
{
    memset(out, 0, sizeof *out);
    const char *id = str_at(event, "id"), *type = str_at(event, "type");
    json_t *obj = json_object_get(json_object_get(event, "data"), "object");
    if (!id || !type || !json_is_object(obj))
        return LR_ERR_INVALID;
    bool seen = false;
    lr_err e = lr_billing_event_seen(b->store, id, &seen);
    if (e != LR_OK)
        return e;
    if (seen) {
        out->action = "duplicate";
        return LR_OK;
    }
    if (!strcmp(type, "checkout.session.completed") ||
        !strcmp(type, "checkout.session.async_payment_succeeded"))
        e = grant(b, id, obj, out);
    else if (!strcmp(type, "charge.refunded"))
        e = reverse(b, id, obj, false, out);
    else if (!strcmp(type, "charge.dispute.created"))
        e = reverse(b, id, obj, true, out);
    else
        out->action = "ignored";
    if (e == LR_OK)
        e = lr_billing_event_done(b->store, id, type);
    return e;
}

/* ---- Checkout Sessions ---- */

struct lr_checkout {
    lr_call call;
    lr_billing *b;
    char *url, *form;
    struct curl_slist *headers;
    lr_checkout_fn done;
    void *ctx;
};

/* Appends key=value, form-encoded (application/x-www-form-urlencoded). */
static void form_add(char **buf, size_t *len, size_t *cap, const char *key, const char *value)
{
    char *k = curl_easy_escape(NULL, key, 0), *v = curl_easy_escape(NULL, value, 0);
    if (!k || !v)
        abort();
    if (*len)
        lr_buf_append(buf, len, cap, "&", 1);
    lr_buf_append(buf, len, cap, k, strlen(k));
    lr_buf_append(buf, len, cap, "=", 1);
    lr_buf_append(buf, len, cap, v, strlen(v));
    curl_free(k);
    curl_free(v);
}

static void checkout_free(lr_checkout *co)
{
    lr_call_release(&co->call);
    free(co->url);
    free(co->form);
    free(co);
}

static void checkout_done(lr_call *c)
{
    lr_checkout *co = c->ctx;
    json_t *body = c->status ? json_loads(c->body, 0, NULL) : NULL;
    const char *url = str_at(body, "url"), *id = str_at(body, "id");
    if (c->status == 200 && url && id) {
        co->done(co->ctx, LR_OK, url, id, NULL);
    } else {
        const char *msg = str_at(json_object_get(body, "error"), "message");
        lr_warn("stripe: checkout session not created (HTTP %ld): %s", c->status,
                msg         ? msg
                : c->status ? "unexpected answer"
                            : c->error);
        co->done(co->ctx, c->status ? LR_ERR_PROVIDER : LR_ERR_UNAVAILABLE, NULL, NULL,
                 msg ? msg : "Stripe did not create the checkout session");
    }
    json_decref(body);
    checkout_free(co);
}

static void checkout_start(void *arg)
{
    lr_checkout *co = arg;
    co->call.done = checkout_done;
    co->call.ctx = co;
    struct curl_slist *h = co->headers;
    co->headers = NULL;
    lr_call_start(co->b->loop, &co->call, "POST", co->url, h, co->form, 20000);
}

void lr_billing_checkout(lr_billing *b, const char *user_id, const lr_pack *pack,
                         const char *idempotency_key, lr_checkout_fn done, void *ctx)
{
    lr_checkout *co = lr_xcalloc(1, sizeof *co);
    co->b = b;
    co->done = done;
    co->ctx = ctx;
    if (asprintf(&co->url, "%s/v1/checkout/sessions", b->api_base) < 0)
        abort();
    char credits[24];
    snprintf(credits, sizeof credits, "%d", pack->credits);
    size_t len = 0, cap = 0;
    form_add(&co->form, &len, &cap, "mode", "payment");
    form_add(&co->form, &len, &cap, "line_items[0][price]", pack->stripe_price_id);
    form_add(&co->form, &len, &cap, "line_items[0][quantity]", "1");
    form_add(&co->form, &len, &cap, "client_reference_id", user_id);
    form_add(&co->form, &len, &cap, "success_url", b->success_url);
    form_add(&co->form, &len, &cap, "cancel_url", b->cancel_url);
    form_add(&co->form, &len, &cap, "metadata[user_id]", user_id);
    form_add(&co->form, &len, &cap, "metadata[pack_id]", pack->id);
    form_add(&co->form, &len, &cap, "metadata[credits]", credits);
    form_add(&co->form, &len, &cap, "payment_intent_data[metadata][user_id]", user_id);
    form_add(&co->form, &len, &cap, "payment_intent_data[metadata][pack_id]", pack->id);
    char auth[512], idem[320];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", b->secret_key);
    snprintf(idem, sizeof idem, "Idempotency-Key: %s", idempotency_key);
    co->headers = curl_slist_append(NULL, auth);
    co->headers = curl_slist_append(co->headers, "Content-Type: application/x-www-form-urlencoded");
    co->headers = curl_slist_append(co->headers, idem);
    OPENSSL_cleanse(auth, sizeof auth);
    lr_loop_post(b->loop, checkout_start, co);
}
