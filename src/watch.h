/*
 * watch — one Watch stream over the mounted prefix keeps the daemon's and
 * the kernel's caches coherent with etcd.
 *
 * Its thread applies each event to the inode table at once and queues the
 * kernel notifications (fuse_lowlevel_notify_*) for a notifier thread of
 * its own: neither serves a FUSE request, as libfuse requires of notifying
 * threads, and a notification that waits for a kernel lock delays no event. While the stream is up the
 * caches are trusted and FUSE replies carry long timeouts; when it drops,
 * trust is withdrawn and every cache is invalidated before anything is
 * served again, and the stream resumes from the last revision seen + 1.
 *
 * Reads race with events: a handler takes watch_seq() before its etcd call
 * and may cache the answer only if watch_changed_since() says no event
 * touched that key (or prefix) meanwhile.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <fuse_lowlevel.h>
#include <glib.h>

struct ef_etcd;
struct ef_watch_event;

/* Told, on the watch thread, what the stream delivers (the %watch files). */
struct watch_listener {
	/* The n events of one message (n may be 0), applied, in etcd's
	 * order: every event up to revision through has now been delivered. */
	void (*delivered)(const struct ef_watch_event *ev, size_t n, int64_t through);
	/* Events were lost: the stream resumed past a compaction at
	 * compact_revision and starts over from now; the next delivered()
	 * gives its new position. */
	void (*lost)(int64_t compact_revision);
	/* etcd refused to create the watch, for this reason; it is tried
	 * again. */
	void (*refused)(const char *why);
};

/* Before watch_start; l is borrowed until watch_stop. */
void watch_set_listener(const struct watch_listener *l);

/* Starts the watch thread on [root, prefix_end(root)). Borrows etcd and se
 * until watch_stop. */
void watch_start(struct ef_etcd *etcd, GBytes *root, struct fuse_session *se);
void watch_stop(void);

/* Instead of watch_start, for a view of the past (--revision): nothing
 * there changes, so caches are trusted for good and no Watch runs. */
void watch_start_frozen(GBytes *root);

/* A request failed as if etcd were unreachable: stop trusting the caches
 * until the stream proves alive again. Any thread; cheap when repeated. */
void watch_doubt(void *unused);

/* True while the stream is established and has applied every event up to
 * the floor (watch_order_after): cached data is kept current. */
bool watch_trusted(void);

/* A lock was granted at revision rev: until the watch has applied every
 * event up to it, nothing is served from a cache, so the holder reads what
 * the previous holder wrote, on any mount. */
void watch_order_after(int64_t rev);

/* A position in the sequence of applied events. */
uint64_t watch_seq(void);

/*
 * This mount is about to change key (or, with prefix, every key under it)
 * and updates the kernel's view itself: until watch_local_end(token), the
 * events of key update the daemon's name sets but make no kernel
 * notification about its entry. Returns the token.
 */
void *watch_local_begin(GBytes *key, bool prefix);
void watch_local_end(void *token);

/* This mount changed key's namespace itself (a new key, a rename): what
 * was read before must not pass for current, as after an event. */
void watch_note_local(GBytes *key);

/* This mount made the file key exist at revision rev (a Put, a rename onto
 * it): until the watch reaches rev, an event deleting the key at an older
 * revision is late and changes nothing (its name stays in its directory's
 * set, the kernel keeps its entry). */
void watch_note_created(GBytes *key, int64_t rev);

/* True if, since seq, an event touched key (or, with prefix, any key that
 * starts with it), trust was lost, or this cannot be told any more. */
bool watch_changed_since(uint64_t seq, GBytes *key, bool prefix);

/* The same, counting only events newer than revision rev (a read made at
 * rev already reflects the others) and changes made here. */
bool watch_changed_after(uint64_t seq, GBytes *key, bool prefix, int64_t rev);

/*
 * Runs fn(ud) only if watch_changed_after() says no, atomically with that
 * answer: every event recorded later is applied after fn's effect. For
 * installing state read at rev (a directory's name set) that later events
 * must update. fn runs with the watch's lock held: it may take only locks
 * the watch thread never holds while recording an event (an inode's lock).
 * Returns whether fn ran.
 */
bool watch_unchanged_do(uint64_t seq, GBytes *key, bool prefix, int64_t rev,
			void (*fn)(void *ud), void *ud);
