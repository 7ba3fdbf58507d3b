/*
 * clusterfs — the %etcd directory, the root's cluster attributes and
 * statfs (see clusterfs.h).
 *
 * A file's text is made at open, so that a reader sees one consistent
 * snapshot however it reads, and served with direct I/O (the size shown is
 * 0, as in /proc). members asks the member the mount talks to; status and
 * health ask every member, each over a connection of its own made for the
 * occasion, all at once, each bounded by the command timeout: a dead member
 * costs one timeout, never a hang.
 */
#include "clusterfs.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "clusterfmt.h"
#include "etcd.h"
#include "fs.h"
#include "fsops.h"
#include "h2.h"

#define DIR_NAME "%etcd"
#define INO_DIR ((fuse_ino_t)(UINT64_MAX - 15))
/* Nothing here changes shape: the kernel may keep names and attributes. */
#define TTL (24 * 3600.0)

enum file { F_MEMBERS, F_MEMBERS_JSON, F_STATUS, F_STATUS_JSON, F_HEALTH, F_HEALTH_JSON, N_FILES };

static const char *const names[N_FILES] = {
	"members", "members.json", "status", "status.json", "health", "health.json",
};

#define XATTR_CLUSTER_ID "user.etcd.cluster_id"
#define XATTR_MEMBER_ID "user.etcd.member_id"
#define XATTR_REVISION "user.etcd.revision"

static struct ef_clusterfs_config conf;
static struct fuse_lowlevel_ops ops;

void clusterfs_configure(const struct ef_clusterfs_config *cfg)
{
	conf = *cfg;
}

static bool ours(fuse_ino_t ino)
{
	return ino >= INO_DIR && ino <= INO_DIR + N_FILES;
}

static bool is_root_name(fuse_ino_t parent, const char *name)
{
	return parent == FUSE_ROOT_ID && strcmp(name, DIR_NAME) == 0;
}

static void fill_attr(struct ef_fs *fs, fuse_ino_t ino, struct stat *st)
{
	*st = (struct stat){ 0 };
	st->st_ino = ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_atim = st->st_mtim = st->st_ctim = fs->mount_time;
	if (ino == INO_DIR || ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
	}
}

static void reply_entry(fuse_req_t req, fuse_ino_t ino)
{
	struct fuse_entry_param e = { .ino = ino, .attr_timeout = TTL, .entry_timeout = TTL };

	fill_attr(fuse_req_userdata(req), ino, &e.attr);
	fuse_reply_entry(req, &e);
}

/* ---- the files' text ---- */

static GString *members_text(struct ef_fs *fs, enum ef_fmt fmt, int *rc)
{
	struct ef_member_info *mi = NULL;
	g_autofree struct ef_member *m = NULL;
	struct ef_header h;
	GString *out;
	size_t n = 0;

	*rc = etcd_member_list(fs->etcd, &h, &mi, &n);
	if (*rc < 0)
		return NULL;
	m = g_new0(struct ef_member, n + 1);
	for (size_t i = 0; i < n; i++)
		m[i] = (struct ef_member){ mi[i].id, mi[i].name,
					   (const char *const *)mi[i].peer_urls,
					   (const char *const *)mi[i].client_urls, mi[i].learner };
	out = clusterfmt_members(&h, m, n, fmt);
	ef_members_free(mi, n);
	return out;
}

/* One member asked over a connection of its own. */
struct ask {
	const char *url;          /* NULL: the member has not started */
	bool health;
	GThread *thread;
	int rc;
	struct ef_status st;      /* !health */
	char *why;                /* health, or a failed connection */
	gint64 took_us;
};

static gpointer ask_main(gpointer p)
{
	struct ask *a = p;
	const char *eps[] = { a->url, NULL };
	struct ef_h2_config hc = *conf.h2;
	g_autoptr(GError) err = NULL;
	struct ef_h2 *h;
	struct ef_etcd *e;
	gint64 t0;

	hc.endpoints = eps;
	h = h2_new(&hc, &err);

	if (!h) {
		a->rc = -EINVAL;
		a->why = g_strdup(err->message);
		return NULL;
	}
	e = etcd_new(h, conf.command_ms, false);
	etcd_set_auth(e, conf.h2->auth);
	t0 = g_get_monotonic_time();
	if (a->health) {
		a->rc = etcd_health(e, &a->why);
	} else {
		a->rc = etcd_status(e, &a->st);
		if (a->rc < 0)
			a->why = g_strdup(a->rc == -ETIMEDOUT ? "context deadline exceeded"
							       : g_strerror(-a->rc));
	}
	a->took_us = g_get_monotonic_time() - t0;
	etcd_free(e);
	h2_free(h);
	return NULL;
}

/* Asks every member at once; returns the answers, one per member. */
static struct ask *ask_all(const struct ef_member_info *mi, size_t n, bool health)
{
	struct ask *asks = g_new0(struct ask, n + 1);

	for (size_t i = 0; i < n; i++) {
		asks[i].url = mi[i].client_urls[0];
		asks[i].health = health;
		if (asks[i].url)
			asks[i].thread = g_thread_try_new("member", ask_main, &asks[i], NULL);
		if (!asks[i].thread) {
			asks[i].rc = -EAGAIN;
			asks[i].why = g_strdup(asks[i].url ? "cannot start a thread"
							   : "the member has not started");
		}
	}
	for (size_t i = 0; i < n; i++)
		if (asks[i].thread)
			g_thread_join(asks[i].thread);
	return asks;
}

static void asks_free(struct ask *asks, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		ef_status_clear(&asks[i].st);
		g_free(asks[i].why);
	}
	g_free(asks);
}

static GString *status_text(const struct ef_member_info *mi, size_t n, enum ef_fmt fmt)
{
	struct ask *asks = ask_all(mi, n, false);
	g_autofree struct ef_member_status *s = g_new0(struct ef_member_status, n + 1);
	GString *out;

	for (size_t i = 0; i < n; i++) {
		const struct ef_status *st = &asks[i].st;

		s[i].endpoint = asks[i].url ? asks[i].url : mi[i].name;
		if (asks[i].rc < 0) {
			s[i].error = asks[i].why;
			continue;
		}
		s[i].header = st->header;
		s[i].version = st->version;
		s[i].db_size = st->db_size;
		s[i].leader = st->leader;
		s[i].raft_index = st->raft_index;
		s[i].raft_term = st->raft_term;
		s[i].raft_applied_index = st->raft_applied_index;
		s[i].errors = (const char *const *)st->errors;
		s[i].db_size_in_use = st->db_size_in_use;
		s[i].learner = st->learner;
	}
	out = clusterfmt_status(s, n, fmt);
	asks_free(asks, n);
	return out;
}

static GString *health_text(const struct ef_member_info *mi, size_t n, enum ef_fmt fmt)
{
	struct ask *asks = ask_all(mi, n, true);
	g_autofree struct ef_member_health *s = g_new0(struct ef_member_health, n + 1);
	GString *out;

	for (size_t i = 0; i < n; i++) {
		s[i].endpoint = asks[i].url ? asks[i].url : mi[i].name;
		s[i].healthy = asks[i].rc == 0;
		s[i].took_ns = asks[i].took_us * 1000;
		s[i].error = asks[i].rc == 0 ? NULL : asks[i].why;
	}
	out = clusterfmt_health(s, n, fmt);
	asks_free(asks, n);
	return out;
}

static GString *file_text(struct ef_fs *fs, enum file f, int *rc)
{
	enum ef_fmt fmt = f % 2 ? EF_FMT_JSON : EF_FMT_TABLE;
	struct ef_member_info *mi = NULL;
	struct ef_header h;
	GString *out;
	size_t n = 0;

	*rc = 0;
	/* members in etcdctl member list's own form; the others as tables,
	 * which name their columns. */
	if (f == F_MEMBERS || f == F_MEMBERS_JSON)
		return members_text(fs, f == F_MEMBERS ? EF_FMT_SIMPLE : EF_FMT_JSON, rc);
	*rc = etcd_member_list(fs->etcd, &h, &mi, &n);
	if (*rc < 0)
		return NULL;
	if (f == F_STATUS || f == F_STATUS_JSON)
		out = status_text(mi, n, fmt);
	else
		out = health_text(mi, n, f == F_HEALTH ? EF_FMT_SIMPLE : EF_FMT_JSON);
	ef_members_free(mi, n);
	return out;
}

/* ---- the handlers ---- */

static void cfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (is_root_name(parent, name)) {
		reply_entry(req, INO_DIR);
		return;
	}
	if (parent != INO_DIR) {
		fsops_ops.lookup(req, parent, name);
		return;
	}
	for (int i = 0; i < N_FILES; i++) {
		if (strcmp(name, names[i]) == 0) {
			reply_entry(req, INO_DIR + 1 + (fuse_ino_t)i);
			return;
		}
	}
	fuse_reply_err(req, ENOENT);
}

/* Our inodes are never freed: their lookups need no count. */
static void cfs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	if (ours(ino))
		fuse_reply_none(req);
	else
		fsops_ops.forget(req, ino, nlookup);
}

static void cfs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	size_t k = 0;

	for (size_t i = 0; i < count; i++)
		if (!ours(forgets[i].ino))
			forgets[k++] = forgets[i];
	fsops_ops.forget_multi(req, k, forgets);
}

static void cfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	if (!ours(ino)) {
		fsops_ops.getattr(req, ino, fi);
		return;
	}
	fill_attr(fuse_req_userdata(req), ino, &st);
	fuse_reply_attr(req, &st, TTL);
}

static void cfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			struct fuse_file_info *fi)
{
	if (ours(ino))
		fuse_reply_err(req, EROFS);
	else
		fsops_ops.setattr(req, ino, attr, to_set, fi);
}

static void cfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	GString *text;
	int rc;

	if (!ours(ino)) {
		fsops_ops.open(req, ino, fi);
		return;
	}
	if (ino == INO_DIR) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	text = file_text(fuse_req_userdata(req), (enum file)(ino - INO_DIR - 1), &rc);
	if (!text) {
		fuse_reply_err(req, -rc);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)g_string_free_to_bytes(text);
	fi->direct_io = 1;
	if (fuse_reply_open(req, fi) != 0)
		g_bytes_unref((GBytes *)(uintptr_t)fi->fh);
}

static void cfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	GBytes *text;
	gsize len;
	const char *p;

	if (!ours(ino)) {
		fsops_ops.read(req, ino, size, off, fi);
		return;
	}
	/* Held through the reply: the reader may get its bytes, close, and
	 * have its RELEASE served on another thread before the reply call
	 * has returned here. */
	text = g_bytes_ref((GBytes *)(uintptr_t)fi->fh);
	p = g_bytes_get_data(text, &len);
	if ((size_t)off >= len)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_buf(req, p + off, MIN(size, len - (size_t)off));
	g_bytes_unref(text);
}

static void cfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ours(ino))
		fuse_reply_err(req, 0);
	else
		fsops_ops.flush(req, ino, fi);
}

static void cfs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	if (ours(ino))
		fuse_reply_err(req, 0);
	else
		fsops_ops.fsync(req, ino, datasync, fi);
}

static void cfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (!ours(ino)) {
		fsops_ops.release(req, ino, fi);
		return;
	}
	g_bytes_unref((GBytes *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void cfs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (!ours(ino)) {
		fsops_ops.opendir(req, ino, fi);
		return;
	}
	if (ino != INO_DIR) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	fi->fh = 0;
	fuse_reply_open(req, fi);
}

/* ".", "..", then the files; off is the index of the next entry. */
static void list_dir(fuse_req_t req, size_t size, off_t off, bool plus)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	g_autofree char *buf = g_malloc(size);
	size_t used = 0;

	for (off_t i = off; i < 2 + N_FILES; i++) {
		const char *name = i == 0 ? "." : i == 1 ? ".." : names[i - 2];
		fuse_ino_t ino = i == 0 ? INO_DIR : i == 1 ? FUSE_ROOT_ID : INO_DIR + (fuse_ino_t)i - 1;
		struct fuse_entry_param e = { .ino = ino, .attr_timeout = TTL,
					      .entry_timeout = TTL };
		size_t n;

		fill_attr(fs, ino, &e.attr);
		/* The kernel counts no lookup for the . and .. of a
		 * readdirplus; every entry of one has the plus form. */
		if (plus)
			n = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, i + 1);
		else
			n = fuse_add_direntry(req, buf + used, size - used, name, &e.attr, i + 1);
		if (n > size - used)
			break;
		used += n;
	}
	fuse_reply_buf(req, buf, used);
}

static void cfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	if (ours(ino))
		list_dir(req, size, off, false);
	else
		fsops_ops.readdir(req, ino, size, off, fi);
}

static void cfs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			    struct fuse_file_info *fi)
{
	if (ours(ino))
		list_dir(req, size, off, true);
	else
		fsops_ops.readdirplus(req, ino, size, off, fi);
}

static void cfs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ours(ino))
		fuse_reply_err(req, 0);
	else
		fsops_ops.releasedir(req, ino, fi);
}

/* ---- changes: none under %etcd, and %etcd itself stays ---- */

static void cfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	if (ours(parent) || is_root_name(parent, name))
		fuse_reply_err(req, ours(parent) ? EROFS : EEXIST);
	else
		fsops_ops.mkdir(req, parent, name, mode);
}

static void cfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		       struct fuse_file_info *fi)
{
	if (ours(parent) || is_root_name(parent, name))
		fuse_reply_err(req, ours(parent) ? EROFS : EISDIR);
	else
		fsops_ops.create(req, parent, name, mode, fi);
}

static void cfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (ours(parent) || is_root_name(parent, name))
		fuse_reply_err(req, ours(parent) ? EROFS : EISDIR);
	else
		fsops_ops.unlink(req, parent, name);
}

static void cfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (ours(parent) || is_root_name(parent, name))
		fuse_reply_err(req, ours(parent) ? ENOTDIR : EROFS);
	else
		fsops_ops.rmdir(req, parent, name);
}

static void cfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		       const char *newname, unsigned int flags)
{
	if (ours(parent) || ours(newparent) || is_root_name(parent, name) ||
	    is_root_name(newparent, newname))
		fuse_reply_err(req, EROFS);
	else
		fsops_ops.rename(req, parent, name, newparent, newname, flags);
}

static void cfs_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
	if (ours(ino))
		fuse_reply_err(req, ENOLCK);
	else
		fsops_ops.flock(req, ino, fi, op);
}

static void cfs_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		      struct flock *lock)
{
	if (ours(ino))
		fuse_reply_err(req, ENOLCK);
	else
		fsops_ops.getlk(req, ino, fi, lock);
}

static void cfs_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		      struct flock *lock, int sleep)
{
	if (ours(ino))
		fuse_reply_err(req, ENOLCK);
	else
		fsops_ops.setlk(req, ino, fi, lock, sleep);
}

/* ---- the root's cluster attributes ---- */

static void cfs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct ef_header h;
	char val[32];
	int rc;

	if (ours(ino)) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	if (ino != FUSE_ROOT_ID || (strcmp(name, XATTR_CLUSTER_ID) != 0 &&
				    strcmp(name, XATTR_MEMBER_ID) != 0 &&
				    strcmp(name, XATTR_REVISION) != 0)) {
		fsops_ops.getxattr(req, ino, name, size);
		return;
	}
	rc = etcd_header(fs->etcd, &h);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	/* IDs in hex, as etcdctl shows members; the revision in decimal. */
	if (strcmp(name, XATTR_CLUSTER_ID) == 0)
		g_snprintf(val, sizeof(val), "%" PRIx64, h.cluster_id);
	else if (strcmp(name, XATTR_MEMBER_ID) == 0)
		g_snprintf(val, sizeof(val), "%" PRIx64, h.member_id);
	else
		g_snprintf(val, sizeof(val), "%" PRId64, h.revision);
	fsops_reply_xattr(req, val, strlen(val), size);
}

static void cfs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	static const char root_names[] = XATTR_CLUSTER_ID "\0" XATTR_MEMBER_ID "\0" XATTR_REVISION;

	if (ours(ino))
		fsops_reply_xattr(req, "", 0, size);
	else if (ino == FUSE_ROOT_ID)
		fsops_reply_xattr(req, root_names, sizeof(root_names), size);
	else
		fsops_ops.listxattr(req, ino, size);
}

static void cfs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			 size_t size, int flags)
{
	if (ours(ino))
		fuse_reply_err(req, EROFS);
	else
		fsops_ops.setxattr(req, ino, name, value, size, flags);
}

static void cfs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	if (ours(ino))
		fuse_reply_err(req, EROFS);
	else
		fsops_ops.removexattr(req, ino, name);
}

/* ---- statfs: etcd's database against its quota ---- */

#define BLOCK 4096

static GMutex db_lock;
static int64_t last_db = -1;             /* protected by db_lock: the last size read */

static void cfs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct ef_fs *fs = fuse_req_userdata(req);
	struct statvfs sv = { .f_bsize = BLOCK, .f_frsize = BLOCK, .f_namemax = 255 };
	struct ef_status st;
	int rc = etcd_status(fs->etcd, &st);
	int64_t db;

	/* df asks every mount: one that cannot reach etcd shows the last
	 * size it knew rather than an error, if it knew one. */
	g_mutex_lock(&db_lock);
	if (rc == 0)
		last_db = st.db_size;
	db = last_db;
	g_mutex_unlock(&db_lock);
	ef_status_clear(&st);
	if (db < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	sv.f_blocks = conf.quota_bytes / BLOCK;
	sv.f_bfree = sv.f_blocks - MIN(((uint64_t)db + BLOCK - 1) / BLOCK, sv.f_blocks);
	sv.f_bavail = sv.f_bfree;
	fuse_reply_statfs(req, &sv);
}

const struct fuse_lowlevel_ops *clusterfs_ops(void)
{
	ops = fsops_ops;
	ops.lookup = cfs_lookup;
	ops.forget = cfs_forget;
	ops.forget_multi = cfs_forget_multi;
	ops.getattr = cfs_getattr;
	ops.setattr = cfs_setattr;
	ops.open = cfs_open;
	ops.read = cfs_read;
	ops.flush = cfs_flush;
	ops.fsync = cfs_fsync;
	ops.release = cfs_release;
	ops.opendir = cfs_opendir;
	ops.readdir = cfs_readdir;
	ops.readdirplus = cfs_readdirplus;
	ops.releasedir = cfs_releasedir;
	ops.mkdir = cfs_mkdir;
	ops.create = cfs_create;
	ops.unlink = cfs_unlink;
	ops.rmdir = cfs_rmdir;
	ops.rename = cfs_rename;
	ops.flock = cfs_flock;
	ops.getlk = cfs_getlk;
	ops.setlk = cfs_setlk;
	ops.getxattr = cfs_getxattr;
	ops.listxattr = cfs_listxattr;
	ops.setxattr = cfs_setxattr;
	ops.removexattr = cfs_removexattr;
	ops.statfs = cfs_statfs;
	return &ops;
}
