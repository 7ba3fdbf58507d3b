/*
 * Unit tests for lockrule: fcntl's range arithmetic for one owner (split,
 * merge, replace, unlock to the end of file), and who holds a lock name
 * among readers' and writers' keys.
 */
#include <stdint.h>
#include <glib.h>

#include "lockrule.h"

#define S LOCK_MODE_SHARED
#define X LOCK_MODE_EXCL
#define N LOCK_MODE_NONE
#define END INT64_MAX

/* ranges as "start-end:m ..." (m s or x; END as "$"), for comparing. */
static char *show(GArray *a)
{
	GString *s = g_string_new(NULL);

	for (guint i = 0; i < a->len; i++) {
		struct lock_range r = g_array_index(a, struct lock_range, i);

		if (r.end == END)
			g_string_append_printf(s, "%s%" G_GINT64_FORMAT "-$:%c", i ? " " : "", r.start,
					       r.mode == X ? 'x' : 's');
		else
			g_string_append_printf(s, "%s%" G_GINT64_FORMAT "-%" G_GINT64_FORMAT ":%c",
					       i ? " " : "", r.start, r.end, r.mode == X ? 'x' : 's');
	}
	return g_string_free(s, FALSE);
}

static GArray *ranges(void)
{
	return g_array_new(FALSE, FALSE, sizeof(struct lock_range));
}

#define CHECK(a, want) do { g_autofree char *got_ = show(a); g_assert_cmpstr(got_, ==, want); } while (0)

static void test_set_and_unlock(void)
{
	g_autoptr(GArray) a = ranges();

	lockrule_set_range(a, 0, END, X);
	CHECK(a, "0-$:x");
	g_assert_cmpint(lockrule_ranges_mode(a), ==, X);
	/* Unlocking the middle splits; the sides keep their mode. */
	lockrule_set_range(a, 10, 19, N);
	CHECK(a, "0-9:x 20-$:x");
	/* A read lock over part of a write lock downgrades only that part. */
	lockrule_set_range(a, 5, 25, S);
	CHECK(a, "0-4:x 5-25:s 26-$:x");
	lockrule_set_range(a, 0, 4, N);
	lockrule_set_range(a, 26, END, N);
	CHECK(a, "5-25:s");
	g_assert_cmpint(lockrule_ranges_mode(a), ==, S);
	lockrule_set_range(a, 0, END, N);
	CHECK(a, "");
	g_assert_cmpint(lockrule_ranges_mode(a), ==, N);
}

static void test_merge(void)
{
	g_autoptr(GArray) a = ranges();

	lockrule_set_range(a, 0, 0, S);
	lockrule_set_range(a, 2, 2, S);
	CHECK(a, "0-0:s 2-2:s");
	/* Adjacent ranges of one mode become one; of two modes stay two. */
	lockrule_set_range(a, 1, 1, S);
	CHECK(a, "0-2:s");
	lockrule_set_range(a, 3, 3, X);
	CHECK(a, "0-2:s 3-3:x");
	lockrule_set_range(a, 4, END, X);
	CHECK(a, "0-2:s 3-$:x");
	/* A range that covers several replaces them all. */
	lockrule_set_range(a, 1, 100, S);
	CHECK(a, "0-100:s 101-$:x");
	/* Unlocking what is not locked changes nothing. */
	g_autoptr(GArray) b = ranges();

	lockrule_set_range(b, 7, 9, N);
	CHECK(b, "");
}

/* keys as a string: one letter per key in create order, r/w (theirs) or
 * R/W (ours); create revisions 10, 20, ... */
static size_t keys_of(const char *spec, struct lock_key *k)
{
	size_t n = 0;

	for (; *spec; spec++, n++)
		k[n] = (struct lock_key){ .create_rev = 10 * (int64_t)(n + 1),
					  .shared = *spec == 'r' || *spec == 'R',
					  .ours = *spec == 'R' || *spec == 'W' };
	return n;
}

/* Which keys hold, as a string of 0/1 in key order. */
static char *holders(const char *spec)
{
	struct lock_key k[16];
	size_t n = keys_of(spec, k);
	char *out = g_malloc0(n + 1);

	for (size_t i = 0; i < n; i++)
		out[i] = lockrule_granted(k, n, i) ? '1' : '0';
	return out;
}

#define HOLD(spec, want) do { g_autofree char *h_ = holders(spec); g_assert_cmpstr(h_, ==, want); } while (0)

static void test_granted(void)
{
	HOLD("w", "1");
	HOLD("ww", "10");
	/* Readers share until the first writer; later readers wait for it. */
	HOLD("rrwr", "1100");
	/* A writer waits for readers older than it. */
	HOLD("rw", "10");
	HOLD("wr", "10");
	/* Our own keys never block each other: an upgrade (R then W) waits
	 * only for the others' older keys. */
	HOLD("RW", "11");
	HOLD("rRW", "110");
	HOLD("RrW", "110");
	/* An upgrade passes a writer that waits for our reader, but not a
	 * reader that may hold, nor a writer older than our reader. */
	HOLD("RwW", "101");
	HOLD("RrW", "110");
	HOLD("RwrW", "1000");
	HOLD("wRW", "100");
	/* A reader behind our writer: theirs waits; ours does not. */
	HOLD("Wr", "10");
	HOLD("WR", "11");
}

static void test_blocker(void)
{
	struct lock_key k[16] = { 0 };
	size_t n;

	n = keys_of("", k);
	g_assert_cmpint(lockrule_blocker(k, n, X), ==, -1);
	n = keys_of("rr", k);
	g_assert_cmpint(lockrule_blocker(k, n, S), ==, -1);
	g_assert_cmpint(lockrule_blocker(k, n, X), ==, 0);
	/* A waiting writer stops new readers too. */
	n = keys_of("Rrw", k);
	g_assert_cmpint(lockrule_blocker(k, n, S), ==, 2);
	g_assert_cmpint(lockrule_blocker(k, n, X), ==, 1);
	n = keys_of("W", k);
	g_assert_cmpint(lockrule_blocker(k, n, X), ==, -1);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/lockrule/set-and-unlock", test_set_and_unlock);
	g_test_add_func("/lockrule/merge", test_merge);
	g_test_add_func("/lockrule/granted", test_granted);
	g_test_add_func("/lockrule/blocker", test_blocker);
	return g_test_run();
}
