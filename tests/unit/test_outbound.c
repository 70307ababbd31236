/* Unit tests for common/outbound.c: address classes (data-driven table) and URL rules. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "outbound.h"

/* ---- address classes ---- */

static const struct {
    const char *ip;
    enum outbound_class cls;
} addr_cases[] = {
    /* IPv4 public */
    {"8.8.8.8", OB_PUBLIC},
    {"1.1.1.1", OB_PUBLIC},
    {"93.184.216.34", OB_PUBLIC},
    {"9.255.255.255", OB_PUBLIC},   /* just below 10/8 */
    {"11.0.0.0", OB_PUBLIC},        /* just above 10/8 */
    {"172.15.255.255", OB_PUBLIC},  /* just below 172.16/12 */
    {"172.32.0.0", OB_PUBLIC},      /* just above 172.16/12 */
    {"192.167.255.255", OB_PUBLIC}, /* just below 192.168/16 */
    {"192.169.0.0", OB_PUBLIC},
    {"100.63.255.255", OB_PUBLIC}, /* just below 100.64/10 */
    {"100.128.0.0", OB_PUBLIC},    /* just above */
    {"169.253.255.255", OB_PUBLIC},
    {"223.255.255.255", OB_PUBLIC}, /* last unicast before multicast */
    {"126.255.255.255", OB_PUBLIC},
    {"128.0.0.1", OB_PUBLIC},
    /* IPv4 refused */
    {"0.0.0.0", OB_UNSPECIFIED},
    {"0.1.2.3", OB_UNSPECIFIED},
    {"127.0.0.1", OB_LOOPBACK},
    {"127.255.255.254", OB_LOOPBACK},
    {"10.0.0.1", OB_PRIVATE},
    {"10.255.255.255", OB_PRIVATE},
    {"172.16.0.1", OB_PRIVATE},
    {"172.31.255.255", OB_PRIVATE},
    {"192.168.0.1", OB_PRIVATE},
    {"192.168.255.255", OB_PRIVATE},
    {"100.64.0.1", OB_PRIVATE},
    {"100.127.255.255", OB_PRIVATE},
    {"169.254.169.254", OB_LINK_LOCAL}, /* cloud metadata */
    {"169.254.0.1", OB_LINK_LOCAL},
    {"224.0.0.1", OB_MULTICAST},
    {"239.255.255.250", OB_MULTICAST},
    {"240.0.0.1", OB_RESERVED},
    {"255.255.255.255", OB_RESERVED},
    {"192.0.0.8", OB_RESERVED},
    {"192.0.2.1", OB_RESERVED},
    {"198.18.0.1", OB_RESERVED},
    {"198.19.255.255", OB_RESERVED},
    {"198.51.100.7", OB_RESERVED},
    {"203.0.113.9", OB_RESERVED},
    /* IPv6 public */
    {"2606:4700:4700::1111", OB_PUBLIC},
    {"2a00:1450:4001:82a::200e", OB_PUBLIC},
    {"::ffff:8.8.8.8", OB_PUBLIC},   /* mapped, public inside */
    {"64:ff9b::808:808", OB_PUBLIC}, /* NAT64 of 8.8.8.8 */
    {"2002:808:808::1", OB_PUBLIC},  /* 6to4 of 8.8.8.8 */
    {"fbff:ffff::1", OB_PUBLIC},     /* just below fc00::/7 */
    /* IPv6 refused */
    {"::", OB_UNSPECIFIED},
    {"::1", OB_LOOPBACK},
    {"0:0:0:0:0:0:0:1", OB_LOOPBACK},
    {"fe80::1", OB_LINK_LOCAL},
    {"febf:ffff::1", OB_LINK_LOCAL},
    {"fec0::1", OB_UNIQUE_LOCAL},
    {"fc00::1", OB_UNIQUE_LOCAL},
    {"fd00:ec2::254", OB_UNIQUE_LOCAL}, /* cloud metadata over IPv6 */
    {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", OB_UNIQUE_LOCAL},
    {"ff02::1", OB_MULTICAST},
    {"ff05::2", OB_MULTICAST},
    {"::ffff:127.0.0.1", OB_LOOPBACK}, /* IPv4-mapped loopback */
    {"::ffff:7f00:1", OB_LOOPBACK},    /* the same, hex form */
    {"::ffff:10.1.2.3", OB_PRIVATE},
    {"::ffff:169.254.169.254", OB_LINK_LOCAL},
    {"::ffff:0.0.0.0", OB_UNSPECIFIED},
    {"::ffff:0:192.168.1.1", OB_PRIVATE}, /* SIIT */
    {"::127.0.0.1", OB_RESERVED},         /* deprecated IPv4-compatible */
    {"64:ff9b::7f00:1", OB_LOOPBACK},     /* NAT64 of 127.0.0.1 */
    {"64:ff9b:1::1", OB_PRIVATE},
    {"2002:7f00:1::1", OB_LOOPBACK}, /* 6to4 of 127.0.0.1 */
    {"2002:a00:1::", OB_PRIVATE},    /* 6to4 of 10.0.0.1 */
    {"2001:db8::1", OB_RESERVED},
    {"2001::1", OB_RESERVED}, /* Teredo */
    {"100::1", OB_RESERVED},
};

static void test_classify_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(addr_cases) / sizeof(addr_cases[0]); i++) {
        enum outbound_class c = OB_PUBLIC;
        if (outbound_classify_text(addr_cases[i].ip, &c) != 0)
            fail_msg("%s: not parsed as an address", addr_cases[i].ip);
        if (c != addr_cases[i].cls)
            fail_msg("%s: got %s, want %s", addr_cases[i].ip, outbound_class_name(c),
                     outbound_class_name(addr_cases[i].cls));
    }
}

static void test_classify_sockaddr(void **state)
{
    (void)state;
    struct sockaddr_in in = {.sin_family = AF_INET};
    assert_int_equal(inet_pton(AF_INET, "192.168.1.1", &in.sin_addr), 1);
    assert_int_equal(outbound_classify((struct sockaddr *)&in), OB_PRIVATE);
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    assert_int_equal(inet_pton(AF_INET6, "::1", &in6.sin6_addr), 1);
    assert_int_equal(outbound_classify((struct sockaddr *)&in6), OB_LOOPBACK);
    struct sockaddr other = {.sa_family = AF_UNIX};
    assert_int_equal(outbound_classify(&other), OB_RESERVED);
}

static void test_classify_text_rejects_non_addresses(void **state)
{
    (void)state;
    static const char *const bad[] = {"",    "localhost",    "1.2.3",    "1.2.3.4.5",  "256.0.0.1",
                                      "::g", "fe80::1%eth0", " 1.2.3.4", "example.com"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum outbound_class c;
        if (outbound_classify_text(bad[i], &c) == 0)
            fail_msg("'%s' parsed as an address", bad[i]);
    }
}

/* ---- URL syntax ---- */

static const struct {
    const char *url;
    bool ok;
} url_cases[] = {
    {"http://example.com/hook", true},
    {"https://example.com:8443/a/b?token=x#frag", true},
    {"HTTPS://Example.COM/", true},
    {"http://127.0.0.1:9/", true}, /* syntax only: the address rule is separate */
    {"http://[2606:4700::1111]/x", true},
    {"http://[::1]:8080/", true},
    {"", false},
    {"example.com/hook", false},
    {"ftp://example.com/", false},
    {"file:///etc/passwd", false},
    {"gopher://example.com/", false},
    {"javascript:alert(1)", false},
    {"dict://127.0.0.1:11211/", false},
    {"http://", false},
    {"http:///path", false},
    {"http:\\\\example.com/", false},
    {"http://example.com\\@evil.com/", false},
    {"http://evil.com#@example.com/", true}, /* host evil.com: checked as such */
    {"http://user:pw@example.com/", false},
    {"http://user@example.com/", false},
    {"http://exa mple.com/", false},
    {"http://example.com/\n", false},
    {"http://example.com/\t", false},
    {" http://example.com/", false},
    {"http://[fe80::1%25eth0]/", false},
    {"http://[::1/", false},
    {"http://example.com:99999/", false},
};

static void test_url_syntax_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(url_cases) / sizeof(url_cases[0]); i++) {
        const char *msg = outbound_check_url_syntax(url_cases[i].url);
        if (url_cases[i].ok && msg != NULL)
            fail_msg("'%s' refused: %s", url_cases[i].url, msg);
        if (!url_cases[i].ok && msg == NULL)
            fail_msg("'%s' accepted", url_cases[i].url);
    }
}

static void test_url_too_long(void **state)
{
    (void)state;
    char url[OUTBOUND_URL_MAX + 64];
    int n = snprintf(url, sizeof(url), "https://example.com/");
    memset(url + n, 'a', OUTBOUND_URL_MAX - (size_t)n);
    url[OUTBOUND_URL_MAX] = '\0';
    assert_null(outbound_check_url_syntax(url));
    url[OUTBOUND_URL_MAX] = 'a';
    url[OUTBOUND_URL_MAX + 1] = '\0';
    assert_non_null(outbound_check_url_syntax(url));
}

/* Literal addresses need no DNS: the full rule refuses them unless private ones are allowed. */
static void test_check_url_literals(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        bool ok_strict;
    } cases[] = {
        {"http://127.0.0.1:8080/", false},
        {"http://10.1.2.3/", false},
        {"http://169.254.169.254/latest/meta-data/", false},
        {"http://0.0.0.0/", false},
        {"http://[::1]/", false},
        {"http://[fd00::1]/", false},
        {"http://[::ffff:127.0.0.1]/", false},
        {"http://2130706433/", false}, /* 127.0.0.1 as one decimal number */
        {"http://0x7f.1/", false},     /* 127.0.0.1 in hex shorthand */
        {"http://8.8.8.8/", true},
        {"https://[2606:4700:4700::1111]/", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        int strict = outbound_check_url(cases[i].url, false, err, sizeof(err));
        if ((strict == 0) != cases[i].ok_strict)
            fail_msg("%s: strict check gave %d (%s)", cases[i].url, strict, err);
        if (!cases[i].ok_strict && strstr(err, "refused") == NULL)
            fail_msg("%s: message '%s' does not say refused", cases[i].url, err);
        assert_int_equal(outbound_check_url(cases[i].url, true, err, sizeof(err)), 0);
    }
}

static void test_origin_hides_path_and_query(void **state)
{
    (void)state;
    char o[256];
    outbound_url_origin("https://Hooks.Example.com/services/T0/B0/SECRET?k=v", o, sizeof(o));
    assert_string_equal(o, "https://hooks.example.com:443");
    outbound_url_origin("http://127.0.0.1:8080/x", o, sizeof(o));
    assert_string_equal(o, "http://127.0.0.1:8080");
    outbound_url_origin("file:///etc/passwd", o, sizeof(o));
    assert_string_equal(o, "(invalid url)");
}

/* The request helper refuses before connecting; no server is needed for these. */
static void test_request_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        bool allow_private;
        const char *want; /* substring of the error */
    } cases[] = {
        {"http://127.0.0.1:1/hook", false, "refused"},
        {"http://[::1]:1/hook", false, "loopback"},
        {"http://169.254.169.254/latest/meta-data/", false, "link-local"},
        {"ftp://127.0.0.1/", true, "the URL"},
        {"http://user:pw@127.0.0.1:1/", true, "the URL"},
        {"http://127.0.0.1:1/closed", true, ""}, /* allowed, nobody listening */
    };
    const char *const headers[] = {"Content-Type: application/json", NULL};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct outbound_req req = {.method = "POST",
                                   .url = cases[i].url,
                                   .headers = headers,
                                   .body = "{}",
                                   .body_len = 2,
                                   .timeout_ms = 2000,
                                   .connect_timeout_ms = 1000,
                                   .allow_private = cases[i].allow_private};
        struct outbound_resp resp;
        int rc = outbound_request(&req, &resp);
        if (rc != -1 || resp.status != 0 || resp.error[0] == '\0' ||
            strstr(resp.error, cases[i].want) == NULL)
            fail_msg("%s: rc=%d status=%ld error='%s'", cases[i].url, rc, resp.status, resp.error);
        outbound_resp_free(&resp);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify_table),
        cmocka_unit_test(test_classify_sockaddr),
        cmocka_unit_test(test_classify_text_rejects_non_addresses),
        cmocka_unit_test(test_url_syntax_table),
        cmocka_unit_test(test_url_too_long),
        cmocka_unit_test(test_check_url_literals),
        cmocka_unit_test(test_origin_hides_path_and_query),
        cmocka_unit_test(test_request_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
