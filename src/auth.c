/*
 * auth — credentials, token and single-flight renewal (see auth.h).
 */
#include "auth.h"

#include <stdbool.h>
#include <string.h>

struct ef_auth {
	char *user;
	char *password;
	GMutex lock;
	GCond cond;
	char *token;            /* protected by lock */
	uint64_t gen;           /* protected by lock */
	bool busy;              /* protected by lock: a login is under way */
	uint64_t attempts;      /* protected by lock: logins finished */
	int last_rc;            /* protected by lock: the last one's outcome */
};

struct ef_auth *auth_new(const char *user, const char *password)
{
	struct ef_auth *a = g_new0(struct ef_auth, 1);

	a->user = g_strdup(user);
	a->password = g_strdup(password ? password : "");
	g_mutex_init(&a->lock);
	g_cond_init(&a->cond);
	return a;
}

static void wipe(char *s)
{
	if (s)
		explicit_bzero(s, strlen(s));
	g_free(s);
}

void auth_free(struct ef_auth *a)
{
	if (!a)
		return;
	wipe(a->password);
	wipe(a->token);
	g_free(a->user);
	g_mutex_clear(&a->lock);
	g_cond_clear(&a->cond);
	g_free(a);
}

const char *auth_user(const struct ef_auth *a)
{
	return a->user;
}

char *auth_token(struct ef_auth *a)
{
	char *t;

	g_mutex_lock(&a->lock);
	t = g_strdup(a->token);
	g_mutex_unlock(&a->lock);
	return t;
}

uint64_t auth_generation(struct ef_auth *a)
{
	uint64_t g;

	g_mutex_lock(&a->lock);
	g = a->gen;
	g_mutex_unlock(&a->lock);
	return g;
}

int auth_renew(struct ef_auth *a, uint64_t seen, ef_auth_login_fn login, void *ud)
{
	char *token = NULL;
	uint64_t attempts;
	int rc;

	g_mutex_lock(&a->lock);
	attempts = a->attempts;
	while (a->busy)
		g_cond_wait(&a->cond, &a->lock);
	if (a->gen != seen || a->attempts != attempts) {
		/* Someone logged in meanwhile: its token, or its failure
		 * (not repeated by every waiter in turn). */
		rc = a->gen != seen ? 0 : a->last_rc;
		g_mutex_unlock(&a->lock);
		return rc;
	}
	a->busy = true;
	g_mutex_unlock(&a->lock);

	rc = login(ud, a->user, a->password, &token);

	g_mutex_lock(&a->lock);
	a->busy = false;
	a->attempts++;
	a->last_rc = rc;
	if (rc == 0) {
		wipe(a->token);
		a->token = token;
		a->gen++;
	}
	g_cond_broadcast(&a->cond);
	g_mutex_unlock(&a->lock);
	return rc;
}
