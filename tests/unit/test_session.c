/* Token extraction from cookies and headers, in the documented order and
 * in every Supabase cookie shape; no cookie count limit. */
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

static lr_credential *c; /* the last run's candidates */
static int n;

static int run(const char *cookie, const char *authz)
{
    lr_session_free(c, n);
    n = lr_session_candidates(cookie, authz, &c);
    return n;
}

static int teardown(void **state)
{
    lr_session_free(c, n);
    c = NULL;
    n = 0;
    return 0;
}

/* "base64-" + base64url of the session JSON holding token. */
static char *b64_session(const char *token, const char *extra)
{
    char *json, *b64, *out;
    assert_true(asprintf(&json,
                         "{\"access_token\":\"%s\",\"token_type\":\"bearer\","
                         "\"refresh_token\":\"r\",\"user\":{\"id\":\"x\"%s}}",
                         token, extra ? extra : "") > 0);
    b64 = lr_b64url_encode((const unsigned char *)json, strlen(json));
    assert_true(asprintf(&out, "base64-%s", b64) > 0);
    free(json);
    free(b64);
    return out;
}

/* Appends "; name=value" (or "name=value" to an empty header). */
static void add(char **h, const char *name, const char *value, size_t vlen)
{
    char *nh;
    assert_true(asprintf(&nh, "%s%s%s=%.*s", *h, **h ? "; " : "", name, (int)vlen, value) > 0);
    free(*h);
    *h = nh;
}

static void test_order_is_lr_session_then_supabase_then_bearer(void **state)
{
    assert_int_equal(run("sb-access-token=B.B.B; lr_session=A.A.A; other=x", "Bearer C.C.C"), 3);
    assert_string_equal(c[0].token, "A.A.A");
    assert_string_equal(c[0].source, "lr_session");
    assert_string_equal(c[1].token, "B.B.B");
    assert_string_equal(c[2].token, "C.C.C");
    assert_string_equal(c[2].source, "authorization");
}

static void test_supabase_base64_cookie_chunked(void **state)
{
    char *v = b64_session("hdr.pay.sig", NULL);
    size_t half = strlen(v) / 2;
    char cookie[1024];
    /* chunks out of order in the header: .1 before .0 */
    snprintf(cookie, sizeof cookie, "sb-abcd1234-auth-token.1=%s; sb-abcd1234-auth-token.0=%.*s",
             v + half, (int)half, v);
    assert_int_equal(run(cookie, NULL), 1);
    assert_string_equal(c[0].token, "hdr.pay.sig");
    assert_string_equal(c[0].source, "sb-auth-token-chunks");
    free(v);
}

static void test_supabase_json_array_and_object_cookie(void **state)
{
    assert_int_equal(run("sb-ref-auth-token=%5B%22aaa.bbb.ccc%22%2C%22refresh%22%5D", NULL), 1);
    assert_string_equal(c[0].token, "aaa.bbb.ccc");
    assert_int_equal(run("sb-ref-auth-token={\"access_token\":\"x.y.z\"}", NULL), 1);
    assert_string_equal(c[0].token, "x.y.z");
}

static void test_three_chunks_after_two_hundred_other_cookies(void **state)
{
    char *h = strdup("");
    for (int i = 0; i < 200; i++) {
        char name[32];
        snprintf(name, sizeof name, "pref_%d", i);
        add(&h, name, "some-value", 10);
    }
    char pad[3000];
    memset(pad, 'y', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    char extra[3100];
    snprintf(extra, sizeof extra, ",\"pad\":\"%s\"", pad);
    char *v = b64_session("late.chunk.token", extra);
    size_t third = strlen(v) / 3;
    add(&h, "sb-proj-auth-token.0", v, third);
    add(&h, "sb-proj-auth-token.1", v + third, third);
    add(&h, "theme", "dark", 4);
    add(&h, "sb-proj-auth-token.2", v + 2 * third, strlen(v + 2 * third));
    assert_int_equal(run(h, NULL), 1);
    assert_string_equal(c[0].token, "late.chunk.token");
    free(v);
    free(h);
}

static void test_every_project_is_a_candidate_in_header_order(void **state)
{
    char *stale = b64_session("stale.other.project", NULL);
    char *good = b64_session("good.this.project", NULL);
    char *h = strdup("");
    add(&h, "sb-oldref-auth-token", stale, strlen(stale));
    add(&h, "sb-newref-auth-token.0", good, 20);
    add(&h, "sb-newref-auth-token.1", good + 20, strlen(good + 20));
    assert_int_equal(run(h, "Bearer be.ar.er"), 3);
    assert_string_equal(c[0].token, "stale.other.project");
    assert_string_equal(c[1].token, "good.this.project");
    assert_string_equal(c[2].token, "be.ar.er");
    free(h);
    free(stale);
    free(good);
}

static void test_unsplit_first_then_chunks_and_undecodable_counts_as_absent(void **state)
{
    char *a = b64_session("un.split.tok", NULL), *b = b64_session("chu.nked.tok", NULL);
    char *h = strdup("");
    add(&h, "sb-r-auth-token.0", b, 10);
    add(&h, "sb-r-auth-token", a, strlen(a));
    add(&h, "sb-r-auth-token.1", b + 10, strlen(b + 10));
    assert_int_equal(run(h, NULL), 2);
    assert_string_equal(c[0].token, "un.split.tok");
    assert_string_equal(c[1].token, "chu.nked.tok");
    free(h);
    /* a torn unsplit value (not JSON once decoded) does not hide the chunks */
    h = strdup("");
    add(&h, "sb-r-auth-token", a, strlen(a) - 6);
    add(&h, "sb-r-auth-token.0", b, 10);
    add(&h, "sb-r-auth-token.1", b + 10, strlen(b + 10));
    assert_int_equal(run(h, NULL), 1);
    assert_string_equal(c[0].token, "chu.nked.tok");
    free(h);
    free(a);
    free(b);
}

static void test_chunks_stop_at_the_first_missing_index(void **state)
{
    char *v = b64_session("gap.py.tok", NULL);
    char *h = strdup("");
    add(&h, "sb-r-auth-token.0", v, 12);
    add(&h, "sb-r-auth-token.2", v + 12, strlen(v + 12));
    assert_int_equal(run(h, NULL), 0); /* .0 alone is not JSON */
    free(h);
    h = strdup("");
    add(&h, "sb-r-auth-token.1", v + 12, strlen(v + 12));
    assert_int_equal(run(h, NULL), 0); /* no .0 */
    free(h);
    /* a leading zero is not a chunk name @supabase/ssr writes */
    h = strdup("");
    add(&h, "sb-r-auth-token.00", v, 12);
    add(&h, "sb-r-auth-token.01", v + 12, strlen(v + 12));
    assert_int_equal(run(h, NULL), 0);
    free(h);
    free(v);
}

static void test_repeated_chunk_name_takes_the_first(void **state)
{
    char *v = b64_session("fir.st.wins", NULL);
    char *h = strdup("");
    add(&h, "sb-r-auth-token.0", v, 15);
    add(&h, "sb-r-auth-token.0", "garbage", 7);
    add(&h, "sb-r-auth-token.1", v + 15, strlen(v + 15));
    assert_int_equal(run(h, NULL), 1);
    assert_string_equal(c[0].token, "fir.st.wins");
    free(h);
    free(v);
}

/* What @supabase/ssr writes with cookieEncoding "raw": the JSON itself,
 * URI-encoded by the cookie library, split between escapes. */
static void test_raw_uri_encoded_json_with_utf8_across_chunks(void **state)
{
    const char *enc = "%7B%22access_token%22%3A%22raw.enc.tok%22%2C%22user%22%3A%7B%22"
                      "user_metadata%22%3A%7B%22name%22%3A%22Zo%C3%AB%20%E6%9D%B1%E4%BA%AC%22"
                      "%7D%7D%7D";
    const char *cut = strstr(enc, "%E4"); /* a chunk boundary between two characters */
    char *h = strdup("");
    add(&h, "sb-127-auth-token.0", enc, (size_t)(cut - enc));
    add(&h, "sb-127-auth-token.1", cut, strlen(cut));
    assert_int_equal(run(h, NULL), 1);
    assert_string_equal(c[0].token, "raw.enc.tok");
    free(h);
}

static void test_standard_base64_with_padding_and_nul_in_metadata(void **state)
{
    const char *json = "{\"access_token\":\"std.b64.tok\",\"user\":{\"m\":\"a\\u0000b?>\"}}";
    char *u = lr_b64url_encode((const unsigned char *)json, strlen(json));
    for (char *p = u; *p; p++)
        *p = *p == '-' ? '+' : *p == '_' ? '/' : *p;
    char cookie[512];
    snprintf(cookie, sizeof cookie, "sb-r-auth-token=base64-%s%s", u,
             strlen(u) % 4 ? (strlen(u) % 4 == 2 ? "==" : "=") : "");
    assert_int_equal(run(cookie, NULL), 1);
    assert_string_equal(c[0].token, "std.b64.tok");
    free(u);
}

static void test_garbage_cookies_yield_nothing(void **state)
{
    const char *bad[] = {"sb-ref-auth-token=base64-%%%%",
                         "sb-ref-auth-token={not json",
                         "sb-ref-auth-token=[1,2]",
                         "=; ;;=;",
                         "sb--auth-token.x=1",
                         "lr_session=",
                         "sb-ref-auth-token=base64-e30",
                         "sb-a.b-auth-token={\"access_token\":\"x.y.z\"}",
                         "sb-ref-auth-token={\"access_token\":\"x\\u0000y\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(run(bad[i], NULL), 0);
}

static void test_bearer_only_when_scheme_matches_and_not_an_api_key(void **state)
{
    assert_int_equal(run(NULL, "Basic dXNlcjpwYXNz"), 0);
    assert_int_equal(run(NULL, "Bearer "), 0);
    assert_int_equal(run(NULL, "Bearer sb_publishable_abcdefghijklmnop"), 0);
    assert_int_equal(run(NULL, "Bearer sb_secret_abcdefghijklmnopqrstuv"), 0);
    assert_int_equal(run(NULL, "bearer   t.o.k  "), 1);
    assert_string_equal(c[0].token, "t.o.k");
}

static void test_encoded_nul_is_refused(void **state)
{
    assert_int_equal(run("lr_session=a.b%00.c", NULL), 0);
}

static void test_header_over_the_bound_is_ignored(void **state)
{
    size_t len = LR_SESSION_MAX_HEADER + 16;
    char *h = malloc(len + 1);
    memcpy(h, "lr_session=a.b.c; x=", 20);
    memset(h + 20, 'x', len - 20);
    h[len] = '\0';
    assert_int_equal(run(h, NULL), 0);
    h[LR_SESSION_MAX_HEADER] = '\0';
    assert_int_equal(run(h, NULL), 1);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_order_is_lr_session_then_supabase_then_bearer, teardown),
        cmocka_unit_test_teardown(test_supabase_base64_cookie_chunked, teardown),
        cmocka_unit_test_teardown(test_supabase_json_array_and_object_cookie, teardown),
        cmocka_unit_test_teardown(test_three_chunks_after_two_hundred_other_cookies, teardown),
        cmocka_unit_test_teardown(test_every_project_is_a_candidate_in_header_order, teardown),
        cmocka_unit_test_teardown(test_unsplit_first_then_chunks_and_undecodable_counts_as_absent,
                                  teardown),
        cmocka_unit_test_teardown(test_chunks_stop_at_the_first_missing_index, teardown),
        cmocka_unit_test_teardown(test_repeated_chunk_name_takes_the_first, teardown),
        cmocka_unit_test_teardown(test_raw_uri_encoded_json_with_utf8_across_chunks, teardown),
        cmocka_unit_test_teardown(test_standard_base64_with_padding_and_nul_in_metadata, teardown),
        cmocka_unit_test_teardown(test_garbage_cookies_yield_nothing, teardown),
        cmocka_unit_test_teardown(test_bearer_only_when_scheme_matches_and_not_an_api_key,
                                  teardown),
        cmocka_unit_test_teardown(test_encoded_nul_is_refused, teardown),
        cmocka_unit_test_teardown(test_header_over_the_bound_is_ignored, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
