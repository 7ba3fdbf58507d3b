/*
 * auth — etcd's user authentication: the credentials, the current token,
 * and renewing it once for everyone when etcd says it is no longer valid.
 *
 * etcd (simple tokens) forgets a token that has not been used for
 * --auth-token-ttl (300 s by default) and on restart; every call then
 * fails with "invalid auth token". The first caller to see that logs in
 * again while the others wait for it; then each retries once.
 *
 * The password stays in memory for those renewals (etcd has no refresh
 * token) and is wiped when freed. It never reaches a log.
 */
#pragma once

#include <stdint.h>
#include <glib.h>

struct ef_auth;

/* Logs in: 0 with a new token (g_free), or -errno. Called with no lock
 * held, on the renewing caller's thread. */
typedef int (*ef_auth_login_fn)(void *ud, const char *user, const char *password,
				char **token);

/* Copies user and password. */
struct ef_auth *auth_new(const char *user, const char *password);

/* Wipes the password and frees a (NULL is fine). */
void auth_free(struct ef_auth *a);

const char *auth_user(const struct ef_auth *a);

/* The current token (a new string), or NULL before the first login. Safe
 * from any thread, the h2 I/O thread included: it only takes a mutex that
 * is never held across a login. */
char *auth_token(struct ef_auth *a);

/* Bumped by each successful login. Read it before a call, and hand it to
 * auth_renew if the call's token was refused. */
uint64_t auth_generation(struct ef_auth *a);

/*
 * Makes sure a token newer than generation seen exists: the first caller
 * logs in through login(ud, ...) while later ones wait for its outcome;
 * a caller whose seen is already old returns 0 at once (someone renewed).
 * Returns 0, or the login's -errno (then the next caller tries again).
 */
int auth_renew(struct ef_auth *a, uint64_t seen, ef_auth_login_fn login, void *ud);
