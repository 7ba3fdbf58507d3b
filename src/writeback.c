/*
 * writeback — the write-back engine (see writeback.h for the write model,
 * its invariants and each function's contract).
 */
#include "writeback.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cache.h"
#include "etcd.h"
#include "fs.h"
#include "inode.h"
#include "localdir.h"
#include "lock.h"
#include "watch.h"

/* True if process tgid has a descriptor open on inode number ino (from
 * /proc/TGID/fdinfo, which asks no file system; stat would ask us). */
static bool process_has_open(pid_t tgid, fuse_ino_t ino)
{
	char path[64], line[128];
	const char *name;
	bool found = false;
	GDir *dir;

	snprintf(path, sizeof(path), "/proc/%d/fdinfo", (int)tgid);
	dir = g_dir_open(path, 0, NULL);
	if (!dir)
		return false;
	while (!found && (name = g_dir_read_name(dir))) {
		g_autofree char *p = g_build_filename(path, name, NULL);
		FILE *f = fopen(p, "re");
		unsigned long long n;

		if (!f)
			continue;
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "ino: %llu", &n) == 1) {
				found = n == ino;
				break;
			}
		fclose(f);
	}
	g_dir_close(dir);
	return found;
}

int writeback_flush(struct ef_fs *fs, struct ef_inode *in, pid_t tid, pid_t opener)
{
	bool truncated;
	pid_t tgid;

	g_mutex_lock(&in->lock);
	truncated = in->dirty && !in->written && !in->unlinked;
	g_mutex_unlock(&in->lock);
	/* A buffer only truncated by open is Put when the process that
	 * opened it closes its last descriptor on the file. Not at another
	 * close: a shell opens, dup2()s and closes the original before the
	 * command writes, and that first close must not Put an empty value
	 * ahead of the real one; a child closing an inherited descriptor
	 * must not Put what its parent is about to write. */
	if (truncated && (tgid = fs_thread_tgid(tid)) &&
	    (tid == opener || tgid == fs_thread_tgid(opener)) && !process_has_open(tgid, in->ino))
		return writeback_publish(fs, in, EF_PUBLISH_ALWAYS);
	return writeback_publish(fs, in, EF_PUBLISH_WRITTEN);
}

/* etcd_put, fenced while the mount holds the file's lock (lock.h). A
 * fence that moved while the Put was on its way (an unlock, an upgrade)
 * is no lost lock: the Put is tried once more under the new one. */
static int put_fenced(struct ef_fs *fs, GBytes *key, const void *val, size_t len, int64_t lease,
		      int64_t base, int64_t *mod)
{
	struct ef_fence f, again = { 0 };
	int rc = locks_fence(fs->locks, key, &f);

	if (rc == 0)
		rc = etcd_put(fs->etcd, key, val, len, lease, base, f.key ? &f : NULL, mod);
	if (rc == -ENOLCK && f.key && locks_fence(fs->locks, key, &again) == 0 &&
	    (!again.key || !g_bytes_equal(again.key, f.key) || again.create_rev != f.create_rev))
		rc = etcd_put(fs->etcd, key, val, len, lease, base, again.key ? &again : NULL, mod);
	g_clear_pointer(&f.key, g_bytes_unref);
	g_clear_pointer(&again.key, g_bytes_unref);
	return rc;
}

int writeback_publish(struct ef_fs *fs, struct ef_inode *in, enum ef_publish_when when)
{
	g_autoptr(GBytes) key = NULL, snap = NULL;
	int64_t base, lease, mod = 0;
	uint64_t gen, tgen, seq;
	bool ok, created;
	int rc;

	g_mutex_lock(&in->lock);
	/* One Put per inode at a time (two concurrent Puts of one buffer
	 * would make the second fail its own guard), and none while the key
	 * is being deleted or replaced: it would land after and revive it. */
	while (in->flushing || in->removing)
		g_cond_wait(&in->cond, &in->lock);
	if (in->werr && in->dirty && !in->unlinked && when != EF_PUBLISH_LEFTOVER) {
		rc = -in->werr;
		g_mutex_unlock(&in->lock);
		return rc;
	}
	if (when == EF_PUBLISH_WRITTEN && in->dirty && !in->written && !in->unlinked) {
		if (in->closed)
			g_bytes_unref(in->closed);
		in->closed = g_bytes_new(in->wbuf->data, in->wbuf->len);
		in->closed_gen = in->wgen;
	}
	if (!in->dirty || in->unlinked || (when == EF_PUBLISH_WRITTEN && !in->written) ||
	    (when == EF_PUBLISH_LEFTOVER && (in->werr || in->failed))) {
		g_mutex_unlock(&in->lock);
		return 0;
	}
	in->flushing = true;
	snap = g_bytes_new(in->wbuf->data, in->wbuf->len);
	base = in->base_mod;
	lease = in->lease;
	gen = in->wgen;
	tgen = in->tgen;
	/* Whether this Put may make the key exist: a guarded one (base > 0)
	 * finds it with that revision; an unguarded one may follow a delete
	 * whose event has not arrived (what the inode holds cannot tell). */
	created = base <= 0;
	g_mutex_unlock(&in->lock);

	key = inode_key(in);
	seq = watch_seq();
	rc = put_fenced(fs, key, g_bytes_get_data(snap, NULL), g_bytes_get_size(snap), lease, base,
			&mod);
	/* What we wrote is current unless an event (perhaps its own echo)
	 * came first: then the newer of the two wins. */
	ok = rc == 0 && !watch_changed_since(seq, key, false);

	/* Before the Put counts as done (an unlink waits for that): the
	 * directories above are backed by a key now, and one unlink may
	 * empty again. */
	if (rc == 0)
		localdir_backed(key);
	/* Whatever the guess below: a delete older than this Put is late,
	 * even one whose event reaches an inode other than this one (the
	 * kernel may still hold a detached inode for the key). */
	if (rc == 0)
		watch_note_created(key, mod);
	g_mutex_lock(&in->lock);
	in->flushing = false;
	/* Readers here saw the closed buffer while its Put was pending:
	 * refused, it is a value etcd never held, and they see etcd's. */
	if (rc < 0) {
		in->failed = true;
		g_clear_pointer(&in->closed, g_bytes_unref);
	}
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
		/* What is in the buffer now builds on this Put, unless an
		 * open truncated it meanwhile: that replaces any value. */
		if (in->tgen == tgen)
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
		/* After the kv is stored: a late delete of the key's earlier
		 * life, applied before that, would take the name out again. */
		if (created)
			fs_note_created(fs, key, false);
	} else {
		/* A Put that failed may still be applied (a timeout): the
		 * next read asks etcd instead of trusting the kv. */
		cache_drop(in);
	}
	return rc;
}

void writeback_removal_begin(struct ef_inode *in)
{
	g_mutex_lock(&in->lock);
	while (in->flushing || in->removing)
		g_cond_wait(&in->cond, &in->lock);
	in->removing = true;
	g_mutex_unlock(&in->lock);
}

void writeback_removal_end(struct ef_inode *in, bool removed)
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

int writeback_writer_open(struct ef_fs *fs, struct ef_inode *in, bool trunc, int64_t create_guard)
{
	struct ef_kv *kv = NULL;
	bool dead;
	int rc;

	g_mutex_lock(&in->lock);
	/* A buffer whose Put failed (close or fsync reported it) or that a
	 * write could not complete is dead, though the writer that failed has
	 * not been released yet (the kernel sends RELEASE after close has
	 * returned): a writer opening now starts afresh, never from bytes
	 * etcd refused. */
	dead = in->wbuf && (in->failed || in->werr) && !in->flushing;
	if ((!in->wbuf || dead) && !trunc) {
		g_mutex_unlock(&in->lock);
		g_autoptr(GBytes) key = inode_key(in);
		rc = etcd_get(fs->etcd, key, &kv);
		if (rc < 0)
			return rc;
		g_mutex_lock(&in->lock);
	}
	if (in->wbuf && (in->failed || in->werr) && !in->flushing) {
		g_byte_array_set_size(in->wbuf, 0);
		if (kv && !trunc)
			g_byte_array_append(in->wbuf, g_bytes_get_data(kv->value, NULL),
					    g_bytes_get_size(kv->value));
		in->base_mod = trunc ? create_guard : (kv ? kv->mod_revision : 0);
		in->lease = kv ? kv->lease : in->lease;
		in->dirty = trunc;
		in->written = false;
		in->failed = false;
		in->werr = 0;
		in->tgen++;
		g_clear_pointer(&in->closed, g_bytes_unref);
	} else if (!in->wbuf) {
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
		in->tgen++;
	}
	in->wgen++;
	in->writers++;
	if (kv)
		cache_store_locked(in, g_steal_pointer(&kv), false);
	g_mutex_unlock(&in->lock);
	return 0;
}

/* Counts one writer out; the last one out drops the buffer. Returns true
 * if that dropped a value never Put (the caller drops the cached kv). */
static bool writer_close_locked(struct ef_inode *in)
{
	bool discarded = false;

	if (--in->writers == 0) {
		/* A buffer still dirty here failed its Put, and close or
		 * fsync already reported that. */
		discarded = in->dirty;
		g_byte_array_unref(in->wbuf);
		in->wbuf = NULL;
		in->dirty = in->failed = false;
		in->werr = 0;
		g_clear_pointer(&in->closed, g_bytes_unref);
	}
	return discarded;
}

void writeback_writer_close(struct ef_inode *in)
{
	bool discarded;

	g_mutex_lock(&in->lock);
	discarded = writer_close_locked(in);
	g_mutex_unlock(&in->lock);
	/* The buffer dropped was never Put (or its Put failed and may
	 * still land): the next read asks etcd. */
	if (discarded)
		cache_drop(in);
}

void writeback_writer_release(struct ef_fs *fs, struct ef_inode *in)
{
	bool discarded;
	int rc;

	g_mutex_lock(&in->lock);
	/* A writer that opened and closed while we published left its
	 * leftovers to us (it was not last then): look again until nothing
	 * is left, and leave in the same step as the last look. */
	while (in->writers == 1 && in->dirty && !in->unlinked && !in->werr && !in->failed) {
		g_mutex_unlock(&in->lock);
		/* Nobody waits for release: a failure can only be logged
		 * (and marks the buffer failed, which ends the loop). */
		if ((rc = writeback_publish(fs, in, EF_PUBLISH_LEFTOVER)) < 0)
			g_message("etcdfs: could not write a file at its last close: %s",
				  g_strerror(-rc));
		g_mutex_lock(&in->lock);
	}
	discarded = writer_close_locked(in);
	g_mutex_unlock(&in->lock);
	if (discarded)
		cache_drop(in);
}

int writeback_write(struct ef_inode *in, const char *buf, size_t size, off_t off, bool append)
{
	size_t end;

	g_mutex_lock(&in->lock);
	/* The kernel places an O_APPEND write at the size it last saw,
	 * which another writer or value may have changed since: the end is
	 * where the buffer ends. */
	if (append)
		off = in->wbuf->len;
	end = (size_t)off + size;
	if (off < 0 || end > EF_MAX_VALUE) {
		/* What was written so far is a prefix of what the caller
		 * meant: it must never become the value. */
		in->werr = EFBIG;
		in->dirty = true;
		g_mutex_unlock(&in->lock);
		return -EFBIG;
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
	return 0;
}

GBytes *writeback_buffer(struct ef_inode *in)
{
	GBytes *val;

	g_mutex_lock(&in->lock);
	val = g_bytes_new(in->wbuf->data, in->wbuf->len);
	g_mutex_unlock(&in->lock);
	return val;
}


int writeback_rewrite(struct ef_fs *fs, struct ef_inode *in, off_t size, bool via_writer)
{
	g_autoptr(GBytes) key = NULL;
	g_autoptr(GByteArray) val = NULL;
	struct ef_kv *kv = NULL;
	int64_t mod = 0;
	uint64_t seq;
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
		return via_writer ? 0 : writeback_publish(fs, in, EF_PUBLISH_ALWAYS);
	}
	g_mutex_unlock(&in->lock);
	key = inode_key(in);
	rc = etcd_get(fs->etcd, key, &kv);
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
	seq = watch_seq();
	rc = put_fenced(fs, key, val->data, val->len, kv->lease, kv->mod_revision, &mod);
	if (rc < 0) {
		ef_kv_free(kv);
		return rc;
	}
	/* Done: what we wrote is the kv now (re-reading could find the key
	 * already gone again, and report a Put that happened as failed). */
	g_bytes_unref(kv->value);
	kv->size = val->len;
	kv->value = g_byte_array_free_to_bytes(g_steal_pointer(&val));
	kv->mod_revision = mod;
	kv->version++;
	cache_store(in, kv, !watch_changed_since(seq, key, false));
	return 0;
}
