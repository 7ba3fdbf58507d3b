/*
 * reply — checks on what etcd sends (see reply.h).
 *
 * Each check either passes or fills f->why and returns -EPROTO: nothing is
 * repaired, since an answer that breaks one promise cannot be trusted to
 * keep the others.
 */
#include "reply.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

#include "kv.pb-c.h"

static int fail(struct ef_fault *f, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static int fail(struct ef_fault *f, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	g_vsnprintf(f->why, sizeof(f->why), fmt, ap);
	va_end(ap);
	return -EPROTO;
}

/* A key for the log: printable, escaped, cut to a length that leaves room
 * for the rest of the line. */
struct keybuf {
	char s[48];
};

static const char *key_str(struct keybuf *b, const uint8_t *p, size_t len)
{
	size_t o = 0;

	b->s[o++] = '"';
	for (size_t i = 0; i < len; i++) {
		if (o + 8 >= sizeof(b->s)) {
			memcpy(b->s + o, "...", 3);
			o += 3;
			break;
		}
		if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\')
			b->s[o++] = (char)p[i];
		else
			o += (size_t)g_snprintf(b->s + o, sizeof(b->s) - o, "\\x%02x", p[i]);
	}
	b->s[o++] = '"';
	b->s[o] = 0;
	return b->s;
}

/* Byte order, as etcd orders keys. */
static int key_cmp(const ProtobufCBinaryData *a, const ProtobufCBinaryData *b)
{
	size_t n = MIN(a->len, b->len);
	int c = n ? memcmp(a->data, b->data, n) : 0;

	return c ? c : (a->len > b->len) - (a->len < b->len);
}

/* Whether k is of the range etcd reads for key and range_end end. */
static bool key_in_range(const ProtobufCBinaryData *k, const ProtobufCBinaryData *key,
			 const ProtobufCBinaryData *end)
{
	if (end->len == 0)
		return key_cmp(k, key) == 0;
	if (key_cmp(k, key) < 0)
		return false;
	if (end->len == 1 && end->data[0] == 0)
		return true;
	return key_cmp(k, end) < 0;
}

static bool rev_ok(int64_t rev)
{
	return rev >= 0 && rev < INT64_MAX;
}

/* etcd 3.4 sends an Alarm answer without a header: only a KV answer, whose
 * revision matters, must have one. */
static int check_header(const Etcdserverpb__ResponseHeader *h, bool kv, struct ef_fault *f)
{
	if (!h)
		return kv ? fail(f, "an answer without a header") : 0;
	if (!rev_ok(h->revision) || (kv && h->revision == 0))
		return fail(f, "a header revision of %" PRId64, h->revision);
	return 0;
}

/* A key as it was at revision at; mod_revision <= at also keeps it below
 * INT64_MAX. */
static int check_kv(const Mvccpb__KeyValue *kv, int64_t at, bool keys_only, struct ef_fault *f)
{
	struct keybuf kb;

	if (!kv)
		return fail(f, "an empty key-value entry");
	if (kv->mod_revision <= 0 || kv->mod_revision > at)
		return fail(f, "key %s with mod_revision %" PRId64 " in an answer at revision %" PRId64,
			    key_str(&kb, kv->key.data, kv->key.len), kv->mod_revision, at);
	if (kv->create_revision <= 0 || kv->create_revision > kv->mod_revision)
		return fail(f, "key %s with create_revision %" PRId64 " and mod_revision %" PRId64,
			    key_str(&kb, kv->key.data, kv->key.len), kv->create_revision,
			    kv->mod_revision);
	if (kv->version <= 0)
		return fail(f, "key %s with version %" PRId64, key_str(&kb, kv->key.data, kv->key.len),
			    kv->version);
	if (kv->lease < 0)
		return fail(f, "key %s with lease %" PRId64, key_str(&kb, kv->key.data, kv->key.len),
			    kv->lease);
	if (kv->key.len > REPLY_MAX_KV || kv->value.len > REPLY_MAX_KV - kv->key.len)
		return fail(f, "key %s with a value of %zu bytes",
			    key_str(&kb, kv->key.data, kv->key.len), kv->value.len);
	if (keys_only && kv->value.len)
		return fail(f, "key %s with a value in a keys-only answer",
			    key_str(&kb, kv->key.data, kv->key.len));
	return 0;
}

/* How many keys a Range sent against how many it says there are. */
static int check_counts(const Etcdserverpb__RangeRequest *rq, const Etcdserverpb__RangeResponse *r,
			struct ef_fault *f)
{
	size_t n = r->n_kvs;

	if (r->count < 0 || (uint64_t)r->count < n)
		return fail(f, "a count of %" PRId64 " for %zu keys", r->count, n);
	if (rq->limit > 0 && n > (uint64_t)rq->limit)
		return fail(f, "%zu keys for a limit of %" PRId64, n, rq->limit);
	if (rq->count_only) {
		if (n || r->more)
			return fail(f, "keys in a count-only answer");
		return 0;
	}
	/* etcd reads limit + 1 keys and sets more when it got them all. */
	if (r->more ? rq->limit <= 0 || n != (uint64_t)rq->limit || (uint64_t)r->count == n
		    : (uint64_t)r->count != n)
		return fail(f, "more=%d with %zu keys of %" PRId64 " for a limit of %" PRId64,
			    r->more, n, r->count, rq->limit);
	return 0;
}

/* A Range's answer; rev is the revision of the answer it came in. */
static int check_range(const Etcdserverpb__RangeRequest *rq, const Etcdserverpb__RangeResponse *r,
		       int64_t rev, struct ef_fault *f)
{
	int64_t at = rq->revision > 0 ? rq->revision : rev;
	struct keybuf kb, sb, eb;
	int rc;

	if (rq->revision > rev)
		return fail(f, "a read at revision %" PRId64 " answered at %" PRId64, rq->revision,
			    rev);
	if ((rc = check_counts(rq, r, f)) < 0)
		return rc;
	for (size_t i = 0; i < r->n_kvs; i++) {
		const Mvccpb__KeyValue *kv = r->kvs[i];

		if ((rc = check_kv(kv, at, rq->keys_only, f)) < 0)
			return rc;
		if (!key_in_range(&kv->key, &rq->key, &rq->range_end))
			return fail(f, "key %s outside the range asked for, [%s, %s)",
				    key_str(&kb, kv->key.data, kv->key.len),
				    key_str(&sb, rq->key.data, rq->key.len),
				    key_str(&eb, rq->range_end.data, rq->range_end.len));
		if (i > 0 && key_cmp(&r->kvs[i - 1]->key, &kv->key) >= 0)
			return fail(f, "key %s out of order", key_str(&kb, kv->key.data, kv->key.len));
	}
	return 0;
}

static int check_delete(const Etcdserverpb__DeleteRangeRequest *rq,
			const Etcdserverpb__DeleteRangeResponse *r, struct ef_fault *f)
{
	if (r->deleted < 0 || (rq->range_end.len == 0 && r->deleted > 1))
		return fail(f, "%" PRId64 " keys deleted for %s", r->deleted,
			    rq->range_end.len ? "a range" : "one key");
	return 0;
}

/* Answer i of a Txn to op (of the branch it took). */
static int check_op(const Etcdserverpb__RequestOp *op, const Etcdserverpb__ResponseOp *ro,
		    size_t i, int64_t rev, struct ef_fault *f)
{
	/* RequestOp and ResponseOp number their cases alike. */
	if (!ro || (int)ro->response_case != (int)op->request_case)
		return fail(f, "answer %zu of a Txn of another kind than its op", i);
	switch (op->request_case) {
	case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
		if (!ro->response_range)
			return fail(f, "answer %zu of a Txn empty", i);
		return check_range(op->request_range, ro->response_range, rev, f);
	case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
		if (!ro->response_delete_range)
			return fail(f, "answer %zu of a Txn empty", i);
		return check_delete(op->request_delete_range, ro->response_delete_range, f);
	default:
		return 0;
	}
}

static int check_txn(const Etcdserverpb__TxnRequest *rq, const Etcdserverpb__TxnResponse *r,
		     int64_t rev, struct ef_fault *f)
{
	Etcdserverpb__RequestOp *const *ops = r->succeeded ? rq->success : rq->failure;
	size_t n = r->succeeded ? rq->n_success : rq->n_failure;
	int rc;

	if (r->n_responses != n)
		return fail(f, "%zu answers to a Txn branch of %zu ops", r->n_responses, n);
	for (size_t i = 0; i < n; i++)
		if ((rc = check_op(ops[i], r->responses[i], i, rev, f)) < 0)
			return rc;
	return 0;
}

static int check_grant(const Etcdserverpb__LeaseGrantResponse *r, struct ef_fault *f)
{
	/* A refusal in words: the caller tells. */
	if (r->error && *r->error)
		return 0;
	if (r->id <= 0 || r->ttl <= 0 || r->ttl > REPLY_MAX_TTL)
		return fail(f, "a lease %" PRId64 " granted for %" PRId64 " s", r->id, r->ttl);
	return 0;
}

/* The header of an answer of any type: every answer of etcd's API has its
 * ResponseHeader as field "header". */
static const Etcdserverpb__ResponseHeader *header_of(const ProtobufCMessage *m)
{
	const ProtobufCFieldDescriptor *hf =
		protobuf_c_message_descriptor_get_field_by_name(m->descriptor, "header");

	if (!hf || hf->type != PROTOBUF_C_TYPE_MESSAGE ||
	    hf->descriptor != &etcdserverpb__response_header__descriptor)
		return NULL;
	return *(const Etcdserverpb__ResponseHeader *const *)((const char *)m + hf->offset);
}

int reply_check(const ProtobufCMessage *req, const ProtobufCMessage *resp, struct ef_fault *f)
{
	const ProtobufCMessageDescriptor *d = resp->descriptor;
	bool kv = d == &etcdserverpb__range_response__descriptor ||
		  d == &etcdserverpb__txn_response__descriptor ||
		  d == &etcdserverpb__delete_range_response__descriptor ||
		  d == &etcdserverpb__put_response__descriptor;
	const Etcdserverpb__ResponseHeader *h = header_of(resp);
	int rc = check_header(h, kv, f);

	if (rc < 0)
		return rc;
	if (d == &etcdserverpb__range_response__descriptor)
		return check_range((const Etcdserverpb__RangeRequest *)req,
				   (const Etcdserverpb__RangeResponse *)resp, h->revision, f);
	if (d == &etcdserverpb__txn_response__descriptor)
		return check_txn((const Etcdserverpb__TxnRequest *)req,
				 (const Etcdserverpb__TxnResponse *)resp, h->revision, f);
	if (d == &etcdserverpb__delete_range_response__descriptor)
		return check_delete((const Etcdserverpb__DeleteRangeRequest *)req,
				    (const Etcdserverpb__DeleteRangeResponse *)resp, f);
	if (d == &etcdserverpb__lease_grant_response__descriptor)
		return check_grant((const Etcdserverpb__LeaseGrantResponse *)resp, f);
	return 0;
}

int reply_check_keepalive(const Etcdserverpb__LeaseKeepAliveResponse *r, struct ef_fault *f)
{
	int rc = check_header(r->header, false, f);

	if (rc < 0)
		return rc;
	if (r->id <= 0 || r->ttl < 0 || r->ttl > REPLY_MAX_TTL)
		return fail(f, "a keepalive of lease %" PRId64 " for %" PRId64 " s", r->id, r->ttl);
	return 0;
}

/* ---- Watch ---- */

void reply_watch_init(struct ef_watch_check *w, GBytes *key, GBytes *end, int64_t start_rev)
{
	*w = (struct ef_watch_check){
		.key = key ? g_bytes_ref(key) : g_bytes_new(NULL, 0),
		.end = end ? g_bytes_ref(end) : g_bytes_new(NULL, 0),
		.start_rev = start_rev,
		.fragments = true,
	};
}

void reply_watch_clear(struct ef_watch_check *w)
{
	g_clear_pointer(&w->key, g_bytes_unref);
	g_clear_pointer(&w->end, g_bytes_unref);
}

static ProtobufCBinaryData bin_of(GBytes *b)
{
	gsize len;
	const void *p = g_bytes_get_data(b, &len);

	return (ProtobufCBinaryData){ .len = len, .data = (uint8_t *)p };
}

/* Event i of a message at header revision rev; prev is the mod_revision
 * an event must not be older than. */
static int check_event(const struct ef_watch_check *w, const Mvccpb__Event *ev, size_t i,
		       int64_t rev, int64_t prev, bool strict, struct ef_fault *f)
{
	ProtobufCBinaryData key = bin_of(w->key), end = bin_of(w->end);
	const Mvccpb__KeyValue *kv = ev ? ev->kv : NULL;
	struct keybuf kb;
	int rc;

	if (!kv)
		return fail(f, "watch event %zu without a key", i);
	if (ev->type != MVCCPB__EVENT__EVENT_TYPE__PUT && ev->type != MVCCPB__EVENT__EVENT_TYPE__DELETE)
		return fail(f, "watch event %zu of type %d", i, (int)ev->type);
	if (!key_in_range(&kv->key, &key, &end))
		return fail(f, "a watch event for key %s, outside the watched range",
			    key_str(&kb, kv->key.data, kv->key.len));
	if (kv->mod_revision <= 0 || kv->mod_revision > rev)
		return fail(f, "a watch event at revision %" PRId64 " in a message at %" PRId64,
			    kv->mod_revision, rev);
	if (kv->mod_revision < prev || (strict && kv->mod_revision == prev))
		return fail(f, "a watch event at revision %" PRId64 " after one at %" PRId64,
			    kv->mod_revision, prev);
	if (w->start_rev > 0 && kv->mod_revision < w->start_rev)
		return fail(f, "a watch event at revision %" PRId64 " on a watch from %" PRId64,
			    kv->mod_revision, w->start_rev);
	/* A deleted key has only its key and the revision of its deletion. */
	if (ev->type == MVCCPB__EVENT__EVENT_TYPE__PUT &&
	    (rc = check_kv(kv, kv->mod_revision, false, f)) < 0)
		return rc;
	if (kv->key.len > REPLY_MAX_KV || kv->value.len > REPLY_MAX_KV - kv->key.len)
		return fail(f, "a watch event with %zu bytes", kv->key.len + kv->value.len);
	return 0;
}

/* Whether a message is about another watcher than the stream's. */
static bool other_watcher(const struct ef_watch_check *w, const Etcdserverpb__WatchResponse *r)
{
	if (r->created)
		return false;
	/* -1: a progress answer to the whole stream. */
	if (r->watch_id == -1 && r->n_events == 0)
		return false;
	return !w->created || r->watch_id != w->watch_id;
}

int reply_check_watch(struct ef_watch_check *w, const Etcdserverpb__WatchResponse *r,
		      struct ef_fault *f)
{
	int64_t rev = r->header ? r->header->revision : 0;
	int64_t prev = w->last_event;
	int rc;

	if (!rev_ok(rev))
		return fail(f, "a watch header revision of %" PRId64, rev);
	if (!rev_ok(r->compact_revision))
		return fail(f, "a watch compact_revision of %" PRId64, r->compact_revision);
	if (r->fragment && !w->fragments)
		return fail(f, "a watch fragment, never asked for");
	/* etcd cuts one response's events into fragments sent in a row,
	 * each with the response's header. */
	if (r->fragment && (r->n_events == 0 || r->created || r->canceled))
		return fail(f, "a watch fragment without events");
	if (w->in_fragment && (r->n_events == 0 || rev != w->last_batch))
		return fail(f, "a watch fragment not followed by the rest of its response");
	if (other_watcher(w, r))
		return fail(f, "a watch answer for watcher %" PRId64 ", not %s", r->watch_id,
			    w->created ? "this stream's" : "created yet");
	if (r->n_events && (r->created || r->canceled))
		return fail(f, "watch events in a %s answer", r->created ? "create" : "cancel");
	/* Only messages with events are ordered among themselves: etcd sends
	 * the create answer and requested progress apart from them (a later
	 * revision may come first), and a timed progress notification may
	 * read the store's revision just before an event's write ends. */
	if (r->n_events && rev < w->last_batch)
		return fail(f, "watch events at header revision %" PRId64 " after %" PRId64, rev,
			    w->last_batch);
	for (size_t i = 0; i < r->n_events; i++) {
		/* A fragment's continuation may go on with the same revision. */
		rc = check_event(w, r->events[i], i, rev, prev, i == 0 && !w->in_fragment, f);
		if (rc < 0)
			return rc;
		prev = r->events[i]->kv->mod_revision;
	}
	if (r->created && !r->canceled && !w->created) {
		w->created = true;
		w->watch_id = r->watch_id;
	}
	if (r->n_events) {
		w->last_event = prev;
		w->last_batch = rev;
	}
	w->in_fragment = r->fragment;
	return 0;
}
