/* Authentication of the three API prefixes (API.md "Authentication"). */
#ifndef EZ_AUTH_H
#define EZ_AUTH_H

#include "http.h"

/*
 * Checks the credential that kind requires. On success sets r->auth (and
 * r->master_id for tenants) and returns 0; otherwise answers 401/403/503
 * itself and returns -1.
 */
int auth_check(struct req *r, enum auth_kind kind) EZ_MUSTCHECK;

#endif
