/* Token extraction from cookies and headers, in the original's order and
 * in every Supabase cookie shape. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth/session.h"
#include "core/util.h"

static int run(const char *cookie, const char *authz, lr_credential *c)
{
    return lr_session_candidates(cookie, authz, c, LR_SESSION_MAX_CANDIDATES);
}

static void test_order_is_lr_session_then_supabase_then_bearer(void **state)
{
    lr_credential c[LR_SESSION_MAX_CANDIDATES];
    int n = run("sb-access-token=B.B.B; lr_session=A.A.A; other=x", "Bearer C.C.C", c);
    assert_int_equal(n, 3);
    assert_string_equal(c[0].token, "A.A.A");
    assert_string_equal(c[0].source, "lr_session");
    assert_string_equal(c[1].token, "B.B.B");
    assert_string_equal(c[2].token, "C.C.C");
    assert_string_equal(c[2].source, "authorization");
    lr_session_free(c, n);
}

static void test_supabase_base64_cookie_chunked(void **state)
{
    const char *json = "{\"access_token\":\"hdr.pay.sig\",\"token_type\":\"bearer\","
                       "\"refresh_token\":\"r\",\"user\":{\"id\":\"x\"}}";
    char *b64 = lr_b64url_encode((const unsigned char *)json, strlen(json));
    size_t half = strlen(b64) / 2;
    char cookie[1024];
    /* chunks out of order in the header: .1 before .0 */
    snprintf(cookie, sizeof cookie, "sb-abcd1234-auth-token.1=%s; sb-abcd1234-auth-token.0=base64-%.*s",
             b64 + half, (int)half, b64);
    lr_credential c[LR_SESSION_MAX_CANDIDATES];
    int n = run(cookie, NULL, c);
    assert_int_equal(n, 1);
    assert_string_equal(c[0].token, "hdr.pay.sig");
    lr_session_free(c, n);
    free(b64);
}

static void test_supabase_json_array_and_object_cookie(void **state)
{
    lr_credential c[LR_SESSION_MAX_CANDIDATES];
    int n = run("sb-ref-auth-token=%5B%22aaa.bbb.ccc%22%2C%22refresh%22%5D", NULL, c);
    assert_int_equal(n, 1);
    assert_string_equal(c[0].token, "aaa.bbb.ccc");
    lr_session_free(c, n);
    n = run("sb-ref-auth-token={\"access_token\":\"x.y.z\"}", NULL, c);
    assert_int_equal(n, 1);
    assert_string_equal(c[0].token, "x.y.z");
    lr_session_free(c, n);
}

static void test_garbage_cookies_yield_nothing(void **state)
{
    lr_credential c[LR_SESSION_MAX_CANDIDATES];
    const char *bad[] = {"sb-ref-auth-token=base64-%%%%", "sb-ref-auth-token={not json",
                         "sb-ref-auth-token=[1,2]", "=; ;;=;", "sb--auth-token.x=1",
                         "lr_session=", "sb-ref-auth-token=base64-e30"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int n = run(bad[i], NULL, c);
        assert_int_equal(n, 0);
    }
}

static void test_bearer_only_when_scheme_matches(void **state)
{
    lr_credential c[LR_SESSION_MAX_CANDIDATES];
    assert_int_equal(run(NULL, "Basic dXNlcjpwYXNz", c), 0);
    assert_int_equal(run(NULL, "Bearer ", c), 0);
    int n = run(NULL, "bearer   t.o.k  ", c);
    assert_int_equal(n, 1);
    assert_string_equal(c[0].token, "t.o.k");
    lr_session_free(c, n);
}

static void test_encoded_nul_is_refused(void **state)
{
    lr_credential c[LR_SESSION_MAX_CANDIDATES];
    assert_int_equal(run("lr_session=a.b%00.c", NULL, c), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_is_lr_session_then_supabase_then_bearer),
        cmocka_unit_test(test_supabase_base64_cookie_chunked),
        cmocka_unit_test(test_supabase_json_array_and_object_cookie),
        cmocka_unit_test(test_garbage_cookies_yield_nothing),
        cmocka_unit_test(test_bearer_only_when_scheme_matches),
        cmocka_unit_test(test_encoded_nul_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
