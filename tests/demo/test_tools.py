from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from demo.models import Contact, Order
from demo.tools import DELETE_CONTACTS, ISSUE_REFUND, DeleteContactsArgs, IssueRefundArgs

pytestmark = pytest.mark.django_db

# The database is set up once per test; every example only reads it.
EXAMPLES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@EXAMPLES
@given(
    refunded=st.decimals(min_value=0, max_value=351, places=2),
    amount=st.decimals(min_value=Decimal("0.01"), max_value=100000, places=2),
)
def test_a_refund_fits_exactly_when_its_order_exists_and_the_amount_is_still_refundable(demo, refunded, amount):
    Order.objects.filter(order_id="ORD-1003").update(total=Decimal(351), refunded_total=refunded)
    args = IssueRefundArgs(order_id="ORD-1003", amount=amount, reason="x")
    problems = ISSUE_REFUND.validate(args)
    if amount <= 351 - refunded:
        assert problems == []
    else:
        assert [p["field"] for p in problems] == ["amount"]
        assert f"at most {351 - refunded:.2f} of order ORD-1003" in problems[0]["message"]


@EXAMPLES
@given(number=st.integers(min_value=1051, max_value=10**9))
def test_a_refund_of_an_order_that_does_not_exist_is_refused_on_the_order_id(demo, number):
    problems = ISSUE_REFUND.validate(IssueRefundArgs(order_id=f"ORD-{number}", amount=Decimal(1), reason="x"))
    assert problems == [{"field": "order_id", "message": f"there is no order ORD-{number}"}]


@EXAMPLES
@given(ids=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=30, unique=True))
def test_a_deletion_fits_exactly_when_every_contact_exists_and_is_not_deleted(demo, ids):
    Contact.objects.filter(pk=7).update(deleted_at="2026-01-01T00:00:00Z")
    problems = DELETE_CONTACTS.validate(DeleteContactsArgs(ids=ids))
    missing = [i for i in ids if i > 200 or i == 7]
    assert bool(problems) == bool(missing)
    if missing:
        assert problems[0]["field"] == "ids"
        assert str(missing[0]) in problems[0]["message"]


@EXAMPLES
@given(
    ids=st.lists(
        st.integers(min_value=1, max_value=400) | st.integers(min_value=2**31 - 2, max_value=10**30),
        min_size=1,
        max_size=30,
        unique=True,
    ),
    deleted=st.sets(st.integers(min_value=1, max_value=200), max_size=20),
)
def test_a_deletions_stake_is_the_share_of_live_contacts_it_names(demo, ids, deleted):
    Contact.objects.update(deleted_at=None)
    Contact.objects.filter(pk__in=deleted).update(deleted_at="2026-01-01T00:00:00Z")
    live = set(Contact.objects.filter(deleted_at__isnull=True).values_list("id", flat=True))
    stake = DELETE_CONTACTS.stake(DeleteContactsArgs(ids=ids))
    found = len(live & set(ids))
    assert stake.share == found / len(live)
    assert stake.of == f"all {len(live)} live contacts"
    missing = len(ids) - found
    assert [f.message for f in stake.findings] == (
        [f"{missing} of the ids are no contact (or already deleted)"] if missing else []
    )
