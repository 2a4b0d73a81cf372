#include "auth/jwks.h"

#include <curl/curl.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "core/util.h"
#include "net/net.h"

#define FETCH_TIMEOUT_MS 10000
#define DEFAULT_MAX_AGE_S 600 /* what Supabase sends */
#define MAX_AGE_CAP_S 86400
#define RETRY_CAP_S 300
#define RSA_MIN_BITS 2048
#define RSA_MAX_BITS 8192 /* verification cost grows with the modulus */
#define KID_MAX 256

typedef struct {
    char *kid;
    lr_jwt_key key;
} entry;

struct lr_jwks {
    lr_loop *loop;
    char *url;
    int64_t refetch_ms;

    pthread_mutex_t mu; /* guards the four fields below */
    entry *keys;
    size_t n;
    bool fetching;
    int64_t last_fetch_ms; /* monotonic start of the last fetch */

    /* Loop thread only. */
    lr_call call;
    lr_timer_id refresh;
    bool failing;
    int64_t retry_s;
    char *signature; /* the kid:alg list last logged, to log changes only */
};

static void free_entries(entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(e[i].kid);
        EVP_PKEY_free(e[i].key.pkey);
    }
    free(e);
}

/* ---- one JWK -> EVP_PKEY ------------------------------------------- */

/* base64url member of jwk as bytes; NULL when absent or not base64. */
static unsigned char *member_bytes(json_t *jwk, const char *name, size_t *len)
{
    json_t *v = json_object_get(jwk, name);
    if (!json_is_string(v))
        return NULL;
    return lr_b64_decode(json_string_value(v), json_string_length(v), len);
}

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM *params)
{
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    if (!pkey)
        return NULL;
    /* The point is on the curve, the RSA modulus and exponent are sane. */
    EVP_PKEY_CTX *check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    bool ok = check && EVP_PKEY_public_check(check) == 1;
    EVP_PKEY_CTX_free(check);
    if (!ok) {
        EVP_PKEY_free(pkey);
        return NULL;
    }
    return pkey;
}

static lr_err ec_key(json_t *jwk, EVP_PKEY **out, const char **why)
{
    json_t *crv = json_object_get(jwk, "crv");
    if (!json_is_string(crv) || strcmp(json_string_value(crv), "P-256") != 0) {
        *why = "EC key on a curve other than P-256";
        return LR_ERR_UNSUPPORTED;
    }
    size_t xl = 0, yl = 0;
    unsigned char *x = member_bytes(jwk, "x", &xl), *y = member_bytes(jwk, "y", &yl);
    lr_err e = LR_ERR_INVALID;
    *why = "EC key without 32-byte x and y";
    if (x && y && xl == 32 && yl == 32) {
        unsigned char point[65] = {0x04}; /* uncompressed: 04 || x || y */
        memcpy(point + 1, x, 32);
        memcpy(point + 33, y, 32);
        char group[] = "P-256";
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
            OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point),
            OSSL_PARAM_construct_end(),
        };
        *out = pkey_from_params("EC", params);
        *why = "EC point is not on P-256";
        if (*out)
            e = LR_OK;
    }
    free(x);
    free(y);
    return e;
}

static lr_err rsa_key(json_t *jwk, EVP_PKEY **out, const char **why)
{
    size_t nl = 0, el = 0;
    unsigned char *nb = member_bytes(jwk, "n", &nl), *eb = member_bytes(jwk, "e", &el);
    BIGNUM *n = nb && nl > 0 ? BN_bin2bn(nb, (int)nl, NULL) : NULL;
    BIGNUM *e = eb && el > 0 && el <= 8 ? BN_bin2bn(eb, (int)el, NULL) : NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    lr_err rc = LR_ERR_INVALID;
    *why = "RSA key without a valid n and e";
    if (!n || !e || !bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) ||
        !(params = OSSL_PARAM_BLD_to_param(bld)))
        goto out;
    int bits = BN_num_bits(n);
    if (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS) {
        *why = "RSA key shorter than 2048 or longer than 8192 bits";
        rc = LR_ERR_UNSUPPORTED;
        goto out;
    }
    *out = pkey_from_params("RSA", params);
    if (*out)
        rc = LR_OK;
out:
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    free(nb);
    free(eb);
    return rc;
}

lr_err lr_jwks_key_from_json(json_t *jwk, lr_jwt_key *out, const char **why)
{
    out->pkey = NULL;
    if (!json_is_object(jwk)) {
        *why = "not a JSON object";
        return LR_ERR_INVALID;
    }
    json_t *use = json_object_get(jwk, "use");
    if (use && !(json_is_string(use) && !strcmp(json_string_value(use), "sig"))) {
        *why = "key is not for signatures (use)";
        return LR_ERR_UNSUPPORTED;
    }
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    json_t *alg_j = json_object_get(jwk, "alg");
    const char *alg = json_string_value(alg_j);
    if (alg_j && !alg) {
        *why = "alg is not a string";
        return LR_ERR_INVALID;
    }
    if (kty && !strcmp(kty, "EC"))
        out->alg = LR_JWT_ES256;
    else if (kty && !strcmp(kty, "RSA"))
        out->alg = LR_JWT_RS256;
    else {
        *why = "key type is neither EC nor RSA (symmetric keys are never taken from a JWKS)";
        return LR_ERR_UNSUPPORTED;
    }
    if (alg && strcmp(alg, lr_jwt_alg_name(out->alg)) != 0) {
        *why = "alg other than ES256 for EC or RS256 for RSA";
        return LR_ERR_UNSUPPORTED;
    }
    return out->alg == LR_JWT_ES256 ? ec_key(jwk, &out->pkey, why) : rsa_key(jwk, &out->pkey, why);
}

/* ---- a whole set ---------------------------------------------------- */

static bool has_kid(const entry *e, size_t n, const char *kid)
{
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(e[i].kid, kid))
            return true;
    }
    return false;
}

/* Parses a JWKS into entries; skipped keys are appended to *skipped_log
 * ({kid, reason}). NULL with *why when the document is not a JWKS. */
static entry *parse_set(const char *json, size_t len, size_t *count, json_t *skipped_log,
                        const char **why)
{
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *keys = json_object_get(doc, "keys");
    entry *out = NULL;
    *count = 0;
    if (!json_is_object(doc) || !json_is_array(keys)) {
        *why = "the answer is not a JWKS (a JSON object with a \"keys\" array)";
        json_decref(doc);
        return NULL;
    }
    out = lr_xcalloc(LR_JWKS_MAX_KEYS, sizeof *out);
    size_t i;
    json_t *jwk;
    json_array_foreach(keys, i, jwk)
    {
        json_t *kid_j = json_object_get(jwk, "kid");
        const char *kid = json_string_value(kid_j);
        const char *reason = NULL;
        lr_jwt_key key = {0};
        if (!kid || strlen(kid) != json_string_length(kid_j) || !*kid || strlen(kid) > KID_MAX)
            reason = "no usable kid";
        else if (has_kid(out, *count, kid))
            reason = "duplicate kid";
        else if (*count == LR_JWKS_MAX_KEYS)
            reason = "too many keys";
        else if (lr_jwks_key_from_json(jwk, &key, &reason) == LR_OK) {
            out[(*count)++] = (entry){lr_xstrdup(kid), key};
            continue;
        }
        if (skipped_log)
            json_array_append_new(skipped_log,
                                  json_pack("{s:s?, s:s}", "kid", kid, "reason", reason));
    }
    json_decref(doc);
    return out;
}

/* Swaps in a new set; the old keys are freed outside the lock (requests
 * verifying with them hold their own references). */
static void install(lr_jwks *k, entry *keys, size_t n)
{
    pthread_mutex_lock(&k->mu);
    entry *old = k->keys;
    size_t old_n = k->n;
    k->keys = keys;
    k->n = n;
    pthread_mutex_unlock(&k->mu);
    free_entries(old, old_n);
}

lr_err lr_jwks_load(lr_jwks *k, const char *json, size_t len, const char **why, size_t *loaded,
                    size_t *skipped)
{
    json_t *log = json_array();
    size_t n;
    entry *keys = parse_set(json, len, &n, log, why);
    if (skipped)
        *skipped = json_array_size(log);
    json_decref(log);
    if (!keys)
        return LR_ERR_INVALID;
    install(k, keys, n);
    if (loaded)
        *loaded = n;
    return LR_OK;
}

/* ---- fetching on the loop ------------------------------------------ */

static void fetch_begin(void *arg);

/* max-age from Cache-Control, DEFAULT_MAX_AGE_S when absent. */
static int64_t max_age_s(CURL *easy)
{
    struct curl_header *h = NULL;
    if (curl_easy_header(easy, "Cache-Control", 0, CURLH_HEADER, -1, &h) != CURLHE_OK || !h)
        return DEFAULT_MAX_AGE_S;
    const char *p = strcasestr(h->value, "max-age=");
    if (!p)
        return strcasestr(h->value, "no-cache") || strcasestr(h->value, "no-store")
                   ? 0
                   : DEFAULT_MAX_AGE_S;
    char *end;
    long v = strtol(p + 8, &end, 10);
    return end == p + 8 || v < 0 ? DEFAULT_MAX_AGE_S : (v > MAX_AGE_CAP_S ? MAX_AGE_CAP_S : v);
}

static void schedule(lr_jwks *k, int64_t delay_s)
{
    if (delay_s * 1000 < k->refetch_ms)
        delay_s = (k->refetch_ms + 999) / 1000;
    if (k->refresh)
        lr_loop_cancel(k->loop, k->refresh);
    k->refresh = lr_loop_timer(k->loop, delay_s * 1000, fetch_begin, k);
}

/* Logs the set when its kids, algorithms or skipped keys changed since
 * the last time (not every max-age refresh). skipped is borrowed. */
static void log_loaded(lr_jwks *k, json_t *skipped)
{
    json_t *keys = json_array();
    pthread_mutex_lock(&k->mu);
    for (size_t i = 0; i < k->n; i++)
        json_array_append_new(keys, json_pack("{s:s, s:s}", "kid", k->keys[i].kid, "alg",
                                              lr_jwt_alg_name(k->keys[i].key.alg)));
    pthread_mutex_unlock(&k->mu);
    json_t *both = json_pack("{s:O, s:O}", "keys", keys, "skipped", skipped);
    char *sig = json_dumps(both, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(both);
    if (sig && k->signature && !strcmp(sig, k->signature)) {
        free(sig);
        json_decref(keys);
        return;
    }
    free(k->signature);
    k->signature = sig;
    lr_log_fields(LR_LOG_INFO, NULL, "jwks: signing keys loaded",
                  json_pack("{s:s, s:o, s:O}", "url", k->url, "keys", keys, "skipped", skipped));
}

static void fetch_failed(lr_jwks *k, const char *error)
{
    pthread_mutex_lock(&k->mu);
    size_t cached = k->n;
    k->fetching = false;
    pthread_mutex_unlock(&k->mu);
    k->retry_s = k->failing ? k->retry_s * 2 : (k->refetch_ms + 999) / 1000;
    if (k->retry_s > RETRY_CAP_S)
        k->retry_s = RETRY_CAP_S;
    if (!k->failing)
        lr_log_fields(LR_LOG_ERROR, NULL,
                      "jwks: cannot fetch the token signing keys; ES256/RS256 tokens are "
                      "verified with the cached keys until it works again",
                      json_pack("{s:s, s:s, s:I, s:I}", "url", k->url, "error", error,
                                "cached_keys", (json_int_t)cached, "retry_in_s",
                                (json_int_t)k->retry_s));
    else
        lr_debug("jwks: fetch still failing: %s", error);
    k->failing = true;
    schedule(k, k->retry_s);
}

static void fetch_done(lr_call *c)
{
    lr_jwks *k = c->ctx;
    char error[CURL_ERROR_SIZE + 64];
    if (c->rc == CURLE_WRITE_ERROR) {
        snprintf(error, sizeof error, "the answer is larger than %d bytes", LR_JWKS_MAX_BYTES);
        fetch_failed(k, error);
        return;
    }
    if (c->rc != CURLE_OK) {
        snprintf(error, sizeof error, "%s%s%s", curl_easy_strerror(c->rc), c->error[0] ? ": " : "",
                 c->error);
        fetch_failed(k, error);
        return;
    }
    if (c->status != 200) {
        snprintf(error, sizeof error, "HTTP %ld", c->status);
        fetch_failed(k, error);
        return;
    }
    int64_t age = max_age_s(c->xfer.easy);
    const char *why = NULL;
    json_t *skipped = json_array();
    size_t n;
    entry *keys = parse_set(c->body, c->len, &n, skipped, &why);
    if (!keys) {
        json_decref(skipped);
        fetch_failed(k, why);
        return;
    }
    install(k, keys, n);
    pthread_mutex_lock(&k->mu);
    k->fetching = false;
    pthread_mutex_unlock(&k->mu);
    if (k->failing)
        lr_log_fields(LR_LOG_INFO, NULL, "jwks: fetching the signing keys works again",
                      json_pack("{s:s}", "url", k->url));
    k->failing = false;
    log_loaded(k, skipped);
    json_decref(skipped);
    schedule(k, age);
}

static void fetch_start(lr_jwks *k)
{
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    k->call.done = fetch_done;
    k->call.ctx = k;
    k->call.max_len = LR_JWKS_MAX_BYTES;
    lr_call_start(k->loop, &k->call, "GET", k->url, h, NULL, FETCH_TIMEOUT_MS);
}

/* Timer: the cache ran out or a retry is due; a fetch already running
 * (asked for by an unknown kid) reschedules when it ends. */
static void fetch_begin(void *arg)
{
    lr_jwks *k = arg;
    k->refresh = 0;
    pthread_mutex_lock(&k->mu);
    bool run = !k->fetching;
    if (run) {
        k->fetching = true;
        k->last_fetch_ms = lr_monotonic_ms();
    }
    pthread_mutex_unlock(&k->mu);
    if (run)
        fetch_start(k);
}

/* Posted by lr_jwks_lookup, which already marked the fetch as running. */
static void fetch_asked(void *arg)
{
    fetch_start(arg);
}

lr_jwks *lr_jwks_new(const lr_jwks_opts *o)
{
    lr_jwks *k = lr_xcalloc(1, sizeof *k);
    k->loop = o->loop;
    k->url = lr_xstrdup(o->url ? o->url : "");
    k->refetch_ms = (int64_t)(o->refetch_s > 0 ? o->refetch_s : 1) * 1000;
    k->last_fetch_ms = INT64_MIN / 2;
    pthread_mutex_init(&k->mu, NULL);
    return k;
}

void lr_jwks_start(lr_jwks *k)
{
    if (k->loop)
        lr_loop_post(k->loop, fetch_begin, k);
}

void lr_jwks_free(lr_jwks *k)
{
    if (!k)
        return;
    lr_call_release(&k->call);
    free_entries(k->keys, k->n);
    pthread_mutex_destroy(&k->mu);
    free(k->signature);
    free(k->url);
    free(k);
}

bool lr_jwks_lookup(void *ctx, const char *kid, bool refetch, lr_jwt_key *out)
{
    lr_jwks *k = ctx;
    bool found = false, ask = false;
    pthread_mutex_lock(&k->mu);
    for (size_t i = 0; i < k->n && !found; i++) {
        if (!strcmp(k->keys[i].kid, kid)) {
            *out = k->keys[i].key;
            EVP_PKEY_up_ref(out->pkey);
            found = true;
        }
    }
    int64_t now = lr_monotonic_ms();
    if (!found && refetch && k->loop && !k->fetching && now - k->last_fetch_ms >= k->refetch_ms) {
        k->fetching = true;
        k->last_fetch_ms = now;
        ask = true;
    }
    pthread_mutex_unlock(&k->mu);
    if (ask) {
        lr_debug("jwks: unknown kid, fetching the key set again");
        lr_loop_post(k->loop, fetch_asked, k);
    }
    return found;
}
