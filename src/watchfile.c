/*
 * watchfile — the %watch and %watch@REV names in every directory (see
 * watchfile.h); the streams behind them are watchstream's.
 *
 * Each lookup of a name makes a node (an inode of ours, numbered from
 * INO_FIRST up, never reused) that the kernel may not cache: every path
 * walk gets a fresh one, so fstat shows its own stream's size. A node
 * lives until the kernel forgets it.
 */
#include "watchfile.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "fs.h"
#include "fsops.h"
#include "inode.h"
#include "watchstream.h"

#define NAME "%watch"
#define NAME_AT "%watch@"
/* Inode numbers of the %watch files: below clusterfs's, above any the
 * inode table gives out. */
#define INO_FIRST ((fuse_ino_t)(UINT64_MAX - 64 - (UINT64_C(1) << 40)))
#define INO_LAST ((fuse_ino_t)(UINT64_MAX - 64))

/* A %watch inode: one per lookup. */
struct node {
	fuse_ino_t ino;
	uint64_t nlookup;          /* protected by wf.lock */
	GBytes *dir;               /* immutable: the directory's key prefix */
	int64_t from;              /* immutable: REV of %watch@REV, or 0 */
	struct ef_wstream *s;      /* protected by wf.lock: its last open's, for stat */
};

static struct {
	const struct fuse_lowlevel_ops *inner;
	struct fuse_lowlevel_ops ops;

	GMutex lock;
	bool running;              /* protected by lock */
	GHashTable *nodes;         /* protected by lock: ino -> struct node */
	fuse_ino_t next_ino;       /* protected by lock */
} wf;

/* ---- the names ---- */

/* Whether name is one of ours; *from is REV of %watch@REV, else 0. */
static bool parse_name(const char *name, int64_t *from)
{
	guint64 rev;

	*from = 0;
	if (strcmp(name, NAME) == 0)
		return true;
	if (strncmp(name, NAME_AT, strlen(NAME_AT)) != 0)
		return false;
	name += strlen(NAME_AT);
	/* Digits only, no sign, no leading zero: one name per revision. */
	if (!g_ascii_isdigit(name[0]) || name[0] == '0' ||
	    !g_ascii_string_to_unsigned(name, 10, 1, INT64_MAX, &rev, NULL))
		return false;
	*from = (int64_t)rev;
	return true;
}

static bool ours(fuse_ino_t ino)
{
	return ino >= INO_FIRST && ino <= INO_LAST;
}

/* s: the stream whose size and time it shows, or NULL. */
static void fill_attr(struct ef_fs *fs, struct node *nd, struct ef_wstream *s, struct stat *st)
{
	*st = (struct stat){ 0 };
	st->st_ino = nd->ino;
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_blksize = 4096;
	st->st_atim = st->st_mtim = st->st_ctim = fs->mount_time;
	if (s) {
		wstream_stat(s, &st->st_size, &st->st_mtim);
		st->st_ctim = st->st_mtim;
	}
}

static void node_free(gpointer p)
{
	struct node *nd = p;

	g_bytes_unref(nd->dir);
	wstream_unref(nd->s);
	g_free(nd);
}

static void wf_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e = { 0 };
	struct ef_inode *in;
	struct node *nd;
	int64_t from;

	if (!parse_name(name, &from) || !(in = inode_get(parent))) {
		wf.inner->lookup(req, parent, name);
		return;
	}
	if (in->kind != EF_DIR) {
		inode_unref(in);
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	nd = g_new0(struct node, 1);
	nd->dir = inode_key(in);
	nd->from = from;
	nd->nlookup = 1;
	inode_unref(in);
	g_mutex_lock(&wf.lock);
	if (!wf.running || wf.next_ino > INO_LAST) {
		g_mutex_unlock(&wf.lock);
		node_free(nd);
		/* A mount of the past has no stream to show. */
		fuse_reply_err(req, wf.running ? ENFILE : ENOENT);
		return;
	}
	nd->ino = wf.next_ino++;
	g_hash_table_insert(wf.nodes, &nd->ino, nd);
	e.ino = nd->ino;
	fill_attr(fuse_req_userdata(req), nd, NULL, &e.attr);
	g_mutex_unlock(&wf.lock);
	/* No timeouts: every path walk looks the name up again and gets an
	 * inode (and a size in stat) of its own. */
	if (fuse_reply_entry(req, &e) != 0) {
		g_mutex_lock(&wf.lock);
		g_hash_table_remove(wf.nodes, &e.ino);
		g_mutex_unlock(&wf.lock);
	}
}

static void forget_one(fuse_ino_t ino, uint64_t nlookup)
{
	struct node *nd;

	g_mutex_lock(&wf.lock);
	nd = g_hash_table_lookup(wf.nodes, &ino);
	if (nd && (nd->nlookup -= MIN(nlookup, nd->nlookup)) == 0)
		g_hash_table_remove(wf.nodes, &ino);
	g_mutex_unlock(&wf.lock);
}

static void wf_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	if (!ours(ino)) {
		wf.inner->forget(req, ino, nlookup);
		return;
	}
	forget_one(ino, nlookup);
	fuse_reply_none(req);
}

static void wf_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	size_t k = 0;

	for (size_t i = 0; i < count; i++) {
		if (ours(forgets[i].ino))
			forget_one(forgets[i].ino, forgets[i].nlookup);
		else
			forgets[k++] = forgets[i];
	}
	wf.inner->forget_multi(req, k, forgets);
}

static void wf_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *nd;
	struct stat st;

	if (!ours(ino)) {
		wf.inner->getattr(req, ino, fi);
		return;
	}
	g_mutex_lock(&wf.lock);
	nd = g_hash_table_lookup(wf.nodes, &ino);
	if (nd)
		fill_attr(fuse_req_userdata(req), nd,
			  fi ? (struct ef_wstream *)(uintptr_t)fi->fh : nd->s, &st);
	g_mutex_unlock(&wf.lock);
	if (nd)
		fuse_reply_attr(req, &st, 0);
	else
		fuse_reply_err(req, ESTALE);
}

/* ---- open, read, release ---- */

static void wf_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ef_wstream *s = NULL;
	g_autoptr(GBytes) dir = NULL;
	struct node *nd;
	int64_t from = 0;
	int rc;

	if (!ours(ino)) {
		wf.inner->open(req, ino, fi);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	g_mutex_lock(&wf.lock);
	nd = g_hash_table_lookup(wf.nodes, &ino);
	if (nd) {
		dir = g_bytes_ref(nd->dir);
		from = nd->from;
	}
	g_mutex_unlock(&wf.lock);
	if (!dir) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	rc = wstream_open(dir, from, &s);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	g_mutex_lock(&wf.lock);
	nd = g_hash_table_lookup(wf.nodes, &ino);
	if (nd) {
		wstream_unref(nd->s);
		nd->s = wstream_ref(s);
	}
	g_mutex_unlock(&wf.lock);
	fi->fh = (uint64_t)(uintptr_t)s;
	/* Reads reach the stream at their offsets, never a page cache; a
	 * close has nothing to flush (and must not fail once unmounted). */
	fi->direct_io = 1;
	fi->noflush = 1;
	if (fuse_reply_open(req, fi) != 0)
		wstream_close(s);
}

static void wf_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	if (ours(ino))
		wstream_read((struct ef_wstream *)(uintptr_t)fi->fh, req, size, off,
			     fi->flags & O_NONBLOCK);
	else
		wf.inner->read(req, ino, size, off, fi);
}

static void wf_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (!ours(ino)) {
		wf.inner->release(req, ino, fi);
		return;
	}
	wstream_close((struct ef_wstream *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* ---- everything else: read-only, no locks, no attributes ---- */

static void wf_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	if (ours(ino))
		fuse_reply_err(req, EROFS);
	else
		wf.inner->setattr(req, ino, attr, to_set, fi);
}

static void wf_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ours(ino))
		fuse_reply_err(req, 0);
	else
		wf.inner->flush(req, ino, fi);
}

static void wf_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	if (ours(ino))
		fuse_reply_err(req, 0);
	else
		wf.inner->fsync(req, ino, datasync, fi);
}

static void wf_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ours(ino))
		fuse_reply_err(req, ENOTDIR);
	else
		wf.inner->opendir(req, ino, fi);
}

static bool our_name(const char *name)
{
	int64_t from;

	return parse_name(name, &from);
}

static void wf_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (our_name(name))
		fuse_reply_err(req, EROFS);
	else
		wf.inner->unlink(req, parent, name);
}

static void wf_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (our_name(name))
		fuse_reply_err(req, ENOTDIR);
	else
		wf.inner->rmdir(req, parent, name);
}

static void wf_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	if (our_name(name))
		fuse_reply_err(req, EEXIST);
	else
		wf.inner->mkdir(req, parent, name, mode);
}

static void wf_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	if (our_name(name))
		fuse_reply_err(req, EROFS);
	else
		wf.inner->create(req, parent, name, mode, fi);
}

static void wf_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	if (our_name(name) || our_name(newname))
		fuse_reply_err(req, EROFS);
	else
		wf.inner->rename(req, parent, name, newparent, newname, flags);
}

static void wf_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
	if (ours(ino))
		fuse_reply_err(req, ENOLCK);
	else
		wf.inner->flock(req, ino, fi, op);
}

static void wf_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock)
{
	if (ours(ino))
		fuse_reply_err(req, ENOLCK);
	else
		wf.inner->getlk(req, ino, fi, lock);
}

static void wf_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock, int sleep)
{
	if (ours(ino))
		fuse_reply_err(req, ENOLCK);
	else
		wf.inner->setlk(req, ino, fi, lock, sleep);
}

static void wf_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	if (ours(ino))
		fuse_reply_err(req, ENODATA);
	else
		wf.inner->getxattr(req, ino, name, size);
}

static void wf_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	if (ours(ino))
		fsops_reply_xattr(req, "", 0, size);
	else
		wf.inner->listxattr(req, ino, size);
}

static void wf_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	if (ours(ino))
		fuse_reply_err(req, EROFS);
	else
		wf.inner->setxattr(req, ino, name, value, size, flags);
}

static void wf_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	if (ours(ino))
		fuse_reply_err(req, EROFS);
	else
		wf.inner->removexattr(req, ino, name);
}

/* ---- start and stop ---- */

void watchfile_start(struct ef_etcd *etcd)
{
	wf.nodes = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, node_free);
	wf.next_ino = INO_FIRST;
	wf.running = true;
	wstreams_start(etcd);
}

void watchfile_stop(void)
{
	if (!wf.nodes)
		return;
	wstreams_stop();
	g_mutex_lock(&wf.lock);
	wf.running = false;
	g_hash_table_destroy(wf.nodes);
	wf.nodes = NULL;
	g_mutex_unlock(&wf.lock);
}

const struct fuse_lowlevel_ops *watchfile_ops(const struct fuse_lowlevel_ops *inner)
{
	wf.inner = inner;
	wf.ops = *inner;
	wf.ops.lookup = wf_lookup;
	wf.ops.forget = wf_forget;
	wf.ops.forget_multi = wf_forget_multi;
	wf.ops.getattr = wf_getattr;
	wf.ops.setattr = wf_setattr;
	wf.ops.open = wf_open;
	wf.ops.read = wf_read;
	wf.ops.flush = wf_flush;
	wf.ops.fsync = wf_fsync;
	wf.ops.release = wf_release;
	wf.ops.opendir = wf_opendir;
	wf.ops.unlink = wf_unlink;
	wf.ops.rmdir = wf_rmdir;
	wf.ops.mkdir = wf_mkdir;
	wf.ops.create = wf_create;
	wf.ops.rename = wf_rename;
	wf.ops.flock = wf_flock;
	wf.ops.getlk = wf_getlk;
	wf.ops.setlk = wf_setlk;
	wf.ops.getxattr = wf_getxattr;
	wf.ops.listxattr = wf_listxattr;
	wf.ops.setxattr = wf_setxattr;
	wf.ops.removexattr = wf_removexattr;
	return &wf.ops;
}
