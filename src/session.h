/*
 * session — keys that live as long as a file is open: leases this mount
 * keeps alive (one per TTL asked for), revoked when it unmounts, and left
 * to expire within their TTL if the daemon or its machine dies.
 *
 * One thread sends the keepalives; the FUSE handlers only ask for a lease
 * and delete a key at its file's last close.
 */
#pragma once

#include <stdint.h>
#include <glib.h>

struct ef_etcd;
struct ef_sessions;

struct ef_sessions *sessions_new(struct ef_etcd *etcd);

/* Stops the keepalives and revokes every lease: etcd deletes the keys on
 * them. */
void sessions_free(struct ef_sessions *s);

/* The lease of ttl seconds this mount keeps alive (granted the first
 * time). 0 or -errno. */
int sessions_lease(struct ef_sessions *s, int64_t ttl, int64_t *lease);

/* A file bound to lease was closed for the last time here: its key is
 * deleted, if it is still on that lease (another writer may have taken it
 * off since). 0 or -errno. */
int sessions_unbind(struct ef_sessions *s, GBytes *key, int64_t lease);

/* Notes that the file of inode number ino is bound to lease, until
 * sessions_take, at its last close, hands the lease back (0: unbound). */
void sessions_bind(struct ef_sessions *s, uint64_t ino, int64_t lease);
int64_t sessions_take(struct ef_sessions *s, uint64_t ino);
