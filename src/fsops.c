/*
 * fsops — the fuse_lowlevel_ops handlers (see fsops.h).
 *
 * Write model: all handles open for writing on one inode share its write
 * buffer. The buffer starts as the value read at open (guarded by that
 * mod_revision) or empty for O_TRUNC/create (unguarded: the caller replaces
 * the value), and is Put on flush/fsync of a writing handle only, so a
 * read-only open never writes and `echo x > f` is exactly one Put. A guarded
 * Put that finds the key changed fails with ESTALE instead of overwriting.
 *
 * Until the watch-driven cache lands, attributes and entries are not cached
 * by the kernel (timeouts 0): every stat and lookup asks etcd, and reads are
 * served from the value the last getattr/open fetched, so size and content
 * stay consistent with each other.
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
#include "dirlist.h"
#include "etcd.h"
#include "inode.h"
#include "keymap.h"
#include "localdir.h"
#include "revclock.h"
#include "watch.h"

#define DIR_PAGE 1000
/* Kernel cache lifetime of what the watch keeps current: it invalidates
 * each change, so the timeout only bounds a reply the watch missed. */
#define CACHE_TTL 86400.0
/* Keys one directory rename may move: each needs a Put and a Compare in
 * one Txn, within etcd's default --max-txn-ops. */
#define RENAME_MAX_KEYS (ETCD_MAX_TXN_OPS - 8)

static struct ef_fs_config fs;
static struct timespec mount_time;

struct ef_handle {
	struct ef_inode *in;   /* reference held while open */
	bool writer;
	/* Readers: the value this handle reads, taken at open and again at
	 * each read from offset 0, so one pass through the file sees one
	 * whole value even while others replace it. */
	GBytes *val;
	bool read_once;        /* val has served a read since it was taken */
};

void fsops_init(const struct ef_fs_config *cfg)
{
	fs = *cfg;
	fs.root = g_bytes_ref(cfg->root);
	clock_gettime(CLOCK_REALTIME, &mount_time);
	inode_table_init(fs.root);
	localdir_init();
}

void fsops_set_etcd(struct ef_etcd *etcd)
{
	fs.etcd = etcd;
}

void fsops_fini(void)
{
	localdir_fini();
	inode_table_fini();
	g_bytes_unref(fs.root);
}

/* ---- attributes ---- */

static void fill_attr(struct stat *st, struct ef_inode *in)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = in->ino;
	st->st_uid = fs.uid;
	st->st_gid = fs.gid;
	st->st_blksize = 4096;
	if (in->kind == EF_DIR) {
		st->st_mode = S_IFDIR | (0777 & ~fs.umask);
		st->st_nlink = 2;
		g_mutex_lock(&in->lock);
		st->st_mtim = in->mtime.tv_sec ? in->mtime : mount_time;
		g_mutex_unlock(&in->lock);
		st->st_ctim = st->st_atim = st->st_mtim;
		return;
	}
	st->st_mode = S_IFREG | (0666 & ~fs.umask);
	g_mutex_lock(&in->lock);
	st->st_nlink = in->unlinked ? 0 : 1;
	if (in->wbuf && in->writers)
		st->st_size = in->wbuf->len;
	else if (in->kv)
		st->st_size = in->kv->size;
	st->st_mtim = in->kv ? revclock_time(in->kv->mod_revision) : mount_time;
	g_mutex_unlock(&in->lock);
	st->st_ctim = st->st_atim = st->st_mtim;
	st->st_blocks = (st->st_size + 511) / 512;
}

/* The entries of directory in changed here: its mtime moves. */
static void dir_touch(struct ef_inode *in)
{
	struct timespec now;

	if (!in || in->kind != EF_DIR)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	g_mutex_lock(&in->lock);
	in->mtime = now;
	g_mutex_unlock(&in->lock);
}

/* A file created or opened here whose first Put has not happened yet
 * exists for this mount even though etcd has no key. */
static bool inode_pending(struct ef_inode *in)
{
	bool pending;

	g_mutex_lock(&in->lock);
	pending = in->writers > 0 && !in->unlinked;
	g_mutex_unlock(&in->lock);
	return pending;
}

/* True if in's cached key-value is current (the watch keeps it so), with
 * its value too when need_value. */
static bool file_cached(struct ef_inode *in, bool need_value)
{
	bool cached;

	g_mutex_lock(&in->lock);
	cached = in->kv && in->kv_ok && (in->kv->value || !need_value);
	g_mutex_unlock(&in->lock);
	return cached && watch_trusted();
}

/* How long the kernel may keep in's attributes: as long as the watch
 * vouches for them; not at all while writers change the size under it. */
static double attr_ttl(struct ef_inode *in)
{
	unsigned writers;

	if (in->kind == EF_DIR)
		return watch_trusted() ? CACHE_TTL : 0;
	g_mutex_lock(&in->lock);
	writers = in->writers;
	g_mutex_unlock(&in->lock);
	return !writers && file_cached(in, false) ? CACHE_TTL : 0;
}

/* Re-reads a file's key. Returns 0, or -ENOENT if it is gone. val, if
 * non-NULL, receives a new reference to the value read (NULL if none was:
 * a pending or unlinked file). */
static int file_refresh_value(struct ef_inode *in, GBytes **val)
{
	g_autoptr(GBytes) key = NULL;
	struct ef_kv *kv = NULL;
	uint64_t seq;
	bool unlinked;
	int rc;

	/* An unlinked file still open here has no key left to read: what we
	 * have is all there is. */
	g_mutex_lock(&in->lock);
	unlinked = in->unlinked;
	g_mutex_unlock(&in->lock);
	if (unlinked)
		return 0;
	key = inode_key(in);
	seq = watch_seq();
	rc = etcd_get(fs.etcd, key, &kv);
	if (rc < 0)
		return rc;
	if (!kv)
		return inode_pending(in) ? 0 : -ENOENT;
	if (val)
		*val = g_bytes_ref(kv->value);
	cache_store(in, kv, !watch_changed_since(seq, key, false));
	return 0;
}

static int file_refresh(struct ef_inode *in)
{
	return file_refresh_value(in, NULL);
}

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

static void reply_entry(fuse_req_t req, struct ef_inode *in, bool cacheable)
{
	struct fuse_entry_param e = { .ino = in->ino };

	if (cacheable)
		e.attr_timeout = e.entry_timeout = CACHE_TTL;
	fill_attr(&e.attr, in);
	if (fuse_reply_entry(req, &e) != 0)
		inode_unlookup(in);
	inode_unref(in);
}

/* True if any key lies under prefix. */
static int prefix_has_keys(GBytes *prefix, bool *any)
{
	gsize len;
	const char *p = g_bytes_get_data(prefix, &len);
	g_autoptr(GBytes) end = keymap_prefix_end(p, len);
	g_autoptr(GPtrArray) kvs = NULL;
	int rc = etcd_range(fs.etcd, p, len, g_bytes_get_data(end, NULL), g_bytes_get_size(end),
			    1, true, &kvs, NULL, NULL);

	if (rc == 0)
		*any = kvs->len > 0;
	return rc;
}

/* True if a file with key fk is being created here. */
static bool inode_pending_key(GBytes *fk)
{
	struct ef_inode *in = inode_find(EF_FILE, fk);
	bool pending = in && inode_pending(in);

	inode_unref(in);
	return pending;
}

/* What an entry currently is: on success *out is a new reference with one
 * kernel lookup counted (a pending local file, a directory or a file). */
static int resolve_entry(GBytes *fk, GBytes *dp, struct ef_inode **out, bool *cacheable)
{
	struct ef_inode *pending = inode_find(EF_FILE, fk);
	struct ef_kv *kv = NULL;
	bool children = false;
	uint64_t seq = watch_seq();
	int rc;

	*cacheable = false;
	if (pending && inode_pending(pending)) {
		inode_unref(pending);
		*out = inode_lookup(EF_FILE, fk);
		return 0;
	}
	inode_unref(pending);
	/* With an empty prefix, "%" names the directory of keys that start
	 * with '/'; the empty key itself cannot exist in etcd. */
	if (g_bytes_get_size(fk) == 0)
		rc = dp ? prefix_has_keys(dp, &children) : -ENOENT;
	else if (dp)
		rc = etcd_lookup(fs.etcd, fk, dp, &kv, &children);
	else
		rc = etcd_get(fs.etcd, fk, &kv);
	if (rc < 0)
		return rc;
	/* fk as a prefix covers both the key and its children. */
	*cacheable = !watch_changed_since(seq, fk, true);
	if (children || (!kv && dp && localdir_holds(dp))) {
		ef_kv_free(kv);
		*out = inode_lookup(EF_DIR, dp);
		return 0;
	}
	if (!kv)
		return -ENOENT;
	*out = inode_lookup(EF_FILE, fk);
	cache_store(*out, kv, *cacheable);
	return 0;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ef_inode *p = NULL, *in = NULL;
	g_autoptr(GBytes) dir = NULL, fk = NULL, dp = NULL;
	bool cacheable = false;
	int rc = parent_dir(parent, &p, &dir);

	if (rc == 0)
		rc = entry_keys(dir, name, &fk, &dp);
	/* A directory made here whose entries are all known answers "no
	 * such name" itself: creating a file asks this first, while the
	 * kernel holds the directory's lock. */
	if (rc == 0 && inode_names_lack(p, name) && watch_trusted() && !inode_pending_key(fk))
		rc = -ENOENT;
	else if (rc == 0)
		rc = resolve_entry(fk, dp, &in, &cacheable);
	inode_unref(p);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		reply_entry(req, in, cacheable);
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
static void reply_attr(fuse_req_t req, struct ef_inode *in, int rc)
{
	struct stat st;

	if (rc < 0) {
		fuse_reply_err(req, -rc);
	} else {
		fill_attr(&st, in);
		fuse_reply_attr(req, &st, attr_ttl(in));
	}
	inode_unref(in);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ef_inode *in = inode_get(ino);
	int rc = in ? 0 : -ESTALE;

	/* Open writers' buffer is the size to show: no need to ask etcd. */
	if (rc == 0 && in->kind == EF_FILE && !inode_pending(in) && !file_cached(in, false))
		rc = file_refresh(in);
	reply_attr(req, in, rc);
}

/* ---- writing ---- */

/* The process (thread group) of the thread that sent req, or 0 when that
 * cannot be told (another pid namespace, or the thread is gone). */
static pid_t req_tgid(fuse_req_t req)
{
	pid_t tid = fuse_req_ctx(req)->pid;
	char path[64], line[128];
	pid_t tgid = 0;
	FILE *f;

	if (tid <= 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Tgid: %d", &tgid) == 1)
			break;
	fclose(f);
	return tgid;
}

/* When a buffer is worth a Put (see publish). */
enum publish_when {
	PUBLISH_WRITTEN,     /* flush: only data written since open */
	PUBLISH_ALWAYS,      /* fsync, rename, truncate: anything dirty */
	PUBLISH_LEFTOVER,    /* last release: what no flush published */
};

/*
 * Publishes in's write buffer if dirty. Returns 0 or -errno.
 *
 * A buffer that open merely truncated (O_TRUNC, create) is not published by
 * flush: shells open, dup2() and close the original descriptor before
 * writing, and that first close's flush must not publish an empty value
 * ahead of the real one. fsync, or the release after the last close,
 * publishes it, as it does data whose writer never closed a descriptor
 * itself (see closer_is_writer); until then readers here see it as closed
 * (in->closed). A buffer whose Put failed is left to die with the last
 * release: close or fsync already reported the failure.
 */
static int publish(struct ef_inode *in, enum publish_when when)
{
	g_autoptr(GBytes) key = NULL, snap = NULL;
	int64_t base, lease, mod = 0;
	uint64_t gen, seq;
	bool ok;
	int rc;

	g_mutex_lock(&in->lock);
	/* One Put per inode at a time (two concurrent Puts of one buffer
	 * would make the second fail its own guard), and none while the key
	 * is being deleted or replaced: it would land after and revive it. */
	while (in->flushing || in->removing)
		g_cond_wait(&in->cond, &in->lock);
	if (in->werr && in->dirty && !in->unlinked && when != PUBLISH_LEFTOVER) {
		rc = -in->werr;
		g_mutex_unlock(&in->lock);
		return rc;
	}
	if (when == PUBLISH_WRITTEN && in->dirty && !in->written && !in->unlinked) {
		if (in->closed)
			g_bytes_unref(in->closed);
		in->closed = g_bytes_new(in->wbuf->data, in->wbuf->len);
		in->closed_gen = in->wgen;
	}
	if (!in->dirty || in->unlinked || (when == PUBLISH_WRITTEN && !in->written) ||
	    (when == PUBLISH_LEFTOVER && (in->werr || in->failed))) {
		g_mutex_unlock(&in->lock);
		return 0;
	}
	in->flushing = true;
	snap = g_bytes_new(in->wbuf->data, in->wbuf->len);
	base = in->base_mod;
	lease = in->lease;
	gen = in->wgen;
	g_mutex_unlock(&in->lock);

	key = inode_key(in);
	seq = watch_seq();
	rc = etcd_put(fs.etcd, key, g_bytes_get_data(snap, NULL), g_bytes_get_size(snap), lease,
		      base, &mod);
	/* What we wrote is current unless an event (perhaps its own echo)
	 * came first: then the newer of the two wins. */
	ok = rc == 0 && !watch_changed_since(seq, key, false);

	g_mutex_lock(&in->lock);
	in->flushing = false;
	if (rc < 0)
		in->failed = true;
	if (rc == 0) {
		struct ef_kv *kv = g_new0(struct ef_kv, 1);

		kv->key = g_bytes_ref(key);
		kv->value = g_bytes_ref(snap);
		kv->size = g_bytes_get_size(snap);
		kv->mod_revision = mod;
		kv->create_revision = in->kv ? in->kv->create_revision : mod;
		kv->version = in->kv ? in->kv->version + 1 : 1;
		kv->lease = lease;
		cache_store_locked(in, kv, ok);
		in->base_mod = mod;
		in->failed = false;
		if (in->wgen == gen)
			in->dirty = in->written = false;
		if (in->closed && gen >= in->closed_gen)
			g_clear_pointer(&in->closed, g_bytes_unref);
	}
	g_cond_broadcast(&in->cond);
	g_mutex_unlock(&in->lock);
	if (rc == 0) {
		cache_touch(in);
		localdir_backed(key);
	} else {
		/* The kernel's pages hold what we failed to write: the next
		 * open must not keep them. */
		cache_drop(in);
	}
	return rc;
}

/*
 * Deleting or replacing in's key: waits for a Put in flight, then holds
 * back new ones until removal_end, so no Put of ours lands after the
 * delete. removed: the key is gone, so in never writes it again.
 */
static void removal_begin(struct ef_inode *in)
{
	g_mutex_lock(&in->lock);
	while (in->flushing || in->removing)
		g_cond_wait(&in->cond, &in->lock);
	in->removing = true;
	g_mutex_unlock(&in->lock);
}

static void removal_end(struct ef_inode *in, bool removed)
{
	g_mutex_lock(&in->lock);
	in->removing = false;
	if (removed) {
		in->unlinked = true;
		g_clear_pointer(&in->closed, g_bytes_unref);
	}
	g_cond_broadcast(&in->cond);
	g_mutex_unlock(&in->lock);
}

/* Gives in a write buffer (if it has none) and counts one more writer. */
static int writer_open(struct ef_inode *in, bool trunc, int64_t create_guard)
{
	struct ef_kv *kv = NULL;
	int rc;

	g_mutex_lock(&in->lock);
	if (!in->wbuf && !trunc) {
		g_mutex_unlock(&in->lock);
		g_autoptr(GBytes) key = inode_key(in);
		rc = etcd_get(fs.etcd, key, &kv);
		if (rc < 0)
			return rc;
		g_mutex_lock(&in->lock);
	}
	if (!in->wbuf) {
		in->wbuf = g_byte_array_new();
		if (kv && !trunc)
			g_byte_array_append(in->wbuf, g_bytes_get_data(kv->value, NULL),
					    g_bytes_get_size(kv->value));
		/* Without O_TRUNC the buffer builds on what was read, so the
		 * Put must find it unchanged; 0 means "still absent". */
		in->base_mod = trunc ? create_guard : (kv ? kv->mod_revision : 0);
		in->lease = kv ? kv->lease : (in->kv ? in->kv->lease : 0);
		in->dirty = trunc;
	} else if (trunc) {
		g_byte_array_set_size(in->wbuf, 0);
		in->base_mod = create_guard;
		in->dirty = true;
	}
	in->wgen++;
	in->writers++;
	if (kv)
		cache_store_locked(in, g_steal_pointer(&kv), false);
	g_mutex_unlock(&in->lock);
	return 0;
}

static void writer_close(struct ef_inode *in)
{
	bool discarded = false;

	g_mutex_lock(&in->lock);
	if (--in->writers == 0) {
		/* A buffer still dirty here failed its Put, and close or
		 * fsync already reported that. */
		discarded = in->dirty;
		g_byte_array_unref(in->wbuf);
		in->wbuf = NULL;
		in->dirty = in->failed = false;
		in->werr = 0;
		in->writer = in->writer_tid = 0;
		g_clear_pointer(&in->closed, g_bytes_unref);
	}
	g_mutex_unlock(&in->lock);
	/* The kernel's pages hold the discarded writes: the next open must
	 * read etcd's value again. */
	if (discarded)
		cache_drop(in);
}

/*
 * A writing handle is released. The last one out publishes what no flush
 * did: deciding "last" and leaving are one step under in->lock, so of two
 * releases at once exactly one publishes. It stays counted while it
 * publishes, so readers keep seeing the file as pending meanwhile.
 */
static void writer_release(struct ef_inode *in)
{
	int rc;

	g_mutex_lock(&in->lock);
	if (in->writers > 1) {
		in->writers--;
		g_mutex_unlock(&in->lock);
		return;
	}
	g_mutex_unlock(&in->lock);
	/* Nobody waits for release, so a failure can only be logged. */
	if ((rc = publish(in, PUBLISH_LEFTOVER)) < 0)
		g_message("etcdfs: could not write a file at its last close: %s", g_strerror(-rc));
	writer_close(in);
}

static struct ef_handle *handle_new(struct ef_inode *in, bool writer)
{
	struct ef_handle *h = g_new0(struct ef_handle, 1);

	h->in = in;
	h->writer = writer;
	return h;
}

static void handle_free(struct ef_handle *h)
{
	if (h->val)
		g_bytes_unref(h->val);
	g_free(h);
}

/*
 * Takes the value a reader sees now into h->val: one closed here but not
 * yet Put, else etcd's (from the cache while the watch keeps it current).
 * A key deleted meanwhile leaves an open file with what it had. Returns 0
 * or -errno.
 */
static int reader_take(struct ef_handle *h)
{
	struct ef_inode *in = h->in;
	GBytes *v = NULL;
	bool trusted = watch_trusted();
	int rc = 0;

	g_mutex_lock(&in->lock);
	if (in->closed)
		v = g_bytes_ref(in->closed);
	else if (in->kv && in->kv->value && in->kv_ok && trusted)
		v = g_bytes_ref(in->kv->value);
	g_mutex_unlock(&in->lock);
	if (!v) {
		rc = file_refresh_value(in, &v);
		if (rc < 0 && h->val)
			return 0;
		if (rc < 0)
			return rc;
	}
	if (!v && !h->val)
		v = g_bytes_new(NULL, 0);
	if (v) {
		if (h->val)
			g_bytes_unref(h->val);
		h->val = v;
	}
	h->read_once = false;
	cache_touch(in);
	return 0;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ef_inode *in = inode_get(ino);
	bool writer = (fi->flags & O_ACCMODE) != O_RDONLY;
	struct ef_handle *h = NULL;
	int rc = in ? 0 : -ESTALE;

	if (rc == 0 && in->kind == EF_DIR)
		rc = -EISDIR;
	if (rc == 0) {
		h = handle_new(in, writer);
		rc = writer ? writer_open(in, fi->flags & O_TRUNC, -1) : reader_take(h);
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
			writer_close(in);
		handle_free(h);
		inode_unref(in);
	}
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
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
		inode_names_add(p, name);
		dir_touch(p);
	}
	inode_unref(p);
	if (rc < 0) {
		fuse_reply_err(req, rc == -ENOENT ? EINVAL : -rc);
		return;
	}
	in = inode_lookup(EF_FILE, fk);
	/* O_EXCL: the Put must still find no key, else another client won. */
	writer_open(in, true, (fi->flags & O_EXCL) ? 0 : -1);
	h = handle_new(in, true);
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;
	e.ino = in->ino;
	e.entry_timeout = watch_trusted() ? CACHE_TTL : 0;
	fill_attr(&e.attr, in);
	/* The handle keeps the reference inode_lookup returned. */
	if (fuse_reply_create(req, &e, fi) != 0) {
		writer_close(in);
		handle_free(h);
		inode_unlookup(in);
		inode_unref(in);
	}
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct ef_handle *h = (struct ef_handle *)(uintptr_t)fi->fh;
	struct ef_inode *in = h->in;
	g_autoptr(GBytes) val = NULL;
	gsize len;
	const char *p;
	int rc = 0;

	if (h->writer) {
		/* A writer reads its own buffer, as it stands. */
		g_mutex_lock(&in->lock);
		val = g_bytes_new(in->wbuf->data, in->wbuf->len);
		g_mutex_unlock(&in->lock);
	} else {
		/* A new pass from the start sees the newest value; the
		 * rest of a pass continues in the value it started. */
		if (off == 0 && h->read_once)
			rc = reader_take(h);
		if (rc < 0) {
			fuse_reply_err(req, -rc);
			return;
		}
		h->read_once = true;
		val = g_bytes_ref(h->val);
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
	struct ef_handle *h = (struct ef_handle *)(uintptr_t)fi->fh;
	struct ef_inode *in = h->in;
	size_t end = (size_t)off + size;
	pid_t tid = fuse_req_ctx(req)->pid, writer;

	/* The same thread as last time needs no look at /proc. */
	g_mutex_lock(&in->lock);
	writer = tid == in->writer_tid ? in->writer : 0;
	g_mutex_unlock(&in->lock);
	if (!writer)
		writer = req_tgid(req);

	g_mutex_lock(&in->lock);
	if (writer) {
		in->writer = writer;
		in->writer_tid = tid;
	}
	if (off < 0 || end > EF_MAX_VALUE) {
		/* What was written so far is a prefix of what the caller
		 * meant: it must never become the value. */
		in->werr = EFBIG;
		in->dirty = true;
		g_mutex_unlock(&in->lock);
		fuse_reply_err(req, EFBIG);
		return;
	}
	if (end > in->wbuf->len) {
		size_t old = in->wbuf->len;

		/* A write past the end leaves a hole that reads as zeros. */
		g_byte_array_set_size(in->wbuf, end);
		memset(in->wbuf->data + old, 0, end - old);
	}
	memcpy(in->wbuf->data + off, buf, size);
	in->dirty = in->written = true;
	in->wgen++;
	g_mutex_unlock(&in->lock);
	fuse_reply_write(req, size);
}

/* True if the process closing a descriptor is the one that wrote, or we
 * cannot tell. A child that inherited the descriptor (fork, then exec or
 * exit) closes it too, and that must not publish a value its parent is
 * still writing. */
static bool closer_is_writer(fuse_req_t req, struct ef_inode *in)
{
	pid_t writer, writer_tid, closer;

	g_mutex_lock(&in->lock);
	writer = in->writer;
	writer_tid = in->writer_tid;
	g_mutex_unlock(&in->lock);
	if (!writer || fuse_req_ctx(req)->pid == writer_tid)
		return true;
	closer = req_tgid(req);
	return !closer || writer == closer;
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ef_handle *h = (struct ef_handle *)(uintptr_t)fi->fh;
	int rc = 0;

	if (h->writer && closer_is_writer(req, h->in))
		rc = publish(h->in, PUBLISH_WRITTEN);
	fuse_reply_err(req, -rc);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct ef_handle *h = (struct ef_handle *)(uintptr_t)fi->fh;

	fuse_reply_err(req, h->writer ? -publish(h->in, PUBLISH_ALWAYS) : 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ef_handle *h = (struct ef_handle *)(uintptr_t)fi->fh;
	struct ef_inode *in = h->in;

	if (h->writer)
		writer_release(in);
	handle_free(h);
	inode_unref(in);
	fuse_reply_err(req, 0);
}

/*
 * Rewrites a file with a new size (size < 0: the same size, a new revision
 * of the same value, which is what `touch` asks for): in the shared buffer
 * when writers have it open (they publish it), else as one guarded
 * read-modify-Put.
 */
static int file_rewrite(struct ef_inode *in, off_t size, bool via_writer)
{
	g_autoptr(GBytes) key = NULL;
	g_autoptr(GByteArray) val = NULL;
	struct ef_kv *kv = NULL;
	gsize old;
	int rc;

	if (size > EF_MAX_VALUE)
		return -EFBIG;
	g_mutex_lock(&in->lock);
	if (in->wbuf) {
		old = in->wbuf->len;
		if (size >= 0)
			g_byte_array_set_size(in->wbuf, size);
		if (size >= 0 && (gsize)size > old)
			memset(in->wbuf->data + old, 0, size - old);
		in->dirty = in->written = true;
		in->wgen++;
		g_mutex_unlock(&in->lock);
		return via_writer ? 0 : publish(in, PUBLISH_ALWAYS);
	}
	g_mutex_unlock(&in->lock);
	key = inode_key(in);
	rc = etcd_get(fs.etcd, key, &kv);
	if (rc < 0)
		return rc;
	if (!kv)
		return -ENOENT;
	val = g_byte_array_new();
	g_byte_array_append(val, g_bytes_get_data(kv->value, NULL), g_bytes_get_size(kv->value));
	old = val->len;
	if (size >= 0)
		g_byte_array_set_size(val, size);
	if (size >= 0 && (gsize)size > old)
		memset(val->data + old, 0, size - old);
	rc = etcd_put(fs.etcd, key, val->data, val->len, kv->lease, kv->mod_revision, NULL);
	ef_kv_free(kv);
	return rc < 0 ? rc : file_refresh(in);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct ef_inode *in = inode_get(ino);
	bool via_writer = fi && ((struct ef_handle *)(uintptr_t)fi->fh)->writer;
	struct stat st;
	int rc = in ? 0 : -ESTALE;

	if (rc == 0)
		fill_attr(&st, in);
	/* etcd stores no owner or mode: changing them is refused, setting
	 * what is already shown succeeds (cp -p, tar). */
	if (rc == 0 && (to_set & FUSE_SET_ATTR_MODE) &&
	    (attr->st_mode & 07777) != (st.st_mode & 07777))
		rc = -EPERM;
	if (rc == 0 && (to_set & FUSE_SET_ATTR_UID) && attr->st_uid != st.st_uid)
		rc = -EPERM;
	if (rc == 0 && (to_set & FUSE_SET_ATTR_GID) && attr->st_gid != st.st_gid)
		rc = -EPERM;
	if (rc == 0 && (to_set & FUSE_SET_ATTR_SIZE)) {
		if (in->kind == EF_DIR)
			rc = -EISDIR;
		else if (attr->st_size < 0)
			rc = -EINVAL;
		else
			rc = file_rewrite(in, attr->st_size, via_writer);
	} else if (rc == 0 && (to_set & FUSE_SET_ATTR_MTIME_NOW) && in->kind == EF_FILE) {
		/* Times derive from revisions: "now" (touch) is a new
		 * revision of the same value; an explicit time cannot be
		 * stored, so it is accepted and has no effect. */
		rc = file_rewrite(in, -1, via_writer);
	} else if (rc == 0 && (to_set & FUSE_SET_ATTR_MTIME_NOW)) {
		dir_touch(in);
	}
	reply_attr(req, in, rc);
}

/* ---- namespace changes ---- */

/* After a change here to directory ino's entries: keeps its known name set
 * current and moves its mtime. */
static void names_update(fuse_ino_t ino, const char *gone, const char *added)
{
	struct ef_inode *d = inode_get(ino);

	if (!d)
		return;
	if (gone)
		inode_names_remove(d, gone);
	if (added)
		inode_names_add(d, added);
	dir_touch(d);
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
		removal_begin(in);
		pending = inode_pending(in);
	}
	if (rc == 0 && parent == FUSE_ROOT_ID)
		rc = etcd_delete(fs.etcd, fk, NULL, &deleted);
	else if (rc == 0)
		rc = etcd_unlink(fs.etcd, fk, dir, &deleted, &left);
	if (rc == 0 && !deleted && !pending)
		rc = -ENOENT;
	if (in) {
		removal_end(in, rc == 0);
		if (rc == 0)
			inode_detach(in);
		inode_unref(in);
	}
	if (rc == 0) {
		dir_emptied_here(parent, dir, left);
		names_update(parent, name, NULL);
	}
	fuse_reply_err(req, -rc);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
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
		rc = resolve_entry(fk, dp, &in, &(bool){ false });
		if (rc == 0) {
			inode_unlookup(in);
			inode_unref(in);
			rc = -EEXIST;
		} else if (rc == -ENOENT) {
			rc = 0;
		}
	}
	if (rc == 0) {
		inode_names_add(p, name);
		dir_touch(p);
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
	dir_touch(in);
	if (watch_changed_since(seq, dp, true))
		inode_names_forget(in);
	reply_entry(req, in, watch_trusted());
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ef_inode *p = NULL;
	g_autoptr(GBytes) dir = NULL, fk = NULL, dp = NULL;
	bool any[2] = { false, true };
	int rc = parent_dir(parent, &p, &dir);

	if (rc == 0)
		rc = entry_keys(dir, name, &fk, &dp);
	inode_unref(p);
	if (rc == 0 && !dp)
		rc = -ENOTDIR;
	/* Its own keys, and its parent's: that may be left empty. */
	if (rc == 0)
		rc = etcd_any(fs.etcd, (GBytes *[]){ dp, dir }, parent == FUSE_ROOT_ID ? 1 : 2, any);
	if (rc == 0 && (any[0] || localdir_has_below(dp)))
		rc = -ENOTEMPTY;
	if (rc == 0) {
		localdir_remove(dp);
		dir_emptied_here(parent, dir, any[1]);
		names_update(parent, name, NULL);
	}
	fuse_reply_err(req, -rc);
}

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

static int rename_file(GBytes *sfk, struct ef_kv *src, GBytes *dfk, unsigned int flags,
		       GBytes *sdir, bool *src_left)
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
	int rc;

	/* The file replaced must not be revived by a Put of its own. */
	if (dst)
		removal_begin(dst);
	rc = etcd_rename(fs.etcd, &r);
	if (dst) {
		removal_end(dst, rc == 0);
		inode_unref(dst);
	}
	if (rc < 0)
		return rc;
	inode_rename(EF_FILE, sfk, dfk);
	if ((moved = inode_find(EF_FILE, dfk))) {
		cache_store(moved, kv_moved(src, rev), !watch_changed_since(seq, dfk, false));
		inode_unref(moved);
	}
	return 0;
}

/* Moves every key under sdp (and the directory's own value self, if any)
 * to ddp in one Txn; EXDEV when that is more than one Txn can carry, so
 * mv(1) falls back to copying. */
static int rename_dir(GBytes *sdp, struct ef_kv *self, GBytes *dfk, GBytes *ddp, GBytes *sdir,
		      bool *src_left)
{
	gsize slen, dlen;
	const char *s = g_bytes_get_data(sdp, &slen);
	const char *d = g_bytes_get_data(ddp, &dlen);
	g_autoptr(GBytes) send = keymap_prefix_end(s, slen), dend = keymap_prefix_end(d, dlen);
	g_autoptr(GPtrArray) kvs = NULL, dsts = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
	g_autofree struct ef_move *moves = NULL;
	struct ef_rename r = { 0 };
	bool more = false, any[2] = { false, false };
	int64_t rev = 0;
	size_t n;
	int rc;

	/* A target with local directories below it is not empty either. */
	if (localdir_has_below(ddp))
		return -ENOTEMPTY;
	rc = etcd_range(fs.etcd, s, slen, g_bytes_get_data(send, NULL), g_bytes_get_size(send),
			RENAME_MAX_KEYS + 1, false, &kvs, &more, &rev);
	if (rc < 0)
		return rc;
	n = kvs->len + (self ? 1 : 0);
	if (more || n > RENAME_MAX_KEYS)
		return -EXDEV;
	if (n == 0) {
		/* Nothing in etcd moves: only the target needs checking, for
		 * keys under it (not empty) and a file by its name. */
		rc = etcd_any(fs.etcd, (GBytes *[]){ ddp, dfk }, 2, any);
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
	rc = etcd_rename(fs.etcd, &r);
	if (rc == -EFBIG)
		return -EXDEV;
	if (rc < 0)
		return rc;
moved:
	localdir_remove(ddp);
	localdir_rename(sdp, ddp);
	inode_rename(EF_DIR, sdp, ddp);
	if (self)
		inode_rename(EF_FILE, self->key, dfk);
	return 0;
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct ef_inode *p = NULL, *np = NULL, *pend;
	g_autoptr(GBytes) sdir = NULL, ddir = NULL, sfk = NULL, sdp = NULL, dfk = NULL, ddp = NULL;
	struct ef_kv *kv = NULL;
	bool children = false, src_left = true;
	int rc = (flags & RENAME_EXCHANGE) ? -EINVAL : 0;

	if (rc == 0)
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
	/* A file still being written here has to reach etcd before it can
	 * move there. */
	if (rc == 0 && (pend = inode_find(EF_FILE, sfk))) {
		rc = publish(pend, PUBLISH_ALWAYS);
		inode_unref(pend);
	}
	if (rc == 0)
		rc = sdp ? etcd_lookup(fs.etcd, sfk, sdp, &kv, &children)
			 : etcd_get(fs.etcd, sfk, &kv);
	if (rc == 0) {
		GBytes *probe = parent == FUSE_ROOT_ID ? NULL : sdir;

		if (children || (sdp && localdir_holds(sdp)))
			rc = ddp ? rename_dir(sdp, kv, dfk, ddp, probe, &src_left) : -ENOTDIR;
		else if (kv)
			rc = rename_file(sfk, kv, dfk, flags, probe, &src_left);
		else
			rc = -ENOENT;
	}
	ef_kv_free(kv);
	if (rc == 0) {
		dir_emptied_here(parent, sdir, src_left);
		names_update(parent, name, NULL);
		names_update(newparent, NULL, newname);
	}
	fuse_reply_err(req, -rc);
}

/* ---- directories ---- */

struct ef_diritem {
	char *name;
	bool is_dir;
	fuse_ino_t ino;
};

/* Offsets run over ".", "..", KEYMAP_SELF_NAME (the first n_pre items),
 * then the dirlist's entries, served in place, then the rest of items:
 * local directories etcd cannot know, added once the listing is complete. */
struct ef_dirh {
	GBytes *dir;               /* the directory's prefix */
	struct ef_dirlist *list;
	GPtrArray *items;          /* struct ef_diritem */
	size_t n_pre;
	bool started;              /* the first n_pre items are in */
	bool complete;
	bool root;
};

static void diritem_free(struct ef_diritem *it)
{
	g_free(it->name);
	g_free(it);
}

static void dirh_add(struct ef_dirh *dh, const char *name, bool is_dir, fuse_ino_t ino)
{
	struct ef_diritem *it = g_new(struct ef_diritem, 1);

	it->name = g_strdup(name);
	it->is_dir = is_dir;
	it->ino = ino;
	g_ptr_array_add(dh->items, it);
}

static bool dirh_has_name(struct ef_dirh *dh, const char *name)
{
	for (guint i = 0; i < dh->items->len; i++)
		if (strcmp(((struct ef_diritem *)dh->items->pdata[i])->name, name) == 0)
			return true;
	for (size_t i = 0; i < dirlist_count(dh->list); i++)
		if (strcmp(dirlist_get(dh->list, i)->name, name) == 0)
			return true;
	return false;
}

static size_t dirh_count(const struct ef_dirh *dh)
{
	return dh->items->len + dirlist_count(dh->list);
}

/* Entry i: name, type and inode number. */
static const char *dirh_entry(const struct ef_dirh *dh, size_t i, struct stat *st)
{
	size_t n = dirlist_count(dh->list);
	const struct ef_diritem *it;
	const struct ef_dirent *d;

	if (i >= dh->n_pre && i - dh->n_pre < n) {
		d = dirlist_get(dh->list, i - dh->n_pre);
		st->st_mode = d->is_dir ? S_IFDIR : S_IFREG;
		st->st_ino = inode_number_of(d->is_dir ? EF_DIR : EF_FILE, d->key);
		return d->name;
	}
	it = dh->items->pdata[i < dh->n_pre ? i : i - n];
	st->st_mode = it->is_dir ? S_IFDIR : S_IFREG;
	st->st_ino = it->ino;
	return it->name;
}

/* Appends the mkdir'd directories etcd cannot know about. */
static void dirh_add_local(struct ef_dirh *dh)
{
	g_autoptr(GPtrArray) kids = localdir_children(dh->dir);
	gsize dlen = g_bytes_get_size(dh->dir);

	for (guint i = 0; i < kids->len; i++) {
		gsize len;
		const char *k = g_bytes_get_data(kids->pdata[i], &len);
		g_autofree char *name = keymap_name_from_component(k + dlen, len - dlen - 1);

		if (name && !dirh_has_name(dh, name))
			dirh_add(dh, name, true, inode_number(EF_DIR, kids->pdata[i]));
	}
}

/* The entries before the keys: ".", "..", and the directory's own value,
 * which lies in the parent's range, so it takes a round trip of its own.
 * Done on the first readdir, not in opendir: a listing the kernel has
 * cached is opened but never read. */
static int dirh_start(struct ef_dirh *dh, fuse_ino_t ino)
{
	gsize dlen;
	const char *d = g_bytes_get_data(dh->dir, &dlen);
	size_t self = keymap_self_len(d, dlen);
	g_autoptr(GPtrArray) kvs = NULL;
	int rc = 0;

	if (self && !dh->root)
		rc = etcd_range(fs.etcd, d, self, NULL, 0, 1, true, &kvs, NULL, NULL);
	if (rc < 0)
		return rc;
	dirh_add(dh, ".", true, ino);
	dirh_add(dh, "..", true, FUSE_ROOT_ID);
	if (kvs && kvs->len) {
		g_autoptr(GBytes) sk = g_bytes_new(d, self);
		dirh_add(dh, KEYMAP_SELF_NAME, false, inode_number(EF_FILE, sk));
	}
	dh->n_pre = dh->items->len;
	dh->started = true;
	return 0;
}

static void dirh_feed(void *ud, const char *const *keys, const size_t *lens, size_t n, bool more)
{
	dirlist_feed(ud, keys, lens, n, more);
}

/* Fetches one more page of the listing. */
static int dirh_fetch(struct ef_dirh *dh)
{
	const char *start, *end;
	size_t slen, elen;
	int rc;

	if (!dirlist_range(dh->list, &start, &slen, &end, &elen)) {
		dh->complete = true;
	} else {
		rc = etcd_range_keys(fs.etcd, start, slen, end, elen, DIR_PAGE, dirh_feed, dh->list);
		if (rc < 0)
			return rc;
		dh->complete = dirlist_done(dh->list);
	}
	if (dh->complete)
		dirh_add_local(dh);
	return 0;
}

static void dirh_free(struct ef_dirh *dh)
{
	g_bytes_unref(dh->dir);
	dirlist_free(dh->list);
	g_ptr_array_unref(dh->items);
	g_free(dh);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ef_inode *in = inode_get(ino);
	struct ef_dirh *dh;
	gsize dlen;
	const char *d;

	if (!in) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	dh = g_new0(struct ef_dirh, 1);
	dh->dir = inode_key(in);
	d = g_bytes_get_data(dh->dir, &dlen);
	dh->list = dirlist_new(d, dlen);
	dh->items = g_ptr_array_new_with_free_func((GDestroyNotify)diritem_free);
	dh->root = in->ino == FUSE_ROOT_ID;
	inode_unref(in);
	fi->fh = (uintptr_t)dh;
	/* The watch invalidates a directory whose entries change. */
	fi->cache_readdir = fi->keep_cache = watch_trusted();
	if (fuse_reply_open(req, fi) != 0)
		dirh_free(dh);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct ef_dirh *dh = (struct ef_dirh *)(uintptr_t)fi->fh;
	g_autofree char *buf = g_malloc(size);
	size_t pos = 0;
	int rc = 0;

	/* The kernel serialises readdir on one open directory, so dh needs
	 * no lock. */
	if (!dh->started)
		rc = dirh_start(dh, ino);
	while (rc == 0 && !dh->complete && dirh_count(dh) <= (size_t)off)
		rc = dirh_fetch(dh);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	for (size_t i = off; i < dirh_count(dh); i++) {
		struct stat st = { 0 };
		const char *name = dirh_entry(dh, i, &st);
		size_t n = fuse_add_direntry(req, buf + pos, size - pos, name, &st, i + 1);

		if (n > size - pos)
			break;
		pos += n;
	}
	fuse_reply_buf(req, buf, pos);
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

static void reply_xattr_data(fuse_req_t req, const char *data, size_t len, size_t size)
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
	struct ef_inode *in = inode_get(ino);
	char val[32];
	int64_t v = 0;
	int rc = in ? 0 : -ESTALE;
	int idx = -1;

	for (size_t i = 0; i < G_N_ELEMENTS(xattr_names); i++)
		if (strcmp(name, xattr_names[i]) == 0)
			idx = (int)i;
	if (rc == 0 && (idx < 0 || in->kind != EF_FILE))
		rc = -ENODATA;
	if (rc == 0)
		rc = file_refresh(in);
	if (rc == 0) {
		g_mutex_lock(&in->lock);
		if (in->kv) {
			const int64_t f[] = { in->kv->create_revision, in->kv->mod_revision,
					      in->kv->version, in->kv->lease };
			v = f[idx];
		}
		g_mutex_unlock(&in->lock);
		snprintf(val, sizeof(val), "%" G_GINT64_FORMAT, v);
		reply_xattr_data(req, val, strlen(val), size);
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
	if (in->kind == EF_FILE)
		for (size_t i = 0; i < G_N_ELEMENTS(xattr_names); i++)
			g_string_append_len(names, xattr_names[i], strlen(xattr_names[i]) + 1);
	inode_unref(in);
	reply_xattr_data(req, names->str, names->len, size);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	/* Our attributes mirror etcd's metadata and cannot be written; etcd
	 * has nowhere to keep any other. */
	fuse_reply_err(req, g_str_has_prefix(name, XATTR_PREFIX) ? EPERM : ENOTSUP);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
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
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.statfs = op_statfs,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.setxattr = op_setxattr,
	.removexattr = op_removexattr,
};
