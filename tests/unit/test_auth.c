/*
 * Unit tests for auth: one login for many callers whose token was
 * refused, its failure shared too, and a stale caller not logging in again.
 */
#include <errno.h>
#include <stdbool.h>
#include <glib.h>

#include "auth.h"

struct fake_login {
	gint calls;             /* atomic */
	int rc;                 /* what each login returns */
	GMutex lock;
	GCond cond;
	bool go;                /* protected by lock: the login may finish */
};

static int fake_login_fn(void *ud, const char *user, const char *password, char **token)
{
	struct fake_login *f = ud;
	int n = g_atomic_int_add(&f->calls, 1) + 1;

	g_assert_cmpstr(user, ==, "alice");
	g_assert_cmpstr(password, ==, "pw");
	/* Held until every caller has queued behind this login. */
	g_mutex_lock(&f->lock);
	while (!f->go)
		g_cond_wait(&f->cond, &f->lock);
	g_mutex_unlock(&f->lock);
	if (f->rc == 0)
		*token = g_strdup_printf("token-%d", n);
	return f->rc;
}

struct caller {
	struct ef_auth *a;
	struct fake_login *f;
	uint64_t seen;
	int rc;
};

static gpointer caller_main(gpointer p)
{
	struct caller *c = p;

	c->rc = auth_renew(c->a, c->seen, fake_login_fn, c->f);
	return NULL;
}

/* Starts n callers that saw generation seen, lets the login finish once
 * they are all in, and returns their results' sum. */
static int renew_together(struct ef_auth *a, struct fake_login *f, uint64_t seen, int n)
{
	struct caller c[8];
	GThread *t[8];
	int sum = 0;

	g_assert_cmpint(n, <=, 8);
	f->go = false;
	for (int i = 0; i < n; i++) {
		c[i] = (struct caller){ .a = a, .f = f, .seen = seen };
		t[i] = g_thread_new("caller", caller_main, &c[i]);
	}
	/* Give the others time to find the login under way. */
	while (g_atomic_int_get(&f->calls) == 0)
		g_usleep(1000);
	g_usleep(50 * 1000);
	g_mutex_lock(&f->lock);
	f->go = true;
	g_cond_broadcast(&f->cond);
	g_mutex_unlock(&f->lock);
	for (int i = 0; i < n; i++) {
		g_thread_join(t[i]);
		sum += c[i].rc;
	}
	return sum;
}

static void test_one_login_for_all(void)
{
	struct fake_login f = { 0 };
	struct ef_auth *a = auth_new("alice", "pw");
	g_autofree char *t0 = auth_token(a);
	g_autofree char *t1 = NULL;

	g_mutex_init(&f.lock);
	g_cond_init(&f.cond);
	g_assert_null(t0);
	g_assert_cmpuint(auth_generation(a), ==, 0);
	g_assert_cmpint(renew_together(a, &f, 0, 8), ==, 0);
	g_assert_cmpint(g_atomic_int_get(&f.calls), ==, 1);
	g_assert_cmpuint(auth_generation(a), ==, 1);
	t1 = auth_token(a);
	g_assert_cmpstr(t1, ==, "token-1");
	/* A caller whose refused token was the old one: renewed already. */
	g_assert_cmpint(auth_renew(a, 0, fake_login_fn, &f), ==, 0);
	g_assert_cmpint(g_atomic_int_get(&f.calls), ==, 1);
	auth_free(a);
	g_mutex_clear(&f.lock);
	g_cond_clear(&f.cond);
}

static void test_a_failed_login_is_shared(void)
{
	struct fake_login f = { .rc = -ETIMEDOUT };
	struct ef_auth *a = auth_new("alice", "pw");

	g_mutex_init(&f.lock);
	g_cond_init(&f.cond);
	/* Waiters take the outcome; they do not each try in turn. */
	g_assert_cmpint(renew_together(a, &f, 0, 6), ==, 6 * -ETIMEDOUT);
	g_assert_cmpint(g_atomic_int_get(&f.calls), ==, 1);
	g_assert_cmpuint(auth_generation(a), ==, 0);
	/* The next caller tries again, and may succeed. */
	f.rc = 0;
	g_assert_cmpint(renew_together(a, &f, 0, 1), ==, 0);
	g_assert_cmpint(g_atomic_int_get(&f.calls), ==, 2);
	g_assert_cmpuint(auth_generation(a), ==, 1);
	auth_free(a);
	g_mutex_clear(&f.lock);
	g_cond_clear(&f.cond);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/auth/one_login_for_all", test_one_login_for_all);
	g_test_add_func("/auth/failed_login_shared", test_a_failed_login_is_shared);
	return g_test_run();
}
