/* Outgoing requests to configured URLs: URL rules, address classes, a pinned libcurl request. */
#include "outbound.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <curl/curl.h>
#include "version.h"

/* ---- address classes ---- */

const char *outbound_class_name(enum outbound_class c)
{
    switch (c) {
    case OB_PUBLIC:
        return "public";
    case OB_UNSPECIFIED:
        return "unspecified";
    case OB_LOOPBACK:
        return "loopback";
    case OB_PRIVATE:
        return "private";
    case OB_LINK_LOCAL:
        return "link-local";
    case OB_UNIQUE_LOCAL:
        return "unique-local";
    case OB_MULTICAST:
        return "multicast";
    case OB_RESERVED:
        return "reserved";
    }
    return "reserved";
}

/* IPv4 ranges that are not the public internet (IANA special-purpose registry). */
static const struct {
    uint32_t net;
    int bits;
    enum outbound_class cls;
} v4_ranges[] = {
    {0x00000000, 8, OB_UNSPECIFIED}, /* 0.0.0.0/8 "this network" */
    {0x0A000000, 8, OB_PRIVATE},     /* 10.0.0.0/8 */
    {0x64400000, 10, OB_PRIVATE},    /* 100.64.0.0/10 carrier-grade NAT */
    {0x7F000000, 8, OB_LOOPBACK},    /* 127.0.0.0/8 */
    {0xA9FE0000, 16, OB_LINK_LOCAL}, /* 169.254.0.0/16 (169.254.169.254: cloud metadata) */
    {0xAC100000, 12, OB_PRIVATE},    /* 172.16.0.0/12 */
    {0xC0000000, 24, OB_RESERVED},   /* 192.0.0.0/24 IETF protocol assignments */
    {0xC0000200, 24, OB_RESERVED},   /* 192.0.2.0/24 documentation */
    {0xC0586300, 24, OB_RESERVED},   /* 192.88.99.0/24 6to4 relay anycast */
    {0xC0A80000, 16, OB_PRIVATE},    /* 192.168.0.0/16 */
    {0xC6120000, 15, OB_RESERVED},   /* 198.18.0.0/15 benchmarking */
    {0xC6336400, 24, OB_RESERVED},   /* 198.51.100.0/24 documentation */
    {0xCB007100, 24, OB_RESERVED},   /* 203.0.113.0/24 documentation */
    {0xE0000000, 4, OB_MULTICAST},   /* 224.0.0.0/4 */
    {0xF0000000, 4, OB_RESERVED},    /* 240.0.0.0/4, 255.255.255.255 included */
};

static enum outbound_class classify_v4(uint32_t a)
{
    for (size_t i = 0; i < EZ_ARRAY_LEN(v4_ranges); i++) {
        uint32_t mask = 0xFFFFFFFFu << (32 - v4_ranges[i].bits);
        if ((a & mask) == v4_ranges[i].net)
            return v4_ranges[i].cls;
    }
    return OB_PUBLIC;
}

/*
 * IPv6 prefixes. V4_AT >= 0: the prefix embeds an IPv4 address at that byte
 * offset, which decides (an IPv4-mapped ::ffff:127.0.0.1 is loopback).
 * First match wins, so the more specific prefixes come first.
 */
#define NO_V4 (-1)
static const struct {
    uint8_t prefix[16];
    int bits;
    enum outbound_class cls;
    int v4_at;
} v6_ranges[] = {
    {{0}, 128, OB_UNSPECIFIED, NO_V4},                                           /* :: */
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128, OB_LOOPBACK, NO_V4}, /* ::1 */
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, 96, OB_PUBLIC, 12}, /* ::ffff:a.b.c.d mapped */
    {{0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0}, 96, OB_PUBLIC, 12}, /* ::ffff:0:a.b.c.d SIIT */
    {{0}, 96, OB_RESERVED, NO_V4},                                   /* ::a.b.c.d (deprecated) */
    {{0x00, 0x64, 0xff, 0x9b}, 96, OB_PUBLIC, 12},                   /* 64:ff9b::/96 NAT64 */
    {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, OB_PRIVATE, NO_V4}, /* 64:ff9b:1::/48 local NAT64 */
    {{0x01, 0x00}, 64, OB_RESERVED, NO_V4},                        /* 100::/64 discard */
    {{0x20, 0x01, 0x0d, 0xb8}, 32, OB_RESERVED, NO_V4},            /* 2001:db8::/32 docs */
    {{0x20, 0x01, 0x00, 0x00}, 32, OB_RESERVED, NO_V4},            /* 2001::/32 Teredo */
    {{0x20, 0x02}, 16, OB_PUBLIC, 2},                              /* 2002::/16 6to4 */
    {{0xfc}, 7, OB_UNIQUE_LOCAL, NO_V4},                           /* fc00::/7 */
    {{0xfe, 0x80}, 10, OB_LINK_LOCAL, NO_V4},                      /* fe80::/10 */
    {{0xfe, 0xc0}, 10, OB_UNIQUE_LOCAL, NO_V4},                    /* fec0::/10 site-local */
    {{0xff}, 8, OB_MULTICAST, NO_V4},                              /* ff00::/8 */
};

static bool prefix_match(const uint8_t *a, const uint8_t *p, int bits)
{
    int full = bits / 8, rest = bits % 8;
    if (memcmp(a, p, (size_t)full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xFF << (8 - rest));
    return (a[full] & mask) == (p[full] & mask);
}

static enum outbound_class classify_v6(const uint8_t a[16])
{
    for (size_t i = 0; i < EZ_ARRAY_LEN(v6_ranges); i++) {
        if (!prefix_match(a, v6_ranges[i].prefix, v6_ranges[i].bits))
            continue;
        int at = v6_ranges[i].v4_at;
        if (at == NO_V4)
            return v6_ranges[i].cls;
        uint32_t v4 = (uint32_t)a[at] << 24 | (uint32_t)a[at + 1] << 16 | (uint32_t)a[at + 2] << 8 |
                      (uint32_t)a[at + 3];
        return classify_v4(v4);
    }
    return OB_PUBLIC;
}

enum outbound_class outbound_classify(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        return classify_v4(ntohl(in->sin_addr.s_addr));
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        return classify_v6(in6->sin6_addr.s6_addr);
    }
    return OB_RESERVED;
}

int outbound_classify_text(const char *ip, enum outbound_class *out)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, ip, &a4) == 1) {
        *out = classify_v4(ntohl(a4.s_addr));
        return EZ_OK;
    }
    if (inet_pton(AF_INET6, ip, &a6) == 1) {
        *out = classify_v6(a6.s6_addr);
        return EZ_OK;
    }
    return EZ_ERR;
}

/* ---- URLs ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    /* libcurl 7.84+ makes this thread-safe too; the once keeps older ones correct. */
    (void)curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* A parsed URL: the handle libcurl will send with, and the parts we check. */
struct parsed_url {
    CURLU *u;
    char *scheme, *host, *port; /* curl-allocated */
    bool literal;               /* host is an IP address: nothing to resolve */
};

static void parsed_free(struct parsed_url *p)
{
    curl_free(p->scheme);
    curl_free(p->host);
    curl_free(p->port);
    curl_url_cleanup(p->u);
    memset(p, 0, sizeof(*p));
}

/* True when the URL has the given part (user, password, zone id...). */
static bool has_part(CURLU *u, CURLUPart part)
{
    char *v = NULL;
    CURLUcode rc = curl_url_get(u, part, &v, 0);
    bool set = rc == CURLUE_OK && v != NULL;
    curl_free(v);
    return set;
}

/*
 * Parses url with libcurl's own parser, so that the URL we check is the URL
 * libcurl sends to (no parser differential). NULL on success, else a message.
 */
static const char *parse_url(const char *url, struct parsed_url *p)
{
    memset(p, 0, sizeof(*p));
    size_t n = strlen(url);
    if (n == 0)
        return "is empty";
    if (n > OUTBOUND_URL_MAX)
        return "is longer than 2048 characters";
    for (const unsigned char *c = (const unsigned char *)url; *c; c++)
        if (*c <= 0x20 || *c == 0x7f)
            return "may not contain spaces or control characters";
    if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0)
        return "must be an http:// or https:// URL";
    /* Parsers disagree on these (browsers read "\\" as "/", libcurl takes "http:///x" as host x).
     */
    if (strchr(url, '\\') != NULL)
        return "may not contain a backslash";
    if (url[strcspn(url, ":") + 3] == '/')
        return "has no host";
    p->u = curl_url();
    if (p->u == NULL)
        return "could not be parsed";
    if (curl_url_set(p->u, CURLUPART_URL, url, 0) != CURLUE_OK)
        return "is not a valid URL";
    if (curl_url_get(p->u, CURLUPART_SCHEME, &p->scheme, 0) != CURLUE_OK ||
        (strcmp(p->scheme, "http") != 0 && strcmp(p->scheme, "https") != 0))
        return "must be an http:// or https:// URL";
    if (has_part(p->u, CURLUPART_USER) || has_part(p->u, CURLUPART_PASSWORD) ||
        has_part(p->u, CURLUPART_OPTIONS))
        return "may not contain user:password@ (use the secret for authentication)";
    if (has_part(p->u, CURLUPART_ZONEID))
        return "may not name an IPv6 zone";
    if (curl_url_get(p->u, CURLUPART_HOST, &p->host, CURLU_PUNYCODE) != CURLUE_OK ||
        p->host[0] == '\0')
        return "has no host";
    if (curl_url_get(p->u, CURLUPART_PORT, &p->port, CURLU_DEFAULT_PORT) != CURLUE_OK)
        return "has no usable port";
    /* Lower case and punycode: the very name the pinned address is filed under. */
    for (char *c = p->host; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    if (curl_url_set(p->u, CURLUPART_HOST, p->host, 0) != CURLUE_OK)
        return "has an unusable host";
    struct in6_addr a6;
    struct in_addr a4;
    size_t hl = strlen(p->host);
    if (p->host[0] == '[' && hl > 2) {
        char inner[64];
        snprintf(inner, sizeof(inner), "%.*s", (int)(hl - 2), p->host + 1);
        p->literal = inet_pton(AF_INET6, inner, &a6) == 1;
        if (!p->literal)
            return "has an invalid IPv6 address";
    } else {
        p->literal = inet_pton(AF_INET, p->host, &a4) == 1;
    }
    return NULL;
}

const char *outbound_check_url_syntax(const char *url)
{
    struct parsed_url p;
    const char *msg = parse_url(url, &p);
    parsed_free(&p);
    return msg;
}

void outbound_url_origin(const char *url, char *out, size_t outlen)
{
    struct parsed_url p;
    if (parse_url(url, &p) != NULL)
        snprintf(out, outlen, "(invalid url)");
    else
        snprintf(out, outlen, "%s://%s:%s", p.scheme, p.host, p.port);
    parsed_free(&p);
}

/* The addresses a URL's host stands for. */
struct addr_set {
    struct sockaddr_storage a[OUTBOUND_ADDRS_MAX];
    int n;
};

/* The numeric text of a socket address ("10.0.0.1", "fe80::1"). */
static void addr_text(const struct sockaddr *sa, char *out, size_t len)
{
    const void *src =
        sa->sa_family == AF_INET
            ? (const void *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr
            : (const void *)&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    if (inet_ntop(sa->sa_family, src, out, (socklen_t)len) == NULL)
        snprintf(out, len, "?");
}

/*
 * Resolves p's host (or takes the literal) into set, deduplicated. 0 ok, -1
 * with err set. Blocks in getaddrinfo.
 */
static int resolve(const struct parsed_url *p, struct addr_set *set, char *err, size_t errlen)
{
    char host[256];
    size_t hl = strlen(p->host);
    if (p->host[0] == '[')
        snprintf(host, sizeof(host), "%.*s", (int)(hl - 2), p->host + 1);
    else
        snprintf(host, sizeof(host), "%s", p->host);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    if (p->literal)
        hints.ai_flags = AI_NUMERICHOST;
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "host %s cannot be resolved (%s)", host, gai_strerror(rc));
        return EZ_ERR;
    }
    set->n = 0;
    for (struct addrinfo *ai = res; ai && set->n < OUTBOUND_ADDRS_MAX; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof(set->a[0]))
            continue;
        bool dup = false;
        for (int i = 0; i < set->n && !dup; i++)
            dup = memcmp(&set->a[i], ai->ai_addr, ai->ai_addrlen) == 0;
        if (dup)
            continue;
        memset(&set->a[set->n], 0, sizeof(set->a[0]));
        memcpy(&set->a[set->n], ai->ai_addr, ai->ai_addrlen);
        set->n++;
    }
    freeaddrinfo(res);
    if (set->n == 0) {
        snprintf(err, errlen, "host %s has no IPv4 or IPv6 address", host);
        return EZ_ERR;
    }
    return EZ_OK;
}

/* Every address public (a single bad one refuses the host: DNS answers can be mixed). */
static int check_addrs(const struct parsed_url *p, const struct addr_set *set, char *err,
                       size_t errlen)
{
    for (int i = 0; i < set->n; i++) {
        enum outbound_class c = outbound_classify((const struct sockaddr *)&set->a[i]);
        if (c == OB_PUBLIC)
            continue;
        char ip[INET6_ADDRSTRLEN];
        addr_text((const struct sockaddr *)&set->a[i], ip, sizeof(ip));
        snprintf(err, errlen,
                 "host %s resolves to %s, a %s address (refused unless "
                 "EZ_OUTBOUND_ALLOW_PRIVATE=true)",
                 p->host, ip, outbound_class_name(c));
        return EZ_ERR;
    }
    return EZ_OK;
}

int outbound_check_url(const char *url, bool allow_private, char *err, size_t errlen)
{
    struct parsed_url p;
    struct addr_set set;
    int rc = EZ_ERR;
    const char *msg = parse_url(url, &p);
    if (msg != NULL) {
        snprintf(err, errlen, "%s", msg);
        goto out;
    }
    if (allow_private) {
        rc = EZ_OK; /* nothing to refuse: no lookup (a name may resolve only later) */
        goto out;
    }
    if (resolve(&p, &set, err, errlen) != EZ_OK || check_addrs(&p, &set, err, errlen) != EZ_OK)
        goto out;
    rc = EZ_OK;
out:
    parsed_free(&p);
    return rc;
}

/* ---- the request ---- */

struct xfer {
    const struct outbound_req *req;
    struct outbound_resp *resp;
    buf_t body;
    size_t seen;
    bool too_large;
    char refused[160]; /* set by the socket check */
};

static size_t on_data(char *data, size_t size, size_t nmemb, void *arg)
{
    struct xfer *x = arg;
    size_t n = size * nmemb;
    x->seen += n;
    if (x->req->max_response_bytes == 0)
        return n; /* dropped */
    if (x->body.len + n > x->req->max_response_bytes) {
        x->too_large = true;
        return 0; /* aborts the transfer */
    }
    buf_append(&x->body, data, n);
    return n;
}

/*
 * Last line of defence: whatever address libcurl is about to connect to
 * (pinned or not) must be public. CURLOPT_RESOLVE already makes it one we
 * checked; this catches anything that bypasses the pin.
 */
static curl_socket_t open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct xfer *x = arg;
    (void)purpose;
    if (!x->req->allow_private) {
        enum outbound_class c = outbound_classify(&a->addr);
        if (c != OB_PUBLIC) {
            char ip[INET6_ADDRSTRLEN];
            addr_text(&a->addr, ip, sizeof(ip));
            snprintf(x->refused, sizeof(x->refused), "connection to %s refused (%s address)", ip,
                     outbound_class_name(c));
            return CURL_SOCKET_BAD;
        }
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* "host:port:addr1,[addr2]" for CURLOPT_RESOLVE. */
static void resolve_entry(const struct parsed_url *p, const struct addr_set *set, buf_t *out)
{
    buf_printf(out, "%s:%s:", p->host, p->port);
    for (int i = 0; i < set->n; i++) {
        char ip[INET6_ADDRSTRLEN];
        const struct sockaddr *sa = (const struct sockaddr *)&set->a[i];
        addr_text(sa, ip, sizeof(ip));
        buf_printf(out, sa->sa_family == AF_INET6 ? "%s[%s]" : "%s%s", i ? "," : "", ip);
    }
}

/* Sets every option of the transfer. 0 ok, -1 with resp->error set. */
static int setup(CURL *h, struct xfer *x, const struct parsed_url *p, struct curl_slist *hdrs,
                 struct curl_slist *pin, char *errbuf)
{
    const struct outbound_req *req = x->req;
    CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (rc == CURLE_OK)                                                                        \
            rc = curl_easy_setopt(h, opt, val);                                                    \
    } while (0)
    SET(CURLOPT_CURLU, p->u);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_PROXY, ""); /* never a proxy from the environment: it would skip the pin */
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : 10000L);
    SET(CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms > 0 ? req->connect_timeout_ms : 5000L);
    SET(CURLOPT_ERRORBUFFER, errbuf);
    SET(CURLOPT_USERAGENT, "ezapi/" EZ_VERSION);
    SET(CURLOPT_HTTPHEADER, hdrs);
    SET(CURLOPT_WRITEFUNCTION, on_data);
    SET(CURLOPT_WRITEDATA, x);
    SET(CURLOPT_OPENSOCKETFUNCTION, open_socket);
    SET(CURLOPT_OPENSOCKETDATA, x);
    if (pin)
        SET(CURLOPT_RESOLVE, pin);
    if (strcmp(req->method, "POST") == 0) {
        SET(CURLOPT_POST, 1L);
        SET(CURLOPT_POSTFIELDS, req->body ? req->body : "");
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body_len : 0));
    } else {
        SET(CURLOPT_HTTPGET, 1L);
    }
#undef SET
    if (rc != CURLE_OK) {
        snprintf(x->resp->error, sizeof(x->resp->error), "libcurl setup failed: %s",
                 curl_easy_strerror(rc));
        return EZ_ERR;
    }
    return EZ_OK;
}

/* Runs the transfer and fills resp. 0 when a whole response arrived. */
static int perform(CURL *h, struct xfer *x, const char *errbuf)
{
    struct outbound_resp *resp = x->resp;
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    (void)curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    resp->status = status;
    if (rc == CURLE_OK) {
        if (x->req->max_response_bytes > 0) {
            resp->body_len = x->body.len;
            resp->body = buf_steal(&x->body);
        }
        return EZ_OK;
    }
    if (x->too_large)
        snprintf(resp->error, sizeof(resp->error), "the response is larger than %zu bytes",
                 x->req->max_response_bytes);
    else if (x->refused[0])
        snprintf(resp->error, sizeof(resp->error), "%s", x->refused);
    else
        snprintf(resp->error, sizeof(resp->error), "%s",
                 errbuf[0] ? errbuf : curl_easy_strerror(rc));
    return EZ_ERR;
}

int outbound_request(const struct outbound_req *req, struct outbound_resp *resp)
{
    struct parsed_url p;
    struct addr_set set = {.n = 0};
    struct xfer x = {.req = req, .resp = resp};
    struct curl_slist *hdrs = NULL, *pin = NULL;
    char errbuf[CURL_ERROR_SIZE] = "";
    buf_t entry;
    CURL *h = NULL;
    int rc = EZ_ERR;

    memset(resp, 0, sizeof(*resp));
    buf_init(&x.body);
    buf_init(&entry);
    pthread_once(&curl_once, curl_init_once);
    const char *msg = parse_url(req->url, &p);
    if (msg != NULL) {
        snprintf(resp->error, sizeof(resp->error), "the URL %s", msg);
        goto out;
    }
    /* One lookup, checked and then pinned: libcurl never asks DNS again. */
    if (resolve(&p, &set, resp->error, sizeof(resp->error)) != EZ_OK)
        goto out;
    if (!req->allow_private && check_addrs(&p, &set, resp->error, sizeof(resp->error)) != EZ_OK)
        goto out;
    if (!p.literal) {
        resolve_entry(&p, &set, &entry);
        pin = curl_slist_append(NULL, entry.data);
    }
    for (int i = 0; req->headers && req->headers[i]; i++)
        hdrs = curl_slist_append(hdrs, req->headers[i]);
    hdrs = curl_slist_append(hdrs, "Expect:"); /* no 100-continue round trip */
    h = curl_easy_init();
    if (h == NULL || (!p.literal && pin == NULL) || hdrs == NULL) {
        snprintf(resp->error, sizeof(resp->error), "libcurl could not allocate");
        goto out;
    }
    if (setup(h, &x, &p, hdrs, pin, errbuf) != EZ_OK)
        goto out;
    rc = perform(h, &x, errbuf);
out:
    if (h)
        curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    curl_slist_free_all(pin);
    buf_free(&entry);
    buf_free(&x.body);
    parsed_free(&p);
    return rc;
}

void outbound_resp_free(struct outbound_resp *resp)
{
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
}
