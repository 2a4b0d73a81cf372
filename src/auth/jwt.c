#include "auth/jwt.h"
#include "core/util.h"

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKEN_LEN 16384
#define ES256_SIG_LEN 64 /* JOSE form: r || s, 32 bytes each */

const char *lr_jwt_strerror(lr_jwt_status s)
{
    switch (s) {
    case LR_JWT_OK: return "ok";
    case LR_JWT_MALFORMED: return "malformed token";
    case LR_JWT_BAD_ALG: return "token algorithm not accepted for its key";
    case LR_JWT_BAD_SIGNATURE: return "invalid token signature";
    case LR_JWT_EXPIRED: return "token expired";
    case LR_JWT_NOT_YET_VALID: return "token not yet valid";
    case LR_JWT_BAD_AUDIENCE: return "token audience not accepted";
    case LR_JWT_BAD_SUBJECT: return "token subject is not a user id";
    case LR_JWT_UNKNOWN_KEY: return "token signed by a key not in the project's JWKS";
    case LR_JWT_BAD_ISSUER: return "token issuer is not this project";
    case LR_JWT_FUTURE_IAT: return "token issued in the future";
    case LR_JWT_BAD_CRIT: return "token has critical header parameters the server does not know";
    }
    return "invalid token";
}

const char *lr_jwt_alg_name(lr_jwt_alg a)
{
    switch (a) {
    case LR_JWT_HS256: return "HS256";
    case LR_JWT_ES256: return "ES256";
    case LR_JWT_RS256: return "RS256";
    }
    return "?";
}

static json_t *decode_segment_json(const char *seg, size_t len)
{
    size_t n;
    unsigned char *raw = lr_b64_decode(seg, len, &n);
    if (!raw)
        return NULL;
    json_t *j = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* A NumericDate claim (integer or real) in [0, LR_JWT_MAX_TIME]; absent is
 * *present = false. Out of range is an error, checked before any cast, so
 * neither the cast nor later leeway arithmetic can overflow. */
static int numeric_claim(json_t *payload, const char *name, int64_t *out, bool *present)
{
    json_t *v = json_object_get(payload, name);
    *present = v != NULL;
    if (!v)
        return 0;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || i > LR_JWT_MAX_TIME)
            return -1;
        *out = (int64_t)i;
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d >= 0.0 && d <= (double)LR_JWT_MAX_TIME))
            return -1;
        *out = (int64_t)d;
    } else {
        return -1;
    }
    return 0;
}

static bool audience_ok(json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    if (json_is_array(aud)) {
        size_t i;
        json_t *e;
        json_array_foreach(aud, i, e)
        {
            if (json_is_string(e) && strcmp(json_string_value(e), want) == 0)
                return true;
        }
    }
    return false;
}

/* A JSON string without an embedded NUL, or NULL. */
static const char *plain_string(json_t *j)
{
    if (!json_is_string(j) || strlen(json_string_value(j)) != json_string_length(j))
        return NULL;
    return json_string_value(j);
}

/* Decides how the token may be verified: the HS256 secret, or the JWKS key
 * its kid names. key->pkey stays NULL for HS256. An HS256 token may carry
 * a kid (Supabase's own do); when that kid names a public key, the token
 * is HS/ES confusion and refused; otherwise the secret decides, and the
 * JWKS is not refetched for it. */
static lr_jwt_status choose_key(const lr_jwt_verifier *v, json_t *header, lr_jwt_key *key)
{
    const char *alg = plain_string(json_object_get(header, "alg"));
    if (!alg)
        return LR_JWT_MALFORMED;
    if (json_object_get(header, "crit"))
        return LR_JWT_BAD_CRIT;
    json_t *kid_j = json_object_get(header, "kid");
    const char *kid = plain_string(kid_j);
    if (kid_j && !kid)
        return LR_JWT_MALFORMED;

    key->pkey = NULL;
    if (!strcmp(alg, "HS256")) {
        if (kid && v->lookup && v->lookup(v->lookup_ctx, kid, false, key)) {
            EVP_PKEY_free(key->pkey);
            key->pkey = NULL;
            return LR_JWT_BAD_ALG;
        }
        key->alg = LR_JWT_HS256;
        return v->key ? LR_JWT_OK : LR_JWT_BAD_ALG;
    }
    bool asym = !strcmp(alg, "ES256") || !strcmp(alg, "RS256");
    if (!asym || !v->lookup)
        return LR_JWT_BAD_ALG;
    if (!kid || !v->lookup(v->lookup_ctx, kid, true, key))
        return LR_JWT_UNKNOWN_KEY;
    if (strcmp(alg, lr_jwt_alg_name(key->alg)) != 0) {
        EVP_PKEY_free(key->pkey);
        key->pkey = NULL;
        return LR_JWT_BAD_ALG;
    }
    return LR_JWT_OK;
}

/* JOSE r||s to the DER ECDSA-Sig-Value OpenSSL verifies; malloc'd. */
static unsigned char *es256_der(const unsigned char *sig, size_t len, size_t *der_len)
{
    if (len != ES256_SIG_LEN)
        return NULL;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, ES256_SIG_LEN / 2, NULL);
    BIGNUM *s = BN_bin2bn(sig + ES256_SIG_LEN / 2, ES256_SIG_LEN / 2, NULL);
    unsigned char *der = NULL;
    if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return NULL;
    }
    int n = i2d_ECDSA_SIG(es, &der); /* es owns r and s now */
    ECDSA_SIG_free(es);
    if (n <= 0)
        return NULL;
    *der_len = (size_t)n;
    return der;
}

static bool pkey_verify(const lr_jwt_key *key, const unsigned char *data, size_t len,
                        const unsigned char *sig, size_t siglen)
{
    unsigned char *der = NULL;
    if (key->alg == LR_JWT_ES256) {
        der = es256_der(sig, siglen, &siglen);
        if (!der)
            return false;
        sig = der;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, NULL, key->pkey, NULL) == 1 &&
              EVP_DigestVerify(md, sig, siglen, data, len) == 1;
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    return ok;
}

static bool signature_ok(const lr_jwt_verifier *v, const lr_jwt_key *key, const char *signing,
                         size_t signing_len, const char *sig64, size_t sig64_len)
{
    size_t siglen;
    unsigned char *sig = lr_b64_decode(sig64, sig64_len, &siglen);
    if (!sig)
        return false;
    bool ok = false;
    if (key->alg == LR_JWT_HS256) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int maclen = 0;
        ok = HMAC(EVP_sha256(), v->key, (int)v->key_len, (const unsigned char *)signing,
                  signing_len, mac, &maclen) &&
             lr_ct_equal(sig, siglen, mac, maclen);
    } else {
        ok = pkey_verify(key, (const unsigned char *)signing, signing_len, sig, siglen);
    }
    free(sig);
    return ok;
}

/* Time, audience, issuer and subject of a payload whose signature held. */
static lr_jwt_status check_claims(const lr_jwt_verifier *v, json_t *payload, int64_t now_s,
                                  lr_jwt_claims *out)
{
    int64_t exp = 0, nbf = 0, iat = 0;
    bool has_exp, has_nbf, has_iat;
    if (numeric_claim(payload, "exp", &exp, &has_exp) ||
        numeric_claim(payload, "nbf", &nbf, &has_nbf) ||
        numeric_claim(payload, "iat", &iat, &has_iat))
        return LR_JWT_MALFORMED;
    if (!has_exp || now_s - v->leeway_s > exp)
        return LR_JWT_EXPIRED;
    if (has_nbf && now_s + v->leeway_s < nbf)
        return LR_JWT_NOT_YET_VALID;
    if (has_iat && now_s + v->leeway_s < iat)
        return LR_JWT_FUTURE_IAT;
    if (v->audience && !audience_ok(json_object_get(payload, "aud"), v->audience))
        return LR_JWT_BAD_AUDIENCE;
    if (v->issuer) {
        const char *iss = plain_string(json_object_get(payload, "iss"));
        if (!iss || strcmp(iss, v->issuer) != 0)
            return LR_JWT_BAD_ISSUER;
    }
    json_t *sub = json_object_get(payload, "sub");
    if (!json_is_string(sub) || !lr_uuid_valid(json_string_value(sub), json_string_length(sub)))
        return LR_JWT_BAD_SUBJECT;
    memset(out, 0, sizeof *out);
    /* Canonical lowercase, so one user is one key everywhere. */
    for (size_t i = 0; i < LR_UUID_LEN; i++) {
        char c = json_string_value(sub)[i];
        out->sub[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    json_t *role = json_object_get(payload, "role");
    if (json_is_string(role))
        snprintf(out->role, sizeof out->role, "%s", json_string_value(role));
    const char *email = plain_string(json_object_get(payload, "email"));
    if (email && strlen(email) < sizeof out->email)
        memcpy(out->email, email, strlen(email) + 1);
    /* app_metadata is set by the auth server only (users cannot edit it,
     * unlike user_metadata), so it may carry a role. */
    out->lensroom_admin =
        json_is_true(json_object_get(json_object_get(payload, "app_metadata"), "lensroom_admin"));
    out->exp = exp;
    return LR_JWT_OK;
}

lr_jwt_status lr_jwt_verify(const lr_jwt_verifier *v, const char *token, size_t len, int64_t now_s,
                            lr_jwt_claims *out)
{
    if (!token || len == 0 || len > MAX_TOKEN_LEN)
        return LR_JWT_MALFORMED;
    const char *dot1 = memchr(token, '.', len);
    if (!dot1)
        return LR_JWT_MALFORMED;
    const char *dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
        return LR_JWT_MALFORMED;

    lr_jwt_key key = {0};
    json_t *payload = NULL;
    json_t *header = decode_segment_json(token, (size_t)(dot1 - token));
    lr_jwt_status st = header ? choose_key(v, header, &key) : LR_JWT_MALFORMED;
    if (st != LR_JWT_OK)
        goto done;
    if (!signature_ok(v, &key, token, (size_t)(dot2 - token), dot2 + 1,
                      len - (size_t)(dot2 + 1 - token))) {
        st = LR_JWT_BAD_SIGNATURE;
        goto done;
    }
    payload = decode_segment_json(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    st = payload ? check_claims(v, payload, now_s, out) : LR_JWT_MALFORMED;
done:
    EVP_PKEY_free(key.pkey);
    json_decref(header);
    json_decref(payload);
    return st;
}

/* Signs claims (stolen) as an HS256 token; malloc'd, NULL on failure. */
static char *sign_hs256(const unsigned char *key, size_t key_len, json_t *claims)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char *payload = claims ? json_dumps(claims, JSON_COMPACT) : NULL;
    json_decref(claims);
    char *h64 = lr_b64url_encode((const unsigned char *)header, strlen(header));
    char *p64 = payload ? lr_b64url_encode((const unsigned char *)payload, strlen(payload)) : NULL;
    char *out = NULL, *signing = NULL, *s64 = NULL;
    if (!h64 || !p64)
        goto done;
    size_t n = strlen(h64) + strlen(p64) + 2;
    signing = lr_xmalloc(n);
    snprintf(signing, n, "%s.%s", h64, p64);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (!HMAC(EVP_sha256(), key, (int)key_len, (unsigned char *)signing, strlen(signing), mac,
              &maclen))
        goto done;
    s64 = lr_b64url_encode(mac, maclen);
    if (!s64)
        goto done;
    n = strlen(signing) + strlen(s64) + 2;
    out = lr_xmalloc(n);
    if (out)
        snprintf(out, n, "%s.%s", signing, s64);
done:
    free(payload);
    free(h64);
    free(p64);
    free(signing);
    free(s64);
    return out;
}

static json_t *user_claims(const char *sub, const char *issuer, int64_t now_s, int64_t ttl_s)
{
    json_t *claims =
        json_pack("{s:s, s:s, s:s, s:I, s:I}", "sub", sub, "role", "authenticated", "aud",
                  "authenticated", "iat", (json_int_t)now_s, "exp", (json_int_t)(now_s + ttl_s));
    if (claims && issuer)
        json_object_set_new(claims, "iss", json_string(issuer));
    return claims;
}

char *lr_jwt_sign_user(const unsigned char *key, size_t key_len, const char *sub,
                       const char *issuer, int64_t now_s, int64_t ttl_s)
{
    return sign_hs256(key, key_len, user_claims(sub, issuer, now_s, ttl_s));
}

char *lr_jwt_sign_admin(const unsigned char *key, size_t key_len, const char *sub,
                        const char *issuer, int64_t now_s, int64_t ttl_s)
{
    json_t *claims = user_claims(sub, issuer, now_s, ttl_s);
    if (claims)
        json_object_set_new(claims, "app_metadata", json_pack("{s:b}", "lensroom_admin", 1));
    return sign_hs256(key, key_len, claims);
}
