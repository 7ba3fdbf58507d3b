/*
 * revclock — wall-clock times for etcd revisions.
 *
 * etcd keeps no timestamps, but file times must move whenever a key's
 * mod_revision does (programs poll mtime to reload configuration). Each
 * response header tells us the store revision at the time we received it;
 * the time of revision R is the first moment we saw a store revision >= R.
 * Revisions older than the first observation map to the mount time. The
 * result is monotonic in R, so a newer mod_revision never gets an older time.
 */
#pragma once

#include <stdint.h>
#include <time.h>

/* Starts the clock at the current time; call once before anything else. */
void revclock_init(void);
void revclock_fini(void);

/* Records that the store was at revision rev now. Thread-safe. */
void revclock_observe(int64_t rev);

/* The newest store revision observed (0: none yet). Thread-safe. */
int64_t revclock_latest(void);

/* The time of revision rev. Thread-safe. */
struct timespec revclock_time(int64_t rev);
