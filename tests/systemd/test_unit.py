"""The Ansible role's unit under a real systemd.

A Debian 12 root (tests/harness/systemd-image.sh, built once and cached) is
booted with systemd-nspawn, its root a throw-away overlay.  Inside it, under
systemd as PID 1:

- a real Synapse runs as the unit `matrix-synapse` (Debian's matrix-synapse
  from the unstable chroot of tests/harness/synapse-chroot.sh, bind-mounted
  into the container: Debian 12 has no Synapse package of its own);
- ansible-playbook applies ansible/site.yml to the container itself, with
  systemd managing the service (threshold_manage_service), so the role
  creates the user, writes the config, registers with Synapse, restarts it
  through its handler and starts `threshold.service`;
- the unit is active, and `threshold doctor` (as the service's user) finds the
  homeserver reaching Threshold and back;
- `systemctl restart matrix-synapse`; Threshold, never restarted itself,
  answers the homeserver again (doctor's round trip) within a minute;
- `systemd-analyze security threshold.service` rates the unit's exposure.

Each step's result is written to a bind-mounted directory and the container
powers itself off; the test reads the results.  Skipped, with the reason,
where systemd-nspawn cannot boot a container (not root, no systemd-nspawn).
About two minutes with the images cached.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("THRESHOLD_SOURCE_DIR")
                             or os.path.join(HERE, "..", ".."))
BIN = os.path.abspath(os.environ.get("THRESHOLD_BIN")
                      or os.path.join(SOURCE_DIR, "build", "threshold"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "harness"))

import synapse  # noqa: E402

SERVER_NAME = "example.org"
SYNAPSE_IN = "/opt/synapse-root"   # where the unstable chroot appears in the container
# The same bound as tests/ansible (docs/deployment.md): the running unit,
# rated by the systemd that runs it, must not be more exposed than that.
MAX_EXPOSURE = 2.5

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="booting a container needs root"),
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None,
                       reason="systemd-nspawn is not installed (scripts/install-deps.sh "
                              "installs systemd-container)"),
]

INNER = r"""#!/bin/bash
# Runs inside the container as threshold-test.service; every result goes to /out.
set -u
out=/out
step() { echo "== $*" >> $out/log; }
result() { python3 - "$1" "$2" <<'PY'
import json, sys
p = "/out/results.json"
try:
    r = json.load(open(p))
except FileNotFoundError:
    r = {}
r[sys.argv[1]] = sys.argv[2]
json.dump(r, open(p, "w"), indent=1)
PY
}
finish() { result done yes; systemctl poweroff; exit 0; }
exec >> $out/log 2>&1

# Synapse's data directory as the chroot sees it is also valid here.
ln -sfn / "$SYNAPSE_IN/$SYNAPSE_IN" 2>/dev/null || true

step "start synapse"
cp /out/matrix-synapse.service /etc/systemd/system/
systemctl daemon-reload
systemctl start matrix-synapse || { result synapse failed; finish; }
for i in $(seq 120); do
  python3 -c "import urllib.request;urllib.request.urlopen('$HS_URL/_matrix/client/versions',timeout=2)" 2>/dev/null && break
  sleep 0.5
done
result synapse "$(systemctl is-active matrix-synapse)"

step "ansible"
ANSIBLE_NOCOLOR=1 ANSIBLE_LOCALHOST_WARNING=0 ANSIBLE_INVENTORY_UNPARSED_WARNING=0 \
ansible-playbook -i localhost, -c local -e threshold_hosts=localhost \
  -e ansible_python_interpreter=/usr/bin/python3 -e @/out/vars.json /src/ansible/site.yml \
  > $out/ansible.log 2>&1 </dev/null
result ansible_rc $?
sleep 2
result unit "$(systemctl is-active threshold)"
result unit_user "$(systemctl show -p User --value threshold)"

doctor() {
  runuser -u threshold -- /usr/local/bin/threshold -c /etc/threshold/config.yaml doctor --json \
    > $out/doctor-$1.json 2>> $out/doctor-$1.err
  echo $? > $out/doctor-$1.rc
}
step "doctor before"
doctor before

step "restart synapse"
pid_before=$(systemctl show -p MainPID --value threshold)
systemctl restart matrix-synapse
result synapse_after "$(systemctl is-active matrix-synapse)"
for i in $(seq 60); do
  doctor after
  python3 - <<'PY' && break
import json, sys
d = json.load(open("/out/doctor-after.json"))
sys.exit(0 if any(f.get("check") == "ping" and f.get("status") == "ok"
                  for f in d.get("findings", [])) else 1)
PY
  sleep 1
done
result unit_after "$(systemctl is-active threshold)"
result same_pid "$([ "$pid_before" = "$(systemctl show -p MainPID --value threshold)" ] && echo yes || echo no)"
result restarts "$(systemctl show -p NRestarts --value threshold)"

step "security"
systemd-analyze security --no-pager threshold.service > $out/security.txt 2>&1
journalctl -u threshold --no-pager > $out/threshold-journal.txt 2>&1
finish
"""


def ping_ok(doctor):
    """Whether doctor's JSON reports the homeserver round trip (its "ping"
    finding) as fine; and the finding itself."""
    found = [f for f in doctor.get("findings", []) if f.get("check") == "ping"]
    return bool(found) and all(f.get("status") == "ok" for f in found), found


@pytest.fixture(scope="module")
def booted():
    image = subprocess.run(["bash", os.path.join(SOURCE_DIR, "tests", "harness",
                                                 "systemd-image.sh")],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if image.returncode != 0:
        pytest.fail("building the systemd image failed:\n" + image.stderr[-3000:])
    image = image.stdout.strip()
    tmp = tempfile.mkdtemp(prefix="threshold-systemd-")
    out = os.path.join(tmp, "out")
    os.makedirs(out)
    hs = synapse.Synapse(os.path.join(tmp, "hs"), server_name=SERVER_NAME,
                         name="threshold-systemd-" + os.urandom(4).hex())
    hs.configure()
    # The role adds its registration through conf.d; Synapse keeps one list.
    with open(hs.config_host) as f:
        cfg = yaml.safe_load(f)
    cfg.pop("app_service_config_files", None)
    with open(hs.config_host, "w") as f:
        yaml.safe_dump(cfg, f)
    os.makedirs(os.path.join(hs.host_dir, "conf.d"), exist_ok=True)
    with open(os.path.join(hs.host_dir, "conf.d", "server_name.yaml"), "w") as f:
        f.write("server_name: %s\n" % SERVER_NAME)
    inner_cfg_dir = SYNAPSE_IN + hs.inner_dir
    with open(os.path.join(out, "matrix-synapse.service"), "w") as f:
        f.write("[Unit]\nDescription=Synapse (Debian's matrix-synapse, unstable chroot)\n"
                "[Service]\nType=simple\n"
                "ExecStart=/usr/sbin/chroot %s /usr/bin/python3 -m synapse.app.homeserver "
                "-c %s/homeserver.yaml -c %s/conf.d/\n"
                "Restart=on-failure\n" % (SYNAPSE_IN, hs.inner_dir, hs.inner_dir))
    with open(os.path.join(out, "vars.json"), "w") as f:
        json.dump({
            "threshold_install_packages": False,   # the image has them; no network needed
            "threshold_binary_src": "/build/threshold",
            "threshold_synapse_config_dir": inner_cfg_dir,
            "threshold_appservice_registration": inner_cfg_dir + "/threshold-registration.yaml",
            "threshold_homeserver_url": hs.url,
            "threshold_homeserver_server_name": SERVER_NAME,
            "threshold_appservice_listen_port": synapse.free_port(),
            "threshold_gateway_listen_port": synapse.free_port(),
            "threshold_gateway_public_url": "https://chat.%s/help" % SERVER_NAME,
            "threshold_roles_staff": ["@alice:%s" % SERVER_NAME],
            "threshold_services": [{
                "name": "helpline", "display_name": "Helpline",
                "staff_room": "!helpline:%s" % SERVER_NAME,
                "notice": {"en": "This chat is run by a test."},
            }],
        }, f)
    script = os.path.join(out, "run.sh")
    with open(script, "w") as f:
        f.write(INNER.replace("$SYNAPSE_IN", SYNAPSE_IN).replace("$HS_URL", hs.url))
    os.chmod(script, 0o755)
    with open(os.path.join(out, "threshold-test.service"), "w") as f:
        f.write("[Unit]\nDescription=Threshold's systemd test\nAfter=basic.target\n"
                "[Service]\nType=oneshot\nExecStart=/out/run.sh\n")
    env = dict(os.environ, SYSTEMD_NSPAWN_API_VFS_WRITABLE="1")
    cmd = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--boot",
           "--volatile=overlay", "--directory", image, "--console=pipe",
           "--bind-ro=%s:/src" % SOURCE_DIR,
           "--bind-ro=%s:/build/threshold" % BIN,
           "--bind=%s:%s" % (hs.root, SYNAPSE_IN),
           "--bind=%s:/out" % out,
           "--bind-ro=%s:/etc/systemd/system/threshold-test.service"
           % os.path.join(out, "threshold-test.service"),
           "systemd.wants=threshold-test.service"]
    boot = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=420)

    def read(name, default=""):
        p = os.path.join(out, name)
        return open(p).read() if os.path.exists(p) else default

    results = json.loads(read("results.json", "{}"))
    print("systemd test results:", results)
    b = {"results": results, "boot": boot, "read": read, "out": out}
    yield b
    try:
        os.unlink(os.path.join(hs.root, SYNAPSE_IN.lstrip("/")))
    except OSError:
        pass
    hs.cleanup()
    shutil.rmtree(tmp, ignore_errors=True)


def context(b):
    return ("results %r\nnspawn rc %d: %s\n--- log\n%s\n--- ansible (tail)\n%s\n--- journal\n%s"
            % (b["results"], b["boot"].returncode, b["boot"].stderr[-1500:],
               b["read"]("log")[-3000:], b["read"]("ansible.log")[-3000:],
               b["read"]("threshold-journal.txt")[-2000:]))


def test_role_starts_the_unit_under_systemd(booted):
    r = booted["results"]
    assert r.get("done") == "yes", "the container did not finish:\n" + context(booted)
    assert r.get("synapse") == "active", context(booted)
    assert r.get("ansible_rc") == "0", context(booted)
    assert r.get("unit") == "active", context(booted)
    assert r.get("unit_user") == "threshold", context(booted)
    doctor = json.loads(booted["read"]("doctor-before.json", "{}"))
    ok, found = ping_ok(doctor)
    assert ok, "doctor under systemd: homeserver round trip not fine: %r\n%s" % (found, context(booted))


def test_threshold_recovers_after_synapse_restarts(booted):
    r = booted["results"]
    assert r.get("synapse_after") == "active", context(booted)
    assert r.get("unit_after") == "active", context(booted)
    # recovered by itself: the same process, never restarted by systemd
    assert r.get("same_pid") == "yes" and r.get("restarts") == "0", context(booted)
    doctor = json.loads(booted["read"]("doctor-after.json", "{}"))
    ok, found = ping_ok(doctor)
    assert ok, "after Synapse restarted, the round trip is not fine: %r\n%s" % (found, context(booted))


def test_unit_hardening_rated_by_systemd_analyze(booted):
    text = booted["read"]("security.txt")
    m = re.search(r"Overall exposure level for threshold\.service:\s*([0-9.]+)\s+(\w+)", text)
    assert m, "systemd-analyze security printed no rating:\n" + text[-2000:] + context(booted)
    exposure = float(m.group(1))
    print("systemd-analyze security threshold.service: %.1f %s" % (exposure, m.group(2)))
    assert exposure <= MAX_EXPOSURE, text[-4000:]
