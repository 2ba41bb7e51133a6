"""``python -m pxed.agent``: in the management OS with no arguments (the
settings come from the kernel command line); on a host with flags, see
``--help``."""

from __future__ import annotations

import sys

from pxed.agent import config, power
from pxed.agent.run import Agent


def _console(message: str) -> None:
    print(f"pxed-agent: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        settings = config.settings(argv)
    except config.ConfigError as e:
        _console(f"error: {e}")
        if argv:
            return 2
        # The management OS: end as it would have, reboot unless told otherwise.
        try:
            words = config.parse_cmdline(config.CMDLINE.read_text())
        except OSError:
            words = {}
        after = words.get("after", "reboot")
        return power.after(after if after in config.AFTER[:3] else "reboot", 1, _console)
    agent = Agent(settings)
    status = agent.run()
    return power.after(settings.after, status, agent.report.console)


if __name__ == "__main__":
    sys.exit(main())
