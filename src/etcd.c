/*
 * etcd — typed calls to etcd's v3 API (see etcd.h).
 *
 * Requests are built on the stack from the generated protobuf-c structs and
 * borrow the caller's buffers; responses are unpacked, converted to
 * struct ef_kv copies and freed before returning, so nothing generated leaks
 * out of this file.
 */
#include "etcd.h"

#include <errno.h>
#include <string.h>

#include "auth.h"
#include "grpc.h"
#include "h2.h"
#include "keymap.h"
#include "lockrule.h"
#include "ratelimit.h"
#include "reply.h"
#include "revclock.h"
#include "rpc.pb-c.h"
#include "v3lock.pb-c.h"

struct ef_etcd {
	struct ef_h2 *h2;       /* borrowed */
	int timeout_ms;
	bool serializable;
	void (*doubt)(void *ud);
	void *doubt_ud;
	GMutex lock;
	uint64_t cluster_id;    /* protected by lock: the mount's cluster (0:
				 * not known yet, the first answer tells) */
	uint64_t checked_gen;   /* protected by lock: the connection whose
				 * member is known to be of that cluster */
	gint pinned;            /* atomic: only the given endpoints are used */
	struct ef_auth *auth;   /* borrowed; NULL without etcd auth */
	int64_t revision;       /* set before use: reads at it (0: the latest) */
	struct ef_ratelimit warn_rl; /* protected by lock */
};

void etcd_set_doubt_hook(struct ef_etcd *e, void (*fn)(void *ud), void *ud)
{
	e->doubt = fn;
	e->doubt_ud = ud;
}

#define KV_PATH(m) "/etcdserverpb.KV/" m

void ef_kv_free(struct ef_kv *kv)
{
	if (!kv)
		return;
	if (kv->key)
		g_bytes_unref(kv->key);
	if (kv->value)
		g_bytes_unref(kv->value);
	g_free(kv);
}

struct ef_etcd *etcd_new(struct ef_h2 *h, int timeout_ms, bool serializable)
{
	struct ef_etcd *e = g_new0(struct ef_etcd, 1);

	e->h2 = h;
	e->timeout_ms = timeout_ms;
	e->serializable = serializable;
	g_mutex_init(&e->lock);
	return e;
}

void etcd_free(struct ef_etcd *e)
{
	if (e)
		g_mutex_clear(&e->lock);
	g_free(e);
}

static ProtobufCBinaryData bin(const void *p, size_t len)
{
	return (ProtobufCBinaryData){ .len = len, .data = (uint8_t *)p };
}

static ProtobufCBinaryData bin_bytes(GBytes *b)
{
	gsize len = 0;
	const void *p = b ? g_bytes_get_data(b, &len) : NULL;

	return bin(p, len);
}

static void observe(const Etcdserverpb__ResponseHeader *h)
{
	if (h)
		revclock_observe(h->revision);
}

/* What may be done with a call whose answer was lost (-ECONNRESET from the
 * transport: the request went out, the connection dropped). */
enum call_kind {
	CALL_READ,      /* only reads: it is sent again, within its time */
	CALL_WRITE,     /* it may have been applied: -ENOTCONN, as for any outage */
	CALL_RESOLVE,   /* -ECONNRESET, for the caller to find out what happened */
	CALL_CHECK,     /* a read that finds out: asks for a member with a
			 * leader, in short tries, whatever fails, until the
			 * command timeout (a read sent during an election
			 * would wait for etcd's own timeout) */
	CALL_LOGIN,     /* Authenticate: a read that never renews the token */
};

/* Between tries of a read the member could not serve (no leader yet, a
 * leader change): an election takes about a second. */
#define READ_RETRY_US (50 * G_TIME_SPAN_MILLISECOND)
#define CHECK_TRY_MS 500

/*
 * Every answer names its cluster; an answer from another one than the
 * mount's (an endpoint now serving a different cluster) is refused and
 * its member left. Returns 0 or -EPROTO.
 */
static int cluster_check(struct ef_etcd *e, uint64_t gen, uint64_t cid)
{
	uint64_t want;

	if (cid == 0)
		return 0;
	g_mutex_lock(&e->lock);
	if (e->cluster_id == 0)
		e->cluster_id = cid;
	want = e->cluster_id;
	g_mutex_unlock(&e->lock);
	if (cid == want)
		return 0;
	g_warning("etcdfs: a member answered for cluster %" G_GINT64_MODIFIER "x, not %"
		  G_GINT64_MODIFIER "x: leaving it", cid, want);
	h2_leave(e->h2, gen, "it belongs to another cluster");
	return -EPROTO;
}

/* An answer that breaks etcd's protocol (reply.h) is refused: one line
 * says what was wrong, as long as a server sending nothing else does not
 * flood the log. Returns -EPROTO. */
static int refuse(struct ef_etcd *e, const char *call, const char *why)
{
	unsigned dropped = 0;
	bool log;

	g_mutex_lock(&e->lock);
	log = ratelimit_allow(&e->warn_rl, g_get_monotonic_time(), &dropped);
	g_mutex_unlock(&e->lock);
	if (log && dropped)
		g_warning("etcdfs: refused an answer to %s: %s (and %u more since the last such line)",
			  call, why, dropped);
	else if (log)
		g_warning("etcdfs: refused an answer to %s: %s", call, why);
	return -EPROTO;
}

static int member_check(struct ef_etcd *e, uint64_t *gen);
static int etcd_login(void *ud, const char *user, const char *password, char **token);

/* One gRPC call, sent again while it only reads and its answer was lost
 * or the member could not serve it, until the command timeout. */
static int unary(struct ef_etcd *e, const char *path, const uint8_t *buf, size_t len,
		 enum call_kind kind, size_t max_resp, size_t *need, GBytes **out)
{
	gint64 deadline = g_get_monotonic_time() + (gint64)e->timeout_ms * G_TIME_SPAN_MILLISECOND;
	bool write = kind == CALL_WRITE || kind == CALL_RESOLVE;
	int timeout_ms = e->timeout_ms;
	uint64_t gen = 0, token_gen;
	int renewed = 0;
	size_t ignored;
	int rc;

	for (;;) {
		struct ef_grpc_status st = { 0 };
		gboolean again;

		token_gen = e->auth ? auth_generation(e->auth) : 0;
		/* A write goes only over a connection whose member is known to
		 * be of the mount's cluster: the first on each new connection
		 * checks (a Status call), and h2 sends it over that one or
		 * not at all (-ESRCH: checked again). */
		if (write && (rc = member_check(e, &gen)) < 0)
			return rc;
		if (write)
			rc = grpc_unary_on(e->h2, gen, path, buf, len, timeout_ms, out, &st);
		else if (kind == CALL_CHECK)
			rc = grpc_unary_leader(e->h2, path, buf, len, MIN(timeout_ms, CHECK_TRY_MS), out,
					       &st);
		else if (kind == CALL_LOGIN)
			rc = grpc_unary_anonymous(e->h2, path, buf, len, timeout_ms, out, &st);
		else if (max_resp)
			rc = grpc_unary_capped(e->h2, path, buf, len, timeout_ms, max_resp, out, &st,
					       need ? need : &ignored);
		else
			rc = grpc_unary(e->h2, path, buf, len, timeout_ms, out, &st);
		if (rc < 0)
			g_debug("%s: %s (grpc %d: %s)", path, g_strerror(-rc), st.code,
				st.message ? st.message : "");
		/* etcd forgot the token: refused before anything was done, so
		 * any call may go again with a new one. Twice: the token
		 * attached may already be newer than token_gen (taken when
		 * the request went out), and that renewal then logs in no one. */
		if (rc == -EKEYEXPIRED) {
			if (!e->auth || kind == CALL_LOGIN || renewed == 2)
				rc = -EACCES;
			else if ((rc = auth_renew(e->auth, token_gen, etcd_login, e)) == 0)
				rc = -EKEYEXPIRED;
			renewed++;
		}
		again = rc == -EKEYEXPIRED || rc == -ESRCH ||
			((kind == CALL_READ || kind == CALL_LOGIN) &&
			 (rc == -ECONNRESET || (rc == -EAGAIN && st.code == GRPC_UNAVAILABLE))) ||
			(kind == CALL_CHECK && (rc == -ECONNRESET || rc == -EAGAIN ||
						rc == -ETIMEDOUT || rc == -ENOTCONN));
		grpc_status_clear(&st);
		if (rc < 0 && e->doubt &&
		    (rc == -ETIMEDOUT || rc == -ENOTCONN || rc == -EAGAIN || rc == -ECONNRESET))
			e->doubt(e->doubt_ud);
		if (!again)
			break;
		if (rc == -EAGAIN || rc == -ENOTCONN)
			g_usleep(READ_RETRY_US);
		timeout_ms = (int)((deadline - g_get_monotonic_time()) / G_TIME_SPAN_MILLISECOND);
		if (timeout_ms <= 0)
			return -ETIMEDOUT;
	}
	if (rc == -ECONNRESET && kind == CALL_WRITE)
		rc = -ENOTCONN;
	return rc;
}

/* Packs req, calls path, unpacks the response as rd. A response longer than
 * max_resp bytes (0: any the transport takes) is not received: -EMSGSIZE,
 * with its length in *need. *bytes (if non-NULL) gets the response's
 * length. Returns 0 or -errno. */
static int call_capped(struct ef_etcd *e, const char *path, const ProtobufCMessage *req,
		       const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp,
		       enum call_kind kind, size_t max_resp, size_t *need, size_t *bytes)
{
	size_t len = protobuf_c_message_get_packed_size(req);
	g_autofree uint8_t *buf = g_malloc(len ? len : 1);
	g_autoptr(GBytes) out = NULL;
	const ProtobufCFieldDescriptor *hf;
	const Etcdserverpb__ResponseHeader *hdr;
	struct ef_fault fault;
	const uint8_t *data;
	uint64_t gen;
	gsize n;
	int rc;

	protobuf_c_message_pack(req, buf);
	gen = h2_generation(e->h2);
	rc = unary(e, path, buf, len, kind, max_resp, need, &out);
	/* A login's request holds the password. */
	if (kind == CALL_LOGIN)
		explicit_bzero(buf, len);
	if (rc < 0)
		return rc;
	data = g_bytes_get_data(out, &n);
	if (bytes)
		*bytes = n;
	*resp = protobuf_c_message_unpack(rd, NULL, n, data);
	if (!*resp)
		return refuse(e, path, "it does not decode");
	/* Every response of etcd's API has its ResponseHeader as "header". */
	hf = protobuf_c_message_descriptor_get_field_by_name(rd, "header");
	hdr = hf ? *(const Etcdserverpb__ResponseHeader **)((const char *)*resp + hf->offset) : NULL;
	rc = hdr ? cluster_check(e, gen, hdr->cluster_id) : 0;
	if (rc == 0 && reply_check(req, *resp, &fault) < 0)
		rc = refuse(e, path, fault.why);
	if (rc < 0) {
		protobuf_c_message_free_unpacked(*resp, NULL);
		*resp = NULL;
	}
	return rc;
}

static int call(struct ef_etcd *e, const char *path, const ProtobufCMessage *req,
		const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp, enum call_kind kind)
{
	return call_capped(e, path, req, rd, resp, kind, 0, NULL, NULL);
}

/* Checks (once per connection) that the member is of the mount's
 * cluster; *gen is the connection checked. 0 or -errno. */
static int member_check(struct ef_etcd *e, uint64_t *gen)
{
	Etcdserverpb__StatusRequest req = ETCDSERVERPB__STATUS_REQUEST__INIT;
	Etcdserverpb__StatusResponse *r = NULL;
	uint64_t before = h2_generation(e->h2), after;
	bool known;
	int rc;

	g_mutex_lock(&e->lock);
	known = before != 0 && e->checked_gen == before;
	g_mutex_unlock(&e->lock);
	*gen = before;
	if (known)
		return 0;
	/* call() checks the header; a failure here is the write's too. */
	rc = call(e, "/etcdserverpb.Maintenance/Status", &req.base,
		  &etcdserverpb__status_response__descriptor, (ProtobufCMessage **)&r, CALL_READ);
	if (rc < 0)
		return rc;
	etcdserverpb__status_response__free_unpacked(r, NULL);
	/* Marked only when it is clear which connection the check went
	 * over: the one before, or the first one, made for it. Otherwise
	 * the write is pinned to no connection at all, goes nowhere
	 * (-ESRCH), and the check runs again. */
	after = h2_generation(e->h2);
	if (after == before || (before == 0 && after == 1)) {
		g_mutex_lock(&e->lock);
		e->checked_gen = after;
		g_mutex_unlock(&e->lock);
		*gen = after;
	} else {
		*gen = UINT64_MAX;
	}
	return 0;
}

static struct ef_kv *kv_from_pb(const Mvccpb__KeyValue *p, bool keys_only)
{
	struct ef_kv *kv = g_new0(struct ef_kv, 1);

	kv->key = g_bytes_new(p->key.data, p->key.len);
	if (!keys_only)
		kv->value = g_bytes_new(p->value.data, p->value.len);
	kv->size = p->value.len;
	kv->create_revision = p->create_revision;
	kv->mod_revision = p->mod_revision;
	kv->version = p->version;
	kv->lease = p->lease;
	return kv;
}

static void range_init(Etcdserverpb__RangeRequest *rr, const struct ef_etcd *e)
{
	etcdserverpb__range_request__init(rr);
	rr->serializable = e->serializable;
	rr->revision = e->revision;
}

/* A keys-only Range of at most one key under prefix: "is anything there". */
static void probe_init(Etcdserverpb__RangeRequest *rr, const struct ef_etcd *e, GBytes *prefix,
		       GBytes *end, Etcdserverpb__RequestOp *op)
{
	range_init(rr, e);
	rr->key = bin_bytes(prefix);
	rr->range_end = bin_bytes(end);
	rr->limit = 1;
	rr->keys_only = true;
	etcdserverpb__request_op__init(op);
	op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
	op->request_range = rr;
}

/* One page of [key, end): the decoded response (free_unpacked by the
 * caller), its header already fed to revclock. */
static int range_call(struct ef_etcd *e, const void *key, size_t klen, const void *end,
		      size_t elen, int64_t limit, bool keys_only,
		      Etcdserverpb__RangeResponse **resp)
{
	Etcdserverpb__RangeRequest rr;
	int rc;

	range_init(&rr, e);
	rr.key = bin(key, klen);
	rr.range_end = bin(end, elen);
	rr.limit = limit;
	rr.keys_only = keys_only;
	rc = call(e, KV_PATH("Range"), &rr.base, &etcdserverpb__range_response__descriptor,
		  (ProtobufCMessage **)resp, CALL_READ);
	if (rc == 0)
		observe((*resp)->header);
	return rc;
}

int etcd_range(struct ef_etcd *e, const void *key, size_t klen, const void *end, size_t elen,
	       int64_t limit, bool keys_only, GPtrArray **kvs, bool *more, int64_t *rev)
{
	Etcdserverpb__RangeResponse *resp = NULL;
	int rc = range_call(e, key, klen, end, elen, limit, keys_only, &resp);

	if (rc < 0)
		return rc;
	*kvs = g_ptr_array_new_full(resp->n_kvs, (GDestroyNotify)ef_kv_free);
	for (size_t i = 0; i < resp->n_kvs; i++)
		g_ptr_array_add(*kvs, kv_from_pb(resp->kvs[i], keys_only));
	if (more)
		*more = resp->more;
	if (rev)
		*rev = resp->header ? resp->header->revision : 0;
	etcdserverpb__range_response__free_unpacked(resp, NULL);
	return 0;
}

/* Hands r's keys to fn without copying them. */
static void feed_keys(const Etcdserverpb__RangeResponse *r, etcd_keys_fn fn, void *ud)
{
	g_autofree const char **keys = g_new(const char *, r->n_kvs + 1);
	g_autofree size_t *lens = g_new(size_t, r->n_kvs + 1);

	for (size_t i = 0; i < r->n_kvs; i++) {
		keys[i] = (const char *)r->kvs[i]->key.data;
		lens[i] = r->kvs[i]->key.len;
	}
	fn(ud, keys, lens, r->n_kvs, r->more);
}

int etcd_range_keys(struct ef_etcd *e, const void *key, size_t klen, const void *end,
		    size_t elen, int64_t limit, etcd_keys_fn fn, void *ud, int64_t *rev)
{
	Etcdserverpb__RangeResponse *resp = NULL;
	int rc = range_call(e, key, klen, end, elen, limit, true, &resp);

	if (rc < 0)
		return rc;
	if (rev)
		*rev = resp->header ? resp->header->revision : 0;
	feed_keys(resp, fn, ud);
	etcdserverpb__range_response__free_unpacked(resp, NULL);
	return 0;
}

int etcd_range_page(struct ef_etcd *e, const struct ef_page_req *rq, struct ef_page *pg)
{
	Etcdserverpb__RangeResponse *resp = NULL;
	Etcdserverpb__RangeRequest rr;
	int rc;

	*pg = (struct ef_page){ 0 };
	range_init(&rr, e);
	rr.key = bin(rq->key, rq->klen);
	rr.range_end = bin(rq->end, rq->elen);
	rr.limit = rq->limit;
	rr.keys_only = rq->keys_only;
	rc = call_capped(e, KV_PATH("Range"), &rr.base, &etcdserverpb__range_response__descriptor,
			 (ProtobufCMessage **)&resp, CALL_READ, rq->max_bytes, &pg->need,
			 &pg->bytes);
	if (rc < 0)
		return rc;
	observe(resp->header);
	pg->more = resp->more;
	pg->count = resp->count;
	pg->n = resp->n_kvs;
	pg->rev = resp->header ? resp->header->revision : 0;
	feed_keys(resp, rq->keys_fn, rq->ud);
	pg->kvs = g_ptr_array_new_with_free_func((GDestroyNotify)ef_kv_free);
	for (size_t i = 0; i < resp->n_kvs; i++) {
		const Mvccpb__KeyValue *k = resp->kvs[i];

		if (rq->keep(rq->ud, (const char *)k->key.data, k->key.len))
			g_ptr_array_add(pg->kvs, kv_from_pb(k, rq->keys_only));
	}
	etcdserverpb__range_response__free_unpacked(resp, NULL);
	return 0;
}

/* One key as it was at revision rev (0: now), read through the leader
 * whatever the mount's read mode: the answers decide what became of a
 * write, or whether a cached value is current. */
static int get_one(struct ef_etcd *e, GBytes *key, int64_t rev, bool keys_only,
		   enum call_kind kind, struct ef_kv **kv)
{
	Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
	Etcdserverpb__RangeResponse *resp = NULL;
	int rc;

	rr.key = bin_bytes(key);
	rr.revision = rev ? rev : e->revision;
	rr.keys_only = keys_only;
	rc = call(e, KV_PATH("Range"), &rr.base, &etcdserverpb__range_response__descriptor,
		  (ProtobufCMessage **)&resp, kind);
	if (rc < 0)
		return rc;
	observe(resp->header);
	*kv = resp->n_kvs ? kv_from_pb(resp->kvs[0], keys_only) : NULL;
	etcdserverpb__range_response__free_unpacked(resp, NULL);
	return 0;
}

static int get_at(struct ef_etcd *e, GBytes *key, int64_t rev, struct ef_kv **kv)
{
	return get_one(e, key, rev, false, CALL_CHECK, kv);
}

int etcd_get_rev(struct ef_etcd *e, GBytes *key, int64_t rev, struct ef_kv **kv)
{
	return get_one(e, key, rev, false, CALL_READ, kv);
}

int etcd_mod_revision(struct ef_etcd *e, GBytes *key, int64_t *mod)
{
	struct ef_kv *kv = NULL;
	int rc = get_one(e, key, 0, true, CALL_READ, &kv);

	if (rc == 0)
		*mod = kv ? kv->mod_revision : 0;
	ef_kv_free(kv);
	return rc;
}

int etcd_get(struct ef_etcd *e, GBytes *key, struct ef_kv **kv)
{
	g_autoptr(GPtrArray) kvs = NULL;
	gsize klen;
	const void *k = g_bytes_get_data(key, &klen);
	int rc = etcd_range(e, k, klen, NULL, 0, 1, false, &kvs, NULL, NULL);

	if (rc < 0)
		return rc;
	*kv = kvs->len ? g_ptr_array_steal_index(kvs, 0) : NULL;
	return 0;
}

static bool ops_read_only(Etcdserverpb__RequestOp *const *ops, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (ops[i]->request_case != ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE)
			return false;
	return true;
}

static int txn_as(struct ef_etcd *e, Etcdserverpb__TxnRequest *req,
		  Etcdserverpb__TxnResponse **resp, enum call_kind kind)
{
	int rc = call(e, KV_PATH("Txn"), &req->base, &etcdserverpb__txn_response__descriptor,
		      (ProtobufCMessage **)resp, kind);

	if (rc == 0)
		observe((*resp)->header);
	return rc;
}

/* A Txn that only reads is sent again when its answer is lost. */
static int txn(struct ef_etcd *e, Etcdserverpb__TxnRequest *req, Etcdserverpb__TxnResponse **resp)
{
	bool ro = ops_read_only(req->success, req->n_success) &&
		  ops_read_only(req->failure, req->n_failure);

	return txn_as(e, req, resp, ro ? CALL_READ : CALL_WRITE);
}

/* The Range response of op i, or NULL if the server sent something else. */
static Etcdserverpb__RangeResponse *txn_range(const Etcdserverpb__TxnResponse *r, size_t i)
{
	if (i >= r->n_responses ||
	    r->responses[i]->response_case != ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE)
		return NULL;
	return r->responses[i]->response_range;
}

int etcd_lookup_pages(struct ef_etcd *e, GBytes *file_key, GBytes *dir_prefix,
		      const struct ef_lookup_pages *pg, struct ef_kv **kv, bool *has_children,
		      int64_t *rev)
{
	Etcdserverpb__RangeRequest rr[3];
	Etcdserverpb__RequestOp ops[3];
	Etcdserverpb__RequestOp *opp[] = { &ops[0], &ops[1], &ops[2] };
	Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
	Etcdserverpb__TxnResponse *resp = NULL;
	Etcdserverpb__RangeResponse *a, *b, *c = NULL;
	g_autoptr(GBytes) dend = NULL, lend = NULL;
	gsize len;
	const char *p;
	int rc;

	range_init(&rr[0], e);
	rr[0].key = bin_bytes(file_key);
	etcdserverpb__request_op__init(&ops[0]);
	ops[0].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
	ops[0].request_range = &rr[0];
	p = g_bytes_get_data(dir_prefix, &len);
	dend = keymap_prefix_end(p, len);
	probe_init(&rr[1], e, dir_prefix, dend, &ops[1]);
	if (pg && pg->child_fn)
		rr[1].limit = pg->child_limit;
	req.n_success = 2;
	if (pg && pg->list_dir) {
		p = g_bytes_get_data(pg->list_dir, &len);
		lend = keymap_prefix_end(p, len);
		probe_init(&rr[2], e, pg->list_dir, lend, &ops[2]);
		rr[2].limit = pg->list_limit;
		req.n_success = 3;
	}
	req.success = opp;
	rc = txn(e, &req, &resp);
	if (rc < 0)
		return rc;
	a = txn_range(resp, 0);
	b = txn_range(resp, 1);
	if (req.n_success == 3)
		c = txn_range(resp, 2);
	if (!a || !b || (req.n_success == 3 && !c)) {
		rc = -EPROTO;
		goto out;
	}
	*kv = a->n_kvs ? kv_from_pb(a->kvs[0], false) : NULL;
	*has_children = b->n_kvs > 0;
	if (rev)
		*rev = resp->header ? resp->header->revision : 0;
	if (pg && pg->child_fn)
		feed_keys(b, pg->child_fn, pg->child_ud);
	if (c)
		feed_keys(c, pg->list_fn, pg->list_ud);
out:
	etcdserverpb__txn_response__free_unpacked(resp, NULL);
	return rc;
}

int etcd_lookup_split(struct ef_etcd *e, GBytes *file_key, GBytes *dir_prefix,
		      struct ef_kv **kv, bool *has_children)
{
	int a = get_one(e, file_key, 0, false, CALL_READ, kv);
	int b;

	if (a < 0 && a != -EACCES)
		return a;
	if (a < 0)
		*kv = NULL;
	b = etcd_any(e, &dir_prefix, 1, has_children);
	if (b == -EACCES)
		*has_children = false;
	if ((b < 0 && b != -EACCES) || (a < 0 && b < 0)) {
		g_clear_pointer(kv, ef_kv_free);
		return b;
	}
	return 0;
}

int etcd_lookup(struct ef_etcd *e, GBytes *file_key, GBytes *dir_prefix, struct ef_kv **kv,
		bool *has_children)
{
	return etcd_lookup_pages(e, file_key, dir_prefix, NULL, kv, has_children, NULL);
}

/* One Txn: put if cmp holds. Returns 0 with *rev (if non-NULL) the
 * revision it made, failed (a -errno) when cmp did not hold, or the call's
 * -errno. */
static int put_if(struct ef_etcd *e, Etcdserverpb__PutRequest *put, Etcdserverpb__Compare *cmp,
		  int failed, int64_t *rev)
{
	Etcdserverpb__Compare *cmps[] = { cmp };
	Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT;
	Etcdserverpb__RequestOp *ops[] = { &op };
	Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
	Etcdserverpb__TxnResponse *resp = NULL;
	int rc;

	op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
	op.request_put = put;
	req.n_success = 1;
	req.success = ops;
	req.n_compare = 1;
	req.compare = cmps;
	rc = txn_as(e, &req, &resp, CALL_RESOLVE);
	if (rc < 0)
		return rc;
	if (!resp->succeeded)
		rc = failed;
	else if (rev)
		*rev = resp->header ? resp->header->revision : 0;
	etcdserverpb__txn_response__free_unpacked(resp, NULL);
	return rc;
}

/* cmp: key's create_revision is rev (0: the key does not exist). */
static void create_cmp_init(Etcdserverpb__Compare *cmp, GBytes *key, int64_t rev)
{
	etcdserverpb__compare__init(cmp);
	cmp->key = bin_bytes(key);
	cmp->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
	cmp->result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
	cmp->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
	cmp->create_revision = rev;
}

/* A Put guarded by a fence (and the key's own guard, when given): one Txn
 * that, when it fails, reads the fence's key to say which guard it was. */
static int put_fenced(struct ef_etcd *e, Etcdserverpb__PutRequest *put,
		      Etcdserverpb__Compare *guard, const struct ef_fence *fence, int64_t *mod)
{
	Etcdserverpb__Compare fc;
	Etcdserverpb__Compare *cmps[] = { &fc, guard };
	Etcdserverpb__RangeRequest rr;
	Etcdserverpb__RequestOp ok = ETCDSERVERPB__REQUEST_OP__INIT;
	Etcdserverpb__RequestOp probe = ETCDSERVERPB__REQUEST_OP__INIT;
	Etcdserverpb__RequestOp *oks[] = { &ok }, *probes[] = { &probe };
	Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
	Etcdserverpb__TxnResponse *resp = NULL;
	Etcdserverpb__RangeResponse *r;
	int rc;

	create_cmp_init(&fc, fence->key, fence->create_rev);
	ok.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
	ok.request_put = put;
	etcdserverpb__range_request__init(&rr);
	rr.key = fc.key;
	rr.keys_only = true;
	probe.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
	probe.request_range = &rr;
	req.n_compare = guard ? 2 : 1;
	req.compare = cmps;
	req.n_success = 1;
	req.success = oks;
	req.n_failure = 1;
	req.failure = probes;
	rc = txn_as(e, &req, &resp, CALL_RESOLVE);
	if (rc < 0)
		return rc;
	if (resp->succeeded) {
		if (mod)
			*mod = resp->header ? resp->header->revision : 0;
	} else if (!(r = txn_range(resp, 0))) {
		rc = -EPROTO;
	} else {
		bool held = r->n_kvs == 1 && r->kvs[0]->create_revision == fence->create_rev;

		rc = held ? -ESTALE : -ENOLCK;
	}
	etcdserverpb__txn_response__free_unpacked(resp, NULL);
	return rc;
}

/* One Put: guarded by expect_mod (>= 0: the key's mod_revision must be
 * it), else bounded by bound (the key's mod_revision must be at most it),
 * and fenced when fence is given. A failed guard or bound is -ESTALE. */
static int put_once(struct ef_etcd *e, GBytes *key, const void *val, size_t vlen, int64_t lease,
		    int64_t expect_mod, int64_t bound, const struct ef_fence *fence, int64_t *mod)
{
	Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
	Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT;

	put.key = bin_bytes(key);
	put.value = bin(val, vlen);
	put.lease = lease;
	/* An absent key compares as mod_revision 0. */
	cmp.key = put.key;
	cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
	cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
	if (expect_mod >= 0) {
		cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
		cmp.mod_revision = expect_mod;
	} else {
		cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS;
		cmp.mod_revision = bound + 1;
	}
	if (fence)
		return put_fenced(e, &put, &cmp, fence, mod);
	return put_if(e, &put, &cmp, -ESTALE, mod);
}

/* Versions of a key walked back in search of a lost write. */
#define RESOLVE_STEPS 8

/*
 * Whether a Put whose answer was lost was applied: read back, not guessed.
 * since is a revision seen before the Put went out, so the Put, if applied,
 * made a newer one. The key's versions newer than since are walked back
 * from the current one: one with the Put's value and lease is the Put
 * (someone writing the very same bytes meanwhile could not be told apart,
 * and would not matter). Returns 1 (applied, at *mod), 0 (not applied:
 * the key is absent, or unchanged since), -ESTALE (not applied, and others
 * changed the key since), or -ETIMEDOUT when etcd cannot tell (a delete in
 * between, a compacted revision, no answer).
 */
static int put_applied(struct ef_etcd *e, GBytes *key, const void *val, size_t vlen,
		       int64_t lease, int64_t since, int64_t *mod)
{
	int64_t at = 0;

	for (int i = 0; i < RESOLVE_STEPS; i++) {
		struct ef_kv *kv = NULL;
		bool ours;
		int64_t rev;

		if (get_at(e, key, at, &kv) < 0)
			return -ETIMEDOUT;
		/* Absent now: the Put did not land (or was deleted after it,
		 * which a Range cannot see). Absent further back: a delete
		 * hides the history. */
		if (!kv)
			return i == 0 ? 0 : -ETIMEDOUT;
		rev = kv->mod_revision;
		ours = rev > since && kv->lease == lease && kv->size == vlen &&
		       (vlen == 0 || memcmp(g_bytes_get_data(kv->value, NULL), val, vlen) == 0);
		ef_kv_free(kv);
		if (ours) {
			if (mod)
				*mod = rev;
			return 1;
		}
		if (rev <= since)
			return i == 0 ? 0 : -ESTALE;
		at = rev - 1;
	}
	return -ETIMEDOUT;
}

/* Sends of one write, the first included, while each one's outcome is
 * unknown and found to be "not applied". */
#define WRITE_TRIES 2
/* Sends of an unguarded Put whose bound failed: another writer changed the
 * key each time between what this mount had seen and the Put. */
#define BOUND_TRIES 8

/* A write's outcome is unknown: its answer was lost, or did not come in
 * time (etcd may still apply it; during an election a proposal sent to a
 * leader that died is lost without an answer). */
static bool outcome_unknown(int rc)
{
	return rc == -ECONNRESET || rc == -ETIMEDOUT;
}

/*
 * An unguarded Put (last writer wins) is still bounded: it applies only
 * while the key's mod_revision is at most a revision this mount has seen.
 * Normally the key has not changed since and it applies as a plain Put
 * would; when another writer changed it in between, the bound fails and
 * the Put goes again, past that change. What the bound buys: a copy of
 * the Put delayed in a member that froze with it unread, and sent again
 * meanwhile because its answer was lost, can never land after a later
 * change and undo it.
 */
int etcd_put(struct ef_etcd *e, GBytes *key, const void *val, size_t vlen, int64_t lease,
	     int64_t expect_mod, const struct ef_fence *fence, int64_t *mod)
{
	/* since of the first send whose outcome was unknown (0: none yet). */
	int64_t lost = 0;
	int bounded = 0, resends = 0;

	for (;;) {
		int64_t since = MAX(revclock_latest(), expect_mod);
		int rc = put_once(e, key, val, vlen, lease, expect_mod, since, fence, mod);

		/* After a resend, a failed guard or bound may be the copy
		 * whose answer was lost, landed meanwhile: read back. */
		if (rc == -ESTALE && lost)
			rc = -ECONNRESET;
		else if (rc == -ESTALE && expect_mod < 0)
			/* The failed Txn's header moved revclock past the
			 * change: the next bound is past it. */
			rc = ++bounded < BOUND_TRIES ? -EINPROGRESS : -EAGAIN;
		if (rc == -EINPROGRESS)
			continue;
		if (!outcome_unknown(rc))
			return rc;
		if (!lost)
			lost = since;
		rc = put_applied(e, key, val, vlen, lease, lost, mod);
		g_debug("etcd: a Put's outcome was unknown; applied: %d", rc);
		if (rc == 1)
			return 0;
		/* Not applied, and others wrote meanwhile: a guarded Put would
		 * fail its guard; an unguarded one goes after theirs, as it
		 * could have anyway. */
		if (rc == -ESTALE && expect_mod >= 0)
			return -ESTALE;
		if (rc == -ETIMEDOUT || ++resends == WRITE_TRIES)
			return -ETIMEDOUT;
	}
}

static int delete_once(struct ef_etcd *e, GBytes *key, GBytes *end, int64_t *deleted)
{
	Etcdserverpb__DeleteRangeRequest req = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
	Etcdserverpb__DeleteRangeResponse *resp = NULL;
	int rc;

	req.key = bin_bytes(key);
	req.range_end = bin_bytes(end);
	rc = call(e, KV_PATH("DeleteRange"), &req.base,
		  &etcdserverpb__delete_range_response__descriptor, (ProtobufCMessage **)&resp,
		  end ? CALL_WRITE : CALL_RESOLVE);
	if (rc < 0)
		return rc;
	observe(resp->header);
	if (deleted)
		*deleted = resp->deleted;
	etcdserverpb__delete_range_response__free_unpacked(resp, NULL);
	return 0;
}

/*
 * Whether the delete of one key whose answer was lost was applied: the key
 * absent now, or written by others since (the delete came first), counts
 * as deleted; unchanged since, it was not. Returns 1, 0 or -ETIMEDOUT.
 */
static int delete_applied(struct ef_etcd *e, GBytes *key, int64_t since)
{
	struct ef_kv *kv = NULL;
	bool gone;

	if (get_at(e, key, 0, &kv) < 0)
		return -ETIMEDOUT;
	gone = !kv || kv->mod_revision > since;
	ef_kv_free(kv);
	return gone;
}

int etcd_delete_if_lease(struct ef_etcd *e, GBytes *key, int64_t lease)
{
	Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT;
	Etcdserverpb__Compare *cmps[] = { &cmp };
	Etcdserverpb__DeleteRangeRequest del = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
	Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT;
	Etcdserverpb__RequestOp *ops[] = { &op };
	Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
	Etcdserverpb__TxnResponse *resp = NULL;
	int rc;

	cmp.key = bin_bytes(key);
	cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE;
	cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
	cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE;
	cmp.lease = lease;
	del.key = bin_bytes(key);
	op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
	op.request_delete_range = &del;
	req.n_compare = 1;
	req.compare = cmps;
	req.n_success = 1;
	req.success = ops;
	/* Guarded by the lease: the caller may send it again when its answer
	 * is lost (a copy that landed leaves nothing for the next). */
	rc = txn_as(e, &req, &resp, CALL_WRITE);
	if (rc == 0)
		etcdserverpb__txn_response__free_unpacked(resp, NULL);
	return rc;
}

int etcd_delete(struct ef_etcd *e, GBytes *key, GBytes *end, int64_t *deleted)
{
	for (int tries = 1;; tries++) {
		int64_t since = revclock_latest();
		int rc = delete_once(e, key, end, deleted);

		if (!outcome_unknown(rc) || end)
			return rc == -ECONNRESET ? -ENOTCONN : rc;
		rc = delete_applied(e, key, since);
		if (rc == 1 && deleted)
			*deleted = 1;
		if (rc == 1)
			return 0;
		if (rc < 0 || tries == WRITE_TRIES)
			return -ETIMEDOUT;
	}
}

int etcd_any(struct ef_etcd *e, GBytes *const *prefixes, size_t n, bool *any)
{
	g_autofree Etcdserverpb__RangeRequest *rr = g_new(Etcdserverpb__RangeRequest, n);
	g_autofree Etcdserverpb__RequestOp *ops = g_new(Etcdserverpb__RequestOp, n);
	g_autofree Etcdserverpb__RequestOp **opp = g_new(Etcdserverpb__RequestOp *, n);
	g_autoptr(GPtrArray) ends = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
	Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
	Etcdserverpb__TxnResponse *resp = NULL;
	int rc;

	for (size_t i = 0; i < n; i++) {
		gsize len;
		const char *p = g_bytes_get_data(prefixes[i], &len);

		g_ptr_array_add(ends, keymap_prefix_end(p, len));
		probe_init(&rr[i], e, prefixes[i], ends->pdata[i], &ops[i]);
		opp[i] = &ops[i];
	}
	req.n_success = n;
	req.success = opp;
	rc = txn(e, &req, &resp);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < n && rc == 0; i++) {
		Etcdserverpb__RangeResponse *r = txn_range(resp, i);

		if (!r)
			rc = -EPROTO;
		else
			any[i] = r->n_kvs > 0;
	}
	etcdserverpb__txn_response__free_unpacked(resp, NULL);
	return rc;
}

static int unlink_once(struct ef_etcd *e, GBytes *key, GBytes *probe, int64_t *deleted,
		       bool *probe_any)
{
	Etcdserverpb__DeleteRangeRequest del = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
	Etcdserverpb__RangeRequest rr;
	Etcdserverpb__RequestOp od = ETCDSERVERPB__REQUEST_OP__INIT, op;
	Etcdserverpb__RequestOp *ops[] = { &od, &op };
	Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
	Etcdserverpb__TxnResponse *resp = NULL;
	gsize plen;
	const char *p = g_bytes_get_data(probe, &plen);
	g_autoptr(GBytes) end = keymap_prefix_end(p, plen);
	int rc;

	del.key = bin_bytes(key);
	od.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
	od.request_delete_range = &del;
	probe_init(&rr, e, probe, end, &op);
	req.n_success = 2;
	req.success = ops;
	rc = txn_as(e, &req, &resp, CALL_RESOLVE);
	if (rc < 0)
		return rc;
	if (resp->n_responses != 2 || resp->responses[0]->response_case !=
	    ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE || !txn_range(resp, 1)) {
		rc = -EPROTO;
	} else {
		*deleted = resp->responses[0]->response_delete_range->deleted;
		*probe_any = txn_range(resp, 1)->n_kvs > 0;
	}
	etcdserverpb__txn_response__free_unpacked(resp, NULL);
	return rc;
}

int etcd_unlink(struct ef_etcd *e, GBytes *key, GBytes *probe, int64_t *deleted, bool *probe_any)
{
	for (int tries = 1;; tries++) {
		int64_t since = revclock_latest();
		int rc = unlink_once(e, key, probe, deleted, probe_any);

		if (!outcome_unknown(rc))
			return rc;
		rc = delete_applied(e, key, since);
		if (rc == 1) {
			*deleted = 1;
			return etcd_any(e, &probe, 1, probe_any) < 0 ? -ETIMEDOUT : 0;
		}
		if (rc < 0 || tries == WRITE_TRIES)
			return -ETIMEDOUT;
	}
}

/* ---- rename ---- */

/* Storage for one rename Txn's request structs, so building it needs no
 * per-op allocation bookkeeping beyond a few arrays. */
struct txn_build {
	Etcdserverpb__Compare *cmp;
	Etcdserverpb__Compare **cmps;
	size_t n_cmp;
	Etcdserverpb__PutRequest *puts;
	Etcdserverpb__DeleteRangeRequest *dels;
	size_t n_dels;
	Etcdserverpb__RequestOp *ops;
	Etcdserverpb__RequestOp **opp;
	size_t n_ops;
};

static Etcdserverpb__Compare *add_cmp(struct txn_build *t, GBytes *key, GBytes *end,
				      Etcdserverpb__Compare__CompareTarget target,
				      Etcdserverpb__Compare__CompareResult result, int64_t v)
{
	Etcdserverpb__Compare *c = &t->cmp[t->n_cmp];

	etcdserverpb__compare__init(c);
	c->key = bin_bytes(key);
	c->range_end = bin_bytes(end);
	c->target = target;
	c->result = result;
	if (target == ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD) {
		c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
		c->mod_revision = v;
	} else {
		c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
		c->version = v;
	}
	t->cmps[t->n_cmp++] = c;
	return c;
}

static void add_del(struct txn_build *t, GBytes *key, GBytes *end)
{
	Etcdserverpb__DeleteRangeRequest *d = &t->dels[t->n_dels++];
	Etcdserverpb__RequestOp *op = &t->ops[t->n_ops];

	etcdserverpb__delete_range_request__init(d);
	d->key = bin_bytes(key);
	d->range_end = bin_bytes(end);
	etcdserverpb__request_op__init(op);
	op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
	op->request_delete_range = d;
	t->opp[t->n_ops++] = op;
}

static bool in_range(GBytes *k, GBytes *start, GBytes *end)
{
	return g_bytes_compare(k, start) >= 0 && g_bytes_compare(k, end) < 0;
}

static bool is_destination(const struct ef_rename *r, GBytes *key)
{
	for (size_t i = 0; i < r->n_moves; i++)
		if (g_bytes_equal(r->moves[i].dst, key))
			return true;
	return false;
}

static void build_rename(struct txn_build *t, const struct ef_rename *r)
{
	for (size_t i = 0; i < r->n_moves; i++) {
		const struct ef_move *m = &r->moves[i];
		Etcdserverpb__PutRequest *p = &t->puts[i];
		Etcdserverpb__RequestOp *op = &t->ops[t->n_ops];

		add_cmp(t, m->src->key, NULL, ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD,
			ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL, m->src->mod_revision);
		etcdserverpb__put_request__init(p);
		p->key = bin_bytes(m->dst);
		p->value = bin_bytes(m->src->value);
		p->lease = m->src->lease;
		etcdserverpb__request_op__init(op);
		op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
		op->request_put = p;
		t->opp[t->n_ops++] = op;
	}
	if (r->del_key)
		add_del(t, r->del_key, r->del_end);
	for (size_t i = 0; i < r->n_moves; i++)
		if ((!r->del_key || !in_range(r->moves[i].src->key, r->del_key, r->del_end)) &&
		    !is_destination(r, r->moves[i].src->key))
			add_del(t, r->moves[i].src->key, NULL);
	/* A key created or changed under the source after guard_rev has
	 * mod_revision > guard_rev; an unchanged one has <= guard_rev. */
	if (r->guard_key)
		add_cmp(t, r->guard_key, r->guard_end, ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD,
			ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS, r->guard_rev + 1);
	if (r->guard2_key)
		add_cmp(t, r->guard2_key, r->guard2_end, ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD,
			ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS, r->guard2_rev + 1);
	for (size_t i = 0; i < r->n_gone; i++)
		add_cmp(t, r->gone[i], NULL, ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION,
			ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL, 0);
	/* Over a range with no keys, etcd compares against a zero KeyValue,
	 * so "version == 0" holds exactly when the range is empty. */
	if (r->empty_key)
		add_cmp(t, r->empty_key, r->empty_end, ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION,
			ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL, 0);
	if (r->absent_key)
		add_cmp(t, r->absent_key, NULL, ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION,
			ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL, 0);
}

/* After a failed rename Txn: which guard failed, read in the failure branch. */
static int rename_failure(const Etcdserverpb__TxnResponse *resp, const struct ef_rename *r)
{
	size_t i = 0;
	Etcdserverpb__RangeResponse *rr;

	if (r->empty_key) {
		rr = txn_range(resp, i++);
		if (rr && rr->n_kvs)
			return -ENOTEMPTY;
	}
	if (r->absent_key) {
		rr = txn_range(resp, i++);
		if (rr && rr->n_kvs)
			return -EEXIST;
	}
	return -ESTALE;
}

int etcd_rename(struct ef_etcd *e, const struct ef_rename *r)
{
	size_t max_ops = 2 * r->n_moves + 2, max_cmp = r->n_moves + 4 + r->n_gone;
	struct txn_build t = {
		.cmp = g_new(Etcdserverpb__Compare, max_cmp),
		.cmps = g_new(Etcdserverpb__Compare *, max_cmp),
		.puts = g_new(Etcdserverpb__PutRequest, r->n_moves ? r->n_moves : 1),
		.dels = g_new(Etcdserverpb__DeleteRangeRequest, r->n_moves + 1),
		.ops = g_new(Etcdserverpb__RequestOp, max_ops),
		.opp = g_new(Etcdserverpb__RequestOp *, max_ops),
	};
	Etcdserverpb__RangeRequest probe[2], sprobe;
	g_autoptr(GBytes) probe_end = NULL;
	Etcdserverpb__RequestOp fops[2];
	Etcdserverpb__RequestOp *fopp[2];
	Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
	Etcdserverpb__TxnResponse *resp = NULL;
	size_t nf = 0;
	int rc;

	build_rename(&t, r);
	if (r->probe) {
		gsize plen;
		const char *p = g_bytes_get_data(r->probe, &plen);

		/* Ops later in a Txn see the earlier ones' writes. */
		probe_end = keymap_prefix_end(p, plen);
		probe_init(&sprobe, e, r->probe, probe_end, &t.ops[t.n_ops]);
		t.opp[t.n_ops] = &t.ops[t.n_ops];
		t.n_ops++;
	}
	/* The failure branch reads what the error needs to name. */
	if (r->empty_key) {
		range_init(&probe[nf], e);
		probe[nf].key = bin_bytes(r->empty_key);
		probe[nf].range_end = bin_bytes(r->empty_end);
		probe[nf].limit = 1;
		probe[nf].keys_only = true;
		nf++;
	}
	if (r->absent_key) {
		range_init(&probe[nf], e);
		probe[nf].key = bin_bytes(r->absent_key);
		probe[nf].keys_only = true;
		nf++;
	}
	for (size_t i = 0; i < nf; i++) {
		etcdserverpb__request_op__init(&fops[i]);
		fops[i].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
		fops[i].request_range = &probe[i];
		fopp[i] = &fops[i];
	}
	req.n_compare = t.n_cmp;
	req.compare = t.cmps;
	req.n_success = t.n_ops;
	req.success = t.opp;
	req.n_failure = nf;
	req.failure = fopp;
	rc = txn(e, &req, &resp);
	if (rc == 0) {
		if (!resp->succeeded)
			rc = rename_failure(resp, r);
		else if (r->rev)
			*r->rev = resp->header ? resp->header->revision : 0;
		if (rc == 0 && r->probe) {
			Etcdserverpb__RangeResponse *pr = txn_range(resp, resp->n_responses - 1);

			/* Applied, whatever the probe says: assume the
			 * directory still has keys if the answer is odd. */
			*r->probe_any = !pr || pr->n_kvs > 0;
		}
		etcdserverpb__txn_response__free_unpacked(resp, NULL);
	}
	g_free(t.cmp);
	g_free(t.cmps);
	g_free(t.puts);
	g_free(t.dels);
	g_free(t.ops);
	g_free(t.opp);
	return rc;
}

/* ---- Watch ---- */

void etcd_watch_msg_free(struct ef_watch_msg *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n_events; i++)
		ef_kv_free(m->events[i].kv);
	g_free(m->events);
	g_free(m->cancel_reason);
	g_free(m);
}

/* What watch.c counts on: no empty key (etcd has none), and revisions
 * that are positive (a header's may be 0: absent) and below INT64_MAX,
 * because the watch resumes from the one after. */
static bool watch_response_ok(const Etcdserverpb__WatchResponse *r)
{
	if (r->header && (r->header->revision < 0 || r->header->revision == INT64_MAX))
		return false;
	for (size_t i = 0; i < r->n_events; i++) {
		const Mvccpb__KeyValue *kv = r->events[i]->kv;

		if (kv && (kv->key.len == 0 || kv->mod_revision <= 0 ||
			   kv->mod_revision == INT64_MAX))
			return false;
	}
	return true;
}

static struct ef_watch_msg *watch_msg_from_pb(const Etcdserverpb__WatchResponse *r)
{
	struct ef_watch_msg *m = g_new0(struct ef_watch_msg, 1);

	m->watch_id = r->watch_id;
	m->revision = r->header ? r->header->revision : 0;
	m->cluster_id = r->header ? r->header->cluster_id : 0;
	m->created = r->created;
	m->canceled = r->canceled;
	m->compact_revision = r->compact_revision;
	if (r->cancel_reason && *r->cancel_reason)
		m->cancel_reason = g_strdup(r->cancel_reason);
	m->events = g_new0(struct ef_watch_event, r->n_events ? r->n_events : 1);
	for (size_t i = 0; i < r->n_events; i++) {
		const Mvccpb__Event *ev = r->events[i];

		if (!ev->kv)
			continue;
		m->events[m->n_events].deleted = ev->type == MVCCPB__EVENT__EVENT_TYPE__DELETE;
		m->events[m->n_events].kv = kv_from_pb(ev->kv, false);
		m->n_events++;
	}
	return m;
}

struct ef_watch_msg *etcd_watch_msg_parse(const uint8_t *data, size_t len)
{
	Etcdserverpb__WatchResponse *r = etcdserverpb__watch_response__unpack(NULL, len, data);
	struct ef_watch_msg *m;

	if (!r)
		return NULL;
	m = watch_response_ok(r) ? watch_msg_from_pb(r) : NULL;
	etcdserverpb__watch_response__free_unpacked(r, NULL);
	return m;
}

/* Beyond this, a response etcd sent in fragments is refused: a bound on
 * what one message may cost (etcd's batches hold up to 1,000 revisions). */
#define WATCH_MAX_ASSEMBLED (1024u << 20)

struct watch_adapter {
	struct ef_etcd *e;
	const struct ef_watch_ops *ops;
	void *ud;
	struct ef_watch_check chk; /* I/O thread only */
	bool broken;               /* I/O thread only: a message was refused */
	struct ef_watch_msg *partial; /* I/O thread only: the fragments so far */
	size_t partial_bytes;      /* I/O thread only */
};

/* Adds m's events to a->partial (taking m). Returns false past the bound. */
static bool watch_gather(struct watch_adapter *a, struct ef_watch_msg *m)
{
	struct ef_watch_msg *p = a->partial;

	for (size_t i = 0; i < m->n_events; i++)
		a->partial_bytes += g_bytes_get_size(m->events[i].kv->key) +
				    (m->events[i].kv->value ? m->events[i].kv->size : 0);
	if (!p) {
		a->partial = m;
	} else {
		p->events = g_renew(struct ef_watch_event, p->events, p->n_events + m->n_events);
		memcpy(p->events + p->n_events, m->events, m->n_events * sizeof(*m->events));
		p->n_events += m->n_events;
		p->revision = m->revision;
		m->n_events = 0;
		etcd_watch_msg_free(m);
	}
	return a->partial_bytes <= WATCH_MAX_ASSEMBLED;
}

/* The stream's next message, checked (reply.h); NULL: it must not be
 * used, and neither may anything after it on this stream, unless *more
 * (a fragment, kept until its response is whole). */
static struct ef_watch_msg *watch_decode(struct watch_adapter *a, const uint8_t *msg, size_t len,
				       bool *more)
{
	Etcdserverpb__WatchResponse *r = etcdserverpb__watch_response__unpack(NULL, len, msg);
	struct ef_watch_msg *m = NULL;
	struct ef_fault fault;

	if (!r) {
		refuse(a->e, "Watch", "it does not decode");
		return NULL;
	}
	/* On the I/O thread: the connection now is the one it came on. */
	if (!r->header || cluster_check(a->e, h2_generation(a->e->h2), r->header->cluster_id) == 0) {
		if (reply_check_watch(&a->chk, r, &fault) < 0)
			refuse(a->e, "Watch", fault.why);
		else if (!watch_response_ok(r))
			refuse(a->e, "Watch", "an empty key, or a revision out of bounds");
		else
			m = watch_msg_from_pb(r);
	}
	/* A response in fragments goes up whole: a revision's events may
	 * span two of them, and a watcher resumes after whole revisions. */
	if (m && (r->fragment || a->partial)) {
		if (!watch_gather(a, m)) {
			refuse(a->e, "Watch", "a response of more than 1 GiB in fragments");
			m = NULL;
		} else if (r->fragment) {
			m = NULL;
			etcdserverpb__watch_response__free_unpacked(r, NULL);
			*more = true;
			return NULL;
		} else {
			m = g_steal_pointer(&a->partial);
			a->partial_bytes = 0;
		}
	}
	etcdserverpb__watch_response__free_unpacked(r, NULL);
	return m;
}

/*
 * A message that is refused (undecodable, from another cluster, or
 * breaking etcd's promises) goes up as NULL, which makes the watcher start
 * over as after a lost stream (on another member, for another cluster);
 * what the stream sends after it is dropped: it could only be read in
 * the light of what was refused.
 */
static void watch_on_message(void *ud, const uint8_t *msg, size_t len)
{
	struct watch_adapter *a = ud;
	struct ef_watch_msg *m;
	bool more = false;

	if (a->broken)
		return;
	m = watch_decode(a, msg, len, &more);
	if (more) {
		/* A response of many fragments may take long to arrive: the
		 * watcher must not take the wait for silence. */
		m = g_new0(struct ef_watch_msg, 1);
		m->fragment = true;
		m->events = g_new0(struct ef_watch_event, 1);
		a->ops->on_msg(a->ud, m);
		return;
	}
	if (!m)
		a->broken = true;
	else if (m->revision)
		revclock_observe(m->revision);
	a->ops->on_msg(a->ud, m);
}

static void watch_adapter_free(struct watch_adapter *a)
{
	etcd_watch_msg_free(a->partial);
	reply_watch_clear(&a->chk);
	g_free(a);
}

static void watch_on_close(void *ud, int err, const struct ef_grpc_status *st)
{
	struct watch_adapter *a = ud;

	a->ops->on_close(a->ud, err ? err : -grpc_status_errno(st->code, st->message));
	watch_adapter_free(a);
}

static const struct ef_grpc_stream_ops watch_stream_ops = {
	.on_message = watch_on_message,
	.on_close = watch_on_close,
};

/* Packs msg and sends it on s; with last, the request side ends there. */
static int stream_send_msg(struct ef_grpc_stream *s, const ProtobufCMessage *msg, bool last)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	g_autofree uint8_t *buf = g_malloc(len ? len : 1);

	protobuf_c_message_pack(msg, buf);
	return last ? grpc_stream_send_last(s, buf, len) : grpc_stream_send(s, buf, len);
}

static int watch_send(struct ef_grpc_stream *s, Etcdserverpb__WatchRequest *req)
{
	return stream_send_msg(s, &req->base, false);
}

int etcd_watch_open(struct ef_etcd *e, GBytes *key, GBytes *end, int64_t start_rev,
		    const struct ef_watch_ops *ops, void *ud, struct ef_grpc_stream **out)
{
	Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
	Etcdserverpb__WatchRequest req = ETCDSERVERPB__WATCH_REQUEST__INIT;
	struct watch_adapter *a = g_new0(struct watch_adapter, 1);
	int rc;

	a->e = e;
	a->ops = ops;
	a->ud = ud;
	reply_watch_init(&a->chk, key, end, start_rev);
	rc = grpc_stream_open(e->h2, "/etcdserverpb.Watch/Watch", &watch_stream_ops, a, out);
	if (rc < 0) {
		/* on_close runs once whatever happens (etcd.h). */
		watch_adapter_free(a);
		ops->on_close(ud, rc);
		return rc;
	}
	cr.key = bin_bytes(key);
	cr.range_end = bin_bytes(end);
	cr.start_revision = start_rev;
	cr.progress_notify = true;
	/* Else a response over the message size limit (a batch of big
	 * values after an outage) could never be taken. */
	cr.fragment = true;
	req.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
	req.create_request = &cr;
	rc = watch_send(*out, &req);
	if (rc < 0) {
		/* on_close frees the adapter. */
		grpc_stream_free(*out);
		*out = NULL;
	}
	return rc;
}

int etcd_watch_request_progress(struct ef_grpc_stream *s)
{
	Etcdserverpb__WatchProgressRequest pr = ETCDSERVERPB__WATCH_PROGRESS_REQUEST__INIT;
	Etcdserverpb__WatchRequest req = ETCDSERVERPB__WATCH_REQUEST__INIT;

	req.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST;
	req.progress_request = &pr;
	return watch_send(s, &req);
}

void etcd_watch_close(struct ef_grpc_stream *s)
{
	grpc_stream_free(s);
}

/* ---- Health ---- */

int etcd_probe(struct ef_etcd *e, int timeout_ms, uint64_t *leader)
{
	Etcdserverpb__StatusRequest req = ETCDSERVERPB__STATUS_REQUEST__INIT;
	Etcdserverpb__StatusResponse *resp = NULL;
	g_autoptr(GBytes) out = NULL;
	struct ef_grpc_status st = { 0 };
	struct ef_fault fault;
	uint8_t buf[1];
	size_t len = protobuf_c_message_pack(&req.base, buf);
	uint64_t gen = h2_generation(e->h2);
	int rc = grpc_unary_leader(e->h2, "/etcdserverpb.Maintenance/Status", buf, len, timeout_ms,
				   &out, &st);

	/* Only etcd's "no leader" means no leader: a stream refused or
	 * throttled is a failed probe, not a lost leader. */
	if (rc == -EAGAIN && !(st.code == GRPC_UNAVAILABLE && st.message &&
			       strstr(st.message, "no leader")))
		rc = -EBUSY;
	grpc_status_clear(&st);
	if (rc == 0) {
		resp = etcdserverpb__status_response__unpack(NULL, g_bytes_get_size(out),
							     g_bytes_get_data(out, NULL));
		if (!resp)
			rc = refuse(e, "Status", "it does not decode");
		else if (resp->header && cluster_check(e, gen, resp->header->cluster_id) < 0)
			rc = -EPROTO;
		else if (reply_check(&req.base, &resp->base, &fault) < 0)
			rc = refuse(e, "Status", fault.why);
		else if (resp->leader == 0)
			rc = -EAGAIN;
		if (leader && (rc == 0 || rc == -EAGAIN))
			*leader = resp->leader;
		if (resp)
			etcdserverpb__status_response__free_unpacked(resp, NULL);
	}
	if (e->doubt && (rc == -ETIMEDOUT || rc == -ENOTCONN || rc == -EAGAIN || rc == -ECONNRESET ||
			 rc == -EBUSY))
		e->doubt(e->doubt_ud);
	return rc == -ECONNRESET ? -ENOTCONN : rc;
}

/* ---- Cluster status ---- */

#define MAINT_PATH(m) "/etcdserverpb.Maintenance/" m

static struct ef_header header_from_pb(const Etcdserverpb__ResponseHeader *h)
{
	struct ef_header out = { 0 };

	if (h)
		out = (struct ef_header){ h->cluster_id, h->member_id, h->revision, h->raft_term };
	return out;
}

static char **strv_from_pb(char **v, size_t n)
{
	char **out = g_new0(char *, n + 1);

	for (size_t i = 0; i < n; i++)
		out[i] = g_strdup(v[i]);
	return out;
}

void ef_status_clear(struct ef_status *s)
{
	g_free(s->version);
	g_strfreev(s->errors);
	*s = (struct ef_status){ 0 };
}

int etcd_status(struct ef_etcd *e, struct ef_status *s)
{
	Etcdserverpb__StatusRequest req = ETCDSERVERPB__STATUS_REQUEST__INIT;
	Etcdserverpb__StatusResponse *r = NULL;
	int rc = call(e, MAINT_PATH("Status"), &req.base, &etcdserverpb__status_response__descriptor,
		      (ProtobufCMessage **)&r, CALL_READ);

	*s = (struct ef_status){ 0 };
	if (rc < 0)
		return rc;
	s->header = header_from_pb(r->header);
	s->version = g_strdup(r->version);
	s->db_size = r->dbsize;
	s->db_size_in_use = r->dbsizeinuse;
	s->leader = r->leader;
	s->raft_index = r->raftindex;
	s->raft_term = r->raftterm;
	s->raft_applied_index = r->raftappliedindex;
	s->errors = strv_from_pb(r->errors, r->n_errors);
	s->learner = r->islearner;
	etcdserverpb__status_response__free_unpacked(r, NULL);
	return 0;
}

void ef_members_free(struct ef_member_info *m, size_t n)
{
	for (size_t i = 0; m && i < n; i++) {
		g_free(m[i].name);
		g_strfreev(m[i].peer_urls);
		g_strfreev(m[i].client_urls);
	}
	g_free(m);
}

int etcd_member_list(struct ef_etcd *e, struct ef_header *h, struct ef_member_info **members,
		     size_t *n)
{
	Etcdserverpb__MemberListRequest req = ETCDSERVERPB__MEMBER_LIST_REQUEST__INIT;
	Etcdserverpb__MemberListResponse *r = NULL;
	int rc = call(e, "/etcdserverpb.Cluster/MemberList", &req.base,
		      &etcdserverpb__member_list_response__descriptor, (ProtobufCMessage **)&r,
		      CALL_READ);

	if (rc < 0)
		return rc;
	*h = header_from_pb(r->header);
	*n = r->n_members;
	*members = g_new0(struct ef_member_info, r->n_members + 1);
	for (size_t i = 0; i < r->n_members; i++) {
		const Etcdserverpb__Member *m = r->members[i];

		(*members)[i] = (struct ef_member_info){
			.id = m->id,
			.name = g_strdup(m->name),
			.peer_urls = strv_from_pb(m->peerurls, m->n_peerurls),
			.client_urls = strv_from_pb(m->clienturls, m->n_clienturls),
			.learner = m->islearner,
		};
	}
	etcdserverpb__member_list_response__free_unpacked(r, NULL);
	return 0;
}

/* ---- auth ---- */

/* An ef_auth_login_fn: Authenticate over e's connection. */
static int etcd_login(void *ud, const char *user, const char *password, char **token)
{
	struct ef_etcd *e = ud;
	Etcdserverpb__AuthenticateRequest req = ETCDSERVERPB__AUTHENTICATE_REQUEST__INIT;
	Etcdserverpb__AuthenticateResponse *resp = NULL;
	int rc;

	req.name = (char *)user;
	req.password = (char *)password;
	rc = call(e, "/etcdserverpb.Auth/Authenticate", &req.base,
		  &etcdserverpb__authenticate_response__descriptor, (ProtobufCMessage **)&resp,
		  CALL_LOGIN);
	if (rc < 0)
		return rc;
	if (!resp->token || !*resp->token)
		rc = -EPROTO;
	else
		*token = g_strdup(resp->token);
	/* The token is a credential too. */
	if (resp->token)
		explicit_bzero(resp->token, strlen(resp->token));
	etcdserverpb__authenticate_response__free_unpacked(resp, NULL);
	return rc;
}

void etcd_set_revision(struct ef_etcd *e, int64_t revision)
{
	e->revision = revision;
}

void etcd_set_auth(struct ef_etcd *e, struct ef_auth *a)
{
	e->auth = a;
}

int etcd_auth_renew(struct ef_etcd *e, uint64_t seen)
{
	return e->auth ? auth_renew(e->auth, seen, etcd_login, e) : -EACCES;
}

const char *etcd_library_version(void)
{
	return protobuf_c_version();
}

uint64_t etcd_auth_generation(struct ef_etcd *e)
{
	return e->auth ? auth_generation(e->auth) : 0;
}

void etcd_pin_endpoints(struct ef_etcd *e)
{
	g_atomic_int_set(&e->pinned, 1);
}

int etcd_sync_endpoints(struct ef_etcd *e)
{
	struct ef_member_info *mi = NULL;
	g_autoptr(GPtrArray) urls = g_ptr_array_new();
	struct ef_header h;
	size_t n = 0;
	int rc;

	if (g_atomic_int_get(&e->pinned))
		return 0;
	rc = etcd_member_list(e, &h, &mi, &n);
	if (rc < 0)
		return rc;
	/* A learner serves no linearizable read; a member that has not
	 * started has no URL yet. */
	for (size_t i = 0; i < n; i++)
		for (char **u = mi[i].client_urls; !mi[i].learner && *u; u++)
			g_ptr_array_add(urls, *u);
	g_ptr_array_add(urls, NULL);
	h2_learn_endpoints(e->h2, (const char *const *)urls->pdata);
	ef_members_free(mi, n);
	return 0;
}

/* etcd's words for what went wrong, where etcdctl would print them. */
static char *why_from(int rc)
{
	if (rc == -ETIMEDOUT)
		return g_strdup("context deadline exceeded");
	return g_strdup(g_strerror(-rc));
}

int etcd_health(struct ef_etcd *e, char **why)
{
	Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
	Etcdserverpb__RangeResponse *r = NULL;
	Etcdserverpb__AlarmRequest ar = ETCDSERVERPB__ALARM_REQUEST__INIT;
	Etcdserverpb__AlarmResponse *a = NULL;
	GString *alarms;
	int rc;

	*why = NULL;
	rr.key = bin("health", 6);
	rc = call(e, KV_PATH("Range"), &rr.base, &etcdserverpb__range_response__descriptor,
		  (ProtobufCMessage **)&r, CALL_READ);
	if (rc < 0 && rc != -EACCES) {
		*why = why_from(rc);
		return rc;
	}
	if (r)
		etcdserverpb__range_response__free_unpacked(r, NULL);
	ar.action = ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__GET;
	rc = call(e, MAINT_PATH("Alarm"), &ar.base, &etcdserverpb__alarm_response__descriptor,
		  (ProtobufCMessage **)&a, CALL_READ);
	if (rc < 0) {
		*why = g_strdup("Unable to fetch the alarm list");
		return rc;
	}
	if (a->n_alarms == 0) {
		etcdserverpb__alarm_response__free_unpacked(a, NULL);
		return 0;
	}
	/* etcdctl's words, trailing space included. */
	alarms = g_string_new("Active Alarm(s): ");
	for (size_t i = 0; i < a->n_alarms; i++)
		g_string_append(alarms, a->alarms[i]->alarm == ETCDSERVERPB__ALARM_TYPE__NOSPACE ? "NOSPACE "
					: a->alarms[i]->alarm == ETCDSERVERPB__ALARM_TYPE__CORRUPT ? "CORRUPT "
					: "UNKNOWN ");
	etcdserverpb__alarm_response__free_unpacked(a, NULL);
	*why = g_string_free(alarms, FALSE);
	return -EIO;
}

int etcd_header(struct ef_etcd *e, struct ef_header *h)
{
	Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
	Etcdserverpb__RangeResponse *r = NULL;
	int rc;

	/* Any key will do: the answer's header is what is wanted. */
	rr.key = bin("\0", 1);
	rr.count_only = true;
	rc = call(e, KV_PATH("Range"), &rr.base, &etcdserverpb__range_response__descriptor,
		  (ProtobufCMessage **)&r, CALL_READ);
	if (rc < 0)
		return rc;
	observe(r->header);
	*h = header_from_pb(r->header);
	etcdserverpb__range_response__free_unpacked(r, NULL);
	return 0;
}

uint64_t etcd_conn_generation(struct ef_etcd *e)
{
	return h2_generation(e->h2);
}

void etcd_conn_leave(struct ef_etcd *e, uint64_t generation, const char *why)
{
	h2_leave(e->h2, generation, why);
}

void etcd_conn_abandon_calls(struct ef_etcd *e, uint64_t generation, gint64 before)
{
	h2_abandon_calls(e->h2, generation, before);
}

/* ---- Lease ---- */

#define LEASE_PATH(m) "/etcdserverpb.Lease/" m

int etcd_lease_ttl(struct ef_etcd *e, int64_t id, int64_t *ttl, int64_t *granted)
{
	Etcdserverpb__LeaseTimeToLiveRequest req = ETCDSERVERPB__LEASE_TIME_TO_LIVE_REQUEST__INIT;
	Etcdserverpb__LeaseTimeToLiveResponse *resp = NULL;
	int rc;

	req.id = id;
	rc = call(e, LEASE_PATH("LeaseTimeToLive"), &req.base,
		  &etcdserverpb__lease_time_to_live_response__descriptor,
		  (ProtobufCMessage **)&resp, CALL_READ);
	if (rc < 0)
		return rc;
	/* -1 is etcd's "expired or not found"; a lease never lives past
	 * etcd's maximum TTL (9e9 s). */
	if (resp->ttl < -1 || resp->ttl > 9000000000LL || resp->grantedttl < 0)
		rc = refuse(e, "LeaseTimeToLive", "a TTL out of bounds");
	else {
		*ttl = resp->ttl;
		*granted = resp->grantedttl;
	}
	etcdserverpb__lease_time_to_live_response__free_unpacked(resp, NULL);
	return rc;
}

int etcd_lease_grant(struct ef_etcd *e, int64_t ttl, int64_t *id, int64_t *granted_ttl)
{
	Etcdserverpb__LeaseGrantRequest req = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
	Etcdserverpb__LeaseGrantResponse *resp = NULL;
	int rc;

	req.ttl = ttl;
	rc = call(e, LEASE_PATH("LeaseGrant"), &req.base,
		  &etcdserverpb__lease_grant_response__descriptor, (ProtobufCMessage **)&resp,
		  CALL_WRITE);
	if (rc < 0)
		return rc;
	observe(resp->header);
	/* A grant with an error text, or none at all, gives nothing to keep
	 * alive. */
	if (resp->id <= 0 || resp->ttl <= 0 || (resp->error && *resp->error)) {
		g_message("etcdfs: lease refused: %s", resp->error ? resp->error : "no ID");
		rc = -ENOLCK;
	} else {
		*id = resp->id;
		*granted_ttl = resp->ttl;
	}
	etcdserverpb__lease_grant_response__free_unpacked(resp, NULL);
	return rc;
}

int etcd_lease_revoke(struct ef_etcd *e, int64_t id)
{
	Etcdserverpb__LeaseRevokeRequest req = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
	Etcdserverpb__LeaseRevokeResponse *resp = NULL;
	int rc;

	req.id = id;
	rc = call(e, LEASE_PATH("LeaseRevoke"), &req.base,
		  &etcdserverpb__lease_revoke_response__descriptor, (ProtobufCMessage **)&resp,
		  CALL_WRITE);
	if (rc < 0)
		return rc;
	observe(resp->header);
	etcdserverpb__lease_revoke_response__free_unpacked(resp, NULL);
	return 0;
}

struct keepalive_adapter {
	struct ef_etcd *e;
	const struct ef_keepalive_ops *ops;
	void *ud;
};

static void keepalive_on_message(void *ud, const uint8_t *msg, size_t len)
{
	struct keepalive_adapter *a = ud;
	Etcdserverpb__LeaseKeepAliveResponse *r =
		etcdserverpb__lease_keep_alive_response__unpack(NULL, len, msg);
	struct ef_fault fault;

	/* Refused: say nothing to the owner; the lease is judged by the
	 * answers that do pass, and by how long ago the last one came. */
	if (!r) {
		refuse(a->e, "LeaseKeepAlive", "it does not decode");
		return;
	}
	/* Another cluster knows nothing of our lease: its answer is not
	 * news about it. */
	if (r->header && cluster_check(a->e, h2_generation(a->e->h2), r->header->cluster_id) < 0) {
		etcdserverpb__lease_keep_alive_response__free_unpacked(r, NULL);
		return;
	}
	if (reply_check_keepalive(r, &fault) < 0) {
		refuse(a->e, "LeaseKeepAlive", fault.why);
		etcdserverpb__lease_keep_alive_response__free_unpacked(r, NULL);
		return;
	}
	observe(r->header);
	a->ops->on_ttl(a->ud, r->id, r->ttl);
	etcdserverpb__lease_keep_alive_response__free_unpacked(r, NULL);
}

static void keepalive_on_close(void *ud, int err, const struct ef_grpc_status *st)
{
	struct keepalive_adapter *a = ud;

	a->ops->on_close(a->ud, err ? err : -grpc_status_errno(st->code, st->message));
	g_free(a);
}

static const struct ef_grpc_stream_ops keepalive_stream_ops = {
	.on_message = keepalive_on_message,
	.on_close = keepalive_on_close,
};

int etcd_keepalive_open(struct ef_etcd *e, const struct ef_keepalive_ops *ops, void *ud,
			struct ef_grpc_stream **out)
{
	struct keepalive_adapter *a = g_new(struct keepalive_adapter, 1);
	int rc;

	a->e = e;
	a->ops = ops;
	a->ud = ud;
	rc = grpc_stream_open(e->h2, LEASE_PATH("LeaseKeepAlive"), &keepalive_stream_ops, a, out);
	if (rc < 0)
		g_free(a);
	return rc;
}

int etcd_keepalive_send(struct ef_grpc_stream *s, int64_t id)
{
	Etcdserverpb__LeaseKeepAliveRequest req = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;

	req.id = id;
	return stream_send_msg(s, &req.base, false);
}

void etcd_keepalive_close(struct ef_grpc_stream *s)
{
	grpc_stream_free(s);
}

/* ---- Lock ---- */

#define LOCK_PATH(m) "/v3lockpb.Lock/" m

int etcd_unlock(struct ef_etcd *e, GBytes *key)
{
	V3lockpb__UnlockRequest req = V3LOCKPB__UNLOCK_REQUEST__INIT;
	V3lockpb__UnlockResponse *resp = NULL;
	int rc;

	req.key = bin_bytes(key);
	rc = call(e, LOCK_PATH("Unlock"), &req.base, &v3lockpb__unlock_response__descriptor,
		  (ProtobufCMessage **)&resp, CALL_WRITE);
	if (rc < 0)
		return rc;
	observe(resp->header);
	v3lockpb__unlock_response__free_unpacked(resp, NULL);
	return 0;
}

int etcd_lock_enter(struct ef_etcd *e, GBytes *pfx, GBytes *key, bool shared, int64_t lease,
		    int64_t *rev, GPtrArray **kvs)
{
	Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
	Etcdserverpb__RangeRequest rr;
	Etcdserverpb__RequestOp ops[2] = { ETCDSERVERPB__REQUEST_OP__INIT,
					   ETCDSERVERPB__REQUEST_OP__INIT };
	Etcdserverpb__RequestOp *opp[] = { &ops[0], &ops[1] };
	Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
	Etcdserverpb__TxnResponse *resp = NULL;
	Etcdserverpb__RangeResponse *r;
	gsize plen;
	const char *p = g_bytes_get_data(pfx, &plen);
	g_autoptr(GBytes) end = keymap_prefix_end(p, plen);
	int rc;

	put.key = bin_bytes(key);
	put.lease = lease;
	if (shared)
		put.value = bin(LOCK_SHARED_VALUE, strlen(LOCK_SHARED_VALUE));
	ops[0].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
	ops[0].request_put = &put;
	/* The queue as it is with the new key in it, read in the same
	 * revision: a free lock costs this one call. Never serializable. */
	etcdserverpb__range_request__init(&rr);
	rr.key = bin_bytes(pfx);
	rr.range_end = bin_bytes(end);
	ops[1].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
	ops[1].request_range = &rr;
	req.n_success = 2;
	req.success = opp;
	rc = txn(e, &req, &resp);
	if (rc < 0)
		return rc;
	r = txn_range(resp, 1);
	if (!resp->succeeded || !r) {
		rc = -EPROTO;
	} else {
		*rev = resp->header ? resp->header->revision : 0;
		*kvs = g_ptr_array_new_full(r->n_kvs, (GDestroyNotify)ef_kv_free);
		for (size_t i = 0; i < r->n_kvs; i++)
			g_ptr_array_add(*kvs, kv_from_pb(r->kvs[i], false));
	}
	etcdserverpb__txn_response__free_unpacked(resp, NULL);
	return rc;
}

int etcd_lock_mark(struct ef_etcd *e, GBytes *key, int64_t create_rev, int64_t lease, int64_t *rev)
{
	Etcdserverpb__Compare cmp;
	Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;

	/* The same key, so its place in the queue stays; only if it is still
	 * the one we made (a lost lease took it, and a Put would make a new
	 * one at the back). */
	create_cmp_init(&cmp, key, create_rev);
	put.key = cmp.key;
	put.value = bin(LOCK_SHARED_VALUE, strlen(LOCK_SHARED_VALUE));
	put.lease = lease;
	return put_if(e, &put, &cmp, -ESTALE, rev);
}
