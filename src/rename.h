/*
 * rename — how a rename maps onto keys, and carrying it out.
 *
 * etcd has no rename: moving a file is one Txn that Puts the value under the
 * new key and deletes the old one, both guarded by the old key's revision;
 * moving a directory moves every key under its prefix (and the directory's
 * own value) in one Txn, guarded by the source range's revision and by the
 * target being empty. A move that needs more than one Txn fails with EXDEV,
 * so mv(1) falls back to copying. After a move the inode table, the cached
 * key-values and the local directories follow it.
 */
#pragma once

#include <stdbool.h>
#include <glib.h>

struct ef_fs;

/*
 * Renames the entry whose keys are sfk (file key) and sdp (directory
 * prefix, NULL for a directory's own value) to dfk and ddp (likewise).
 * A file still being written here is published first. flags: the rename(2)
 * flags (RENAME_NOREPLACE; RENAME_EXCHANGE is the caller's to refuse).
 * probe: the source's parent prefix, or NULL for the root; *src_left, which
 * the caller sets true first, receives whether any key is left under probe
 * after the move (if none, the caller keeps that directory as a local one);
 * *is_dir whether a directory moved. Keys are borrowed. Returns 0 or -errno: -ENOENT (no
 * source), -EEXIST (RENAME_NOREPLACE), -ENOTDIR, -ENOTEMPTY, -EXDEV (too
 * many keys for one Txn), -ESTALE (a guard failed: something changed
 * meanwhile), or another of etcd's.
 */
int rename_move(struct ef_fs *fs, GBytes *sfk, GBytes *sdp, GBytes *dfk, GBytes *ddp,
		unsigned int flags, GBytes *probe, bool *src_left, bool *is_dir);

/*
 * renameat2(RENAME_EXCHANGE): the entries a (file key afk, directory prefix
 * adp) and b trade places in one Txn, files or directories, each key
 * guarded as by rename (a key changed, added or removed meanwhile: -ESTALE),
 * so that a reader sees all of one and none of the other. -ENOENT when
 * either is missing, -EXDEV past what one Txn carries. *a_is_dir and
 * *b_is_dir receive what each was.
 */
int rename_exchange(struct ef_fs *fs, GBytes *afk, GBytes *adp, GBytes *bfk, GBytes *bdp,
		    bool *a_is_dir, bool *b_is_dir);
