/*
 * Outgoing HTTP requests to URLs that users configure (the log alert
 * webhook, later the model registry): the URL rules, the address check that
 * keeps them away from loopback and private networks, and one small libcurl
 * request helper that applies both and pins the checked addresses.
 * See docs/webhook.md ("Outgoing URLs").
 */
#ifndef EZ_OUTBOUND_H
#define EZ_OUTBOUND_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include "util.h"

/* Longest URL accepted (characters). */
#define OUTBOUND_URL_MAX 2048
/* At most this many resolved addresses are checked and pinned per host. */
#define OUTBOUND_ADDRS_MAX 16

/* What an address is, for the "public only" rule. */
enum outbound_class {
    OB_PUBLIC = 0,
    OB_UNSPECIFIED,  /* 0.0.0.0/8, :: */
    OB_LOOPBACK,     /* 127.0.0.0/8, ::1 */
    OB_PRIVATE,      /* 10/8, 172.16/12, 192.168/16, 100.64/10 (carrier NAT), 64:ff9b:1::/48 */
    OB_LINK_LOCAL,   /* 169.254/16 (cloud metadata lives here), fe80::/10 */
    OB_UNIQUE_LOCAL, /* fc00::/7, fec0::/10 (old site-local) */
    OB_MULTICAST,    /* 224/4, ff00::/8 */
    OB_RESERVED,     /* 240/4 and broadcast, 192.0.0/24, benchmarking, documentation, Teredo... */
};

/* "public", "loopback", "private", ... (static string). */
const char *outbound_class_name(enum outbound_class c);
/*
 * Classifies an AF_INET or AF_INET6 socket address. IPv6 forms that carry an
 * IPv4 address (::ffff:a.b.c.d, 64:ff9b::/96, 2002::/16) are classified by
 * that address. Any other family counts as OB_RESERVED.
 */
enum outbound_class outbound_classify(const struct sockaddr *sa);
/* Same for a numeric address in text ("10.0.0.1", "fe80::1"). 0 ok, -1 not an address. */
int outbound_classify_text(const char *ip, enum outbound_class *out) EZ_MUSTCHECK;

/*
 * The syntax rules for a configured URL, without any network access:
 * at most OUTBOUND_URL_MAX characters, no whitespace or control characters,
 * http or https, a host, no user:password@, no IPv6 zone id. NULL when
 * fine, else a message (static string) such as "must be an http or https URL".
 */
const char *outbound_check_url_syntax(const char *url);

/*
 * The full rule for a URL about to be stored: the syntax above, then, unless
 * allow_private, the host resolved and every address it resolves to public.
 * Returns 0 or -1 with a message in err (which may name the host and the
 * refused address; never the path or query, which may hold a token).
 * Blocks for the DNS lookup when it has to resolve.
 */
int outbound_check_url(const char *url, bool allow_private, char *err, size_t errlen) EZ_MUSTCHECK;

/* "scheme://host:port" of a URL, for log lines (a path or query may hold a token). */
void outbound_url_origin(const char *url, char *out, size_t outlen);

/* One request. Strings are borrowed for the duration of the call. */
struct outbound_req {
    const char *method; /* "POST" or "GET" */
    const char *url;
    const char *const *headers; /* "Name: value" lines, NULL-terminated; may be NULL */
    const char *body;           /* may be NULL (no body) */
    size_t body_len;
    long timeout_ms; /* whole transfer, DNS included for the check */
    long connect_timeout_ms;
    bool allow_private;        /* EZ_OUTBOUND_ALLOW_PRIVATE */
    size_t max_response_bytes; /* body kept up to this; 0 = the body is read and dropped */
};

struct outbound_resp {
    long status; /* HTTP status, 0 when no response came */
    char *body;  /* kept body (NUL-terminated) when max_response_bytes > 0; owned */
    size_t body_len;
    char error[256]; /* why no (complete) response came; "" otherwise */
};

/*
 * Sends req: checks the URL (outbound_check_url), resolves the host once,
 * refuses non-public addresses (unless allow_private) and pins the checked
 * addresses with CURLOPT_RESOLVE, so that a second DNS answer (rebinding)
 * cannot send the request elsewhere; every socket libcurl opens is checked
 * again. No redirects, no proxies (http_proxy and friends are ignored), http
 * and https only, TLS peers verified. Returns 0 when a response arrived
 * (whatever its status), -1 otherwise with resp->error set. Thread-safe;
 * blocks for at most about timeout_ms (plus the system resolver's own
 * timeout). The caller frees resp with outbound_resp_free.
 */
int outbound_request(const struct outbound_req *req, struct outbound_resp *resp) EZ_MUSTCHECK;
void outbound_resp_free(struct outbound_resp *resp);

#endif
