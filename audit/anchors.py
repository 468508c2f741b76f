"""External anchors: the chain's head, appended outside the database after every commit.

Each line is `{"seq", "hash", "at", "mac"}`, the mac an HMAC of the chain key.
`audit_verify` reads the anchors first, then the chain, and reports any anchored
row that is gone or differs: so cutting rows off the end, or deleting the
whole log and its checkpoints, is caught by anyone who cannot also rewrite the
anchor file. The file is append-only by convention: put it on storage the
database's owners cannot rewrite (another host, a WORM bucket via a sidecar,
`chattr +a`). Writing happens after COMMIT; if the process dies in between,
the periodic anchor (beat, `manage.py audit_checkpoint`) covers that head.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from audit.chain import signing_key, verifying_keys

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    where: str
    problem: str = ""


def _mac(key: bytes, seq: int, digest: str, at: str) -> str:
    return hmac.new(key, f"anchor:{seq}:{digest}:{at}".encode(), hashlib.sha256).hexdigest()


def anchor_files() -> list[Path]:
    return [Path(p) for p in [settings.AUDIT_ANCHOR_FILE, *settings.AUDIT_ANCHOR_EXTRA_FILES] if p]


def anchor_append(seq: int, digest: str) -> None:
    """Append the head (seq, hash) to the anchor file; never fails the caller."""
    path = settings.AUDIT_ANCHOR_FILE
    if not path:
        return
    at = timezone.now().isoformat()
    _, key = signing_key()
    line = json.dumps({"seq": seq, "hash": digest, "at": at, "mac": _mac(key, seq, digest, at)}) + "\n"
    try:
        # One write() of a short line with O_APPEND: lines from several processes never interleave.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError:
        logger.exception("audit anchor could not be appended to %s (seq %s)", path, seq)


def anchors_read() -> list[Anchor]:
    """Every anchor in the anchor files, each checked against its MAC."""
    keys = list(verifying_keys().values())
    found: list[Anchor] = []
    for path in anchor_files():
        if not path.exists():
            continue
        with path.open() as lines:
            for number, line in enumerate(lines, start=1):
                where = f"anchor {path.name}:{number}"
                try:
                    item = json.loads(line)
                    seq, digest, at, mac = int(item["seq"]), str(item["hash"]), str(item["at"]), str(item["mac"])
                except (ValueError, KeyError, TypeError):
                    found.append(Anchor(-1, "", where, "is unreadable"))
                    continue
                if not any(hmac.compare_digest(mac, _mac(k, seq, digest, at)) for k in keys):
                    found.append(Anchor(seq, digest, where, "has an invalid MAC (forged, or signed with another key)"))
                    continue
                found.append(Anchor(seq, digest, where))
    return found
