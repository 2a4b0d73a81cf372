/* Billing's pure parts: Stripe-Signature verification (several v1
 * values, tolerance, secrets during rotation, tampering), the Standard
 * Webhooks signature of outgoing deliveries (the spec's own test vector)
 * and the retry schedule. The whole flow through the binary, with the
 * real stripe and standardwebhooks libraries, is in
 * tests/integration/test_billing.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/hmac.h>

#include "billing/billing.h"
#include "billing/hooks.h"
#include "core/util.h"

#define NOW 1764300000
#define BODY "{\"id\":\"evt_1\",\"type\":\"checkout.session.completed\"}"

/* What Stripe sends: hex HMAC-SHA256 of "t.body" under the whole secret. */
static void stripe_v1(const char *secret, int64_t t, const char *body, char hex[65])
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "%lld.%s", (long long)t, body);
    unsigned char d[32];
    unsigned int dlen = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)msg, (size_t)n, d,
         &dlen);
    lr_hex(d, dlen, hex);
}

static bool verify(const char *header, const char *body, const char *secrets, int64_t now,
                   const char **why)
{
    return lr_stripe_signature_ok(header, body, strlen(body), secrets, 300, now, why);
}

static void test_stripe_signature_accepts_any_of_several_v1(void **state)
{
    (void)state;
    char good[65], other[65], header[400];
    stripe_v1("whsec_a", NOW, BODY, good);
    stripe_v1("whsec_elsewhere", NOW, BODY, other);
    const char *why = "unset";
    snprintf(header, sizeof header, "t=%d,v1=%s", NOW, good);
    assert_true(verify(header, BODY, "whsec_a", NOW, &why));
    assert_null(why);
    /* Stripe sends one v1 per active secret while an endpoint rolls its
     * secret, and a v0 its libraries ignore: any matching v1 will do. */
    snprintf(header, sizeof header, "t=%d,v1=%s,v0=%s,v1=%s", NOW, other, other, good);
    assert_true(verify(header, BODY, "whsec_a", NOW, &why));
    snprintf(header, sizeof header, "t=%d,v1=%s,v0=%s", NOW, other, good);
    assert_false(verify(header, BODY, "whsec_a", NOW, &why));
    assert_string_equal(why, "no v1 signature matches a configured secret");
}

static void test_stripe_signature_tolerance_is_300_seconds_back(void **state)
{
    (void)state;
    char sig[65], header[200];
    const char *why = NULL;
    stripe_v1("whsec_a", NOW - 300, BODY, sig);
    snprintf(header, sizeof header, "t=%d,v1=%s", NOW - 300, sig);
    assert_true(verify(header, BODY, "whsec_a", NOW, &why));
    stripe_v1("whsec_a", NOW - 600, BODY, sig); /* ten minutes old */
    snprintf(header, sizeof header, "t=%d,v1=%s", NOW - 600, sig);
    assert_false(verify(header, BODY, "whsec_a", NOW, &why));
    assert_string_equal(why, "the signature's timestamp is outside the tolerance");
    /* The timestamp is signed: moving it forward breaks the signature. */
    snprintf(header, sizeof header, "t=%d,v1=%s", NOW, sig);
    assert_false(verify(header, BODY, "whsec_a", NOW, &why));
    assert_string_equal(why, "no v1 signature matches a configured secret");
}

static void test_stripe_signature_under_either_secret_during_rotation(void **state)
{
    (void)state;
    char old_sig[65], new_sig[65], stray[65], header[200];
    const char *why = NULL;
    stripe_v1("whsec_old", NOW, BODY, old_sig);
    stripe_v1("whsec_new", NOW, BODY, new_sig);
    stripe_v1("whsec_stray", NOW, BODY, stray);
    const char *secrets = "whsec_old, whsec_new";
    snprintf(header, sizeof header, "t=%d,v1=%s", NOW, old_sig);
    assert_true(verify(header, BODY, secrets, NOW, &why));
    snprintf(header, sizeof header, "t=%d,v1=%s", NOW, new_sig);
    assert_true(verify(header, BODY, secrets, NOW, &why));
    snprintf(header, sizeof header, "t=%d,v1=%s", NOW, stray);
    assert_false(verify(header, BODY, secrets, NOW, &why));
    snprintf(header, sizeof header, "t=%d,v1=%s", NOW, old_sig);
    assert_false(verify(header, BODY, "whsec_new", NOW, &why)); /* old one retired */
}

static void test_stripe_signature_refuses_tampering_and_malformed_headers(void **state)
{
    (void)state;
    char sig[65], header[200];
    const char *why = NULL;
    stripe_v1("whsec_a", NOW, BODY, sig);
    snprintf(header, sizeof header, "t=%d,v1=%s", NOW, sig);
    const char *tampered = "{\"id\":\"evt_1\",\"type\":\"checkout.session.completeD\"}";
    assert_false(verify(header, tampered, "whsec_a", NOW, &why));
    /* A body with a NUL inside is compared by its length, not its string. */
    char with_nul[sizeof BODY + 2];
    memcpy(with_nul, BODY, sizeof BODY);
    with_nul[sizeof BODY] = 'x';
    assert_false(
        lr_stripe_signature_ok(header, with_nul, sizeof BODY + 1, "whsec_a", 300, NOW, &why));
    snprintf(header, sizeof header, "v1=%s", sig);
    assert_false(verify(header, BODY, "whsec_a", NOW, &why));
    assert_string_equal(why, "Stripe-Signature has no timestamp or no v1 signature");
    snprintf(header, sizeof header, "t=%d", NOW);
    assert_false(verify(header, BODY, "whsec_a", NOW, &why));
    snprintf(header, sizeof header, "t=%d,v1=%.63s", NOW, sig); /* one digit short */
    assert_false(verify(header, BODY, "whsec_a", NOW, &why));
    assert_false(verify("", BODY, "whsec_a", NOW, &why));
    assert_false(lr_stripe_signature_ok(NULL, BODY, strlen(BODY), "whsec_a", 300, NOW, &why));
    assert_string_equal(why, "no Stripe-Signature header");
}

/* The Standard Webhooks specification's example, which every official
 * library tests against. */
static void test_standard_webhooks_signature_matches_the_spec_vector(void **state)
{
    (void)state;
    const char *body = "{\"test\": 2432232314}";
    char sig[64];
    assert_true(lr_hooks_sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                              "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, strlen(body), sig));
    assert_string_equal(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    /* Every signed part counts: id, timestamp, body. */
    char other[64];
    assert_true(lr_hooks_sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                              "msg_p5jXN8AQM9LWM0D4loKWxJeK", 1614265330, body, strlen(body),
                              other));
    assert_string_not_equal(sig, other);
    assert_true(lr_hooks_sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                              "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, strlen(body),
                              other));
    assert_string_not_equal(sig, other);
    assert_true(lr_hooks_sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                              "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, strlen(body) - 1,
                              other));
    assert_string_not_equal(sig, other);
    /* A secret without the prefix, or not base64, signs nothing. */
    assert_false(lr_hooks_sign("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_1", 1, body, 3, other));
    assert_false(lr_hooks_sign("whsec_", "msg_1", 1, body, 3, other));
    assert_false(lr_hooks_sign(NULL, "msg_1", 1, body, 3, other));
}

static void test_retry_backoff_doubles_to_an_hour_with_25_percent_jitter(void **state)
{
    (void)state;
    /* Without jitter's spread (unit 0.5 is the middle): 5 s, 10 s, 20 s, ... */
    int64_t want = 5000;
    for (int failures = 1; failures <= 10; failures++, want *= 2)
        assert_int_equal(lr_hooks_backoff_ms(5000, failures, 0.5), want < 3600000 ? want : 3600000);
    assert_int_equal(lr_hooks_backoff_ms(5000, 11, 0.5), 3600000);
    assert_int_equal(lr_hooks_backoff_ms(5000, 1000, 0.5), 3600000); /* capped, no overflow */
    /* The jitter's bounds: 0.75x and 1.25x. */
    assert_int_equal(lr_hooks_backoff_ms(5000, 1, 0.0), 3750);
    assert_int_equal(lr_hooks_backoff_ms(5000, 3, 0.999999), 24999);
    assert_int_equal(lr_hooks_backoff_ms(5000, 20, 0.0), 2700000);
    /* 24 hours of retries from a 5 s start: about 30 attempts. */
    int64_t elapsed = 0;
    int attempts = 0;
    while (elapsed <= 24 * 3600 * 1000LL)
        elapsed += lr_hooks_backoff_ms(5000, ++attempts, 0.5);
    assert_in_range(attempts, 25, 35);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stripe_signature_accepts_any_of_several_v1),
        cmocka_unit_test(test_stripe_signature_tolerance_is_300_seconds_back),
        cmocka_unit_test(test_stripe_signature_under_either_secret_during_rotation),
        cmocka_unit_test(test_stripe_signature_refuses_tampering_and_malformed_headers),
        cmocka_unit_test(test_standard_webhooks_signature_matches_the_spec_vector),
        cmocka_unit_test(test_retry_backoff_doubles_to_an_hour_with_25_percent_jitter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
