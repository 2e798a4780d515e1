"""Property-based tests of the ledger through the service, on SQLite and PostgreSQL."""

import uuid
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scidex_alloc.allocator import Allocator
from scidex_alloc.errors import AllocError

amounts = st.decimals(min_value=Decimal("0.000001"), max_value=60, places=6)
operations = st.lists(
    st.tuples(amounts, st.sampled_from([None, "k1", "k2", "k3"]), st.booleans()),
    min_size=1, max_size=12,
)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(demand=st.decimals(min_value=0, max_value=2000, places=6), ops=operations)
def test_spent_is_the_sum_of_the_log_and_replay_is_a_no_op(db_url, demand, ops):
    allocator = Allocator.open(db_url)
    artifact = f"p-{uuid.uuid4().hex}"
    allocator.populate([
        ("artifacts", ("id", "type"), [(artifact, "hypothesis")]),
        ("positions", ("artifact_id", "tokens"), [(artifact, demand)]),
    ])
    prefix = artifact + "-"
    recorded, first_by_key = Decimal(0), {}
    for amount, key, overdraft in ops:
        before = allocator.budget(artifact).row
        full_key = prefix + key if key else None
        try:
            record = allocator.spend(artifact, str(amount), key=full_key,
                                     allow_overdraft=overdraft)
        except AllocError as error:
            after = allocator.budget(artifact).row
            assert after.spent == before.spent, "a refused spend wrote nothing"
            if error.exit_code == 3:
                assert amount > before.remaining and not overdraft
            else:
                assert error.exit_code == 5 and full_key in first_by_key
            continue
        if record.replayed:
            assert first_by_key[full_key] == (amount, record.id)
            assert allocator.budget(artifact).row.spent == before.spent
            continue
        if full_key:
            first_by_key[full_key] = (amount, record.id)
        recorded += amount
        assert record.spent == recorded
        if not overdraft:
            assert record.remaining >= 0
    log = list(allocator.log(artifact))
    assert sum(e.tokens for e in log) == recorded == allocator.budget(artifact).row.spent
    allocator.engine.dispose()
