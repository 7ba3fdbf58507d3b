/*
 * etcd — typed calls to etcd's v3 API (KV today; Watch, Lease, Lock,
 * Maintenance and Cluster as later issues need them).
 *
 * The only module that includes the protobuf-c generated headers: callers see
 * struct ef_kv and plain byte buffers. Every call is bounded by the command
 * timeout and returns 0 or -errno (gRPC status mapped by grpc's table, with
 * operation-specific meanings applied here: a failed compare is -ESTALE).
 * Every response header's revision is fed to revclock. Every answer is
 * checked before use (reply.h): one that breaks what etcd promises is
 * refused, -EPROTO, with one warning line (rate-limited).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>

#include "clusterfmt.h"

struct ef_h2;
struct ef_etcd;

/* One key-value pair; every field owned by the struct. value is NULL when
 * the call asked for keys only (or a cache dropped it: size stays); key is
 * NULL once the cache has stored it with its inode. */
struct ef_kv {
	GBytes *key;
	GBytes *value;
	size_t size;             /* length of the value */
	int64_t create_revision;
	int64_t mod_revision;
	int64_t version;
	int64_t lease;
};

void ef_kv_free(struct ef_kv *kv);

/* Borrows h until etcd_free. timeout_ms bounds every call. serializable
 * makes reads go to the nearest member instead of through the leader. */
struct ef_etcd *etcd_new(struct ef_h2 *h, int timeout_ms, bool serializable);
void etcd_free(struct ef_etcd *e);

/* fn(ud) runs (on the calling thread) whenever a call fails in a way that
 * says the cluster may be unreachable: a deadline, a lost connection, an
 * unavailable server. Set once, before any call. */
void etcd_set_doubt_hook(struct ef_etcd *e, void (*fn)(void *ud), void *ud);

/* etcd_get at revision rev (etcdctl get --rev): the key as it was then,
 * *kv NULL if absent. -EIO for a compacted revision, as etcd's
 * OUT_OF_RANGE. */
int etcd_get_rev(struct ef_etcd *e, GBytes *key, int64_t rev, struct ef_kv **kv);

/* The key, if present: *kv is new (NULL when absent). */
int etcd_get(struct ef_etcd *e, GBytes *key, struct ef_kv **kv);

/*
 * One page of [key, end) in key order, at most limit keys (0: no limit).
 * *kvs is a new array of struct ef_kv (free func set); *more as etcd's
 * RangeResponse.more. rev, if non-NULL, receives the header revision.
 */
int etcd_range(struct ef_etcd *e, const void *key, size_t klen, const void *end, size_t elen,
	       int64_t limit, bool keys_only, GPtrArray **kvs, bool *more, int64_t *rev);

/*
 * One keys-only page of [key, end), handed to fn without copying: keys[i]
 * (lens[i] bytes) are valid only during the call. rev, if non-NULL,
 * receives the revision the page was read at. Returns 0 or -errno.
 */
typedef void (*etcd_keys_fn)(void *ud, const char *const *keys, const size_t *lens, size_t n,
			     bool more);
int etcd_range_keys(struct ef_etcd *e, const void *key, size_t klen, const void *end,
		    size_t elen, int64_t limit, etcd_keys_fn fn, void *ud, int64_t *rev);

/*
 * One page of a listing, [key, end) in key order, at most limit keys (0: no
 * limit), with values unless keys_only. Every key is handed to keys_fn as by
 * etcd_range_keys; the key-values for which keep() says yes are returned in
 * pg->kvs. A response longer than max_bytes (0: no cap but the transport's)
 * is not received: the call returns -EMSGSIZE with its length in pg->need,
 * so that a caller can ask again for fewer keys (or none of the values).
 */
struct ef_page_req {
	const void *key, *end;
	size_t klen, elen;
	int64_t limit;
	bool keys_only;
	size_t max_bytes;
	etcd_keys_fn keys_fn;
	bool (*keep)(void *ud, const char *key, size_t len);
	void *ud;                /* for keys_fn and keep */
};

struct ef_page {
	GPtrArray *kvs;          /* struct ef_kv (free func set); the caller's */
	size_t n;                /* keys in the page */
	bool more;               /* as etcd's RangeResponse.more */
	int64_t count;           /* keys in the whole of [key, end), as etcd
				  * counted them */
	int64_t rev;             /* the revision the page was read at */
	size_t bytes;            /* the response's length */
	size_t need;             /* -EMSGSIZE: the length it would have had */
};

int etcd_range_page(struct ef_etcd *e, const struct ef_page_req *rq, struct ef_page *pg);

/*
 * Resolves a directory entry in one round trip (a read-only Txn): the file
 * key, if present, into *kv (new or NULL), and whether any key starts with
 * dir_prefix (file key + "/") into *has_children.
 */
int etcd_lookup(struct ef_etcd *e, GBytes *file_key, GBytes *dir_prefix, struct ef_kv **kv,
		bool *has_children);

/*
 * etcd_lookup, reading in the same Txn keys-only pages that tell a
 * directory's names: up to child_limit keys under dir_prefix (the entry
 * itself, if a directory), handed to child_fn; and up to list_limit keys
 * under list_dir (the entry's parent), handed to list_fn; both as by
 * etcd_range_keys. A NULL fn or list_dir: that page is not read. rev, if
 * non-NULL, receives the revision of the whole read.
 */
struct ef_lookup_pages {
	etcd_keys_fn child_fn;
	void *child_ud;
	int64_t child_limit;
	GBytes *list_dir;
	etcd_keys_fn list_fn;
	void *list_ud;
	int64_t list_limit;
};

int etcd_lookup_pages(struct ef_etcd *e, GBytes *file_key, GBytes *dir_prefix,
		      const struct ef_lookup_pages *pg, struct ef_kv **kv, bool *has_children,
		      int64_t *rev);

/*
 * etcd_lookup in two reads, where what cannot be read counts as absent:
 * for a role that may read a directory's keys but not the key of its name
 * (one granted the prefix /app/ only, looking up "app"), whose lookup Txn
 * etcd refuses whole. -EACCES only when neither may be read.
 */
int etcd_lookup_split(struct ef_etcd *e, GBytes *file_key, GBytes *dir_prefix,
		      struct ef_kv **kv, bool *has_children);

/* A lock's owner key, as its holder made it. */
struct ef_fence {
	GBytes *key;
	int64_t create_rev;
};

/*
 * Puts value under key, keeping the key's lease. If expect_mod >= 0 the Put
 * only happens while the key's mod_revision is still expect_mod (0: the key
 * must not exist); otherwise -ESTALE. Without it, the Put is bounded by the
 * newest revision the mount has seen, and sent again past any change made
 * in between (-EAGAIN after 8 such changes in a row), so that a delayed
 * copy of it never undoes a later change. A Put whose answer was lost is
 * read back (put_applied) and sent again only if not applied. With a fence, only while the fence's
 * key is still the one created at its revision (the writer still holds the
 * lock); otherwise -ENOLCK. On success *mod (if non-NULL) is the new
 * mod_revision.
 */
int etcd_put(struct ef_etcd *e, GBytes *key, const void *val, size_t vlen, int64_t lease,
	     int64_t expect_mod, const struct ef_fence *fence, int64_t *mod);

/* Deletes [key, end) (end NULL: the single key). *deleted may be NULL. */
int etcd_delete(struct ef_etcd *e, GBytes *key, GBytes *end, int64_t *deleted);

/* Deletes key if it is (still) on lease. 0 (deleted or not) or -errno. */
int etcd_delete_if_lease(struct ef_etcd *e, GBytes *key, int64_t lease);

/* The key's mod_revision (0: absent) from a linearizable keys-only read,
 * whatever the mount's read mode: what --strict-reads checks a cached
 * value against. */
int etcd_mod_revision(struct ef_etcd *e, GBytes *key, int64_t *mod);

/* One read-only Txn: any[i] says whether a key starts with prefixes[i]. */
int etcd_any(struct ef_etcd *e, GBytes *const *prefixes, size_t n, bool *any);

/*
 * Deletes the single key and, in the same Txn, probes whether any key still
 * starts with probe (the key's directory): *deleted is the number of keys
 * deleted (0 or 1), *probe_any the probe's answer after the delete.
 */
int etcd_unlink(struct ef_etcd *e, GBytes *key, GBytes *probe, int64_t *deleted, bool *probe_any);

/* Renames in one Txn. See etcd.c for the guards. */
struct ef_move {
	struct ef_kv *src;   /* borrowed; value must be set */
	GBytes *dst;         /* borrowed */
};

/*
 * Atomically: for each move, put dst = src's value (same lease) and delete
 * src; delete [del_key, del_end) too when del_key is non-NULL. Guards: each
 * src still has the mod_revision it was read with; when guard_key is
 * non-NULL, no key in [guard_key, guard_end) was modified after
 * guard_rev; when empty_key is non-NULL, no key exists in
 * [empty_key, empty_end) (rename onto a non-empty directory). A failed guard
 * returns -ESTALE, or -ENOTEMPTY when only the emptiness guard failed.
 */
struct ef_rename {
	struct ef_move *moves;
	size_t n_moves;
	GBytes *del_key, *del_end;
	GBytes *guard_key, *guard_end;
	int64_t guard_rev;
	GBytes *guard2_key, *guard2_end;  /* a second range (RENAME_EXCHANGE) */
	int64_t guard2_rev;
	GBytes **gone;       /* keys that must still not exist (-ESTALE) */
	size_t n_gone;
	GBytes *empty_key, *empty_end;
	GBytes *absent_key;  /* RENAME_NOREPLACE: this key must not exist (-EEXIST) */
	int64_t *rev;        /* if non-NULL, receives the Txn's revision */
	GBytes *probe;       /* if non-NULL, after the moves: does any key start */
	bool *probe_any;     /* with probe? (the source's directory) */
};

int etcd_rename(struct ef_etcd *e, const struct ef_rename *r);

/* For an exchange, a source that is also a move's destination is
 * overwritten by that move, not deleted: each key is touched once (etcd
 * refuses a Txn that touches a key twice). */

/* etcd's default --max-txn-ops. */
#define ETCD_MAX_TXN_OPS 128

/* ---- Watch ---- */

struct ef_grpc_stream;

struct ef_watch_event {
	bool deleted;
	struct ef_kv *kv;          /* DELETE: key and mod_revision only */
};

/* One decoded WatchResponse. */
struct ef_watch_msg {
	int64_t watch_id;
	int64_t revision;          /* header revision; 0 when absent */
	uint64_t cluster_id;       /* header cluster_id; 0 when absent */
	bool created;
	bool canceled;
	/* Only a sign of life: a response is arriving in fragments, and
	 * comes whole in a later message; nothing else is set. */
	bool fragment;
	int64_t compact_revision;
	char *cancel_reason;       /* NULL when none */
	size_t n_events;
	struct ef_watch_event *events;
};

void etcd_watch_msg_free(struct ef_watch_msg *m);

/* Decodes one WatchResponse message; NULL if malformed. Pure. */
struct ef_watch_msg *etcd_watch_msg_parse(const uint8_t *data, size_t len);

/* Callbacks run on the connection's I/O thread: record and return. */
struct ef_watch_ops {
	/* Takes ownership of m. m is NULL for a message that was refused (it
	 * did not decode, came from another cluster, or broke etcd's
	 * promises, reply.h): events may have been lost, so the watcher
	 * starts over; nothing more comes from this stream but on_close. */
	void (*on_msg)(void *ud, struct ef_watch_msg *m);
	void (*on_close)(void *ud, int err);                /* exactly once, last */
};

/*
 * Opens a Watch stream on [key, end) from start_rev (0: from now), asking
 * for progress notifications, and sends the create request. ops/ud are
 * borrowed until on_close, which runs exactly once, also when this fails
 * (then possibly on the calling thread, before it returns). Returns 0 and
 * *out (free with etcd_watch_close) or -errno.
 */
int etcd_watch_open(struct ef_etcd *e, GBytes *key, GBytes *end, int64_t start_rev,
		    const struct ef_watch_ops *ops, void *ud, struct ef_grpc_stream **out);

/* Asks for an immediate progress response (watch_id -1). */
int etcd_watch_request_progress(struct ef_grpc_stream *s);

/* Cancels the stream, waits for on_close, frees it. */
void etcd_watch_close(struct ef_grpc_stream *s);

/* ---- Health ---- */

/*
 * Whether the member this mount talks to answers within timeout_ms and
 * knows of a leader (Maintenance.Status, refused at once without one): 0,
 * or -ETIMEDOUT, -ENOTCONN, -EAGAIN (no leader), -EBUSY (refused for another
 * reason), and the doubt hook runs.
 * *leader (if non-NULL) gets the leader's ID when the member answered.
 * No KV call: it costs etcd no read.
 */
int etcd_probe(struct ef_etcd *e, int timeout_ms, uint64_t *leader);

/* ---- Cluster status (the %etcd files, statfs, root xattrs) ---- */

/* Maintenance.Status of the member, every field owned. */
struct ef_status {
	struct ef_header header;
	char *version;
	int64_t db_size;
	int64_t db_size_in_use;
	uint64_t leader;
	uint64_t raft_index;
	uint64_t raft_term;
	uint64_t raft_applied_index;
	char **errors;             /* NULL-terminated */
	bool learner;
};

void ef_status_clear(struct ef_status *s);
int etcd_status(struct ef_etcd *e, struct ef_status *s);

/* One member of Cluster.MemberList, every field owned. */
struct ef_member_info {
	uint64_t id;
	char *name;
	char **peer_urls;          /* NULL-terminated */
	char **client_urls;        /* NULL-terminated */
	bool learner;
};

void ef_members_free(struct ef_member_info *m, size_t n);
int etcd_member_list(struct ef_etcd *e, struct ef_header *h, struct ef_member_info **members,
		     size_t *n);

/* Hands the client URLs of every started, voting member to the connection
 * as endpoints to use besides the given ones (h2_learn_endpoints), unless
 * etcd_pin_endpoints was called. */
int etcd_sync_endpoints(struct ef_etcd *e);
void etcd_pin_endpoints(struct ef_etcd *e);

/* protobuf-c's version at run time (static string). */
const char *etcd_library_version(void);

/*
 * etcd's user auth: a (borrowed) ef_auth whose token e renews, logging in
 * with Authenticate, when etcd refuses it as invalid (it forgot it: idle
 * past --auth-token-ttl, or restarted); the refused call is then sent
 * once more. The token itself travels in h2 (ef_h2_config.auth).
 */
struct ef_auth;
void etcd_set_auth(struct ef_etcd *e, struct ef_auth *a);

/* Every read (Range, also inside a read-only Txn) at this revision, for a
 * mount of the past (0: the latest). Set before the first call. */
void etcd_set_revision(struct ef_etcd *e, int64_t revision);

/* For callers outside the calls above (a Watch refused in-band): renews
 * the token unless it changed since generation seen (auth_generation).
 * Returns 0, -EACCES (wrong credentials, or no auth set), or -errno. */
int etcd_auth_renew(struct ef_etcd *e, uint64_t seen);
uint64_t etcd_auth_generation(struct ef_etcd *e);

/* etcdctl endpoint health's check: a linearizable Get of the key "health"
 * (refused for want of permission it still went through consensus), then
 * no active alarm. 0, or -errno with *why (new) in etcdctl's words. */
int etcd_health(struct ef_etcd *e, char **why);

/* The header of a linearizable read: the cluster, the member that answered
 * and the store's current revision. */
int etcd_header(struct ef_etcd *e, struct ef_header *h);

/* The connection's generation, and leaving it for another member (h2.h):
 * for a prober that found the member frozen or without a leader. */
uint64_t etcd_conn_generation(struct ef_etcd *e);
void etcd_conn_leave(struct ef_etcd *e, uint64_t generation, const char *why);
/* h2_abandon_calls, for a prober that found the member's leader gone. */
void etcd_conn_abandon_calls(struct ef_etcd *e, uint64_t generation, gint64 before);

/* ---- Lease ---- */

/* Grants a lease of ttl seconds: *id and the TTL etcd granted. -ENOLCK when
 * etcd answers without one. */
int etcd_lease_grant(struct ef_etcd *e, int64_t ttl, int64_t *id, int64_t *granted_ttl);

/* etcdctl lease timetolive: the seconds left to lease id (-1 when it has
 * expired or never was) and its granted TTL. 0 or -errno. */
int etcd_lease_ttl(struct ef_etcd *e, int64_t id, int64_t *ttl, int64_t *granted);
/* Revokes lease id, deleting every key attached to it. */
int etcd_lease_revoke(struct ef_etcd *e, int64_t id);

/* Callbacks run on the connection's I/O thread: record and return. */
struct ef_keepalive_ops {
	/* One LeaseKeepAliveResponse: ttl <= 0 means the lease is gone. */
	void (*on_ttl)(void *ud, int64_t id, int64_t ttl);
	void (*on_close)(void *ud, int err);                /* exactly once, last */
};
/* Opens a LeaseKeepAlive stream; ops/ud are borrowed until on_close.
 * Returns 0 and *out (free with etcd_keepalive_close) or -errno. */
int etcd_keepalive_open(struct ef_etcd *e, const struct ef_keepalive_ops *ops, void *ud,
			struct ef_grpc_stream **out);
/* Asks for lease id to be kept alive once more. */
int etcd_keepalive_send(struct ef_grpc_stream *s, int64_t id);
/* Cancels the stream, waits for on_close, frees it. */
void etcd_keepalive_close(struct ef_grpc_stream *s);

/* ---- Lock keys (lockrule.h: etcd's lock service's queue, with readers) ---- */

/* Deletes an owner key (no error if it is already gone). */
int etcd_unlock(struct ef_etcd *e, GBytes *key);
/*
 * Joins the queue of a lock: puts key (under pfx, the lock name + "/") on
 * lease, a reader's when shared, and in the same Txn reads every key under
 * pfx. *rev is the revision of both (the key's create revision), *kvs the
 * keys with their values (free func set).
 */
int etcd_lock_enter(struct ef_etcd *e, GBytes *pfx, GBytes *key, bool shared, int64_t lease,
		    int64_t *rev, GPtrArray **kvs);
/* Makes a writer's key a reader's, keeping its place: -ESTALE if it is no
 * longer the key of create_rev. *rev: the revision it made. */
int etcd_lock_mark(struct ef_etcd *e, GBytes *key, int64_t create_rev, int64_t lease, int64_t *rev);
