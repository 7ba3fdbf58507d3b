/*
 * fsops — the fuse_lowlevel_ops handlers (see fsops.h).
 *
 * Each handler finds the filesystem context in its request's userdata,
 * resolves names to keys, calls the modules below (writeback, handle,
 * dirhandle, rename, fs) and replies exactly once.
 *
 * Attributes and entries carry long kernel timeouts while the watch vouches
 * for them (fs_attr_ttl) and none while it does not; reads are served from
 * a value the handle holds (direct I/O), so the size and content of one read
 * always belong to one value.
 */
#include "fsops.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>

#include "cache.h"
#include "dirhandle.h"
#include "etcd.h"
#include "fs.h"
#include "handle.h"
#include "inode.h"
#include "keymap.h"
#include "localdir.h"
#include "lock.h"
#include "rename.h"
#include "session.h"
#include "ttl.h"
#include "watch.h"
#include "writeback.h"

/* ---- names ---- */

/*
 * The keys behind entry `name` of directory prefix dir: *file_key always,
 * *dir_prefix unless the name is the directory's own value (KEYMAP_SELF_NAME),
 * which cannot be a directory. Returns 0 or -errno (-ENOENT for a name that
 * is not a canonical encoding; creating one maps that to -EINVAL).
 */
static int entry_keys(GBytes *dir, const char *name, GBytes **file_key, GBytes **dir_prefix)
{
	gsize dlen;
	const char *d = g_bytes_get_data(dir, &dlen);
	g_autofree char *comp = NULL;
	size_t clen, self;
	int rc;

	*dir_prefix = NULL;
	if (strcmp(name, KEYMAP_SELF_NAME) == 0) {
		self = keymap_self_len(d, dlen);
		if (!self)
			return -ENOENT;
		*file_key = g_bytes_new(d, self);
		return 0;
	}
	rc = keymap_component_from_name(name, &comp, &clen);
	if (rc < 0)
		return rc == -EINVAL ? -ENOENT : rc;
	*file_key = keymap_child_key(dir, comp, clen, false);
	*dir_prefix = keymap_child_key(dir, comp, clen, true);
	return 0;
}

/* Looks up parent's directory key; -ENOTDIR if parent is a file. */
static int parent_dir(fuse_ino_t parent, struct ef_inode **out, GBytes **dir)
{
	struct ef_inode *p = inode_get(parent);

	if (!p)
		return -ESTALE;
	if (p->kind != EF_DIR) {
		inode_unref(p);
		return -ENOTDIR;
	}
	*out = p;
	*dir = inode_key(p);
	return 0;
}

static void reply_entry(struct ef_fs *fs, fuse_req_t req, struct ef_inode *in, bool cacheable)
{
	struct fuse_entry_param e = { .ino = in->ino };

	if (cacheable)
		e.attr_timeout = e.entry_timeout = CACHE_TTL;
	fs_fill_attr(fs, &e.attr, in);
	if (fuse_reply_entry(req, &e) != 0)
		inode_unlookup(in);
	inode_unref(in);
}

/* True if any key lies under prefix. */
static int prefix_has_keys(struct ef_fs *fs, GBytes *prefix, bool *any)
{
	gsize len;
	const char *p = g_bytes_get_data(prefix, &len);
	g_autoptr(GBytes) end = keymap_prefix_end(p, len);
	g_autoptr(GPtrArray) kvs = NULL;
	int rc = etcd_range(fs->etcd, p, len, g_bytes_get_data(end, NULL), g_bytes_get_size(end),
			    1, true, &kvs, NULL, NULL);

	if (rc == 0)
		*any = kvs->len > 0;
	return rc;
}

/* True if a file with key fk is being created here. */
static bool inode_pending_key(GBytes *fk)
{
	struct ef_inode *in = inode_find(EF_FILE, fk);
	bool pending = in && fs_inode_pending(in);

	inode_unref(in);
	return pending;
}

/* What an entry currently is: on success *out is a new reference with one
 * kernel lookup counted (a pending local file, a directory or a file). */
static int resolve_entry(struct ef_fs *fs, struct ef_inode *p, GBytes *dir, GBytes *fk, GBytes *dp,
			 struct ef_inode **out, bool *cacheable)
{
	struct ef_inode *pending = inode_find(EF_FILE, fk);
	struct ef_dirpage *page = NULL;
	struct ef_kv *kv = NULL;
	bool children = false;
	uint64_t seq = watch_seq();
	int rc;

	*cacheable = false;
	if (pending && fs_inode_pending(pending)) {
		inode_unref(pending);
		*out = inode_lookup(EF_FILE, fk);
		return 0;
	}
	inode_unref(pending);
	/* With an empty prefix, "%" names the directory of keys that start
	 * with '/'; the empty key itself cannot exist in etcd. */
	if (g_bytes_get_size(fk) == 0)
		rc = dp ? prefix_has_keys(fs, dp, &children) : -ENOENT;
	else if (dp)
		rc = dirh_lookup(fs, p, dir, fk, dp, &kv, &children, &page);
	else
		rc = etcd_get(fs->etcd, fk, &kv);
	if (rc < 0)
		return rc;
	/* fk as a prefix covers both the key and its children. */
	*cacheable = !watch_changed_since(seq, fk, true);
	if (children || (!kv && dp && localdir_holds(dp))) {
		ef_kv_free(kv);
		*out = inode_lookup(EF_DIR, dp);
		dirh_page_learn(page, *out);
		return 0;
	}
	dirh_page_learn(page, NULL);
	if (!kv)
		return -ENOENT;
	*out = inode_lookup(EF_FILE, fk);
	cache_store(*out, kv, *cacheable);
	return 0;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_inode *p = NULL, *in = NULL;
	g_autoptr(GBytes) dir = NULL, fk = NULL, dp = NULL;
	bool cacheable = false;
	int rc = parent_dir(parent, &p, &dir);

	if (rc == 0)
		rc = entry_keys(dir, name, &fk, &dp);
	/* A directory whose entries are all known (made or listed here)
	 * answers "no such name" itself: creating a file asks this first,
	 * while the kernel holds the directory's lock. Its own value
	 * (%self) lies outside its range, so that name always asks. */
	if (rc == 0 && strcmp(name, KEYMAP_SELF_NAME) != 0 && inode_names_lack(p, name) &&
	    watch_trusted() && !inode_pending_key(fk))
		rc = -ENOENT;
	else if (rc == 0)
		rc = resolve_entry(fs, p, dir, fk, dp, &in, &cacheable);
	inode_unref(p);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		reply_entry(fs, req, in, cacheable);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	inode_forget(ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		inode_forget(forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

/* Replies to getattr/setattr with in's attributes, or the error rc; drops
 * the caller's reference to in. */
static void reply_attr(struct ef_fs *fs, fuse_req_t req, struct ef_inode *in, int rc)
{
	struct stat st;

	if (rc < 0) {
		fuse_reply_err(req, -rc);
	} else {
		fs_fill_attr(fs, &st, in);
		fuse_reply_attr(req, &st, fs_attr_ttl(in));
	}
	inode_unref(in);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_inode *in = inode_get(ino);
	int rc = in ? 0 : -ESTALE;

	/* Open writers' buffer is the size to show: no need to ask etcd. */
	if (rc == 0 && in->kind == EF_FILE && !fs_inode_pending(in) && !fs_file_cached(in, false))
		rc = fs_file_refresh(fs, in);
	/* The key went away (another client) while the kernel still holds
	 * the inode: it answers as an unlinked one (link count 0, its last
	 * attributes), and an open of it decides: a reader gets ENOENT, an
	 * open(O_CREAT) racing with the delete creates the key again, as it
	 * would have after a fresh lookup. An error here would fail that
	 * open with ENOENT. */
	if (rc == -ENOENT && in->kind == EF_FILE) {
		g_mutex_lock(&in->lock);
		in->gone = true;
		g_mutex_unlock(&in->lock);
		rc = 0;
	}
	reply_attr(fs, req, in, rc);
}

/* ---- files ---- */

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_inode *in = inode_get(ino);
	bool writer = (fi->flags & O_ACCMODE) != O_RDONLY;
	struct ef_handle *h = NULL;
	int rc = in ? 0 : -ESTALE;

	if (rc == 0 && in->kind == EF_DIR)
		rc = -EISDIR;
	if (rc == 0) {
		h = handle_new(in, writer);
		h->append = fi->flags & O_APPEND;
		h->opener = fuse_req_ctx(req)->pid;
		rc = writer ? writeback_writer_open(fs, in, fi->flags & O_TRUNC, -1)
			    : handle_take_value(fs, h);
	}
	if (rc < 0) {
		if (h)
			handle_free(h);
		inode_unref(in);
		fuse_reply_err(req, -rc);
		return;
	}
	/* Reads are served from the handle's own value, never from pages
	 * another handle (or an older value) left in the kernel's cache:
	 * size and data of one read always belong to one value. */
	fi->direct_io = 1;
	fi->fh = (uintptr_t)h;
	if (fuse_reply_open(req, fi) != 0) {
		if (writer)
			writeback_writer_close(in);
		handle_free(h);
		inode_unref(in);
	}
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_inode *p = NULL, *in;
	g_autoptr(GBytes) dir = NULL, fk = NULL, dp = NULL;
	struct fuse_entry_param e = { 0 };
	struct ef_handle *h;
	int rc = parent_dir(parent, &p, &dir);

	if (rc == 0)
		rc = entry_keys(dir, name, &fk, &dp);
	if (rc == 0 && g_bytes_get_size(fk) == 0)
		rc = -EINVAL;
	if (rc == 0) {
		inode_names_add(p, name, false);
		fs_dir_touch(p);
	}
	inode_unref(p);
	if (rc < 0) {
		fuse_reply_err(req, rc == -ENOENT ? EINVAL : -rc);
		return;
	}
	in = inode_lookup(EF_FILE, fk);
	/* O_EXCL: the Put must still find no key, else another client won. */
	writeback_writer_open(fs, in, true, (fi->flags & O_EXCL) ? 0 : -1);
	h = handle_new(in, true);
	h->append = fi->flags & O_APPEND;
	h->opener = fuse_req_ctx(req)->pid;
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;
	e.ino = in->ino;
	e.entry_timeout = watch_trusted() ? CACHE_TTL : 0;
	fs_fill_attr(fs, &e.attr, in);
	/* The handle keeps the reference inode_lookup returned. */
	if (fuse_reply_create(req, &e, fi) != 0) {
		writeback_writer_close(in);
		handle_free(h);
		inode_unlookup(in);
		inode_unref(in);
	}
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_handle *h = (struct ef_handle *)(uintptr_t)fi->fh;
	g_autoptr(GBytes) val = NULL;
	gsize len;
	const char *p;
	int rc = handle_read_value(fs, h, off, &val);

	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	p = g_bytes_get_data(val, &len);
	if ((size_t)off >= len)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_buf(req, p + off, MIN(size, len - (size_t)off));
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_handle *h = (struct ef_handle *)(uintptr_t)fi->fh;
	g_autoptr(GBytes) key = NULL;
	struct ef_fence fence;
	int rc;

	/* A holder that lost the file's lock hears it at once, not at close
	 * (which refuses the Put as well). */
	if (locks_holding(fs->locks)) {
		key = inode_key(h->in);
		rc = locks_fence(fs->locks, key, &fence);
		g_clear_pointer(&fence.key, g_bytes_unref);
		if (rc < 0) {
			fuse_reply_err(req, -rc);
			return;
		}
	}
	handle_note_writer(h, fuse_req_ctx(req)->pid);
	rc = writeback_write(h->in, buf, size, off, h->append);

	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_write(req, size);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_handle *h = (struct ef_handle *)(uintptr_t)fi->fh;
	int rc = 0;

	if (h->writer && handle_closer_wrote(h, fuse_req_ctx(req)->pid))
		rc = writeback_flush(fs, h->in, fuse_req_ctx(req)->pid, h->opener);
	/* After the Put, as close(2) lets go of the closer's fcntl locks:
	 * the next holder must read what this one wrote. */
	locks_flush(fs->locks, ino, fi->lock_owner);
	fuse_reply_err(req, -rc);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_handle *h = (struct ef_handle *)(uintptr_t)fi->fh;

	fuse_reply_err(req, h->writer ? -writeback_publish(fs, h->in, EF_PUBLISH_ALWAYS) : 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_handle *h = (struct ef_handle *)(uintptr_t)fi->fh;
	struct ef_inode *in = h->in;

	int64_t session = 0;

	if (h->writer)
		writeback_writer_release(fs, in);
	/* After the last Put: the next holder must read what this one
	 * wrote. */
	locks_release(fs->locks, fi->fh, fi->lock_owner, fi->flock_release);
	if (handle_free(h))
		session = sessions_take(fs->sessions, ino);
	/* The last close of a file bound to a session lease ends its key
	 * (a process killed closes its files too). */
	if (session) {
		g_autoptr(GBytes) key = inode_key(in);

		(void)sessions_unbind(fs->sessions, key, session);
	}
	inode_unref(in);
	fuse_reply_err(req, 0);
}

static struct locks_who lock_who(fuse_req_t req, fuse_ino_t ino, const struct fuse_file_info *fi)
{
	return (struct locks_who){ .owner = fi->lock_owner, .fh = fi->fh, .ino = ino,
				   .pid = fuse_req_ctx(req)->pid };
}

/* Before an unlock: what the holder wrote through this file reaches etcd
 * before the next holder may read it; a failed Put is reported by close. */
static void unlock_publish(struct ef_fs *fs, const struct fuse_file_info *fi)
{
	struct ef_handle *h = (struct ef_handle *)(uintptr_t)fi->fh;

	if (h->writer)
		(void)writeback_publish(fs, h->in, EF_PUBLISH_ALWAYS);
}

/* flock(2): etcd's lock of the file's key (lock.h). */
static void op_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_handle *h = (struct ef_handle *)(uintptr_t)fi->fh;
	g_autoptr(GBytes) key = inode_key(h->in);
	struct locks_who who = lock_who(req, ino, fi);

	/* A view of the past takes no locks: they live in the present. */
	if (fs->revision) {
		fuse_reply_err(req, ENOLCK);
		return;
	}
	if ((op & ~LOCK_NB) == LOCK_UN)
		unlock_publish(fs, fi);
	locks_flock(fs->locks, req, key, &who, op);
}

/* fcntl(2) locks, POSIX and OFD: the same etcd lock as flock's. */
static void op_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock, int sleep)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_handle *h = (struct ef_handle *)(uintptr_t)fi->fh;
	g_autoptr(GBytes) key = inode_key(h->in);
	struct locks_who who = lock_who(req, ino, fi);

	if (fs->revision) {
		fuse_reply_err(req, ENOLCK);
		return;
	}
	if (lock->l_type == F_UNLCK)
		unlock_publish(fs, fi);
	locks_setlk(fs->locks, req, key, &who, lock, sleep);
}

static void op_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_handle *h = (struct ef_handle *)(uintptr_t)fi->fh;
	g_autoptr(GBytes) key = inode_key(h->in);
	struct locks_who who = lock_who(req, ino, fi);

	if (fs->revision) {
		fuse_reply_err(req, ENOLCK);
		return;
	}
	locks_getlk(fs->locks, req, key, &who, lock);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_inode *in = inode_get(ino);
	struct ef_handle *h = fi ? (struct ef_handle *)(uintptr_t)fi->fh : NULL;
	bool via_writer = h && h->writer;
	struct stat st;
	int rc = in ? 0 : -ESTALE;

	if (rc == 0)
		fs_fill_attr(fs, &st, in);
	/* etcd stores no owner or mode: changing them is refused, setting
	 * what is already shown succeeds (cp -p, tar). */
	if (rc == 0 && (to_set & FUSE_SET_ATTR_MODE) &&
	    (attr->st_mode & 07777) != (st.st_mode & 07777))
		rc = -EPERM;
	if (rc == 0 && (to_set & FUSE_SET_ATTR_UID) && attr->st_uid != st.st_uid)
		rc = -EPERM;
	if (rc == 0 && (to_set & FUSE_SET_ATTR_GID) && attr->st_gid != st.st_gid)
		rc = -EPERM;
	/* ftruncate, futimens: a change through the handle, like a write. */
	if (rc == 0 && via_writer && (to_set & (FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MTIME_NOW)))
		handle_note_writer(h, fuse_req_ctx(req)->pid);
	if (rc == 0 && (to_set & FUSE_SET_ATTR_SIZE)) {
		if (in->kind == EF_DIR)
			rc = -EISDIR;
		else if (attr->st_size < 0)
			rc = -EINVAL;
		else
			rc = writeback_rewrite(fs, in, attr->st_size, via_writer);
	} else if (rc == 0 && (to_set & FUSE_SET_ATTR_MTIME_NOW) && in->kind == EF_FILE) {
		/* Times derive from revisions: "now" (touch) is a new
		 * revision of the same value; an explicit time cannot be
		 * stored, so it is accepted and has no effect. */
		rc = writeback_rewrite(fs, in, -1, via_writer);
	} else if (rc == 0 && (to_set & FUSE_SET_ATTR_MTIME_NOW)) {
		fs_dir_touch(in);
	}
	reply_attr(fs, req, in, rc);
}

/* ---- namespace changes ---- */

/*
 * After a change here to directory ino's entries: its mtime moves, and its
 * known name set gets the name added. A name gone through etcd (unlink,
 * rename) leaves the set with the watch event of the delete, in order with
 * every other event: removed here at reply time, it could undo a create
 * another client made in between. gone is for what etcd never saw (a
 * local directory): removed unless an event touched gone_key (its file key,
 * as a prefix) since seq, in which case the set is dropped.
 */
static void names_update(fuse_ino_t ino, const char *gone, GBytes *gone_key, uint64_t seq,
			 const char *added, bool is_dir)
{
	struct ef_inode *d = inode_get(ino);

	if (!d)
		return;
	if (gone && watch_changed_since(seq, gone_key, true))
		inode_names_forget(d);
	else if (gone)
		inode_names_remove(d, gone);
	if (added)
		inode_names_add(d, added, is_dir);
	fs_dir_touch(d);
	inode_unref(d);
}

/* The directory dir (not the root) lost its last key through this mount:
 * it stays until rmdir, as on any file system (rm -r removes the files
 * first). A directory emptied by another client is gone. */
static void dir_emptied_here(fuse_ino_t parent, GBytes *dir, bool any_left)
{
	if (parent != FUSE_ROOT_ID && !any_left)
		localdir_add(dir);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_inode *p = NULL, *in = NULL;
	g_autoptr(GBytes) dir = NULL, fk = NULL, dp = NULL;
	int64_t deleted = 0;
	bool pending = false, left = true;
	int rc = parent_dir(parent, &p, &dir);

	if (rc == 0)
		rc = entry_keys(dir, name, &fk, &dp);
	inode_unref(p);
	if (rc == 0 && (in = inode_find(EF_FILE, fk))) {
		/* Open writers must not revive the key: not on close, and
		 * not with a Put already in flight. */
		writeback_removal_begin(in);
		pending = fs_inode_pending(in);
	}
	if (rc == 0 && parent == FUSE_ROOT_ID)
		rc = etcd_delete(fs->etcd, fk, NULL, &deleted);
	else if (rc == 0)
		rc = etcd_unlink(fs->etcd, fk, dir, &deleted, &left);
	if (rc == 0 && !deleted && !pending)
		rc = -ENOENT;
	if (in) {
		writeback_removal_end(in, rc == 0);
		if (rc == 0)
			inode_detach(in);
		inode_unref(in);
	}
	if (rc == 0) {
		dir_emptied_here(parent, dir, left);
		names_update(parent, NULL, NULL, 0, NULL, false);
	}
	fuse_reply_err(req, -rc);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_inode *p = NULL, *in = NULL;
	g_autoptr(GBytes) dir = NULL, fk = NULL, dp = NULL;
	uint64_t seq;
	int rc = parent_dir(parent, &p, &dir);

	if (rc == 0)
		rc = entry_keys(dir, name, &fk, &dp);
	if (rc == -ENOENT || (rc == 0 && !dp))
		rc = -EINVAL;
	seq = watch_seq();
	if (rc == 0) {
		rc = resolve_entry(fs, p, dir, fk, dp, &in, &(bool){ false });
		if (rc == 0) {
			inode_unlookup(in);
			inode_unref(in);
			rc = -EEXIST;
		} else if (rc == -ENOENT) {
			rc = 0;
		}
	}
	if (rc == 0) {
		inode_names_add(p, name, true);
		fs_dir_touch(p);
	}
	inode_unref(p);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	localdir_add(dp);
	in = inode_lookup(EF_DIR, dp);
	/* Nothing lies under a directory that did not exist: from here on
	 * every entry it gets is known (local ones, and the watch's), unless
	 * a key appeared under it before the set existed. */
	inode_names_start(in);
	fs_dir_touch(in);
	if (watch_changed_since(seq, dp, true))
		inode_names_forget(in);
	fs_note_created(fs, dp, true);
	reply_entry(fs, req, in, watch_trusted());
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_inode *p = NULL;
	g_autoptr(GBytes) dir = NULL, fk = NULL, dp = NULL;
	bool any[2] = { false, true };
	uint64_t seq = watch_seq();
	int rc = parent_dir(parent, &p, &dir);

	if (rc == 0)
		rc = entry_keys(dir, name, &fk, &dp);
	inode_unref(p);
	if (rc == 0 && !dp)
		rc = -ENOTDIR;
	/* Its own keys, and its parent's: that may be left empty. */
	if (rc == 0)
		rc = etcd_any(fs->etcd, (GBytes *[]){ dp, dir }, parent == FUSE_ROOT_ID ? 1 : 2, any);
	if (rc == 0 && (any[0] || localdir_has_below(dp)))
		rc = -ENOTEMPTY;
	if (rc == 0) {
		localdir_remove(dp);
		dir_emptied_here(parent, dir, any[1]);
		names_update(parent, name, fk, seq, NULL, false);
	}
	fuse_reply_err(req, -rc);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_inode *p = NULL, *np = NULL;
	g_autoptr(GBytes) sdir = NULL, ddir = NULL, sfk = NULL, sdp = NULL, dfk = NULL, ddp = NULL;
	bool src_left = true, is_dir = false;
	int rc = 0;
	bool other_dir = false;

	rc = parent_dir(parent, &p, &sdir);
	if (rc == 0)
		rc = parent_dir(newparent, &np, &ddir);
	if (rc == 0)
		rc = entry_keys(sdir, name, &sfk, &sdp);
	if (rc == 0)
		rc = entry_keys(ddir, newname, &dfk, &ddp);
	inode_unref(p);
	inode_unref(np);
	if (rc == -ENOENT)
		rc = -EINVAL;
	if (rc == 0 && (flags & RENAME_EXCHANGE)) {
		rc = sdp && ddp ? rename_exchange(fs, sfk, sdp, dfk, ddp, &is_dir, &other_dir)
				: -EINVAL;
		if (rc == 0) {
			names_update(parent, NULL, NULL, 0, name, other_dir);
			names_update(newparent, NULL, NULL, 0, newname, is_dir);
		}
		fuse_reply_err(req, -rc);
		return;
	}
	if (rc == 0)
		rc = rename_move(fs, sfk, sdp, dfk, ddp, flags,
				 parent == FUSE_ROOT_ID ? NULL : sdir, &src_left, &is_dir);
	if (rc == 0) {
		dir_emptied_here(parent, sdir, src_left);
		names_update(parent, NULL, NULL, 0, NULL, false);
		names_update(newparent, NULL, NULL, 0, newname, is_dir);
	}
	fuse_reply_err(req, -rc);
}

/* ---- directories ---- */

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ef_inode *in = inode_get(ino);
	g_autoptr(GBytes) dir = NULL;
	struct ef_dirh *dh;

	if (!in) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	dir = inode_key(in);
	dh = dirh_new(dir, in->ino == FUSE_ROOT_ID);
	inode_unref(in);
	fi->fh = (uintptr_t)dh;
	/* The watch invalidates a directory whose entries change. */
	fi->cache_readdir = fi->keep_cache = watch_trusted();
	if (fuse_reply_open(req, fi) != 0)
		dirh_free(dh);
}

/* One entry of a readdirplus reply at buf (size bytes left): the whole
 * entry's size, as fuse_add_direntry_plus; a lookup is counted only for
 * an entry that fits. */
static size_t add_entry_plus(struct ef_fs *fs, fuse_req_t req, struct ef_dirh *dh, size_t i,
			     char *buf, size_t size, bool trusted)
{
	struct fuse_entry_param e = { 0 };
	struct ef_inode *in;
	const char *name = dirh_entry(dh, i, &e.attr);
	size_t n = fuse_add_direntry_plus(req, NULL, 0, name, NULL, 0);

	if (n > size)
		return n;
	name = dirh_entry_plus(dh, i, &e.attr, &in);
	if (in && in->kind == EF_FILE && !fs_file_cached(in, false) && !fs_inode_pending(in)) {
		inode_unlookup(in);
		g_clear_pointer(&in, inode_unref);
	}
	if (in) {
		e.ino = in->ino;
		fs_fill_attr(fs, &e.attr, in);
		e.attr_timeout = fs_attr_ttl(in);
		e.entry_timeout = trusted ? CACHE_TTL : 0;
		inode_unref(in);
	}
	return fuse_add_direntry_plus(req, buf, size, name, &e, (off_t)i + 1);
}

/*
 * Every listing is a readdirplus (op_init): each entry comes with its
 * attributes, from the key-value the listing's page read, so the stat,
 * open and read that usually follow (ls -l, grep -r, a config loader) need
 * neither a LOOKUP nor a round trip to etcd. A file whose value the page
 * did not carry (too big) and that nothing here knows goes name only: the
 * kernel looks it up when it needs it. Plain readdir stays for a kernel
 * that asks for it.
 */
static void list_entries(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			 struct fuse_file_info *fi, bool plus)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_dirh *dh = (struct ef_dirh *)(uintptr_t)fi->fh;
	g_autofree char *buf = g_malloc(size);
	bool trusted = watch_trusted();
	size_t pos = 0;
	int rc = dirh_fetch(fs, dh, ino, off);

	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	for (size_t i = off; i < dirh_count(dh); i++) {
		struct stat st = { 0 };
		size_t n = plus ? add_entry_plus(fs, req, dh, i, buf + pos, size - pos, trusted)
				: fuse_add_direntry(req, buf + pos, size - pos,
						    dirh_entry(dh, i, &st), &st, (off_t)i + 1);

		if (n > size - pos)
			break;
		pos += n;
	}
	/* A reply the kernel did not take (the reader was interrupted) leaves
	 * its entries' lookups counted: those inodes stay until unmount. */
	fuse_reply_buf(req, buf, pos);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	list_entries(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	list_entries(req, ino, size, off, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	dirh_free((struct ef_dirh *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* ---- extended attributes ---- */

#define XATTR_PREFIX "user.etcd."
static const char *const xattr_names[] = {
	XATTR_PREFIX "create_revision", XATTR_PREFIX "mod_revision",
	XATTR_PREFIX "version", XATTR_PREFIX "lease",
};
/* The name `etcdctl lock` takes for the file's lock. */
#define XATTR_LOCK_NAME XATTR_PREFIX "lock_name"
/* Who holds it now (not listed: each read asks etcd). */
#define XATTR_LOCK_OWNER XATTR_PREFIX "lock_owner"
/* The seconds left to the key's lease; set, a new lease (ttl.h). */
#define XATTR_TTL XATTR_PREFIX "ttl"
/* Set on an open file: its key lives while the file is open here. */
#define XATTR_SESSION XATTR_PREFIX "session"
/* user.etcd.rev.N: the value at revision N (not listed). */
#define XATTR_REV XATTR_PREFIX "rev."

/* The file's value at revision rev (the digits after user.etcd.rev.):
 * ENODATA when the key did not exist then, EIO once compacted. */
static void reply_value_at(fuse_req_t req, struct ef_fs *fs, struct ef_inode *in,
			   const char *rev, size_t size)
{
	g_autoptr(GBytes) key = inode_key(in);
	struct ef_kv *kv = NULL;
	char *end;
	int64_t r = g_ascii_strtoll(rev, &end, 10);
	int rc = *rev && !*end && r > 0 ? etcd_get_rev(fs->etcd, key, r, &kv) : -ENODATA;
	gsize len;
	const char *d;

	if (rc == 0 && !kv)
		rc = -ENODATA;
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	d = g_bytes_get_data(kv->value, &len);
	/* The kernel takes no attribute value above 64 KiB. */
	if (len > 65536)
		fuse_reply_err(req, E2BIG);
	else
		fsops_reply_xattr(req, d, len, size);
	ef_kv_free(kv);
}

void fsops_reply_xattr(fuse_req_t req, const char *data, size_t len, size_t size)
{
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, data, len);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_inode *in = inode_get(ino);
	char val[32];
	int64_t v = 0;
	int rc = in ? 0 : -ESTALE;
	int idx = -1;

	if (in && in->kind == EF_FILE && strcmp(name, XATTR_LOCK_NAME) == 0) {
		g_autoptr(GBytes) key = inode_key(in);
		g_autoptr(GBytes) lname = locks_name(fs->locks, key);
		gsize len;
		const char *d = g_bytes_get_data(lname, &len);

		fsops_reply_xattr(req, d, len, size);
		inode_unref(in);
		return;
	}
	if (in && in->kind == EF_FILE && strcmp(name, XATTR_LOCK_OWNER) == 0) {
		g_autoptr(GBytes) key = inode_key(in);
		g_autoptr(GString) owners = g_string_new(NULL);

		rc = locks_owners(fs->locks, key, owners);
		if (rc == 0 && owners->len == 0)
			rc = -ENODATA;
		if (rc == 0)
			fsops_reply_xattr(req, owners->str, owners->len, size);
		else
			fuse_reply_err(req, -rc);
		inode_unref(in);
		return;
	}
	if (in && in->kind == EF_FILE && g_str_has_prefix(name, XATTR_REV)) {
		reply_value_at(req, fs, in, name + strlen(XATTR_REV), size);
		inode_unref(in);
		return;
	}
	if (in && in->kind == EF_FILE && strcmp(name, XATTR_TTL) == 0) {
		rc = ttl_get(fs, in, &v);
		snprintf(val, sizeof(val), "%" G_GINT64_FORMAT, v);
		if (rc == 0)
			fsops_reply_xattr(req, val, strlen(val), size);
		else
			fuse_reply_err(req, -rc);
		inode_unref(in);
		return;
	}
	for (size_t i = 0; i < G_N_ELEMENTS(xattr_names); i++)
		if (strcmp(name, xattr_names[i]) == 0)
			idx = (int)i;
	if (rc == 0 && (idx < 0 || in->kind != EF_FILE))
		rc = -ENODATA;
	if (rc == 0)
		rc = fs_file_refresh(fs, in);
	if (rc == 0) {
		g_mutex_lock(&in->lock);
		if (in->kv) {
			const int64_t f[] = { in->kv->create_revision, in->kv->mod_revision,
					      in->kv->version, in->kv->lease };
			v = f[idx];
		}
		g_mutex_unlock(&in->lock);
		snprintf(val, sizeof(val), "%" G_GINT64_FORMAT, v);
		fsops_reply_xattr(req, val, strlen(val), size);
	} else {
		fuse_reply_err(req, -rc);
	}
	inode_unref(in);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct ef_inode *in = inode_get(ino);
	g_autoptr(GString) names = g_string_new(NULL);

	if (!in) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	if (in->kind == EF_FILE) {
		bool leased;

		for (size_t i = 0; i < G_N_ELEMENTS(xattr_names); i++)
			g_string_append_len(names, xattr_names[i], strlen(xattr_names[i]) + 1);
		g_string_append_len(names, XATTR_LOCK_NAME, sizeof(XATTR_LOCK_NAME));
		g_mutex_lock(&in->lock);
		leased = in->kv && in->kv->lease;
		g_mutex_unlock(&in->lock);
		if (leased)
			g_string_append_len(names, XATTR_TTL, sizeof(XATTR_TTL));
	}
	inode_unref(in);
	fsops_reply_xattr(req, names->str, names->len, size);
}

/* Binds the open file's key to a lease of value's seconds that the mount
 * keeps alive until its last close here, and replies. */
static void reply_session(fuse_req_t req, fuse_ino_t ino, const char *value, size_t size)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_inode *in = inode_get(ino);
	int64_t ttl = 0, lease = 0;
	bool open_here;
	int rc = !in ? -ESTALE : in->kind != EF_FILE ? -EPERM : 0;

	if (rc == 0 && (ttl_parse(value, size, &ttl) < 0 || ttl == 0))
		rc = -EINVAL;
	if (rc == 0) {
		g_mutex_lock(&in->lock);
		open_here = in->opens > 0;
		g_mutex_unlock(&in->lock);
		/* Nothing would end it: a session needs an open file. */
		rc = open_here ? 0 : -EBADF;
	}
	/* What a writer has not published yet is the value to bind. */
	if (rc == 0)
		rc = writeback_publish(fs, in, EF_PUBLISH_ALWAYS);
	if (rc == 0)
		rc = sessions_lease(fs->sessions, ttl, &lease);
	if (rc == 0)
		rc = ttl_put_on(fs, in, lease);
	if (rc == 0)
		sessions_bind(fs->sessions, ino, lease);
	inode_unref(in);
	fuse_reply_err(req, -rc);
}

/* Sets the file's TTL (0: no lease) and replies. */
static void reply_ttl_set(fuse_req_t req, fuse_ino_t ino, int64_t seconds)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_inode *in = inode_get(ino);
	int rc = !in ? -ESTALE : in->kind != EF_FILE ? -EPERM : ttl_set(fs, in, seconds);

	inode_unref(in);
	fuse_reply_err(req, -rc);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	int64_t seconds;

	if (strcmp(name, XATTR_SESSION) == 0) {
		reply_session(req, ino, value, size);
		return;
	}
	if (strcmp(name, XATTR_TTL) == 0) {
		if (ttl_parse(value, size, &seconds) < 0)
			fuse_reply_err(req, EINVAL);
		else
			reply_ttl_set(req, ino, seconds);
		return;
	}
	/* The other attributes mirror etcd's metadata and cannot be
	 * written; etcd has nowhere to keep any other. */
	fuse_reply_err(req, g_str_has_prefix(name, XATTR_PREFIX) ? EPERM : ENOTSUP);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	if (strcmp(name, XATTR_TTL) == 0)
		reply_ttl_set(req, ino, 0);
	else
		fuse_reply_err(req, g_str_has_prefix(name, XATTR_PREFIX) ? EPERM : ENOTSUP);
}

/* ---- file system ---- */

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	/* etcd's default backend quota (2 GiB); usage is not tracked here. */
	struct statvfs sv = {
		.f_bsize = 4096, .f_frsize = 4096,
		.f_blocks = (2ULL << 30) / 4096, .f_bfree = (2ULL << 30) / 4096,
		.f_bavail = (2ULL << 30) / 4096,
		.f_files = 1000000, .f_ffree = 1000000, .f_favail = 1000000,
		.f_namemax = 255,
	};

	fuse_reply_statfs(req, &sv);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	/* O_TRUNC arrives with open, so truncating never publishes an empty
	 * value first. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	/* Always readdirplus, not only for the first page of a listing: the
	 * kernel's heuristic would look up every entry after it one by one. */
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
}

const struct fuse_lowlevel_ops fsops_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.rename = op_rename,
	.open = op_open,
	.create = op_create,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.fsync = op_fsync,
	.release = op_release,
	.flock = op_flock,
	.getlk = op_getlk,
	.setlk = op_setlk,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.statfs = op_statfs,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.setxattr = op_setxattr,
	.removexattr = op_removexattr,
};
