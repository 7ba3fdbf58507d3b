/*
 * handle — an open file: the inode it holds and, for a reader, the one
 * value it reads.
 *
 * A writing handle reads and writes the inode's shared write buffer (see
 * writeback.h). A reading handle serves every read from its own value, taken
 * at open and again at each read from offset 0, so one pass through the
 * file sees one whole value even while others replace it. Handles are
 * opened with direct I/O, so no read is served from pages another handle
 * (or an older value) left in the kernel's cache. A handle's fields have no
 * lock: they are set at open and changed only by reads through it.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <glib.h>

struct ef_fs;
struct ef_inode;

struct ef_handle {
	struct ef_inode *in;   /* reference held while open */
	bool writer;
	bool append;           /* opened with O_APPEND */
	pid_t opener;          /* the thread that opened it */
	pid_t wtid;            /* the thread that last changed the file through
				* it (0: none yet) */
	/* Readers: the value this handle reads, taken at open and again at
	 * each read from offset 0, so one pass through the file sees one
	 * whole value even while others replace it. */
	GBytes *val;
	bool read_once;        /* val has served a read since it was taken */
};

/* A new handle on in. It keeps the caller's reference to in (h->in) for
 * as long as it is open; handle_free leaves dropping it to the caller. */
struct ef_handle *handle_new(struct ef_inode *in, bool writer);

/* Thread tid changes the file through h (write, truncate, set times). */
void handle_note_writer(struct ef_handle *h, pid_t tid);

/* True if thread tid, closing a descriptor of h, belongs to the process that
 * last changed the file through h, or nothing was changed through h, or
 * that cannot be told (that thread is gone). A child that inherited the descriptor (fork, then
 * exec or exit) closes it too, and that must not publish a value its
 * parent is still writing. */
bool handle_closer_wrote(struct ef_handle *h, pid_t tid);

/* Frees h and its value (not its inode reference). Returns whether it was
 * the last handle open on its inode. */
bool handle_free(struct ef_handle *h);

/*
 * Takes the value a reader sees now into h->val: one closed here but not
 * yet Put, else etcd's (from the cache while the watch keeps it current,
 * otherwise one etcd call). A key deleted meanwhile leaves an open file
 * with what it had. Returns 0 or -errno.
 */
int handle_take_value(struct ef_fs *fs, struct ef_handle *h);

/* The value a read through h at offset off is served from, as a new
 * reference in *val: a writer's is the shared write buffer as it stands; a
 * reader's is h->val, taken anew (handle_take_value) when a read starts
 * from offset 0 again. Returns 0 or -errno. */
int handle_read_value(struct ef_fs *fs, struct ef_handle *h, off_t off, GBytes **val);
