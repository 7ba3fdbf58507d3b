/*
 * fsops — the fuse_lowlevel_ops handlers: thin glue from FUSE requests to
 * the inode table, the key mapping and typed etcd calls.
 *
 * Handlers run on libfuse's worker threads and block on their own etcd
 * call (sshfs style); no lock is held while they wait. Each replies exactly
 * once.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <fuse_lowlevel.h>
#include <glib.h>

struct ef_etcd;

struct ef_fs_config {
	GBytes *root;          /* root prefix (keymap_root_prefix) */
	uid_t uid;
	gid_t gid;
	mode_t umask;
	struct ef_etcd *etcd;  /* borrowed until fsops_fini; may be set late */
};

extern const struct fuse_lowlevel_ops fsops_ops;

/* Copies cfg (taking a reference on root). */
void fsops_init(const struct ef_fs_config *cfg);

/* Sets the etcd client once the daemon has forked (borrowed). */
void fsops_set_etcd(struct ef_etcd *etcd);

void fsops_fini(void);

/* The largest value a write buffer may hold: above it write() fails with
 * EFBIG at once (the server's own, lower limit fails the Put at close). */
#define EF_MAX_VALUE (2 * 1024 * 1024)
