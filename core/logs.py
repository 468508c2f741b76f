"""Log output goes through the same secret scrubbing as everything stored (core.secrets)."""

from __future__ import annotations

import logging

from core.secrets import scrub_text


class ScrubbingFormatter(logging.Formatter):
    """Formats a record, traceback included, then masks every known secret value in the text."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub_text(super().format(record))
