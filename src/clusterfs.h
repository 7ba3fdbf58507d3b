/*
 * clusterfs — the cluster's state on the mount: the directory %etcd at the
 * root, with read-only files in etcdctl's formats (members, status, health,
 * each with a .json twin), the root's cluster attributes
 * (user.etcd.cluster_id, member_id, revision) and statfs (etcd's database
 * size against its quota).
 *
 * %etcd is reachable by name but never listed: no key maps to that name
 * (keymap's only escapes are %25, %00, %2E, % and %self). Its inodes have
 * fixed numbers above any the inode table gives out. The handlers here
 * answer every request about them, and pass all others on to fsops.
 */
#pragma once

#include "h2.h"

#include <stdint.h>
#include <fuse_lowlevel.h>

struct ef_clusterfs_config {
	/* The mount's connection settings (TLS among them), for one
	 * connection to each member; borrowed for the session's life. */
	const struct ef_h2_config *h2;
	int command_ms;           /* each member's calls */
	uint64_t quota_bytes;     /* etcd's --quota-backend-bytes (not reported by etcd) */
};

/* Set once before the session starts. */
void clusterfs_configure(const struct ef_clusterfs_config *cfg);

/* fsops' handlers with the ones for the cluster's files in front. */
const struct fuse_lowlevel_ops *clusterfs_ops(void);
