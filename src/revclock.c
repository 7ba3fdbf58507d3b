/*
 * revclock — wall-clock times for etcd revisions (see revclock.h).
 *
 * Invariant: samples[] is strictly increasing in rev and non-decreasing in
 * time. When full, every other sample of the older half is dropped: an old
 * revision then maps to a later sample, so times only ever move forward.
 */
#include "revclock.h"

#include <glib.h>

#define REVCLOCK_MAX 16384

struct sample {
	int64_t rev;
	struct timespec at;
};

static GMutex lock;
static struct sample *samples;   /* protected by lock */
static size_t n_samples;         /* protected by lock */
static struct timespec start;    /* set once by revclock_init */

void revclock_init(void)
{
	clock_gettime(CLOCK_REALTIME, &start);
	samples = g_new(struct sample, REVCLOCK_MAX);
	n_samples = 0;
}

void revclock_fini(void)
{
	g_free(samples);
	samples = NULL;
}

static void thin_locked(void)
{
	size_t half = n_samples / 2, w = 0;

	for (size_t r = 0; r < half; r += 2)
		samples[w++] = samples[r + 1];
	for (size_t r = half; r < n_samples; r++)
		samples[w++] = samples[r];
	n_samples = w;
}

void revclock_observe(int64_t rev)
{
	struct timespec now;

	if (rev <= 0)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	g_mutex_lock(&lock);
	if (n_samples == 0 || rev > samples[n_samples - 1].rev) {
		if (n_samples == REVCLOCK_MAX)
			thin_locked();
		/* The first revision seen predates the mount: give it the
		 * mount's start so pre-existing keys share one time. */
		samples[n_samples].rev = rev;
		samples[n_samples].at = n_samples == 0 ? start : now;
		n_samples++;
	}
	g_mutex_unlock(&lock);
}

int64_t revclock_latest(void)
{
	int64_t rev;

	g_mutex_lock(&lock);
	rev = n_samples ? samples[n_samples - 1].rev : 0;
	g_mutex_unlock(&lock);
	return rev;
}

struct timespec revclock_time(int64_t rev)
{
	struct timespec t;
	size_t lo = 0, hi;

	g_mutex_lock(&lock);
	hi = n_samples;
	/* First sample with samples[i].rev >= rev. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (samples[mid].rev < rev)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < n_samples)
		t = samples[lo].at;
	else
		clock_gettime(CLOCK_REALTIME, &t);
	g_mutex_unlock(&lock);
	return t;
}
