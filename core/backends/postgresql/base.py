from __future__ import annotations

from django.db.backends.postgresql import base

from core.transactions import DeferredWritesMixin


class DatabaseWrapper(DeferredWritesMixin, base.DatabaseWrapper):
    pass
