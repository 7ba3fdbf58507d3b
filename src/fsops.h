/*
 * fsops — the fuse_lowlevel_ops handlers: thin glue from FUSE requests to
 * the modules below (writeback, handle, dirhandle, rename, fs), the inode
 * table, the key mapping and typed etcd calls.
 *
 * The session's userdata must be the filesystem context (struct ef_fs, see
 * fs.h); every handler takes it from its request. Handlers run on libfuse's
 * worker threads and block on their own etcd call (sshfs style); no lock is
 * held while they wait. Each replies exactly once.
 */
#pragma once

#include <fuse_lowlevel.h>

extern const struct fuse_lowlevel_ops fsops_ops;

/* Replies to getxattr/listxattr with data (len bytes): its length when
 * size is 0, ERANGE when size is too small. */
void fsops_reply_xattr(fuse_req_t req, const char *data, size_t len, size_t size);
