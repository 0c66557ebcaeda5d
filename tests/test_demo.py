"""`mailbridge demo`, as the README's quick start runs it: it must keep working."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_and_shows_the_whole_flow() -> None:
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "demo"], capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "What the support team received" in out
    assert "[UNCLASSIFIED] Invoice 4471 for November" in out          # nothing dropped silently
    assert "Reply-To seller+" in out                                   # signed reply addresses
    assert "| To: " in out and "@marketplace.amazon.com" in out        # the buyer-side message
    assert "[commMgrTok:" in out and "Sent from my iPhone" not in out.split("Summary:")[0].split("Jo from support")[1]
    assert "Sent to the buyer" in out
    assert "quarantined:         0" in out and "seller INBOX now:    0" in out
    assert ">>>+1 415 555 0100<<<" in out and "no_contact_details" in out     # the guard stopped Jo's phone number
    assert "the buyer is now opted out" in out
    assert "outbound allowed" in out and "outbound blocked" in out and "optout   opted_out" in out
