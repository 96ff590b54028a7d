"""--max-count: one check, one message, nova-manage's exit code, for text and ints alike."""

from __future__ import annotations

import pytest
from novadb.counts import max_count
from novadb.errors import BadArgument
from novadb.online.runner import validate
from novadb.placement.heal import HealOptions


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("5", 5), (1, 1), (" 7 ", 7)])
def test_accepted(value: int | str | None, expected: int | None) -> None:
    assert max_count(value) == expected


@pytest.mark.parametrize("value", ["0", "-3", "many", "", "1.5", 0, -1])
def test_refused_the_same_way_by_every_operation(value: int | str) -> None:
    with pytest.raises(BadArgument) as info:
        max_count(value)
    assert (str(info.value), info.value.exit_code) == (
        "Must supply a positive integer for --max-count.",
        127,
    )
    if isinstance(value, int):
        for check in (lambda: validate(value, 50, "all"), HealOptions(max_count=value).validate):
            with pytest.raises(BadArgument) as again:
                check()
            assert str(again.value) == str(info.value)
