"""Hot-path reads, compare-and-set updates and inserts whose SQL is built once per process (`PreparedRead`,
`update_where`, `insert_row`).

Django builds a queryset and compiles its SQL anew every time one is evaluated. For the reads every
routed call, execution and agent step makes, that work costs more than PostgreSQL running them: the
read of an agent's tool with its breaker subquery was the largest single part of routing's CPU
(docs/benchmarks-history.md, "Prepared reads"). A `PreparedRead` builds its queryset once, from stand-in values,
and keeps what Django's compiler made of it: the SQL, where each stand-in sits among the parameters, the
columns each model is loaded from (select_related ones included), the annotations and the converters.
Each call puts its values in their places, sends the SQL, and loads the rows as the ORM's own
ModelIterable does (`Model.from_db`, Django's related-object populators, the same converters), or as
tuples for a `values_list()`.

What it accepts is narrow on purpose, so it can fail loudly but never bind a value in the wrong place:

- every value is an `int` or a `str` that reaches the SQL unchanged: an `exact` lookup on a primary or
  foreign key or on a text column, in as many places as the query uses it (Django sends a value of a
  plain integer column typed to its column, Int2 or Int4, and rules out one past its range: refused);
- the queryset is built twice, from two sets of stand-ins, and a value's places must be the same in both;
- a stand-in found nowhere among the compiled parameters (changed on its way, or unused), or a queryset
  whose rows are neither model rows nor `values_list()` tuples (`values()`, `prefetch_related`, a related
  manager's), raises ImproperlyConfigured at the first call;
- a call must pass the same names as the first, each of the same type (TypeError otherwise).

`update_where` is the same idea for the compare-and-set UPDATEs every agent step sends (a run's status,
its lease, its counters): the statement is built once per shape from the model's fields, and each value
is prepared by its field as `QuerySet.update()` prepares it (`get_db_prep_save`; a filter's value as a
lookup prepares it). It takes plain values only: no expressions, and no None in a filter (the ORM would
write `IS NULL`). `insert_row` saves a new row as `Model.save()` does (each field's `pre_save`, the
pre_save and post_save signals, the primary key read back), with its INSERT built once per model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, Generic, TypeAlias, TypeVar, cast

from django.core.exceptions import EmptyResultSet, ImproperlyConfigured
from django.db import connections, transaction
from django.db.models import Field, IntegerField, Model, QuerySet, signals
from django.db.models.query import ModelIterable, ValuesListIterable, get_related_populators

from core.inbound import MAX_INT

# The rows: a model, a model with annotations (django_stubs_ext.WithAnnotations), or a values_list() tuple.
R = TypeVar("R")

# Two sets of stand-in values (see PreparedRead._compile). The ints fit every integer column, a
# SmallIntegerField's and a PositiveIntegerField's included (an int outside its column's range would be
# ruled out of the query by Django before it reached the SQL).
_STAND_INS: tuple[Callable[[type, int, str], object], ...] = (
    lambda kind, i, name: 30_011 + i if kind is int else f"\x00prepared-read stand-in {name}\x00",
    lambda kind, i, name: 29_017 + i if kind is int else f"\x01prepared-read stand-in {name}\x01",
)


@dataclass(frozen=True)
class _Compiled:
    """What the compiler made of the queryset, kept for every later call."""

    alias: str
    sql: str
    params: tuple[Any, ...]
    slots: dict[str, list[int]]  # where each value goes among the parameters
    columns: int  # the row's columns (the SQL may select more, to order by)
    converters: list[tuple[int, tuple[list[Any], Any]]]  # column -> (converters, expression)
    model: type[Model]  # the queryset's model
    tuples: bool  # the rows are values_list() tuples, not model rows
    first_field: int = 0  # the model's columns in each row: row[first_field:end_field]
    end_field: int = 0
    init_list: tuple[str, ...] = ()  # their attribute names
    related: tuple[Any, ...] = ()  # Django's populators of select_related objects
    annotations: tuple[tuple[str, int], ...] = ()  # attribute name, column


class PreparedRead(Generic[R]):
    """`read(**values)` returns the rows of `build(**values)`; the SQL is compiled at the first call."""

    def __init__(self, build: Callable[..., QuerySet[Any, R]]) -> None:
        self._build = build
        self._name = build.__qualname__
        self._signature: tuple[tuple[str, type], ...] | None = None
        self._compiled: _Compiled | None = None
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
        c = self._compiled
        if any(_no_key(value) for value in values.values()):
            # Equal to no key a column can hold (the ORM sends no query for it either); SQLite's driver
            # would raise OverflowError binding it.
            return []
        bound = list(c.params)
        for name, slots in c.slots.items():
            for slot in slots:
                bound[slot] = values[name]
        connection = connections[c.alias]
        with connection.cursor() as cursor:
            cursor.execute(c.sql, bound)
            fetched = cursor.fetchall()
        loaded: list[Any] = []
        for raw in fetched:
            row = list(raw[: c.columns])
            for pos, (converters, expression) in c.converters:
                for converter in converters:
                    row[pos] = converter(row[pos], expression, connection)
            if c.tuples:
                loaded.append(tuple(row))
                continue
            obj = c.model.from_db(c.alias, c.init_list, row[c.first_field : c.end_field])
            for populator in c.related:
                populator.populate(row, obj)
            for attribute, pos in c.annotations:
                setattr(obj, attribute, row[pos])
            loaded.append(obj)
        return cast(list[R], loaded)

    def _built(self, signature: tuple[tuple[str, type], ...], stand_in: Callable[[type, int, str], object]) -> Any:
        stand_ins = {name: stand_in(kind, i, name) for i, (name, kind) in enumerate(signature)}
        queryset: Any = self._build(**stand_ins)
        rows_of = queryset._iterable_class
        if rows_of not in (ModelIterable, ValuesListIterable) or queryset._prefetch_related_lookups:
            raise ImproperlyConfigured(f"{self._name}: only model rows or values_list() tuples can be prepared")
        if queryset._known_related_objects:
            raise ImproperlyConfigured(f"{self._name}: a related manager's rows cannot be prepared")
        compiler = queryset.query.get_compiler(using=queryset.db)
        try:
            sql, params = compiler.as_sql()  # fills compiler.select, klass_info and annotation_col_map
        except EmptyResultSet as empty:  # an int stand-in outside its column's range
            raise ImproperlyConfigured(f"{self._name}: a stand-in value was ruled out of the query") from empty
        slots: dict[str, list[int]] = {}
        for name, value in stand_ins.items():
            # A stand-in changed on its way (say, wrapped in % by `contains`) is found nowhere.
            slots[name] = [i for i, p in enumerate(params) if type(p) is type(value) and p == value]
            if not slots[name]:
                raise ImproperlyConfigured(f"{self._name}: {name} must reach the SQL unchanged")
        return queryset, compiler, sql, params, slots

    def first(self, **values: int | str) -> R | None:
        rows = self(**values)
        return rows[0] if rows else None

    def get(self, **values: int | str) -> R:
        """The one row, as QuerySet.get: the model's DoesNotExist or MultipleObjectsReturned otherwise."""
        rows = self(**values)
        if len(rows) != 1:
            assert self._compiled is not None  # compiled by the call above
            model: Any = self._compiled.model
            error = model.DoesNotExist if not rows else model.MultipleObjectsReturned
            raise error(f"{self._name}({values}) matched {len(rows)} rows")
        return rows[0]

    def _compile(self, signature: tuple[tuple[str, type], ...]) -> _Compiled:
        for name, kind in signature:
            if kind not in (int, str):
                raise TypeError(f"{self._name}: {name} is a {kind.__name__}, not an int or a str")
        # Built twice, from two sets of stand-ins: a value's places are those where each set's stand-in
        # appears, and both builds must agree on them. A constant of the query that happens to equal one
        # stand-in is found in one build only, and refused, never overwritten.
        builds = [self._built(signature, stand_in) for stand_in in _STAND_INS]
        (queryset, compiler, sql, params, slots), (_, _, sql_b, params_b, slots_b) = builds
        rest = [p for i, p in enumerate(params) if not any(i in s for s in slots.values())]
        rest_b = [p for i, p in enumerate(params_b) if not any(i in s for s in slots_b.values())]
        if sql != sql_b or slots != slots_b or rest != rest_b:
            raise ImproperlyConfigured(f"{self._name}: its values' places in the SQL could not be told apart")
        select = compiler.select[: compiler.col_count]
        compiled = _Compiled(
            alias=queryset.db,
            sql=sql,
            params=tuple(params),
            slots=slots,
            columns=compiler.col_count,
            converters=list(compiler.get_converters([column[0] for column in select]).items()),
            model=queryset.model,
            tuples=queryset._iterable_class is ValuesListIterable,
        )
        if compiled.tuples:
            return compiled
        klass_info = compiler.klass_info
        start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        return replace(
            compiled,
            first_field=start,
            end_field=end,
            init_list=tuple(column[0].target.attname for column in select[start:end]),
            # django-stubs describes Django 6's signature (a fetch_mode); this is Django 5.2's.
            related=tuple(get_related_populators(klass_info, select, queryset.db)),  # type: ignore[call-arg]
            annotations=tuple(compiler.annotation_col_map.items()),
        )


# The filters update_where() takes: a column equal to a value, below it, not above it, or one of a list.
_OPERATORS = {"exact": "=", "lt": "<", "lte": "<=", "in": "IN"}


def update_where(
    model: type[Model],
    *,
    where: dict[str, Any],
    values: dict[str, Any] | None = None,
    add: dict[str, Any] | None = None,
    using: str = "default",
) -> int:
    """`UPDATE model SET field = value, counter = counter + delta WHERE ...`: the rows it changed.

    The same statement and result as `model.objects.filter(**where).update(**values, counter=F(counter) +
    delta)` for plain values, built once per shape (module docstring). `where` takes `name` (equal),
    `name__lt`, `name__lte` and `name__in` (a list); `pk` names the primary key.
    """
    values, add = values or {}, add or {}
    # A list's length is part of the shape: `IN (%s, %s)`, which every database Countersign runs on takes.
    shape = tuple((name, len(value) if name.endswith("__in") else 0) for name, value in where.items())
    if any(name.endswith("__in") and not count for name, count in shape):
        return 0  # in an empty list: no row matches, and the ORM sends nothing either
    if any(_no_key(value) for name, value in where.items() if "__" not in name):
        return 0  # equal to no key a column can hold, as above
    sql, set_fields, add_fields, where_fields = _update_statement(using, model, tuple(values), tuple(add), shape)
    connection: Any = connections[using]
    params = [f.get_db_prep_save(_plain(values[n]), connection) for n, f in set_fields]
    params += [f.get_db_prep_save(_plain(add[n]), connection) for n, f in add_fields]
    for name, field in where_fields:
        value = where[name]
        if name.endswith("__in"):
            params += [_filter_value(name, field, one, connection) for one in value]
        else:
            params.append(_filter_value(name, field, value, connection))
    with transaction.mark_for_rollback_on_error(using), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


def _no_key(value: Any) -> bool:
    # Past what a 64-bit column holds, the widest Countersign has (core.inbound.MAX_INT).
    return type(value) is int and not -MAX_INT - 1 <= value <= MAX_INT


def _filter_value(name: str, field: Field[Any, Any], value: Any, connection: Any) -> Any:
    """A filter's value as a lookup prepares it."""
    if value is None:
        raise TypeError(f"update_where: {name} is None (the ORM would write IS NULL; say so in SQL)")
    return field.get_db_prep_value(field.get_prep_value(_plain(value)), connection, prepared=True)


def _plain(value: Any) -> Any:
    if hasattr(value, "resolve_expression"):
        raise TypeError(f"update_where takes plain values, not {type(value).__name__}")
    return value


_Fields: TypeAlias = "list[tuple[str, Field[Any, Any]]]"  # the field behind each value, in order


@cache
def _update_statement(
    alias: str,
    model: type[Model],
    set_names: tuple[str, ...],
    add_names: tuple[str, ...],
    where: tuple[tuple[str, int], ...],
) -> tuple[str, _Fields, _Fields, _Fields]:
    """The UPDATE of one shape, and the field behind each of its values in order."""
    if not where:
        raise ValueError("update_where: an UPDATE without a filter would change every row")
    meta = model._meta
    ops: Any = connections[alias].ops

    def field(name: str) -> Field[Any, Any]:
        found = (
            meta.pk if name == "pk" else next((f for f in meta.concrete_fields if name in (f.name, f.attname)), None)
        )
        if found is None:
            raise ValueError(f"update_where: {model.__name__} has no column {name}")
        return found

    table = ops.quote_name(meta.db_table)
    set_fields = [(n, field(n)) for n in set_names]
    add_fields = [(n, field(n)) for n in add_names]
    assignments = [f"{ops.quote_name(f.column)} = %s" for _, f in set_fields]
    assignments += [f"{(c := ops.quote_name(f.column))} = {c} + %s" for _, f in add_fields]
    if not assignments:
        raise ValueError("update_where: nothing to set")
    where_fields, conditions = [], []
    for name, count in where:
        column, _, lookup = name.partition("__")
        if (lookup or "exact") not in _OPERATORS:
            raise ValueError(f"update_where: {name}: only {', '.join(_OPERATORS)} are supported")
        where_fields.append((name, field(column)))
        placeholder = f"({', '.join(['%s'] * count)})" if lookup == "in" else "%s"
        conditions.append(f"{ops.quote_name(field(column).column)} {_OPERATORS[lookup or 'exact']} {placeholder}")
    sql = f"UPDATE {table} SET {', '.join(assignments)} WHERE {' AND '.join(conditions)}"  # noqa: S608
    return sql, set_fields, add_fields, where_fields


def insert_row(obj: Model, using: str = "default", *, numbered: tuple[str, str] | None = None) -> None:
    """Insert a new `obj` as `obj.save(force_insert=True)` does, and set its primary key.

    Its INSERT is built once per model: every local column but the automatic primary key, each value from
    the field's `pre_save(add=True)` (an auto_now_add time is set on `obj` as save() sets it) prepared by
    `get_db_prep_save`; pre_save and post_save are sent as save() sends them. A model save() could not
    insert in one statement (a parent table, a database default, a generated column) is refused.

    `numbered=(field, within)`: `field` is not taken from `obj` but numbered in the INSERT itself, one past
    the highest among the rows with the same `within` (1 for the first), and set on `obj` from the row
    (a run's steps: one statement, not a read of the last step's number and then the INSERT). Two writers
    numbering under the same `within` at once are the caller's to prevent (a unique constraint refuses the
    second).
    """
    model = type(obj)
    if obj.pk is not None:
        raise ValueError(f"insert_row: this {model.__name__} has a primary key already; save() it")
    sql, fields = _insert_statement(using, model, numbered)
    connection: Any = connections[using]
    obj._prepare_related_fields_for_save(operation_name="save")  # type: ignore[attr-defined]
    signals.pre_save.send(sender=model, instance=obj, raw=False, using=using, update_fields=None)
    params = [f.get_db_prep_save(_plain(f.pre_save(obj, True)), connection) for f in fields]
    with transaction.mark_for_rollback_on_error(using), connection.cursor() as cursor:
        cursor.execute(sql, params)
        pk, *number = cursor.fetchone()
    setattr(obj, model._meta.pk.attname, pk)
    if numbered is not None:
        setattr(obj, numbered[0], number[0])  # a plain integer field (_insert_statement): its name is its attname
    obj._state.adding = False
    obj._state.db = using
    signals.post_save.send(sender=model, instance=obj, created=True, update_fields=None, raw=False, using=using)


@cache
def _insert_statement(
    alias: str, model: type[Model], numbered: tuple[str, str] | None
) -> tuple[str, list[Field[Any, Any]]]:
    """The INSERT, and the fields whose values it takes, in order (for `numbered`, the numbered field's place
    takes the `within` value its subquery compares)."""
    meta = model._meta
    if meta.parents or meta.order_with_respect_to or meta.db_returning_fields != [meta.auto_field]:
        raise ImproperlyConfigured(f"insert_row: a {model.__name__} is not one plain row with an automatic key")
    fields = [f for f in meta.local_concrete_fields if f is not meta.auto_field]
    if any(f.generated or f.has_db_default() for f in fields):
        raise ImproperlyConfigured(f"insert_row: {model.__name__} has a generated or database-default column")
    ops: Any = connections[alias].ops
    table, pk = ops.quote_name(meta.db_table), ops.quote_name(meta.pk.column)
    columns = ", ".join(ops.quote_name(f.column) for f in fields)
    values = ["%s"] * len(fields)
    returning = pk
    if numbered is not None:
        field, within = (cast("Field[Any, Any]", meta.get_field(name)) for name in numbered)
        if field not in fields or within not in fields or not isinstance(field, IntegerField):
            raise ImproperlyConfigured(f"insert_row: {model.__name__} cannot number {numbered[0]} within {numbered[1]}")
        number, scope = ops.quote_name(field.column), ops.quote_name(within.column)
        at = fields.index(field)
        values[at] = f"(SELECT COALESCE(MAX({number}), 0) + 1 FROM {table} WHERE {scope} = %s)"  # noqa: S608
        fields = [*fields[:at], within, *fields[at + 1 :]]
        returning = f"{pk}, {number}"
    sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(values)}) RETURNING {returning}"  # noqa: S608
    return sql, fields
