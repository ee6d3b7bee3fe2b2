"""Levelled log lines for the service: journal priorities under systemd, timestamps on a terminal.

Under systemd (`$JOURNAL_STREAM` set, stderr connected to the journal) each line
starts with the kernel-style priority prefix `<3>` error, `<4>` warning, `<6>`
info, `<7>` debug, which journald turns into the entry's PRIORITY (so
`journalctl -u edge-anytime -p warning` shows problems only); elsewhere a line is
`2026-01-01 12:00:00,000 WARNING serve: ...`.

>>> logger = setup_logging("info", journal=True, stream=sys.stdout)
>>> logger.warning("camera stalled")
<4>serve: camera stalled
"""

from __future__ import annotations

import logging
import os
import sys

LEVELS = ("debug", "info", "warning", "error")
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in text.splitlines())


def under_journal() -> bool:
    """True when stderr is the journal's stream (systemd sets JOURNAL_STREAM=dev:inode of it)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def setup_logging(level: str = "info", journal: bool | None = None, stream=None,
                  name: str = "serve") -> logging.Logger:
    """The service logger, writing to `stream` (stderr) at `level` and above."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: use one of {LEVELS}")
    logger = logging.getLogger(f"edge_anytime.{name}")
    logger.handlers.clear()
    logger.propagate = False
    handler = logging.StreamHandler(stream or sys.stderr)
    journal = under_journal() if journal is None else journal
    handler.setFormatter(JournalFormatter(f"{name}: %(message)s") if journal
                         else logging.Formatter(f"%(asctime)s %(levelname)s {name}: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    return logger
