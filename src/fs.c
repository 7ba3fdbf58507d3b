/*
 * fs — the filesystem context and the pieces every request path shares
 * (see fs.h).
 */
#include "fs.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cache.h"
#include "etcd.h"
#include "inode.h"
#include "keymap.h"
#include "localdir.h"
#include "revclock.h"
#include "watch.h"

struct ef_fs *fs_new(const struct ef_fs_config *cfg)
{
	struct ef_fs *fs = g_new0(struct ef_fs, 1);

	fs->root = g_bytes_ref(cfg->root);
	fs->uid = cfg->uid;
	fs->gid = cfg->gid;
	fs->umask = cfg->umask;
	fs->strict = cfg->strict;
	fs->revision = cfg->revision;
	clock_gettime(CLOCK_REALTIME, &fs->mount_time);
	inode_table_init(fs->root);
	localdir_init();
	return fs;
}

void fs_set_etcd(struct ef_fs *fs, struct ef_etcd *etcd, struct ef_locks *locks,
		 struct ef_sessions *sessions)
{
	fs->etcd = etcd;
	fs->locks = locks;
	fs->sessions = sessions;
}

void fs_free(struct ef_fs *fs)
{
	localdir_fini();
	inode_table_fini();
	g_bytes_unref(fs->root);
	g_free(fs);
}

/* ---- attributes ---- */

void fs_fill_attr(struct ef_fs *fs, struct stat *st, struct ef_inode *in)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = in->ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_blksize = 4096;
	if (in->kind == EF_DIR) {
		st->st_mode = S_IFDIR | (0777 & ~fs->umask);
		g_mutex_lock(&in->lock);
		/* "." and each subdirectory's ".." link here; when the
		 * entries are not known, 1 says so, as find(1) expects. */
		st->st_nlink = in->dir->names ? 2 + in->dir->nsubdirs : 1;
		st->st_mtim = in->dir->mtime.tv_sec ? in->dir->mtime : fs->mount_time;
		g_mutex_unlock(&in->lock);
		st->st_ctim = st->st_atim = st->st_mtim;
		return;
	}
	st->st_mode = S_IFREG | (0666 & ~fs->umask);
	g_mutex_lock(&in->lock);
	st->st_nlink = in->unlinked || in->gone ? 0 : 1;
	if (in->wbuf && in->writers)
		st->st_size = in->wbuf->len;
	else if (in->kv)
		st->st_size = in->kv->size;
	st->st_mtim = in->kv ? revclock_time(in->kv->mod_revision) : fs->mount_time;
	g_mutex_unlock(&in->lock);
	st->st_ctim = st->st_atim = st->st_mtim;
	st->st_blocks = (st->st_size + 511) / 512;
}

void fs_note_created(struct ef_fs *fs, GBytes *key, bool is_dir)
{
	gsize len, rlen = g_bytes_get_size(fs->root), start;
	const char *k = g_bytes_get_data(key, &len);
	g_autoptr(GBytes) dir = NULL;
	g_autofree char *name = NULL;
	struct ef_inode *din;

	watch_note_local(key);
	/* A directory's prefix ends in '/': its name is the component
	 * before that. */
	if (is_dir && len)
		len--;
	if (len < rlen)
		return;
	start = len;
	while (start > rlen && k[start - 1] != '/')
		start--;
	dir = g_bytes_new(k, start);
	name = keymap_name_from_component(k + start, len - start);
	if (name && (din = inode_find(EF_DIR, dir))) {
		inode_names_add(din, name, is_dir);
		inode_unref(din);
	}
}

pid_t fs_thread_tgid(pid_t tid)
{
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

void fs_dir_touch(struct ef_inode *in)
{
	struct timespec now;

	if (!in || in->kind != EF_DIR)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	g_mutex_lock(&in->lock);
	in->dir->mtime = now;
	g_mutex_unlock(&in->lock);
}

bool fs_inode_pending(struct ef_inode *in)
{
	bool pending;

	g_mutex_lock(&in->lock);
	/* Once its buffer is Put, etcd says whether the file exists (it may
	 * have been renamed or deleted elsewhere since), not our writers. */
	pending = in->writers > 0 && !in->unlinked && in->dirty;
	g_mutex_unlock(&in->lock);
	return pending;
}

bool fs_file_cached(struct ef_inode *in, bool need_value)
{
	bool cached;

	g_mutex_lock(&in->lock);
	cached = in->kv && in->kv_ok && (in->kv->value || !need_value);
	g_mutex_unlock(&in->lock);
	return cached && watch_trusted();
}

double fs_attr_ttl(struct ef_inode *in)
{
	unsigned writers;

	if (in->kind == EF_DIR)
		return watch_trusted() ? CACHE_TTL : 0;
	g_mutex_lock(&in->lock);
	writers = in->writers;
	g_mutex_unlock(&in->lock);
	return !writers && fs_file_cached(in, false) ? CACHE_TTL : 0;
}

/* ---- re-reading a file ---- */

int fs_file_refresh_value(struct ef_fs *fs, struct ef_inode *in, GBytes **val)
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
	rc = etcd_get(fs->etcd, key, &kv);
	if (rc < 0)
		return rc;
	if (!kv)
		return fs_inode_pending(in) ? 0 : -ENOENT;
	if (val)
		*val = g_bytes_ref(kv->value);
	cache_store(in, kv, !watch_changed_since(seq, key, false));
	return 0;
}

int fs_file_refresh(struct ef_fs *fs, struct ef_inode *in)
{
	return fs_file_refresh_value(fs, in, NULL);
}
