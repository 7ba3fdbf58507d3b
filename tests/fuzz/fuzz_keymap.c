/*
 * fuzz_keymap — keymap's bijection, asserted rather than just run:
 *  - component -> name -> component gives the bytes back, and a component
 *    gets no name only for a '/' inside or a name longer than NAME_MAX;
 *  - name -> component -> name gives the same name (only canonical names
 *    decode, so two names never reach one key);
 *  - a path under a root prefix -> key -> path, split again the way a
 *    listing splits keys, gives the same names;
 *  - prefix ends bound exactly the keys that start with the prefix;
 *  - lock names are one-to-one and print whole.
 * Input: one mode byte picks the check; the rest is its material.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <glib.h>

#include "fuzz.h"
#include "keymap.h"

static int bytes_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
	size_t n = MIN(alen, blen);
	int r = n > 0 ? memcmp(a, b, n) : 0;

	if (r != 0)
		return r;
	return alen < blen ? -1 : alen > blen;
}

static void check_component(const uint8_t *c, size_t len)
{
	g_autofree char *name = keymap_name_from_component((const char *)c, len);
	g_autofree char *back = NULL;
	size_t blen = 0;

	if (!name) {
		size_t escaped = len;

		for (size_t i = 0; i < len; i++)
			escaped += c[i] == '%' || c[i] == '\0' ? 2 : 0;
		g_assert_true(memchr(c, '/', len) || escaped > NAME_MAX);
		return;
	}
	g_assert_cmpuint(strlen(name), <=, NAME_MAX);
	g_assert_null(strchr(name, '/'));
	/* "." and ".." would be the kernel's own entries. */
	g_assert_cmpstr(name, !=, ".");
	g_assert_cmpstr(name, !=, "..");
	g_assert_cmpstr(name, !=, KEYMAP_SELF_NAME);
	g_assert_cmpint(keymap_component_from_name(name, &back, &blen), ==, 0);
	g_assert_cmpmem(back, blen, c, len);
}

static void check_name(const uint8_t *data, size_t len)
{
	g_autofree char *name = g_strndup((const char *)data, len);
	g_autofree char *c = NULL;
	g_autofree char *again = NULL;
	size_t clen = 0;
	int rc = keymap_component_from_name(name, &c, &clen);

	if (rc < 0) {
		g_assert_true(rc == -EINVAL || rc == -ENAMETOOLONG);
		return;
	}
	g_assert_null(memchr(c, '/', clen));
	again = keymap_name_from_component(c, clen);
	g_assert_nonnull(again);
	g_assert_cmpstr(again, ==, name);
}

/* Names separated by '/' (the path as the kernel walks it) under a root
 * prefix: the key they make splits back into the same names. */
static void check_path(struct fz_in *in)
{
	const uint8_t *root_opt, *path;
	size_t rlen = fz_record(in, &root_opt);
	size_t plen = fz_bytes(in, in->n, &path);
	g_autofree char *opt = g_strndup((const char *)root_opt, rlen);
	g_autofree char *root = keymap_root_prefix(opt);
	g_autofree char *p = g_strndup((const char *)path, plen);
	g_auto(GStrv) names = g_strsplit(p, "/", -1);
	g_autoptr(GBytes) dir = g_bytes_new(root, strlen(root));
	g_autoptr(GPtrArray) dirs = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
	size_t n = g_strv_length(names), off;
	gsize klen;
	const char *k;

	g_assert_true(root[0] == '\0' || root[strlen(root) - 1] == '/');
	g_ptr_array_add(dirs, g_bytes_ref(dir));
	for (size_t i = 0; i < n; i++) {
		g_autofree char *c = NULL;
		size_t clen;
		GBytes *next;

		if (keymap_component_from_name(names[i], &c, &clen) < 0)
			return;
		next = keymap_child_key(dirs->pdata[dirs->len - 1], c, clen, i + 1 < n);
		g_ptr_array_add(dirs, next);
	}
	k = g_bytes_get_data(dirs->pdata[dirs->len - 1], &klen);
	off = strlen(root);
	for (size_t i = 0; i < n; i++) {
		size_t clen;
		enum keymap_kind kind = keymap_split(k, klen, off, &clen);
		g_autofree char *name = keymap_name_from_component(k + off, clen);

		g_assert_cmpint(kind, ==, i + 1 < n ? KEYMAP_DIR : KEYMAP_FILE);
		g_assert_cmpstr(name, ==, names[i]);
		/* Each directory's self key is its prefix without the '/'. */
		if (i + 1 < n)
			g_assert_cmpuint(keymap_self_len(k, off + clen + 1), ==, off + clen);
		off += clen + 1;
	}
}

static void check_prefix_end(struct fz_in *in)
{
	const uint8_t *p, *rest;
	size_t plen = fz_record(in, &p);
	size_t rlen = fz_bytes(in, in->n, &rest);
	g_autoptr(GBytes) end = keymap_prefix_end((const char *)p, plen);
	g_autofree uint8_t *key = g_malloc(plen + rlen + 1);
	gsize elen;
	const char *e = g_bytes_get_data(end, &elen);

	if (elen == 1 && e[0] == '\0')
		return;   /* no end: every key is in range */
	memcpy(key, p, plen);
	memcpy(key + plen, rest, rlen);
	/* [p, end) holds exactly the keys that start with p: p + rest, and
	 * rest itself as any other key. */
	g_assert_cmpint(bytes_cmp(key, plen + rlen, e, elen), <, 0);
	g_assert_cmpint(bytes_cmp(rest, rlen, p, plen) >= 0 && bytes_cmp(rest, rlen, e, elen) < 0, ==,
			rlen >= plen && (plen == 0 || memcmp(rest, p, plen) == 0));
}

/* Undoes keymap_lock_name's escapes; the name must end in its '%'. */
static GBytes *lock_unescape(const char *s, size_t len)
{
	GByteArray *out = g_byte_array_new();

	g_assert_cmpuint(len, >, 0);
	g_assert_cmpint(s[len - 1], ==, '%');
	for (size_t i = 0; i + 1 < len; i++) {
		guint8 c = (guint8)s[i];

		g_assert_true(c >= 0x20 && c != 0x7f);
		if (c == '%') {
			g_assert_cmpuint(i + 2, <, len - 1);
			c = (guint8)(g_ascii_xdigit_value(s[i + 1]) << 4 |
				     g_ascii_xdigit_value(s[i + 2]));
			i += 2;
		}
		g_byte_array_append(out, &c, 1);
	}
	return g_byte_array_free_to_bytes(out);
}

static void check_lock_names(struct fz_in *in)
{
	const uint8_t *a, *b;
	size_t alen = fz_record(in, &a);
	size_t blen = fz_bytes(in, in->n, &b);
	g_autoptr(GBytes) na = keymap_lock_name("", 0, (const char *)a, alen);
	g_autoptr(GBytes) nb = keymap_lock_name("", 0, (const char *)b, blen);
	g_autoptr(GBytes) ua = NULL;
	gsize la, lb;
	const char *sa = g_bytes_get_data(na, &la);
	const char *sb = g_bytes_get_data(nb, &lb);

	ua = lock_unescape(sa, la);
	g_assert_cmpmem(g_bytes_get_data(ua, NULL), g_bytes_get_size(ua), a, alen);
	g_assert_cmpint(g_bytes_equal(na, nb), ==, alen == blen && memcmp(a, b, alen) == 0);
	/* No lock's name followed by '/' starts another's. */
	if (lb > la)
		g_assert_false(memcmp(sb, sa, la) == 0 && sb[la] == '/');
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fz_quiet_logs();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	const uint8_t *rest;
	size_t len;

	switch (fz_u8(&in) % 5) {
	case 0:
		len = fz_bytes(&in, in.n, &rest);
		check_component(rest, len);
		break;
	case 1:
		len = fz_bytes(&in, in.n, &rest);
		check_name(rest, len);
		break;
	case 2:
		check_path(&in);
		break;
	case 3:
		check_prefix_end(&in);
		break;
	default:
		check_lock_names(&in);
		break;
	}
	return 0;
}
