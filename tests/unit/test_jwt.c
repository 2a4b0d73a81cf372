/* JWT verification: every way a token can be wrong is rejected, and the
 * algorithm is never taken from the token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth/jwt.h"
#include "core/util.h"

static const unsigned char KEY[] = "test-secret-that-is-long-enough-0123456789";
static const char USER[] = "3f1c2a9e-8a4b-4c1d-9e2f-0a1b2c3d4e5f";
#define NOW 1800000000

static lr_jwt_verifier verifier(void)
{
    return (lr_jwt_verifier){KEY, sizeof KEY - 1, "authenticated", 30};
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
    char *tok = lr_jwt_sign_user(KEY, sizeof KEY - 1, USER, NOW, 3600);
    lr_jwt_verifier v = verifier();
    lr_jwt_claims c;
    assert_int_equal(lr_jwt_verify(&v, tok, strlen(tok), NOW + 10, &c), LR_JWT_OK);
    assert_string_equal(c.sub, USER);
    assert_string_equal(c.role, "authenticated");
    assert_int_equal(c.exp, NOW + 3600);
    free(tok);
}

static void test_wrong_key_is_bad_signature(void **state)
{
    char *tok = lr_jwt_sign_user((const unsigned char *)"another-secret-another-secret-xx", 32, USER,
                                 NOW, 3600);
    assert_int_equal(check(tok), LR_JWT_BAD_SIGNATURE);
    free(tok);
}

static void test_tampered_payload_is_bad_signature(void **state)
{
    char *tok = lr_jwt_sign_user(KEY, sizeof KEY - 1, USER, NOW, 3600);
    char *dot = strchr(tok, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    lr_jwt_status st = check(tok);
    assert_true(st == LR_JWT_BAD_SIGNATURE || st == LR_JWT_MALFORMED);
    free(tok);
}

static void test_expired_token_rejected_after_leeway(void **state)
{
    char *tok = lr_jwt_sign_user(KEY, sizeof KEY - 1, USER, NOW - 3600, 3600 - 40);
    assert_int_equal(check(tok), LR_JWT_EXPIRED);
    free(tok);
    tok = lr_jwt_sign_user(KEY, sizeof KEY - 1, USER, NOW - 3600, 3600 - 10); /* within leeway */
    assert_int_equal(check(tok), LR_JWT_OK);
    free(tok);
}

static void test_missing_exp_is_rejected(void **state)
{
    char *tok = forge("{\"alg\":\"HS256\"}",
                      "{\"sub\":\"3f1c2a9e-8a4b-4c1d-9e2f-0a1b2c3d4e5f\",\"aud\":\"authenticated\"}",
                      KEY, sizeof KEY - 1);
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
    snprintf(payload, sizeof payload, "{\"sub\":\"%s\",\"aud\":\"authenticated\",\"exp\":%d}",
             USER, NOW + 600);
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
    snprintf(payload, sizeof payload, "{\"sub\":\"%s\",\"aud\":\"authenticated\",\"exp\":%d}",
             USER, NOW + 600);
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
    const char *bad[] = {"", "abc", "a.b", "a.b.c.d", "!!!.???.***", "e30.e30.", "..",
                         "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        lr_jwt_status st = check(bad[i]);
        assert_true(st == LR_JWT_MALFORMED || st == LR_JWT_BAD_SIGNATURE || st == LR_JWT_BAD_ALG);
        assert_int_not_equal(st, LR_JWT_OK);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signed_token_verifies_with_claims),
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
