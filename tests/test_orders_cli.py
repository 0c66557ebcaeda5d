"""``mailbridge orders import|list`` as an operator runs it: a real process, exit statuses, output."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli.command import build_parser
from bridge.sandbox import config_toml

DATA = Path(__file__).parent / "data" / "orders"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "mailbridge.toml"
    path.write_text(config_toml(database=f"sqlite:///{tmp_path}/mb.db", seller="seller@acme.example",
                                staff="support@acme.example", imap_port=1143, smtp_port=1025, imap_password="x"))
    return path


def mailbridge(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", "-c", str(config), *args], capture_output=True,
                          text=True, timeout=120)


def test_parser_entries() -> None:
    args = build_parser().parse_args(["orders", "import", "r.txt", "--account", "acme", "-c", "F"])
    assert (args.module, args.action, args.file, args.account, args.config) == ("orders", "import", "r.txt",
                                                                              "acme", "F")
    args = build_parser().parse_args(["orders", "list", "--json"])
    assert (args.action, args.json, args.account) == ("list", True, None)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["orders", "import", "r.txt"])       # --account is required


def test_import_then_list(config: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("order-id,order-item-id,purchase-date,sku,quantity-purchased\n"
                    "111-2223334-4445556,1,2026-11-02T10:15:00-08:00,TENT,1\n")
    done = mailbridge(config, "orders", "import", str(good), "--account", "acme")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""                                   # no progress bar when stderr is not a terminal
    assert "merchant report for account acme: 1 rows read, 1 orders created" in done.stdout

    some_bad = mailbridge(config, "orders", "import", str(DATA / "shipments.txt"), "--account", "acme")
    assert some_bad.returncode == 1
    assert f"{DATA / 'shipments.txt'}:4: unparseable date 'yesterday' in 'shipment-date'" in some_bad.stderr
    assert "4 rows read, 2 orders created, 0 updated" in some_bad.stdout and "1 bad rows" in some_bad.stdout

    listed = mailbridge(config, "orders", "list", "--json")
    assert listed.returncode == 0
    orders = {o["order_id"]: o for o in json.loads(listed.stdout)["orders"]}
    assert set(orders) == {"111-2223334-4445556", "111-0000001-0000001", "111-0000004-0000004"}
    assert orders["111-2223334-4445556"]["purchased_at"] == "2026-11-02T18:15:00+00:00"
    assert orders["111-0000004-0000004"]["buyer_alias"] == "z9y8x7w6v5u4@marketplace.amazon.de"
    text = mailbridge(config, "orders", "list", "--account", "acme")
    assert "111-0000001-0000001  2026-11-02  shipped  k3j9x0qma2b7@marketplace.amazon.com  1 x Acme Tent 2P" \
        in text.stdout


@pytest.mark.parametrize(("content", "expected"), [
    ("date\ttotal\n2026-11-02\t3\n", "Columns found: date, total"),
    (None, "cannot read the file"),
])
def test_unreadable_file_or_unknown_layout_exits_2(config: Path, tmp_path: Path, content: str | None,
                                                   expected: str) -> None:
    path = tmp_path / "report.txt"
    if content is not None:
        path.write_text(content)
    done = mailbridge(config, "orders", "import", str(path), "--account", "acme")
    assert done.returncode == 2 and expected in done.stderr


def test_unknown_account_exits_2(config: Path) -> None:
    done = mailbridge(config, "orders", "import", str(DATA / "merchant.csv"), "--account", "nobody")
    assert done.returncode == 2 and "no account 'nobody'" in done.stderr


def test_progress_bar_on_a_terminal(config: Path) -> None:
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "-c", str(config), "orders", "import",
                                 str(DATA / "all_orders.txt"), "--account", "acme"],
                                stdout=subprocess.PIPE, stderr=follower, text=True)
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(leader)
    assert proc.returncode == 1
    assert b"[##############################] 100%  5 rows" in seen
    assert b"all_orders.txt:6: bad order id" in seen
    assert "3 orders created" in out
