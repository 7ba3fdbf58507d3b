/*
 * lockrule — the rules of etcdfs locks that need neither etcd nor FUSE:
 * the byte ranges one owner holds, and which keys under a lock name hold it.
 *
 * A lock name NAME is held through keys under NAME/, each on its holder's
 * lease, oldest (lowest create revision) first, as etcd's lock service
 * makes them: a writer's key has an empty value, a reader's the value
 * LOCK_SHARED_VALUE. A writer holds the lock once every older key is gone;
 * a reader once every older writer's key is. So `etcdctl lock NAME` waits
 * for readers and writers alike, and readers queue behind it.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <glib.h>

enum lock_mode { LOCK_MODE_NONE, LOCK_MODE_SHARED, LOCK_MODE_EXCL };

/* The value of a reader's key. */
#define LOCK_SHARED_VALUE "shared"

/* [start, end] of a file, end included; INT64_MAX: to the end of the file
 * however long it grows. */
struct lock_range {
	int64_t start, end;
	enum lock_mode mode;
};

/*
 * ranges: a GArray of struct lock_range, sorted, disjoint, neighbours of
 * one mode merged. Sets [start, end] to mode (LOCK_MODE_NONE unlocks it),
 * as fcntl(F_SETLK) does to the locks of one owner: what the new range
 * overlaps is replaced, what sticks out on either side stays.
 */
void lockrule_set_range(GArray *ranges, int64_t start, int64_t end, enum lock_mode mode);

/* The strongest mode held in ranges. */
enum lock_mode lockrule_ranges_mode(const GArray *ranges);

/* A key under NAME/, as etcd has it. */
struct lock_key {
	int64_t create_rev;
	bool shared;             /* a reader's */
	bool ours;               /* this mount's own */
};

/* Whether keys[i] holds the lock (see above). Keys marked ours never stand
 * in each other's way (a mount arbitrates its own owners), only in the
 * others'. A writer's key of ours also passes the others' writers that
 * wait behind an older key of ours: an upgrade (our reader's key, then our
 * writer's) waits only for the readers, and the caller keeps the reader's
 * key as long as the writer's. */
bool lockrule_granted(const struct lock_key *keys, size_t n, size_t i);

/* The oldest key, not ours, that a lock of mode wanted asked now (its key
 * would be the newest) would wait for; -1 if none. */
ssize_t lockrule_blocker(const struct lock_key *keys, size_t n, enum lock_mode wanted);
