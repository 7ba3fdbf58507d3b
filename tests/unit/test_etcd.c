/*
 * A hostile etcd: etcd.c's calls (through grpc and h2, as the daemon makes
 * them) against a scripted HTTP/2 server on 127.0.0.1 that answers each
 * request with the next answer a test queued: etcd's messages built with
 * the generated code but breaking etcd's promises, or broken gRPC. Each
 * call must fail with -EPROTO at once (well within its timeout) and log
 * one line naming the fault; a watch must hand up NULL (start over) and
 * nothing after it; and the same calls must pass with a well-formed
 * answer, so that the checks are not simply refusing everything.
 *
 * The server imitates the one in test_grpc.c (raw frames, literal HPACK),
 * reduced to what etcd's calls need.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib.h>

#include "etcd.h"
#include "grpc.h"
#include "h2.h"
#include "kv.pb-c.h"
#include "reply.h"
#include "revclock.h"
#include "rpc.pb-c.h"

#define TIMEOUT_MS 3000
#define CLUSTER 0x1234

/* ---- warnings: counted, not fatal ---- */

static GMutex warn_lock;
static guint warnings_seen;             /* protected by warn_lock */
static char last_warning[512];          /* protected by warn_lock */

static void on_warning(const gchar *domain, GLogLevelFlags level, const gchar *message,
		       gpointer ud)
{
	if (!strstr(message, "etcdfs: refused an answer to") &&
	    !strstr(message, "etcdfs: a malformed answer to") &&
	    !strstr(message, "etcdfs: a member answered for cluster")) {
		g_log_default_handler(domain, level, message, ud);
		g_error("an unexpected warning");
	}
	g_mutex_lock(&warn_lock);
	warnings_seen++;
	g_strlcpy(last_warning, message, sizeof(last_warning));
	g_mutex_unlock(&warn_lock);
}

static guint warnings(void)
{
	guint n;

	g_mutex_lock(&warn_lock);
	n = warnings_seen;
	g_mutex_unlock(&warn_lock);
	return n;
}

/* Exactly one warning since `before`, saying want. */
static void check_warned(guint before, const char *want)
{
	g_mutex_lock(&warn_lock);
	g_assert_cmpuint(warnings_seen, ==, before + 1);
	if (!strstr(last_warning, want))
		g_error("warned \"%s\", not about \"%s\"", last_warning, want);
	g_mutex_unlock(&warn_lock);
}

/* ---- the scripted server ---- */

/* One answer, to the next request. */
struct answer {
	GBytes *msg;               /* the message; NULL: none */
	const char *http;          /* :status; NULL: 200 */
	const char *type;          /* content-type; NULL: application/grpc */
	const char *status;        /* grpc-status; NULL: 0 */
	gboolean compressed;       /* the message's compressed flag */
	GPtrArray *stream;         /* non-NULL: a stream's messages (GBytes),
				    * sent at its first request message, the
				    * stream left open */
};

struct fake {
	int lfd;
	uint16_t port;
	GThread *thread;
	gint stop;                 /* atomic */
	GAsyncQueue *answers;      /* struct answer */
};

static void answer_free(gpointer p)
{
	struct answer *a = p;

	if (a->msg)
		g_bytes_unref(a->msg);
	if (a->stream)
		g_ptr_array_unref(a->stream);
	g_free(a);
}

static void put_frame(GByteArray *out, uint8_t type, uint8_t flags, uint32_t sid,
		      const void *payload, size_t len)
{
	const uint8_t hdr[9] = { (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len, type,
				 flags, (uint8_t)((sid >> 24) & 0x7f), (uint8_t)(sid >> 16),
				 (uint8_t)(sid >> 8), (uint8_t)sid };

	g_byte_array_append(out, hdr, sizeof(hdr));
	if (len)
		g_byte_array_append(out, payload, (guint)len);
}

/* HPACK "literal without indexing, new name", lengths below 127. */
static void hpack_lit(GByteArray *b, const char *name, const char *value)
{
	const uint8_t zero = 0, nl = (uint8_t)strlen(name), vl = (uint8_t)strlen(value);

	g_assert_cmpuint(strlen(name), <, 127);
	g_assert_cmpuint(strlen(value), <, 127);
	g_byte_array_append(b, &zero, 1);
	g_byte_array_append(b, &nl, 1);
	g_byte_array_append(b, (const uint8_t *)name, nl);
	g_byte_array_append(b, &vl, 1);
	g_byte_array_append(b, (const uint8_t *)value, vl);
}

#define F_END_STREAM 0x1
#define F_END_HEADERS 0x4

static void put_head(GByteArray *out, uint32_t sid, const struct answer *a)
{
	g_autoptr(GByteArray) blk = g_byte_array_new();

	hpack_lit(blk, ":status", a->http ? a->http : "200");
	hpack_lit(blk, "content-type", a->type ? a->type : "application/grpc");
	put_frame(out, 1, F_END_HEADERS, sid, blk->data, blk->len);
}

static void put_msg(GByteArray *out, uint32_t sid, GBytes *msg, gboolean compressed)
{
	gsize len;
	const uint8_t *p = g_bytes_get_data(msg, &len);
	g_autofree uint8_t *buf = g_malloc(GRPC_FRAME_HEADER + len);

	grpc_frame_header(buf, len);
	buf[0] = compressed ? 1 : 0;
	if (len)
		memcpy(buf + GRPC_FRAME_HEADER, p, len);
	for (size_t off = 0; off < GRPC_FRAME_HEADER + len; off += 16384)
		put_frame(out, 0, 0, sid, buf + off, MIN(GRPC_FRAME_HEADER + len - off, 16384));
}

static void put_trailers(GByteArray *out, uint32_t sid, const char *status)
{
	g_autoptr(GByteArray) blk = g_byte_array_new();

	hpack_lit(blk, "grpc-status", status ? status : "0");
	put_frame(out, 1, F_END_HEADERS | F_END_STREAM, sid, blk->data, blk->len);
}

static void fake_reply(GByteArray *out, uint32_t sid, const struct answer *a)
{
	put_head(out, sid, a);
	if (a->stream) {
		for (guint i = 0; i < a->stream->len; i++)
			put_msg(out, sid, g_ptr_array_index(a->stream, i), FALSE);
		return;
	}
	if (a->msg)
		put_msg(out, sid, a->msg, a->compressed);
	put_trailers(out, sid, a->status);
}

static gboolean fake_send(int fd, const GByteArray *out)
{
	for (size_t off = 0; off < out->len;) {
		ssize_t n = send(fd, out->data + off, out->len - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return FALSE;
		off += (size_t)n;
	}
	return TRUE;
}

static gboolean fake_read(struct fake *f, int fd, void *buf, size_t len)
{
	for (size_t off = 0; off < len;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (g_atomic_int_get(&f->stop))
			return FALSE;
		if (poll(&p, 1, 20) <= 0)
			continue;
		n = recv(fd, (uint8_t *)buf + off, len - off, 0);
		if (n <= 0)
			return FALSE;
		off += (size_t)n;
	}
	return TRUE;
}

/* Answers one client frame into out; streams: sid -> struct answer. */
static void fake_frame(struct fake *f, GHashTable *streams, GByteArray *out, uint8_t type,
		       uint8_t flags, uint32_t sid, const uint8_t *p, size_t len)
{
	struct answer *a = g_hash_table_lookup(streams, GUINT_TO_POINTER(sid));

	switch (type) {
	case 4:         /* SETTINGS */
		if (!(flags & 1))
			put_frame(out, 4, 1, 0, NULL, 0);
		break;
	case 6:         /* PING */
		if (!(flags & 1))
			put_frame(out, 6, 1, 0, p, len);
		break;
	case 1:         /* HEADERS: the next answer is this request's */
		a = g_async_queue_try_pop(f->answers);
		if (a)
			g_hash_table_insert(streams, GUINT_TO_POINTER(sid), a);
		break;
	case 0:         /* DATA */
		/* A stream is answered at its first message, a call at its
		 * end; then the answer is spent. */
		if (a && (a->stream || (flags & F_END_STREAM))) {
			fake_reply(out, sid, a);
			g_hash_table_remove(streams, GUINT_TO_POINTER(sid));
		}
		break;
	default:
		break;
	}
}

static void fake_serve(struct fake *f, int fd)
{
	g_autoptr(GHashTable) streams =
		g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, answer_free);
	g_autoptr(GByteArray) hello = g_byte_array_new();
	const uint8_t settings[6] = { 0, 4, 0x7f, 0xff, 0xff, 0xff };
	const uint32_t inc = 0x7fffffff - 65535;
	const uint8_t wu[4] = { (uint8_t)(inc >> 24), (uint8_t)(inc >> 16), (uint8_t)(inc >> 8),
				(uint8_t)inc };
	uint8_t preface[24];
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (!fake_read(f, fd, preface, sizeof(preface)))
		return;
	put_frame(hello, 4, 0, 0, settings, sizeof(settings));
	put_frame(hello, 8, 0, 0, wu, sizeof(wu));
	if (!fake_send(fd, hello))
		return;
	for (;;) {
		g_autoptr(GByteArray) out = g_byte_array_new();
		g_autofree uint8_t *payload = NULL;
		uint8_t h[9];
		size_t len;

		if (!fake_read(f, fd, h, sizeof(h)))
			return;
		len = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
		payload = g_malloc(len + 1);
		if (!fake_read(f, fd, payload, len))
			return;
		fake_frame(f, streams, out, h[3], h[4],
			   (uint32_t)(h[5] & 0x7f) << 24 | (uint32_t)h[6] << 16 |
				   (uint32_t)h[7] << 8 | h[8],
			   payload, len);
		if (!fake_send(fd, out))
			return;
	}
}

static gpointer fake_main(gpointer data)
{
	struct fake *f = data;

	while (!g_atomic_int_get(&f->stop)) {
		struct pollfd p = { .fd = f->lfd, .events = POLLIN };
		int fd;

		if (poll(&p, 1, 20) <= 0)
			continue;
		fd = accept(f->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		fake_serve(f, fd);
		close(fd);
	}
	return NULL;
}

static struct fake *fake_start(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	struct fake *f = g_new0(struct fake, 1);

	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	g_assert_cmpint(f->lfd, >=, 0);
	g_assert_cmpint(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
	g_assert_cmpint(listen(f->lfd, 16), ==, 0);
	g_assert_cmpint(getsockname(f->lfd, (struct sockaddr *)&sa, &len), ==, 0);
	f->port = ntohs(sa.sin_port);
	f->answers = g_async_queue_new_full(answer_free);
	f->thread = g_thread_new("fake-etcd", fake_main, f);
	return f;
}

static void fake_stop(struct fake *f)
{
	g_atomic_int_set(&f->stop, 1);
	g_thread_join(f->thread);
	close(f->lfd);
	/* Every answer queued was asked for. */
	g_assert_cmpint(g_async_queue_length(f->answers), ==, 0);
	g_async_queue_unref(f->answers);
	g_free(f);
}

/* Queues msg (taken) as the next answer. */
static struct answer *fake_push(struct fake *f, GBytes *msg)
{
	struct answer *a = g_new0(struct answer, 1);

	a->msg = msg;
	g_async_queue_push(f->answers, a);
	return a;
}

/* ---- etcd's messages ---- */

static GBytes *pack(const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = g_malloc(len + 1);

	protobuf_c_message_pack(m, buf);
	return g_bytes_new_take(buf, len);
}

static ProtobufCBinaryData bin(const char *s)
{
	return (ProtobufCBinaryData){ .len = strlen(s), .data = (uint8_t *)s };
}

static void header_init(Etcdserverpb__ResponseHeader *h, int64_t rev)
{
	etcdserverpb__response_header__init(h);
	h->cluster_id = CLUSTER;
	h->member_id = 1;
	h->revision = rev;
}

struct kvspec {
	const char *key;
	int64_t create, mod, version;
	size_t vlen;
};

#define KV(k, c, m) { k, c, m, 1, 1 }
/* An answer at rev with n keys, count, more, then the keys. */
#define RS(rev_, n_, count_, more_, ...) \
	{ .rev = (rev_), .n = (n_), .count = (count_), .more = (more_), .kvs = { __VA_ARGS__ } }

/* A Range answer of up to 3 keys at rev; count -1: as many as sent. */
struct range_spec {
	int64_t rev;
	struct kvspec kvs[3];
	size_t n;
	int64_t count;
	bool more;
	uint64_t cluster;          /* 0: CLUSTER */
};

static void range_fill(Etcdserverpb__RangeResponse *r, Etcdserverpb__ResponseHeader *h,
		       Mvccpb__KeyValue *kv, Mvccpb__KeyValue **kvp, const struct range_spec *s,
		       const uint8_t *val)
{
	header_init(h, s->rev);
	if (s->cluster)
		h->cluster_id = s->cluster;
	etcdserverpb__range_response__init(r);
	r->header = h;
	for (size_t i = 0; i < s->n; i++) {
		mvccpb__key_value__init(&kv[i]);
		kv[i].key = bin(s->kvs[i].key);
		kv[i].create_revision = s->kvs[i].create;
		kv[i].mod_revision = s->kvs[i].mod;
		kv[i].version = s->kvs[i].version;
		kv[i].value = (ProtobufCBinaryData){ .len = s->kvs[i].vlen, .data = (uint8_t *)val };
		kvp[i] = &kv[i];
	}
	r->kvs = kvp;
	r->n_kvs = s->n;
	r->count = s->count < 0 ? (int64_t)s->n : s->count;
	r->more = s->more;
}

static GBytes *range_msg(const struct range_spec *s)
{
	Etcdserverpb__RangeResponse r;
	Etcdserverpb__ResponseHeader h;
	Mvccpb__KeyValue kv[3], *kvp[3];
	g_autofree uint8_t *val = g_malloc0(REPLY_MAX_KV + 1);

	range_fill(&r, &h, kv, kvp, s, val);
	return pack(&r.base);
}

/* A Txn answer of Range answers (a lookup's). */
static GBytes *txn_ranges_msg(int64_t rev, const struct range_spec *s, size_t n)
{
	Etcdserverpb__TxnResponse r = ETCDSERVERPB__TXN_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h;
	Etcdserverpb__RangeResponse rr[3];
	Etcdserverpb__ResponseHeader rh[3];
	Mvccpb__KeyValue kv[3][3], *kvp[3][3];
	Etcdserverpb__ResponseOp ops[3], *opp[3];
	uint8_t val[1] = { 'v' };

	header_init(&h, rev);
	r.header = &h;
	r.succeeded = true;
	for (size_t i = 0; i < n; i++) {
		range_fill(&rr[i], &rh[i], kv[i], kvp[i], &s[i], val);
		etcdserverpb__response_op__init(&ops[i]);
		ops[i].response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
		ops[i].response_range = &rr[i];
		opp[i] = &ops[i];
	}
	r.responses = opp;
	r.n_responses = n;
	return pack(&r.base);
}

/* A Txn answer of n_puts (at most 2) Put answers. */
static GBytes *txn_put_msg(int64_t rev, size_t n_puts)
{
	Etcdserverpb__TxnResponse r = ETCDSERVERPB__TXN_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h;
	Etcdserverpb__PutResponse put = ETCDSERVERPB__PUT_RESPONSE__INIT;
	Etcdserverpb__ResponseOp op = ETCDSERVERPB__RESPONSE_OP__INIT, *opp[] = { &op, &op };

	g_assert_cmpuint(n_puts, <=, G_N_ELEMENTS(opp));
	header_init(&h, rev);
	r.header = &h;
	r.succeeded = true;
	op.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
	op.response_put = &put;
	r.responses = opp;
	r.n_responses = n_puts;
	return pack(&r.base);
}

static GBytes *status_msg(void)
{
	Etcdserverpb__StatusResponse r = ETCDSERVERPB__STATUS_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h;

	header_init(&h, 5);
	r.header = &h;
	r.leader = 1;
	return pack(&r.base);
}

static GBytes *delete_msg(int64_t rev, int64_t deleted)
{
	Etcdserverpb__DeleteRangeResponse r = ETCDSERVERPB__DELETE_RANGE_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h;

	header_init(&h, rev);
	r.header = &h;
	r.deleted = deleted;
	return pack(&r.base);
}

static GBytes *grant_msg(int64_t id, int64_t ttl)
{
	Etcdserverpb__LeaseGrantResponse r = ETCDSERVERPB__LEASE_GRANT_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h;

	header_init(&h, 5);
	r.header = &h;
	r.id = id;
	r.ttl = ttl;
	return pack(&r.base);
}

/* ---- the client ---- */

struct client {
	struct fake *f;
	struct ef_h2 *h;
	struct ef_etcd *e;
};

static void client_start(struct client *c)
{
	g_autofree char *ep = NULL;
	const char *eps[2] = { NULL, NULL };
	struct ef_h2_config cfg = { .endpoints = eps, .dial_timeout_ms = 1000 };
	GError *err = NULL;

	c->f = fake_start();
	ep = g_strdup_printf("127.0.0.1:%u", c->f->port);
	eps[0] = ep;
	c->h = h2_new(&cfg, &err);
	g_assert_no_error(err);
	c->e = etcd_new(c->h, TIMEOUT_MS, false);
}

/* A new etcd on the same connection: its own cluster, checked member and
 * log limit, so that no case depends on another. */
static void client_renew(struct client *c)
{
	etcd_free(c->e);
	c->e = etcd_new(c->h, TIMEOUT_MS, false);
}

static void client_stop(struct client *c)
{
	etcd_free(c->e);
	h2_free(c->h);
	fake_stop(c->f);
}

static double elapsed_s(gint64 since)
{
	return (double)(g_get_monotonic_time() - since) / G_USEC_PER_SEC;
}

/* The call that just returned rc refused its answer: -EPROTO at once, one
 * line saying want. */
static void check_refused(int rc, gint64 t0, guint before, const char *want)
{
	g_assert_cmpint(rc, ==, -EPROTO);
	g_assert_cmpfloat(elapsed_s(t0), <, TIMEOUT_MS / 2000.0);
	check_warned(before, want);
}

/* ---- unary calls ---- */

enum call { C_RANGE, C_GET, C_KEYS, C_PAGE };

static void count_keys(void *ud, const char *const *keys, const size_t *lens, size_t n, bool more)
{
	*(size_t *)ud += n;
}

static bool keep_all(void *ud, const char *key, size_t len)
{
	return true;
}

/* Makes call over [/a/, /a0) (C_GET: the key /a/1) at limit; returns rc,
 * and in *n the keys it handed over. */
static int range_call(struct client *c, enum call call, int64_t limit, size_t *n)
{
	g_autoptr(GPtrArray) kvs = NULL;
	g_autoptr(GBytes) key = g_bytes_new_static("/a/1", 4);
	struct ef_kv *kv = NULL;
	struct ef_page pg = { 0 };
	struct ef_page_req rq = { .key = "/a/", .klen = 3, .end = "/a0", .elen = 3,
				  .limit = limit, .keys_fn = count_keys, .keep = keep_all,
				  .ud = n };
	bool more;
	int64_t rev;
	int rc;

	*n = 0;
	switch (call) {
	case C_RANGE:
		rc = etcd_range(c->e, "/a/", 3, "/a0", 3, limit, false, &kvs, &more, &rev);
		*n = rc == 0 ? kvs->len : 0;
		return rc;
	case C_GET:
		rc = etcd_get(c->e, key, &kv);
		*n = kv != NULL;
		ef_kv_free(kv);
		return rc;
	case C_KEYS:
		return etcd_range_keys(c->e, "/a/", 3, "/a0", 3, limit, count_keys, n, &rev);
	case C_PAGE:
	default:
		rc = etcd_range_page(c->e, &rq, &pg);
		if (pg.kvs)
			g_ptr_array_unref(pg.kvs);
		return rc;
	}
}

struct range_case {
	enum call call;
	int64_t limit;
	struct range_spec answer;
	const char *want;          /* NULL: accepted */
	size_t n;                  /* accepted: keys handed over */
};

static void test_range(void)
{
	static const struct range_case cases[] = {
		{ C_RANGE, 0, RS(10, 2, -1, false, KV("/a/1", 2, 3), KV("/a/2", 4, 10)), NULL, 2 },
		{ C_RANGE, 0, RS(10, 1, -1, false, KV("/b", 2, 3)), "key \"/b\" outside the range", 0 },
		{ C_RANGE, 0, RS(10, 2, -1, false, KV("/a/2", 2, 3), KV("/a/1", 4, 5)),
		  "key \"/a/1\" out of order", 0 },
		{ C_RANGE, 1, RS(10, 2, 3, true, KV("/a/1", 2, 3), KV("/a/2", 4, 5)),
		  "2 keys for a limit of 1", 0 },
		{ C_RANGE, 0, RS(10, 2, 1, false, KV("/a/1", 2, 3), KV("/a/2", 4, 5)),
		  "a count of 1 for 2 keys", 0 },
		{ C_RANGE, 0, RS(10, 1, -1, false, KV("/a/1", 2, 11)),
		  "mod_revision 11 in an answer at revision 10", 0 },
		{ C_RANGE, 0, RS(10, 1, -1, false, KV("/a/1", 5, 3)),
		  "create_revision 5 and mod_revision 3", 0 },
		{ C_RANGE, 0, RS(10, 1, -1, false, { "/a/1", 2, 3, 0, 1 }), "version 0", 0 },
		{ C_RANGE, 0, RS(-10, 0, 0, false, { 0 }), "a header revision of -10", 0 },
		{ C_RANGE, 0, RS(INT64_MAX, 1, -1, false, KV("/a/1", 2, INT64_MAX)),
		  "a header revision of 9223372036854775807", 0 },
		{ C_RANGE, 0, RS(10, 1, -1, false, { "/a/1", 2, 3, 1, REPLY_MAX_KV }),
		  "with a value of 2097152 bytes", 0 },
		{ C_GET, 0, RS(10, 1, -1, false, KV("/a/1", 2, 3)), NULL, 1 },
		{ C_GET, 0, RS(10, 1, -1, false, KV("/a/10", 2, 3)), "key \"/a/10\" outside the range",
		  0 },
		{ C_KEYS, 5, RS(10, 1, -1, false, KV("/a/1", 2, 3)), "with a value in a keys-only answer",
		  0 },
		{ C_KEYS, 5, RS(10, 2, -1, false, { "/a/1", 2, 3, 1, 0 }, { "/a/2", 2, 3, 1, 0 }), NULL,
		  2 },
		{ C_KEYS, 0, RS(10, 1, 4, false, { "/a/1", 2, 3, 1, 0 }), "more=0 with 1 keys of 4", 0 },
		{ C_PAGE, 1, RS(10, 1, 2, true, KV("/a/1", 2, 3)), NULL, 1 },
		{ C_PAGE, 1, RS(10, 1, 2, true, KV("/a", 2, 3)), "key \"/a\" outside", 0 },
		{ C_PAGE, 1, RS(10, 1, 2, false, KV("/a/1", 2, 3)), "more=0 with 1 keys of 2", 0 },
		/* Another cluster: refused as before. */
		{ C_RANGE, 0, { .rev = 10, .cluster = 0x999 }, NULL, 0 },
		{ C_RANGE, 0, { .rev = 10, .cluster = 0x888 }, "answered for cluster 888", 0 },
	};
	struct client c;

	revclock_init();
	client_start(&c);
	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		const struct range_case *rc = &cases[i];
		guint before = warnings();
		gint64 t0;
		size_t n;
		int ret;

		g_test_message("case %zu", i);
		/* The two cluster cases go together. */
		if (!rc->answer.cluster || rc->answer.cluster == 0x999)
			client_renew(&c);
		fake_push(c.f, range_msg(&rc->answer));
		t0 = g_get_monotonic_time();
		ret = range_call(&c, rc->call, rc->limit, &n);
		if (rc->want) {
			check_refused(ret, t0, before, rc->want);
		} else {
			g_assert_cmpint(ret, ==, 0);
			g_assert_cmpuint(n, ==, rc->n);
			g_assert_cmpuint(warnings(), ==, before);
		}
	}
	client_stop(&c);
	revclock_fini();
}

/* A lookup (a read-only Txn of two Ranges), a Put (Status, then a Txn), a
 * single-key delete and a lease grant, each answered well then badly. */
static void test_txn(void)
{
	static const struct range_spec file = RS(10, 1, -1, false, KV("/d/f", 2, 3));
	static const struct range_spec child = RS(10, 1, 3, true, { "/d/f/x", 4, 5, 1, 0 });
	static const struct range_spec stray = RS(10, 1, 1, false, { "/d/g", 4, 5, 1, 0 });
	const struct range_spec good[] = { file, child }, bad[] = { file, stray };
	g_autoptr(GBytes) fk = g_bytes_new_static("/d/f", 4);
	g_autoptr(GBytes) dp = g_bytes_new_static("/d/f/", 5);
	struct ef_kv *kv = NULL;
	bool children = false;
	struct client c;
	int64_t mod = 0, id = 0, ttl = 0;
	guint before;
	gint64 t0;

	revclock_init();
	client_start(&c);
	fake_push(c.f, txn_ranges_msg(10, good, 2));
	g_assert_cmpint(etcd_lookup(c.e, fk, dp, &kv, &children), ==, 0);
	g_assert_nonnull(kv);
	g_assert_true(children);
	g_clear_pointer(&kv, ef_kv_free);

	struct {
		GBytes *msg;
		const char *want;
	} lookups[] = {
		{ txn_ranges_msg(10, bad, 2), "key \"/d/g\" outside the range" },
		{ txn_ranges_msg(10, good, 1), "1 answers to a Txn branch of 2 ops" },
		{ txn_ranges_msg(2, good, 2), "mod_revision 3 in an answer at revision 2" },
		{ txn_put_msg(10, 2), "answer 0 of a Txn of another kind than its op" },
	};
	for (size_t i = 0; i < G_N_ELEMENTS(lookups); i++) {
		client_renew(&c);
		before = warnings();
		fake_push(c.f, lookups[i].msg);
		t0 = g_get_monotonic_time();
		check_refused(etcd_lookup(c.e, fk, dp, &kv, &children), t0, before, lookups[i].want);
		g_assert_null(kv);
	}

	/* A Put: its revision, or a refusal of an answer without one. */
	client_renew(&c);
	fake_push(c.f, status_msg());
	fake_push(c.f, txn_put_msg(12, 1));
	g_assert_cmpint(etcd_put(c.e, fk, "v", 1, 0, 3, NULL, &mod), ==, 0);
	g_assert_cmpint(mod, ==, 12);
	struct {
		GBytes *msg;
		const char *want;
	} puts[] = {
		{ txn_put_msg(0, 1), "a header revision of 0" },
		{ txn_put_msg(INT64_MAX, 1), "a header revision of 9223372036854775807" },
		{ txn_put_msg(12, 0), "0 answers to a Txn branch of 1 ops" },
	};
	for (size_t i = 0; i < G_N_ELEMENTS(puts); i++) {
		client_renew(&c);
		before = warnings();
		fake_push(c.f, status_msg());
		fake_push(c.f, puts[i].msg);
		t0 = g_get_monotonic_time();
		check_refused(etcd_put(c.e, fk, "v", 1, 0, 3, NULL, &mod), t0, before, puts[i].want);
	}

	/* One key deleted at most. */
	client_renew(&c);
	fake_push(c.f, status_msg());
	fake_push(c.f, delete_msg(13, 1));
	g_assert_cmpint(etcd_delete(c.e, fk, NULL, &mod), ==, 0);
	g_assert_cmpint(mod, ==, 1);
	client_renew(&c);
	before = warnings();
	fake_push(c.f, status_msg());
	fake_push(c.f, delete_msg(13, 2));
	t0 = g_get_monotonic_time();
	check_refused(etcd_delete(c.e, fk, NULL, &mod), t0, before, "2 keys deleted for one key");

	/* A lease's TTL within etcd's bounds. */
	client_renew(&c);
	fake_push(c.f, status_msg());
	fake_push(c.f, grant_msg(0x77, 10));
	g_assert_cmpint(etcd_lease_grant(c.e, 10, &id, &ttl), ==, 0);
	g_assert_cmpint(id, ==, 0x77);
	client_renew(&c);
	before = warnings();
	fake_push(c.f, status_msg());
	fake_push(c.f, grant_msg(0x77, REPLY_MAX_TTL + 1));
	t0 = g_get_monotonic_time();
	check_refused(etcd_lease_grant(c.e, 10, &id, &ttl), t0, before,
		      "a lease 119 granted for 9000000001 s");
	client_stop(&c);
	revclock_fini();
}

/* Broken gRPC under an etcd call: the transport refuses it. */
static void test_framing(void)
{
	static const struct range_spec ok = RS(10, 1, -1, false, KV("/a/1", 2, 3));
	static const struct {
		const char *http, *type, *status;
		gboolean compressed, garbage;
		const char *want;
	} cases[] = {
		{ "404", NULL, NULL, FALSE, FALSE, "/etcdserverpb.KV/Range: :status \"404\"" },
		{ NULL, "text/plain", NULL, FALSE, FALSE, "content-type \"text/plain\"" },
		{ NULL, NULL, "OK", FALSE, FALSE, "grpc-status \"OK\"" },
		{ NULL, NULL, NULL, TRUE, FALSE, "a compressed message" },
		{ NULL, NULL, NULL, FALSE, TRUE, "/etcdserverpb.KV/Range: it does not decode" },
	};
	struct client c;
	size_t n;

	revclock_init();
	client_start(&c);
	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		guint before = warnings();
		struct answer *a;
		gint64 t0;

		client_renew(&c);
		a = fake_push(c.f, cases[i].garbage ? g_bytes_new_static("\xff\xff\xff", 3)
						    : range_msg(&ok));
		a->http = cases[i].http;
		a->type = cases[i].type;
		a->status = cases[i].status;
		a->compressed = cases[i].compressed;
		t0 = g_get_monotonic_time();
		check_refused(range_call(&c, C_RANGE, 0, &n), t0, before, cases[i].want);
	}
	/* And the connection is still good for a good answer. */
	fake_push(c.f, range_msg(&ok));
	g_assert_cmpint(range_call(&c, C_RANGE, 0, &n), ==, 0);
	g_assert_cmpuint(n, ==, 1);
	client_stop(&c);
	revclock_fini();
}

/* ---- Watch and LeaseKeepAlive streams ---- */

struct recorder {
	GMutex lock;
	GCond cond;
	GPtrArray *msgs;           /* protected by lock: struct ef_watch_msg, or a
				    * NULL entry for a refused one */
	GArray *ttls;              /* protected by lock: int64_t */
	int closes;                /* protected by lock */
};

static void rec_on_msg(void *ud, struct ef_watch_msg *m)
{
	struct recorder *r = ud;

	g_mutex_lock(&r->lock);
	g_ptr_array_add(r->msgs, m);
	g_cond_broadcast(&r->cond);
	g_mutex_unlock(&r->lock);
}

static void rec_on_ttl(void *ud, int64_t id, int64_t ttl)
{
	struct recorder *r = ud;

	g_mutex_lock(&r->lock);
	g_array_append_val(r->ttls, ttl);
	g_cond_broadcast(&r->cond);
	g_mutex_unlock(&r->lock);
}

static void rec_on_close(void *ud, int err)
{
	struct recorder *r = ud;

	g_mutex_lock(&r->lock);
	r->closes++;
	g_cond_broadcast(&r->cond);
	g_mutex_unlock(&r->lock);
}

static const struct ef_watch_ops watch_ops = { rec_on_msg, rec_on_close };
static const struct ef_keepalive_ops ka_ops = { rec_on_ttl, rec_on_close };

static void rec_init(struct recorder *r)
{
	memset(r, 0, sizeof(*r));
	g_mutex_init(&r->lock);
	g_cond_init(&r->cond);
	r->msgs = g_ptr_array_new_with_free_func((GDestroyNotify)etcd_watch_msg_free);
	r->ttls = g_array_new(FALSE, FALSE, sizeof(int64_t));
}

static void rec_clear(struct recorder *r)
{
	g_ptr_array_unref(r->msgs);
	g_array_unref(r->ttls);
	g_cond_clear(&r->cond);
	g_mutex_clear(&r->lock);
}

/* Waits (at most 2 s) until *count reaches n, then a little longer for
 * anything that should not come. */
static guint rec_wait(struct recorder *r, const guint *count, guint n)
{
	gint64 end = g_get_monotonic_time() + 2 * G_TIME_SPAN_SECOND;
	guint got;

	g_mutex_lock(&r->lock);
	while (*count < n && g_cond_wait_until(&r->cond, &r->lock, end))
		;
	g_mutex_unlock(&r->lock);
	g_usleep(50 * 1000);
	g_mutex_lock(&r->lock);
	got = *count;
	g_mutex_unlock(&r->lock);
	return got;
}

/* A WatchResponse: watch_id, header revision, then events as
 * {key, create, mod} (create 0: a DELETE). */
struct wevent {
	const char *key;
	int64_t create, mod;
};

static GBytes *watch_msg(int64_t watch_id, int64_t rev, bool created, const struct wevent *ev,
			 size_t n, uint64_t cluster)
{
	Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h;
	Mvccpb__Event e[3], *ep[3];
	Mvccpb__KeyValue kv[3];

	g_assert_cmpuint(n, <=, 3);
	header_init(&h, rev);
	if (cluster)
		h.cluster_id = cluster;
	r.header = &h;
	r.watch_id = watch_id;
	r.created = created;
	for (size_t i = 0; i < n; i++) {
		mvccpb__event__init(&e[i]);
		mvccpb__key_value__init(&kv[i]);
		kv[i].key = bin(ev[i].key);
		kv[i].mod_revision = ev[i].mod;
		kv[i].create_revision = ev[i].create;
		kv[i].version = ev[i].create ? 1 : 0;
		e[i].type = ev[i].create ? MVCCPB__EVENT__EVENT_TYPE__PUT
					 : MVCCPB__EVENT__EVENT_TYPE__DELETE;
		e[i].kv = &kv[i];
		ep[i] = &e[i];
	}
	r.events = ep;
	r.n_events = n;
	return pack(&r.base);
}

/* One stream script: created (unless not), a good event at 11, then bad,
 * then a good event that must never arrive. */
struct watch_case {
	bool no_create;
	GBytes *bad;
	const char *want;
};

static void run_watch_case(struct client *c, const struct watch_case *wc)
{
	static const struct wevent good = { "/w/a", 11, 11 }, late = { "/w/z", 40, 40 };
	g_autoptr(GBytes) key = g_bytes_new_static("/w/", 3);
	g_autoptr(GBytes) end = g_bytes_new_static("/w0", 3);
	struct ef_grpc_stream *s = NULL;
	struct answer *a = fake_push(c->f, NULL);
	guint before = warnings(), want_n = wc->no_create ? 1 : 3;
	struct recorder r;

	rec_init(&r);
	a->stream = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
	if (!wc->no_create) {
		g_ptr_array_add(a->stream, watch_msg(0, 10, true, NULL, 0, 0));
		g_ptr_array_add(a->stream, watch_msg(0, 11, false, &good, 1, 0));
	}
	g_ptr_array_add(a->stream, wc->bad);
	g_ptr_array_add(a->stream, watch_msg(0, 40, false, &late, 1, 0));
	g_assert_cmpint(etcd_watch_open(c->e, key, end, 0, &watch_ops, &r, &s), ==, 0);
	/* The good ones, then NULL, and nothing after it. */
	g_assert_cmpuint(rec_wait(&r, &r.msgs->len, want_n), ==, want_n);
	for (guint i = 0; i + 1 < want_n; i++)
		g_assert_nonnull(g_ptr_array_index(r.msgs, i));
	g_assert_null(g_ptr_array_index(r.msgs, want_n - 1));
	check_warned(before, wc->want);
	etcd_watch_close(s);
	g_assert_cmpint(r.closes, ==, 1);
	rec_clear(&r);
}

static void test_watch(void)
{
	static const struct wevent outside = { "/x/a", 12, 12 }, again = { "/w/b", 11, 11 },
				   ahead = { "/w/b", 12, 13 }, at12 = { "/w/b", 12, 12 },
				   top = { "/w/b", 12, INT64_MAX };
	const struct watch_case cases[] = {
		{ false, watch_msg(0, 12, false, &outside, 1, 0), "key \"/x/a\", outside the watched" },
		{ false, watch_msg(0, 12, false, &again, 1, 0),
		  "a watch event at revision 11 after one at 11" },
		{ false, watch_msg(0, 12, false, &ahead, 1, 0),
		  "a watch event at revision 13 in a message at 12" },
		{ false, watch_msg(0, 10, false, &at12, 1, 0),
		  "watch events at header revision 10 after 11" },
		{ false, watch_msg(0, INT64_MAX, false, NULL, 0, 0),
		  "a watch header revision of 9223372036854775807" },
		{ false, watch_msg(0, INT64_MAX, false, &top, 1, 0),
		  "a watch header revision of 9223372036854775807" },
		{ false, watch_msg(5, 12, false, &at12, 1, 0), "for watcher 5" },
		{ false, g_bytes_new_static("\x0a\xff", 2), "Watch: it does not decode" },
		{ false, watch_msg(0, 12, false, &at12, 1, 0x888), "answered for cluster 888" },
		{ true, watch_msg(0, 12, false, &at12, 1, 0), "not created yet" },
	};
	struct client c;

	revclock_init();
	client_start(&c);
	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_test_message("case %zu", i);
		client_renew(&c);
		run_watch_case(&c, &cases[i]);
	}
	client_stop(&c);
	revclock_fini();
}

static GBytes *keepalive_msg(int64_t id, int64_t ttl)
{
	Etcdserverpb__LeaseKeepAliveResponse r = ETCDSERVERPB__LEASE_KEEP_ALIVE_RESPONSE__INIT;
	Etcdserverpb__ResponseHeader h;

	header_init(&h, 5);
	r.header = &h;
	r.id = id;
	r.ttl = ttl;
	return pack(&r.base);
}

/* Refused keepalive answers say nothing about the lease. */
static void test_keepalive(void)
{
	struct ef_grpc_stream *s = NULL;
	struct client c;
	struct recorder r;
	struct answer *a;
	guint before;

	revclock_init();
	client_start(&c);
	rec_init(&r);
	a = fake_push(c.f, NULL);
	a->stream = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
	g_ptr_array_add(a->stream, keepalive_msg(7, 10));
	g_ptr_array_add(a->stream, keepalive_msg(7, -1));
	g_ptr_array_add(a->stream, keepalive_msg(0, 10));
	g_ptr_array_add(a->stream, keepalive_msg(7, REPLY_MAX_TTL + 1));
	g_ptr_array_add(a->stream, keepalive_msg(7, 0));
	before = warnings();
	g_assert_cmpint(etcd_keepalive_open(c.e, &ka_ops, &r, &s), ==, 0);
	g_assert_cmpint(etcd_keepalive_send(s, 7), ==, 0);
	g_assert_cmpuint(rec_wait(&r, &r.ttls->len, 2), ==, 2);
	g_assert_cmpint(g_array_index(r.ttls, int64_t, 0), ==, 10);
	g_assert_cmpint(g_array_index(r.ttls, int64_t, 1), ==, 0);
	g_assert_cmpuint(warnings(), ==, before + 3);
	etcd_keepalive_close(s);
	g_assert_cmpint(r.closes, ==, 1);
	rec_clear(&r);
	client_stop(&c);
	revclock_fini();
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);
	g_log_set_handler(NULL, G_LOG_LEVEL_WARNING, on_warning, NULL);
	g_test_add_func("/etcd/hostile/range", test_range);
	g_test_add_func("/etcd/hostile/txn", test_txn);
	g_test_add_func("/etcd/hostile/framing", test_framing);
	g_test_add_func("/etcd/hostile/watch", test_watch);
	g_test_add_func("/etcd/hostile/keepalive", test_keepalive);
	return g_test_run();
}
