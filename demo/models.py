"""Demo business tables the demo tools act on, so every effect is visible and countable."""

from __future__ import annotations

from decimal import Decimal

from django.db import models


class Order(models.Model):
    order_id = models.CharField(max_length=20, unique=True)
    customer = models.CharField(max_length=200)
    total = models.DecimalField(max_digits=10, decimal_places=2)
    refunded_total = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0"))

    def __str__(self) -> str:
        return self.order_id


class Refund(models.Model):
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="refunds")
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    reason = models.TextField()
    # The execution's key: a second attempt with the same key cannot insert a second refund.
    idempotency_key = models.CharField(max_length=80, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    reversed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"refund {self.amount} on {self.order_id}"


class Contact(models.Model):
    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=200)
    email = models.EmailField()
    # Deletion is recorded rather than destroying the row, so it stays countable
    # and can be compensated later.
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by_key = models.CharField(max_length=80, blank=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.id} {self.name}"
