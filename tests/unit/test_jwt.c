/* JWT verification: every way a token can be wrong is rejected, and the
 * algorithm is never taken from the token; JWKs become OpenSSL keys that
 * verify ES256 and RS256 tokens and nothing else. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "auth/jwks.h"
#include "auth/jwt.h"
#include "core/util.h"

static const unsigned char KEY[] = "test-secret-that-is-long-enough-0123456789";
static const char USER[] = "3f1c2a9e-8a4b-4c1d-9e2f-0a1b2c3d4e5f";
#define NOW 1800000000

static lr_jwt_verifier verifier(void)
{
    return (lr_jwt_verifier){
        .key = KEY, .key_len = sizeof KEY - 1, .audience = "authenticated", .leeway_s = 30};
}

/* Builds header.payload.signature from raw JSON with an HS256 MAC. */
static char *forge(const char *header, const char *payload, const unsigned char *key, size_t klen)
{
    char *h = lr_b64url_encode((const unsigned char *)header, strlen(header));
    char *p = lr_b64url_encode((const unsigned char *)payload, strlen(payload));
    char *signing;
    assert_true(asprintf(&signing, "%s.%s", h, p) > 0);
    unsigned char mac[32];
    unsigned int n;
    HMAC(EVP_sha256(), key, (int)klen, (unsigned char *)signing, strlen(signing), mac, &n);
    char *s = lr_b64url_encode(mac, n);
    char *tok;
    assert_true(asprintf(&tok, "%s.%s", signing, s) > 0);
    free(h);
    free(p);
    free(signing);
    free(s);
    return tok;
}

static lr_jwt_status check(const char *tok)
{
    lr_jwt_verifier v = verifier();
    lr_jwt_claims c;
    return lr_jwt_verify(&v, tok, strlen(tok), NOW, &c);
}

static void test_signed_token_verifies_with_claims(void **state)
{
    char *tok = lr_jwt_sign_user(KEY, sizeof KEY - 1, USER, NULL, NOW, 3600);
    lr_jwt_verifier v = verifier();
    lr_jwt_claims c;
    assert_int_equal(lr_jwt_verify(&v, tok, strlen(tok), NOW + 10, &c), LR_JWT_OK);
    assert_string_equal(c.sub, USER);
    assert_string_equal(c.role, "authenticated");
    assert_int_equal(c.exp, NOW + 3600);
    free(tok);
}

/* The admin flag comes only from app_metadata (which users cannot
 * write), never from user_metadata; email is read when present. */
static void test_admin_flag_and_email_claims(void **state)
{
    char *tok = lr_jwt_sign_admin(KEY, sizeof KEY - 1, USER, NULL, NOW, 3600);
    lr_jwt_verifier v = verifier();
    lr_jwt_claims c;
    assert_int_equal(lr_jwt_verify(&v, tok, strlen(tok), NOW, &c), LR_JWT_OK);
    assert_true(c.lensroom_admin);
    assert_string_equal(c.email, "");
    free(tok);
    tok = lr_jwt_sign_user(KEY, sizeof KEY - 1, USER, NULL, NOW, 3600);
    assert_int_equal(lr_jwt_verify(&v, tok, strlen(tok), NOW, &c), LR_JWT_OK);
    assert_false(c.lensroom_admin);
    free(tok);
    char payload[512];
    snprintf(payload, sizeof payload,
             "{\"sub\":\"%s\",\"aud\":\"authenticated\",\"exp\":%lld,\"email\":\"a@example.com\","
             "\"user_metadata\":{\"lensroom_admin\":true},"
             "\"app_metadata\":{\"lensroom_admin\":\"true\"}}",
             USER, (long long)NOW + 60);
    tok = forge("{\"alg\":\"HS256\"}", payload, KEY, sizeof KEY - 1);
    assert_int_equal(lr_jwt_verify(&v, tok, strlen(tok), NOW, &c), LR_JWT_OK);
    assert_false(c.lensroom_admin); /* only JSON true counts, only in app_metadata */
    assert_string_equal(c.email, "a@example.com");
    free(tok);
    (void)state;
}

static void test_wrong_key_is_bad_signature(void **state)
{
    char *tok = lr_jwt_sign_user((const unsigned char *)"another-secret-another-secret-xx", 32,
                                 USER, NULL, NOW, 3600);
    assert_int_equal(check(tok), LR_JWT_BAD_SIGNATURE);
    free(tok);
}

static void test_tampered_payload_is_bad_signature(void **state)
{
    char *tok = lr_jwt_sign_user(KEY, sizeof KEY - 1, USER, NULL, NOW, 3600);
    char *dot = strchr(tok, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    lr_jwt_status st = check(tok);
    assert_true(st == LR_JWT_BAD_SIGNATURE || st == LR_JWT_MALFORMED);
    free(tok);
}

static void test_expired_token_rejected_after_leeway(void **state)
{
    char *tok = lr_jwt_sign_user(KEY, sizeof KEY - 1, USER, NULL, NOW - 3600, 3600 - 40);
    assert_int_equal(check(tok), LR_JWT_EXPIRED);
    free(tok);
    /* within the leeway */
    tok = lr_jwt_sign_user(KEY, sizeof KEY - 1, USER, NULL, NOW - 3600, 3600 - 10);
    assert_int_equal(check(tok), LR_JWT_OK);
    free(tok);
}

static void test_missing_exp_is_rejected(void **state)
{
    char *tok =
        forge("{\"alg\":\"HS256\"}",
              "{\"sub\":\"3f1c2a9e-8a4b-4c1d-9e2f-0a1b2c3d4e5f\",\"aud\":\"authenticated\"}", KEY,
              sizeof KEY - 1);
    assert_int_equal(check(tok), LR_JWT_EXPIRED);
    free(tok);
}

static void test_not_yet_valid(void **state)
{
    char payload[256];
    snprintf(payload, sizeof payload,
             "{\"sub\":\"%s\",\"aud\":\"authenticated\",\"exp\":%d,\"nbf\":%d}", USER, NOW + 9000,
             NOW + 600);
    char *tok = forge("{\"alg\":\"HS256\"}", payload, KEY, sizeof KEY - 1);
    assert_int_equal(check(tok), LR_JWT_NOT_YET_VALID);
    free(tok);
}

static void test_alg_none_rejected(void **state)
{
    char payload[256];
    snprintf(payload, sizeof payload, "{\"sub\":\"%s\",\"aud\":\"authenticated\",\"exp\":%d}", USER,
             NOW + 600);
    char *h = lr_b64url_encode((const unsigned char *)"{\"alg\":\"none\"}", 14);
    char *p = lr_b64url_encode((const unsigned char *)payload, strlen(payload));
    char *tok;
    assert_true(asprintf(&tok, "%s.%s.", h, p) > 0);
    assert_int_equal(check(tok), LR_JWT_BAD_ALG);
    free(h);
    free(p);
    free(tok);
}

static void test_rs256_header_rejected_even_with_valid_hmac(void **state)
{
    /* HS/RS confusion: an HMAC made with our key under an RS256 label. */
    char payload[256];
    snprintf(payload, sizeof payload, "{\"sub\":\"%s\",\"aud\":\"authenticated\",\"exp\":%d}", USER,
             NOW + 600);
    char *tok = forge("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", payload, KEY, sizeof KEY - 1);
    assert_int_equal(check(tok), LR_JWT_BAD_ALG);
    free(tok);
    tok = forge("{\"alg\":\"HS512\"}", payload, KEY, sizeof KEY - 1);
    assert_int_equal(check(tok), LR_JWT_BAD_ALG);
    free(tok);
}

static void test_wrong_audience_rejected(void **state)
{
    char payload[256];
    snprintf(payload, sizeof payload, "{\"sub\":\"%s\",\"aud\":\"anon\",\"exp\":%d}", USER,
             NOW + 600);
    char *tok = forge("{\"alg\":\"HS256\"}", payload, KEY, sizeof KEY - 1);
    assert_int_equal(check(tok), LR_JWT_BAD_AUDIENCE);
    free(tok);
    snprintf(payload, sizeof payload,
             "{\"sub\":\"%s\",\"aud\":[\"x\",\"authenticated\"],\"exp\":%d}", USER, NOW + 600);
    tok = forge("{\"alg\":\"HS256\"}", payload, KEY, sizeof KEY - 1);
    assert_int_equal(check(tok), LR_JWT_OK);
    free(tok);
}

static void test_subject_must_be_uuid(void **state)
{
    char payload[256];
    snprintf(payload, sizeof payload,
             "{\"sub\":\"../../etc/passwd\",\"aud\":\"authenticated\",\"exp\":%d}", NOW + 600);
    char *tok = forge("{\"alg\":\"HS256\"}", payload, KEY, sizeof KEY - 1);
    assert_int_equal(check(tok), LR_JWT_BAD_SUBJECT);
    free(tok);
}

static void test_malformed_tokens(void **state)
{
    const char *bad[] = {"",
                         "abc",
                         "a.b",
                         "a.b.c.d",
                         "!!!.???.***",
                         "e30.e30.",
                         "..",
                         "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        lr_jwt_status st = check(bad[i]);
        assert_true(st == LR_JWT_MALFORMED || st == LR_JWT_BAD_SIGNATURE || st == LR_JWT_BAD_ALG);
        assert_int_not_equal(st, LR_JWT_OK);
    }
}

/* ---- time claims at the edges of int64 -------------------------------- */

static lr_jwt_status check_payload(const char *payload)
{
    char *tok = forge("{\"alg\":\"HS256\"}", payload, KEY, sizeof KEY - 1);
    lr_jwt_status st = check(tok);
    free(tok);
    return st;
}

static void test_absurd_exp_is_malformed_without_overflow(void **state)
{
    /* INT64_MAX + leeway overflowed, and 1e300 was cast to int64: both UB. */
    const char *exps[] = {"9223372036854775807",
                          "-9223372036854775807",
                          "253402300800",
                          "1e300",
                          "-1e300",
                          "9.3e18",
                          "-1",
                          "\"9999999999\"",
                          "null"};
    for (size_t i = 0; i < sizeof exps / sizeof *exps; i++) {
        char payload[256];
        snprintf(payload, sizeof payload, "{\"sub\":\"%s\",\"aud\":\"authenticated\",\"exp\":%s}",
                 USER, exps[i]);
        assert_int_equal(check_payload(payload), LR_JWT_MALFORMED);
    }
    char payload[256];
    snprintf(payload, sizeof payload,
             "{\"sub\":\"%s\",\"aud\":\"authenticated\",\"exp\":%d,\"nbf\":9223372036854775807}",
             USER, NOW + 60);
    assert_int_equal(check_payload(payload), LR_JWT_MALFORMED);
    snprintf(payload, sizeof payload,
             "{\"sub\":\"%s\",\"aud\":\"authenticated\",\"exp\":%d,\"iat\":-9223372036854775807}",
             USER, NOW + 60);
    assert_int_equal(check_payload(payload), LR_JWT_MALFORMED);
    /* The largest accepted time is still fine, as integer and as real. */
    snprintf(payload, sizeof payload, "{\"sub\":\"%s\",\"aud\":\"authenticated\",\"exp\":%lld}",
             USER, (long long)LR_JWT_MAX_TIME);
    assert_int_equal(check_payload(payload), LR_JWT_OK);
    snprintf(payload, sizeof payload, "{\"sub\":\"%s\",\"aud\":\"authenticated\",\"exp\":%d.5}",
             USER, NOW + 60);
    assert_int_equal(check_payload(payload), LR_JWT_OK);
}

static void test_iat_in_the_future_is_rejected_past_leeway(void **state)
{
    char payload[256];
    snprintf(payload, sizeof payload,
             "{\"sub\":\"%s\",\"aud\":\"authenticated\",\"exp\":%d,\"iat\":%d}", USER, NOW + 90000,
             NOW + 86400);
    assert_int_equal(check_payload(payload), LR_JWT_FUTURE_IAT);
    snprintf(payload, sizeof payload,
             "{\"sub\":\"%s\",\"aud\":\"authenticated\",\"exp\":%d,\"iat\":%d}", USER, NOW + 600,
             NOW + 31);
    assert_int_equal(check_payload(payload), LR_JWT_FUTURE_IAT);
    snprintf(payload, sizeof payload,
             "{\"sub\":\"%s\",\"aud\":\"authenticated\",\"exp\":%d,\"iat\":%d}", USER, NOW + 600,
             NOW + 30); /* within the leeway: clocks differ a little */
    assert_int_equal(check_payload(payload), LR_JWT_OK);
}

static void test_crit_header_is_rejected(void **state)
{
    char payload[256];
    snprintf(payload, sizeof payload, "{\"sub\":\"%s\",\"aud\":\"authenticated\",\"exp\":%d}", USER,
             NOW + 600);
    const char *headers[] = {"{\"alg\":\"HS256\",\"crit\":[\"x-unknown\"],\"x-unknown\":1}",
                             "{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}",
                             "{\"alg\":\"HS256\",\"crit\":[]}",
                             "{\"alg\":\"HS256\",\"crit\":\"exp\"}"};
    for (size_t i = 0; i < sizeof headers / sizeof *headers; i++) {
        char *tok = forge(headers[i], payload, KEY, sizeof KEY - 1);
        assert_int_equal(check(tok), LR_JWT_BAD_CRIT);
        free(tok);
    }
    /* Harmless non-critical header parameters still pass. */
    char *tok =
        forge("{\"alg\":\"HS256\",\"typ\":\"JWT\",\"x-extra\":1}", payload, KEY, sizeof KEY - 1);
    assert_int_equal(check(tok), LR_JWT_OK);
    free(tok);
}

static void test_issuer_checked_when_configured(void **state)
{
    lr_jwt_verifier v = verifier();
    v.issuer = "https://abcd.supabase.co/auth/v1";
    lr_jwt_claims c;
    char *tok = lr_jwt_sign_user(KEY, sizeof KEY - 1, USER, v.issuer, NOW, 600);
    assert_int_equal(lr_jwt_verify(&v, tok, strlen(tok), NOW, &c), LR_JWT_OK);
    free(tok);
    tok =
        lr_jwt_sign_user(KEY, sizeof KEY - 1, USER, "https://other.supabase.co/auth/v1", NOW, 600);
    assert_int_equal(lr_jwt_verify(&v, tok, strlen(tok), NOW, &c), LR_JWT_BAD_ISSUER);
    free(tok);
    tok = lr_jwt_sign_user(KEY, sizeof KEY - 1, USER, NULL, NOW, 600);
    assert_int_equal(lr_jwt_verify(&v, tok, strlen(tok), NOW, &c), LR_JWT_BAD_ISSUER);
    free(tok);
}

/* ---- JWK -> OpenSSL key, ES256 / RS256 ---------------------------------- */

static char *b64_bn(const BIGNUM *bn, int pad)
{
    unsigned char buf[1024];
    int n = pad ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);
    assert_true(n > 0);
    return lr_b64url_encode(buf, (size_t)n);
}

/* The public JWK of an EC P-256 or RSA key, as a JSON string. */
static char *public_jwk(EVP_PKEY *pkey, const char *kid, const char *alg)
{
    json_t *j;
    if (EVP_PKEY_is_a(pkey, "EC")) {
        unsigned char pt[65];
        size_t n = 0;
        assert_int_equal(
            EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt, &n), 1);
        assert_int_equal(n, 65);
        char *x = lr_b64url_encode(pt + 1, 32), *y = lr_b64url_encode(pt + 33, 32);
        j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x", x, "y", y,
                      "kid", kid);
        free(x);
        free(y);
    } else {
        BIGNUM *n = NULL, *e = NULL;
        assert_int_equal(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n), 1);
        assert_int_equal(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e), 1);
        char *n64 = b64_bn(n, 0), *e64 = b64_bn(e, 0);
        j = json_pack("{s:s, s:s, s:s, s:s}", "kty", "RSA", "n", n64, "e", e64, "kid", kid);
        free(n64);
        free(e64);
        BN_free(n);
        BN_free(e);
    }
    if (alg)
        json_object_set_new(j, "alg", json_string(alg));
    char *out = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return out;
}

/* A token signed with pkey under header_alg (ES256: DER -> r||s). */
static char *sign_asym(EVP_PKEY *pkey, const char *header, const char *payload)
{
    char *h = lr_b64url_encode((const unsigned char *)header, strlen(header));
    char *p = lr_b64url_encode((const unsigned char *)payload, strlen(payload));
    char *signing;
    assert_true(asprintf(&signing, "%s.%s", h, p) > 0);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char sig[1024];
    size_t siglen = sizeof sig;
    assert_int_equal(EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, pkey, NULL), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &siglen, (unsigned char *)signing, strlen(signing)),
                     1);
    EVP_MD_CTX_free(md);
    char *s64;
    if (EVP_PKEY_is_a(pkey, "EC")) {
        const unsigned char *der = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &der, (long)siglen);
        assert_non_null(es);
        unsigned char rs[64];
        BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, 32);
        BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + 32, 32);
        ECDSA_SIG_free(es);
        s64 = lr_b64url_encode(rs, 64);
    } else {
        s64 = lr_b64url_encode(sig, siglen);
    }
    char *tok;
    assert_true(asprintf(&tok, "%s.%s", signing, s64) > 0);
    free(h);
    free(p);
    free(signing);
    free(s64);
    return tok;
}

typedef struct {
    EVP_PKEY *ec, *rsa, *other_ec;
    lr_jwks *jwks;
} keys;

static int keys_setup(void **state)
{
    keys *k = calloc(1, sizeof *k);
    k->ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    k->other_ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    k->rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    assert_non_null(k->ec);
    assert_non_null(k->rsa);
    char *ec = public_jwk(k->ec, "ec-1", "ES256"), *rsa = public_jwk(k->rsa, "rsa-1", NULL);
    char *set;
    assert_true(asprintf(&set, "{\"keys\":[%s,%s]}", ec, rsa) > 0);
    k->jwks = lr_jwks_new(&(lr_jwks_opts){.url = "unused", .refetch_s = 5});
    size_t loaded = 0, skipped = 0;
    const char *why = NULL;
    assert_int_equal(lr_jwks_load(k->jwks, set, strlen(set), &why, &loaded, &skipped), LR_OK);
    assert_int_equal(loaded, 2);
    assert_int_equal(skipped, 0);
    free(ec);
    free(rsa);
    free(set);
    *state = k;
    return 0;
}

static int keys_teardown(void **state)
{
    keys *k = *state;
    lr_jwks_free(k->jwks);
    EVP_PKEY_free(k->ec);
    EVP_PKEY_free(k->other_ec);
    EVP_PKEY_free(k->rsa);
    free(k);
    return 0;
}

static lr_jwt_status check_jwks(keys *k, const char *tok)
{
    lr_jwt_verifier v = verifier();
    v.lookup = lr_jwks_lookup;
    v.lookup_ctx = k->jwks;
    lr_jwt_claims c;
    return lr_jwt_verify(&v, tok, strlen(tok), NOW, &c);
}

static char *user_payload(void)
{
    char *p;
    assert_true(
        asprintf(&p, "{\"sub\":\"%s\",\"aud\":\"authenticated\",\"exp\":%d}", USER, NOW + 600) > 0);
    return p;
}

static void test_es256_and_rs256_tokens_verify_with_their_jwk(void **state)
{
    keys *k = *state;
    char *p = user_payload();
    char *tok = sign_asym(k->ec, "{\"alg\":\"ES256\",\"kid\":\"ec-1\",\"typ\":\"JWT\"}", p);
    assert_int_equal(check_jwks(k, tok), LR_JWT_OK);
    tok[strlen(tok) - 2] ^= 1; /* a flipped signature bit */
    assert_int_equal(check_jwks(k, tok), LR_JWT_BAD_SIGNATURE);
    free(tok);
    tok = sign_asym(k->rsa, "{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", p);
    assert_int_equal(check_jwks(k, tok), LR_JWT_OK);
    free(tok);
    free(p);
}

static void test_algorithm_comes_from_the_key(void **state)
{
    keys *k = *state;
    char *p = user_payload();
    /* ES256 header naming the RSA key, and the reverse. */
    char *tok = sign_asym(k->ec, "{\"alg\":\"ES256\",\"kid\":\"rsa-1\"}", p);
    assert_int_equal(check_jwks(k, tok), LR_JWT_BAD_ALG);
    free(tok);
    tok = sign_asym(k->rsa, "{\"alg\":\"RS256\",\"kid\":\"ec-1\"}", p);
    assert_int_equal(check_jwks(k, tok), LR_JWT_BAD_ALG);
    free(tok);
    /* A key not in the set, and no kid at all. */
    tok = sign_asym(k->other_ec, "{\"alg\":\"ES256\",\"kid\":\"ec-2\"}", p);
    assert_int_equal(check_jwks(k, tok), LR_JWT_UNKNOWN_KEY);
    free(tok);
    tok = sign_asym(k->ec, "{\"alg\":\"ES256\"}", p);
    assert_int_equal(check_jwks(k, tok), LR_JWT_UNKNOWN_KEY);
    free(tok);
    /* The right key under another label of the same family. */
    tok = sign_asym(k->rsa, "{\"alg\":\"PS256\",\"kid\":\"rsa-1\"}", p);
    assert_int_equal(check_jwks(k, tok), LR_JWT_BAD_ALG);
    free(tok);
    /* No JWKS configured: ES256 is not accepted at all. */
    tok = sign_asym(k->ec, "{\"alg\":\"ES256\",\"kid\":\"ec-1\"}", p);
    assert_int_equal(check(tok), LR_JWT_BAD_ALG);
    free(tok);
    free(p);
}

static void test_hs256_beside_jwks(void **state)
{
    keys *k = *state;
    char *p = user_payload();
    /* Supabase's HS256 tokens carry a kid the JWKS does not list: the secret decides. */
    char *tok = forge("{\"alg\":\"HS256\",\"kid\":\"legacy-hs\"}", p, KEY, sizeof KEY - 1);
    assert_int_equal(check_jwks(k, tok), LR_JWT_OK);
    free(tok);
    /* HS256 naming a public key's kid is confusion, whatever the MAC. */
    tok = forge("{\"alg\":\"HS256\",\"kid\":\"ec-1\"}", p, KEY, sizeof KEY - 1);
    assert_int_equal(check_jwks(k, tok), LR_JWT_BAD_ALG);
    free(tok);
    /* HMAC keyed with the public key, as PEM and as JWK JSON. */
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, k->ec);
    char *pem;
    long pem_len = BIO_get_mem_data(bio, &pem);
    tok = forge("{\"alg\":\"HS256\"}", p, (unsigned char *)pem, (size_t)pem_len);
    assert_int_equal(check_jwks(k, tok), LR_JWT_BAD_SIGNATURE);
    free(tok);
    tok = forge("{\"alg\":\"HS256\",\"kid\":\"ec-1\"}", p, (unsigned char *)pem, (size_t)pem_len);
    assert_int_equal(check_jwks(k, tok), LR_JWT_BAD_ALG);
    free(tok);
    BIO_free(bio);
    char *jwk = public_jwk(k->ec, "ec-1", "ES256");
    tok = forge("{\"alg\":\"HS256\"}", p, (unsigned char *)jwk, strlen(jwk));
    assert_int_equal(check_jwks(k, tok), LR_JWT_BAD_SIGNATURE);
    free(tok);
    free(jwk);
    free(p);
}

static lr_err jwk_status(const char *json, lr_jwt_key *key)
{
    json_t *j = json_loads(json, 0, NULL);
    assert_non_null(j);
    const char *why = NULL;
    lr_err e = lr_jwks_key_from_json(j, key, &why);
    if (e != LR_OK)
        assert_non_null(why);
    json_decref(j);
    return e;
}

static void test_jwk_key_building_refuses_what_it_cannot_trust(void **state)
{
    keys *k = *state;
    lr_jwt_key key;
    char *ec = public_jwk(k->ec, "a", NULL);
    assert_int_equal(jwk_status(ec, &key), LR_OK);
    assert_int_equal(key.alg, LR_JWT_ES256);
    EVP_PKEY_free(key.pkey);
    /* A point off the curve: y changed. */
    json_t *j = json_loads(ec, 0, NULL);
    char *y = strdup(json_string_value(json_object_get(j, "y")));
    y[5] = y[5] == 'A' ? 'B' : 'A';
    json_object_set_new(j, "y", json_string(y));
    char *bad = json_dumps(j, 0);
    assert_int_equal(jwk_status(bad, &key), LR_ERR_INVALID);
    assert_null(key.pkey);
    free(bad);
    free(y);
    json_decref(j);
    free(ec);
    /* A symmetric key, other curves, a truncated point, the right key under the wrong alg. */
    assert_int_equal(jwk_status("{\"kty\":\"oct\",\"k\":\"c2VjcmV0\",\"kid\":\"o\"}", &key),
                     LR_ERR_UNSUPPORTED);
    assert_int_equal(
        jwk_status("{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"}", &key),
        LR_ERR_UNSUPPORTED);
    assert_int_equal(
        jwk_status("{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"}", &key),
        LR_ERR_INVALID);
    ec = public_jwk(k->ec, "a", "RS256");
    assert_int_equal(jwk_status(ec, &key), LR_ERR_UNSUPPORTED);
    free(ec);
    char *rsa = public_jwk(k->rsa, "r", "RS256");
    assert_int_equal(jwk_status(rsa, &key), LR_OK);
    assert_int_equal(key.alg, LR_JWT_RS256);
    EVP_PKEY_free(key.pkey);
    free(rsa);
    rsa = public_jwk(k->rsa, "r", "PS256");
    assert_int_equal(jwk_status(rsa, &key), LR_ERR_UNSUPPORTED);
    free(rsa);
    j = json_pack("{s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "use", "enc");
    const char *why;
    assert_int_equal(lr_jwks_key_from_json(j, &key, &why), LR_ERR_UNSUPPORTED);
    json_decref(j);
    /* RSA below 2048 bits. */
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    rsa = public_jwk(small, "s", NULL);
    assert_int_equal(jwk_status(rsa, &key), LR_ERR_UNSUPPORTED);
    free(rsa);
    EVP_PKEY_free(small);
}

static void test_jwks_load_keeps_old_set_on_garbage(void **state)
{
    keys *k = *state;
    const char *why = NULL;
    const char *bad[] = {"", "[]", "{\"keys\":{}}", "not json", "{\"nokeys\":[]}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(lr_jwks_load(k->jwks, bad[i], strlen(bad[i]), &why, NULL, NULL),
                         LR_ERR_INVALID);
        assert_non_null(why);
    }
    lr_jwt_key key;
    assert_true(lr_jwks_lookup(k->jwks, "ec-1", false, &key));
    EVP_PKEY_free(key.pkey);
    /* Unusable entries are skipped, the usable one kept. */
    char *ec = public_jwk(k->other_ec, "ec-2", NULL);
    char *set;
    assert_true(asprintf(&set,
                         "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\",\"kid\":\"h\"},%s,%s,"
                         "{\"kty\":\"EC\"}]}",
                         ec, ec) > 0);
    size_t loaded, skipped;
    assert_int_equal(lr_jwks_load(k->jwks, set, strlen(set), &why, &loaded, &skipped), LR_OK);
    assert_int_equal(loaded, 1);
    assert_int_equal(skipped, 3); /* oct, duplicate kid, no kid */
    assert_false(lr_jwks_lookup(k->jwks, "ec-1", true, &key));
    assert_true(lr_jwks_lookup(k->jwks, "ec-2", false, &key));
    EVP_PKEY_free(key.pkey);
    free(ec);
    free(set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signed_token_verifies_with_claims),
        cmocka_unit_test(test_admin_flag_and_email_claims),
        cmocka_unit_test(test_wrong_key_is_bad_signature),
        cmocka_unit_test(test_tampered_payload_is_bad_signature),
        cmocka_unit_test(test_expired_token_rejected_after_leeway),
        cmocka_unit_test(test_missing_exp_is_rejected),
        cmocka_unit_test(test_not_yet_valid),
        cmocka_unit_test(test_alg_none_rejected),
        cmocka_unit_test(test_rs256_header_rejected_even_with_valid_hmac),
        cmocka_unit_test(test_wrong_audience_rejected),
        cmocka_unit_test(test_subject_must_be_uuid),
        cmocka_unit_test(test_malformed_tokens),
        cmocka_unit_test(test_absurd_exp_is_malformed_without_overflow),
        cmocka_unit_test(test_iat_in_the_future_is_rejected_past_leeway),
        cmocka_unit_test(test_crit_header_is_rejected),
        cmocka_unit_test(test_issuer_checked_when_configured),
        cmocka_unit_test_setup_teardown(test_es256_and_rs256_tokens_verify_with_their_jwk,
                                        keys_setup, keys_teardown),
        cmocka_unit_test_setup_teardown(test_algorithm_comes_from_the_key, keys_setup,
                                        keys_teardown),
        cmocka_unit_test_setup_teardown(test_hs256_beside_jwks, keys_setup, keys_teardown),
        cmocka_unit_test_setup_teardown(test_jwk_key_building_refuses_what_it_cannot_trust,
                                        keys_setup, keys_teardown),
        cmocka_unit_test_setup_teardown(test_jwks_load_keeps_old_set_on_garbage, keys_setup,
                                        keys_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
