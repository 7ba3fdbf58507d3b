/*
 * ratelimit — how often a warning may be logged (see ratelimit.h).
 *
 * Fixed windows: simpler than a token bucket and as good for a log, where
 * all that matters is that a flood costs a bounded number of lines.
 */
#include "ratelimit.h"

bool ratelimit_allow(struct ef_ratelimit *rl, gint64 now, unsigned *dropped)
{
	gint64 interval = rl->interval_us > 0 ? rl->interval_us : RATELIMIT_INTERVAL_US;
	unsigned burst = rl->burst > 0 ? rl->burst : RATELIMIT_BURST;

	/* The first call starts a window too (window 0 is "never"); so does
	 * a clock that went backwards, which a monotonic one does not. */
	if (rl->used == 0 || now - rl->window >= interval || now < rl->window) {
		rl->window = now;
		rl->used = 0;
	}
	if (rl->used >= burst) {
		rl->dropped++;
		return false;
	}
	rl->used++;
	*dropped = rl->dropped;
	rl->dropped = 0;
	return true;
}
