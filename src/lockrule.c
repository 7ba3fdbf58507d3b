/*
 * lockrule — byte ranges of one owner, and who holds a lock name (see
 * lockrule.h). Pure: unit-tested in tests/unit/test_lockrule.c.
 */
#include "lockrule.h"

static gint by_start(gconstpointer a, gconstpointer b)
{
	const struct lock_range *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

void lockrule_set_range(GArray *ranges, int64_t start, int64_t end, enum lock_mode mode)
{
	g_autoptr(GArray) out = g_array_sized_new(FALSE, FALSE, sizeof(struct lock_range),
						  ranges->len + 2);

	for (guint i = 0; i < ranges->len; i++) {
		struct lock_range r = g_array_index(ranges, struct lock_range, i);

		if (r.end < start || r.start > end) {
			g_array_append_val(out, r);
			continue;
		}
		/* The parts of an overlapped range outside [start, end]. */
		if (r.start < start) {
			struct lock_range left = { r.start, start - 1, r.mode };

			g_array_append_val(out, left);
		}
		if (r.end > end) {
			struct lock_range right = { end + 1, r.end, r.mode };

			g_array_append_val(out, right);
		}
	}
	if (mode != LOCK_MODE_NONE) {
		struct lock_range r = { start, end, mode };

		g_array_append_val(out, r);
	}
	g_array_sort(out, by_start);
	g_array_set_size(ranges, 0);
	for (guint i = 0; i < out->len; i++) {
		struct lock_range r = g_array_index(out, struct lock_range, i);
		struct lock_range *last = ranges->len ?
			&g_array_index(ranges, struct lock_range, ranges->len - 1) : NULL;

		if (last && last->mode == r.mode && last->end != INT64_MAX && last->end + 1 == r.start)
			last->end = r.end;
		else
			g_array_append_val(ranges, r);
	}
}

enum lock_mode lockrule_ranges_mode(const GArray *ranges)
{
	enum lock_mode m = LOCK_MODE_NONE;

	for (guint i = 0; i < ranges->len; i++)
		m = MAX(m, g_array_index(ranges, struct lock_range, i).mode);
	return m;
}

/* Whether keys[j], a writer's, waits behind a key of ours: it cannot hold
 * the lock while that key stays. */
static bool behind_ours(const struct lock_key *keys, size_t n, size_t j)
{
	for (size_t k = 0; k < n; k++)
		if (keys[k].ours && keys[k].create_rev < keys[j].create_rev)
			return true;
	return false;
}

bool lockrule_granted(const struct lock_key *keys, size_t n, size_t i)
{
	for (size_t j = 0; j < n; j++) {
		if (j == i || (keys[i].ours && keys[j].ours) || keys[j].create_rev >= keys[i].create_rev)
			continue;
		if (keys[i].shared && keys[j].shared)
			continue;
		/* Our writer after our reader (an upgrade) passes the other
		 * writers queued between them: they wait for our reader,
		 * which stays as long as our writer does. */
		if (keys[i].ours && !keys[i].shared && !keys[j].shared && behind_ours(keys, n, j))
			continue;
		return false;
	}
	return true;
}

ssize_t lockrule_blocker(const struct lock_key *keys, size_t n, enum lock_mode wanted)
{
	ssize_t best = -1;

	for (size_t j = 0; j < n; j++) {
		if (keys[j].ours || (wanted == LOCK_MODE_SHARED && keys[j].shared))
			continue;
		if (best < 0 || keys[j].create_rev < keys[best].create_rev)
			best = (ssize_t)j;
	}
	return best;
}
