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
    # Feedback requests: a shipments report in, one request sent, the others held back and saying why.
    feedback = out.split("Feedback requests", 1)[1].split("Summary:", 1)[0]
    assert "-> 4 orders" in feedback and "4 requests scheduled" in feedback
    assert "113-4455667-0000001  sent" in feedback
    assert "113-4455667-0000002  cancelled: buyer opted out (notice <optout.2@amazonses.com>" in feedback
    assert "113-4455667-0000003  skipped: order_ended: the order was cancelled" in feedback
    assert "113-4455667-0000004  scheduled (due " in feedback and "not yet due" in feedback
    assert "| From: Acme Outdoor <seller@acme.example>" in feedback
    assert "| Subject: Your order 113-4455667-0000001: how did it go?" in feedback
    assert "outbound allowed   unsolicited buyer fbjane7k2m9q4x1@marketplace.amazon.com" in out
