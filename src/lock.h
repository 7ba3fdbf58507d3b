/*
 * lock — flock(2) and fcntl(2) locks on files as etcd locks.
 *
 * A file's lock is etcd's lock named keymap_lock_name(prefix, key), the same
 * one `etcdctl lock NAME` takes: a holder anywhere (another mount, etcdctl,
 * any client of etcd's lock service) excludes every other. Shared locks
 * (LOCK_SH, F_RDLCK) are readers' keys in the same queue (lockrule.h): they
 * share with each other, and etcdctl lock waits for them. The mount holds
 * its keys on one lease of its own, granted at the first lock and kept
 * alive while the daemon runs; revoked at unmount, it lapses within its
 * TTL when the daemon dies or is cut off, releasing what it held.
 *
 * Owners are the kernel's lock owners. Several owners on one mount queue
 * here, oldest first, under the mount's keys. A contended request is
 * parked, not waited for: it is answered when etcd grants the lock, or
 * with EINTR when the caller is interrupted (its key is withdrawn).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <fcntl.h>
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

/* Who asks: the kernel's lock owner (flock and OFD locks: the open file;
 * POSIX locks: the process's file table), the open file's handle, the
 * inode, and the calling process. */
struct locks_who {
	uint64_t owner, fh, ino;
	pid_t pid;
};

/*
 * flock(2) operation op (LOCK_SH, LOCK_EX or LOCK_UN, with LOCK_NB) on the
 * file whose key is key (borrowed). Replies to req itself, now or later:
 * 0; EWOULDBLOCK (held elsewhere, with LOCK_NB); EINTR (interrupted while
 * waiting); ENOLCK (etcd refused or could not be reached).
 */
void locks_flock(struct ef_locks *l, fuse_req_t req, GBytes *key, const struct locks_who *who,
		 int op);

/*
 * fcntl(2) F_SETLK (sleep false) or F_SETLKW (sleep true) of fl, POSIX or
 * OFD alike. Any range locks the whole file against other owners; each
 * owner's own ranges are kept exactly, so that unlocking one leaves the
 * others. Replies as locks_flock, plus EDEADLK (two owners of one file on
 * this mount would wait for each other).
 */
void locks_setlk(struct ef_locks *l, fuse_req_t req, GBytes *key, const struct locks_who *who,
		 const struct flock *fl, bool sleep);

/* F_GETLK: replies with the first lock in the way (fuse_reply_lock), or
 * F_UNLCK. A holder elsewhere is the whole file with l_pid 0. */
void locks_getlk(struct ef_locks *l, fuse_req_t req, GBytes *key, const struct locks_who *who,
		 const struct flock *fl);

/* owner closed a descriptor of inode ino: its fcntl (POSIX) locks on the
 * file are released, as close(2) does. */
void locks_flush(struct ef_locks *l, uint64_t ino, uint64_t owner);

/* The last descriptor of open file fh is closed: the OFD locks taken
 * through it are released, and its flock lock when flock (owner is then
 * the flock owner). The kernel sends no unlock for either. */
void locks_release(struct ef_locks *l, uint64_t fh, uint64_t owner, bool flock);

/* Who holds the lock of key, from etcd: one line per holder, "exclusive"
 * or "shared", its lease in hex and its key; nothing when free. */
int locks_owners(struct ef_locks *l, GBytes *key, GString *out);

struct ef_fence;

/*
 * The fence of a Put of key (etcd.h): while the mount holds the file's
 * lock, *f is the owner key that covers its holders (a new reference),
 * so that a Put never lands after the lock is gone; f->key NULL when the
 * lock is not held here. -ENOLCK: a holder here has lost it (its lease
 * expired, or its key was deleted) and has not let go yet.
 */
int locks_fence(struct ef_locks *l, GBytes *key, struct ef_fence *f);

/* Whether the mount holds any lock (a lost one included): cheap. */
bool locks_holding(struct ef_locks *l);
