/*
 * fsbench — the file-system side of bench/run: the same loops run on an
 * etcdfs mount and on its baseline (tmpfs), so the two can be divided.
 *
 *   fsbench stat ROUND_MS ROUNDS DIR...   hot stat of DIR/hot-stat
 *   fsbench read ROUND_MS ROUNDS DIR...   hot open+read(1 KiB)+close of DIR/hot-1k
 *   fsbench readn FILE N                  N open+read+close of FILE, untimed
 *   fsbench check DIR                     writes and locks still right after that
 *   fsbench create DIR N                  create+write(100 B)+close, sequential
 *   fsbench pwrite DIR THREADS N          the same from THREADS threads
 *   fsbench list DIR                      opendir+readdir of every entry+closedir
 *   fsbench readall DIR                   list DIR, then read each file once
 *   fsbench mkfiles DIR N VLEN            N files of VLEN bytes, named as rawclient fill
 *   fsbench walk DIR THREADS              read every file under DIR
 *   fsbench flock FILE N                  uncontended flock LOCK_EX + LOCK_UN
 *   fsbench handover FILE_A FILE_B N PARK_MS   a lock handed between two mounts
 *   fsbench parked ROUND_MS ROUNDS HOLD_FILE WAIT_FILE WAITERS DAEMON_PID DIR
 *                                         hot reads beside parked flock waiters
 *
 * Results go to stdout as bare numbers (documented per command) for bench/run
 * to parse; anything unexpected — a failed call, short read, wrong bytes —
 * is printed on stderr and exits 1, so a dying mount fails the run instead of
 * producing a fast-looking figure.
 *
 * The hot loops are timed in rounds of ROUND_MS rather than a fixed count, so
 * one binary serves a 0.5 us tmpfs stat and a 500 us round trip to etcd
 * alike. Rounds alternate between the DIRs (tmpfs, etcdfs, tmpfs, ...) so
 * that noise from the rest of the machine falls on both sides; the figure is
 * each DIR's median round, after one warm-up round per DIR.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define HOT_STAT_NAME "hot-stat"
#define HOT_STAT_LEN 100
#define HOT_READ_NAME "hot-1k"
#define HOT_READ_LEN 1024
#define CREATE_LEN 100
#define MAX_DIRS 8
/* Operations between clock reads in a timed round: small enough not to
 * overshoot a round much on a slow mount, large enough that reading the
 * clock stays invisible next to a 0.5 us stat. */
#define BATCH 16

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noreturn, format(printf, 1, 2)))
static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("fsbench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static char *path_join(const char *dir, const char *name)
{
	char *p;

	if (asprintf(&p, "%s/%s", dir, name) < 0)
		die("out of memory");
	return p;
}

static void fill_pattern(char *buf, size_t len, char base)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)(base + i % 26);
	if (len)
		buf[len - 1] = '\n';
}

/* Creates or replaces path with len bytes; a failed close is a failed write
 * (etcdfs publishes on close). Returns 0 or -errno. */
static int write_file(const char *path, const char *data, size_t len, int extra_flags)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | extra_flags, 0644);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, data, len);
	if (n < 0 || (size_t)n != len) {
		int e = n < 0 ? errno : EIO;

		close(fd);
		return -e;
	}
	return close(fd) < 0 ? -errno : 0;
}

/* Reads the whole of path into buf (at most size bytes). Returns the length
 * or -errno. */
static ssize_t read_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY);
	ssize_t n = 0, got = 0;

	if (fd < 0)
		return -errno;
	while ((size_t)got < size && (n = read(fd, buf + got, size - got)) > 0)
		got += n;
	if (n < 0)
		got = -errno;
	close(fd);
	return got;
}

/* ---- hot loops ---- */

struct hot {
	char *path;
	char want[HOT_READ_LEN];
	size_t len;
	double samples[64];       /* us per op, one per measured round */
	int n;
};

static int op_stat(struct hot *h)
{
	struct stat st;

	if (stat(h->path, &st) < 0)
		return -errno;
	return (size_t)st.st_size == h->len ? 0 : -EIO;
}

static int op_read(struct hot *h)
{
	char buf[HOT_READ_LEN + 1];
	int fd = open(h->path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -errno;
	/* One read() of more than the file holds, as cat does: one call, and
	 * a file that grew would show. */
	n = read(fd, buf, sizeof(buf));
	if (n < 0)
		n = -errno;
	if (close(fd) < 0 && n >= 0)
		n = -errno;
	if (n < 0)
		return (int)n;
	return (size_t)n == h->len && memcmp(buf, h->want, h->len) == 0 ? 0 : -EIO;
}

/* One timed round: microseconds per operation. */
static double hot_round(struct hot *h, int (*op)(struct hot *), double round_s)
{
	double t0 = now_s(), t;
	long ops = 0;

	do {
		for (int k = 0; k < BATCH; k++) {
			int rc = op(h);

			if (rc < 0)
				die("%s: %s", h->path, rc == -EIO ? "wrong size or bytes" : strerror(-rc));
		}
		ops += BATCH;
		t = now_s() - t0;
	} while (t < round_s);
	return t * 1e6 / ops;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Writes the hot file of dir (hot-1k for reads, hot-stat for stats). */
static void hot_init(struct hot *h, const char *dir, bool is_read)
{
	int rc;

	h->path = path_join(dir, is_read ? HOT_READ_NAME : HOT_STAT_NAME);
	h->len = is_read ? HOT_READ_LEN : HOT_STAT_LEN;
	h->n = 0;
	fill_pattern(h->want, h->len, 'a');
	rc = write_file(h->path, h->want, h->len, 0);
	if (rc < 0)
		die("%s: %s", h->path, strerror(-rc));
}

/* stat|read ROUND_MS ROUNDS DIR...: one line per DIR, in order: the median
 * microseconds per operation. Rounds are also listed on stderr. */
static int cmd_hot(bool is_read, int argc, char **argv)
{
	int (*op)(struct hot *) = is_read ? op_read : op_stat;
	struct hot hots[MAX_DIRS];
	double round_s;
	int rounds, ndirs = argc - 2;

	if (argc < 3 || ndirs > MAX_DIRS)
		die("usage: fsbench stat|read ROUND_MS ROUNDS DIR...");
	round_s = atof(argv[0]) / 1e3;
	rounds = atoi(argv[1]);
	if (round_s <= 0 || rounds < 1 || rounds > 64)
		die("bad ROUND_MS or ROUNDS");
	for (int d = 0; d < ndirs; d++)
		hot_init(&hots[d], argv[2 + d], is_read);
	/* Round 0 warms every cache on the way (and is thrown away). */
	for (int r = 0; r <= rounds; r++)
		for (int d = 0; d < ndirs; d++) {
			double us = hot_round(&hots[d], op, round_s);

			if (r > 0)
				hots[d].samples[hots[d].n++] = us;
		}
	for (int d = 0; d < ndirs; d++) {
		struct hot *h = &hots[d];

		fprintf(stderr, "fsbench %s %s:", is_read ? "read" : "stat", h->path);
		for (int i = 0; i < h->n; i++)
			fprintf(stderr, " %.2f", h->samples[i]);
		fputs(" us\n", stderr);
		qsort(h->samples, h->n, sizeof(double), cmp_double);
		printf("%.3f\n", h->samples[h->n / 2]);
		free(h->path);
	}
	return 0;
}

/* readn FILE N: N times open, one read, close, as the hot read loop does,
 * untimed: bench/run counts the FUSE requests this makes. Prints the length
 * read; every read must return the same one. */
static int cmd_readn(const char *path, long n)
{
	char buf[HOT_READ_LEN + 1];
	ssize_t first = -1;

	for (long i = 0; i < n; i++) {
		int fd = open(path, O_RDONLY);
		ssize_t got;

		if (fd < 0)
			die("%s: %s", path, strerror(errno));
		got = read(fd, buf, sizeof(buf));
		if (got < 0)
			die("%s: read: %s", path, strerror(errno));
		if (close(fd) < 0)
			die("%s: close: %s", path, strerror(errno));
		if (first < 0)
			first = got;
		else if (got != first)
			die("%s: read %zd bytes, then %zd", path, first, got);
	}
	printf("%zd\n", first);
	return 0;
}

/* ---- correctness after the hot loops ---- */

enum lock_kind { LOCK_POSIX, LOCK_FLOCK };

static int take_lock(int fd, enum lock_kind kind)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };

	if (kind == LOCK_POSIX)
		return fcntl(fd, F_SETLK, &fl);
	return flock(fd, LOCK_EX | LOCK_NB);
}

/* In a child process (another lock owner for both lock kinds): 0 if it got
 * the lock, 1 if the lock was busy, 2 on any other failure. */
static int child_try_lock(const char *path, enum lock_kind kind)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		int fd;

		alarm(10);   /* a hung lock request must not hang the bench */
		fd = open(path, O_RDWR);
		if (fd < 0)
			_exit(2);
		if (take_lock(fd, kind) == 0)
			_exit(0);
		_exit(errno == EAGAIN || errno == EACCES || errno == EWOULDBLOCK ? 1 : 2);
	}
	if (waitpid(pid, &status, 0) < 0)
		die("waitpid: %s", strerror(errno));
	return WIFEXITED(status) ? WEXITSTATUS(status) : 2;
}

/* Held by us, busy for another process; released by close() alone. */
static void check_lock(const char *path, enum lock_kind kind)
{
	const char *name = kind == LOCK_POSIX ? "fcntl F_SETLK" : "flock";
	int fd = open(path, O_RDWR), r;

	if (fd < 0 || take_lock(fd, kind) < 0)
		die("%s: %s: %s", path, name, strerror(errno));
	r = child_try_lock(path, kind);
	if (r != 1)
		die("%s: %s: another process %s while we held the lock", path, name,
		    r == 0 ? "got it too" : "failed oddly");
	if (close(fd) < 0)
		die("%s: close: %s", path, strerror(errno));
	r = child_try_lock(path, kind);
	if (r != 0)
		die("%s: %s: the lock %s after close", path, name,
		    r == 1 ? "was still held" : "could not be taken");
}

/* check DIR: after `read` ran on DIR, a write through DIR must be what every
 * following read sees, and locks must still work and be dropped on close.
 * Prints "ok". The written bytes (pattern from 'A') let bench/run compare
 * etcd's copy with tmpfs's. */
static int cmd_check(const char *dir)
{
	char *path = path_join(dir, HOT_READ_NAME);
	char want[HOT_READ_LEN], got[HOT_READ_LEN + 1];
	struct stat st;
	int rc;

	fill_pattern(want, sizeof(want), 'A');
	rc = write_file(path, want, sizeof(want), 0);
	if (rc < 0)
		die("%s: write: %s", path, strerror(-rc));
	for (int i = 0; i < 100; i++) {
		ssize_t n = read_file(path, got, sizeof(got));

		if (n < 0)
			die("%s: read after write: %s", path, strerror((int)-n));
		if ((size_t)n != sizeof(want) || memcmp(got, want, sizeof(want)) != 0)
			die("%s: read %d after a write returned the old or wrong bytes", path, i);
	}
	if (stat(path, &st) < 0 || st.st_size != HOT_READ_LEN)
		die("%s: stat after write: wrong size or %s", path, strerror(errno));
	check_lock(path, LOCK_POSIX);
	check_lock(path, LOCK_FLOCK);
	free(path);
	puts("ok");
	return 0;
}

/* ---- writes ---- */

/* create DIR N: the mean microseconds per create+write(100 B)+close of a new
 * file. One warm-up file first: the first create in a fresh directory pays
 * for looking the directory up. */
static int cmd_create(const char *dir, long n)
{
	char data[CREATE_LEN], name[64];
	char *path;
	double t0;
	int rc;

	memset(data, 'c', sizeof(data));
	path = path_join(dir, "warm");
	rc = write_file(path, data, sizeof(data), O_EXCL);
	if (rc < 0)
		die("%s: %s", path, strerror(-rc));
	free(path);
	t0 = now_s();
	for (long i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "f%06ld", i);
		path = path_join(dir, name);
		rc = write_file(path, data, sizeof(data), O_EXCL);
		if (rc < 0)
			die("%s: %s", path, strerror(-rc));
		free(path);
	}
	printf("%.2f\n", (now_s() - t0) * 1e6 / n);
	return 0;
}

struct pw_job {
	pthread_t th;
	const char *dir;
	int tid;
	long count;
	pthread_barrier_t *gate;
};

static void *pw_thread(void *arg)
{
	struct pw_job *j = arg;
	char data[CREATE_LEN], name[64];

	memset(data, 'w', sizeof(data));
	pthread_barrier_wait(j->gate);
	for (long i = 0; i < j->count; i++) {
		char *path;
		int rc;

		snprintf(name, sizeof(name), "t%02d-%06ld", j->tid, i);
		path = path_join(j->dir, name);
		rc = write_file(path, data, sizeof(data), O_EXCL);
		if (rc < 0)
			die("%s: %s", path, strerror(-rc));
		free(path);
	}
	return NULL;
}

/* pwrite DIR THREADS N: files per second, N files written by THREADS threads
 * (distinct names), timed from the start gate to the last close. */
static int cmd_pwrite(const char *dir, int nthreads, long n)
{
	struct pw_job *jobs = calloc(nthreads, sizeof(*jobs));
	pthread_barrier_t gate;
	char data[CREATE_LEN];
	char *path;
	double t0;
	int rc;

	if (!jobs)
		die("out of memory");
	memset(data, 'w', sizeof(data));
	path = path_join(dir, "warm");
	rc = write_file(path, data, sizeof(data), O_EXCL);
	if (rc < 0)
		die("%s: %s", path, strerror(-rc));
	free(path);
	pthread_barrier_init(&gate, NULL, nthreads + 1);
	for (int t = 0; t < nthreads; t++) {
		jobs[t] = (struct pw_job){ .dir = dir, .tid = t, .gate = &gate,
					   .count = n / nthreads + (t < n % nthreads ? 1 : 0) };
		if (pthread_create(&jobs[t].th, NULL, pw_thread, &jobs[t]) != 0)
			die("pthread_create failed");
	}
	pthread_barrier_wait(&gate);
	t0 = now_s();
	for (int t = 0; t < nthreads; t++)
		pthread_join(jobs[t].th, NULL);
	printf("%.1f\n", n / (now_s() - t0));
	pthread_barrier_destroy(&gate);
	free(jobs);
	return 0;
}

/* ---- listings ---- */

/* list DIR: "milliseconds entries" for opendir, readdir to the end (. and ..
 * not counted) and closedir: what `ls -f` or `find -maxdepth 1` costs. */
static int cmd_list(const char *dir)
{
	double t0 = now_s();
	DIR *d = opendir(dir);
	struct dirent *e;
	long n = 0;

	if (!d)
		die("%s: %s", dir, strerror(errno));
	errno = 0;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	if (errno)
		die("%s: readdir: %s", dir, strerror(errno));
	closedir(d);
	printf("%.3f %ld\n", (now_s() - t0) * 1e3, n);
	return 0;
}

/* readall DIR: "milliseconds files bytes" for reading every file of DIR once:
 * opendir, readdir to the end, closedir, then open+read to EOF+close of each
 * entry in the order readdir gave them, as grep -r does. The entries must all
 * be regular files (a directory would fail its read with EISDIR). */
static int cmd_readall(const char *dir)
{
	static char buf[1 << 16];
	double t0 = now_s();
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0;
	long long bytes = 0;

	if (!d)
		die("%s: %s", dir, strerror(errno));
	errno = 0;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN)
			die("%s/%s: not a regular file (d_type %d)", dir, e->d_name, e->d_type);
		if (n == cap) {
			cap = cap ? cap * 2 : 1024;
			names = realloc(names, cap * sizeof(*names));
			if (!names)
				die("out of memory");
		}
		names[n] = path_join(dir, e->d_name);
		n++;
		errno = 0;
	}
	if (errno)
		die("%s: readdir: %s", dir, strerror(errno));
	closedir(d);
	for (size_t i = 0; i < n; i++) {
		ssize_t got = read_file(names[i], buf, sizeof(buf));

		if (got < 0)
			die("%s: %s", names[i], strerror((int)-got));
		bytes += got;
	}
	printf("%.3f %zu %lld\n", (now_s() - t0) * 1e3, n, bytes);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return 0;
}

/* mkfiles DIR N VLEN: the tree `rawclient fill PREFIX N 0 VLEN` puts in
 * etcd (files f000000.. of VLEN bytes 'p'), as files in DIR, for the tmpfs
 * side of readall. Prints "ok". */
static int cmd_mkfiles(const char *dir, long n, long vlen)
{
	char *data = malloc(vlen ? vlen : 1), name[64];

	if (!data)
		die("out of memory");
	memset(data, 'p', vlen);
	for (long i = 0; i < n; i++) {
		char *path;
		int rc;

		snprintf(name, sizeof(name), "f%06ld", i);
		path = path_join(dir, name);
		rc = write_file(path, data, vlen, 0);
		if (rc < 0)
			die("%s: %s", path, strerror(-rc));
		free(path);
	}
	free(data);
	puts("ok");
	return 0;
}

/* A walk shares a stack of directories still to list among its threads. */
struct walk {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char **stack;             /* protected by lock */
	size_t depth, cap;        /* protected by lock */
	int busy;                 /* threads listing a directory; protected by lock */
};

struct walk_count {
	pthread_t th;
	struct walk *w;
	long files, dirs;
	long long bytes;
	char buf[1 << 16];        /* file contents land here and are dropped */
};

/* Takes ownership of dir. */
static void walk_push(struct walk *w, char *dir)
{
	if (!dir)
		die("out of memory");
	pthread_mutex_lock(&w->lock);
	if (w->depth == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 64;
		char **stack = realloc(w->stack, cap * sizeof(*stack));

		if (!stack)
			die("out of memory");
		w->stack = stack;
		w->cap = cap;
	}
	w->stack[w->depth++] = dir;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

/* Lists one directory: files are read, subdirectories pushed. */
static void walk_dir(struct walk_count *c, const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		die("%s: %s", dir, strerror(errno));
	c->dirs++;
	errno = 0;
	while ((e = readdir(d)) != NULL) {
		unsigned char type = e->d_type;
		char *path;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		path = path_join(dir, e->d_name);
		if (type == DT_UNKNOWN) {
			struct stat st;

			if (lstat(path, &st) < 0)
				die("%s: %s", path, strerror(errno));
			type = S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
		}
		if (type == DT_DIR) {
			walk_push(c->w, path);
		} else {
			ssize_t n = read_file(path, c->buf, sizeof(c->buf));

			if (n < 0)
				die("%s: %s", path, strerror((int)-n));
			c->files++;
			c->bytes += n;
			free(path);
		}
		errno = 0;
	}
	if (errno)
		die("%s: readdir: %s", dir, strerror(errno));
	closedir(d);
}

static void *walk_thread(void *arg)
{
	struct walk_count *c = arg;
	struct walk *w = c->w;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		char *dir;

		while (w->depth == 0 && w->busy > 0)
			pthread_cond_wait(&w->cond, &w->lock);
		if (w->depth == 0)
			break;   /* nothing queued and nobody can queue more */
		dir = w->stack[--w->depth];
		w->busy++;
		pthread_mutex_unlock(&w->lock);
		walk_dir(c, dir);
		free(dir);
		pthread_mutex_lock(&w->lock);
		if (--w->busy == 0 && w->depth == 0)
			pthread_cond_broadcast(&w->cond);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* walk DIR THREADS: "seconds files bytes dirs" for listing every directory
 * under DIR and reading every file (what `find DIR -type f -exec cat {} +`
 * does, without the processes). */
static int cmd_walk(const char *dir, int nthreads)
{
	struct walk w = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
	struct walk_count *c = calloc(nthreads, sizeof(*c));
	long files = 0, dirs = 0;
	long long bytes = 0;
	double t0 = now_s();

	if (!c)
		die("out of memory");
	walk_push(&w, strdup(dir));
	for (int t = 0; t < nthreads; t++) {
		c[t].w = &w;
		if (pthread_create(&c[t].th, NULL, walk_thread, &c[t]) != 0)
			die("pthread_create failed");
	}
	for (int t = 0; t < nthreads; t++) {
		pthread_join(c[t].th, NULL);
		files += c[t].files;
		dirs += c[t].dirs;
		bytes += c[t].bytes;
	}
	printf("%.3f %ld %lld %ld\n", now_s() - t0, files, bytes, dirs);
	free(w.stack);
	free(c);
	return 0;
}

/* ---- locks ---- */

/* flock(LOCK_EX) then LOCK_UN, n times, on one descriptor of file: an
 * uncontended lock's round trip (both are answered by etcd on a mount).
 * Prints microseconds per pair. */
static int cmd_flock(const char *file, long n)
{
	int fd = open(file, O_RDONLY | O_CREAT, 0644);
	double t0;

	if (fd < 0)
		die("%s: %s", file, strerror(errno));
	/* The mount's lease is granted at its first lock: not measured. */
	if (flock(fd, LOCK_EX) < 0 || flock(fd, LOCK_UN) < 0)
		die("flock %s: %s", file, strerror(errno));
	t0 = now_s();
	for (long i = 0; i < n; i++)
		if (flock(fd, LOCK_EX) < 0 || flock(fd, LOCK_UN) < 0)
			die("flock %s: %s", file, strerror(errno));
	printf("%.2f\n", (now_s() - t0) * 1e6 / n);
	close(fd);
	return 0;
}

/* Longest a waiter may take to block in flock, or the waiters of `parked`
 * to get the lock in turn and exit once it is let go. */
#define BLOCK_LIMIT_S 10.0
#define DRAIN_LIMIT_S 60.0
/* A round of `parked` starts this long after the last waiter was started
 * or reaped: right after starting or reaping 100 processes the same reads
 * ran 10-20% slower for a while, whether the waiters were parked in the
 * daemon or blocked on a tmpfs file's flock, and that is not the daemon's. */
#define SETTLE_MS 300

static void sleep_us(long us)
{
	struct timespec ts = { us / 1000000, us % 1000000 * 1000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Whether pid is blocked in flock(2) now: the first field of its
 * /proc/PID/syscall is the number of the call it sleeps in ("running"
 * while it runs, -1 outside any call). */
static bool in_flock(pid_t pid)
{
	char path[64], buf[128];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/syscall", (int)pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		die("%s: %s", path, strerror(errno));
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	return buf[0] >= '0' && buf[0] <= '9' && strtol(buf, NULL, 10) == SYS_flock;
}

/* Waits until pid is blocked in flock(2). A child of ours that exits
 * instead fails at once; any other pid after BLOCK_LIMIT_S. */
static void wait_in_flock(pid_t pid, bool child)
{
	double t0 = now_s();
	int status;

	while (!in_flock(pid)) {
		if (child && waitpid(pid, &status, WNOHANG) == pid)
			die("waiter %d exited (status %#x) instead of waiting for the lock", (int)pid,
			    status);
		if (now_s() - t0 > BLOCK_LIMIT_S)
			die("pid %d did not block in flock within %.0f s", (int)pid, BLOCK_LIMIT_S);
		sleep_us(50);
	}
}

/* One side of `handover`: a process with a descriptor of the file on its
 * own mount. Side 0 holds first and lets go at the even handovers. */
struct ho_side {
	int id;
	int fd;
	pid_t peer;
	int to_peer, from_peer;   /* pipes: the waiter's 'w' and 'g' (below) */
	long n;                   /* handovers in all */
	long park_ms;
	double *t_unlock;         /* shared: per handover, LOCK_UN called */
	double *t_grant;          /* shared: per handover, LOCK_EX returned */
};

static void ho_tell(struct ho_side *s, char c, long k)
{
	if (write(s->to_peer, &c, 1) != 1)
		die("handover %ld: the other side is gone", k);
}

static void ho_hear(struct ho_side *s, char want, long k)
{
	char c;

	if (read(s->from_peer, &c, 1) != 1 || c != want)
		die("handover %ld: the other side is gone", k);
}

/*
 * The waiter says 'w' just before its flock(LOCK_EX), so the holder knows
 * which flock it is blocked in, and 'g' once that has returned. The holder
 * takes the lock again only after 'g': a waiter whose daemon was slower to
 * queue it in etcd than the holder to let go and ask again would lose its
 * turn, and both would wait for each other.
 */
static void ho_run(struct ho_side *s)
{
	for (long k = 0; k < s->n; k++) {
		if (k % 2 == s->id) {
			ho_hear(s, 'w', k);
			wait_in_flock(s->peer, s->id == 0);
			sleep_us(s->park_ms * 1000);
			s->t_unlock[k] = now_s();
			if (flock(s->fd, LOCK_UN) < 0)
				die("handover %ld: LOCK_UN: %s", k, strerror(errno));
			ho_hear(s, 'g', k);
		} else {
			ho_tell(s, 'w', k);
			if (flock(s->fd, LOCK_EX) < 0)
				die("handover %ld: LOCK_EX: %s", k, strerror(errno));
			s->t_grant[k] = now_s();
			ho_tell(s, 'g', k);
		}
	}
	/* The last one to get the lock lets go, so no key is left. */
	if (s->id == s->n % 2 && flock(s->fd, LOCK_UN) < 0)
		die("LOCK_UN: %s", strerror(errno));
}

static void *shared_alloc(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	return p;
}

static double quantile(double *v, size_t n, double p)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return v[(size_t)((n - 1) * p + 0.5)];
}

/*
 * handover FILE_A FILE_B N PARK_MS: one file's lock handed over 2 N times
 * between this process, on FILE_A, and a child on FILE_B (the same file
 * through another mount), alternately one way and the other. A waiter
 * starts waiting once the handover before has completed. Before each
 * LOCK_UN it is blocked in its flock(LOCK_EX) (its /proc/PID/syscall says
 * so: the request is in its daemon's hands) and has been for PARK_MS more,
 * time for the daemon to have it queued in etcd (a millisecond or two).
 * Prints one line per handover, in order (A->B first): the microseconds
 * from the holder's LOCK_UN to the waiter's LOCK_EX returning. Two more
 * handovers come first and are not printed: a mount's first lock also
 * grants its lease.
 */
static int cmd_handover(const char *file_a, const char *file_b, long n, long park_ms)
{
	struct ho_side a = { .id = 0, .n = 2 * n + 2, .park_ms = park_ms };
	double *there = calloc(n, sizeof(double)), *back = calloc(n, sizeof(double));
	int ab[2], ba[2], status;
	pid_t parent = getpid(), pid;

	if (!there || !back)
		die("out of memory");
	a.t_unlock = shared_alloc(a.n * sizeof(double));
	a.t_grant = shared_alloc(a.n * sizeof(double));
	a.fd = open(file_a, O_RDONLY);
	if (a.fd < 0)
		die("%s: %s", file_a, strerror(errno));
	if (flock(a.fd, LOCK_EX) < 0)
		die("flock %s: %s", file_a, strerror(errno));
	if (pipe(ab) < 0 || pipe(ba) < 0)
		die("pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		struct ho_side b = a;

		/* Not left waiting for a lock nobody will hand over. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		close(a.fd);
		close(ab[1]);
		close(ba[0]);
		b.id = 1;
		b.peer = parent;
		b.to_peer = ba[1];
		b.from_peer = ab[0];
		b.fd = open(file_b, O_RDONLY);
		if (b.fd < 0)
			die("%s: %s", file_b, strerror(errno));
		ho_run(&b);
		_exit(0);
	}
	close(ab[0]);
	close(ba[1]);
	a.peer = pid;
	a.to_peer = ab[1];
	a.from_peer = ba[0];
	ho_run(&a);
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("the process on %s failed", file_b);
	close(a.fd);
	for (long k = 2; k < a.n; k++) {
		double us = (a.t_grant[k] - a.t_unlock[k]) * 1e6;

		if (us <= 0)
			die("handover %ld: the lock was granted before the holder let go", k);
		printf("%.1f\n", us);
		(k % 2 ? back : there)[k / 2 - 1] = us;
	}
	fprintf(stderr, "fsbench handover: A->B p50 %.1f p99 %.1f us, B->A p50 %.1f p99 %.1f us\n",
		quantile(there, n, 0.5), quantile(there, n, 0.99), quantile(back, n, 0.5),
		quantile(back, n, 0.99));
	free(there);
	free(back);
	return 0;
}

/* What the waiters of `parked` share with it. */
struct park_shared {
	int holders;              /* processes holding the lock: at most one */
	int turns;                /* waiters that have had the lock */
	int overlaps;             /* waiters that found another holder */
};

/* A process that waits for file's lock, then lets go of it at once and
 * exits: 0 once it has, not 0 on any failure. */
static pid_t waiter_spawn(const char *file, struct park_shared *ps)
{
	pid_t parent = getpid(), pid = fork();
	int fd;

	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid > 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	fd = open(file, O_RDONLY);
	if (fd < 0)
		_exit(2);
	if (flock(fd, LOCK_EX) < 0)
		_exit(3);
	if (__atomic_add_fetch(&ps->holders, 1, __ATOMIC_SEQ_CST) != 1)
		__atomic_add_fetch(&ps->overlaps, 1, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&ps->turns, 1, __ATOMIC_SEQ_CST);
	__atomic_sub_fetch(&ps->holders, 1, __ATOMIC_SEQ_CST);
	_exit(flock(fd, LOCK_UN) < 0 ? 3 : 0);
}

/* Whether any of the n waiters has exited (and been reaped): *status
 * says how, when one has. */
static bool waiter_exited(pid_t *pids, long n, int *status)
{
	for (long i = 0; i < n; i++)
		if (pids[i] > 0 && waitpid(pids[i], status, WNOHANG) == pids[i]) {
			pids[i] = 0;
			return true;
		}
	return false;
}

/* Reaps the n waiters, each of which must have had the lock (exit 0),
 * within DRAIN_LIMIT_S. */
static void waiters_reap(pid_t *pids, long n)
{
	double t0 = now_s();
	long left = n;
	int status;

	while (left > 0) {
		if (waiter_exited(pids, n, &status)) {
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
				die("a waiter failed (status %#x)", status);
			left--;
			continue;
		}
		/* Exiting kills the rest (PR_SET_PDEATHSIG). */
		if (now_s() - t0 > DRAIN_LIMIT_S)
			die("%ld waiters still waiting %.0f s after the lock was let go", left,
			    DRAIN_LIMIT_S);
		sleep_us(500);
	}
}

/* The Threads: line of /proc/PID/status. */
static long threads_of(pid_t pid)
{
	char path[64], line[256];
	FILE *f;
	long n = -1;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		die("%s: %s", path, strerror(errno));
	while (n < 0 && fgets(line, sizeof(line), f))
		if (sscanf(line, "Threads: %ld", &n) != 1)
			n = -1;
	fclose(f);
	if (n < 0)
		die("%s: no Threads line", path);
	return n;
}

/*
 * parked ROUND_MS ROUNDS HOLD_FILE WAIT_FILE WAITERS DAEMON_PID DIR: the hot
 * open+read+close of DIR/hot-1k (as `read`), in rounds that alternate
 * between none and WAITERS processes blocked in flock(LOCK_EX) on
 * WAIT_FILE, while this process holds the lock of HOLD_FILE (the same file
 * through another mount). Each waiter is started once the one before is
 * blocked in flock. After each round with waiters the lock is let go: all
 * of them must get it, one at a time, and exit. Prints "us_without
 * us_with threads_without threads_with drain_ms": the median microseconds
 * per read of each kind of round; the most threads DAEMON_PID (WAIT_FILE's
 * daemon) had at the end of a round of each kind; the median milliseconds
 * from letting go to the last waiter's exit. Round 0 of each kind is a
 * warm-up, left out but for the thread counts. DIR/hot-1k is rewritten
 * before each pair of rounds.
 */
static int cmd_parked(int argc, char **argv)
{
	double round_s = atof(argv[0]) / 1e3;
	int rounds = atoi(argv[1]);
	const char *hold = argv[2], *wait = argv[3];
	long nwait = atol(argv[4]);
	pid_t daemon_pid = (pid_t)atol(argv[5]);
	struct park_shared *ps = shared_alloc(sizeof(*ps));
	double without[64], with[64], drain[64];
	long thr_without = 0, thr_with = 0;
	struct hot h;
	pid_t *pids;
	int fd, nr = 0;

	if (round_s <= 0 || rounds < 1 || rounds > 64 || nwait < 1 || nwait > 10000 ||
	    daemon_pid <= 0)
		die("bad ROUND_MS, ROUNDS, WAITERS or DAEMON_PID");
	pids = calloc(nwait, sizeof(*pids));
	if (!pids)
		die("out of memory");
	hot_init(&h, argv[6], true);
	fd = open(hold, O_RDONLY);
	if (fd < 0)
		die("%s: %s", hold, strerror(errno));
	for (int r = 0; r <= rounds; r++) {
		double us0, us1, t;
		long thr;
		int status, rc;

		/* A grant holds the daemon's caches back until its watch has
		 * passed the grant's revision, which takes a change under the
		 * mount: the write is one, its event comes within the pause. */
		rc = write_file(h.path, h.want, h.len, 0);
		if (rc < 0)
			die("%s: %s", h.path, strerror(-rc));
		sleep_us(SETTLE_MS * 1000);
		us0 = hot_round(&h, op_read, round_s);
		thr = threads_of(daemon_pid);
		thr_without = thr > thr_without ? thr : thr_without;

		if (flock(fd, LOCK_EX) < 0)
			die("flock %s: %s", hold, strerror(errno));
		__atomic_store_n(&ps->holders, 1, __ATOMIC_SEQ_CST);
		for (long i = 0; i < nwait; i++) {
			pids[i] = waiter_spawn(wait, ps);
			wait_in_flock(pids[i], true);
		}
		sleep_us(SETTLE_MS * 1000);
		us1 = hot_round(&h, op_read, round_s);
		thr = threads_of(daemon_pid);
		thr_with = thr > thr_with ? thr : thr_with;
		if (__atomic_load_n(&ps->turns, __ATOMIC_SEQ_CST) != 0 ||
		    waiter_exited(pids, nwait, &status))
			die("a waiter got the lock or failed while the lock was held through %s",
			    hold);

		__atomic_store_n(&ps->holders, 0, __ATOMIC_SEQ_CST);
		t = now_s();
		if (flock(fd, LOCK_UN) < 0)
			die("flock %s: %s", hold, strerror(errno));
		waiters_reap(pids, nwait);
		t = now_s() - t;
		if (ps->turns != nwait || ps->overlaps != 0)
			die("%d of %ld waiters had the lock, %d of them not alone", ps->turns, nwait,
			    ps->overlaps);
		ps->turns = 0;
		if (r > 0) {
			without[nr] = us0;
			with[nr] = us1;
			drain[nr++] = t * 1e3;
		}
	}
	close(fd);
	fprintf(stderr, "fsbench parked %s: without", h.path);
	for (int i = 0; i < nr; i++)
		fprintf(stderr, " %.2f", without[i]);
	fputs(" us; with", stderr);
	for (int i = 0; i < nr; i++)
		fprintf(stderr, " %.2f", with[i]);
	fputs(" us\n", stderr);
	printf("%.3f %.3f %ld %ld %.1f\n", quantile(without, nr, 0.5), quantile(with, nr, 0.5),
	       thr_without, thr_with, quantile(drain, nr, 0.5));
	free(h.path);
	free(pids);
	return 0;
}

static long arg_long(const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < min || v > max)
		die("'%s' is not a number in [%ld, %ld]", s, min, max);
	return v;
}

static void usage(void)
{
	fputs("usage: fsbench stat|read ROUND_MS ROUNDS DIR...\n"
	      "       fsbench readn FILE N\n"
	      "       fsbench check DIR\n"
	      "       fsbench create DIR N\n"
	      "       fsbench pwrite DIR THREADS N\n"
	      "       fsbench list DIR\n"
	      "       fsbench readall DIR\n"
	      "       fsbench mkfiles DIR N VLEN\n"
	      "       fsbench walk DIR THREADS\n"
	      "       fsbench flock FILE N\n"
	      "       fsbench handover FILE_A FILE_B N PARK_MS\n"
	      "       fsbench parked ROUND_MS ROUNDS HOLD_FILE WAIT_FILE WAITERS DAEMON_PID DIR\n",
	      stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";
	int rc;

	/* Results must reach bench/run even if a later step dies. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (strcmp(cmd, "stat") == 0 || strcmp(cmd, "read") == 0)
		rc = cmd_hot(strcmp(cmd, "read") == 0, argc - 2, argv + 2);
	else if (strcmp(cmd, "readn") == 0 && argc == 4)
		rc = cmd_readn(argv[2], arg_long(argv[3], 1, 100000000));
	else if (strcmp(cmd, "check") == 0 && argc == 3)
		rc = cmd_check(argv[2]);
	else if (strcmp(cmd, "create") == 0 && argc == 4)
		rc = cmd_create(argv[2], arg_long(argv[3], 1, 100000000));
	else if (strcmp(cmd, "pwrite") == 0 && argc == 5)
		rc = cmd_pwrite(argv[2], (int)arg_long(argv[3], 1, 1024),
				arg_long(argv[4], 1, 100000000));
	else if (strcmp(cmd, "flock") == 0 && argc == 4)
		rc = cmd_flock(argv[2], arg_long(argv[3], 1, 10000000));
	else if (strcmp(cmd, "handover") == 0 && argc == 6)
		rc = cmd_handover(argv[2], argv[3], arg_long(argv[4], 1, 1000000),
				  arg_long(argv[5], 0, 10000));
	else if (strcmp(cmd, "parked") == 0 && argc == 9)
		rc = cmd_parked(argc - 2, argv + 2);
	else if (strcmp(cmd, "list") == 0 && argc == 3)
		rc = cmd_list(argv[2]);
	else if (strcmp(cmd, "readall") == 0 && argc == 3)
		rc = cmd_readall(argv[2]);
	else if (strcmp(cmd, "mkfiles") == 0 && argc == 5)
		rc = cmd_mkfiles(argv[2], arg_long(argv[3], 1, 10000000),
				 arg_long(argv[4], 0, 1 << 20));
	else if (strcmp(cmd, "walk") == 0 && argc == 4)
		rc = cmd_walk(argv[2], (int)arg_long(argv[3], 1, 1024));
	else
		usage();
	return rc;
}
