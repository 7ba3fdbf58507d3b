/*
 * ratelimit — how often a warning that a server can provoke may be logged.
 *
 * Pure: the caller passes the time and holds whatever lock guards the
 * struct. A hostile or broken server can make every request fail the same
 * way; the log then gets the first burst lines of each interval and, with
 * the next line logged, how many were left out meanwhile.
 */
#pragma once

#include <stdbool.h>
#include <glib.h>

struct ef_ratelimit {
	gint64 interval_us;     /* set by the user; 0: RATELIMIT_INTERVAL_US */
	unsigned burst;         /* set by the user; 0: RATELIMIT_BURST */
	gint64 window;          /* start of the current interval */
	unsigned used;          /* lines allowed in it */
	unsigned dropped;       /* lines refused since the last one allowed */
};

#define RATELIMIT_INTERVAL_US (60 * G_USEC_PER_SEC)
#define RATELIMIT_BURST 10

/* Whether a line may be logged at now (monotonic microseconds). When it
 * may, *dropped receives the number refused since the last one allowed. */
bool ratelimit_allow(struct ef_ratelimit *rl, gint64 now, unsigned *dropped);
