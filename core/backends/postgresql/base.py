from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from django.db.backends.postgresql import base

from core.transactions import DeferredWritesMixin


class DatabaseWrapper(DeferredWritesMixin, base.DatabaseWrapper):
    def _pipelined(self) -> AbstractContextManager[Any]:
        return self.connection.pipeline()
