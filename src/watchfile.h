/*
 * watchfile — a directory's changes as a stream of lines: reading
 * DIR/%watch blocks and returns one JSON line (watchfmt.h) per Put or
 * Delete of a key under DIR, from now on; DIR/%watch@REV starts at
 * revision REV. etcdfs(1), WATCH STREAMS, is the contract.
 *
 * Every open is a stream of its own, fed by the mount's one Watch
 * (watch.h's listener): many readers cost etcd nothing more. A %watch@REV
 * stream replays the history it needs with a Watch of its own, until that
 * reaches the point where it joined the mount's; then it is fed like the
 * others. A stream that loses events (compaction, a reader too slow) ends
 * with an ERROR line, and reads after it fail with EIO.
 *
 * The names are found by lookup and never listed: '%' names are no key's
 * (keymap.h). Each lookup makes an inode of its own, so that stat shows
 * the size its stream has reached (tail -f polls it).
 */
#pragma once

#include <fuse_lowlevel.h>

struct ef_etcd;

/* Starts serving the files, before watch_start (it sets the watch's
 * listener). Borrows etcd until watchfile_stop. command_ms bounds how long
 * an open waits for the mount's Watch to know its position. */
void watchfile_start(struct ef_etcd *etcd, int command_ms);

/* Answers every parked read and frees every stream, while the session
 * still exists, before watch_stop. */
void watchfile_stop(void);

/* inner's handlers with the ones for the %watch files in front; inner is
 * borrowed for the session's life. Without watchfile_start (a mount of the
 * past), every request goes to inner. */
const struct fuse_lowlevel_ops *watchfile_ops(const struct fuse_lowlevel_ops *inner);
