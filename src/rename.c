/*
 * rename — renames as key moves (see rename.h).
 */
#include "rename.h"

#include <errno.h>
#include <string.h>
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

/* ---- RENAME_EXCHANGE ---- */

/* One side of an exchange: a name's file key, its directory prefix, and
 * what etcd holds under them. */
struct side {
	GBytes *fk, *dp;             /* borrowed */
	GBytes *dend;
	struct ef_kv *file;          /* the file key's kv, or NULL */
	GPtrArray *kvs;              /* the keys under dp */
	int64_t rev;                 /* the revision they were read at */
	bool is_dir;
};

static void side_clear(struct side *s)
{
	g_clear_pointer(&s->dend, g_bytes_unref);
	g_clear_pointer(&s->file, ef_kv_free);
	g_clear_pointer(&s->kvs, g_ptr_array_unref);
}

/* Both sides together must fit in one Txn: a Put for each key and a
 * Delete for each that is not overwritten. */
#define EXCHANGE_MAX_KEYS (RENAME_MAX_KEYS / 2)

static int side_read(struct ef_fs *fs, struct side *s)
{
	gsize len;
	const char *d = g_bytes_get_data(s->dp, &len);
	struct ef_inode *pend;
	bool more = false;
	int rc = 0;

	/* A file still being written here has to reach etcd to move. */
	if ((pend = inode_find(EF_FILE, s->fk))) {
		rc = writeback_publish(fs, pend, EF_PUBLISH_ALWAYS);
		inode_unref(pend);
	}
	s->dend = keymap_prefix_end(d, len);
	if (rc == 0)
		rc = etcd_range(fs->etcd, d, len, g_bytes_get_data(s->dend, NULL),
				g_bytes_get_size(s->dend), EXCHANGE_MAX_KEYS + 1, false, &s->kvs,
				&more, &s->rev);
	if (rc == 0 && (more || s->kvs->len > EXCHANGE_MAX_KEYS))
		rc = -EXDEV;
	if (rc == 0)
		rc = etcd_get(fs->etcd, s->fk, &s->file);
	if (rc < 0)
		return rc;
	s->is_dir = s->kvs->len > 0 || localdir_holds(s->dp);
	return s->is_dir || s->file ? 0 : -ENOENT;
}

/* The key k of side `from` under the other side's names. */
static GBytes *key_swapped(const struct side *from, const struct side *to, GBytes *k)
{
	gsize klen, flen, tlen;
	const char *kd = g_bytes_get_data(k, &klen);
	const char *t = g_bytes_get_data(to->dp, &tlen);
	GByteArray *nk;

	if (g_bytes_equal(k, from->fk))
		return g_bytes_ref(to->fk);
	g_bytes_get_data(from->dp, &flen);
	nk = g_byte_array_sized_new((guint)(tlen + klen - flen));
	g_byte_array_append(nk, (const guint8 *)t, (guint)tlen);
	g_byte_array_append(nk, (const guint8 *)kd + flen, (guint)(klen - flen));
	return g_byte_array_free_to_bytes(nk);
}

static void moves_add(GArray *moves, GPtrArray *dsts, const struct side *from,
		      const struct side *to)
{
	for (guint i = 0; i < from->kvs->len; i++) {
		struct ef_kv *kv = from->kvs->pdata[i];

		g_ptr_array_add(dsts, key_swapped(from, to, kv->key));
		g_array_append_val(moves, ((struct ef_move){ kv, dsts->pdata[dsts->len - 1] }));
	}
	if (from->file) {
		g_ptr_array_add(dsts, g_bytes_ref(to->fk));
		g_array_append_val(moves, ((struct ef_move){ from->file, to->fk }));
	}
}

static bool has_prefix(struct ef_inode *in, GBytes *p)
{
	g_autoptr(GBytes) key = inode_key(in);
	gsize plen, klen;
	const char *pd = g_bytes_get_data(p, &plen);
	const char *kd = g_bytes_get_data(key, &klen);

	return klen >= plen && memcmp(kd, pd, plen) == 0;
}

/* The Txn's events may have reached the directories before they traded
 * places, and changed the names each knows as the other's: what they
 * know is read again. */
static void names_forget_under(GBytes *a, GBytes *b)
{
	g_autoptr(GPtrArray) all = inode_all();

	for (guint i = 0; i < all->len; i++) {
		struct ef_inode *in = all->pdata[i];

		if (in->kind == EF_DIR && (has_prefix(in, a) || has_prefix(in, b)))
			inode_names_forget(in);
	}
}

/* The inodes, cached values and local directories of the two sides trade
 * places, through names no key can have ("\xff\xff" starts no key that
 * keymap makes from a path). */
static void exchange_follow(const struct side *a, const struct side *b, GArray *moves,
			    int64_t rev, uint64_t seq)
{
	g_autoptr(GBytes) tfk = g_bytes_new_static("\xff\xff" "etcdfs-exchange", 17);
	g_autoptr(GBytes) tdp = g_bytes_new_static("\xff\xff" "etcdfs-exchange/", 18);
	const struct { GBytes *fk_from, *dp_from, *fk_to, *dp_to; } steps[] = {
		{ a->fk, a->dp, tfk, tdp }, { b->fk, b->dp, a->fk, a->dp },
		{ tfk, tdp, b->fk, b->dp },
	};

	for (size_t i = 0; i < G_N_ELEMENTS(steps); i++) {
		inode_rename(EF_FILE, steps[i].fk_from, steps[i].fk_to);
		inode_rename(EF_DIR, steps[i].dp_from, steps[i].dp_to);
		localdir_rename(steps[i].dp_from, steps[i].dp_to);
	}
	names_forget_under(a->dp, b->dp);
	for (guint i = 0; i < moves->len; i++) {
		const struct ef_move *m = &g_array_index(moves, struct ef_move, i);
		struct ef_inode *in = inode_find(EF_FILE, m->dst);

		if (in) {
			cache_replace(in, kv_moved(m->src, rev), !watch_changed_since(seq, m->dst, false));
			inode_unref(in);
		}
	}
}

int rename_exchange(struct ef_fs *fs, GBytes *afk, GBytes *adp, GBytes *bfk, GBytes *bdp,
		    bool *a_is_dir, bool *b_is_dir)
{
	struct side a = { .fk = afk, .dp = adp }, b = { .fk = bfk, .dp = bdp };
	g_autoptr(GArray) moves = g_array_new(FALSE, FALSE, sizeof(struct ef_move));
	g_autoptr(GPtrArray) dsts = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
	GBytes *gone[2];
	int64_t rev = 0;
	uint64_t seq = watch_seq();
	void *la = NULL, *lb = NULL;
	int rc;

	rc = side_read(fs, &a);
	if (rc == 0)
		rc = side_read(fs, &b);
	if (rc == 0 && a.kvs->len + b.kvs->len + 2 > EXCHANGE_MAX_KEYS)
		rc = -EXDEV;
	if (rc == 0) {
		struct ef_rename r = {
			.guard_key = a.dp, .guard_end = a.dend, .guard_rev = a.rev,
			.guard2_key = b.dp, .guard2_end = b.dend, .guard2_rev = b.rev,
			.gone = gone, .rev = &rev,
		};

		moves_add(moves, dsts, &a, &b);
		moves_add(moves, dsts, &b, &a);
		/* A file key that was absent must still be: its side's value
		 * would be lost under the other's. */
		if (!a.file)
			gone[r.n_gone++] = a.fk;
		if (!b.file)
			gone[r.n_gone++] = b.fk;
		r.moves = (struct ef_move *)(void *)moves->data;
		r.n_moves = moves->len;
		/* The Txn's own events must not make the kernel drop the
		 * entries being swapped. */
		la = watch_local_begin(afk, true);
		lb = watch_local_begin(bfk, true);
		rc = r.n_moves ? etcd_rename(fs->etcd, &r) : 0;
		if (rc == 0)
			exchange_follow(&a, &b, moves, rev, seq);
		watch_local_end(lb);
		watch_local_end(la);
	}
	*a_is_dir = a.is_dir;
	*b_is_dir = b.is_dir;
	side_clear(&a);
	side_clear(&b);
	return rc == -EFBIG ? -EXDEV : rc;
}
