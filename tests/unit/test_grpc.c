/*
 * Unit tests for grpc and h2: framing, the deframer fed at every split,
 * grpc-timeout formatting, the status -> errno table, endpoint parsing and
 * grpc-message decoding; then the transport end to end against a scripted
 * HTTP/2 server on 127.0.0.1 that writes raw frames (no nghttp2 on that
 * side), so responses can be cut, malformed, refused or withheld at will.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib.h>

#include "endpoint.h"
#include "grpc.h"
#include "h2.h"

/* ---- framing ---- */

static void test_frame_header(void)
{
	static const struct {
		size_t len;
		uint8_t want[GRPC_FRAME_HEADER];
	} cases[] = {
		{ 0, { 0, 0, 0, 0, 0 } },
		{ 1, { 0, 0, 0, 0, 1 } },
		{ 255, { 0, 0, 0, 0, 0xff } },
		{ 256, { 0, 0, 0, 1, 0 } },
		{ 0x01020304, { 0, 1, 2, 3, 4 } },
		{ 0xffffffff, { 0, 0xff, 0xff, 0xff, 0xff } },
	};

	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		uint8_t out[GRPC_FRAME_HEADER] = { 0xaa, 0xaa, 0xaa, 0xaa, 0xaa };

		grpc_frame_header(out, cases[i].len);
		g_assert_cmpmem(out, sizeof(out), cases[i].want, sizeof(cases[i].want));
	}
}

/* Appends one framed message of len bytes, filled with a pattern from seed. */
static void frame_append(GByteArray *b, size_t len, uint8_t seed)
{
	uint8_t hdr[GRPC_FRAME_HEADER];

	grpc_frame_header(hdr, len);
	g_byte_array_append(b, hdr, sizeof(hdr));
	for (size_t i = 0; i < len; i++) {
		uint8_t c = (uint8_t)(seed + i);

		g_byte_array_append(b, &c, 1);
	}
}

static void check_msg(GBytes *msg, size_t len, uint8_t seed)
{
	gsize n;
	const uint8_t *p = g_bytes_get_data(msg, &n);

	g_assert_cmpuint(n, ==, len);
	for (size_t i = 0; i < len; i++)
		g_assert_cmpuint(p[i], ==, (uint8_t)(seed + i));
}

static const size_t stream_lens[] = { 3, 0, 17, 1, 0, 300 };

/* Feeds the whole stream in chunks; every message must come out intact. */
static void deframe_in_chunks(const GByteArray *all, size_t cut1, size_t cut2)
{
	struct ef_grpc_deframer d;
	const size_t cuts[] = { 0, cut1, cut2, all->len };
	size_t next = 0;
	GBytes *msg;

	grpc_deframer_init(&d, 1024);
	for (size_t c = 0; c + 1 < G_N_ELEMENTS(cuts); c++) {
		g_assert_cmpint(grpc_deframer_feed(&d, all->data + cuts[c], cuts[c + 1] - cuts[c]),
				==, 0);
		while (grpc_deframer_next(&d, &msg) == 1) {
			g_assert_cmpuint(next, <, G_N_ELEMENTS(stream_lens));
			check_msg(msg, stream_lens[next], (uint8_t)next);
			g_bytes_unref(msg);
			next++;
		}
	}
	g_assert_cmpuint(next, ==, G_N_ELEMENTS(stream_lens));
	g_assert_false(grpc_deframer_partial(&d));
	grpc_deframer_clear(&d);
}

static void test_deframer_splits(void)
{
	g_autoptr(GByteArray) all = g_byte_array_new();

	for (size_t i = 0; i < G_N_ELEMENTS(stream_lens); i++)
		frame_append(all, stream_lens[i], (uint8_t)i);
	/* One chunk, every single cut, and a sample of double cuts. */
	deframe_in_chunks(all, all->len, all->len);
	for (size_t i = 0; i <= all->len; i++)
		deframe_in_chunks(all, i, i);
	for (size_t i = 0; i <= all->len; i += 7)
		for (size_t j = i; j <= all->len; j += 3)
			deframe_in_chunks(all, i, j);
}

static void test_deframer_bytewise(void)
{
	g_autoptr(GByteArray) all = g_byte_array_new();
	struct ef_grpc_deframer d;
	size_t next = 0;
	GBytes *msg;

	for (size_t i = 0; i < G_N_ELEMENTS(stream_lens); i++)
		frame_append(all, stream_lens[i], (uint8_t)i);
	grpc_deframer_init(&d, 1024);
	for (size_t i = 0; i < all->len; i++) {
		g_assert_cmpint(grpc_deframer_feed(&d, all->data + i, 1), ==, 0);
		while (grpc_deframer_next(&d, &msg) == 1) {
			check_msg(msg, stream_lens[next], (uint8_t)next);
			g_bytes_unref(msg);
			next++;
		}
		/* Partial exactly when we are inside a message. */
		if (i + 1 < all->len)
			g_assert_true(grpc_deframer_partial(&d) || next < G_N_ELEMENTS(stream_lens));
	}
	g_assert_cmpuint(next, ==, G_N_ELEMENTS(stream_lens));
	grpc_deframer_clear(&d);
}

static void test_deframer_zero_length(void)
{
	struct ef_grpc_deframer d;
	const uint8_t hdr[] = { 0, 0, 0, 0, 0 };
	GBytes *msg = NULL;

	grpc_deframer_init(&d, 16);
	g_assert_cmpint(grpc_deframer_next(&d, &msg), ==, 0);
	g_assert_cmpint(grpc_deframer_feed(&d, hdr, sizeof(hdr)), ==, 0);
	g_assert_false(grpc_deframer_partial(&d));
	g_assert_cmpint(grpc_deframer_next(&d, &msg), ==, 1);
	g_assert_cmpuint(g_bytes_get_size(msg), ==, 0);
	g_bytes_unref(msg);
	g_assert_cmpint(grpc_deframer_next(&d, &msg), ==, 0);
	grpc_deframer_clear(&d);
}

static void test_deframer_errors(void)
{
	const uint8_t compressed[] = { 1, 0, 0, 0, 1, 'x' };
	const uint8_t bad_flag[] = { 0x80, 0, 0, 0, 0 };
	const uint8_t too_long[] = { 0, 0, 0, 0, 17 };
	const uint8_t at_max[] = { 0, 0, 0, 0, 16 };
	const uint8_t huge[] = { 0, 0xff, 0xff, 0xff, 0xff };
	struct ef_grpc_deframer d;

	grpc_deframer_init(&d, 16);
	g_assert_cmpint(grpc_deframer_feed(&d, compressed, sizeof(compressed)), ==, -EPROTO);
	grpc_deframer_clear(&d);

	grpc_deframer_init(&d, 16);
	g_assert_cmpint(grpc_deframer_feed(&d, bad_flag, sizeof(bad_flag)), ==, -EPROTO);
	grpc_deframer_clear(&d);

	grpc_deframer_init(&d, 16);
	g_assert_cmpint(grpc_deframer_feed(&d, too_long, sizeof(too_long)), ==, -EMSGSIZE);
	g_assert_cmpuint(d.too_long, ==, 17);
	grpc_deframer_clear(&d);

	grpc_deframer_init(&d, 16);
	g_assert_cmpint(grpc_deframer_feed(&d, huge, sizeof(huge)), ==, -EMSGSIZE);
	g_assert_cmpuint(d.too_long, ==, 0xffffffffu);
	grpc_deframer_clear(&d);

	/* The length is checked as soon as the header is complete, before the
	 * body arrives, and for a header that follows a complete message. */
	grpc_deframer_init(&d, 16);
	g_assert_cmpint(grpc_deframer_feed(&d, at_max, sizeof(at_max)), ==, 0);
	g_assert_true(grpc_deframer_partial(&d));
	for (int i = 0; i < 16; i++)
		g_assert_cmpint(grpc_deframer_feed(&d, (const uint8_t *)"z", 1), ==, 0);
	g_assert_false(grpc_deframer_partial(&d));
	g_assert_cmpint(grpc_deframer_feed(&d, too_long, 3), ==, 0);
	g_assert_true(grpc_deframer_partial(&d));
	g_assert_cmpint(grpc_deframer_feed(&d, too_long + 3, 2), ==, -EMSGSIZE);
	grpc_deframer_clear(&d);
}

static void test_deframer_partial(void)
{
	g_autoptr(GByteArray) all = g_byte_array_new();
	struct ef_grpc_deframer d;
	GBytes *msg;

	frame_append(all, 10, 0);
	grpc_deframer_init(&d, 64);
	g_assert_false(grpc_deframer_partial(&d));
	g_assert_cmpint(grpc_deframer_feed(&d, all->data, 3), ==, 0);
	g_assert_true(grpc_deframer_partial(&d));
	g_assert_cmpint(grpc_deframer_next(&d, &msg), ==, 0);
	g_assert_cmpint(grpc_deframer_feed(&d, all->data + 3, all->len - 4), ==, 0);
	g_assert_true(grpc_deframer_partial(&d));
	g_assert_cmpint(grpc_deframer_next(&d, &msg), ==, 0);
	g_assert_cmpint(grpc_deframer_feed(&d, all->data + all->len - 1, 1), ==, 0);
	g_assert_cmpint(grpc_deframer_next(&d, &msg), ==, 1);
	check_msg(msg, 10, 0);
	g_bytes_unref(msg);
	g_assert_false(grpc_deframer_partial(&d));
	grpc_deframer_clear(&d);
}

/* ---- grpc-timeout ---- */

static long long timeout_unit_ms(char unit)
{
	switch (unit) {
	case 'H': return 3600000;
	case 'M': return 60000;
	case 'S': return 1000;
	case 'm': return 1;
	default: return -1;     /* u and n would be valid, but we never need them */
	}
}

static void check_timeout(int ms, const char *want)
{
	char out[16];
	size_t len;
	long long v;

	grpc_timeout_format(out, sizeof(out), ms);
	if (want)
		g_assert_cmpstr(out, ==, want);
	len = strlen(out);
	g_assert_cmpuint(len, >=, 2);
	g_assert_cmpuint(len, <=, 9);
	for (size_t i = 0; i + 1 < len; i++)
		g_assert_true(g_ascii_isdigit(out[i]));
	g_assert_cmpint(timeout_unit_ms(out[len - 1]), >, 0);
	/* Never shorter than asked: the server must not give up first. */
	v = g_ascii_strtoll(out, NULL, 10);
	g_assert_cmpint(v * timeout_unit_ms(out[len - 1]), >=, ms > 0 ? ms : 0);
}

static void test_timeout_format(void)
{
	check_timeout(0, "0m");
	check_timeout(-5, "0m");
	check_timeout(1, "1m");
	check_timeout(2000, "2000m");
	check_timeout(99999999, "99999999m");
	check_timeout(100000000, "100000S");
	check_timeout(100000001, "100001S");
	check_timeout(G_MAXINT, "2147484S");
	for (int ms = 1; ms > 0 && ms < G_MAXINT / 3; ms = ms * 3 + 1)
		check_timeout(ms, NULL);
}

/* ---- status -> errno ---- */

static void test_status_errno(void)
{
	static const struct {
		int code;
		const char *msg;
		int err;
	} rows[] = {
		{ 0, NULL, 0 },
		{ 1, NULL, ECANCELED },
		{ 3, "etcdserver: key is not provided", EINVAL },
		{ 3, "etcdserver: request is too large", EFBIG },
		{ 3, NULL, EINVAL },
		{ 4, NULL, ETIMEDOUT },
		{ 5, "etcdserver: requested lease not found", ENOENT },
		{ 6, NULL, EEXIST },
		{ 7, "etcdserver: permission denied", EACCES },
		{ 8, "etcdserver: mvcc: database space exceeded", ENOSPC },
		{ 8, "grpc: received message larger than max (2097165 vs. 2097152)", EFBIG },
		{ 8, NULL, ENOSPC },
		{ 9, NULL, EIO },
		{ 10, NULL, EAGAIN },
		{ 11, "etcdserver: mvcc: required revision has been compacted", EIO },
		{ 12, "unknown method Nope for service etcdserverpb.KV", EOPNOTSUPP },
		{ 13, NULL, EIO },
		{ 2, "context deadline exceeded", ETIMEDOUT },
		{ 2, "etcdserver: some other failure", EIO },
		{ 14, "etcdserver: request timed out", ETIMEDOUT },
		{ 14, "etcdserver: request timed out, possibly due to previous leader failure",
		  ETIMEDOUT },
		{ 14, "etcdserver: leader changed", EAGAIN },
		{ 14, NULL, EAGAIN },
		{ 15, NULL, EIO },
		{ 16, "etcdserver: invalid auth token", EKEYEXPIRED },
		{ 16, "something else", EACCES },
		{ 7, "etcdserver: permission denied", EACCES },
		{ 2, "etcdserver: permission denied", EACCES },
		{ 3, "etcdserver: user name is empty", EACCES },
		{ 3, "etcdserver: authentication failed, invalid user ID or password", EACCES },
		{ 3, "etcdserver: key is not provided", EINVAL },
		{ 9, "etcdserver: authentication is not enabled", EOPNOTSUPP },
		{ 2, "etcdserver: invalid auth token", EKEYEXPIRED },
		{ 3, "etcdserver: revision of auth store is old", EKEYEXPIRED },
		{ 2, "etcdserver: revision of auth store is old", EKEYEXPIRED },
		{ 9, NULL, EIO },
		{ 17, NULL, EIO },
		{ 99, NULL, EIO },
		{ -1, NULL, EIO },
	};

	for (size_t i = 0; i < G_N_ELEMENTS(rows); i++)
		g_assert_cmpint(grpc_status_errno(rows[i].code, rows[i].msg), ==, rows[i].err);
}

/* ---- endpoints ---- */

static void test_endpoint_parse(void)
{
	static const struct {
		const char *in;
		const char *host;       /* NULL: must be refused */
		uint16_t port;
		gboolean tls;
	} cases[] = {
		{ "127.0.0.1:2379", "127.0.0.1", 2379, FALSE },
		{ "localhost:1", "localhost", 1, FALSE },
		{ "http://10.0.0.1:65535", "10.0.0.1", 65535, FALSE },
		{ "http://etcd.example.com:2379/", "etcd.example.com", 2379, FALSE },
		{ "https://etcd:2379", "etcd", 2379, TRUE },
		{ "[::1]:2379", "::1", 2379, FALSE },
		{ "http://[fe80::1%eth0]:2379", "fe80::1%eth0", 2379, FALSE },
		{ "https://[2001:db8::5]:443", "2001:db8::5", 443, TRUE },
		{ "", NULL, 0, FALSE },
		{ "http://", NULL, 0, FALSE },
		{ "127.0.0.1", NULL, 0, FALSE },
		{ "127.0.0.1:", NULL, 0, FALSE },
		{ ":2379", NULL, 0, FALSE },
		{ "host:0", NULL, 0, FALSE },
		{ "host:65536", NULL, 0, FALSE },
		{ "host:123456", NULL, 0, FALSE },
		{ "host:23a", NULL, 0, FALSE },
		{ "host:-1", NULL, 0, FALSE },
		{ "host:+1", NULL, 0, FALSE },
		{ "::1:2379", NULL, 0, FALSE },
		{ "[::1]", NULL, 0, FALSE },
		{ "[::1]2379", NULL, 0, FALSE },
		{ "[]:2379", NULL, 0, FALSE },
		{ "[host]:2379", NULL, 0, FALSE },
		{ "unix://sock:1", NULL, 0, FALSE },
		{ "http://host:2379/v3", NULL, 0, FALSE },
		{ "user@host:2379", NULL, 0, FALSE },
		{ "ho st:2379", NULL, 0, FALSE },
	};

	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		char *host = NULL;
		uint16_t port = 0;
		gboolean tls = FALSE;
		int rc = endpoint_parse(cases[i].in, &host, &port, &tls);

		if (!cases[i].host) {
			g_assert_cmpint(rc, ==, -EINVAL);
			g_assert_null(host);
			continue;
		}
		g_assert_cmpint(rc, ==, 0);
		g_assert_cmpstr(host, ==, cases[i].host);
		g_assert_cmpuint(port, ==, cases[i].port);
		g_assert_cmpint(tls, ==, cases[i].tls);
		g_free(host);
	}
	g_assert_cmpint(endpoint_parse(NULL, NULL, NULL, NULL), ==, -EINVAL);
}

static void test_percent_decode(void)
{
	static const struct {
		const char *in;
		const char *out;
	} cases[] = {
		{ "", "" },
		{ "plain text", "plain text" },
		{ "not%20found", "not found" },
		{ "100%25", "100%" },
		{ "%E2%82%AC", "\xe2\x82\xac" },
		{ "%e2%82%ac", "\xe2\x82\xac" },
		{ "bad %zz escape", "bad %zz escape" },
		{ "cut %4", "cut %4" },
		{ "cut %", "cut %" },
		{ "%%41", "%A" },
	};

	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		char *s = grpc_percent_decode(cases[i].in, strlen(cases[i].in));

		g_assert_cmpstr(s, ==, cases[i].out);
		g_free(s);
	}
}

/* ---- a scripted HTTP/2 server ---- */

/* The malformed answers the fake sends are logged as warnings, which
 * g_test makes fatal: those are counted here instead; any other warning
 * still fails the test. */
static GMutex warn_lock;
static guint warnings_seen;             /* protected by warn_lock */
static char last_warning[512];          /* protected by warn_lock */

static void on_warning(const gchar *domain, GLogLevelFlags level, const gchar *message,
		       gpointer ud)
{
	if (!strstr(message, "etcdfs: a malformed answer to")) {
		g_log_default_handler(domain, level, message, ud);
		g_error("an unexpected warning");
	}
	g_mutex_lock(&warn_lock);
	warnings_seen++;
	g_strlcpy(last_warning, message, sizeof(last_warning));
	g_mutex_unlock(&warn_lock);
}

enum fake_mode {
	FAKE_ECHO,              /* the request message back, grpc-status 0 */
	FAKE_SPLIT,             /* the same, one DATA frame per byte */
	FAKE_ERROR,             /* trailers-only, grpc-status 5, encoded message */
	FAKE_NO_STATUS,         /* a message, then trailers without grpc-status */
	FAKE_TWO,               /* two messages */
	FAKE_NONE,              /* no message, grpc-status 0 */
	FAKE_COMPRESSED,        /* a message with the compressed flag set */
	FAKE_BIG,               /* one 3 MiB message */
	FAKE_SILENT,            /* never answers */
	FAKE_REFUSE,            /* RST_STREAM REFUSED_STREAM */
	FAKE_GOAWAY,            /* GOAWAY (none seen), then closes the connection */
	FAKE_GOAWAY_DONE,       /* GOAWAY (this one seen), the answer, then closes */
	FAKE_BIDI,              /* echoes each DATA frame; a message "end" ends it */
	FAKE_TRUNCATED,         /* half a message, then grpc-status 0 */
	FAKE_CUT,               /* half a message, then the connection closes */
	FAKE_HTTP_404,          /* :status 404, then the echo as if all were well */
	FAKE_HTTP_503,          /* trailers-only :status 503, grpc-status 14 */
	FAKE_TEXT,              /* content-type text/html, then the echo */
	FAKE_NO_TYPE,           /* no content-type, trailers-only grpc-status 0 */
	FAKE_BAD_STATUS,        /* the echo, then grpc-status "0k" */
	FAKE_HUGE,              /* a frame header announcing 2 GiB, then silence */
	FAKE_BIDI_CUT,          /* half of the first message, then grpc-status 0 */
};

#define BIG_LEN (3u << 20)

struct fake {
	int lfd;
	uint16_t port;
	GThread *thread;
	gint stop;                      /* atomic */
	gboolean no_settings;           /* accept, then never write */
	gboolean ack_pings;
	const enum fake_mode *modes;    /* per request; the last one repeats */
	size_t n_modes;
	gint requests;                  /* atomic */
	gint connections;               /* atomic */
};

struct fake_stream {
	enum fake_mode mode;
	GByteArray *body;
};

static void fake_stream_free(gpointer p)
{
	struct fake_stream *fs = p;

	g_byte_array_unref(fs->body);
	g_free(fs);
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

/* HPACK integer with a 7-bit prefix and the Huffman bit clear. */
static void hpack_int(GByteArray *b, size_t v)
{
	uint8_t c;

	if (v < 127) {
		c = (uint8_t)v;
		g_byte_array_append(b, &c, 1);
		return;
	}
	c = 127;
	g_byte_array_append(b, &c, 1);
	for (v -= 127; v >= 128; v >>= 7) {
		c = (uint8_t)((v & 0x7f) | 0x80);
		g_byte_array_append(b, &c, 1);
	}
	c = (uint8_t)v;
	g_byte_array_append(b, &c, 1);
}

/* "Literal header field without indexing, new name": no HPACK state. */
static void hpack_lit(GByteArray *b, const char *name, const char *value)
{
	const uint8_t zero = 0;

	g_byte_array_append(b, &zero, 1);
	hpack_int(b, strlen(name));
	g_byte_array_append(b, (const uint8_t *)name, (guint)strlen(name));
	hpack_int(b, strlen(value));
	g_byte_array_append(b, (const uint8_t *)value, (guint)strlen(value));
}

#define F_END_STREAM 0x1
#define F_END_HEADERS 0x4

static void put_headers(GByteArray *out, uint32_t sid, gboolean response, const char *status,
			const char *message, gboolean end_stream)
{
	g_autoptr(GByteArray) blk = g_byte_array_new();

	if (response) {
		hpack_lit(blk, ":status", "200");
		hpack_lit(blk, "content-type", "application/grpc");
	}
	if (status)
		hpack_lit(blk, "grpc-status", status);
	if (message)
		hpack_lit(blk, "grpc-message", message);
	put_frame(out, 1, F_END_HEADERS | (end_stream ? F_END_STREAM : 0), sid, blk->data,
		  blk->len);
}

/* A response's first header block as a broken server may send it. */
static void put_odd_headers(GByteArray *out, uint32_t sid, const char *http, const char *type,
			    const char *status, gboolean end_stream)
{
	g_autoptr(GByteArray) blk = g_byte_array_new();

	hpack_lit(blk, ":status", http);
	if (type)
		hpack_lit(blk, "content-type", type);
	if (status)
		hpack_lit(blk, "grpc-status", status);
	put_frame(out, 1, F_END_HEADERS | (end_stream ? F_END_STREAM : 0), sid, blk->data,
		  blk->len);
}

static void put_data(GByteArray *out, uint32_t sid, const uint8_t *p, size_t len)
{
	for (size_t off = 0; off < len; off += 16384)
		put_frame(out, 0, 0, sid, p + off, MIN(len - off, 16384));
}

static void fake_unary_reply(GByteArray *out, uint32_t sid, struct fake_stream *fs)
{
	GByteArray *b = fs->body;

	switch (fs->mode) {
	case FAKE_ERROR:
		put_headers(out, sid, TRUE, "5", "not%20found%25", TRUE);
		return;
	case FAKE_REFUSE: {
		const uint8_t code[4] = { 0, 0, 0, 7 };

		put_frame(out, 3, 0, sid, code, sizeof(code));
		return;
	}
	case FAKE_SILENT:
		return;
	case FAKE_HTTP_503:
		put_odd_headers(out, sid, "503", "application/grpc", "14", TRUE);
		return;
	case FAKE_NO_TYPE:
		put_odd_headers(out, sid, "200", NULL, "0", TRUE);
		return;
	case FAKE_HTTP_404:
	case FAKE_TEXT:
		put_odd_headers(out, sid, fs->mode == FAKE_TEXT ? "200" : "404",
				fs->mode == FAKE_TEXT ? "text/html" : "application/grpc", NULL, FALSE);
		put_data(out, sid, b->data, b->len);
		put_headers(out, sid, FALSE, "0", "", TRUE);
		return;
	case FAKE_HUGE: {
		const uint8_t hdr[GRPC_FRAME_HEADER] = { 0, 0x7f, 0xff, 0xff, 0xff };

		put_headers(out, sid, TRUE, NULL, NULL, FALSE);
		put_data(out, sid, hdr, sizeof(hdr));
		return;
	}
	case FAKE_GOAWAY_DONE:
		fs->mode = FAKE_ECHO;
		fake_unary_reply(out, sid, fs);
		fs->mode = FAKE_GOAWAY_DONE;
		return;
	default:
		break;
	}
	put_headers(out, sid, TRUE, NULL, NULL, FALSE);
	if (fs->mode == FAKE_SPLIT) {
		for (guint i = 0; i < b->len; i++)
			put_frame(out, 0, 0, sid, b->data + i, 1);
	} else if (fs->mode == FAKE_COMPRESSED && b->len) {
		b->data[0] = 1;
		put_data(out, sid, b->data, b->len);
	} else if (fs->mode == FAKE_BIG) {
		g_autofree uint8_t *big = g_malloc(GRPC_FRAME_HEADER + BIG_LEN);

		grpc_frame_header(big, BIG_LEN);
		for (size_t i = 0; i < BIG_LEN; i++)
			big[GRPC_FRAME_HEADER + i] = (uint8_t)(i * 7);
		put_data(out, sid, big, GRPC_FRAME_HEADER + BIG_LEN);
	} else if (fs->mode == FAKE_TRUNCATED || fs->mode == FAKE_CUT) {
		put_data(out, sid, b->data, b->len / 2);
		if (fs->mode == FAKE_CUT)
			return;
	} else if (fs->mode != FAKE_NONE) {
		put_data(out, sid, b->data, b->len);
		if (fs->mode == FAKE_TWO)
			put_data(out, sid, b->data, b->len);
	}
	put_headers(out, sid, FALSE,
		    fs->mode == FAKE_NO_STATUS ? NULL : fs->mode == FAKE_BAD_STATUS ? "0k" : "0",
		    fs->mode == FAKE_NO_STATUS ? "x" : "", TRUE);
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

static enum fake_mode fake_next_mode(struct fake *f)
{
	size_t i = (size_t)g_atomic_int_add(&f->requests, 1);

	return f->modes[MIN(i, f->n_modes - 1)];
}

/* Answers one client frame into out. FALSE: close the connection. */
static gboolean fake_frame(struct fake *f, GHashTable *streams, GByteArray *out, uint8_t type,
			   uint8_t flags, uint32_t sid, const uint8_t *p, size_t len)
{
	struct fake_stream *fs = g_hash_table_lookup(streams, GUINT_TO_POINTER(sid));

	switch (type) {
	case 4:         /* SETTINGS */
		if (!(flags & 1))
			put_frame(out, 4, 1, 0, NULL, 0);
		return TRUE;
	case 6:         /* PING */
		if (!(flags & 1) && f->ack_pings)
			put_frame(out, 6, 1, 0, p, len);
		return TRUE;
	case 1:         /* HEADERS */
		fs = g_new0(struct fake_stream, 1);
		fs->mode = fake_next_mode(f);
		fs->body = g_byte_array_new();
		g_hash_table_insert(streams, GUINT_TO_POINTER(sid), fs);
		if (fs->mode == FAKE_GOAWAY || fs->mode == FAKE_GOAWAY_DONE) {
			uint32_t last = fs->mode == FAKE_GOAWAY ? 0 : sid;
			const uint8_t goaway[8] = { (uint8_t)(last >> 24), (uint8_t)(last >> 16),
						    (uint8_t)(last >> 8), (uint8_t)last };

			put_frame(out, 7, 0, 0, goaway, sizeof(goaway));
			return fs->mode == FAKE_GOAWAY_DONE;
		}
		if (fs->mode == FAKE_BIDI || fs->mode == FAKE_BIDI_CUT)
			put_headers(out, sid, TRUE, NULL, NULL, FALSE);
		return TRUE;
	case 0:         /* DATA */
		if (!fs)
			return TRUE;
		g_byte_array_append(fs->body, p, (guint)len);
		if (fs->mode == FAKE_BIDI_CUT) {
			put_data(out, sid, p, len / 2);
			put_headers(out, sid, FALSE, "0", "", TRUE);
		} else if (fs->mode == FAKE_BIDI) {
			put_data(out, sid, p, len);
			if (len >= 3 && memcmp(p + len - 3, "end", 3) == 0)
				put_headers(out, sid, FALSE, "0", "", TRUE);
		} else if (flags & F_END_STREAM) {
			fake_unary_reply(out, sid, fs);
			return fs->mode != FAKE_CUT && fs->mode != FAKE_GOAWAY_DONE;
		}
		return TRUE;
	default:
		return TRUE;
	}
}

static void fake_serve(struct fake *f, int fd)
{
	g_autoptr(GHashTable) streams =
		g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, fake_stream_free);
	uint8_t preface[24];
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (!fake_read(f, fd, preface, sizeof(preface)))
		return;
	if (!f->no_settings) {
		g_autoptr(GByteArray) out = g_byte_array_new();
		/* Our window for the client's requests: as large as allowed. */
		const uint8_t settings[6] = { 0, 4, 0x7f, 0xff, 0xff, 0xff };
		const uint32_t inc = 0x7fffffff - 65535;
		const uint8_t wu[4] = { (uint8_t)(inc >> 24), (uint8_t)(inc >> 16),
					(uint8_t)(inc >> 8), (uint8_t)inc };

		put_frame(out, 4, 0, 0, settings, sizeof(settings));
		put_frame(out, 8, 0, 0, wu, sizeof(wu));
		if (!fake_send(fd, out))
			return;
	}
	for (;;) {
		g_autoptr(GByteArray) out = g_byte_array_new();
		g_autofree uint8_t *payload = NULL;
		uint8_t h[9];
		size_t len;
		gboolean keep;

		if (!fake_read(f, fd, h, sizeof(h)))
			return;
		len = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
		payload = g_malloc(len + 1);
		if (!fake_read(f, fd, payload, len))
			return;
		if (f->no_settings)
			continue;
		keep = fake_frame(f, streams, out, h[3], h[4],
				  (uint32_t)(h[5] & 0x7f) << 24 | (uint32_t)h[6] << 16 |
					  (uint32_t)h[7] << 8 | h[8],
				  payload, len);
		if (!fake_send(fd, out) || !keep)
			return;
	}
}

/* Closes like a real server: what the client sent meanwhile is read, so
 * that the kernel ends the connection with a FIN, not a reset that could
 * overtake the last frames. */
static void fake_linger(struct fake *f, int fd)
{
	gint64 until = g_get_monotonic_time() + G_USEC_PER_SEC;
	uint8_t buf[4096];

	shutdown(fd, SHUT_WR);
	while (!g_atomic_int_get(&f->stop) && g_get_monotonic_time() < until) {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		if (poll(&p, 1, 20) > 0 && recv(fd, buf, sizeof(buf), 0) <= 0)
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
		g_atomic_int_inc(&f->connections);
		fake_serve(f, fd);
		fake_linger(f, fd);
		close(fd);
	}
	return NULL;
}

/* A listening socket on 127.0.0.1; *port receives its port. */
static int listen_any(uint16_t *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	g_assert_cmpint(fd, >=, 0);
	g_assert_cmpint(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
	g_assert_cmpint(listen(fd, 16), ==, 0);
	g_assert_cmpint(getsockname(fd, (struct sockaddr *)&sa, &len), ==, 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

/* A port nothing listens on (refused). */
static uint16_t closed_port(void)
{
	uint16_t port;

	close(listen_any(&port));
	return port;
}

static struct fake *fake_start(const enum fake_mode *modes, size_t n, gboolean no_settings,
			       gboolean ack_pings)
{
	struct fake *f = g_new0(struct fake, 1);

	f->lfd = listen_any(&f->port);
	f->modes = modes;
	f->n_modes = n;
	f->no_settings = no_settings;
	f->ack_pings = ack_pings;
	f->thread = g_thread_new("fake-h2", fake_main, f);
	return f;
}

static void fake_stop(struct fake *f)
{
	g_atomic_int_set(&f->stop, 1);
	g_thread_join(f->thread);
	close(f->lfd);
	g_free(f);
}

static struct ef_h2 *h2_for_ports(const uint16_t *ports, size_t n, int dial_ms)
{
	g_autoptr(GPtrArray) eps = g_ptr_array_new_with_free_func(g_free);
	struct ef_h2_config cfg = { .dial_timeout_ms = dial_ms };
	GError *err = NULL;
	struct ef_h2 *h;

	for (size_t i = 0; i < n; i++)
		g_ptr_array_add(eps, g_strdup_printf("127.0.0.1:%u", ports[i]));
	g_ptr_array_add(eps, NULL);
	cfg.endpoints = (const char *const *)eps->pdata;
	h = h2_new(&cfg, &err);
	g_assert_no_error(err);
	g_assert_nonnull(h);
	return h;
}

static struct ef_h2 *h2_for(uint16_t port, int dial_ms)
{
	return h2_for_ports(&port, 1, dial_ms);
}

static double elapsed_s(gint64 since)
{
	return (double)(g_get_monotonic_time() - since) / G_USEC_PER_SEC;
}

/* ---- h2 and grpc end to end ---- */

static void test_new_errors(void)
{
	const char *none[] = { NULL };
	const char *bad[] = { "127.0.0.1:2379", "nope", NULL };
	const char *tls[] = { "https://127.0.0.1:2379", NULL };
	const char *mixed[] = { "https://127.0.0.1:2379", "http://127.0.0.1:2380", NULL };
	struct ef_h2_config cfg = { .endpoints = none, .dial_timeout_ms = 100 };
	GError *err = NULL;

	g_assert_null(h2_new(&cfg, &err));
	g_assert_nonnull(err);
	g_clear_error(&err);
	cfg.endpoints = bad;
	g_assert_null(h2_new(&cfg, &err));
	g_assert_nonnull(strstr(err->message, "\"nope\""));
	g_clear_error(&err);
	/* TLS files are loaded by h2_new, so a bad one fails at start-up. */
	cfg.endpoints = tls;
	cfg.tls.ca_file = "/nonexistent/ca.pem";
	g_assert_null(h2_new(&cfg, &err));
	g_assert_nonnull(strstr(err->message, "cannot read CA file /nonexistent/ca.pem"));
	g_clear_error(&err);
	cfg.tls.ca_file = NULL;
	cfg.tls.cert_file = "/nonexistent/client.pem";
	g_assert_null(h2_new(&cfg, &err));
	g_assert_nonnull(strstr(err->message, "both a cert and a key"));
	g_clear_error(&err);
	cfg.tls.cert_file = NULL;
	h2_free(h2_new(&cfg, &err));
	g_assert_no_error(err);
	/* Where TLS was asked for, a plain endpoint is a mistake. */
	cfg.endpoints = mixed;
	for (int i = 0; i < 2; i++) {
		cfg.plain = i ? EF_PLAIN_REFUSE : EF_PLAIN_AUTO;
		g_assert_null(h2_new(&cfg, &err));
		g_assert_nonnull(strstr(err->message, "http://127.0.0.1:2380 is plain text"));
		g_clear_error(&err);
	}
	cfg.plain = EF_PLAIN_ALLOW;
	h2_free(h2_new(&cfg, &err));
	g_assert_no_error(err);
}

static void test_refused(void)
{
	uint16_t port = closed_port();
	struct ef_h2 *h = h2_for(port, 500);
	g_autofree char *want = g_strdup_printf("cannot connect to 127.0.0.1:%u: %s", port,
						g_strerror(ECONNREFUSED));
	struct ef_grpc_status st;
	GBytes *resp = (GBytes *)&st;
	GError *err = NULL;
	gint64 t0;

	g_assert_false(h2_connect(h, &err));
	g_assert_cmpstr(err->message, ==, want);
	g_clear_error(&err);

	t0 = g_get_monotonic_time();
	g_assert_cmpint(grpc_unary(h, "/x.Y/Z", "a", 1, 5000, &resp, &st), ==, -ENOTCONN);
	g_assert_null(resp);
	g_assert_cmpint(st.code, ==, -1);
	/* A second call lands in the backoff and fails at once as well. */
	g_assert_cmpint(grpc_unary(h, "/x.Y/Z", "a", 1, 5000, &resp, NULL), ==, -ENOTCONN);
	g_assert_cmpfloat(elapsed_s(t0), <, 1.0);
	g_assert_cmpuint(h2_generation(h), ==, 0);
	g_assert_null(h2_current_endpoint(h));
	h2_free(h);
}

static void test_no_settings(void)
{
	uint16_t port;
	int lfd = listen_any(&port);    /* the kernel accepts; nobody answers */
	struct ef_h2 *h = h2_for(port, 1500);
	GBytes *resp;
	GError *err = NULL;
	gint64 t0 = g_get_monotonic_time();

	/* The deadline (0.1 s) comes before the dial timeout (1.5 s); the
	 * margin between them absorbs a loaded machine. */
	g_assert_cmpint(grpc_unary(h, "/x.Y/Z", "a", 1, 100, &resp, NULL), ==, -ETIMEDOUT);
	g_assert_cmpfloat(elapsed_s(t0), <, 1.0);

	g_assert_false(h2_connect(h, &err));
	g_assert_nonnull(strstr(err->message, "no HTTP/2 SETTINGS"));
	g_assert_cmpfloat(elapsed_s(t0), <, 4.0);
	g_clear_error(&err);
	h2_free(h);
	close(lfd);
}

static void test_failover(void)
{
	static const enum fake_mode modes[] = { FAKE_ECHO };
	struct fake *f = fake_start(modes, 1, FALSE, TRUE);
	const uint16_t ports[] = { closed_port(), f->port };
	struct ef_h2 *h = h2_for_ports(ports, 2, 500);
	g_autofree char *want = g_strdup_printf("127.0.0.1:%u", f->port);
	g_autofree char *cur = NULL;
	GBytes *resp = NULL;
	GError *err = NULL;

	g_assert_true(h2_connect(h, &err));
	g_assert_no_error(err);
	g_assert_cmpint(grpc_unary(h, "/x.Y/Z", "ping", 4, 2000, &resp, NULL), ==, 0);
	g_assert_cmpmem(g_bytes_get_data(resp, NULL), g_bytes_get_size(resp), "ping", 4);
	g_bytes_unref(resp);
	cur = h2_current_endpoint(h);
	g_assert_cmpstr(cur, ==, want);
	g_assert_cmpuint(h2_generation(h), ==, 1);
	h2_free(h);
	fake_stop(f);
}

/* The deadline is generous: a local fake answers in a millisecond, and CI
 * machines have been seen to stall a thread for seconds (a hang still fails). */
static void check_echo(struct ef_h2 *h, const char *msg)
{
	struct ef_grpc_status st;
	GBytes *resp = NULL;

	g_assert_cmpint(grpc_unary(h, "/x.Y/Z", msg, strlen(msg), 10000, &resp, &st), ==, 0);
	g_assert_cmpint(st.code, ==, 0);
	g_assert_cmpmem(g_bytes_get_data(resp, NULL), g_bytes_get_size(resp), msg, strlen(msg));
	g_bytes_unref(resp);
	grpc_status_clear(&st);
}

static void test_unary_echo(void)
{
	static const enum fake_mode modes[] = { FAKE_ECHO, FAKE_SPLIT, FAKE_ECHO };
	struct fake *f = fake_start(modes, G_N_ELEMENTS(modes), FALSE, TRUE);
	struct ef_h2 *h = h2_for(f->port, 500);
	GBytes *resp = NULL;

	check_echo(h, "hello");
	check_echo(h, "split into one DATA frame per byte");
	/* An empty request is a valid message (a 5-byte frame). */
	g_assert_cmpint(grpc_unary(h, "/x.Y/Z", NULL, 0, 2000, &resp, NULL), ==, 0);
	g_assert_cmpuint(g_bytes_get_size(resp), ==, 0);
	g_bytes_unref(resp);
	g_assert_cmpuint(h2_generation(h), ==, 1);
	h2_free(h);
	fake_stop(f);
}

static void test_unary_errors(void)
{
	static const enum fake_mode modes[] = {
		FAKE_ERROR,	FAKE_NO_STATUS, FAKE_TWO,   FAKE_NONE,	    FAKE_COMPRESSED,
		FAKE_REFUSE,	FAKE_TRUNCATED, FAKE_HTTP_404, FAKE_HTTP_503, FAKE_TEXT,
		FAKE_NO_TYPE,	FAKE_BAD_STATUS, FAKE_HUGE,   FAKE_ECHO
	};
	static const int want[] = { -ENOENT, -EPROTO, -EPROTO, -EPROTO, -EPROTO,
				    -EAGAIN, -EPROTO, -EPROTO, -EPROTO, -EPROTO,
				    -EPROTO, -EPROTO, -EPROTO };
	/* What the log must say of each malformed one (NULL: no line). */
	static const char *const why[] = {
		NULL, "no grpc-status", "more than one message", "no message",
		"a compressed message", NULL, "a message cut short", ":status \"404\"",
		":status \"503\"", "content-type \"text/html\"", "no gRPC content-type",
		"grpc-status \"0k\"", "a message over the size limit: 2147483647 bytes",
	};
	struct fake *f = fake_start(modes, G_N_ELEMENTS(modes), FALSE, TRUE);
	struct ef_h2 *h = h2_for(f->port, 500);

	for (size_t i = 0; i < G_N_ELEMENTS(want); i++) {
		struct ef_grpc_status st;
		GBytes *resp = NULL;
		guint warned = warnings_seen;
		gint64 t0 = g_get_monotonic_time();

		g_test_message("reply %zu", i);
		g_assert_cmpint(grpc_unary(h, "/x.Y/Z", "abc", 3, 2000, &resp, &st), ==, want[i]);
		/* Refused at once, not at the deadline. */
		g_assert_cmpfloat(elapsed_s(t0), <, 1.9);
		g_assert_null(resp);
		if (i == 0) {
			g_assert_cmpint(st.code, ==, GRPC_NOT_FOUND);
			g_assert_cmpstr(st.message, ==, "not found%");
		}
		grpc_status_clear(&st);
		g_assert_cmpuint(warnings_seen, ==, warned + (why[i] ? 1 : 0));
		if (why[i])
			g_assert_nonnull(strstr(last_warning, why[i]));
	}
	/* None of that hurt the connection. */
	check_echo(h, "still fine");
	g_assert_cmpuint(h2_generation(h), ==, 1);
	h2_free(h);
	fake_stop(f);
}

static void test_unary_big(void)
{
	static const enum fake_mode modes[] = { FAKE_BIG };
	struct fake *f = fake_start(modes, 1, FALSE, TRUE);
	struct ef_h2 *h = h2_for(f->port, 500);
	g_autofree uint8_t *too_big = g_malloc0((2u << 20) + 1);
	GBytes *resp = NULL;
	const uint8_t *p;
	gsize n;

	g_assert_cmpint(grpc_unary(h, "/x.Y/Z", "a", 1, 5000, &resp, NULL), ==, 0);
	p = g_bytes_get_data(resp, &n);
	g_assert_cmpuint(n, ==, BIG_LEN);
	for (size_t i = 0; i < n; i++)
		if (p[i] != (uint8_t)(i * 7))
			g_assert_cmpuint(i, ==, n);
	g_bytes_unref(resp);
	g_assert_cmpint(grpc_unary(h, "/x.Y/Z", too_big, (2u << 20) + 1, 5000, &resp, NULL), ==,
			-EFBIG);
	g_assert_cmpint(grpc_unary(h, "/x.Y/Z", "a", 1, 0, &resp, NULL), ==, -ETIMEDOUT);
	h2_free(h);
	fake_stop(f);
}

struct bg_call {
	struct ef_h2 *h;
	int timeout_ms;
	int rc;
	double secs;
};

static gpointer bg_call_main(gpointer data)
{
	struct bg_call *c = data;
	gint64 t0 = g_get_monotonic_time();
	GBytes *resp = NULL;

	c->rc = grpc_unary(c->h, "/x.Y/Z", "slow", 4, c->timeout_ms, &resp, NULL);
	c->secs = elapsed_s(t0);
	if (resp)
		g_bytes_unref(resp);
	return NULL;
}

/* A server that stops answering: the timed-out call sends a PING. If the
 * PING is answered the connection is fine and other calls run to their own
 * deadlines; if not, the connection is declared dead and they fail fast. */
static void check_silent(gboolean ack_pings)
{
	static const enum fake_mode modes[] = { FAKE_SILENT };
	struct fake *f = fake_start(modes, 1, FALSE, ack_pings);
	struct ef_h2 *h = h2_for(f->port, 300);
	struct bg_call slow = { .h = h, .timeout_ms = ack_pings ? 1000 : 5000 };
	GBytes *resp = NULL;
	GThread *t;
	gint64 t0;

	g_assert_true(h2_connect(h, NULL));
	t = g_thread_new("slow", bg_call_main, &slow);
	t0 = g_get_monotonic_time();
	g_assert_cmpint(grpc_unary(h, "/x.Y/Z", "a", 1, 200, &resp, NULL), ==, -ETIMEDOUT);
	g_assert_cmpfloat(elapsed_s(t0), >=, 0.19);
	g_assert_cmpfloat(elapsed_s(t0), <, 1.0);
	g_thread_join(t);
	if (ack_pings) {
		g_assert_cmpint(slow.rc, ==, -ETIMEDOUT);
		g_assert_cmpfloat(slow.secs, >=, 0.99);
	} else {
		g_assert_cmpint(slow.rc, ==, -ECONNRESET);
		g_assert_cmpfloat(slow.secs, <, 1.5);
	}
	g_assert_cmpint(g_atomic_int_get(&f->connections), ==, 1);
	h2_free(h);
	fake_stop(f);
}

static void test_unary_silent(void)
{
	check_silent(TRUE);
}

static void test_unary_dead(void)
{
	check_silent(FALSE);
}

static void test_unary_cut(void)
{
	static const enum fake_mode modes[] = { FAKE_CUT, FAKE_ECHO };
	struct fake *f = fake_start(modes, G_N_ELEMENTS(modes), FALSE, TRUE);
	struct ef_h2 *h = h2_for(f->port, 500);
	GBytes *resp = NULL;

	/* The request went out: its fate is unknown, not "never sent". */
	g_assert_cmpint(grpc_unary(h, "/x.Y/Z", "abcdef", 6, 2000, &resp, NULL), ==, -ECONNRESET);
	g_assert_null(resp);
	check_echo(h, "reconnected");
	g_assert_cmpuint(h2_generation(h), ==, 2);
	h2_free(h);
	fake_stop(f);
}

/* A server going away without having seen the request: it goes out again,
 * on a new connection, and the caller never knows. */
static void test_unary_goaway(void)
{
	static const enum fake_mode modes[] = { FAKE_GOAWAY, FAKE_ECHO };
	struct fake *f = fake_start(modes, G_N_ELEMENTS(modes), FALSE, TRUE);
	struct ef_h2 *h = h2_for(f->port, 500);

	check_echo(h, "sent twice");
	g_assert_cmpuint(h2_generation(h), ==, 2);
	g_assert_cmpint(g_atomic_int_get(&f->connections), ==, 2);
	g_assert_cmpint(g_atomic_int_get(&f->requests), ==, 2);
	h2_free(h);
	fake_stop(f);
}

/* A server going away after taking the request: it still answers it, and
 * the next call goes on a new connection. */
static void test_unary_goaway_answered(void)
{
	static const enum fake_mode modes[] = { FAKE_GOAWAY_DONE, FAKE_ECHO };
	struct fake *f = fake_start(modes, G_N_ELEMENTS(modes), FALSE, TRUE);
	struct ef_h2 *h = h2_for(f->port, 500);

	check_echo(h, "answered");
	g_assert_cmpuint(h2_generation(h), ==, 1);
	check_echo(h, "next");
	g_assert_cmpuint(h2_generation(h), ==, 2);
	g_assert_cmpint(g_atomic_int_get(&f->connections), ==, 2);
	g_assert_cmpint(g_atomic_int_get(&f->requests), ==, 2);
	h2_free(h);
	fake_stop(f);
}

/* h2_leave moves to the next endpoint, and a stale generation is ignored. */
static void test_leave(void)
{
	static const enum fake_mode modes[] = { FAKE_ECHO };
	struct fake *a = fake_start(modes, 1, FALSE, TRUE);
	struct fake *b = fake_start(modes, 1, FALSE, TRUE);
	const uint16_t ports[] = { a->port, b->port };
	struct ef_h2 *h = h2_for_ports(ports, 2, 500);
	g_autofree char *want_a = g_strdup_printf("127.0.0.1:%u", a->port);
	g_autofree char *want_b = g_strdup_printf("127.0.0.1:%u", b->port);
	char *cur;

	check_echo(h, "on a");
	cur = h2_current_endpoint(h);
	g_assert_cmpstr(cur, ==, want_a);
	g_free(cur);
	h2_leave(h, 7, "not this generation");
	check_echo(h, "still on a");
	g_assert_cmpuint(h2_generation(h), ==, 1);
	h2_leave(h, 1, "test");
	check_echo(h, "on b");
	cur = h2_current_endpoint(h);
	g_assert_cmpstr(cur, ==, want_b);
	g_free(cur);
	g_assert_cmpuint(h2_generation(h), ==, 2);
	/* Leaving b: a is avoided for a while, but it is all there is. */
	h2_leave(h, 2, "test");
	check_echo(h, "back on a");
	cur = h2_current_endpoint(h);
	g_assert_cmpstr(cur, ==, want_a);
	g_free(cur);
	g_assert_cmpint(g_atomic_int_get(&a->connections), ==, 2);
	g_assert_cmpint(g_atomic_int_get(&b->connections), ==, 1);
	h2_free(h);
	fake_stop(a);
	fake_stop(b);
}

/* A host name is looked up off the I/O thread, and connects. */
static void test_resolve(void)
{
	static const enum fake_mode modes[] = { FAKE_ECHO };
	struct fake *f = fake_start(modes, 1, FALSE, TRUE);
	g_autofree char *ep = g_strdup_printf("localhost:%u", f->port);
	g_autofree char *bad = g_strdup("no-such-host.invalid:2379");
	const char *eps[] = { bad, ep, NULL };
	struct ef_h2_config cfg = { .endpoints = eps, .dial_timeout_ms = 2000 };
	struct ef_h2 *h = h2_new(&cfg, NULL);

	g_assert_nonnull(h);
	check_echo(h, "by name");
	g_assert_cmpint(g_atomic_int_get(&f->connections), ==, 1);
	h2_free(h);
	fake_stop(f);
}

struct echo_worker {
	struct ef_h2 *h;
	int n;
	int fails;
};

static gpointer echo_worker_main(gpointer data)
{
	struct echo_worker *w = data;

	for (int i = 0; i < w->n; i++) {
		g_autofree char *msg = g_strdup_printf("%p/%d", (void *)w, i);
		GBytes *resp = NULL;

		if (grpc_unary(w->h, "/x.Y/Z", msg, strlen(msg), 5000, &resp, NULL) != 0 ||
		    g_bytes_get_size(resp) != strlen(msg) ||
		    memcmp(g_bytes_get_data(resp, NULL), msg, strlen(msg)) != 0)
			w->fails++;
		if (resp)
			g_bytes_unref(resp);
	}
	return NULL;
}

static void test_unary_concurrent(void)
{
	static const enum fake_mode modes[] = { FAKE_ECHO };
	struct fake *f = fake_start(modes, 1, FALSE, TRUE);
	struct ef_h2 *h = h2_for(f->port, 500);
	struct echo_worker w[16];
	GThread *t[G_N_ELEMENTS(w)];

	for (size_t i = 0; i < G_N_ELEMENTS(w); i++) {
		w[i] = (struct echo_worker){ .h = h, .n = 200 };
		t[i] = g_thread_new("echo", echo_worker_main, &w[i]);
	}
	for (size_t i = 0; i < G_N_ELEMENTS(w); i++) {
		g_thread_join(t[i]);
		g_assert_cmpint(w[i].fails, ==, 0);
	}
	g_assert_cmpuint(h2_generation(h), ==, 1);
	h2_free(h);
	fake_stop(f);
}

/* ---- streams ---- */

struct recorder {
	GMutex lock;
	GCond cond;
	GPtrArray *msgs;        /* protected by lock */
	int closes;             /* protected by lock */
	int err;                /* protected by lock */
	int code;               /* protected by lock */
};

static void rec_on_message(void *ud, const uint8_t *msg, size_t len)
{
	struct recorder *r = ud;

	g_mutex_lock(&r->lock);
	g_ptr_array_add(r->msgs, g_strndup((const char *)msg, len));
	g_cond_broadcast(&r->cond);
	g_mutex_unlock(&r->lock);
}

static void rec_on_close(void *ud, int err, const struct ef_grpc_status *st)
{
	struct recorder *r = ud;

	g_mutex_lock(&r->lock);
	r->closes++;
	r->err = err;
	r->code = st->code;
	g_cond_broadcast(&r->cond);
	g_mutex_unlock(&r->lock);
}

static const struct ef_grpc_stream_ops rec_ops = { rec_on_message, rec_on_close };

static void rec_init(struct recorder *r)
{
	memset(r, 0, sizeof(*r));
	g_mutex_init(&r->lock);
	g_cond_init(&r->cond);
	r->msgs = g_ptr_array_new_with_free_func(g_free);
	r->code = -2;
}

static void rec_clear(struct recorder *r)
{
	g_ptr_array_unref(r->msgs);
	g_cond_clear(&r->cond);
	g_mutex_clear(&r->lock);
}

/* Waits up to 2 s for n messages (or closes when closes is TRUE). */
static void rec_wait(struct recorder *r, guint n, gboolean closes)
{
	gint64 end = g_get_monotonic_time() + 2 * G_TIME_SPAN_SECOND;

	g_mutex_lock(&r->lock);
	while ((closes ? (guint)r->closes : r->msgs->len) < n)
		if (!g_cond_wait_until(&r->cond, &r->lock, end))
			break;
	g_mutex_unlock(&r->lock);
}

static void test_stream_echo(void)
{
	static const enum fake_mode modes[] = { FAKE_BIDI };
	static const char *const words[] = { "one", "two", "three", "end" };
	struct fake *f = fake_start(modes, 1, FALSE, TRUE);
	struct ef_h2 *h = h2_for(f->port, 500);
	struct ef_grpc_stream *s = NULL;
	struct recorder r;

	rec_init(&r);
	g_assert_cmpint(grpc_stream_open(h, "/x.Y/Bidi", &rec_ops, &r, &s), ==, 0);
	for (size_t i = 0; i < G_N_ELEMENTS(words); i++) {
		g_assert_cmpint(grpc_stream_send(s, words[i], strlen(words[i])), ==, 0);
		rec_wait(&r, (guint)i + 1, FALSE);
		g_assert_cmpuint(r.msgs->len, ==, i + 1);
		g_assert_cmpstr(g_ptr_array_index(r.msgs, i), ==, words[i]);
	}
	/* "end" made the server close with grpc-status 0. */
	rec_wait(&r, 1, TRUE);
	g_assert_cmpint(r.closes, ==, 1);
	g_assert_cmpint(r.err, ==, 0);
	g_assert_cmpint(r.code, ==, 0);
	g_assert_cmpint(grpc_stream_send(s, "late", 4), ==, -EPIPE);
	grpc_stream_free(s);
	g_assert_cmpint(r.closes, ==, 1);
	rec_clear(&r);
	h2_free(h);
	fake_stop(f);
}

static void test_stream_cancel(void)
{
	static const enum fake_mode modes[] = { FAKE_BIDI, FAKE_ECHO };
	struct fake *f = fake_start(modes, G_N_ELEMENTS(modes), FALSE, TRUE);
	struct ef_h2 *h = h2_for(f->port, 500);
	struct ef_grpc_stream *s = NULL;
	struct recorder r;

	rec_init(&r);
	g_assert_cmpint(grpc_stream_open(h, "/x.Y/Bidi", &rec_ops, &r, &s), ==, 0);
	g_assert_cmpint(grpc_stream_send(s, "hi", 2), ==, 0);
	rec_wait(&r, 1, FALSE);
	g_assert_cmpuint(r.msgs->len, ==, 1);
	grpc_stream_free(s);
	g_assert_cmpint(r.closes, ==, 1);
	g_assert_cmpint(r.err, ==, -ECANCELED);
	g_assert_cmpint(r.code, ==, -1);
	/* The connection carries on. */
	check_echo(h, "after cancel");
	rec_clear(&r);
	h2_free(h);
	fake_stop(f);
}

static void test_stream_refused(void)
{
	struct ef_h2 *h = h2_for(closed_port(), 500);
	struct ef_grpc_stream *s = (struct ef_grpc_stream *)&h;
	struct recorder r;

	rec_init(&r);
	g_assert_cmpint(grpc_stream_open(h, "/x.Y/Bidi", &rec_ops, &r, &s), ==, -ENOTCONN);
	g_assert_null(s);
	g_assert_cmpint(r.closes, ==, 0);
	rec_clear(&r);
	h2_free(h);
}

static void test_stream_conn_lost(void)
{
	static const enum fake_mode modes[] = { FAKE_BIDI };
	struct fake *f = fake_start(modes, 1, FALSE, TRUE);
	struct ef_h2 *h = h2_for(f->port, 500);
	struct ef_grpc_stream *s = NULL;
	struct recorder r;

	rec_init(&r);
	g_assert_cmpint(grpc_stream_open(h, "/x.Y/Bidi", &rec_ops, &r, &s), ==, 0);
	fake_stop(f);
	rec_wait(&r, 1, TRUE);
	g_assert_cmpint(r.closes, ==, 1);
	g_assert_cmpint(r.err, ==, -ECONNRESET);
	grpc_stream_free(s);
	rec_clear(&r);
	h2_free(h);
}

/* A stream that ends inside a message ends in error, whatever its status. */
static void test_stream_cut(void)
{
	static const enum fake_mode modes[] = { FAKE_BIDI_CUT };
	struct fake *f = fake_start(modes, 1, FALSE, TRUE);
	struct ef_h2 *h = h2_for(f->port, 500);
	struct ef_grpc_stream *s = NULL;
	guint warned = warnings_seen;
	struct recorder r;

	rec_init(&r);
	g_assert_cmpint(grpc_stream_open(h, "/x.Y/Bidi", &rec_ops, &r, &s), ==, 0);
	g_assert_cmpint(grpc_stream_send(s, "a whole message", 15), ==, 0);
	rec_wait(&r, 1, TRUE);
	g_assert_cmpint(r.closes, ==, 1);
	g_assert_cmpint(r.err, ==, -EPROTO);
	g_assert_cmpuint(r.msgs->len, ==, 0);
	g_assert_cmpuint(warnings_seen, ==, warned + 1);
	g_assert_nonnull(strstr(last_warning, "/x.Y/Bidi: a message cut short"));
	grpc_stream_free(s);
	rec_clear(&r);
	h2_free(h);
	fake_stop(f);
}

/* h2_free closes open streams; freeing them afterwards must not touch h. */
static void test_free_with_stream(void)
{
	static const enum fake_mode modes[] = { FAKE_BIDI };
	struct fake *f = fake_start(modes, 1, FALSE, TRUE);
	struct ef_h2 *h = h2_for(f->port, 500);
	struct ef_grpc_stream *s = NULL;
	struct recorder r;

	rec_init(&r);
	g_assert_cmpint(grpc_stream_open(h, "/x.Y/Bidi", &rec_ops, &r, &s), ==, 0);
	h2_free(h);
	g_assert_cmpint(r.closes, ==, 1);
	g_assert_cmpint(r.err, ==, -ENOTCONN);
	grpc_stream_free(s);
	rec_clear(&r);
	fake_stop(f);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);
	g_log_set_handler(NULL, G_LOG_LEVEL_WARNING, on_warning, NULL);

	g_test_add_func("/grpc/frame/header", test_frame_header);
	g_test_add_func("/grpc/deframer/splits", test_deframer_splits);
	g_test_add_func("/grpc/deframer/bytewise", test_deframer_bytewise);
	g_test_add_func("/grpc/deframer/zero_length", test_deframer_zero_length);
	g_test_add_func("/grpc/deframer/errors", test_deframer_errors);
	g_test_add_func("/grpc/deframer/partial", test_deframer_partial);
	g_test_add_func("/grpc/timeout_format", test_timeout_format);
	g_test_add_func("/grpc/status_errno", test_status_errno);
	g_test_add_func("/grpc/percent_decode", test_percent_decode);
	g_test_add_func("/h2/endpoint_parse", test_endpoint_parse);
	g_test_add_func("/h2/new/errors", test_new_errors);
	g_test_add_func("/h2/connect/refused", test_refused);
	g_test_add_func("/h2/connect/no_settings", test_no_settings);
	g_test_add_func("/h2/connect/failover", test_failover);
	g_test_add_func("/grpc/unary/echo", test_unary_echo);
	g_test_add_func("/grpc/unary/errors", test_unary_errors);
	g_test_add_func("/grpc/unary/big", test_unary_big);
	g_test_add_func("/grpc/unary/silent", test_unary_silent);
	g_test_add_func("/grpc/unary/dead", test_unary_dead);
	g_test_add_func("/grpc/unary/goaway", test_unary_goaway);
	g_test_add_func("/grpc/unary/goaway_answered", test_unary_goaway_answered);
	g_test_add_func("/h2/leave", test_leave);
	g_test_add_func("/h2/resolve", test_resolve);
	g_test_add_func("/grpc/unary/cut", test_unary_cut);
	g_test_add_func("/grpc/unary/concurrent", test_unary_concurrent);
	g_test_add_func("/grpc/stream/echo", test_stream_echo);
	g_test_add_func("/grpc/stream/cancel", test_stream_cancel);
	g_test_add_func("/grpc/stream/refused", test_stream_refused);
	g_test_add_func("/grpc/stream/conn_lost", test_stream_conn_lost);
	g_test_add_func("/grpc/stream/free_after_h2_free", test_free_with_stream);
	g_test_add_func("/grpc/stream/cut", test_stream_cut);
	return g_test_run();
}
