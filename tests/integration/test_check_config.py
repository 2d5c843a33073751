"""`threshold check-config`: the validate-only command (the Ansible role's
template validation runs it on every rendered config before it replaces the
old one).

It exits 0 with "config OK" for a config `serve` would accept, checks the
registration too once it exists, names the file, line and key of a mistake
and exits 1, and touches nothing: no store is opened or created.  No
homeserver is needed.
"""

import os
import subprocess

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("THRESHOLD_SOURCE_DIR")
                             or os.path.join(HERE, "..", ".."))
BIN = os.path.abspath(os.environ.get("THRESHOLD_BIN")
                      or os.path.join(SOURCE_DIR, "build", "threshold"))


def run(*args):
    return subprocess.run([BIN, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=30)


@pytest.fixture
def cfg(tmp_path):
    """A minimal config in tmp_path; returns (config path, the dict, writer)."""
    path = tmp_path / "config.yaml"
    data = {
        "homeserver": {"url": "http://127.0.0.1:9", "server_name": "example.org"},
        "appservice": {"registration": str(tmp_path / "registration.yaml")},
        "store": {"path": str(tmp_path / "store")},
    }

    def write(text=None):
        path.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
        return str(path)

    write()
    return str(path), data, write


def test_valid_config_without_registration(cfg, tmp_path):
    path, _, _ = cfg
    r = run("-c", path, "check-config")
    assert r.returncode == 0, r.stderr
    assert "config OK" in r.stdout
    assert "not written yet" in r.stdout
    assert not (tmp_path / "store").exists(), "check-config must not create the store"
    assert not (tmp_path / "registration.yaml").exists()


def test_valid_config_with_registration(cfg):
    path, _, _ = cfg
    assert run("-c", path, "generate-registration").returncode == 0
    r = run("-c", path, "check-config")
    assert r.returncode == 0, r.stderr
    assert "config OK" in r.stdout and "registration" in r.stdout and "OK)" in r.stdout
    assert "as_token" not in r.stdout + r.stderr


def test_config_env_variable(cfg):
    path, _, _ = cfg
    r = subprocess.run([BIN, "check-config"], env={"THRESHOLD_CONFIG": path},
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert path in r.stdout


def test_unknown_key_names_line_and_key(cfg):
    path, data, write = cfg
    text = yaml.safe_dump(data, sort_keys=False) + "gateway:\n  listen_prot: 1\n"
    write(text)
    line = text.splitlines().index("  listen_prot: 1") + 1
    r = run("-c", path, "check-config")
    assert r.returncode == 1
    assert "config OK" not in r.stdout
    assert "%s:%d: unknown key 'gateway.listen_prot'" % (path, line) in r.stderr


def test_out_of_range_value(cfg):
    path, data, write = cfg
    data["gateway"] = {"max_connections": 5}
    write()
    r = run("-c", path, "check-config")
    assert r.returncode == 1
    assert "gateway.max_connections: 5 is out of range" in r.stderr


def test_missing_required_key(cfg):
    path, data, write = cfg
    del data["store"]
    write()
    r = run("-c", path, "check-config")
    assert r.returncode == 1
    assert "missing required key 'store.path'" in r.stderr


def test_registration_that_no_longer_matches(cfg):
    """The bot renamed after the registration was written: serve would
    refuse to start, so check-config refuses too."""
    path, data, write = cfg
    assert run("-c", path, "generate-registration").returncode == 0
    data["appservice"]["bot_localpart"] = "helper"
    write()
    r = run("-c", path, "check-config")
    assert r.returncode == 1
    assert "sender_localpart 'threshold' does not match appservice.bot_localpart 'helper'" in r.stderr


def test_unreadable_registration(cfg, tmp_path):
    path, _, _ = cfg
    (tmp_path / "registration.yaml").write_text("id: threshold\n")
    r = run("-c", path, "check-config")
    assert r.returncode == 1
    assert "as_token and hs_token must be present" in r.stderr


def test_takes_no_arguments(cfg):
    path, _, _ = cfg
    r = run("-c", path, "check-config", "--now")
    assert r.returncode == 2
    assert "takes no arguments" in r.stderr


def test_help_lists_it():
    r = run("--help")
    assert r.returncode == 0
    assert "  check-config " in r.stdout
