/*
 * watchfile — a directory's changes as a stream of lines: reading
 * DIR/%watch blocks and returns one JSON line (watchfmt.h) per Put or
 * Delete of a key under DIR, from now on; DIR/%watch@REV starts at
 * revision REV. etcdfs(1), WATCH STREAMS, is the contract.
 *
 * Every open is a stream of its own (watchstream.h), fed by the mount's one
 * Watch: many readers cost etcd nothing more.
 *
 * The names are found by lookup and never listed: '%' names are no key's
 * (keymap.h). Each lookup makes an inode of its own, so that fstat shows
 * the size its stream has reached (tail -f polls it).
 */
#pragma once

#include <fuse_lowlevel.h>

struct ef_etcd;

/* Starts serving the files, before watch_start (it sets the watch's
 * listener). Borrows etcd until watchfile_stop. */
void watchfile_start(struct ef_etcd *etcd);

/* Answers every parked read and frees every stream, while the session
 * still exists, before watch_stop. */
void watchfile_stop(void);

/* inner's handlers with the ones for the %watch files in front; inner is
 * borrowed for the session's life. Without watchfile_start (a mount of the
 * past), every request goes to inner. */
const struct fuse_lowlevel_ops *watchfile_ops(const struct fuse_lowlevel_ops *inner);
