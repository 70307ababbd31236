/* SHA-256, HMAC and OS randomness through OpenSSL's libcrypto (nothing hand-rolled). */
#include "crypto.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

static void to_hex(const unsigned char *d, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[2 * n] = '\0';
}

void ez_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
    to_hex(md, 32, out);
}

void ez_hmac_sha256_hex(const void *key, size_t keylen, const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    HMAC(EVP_sha256(), key, (int)keylen, data, len, md, &mdlen);
    to_hex(md, 32, out);
}

int ez_random_bytes(void *buf, size_t n)
{
    /* RAND_bytes is seeded from getrandom(2) and fails loudly rather than returning weak bytes. */
    return RAND_bytes(buf, (int)n) == 1 ? EZ_OK : EZ_ERR;
}

char *ez_new_secret(const char *prefix)
{
    unsigned char raw[32];
    if (ez_random_bytes(raw, sizeof(raw)) != EZ_OK)
        return NULL;
    size_t plen = strlen(prefix);
    char *s = ez_malloc(plen + 65);
    memcpy(s, prefix, plen);
    to_hex(raw, sizeof(raw), s + plen);
    return s;
}

void ez_secret_free(char *s)
{
    if (s == NULL)
        return;
    /* explicit_bzero cannot be optimised away like a memset before free. */
    explicit_bzero(s, strlen(s));
    free(s);
}

bool ez_ct_streq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    /* Compare over b's length whatever a is, so the time leaks only the lengths. */
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < lb; i++) {
        unsigned char ca = i < la ? (unsigned char)a[i] : 0;
        diff |= ca ^ (unsigned char)b[i];
    }
    return diff == 0;
}
