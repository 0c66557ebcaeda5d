"""The wheel, installed as an operator installs it: a fresh virtualenv, run from outside the repository.

One wheel is built and installed per test session, from a copy of the working
tree (a stale ``build/`` folder in the checkout cannot leak into it).
Dependencies come from the package index pip is configured with here, as for
``scripts/setup``. The commands then run from a folder outside the repository,
so nothing can import the checkout instead of the installed package.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, config_toml, samples
from bridge.store import schema

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.name for p in (REPO / "templates").glob("*.j2"))
# What a build does not need, and must not see (a stale build/ would leak old files into the wheel).
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".mypy_cache", ".mailbridge-demo")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    outside: Path   # a working folder outside the repository

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        return subprocess.run([str(self.venv / "bin" / argv[0]), *argv[1:]], cwd=self.outside, env=env,
                              capture_output=True, text=True, timeout=300)


def _run(*argv: str | Path, cwd: Path) -> None:
    result = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    source, dist, venv, outside = root / "source", root / "dist", root / "venv", root / "outside"
    shutil.copytree(REPO, source, symlinks=True, ignore=NOT_SOURCE)
    outside.mkdir()
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", dist, source,
         cwd=outside)
    (wheel,) = dist.glob("mailbridge-*.whl")
    _run(sys.executable, "-m", "venv", venv, cwd=outside)
    _run(venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q", wheel, cwd=outside)
    return Installed(wheel, venv, outside)


def test_the_wheel_carries_the_templates_inside_the_package(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    assert sorted(n.removeprefix("bridge/templates/") for n in names if n.startswith("bridge/templates/")) == SHIPPED
    assert not [n for n in names if n.split("/")[0] in ("templates", "tests", "config", "benchmarks")]


def test_the_installed_package_finds_its_templates(installed: Installed) -> None:
    probe = installed.run("python", "-c", "import bridge; from bridge.adapters.templates import Templates; "
                                          "print(bridge.__file__); print(Templates().folder)")
    assert probe.returncode == 0, probe.stderr
    package, folder = probe.stdout.split()
    assert Path(package).is_relative_to(installed.venv)          # the installed package, not the checkout
    assert sorted(p.name for p in Path(folder).glob("*.j2")) == SHIPPED


def test_the_wheel_carries_the_migrations(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    shipped = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "bridge" / "store" / "migrations").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts)
    assert "bridge/store/migrations/script.py.mako" in shipped
    assert [n for n in names if n.startswith("bridge/store/migrations/")] == shipped


def test_an_installed_mailbridge_upgrades_the_previous_releases_database(installed: Installed,
                                                                        tmp_path: Path) -> None:
    db = tmp_path / "mailbridge.db"
    with sqlite3.connect(db) as conn:      # as the previous release made it (tests/test_migrations.py has more)
        conn.executescript((REPO / "tests" / "data" / "schema_previous_release.sqlite.sql").read_text())
        conn.execute("INSERT INTO schema_info VALUES ('schema_version', '1'), ('token_secret', 'abc')")
    (tmp_path / "imap-password").write_text("unused\n")
    config = tmp_path / "mailbridge.toml"
    config.write_text(config_toml(database=f"sqlite:///{db}", seller="seller@acme.example",
                                  staff="support@acme.example", imap_port=9, smtp_port=9,
                                  imap_password_file="imap-password"))

    refused = installed.run("mailbridge", "-c", str(config), "run", "--once")
    assert refused.returncode == 2
    assert f"mailbridge db upgrade -c {config}" in refused.stderr
    upgraded = installed.run("mailbridge", "-c", str(config), "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"upgraded to {schema.head_revision()}" in upgraded.stdout
    current = installed.run("mailbridge", "-c", str(config), "db", "current")
    assert (current.returncode, current.stdout.strip()) == (0, f"revision {schema.head_revision()} (the newest): up to date")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM schema_info WHERE key = 'token_secret'").fetchone() == ("abc",)


def readme_minimal_config() -> str:
    """The README's minimal configuration: the first TOML block after "A minimal configuration"."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"A minimal configuration.*?```toml\n(.*?)```", readme, re.S)
    assert match, "README.md lost its minimal configuration block"
    assert "templates" not in match.group(1)          # the shipped templates, found without a key
    return match.group(1)


def _for_the_sandbox(config: str, folder: Path, seller: SandboxAccount, staff: SandboxAccount, smtp_port: int) -> str:
    """The README's block pointed at the loopback servers; every value it replaces must be there."""
    replacements = [
        ('"sqlite:////var/lib/mailbridge/mailbridge.db"', f'"sqlite:///{folder}/mailbridge.db"'),
        ('"/etc/mailbridge/imap-password"', f'"{folder}/imap-password"'),
        ('"seller@acme.example"', f'"{seller.user}"'),
        ('"support@acme.example"', f'"{staff.user}"'),
        ('"*@acme.example"', f'"*@{staff.user.rpartition("@")[2]}"'),
        ('host = "imap.acme.example"', f'host = "127.0.0.1"\nport = {seller.port}\nsecurity = "none"'),
        ('host = "smtp.acme.example"', f'host = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"'),
    ]
    for documented, local in replacements:
        assert documented in config, f"README's minimal configuration no longer has {documented}"
        config = config.replace(documented, local)
    return config


def test_an_installed_mailbridge_forwards_buyer_mail_with_the_shipped_templates(
        installed: Installed, tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount,
        staff: SandboxAccount) -> None:
    seller = fresh_mailbox
    (tmp_path / "imap-password").write_text(seller.password + "\n")
    config = tmp_path / "mailbridge.toml"
    with SandboxSMTP(dovecot, auth={seller.user: seller.password}) as smtp:
        config.write_text(_for_the_sandbox(readme_minimal_config(), tmp_path, seller, staff, smtp.port))
        checked = installed.run("mailbridge", "-c", str(config), "check-config")
        assert checked.returncode == 0, checked.stderr
        assert "OK, 1 account(s)" in checked.stdout

        first = installed.run("mailbridge", "-c", str(config), "run", "--once")   # an empty mailbox: nothing to do
        assert first.returncode == 0, first.stderr
        (raw,) = samples.buyer_backlog(1, seller_address=seller.user, seed=5)
        dovecot.append(seller.user, "INBOX", raw)
        ran = installed.run("mailbridge", "-c", str(config), "run", "--once")
        assert ran.returncode == 0, ran.stderr
        (forwarded,) = smtp.wait_for(1)

    assert forwarded.rcpt_tos == (staff.user,)
    text = message_from_bytes(forwarded.data, policy=policy.default).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Reply to this email to answer the buyer" in text          # staff_notification.txt.j2, as shipped
    assert seller.password not in checked.stdout + checked.stderr + ran.stdout + ran.stderr
