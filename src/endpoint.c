/*
 * endpoint — parsing, pass order and name lookups (see endpoint.h).
 */
#include "endpoint.h"

#include <errno.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>

/* ---- parsing ---- */

static gboolean host_valid(const char *host, size_t len)
{
	if (len == 0)
		return FALSE;
	for (size_t i = 0; i < len; i++) {
		char c = host[i];

		if (c == '/' || c == '@' || c == '[' || c == ']' || c == '?' || c == '#' ||
		    g_ascii_isspace(c) || (unsigned char)c < 0x20)
			return FALSE;
	}
	return TRUE;
}

static int port_parse(const char *s, uint16_t *port)
{
	unsigned long v = 0;

	if (*s == '\0' || strlen(s) > 5)
		return -EINVAL;
	for (; *s; s++) {
		if (!g_ascii_isdigit(*s))
			return -EINVAL;
		v = v * 10 + (unsigned long)(*s - '0');
	}
	if (v == 0 || v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

int endpoint_parse(const char *ep, char **host, uint16_t *port, gboolean *tls)
{
	g_autofree char *rest = NULL;
	const char *hs, *he, *ps;
	gboolean is_tls = FALSE;
	size_t len;

	if (!ep)
		return -EINVAL;
	if (g_str_has_prefix(ep, "http://")) {
		ep += strlen("http://");
	} else if (g_str_has_prefix(ep, "https://")) {
		ep += strlen("https://");
		is_tls = TRUE;
	} else if (strstr(ep, "://")) {
		return -EINVAL;
	}
	/* Allow the "http://host:port/" spelling, but no real path. */
	rest = g_strdup(ep);
	len = strlen(rest);
	if (len > 0 && rest[len - 1] == '/')
		rest[--len] = '\0';

	if (rest[0] == '[') {
		hs = rest + 1;
		he = strchr(hs, ']');
		if (!he || he[1] != ':')
			return -EINVAL;
		ps = he + 2;
		/* Inside brackets only an IPv6 literal makes sense, perhaps with
		 * a zone ("fe80::1%eth0"). */
		for (const char *c = hs, *zone = NULL; c < he; c++) {
			if (*c == '%' && !zone)
				zone = c;
			else if (zone ? !g_ascii_isalnum(*c) && !strchr("-_.", *c)
				      : !g_ascii_isxdigit(*c) && *c != ':' && *c != '.')
				return -EINVAL;
		}
		if (he == hs)
			return -EINVAL;
	} else {
		hs = rest;
		he = strchr(rest, ':');
		if (!he || strchr(he + 1, ':'))
			return -EINVAL;
		ps = he + 1;
		if (!host_valid(hs, (size_t)(he - hs)))
			return -EINVAL;
	}
	if (port_parse(ps, port) < 0)
		return -EINVAL;
	*host = g_strndup(hs, (size_t)(he - hs));
	*tls = is_tls;
	return 0;
}

char *endpoint_name(const char *host, uint16_t port)
{
	if (strchr(host, ':'))
		return g_strdup_printf("[%s]:%u", host, port);
	return g_strdup_printf("%s:%u", host, port);
}


/* ---- the order of a pass ---- */

void endpoint_order(const struct ef_endpoint *eps, size_t n, size_t start, gint64 now,
		    size_t *order)
{
	size_t k = 0, first_avoided;

	for (size_t i = 0; i < n; i++) {
		size_t j = (start + i) % n;

		if (eps[j].avoid_until <= now)
			order[k++] = j;
	}
	first_avoided = k;
	for (size_t i = 0; i < n; i++) {
		size_t j = (start + i) % n;

		if (eps[j].avoid_until > now)
			order[k++] = j;
	}
	/* Insertion sort by the end of avoidance: stable, so ties keep the
	 * rotation's order; n is a handful. */
	for (size_t i = first_avoided + 1; i < n; i++) {
		size_t v = order[i], j = i;

		for (; j > first_avoided && eps[order[j - 1]].avoid_until > eps[v].avoid_until; j--)
			order[j] = order[j - 1];
		order[j] = v;
	}
}

static int lookup(const char *host, uint16_t port, int flags, struct addrinfo **ai)
{
	/* No AI_ADDRCONFIG: it hides 127.0.0.1 on hosts whose only IPv4
	 * address is loopback. */
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = flags | AI_NUMERICSERV };
	char p[8];

	g_snprintf(p, sizeof(p), "%u", port);
	*ai = NULL;
	return getaddrinfo(host, p, &hints, ai);
}

int endpoint_numeric(const struct ef_endpoint *ep, struct addrinfo **ai)
{
	return lookup(ep->host, ep->port, AI_NUMERICHOST, ai);
}

/* ---- the resolver ---- */

/* Shared by the resolver's owner and its lookup threads (refcounted box). */
struct ef_resolver {
	GMutex lock;
	ef_resolved_fn done;    /* protected by lock; NULL once freed */
	void *ud;
};

struct lookup_job {
	struct ef_resolver *r;  /* a reference */
	char *host;
	uint16_t port;
	uint64_t seq;
};

static void resolver_clear(gpointer p)
{
	struct ef_resolver *r = p;

	g_mutex_clear(&r->lock);
}

static gpointer lookup_main(gpointer p)
{
	struct lookup_job *job = p;
	struct ef_resolver *r = job->r;
	struct addrinfo *ai = NULL;
	int rc = lookup(job->host, job->port, 0, &ai);

	/* Under the lock, so resolver_free cannot return during the call. */
	g_mutex_lock(&r->lock);
	if (r->done) {
		r->done(r->ud, job->seq, ai, rc);
		ai = NULL;
	}
	g_mutex_unlock(&r->lock);
	if (ai)
		freeaddrinfo(ai);
	g_free(job->host);
	g_free(job);
	g_atomic_rc_box_release_full(r, resolver_clear);
	return NULL;
}

struct ef_resolver *resolver_new(ef_resolved_fn done, void *ud)
{
	struct ef_resolver *r = g_atomic_rc_box_new0(struct ef_resolver);

	g_mutex_init(&r->lock);
	r->done = done;
	r->ud = ud;
	return r;
}

int resolver_lookup(struct ef_resolver *r, const char *host, uint16_t port, uint64_t seq)
{
	struct lookup_job *job = g_new0(struct lookup_job, 1);
	g_autoptr(GError) err = NULL;
	GThread *t;

	job->r = g_atomic_rc_box_acquire(r);
	job->host = g_strdup(host);
	job->port = port;
	job->seq = seq;
	t = g_thread_try_new("resolve", lookup_main, job, &err);
	if (!t) {
		g_atomic_rc_box_release_full(r, resolver_clear);
		g_free(job->host);
		g_free(job);
		return -EAGAIN;
	}
	g_thread_unref(t);
	return 0;
}

void resolver_free(struct ef_resolver *r)
{
	if (!r)
		return;
	g_mutex_lock(&r->lock);
	r->done = NULL;
	g_mutex_unlock(&r->lock);
	g_atomic_rc_box_release_full(r, resolver_clear);
}
