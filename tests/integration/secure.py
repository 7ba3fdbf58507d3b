"""Certificates made with openssl for the tests, and an etcd server that
speaks TLS (optionally asking for client certificates) and etcd's auth."""

import os

import harness


class Certs:
    """A directory of PEM files: CAs made on demand, and certificates that
    they sign (EC P-256, so that making one takes milliseconds)."""

    def __init__(self, dir):
        self.dir = dir
        os.makedirs(dir, exist_ok=True)
        self._cas = set()

    def path(self, name):
        return os.path.join(self.dir, name)

    def _openssl(self, *args):
        p = harness.run(["openssl"] + list(args), cwd=self.dir)
        assert p.returncode == 0, "openssl %r: %s" % (args, p.stderr)

    def ca(self, name="ca"):
        """The CA certificate's path (made the first time)."""
        if name not in self._cas:
            self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3",
                          "-keyout", name + ".key", "-out", name + ".crt",
                          "-subj", "/CN=etcdfs test " + name)
            self._cas.add(name)
        return self.path(name + ".crt")

    def leaf(self, name, cn, san="IP:127.0.0.1", ca="ca", days=2):
        """(cert, key) paths of a certificate for cn signed by ca; days < 0
        makes one that has already expired."""
        self.ca(ca)
        ext = self.path(name + ".ext")
        with open(ext, "w") as f:
            if san:
                f.write("subjectAltName=%s\n" % san)
            f.write("extendedKeyUsage=serverAuth,clientAuth\n")
        self._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
                      "-subj", "/CN=" + cn)
        self._openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt",
                      "-CAkey", ca + ".key", "-CAcreateserial", "-days", str(days),
                      "-extfile", name + ".ext", "-out", name + ".crt")
        return self.path(name + ".crt"), self.path(name + ".key")


class AuthEtcd(harness.Etcd):
    """A plain-text etcd whose etcdctl logs in once auth is on."""

    def __init__(self, tag="auth", extra=()):
        super().__init__(tag)
        self.extra = list(extra)
        self.ctl_user = None

    def _argv(self):
        return super()._argv() + self.extra

    def ctl_argv(self, *args):
        argv = super().ctl_argv()
        if self.ctl_user:
            argv.append("--user=" + self.ctl_user)
        return argv + list(args)


class TlsEtcd(harness.Etcd):
    """A single etcd serving clients over https only.

    client_ca: the CA file it checks client certificates against (then a
    client must bring one); server: the (cert, key) it presents (default:
    one for IP 127.0.0.1 signed by certs' "ca"). etcdctl is run with
    ctl_cert (default: CN=root, when client certificates are checked)."""

    def __init__(self, certs, tag="tls", client_ca=None, server=None, extra=()):
        super().__init__(tag)
        self.certs = certs
        self.client_ca = client_ca
        self.server = server or certs.leaf("server", "etcd server")
        self.extra = list(extra)
        self.ctl_cert = certs.leaf("root", "root") if client_ca else None
        self.ctl_user = None   # "name:password" once auth is on

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self.client_port

    @property
    def endpoints(self):
        return [self.url]

    def _argv(self):
        argv = super()._argv()
        for flag in ("--listen-client-urls", "--advertise-client-urls"):
            argv[argv.index(flag) + 1] = self.url
        argv += ["--cert-file", self.server[0], "--key-file", self.server[1]] + self.extra
        if self.client_ca:
            argv += ["--trusted-ca-file", self.client_ca, "--client-cert-auth"]
        return argv

    def ctl_argv(self, *args):
        argv = ["etcdctl", "--endpoints=" + self.url, "--cacert=" + self.certs.ca()]
        if self.ctl_cert:
            argv += ["--cert=" + self.ctl_cert[0], "--key=" + self.ctl_cert[1]]
        if self.ctl_user:
            argv += ["--user=" + self.ctl_user]
        return argv + list(args)

    def metrics(self):
        raise NotImplementedError("metrics are on the https port")


def enable_auth(etcd, root_password="rootpw"):
    """Turns on etcd's auth with a root user; etcdctl then logs in as root."""
    etcd.ctl("user", "add", "root:" + root_password)
    etcd.ctl("auth", "enable")
    etcd.ctl_user = "root:" + root_password


def add_user(etcd, name, password, *grants):
    """A user with a role of its own; each grant is (permission, key, flag)
    as etcdctl role grant-permission takes them, e.g. ("readwrite", "/app/",
    "--prefix")."""
    etcd.ctl("user", "add", "%s:%s" % (name, password))
    if grants:
        etcd.ctl("role", "add", name + "-role")
        for perm, key, *flags in grants:
            etcd.ctl("role", "grant-permission", *flags, name + "-role", perm, key)
        etcd.ctl("user", "grant-role", name, name + "-role")


def jwt_token_args(dir, ttl="2s"):
    """etcd flags for JWT tokens that expire ttl after they were issued,
    used or not (RS256, a key pair made here)."""
    os.makedirs(dir, exist_ok=True)
    priv, pub = os.path.join(dir, "jwt.key"), os.path.join(dir, "jwt.pub")
    for argv in (["openssl", "genrsa", "-out", priv, "2048"],
                 ["openssl", "rsa", "-in", priv, "-pubout", "-out", pub]):
        p = harness.run(argv)
        assert p.returncode == 0, p.stderr
    return ["--auth-token",
            "jwt,pub-key=%s,priv-key=%s,sign-method=RS256,ttl=%s" % (pub, priv, ttl)]
