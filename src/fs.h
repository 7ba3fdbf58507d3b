/*
 * fs — the filesystem context, and what every part of the daemon that
 * serves requests shares: the attributes a file or directory shows and the
 * re-read of a file's key.
 *
 * One struct ef_fs exists per mount. main creates it before the session and
 * hands it to libfuse as the session's userdata (as passthrough_ll does with
 * its lo_data); every handler fetches it with fuse_req_userdata() and passes
 * it down explicitly. Its fields are fixed before the first request is
 * served and read without a lock: etcd is set after the daemon has forked
 * (fork keeps no threads) and before the session loop starts, and cleared
 * only after the loop has returned.
 *
 * This module sits below fsops, writeback, handle, dirhandle and rename and
 * calls none of them.
 */
#pragma once

#include <stdbool.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <glib.h>

struct ef_etcd;
struct ef_inode;
struct ef_locks;

/* The largest value a write buffer may hold: above it write() fails with
 * EFBIG at once (the server's own, lower limit fails the Put at close). */
#define EF_MAX_VALUE (2 * 1024 * 1024)

/* Kernel cache lifetime of what the watch keeps current: it invalidates
 * each change, so the timeout only bounds a reply the watch missed. */
#define CACHE_TTL 86400.0

/* What the command line decides about the mount. */
struct ef_sessions;

struct ef_fs_config {
	GBytes *root;          /* root prefix (keymap_root_prefix) */
	uid_t uid;
	gid_t gid;
	mode_t umask;
	bool strict;           /* --strict-reads */
	int64_t revision;      /* --revision: a read-only view of the past (0: now) */
};

struct ef_fs {
	GBytes *root;                /* immutable: root prefix */
	uid_t uid;                   /* immutable: owner every entry shows */
	gid_t gid;                   /* immutable */
	mode_t umask;                /* immutable */
	bool strict;                 /* immutable: a cached value is checked
				      * against etcd at each open (handle.c) */
	int64_t revision;            /* immutable: the past revision shown, or 0 */
	struct timespec mount_time;  /* immutable: times of what has no revision */
	struct ef_etcd *etcd;        /* borrowed; set by fs_set_etcd before the
				      * session loop, NULL after it */
	struct ef_locks *locks;      /* borrowed; set and cleared with etcd */
	struct ef_sessions *sessions; /* borrowed; set and cleared with etcd */
};

/* A new context: copies cfg (taking a reference on root) and sets up the
 * inode table and the local directories, which live as long as it. */
struct ef_fs *fs_new(const struct ef_fs_config *cfg);

/* Sets the etcd client and the locks on it once the daemon has forked
 * (borrowed until the next call, which passes NULLs before they are
 * freed). */
void fs_set_etcd(struct ef_fs *fs, struct ef_etcd *etcd, struct ef_locks *locks,
		 struct ef_sessions *sessions);

/* Tears down what fs_new set up and frees fs. */
void fs_free(struct ef_fs *fs);

/* The attributes in shows: owner and mode from the mount, size from the
 * open writers' buffer or the cached kv, times from revisions. Takes
 * in->lock. */
void fs_fill_attr(struct ef_fs *fs, struct stat *st, struct ef_inode *in);

/*
 * This mount made key (a file's key, or with is_dir a directory's prefix)
 * exist: its directory's name set gets its name, and a name set being
 * learned from a page read before that is not taken (watch_note_local).
 */
void fs_note_created(struct ef_fs *fs, GBytes *key, bool is_dir);

/* The process (thread group) of thread tid, from /proc; 0 when that cannot
 * be told (another pid namespace, or the thread is gone). */
pid_t fs_thread_tgid(pid_t tid);

/* The entries of directory in (NULL, or a file: nothing) changed here: its
 * mtime moves. Takes in->lock. */
void fs_dir_touch(struct ef_inode *in);

/* A file open for writing here with changes not yet Put (created and not
 * yet written back, say) exists for this mount even though etcd may have no
 * key. Takes in->lock. */
bool fs_inode_pending(struct ef_inode *in);

/* True if in's cached key-value is current (the watch keeps it so), with
 * its value too when need_value. Takes in->lock. */
bool fs_file_cached(struct ef_inode *in, bool need_value);

/* How long the kernel may keep in's attributes: as long as the watch
 * vouches for them; not at all while writers change the size under it. */
double fs_attr_ttl(struct ef_inode *in);

/* Re-reads a file's key (one etcd call) into the cache. Returns 0, or
 * -ENOENT if it is gone, or the call's -errno. val, if non-NULL, receives a
 * new reference to the value read (NULL if none was: a pending or unlinked
 * file). Holds no lock across the call. */
int fs_file_refresh_value(struct ef_fs *fs, struct ef_inode *in, GBytes **val);

/* fs_file_refresh_value without the value. */
int fs_file_refresh(struct ef_fs *fs, struct ef_inode *in);
