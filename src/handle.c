/*
 * handle — open files (see handle.h).
 */
#include "handle.h"

#include "cache.h"
#include "fs.h"
#include "inode.h"
#include "watch.h"
#include "writeback.h"

struct ef_handle *handle_new(struct ef_inode *in, bool writer)
{
	struct ef_handle *h = g_new0(struct ef_handle, 1);

	h->in = in;
	h->writer = writer;
	g_mutex_lock(&in->lock);
	in->opens++;
	g_mutex_unlock(&in->lock);
	return h;
}

void handle_note_writer(struct ef_handle *h, pid_t tid)
{
	/* Only the thread is noted: its process is looked up in /proc when
	 * a close comes from another thread, which is rare, and not on the
	 * first write of every file, which is not. */
	g_mutex_lock(&h->in->lock);
	h->wtid = tid;
	g_mutex_unlock(&h->in->lock);
}

bool handle_closer_wrote(struct ef_handle *h, pid_t tid)
{
	pid_t wtid, writer, closer;

	g_mutex_lock(&h->in->lock);
	wtid = h->wtid;
	g_mutex_unlock(&h->in->lock);
	if (!wtid || tid == wtid)
		return true;
	/* A writer thread gone since cannot be told from the closer: the
	 * close publishes, as the writer's own would have. */
	writer = fs_thread_tgid(wtid);
	closer = fs_thread_tgid(tid);
	return !writer || !closer || closer == writer;
}

bool handle_free(struct ef_handle *h)
{
	bool last;

	g_mutex_lock(&h->in->lock);
	last = --h->in->opens == 0;
	g_mutex_unlock(&h->in->lock);
	if (h->val)
		g_bytes_unref(h->val);
	g_free(h);
	return last;
}

static bool strict_current(struct ef_fs *fs, struct ef_inode *in, int64_t mod)
{
	g_autoptr(GBytes) key = inode_key(in);
	int64_t now = -1;

	return etcd_mod_revision(fs->etcd, key, &now) == 0 && now == mod;
}

int handle_take_value(struct ef_fs *fs, struct ef_handle *h)
{
	struct ef_inode *in = h->in;
	GBytes *v = NULL;
	bool trusted = watch_trusted();
	int64_t mod = -1;
	int rc = 0;

	g_mutex_lock(&in->lock);
	if (in->closed)
		v = g_bytes_ref(in->closed);
	else if (in->kv && in->kv->value && in->kv_ok && trusted)
		v = g_bytes_ref(in->kv->value);
	if (v && !in->closed)
		mod = in->kv->mod_revision;
	g_mutex_unlock(&in->lock);
	/* Strict: a cached value counts only if a linearizable read finds
	 * the key still at its revision (a watch event may be on its way,
	 * or the member serving the watch may have fallen behind). */
	if (mod >= 0 && fs->strict && !strict_current(fs, in, mod))
		g_clear_pointer(&v, g_bytes_unref);
	if (!v) {
		rc = fs_file_refresh_value(fs, in, &v);
		/* A later pass keeps the value it has when etcd cannot be
		 * asked, unless strict reads forbid an unchecked one. */
		if (rc < 0 && h->val && !fs->strict)
			return 0;
		if (rc < 0)
			return rc;
	}
	/* Threads reading one descriptor at once share h: in->lock guards
	 * its value. */
	g_mutex_lock(&in->lock);
	if (!v && !h->val)
		v = g_bytes_new(NULL, 0);
	if (v) {
		if (h->val)
			g_bytes_unref(h->val);
		h->val = v;
	}
	h->read_once = false;
	g_mutex_unlock(&in->lock);
	cache_touch(in);
	return 0;
}

static bool handle_read_once(struct ef_handle *h)
{
	bool once;

	g_mutex_lock(&h->in->lock);
	once = h->read_once;
	g_mutex_unlock(&h->in->lock);
	return once;
}

int handle_read_value(struct ef_fs *fs, struct ef_handle *h, off_t off, GBytes **val)
{
	int rc = 0;

	/* A writer reads its own buffer, as it stands. */
	if (h->writer) {
		*val = writeback_buffer(h->in);
		return 0;
	}
	/* A new pass from the start sees the newest value; the rest of a
	 * pass continues in the value it started. */
	if (off == 0 && handle_read_once(h))
		rc = handle_take_value(fs, h);
	if (rc < 0)
		return rc;
	g_mutex_lock(&h->in->lock);
	h->read_once = true;
	*val = g_bytes_ref(h->val);
	g_mutex_unlock(&h->in->lock);
	return 0;
}
