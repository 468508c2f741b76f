from __future__ import annotations

from django.db.backends.sqlite3 import base

from core.transactions import DeferredWritesMixin


class DatabaseWrapper(DeferredWritesMixin, base.DatabaseWrapper):
    pass
