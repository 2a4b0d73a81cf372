#include "auth/jwt.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKEN_LEN 16384

const char *lr_jwt_strerror(lr_jwt_status s)
{
    switch (s) {
    case LR_JWT_OK: return "ok";
    case LR_JWT_MALFORMED: return "malformed token";
    case LR_JWT_BAD_ALG: return "token algorithm not allowed";
    case LR_JWT_BAD_SIGNATURE: return "invalid token signature";
    case LR_JWT_EXPIRED: return "token expired";
    case LR_JWT_NOT_YET_VALID: return "token not yet valid";
    case LR_JWT_BAD_AUDIENCE: return "token audience not accepted";
    case LR_JWT_BAD_SUBJECT: return "token subject is not a user id";
    }
    return "invalid token";
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

/* NumericDate claims: integers or reals; absent is reported as 0/false. */
static int numeric_claim(json_t *payload, const char *name, int64_t *out, int *present)
{
    json_t *v = json_object_get(payload, name);
    *present = v != NULL;
    if (!v)
        return 0;
    if (json_is_integer(v))
        *out = json_integer_value(v);
    else if (json_is_real(v))
        *out = (int64_t)json_real_value(v);
    else
        return -1;
    return 0;
}

static int audience_ok(json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    if (json_is_array(aud)) {
        size_t i;
        json_t *e;
        json_array_foreach(aud, i, e)
        {
            if (json_is_string(e) && strcmp(json_string_value(e), want) == 0)
                return 1;
        }
    }
    return 0;
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

    lr_jwt_status st = LR_JWT_MALFORMED;
    json_t *header = decode_segment_json(token, (size_t)(dot1 - token));
    json_t *payload = NULL;
    if (!header)
        goto done;
    json_t *alg = json_object_get(header, "alg");
    if (!json_is_string(alg)) {
        st = LR_JWT_MALFORMED;
        goto done;
    }
    if (strcmp(json_string_value(alg), "HS256") != 0) {
        st = LR_JWT_BAD_ALG;
        goto done;
    }

    size_t siglen;
    unsigned char *sig = lr_b64_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), &siglen);
    if (!sig)
        goto done;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (!HMAC(EVP_sha256(), v->key, (int)v->key_len, (const unsigned char *)token,
              (size_t)(dot2 - token), mac, &maclen)) {
        free(sig);
        goto done;
    }
    int sig_ok = lr_ct_equal(sig, siglen, mac, maclen);
    free(sig);
    if (!sig_ok) {
        st = LR_JWT_BAD_SIGNATURE;
        goto done;
    }

    payload = decode_segment_json(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (!payload)
        goto done;
    int64_t exp = 0, nbf = 0;
    int has_exp, has_nbf;
    if (numeric_claim(payload, "exp", &exp, &has_exp) || numeric_claim(payload, "nbf", &nbf, &has_nbf))
        goto done;
    if (!has_exp || now_s > exp + v->leeway_s) {
        st = LR_JWT_EXPIRED;
        goto done;
    }
    if (has_nbf && now_s + v->leeway_s < nbf) {
        st = LR_JWT_NOT_YET_VALID;
        goto done;
    }
    if (v->audience && !audience_ok(json_object_get(payload, "aud"), v->audience)) {
        st = LR_JWT_BAD_AUDIENCE;
        goto done;
    }
    json_t *sub = json_object_get(payload, "sub");
    if (!json_is_string(sub) ||
        !lr_uuid_valid(json_string_value(sub), json_string_length(sub))) {
        st = LR_JWT_BAD_SUBJECT;
        goto done;
    }
    memset(out, 0, sizeof *out);
    /* Canonical lowercase, so one user is one key everywhere. */
    for (size_t i = 0; i < LR_UUID_LEN; i++) {
        char c = json_string_value(sub)[i];
        out->sub[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    json_t *role = json_object_get(payload, "role");
    if (json_is_string(role))
        snprintf(out->role, sizeof out->role, "%s", json_string_value(role));
    out->exp = exp;
    st = LR_JWT_OK;
done:
    json_decref(header);
    json_decref(payload);
    return st;
}

char *lr_jwt_sign_user(const unsigned char *key, size_t key_len, const char *sub, int64_t now_s,
                       int64_t ttl_s)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    json_t *claims = json_pack("{s:s, s:s, s:s, s:I, s:I}", "sub", sub, "role", "authenticated",
                               "aud", "authenticated", "iat", (json_int_t)now_s, "exp",
                               (json_int_t)(now_s + ttl_s));
    char *payload = claims ? json_dumps(claims, JSON_COMPACT) : NULL;
    json_decref(claims);
    char *h64 = lr_b64url_encode((const unsigned char *)header, strlen(header));
    char *p64 = payload ? lr_b64url_encode((const unsigned char *)payload, strlen(payload)) : NULL;
    char *out = NULL, *signing = NULL, *s64 = NULL;
    if (!h64 || !p64)
        goto done;
    size_t n = strlen(h64) + strlen(p64) + 2;
    signing = malloc(n);
    if (!signing)
        goto done;
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
    out = malloc(n);
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
