/*
 * reply — checks on what etcd sends, made once, before anything uses it.
 *
 * The other half of the etcd module (the only other file that sees the
 * protobuf-c structs): etcd.c runs every decoded answer through these and
 * refuses one that breaks what etcd guarantees with -EPROTO. Pure: no I/O,
 * locks or globals; a failed check says why in a struct ef_fault.
 *
 * What etcd 3.4 guarantees, as read in its server code:
 *  - a KV answer has a header, with a revision >= 1 (an Alarm answer has
 *    none; the others one with a revision >= 0);
 *  - a Range answers with keys of [key, range_end) (range_end empty: the
 *    key itself; "\0": the key and every key after it), ascending and
 *    distinct, at most limit of them; count is the number of keys in the
 *    whole range at that revision, and more is set exactly when keys were
 *    left out for the limit; a count-only Range sends no keys, a keys-only
 *    one no values;
 *  - a key read at revision R (the one asked for, else the header's) has
 *    1 <= create_revision <= mod_revision <= R, version >= 1, lease >= 0,
 *    and fits with its value in one request (REPLY_MAX_KV);
 *  - a Txn answers each op of the branch it took, in order, with the same
 *    kind of answer; a DeleteRange of one key deletes at most one;
 *  - a lease granted without an error text has an ID > 0 and a TTL in
 *    [1, REPLY_MAX_TTL]; a keepalive answer's TTL is >= 0 (0: lost);
 *  - on a Watch stream (one watcher per stream here): no event comes
 *    before the watcher is created or for another watcher; events are of
 *    the watched range, never older than the start revision, in revision
 *    order (one revision's events never split across messages), none newer
 *    than its message's header; and the headers of messages with events
 *    never go back.
 * No revision may be INT64_MAX: callers compute rev + 1.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

#include "rpc.pb-c.h"

/* A key and its value come in one Put: at most etcd's gRPC limit for a
 * request with its default --max-request-bytes (1.5 MiB + 512 KiB). */
#define REPLY_MAX_KV (2u << 20)
/* etcd's MaxLeaseTTL. */
#define REPLY_MAX_TTL INT64_C(9000000000)

/* Why an answer was refused: one line, for the log. */
struct ef_fault {
	char why[256];
};

/*
 * Checks a unary call's answer resp against its request req (borrowed):
 * the header of any answer, and Range, Txn, DeleteRange and LeaseGrant
 * answers in depth. Returns 0, or -EPROTO with f->why set.
 */
int reply_check(const ProtobufCMessage *req, const ProtobufCMessage *resp, struct ef_fault *f);

/* Checks one LeaseKeepAlive answer. 0 or -EPROTO with f->why set. */
int reply_check_keepalive(const Etcdserverpb__LeaseKeepAliveResponse *r, struct ef_fault *f);

/* What a Watch stream has delivered so far, to check the next message. */
struct ef_watch_check {
	GBytes *key, *end;         /* the watched range; owned */
	int64_t start_rev;         /* as asked (0: from now) */
	bool created;              /* the watcher is created */
	int64_t watch_id;          /* its ID, once created */
	int64_t last_event;        /* the newest event's mod_revision */
	int64_t last_batch;        /* the header revision of the last message
				    * with events */
	bool fragments;            /* fragments were asked for */
	bool in_fragment;          /* the last message was a fragment: its
				    * response goes on in the next */
};

/* Starts checking a stream on [key, end) from start_rev, whose create
 * request asked for fragments. Takes refs. */
void reply_watch_init(struct ef_watch_check *w, GBytes *key, GBytes *end, int64_t start_rev);
void reply_watch_clear(struct ef_watch_check *w);

/* Checks the stream's next message r, and on success takes it into w.
 * Returns 0 or -EPROTO with f->why set (w is then unchanged). */
int reply_check_watch(struct ef_watch_check *w, const Etcdserverpb__WatchResponse *r,
		      struct ef_fault *f);
