/*
 * Unit tests for endpoint.c's pass order: which member a connection tries
 * first, and that a member that failed is tried only after the others.
 */
#include <netdb.h>
#include <glib.h>

#include "endpoint.h"

#define NOW (100 * G_USEC_PER_SEC)

static void check_order(const gint64 *avoid, size_t n, size_t start, const size_t *want)
{
	struct ef_endpoint eps[8] = { 0 };
	size_t got[8];

	g_assert_cmpuint(n, <=, G_N_ELEMENTS(eps));
	for (size_t i = 0; i < n; i++)
		eps[i].avoid_until = avoid[i];
	endpoint_order(eps, n, start, NOW, got);
	for (size_t i = 0; i < n; i++)
		g_assert_cmpuint(got[i], ==, want[i]);
}

static void test_rotation(void)
{
	const gint64 none[3] = { 0, 0, 0 };

	check_order(none, 3, 0, (const size_t[]){ 0, 1, 2 });
	check_order(none, 3, 1, (const size_t[]){ 1, 2, 0 });
	check_order(none, 3, 2, (const size_t[]){ 2, 0, 1 });
	/* A start past the end wraps (n changed under it, say). */
	check_order(none, 3, 4, (const size_t[]){ 1, 2, 0 });
	check_order(none, 1, 0, (const size_t[]){ 0 });
}

static void test_avoided_last(void)
{
	/* An avoidance that has ended counts for nothing. */
	const gint64 past[3] = { NOW - 1, NOW, 0 };
	const gint64 one[3] = { 0, NOW + 5, 0 };
	const gint64 two[4] = { NOW + 9, 0, NOW + 3, 0 };
	const gint64 all[3] = { NOW + 3, NOW + 1, NOW + 2 };
	const gint64 ties[3] = { NOW + 1, NOW + 1, NOW + 1 };

	check_order(past, 3, 1, (const size_t[]){ 1, 2, 0 });
	check_order(one, 3, 1, (const size_t[]){ 2, 0, 1 });
	/* Among the avoided, the one whose avoidance ends first leads. */
	check_order(two, 4, 0, (const size_t[]){ 1, 3, 2, 0 });
	check_order(all, 3, 0, (const size_t[]){ 1, 2, 0 });
	/* Equal ends keep the rotation's order. */
	check_order(ties, 3, 2, (const size_t[]){ 2, 0, 1 });
}

static void test_numeric(void)
{
	char h4[] = "127.0.0.1", h6[] = "::1", hn[] = "localhost";
	struct ef_endpoint v4 = { .host = h4, .port = 2379 };
	struct ef_endpoint v6 = { .host = h6, .port = 2379 };
	struct ef_endpoint name = { .host = hn, .port = 2379 };
	struct addrinfo *ai = NULL;

	g_assert_cmpint(endpoint_numeric(&v4, &ai), ==, 0);
	g_assert_nonnull(ai);
	freeaddrinfo(ai);
	g_assert_cmpint(endpoint_numeric(&v6, &ai), ==, 0);
	freeaddrinfo(ai);
	/* A name is never looked up here: that could block. */
	g_assert_cmpint(endpoint_numeric(&name, &ai), ==, EAI_NONAME);
	g_assert_null(ai);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/endpoint/order/rotation", test_rotation);
	g_test_add_func("/endpoint/order/avoided_last", test_avoided_last);
	g_test_add_func("/endpoint/numeric", test_numeric);
	return g_test_run();
}
