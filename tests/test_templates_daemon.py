"""A template broken while ``mailbridge run`` works, against the real Dovecot and SMTP servers.

An admin saves a broken edit of the staff notification while the daemon runs:
buyer mail is still forwarded, with the last good version of the template; staff
get exactly one alert about the broken file; after the fix the new wording is
used. No restart at any point.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from bridgekit import parsed, running_daemon, text_of

from bridge.adapters.templates import shipped_templates
from bridge.sandbox import DovecotServer, SandboxAccount, SandboxSMTP, config_toml, samples

OLD = "Reply to this email to answer the buyer: write above the line at the top."
NEW = "Answer the buyer by replying to this email, above the line at the top."


def edit(path: Path, content: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(content, encoding="utf-8")
    later = max(path.stat().st_mtime_ns, before + 1_000_000_000)
    os.utime(path, ns=(later, later))


def subjects(smtp: SandboxSMTP) -> list[str]:
    return [str(parsed(r.data)["Subject"]) for r in smtp.received]


def test_a_broken_edit_keeps_the_last_good_template_and_alerts_staff_once(
        tmp_path: Path, dovecot: DovecotServer, fresh_mailbox: SandboxAccount, staff: SandboxAccount,
        smtp_server: SandboxSMTP) -> None:
    folder = tmp_path / "templates"
    shutil.copytree(shipped_templates(), folder)
    notification = folder / "staff_notification.txt.j2"
    good = notification.read_text(encoding="utf-8")
    assert OLD in good
    (tmp_path / "imap-password").write_text(fresh_mailbox.password + "\n")
    config = tmp_path / "mailbridge.toml"
    config.write_text(config_toml(
        database=f"sqlite:///{tmp_path}/mb.db", seller=fresh_mailbox.user, staff=staff.user,
        imap_port=fresh_mailbox.port, smtp_port=smtp_server.port, imap_password_file="imap-password",
        # The poll under IDLE as in the other daemon tests: mail whose arrival the server announced
        # inside another command's responses waits for it (poll_seconds), and this test is about templates.
        sections={"daemon": {"templates": str(folder)}, "account": {"forward_existing": True},
                  "imap": {"poll_seconds": 5}, "smtp": {"sent_copies": "none"}}))
    mails = samples.buyer_backlog(4, seller_address=fresh_mailbox.user, seed=91, buyers=4)
    log = tmp_path / "daemon.log"

    with running_daemon(config, log):
        dovecot.append(fresh_mailbox.user, "INBOX", mails[0])
        (first,) = smtp_server.wait_for(1, timeout=60)
        assert OLD in text_of(first.data)

        edit(notification, good.replace("{{ marketplace }}", "{{ marketplce }}"))   # the admin's typo
        dovecot.append(fresh_mailbox.user, "INBOX", mails[1])
        dovecot.append(fresh_mailbox.user, "INBOX", mails[2])
        smtp_server.wait_for(4, timeout=60)          # two notifications and one alert
        time.sleep(3)                                # a second alert would come now

        edit(notification, good.replace(OLD, NEW))  # fixed, with new wording
        dovecot.append(fresh_mailbox.user, "INBOX", mails[3])
        smtp_server.wait_for(5, timeout=60)
        time.sleep(1)

    got = smtp_server.received
    assert len(got) == 5, subjects(smtp_server)
    assert {r.rcpt_tos for r in got} == {(staff.user,)}
    alerts = [r for r in got if str(parsed(r.data)["Subject"]).startswith("[mailbridge] Template")]
    notes = [r for r in got if r not in alerts]
    assert len(alerts) == 1 and len(notes) == 4
    assert str(parsed(alerts[0].data)["Subject"]) == ("[mailbridge] Template staff_notification.txt.j2 is broken; "
                                                      "the last good version is in use")
    alert = text_of(alerts[0].data)
    assert str(notification) in alert and "marketplce" in alert and "line" in alert
    # The two mails that came while the file was broken went out with the last good version, whole.
    for note in notes[:3]:
        body = text_of(note.data)
        assert OLD in body and "Marketplace:  amazon.com" in body and "marketplce" not in body
    assert NEW in text_of(notes[3].data) and OLD not in text_of(notes[3].data)
    assert "is broken, the last good version is in use" in log.read_text(errors="replace")
