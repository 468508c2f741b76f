from __future__ import annotations

import os
import secrets
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from agents.models import Step, StepKind
from agents.services import run_start, traces_purge
from audit.models import AuditEvent
from audit.selectors import verify_chain
from config.asgi import application
from tests.conftest import PASSWORD, refund_input, user

ROOT = Path(__file__).resolve().parent.parent
# What production needs for tamper evidence besides SECRET_KEY (the tests below start it).
AUDIT_PROTECTION = {"AUDIT_CHAIN_KEY": "k" * 40, "AUDIT_ANCHOR_FILE": "/var/lib/countersign/anchors.log"}


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.mark.django_db
def test_login_is_throttled_after_repeated_failures(demo):
    client = Client()
    for _ in range(5):
        response = client.post("/login/", {"username": "reviewer", "password": "wrong"})
        assert response.status_code == 200
    blocked = client.post("/login/", {"username": "reviewer", "password": PASSWORD})
    assert blocked.status_code == 429
    assert b"Too many failed attempts" in blocked.content
    assert AuditEvent.objects.filter(event="auth.login_failed").count() == 5
    assert AuditEvent.objects.filter(event="auth.login_throttled").count() == 1
    # Another user from the same address is not locked out.
    assert client.post("/login/", {"username": "reviewer2", "password": PASSWORD}).status_code == 302
    cache.clear()  # the window passes
    assert Client().post("/login/", {"username": "reviewer", "password": PASSWORD}).status_code == 302


@pytest.mark.django_db
def test_a_websocket_from_another_origin_is_refused(demo):

    client = Client()
    client.force_login(user("reviewer"))
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()

    async def connects(origin: bytes) -> bool:
        headers = [(b"origin", origin), (b"host", b"127.0.0.1"), (b"cookie", cookie)]
        communicator = WebsocketCommunicator(application, "/ws/inbox/", headers=headers)
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return connected

    # The same logged-in session: accepted from the app's own origin, refused from another.
    assert async_to_sync(connects)(b"http://127.0.0.1") is True
    assert async_to_sync(connects)(b"http://evil.example") is False


def test_deploy_check_is_clean_with_production_settings():
    env = {
        **os.environ,
        "DATABASE_URL": "postgres://countersign@db.internal:5432/countersign",
        "REDIS_URL": "redis://redis.internal:6379/0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "countersign.example.com",
        **AUDIT_PROTECTION,
    }
    env.pop("HTTPS", None)
    env.pop("DEBUG", None)
    done = subprocess.run(  # noqa: PLW1510  (the exit code is what we assert)
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_production_refuses_to_start_without_a_secret_key():
    env = {**os.environ, "DATABASE_URL": "postgres://x@h/db", "REDIS_URL": "redis://h:6379/0"}
    env.pop("SECRET_KEY", None)
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], check=False, cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) must be set" in done.stderr


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("AUDIT_CHAIN_KEY", "AUDIT_CHAIN_KEY (or AUDIT_CHAIN_KEY_FILE) must be set in production"),
        ("AUDIT_ANCHOR_FILE", "AUDIT_ANCHOR_FILE must name a file outside the database in production"),
    ],
)
def test_production_refuses_to_start_without_audit_protection(missing, message):
    env = {
        **os.environ,
        **AUDIT_PROTECTION,
        "DATABASE_URL": "postgres://x@h/db",
        "REDIS_URL": "redis://h:6379/0",
        "SECRET_KEY": "s" * 50,
    }
    env.pop(missing)
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], check=False, cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert message in done.stderr
    # Unless it is told, in so many words, to run without.
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        check=False,
        cwd=ROOT,
        env={**env, "AUDIT_UNPROTECTED": "1"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_secret_key_can_come_from_a_file(tmp_path):
    key_file = tmp_path / "secret"
    key_file.write_text(secrets.token_urlsafe(50))
    env = {
        **os.environ,
        **AUDIT_PROTECTION,
        "DATABASE_URL": "postgres://x@h/db",
        "REDIS_URL": "redis://h:6379/0",
        "SECRET_KEY_FILE": str(key_file),
    }
    env.pop("SECRET_KEY", None)
    done = subprocess.run(  # noqa: PLW1510  (the exit code is what we assert)
        [
            sys.executable,
            "-c",
            "import django,os;os.environ['DJANGO_SETTINGS_MODULE']='config.settings';"
            "from django.conf import settings;print(settings.SECRET_KEY)",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.stdout.strip() == key_file.read_text()


@pytest.mark.django_db
def test_trace_retention_removes_prompts_but_never_touches_the_audit_log(demo, commit):
    with commit():
        run = run_start(agent=demo["refund-triage"], input=refund_input(amount=20), actor=None)
    Step.objects.filter(run=run).update(created_at=timezone.now() - timedelta(days=100))
    audit_before = list(AuditEvent.objects.values_list("seq", "hash"))
    purged = traces_purge(older_than_days=90)
    assert purged == Step.objects.filter(run=run, kind__in=[StepKind.LLM_CALL, StepKind.PROPOSAL]).count() > 0
    proposal = Step.objects.get(run=run, kind=StepKind.PROPOSAL)
    assert proposal.payload == {"tool": "issue_refund", "confidence": proposal.payload["confidence"], "purged": True}
    assert "request" not in Step.objects.filter(run=run, kind=StepKind.LLM_CALL).first().payload
    assert list(AuditEvent.objects.values_list("seq", "hash")) == audit_before
    assert verify_chain().ok
    assert traces_purge(older_than_days=90) == 0  # done once
