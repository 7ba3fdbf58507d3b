/* fuzz_common — see fuzz.h. */
#include "fuzz.h"

#include <stdlib.h>
#include <glib.h>

uint8_t fz_u8(struct fz_in *in)
{
	uint8_t v;

	if (in->n == 0)
		return 0;
	v = in->p[0];
	in->p++;
	in->n--;
	return v;
}

uint16_t fz_u16(struct fz_in *in)
{
	uint16_t hi = fz_u8(in);

	return (uint16_t)(hi << 8 | fz_u8(in));
}

size_t fz_bytes(struct fz_in *in, size_t len, const uint8_t **out)
{
	len = MIN(len, in->n);
	*out = in->p;
	in->p += len;
	in->n -= len;
	return len;
}

size_t fz_record(struct fz_in *in, const uint8_t **out)
{
	return fz_bytes(in, fz_u16(in), out);
}

static void log_handler(const gchar *domain, GLogLevelFlags level, const gchar *msg,
			gpointer unused)
{
	if (level & (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR | G_LOG_FLAG_FATAL)) {
		g_printerr("%s: %s\n", domain ? domain : "etcdfs", msg);
		abort();
	}
}

void fz_quiet_logs(void)
{
	g_log_set_default_handler(log_handler, NULL);
	g_log_set_always_fatal(G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR);
}
