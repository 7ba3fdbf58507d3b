/*
 * Unit tests for ratelimit: a burst per interval, then silence, and the
 * count of what was left out handed to the next line allowed.
 */
#include <glib.h>

#include "ratelimit.h"

static void test_burst(void)
{
	struct ef_ratelimit rl = { .interval_us = 1000, .burst = 3 };
	unsigned dropped = 99;
	gint64 t = 5000000;

	for (int i = 0; i < 3; i++) {
		g_assert_true(ratelimit_allow(&rl, t + i, &dropped));
		g_assert_cmpuint(dropped, ==, 0);
	}
	for (int i = 0; i < 5; i++)
		g_assert_false(ratelimit_allow(&rl, t + 10 + i, &dropped));
	/* Still the same interval. */
	g_assert_false(ratelimit_allow(&rl, t + 999, &dropped));
	g_assert_true(ratelimit_allow(&rl, t + 1000, &dropped));
	g_assert_cmpuint(dropped, ==, 6);
	g_assert_true(ratelimit_allow(&rl, t + 1001, &dropped));
	g_assert_cmpuint(dropped, ==, 0);
}

static void test_defaults(void)
{
	struct ef_ratelimit rl = { 0 };
	unsigned dropped;
	unsigned allowed = 0;

	/* A clock at 0 is a time like any other. */
	for (int i = 0; i < 100; i++)
		allowed += ratelimit_allow(&rl, i, &dropped);
	g_assert_cmpuint(allowed, ==, RATELIMIT_BURST);
	g_assert_true(ratelimit_allow(&rl, RATELIMIT_INTERVAL_US, &dropped));
	g_assert_cmpuint(dropped, ==, 100 - RATELIMIT_BURST);
	/* A clock that goes back starts over rather than going silent. */
	g_assert_true(ratelimit_allow(&rl, 10, &dropped));
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/ratelimit/burst", test_burst);
	g_test_add_func("/ratelimit/defaults", test_defaults);
	return g_test_run();
}
