"""``mailbridge reload``: which processes are the daemon of a configuration file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli.reload import daemon_config

ETC = Path("/etc/mailbridge/mailbridge.toml")


@pytest.mark.parametrize("argv,env,expected", [
    (["/opt/mailbridge/bin/python3", "/opt/mailbridge/bin/mailbridge", "-c", str(ETC), "run"], {}, ETC),
    (["/usr/bin/python3", "-m", "bridge.cli", "-c", "/tmp/x/m.toml", "--log-level", "INFO", "run"], {},
     Path("/tmp/x/m.toml")),
    (["/opt/mailbridge/bin/mailbridge", "run", "-c", "m.toml"], {}, Path("/srv/m.toml")),   # relative: its cwd
    (["/opt/mailbridge/bin/mailbridge", "run"], {"MAILBRIDGE_CONFIG": "/srv/env.toml"}, Path("/srv/env.toml")),
    (["/opt/mailbridge/bin/mailbridge", "run"], {}, ETC),
    (["/opt/mailbridge/bin/mailbridge", "run", "--once"], {}, None),      # a cron pass, not the daemon
    (["/opt/mailbridge/bin/mailbridge", "status"], {}, None),
    (["/opt/mailbridge/bin/mailbridge", "reload"], {}, None),
    (["vim", "/etc/mailbridge/mailbridge.toml"], {}, None),
    (["/usr/bin/tail", "-f", "run"], {}, None),
    (["/opt/mailbridge/bin/mailbridge", "run", "--no-such-option"], {}, ETC),
])
def test_daemon_config_of_a_command_line(argv: list[str], env: dict[str, str], expected: Path | None) -> None:
    assert daemon_config(argv, env, Path("/srv")) == expected
