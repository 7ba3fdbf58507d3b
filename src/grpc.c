/*
 * grpc — gRPC calls over one HTTP/2 connection (see grpc.h).
 *
 * This file knows gRPC and nothing of sockets: it turns a call into an h2
 * stream (h2.h's stream API), deframes the response body, and reads
 * grpc-status / grpc-message from the header block that ends the stream.
 *
 * Threads. A unary caller blocks on its own struct ef_grpc_call (mutex +
 * condition) until the I/O thread's on_close; nothing global is waited on.
 * Everything else in a call (deframer, status, messages) is touched only by
 * the I/O thread until on_close, and only by the caller after it. A stream's
 * lock orders before h2's lock: grpc_stream_send holds the former while
 * queueing, and the I/O thread never holds h2's lock while running callbacks.
 */
#include "grpc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>

#include "h2.h"
#include "ratelimit.h"

/* etcd refuses requests above 2 MiB (max-request-bytes + 512 KiB). */
#define GRPC_MAX_REQUEST (2u << 20)
/* A Range over many keys can be large; this only bounds a broken server. */
#define GRPC_MAX_RESPONSE (64u << 20)

void grpc_status_clear(struct ef_grpc_status *st)
{
	if (!st)
		return;
	g_clear_pointer(&st->message, g_free);
}

/* ---- the one gRPC status -> errno table ---- */

static const struct {
	int code;
	int err;
	const char *refine;     /* message substring that selects refined_err */
	int refined_err;
} grpc_errno_table[] = {
	/* A code's refinements come first: the first row that matches wins. */
	{ GRPC_OK, 0, NULL, 0 },
	{ GRPC_CANCELLED, ECANCELED, NULL, 0 },
	/* etcd 3.4 reports a quorum read that hit its deadline as UNKNOWN,
	 * and every error of the Lock service too. */
	{ GRPC_UNKNOWN, EIO, "context deadline exceeded", ETIMEDOUT },
	{ GRPC_UNKNOWN, EIO, "permission denied", EACCES },
	{ GRPC_UNKNOWN, EIO, "invalid auth token", EKEYEXPIRED },
	{ GRPC_UNKNOWN, EIO, "revision of auth store is old", EKEYEXPIRED },
	{ GRPC_INVALID_ARGUMENT, EINVAL, "request is too large", EFBIG },
	/* Auth: no token sent (auth enabled under a mount without --user),
	 * or a wrong password. */
	{ GRPC_INVALID_ARGUMENT, EINVAL, "user name is empty", EACCES },
	{ GRPC_INVALID_ARGUMENT, EINVAL, "authentication failed", EACCES },
	/* A JWT token made before a change of users or roles. */
	{ GRPC_INVALID_ARGUMENT, EINVAL, "revision of auth store is old", EKEYEXPIRED },
	{ GRPC_DEADLINE_EXCEEDED, ETIMEDOUT, NULL, 0 },
	{ GRPC_NOT_FOUND, ENOENT, NULL, 0 },
	{ GRPC_ALREADY_EXISTS, EEXIST, NULL, 0 },
	{ GRPC_PERMISSION_DENIED, EACCES, NULL, 0 },
	{ GRPC_RESOURCE_EXHAUSTED, ENOSPC, "larger than max", EFBIG },
	{ GRPC_FAILED_PRECONDITION, EIO, "authentication is not enabled", EOPNOTSUPP },
	{ GRPC_ABORTED, EAGAIN, NULL, 0 },
	{ GRPC_OUT_OF_RANGE, EIO, NULL, 0 },
	{ GRPC_UNIMPLEMENTED, EOPNOTSUPP, NULL, 0 },
	{ GRPC_INTERNAL, EIO, NULL, 0 },
	{ GRPC_UNAVAILABLE, EAGAIN, "request timed out", ETIMEDOUT },
	{ GRPC_DATA_LOSS, EIO, NULL, 0 },
	/* A token etcd forgot (idle past --auth-token-ttl) or that expired:
	 * etcd.c logs in again and retries; callers never see EKEYEXPIRED. */
	{ GRPC_UNAUTHENTICATED, EACCES, "invalid auth token", EKEYEXPIRED },
};

int grpc_status_errno(int code, const char *message)
{
	int err = EIO;

	for (size_t i = 0; i < G_N_ELEMENTS(grpc_errno_table); i++) {
		if (grpc_errno_table[i].code != code)
			continue;
		err = grpc_errno_table[i].err;
		if (grpc_errno_table[i].refine && message &&
		    strstr(message, grpc_errno_table[i].refine))
			return grpc_errno_table[i].refined_err;
	}
	return err;
}

/* ---- framing ---- */

void grpc_frame_header(uint8_t out[GRPC_FRAME_HEADER], size_t len)
{
	out[0] = 0;
	out[1] = (uint8_t)(len >> 24);
	out[2] = (uint8_t)(len >> 16);
	out[3] = (uint8_t)(len >> 8);
	out[4] = (uint8_t)len;
}

static uint32_t frame_len(const uint8_t *p)
{
	return (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
}

void grpc_deframer_init(struct ef_grpc_deframer *d, size_t max_len)
{
	d->buf = g_byte_array_new();
	d->max_len = max_len;
	d->too_long = 0;
}

void grpc_deframer_clear(struct ef_grpc_deframer *d)
{
	g_clear_pointer(&d->buf, g_byte_array_unref);
}

/* Walks the buffered frame headers; returns the bytes past the last complete
 * message, -EPROTO when a header is invalid, or -EMSGSIZE (*too_long set)
 * when it announces a message longer than max_len. */
static gssize deframer_scan(const struct ef_grpc_deframer *d, size_t *complete, size_t *too_long)
{
	size_t off = 0;

	*complete = 0;
	while (d->buf->len - off >= GRPC_FRAME_HEADER) {
		const uint8_t *p = d->buf->data + off;
		uint32_t len = frame_len(p);

		if (p[0] != 0)
			return -EPROTO;
		if (len > d->max_len) {
			*too_long = len;
			return -EMSGSIZE;
		}
		if (d->buf->len - off - GRPC_FRAME_HEADER < len)
			break;
		off += GRPC_FRAME_HEADER + len;
		(*complete)++;
	}
	return (gssize)(d->buf->len - off);
}

int grpc_deframer_feed(struct ef_grpc_deframer *d, const uint8_t *data, size_t len)
{
	size_t complete;
	gssize rc;

	if (len > G_MAXUINT - d->buf->len)
		return -EPROTO;
	g_byte_array_append(d->buf, data, (guint)len);
	rc = deframer_scan(d, &complete, &d->too_long);
	return rc < 0 ? (int)rc : 0;
}

int grpc_deframer_next(struct ef_grpc_deframer *d, GBytes **msg)
{
	size_t total;
	uint32_t len;

	if (d->buf->len < GRPC_FRAME_HEADER)
		return 0;
	len = frame_len(d->buf->data);
	if (d->buf->len - GRPC_FRAME_HEADER < len)
		return 0;
	total = GRPC_FRAME_HEADER + (size_t)len;
	if (total == d->buf->len) {
		/* The common case for a big response: hand over the buffer
		 * instead of copying megabytes. */
		g_autoptr(GBytes) all = g_byte_array_free_to_bytes(d->buf);

		d->buf = g_byte_array_new();
		*msg = g_bytes_new_from_bytes(all, GRPC_FRAME_HEADER, len);
		return 1;
	}
	*msg = g_bytes_new(d->buf->data + GRPC_FRAME_HEADER, len);
	g_byte_array_remove_range(d->buf, 0, (guint)total);
	return 1;
}

gboolean grpc_deframer_partial(const struct ef_grpc_deframer *d)
{
	size_t complete, too_long;
	gssize rest = deframer_scan(d, &complete, &too_long);

	return rest != 0;
}

void grpc_timeout_format(char *out, size_t outlen, int timeout_ms)
{
	/* The value may have at most 8 digits: switch to coarser units (rounding
	 * up, so the server never gives up before we do) when it would not fit. */
	static const struct {
		char unit;
		long long unit_ms;
	} units[] = { { 'm', 1 }, { 'S', 1000 }, { 'M', 60000 }, { 'H', 3600000 } };
	long long ms = timeout_ms > 0 ? timeout_ms : 0;

	for (size_t i = 0; i < G_N_ELEMENTS(units); i++) {
		long long v = (ms + units[i].unit_ms - 1) / units[i].unit_ms;

		if (v <= 99999999) {
			g_snprintf(out, outlen, "%lld%c", v, units[i].unit);
			return;
		}
	}
	g_snprintf(out, outlen, "99999999H");
}

char *grpc_percent_decode(const char *s, size_t len)
{
	GString *out = g_string_sized_new(len);

	for (size_t i = 0; i < len; i++) {
		int hi, lo;

		if (s[i] == '%' && i + 2 < len && (hi = g_ascii_xdigit_value(s[i + 1])) >= 0 &&
		    (lo = g_ascii_xdigit_value(s[i + 2])) >= 0) {
			g_string_append_c(out, (char)(hi << 4 | lo));
			i += 2;
			continue;
		}
		g_string_append_c(out, s[i]);
	}
	return g_string_free(out, FALSE);
}

/* ---- calls ---- */

static GBytes *frame_message(const void *msg, size_t len)
{
	uint8_t *buf = g_malloc(GRPC_FRAME_HEADER + len);

	grpc_frame_header(buf, len);
	if (len)
		memcpy(buf + GRPC_FRAME_HEADER, msg, len);
	return g_bytes_new_take(buf, GRPC_FRAME_HEADER + len);
}

static gboolean header_is(const char *name, size_t len, const char *want)
{
	return len == strlen(want) && memcmp(name, want, len) == 0;
}

/*
 * What a response must be to be read as gRPC at all (the gRPC over HTTP/2
 * spec): :status 200, content-type application/grpc (or a +suffix or
 * ;parameters), and a numeric grpc-status in the block that ends it.
 * The first thing found wrong is kept, in words for the log.
 */
struct shape {
	gboolean http_ok;        /* :status 200 came */
	gboolean grpc_type;      /* a gRPC content-type came */
	const char *kind;        /* static: what was wrong (NULL: nothing yet) */
	char bad[80];            /* kind and the particulars */
};

static void shape_fail(struct shape *sh, const char *kind, const char *fmt, ...)
	G_GNUC_PRINTF(3, 4);

static void shape_fail(struct shape *sh, const char *kind, const char *fmt, ...)
{
	size_t n;
	va_list ap;

	if (sh->kind)
		return;
	sh->kind = kind;
	n = g_strlcpy(sh->bad, kind, sizeof(sh->bad));
	if (fmt && n < sizeof(sh->bad)) {
		va_start(ap, fmt);
		g_vsnprintf(sh->bad + n, sizeof(sh->bad) - n, fmt, ap);
		va_end(ap);
	}
}

/* A header value for the log: it may be anything. */
static void shape_fail_value(struct shape *sh, const char *kind, const char *value,
			     size_t value_len)
{
	g_autofree char *v = g_strndup(value, MIN(value_len, 32));
	g_autofree char *e = g_strescape(v, NULL);

	shape_fail(sh, kind, " \"%s\"", e);
}

static gboolean grpc_content_type(const char *v, size_t len)
{
	static const char want[] = "application/grpc";
	size_t n = sizeof(want) - 1;

	return len >= n && g_ascii_strncasecmp(v, want, n) == 0 &&
	       (len == n || v[n] == '+' || v[n] == ';');
}

/* Whether the response headers so far allow reading a message. */
static gboolean shape_ready(struct shape *sh)
{
	if (!sh->http_ok)
		shape_fail(sh, "no :status 200", NULL);
	if (!sh->grpc_type)
		shape_fail(sh, "no gRPC content-type", NULL);
	return !sh->kind;
}

/* The stream ended without a transport error: 0, or -EPROTO with sh
 * saying why it cannot be a gRPC response. */
static int shape_verdict(struct shape *sh, const struct ef_grpc_status *st)
{
	if (!shape_ready(sh))
		return -EPROTO;
	if (st->code < 0) {
		shape_fail(sh, "no grpc-status", NULL);
		return -EPROTO;
	}
	return 0;
}

/* Records the response's shape, and grpc-status / grpc-message from the
 * block that ends the stream; earlier blocks (the response headers) carry
 * no status. */
static void status_header(struct ef_grpc_status *st, struct shape *sh, const char *name,
			  size_t name_len, const char *value, size_t value_len, gboolean end_stream)
{
	if (header_is(name, name_len, ":status")) {
		/* An informational (1xx) answer comes before the real one. */
		if (value_len == 3 && value[0] == '1')
			return;
		if (header_is(value, value_len, "200"))
			sh->http_ok = TRUE;
		else
			shape_fail_value(sh, ":status", value, value_len);
		return;
	}
	if (header_is(name, name_len, "content-type")) {
		if (grpc_content_type(value, value_len))
			sh->grpc_type = TRUE;
		else
			shape_fail_value(sh, "content-type", value, value_len);
		return;
	}
	if (!end_stream)
		return;
	if (header_is(name, name_len, "grpc-status")) {
		int code = 0;

		for (size_t i = 0; i < value_len && code >= 0; i++)
			code = g_ascii_isdigit(value[i]) ? code * 10 + (value[i] - '0') : -1;
		/* Garbage is no status at all: the stream ends unexplained. */
		if (value_len == 0 || value_len > 4 || code < 0)
			shape_fail_value(sh, "grpc-status", value, value_len);
		else
			st->code = code;
	} else if (header_is(name, name_len, "grpc-message")) {
		g_free(st->message);
		st->message = grpc_percent_decode(value, value_len);
	}
}

/* Response body bytes into df, once the headers said it is gRPC: 0, or
 * -EPROTO (what was wrong in sh), or -EMSGSIZE for a message over a
 * cap the caller chose below the transport's. */
static int shape_feed(struct shape *sh, struct ef_grpc_deframer *df, const uint8_t *data,
		      size_t len)
{
	int rc;

	if (!shape_ready(sh))
		return -EPROTO;
	rc = grpc_deframer_feed(df, data, len);
	if (rc == -EPROTO)
		shape_fail(sh, "a compressed message", NULL);
	else if (rc == -EMSGSIZE && df->max_len >= GRPC_MAX_RESPONSE)
		shape_fail(sh, "a message over the size limit", ": %zu bytes", df->too_long);
	return rc;
}

static GMutex warn_lock;
static GHashTable *warn_limits;         /* protected by warn_lock: kind ->
					 * struct ef_ratelimit, for the
					 * process's life */

/* One line for an answer that is not gRPC, unless that kind of fault comes
 * in a flood (a flood of one kind hides no other). */
static void malformed(const char *path, const struct shape *sh)
{
	struct ef_ratelimit *rl;
	unsigned dropped = 0;
	bool log;

	g_mutex_lock(&warn_lock);
	if (!warn_limits)
		warn_limits = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
	rl = g_hash_table_lookup(warn_limits, sh->kind);
	if (!rl) {
		rl = g_new0(struct ef_ratelimit, 1);
		g_hash_table_insert(warn_limits, (gpointer)sh->kind, rl);
	}
	log = ratelimit_allow(rl, g_get_monotonic_time(), &dropped);
	g_mutex_unlock(&warn_lock);
	if (log && dropped)
		g_warning("etcdfs: a malformed answer to %s: %s (and %u more since the last such line)",
			  path, sh->bad, dropped);
	else if (log)
		g_warning("etcdfs: a malformed answer to %s: %s", path, sh->bad);
}

/* One unary call; lives on the caller's stack. */
struct ef_grpc_call {
	GMutex lock;
	GCond cond;
	gboolean done;          /* protected by lock */
	int err;                /* protected by lock */
	/* The I/O thread's until done, the caller's after. */
	struct ef_grpc_deframer df;
	GBytes *msg;
	unsigned n_msgs;
	struct ef_grpc_status status;
	struct shape shape;
};

static void unary_on_header(void *ud, const char *name, size_t name_len, const char *value,
			    size_t value_len, gboolean end_stream)
{
	struct ef_grpc_call *c = ud;

	status_header(&c->status, &c->shape, name, name_len, value, value_len, end_stream);
}

static int unary_on_data(void *ud, const uint8_t *data, size_t len)
{
	struct ef_grpc_call *c = ud;
	GBytes *msg;
	int rc = shape_feed(&c->shape, &c->df, data, len);

	if (rc < 0)
		return rc;
	while (grpc_deframer_next(&c->df, &msg)) {
		if (++c->n_msgs > 1) {
			shape_fail(&c->shape, "more than one message", NULL);
			g_bytes_unref(msg);
			return -EPROTO;
		}
		c->msg = msg;
	}
	return 0;
}

static void unary_on_close(void *ud, int err)
{
	struct ef_grpc_call *c = ud;

	g_mutex_lock(&c->lock);
	c->err = err;
	c->done = TRUE;
	g_cond_signal(&c->cond);
	g_mutex_unlock(&c->lock);
}

static const struct ef_h2_stream_ops unary_ops = {
	.on_header = unary_on_header,
	.on_data = unary_on_data,
	.on_close = unary_on_close,
};

/* The call's outcome once the stream closed: 0 or -errno. */
static int unary_result(struct ef_grpc_call *c, GBytes **resp)
{
	if (c->err < 0)
		return c->err;
	if (shape_verdict(&c->shape, &c->status) < 0)
		return -EPROTO;
	if (c->status.code != GRPC_OK)
		return -grpc_status_errno(c->status.code, c->status.message);
	if (grpc_deframer_partial(&c->df))
		shape_fail(&c->shape, "a message cut short", NULL);
	else if (c->n_msgs != 1)
		shape_fail(&c->shape, "no message", NULL);
	if (c->shape.kind)
		return -EPROTO;
	*resp = g_steal_pointer(&c->msg);
	return 0;
}

/* unary's flags */
#define UNARY_LEADER    1u      /* etcd refuses at once without a leader */
#define UNARY_ANONYMOUS 2u      /* no auth token */

static int unary(struct ef_h2 *h, const char *path, const void *req, size_t req_len,
		 int timeout_ms, size_t max_resp, unsigned flags, uint64_t gen, GBytes **resp,
		 struct ef_grpc_status *st, size_t *need);

int grpc_unary_capped(struct ef_h2 *h, const char *path, const void *req, size_t req_len,
		      int timeout_ms, size_t max_resp, GBytes **resp, struct ef_grpc_status *st,
		      size_t *need)
{
	return unary(h, path, req, req_len, timeout_ms, max_resp, 0, 0, resp, st, need);
}

int grpc_unary_leader(struct ef_h2 *h, const char *path, const void *req, size_t req_len,
		      int timeout_ms, GBytes **resp, struct ef_grpc_status *st)
{
	size_t need;
	int rc = unary(h, path, req, req_len, timeout_ms, GRPC_MAX_RESPONSE, UNARY_LEADER, 0, resp,
		       st, &need);

	return rc == -EMSGSIZE ? -EPROTO : rc;
}

int grpc_unary_on(struct ef_h2 *h, uint64_t gen, const char *path, const void *req,
		  size_t req_len, int timeout_ms, GBytes **resp, struct ef_grpc_status *st)
{
	size_t need;
	int rc = unary(h, path, req, req_len, timeout_ms, GRPC_MAX_RESPONSE, 0, gen, resp, st,
		       &need);

	return rc == -EMSGSIZE ? -EPROTO : rc;
}

int grpc_unary_anonymous(struct ef_h2 *h, const char *path, const void *req, size_t req_len,
			 int timeout_ms, GBytes **resp, struct ef_grpc_status *st)
{
	size_t need;
	int rc = unary(h, path, req, req_len, timeout_ms, GRPC_MAX_RESPONSE, UNARY_ANONYMOUS, 0,
		       resp, st, &need);

	return rc == -EMSGSIZE ? -EPROTO : rc;
}

int grpc_unary(struct ef_h2 *h, const char *path, const void *req, size_t req_len,
	       int timeout_ms, GBytes **resp, struct ef_grpc_status *st)
{
	size_t need;
	int rc = grpc_unary_capped(h, path, req, req_len, timeout_ms, GRPC_MAX_RESPONSE, resp, st,
				   &need);

	/* Past the transport's own cap, a response is malformed, not big. */
	return rc == -EMSGSIZE ? -EPROTO : rc;
}

static int unary(struct ef_h2 *h, const char *path, const void *req, size_t req_len,
		 int timeout_ms, size_t max_resp, unsigned flags, uint64_t gen, GBytes **resp,
		 struct ef_grpc_status *st, size_t *need)
{
	struct ef_grpc_call c = { .status.code = -1 };
	char timeout[16];
	const struct ef_h2_header hdrs[] = {
		{ "content-type", "application/grpc" },
		{ "te", "trailers" },
		{ "grpc-timeout", timeout },
		/* etcd's: refuse at once (UNAVAILABLE, "no leader") when
		 * the member knows of no leader. */
		{ "hasleader", "true" },
	};
	struct ef_h2_request r = {
		.path = path,
		.headers = hdrs,
		.n_headers = G_N_ELEMENTS(hdrs) - (flags & UNARY_LEADER ? 0 : 1),
		.end_stream = TRUE,
		.generation = gen,
		.anonymous = (flags & UNARY_ANONYMOUS) != 0,
	};
	uint64_t id;
	int rc;

	*resp = NULL;
	*need = 0;
	if (st)
		*st = (struct ef_grpc_status){ .code = -1 };
	if (req_len > GRPC_MAX_REQUEST)
		return -EFBIG;
	if (timeout_ms <= 0)
		return -ETIMEDOUT;
	g_return_val_if_fail(!h2_on_io_thread(h), -EDEADLK);

	grpc_timeout_format(timeout, sizeof(timeout), timeout_ms);
	r.deadline = g_get_monotonic_time() + (gint64)timeout_ms * G_TIME_SPAN_MILLISECOND;
	r.body = frame_message(req, req_len);
	g_mutex_init(&c.lock);
	g_cond_init(&c.cond);
	grpc_deframer_init(&c.df, MIN(max_resp, GRPC_MAX_RESPONSE));

	rc = h2_stream_submit(h, &r, &unary_ops, &c, &id);
	g_bytes_unref(r.body);
	if (rc < 0)
		goto out;
	g_mutex_lock(&c.lock);
	while (!c.done)
		g_cond_wait(&c.cond, &c.lock);
	g_mutex_unlock(&c.lock);
	rc = unary_result(&c, resp);
	*need = rc == -EMSGSIZE ? c.df.too_long : 0;
	/* A reset stream is -EPROTO too, but then nothing was found wrong. */
	if ((rc == -EPROTO || rc == -EMSGSIZE) && c.shape.kind)
		malformed(path, &c.shape);
	if (st && c.err == 0) {
		*st = c.status;
		c.status.message = NULL;
	}
out:
	grpc_status_clear(&c.status);
	if (c.msg)
		g_bytes_unref(c.msg);
	grpc_deframer_clear(&c.df);
	g_cond_clear(&c.cond);
	g_mutex_clear(&c.lock);
	return rc;
}

/* ---- streaming calls ---- */

struct ef_grpc_stream {
	struct ef_h2 *h;
	const struct ef_grpc_stream_ops *ops;
	void *ud;
	GMutex lock;
	GCond cond;
	uint64_t id;            /* protected by lock */
	gboolean opened;        /* protected by lock: submitted on a connection */
	gboolean closed;        /* protected by lock: no more sends */
	gboolean finished;      /* protected by lock: on_close has returned */
	int close_err;          /* protected by lock */
	/* The I/O thread's until finished. */
	struct ef_grpc_deframer df;
	struct ef_grpc_status status;
	struct shape shape;
	char *path;             /* for the log */
};

static void stream_on_open(void *ud)
{
	struct ef_grpc_stream *s = ud;

	g_mutex_lock(&s->lock);
	s->opened = TRUE;
	g_cond_signal(&s->cond);
	g_mutex_unlock(&s->lock);
}

static void stream_on_header(void *ud, const char *name, size_t name_len, const char *value,
			     size_t value_len, gboolean end_stream)
{
	struct ef_grpc_stream *s = ud;

	status_header(&s->status, &s->shape, name, name_len, value, value_len, end_stream);
}

static int stream_on_data(void *ud, const uint8_t *data, size_t len)
{
	struct ef_grpc_stream *s = ud;
	GBytes *msg;

	if (shape_feed(&s->shape, &s->df, data, len) < 0)
		return -EPROTO;
	while (grpc_deframer_next(&s->df, &msg)) {
		gsize n;
		const uint8_t *p = g_bytes_get_data(msg, &n);

		s->ops->on_message(s->ud, p, n);
		g_bytes_unref(msg);
	}
	return 0;
}

static void stream_on_close(void *ud, int err)
{
	struct ef_grpc_stream *s = ud;
	struct ef_grpc_status none = { .code = -1 };
	gboolean opened;

	g_mutex_lock(&s->lock);
	s->closed = TRUE;
	opened = s->opened;
	g_mutex_unlock(&s->lock);

	if (err == 0)
		err = shape_verdict(&s->shape, &s->status);
	if (err == 0 && grpc_deframer_partial(&s->df)) {
		shape_fail(&s->shape, "a message cut short", NULL);
		err = -EPROTO;
	}
	if (err == -EPROTO && s->shape.kind)
		malformed(s->path, &s->shape);
	/* A stream whose open failed was never the user's: no callback. */
	if (opened)
		s->ops->on_close(s->ud, err, err == 0 ? &s->status : &none);

	g_mutex_lock(&s->lock);
	s->close_err = err;
	s->finished = TRUE;
	g_cond_broadcast(&s->cond);
	g_mutex_unlock(&s->lock);
}

static const struct ef_h2_stream_ops stream_ops = {
	.on_open = stream_on_open,
	.on_header = stream_on_header,
	.on_data = stream_on_data,
	.on_close = stream_on_close,
};

static void stream_destroy(struct ef_grpc_stream *s)
{
	grpc_deframer_clear(&s->df);
	grpc_status_clear(&s->status);
	g_cond_clear(&s->cond);
	g_mutex_clear(&s->lock);
	g_free(s->path);
	g_free(s);
}

int grpc_stream_open(struct ef_h2 *h, const char *path, const struct ef_grpc_stream_ops *ops,
		     void *ud, struct ef_grpc_stream **out)
{
	struct ef_grpc_stream *s = g_new0(struct ef_grpc_stream, 1);
	const struct ef_h2_header hdrs[] = {
		{ "content-type", "application/grpc" },
		{ "te", "trailers" },
	};
	const struct ef_h2_request r = {
		.path = path,
		.headers = hdrs,
		.n_headers = G_N_ELEMENTS(hdrs),
	};
	uint64_t id;
	int rc;

	*out = NULL;
	g_return_val_if_fail(!h2_on_io_thread(h), -EDEADLK);
	s->h = h;
	s->ops = ops;
	s->ud = ud;
	s->status.code = -1;
	s->path = g_strdup(path);
	g_mutex_init(&s->lock);
	g_cond_init(&s->cond);
	grpc_deframer_init(&s->df, GRPC_MAX_RESPONSE);

	rc = h2_stream_submit(h, &r, &stream_ops, s, &id);
	if (rc < 0)
		goto fail;
	/* Wait until it is on a connection: an unreachable cluster must show
	 * up here, not as an on_close the caller has to tell apart. */
	g_mutex_lock(&s->lock);
	s->id = id;
	while (!s->opened && !s->finished)
		g_cond_wait(&s->cond, &s->lock);
	rc = s->opened ? 0 : (s->close_err < 0 ? s->close_err : -EPROTO);
	g_mutex_unlock(&s->lock);
	if (rc < 0)
		goto fail;
	*out = s;
	return 0;
fail:
	/* Not finished only if the submit itself failed: then no callback runs. */
	stream_destroy(s);
	return rc;
}

static int stream_send(struct ef_grpc_stream *s, const void *msg, size_t len, gboolean last)
{
	GBytes *body;
	int rc;

	if (len > GRPC_MAX_REQUEST)
		return -EFBIG;
	body = frame_message(msg, len);
	g_mutex_lock(&s->lock);
	rc = s->closed ? -EPIPE : h2_stream_write(s->h, s->id, body, last);
	g_mutex_unlock(&s->lock);
	g_bytes_unref(body);
	return rc;
}

int grpc_stream_send(struct ef_grpc_stream *s, const void *msg, size_t len)
{
	return stream_send(s, msg, len, FALSE);
}

int grpc_stream_send_last(struct ef_grpc_stream *s, const void *msg, size_t len)
{
	return stream_send(s, msg, len, TRUE);
}

void grpc_stream_free(struct ef_grpc_stream *s)
{
	if (!s)
		return;
	g_mutex_lock(&s->lock);
	/* A closed stream no longer needs h, which may already be freed. */
	if (!s->closed) {
		if (h2_on_io_thread(s->h)) {
			g_mutex_unlock(&s->lock);
			g_critical("grpc_stream_free called on the I/O thread");
			return;
		}
		h2_stream_cancel(s->h, s->id);
	}
	while (!s->finished)
		g_cond_wait(&s->cond, &s->lock);
	g_mutex_unlock(&s->lock);
	stream_destroy(s);
}
