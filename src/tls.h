/*
 * tls — the client side of TLS for h2: certificates loaded from files (and
 * loaded again when the files change on disk), one SSL per connection set
 * up to check the server's name, and failures told in words a user can act
 * on.
 *
 * Only h2 uses it, on its I/O thread; tls_new runs at start-up so that a
 * bad file stops the mount. Nothing here does network I/O.
 */
#pragma once

#include <stddef.h>
#include <glib.h>

struct ssl_st;

struct ef_tls_config {
	const char *ca_file;    /* PEM bundle; NULL: the system's CAs */
	const char *cert_file;  /* client certificate chain (PEM), or NULL */
	const char *key_file;   /* its key (PEM); with cert_file or not at all */
	gboolean skip_verify;   /* --insecure-skip-tls-verify */
};

struct ef_tls;

/* Loads the files. Fails (NULL, a one-line reason in err) on a file that
 * cannot be read or parsed, a key that does not match its certificate, or
 * a client certificate that has expired or is not valid yet. */
struct ef_tls *tls_new(const struct ef_tls_config *cfg, GError **err);
void tls_free(struct ef_tls *t);

/*
 * A new SSL for a connection to host (a name or a numeric address: the
 * server's certificate must be valid for it) over fd, in client mode with
 * ALPN h2. Loads the files again first when one of them changed since the
 * last load (a certificate renewed by cert-manager or Vault is used from
 * the next connection on); a change that does not load (a half-written
 * file) keeps the previous certificates and is logged once. NULL with a
 * reason in why when OpenSSL fails.
 */
struct ssl_st *tls_session_new(struct ef_tls *t, int fd, const char *host, char *why,
			       size_t len);

/* Why the handshake of ssl failed (ssl_err: SSL_get_error's code), in
 * words: an untrusted CA, a certificate for another name, an expired one,
 * a client certificate the server refused. */
void tls_handshake_reason(struct ef_tls *t, struct ssl_st *ssl, int ssl_err, char *why,
			  size_t len);

/* The words for an OpenSSL error on an established connection (the error
 * queue's oldest entry; a server's alert is named). */
void tls_io_reason(const struct ef_tls *t, char *why, size_t len);

/* TRUE when a client certificate is configured. */
gboolean tls_has_client_cert(const struct ef_tls *t);

/* TRUE when the handshake chose HTTP/2 (ALPN h2). */
gboolean tls_alpn_is_h2(struct ssl_st *ssl);
