/*
 * writeback — the write-back engine: the write buffer open writers share,
 * and when and how it becomes one Put.
 *
 * Write model: all handles open for writing on one inode share its write
 * buffer (in->wbuf). The buffer starts as the value read at open (guarded by
 * that mod_revision) or empty for O_TRUNC/create (unguarded: the caller
 * replaces the value), and is Put on flush/fsync of a writing handle, or by
 * the last release for what no flush published (see writeback_publish), so
 * a read-only open never writes and `echo x > f` is exactly one Put. A
 * guarded Put that finds the key changed fails with ESTALE instead of
 * overwriting.
 *
 * Invariants, all under in->lock (the write state lives in struct ef_inode,
 * see inode.h):
 * - at most one Put of an inode's buffer is in flight (in->flushing), and
 *   none while its key is being deleted or replaced (in->removing), so no
 *   Put of ours lands after a delete and revives the key;
 * - the writer count is changed and tested in one step: of two last
 *   releases at once exactly one publishes;
 * - a buffer whose write failed (in->werr) is incomplete and never Put.
 *
 * No function here holds in->lock across an etcd call or a call into
 * another module that takes it. Errors are 0 or -errno: etcd's (-ESTALE for
 * a guard that no longer holds), -EFBIG above EF_MAX_VALUE.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <glib.h>

struct ef_fs;
struct ef_inode;

/* When a buffer is worth a Put (see writeback_publish). */
enum ef_publish_when {
	EF_PUBLISH_WRITTEN,     /* flush: only data written since open */
	EF_PUBLISH_ALWAYS,      /* fsync, rename, truncate: anything dirty */
	EF_PUBLISH_LEFTOVER,    /* last release: what no flush published */
};

/*
 * Publishes in's write buffer if dirty: one guarded Put, after waiting for
 * a Put in flight or a removal to end. Returns 0 (also when there was
 * nothing to publish) or -errno: the Put's, or the errno of an earlier
 * failed write (not for EF_PUBLISH_LEFTOVER). On success the Put's kv is
 * cached; on failure the cached kv is dropped (cache_drop): a Put that
 * failed may still be applied, so the next read asks etcd.
 *
 * A buffer that open merely truncated (O_TRUNC, create) is not published by
 * flush: shells open, dup2() and close the original descriptor before
 * writing, and that first close's flush must not publish an empty value
 * ahead of the real one. fsync, or the release after the last close,
 * publishes it, as it does data whose writer never closed a descriptor
 * itself (see handle_closer_wrote); until then readers here see it
 * as closed (in->closed). A buffer whose Put failed is left to die with the
 * last release: close or fsync already reported the failure.
 */
int writeback_publish(struct ef_fs *fs, struct ef_inode *in, enum ef_publish_when when);

/*
 * Deleting or replacing in's key: waits for a Put in flight, then holds
 * back new ones until writeback_removal_end, so no Put of ours lands after
 * the delete. Every begin is followed by exactly one end.
 */
void writeback_removal_begin(struct ef_inode *in);

/* Ends a removal. removed: the key is gone, so in never writes it again
 * (in->unlinked) and what a writer closed is dropped. */
void writeback_removal_end(struct ef_inode *in, bool removed);

/*
 * Counts one more writer of in, giving it a write buffer if it has none:
 * the current value (one etcd call, without in->lock) unless trunc, then
 * empty. create_guard is the Put's guard for a truncated buffer: -1 to
 * overwrite whatever is there, 0 to require the key still absent (O_EXCL).
 * Returns 0 or the etcd call's -errno (then nothing is counted). Each
 * successful open is undone by writeback_writer_close or
 * writeback_writer_release.
 */
int writeback_writer_open(struct ef_fs *fs, struct ef_inode *in, bool trunc, int64_t create_guard);

/* Counts one writer less without publishing (an open whose reply failed,
 * or the end of a release); the last one out frees the buffer, and drops
 * the cached kv if it was still dirty (its Put failed or never happened:
 * what etcd has is then read again). */
void writeback_writer_close(struct ef_inode *in);

/*
 * A writing handle is released. The last one out publishes what no flush
 * did (EF_PUBLISH_LEFTOVER): deciding "last" and leaving are one step under
 * in->lock, so of two releases at once exactly one publishes. It stays
 * counted while it publishes, so readers keep seeing the file as pending
 * meanwhile. Nobody waits for a release: a failure is only logged.
 */
void writeback_writer_release(struct ef_fs *fs, struct ef_inode *in);

/*
 * A writing handle's descriptor is closed by thread tid (FUSE flush):
 * publishes what was written (EF_PUBLISH_WRITTEN), or a buffer open only
 * truncated when the closing process is the one that opened it (opener: the
 * opening thread) and keeps no other descriptor on the file.
 * A process that did not write (a child closing an inherited descriptor)
 * publishes nothing. Returns 0 or the Put's -errno.
 */
int writeback_flush(struct ef_fs *fs, struct ef_inode *in, pid_t tid, pid_t opener);

/*
 * Writes size bytes of buf at off into in's buffer (in must have writers). A
 * write past
 * the end leaves a hole of zeros. append (O_APPEND): at the buffer's end,
 * whatever off says. Returns 0, or -EFBIG beyond EF_MAX_VALUE:
 * then the buffer is marked incomplete and is never Put.
 */
int writeback_write(struct ef_inode *in, const char *buf, size_t size, off_t off, bool append);

/* A copy of in's write buffer as it stands (in must have writers): a new
 * reference. */
GBytes *writeback_buffer(struct ef_inode *in);



/*
 * Rewrites a file with a new size (size < 0: the same size, a new revision
 * of the same value, which is what `touch` asks for): in the shared buffer
 * when writers have it open (they publish it; via_writer: the request came
 * through a writing handle, so leave it to them), else as one guarded
 * read-modify-Put. Returns 0 or -errno (-EFBIG, -ENOENT, etcd's).
 */
int writeback_rewrite(struct ef_fs *fs, struct ef_inode *in, off_t size, bool via_writer);
