/* h2_seam — see h2_seam.h. grpc.c is part of this file, for its callbacks. */
#include "../../src/grpc.c"

#include "h2_seam.h"

#define SEAM_CAP 1024

struct seam_call {
	struct ef_grpc_call c;   /* first: grpc.c's callbacks get &c */
	unsigned closes;
};

static void seam_on_close(void *ud, int err)
{
	struct seam_call *sc = ud;

	sc->closes++;
	unary_on_close(&sc->c, err);
}

static const struct ef_h2_stream_ops seam_unary_ops = {
	.on_header = unary_on_header,
	.on_data = unary_on_data,
	.on_close = seam_on_close,
};

struct seam_call *seam_unary_begin(struct ef_h2 *h, bool capped)
{
	static const uint8_t req[] = { 0x0a, 0x03, '/', 'r', '/' };
	const struct ef_h2_header hdrs[] = {
		{ "content-type", "application/grpc" },
		{ "te", "trailers" },
		{ "grpc-timeout", "2S" },
	};
	struct ef_h2_request r = {
		.path = "/etcdserverpb.KV/Range",
		.headers = hdrs,
		.n_headers = G_N_ELEMENTS(hdrs),
		.end_stream = TRUE,
		.deadline = g_get_monotonic_time() + 2 * G_TIME_SPAN_SECOND,
	};
	struct seam_call *sc = g_new0(struct seam_call, 1);
	uint64_t id;

	sc->c.status.code = -1;
	g_mutex_init(&sc->c.lock);
	g_cond_init(&sc->c.cond);
	grpc_deframer_init(&sc->c.df, capped ? SEAM_CAP : GRPC_MAX_RESPONSE);
	r.body = frame_message(req, sizeof(req));
	g_assert_cmpint(h2_stream_submit(h, &r, &seam_unary_ops, sc, &id), ==, 0);
	g_bytes_unref(r.body);
	return sc;
}

int seam_unary_end(struct seam_call *sc)
{
	struct ef_grpc_call *c = &sc->c;
	GBytes *resp = NULL;
	int rc;

	g_assert_cmpuint(sc->closes, ==, 1);
	g_assert_true(c->done);
	rc = unary_result(c, &resp);
	g_assert_cmpint(rc, <=, 0);
	if (rc == 0) {
		g_assert_nonnull(resp);
		g_assert_cmpint(c->status.code, ==, GRPC_OK);
		g_assert_cmpuint(g_bytes_get_size(resp), <=, c->df.max_len);
		g_bytes_unref(resp);
	}
	grpc_status_clear(&c->status);
	if (c->msg)
		g_bytes_unref(c->msg);
	grpc_deframer_clear(&c->df);
	g_cond_clear(&c->cond);
	g_mutex_clear(&c->lock);
	g_free(sc);
	return rc;
}

struct ef_grpc_stream *seam_stream_begin(struct ef_h2 *h, const struct ef_grpc_stream_ops *ops,
					 void *ud)
{
	struct ef_grpc_stream *s = g_new0(struct ef_grpc_stream, 1);
	const struct ef_h2_header hdrs[] = {
		{ "content-type", "application/grpc" },
		{ "te", "trailers" },
	};
	const struct ef_h2_request r = {
		.path = "/etcdserverpb.Watch/Watch",
		.headers = hdrs,
		.n_headers = G_N_ELEMENTS(hdrs),
	};
	uint64_t id;

	s->h = h;
	s->ops = ops;
	s->ud = ud;
	s->status.code = -1;
	g_mutex_init(&s->lock);
	g_cond_init(&s->cond);
	grpc_deframer_init(&s->df, GRPC_MAX_RESPONSE);
	g_assert_cmpint(h2_stream_submit(h, &r, &stream_ops, s, &id), ==, 0);
	s->id = id;
	return s;
}

bool seam_stream_end(struct ef_grpc_stream *s)
{
	bool opened;

	g_mutex_lock(&s->lock);
	g_assert_true(s->closed && s->finished);
	opened = s->opened;
	g_mutex_unlock(&s->lock);
	grpc_stream_free(s);
	return opened;
}
