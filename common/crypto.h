/* Hashing, HMAC, randomness and secret generation, all from OpenSSL's libcrypto. */
#ifndef EZ_CRYPTO_H
#define EZ_CRYPTO_H

#include <stddef.h>
#include <stdbool.h>
#include "util.h"

/* Lowercase hex SHA-256 of data into out (65 bytes with NUL). */
void ez_sha256_hex(const void *data, size_t len, char out[65]);
/* Lowercase hex HMAC-SHA256(key, data) into out (65 bytes). */
void ez_hmac_sha256_hex(const void *key, size_t keylen, const void *data, size_t len, char out[65]);
/* Fills buf with n bytes from the OS's random source. 0 ok, -1 failure. */
int ez_random_bytes(void *buf, size_t n) EZ_MUSTCHECK;
/*
 * New secret: prefix followed by 64 lowercase hex chars (32 random bytes).
 * Returns a malloc'd string the caller frees, or NULL if randomness failed.
 */
char *ez_new_secret(const char *prefix);
/* Wipes and frees a secret string (NULL is fine). */
void ez_secret_free(char *s);
/* Constant-time equality of two NUL-terminated strings (time depends only on lengths). */
bool ez_ct_streq(const char *a, const char *b);

#endif
