"""What a process loads when it starts: every web process, worker and relay, and every restart, pays for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What the web process (config.asgi), a worker (config.celery, whose tasks are discovered when the app is
# finalized) and the relay (its command) import.
START = """
import json, sys
import django
django.setup()
import config.asgi, config.celery
from live.management.commands import live_relay
config.celery.app.loader.import_default_modules()
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""

# Needed only to fit a calibration map or compute a bound (approvals.calibration, STATISTICS_ON_DEMAND):
# together they were about 1 s of each process's start-up on a 2-core machine.
ON_DEMAND = {"scipy", "sklearn"}


def test_a_process_starts_without_the_statistics_libraries():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-c", START], cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "approvals" in loaded and "gateway" in loaded  # it did load the apps
    assert not loaded & ON_DEMAND, f"loaded at start-up: {sorted(loaded & ON_DEMAND)}"
