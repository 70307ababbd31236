/* Value rules shared by the resource field tables (DATA.md's character sets and formats). */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include "resource.h"

static bool all_chars(const char *v, const char *extra, bool upper)
{
    for (const char *p = v; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (islower(c) || isdigit(c) || (upper && isupper(c)) || strchr(extra, c))
            continue;
        return false;
    }
    return true;
}

const char *check_name(const char *v)
{
    size_t n = strlen(v);
    if (n < 1 || n > 64 || !all_chars(v, "_.-", true))
        return "must be 1-64 characters of A-Z a-z 0-9 _ . -";
    return NULL;
}

const char *check_route_group(const char *v)
{
    return *v == '\0' ? NULL : check_name(v);
}

const char *check_ns_name(const char *v)
{
    size_t n = strlen(v);
    if (n < 1 || n > 64 || !all_chars(v, "_-", false))
        return "must be 1-64 characters of a-z 0-9 _ -";
    return NULL;
}

const char *check_http_url(const char *v)
{
    if (*v == '\0')
        return NULL;
    const char *host;
    if (strncasecmp(v, "http://", 7) == 0)
        host = v + 7;
    else if (strncasecmp(v, "https://", 8) == 0)
        host = v + 8;
    else
        return "must be an http:// or https:// URL";
    if (*host == '\0' || *host == '/' || strlen(v) > 2048)
        return "must name a host";
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return "must not contain spaces or control characters";
    return NULL;
}

/* "model" or "ns.model": the namespace part follows the namespace rule. */
const char *check_model_ref(const char *v)
{
    size_t n = strlen(v);
    if (n < 1 || n > 200)
        return "must be 1-200 characters";
    for (const char *p = v; *p; p++)
        if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
            return "must not contain spaces";
    const char *dot = strchr(v, '.');
    if (dot) {
        char ns[65];
        size_t nl = (size_t)(dot - v);
        if (nl == 0 || nl > 64 || dot[1] == '\0')
            return "must be model or namespace.model";
        memcpy(ns, v, nl);
        ns[nl] = '\0';
        if (check_ns_name(ns))
            return "namespace part must be 1-64 characters of a-z 0-9 _ -";
    }
    return NULL;
}

const char *check_ip_or_cidr(const char *v)
{
    char addr[64];
    const char *slash = strchr(v, '/');
    size_t n = slash ? (size_t)(slash - v) : strlen(v);
    if (n == 0 || n >= sizeof(addr))
        return "must be an IP address or CIDR";
    memcpy(addr, v, n);
    addr[n] = '\0';
    unsigned char tmp[16];
    int maxbits;
    if (inet_pton(AF_INET, addr, tmp) == 1)
        maxbits = 32;
    else if (inet_pton(AF_INET6, addr, tmp) == 1)
        maxbits = 128;
    else
        return "must be an IP address or CIDR";
    if (slash) {
        int64_t bits;
        if (ez_parse_int64(slash + 1, 0, maxbits, &bits) != EZ_OK)
            return "has a bad prefix length";
    }
    return NULL;
}
