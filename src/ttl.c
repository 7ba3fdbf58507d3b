/*
 * ttl — user.etcd.ttl: a file's lease (see ttl.h).
 *
 * Each set grants a new lease rather than refreshing the key's current
 * one: a lease may be shared with keys this mount knows nothing of, and
 * keeping it alive would keep those alive too. The lease the key leaves
 * lapses on its own.
 */
#include "ttl.h"

#include <errno.h>
#include <string.h>
#include <glib.h>

#include "etcd.h"
#include "fs.h"
#include "inode.h"
#include "options.h"

/* Tries of the guarded Put when other clients keep changing the key. */
#define TTL_TRIES 3

int ttl_parse(const char *value, size_t len, int64_t *seconds)
{
	g_autofree char *s = g_strndup(value, len);
	char *end;
	int ms;

	g_strstrip(s);
	errno = 0;
	*seconds = g_ascii_strtoll(s, &end, 10);
	if (*s && !*end && !errno && *seconds >= 0 && *seconds <= TTL_MAX)
		return 0;
	/* etcd counts whole seconds: round a duration up. */
	if (options_parse_duration(s, &ms) < 0)
		return -EINVAL;
	*seconds = (ms + 999) / 1000;
	return 0;
}

int ttl_set(struct ef_fs *fs, struct ef_inode *in, int64_t seconds)
{
	int64_t lease = 0, granted;
	int rc = 0;

	if (seconds > 0)
		rc = etcd_lease_grant(fs->etcd, seconds, &lease, &granted);
	if (rc == 0)
		rc = ttl_put_on(fs, in, lease);
	/* Nothing holds the new lease: let it go now, not at its end. */
	if (rc < 0 && lease)
		etcd_lease_revoke(fs->etcd, lease);
	return rc;
}

int ttl_put_on(struct ef_fs *fs, struct ef_inode *in, int64_t lease)
{
	g_autoptr(GBytes) key = inode_key(in);
	int64_t mod;
	int rc = 0;

	for (int i = 0; i < TTL_TRIES; i++) {
		struct ef_kv *kv = NULL;
		gsize len;
		const void *val;

		rc = etcd_get(fs->etcd, key, &kv);
		if (rc == 0 && !kv)
			rc = -ENOENT;
		if (rc < 0)
			break;
		val = g_bytes_get_data(kv->value, &len);
		rc = etcd_put(fs->etcd, key, val, len, lease, kv->mod_revision, NULL, &mod);
		ef_kv_free(kv);
		if (rc != -ESTALE)
			break;
	}
	if (rc < 0)
		return rc;
	g_mutex_lock(&in->lock);
	/* A writer's Put at close keeps the lease it read at open. */
	in->lease = lease;
	g_mutex_unlock(&in->lock);
	return fs_file_refresh(fs, in);
}

int ttl_get(struct ef_fs *fs, struct ef_inode *in, int64_t *left)
{
	int64_t lease = 0, granted;
	int rc = fs_file_refresh(fs, in);

	if (rc < 0)
		return rc;
	g_mutex_lock(&in->lock);
	if (in->kv)
		lease = in->kv->lease;
	g_mutex_unlock(&in->lock);
	if (!lease)
		return -ENODATA;
	rc = etcd_lease_ttl(fs->etcd, lease, left, &granted);
	/* Expired: the key goes with it, in a moment. */
	if (rc == 0 && *left < 0)
		*left = 0;
	return rc;
}
