/*
 * lock — flock(2) on files as etcd locks.
 *
 * A file's lock is etcd's lock named keymap_lock_name(prefix, key), the same
 * one `etcdctl lock NAME` takes: a holder anywhere (another mount, etcdctl,
 * any etcd client of the lock service) excludes every other. The mount
 * holds its locks on one lease of its own, granted at the first lock and
 * kept alive while the daemon runs; revoked at unmount, it lapses within
 * its TTL when the daemon dies or is cut off, releasing what it held.
 *
 * Owners are the kernel's flock owners (one per open file description).
 * Several owners on one mount queue here, oldest first, and at most one
 * Lock call per name is in flight: etcd would let two calls of one lease
 * through together. A contended request is parked, not waited for: it is
 * answered when etcd grants the lock, or with EINTR when the caller is
 * interrupted (its Lock call is cancelled and its waiter key withdrawn).
 *
 * Shared locks (LOCK_SH) are taken exclusively for now: never wrong about
 * exclusion, only stricter than asked.
 */
#pragma once

#include <stdint.h>
#include <glib.h>
#include <fuse_lowlevel.h>

struct ef_etcd;
struct ef_locks;

/* Default TTL of the mount's lock lease, in seconds: etcdctl lock's. */
#define LOCK_TTL_DEFAULT 60

/*
 * The locks of one mount: names under prefix (copied), the lease of ttl
 * seconds. Starts the thread that owns them; etcd is borrowed until
 * locks_free.
 */
struct ef_locks *locks_new(struct ef_etcd *etcd, const char *prefix, int ttl);

/* Answers every parked request (ENOLCK), revokes the lease (etcd deletes
 * every lock key on it), stops the thread, frees l. Call it after the
 * session loop and before the session is destroyed. */
void locks_free(struct ef_locks *l);

/* The lock name of key (new reference). */
GBytes *locks_name(struct ef_locks *l, GBytes *key);

/*
 * flock(2) operation op (LOCK_SH, LOCK_EX or LOCK_UN, with LOCK_NB) of
 * owner on the file whose key is key (borrowed). Replies to req itself, now
 * or later: 0; EWOULDBLOCK (held elsewhere, with LOCK_NB); EINTR
 * (interrupted while waiting); ENOLCK (etcd refused or could not be
 * reached).
 */
void locks_flock(struct ef_locks *l, fuse_req_t req, GBytes *key, uint64_t owner, int op);

/* The last descriptor of owner's open file is closed: its flock lock, if
 * any, is released (the kernel sends no LOCK_UN). */
void locks_release(struct ef_locks *l, uint64_t owner);
