"""The demo tools, registered in the tool registry when the app loads."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Annotated, Any

from django.conf import settings
from django.db import connection
from django.db.models import F
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agents.tools import Finding, Impact, Stake, Tool, ToolContext, ToolError, register
from core.inbound import MAX_INT
from demo.models import Contact, Order, Refund


class IssueRefundArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: Annotated[str, Field(pattern=r"^ORD-\d{4,}$", description="Order number, e.g. ORD-1001")]
    amount: Annotated[Decimal, Field(gt=0, le=100000, max_digits=10, decimal_places=2)]
    reason: Annotated[str, Field(min_length=1, max_length=500)]


def _fault_injection_delay() -> None:
    # For fault-injection tests and the soak benchmark only: hold the effect's
    # transaction open so a worker can be killed in the middle of it.
    delay = float(getattr(settings, "DEMO_TOOL_DELAY_SECONDS", 0) or 0)
    if delay:
        time.sleep(delay)


def issue_refund(args: IssueRefundArgs, context: ToolContext) -> dict[str, Any]:
    idempotency_key = context.idempotency_key
    existing = Refund.objects.filter(idempotency_key=idempotency_key).select_related("order").first()
    if existing is not None:
        return _refund_result(existing)
    order = Order.objects.select_for_update().filter(order_id=args.order_id).first()
    if order is None:
        raise ToolError("order_not_found", f"there is no order {args.order_id}")
    if order.refunded_total + args.amount > order.total:
        raise ToolError(
            "exceeds_order_total",
            f"refund {args.amount} would exceed order total {order.total} (already refunded {order.refunded_total})",
        )
    refund = Refund.objects.create(order=order, amount=args.amount, reason=args.reason, idempotency_key=idempotency_key)
    order.refunded_total += args.amount
    order.save(update_fields=["refunded_total"])
    _fault_injection_delay()
    return _refund_result(refund)


def reverse_refund(args: IssueRefundArgs, result: dict[str, Any], key: str) -> dict[str, Any]:
    refund = Refund.objects.select_for_update().filter(pk=int(result.get("refund_id") or 0)).first()
    if refund is None:
        raise ToolError("refund_not_found", "the refund to reverse does not exist")
    if refund.reversed_at is None:
        Refund.objects.filter(pk=refund.pk).update(reversed_at=timezone.now())
        Order.objects.filter(pk=refund.order_id).update(refunded_total=F("refunded_total") - refund.amount)
    return {"reversed_refund_id": refund.pk, "amount": str(refund.amount)}


def stake_refund(args: IssueRefundArgs) -> Stake:
    order = Order.objects.filter(order_id=args.order_id).first()
    if order is None:
        return Stake(findings=(Finding("order_not_found", f"there is no order {args.order_id}"),))
    findings: tuple[Finding, ...] = ()
    if order.refunded_total + args.amount > order.total:
        findings = (
            Finding(
                "exceeds_order_total",
                f"refunded in all {order.refunded_total + args.amount}, above the order's total {order.total}",
            ),
        )
    share = float(args.amount / order.total) if order.total > 0 else None
    return Stake(share=share, of=f"order {order.order_id}'s total {order.total}", findings=findings)


def preview_refund(args: IssueRefundArgs) -> dict[str, Any]:
    order = Order.objects.filter(order_id=args.order_id).first()
    if order is None:
        return {"error": f"there is no order {args.order_id}"}
    return {
        "order": order.order_id,
        "customer": order.customer,
        "order_total": str(order.total),
        "refunded_before": str(order.refunded_total),
        "refunded_after": str(order.refunded_total + args.amount),
    }


def validate_refund(args: IssueRefundArgs) -> list[dict[str, str]]:
    order = Order.objects.filter(order_id=args.order_id).first()
    if order is None:
        return [{"field": "order_id", "message": f"there is no order {args.order_id}"}]
    remaining = order.total - order.refunded_total
    if args.amount > remaining:
        return [{"field": "amount", "message": f"at most {remaining} of order {order.order_id} is left to refund"}]
    return []


def _refund_result(refund: Refund) -> dict[str, Any]:
    return {"refund_id": refund.pk, "order_id": refund.order.order_id, "amount": str(refund.amount)}


def contact_keys(ids: list[int]) -> list[int]:
    """The ids a contact's key could be: one past what the column holds is no contact (reported missing), and
    SQLite's driver (the demo's default database) could not even bind it."""
    return [i for i in ids if i <= MAX_INT]


class DeleteContactsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1, max_length=500)]

    @field_validator("ids")
    @classmethod
    def unique_ids(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("contact ids must not repeat")
        return value


def delete_contacts(args: DeleteContactsArgs, context: ToolContext) -> dict[str, Any]:
    idempotency_key = context.idempotency_key
    already = list(Contact.objects.filter(deleted_by_key=idempotency_key).values_list("id", flat=True))
    if already:
        return {"deleted": sorted(already), "missing": sorted(set(args.ids) - set(already))}
    live = Contact.objects.select_for_update().filter(id__in=contact_keys(args.ids), deleted_at__isnull=True)
    ids = sorted(live.values_list("id", flat=True))
    Contact.objects.filter(id__in=ids).update(deleted_at=timezone.now(), deleted_by_key=idempotency_key)
    _fault_injection_delay()
    return {"deleted": ids, "missing": sorted(set(args.ids) - set(ids))}


def restore_contacts(args: DeleteContactsArgs, result: dict[str, Any], key: str) -> dict[str, Any]:
    ids = result.get("deleted", [])
    restored = Contact.objects.filter(id__in=ids, deleted_at__isnull=False).update(deleted_at=None, deleted_by_key="")
    return {"restored": restored}


# Every routed deletion computes its stake: one statement, written out because the ORM took longer to
# build this aggregate than the database to run it (docs/benchmarks-history.md, "Prepared reads"). Plain SQL that
# PostgreSQL and SQLite (the demo's default) both run: `IN` with one placeholder per id.
def stake_delete_sql(count: int) -> str:
    return (
        f"SELECT count(id), count(id) FILTER (WHERE id IN ({', '.join(['%s'] * count)}))"  # noqa: S608
        f" FROM {Contact._meta.db_table} WHERE deleted_at IS NULL"
    )


def stake_delete(args: DeleteContactsArgs) -> Stake:
    ids = contact_keys(args.ids) or [0]  # 0 is no contact either
    with connection.cursor() as cursor:
        cursor.execute(stake_delete_sql(len(ids)), ids)
        total, found = cursor.fetchone()
    findings: tuple[Finding, ...] = ()
    if found < len(args.ids):
        missing = len(args.ids) - found
        findings = (Finding("contacts_missing", f"{missing} of the ids are no contact (or already deleted)"),)
    return Stake(share=found / total if total else None, of=f"all {total} live contacts", findings=findings)


def preview_delete(args: DeleteContactsArgs) -> dict[str, Any]:
    found = list(Contact.objects.filter(id__in=args.ids, deleted_at__isnull=True).values("id", "name", "email"))
    return {
        "will_delete": len(found),
        "contacts": found[:50],
        "missing_or_already_deleted": sorted(set(args.ids) - {c["id"] for c in found}),
    }


def validate_delete(args: DeleteContactsArgs) -> list[dict[str, str]]:
    live = set(Contact.objects.filter(id__in=args.ids, deleted_at__isnull=True).values_list("id", flat=True))
    missing = [i for i in args.ids if i not in live]
    if missing:
        listed = ", ".join(str(i) for i in missing[:20]) + (" …" if len(missing) > 20 else "")
        return [{"field": "ids", "message": f"no such contact (or already deleted): {listed}"}]
    return []


ISSUE_REFUND = register(
    Tool(
        name="issue_refund",
        description="Refund part or all of an order to the customer.",
        args_model=IssueRefundArgs,
        impact=Impact.FINANCIAL,
        execute=issue_refund,
        magnitude=lambda args: args.amount,
        compensate=reverse_refund,
        stake=stake_refund,
        preview=preview_refund,
        validate=validate_refund,
    )
)

DELETE_CONTACTS = register(
    Tool(
        name="delete_contacts",
        description="Delete CRM contacts by id.",
        args_model=DeleteContactsArgs,
        impact=Impact.DESTRUCTIVE,
        execute=delete_contacts,
        magnitude=lambda args: Decimal(len(args.ids)),
        compensate=restore_contacts,
        stake=stake_delete,
        preview=preview_delete,
        validate=validate_delete,
    )
)
