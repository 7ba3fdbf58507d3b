/*
 * inode — the table of inodes the kernel knows about.
 *
 * An inode is a file (a key) or a directory (a key prefix ending in '/', or
 * the root prefix). Its lifetime follows the kernel's lookup count: created
 * on the first lookup reply, freed after forget drops the count to zero and
 * no request still holds a reference. Inode numbers are a hash of kind and
 * key, so a key keeps its number across forget/lookup cycles for the whole
 * mount (a hash collision falls back to a counter in the upper half).
 *
 * Per-inode state (the last value read, the shared write buffer of open
 * writers) is guarded by the inode's own mutex; the key by the table lock,
 * because rename changes it. Neither lock is held across a network call.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include <fuse_lowlevel.h>

#include "etcd.h"

enum ef_kind { EF_FILE = 0, EF_DIR = 1 };

/* What only a directory has (in->dir), all protected by its inode's lock. */
struct ef_dirinfo {
	GHashTable *names;           /* every entry is known: name -> 1 (file) or 2
				      * (directory); NULL when not known */
	unsigned nsubdirs;           /* directories in names */
	unsigned names_counted;      /* names' size as counted in the budget of all
				      * sets */
	int64_t names_rev;           /* the revision names was learned at (0: made
				      * here): it reflects every event up to it */
	bool names_big;              /* too many keys below to learn names from one
				      * page; try again after the set is next
				      * forgotten */
	struct timespec mtime;       /* last change to its entries seen here (0:
				      * none yet) */
};

struct ef_inode {
	fuse_ino_t ino;              /* immutable */
	GMutex lock;
	struct ef_dirinfo *dir;      /* immutable pointer: a directory's own state;
				      * NULL for a file */
	GCond cond;                  /* signalled when flushing ends */
	struct ef_kv *kv;            /* protected by lock: last kv read or written */
	GByteArray *wbuf;            /* protected by lock: shared by open writers */
	int64_t base_mod;            /* protected by lock: mod_revision wbuf is based
				      * on; -1: overwrite whatever is there */
	int64_t lease;               /* protected by lock: lease to keep on Put */
	uint64_t wgen;               /* protected by lock: bumped by every change to wbuf */
	uint64_t tgen;               /* protected by lock: bumped when an open
				      * truncates wbuf (its guard starts over) */
	GBytes *closed;              /* protected by lock: the buffer as a writer
				      * closed it, not yet Put (its Put waits for the
				      * last release): what readers here see */
	uint64_t closed_gen;         /* protected by lock: wgen of closed */
	unsigned writers;            /* protected by lock: open handles that may write */
	unsigned opens;              /* protected by lock: open handles */
	int werr;                    /* protected by lock: a write failed (errno):
				      * the buffer is incomplete, never Put it */
	enum ef_kind kind;           /* immutable */
	/* Flags, packed: at 100,000 inodes every byte here is 100 KB. */
	bool kv_ok : 1;              /* protected by lock: kv is current (the watch
				      * has applied every event since it was read) */
	bool dirty : 1;              /* protected by lock: wbuf differs from etcd */
	bool written : 1;            /* protected by lock: data written or resized
				      * since open, not just truncated by it */
	bool flushing : 1;           /* protected by lock: a Put of wbuf is in flight */
	bool unlinked : 1;           /* protected by lock: removed; never Put again */
	bool gone : 1;               /* protected by lock: the key was found deleted
				      * (by another client) since the kernel looked
				      * it up; cleared when a kv is stored */
	bool removing : 1;           /* protected by lock: an unlink or rename-over of
				      * the key is in flight: no Put may start */
	bool failed : 1;             /* protected by lock: a Put of wbuf failed and was
				      * reported by close or fsync */

	/* table-private */
	bool odd;                    /* protected by the table lock: in the key index
				      * with a number that is not its key's hash */
	unsigned refs;               /* protected by the table lock */
	char *key;                   /* protected by the table lock: NULL once detached */
	size_t klen;                 /* protected by the table lock */
	uint64_t nlookup;            /* protected by the table lock */
};

void inode_table_init(GBytes *root_prefix);
void inode_table_fini(void);

/* A new reference to inode ino, or NULL if the kernel passed an unknown one. */
struct ef_inode *inode_get(fuse_ino_t ino);
void inode_unref(struct ef_inode *in);

/* Finds or creates the inode for (kind, key), adds one kernel lookup and
 * returns a new reference. Call only when the reply will carry it. */
struct ef_inode *inode_lookup(enum ef_kind kind, GBytes *key);

/* Undoes the lookup of inode_lookup when its reply could not be sent. */
void inode_unlookup(struct ef_inode *in);

/* The existing inode for (kind, key) with a new reference, or NULL. */
struct ef_inode *inode_find(enum ef_kind kind, GBytes *key);

/* Drops n kernel lookups (FUSE forget). */
void inode_forget(fuse_ino_t ino, uint64_t n);

/* The inode's key (directory: its prefix), a new reference. */
GBytes *inode_key(struct ef_inode *in);

/* The number (kind, key) has or would get, without creating anything. */
fuse_ino_t inode_number(enum ef_kind kind, GBytes *key);

/* The same, for listings: without the table lock while no inode has a
 * number other than its key's hash (one renamed, or a collision). */
fuse_ino_t inode_number_of(enum ef_kind kind, GBytes *key);

/* After a rename: every inode whose key starts with from (of either kind,
 * or exactly equal for a file) now has to + the rest. An inode already at
 * a destination key is detached from the table first (the kernel keeps its
 * number until it forgets it). */
void inode_rename(enum ef_kind kind, GBytes *from, GBytes *to);

/* The key was deleted: in stops answering for it (a later create gets a new
 * inode), while the kernel keeps in's number until it forgets it. */
void inode_detach(struct ef_inode *in);

/* New references to every inode in the table (for a full invalidation). */
GPtrArray *inode_all(void);

/* Directory name sets (in->names): a lookup of a name absent from a known
 * set needs no round trip, and a known set counts the subdirectories (the
 * link count). A set is bounded by INODE_NAMES_MAX names, all sets together
 * by INODE_NAMES_BUDGET: past either, the set is forgotten. Each takes
 * in->lock. */
#define INODE_NAMES_MAX 10000
/* All sets together hold at most this many names: a set that would go past
 * it is dropped. */
#define INODE_NAMES_BUDGET 20000
void inode_names_start(struct ef_inode *in);
void inode_names_add(struct ef_inode *in, const char *name, bool is_dir);
void inode_names_remove(struct ef_inode *in, const char *name);
/* Removes name only if the set has it as a file (a directory stays). */
void inode_names_remove_file(struct ef_inode *in, const char *name);
void inode_names_forget(struct ef_inode *in);
/* True if in's set is known and lacks name. */
bool inode_names_lack(struct ef_inode *in, const char *name);
/* A set learned from a listing: built with inode_names_new/_put, then made
 * in's set at once (replacing any) by inode_names_install, which takes it;
 * rev is the listing's revision (see names_rev). */
GHashTable *inode_names_new(void);
void inode_names_put(GHashTable *names, const char *name, bool is_dir);
void inode_names_install(struct ef_inode *in, GHashTable *names, int64_t rev);
/* True if in's set exists and already reflects an event at revision rev. */
bool inode_names_reflect(struct ef_inode *in, int64_t rev);
/* True if in has no set yet and one may be learned from a page. */
bool inode_names_wanted(struct ef_inode *in);
void inode_names_set_big(struct ef_inode *in);
