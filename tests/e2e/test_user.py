"""Switching the app's user and group (the runtime runs as root in these tests)."""

from __future__ import annotations

import os
import pwd

import pytest

from tests.conftest import run_sidecar

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def test_user_switch_sets_uid_gid_and_groups() -> None:
    """--user nobody runs the app as nobody with nobody's primary group."""
    nobody = pwd.getpwnam("nobody")
    result = run_sidecar(["--admin", "off", "--user", "nobody", "--", "sh", "-c", "id -u; id -g"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(nobody.pw_uid).encode(), str(nobody.pw_gid).encode()]


def test_group_switch_by_number_keeps_user() -> None:
    """--group 4242 sets the gid (and only that supplementary group) and keeps the uid."""
    result = run_sidecar(["--admin", "off", "--group", "4242", "--", "sh", "-c", "id -u; id -G"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [b"0", b"4242"]


def test_unknown_user_is_a_config_error() -> None:
    """An unknown user name is exit 2 with one line naming the key and the name."""
    result = run_sidecar(["--admin", "off", "--user", "no-such-user-xyz", "--", "true"])
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert "app.user" in lines[0]
    assert "no-such-user-xyz" in lines[0]


def test_missing_workdir_is_a_config_error(tmp_path: os.PathLike[str]) -> None:
    """A working directory that does not exist is exit 2, and the app is not started."""
    missing = os.path.join(tmp_path, "missing")
    marker = os.path.join(tmp_path, "started")
    result = run_sidecar(["--admin", "off", "--workdir", missing, "--", "touch", marker])
    assert result.returncode == 2
    assert b"app.working_dir" in result.stderr
    assert missing.encode() in result.stderr
    assert not os.path.exists(marker)


def test_workdir_with_user_switch(tmp_path: os.PathLike[str]) -> None:
    """--workdir and --user together: the app runs in that directory as that user."""
    os.chmod(tmp_path, 0o755)  # noqa: S103 - nobody must be able to enter it
    result = run_sidecar(
        ["--admin", "off", "--user", "nobody", "--workdir", str(tmp_path), "--", "pwd"]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path).encode()
