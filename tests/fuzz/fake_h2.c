/* fake_h2 — see fake_h2.h. */
#include "fake_h2.h"

#include <errno.h>
#include <string.h>
#include <glib.h>

#include "grpc.h"
#include "h2.h"

static struct fz_in *script;
static unsigned calls, leaves;
static uint64_t next_id;

void fake_h2_script(struct fz_in *s)
{
	script = s;
	calls = leaves = 0;
}

unsigned fake_h2_calls(void)
{
	return calls;
}

unsigned fake_h2_leaves(void)
{
	return leaves;
}

/*
 * etcd.c sleeps between tries of a call the member could not serve; the
 * script answers at once, and a sleep would only slow the run down. This
 * definition takes the place of GLib's for the whole program.
 */
void g_usleep(gulong microseconds)
{
}

static void response_headers(const struct ef_h2_stream_ops *ops, void *ud)
{
	if (!ops->on_header)
		return;
	ops->on_header(ud, ":status", 7, "200", 3, FALSE);
	ops->on_header(ud, "content-type", 12, "application/grpc", 16, FALSE);
}

static void trailers(const struct ef_h2_stream_ops *ops, void *ud, const char *code,
		     const uint8_t *msg, size_t len)
{
	if (!ops->on_header)
		return;
	ops->on_header(ud, "grpc-status", 11, code, strlen(code), TRUE);
	ops->on_header(ud, "grpc-message", 12, (const char *)msg, len, TRUE);
}

/* Body bytes as h2 hands them over: a failing on_data resets the stream. */
static int body(const struct ef_h2_stream_ops *ops, void *ud, const uint8_t *p, size_t len)
{
	/* Two chunks, so that the deframer sees a message arrive in parts. */
	size_t half = len / 2;
	int rc = ops->on_data(ud, p, half);

	return rc < 0 ? rc : ops->on_data(ud, p + half, len - half);
}

static int answer(const struct ef_h2_stream_ops *ops, void *ud)
{
	uint8_t tag, hdr[GRPC_FRAME_HEADER];
	const uint8_t *p;
	size_t len;
	char code[4];
	g_autofree uint8_t *framed = NULL;
	int rc;

	if (!script || script->n == 0)
		return -EPROTO;
	tag = fz_u8(script);
	len = fz_record(script, &p);
	switch (tag % 5) {
	case 0:
		grpc_frame_header(hdr, len);
		framed = g_malloc(sizeof(hdr) + len);
		memcpy(framed, hdr, sizeof(hdr));
		memcpy(framed + sizeof(hdr), p, len);
		response_headers(ops, ud);
		if ((rc = body(ops, ud, framed, sizeof(hdr) + len)) < 0)
			return rc;
		trailers(ops, ud, "0", NULL, 0);
		return 0;
	case 1:
		response_headers(ops, ud);
		if ((rc = body(ops, ud, p, len)) < 0)
			return rc;
		trailers(ops, ud, "0", NULL, 0);
		return 0;
	case 2:
		g_snprintf(code, sizeof(code), "%u", len ? p[0] : 0);
		trailers(ops, ud, code, len ? p + 1 : p, len ? len - 1 : 0);
		return 0;
	case 3:
		return -ECONNRESET;
	default:
		return -ETIMEDOUT;
	}
}

int h2_stream_submit(struct ef_h2 *h, const struct ef_h2_request *req,
		     const struct ef_h2_stream_ops *ops, void *ud, uint64_t *id)
{
	*id = ++next_id;
	if (!req->deadline) {
		ops->on_close(ud, -ENOTCONN);
		return 0;
	}
	calls++;
	if (ops->on_open)
		ops->on_open(ud);
	ops->on_close(ud, answer(ops, ud));
	return 0;
}

int h2_stream_write(struct ef_h2 *h, uint64_t id, GBytes *data, gboolean end_stream)
{
	return -ENOTCONN;
}

void h2_stream_cancel(struct ef_h2 *h, uint64_t id)
{
}

gboolean h2_on_io_thread(struct ef_h2 *h)
{
	return FALSE;
}

uint64_t h2_generation(struct ef_h2 *h)
{
	return 1;
}

void h2_leave(struct ef_h2 *h, uint64_t generation, const char *why)
{
	leaves++;
}

void h2_abandon_calls(struct ef_h2 *h, uint64_t generation, gint64 before)
{
}

void h2_learn_endpoints(struct ef_h2 *h, const char *const *learned)
{
	for (size_t i = 0; learned && learned[i]; i++)
		g_assert_nonnull(memchr(learned[i], '\0', strlen(learned[i]) + 1));
}
