/*
 * watchstream — the streams behind the %watch files (watchfile.h): each an
 * open's log of JSON lines (watchfmt.h) addressed by offset, fed by the
 * mount's one Watch (watch.h's listener), a %watch@REV one first by a
 * Watch of its own replaying the history it needs. A stream that loses
 * events (compaction, a reader too slow, a refused watch) ends with an
 * ERROR line; reads after it fail with EIO.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <fuse_lowlevel.h>
#include <glib.h>

struct ef_etcd;
struct ef_wstream;

/* Starts the history thread and sets the watch's listener: before
 * watch_start. Borrows etcd until wstreams_stop. */
void wstreams_start(struct ef_etcd *etcd);

/* Answers every parked read (end of file) and frees every stream, while
 * the session still exists, before watch_stop. Nothing may be called
 * after it. */
void wstreams_stop(void);

/*
 * A new stream of the changes to keys under dir (a key prefix), from
 * revision from (0: from now). Returns 0 and *out, the open file's
 * reference, given back with wstream_close; -EACCES when etcd refused the
 * mount's watch outright; -ENOTCONN once stopped.
 */
int wstream_open(GBytes *dir, int64_t from, struct ef_wstream **out);

/* The file's close: the stream is fed no more, its bytes go, and the
 * reference wstream_open gave is dropped (wstream_stat's size stays true
 * for other holders). */
void wstream_close(struct ef_wstream *s);

/*
 * Answers req, now or later, from any thread: up to size bytes at off once
 * there are any. Errors: EAGAIN (nonblock, none yet), EINTR (interrupted
 * while waiting), EIO (past the ERROR line), ESPIPE (before what is kept),
 * EBUSY (another read of s is waiting).
 */
void wstream_read(struct ef_wstream *s, fuse_req_t req, size_t size, off_t off, bool nonblock);

/* The bytes the stream has produced and when its last line came. */
void wstream_stat(struct ef_wstream *s, off_t *size, struct timespec *mtime);

struct ef_wstream *wstream_ref(struct ef_wstream *s);
void wstream_unref(struct ef_wstream *s);
