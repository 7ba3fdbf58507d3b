/*
 * ttl — a file's lease as the extended attribute user.etcd.ttl: setting it
 * puts the key on a new lease of that many seconds (etcdctl lease grant,
 * then put --lease), 0 takes it off any lease; reading it tells the
 * seconds left (etcdctl lease timetolive).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct ef_fs;
struct ef_inode;

/* Largest TTL etcd grants (its MaxLeaseTTL, 9e9 s). */
#define TTL_MAX 9000000000LL

/* Parses an attribute value: whole seconds ("30") or a duration as
 * etcdctl writes them ("30s", "1m30s"); "0" detaches. 0 or -EINVAL. */
int ttl_parse(const char *value, size_t len, int64_t *seconds);

/* Puts the file's key, with its value unchanged, on a new lease of
 * seconds (0: on none), guarded by its mod_revision (read again when
 * another client changed it meanwhile). 0, -ENOENT when the key does not
 * exist in etcd, or -errno. A writer open on the file keeps the new lease. */
int ttl_set(struct ef_fs *fs, struct ef_inode *in, int64_t seconds);

/* ttl_set's Put, on a lease the caller has (0: none). */
int ttl_put_on(struct ef_fs *fs, struct ef_inode *in, int64_t lease);

/* The seconds left to the file's lease: 0 or -ENODATA when the key is on
 * no lease, or -errno. */
int ttl_get(struct ef_fs *fs, struct ef_inode *in, int64_t *left);
