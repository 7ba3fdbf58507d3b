/*
 * main — command line, start-up and teardown.
 *
 * Start-up ladder: parse options; prove an endpoint answers (a one-line
 * reason and exit 1 otherwise, before anything is mounted); mount;
 * daemonize; only then start the connection's I/O thread, because fork()
 * keeps no threads; serve; unwind in reverse order.
 */
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <termios.h>
#include <stdarg.h>
#include <syslog.h>
#include <limits.h>
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fuse_lowlevel.h>
#include <glib.h>

#include "auth.h"
#include "cache.h"
#include "clusterfs.h"
#include "etcd.h"
#include "fs.h"
#include "h2.h"
#include "keymap.h"
#include "lock.h"
#include "options.h"
#include "revclock.h"
#include "session.h"
#include "watch.h"
#include "watchfile.h"

#define DEFAULT_ENDPOINT "127.0.0.1:2379"
#define DEFAULT_DIAL "2s"
#define DEFAULT_COMMAND "5s"
#define DEFAULT_CACHE "32M"
/* etcd's own default --quota-backend-bytes. */
#define DEFAULT_QUOTA "2G"
#define DEFAULT_LOCK_PREFIX "etcdfs-lock"

struct ef_opts {
	char *endpoints;
	char *prefix;
	char *dial_timeout;
	char *command_timeout;
	char *cache_size;
	char *consistency;
	char *lock_prefix;
	char *lock_ttl;
	char *backend_quota;
	unsigned int uid, gid, umask;
	int uid_set, gid_set, umask_set;
	int shared;          /* allow_other or allow_root */
	int serializable;
	int pin_endpoints;
	int strict_reads;
	char *cacert, *cert, *key;
	char *insecure_transport;       /* a boolean's words, or NULL */
	char *skip_verify;              /* likewise */
	char *user;                     /* name[:password] */
	char *password;
	char *password_file;
	char *credentials;              /* a file holding name:password */
	char *revision;                 /* a past revision to show, read-only */
	char *positional[3];
	int n_positional;
};

enum { KEY_UID, KEY_GID, KEY_UMASK, KEY_SHARED, KEY_INSECURE, KEY_SKIP_VERIFY, KEY_USER_O };

#define OPT(t, f) { t, offsetof(struct ef_opts, f), 1 }
static const struct fuse_opt ef_opt_spec[] = {
	{ "--endpoints=%s", offsetof(struct ef_opts, endpoints), 0 },
	{ "endpoints=%s", offsetof(struct ef_opts, endpoints), 0 },
	{ "--prefix=%s", offsetof(struct ef_opts, prefix), 0 },
	{ "prefix=%s", offsetof(struct ef_opts, prefix), 0 },
	{ "--dial-timeout=%s", offsetof(struct ef_opts, dial_timeout), 0 },
	{ "dial_timeout=%s", offsetof(struct ef_opts, dial_timeout), 0 },
	{ "--command-timeout=%s", offsetof(struct ef_opts, command_timeout), 0 },
	{ "command_timeout=%s", offsetof(struct ef_opts, command_timeout), 0 },
	{ "cache_size=%s", offsetof(struct ef_opts, cache_size), 0 },
	{ "--cache-size=%s", offsetof(struct ef_opts, cache_size), 0 },
	{ "uid=%u", offsetof(struct ef_opts, uid), 0 },
	{ "gid=%u", offsetof(struct ef_opts, gid), 0 },
	{ "umask=%o", offsetof(struct ef_opts, umask), 0 },
	FUSE_OPT_KEY("uid=", KEY_UID),
	FUSE_OPT_KEY("gid=", KEY_GID),
	FUSE_OPT_KEY("umask=", KEY_UMASK),
	FUSE_OPT_KEY("allow_other", KEY_SHARED),
	FUSE_OPT_KEY("allow_root", KEY_SHARED),
	{ "--lock-prefix=%s", offsetof(struct ef_opts, lock_prefix), 0 },
	{ "lock_prefix=%s", offsetof(struct ef_opts, lock_prefix), 0 },
	{ "--lock-ttl=%s", offsetof(struct ef_opts, lock_ttl), 0 },
	{ "lock_ttl=%s", offsetof(struct ef_opts, lock_ttl), 0 },
	{ "--backend-quota=%s", offsetof(struct ef_opts, backend_quota), 0 },
	{ "backend_quota=%s", offsetof(struct ef_opts, backend_quota), 0 },
	{ "--consistency=%s", offsetof(struct ef_opts, consistency), 0 },
	{ "consistency=%s", offsetof(struct ef_opts, consistency), 0 },
	OPT("--serializable", serializable),
	OPT("serializable", serializable),
	OPT("--pin-endpoints", pin_endpoints),
	OPT("pin_endpoints", pin_endpoints),
	OPT("--strict-reads", strict_reads),
	OPT("strict_reads", strict_reads),
	{ "--cacert=%s", offsetof(struct ef_opts, cacert), 0 },
	{ "cacert=%s", offsetof(struct ef_opts, cacert), 0 },
	{ "--cert=%s", offsetof(struct ef_opts, cert), 0 },
	{ "cert=%s", offsetof(struct ef_opts, cert), 0 },
	{ "--key=%s", offsetof(struct ef_opts, key), 0 },
	{ "key=%s", offsetof(struct ef_opts, key), 0 },
	{ "--insecure-transport=%s", offsetof(struct ef_opts, insecure_transport), 0 },
	{ "insecure_transport=%s", offsetof(struct ef_opts, insecure_transport), 0 },
	FUSE_OPT_KEY("--insecure-transport", KEY_INSECURE),
	FUSE_OPT_KEY("insecure_transport", KEY_INSECURE),
	{ "--insecure-skip-tls-verify=%s", offsetof(struct ef_opts, skip_verify), 0 },
	{ "insecure_skip_tls_verify=%s", offsetof(struct ef_opts, skip_verify), 0 },
	FUSE_OPT_KEY("--insecure-skip-tls-verify", KEY_SKIP_VERIFY),
	FUSE_OPT_KEY("insecure_skip_tls_verify", KEY_SKIP_VERIFY),
	{ "--user=%s", offsetof(struct ef_opts, user), 0 },
	/* Not "user=": mount(8) reads that as its own option, which lets
	 * every user mount the fstab line. */
	{ "username=%s", offsetof(struct ef_opts, user), 0 },
	FUSE_OPT_KEY("user=", KEY_USER_O),
	{ "--password=%s", offsetof(struct ef_opts, password), 0 },
	{ "password=%s", offsetof(struct ef_opts, password), 0 },
	{ "--password-file=%s", offsetof(struct ef_opts, password_file), 0 },
	{ "password_file=%s", offsetof(struct ef_opts, password_file), 0 },
	{ "--revision=%s", offsetof(struct ef_opts, revision), 0 },
	{ "revision=%s", offsetof(struct ef_opts, revision), 0 },
	{ "--credentials=%s", offsetof(struct ef_opts, credentials), 0 },
	{ "credentials=%s", offsetof(struct ef_opts, credentials), 0 },
	FUSE_OPT_END
};

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct ef_opts *o = data;

	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (o->n_positional == G_N_ELEMENTS(o->positional)) {
			g_printerr("etcdfs: unexpected argument '%s'\n", arg);
			return -1;
		}
		o->positional[o->n_positional++] = g_strdup(arg);
		return 0;
	/* The value templates above store the number; these keys only note
	 * that it was given (and keep it from the kernel). */
	case KEY_UID:
		o->uid_set = 1;
		return 0;
	case KEY_GID:
		o->gid_set = 1;
		return 0;
	case KEY_UMASK:
		o->umask_set = 1;
		return 0;
	case KEY_SHARED:
		o->shared = 1;
		return 1;    /* for libfuse and the kernel too */
	/* A bare flag means true, as with etcdctl. */
	case KEY_INSECURE:
		g_free(o->insecure_transport);
		o->insecure_transport = g_strdup("true");
		return 0;
	case KEY_SKIP_VERIFY:
		g_free(o->skip_verify);
		o->skip_verify = g_strdup("true");
		return 0;
	case KEY_USER_O:
		g_printerr("etcdfs: -o user= is mount(8)'s option (any user may then mount); "
			   "use -o username= or credentials=\n");
		return -1;
	default:
		return 1;
	}
}

static void usage(const char *prog)
{
	printf("usage: %s [ENDPOINTS] MOUNTPOINT [options]\n\n"
	       "etcdfs options:\n"
	       "    --endpoints=LIST       comma-separated etcd endpoints (host:port)\n"
	       "                           default: $ETCDCTL_ENDPOINTS or " DEFAULT_ENDPOINT "\n"
	       "    --prefix=PREFIX        key prefix mounted as the root (default /)\n"
	       "    --dial-timeout=DUR     time to connect to an endpoint (default " DEFAULT_DIAL ")\n"
	       "    --command-timeout=DUR  time limit of each etcd request (default " DEFAULT_COMMAND ")\n"
	       "    --pin-endpoints        use only the endpoints given, not the members'\n"
	       "                           client URLs from the member list\n"
	       "    --strict-reads         check a cached value with etcd at each open\n"
	       "                           (one small linearizable read per open)\n"
	       "    --serializable         serve reads from the nearest member\n"
	       "                           (also --consistency=s; l is the default)\n"
	       "    --cache-size=SIZE      memory for cached values (default " DEFAULT_CACHE ")\n"
	       "    --lock-prefix=PREFIX   etcd lock names of files start with it\n"
	       "                           (default " DEFAULT_LOCK_PREFIX ")\n"
	       "    --lock-ttl=DUR         lease of this mount's locks: they outlive a dead\n"
	       "                           daemon by at most this (default 60s)\n"
	       "    --backend-quota=SIZE   etcd's --quota-backend-bytes, for df\n"
	       "                           (default " DEFAULT_QUOTA ")\n"
	       "    --cacert=FILE          verify servers with this CA bundle\n"
	       "                           (default: the system's CAs)\n"
	       "    --cert=FILE --key=FILE client certificate and its key\n"
	       "    --insecure-transport   allow http:// endpoints while others use TLS\n"
	       "    --insecure-skip-tls-verify  do not verify the server's certificate\n"
	       "                           (insecure: testing only)\n"
	       "    --user=NAME[:PASSWORD] etcd user (password asked on the terminal\n"
	       "                           when not given another way)\n"
	       "    --password-file=FILE   the password is FILE's first line\n"
	       "    --credentials=FILE     FILE's first line is NAME:PASSWORD (for fstab)\n"
	       "    --password=PASSWORD    visible to other users in ps: avoid\n"
	       "    --revision=REV         the keyspace as it was at revision REV,\n"
	       "                           read-only (etcdctl get --rev)\n"
	       "    -o endpoints=,prefix=,dial_timeout=,command_timeout=,serializable,cache_size=,\n"
	       "       lock_prefix=,lock_ttl=,backend_quota=,pin_endpoints,strict_reads,\n"
	       "       cacert=,cert=,key=,insecure_transport,insecure_skip_tls_verify,\n"
	       "       username=,credentials=,password_file=,revision=\n"
	       "    -o uid=N,gid=N,umask=OOO  owner and permissions shown for every file\n\n",
	       prog);
	fuse_cmdline_help();
	fuse_lowlevel_help();
}

static void opts_clear(struct ef_opts *o)
{
	g_free(o->endpoints);
	g_free(o->prefix);
	g_free(o->dial_timeout);
	g_free(o->command_timeout);
	g_free(o->cache_size);
	g_free(o->consistency);
	g_free(o->lock_prefix);
	g_free(o->lock_ttl);
	g_free(o->backend_quota);
	g_free(o->cacert);
	g_free(o->cert);
	g_free(o->key);
	g_free(o->insecure_transport);
	g_free(o->skip_verify);
	if (o->user)
		explicit_bzero(o->user, strlen(o->user));
	g_free(o->user);
	if (o->password)
		explicit_bzero(o->password, strlen(o->password));
	g_free(o->password);
	g_free(o->password_file);
	g_free(o->credentials);
	g_free(o->revision);
	for (int i = 0; i < o->n_positional; i++)
		g_free(o->positional[i]);
}

struct ef_settings {
	char **endpoints;
	struct ef_auth *auth;        /* NULL without --user */
	struct ef_h2_config h2;      /* borrows endpoints and the file names */
	char *files[3];              /* cacert, cert, key: absolute paths */
	int dial_ms, command_ms;
	size_t cache_size;
	bool shared;
	const char *lock_prefix;
	int lock_ttl;          /* seconds */
	int64_t revision;      /* --revision, or 0 */
	size_t quota;          /* bytes */
};

static void wipe_free(char *s)
{
	if (s)
		explicit_bzero(s, strlen(s));
	g_free(s);
}

/* ETCDCTL_PASSWORD and ETCDCTL_USER (which may hold NAME:PASSWORD),
 * taken out of the environment by hide_secrets. */
static char *env_password, *env_user;

/*
 * What /proc/PID/cmdline and /proc/PID/environ show is this memory: the
 * password goes from both as soon as the options are parsed (fuse_opt
 * copied them). Before that, for a moment, it shows: prefer
 * --password-file or --credentials.
 */
static void hide_secrets(int argc, char **argv)
{
	extern char **environ;

	for (int i = 1; i < argc; i++)
		options_hide_secrets(argv[i]);
	for (char **e = environ; e && *e; e++) {
		if (g_str_has_prefix(*e, "ETCDCTL_PASSWORD=")) {
			char *v = *e + strlen("ETCDCTL_PASSWORD=");

			wipe_free(env_password);
			env_password = g_strdup(v);
			memset(v, 'x', strlen(v));
		} else if (g_str_has_prefix(*e, "ETCDCTL_USER=")) {
			char *v = *e + strlen("ETCDCTL_USER="), *colon = strchr(v, ':');

			wipe_free(env_user);
			env_user = g_strdup(v);
			if (colon)
				memset(colon + 1, 'x', strlen(colon + 1));
		}
	}
}

/* ---- logs of a detached daemon ---- */

static int syslog_priority(GLogLevelFlags level)
{
	if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))
		return LOG_ERR;
	if (level & G_LOG_LEVEL_WARNING)
		return LOG_WARNING;
	if (level & G_LOG_LEVEL_MESSAGE)
		return LOG_NOTICE;
	return level & G_LOG_LEVEL_INFO ? LOG_INFO : LOG_DEBUG;
}

static GLogWriterOutput glib_to_syslog(GLogLevelFlags level, const GLogField *fields,
				       gsize n, gpointer unused)
{
	const char *msg = NULL;

	/* Debug lines only on request, as GLib's own writer does. */
	if ((level & G_LOG_LEVEL_DEBUG) && !g_getenv("G_MESSAGES_DEBUG"))
		return G_LOG_WRITER_HANDLED;
	for (gsize i = 0; i < n && !msg; i++)
		if (strcmp(fields[i].key, "MESSAGE") == 0 && fields[i].length < 0)
			msg = fields[i].value;
	if (msg)
		syslog(syslog_priority(level), "%s", msg);
	return G_LOG_WRITER_HANDLED;
}

/* libfuse's levels are syslog's, in the same order from EMERG to DEBUG. */
static void fuse_to_syslog(enum fuse_log_level level, const char *fmt, va_list ap)
{
	vsyslog((int)level, fmt, ap);
}

/* A detached daemon's stderr is /dev/null: its warnings and errors (ours
 * and libfuse's) go to syslog, which is the journal under systemd. */
static void log_to_syslog(void)
{
	openlog("etcdfs", LOG_PID, LOG_DAEMON);
	g_log_set_writer_func(glib_to_syslog, NULL, NULL);
	fuse_set_log_func(fuse_to_syslog);
}

/* One line per mistake, so that all of them show at once. */
static int bad(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static int bad(const char *fmt, ...)
{
	va_list ap;
	g_autofree char *msg = NULL;

	va_start(ap, fmt);
	msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_printerr("etcdfs: %s\n", msg);
	return 1;
}

/* A boolean the way etcdctl (Go's strconv.ParseBool) reads it; words NULL
 * leaves *v and *set alone. Returns the number of mistakes (0 or 1). */
static int bool_resolve(const char *name, const char *words, gboolean *v, gboolean *set)
{
	static const char *const yes[] = { "1", "t", "T", "TRUE", "true", "True" };
	static const char *const no[] = { "0", "f", "F", "FALSE", "false", "False" };

	if (!words)
		return 0;
	for (size_t i = 0; i < G_N_ELEMENTS(yes); i++) {
		if (strcmp(words, yes[i]) == 0 || strcmp(words, no[i]) == 0) {
			*v = strcmp(words, yes[i]) == 0;
			*set = TRUE;
			return 0;
		}
	}
	return bad("%s takes true or false, not '%s'", name, words);
}

/*
 * TLS: an endpoint without a scheme uses it when a certificate file is
 * given (or --insecure-transport=false); http:// ones are then refused
 * unless --insecure-transport says otherwise. File names are made
 * absolute: the daemon leaves its working directory, and reads them again
 * when they change. Returns the number of mistakes.
 */
static int tls_resolve(const struct ef_opts *o, struct ef_settings *s)
{
	const char *given[3] = { o->cacert, o->cert, o->key };
	static const char *const env[3] = { "ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY" };
	gboolean any = FALSE, insecure = FALSE, insecure_set = FALSE, skip = FALSE, skip_set;
	int n = 0;

	for (int i = 0; i < 3; i++) {
		const char *f = given[i] ? given[i] : g_getenv(env[i]);

		if (f && *f) {
			s->files[i] = g_canonicalize_filename(f, NULL);
			any = TRUE;
		}
	}
	n += bool_resolve("--insecure-transport",
			  o->insecure_transport ? o->insecure_transport
						: g_getenv("ETCDCTL_INSECURE_TRANSPORT"),
			  &insecure, &insecure_set);
	n += bool_resolve("--insecure-skip-tls-verify",
			  o->skip_verify ? o->skip_verify
					 : g_getenv("ETCDCTL_INSECURE_SKIP_TLS_VERIFY"),
			  &skip, &skip_set);
	s->h2.tls = (struct ef_tls_config){
		.ca_file = s->files[0], .cert_file = s->files[1], .key_file = s->files[2],
		.skip_verify = skip,
	};
	s->h2.tls_default = any || (insecure_set && !insecure);
	s->h2.plain = insecure_set ? (insecure ? EF_PLAIN_ALLOW : EF_PLAIN_REFUSE)
				   : any ? EF_PLAIN_REFUSE : EF_PLAIN_AUTO;
	return n;
}

/* The first line of file (new string), or NULL after one line saying why. */
static char *first_line(const char *what, const char *file)
{
	g_autoptr(GError) err = NULL;
	char *text = NULL;
	gsize len;

	if (!g_file_get_contents(file, &text, &len, &err)) {
		bad("cannot read %s: %s", what, err->message);
		return NULL;
	}
	/* The rest of a credentials file is a secret too. */
	explicit_bzero(text + strcspn(text, "\r\n"), len - strcspn(text, "\r\n"));
	return text;
}

/* The terminal a password prompt turned the echo off on, for the signal
 * handler that turns it back on. */
static int prompt_fd = -1;
static struct termios prompt_saved;

static void prompt_interrupted(int sig)
{
	tcsetattr(prompt_fd, TCSAFLUSH, &prompt_saved);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Reads a password on the controlling terminal, not echoed; NULL when
 * there is none. ^C (or another deadly signal) meanwhile turns the echo
 * back on before it ends the process. */
static char *ask_password(const char *user)
{
	static const int deadly[] = { SIGINT, SIGQUIT, SIGTERM, SIGHUP };
	struct sigaction was[G_N_ELEMENTS(deadly)];
	struct sigaction sa = { .sa_handler = prompt_interrupted };
	int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
	struct termios quiet;
	char buf[1024], *out;
	size_t n = 0;
	bool echo_off;

	if (fd < 0)
		return NULL;
	echo_off = tcgetattr(fd, &prompt_saved) == 0;
	if (echo_off) {
		prompt_fd = fd;
		for (size_t i = 0; i < G_N_ELEMENTS(deadly); i++)
			sigaction(deadly[i], &sa, &was[i]);
		quiet = prompt_saved;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(fd, TCSAFLUSH, &quiet);
	}
	dprintf(fd, "Password for %s: ", user);
	while (n < sizeof(buf) - 1 && read(fd, buf + n, 1) == 1 && buf[n] != '\n')
		n++;
	buf[n] = '\0';
	if (echo_off) {
		tcsetattr(fd, TCSAFLUSH, &prompt_saved);
		for (size_t i = 0; i < G_N_ELEMENTS(deadly); i++)
			sigaction(deadly[i], &was[i], NULL);
		prompt_fd = -1;
	}
	dprintf(fd, "\n");
	close(fd);
	out = g_strdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return out;
}

/*
 * etcd's user: --user NAME[:PASSWORD] (or ETCDCTL_USER), the password
 * from --password, --password-file, ETCDCTL_PASSWORD, or the terminal;
 * or --credentials FILE holding NAME:PASSWORD, for fstab. Returns the
 * number of mistakes.
 */
static int auth_resolve(const struct ef_opts *o, struct ef_settings *s)
{
	/* A flag wins over the environment, as with etcdctl. */
	char *spec = g_strdup(o->user ? o->user : o->credentials ? NULL : env_user);
	char *pw = NULL, *colon;
	int n = 0;

	if (o->credentials) {
		char *line = first_line("credentials file", o->credentials);

		if (!line || o->user || !strchr(line, ':')) {
			if (line)
				n += bad(o->user ? "--credentials and --user both name the user"
						 : "credentials file %s: its first line must be "
						   "NAME:PASSWORD", o->credentials);
			wipe_free(line);
			wipe_free(spec);
			return n ? n : 1;
		}
		spec = line;
	}
	if (o->password_file && !(pw = first_line("password file", o->password_file))) {
		wipe_free(spec);
		return n + 1;
	}
	if (!pw && o->password)
		pw = g_strdup(o->password);
	if (!spec) {
		if (pw)
			n += bad("a password without a user (--user)");
		wipe_free(pw);
		return n;
	}
	if ((colon = strchr(spec, ':'))) {
		if (pw)
			n += bad("the password is given twice (NAME:PASSWORD and another way)");
		else
			pw = g_strdup(colon + 1);
		explicit_bzero(colon, strlen(colon));
	}
	if (!pw && env_password)
		pw = g_strdup(env_password);
	if (!*spec)
		n += bad("--user needs a name");
	else if (!pw && !(pw = ask_password(spec)))
		n += bad("no password for user %s (give --password-file, --credentials or "
			 "ETCDCTL_PASSWORD, or run on a terminal)", spec);
	if (n == 0)
		s->auth = auth_new(spec, pw);
	wipe_free(pw);
	wipe_free(spec);
	return n;
}

/* Checks every option and resolves what they leave open. Returns the
 * number of mistakes, each told in one line. */
static int settings_resolve(struct ef_opts *o, struct ef_settings *s)
{
	const char *eps = o->endpoints;
	int n = 0, ms;

	if (o->n_positional == 2) {
		if (eps)
			n += bad("endpoints given twice");
		eps = o->positional[0];
	}
	if (!eps)
		eps = g_getenv("ETCDCTL_ENDPOINTS");
	s->endpoints = options_split_endpoints(eps ? eps : DEFAULT_ENDPOINT);
	if (!s->endpoints)
		n += bad("no endpoint given");
	/* etcdctl's spelling: l(inearizable) or s(erializable). */
	if (o->consistency) {
		if (strcmp(o->consistency, "s") != 0 && strcmp(o->consistency, "l") != 0)
			n += bad("--consistency takes l or s");
		else
			o->serializable = o->consistency[0] == 's';
	}
	if (o->strict_reads && o->serializable)
		n += bad("--strict-reads needs linearizable reads, not --serializable");
	if (o->revision) {
		char *end;

		s->revision = g_ascii_strtoll(o->revision, &end, 10);
		if (*end || s->revision <= 0 || s->revision == G_MAXINT64)
			n += bad("--revision takes a revision number (etcdctl get -w json shows them)");
		else if (o->strict_reads)
			n += bad("--revision shows the past: --strict-reads has nothing to check");
	}
	s->shared = o->shared;
	if (options_parse_size(o->cache_size ? o->cache_size : DEFAULT_CACHE, &s->cache_size) < 0)
		n += bad("bad --cache-size (use e.g. 64M, 512K, 1G)");
	if (options_parse_size(o->backend_quota ? o->backend_quota : DEFAULT_QUOTA, &s->quota) < 0 ||
	    s->quota == 0)
		n += bad("bad --backend-quota (use e.g. 2G, 8G)");
	s->lock_prefix = o->lock_prefix ? o->lock_prefix : DEFAULT_LOCK_PREFIX;
	s->lock_ttl = LOCK_TTL_DEFAULT;
	/* etcd leases count whole seconds. */
	if (o->lock_ttl && options_parse_duration(o->lock_ttl, &ms) < 0)
		n += bad("bad --lock-ttl (use e.g. 60s, 2m)");
	else if (o->lock_ttl)
		s->lock_ttl = (ms + 999) / 1000;
	if (options_parse_duration(o->dial_timeout ? o->dial_timeout : DEFAULT_DIAL, &s->dial_ms) < 0)
		n += bad("bad --dial-timeout (use e.g. 2s, 500ms, 1m)");
	if (options_parse_duration(o->command_timeout ? o->command_timeout : DEFAULT_COMMAND,
				   &s->command_ms) < 0)
		n += bad("bad --command-timeout (use e.g. 5s, 500ms, 1m)");
	n += tls_resolve(o, s);
	if (n == 0)
		n += auth_resolve(o, s);
	s->h2.auth = s->auth;
	s->h2.endpoints = (const char *const *)s->endpoints;
	s->h2.dial_timeout_ms = s->dial_ms;
	return n;
}

/* Returns 0 once an endpoint has answered, else -1 after one line. */
/* Logs in (the token is kept for the mount). 0, or -1 after one line. */
static int check_login(struct ef_h2 *h, const struct ef_settings *s)
{
	struct ef_etcd *e = etcd_new(h, s->command_ms, false);
	int rc;

	etcd_set_auth(e, s->auth);
	rc = etcd_auth_renew(e, etcd_auth_generation(e));
	etcd_free(e);
	if (rc == -EACCES)
		g_printerr("etcdfs: authentication failed for user %s: wrong name or password\n",
			   auth_user(s->auth));
	else if (rc == -EOPNOTSUPP)
		g_printerr("etcdfs: a user is given, but etcd's authentication is not enabled\n");
	else if (rc < 0)
		g_printerr("etcdfs: cannot log in as %s: %s\n", auth_user(s->auth),
			   g_strerror(-rc));
	return rc < 0 ? -1 : 0;
}

/* A past revision to show must be one etcd still has: not compacted, not
 * in the future. 0, or -1 after one line. */
static int check_revision(struct ef_h2 *h, const struct ef_settings *s, GBytes *root)
{
	struct ef_etcd *e = etcd_new(h, s->command_ms, false);
	g_autoptr(GBytes) any = g_bytes_get_size(root) ? g_bytes_ref(root) : g_bytes_new("", 1);
	struct ef_header now = { 0 };
	struct ef_kv *kv = NULL;
	int rc;

	etcd_set_auth(e, s->auth);
	rc = etcd_header(e, &now);
	if (rc == 0 && s->revision > now.revision) {
		g_printerr("etcdfs: revision %" G_GINT64_FORMAT " is in the future: etcd is at %"
			   G_GINT64_FORMAT "\n", s->revision, now.revision);
		rc = -ERANGE;
	} else if (rc == 0) {
		etcd_set_revision(e, s->revision);
		rc = etcd_get(e, any, &kv);
		ef_kv_free(kv);
		/* etcd's OUT_OF_RANGE: "required revision has been compacted". */
		if (rc == -EIO)
			g_printerr("etcdfs: revision %" G_GINT64_FORMAT " has been compacted: etcd keeps "
				   "only later ones (up to %" G_GINT64_FORMAT ")\n", s->revision,
				   now.revision);
		else if (rc < 0)
			g_printerr("etcdfs: cannot read at revision %" G_GINT64_FORMAT ": %s\n",
				   s->revision, g_strerror(-rc));
	} else {
		g_printerr("etcdfs: cannot read etcd's revision: %s\n", g_strerror(-rc));
	}
	etcd_free(e);
	return rc < 0 ? -1 : 0;
}

/* Returns 0 once an endpoint has answered (and taken the credentials),
 * else -1 after one line. */
static int check_reachable(const struct ef_settings *s, GBytes *root)
{
	g_autoptr(GError) err = NULL;
	struct ef_h2 *h = h2_new(&s->h2, &err);
	int rc = 0;

	if (!h || !h2_connect(h, &err)) {
		g_printerr("etcdfs: %s\n", err ? err->message : "cannot connect");
		rc = -1;
	} else if (s->auth) {
		rc = check_login(h, s);
	}
	if (rc == 0 && h && s->revision)
		rc = check_revision(h, s, root);
	if (h)
		h2_free(h);
	return rc;
}

/* source: the ENDPOINTS argument, or NULL when the endpoints came from an
 * option or the environment. */
static void add_default_opts(struct fuse_args *args, const struct ef_settings *s,
			     const char *prefix, const char *source)
{
	/* mount -a tells a mounted fstab line by its first field, compared
	 * with the mount's source: the argument shown as given keeps a second
	 * mount -a from mounting it again on top. */
	g_autofree char *fsname = source ? g_strdup_printf("-ofsname=%s", source)
		: g_strdup_printf("-ofsname=etcd:%s%s", s->endpoints[0], prefix);
	g_autofree char *esc = NULL;
	GString *e = g_string_new(NULL);

	/* fuse_opt splits on commas: escape them in the name. */
	for (const char *p = fsname; *p; p++) {
		if (*p == ',' || *p == '\\')
			g_string_append_c(e, '\\');
		g_string_append_c(e, *p);
	}
	esc = g_string_free(e, FALSE);
	fuse_opt_add_arg(args, esc);
	fuse_opt_add_arg(args, "-osubtype=etcdfs");
	/* The past cannot change: the kernel refuses every change (EROFS). */
	if (s->revision)
		fuse_opt_add_arg(args, "-oro");
	/* etcd keeps no permissions. Others may reach the mount only with
	 * allow_other (or root with allow_root): then the kernel checks the
	 * ones we show. Without, only the mounting user can, and owns all:
	 * no check is needed, and none is made, which spares a GETATTR of
	 * the directory and one of the new file per create (with the check,
	 * the kernel refreshes attributes a create has invalidated). */
	if (s->shared)
		fuse_opt_add_arg(args, "-odefault_permissions");
}

static int serve(struct fuse_session *se, struct ef_fs *fs, const struct fuse_cmdline_opts *co,
		 const struct ef_settings *s, const struct ef_opts *o)
{
	g_autoptr(GError) err = NULL;
	struct ef_h2 *h = h2_new(&s->h2, &err);
	struct ef_etcd *etcd;
	struct ef_locks *locks;
	struct ef_sessions *sessions;
	struct fuse_loop_config *lc;
	int rc;

	if (!h) {
		fprintf(stderr, "etcdfs: %s\n", err->message);
		return 1;
	}
	clusterfs_configure(&(struct ef_clusterfs_config){
		.h2 = &s->h2, .command_ms = s->command_ms, .quota_bytes = s->quota });
	etcd = etcd_new(h, s->command_ms, o->serializable);
	etcd_set_auth(etcd, s->auth);
	if (o->pin_endpoints)
		etcd_pin_endpoints(etcd);
	etcd_set_revision(etcd, s->revision);
	if (!s->revision)
		etcd_set_doubt_hook(etcd, watch_doubt, NULL);
	locks = locks_new(etcd, s->lock_prefix, s->lock_ttl);
	sessions = sessions_new(etcd);
	fs_set_etcd(fs, etcd, locks, sessions);
	if (s->revision) {
		watch_start_frozen(fs->root);
	} else {
		watchfile_start(etcd);
		watch_start(etcd, fs->root, se);
	}
	if (co->singlethread) {
		rc = fuse_session_loop(se);
	} else {
		lc = fuse_loop_cfg_create();
		fuse_loop_cfg_set_clone_fd(lc, co->clone_fd);
		/* Each worker blocks on its own etcd call, so concurrency
		 * needs threads: 16 writers must not queue behind 10. */
		fuse_loop_cfg_set_max_threads(lc, co->max_threads > 64 && co->max_threads <= 100000
						  ? co->max_threads : 64);
		if (co->max_idle_threads != UINT_MAX)
			fuse_loop_cfg_set_idle_threads(lc, co->max_idle_threads);
		rc = fuse_session_loop_mt(se, lc);
		fuse_loop_cfg_destroy(lc);
	}
	/* libfuse returns the signal that ended the loop: a stop asked for
	 * (systemd's SIGTERM, ^C, SIGHUP) is a clean end, as an unmount is. */
	if (rc == SIGTERM || rc == SIGINT || rc == SIGHUP)
		rc = 0;
	/* Parked lock requests are answered while the session exists. */
	locks_free(locks);
	watchfile_stop();
	watch_stop();
	fs_set_etcd(fs, NULL, NULL, NULL);
	sessions_free(sessions);
	etcd_free(etcd);
	h2_free(h);
	return rc == 0 ? 0 : 1;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct ef_opts o = { 0 };
	struct ef_settings s = { 0 };
	struct fuse_cmdline_opts co = { 0 };
	struct fuse_session *se = NULL;
	struct ef_fs *fs;
	g_autoptr(GBytes) root = NULL;
	g_autofree char *prefix = NULL;
	int ret = 1;

	/* Each of up to 64 worker threads would get a malloc arena of its
	 * own; a couple serve them as well and keep the daemon small. */
	mallopt(M_ARENA_MAX, 2);
	if (fuse_opt_parse(&args, &o, ef_opt_spec, opt_proc) == -1)
		goto out_opts;
	hide_secrets(argc, argv);
	if (o.n_positional >= 1)
		fuse_opt_add_arg(&args, o.positional[o.n_positional - 1]);
	if (fuse_parse_cmdline(&args, &co) != 0)
		goto out_opts;
	if (co.show_help) {
		usage(argv[0]);
		ret = 0;
		goto out_cmdline;
	}
	if (co.show_version) {
		printf("etcdfs %s\nFUSE library version %s\n", PACKAGE_VERSION, fuse_pkgversion());
		/* It runs fusermount3, whose line must come after ours. */
		fflush(stdout);
		fuse_lowlevel_version();
		printf("%s, protobuf-c %s, GLib %u.%u.%u\n", h2_library_versions(),
		       etcd_library_version(), glib_major_version, glib_minor_version,
		       glib_micro_version);
		ret = 0;
		goto out_cmdline;
	}
	if (!co.mountpoint || o.n_positional > 2) {
		g_printerr("etcdfs: usage: %s [ENDPOINTS] MOUNTPOINT [options] (see --help)\n",
			   argv[0]);
		goto out_cmdline;
	}
	if (co.debug)
		g_setenv("G_MESSAGES_DEBUG", "all", TRUE);
	if (settings_resolve(&o, &s) > 0)
		goto out_cmdline;
	if (s.h2.tls.skip_verify)
		g_printerr("etcdfs: warning: the server's certificate is not verified "
			   "(--insecure-skip-tls-verify)\n");

	prefix = keymap_root_prefix(o.prefix ? o.prefix : "/");
	root = g_bytes_new(prefix, strlen(prefix));
	add_default_opts(&args, &s, prefix, o.n_positional == 2 ? o.positional[0] : NULL);
	revclock_init();
	cache_init(s.cache_size);
	fs = fs_new(&(struct ef_fs_config){
		.root = root,
		.uid = o.uid_set ? o.uid : getuid(),
		.gid = o.gid_set ? o.gid : getgid(),
		.umask = o.umask_set ? (o.umask & 0777) : 022,
		.strict = o.strict_reads,
		.revision = s.revision,
	});
	/* Before connecting: libfuse refuses options it does not know here,
	 * and a typo must not be reported as an unreachable etcd. */
	se = fuse_session_new(&args, watchfile_ops(clusterfs_ops()), sizeof(struct fuse_lowlevel_ops), fs);
	if (!se)
		goto out_fs;
	if (check_reachable(&s, root) < 0)
		goto out_session;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	if (fuse_session_mount(se, co.mountpoint) != 0)
		goto out_signals;
	if (fuse_daemonize(co.foreground) != 0)
		goto out_unmount;
	if (!co.foreground)
		log_to_syslog();
	ret = serve(se, fs, &co, &s, &o);

out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_fs:
	fs_free(fs);
	cache_fini();
	revclock_fini();
out_cmdline:
	free(co.mountpoint);
	g_strfreev(s.endpoints);
	for (int i = 0; i < 3; i++)
		g_free(s.files[i]);
out_opts:
	opts_clear(&o);
	fuse_opt_free_args(&args);
	auth_free(s.auth);
	wipe_free(env_password);
	wipe_free(env_user);
	return ret;
}
