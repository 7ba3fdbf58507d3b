/*
 * dirhandle — an open directory: the listing readdir serves, fetched from
 * etcd a page at a time as the reader gets to it. Pages carry the values
 * too, within a byte budget (keys only when values are too big), so that
 * readdirplus can hand each file's key-value to its inode and the opens and
 * reads that follow a listing need no round trip.
 *
 * Offsets run over ".", "..", KEYMAP_SELF_NAME (the directory's own value,
 * if it has one), then the keys' entries (dirlist), then the local
 * directories of this mount that etcd cannot know (localdir), added once the
 * listing is complete. An offset keeps naming the same entry for the life
 * of the handle. The kernel serialises readdir on one open directory, so a
 * handle needs no lock.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <fuse_lowlevel.h>
#include <glib.h>

struct ef_fs;
struct ef_dirh;

/* A new handle listing directory prefix dir (borrowed: it takes its own
 * reference); root: dir is the mount's root, which has no value of its own.
 * Nothing is fetched yet: a listing the kernel has cached is opened but
 * never read. */
struct ef_dirh *dirh_new(GBytes *dir, bool root);

void dirh_free(struct ef_dirh *dh);

/*
 * Makes entry off available, or learns that there is none: the first call
 * adds ".", ".." (ino is the directory's own number) and the directory's
 * value (a round trip of its own: the value lies in the parent's range);
 * then pages of keys are fetched until more than off entries are in or the
 * listing is complete. Returns 0 or an etcd call's -errno.
 */
int dirh_fetch(struct ef_fs *fs, struct ef_dirh *dh, fuse_ino_t ino, off_t off);

/* The number of entries available so far. */
size_t dirh_count(const struct ef_dirh *dh);

/* Entry i (< dirh_count): its name (borrowed until dirh_free), with type
 * and inode number set in st. */
const char *dirh_entry(const struct ef_dirh *dh, size_t i, struct stat *st);

struct ef_inode;

/*
 * Entry i as dirh_entry, for a readdirplus reply it will be part of: *in
 * is a new reference to its inode with one kernel lookup counted (as
 * inode_lookup), NULL for "." and "..". A file's inode receives the
 * key-value the listing read, unless an event since made it stale.
 */
const char *dirh_entry_plus(struct ef_dirh *dh, size_t i, struct stat *st, struct ef_inode **in);

struct ef_dirlist;
struct ef_kv;

/*
 * The complete listing l of directory prefix dir (with the local
 * directories below it) becomes din's known name set, unless an event
 * newer than rev (the revision of the listing's first page) or a change
 * made here touched the directory since seq (watch_seq() taken before the
 * listing's first etcd call): then din is left with no set.
 */
void dirh_learn_names(struct ef_inode *din, GBytes *dir, const struct ef_dirlist *l, uint64_t seq,
		      int64_t rev);

struct ef_dirpage;

/*
 * Looks up the entry fk/dp of directory din (prefix dir) as etcd_lookup
 * does. The same Txn reads a page of the entry's own keys, returned in
 * *child (hand it to dirh_page_learn, once the entry's inode is known);
 * and when din has no name set yet, a page of din's keys: a page that
 * holds the whole directory becomes its set, so later lookups of absent
 * names there need no round trip. Returns 0 or -errno (then *child is
 * NULL).
 */
int dirh_lookup(struct ef_fs *fs, struct ef_inode *din, GBytes *dir, GBytes *fk, GBytes *dp,
		struct ef_kv **kv, bool *children, struct ef_dirpage **child);

/* in (a directory; NULL or a file: nothing) learns its names from pg if pg
 * holds them all; frees pg (NULL: nothing). */
void dirh_page_learn(struct ef_dirpage *pg, struct ef_inode *in);

