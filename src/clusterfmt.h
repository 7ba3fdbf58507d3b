/*
 * clusterfmt — the text of the files under %etcd: etcdctl's output for
 * `member list`, `endpoint status` and `endpoint health`, in its simple,
 * table and JSON forms. Pure: the data comes in structs, the text goes out
 * as a new GString; unit tests compare it byte for byte with etcdctl 3.4.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>

/* etcd's ResponseHeader; zero fields are left out of JSON, as etcdctl's
 * encoding of its protobuf structs does. */
struct ef_header {
	uint64_t cluster_id;
	uint64_t member_id;
	int64_t revision;
	uint64_t raft_term;
};

struct ef_member {
	uint64_t id;
	const char *name;            /* "" while the member has not started */
	const char *const *peer_urls;     /* NULL-terminated, may be empty */
	const char *const *client_urls;   /* NULL-terminated, may be empty */
	bool learner;
};

/* One member's Maintenance.Status, or why it could not be had. */
struct ef_member_status {
	const char *endpoint;        /* as shown: the member's client URL */
	const char *error;           /* non-NULL: the call failed; nothing else set */
	struct ef_header header;
	const char *version;
	int64_t db_size;
	uint64_t leader;
	uint64_t raft_index;
	uint64_t raft_term;
	uint64_t raft_applied_index;
	const char *const *errors;   /* NULL-terminated or NULL */
	int64_t db_size_in_use;
	bool learner;
};

struct ef_member_health {
	const char *endpoint;
	bool healthy;
	int64_t took_ns;
	const char *error;           /* NULL when healthy */
};

enum ef_fmt { EF_FMT_SIMPLE, EF_FMT_TABLE, EF_FMT_JSON };

/*
 * The text of `etcdctl member list`, `endpoint status` and `endpoint
 * health` with -w simple, table or json, for the n entries at m or s (NULL
 * when n is 0), in the order given. Every line ends in '\n'; the simple
 * form of no entries is empty. A status entry with error set, which
 * etcdctl would leave out, is shown with its error (see clusterfmt.c).
 * The arguments are only read during the call. Returns a new GString; the
 * caller frees it with g_string_free(). Never fails.
 */
GString *clusterfmt_members(const struct ef_header *h, const struct ef_member *m, size_t n,
			    enum ef_fmt fmt);
GString *clusterfmt_status(const struct ef_member_status *s, size_t n, enum ef_fmt fmt);
GString *clusterfmt_health(const struct ef_member_health *s, size_t n, enum ef_fmt fmt);

/* go-humanize's Bytes (SI, "33 kB"), as etcdctl's DB SIZE column.
 * Returns a new string; the caller g_free()s it. */
char *clusterfmt_bytes(uint64_t n);
/* Go's time.Duration String ("2.045728ms", "1.000892027s", "1m30s"), the
 * micro sign in UTF-8. Returns a new string; the caller g_free()s it. */
char *clusterfmt_duration(int64_t ns);
