"""Hot-path reads whose SQL is compiled once per process (`PreparedRead`).

Django builds a queryset and compiles its SQL anew every time one is evaluated. For the reads every
routed call makes, that work costs more than PostgreSQL running them: the read of an agent's tool with
its breaker subquery was the largest single part of routing's CPU (docs/benchmarks.md, "Prepared
reads"). A `PreparedRead` builds its queryset once per database, from stand-in values, keeps the SQL
and where each stand-in sits among the parameters, and on every call puts that call's values there and
loads the rows with `Model.objects.raw` (the model's own columns and converters; an annotation is set
as an attribute, as the ORM sets it).

What it accepts is narrow on purpose, so it can fail loudly but never bind a value in the wrong place:

- every value is an `int` or a `str` that reaches the SQL unchanged (an `exact` lookup on an integer or
  text column, a foreign key's id);
- a stand-in that does not appear among the compiled parameters exactly once, or a queryset whose rows
  `raw` would load differently (`select_related`, `prefetch_related`, `values()`), raises
  ImproperlyConfigured at the first call;
- a call must pass the same names as the first, each of the same type (TypeError otherwise).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Model, QuerySet
from django.db.models.query import ModelIterable

# The rows: a model, or a model with annotations (django_stubs_ext.WithAnnotations).
R = TypeVar("R")

# Values no query of this project compares against: a stand-in found among the parameters can only be
# the one put there.
_INT_STAND_IN = -7_301_946_211
_STR_STAND_IN = "\x00prepared-read stand-in {}\x00"


class PreparedRead(Generic[R]):
    """`read(**values)` returns the rows of `build(**values)`; the SQL is compiled at the first call."""

    def __init__(self, build: Callable[..., QuerySet[Any, R]]) -> None:
        self._build = build
        self._name = build.__qualname__
        self._signature: tuple[tuple[str, type], ...] | None = None
        # The queryset's model and database, its SQL, its parameters, and where each value goes.
        self._compiled: tuple[type[Model], str, str, tuple[Any, ...], dict[str, int]] | None = None
        self._lock = threading.Lock()

    def __call__(self, **values: int | str) -> list[R]:
        signature = tuple(sorted((name, type(value)) for name, value in values.items()))
        if self._compiled is None:
            with self._lock:
                if self._compiled is None:
                    self._signature = signature
                    self._compiled = self._compile(signature)
        if signature != self._signature:
            raise TypeError(f"{self._name} was prepared for {self._signature}, called with {signature}")
        model, alias, sql, params, slots = self._compiled
        bound = list(params)
        for name, slot in slots.items():
            bound[slot] = values[name]
        return cast(list[R], list(model._default_manager.db_manager(alias).raw(sql, bound)))

    def first(self, **values: int | str) -> R | None:
        rows = self(**values)
        return rows[0] if rows else None

    def _compile(
        self, signature: tuple[tuple[str, type], ...]
    ) -> tuple[type[Model], str, str, tuple[Any, ...], dict[str, int]]:
        stand_ins: dict[str, int | str] = {}
        for i, (name, kind) in enumerate(signature):
            if kind is int:
                stand_ins[name] = _INT_STAND_IN - i
            elif kind is str:
                stand_ins[name] = _STR_STAND_IN.format(name)
            else:
                raise TypeError(f"{self._name}: {name} is a {kind.__name__}, not an int or a str")
        queryset = self._build(**stand_ins)
        if queryset._iterable_class is not ModelIterable or queryset._prefetch_related_lookups:  # type: ignore[attr-defined]
            raise ImproperlyConfigured(f"{self._name}: only a queryset of model rows can be prepared")
        if queryset.query.select_related:
            raise ImproperlyConfigured(f"{self._name}: raw() does not load select_related rows")
        sql, params = queryset.query.get_compiler(using=queryset.db).as_sql()
        slots: dict[str, int] = {}
        for name, stand_in in stand_ins.items():
            found = [i for i, p in enumerate(params) if type(p) is type(stand_in) and p == stand_in]
            if len(found) != 1:
                raise ImproperlyConfigured(
                    f"{self._name}: {name} must reach the SQL once and unchanged (found {len(found)} times)"
                )
            slots[name] = found[0]
        return queryset.model, queryset.db, sql, tuple(params), slots
