/*
 * rename — renames as key moves (see rename.h).
 */
#include "rename.h"

#include <errno.h>
#include <linux/fs.h>

#include "cache.h"
#include "etcd.h"
#include "fs.h"
#include "inode.h"
#include "keymap.h"
#include "localdir.h"
#include "watch.h"
#include "writeback.h"

/* Keys one directory rename may move: each needs a Put and a Compare in
 * one Txn, within etcd's default --max-txn-ops. */
#define RENAME_MAX_KEYS (ETCD_MAX_TXN_OPS - 8)

/* The kv a file has after a rename moved src to dst at revision rev: a new
 * key (etcd gives it version 1), so a late event about dst's earlier life
 * can never pass for newer. */
static struct ef_kv *kv_moved(const struct ef_kv *src, int64_t rev)
{
	struct ef_kv *kv = g_new0(struct ef_kv, 1);

	kv->value = src->value ? g_bytes_ref(src->value) : NULL;
	kv->size = src->size;
	kv->create_revision = kv->mod_revision = rev;
	kv->version = 1;
	kv->lease = src->lease;
	return kv;
}

static int rename_file(struct ef_fs *fs, GBytes *sfk, struct ef_kv *src, GBytes *dfk,
		       unsigned int flags, GBytes *sdir, bool *src_left)
{
	struct ef_move mv = { .src = src, .dst = dfk };
	int64_t rev = 0;
	struct ef_rename r = {
		.moves = &mv, .n_moves = 1,
		.absent_key = (flags & RENAME_NOREPLACE) ? dfk : NULL,
		.rev = &rev, .probe = sdir, .probe_any = src_left,
	};
	struct ef_inode *dst = inode_find(EF_FILE, dfk), *moved;
	uint64_t seq = watch_seq();
	void *local;
	int rc;

	/* The file replaced must not be revived by a Put of its own. */
	if (dst)
		writeback_removal_begin(dst);
	/* The Txn's event may come before its reply: it must not make the
	 * kernel drop the entry it is moving (and forget the inode). */
	local = watch_local_begin(dfk, false);
	rc = etcd_rename(fs->etcd, &r);
	if (dst) {
		writeback_removal_end(dst, rc == 0);
		inode_unref(dst);
	}
	if (rc == 0) {
		watch_note_created(dfk, rev);
		inode_rename(EF_FILE, sfk, dfk);
		if ((moved = inode_find(EF_FILE, dfk))) {
			/* An event of the source key after the Txn may have
			 * reached the inode before it moved. */
			cache_replace(moved, kv_moved(src, rev),
				      !watch_changed_since(seq, dfk, false));
			inode_unref(moved);
		}
	}
	watch_local_end(local);
	return rc;
}

/* After a directory moved: local directories and inodes follow. */
static void rename_dir_follow(GBytes *sdp, struct ef_kv *self, GBytes *dfk, GBytes *ddp)
{
	localdir_remove(ddp);
	localdir_rename(sdp, ddp);
	inode_rename(EF_DIR, sdp, ddp);
	if (self)
		inode_rename(EF_FILE, self->key, dfk);
}

/* Moves every key under sdp (and the directory's own value self, if any)
 * to ddp in one Txn; EXDEV when that is more than one Txn can carry, so
 * mv(1) falls back to copying. */
static int rename_dir(struct ef_fs *fs, GBytes *sdp, struct ef_kv *self, GBytes *dfk,
		      GBytes *ddp, GBytes *sdir, bool *src_left)
{
	gsize slen, dlen;
	const char *s = g_bytes_get_data(sdp, &slen);
	const char *d = g_bytes_get_data(ddp, &dlen);
	g_autoptr(GBytes) send = keymap_prefix_end(s, slen), dend = keymap_prefix_end(d, dlen);
	g_autoptr(GPtrArray) kvs = NULL, dsts = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
	g_autofree struct ef_move *moves = NULL;
	struct ef_rename r = { 0 };
	bool more = false, any[2] = { false, false };
	void *local;
	int64_t rev = 0;
	size_t n;
	int rc;

	/* A target with local directories below it is not empty either. */
	if (localdir_has_below(ddp))
		return -ENOTEMPTY;
	rc = etcd_range(fs->etcd, s, slen, g_bytes_get_data(send, NULL), g_bytes_get_size(send),
			RENAME_MAX_KEYS + 1, false, &kvs, &more, &rev);
	if (rc < 0)
		return rc;
	n = kvs->len + (self ? 1 : 0);
	if (more || n > RENAME_MAX_KEYS)
		return -EXDEV;
	if (n == 0) {
		/* Nothing in etcd moves: only the target needs checking, for
		 * keys under it (not empty) and a file by its name. */
		rc = etcd_any(fs->etcd, (GBytes *[]){ ddp, dfk }, 2, any);
		if (rc == 0 && any[0])
			rc = -ENOTEMPTY;
		else if (rc == 0 && any[1])
			rc = -ENOTDIR;
		if (rc < 0)
			return rc;
		*src_left = true;
		goto moved;
	}
	moves = g_new0(struct ef_move, n + 1);
	for (guint i = 0; i < kvs->len; i++) {
		struct ef_kv *kv = kvs->pdata[i];
		gsize klen;
		const char *k = g_bytes_get_data(kv->key, &klen);
		GByteArray *nk = g_byte_array_sized_new(dlen + klen - slen);

		g_byte_array_append(nk, (const guint8 *)d, dlen);
		g_byte_array_append(nk, (const guint8 *)k + slen, klen - slen);
		g_ptr_array_add(dsts, g_byte_array_free_to_bytes(nk));
		moves[i] = (struct ef_move){ .src = kv, .dst = dsts->pdata[i] };
	}
	if (self)
		moves[kvs->len] = (struct ef_move){ .src = self, .dst = dfk };
	r = (struct ef_rename){
		.moves = moves, .n_moves = n,
		.del_key = kvs->len ? sdp : NULL, .del_end = send,
		.guard_key = sdp, .guard_end = send, .guard_rev = rev,
		.empty_key = ddp, .empty_end = dend,
		.probe = sdir, .probe_any = src_left,
	};
	/* As for a file: the events of the keys moving in (and of the
	 * directory's own value, dfk) must not make the kernel drop the
	 * entries being moved. */
	local = watch_local_begin(dfk, true);
	rc = etcd_rename(fs->etcd, &r);
	if (rc == 0)
		rename_dir_follow(sdp, self, dfk, ddp);
	watch_local_end(local);
	return rc == -EFBIG ? -EXDEV : rc;
moved:
	rename_dir_follow(sdp, self, dfk, ddp);
	return 0;
}

int rename_move(struct ef_fs *fs, GBytes *sfk, GBytes *sdp, GBytes *dfk, GBytes *ddp,
		unsigned int flags, GBytes *probe, bool *src_left, bool *is_dir)
{
	struct ef_inode *pend;
	struct ef_kv *kv = NULL;
	bool children = false;
	int rc = 0;

	/* A file still being written here has to reach etcd before it can
	 * move there. */
	if ((pend = inode_find(EF_FILE, sfk))) {
		rc = writeback_publish(fs, pend, EF_PUBLISH_ALWAYS);
		inode_unref(pend);
	}
	if (rc == 0)
		rc = sdp ? etcd_lookup(fs->etcd, sfk, sdp, &kv, &children)
			 : etcd_get(fs->etcd, sfk, &kv);
	if (rc == 0) {
		*is_dir = children || (sdp && localdir_holds(sdp));
		if (*is_dir)
			rc = ddp ? rename_dir(fs, sdp, kv, dfk, ddp, probe, src_left) : -ENOTDIR;
		else if (kv)
			rc = rename_file(fs, sfk, kv, dfk, flags, probe, src_left);
		else
			rc = -ENOENT;
	}
	if (rc == 0 && (*is_dir ? ddp : dfk))
		fs_note_created(fs, *is_dir ? ddp : dfk, *is_dir);
	ef_kv_free(kv);
	return rc;
}
