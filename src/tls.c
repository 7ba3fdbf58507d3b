/*
 * tls — certificates, per-connection SSL objects and failure reasons
 * (see tls.h).
 *
 * The SSL_CTX is replaced, never changed, when the files change: an SSL
 * holds its own reference to the context it was made from, so connections
 * made before a reload keep working with what they were made with.
 */
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* What a file looked like when it was last loaded: a renewal changes at
 * least one of these, even through a symlink swap (Kubernetes secrets). */
struct file_sig {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	int err;                /* errno of stat, 0 when it worked */
};

enum { F_CA, F_CERT, F_KEY, N_FILES };

struct ef_tls {
	char *files[N_FILES];   /* NULL when not given */
	gboolean skip_verify;
	SSL_CTX *ctx;
	struct file_sig sigs[N_FILES]; /* when ctx was loaded, or a reload tried */
	gint64 failed_at;       /* monotonic: when a reload last failed, or 0 */
	char *failure;          /* and why (logged once per reason) */
};

/* A reload that failed is tried again after this even if the files do not
 * change: a renewed certificate not valid yet (clocks apart) becomes valid. */
#define RELOAD_RETRY_US (10 * G_USEC_PER_SEC)

static GQuark tls_error_quark(void)
{
	return g_quark_from_static_string("ef-tls-error");
}

static void sig_read(const char *file, struct file_sig *s)
{
	struct stat st;

	memset(s, 0, sizeof(*s));
	if (!file)
		return;
	if (stat(file, &st) < 0) {
		s->err = errno;
		return;
	}
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	s->size = st.st_size;
	s->mtime = st.st_mtim;
}

static gboolean sig_equal(const struct file_sig *a, const struct file_sig *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
	       a->err == b->err;
}

/* "2024-03-01 12:00:00 UTC", or "?" when t does not parse. */
static void time_words(const ASN1_TIME *t, char *buf, size_t len)
{
	struct tm tm;

	if (!t || ASN1_TIME_to_tm(t, &tm) != 1 || strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		g_strlcpy(buf, "?", len);
}

static gboolean fail(GError **err, const char *what, const char *file)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	g_set_error(err, tls_error_quark(), EINVAL, "%s%s%s: %s", what, file ? " " : "",
		    file ? file : "", r ? r : (errno ? g_strerror(errno) : "failed"));
	ERR_clear_error();
	return FALSE;
}

/* A client certificate outside its validity would only be refused by the
 * server, in words that do not say why. */
static gboolean cert_in_date(SSL_CTX *ctx, const char *file, GError **err)
{
	X509 *leaf = SSL_CTX_get0_certificate(ctx);
	char when[64];

	if (!leaf)
		return TRUE;
	if (X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0) {
		time_words(X509_get0_notAfter(leaf), when, sizeof(when));
		g_set_error(err, tls_error_quark(), EINVAL, "client certificate %s expired on %s",
			    file, when);
		return FALSE;
	}
	if (X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0) {
		time_words(X509_get0_notBefore(leaf), when, sizeof(when));
		g_set_error(err, tls_error_quark(), EINVAL,
			    "client certificate %s is not valid before %s", file, when);
		return FALSE;
	}
	return TRUE;
}

/* OpenSSL's words for a missing file are "system lib". */
static gboolean files_readable(char *const *files, GError **err)
{
	static const char *const what[N_FILES] = { "CA file", "certificate", "key" };

	for (int i = 0; i < N_FILES; i++) {
		int fd = files[i] ? open(files[i], O_RDONLY | O_CLOEXEC) : -2;

		if (fd == -1) {
			g_set_error(err, tls_error_quark(), errno, "cannot read %s %s: %s",
				    what[i], files[i], g_strerror(errno));
			return FALSE;
		}
		if (fd >= 0)
			close(fd);
	}
	return TRUE;
}

static gboolean ctx_fill(SSL_CTX *ctx, char *const *files, gboolean skip_verify, GError **err)
{
	const char *ca = files[F_CA], *cert = files[F_CERT], *key = files[F_KEY];

	if (!files_readable(files, err))
		return FALSE;
	errno = 0;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, skip_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (ca && SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
		return fail(err, "cannot load CA file", ca);
	if (!ca && SSL_CTX_set_default_verify_paths(ctx) != 1)
		return fail(err, "cannot load the system's CA certificates", NULL);
	if (cert && SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
		return fail(err, "cannot load certificate", cert);
	if (key && (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(ctx) != 1)) {
		if (ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH &&
		    ERR_GET_REASON(ERR_peek_last_error()) != SSL_R_PRIVATE_KEY_MISMATCH)
			return fail(err, "cannot load key", key);
		g_set_error(err, tls_error_quark(), EINVAL,
			    "key %s does not match the certificate %s", key, cert);
		ERR_clear_error();
		return FALSE;
	}
	if (cert && !cert_in_date(ctx, cert, err))
		return FALSE;
	/* Unusually, 0 is success here. */
	if (SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x02h2", 3) != 0)
		return fail(err, "cannot set ALPN", NULL);
	return TRUE;
}

static SSL_CTX *ctx_load(struct ef_tls *t, GError **err)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx) {
		fail(err, "cannot create a TLS context", NULL);
		return NULL;
	}
	if (!ctx_fill(ctx, t->files, t->skip_verify, err)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

struct ef_tls *tls_new(const struct ef_tls_config *cfg, GError **err)
{
	struct ef_tls *t = g_new0(struct ef_tls, 1);

	if (!cfg->cert_file != !cfg->key_file) {
		g_set_error_literal(err, tls_error_quark(), EINVAL,
				    "a client certificate needs both a cert and a key file");
		g_free(t);
		return NULL;
	}
	t->files[F_CA] = g_strdup(cfg->ca_file);
	t->files[F_CERT] = g_strdup(cfg->cert_file);
	t->files[F_KEY] = g_strdup(cfg->key_file);
	t->skip_verify = cfg->skip_verify;
	for (int i = 0; i < N_FILES; i++)
		sig_read(t->files[i], &t->sigs[i]);
	t->ctx = ctx_load(t, err);
	if (!t->ctx) {
		tls_free(t);
		return NULL;
	}
	return t;
}

void tls_free(struct ef_tls *t)
{
	if (!t)
		return;
	if (t->ctx)
		SSL_CTX_free(t->ctx);
	for (int i = 0; i < N_FILES; i++)
		g_free(t->files[i]);
	g_free(t->failure);
	g_free(t);
}

/* Loads the files again if one changed since the last try, or a while
 * after a try that failed. */
static void tls_refresh(struct ef_tls *t)
{
	struct file_sig now[N_FILES];
	gboolean changed = FALSE;
	g_autoptr(GError) err = NULL;
	gint64 at = g_get_monotonic_time();
	SSL_CTX *ctx;

	for (int i = 0; i < N_FILES; i++) {
		sig_read(t->files[i], &now[i]);
		changed |= !sig_equal(&now[i], &t->sigs[i]);
	}
	if (!changed && !(t->failed_at && at - t->failed_at >= RELOAD_RETRY_US))
		return;
	/* A renewal still being written changes the files again: that is
	 * when to retry, besides the timer. */
	memcpy(t->sigs, now, sizeof(now));
	ctx = ctx_load(t, &err);
	if (!ctx) {
		if (g_strcmp0(t->failure, err->message) != 0)
			g_warning("etcdfs: the TLS files changed but do not load (%s); "
				  "keeping the previous ones", err->message);
		g_free(t->failure);
		t->failure = g_strdup(err->message);
		t->failed_at = at;
		return;
	}
	SSL_CTX_free(t->ctx);
	t->ctx = ctx;
	t->failed_at = 0;
	g_clear_pointer(&t->failure, g_free);
	g_message("etcdfs: TLS files changed: loaded again");
}

static gboolean host_is_ip(const char *host)
{
	g_autofree char *addr = g_strndup(host, strcspn(host, "%"));
	struct in6_addr a;

	return inet_pton(AF_INET, addr, &a) == 1 || inet_pton(AF_INET6, addr, &a) == 1;
}

struct ssl_st *tls_session_new(struct ef_tls *t, int fd, const char *host, char *why,
			       size_t len)
{
	g_autofree char *addr = g_strndup(host, strcspn(host, "%"));
	gboolean ok, ip = host_is_ip(host);
	SSL *ssl;

	tls_refresh(t);
	ssl = SSL_new(t->ctx);
	ok = ssl && SSL_set_fd(ssl, fd) == 1;
	/* SNI only makes sense for DNS names; the name we dialled is the one
	 * the certificate must carry, in its subjectAltName (never its CN, as
	 * Go's, and so etcdctl's, check), an address without its zone. */
	if (ok && !ip)
		ok = SSL_set_tlsext_host_name(ssl, host) == 1;
	if (ok && !t->skip_verify) {
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
		ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), addr) == 1
			: SSL_set1_host(ssl, host) == 1;
	}
	if (!ok) {
		g_strlcpy(why, "cannot set up TLS", len);
		if (ssl)
			SSL_free(ssl);
		ERR_clear_error();
		return NULL;
	}
	SSL_set_connect_state(ssl);
	return ssl;
}

static void verify_words(struct ef_tls *t, SSL *ssl, long verify, char *why, size_t len)
{
	X509 *peer = SSL_get0_peer_certificate(ssl);
	char when[64];

	switch (verify) {
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_CERT_SIGNATURE_FAILURE:
		g_snprintf(why, len, "the server's certificate is not signed by a trusted CA "
			   "(%s%s)", t->files[F_CA] ? "--cacert " : "the system's CAs",
			   t->files[F_CA] ? t->files[F_CA] : "");
		return;
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		g_snprintf(why, len, "the server's certificate is for another %s",
			   verify == X509_V_ERR_HOSTNAME_MISMATCH ? "host name" : "address");
		return;
	case X509_V_ERR_CERT_HAS_EXPIRED:
		time_words(peer ? X509_get0_notAfter(peer) : NULL, when, sizeof(when));
		g_snprintf(why, len, "the server's certificate has expired%s%s", peer ? " on " : "",
			   peer ? when : "");
		return;
	case X509_V_ERR_CERT_NOT_YET_VALID:
		time_words(peer ? X509_get0_notBefore(peer) : NULL, when, sizeof(when));
		g_snprintf(why, len, "the server's certificate is not valid yet%s%s",
			   peer ? ": from " : "", peer ? when : "");
		return;
	default:
		g_snprintf(why, len, "the server's certificate was refused: %s",
			   X509_verify_cert_error_string(verify));
	}
}

/* Alerts a server sends when it does not accept our certificate. */
static gboolean alert_about_client_cert(unsigned long e)
{
	if (ERR_GET_LIB(e) != ERR_LIB_SSL)
		return FALSE;
	switch (ERR_GET_REASON(e)) {
	case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
	case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
	case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
	case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
		return TRUE;
	default:
		return FALSE;
	}
}

void tls_io_reason(const struct ef_tls *t, char *why, size_t len)
{
	unsigned long e = ERR_peek_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	if (e && alert_about_client_cert(e) && !tls_has_client_cert(t))
		g_snprintf(why, len, "the server requires a client certificate (--cert, --key)");
	else if (e && alert_about_client_cert(e))
		g_snprintf(why, len, "the server refused the client certificate (%s)", r);
	else if (r)
		g_snprintf(why, len, "TLS: %s", r);
	else
		g_strlcpy(why, "TLS failed", len);
	ERR_clear_error();
}

void tls_handshake_reason(struct ef_tls *t, struct ssl_st *ssl, int ssl_err, char *why,
			  size_t len)
{
	long verify = t->skip_verify ? X509_V_OK : SSL_get_verify_result(ssl);

	if (verify != X509_V_OK)
		verify_words(t, ssl, verify, why, len);
	else if (ERR_peek_error())
		tls_io_reason(t, why, len);
	else if (ssl_err == SSL_ERROR_SYSCALL && errno)
		g_snprintf(why, len, "TLS handshake failed: %s", g_strerror(errno));
	else
		g_strlcpy(why, "connection closed during the TLS handshake", len);
	ERR_clear_error();
}

gboolean tls_has_client_cert(const struct ef_tls *t)
{
	return t && t->files[F_CERT];
}

gboolean tls_alpn_is_h2(struct ssl_st *ssl)
{
	const unsigned char *alpn = NULL;
	unsigned int n = 0;

	SSL_get0_alpn_selected(ssl, &alpn, &n);
	return n == 2 && memcmp(alpn, "h2", 2) == 0;
}
