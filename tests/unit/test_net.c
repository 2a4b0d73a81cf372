/* The outbound address policy (SSRF rules): which URLs may be fetched and
 * which resolved addresses a connection may reach. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "net/net.h"

static bool internal_v4(const char *ip)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    assert_int_equal(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
    return lr_net_addr_internal((struct sockaddr *)&sa);
}

static bool internal_v6(const char *ip)
{
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6};
    assert_int_equal(inet_pton(AF_INET6, ip, &sa.sin6_addr), 1);
    return lr_net_addr_internal((struct sockaddr *)&sa);
}

static void test_internal_addresses(void **state)
{
    const char *v4_internal[] = {"127.0.0.1",      "127.9.9.9",   "10.1.2.3",        "172.16.0.1",
                                 "172.31.255.255", "192.168.1.1", "169.254.169.254", "100.64.0.1",
                                 "0.0.0.0",        "224.0.0.1",   "255.255.255.255", "198.18.0.1"};
    for (size_t i = 0; i < sizeof v4_internal / sizeof *v4_internal; i++)
        assert_true(internal_v4(v4_internal[i]));
    const char *v4_public[] = {"8.8.8.8",     "1.1.1.1",     "172.32.0.1",
                               "100.128.0.1", "192.169.0.1", "11.0.0.1"};
    for (size_t i = 0; i < sizeof v4_public / sizeof *v4_public; i++)
        assert_false(internal_v4(v4_public[i]));
    const char *v6_internal[] = {"::1",
                                 "::",
                                 "fe80::1",
                                 "fc00::1",
                                 "fd12:3456::1",
                                 "ff02::1",
                                 "::ffff:127.0.0.1",
                                 "::ffff:10.0.0.1",
                                 "64:ff9b::a00:1",
                                 "2001:db8::1"};
    for (size_t i = 0; i < sizeof v6_internal / sizeof *v6_internal; i++)
        assert_true(internal_v6(v6_internal[i]));
    assert_false(internal_v6("2606:4700:4700::1111"));
    assert_false(internal_v6("::ffff:8.8.8.8"));
}

static void test_url_rules(void **state)
{
    char *err = NULL;
    lr_net_policy *p = lr_net_policy_new("127.0.0.1:8080,[::1]:9000", &err);
    assert_non_null(p);
    const char *why;
    assert_true(lr_net_url_allowed(p, "https://cdn.example.com/a.png", &why));
    assert_true(lr_net_url_allowed(p, "https://8.8.8.8/a.png", &why));
    assert_true(lr_net_url_allowed(p, "http://127.0.0.1:8080/a.png", &why)); /* allow-listed */
    assert_true(lr_net_url_allowed(p, "http://[::1]:9000/a.png", &why));
    const char *refused[] = {"http://cdn.example.com/a.png",
                             "https://127.0.0.1/a.png",
                             "http://127.0.0.1:8081/a.png",
                             "https://10.0.0.1/a.png",
                             "https://[::1]/a.png",
                             "https://localhost/a.png",
                             "https://u:p@cdn.example.com/a",
                             "ftp://cdn.example.com/a.png",
                             "file:///etc/passwd",
                             "gopher://x/",
                             "not a url",
                             ""};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        why = NULL;
        assert_false(lr_net_url_allowed(p, refused[i], &why));
        assert_non_null(why);
    }
    lr_net_policy_free(p);
}

static void test_bad_allow_list(void **state)
{
    char *err = NULL;
    assert_null(lr_net_policy_new("example.com:80", &err));
    assert_non_null(err);
    free(err);
    err = NULL;
    assert_null(lr_net_policy_new("127.0.0.1", &err));
    free(err);
    err = NULL;
    assert_null(lr_net_policy_new("127.0.0.1:99999", &err));
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_internal_addresses),
        cmocka_unit_test(test_url_rules),
        cmocka_unit_test(test_bad_allow_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
