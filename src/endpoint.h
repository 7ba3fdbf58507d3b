/*
 * endpoint — the etcd endpoints a connection may use: parsing, the order a
 * connection pass tries them in, and name lookups that never block the
 * caller.
 *
 * Parsing and ordering are pure (unit tests); the resolver runs each
 * lookup of a host name on a short-lived thread of its own, because
 * getaddrinfo(3) may block for seconds and the connection's I/O thread
 * must never block.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <glib.h>

struct addrinfo;

struct ef_endpoint {
	char *host;
	uint16_t port;
	gboolean tls;
	char *name;             /* "host:port" ("[v6]:port"), also the :authority */
	gint64 avoid_until;     /* monotonic us: tried last until then */
};

/* Parses "host:port", "http://host:port", "https://host:port", "[v6]:port"
 * (a trailing "/" allowed). Returns 0 and fills host (g_malloc'd), port and
 * tls, or -EINVAL. */
int endpoint_parse(const char *ep, char **host, uint16_t *port, gboolean *tls);

/* "host:port", bracketing an IPv6 host. New string. */
char *endpoint_name(const char *host, uint16_t port);

/*
 * The order a connection pass tries n endpoints in, into order[0..n): every
 * endpoint once, starting at index start and wrapping around, except that
 * endpoints to avoid (avoid_until > now) come after all the others, the
 * one whose avoidance ends first leading. A member that just failed is
 * thus tried again only when nothing else answers.
 */
void endpoint_order(const struct ef_endpoint *eps, size_t n, size_t start, gint64 now,
		    size_t *order);

/* Addresses of ep when its host is a numeric address (no lookup, never
 * blocks): 0 with *ai set, EAI_NONAME when the host is a name to look up,
 * or another EAI_* code. */
int endpoint_numeric(const struct ef_endpoint *ep, struct addrinfo **ai);

/* ---- name lookups off the caller's thread ---- */

/* Called on the lookup's own thread with getaddrinfo's outcome: ai
 * (the callee's to free) or gai_rc != 0. */
typedef void (*ef_resolved_fn)(void *ud, uint64_t seq, struct addrinfo *ai, int gai_rc);

struct ef_resolver;

struct ef_resolver *resolver_new(ef_resolved_fn done, void *ud);

/* Starts looking host up; done(ud, seq, ...) follows unless resolver_free
 * comes first. Returns 0, or -errno when no thread could be started. */
int resolver_lookup(struct ef_resolver *r, const char *host, uint16_t port, uint64_t seq);

/* Once this returns, done is never called again; lookups still running
 * finish on their own threads and free what they found. */
void resolver_free(struct ef_resolver *r);
