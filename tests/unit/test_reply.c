/*
 * Unit tests for reply, the checks on etcd's answers: each answer is built
 * with the generated code, packed and unpacked again (as etcd.c gets it),
 * and checked against the request it answers. Every refused case names
 * the words its refusal must say, so that a case refused for another
 * reason than the one it is about fails too.
 */
#include <errno.h>
#include <string.h>
#include <glib.h>

#include "kv.pb-c.h"
#include "reply.h"
#include "rpc.pb-c.h"

/* ---- building answers ---- */

struct kvspec {
	const char *key;
	int64_t create, mod, version, lease;
	size_t vlen;
};

static ProtobufCBinaryData bin(const char *s)
{
	return (ProtobufCBinaryData){ .len = s ? strlen(s) : 0, .data = (uint8_t *)s };
}

/* The kvs of specs, in kv (n entries), values filled from val. */
static void kvs_init(Mvccpb__KeyValue *kv, Mvccpb__KeyValue **kvp, const struct kvspec *specs,
		     size_t n, const uint8_t *val)
{
	for (size_t i = 0; i < n; i++) {
		mvccpb__key_value__init(&kv[i]);
		kv[i].key = bin(specs[i].key);
		kv[i].create_revision = specs[i].create;
		kv[i].mod_revision = specs[i].mod;
		kv[i].version = specs[i].version;
		kv[i].lease = specs[i].lease;
		kv[i].value = (ProtobufCBinaryData){ .len = specs[i].vlen, .data = (uint8_t *)val };
		kvp[i] = &kv[i];
	}
}

/* m as etcd.c would see it: packed and decoded again. */
static ProtobufCMessage *roundtrip(const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	g_autofree uint8_t *buf = g_malloc(len + 1);
	ProtobufCMessage *out;

	protobuf_c_message_pack(m, buf);
	out = protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
	g_assert_nonnull(out);
	return out;
}

/* Checks resp (built) against req; want is NULL for a pass, else words the
 * refusal must say. */
static void expect(const ProtobufCMessage *req, const ProtobufCMessage *resp, const char *want)
{
	ProtobufCMessage *r = roundtrip(resp);
	struct ef_fault f = { { 0 } };
	int rc = reply_check(req, r, &f);

	if (!want) {
		if (rc != 0)
			g_error("refused: %s", f.why);
	} else {
		g_assert_cmpint(rc, ==, -EPROTO);
		if (!strstr(f.why, want))
			g_error("refused as \"%s\", not for \"%s\"", f.why, want);
	}
	protobuf_c_message_free_unpacked(r, NULL);
}

/* One Range answer case: request fields, then the answer's. */
struct range_case {
	const char *key, *end;
	int64_t limit, revision;
	bool keys_only, count_only;
	bool no_header;
	int64_t rev;                /* header revision */
	int64_t count;              /* -2: as many as kvs */
	bool more;
	struct kvspec kvs[3];
	size_t n;
	const char *want;
};

static void check_range_case(const struct range_case *c)
{
	Etcdserverpb__RangeRequest rq = ETCDSERVERPB__RANGE_REQUEST__INIT;
	Etcdserverpb__RangeResponse r = ETCDSERVERPB__RANGE_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
	Mvccpb__KeyValue kv[3], *kvp[3];
	g_autofree uint8_t *val = g_malloc0(REPLY_MAX_KV + 1);

	rq.key = bin(c->key);
	rq.range_end = c->end && !*c->end ? (ProtobufCBinaryData){ 1, (uint8_t *)"" } : bin(c->end);
	rq.limit = c->limit;
	rq.revision = c->revision;
	rq.keys_only = c->keys_only;
	rq.count_only = c->count_only;
	h.cluster_id = 1;
	h.revision = c->rev;
	r.header = c->no_header ? NULL : &h;
	kvs_init(kv, kvp, c->kvs, c->n, val);
	r.kvs = kvp;
	r.n_kvs = c->n;
	r.count = c->count == -2 ? (int64_t)c->n : c->count;
	r.more = c->more;
	expect(&rq.base, &r.base, c->want);
}

#define KV(k, c, m) { k, c, m, 1, 0, 0 }

static void test_range(void)
{
	static const struct range_case cases[] = {
		/* What etcd sends. */
		{ "/a/", "/a0", 0, 0, false, false, false, 10, -2, false,
		  { KV("/a/1", 2, 3), KV("/a/2", 4, 10) }, 2, NULL },
		{ "/a/", "/a0", 2, 0, false, false, false, 10, 5, true,
		  { KV("/a/1", 2, 3), KV("/a/2", 4, 10) }, 2, NULL },
		{ "/a/", "/a0", 0, 0, false, true, false, 10, 7, false, { { 0 } }, 0, NULL },
		{ "/a/1", NULL, 0, 0, false, false, false, 10, -2, false, { KV("/a/1", 2, 3) }, 1, NULL },
		{ "/a/1", NULL, 1, 0, false, false, false, 10, 0, false, { { 0 } }, 0, NULL },
		{ "/a/", "", 0, 0, false, false, false, 10, -2, false, { KV("/zz", 2, 3) }, 1, NULL },
		{ "/a/1", NULL, 0, 5, false, false, false, 10, -2, false, { KV("/a/1", 2, 5) }, 1, NULL },
		{ "/a/", "/a0", 0, 0, false, false, false, 10, -2, false,
		  { { "/a/1", 2, 3, 1, 7, 0 } }, 1, NULL },
		/* Keys. */
		{ "/a/", "/a0", 0, 0, false, false, false, 10, -2, false, { KV("/b", 2, 3) }, 1,
		  "outside the range" },
		{ "/a/", "/a0", 0, 0, false, false, false, 10, -2, false, { KV("/a", 2, 3) }, 1,
		  "outside the range" },
		{ "/a/", "/a0", 0, 0, false, false, false, 10, -2, false, { KV("/a0", 2, 3) }, 1,
		  "outside the range" },
		{ "/a/", "", 0, 0, false, false, false, 10, -2, false, { KV("/", 2, 3) }, 1,
		  "outside the range" },
		{ "/a/1", NULL, 0, 0, false, false, false, 10, -2, false, { KV("/a/2", 2, 3) }, 1,
		  "outside the range" },
		{ "/a/1", NULL, 0, 0, false, false, false, 10, -2, false, { KV("/a/10", 2, 3) }, 1,
		  "outside the range" },
		{ "/a/", "/a0", 0, 0, false, false, false, 10, -2, false,
		  { KV("/a/2", 2, 3), KV("/a/1", 4, 5) }, 2, "out of order" },
		{ "/a/", "/a0", 0, 0, false, false, false, 10, -2, false,
		  { KV("/a/1", 2, 3), KV("/a/1", 2, 3) }, 2, "out of order" },
		/* Revisions. */
		{ "/a/", "/a0", 0, 0, false, false, false, 10, -2, false, { KV("/a/1", 2, 11) }, 1,
		  "mod_revision 11 in an answer at revision 10" },
		{ "/a/1", NULL, 0, 5, false, false, false, 10, -2, false, { KV("/a/1", 2, 7) }, 1,
		  "mod_revision 7 in an answer at revision 5" },
		{ "/a/1", NULL, 0, 20, false, false, false, 10, 0, false, { { 0 } }, 0,
		  "a read at revision 20 answered at 10" },
		{ "/a/", "/a0", 0, 0, false, false, false, 10, -2, false, { KV("/a/1", 0, 3) }, 1,
		  "create_revision 0" },
		{ "/a/", "/a0", 0, 0, false, false, false, 10, -2, false, { KV("/a/1", 4, 3) }, 1,
		  "create_revision 4 and mod_revision 3" },
		{ "/a/", "/a0", 0, 0, false, false, false, 10, -2, false, { KV("/a/1", -4, -3) }, 1,
		  "mod_revision -3" },
		{ "/a/", "/a0", 0, 0, false, false, false, -1, 0, false, { { 0 } }, 0,
		  "header revision of -1" },
		{ "/a/", "/a0", 0, 0, false, false, false, 0, 0, false, { { 0 } }, 0,
		  "header revision of 0" },
		{ "/a/", "/a0", 0, 0, false, false, false, INT64_MAX, -2, false,
		  { KV("/a/1", 1, INT64_MAX) }, 1, "header revision of 9223372036854775807" },
		{ "/a/", "/a0", 0, 0, false, false, true, 10, 0, false, { { 0 } }, 0,
		  "without a header" },
		/* Counts and sizes. */
		{ "/a/", "/a0", 0, 0, false, false, false, 10, -2, false,
		  { { "/a/1", 2, 3, 0, 0, 0 } }, 1, "version 0" },
		{ "/a/", "/a0", 0, 0, false, false, false, 10, -2, false,
		  { { "/a/1", 2, 3, -1, 0, 0 } }, 1, "version -1" },
		{ "/a/", "/a0", 0, 0, false, false, false, 10, -2, false,
		  { { "/a/1", 2, 3, 1, -7, 0 } }, 1, "lease -7" },
		{ "/a/", "/a0", 0, 0, false, false, false, 10, -2, false,
		  { { "/a/1", 2, 3, 1, 0, REPLY_MAX_KV - 3 } }, 1, "value of 2097149 bytes" },
		{ "/a/", "/a0", 0, 0, true, false, false, 10, -2, false,
		  { { "/a/1", 2, 3, 1, 0, 1 } }, 1, "value in a keys-only answer" },
		{ "/a/", "/a0", 0, 0, false, false, false, 10, 1, false,
		  { KV("/a/1", 2, 3), KV("/a/2", 4, 5) }, 2, "count of 1 for 2 keys" },
		{ "/a/", "/a0", 0, 0, false, false, false, 10, -5, false, { { 0 } }, 0,
		  "count of -5" },
		{ "/a/", "/a0", 1, 0, false, false, false, 10, 2, true,
		  { KV("/a/1", 2, 3), KV("/a/2", 4, 5) }, 2, "2 keys for a limit of 1" },
		{ "/a/", "/a0", 0, 0, false, false, false, 10, 5, true, { KV("/a/1", 2, 3) }, 1,
		  "more=1" },
		{ "/a/", "/a0", 2, 0, false, false, false, 10, 5, true, { KV("/a/1", 2, 3) }, 1,
		  "more=1" },
		{ "/a/", "/a0", 1, 0, false, false, false, 10, 1, true, { KV("/a/1", 2, 3) }, 1,
		  "more=1" },
		{ "/a/", "/a0", 0, 0, false, false, false, 10, 5, false, { KV("/a/1", 2, 3) }, 1,
		  "more=0" },
		{ "/a/", "/a0", 0, 0, false, true, false, 10, 7, false, { KV("/a/1", 2, 3) }, 1,
		  "count-only" },
	};

	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_test_message("case %zu", i);
		check_range_case(&cases[i]);
	}
}

/* ---- Txn ---- */

struct txn_fixture {
	Etcdserverpb__RangeRequest rr;
	Etcdserverpb__PutRequest put;
	Etcdserverpb__DeleteRangeRequest del;
	Etcdserverpb__RequestOp ops[3], *opp[3];
	Etcdserverpb__TxnRequest req;
	Etcdserverpb__ResponseHeader h;
	Mvccpb__KeyValue kv, *kvp[1];
	Etcdserverpb__RangeResponse range;
	Etcdserverpb__PutResponse putr;
	Etcdserverpb__DeleteRangeResponse delr;
	Etcdserverpb__ResponseOp rops[3], *ropp[3];
	Etcdserverpb__TxnResponse resp;
};

/* A Txn of a Range of /a/1, a Put and a Delete of one key each, all in
 * the success branch (a failure branch of the Range alone), answered
 * well at revision 10. */
static void txn_init(struct txn_fixture *t)
{
	static const struct kvspec one = KV("/a/1", 2, 9);

	etcdserverpb__range_request__init(&t->rr);
	t->rr.key = bin("/a/1");
	etcdserverpb__put_request__init(&t->put);
	t->put.key = bin("/a/2");
	etcdserverpb__delete_range_request__init(&t->del);
	t->del.key = bin("/a/3");
	for (int i = 0; i < 3; i++) {
		etcdserverpb__request_op__init(&t->ops[i]);
		etcdserverpb__response_op__init(&t->rops[i]);
		t->opp[i] = &t->ops[i];
		t->ropp[i] = &t->rops[i];
	}
	t->ops[0].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
	t->ops[0].request_range = &t->rr;
	t->ops[1].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
	t->ops[1].request_put = &t->put;
	t->ops[2].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
	t->ops[2].request_delete_range = &t->del;
	etcdserverpb__txn_request__init(&t->req);
	t->req.success = t->opp;
	t->req.n_success = 3;
	t->req.failure = t->opp;
	t->req.n_failure = 1;

	etcdserverpb__response_header__init(&t->h);
	t->h.revision = 10;
	kvs_init(&t->kv, t->kvp, &one, 1, NULL);
	etcdserverpb__range_response__init(&t->range);
	t->range.kvs = t->kvp;
	t->range.n_kvs = 1;
	t->range.count = 1;
	etcdserverpb__put_response__init(&t->putr);
	etcdserverpb__delete_range_response__init(&t->delr);
	t->delr.deleted = 1;
	t->rops[0].response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
	t->rops[0].response_range = &t->range;
	t->rops[1].response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
	t->rops[1].response_put = &t->putr;
	t->rops[2].response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
	t->rops[2].response_delete_range = &t->delr;
	etcdserverpb__txn_response__init(&t->resp);
	t->resp.header = &t->h;
	t->resp.succeeded = true;
	t->resp.responses = t->ropp;
	t->resp.n_responses = 3;
}

static void test_txn(void)
{
	struct txn_fixture t;

	txn_init(&t);
	expect(&t.req.base, &t.resp.base, NULL);
	t.resp.n_responses = 2;
	expect(&t.req.base, &t.resp.base, "2 answers to a Txn branch of 3 ops");

	txn_init(&t);
	t.resp.succeeded = false;
	expect(&t.req.base, &t.resp.base, "3 answers to a Txn branch of 1 ops");
	t.resp.n_responses = 1;
	expect(&t.req.base, &t.resp.base, NULL);

	txn_init(&t);
	t.rops[0] = t.rops[1];
	expect(&t.req.base, &t.resp.base, "answer 0 of a Txn of another kind");
	txn_init(&t);
	t.rops[2].response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE__NOT_SET;
	expect(&t.req.base, &t.resp.base, "answer 2 of a Txn of another kind");

	txn_init(&t);
	t.kv.key = bin("/a/2");
	expect(&t.req.base, &t.resp.base, "outside the range");
	txn_init(&t);
	t.kv.mod_revision = 11;
	expect(&t.req.base, &t.resp.base, "mod_revision 11 in an answer at revision 10");
	txn_init(&t);
	t.range.count = 0;
	expect(&t.req.base, &t.resp.base, "count of 0 for 1 keys");
	txn_init(&t);
	t.delr.deleted = 2;
	expect(&t.req.base, &t.resp.base, "2 keys deleted for one key");
	txn_init(&t);
	t.h.revision = 0;
	expect(&t.req.base, &t.resp.base, "header revision of 0");
	txn_init(&t);
	t.h.revision = INT64_MAX;
	expect(&t.req.base, &t.resp.base, "header revision of 9223372036854775807");
}

static void test_delete(void)
{
	Etcdserverpb__DeleteRangeRequest rq = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
	Etcdserverpb__DeleteRangeResponse r = ETCDSERVERPB__DELETE_RANGE_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;

	h.revision = 4;
	r.header = &h;
	rq.key = bin("/a/1");
	r.deleted = 1;
	expect(&rq.base, &r.base, NULL);
	r.deleted = 2;
	expect(&rq.base, &r.base, "2 keys deleted for one key");
	r.deleted = -1;
	expect(&rq.base, &r.base, "-1 keys deleted");
	rq.range_end = bin("/a0");
	expect(&rq.base, &r.base, "-1 keys deleted for a range");
	r.deleted = 200;
	expect(&rq.base, &r.base, NULL);
}

static void test_lease(void)
{
	Etcdserverpb__LeaseGrantRequest rq = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
	Etcdserverpb__LeaseGrantResponse r = ETCDSERVERPB__LEASE_GRANT_RESPONSE__INIT;
	Etcdserverpb__LeaseKeepAliveResponse ka = ETCDSERVERPB__LEASE_KEEP_ALIVE_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
	struct ef_fault f;

	h.revision = 4;
	r.header = &h;
	r.id = 0x1234;
	r.ttl = 10;
	expect(&rq.base, &r.base, NULL);
	r.ttl = REPLY_MAX_TTL + 1;
	expect(&rq.base, &r.base, "granted for 9000000001 s");
	r.ttl = -10;
	expect(&rq.base, &r.base, "granted for -10 s");
	r.ttl = 10;
	r.id = -5;
	expect(&rq.base, &r.base, "lease -5 granted");
	/* A refusal in words is the caller's to report. */
	r.id = 0;
	r.error = (char *)"no";
	expect(&rq.base, &r.base, NULL);

	ka.header = &h;
	ka.id = 0x1234;
	ka.ttl = 10;
	g_assert_cmpint(reply_check_keepalive(&ka, &f), ==, 0);
	ka.ttl = 0;
	g_assert_cmpint(reply_check_keepalive(&ka, &f), ==, 0);
	ka.ttl = -1;
	g_assert_cmpint(reply_check_keepalive(&ka, &f), ==, -EPROTO);
	g_assert_nonnull(strstr(f.why, "for -1 s"));
	ka.ttl = 10;
	ka.id = 0;
	g_assert_cmpint(reply_check_keepalive(&ka, &f), ==, -EPROTO);
	ka.id = 0x1234;
	ka.header = NULL;
	g_assert_cmpint(reply_check_keepalive(&ka, &f), ==, 0);
}

static void test_other_answers(void)
{
	Etcdserverpb__StatusRequest rq = ETCDSERVERPB__STATUS_REQUEST__INIT;
	Etcdserverpb__StatusResponse r = ETCDSERVERPB__STATUS_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;

	/* Not a KV answer: no header, or revision 0, says nothing wrong. */
	expect(&rq.base, &r.base, NULL);
	r.header = &h;
	expect(&rq.base, &r.base, NULL);
	h.revision = INT64_MAX;
	expect(&rq.base, &r.base, "header revision of 9223372036854775807");
	h.revision = -3;
	expect(&rq.base, &r.base, "header revision of -3");
}

/* ---- Watch ---- */

enum { W_EVENTS = 3 };

/* One WatchResponse under construction. */
struct wmsg {
	Etcdserverpb__WatchResponse r;
	Etcdserverpb__ResponseHeader h;
	Mvccpb__Event ev[W_EVENTS], *evp[W_EVENTS];
	Mvccpb__KeyValue kv[W_EVENTS];
};

static void wmsg_init(struct wmsg *m, int64_t watch_id, int64_t rev)
{
	etcdserverpb__watch_response__init(&m->r);
	etcdserverpb__response_header__init(&m->h);
	m->h.revision = rev;
	m->r.header = &m->h;
	m->r.watch_id = watch_id;
	m->r.events = m->evp;
}

/* Appends a PUT (created at create, version 1) or DELETE event. */
static void wmsg_event(struct wmsg *m, bool del, const char *key, int64_t create, int64_t mod)
{
	size_t i = m->r.n_events++;

	g_assert_cmpuint(i, <, W_EVENTS);
	mvccpb__event__init(&m->ev[i]);
	mvccpb__key_value__init(&m->kv[i]);
	m->kv[i].key = bin(key);
	m->kv[i].mod_revision = mod;
	if (!del) {
		m->kv[i].create_revision = create;
		m->kv[i].version = 1;
	}
	m->ev[i].type = del ? MVCCPB__EVENT__EVENT_TYPE__DELETE : MVCCPB__EVENT__EVENT_TYPE__PUT;
	m->ev[i].kv = &m->kv[i];
	m->evp[i] = &m->ev[i];
}

static void wexpect(struct ef_watch_check *w, struct wmsg *m, const char *want)
{
	Etcdserverpb__WatchResponse *r = (Etcdserverpb__WatchResponse *)roundtrip(&m->r.base);
	struct ef_fault f = { { 0 } };
	struct ef_watch_check before = *w;
	int rc = reply_check_watch(w, r, &f);

	if (!want) {
		if (rc != 0)
			g_error("refused: %s", f.why);
	} else {
		g_assert_cmpint(rc, ==, -EPROTO);
		if (!strstr(f.why, want))
			g_error("refused as \"%s\", not for \"%s\"", f.why, want);
		/* A refused message changes nothing. */
		g_assert_cmpmem(&before, sizeof(before), w, sizeof(*w));
	}
	etcdserverpb__watch_response__free_unpacked(r, NULL);
}

/* A stream on [/w/, /w0) from start, created as watcher 3 at revision 10. */
static void watch_begin(struct ef_watch_check *w, int64_t start)
{
	g_autoptr(GBytes) key = g_bytes_new_static("/w/", 3);
	g_autoptr(GBytes) end = g_bytes_new_static("/w0", 3);
	struct wmsg m;

	reply_watch_init(w, key, end, start);
	wmsg_init(&m, 3, 10);
	m.r.created = true;
	wexpect(w, &m, NULL);
}

static void test_watch_order(void)
{
	struct ef_watch_check w;
	struct wmsg m;

	watch_begin(&w, 0);
	wmsg_init(&m, 3, 11);
	wmsg_event(&m, false, "/w/a", 11, 11);
	wexpect(&w, &m, NULL);
	/* A Txn's events share a revision. */
	wmsg_init(&m, 3, 12);
	wmsg_event(&m, false, "/w/b", 12, 12);
	wmsg_event(&m, true, "/w/a", 0, 12);
	wexpect(&w, &m, NULL);
	/* But one revision never spans two messages. */
	wmsg_init(&m, 3, 12);
	wmsg_event(&m, false, "/w/c", 12, 12);
	wexpect(&w, &m, "a watch event at revision 12 after one at 12");
	wmsg_init(&m, 3, 20);
	wmsg_event(&m, false, "/w/c", 11, 11);
	wexpect(&w, &m, "a watch event at revision 11 after one at 12");
	wmsg_init(&m, 3, 20);
	wmsg_event(&m, false, "/w/c", 14, 14);
	wmsg_event(&m, false, "/w/d", 13, 13);
	wexpect(&w, &m, "a watch event at revision 13 after one at 14");
	/* An event newer than its message's header. */
	wmsg_init(&m, 3, 13);
	wmsg_event(&m, false, "/w/c", 14, 14);
	wexpect(&w, &m, "a watch event at revision 14 in a message at 13");
	/* Catch-up: a header past the events is fine... */
	wmsg_init(&m, 3, 30);
	wmsg_event(&m, false, "/w/c", 14, 14);
	wexpect(&w, &m, NULL);
	/* ...and so is a timed progress notification before it (etcd
	 * reads the store's revision apart from the events)... */
	wmsg_init(&m, 3, 13);
	wexpect(&w, &m, NULL);
	wmsg_init(&m, -1, 5);
	wexpect(&w, &m, NULL);
	/* ...but events never come under an older header than the last. */
	wmsg_init(&m, 3, 29);
	wmsg_event(&m, false, "/w/c", 15, 15);
	wexpect(&w, &m, "watch events at header revision 29 after 30");
	wmsg_init(&m, 3, 31);
	wmsg_event(&m, false, "/w/c", 15, 15);
	wexpect(&w, &m, NULL);
	/* rev + 1 must not wrap. */
	wmsg_init(&m, 3, INT64_MAX);
	wexpect(&w, &m, "header revision of 9223372036854775807");
	wmsg_init(&m, 3, -1);
	wexpect(&w, &m, "header revision of -1");
	wmsg_init(&m, 3, 40);
	m.r.canceled = true;
	m.r.compact_revision = INT64_MAX;
	wexpect(&w, &m, "compact_revision of 9223372036854775807");
	m.r.compact_revision = 35;
	wexpect(&w, &m, NULL);
	reply_watch_clear(&w);
}

static void test_watch_events(void)
{
	struct ef_watch_check w;
	struct wmsg m;

	watch_begin(&w, 8);
	wmsg_init(&m, 3, 11);
	wmsg_event(&m, false, "/x/a", 11, 11);
	wexpect(&w, &m, "for key \"/x/a\", outside the watched range");
	wmsg_init(&m, 3, 11);
	wmsg_event(&m, true, "/w0", 0, 11);
	wexpect(&w, &m, "outside the watched range");
	wmsg_init(&m, 3, 11);
	wmsg_event(&m, false, "/w/a", 7, 7);
	wexpect(&w, &m, "a watch event at revision 7 on a watch from 8");
	wmsg_init(&m, 3, 11);
	wmsg_event(&m, false, "/w/a", 11, 10);
	wexpect(&w, &m, "create_revision 11 and mod_revision 10");
	wmsg_init(&m, 3, 11);
	wmsg_event(&m, false, "/w/a", 9, 10);
	m.kv[0].version = 0;
	wexpect(&w, &m, "version 0");
	wmsg_init(&m, 3, 11);
	wmsg_event(&m, false, "/w/a", 9, 10);
	m.ev[0].kv = NULL;
	wexpect(&w, &m, "without a key");
	wmsg_init(&m, 3, 11);
	wmsg_event(&m, false, "/w/a", 9, 10);
	m.ev[0].type = 7;
	wexpect(&w, &m, "of type 7");
	wmsg_init(&m, 4, 11);
	wmsg_event(&m, false, "/w/a", 9, 10);
	wexpect(&w, &m, "for watcher 4");
	wmsg_init(&m, -1, 11);
	wmsg_event(&m, false, "/w/a", 9, 10);
	wexpect(&w, &m, "for watcher -1");
	wmsg_init(&m, 3, 11);
	m.r.fragment = true;
	wexpect(&w, &m, "fragment");
	wmsg_init(&m, 3, 11);
	m.r.created = true;
	wmsg_event(&m, false, "/w/a", 9, 10);
	wexpect(&w, &m, "events in a create answer");
	/* None of that counted. */
	wmsg_init(&m, 3, 11);
	wmsg_event(&m, false, "/w/a", 9, 10);
	wexpect(&w, &m, NULL);
	reply_watch_clear(&w);
}

/* A response in fragments: events in each, the rest right after. */
static void test_watch_fragments(void)
{
	struct ef_watch_check w;
	struct wmsg m;

	watch_begin(&w, 0);
	wmsg_init(&m, 3, 12);
	wmsg_event(&m, false, "/w/a", 11, 11);
	m.r.fragment = true;
	wexpect(&w, &m, NULL);
	/* A progress answer in the middle is not the rest. */
	wmsg_init(&m, -1, 12);
	wexpect(&w, &m, "not followed by the rest");
	/* Nor is a response at another header revision. */
	wmsg_init(&m, 3, 13);
	wmsg_event(&m, false, "/w/b", 12, 12);
	wexpect(&w, &m, "not followed by the rest");
	/* The last fragment: the same revision may go on in it. */
	wmsg_init(&m, 3, 12);
	wmsg_event(&m, false, "/w/b", 11, 11);
	wmsg_event(&m, false, "/w/c", 12, 12);
	wexpect(&w, &m, NULL);
	/* Then anything may come again. */
	wmsg_init(&m, -1, 12);
	wexpect(&w, &m, NULL);
	wmsg_init(&m, 3, 12);
	m.r.fragment = true;
	wexpect(&w, &m, "fragment without events");
	reply_watch_clear(&w);
}

static void test_watch_not_created(void)
{
	g_autoptr(GBytes) key = g_bytes_new_static("\0", 1);
	g_autoptr(GBytes) end = g_bytes_new_static("\0", 1);
	struct ef_watch_check w;
	struct wmsg m;

	/* The whole keyspace ("\0" to "\0"). */
	reply_watch_init(&w, key, end, 0);
	wmsg_init(&m, 0, 11);
	wmsg_event(&m, false, "/a", 9, 10);
	wexpect(&w, &m, "not created yet");
	/* A progress answer to the stream may come at any time. */
	wmsg_init(&m, -1, 11);
	wexpect(&w, &m, NULL);
	/* An in-band refusal: created and canceled at once. */
	wmsg_init(&m, -1, 11);
	m.r.created = m.r.canceled = true;
	wexpect(&w, &m, NULL);
	g_assert_false(w.created);
	wmsg_init(&m, 0, 11);
	m.r.created = true;
	wexpect(&w, &m, NULL);
	wmsg_init(&m, 0, 11);
	wmsg_event(&m, false, "/a", 9, 10);
	wmsg_event(&m, true, "\xff\xff", 0, 11);
	wexpect(&w, &m, NULL);
	reply_watch_clear(&w);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/reply/range", test_range);
	g_test_add_func("/reply/txn", test_txn);
	g_test_add_func("/reply/delete", test_delete);
	g_test_add_func("/reply/lease", test_lease);
	g_test_add_func("/reply/other", test_other_answers);
	g_test_add_func("/reply/watch/order", test_watch_order);
	g_test_add_func("/reply/watch/events", test_watch_events);
	g_test_add_func("/reply/watch/fragments", test_watch_fragments);
	g_test_add_func("/reply/watch/not_created", test_watch_not_created);
	return g_test_run();
}
