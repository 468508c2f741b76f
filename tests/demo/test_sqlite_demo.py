"""`make demo` runs on SQLite (no DATABASE_URL); CI's suite runs on PostgreSQL. SQL written out by hand for the
hot paths (core.prepared, the demo's stake) must run on both: the demo's loop, routed, decided and executed,
on a fresh SQLite database in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_routes_decides_and_executes_on_sqlite(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "AUDIT_ANCHOR_FILE")}
    env |= {"SQLITE_PATH": str(tmp_path / "demo.sqlite3"), "BACKGROUND_TASKS": "inline", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("sqlite_flow.py"))],
        check=False,  # its stderr is the message below
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line.split() for line in done.stdout.splitlines() if line.startswith(("delete_contacts", "issue_refund"))]
    assert lines == [["delete_contacts", "pending", "executed"], ["issue_refund", "pending", "executed"]]
