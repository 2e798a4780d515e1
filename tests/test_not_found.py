"""What does not exist is NotFound (exit code 4, HTTP 404), named for what was looked up."""

import pytest

from scidex_alloc.allocator import Allocator
from scidex_alloc.errors import NOT_FOUND, NotFound, UnknownArtifact, UnknownId


@pytest.fixture
def allocator(db_url):
    allocator = Allocator.open(db_url)
    yield allocator
    allocator.engine.dispose()


@pytest.mark.parametrize("call, message", [
    (lambda a: a.reverse(424242), "no spend with id 424242"),
    (lambda a: a.done(424242), "no claim with id 424242"),
    (lambda a: a.release(2**63), f"no claim with id {2**63}"),
])
def test_an_unknown_spend_or_claim_id_is_unknown_id(allocator, call, message):
    with pytest.raises(UnknownId, match=message) as raised:
        call(allocator)
    assert not isinstance(raised.value, UnknownArtifact)
    assert isinstance(raised.value, NotFound) and raised.value.exit_code == NOT_FOUND


def test_an_unknown_artifact_is_unknown_artifact(allocator):
    with pytest.raises(UnknownArtifact) as raised:
        allocator.budget("no-such-artifact")
    assert isinstance(raised.value, NotFound) and raised.value.exit_code == NOT_FOUND
