"""The Ansible role (ansible/roles/threshold) run for real on this machine,
with every path it writes put under a temporary directory (threshold_root).

ansible-playbook runs ansible/site.yml with `-i localhost, -c local` as the
current user (no user created, systemd not touched, the binary taken from
the build directory instead of being built), against a stand-in Synapse
configuration directory under the same root.  Then:

- the rendered config passes `threshold check-config`, and the files have
  the owners and modes docs/deployment.md promises;
- the registration holds the tokens the daemon reads: the daemon started with
  the rendered config answers the AS API with the registration's hs_token
  (and refuses another) and serves the guest page with the configured title;
- a second run changes nothing; changing one variable changes the config
  file and nothing else; a config Threshold would refuse, or one the
  registration no longer fits, is never written;
- the unit passes `systemd-analyze verify` (skipped, with a message, where
  systemd-analyze cannot run) and carries its hardening;
- the role's config keys are exactly appservice/config.c's, and
  scripts/packages/runtime.txt covers the binary's libraries.

Needs ansible-core (scripts/install-deps.sh).  About half a minute.
"""

import grp
import hashlib
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("THRESHOLD_SOURCE_DIR")
                             or os.path.join(HERE, "..", ".."))
BIN = os.path.abspath(os.environ.get("THRESHOLD_BIN")
                      or os.path.join(SOURCE_DIR, "build", "threshold"))
ANSIBLE_DIR = os.path.join(SOURCE_DIR, "ansible")
ROLE_DIR = os.path.join(ANSIBLE_DIR, "roles", "threshold")
PLAYBOOK = os.path.join(ANSIBLE_DIR, "site.yml")
PYTHON = "/usr/bin/python3"
SERVER_NAME = "example.org"
PAGE_TITLE = "Reading list"

pytestmark = pytest.mark.skipif(shutil.which("ansible-playbook") is None,
                                reason="ansible-playbook is not installed "
                                       "(scripts/install-deps.sh installs ansible-core)")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def package_list(name):
    with open(os.path.join(SOURCE_DIR, "scripts", "packages", name)) as f:
        return [w for line in f for w in line.split("#")[0].split()]


def packages_present(pkgs):
    if shutil.which("dpkg-query") is None:
        return False
    r = subprocess.run(["dpkg-query", "-W", "--showformat=${Package} ${db:Status-Abbrev}\\n", *pkgs],
                       capture_output=True, text=True)
    installed = {line.split()[0] for line in r.stdout.splitlines() if " ii " in line + " "}
    return set(pkgs) <= installed


class Deployment:
    """A temporary root, the variables of one run, and ansible-playbook."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="threshold-ansible-")
        self.root = os.path.join(self.tmp, "root")
        os.makedirs(os.path.join(self.root, "etc", "matrix-synapse", "conf.d"))
        # Debian's matrix-synapse writes the server name here; the role reads it.
        with open(self.path("/etc/matrix-synapse/conf.d/server_name.yaml"), "w") as f:
            f.write("server_name: %s\n" % SERVER_NAME)
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.group = grp.getgrgid(os.getgid()).gr_name
        self.as_port = free_port()
        self.gw_port = free_port()
        self.hs_port = free_port()  # nothing listens there: no homeserver
        # As root with the runtime packages present (CI), the package step runs
        # too and must find nothing to do; otherwise it is left out.
        self.install_packages = os.geteuid() == 0 and packages_present(
            package_list("runtime.txt"))
        self.vars = {
            "threshold_root": self.root,
            "threshold_user": self.user,
            "threshold_group": self.group,
            "threshold_create_user": False,
            "threshold_homeserver_group": self.group,
            "threshold_install_packages": self.install_packages,
            "threshold_manage_service": False,
            "threshold_binary_src": BIN,
            "threshold_nginx_snippet": True,
            "threshold_homeserver_url": "http://127.0.0.1:%d" % self.hs_port,
            "threshold_appservice_listen_port": self.as_port,
            "threshold_gateway_listen_port": self.gw_port,
            "threshold_gateway_public_url": "https://chat.%s/help" % SERVER_NAME,
            "threshold_gateway_page_title": PAGE_TITLE,
            "threshold_gateway_max_connections": 2000,
            "threshold_client_connect_timeout_ms": 500,
            "threshold_roles_staff": ["@alice:%s" % SERVER_NAME],
            "threshold_safeguarding_room": "!safe:%s" % SERVER_NAME,
            "threshold_services": [{
                "name": "helpline",
                "display_name": "Helpline",
                "staff_room": "!helpline:%s" % SERVER_NAME,
                "notice": {"en": "This chat is run by a test.\n\nNothing is kept.",
                           "no": "Denne chatten er en test."},
                "public_entry": True,
            }],
        }
        self.env = dict(os.environ,
                        ANSIBLE_HOME=os.path.join(self.tmp, "ansible-home"),
                        ANSIBLE_LOCAL_TEMP=os.path.join(self.tmp, "ansible-local"),
                        ANSIBLE_REMOTE_TEMP=os.path.join(self.tmp, "ansible-remote"),
                        ANSIBLE_CONFIG=os.path.join(self.tmp, "no-ansible.cfg"),
                        ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_PIPELINING="1",
                        ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_LOCALHOST_WARNING="0",
                        ANSIBLE_INVENTORY_UNPARSED_WARNING="0")

    def path(self, p):
        return self.root + p

    def playbook(self, extra=None, check=True):
        """Run site.yml; (return code, changed count, output)."""
        v = dict(self.vars, **(extra or {}))
        vars_file = os.path.join(self.tmp, "vars.json")
        with open(vars_file, "w") as f:
            json.dump(v, f)
        r = subprocess.run(
            ["ansible-playbook", "-i", "localhost,", "-c", "local",
             "-e", "threshold_hosts=localhost", "-e", "ansible_become=false",
             "-e", "ansible_python_interpreter=" + PYTHON, "-e", "@" + vars_file, PLAYBOOK],
            cwd=self.tmp, env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=300)
        out = r.stdout + r.stderr
        m = re.search(r"^localhost\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                      out, re.M)
        if check:
            assert r.returncode == 0 and m and m.group(2) == "0" and m.group(3) == "0", \
                "ansible-playbook failed (%d):\n%s" % (r.returncode, out[-6000:])
        return r.returncode, int(m.group(1)) if m else None, out

    def snapshot(self):
        """Every file and directory under the root except the daemon's store:
        path -> (mode, uid, gid, sha256 of the content)."""
        store = self.path("/var/lib/threshold/store")
        snap = {}
        for top, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if os.path.join(top, d) != store]
            for name in dirs + files:
                p = os.path.join(top, name)
                st = os.lstat(p)
                digest = None
                if stat.S_ISREG(st.st_mode):
                    with open(p, "rb") as f:
                        digest = hashlib.sha256(f.read()).hexdigest()
                snap[os.path.relpath(p, self.root)] = (stat.S_IMODE(st.st_mode), st.st_uid,
                                                       st.st_gid, digest)
        return snap

    def config(self):
        with open(self.path("/etc/threshold/config.yaml")) as f:
            return yaml.safe_load(f)

    def registration(self):
        with open(self.path("/etc/threshold/registration.yaml")) as f:
            return yaml.safe_load(f)

    def threshold(self, *args):
        return subprocess.run([self.path("/usr/local/bin/threshold"), "-c",
                               self.path("/etc/threshold/config.yaml"), *args],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def deployed():
    d = Deployment()
    rc, changed, out = d.playbook()
    d.first_changed = changed
    d.first_out = out
    yield d
    shutil.rmtree(d.tmp, ignore_errors=True)


def test_syntax_check(tmp_path):
    r = subprocess.run(["ansible-playbook", "--syntax-check", "-i",
                        os.path.join(ANSIBLE_DIR, "inventory.example.yml"), PLAYBOOK],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                       cwd=str(tmp_path),
                       env=dict(os.environ, ANSIBLE_NOCOLOR="1",
                                ANSIBLE_LOCAL_TEMP=str(tmp_path / "local"),
                                ANSIBLE_HOME=str(tmp_path / "home")))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "playbook: " in r.stdout


def test_first_run_installs(deployed):
    assert deployed.first_changed and deployed.first_changed > 0
    # The server name came from Synapse's conf.d, the services from the list.
    cfg = deployed.config()
    assert cfg["homeserver"]["server_name"] == SERVER_NAME
    assert cfg["gateway"]["page_title"] == PAGE_TITLE
    assert cfg["gateway"]["max_connections"] == 2000
    # behind the nginx snippet, on loopback: the client's address from the proxy
    assert cfg["gateway"]["trust_forwarded_for"] is True
    assert cfg["services"]["helpline"]["notice"]["no"] == "Denne chatten er en test."
    assert "name" not in cfg["services"]["helpline"]
    # paths point inside the root, keys left unset are left out
    assert cfg["store"]["path"] == deployed.path("/var/lib/threshold/store")
    assert cfg["appservice"]["registration"] == deployed.path("/etc/threshold/registration.yaml")
    assert "audit" not in cfg and "bot_localpart" not in cfg["appservice"]


def test_config_validates(deployed):
    r = deployed.threshold("check-config")
    assert r.returncode == 0, r.stderr
    assert "config OK" in r.stdout and "registration" in r.stdout


def test_owners_and_modes(deployed):
    uid, gid = os.getuid(), os.getgid()

    def meta(p):
        st = os.stat(deployed.path(p))
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid

    # /etc/threshold: root-owned, the threshold group; others may pass
    # through to the registration (the homeserver group is set) but not list.
    assert meta("/etc/threshold") == (0o751, 0, gid)
    assert meta("/etc/threshold/config.yaml") == (0o640, 0, gid)
    assert meta("/etc/threshold/registration.yaml") == (0o440, uid, gid)
    assert meta("/var/lib/threshold") == (0o700, uid, gid)
    assert meta("/usr/local/bin/threshold") == (0o755, 0, 0)
    with open(BIN, "rb") as a, open(deployed.path("/usr/local/bin/threshold"), "rb") as b:
        assert a.read() == b.read(), "the installed binary is not the one given"
    with open(deployed.path("/etc/matrix-synapse/conf.d/threshold.yaml")) as f:
        assert yaml.safe_load(f) == {
            "app_service_config_files": [deployed.path("/etc/threshold/registration.yaml")]}


def test_registration_holds_the_tokens(deployed):
    reg = deployed.registration()
    for k in ("as_token", "hs_token"):
        assert re.fullmatch(r"[0-9a-f]{64}", reg[k]), k
    assert reg["as_token"] != reg["hs_token"]
    assert reg["id"] == "threshold" and reg["sender_localpart"] == "threshold"
    assert reg["url"] == "http://127.0.0.1:%d" % deployed.as_port
    assert reg["namespaces"]["users"][0]["regex"].endswith(":example\\.org$")


def test_nginx_snippet(deployed):
    with open(deployed.path("/etc/nginx/snippets/threshold-gateway.conf")) as f:
        text = f.read()
    assert "location ^~ /help/ {" in text
    assert "proxy_pass http://127.0.0.1:%d/;" % deployed.gw_port in text
    assert re.search(r"^\s*access_log off;", text, re.M)
    assert re.search(r"^\s*proxy_read_timeout (\d+)s;", text, re.M)
    assert int(re.search(r"proxy_read_timeout (\d+)s;", text).group(1)) > 60  # the feed waits 60 s
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text
    assert "client_max_body_size 4194304;" in text


def wait_http(port, path, deadline, headers=None, method="GET", body=None):
    last = None
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read()
        except OSError as e:
            last = e
            time.sleep(0.05)
    raise AssertionError("nothing answered on port %d: %s" % (port, last))


def test_rendered_config_serves(deployed):
    """The daemon, started as the unit would start it, serves both APIs."""
    token = deployed.registration()["hs_token"]
    log_path = os.path.join(deployed.tmp, "serve.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([deployed.path("/usr/local/bin/threshold"), "-c",
                                 deployed.path("/etc/threshold/config.yaml"), "serve"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        ping = json.dumps({"transaction_id": "ansible-test"}).encode()
        status, _ = wait_http(deployed.as_port, "/_matrix/app/v1/ping", deadline,
                              {"Authorization": "Bearer " + token,
                               "Content-Type": "application/json"}, "POST", ping)
        assert status == 200, "the AS API refused the registration's hs_token"
        status, _ = wait_http(deployed.as_port, "/_matrix/app/v1/ping", deadline,
                              {"Authorization": "Bearer " + "0" * 64,
                               "Content-Type": "application/json"}, "POST", ping)
        assert status in (401, 403)
        status, body = wait_http(deployed.gw_port, "/_threshold/gateway/v1/page", deadline)
        assert status == 200
        assert json.loads(body)["title"] == PAGE_TITLE
        status, body = wait_http(deployed.gw_port, "/", deadline)
        assert status == 200 and b"<html" in body.lower()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
    with open(log_path, "rb") as f:
        log_text = f.read().decode("utf-8", "replace")
    assert rc == 0, "threshold serve exited %s:\n%s" % (rc, log_text[-3000:])
    # the store and the audit key went where the unit lets the service write
    assert os.path.isdir(deployed.path("/var/lib/threshold/store"))
    assert os.path.isfile(deployed.path("/var/lib/threshold/store/audit-signing.key"))


def test_second_run_changes_nothing(deployed):
    before = deployed.snapshot()
    tokens = deployed.registration()
    rc, changed, out = deployed.playbook()
    assert changed == 0, "a second run reported changes:\n" + out[-6000:]
    assert deployed.snapshot() == before
    assert deployed.registration() == tokens


def test_changing_a_variable_changes_the_config_only(deployed):
    """(Later tests run with the new title; none of them looks at it.)"""
    before = deployed.snapshot()
    deployed.vars["threshold_gateway_page_title"] = "Recipes"
    rc, changed, out = deployed.playbook()
    assert changed == 1, out[-6000:]
    after = deployed.snapshot()
    differ = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert differ == ["etc/threshold/config.yaml"]
    assert deployed.config()["gateway"]["page_title"] == "Recipes"
    assert deployed.threshold("check-config").returncode == 0


def test_a_config_threshold_refuses_is_not_written(deployed):
    """check-config validates each rendered config before it replaces the old
    one; the role passes service settings through as given, unknown keys too."""
    before = deployed.snapshot()
    svc = dict(deployed.vars["threshold_services"][0], colour="red")
    rc, _, out = deployed.playbook({"threshold_services": [svc]}, check=False)
    assert rc != 0
    assert "failed to validate" in out
    assert "unknown key 'services.helpline.colour'" in out
    assert deployed.snapshot() == before


def test_refuses_a_second_app_service_list(deployed):
    """Synapse keeps only the last app_service_config_files it reads."""
    hs_yaml = deployed.path("/etc/matrix-synapse/homeserver.yaml")
    with open(hs_yaml, "w") as f:
        f.write("server_name: example.org\napp_service_config_files:\n  - /etc/other/reg.yaml\n")
    try:
        rc, _, out = deployed.playbook(check=False)
        assert rc != 0
        assert "app_service_config_files is already set in %s" % hs_yaml in out
    finally:
        os.unlink(hs_yaml)


def test_refuses_a_registration_that_no_longer_fits(deployed):
    """A new AS port would leave Synapse sending to the old one."""
    before = deployed.snapshot()
    rc, _, out = deployed.playbook({"threshold_appservice_listen_port": free_port()}, check=False)
    assert rc != 0
    assert "no longer fits the configuration" in out
    assert "threshold_registration_force=true" in out
    assert deployed.snapshot() == before


def unit_settings(path):
    settings = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", "[")) and "=" in line:
                k, v = line.split("=", 1)
                settings.setdefault(k, []).append(v)
    return settings


def test_unit_hardening(deployed):
    s = unit_settings(deployed.path("/etc/systemd/system/threshold.service"))
    want = {
        "User": deployed.user, "Group": deployed.group,
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
        "ProtectHome": "yes", "CapabilityBoundingSet": "", "MemoryDenyWriteExecute": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "Restart": "on-failure",
        "ReadWritePaths": deployed.path("/var/lib/threshold"),
    }
    for k, v in want.items():
        assert s.get(k) == [v], k
    assert "@system-service" in s["SystemCallFilter"]
    assert int(s["LimitNOFILE"][0]) >= 2000 + 256  # gateway.max_connections, and the rest
    assert s["ExecStart"] == ["%s -c %s serve" % (deployed.path("/usr/local/bin/threshold"),
                                                  deployed.path("/etc/threshold/config.yaml"))]


def test_unit_verifies(deployed):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("SKIPPED: systemd-analyze is not installed here; the unit was not verified")
    # Can systemd-analyze verify a plain unit at all in this environment?
    probe = os.path.join(deployed.tmp, "probe.service")
    with open(probe, "w") as f:
        f.write("[Service]\nExecStart=/bin/true\n")
    r = subprocess.run(["systemd-analyze", "verify", probe], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=60)
    if r.returncode != 0:
        pytest.skip("SKIPPED: systemd-analyze verify cannot run here (%s); the unit was not "
                    "verified" % (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1])
    unit = deployed.path("/etc/systemd/system/threshold.service")
    r = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=60)
    complaints = [line for line in (r.stdout + r.stderr).splitlines() if "threshold.service" in line]
    assert r.returncode == 0 and not complaints, r.stdout + r.stderr
    # systemd's own exposure score for the unit: "OK" is 1.0 .. 3.9 (lower is safer)
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", unit],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    m = re.search(r"Overall exposure level for threshold\.service: (\d+\.\d+)", r.stdout + r.stderr)
    if m:
        assert float(m.group(1)) <= 2.5, r.stdout[-3000:]


def test_role_files_parse():
    """Files the syntax check does not read (included tasks) parse too."""
    for top, _, files in os.walk(ROLE_DIR):
        for name in files:
            if name.endswith(".yml"):
                with open(os.path.join(top, name)) as f:
                    assert yaml.safe_load(f) is not None, name


def test_config_keys_are_threshold_s():
    """Every configuration key has its role variable and no variable makes up a key."""
    with open(os.path.join(SOURCE_DIR, "appservice", "config.c")) as f:
        text = f.read()
    table = text[text.index("static const struct option options[]"):]
    table = table[:table.index("};")]
    keys = set(re.findall(r'\{"(\w+)", "(\w+)", OPT_', table))
    assert len(keys) > 40
    with open(os.path.join(ROLE_DIR, "vars", "main.yml")) as f:
        rendered = yaml.safe_load(f)["_threshold_config"]
    role_keys = {(s, k) for s, ks in rendered.items() for k in ks}
    assert role_keys == keys
    with open(os.path.join(ROLE_DIR, "defaults", "main.yml")) as f:
        defaults = yaml.safe_load(f)
    for section, key in keys:
        name = "threshold_%s_%s" % (section, key)
        if (section, key) == ("homeserver", "server_name"):
            assert "_threshold_server_name" in rendered[section][key]
        elif (section, key) == ("audit", "key_file"):
            assert "threshold_audit_key_file" in rendered[section][key]
        else:
            assert name in defaults, name
            assert name in rendered[section][key], name


def test_runtime_packages_cover_the_binary():
    if shutil.which("dpkg") is None or shutil.which("readelf") is None:
        pytest.skip("SKIPPED: needs dpkg and readelf")
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        subprocess.run(["readelf", "-d", BIN], capture_output=True,
                                       text=True).stdout)
    ldd = subprocess.run(["ldd", BIN], capture_output=True, text=True).stdout
    where = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
    runtime = set(package_list("runtime.txt"))
    # a sanitizer build (build-asan) also needs the sanitizers' runtimes
    needed = [lib for lib in needed if not lib.startswith(("libasan.", "libubsan."))]
    assert needed
    for lib in needed:
        path = os.path.realpath(where[lib])
        owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        if owner.returncode != 0:  # merged /usr: dpkg knows the /lib name
            owner = subprocess.run(["dpkg", "-S", path.replace("/usr/lib/", "/lib/", 1)],
                                   capture_output=True, text=True)
        pkg = owner.stdout.split(":")[0]
        assert pkg == "libc6" or pkg in runtime, "%s (%s) is not in runtime.txt" % (lib, pkg)
    # and the build list is what install-deps.sh installs
    with open(os.path.join(SOURCE_DIR, "scripts", "install-deps.sh")) as f:
        assert "scripts/packages/build.txt" in f.read()
