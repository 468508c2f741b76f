from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.backends.signals import connection_created
from django.dispatch import receiver
from django.test import Client

from accounts.roles import ensure_roles
from accounts.services import api_token_issue
from agents.models import Agent
from core.secrets import forget_cached
from demo.seed import seed_agent, seed_all, seed_contacts, seed_orders, seed_user
from live.relay import inline_relay

ON_POSTGRES = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
ON_REDIS = bool(os.environ.get("REDIS_URL"))

needs_postgres = pytest.mark.skipif(
    not ON_POSTGRES, reason="needs PostgreSQL: set DATABASE_URL=postgres://... (CI does)"
)
needs_redis = pytest.mark.skipif(not ON_REDIS, reason="needs Redis: set REDIS_URL=redis://... (CI does)")

PASSWORD = "test-password-1"


@pytest.fixture(autouse=True)
def _anchors_per_test(settings: Any, tmp_path: Any) -> None:
    # Each test's database starts empty, so its audit anchors start empty too.
    settings.AUDIT_ANCHOR_FILE = str(tmp_path / "audit-anchors.log")
    settings.AUDIT_ANCHOR_EXTRA_FILES = []
    # Known secrets are cached for a while; each test reads its own settings afresh.
    forget_cached()
    # This process's relay starts each test on a fresh epoch, and says so where sockets look.
    inline_relay().new_epoch()


@pytest.fixture(autouse=True)
def _inline_background_tasks(settings: Any) -> None:
    # Tasks run synchronously when their transaction commits; the end-to-end
    # test overrides this to use a real Celery worker.
    settings.BACKGROUND_TASKS = "inline"
    settings.LIVE_RELAY = "inline"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # The test client speaks plain HTTP even when the suite runs with production URLs.
    settings.SECURE_SSL_REDIRECT = False
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    # Pages render without a collectstatic manifest (production settings use one).
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _audit_trigger_allows_flush(request: pytest.FixtureRequest, django_db_blocker: Any) -> Iterator[None]:
    """Let the test database be emptied after transactional tests on PostgreSQL.

    The append-only trigger refuses TRUNCATE, which is how Django empties the
    tables after a transactional test. Replica mode skips ordinary triggers for
    this one session, set only at teardown, just before the flush; every
    connection handed out afterwards is reset by `_enforce_triggers`.
    """
    marker = request.node.get_closest_marker("django_db")
    transactional = (
        "transactional_db" in request.fixturenames
        or "live_server" in request.fixturenames
        or bool(marker and marker.kwargs.get("transaction"))
    )
    yield
    if transactional and connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")


@pytest.fixture(autouse=True)
def _no_database_connection_left_checked_out() -> Iterator[None]:
    """Fail the test whose threads kept pooled connections (the pool is shared by the whole run).

    A thread that used the ORM and ended without closing its connection keeps it checked
    out of psycopg's pool for good; ten of them later starve an unrelated test. Only the
    main thread's own connection may still be out when a test ends.
    """
    before = _held_by_other_threads()
    yield
    left = _held_by_other_threads() - before
    assert left <= 0, f"this test left {left} pooled database connection(s) checked out by other threads"


def _held_by_other_threads() -> int:
    # The pool as it is, never created here: reading `connection.pool` would open one.
    pool = getattr(connection, "_connection_pools", {}).get(connection.alias)
    if pool is None:
        return 0
    stats = pool.get_stats()
    mine = 1 if connection.connection is not None else 0
    return int(stats["pool_size"] - stats["pool_available"]) - mine


@receiver(connection_created)
def _enforce_triggers(sender: Any, connection: Any, **kwargs: Any) -> None:
    # Pooled connections keep session settings: undo the replica mode above.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = origin")


@pytest.fixture
def commit(django_capture_on_commit_callbacks: Any) -> Callable[[], Any]:
    """`with commit(): ...` runs what the block scheduled on commit, as production would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def demo(db: None) -> dict[str, Agent]:
    """The whole demo, for tests about all of it (the role matrix); most tests want the pieces below."""
    seed_all(password=PASSWORD)
    return {agent.slug: agent for agent in Agent.objects.all()}


@pytest.fixture
def roles(db: None) -> None:
    ensure_roles()


@pytest.fixture
def refund_agent(db: None) -> Agent:
    return seed_agent("refund-triage")


@pytest.fixture
def crm_agent(db: None) -> Agent:
    return seed_agent("crm-cleanup")


@pytest.fixture
def coordinator_agent(db: None) -> Agent:
    return seed_agent("support-coordinator")


@pytest.fixture
def demo_user(roles: None) -> Callable[[str], Any]:
    """`demo_user("reviewer")`: that demo user, with its role and its demo rights on the agents made so far."""
    return lambda username: seed_user(username, password=PASSWORD)


@pytest.fixture
def orders(db: None) -> None:
    seed_orders()


@pytest.fixture
def contacts(db: None) -> None:
    seed_contacts()


def user(username: str) -> Any:
    return get_user_model().objects.get(username=username)


@pytest.fixture
def outsider(db: None) -> Any:
    return get_user_model().objects.create_user(username="outsider", password=PASSWORD)


class ApiClient:
    def __init__(self, token: str) -> None:
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> Any:
        return self.client.get(path, headers=self.headers)

    def post(self, path: str, data: Any = None, *, raw: str | None = None) -> Any:

        body = raw if raw is not None else json.dumps(data)
        return self.client.post(path, data=body, content_type="application/json", headers=self.headers)


@pytest.fixture
def api_as(demo_user: Callable[[str], Any]) -> Callable[[str], ApiClient]:
    """`api_as("operator")`: an API client with that demo user's token (the user is made if it is missing)."""

    def make(username: str) -> ApiClient:
        return ApiClient(api_token_issue(user=demo_user(username), actor=None))

    return make


def refund_input(*, amount: float = 40, ticket: str = "The kettle arrived broken.", order: str = "ORD-1001") -> dict:
    return {"ticket": ticket, "order_id": order, "amount": amount}


@contextmanager
def held_open(work: Callable[[], Any]) -> Iterator[None]:
    """Run `work` in a transaction on another thread (its own connection) and keep that transaction open
    while the block runs, so what it locked stays locked; it commits after. An error in it fails the test."""
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with transaction.atomic():
                work()
                holding.set()
                assert release.wait(30)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()  # this thread's connection goes back to the pool

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(30), errors
        yield
    finally:
        release.set()
        holder.join(30)
    assert not errors, errors
