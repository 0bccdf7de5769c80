"""Values larger than a Kafka record, stored in parts (streams.parted), on a plain dict: the
functions only need a mapping, and a Faust table is one."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from streams.parted import PART_BYTES, PartedTable, delete_value, head_keys, read_value, write_value
from streams.partitions import partition_of_key

KEY = "district:370102"


class RecordingTable(dict):
    """A dict that logs every write and delete in order, as the changelog would hold them."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[bytes, bytes | None]] = []

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.log.append((key, value))
        super().__setitem__(key, value)

    def __delitem__(self, key: bytes) -> None:
        self.log.append((key, None))
        super().__delitem__(key)

    def pop(self, key, *default):
        if key in self:
            self.log.append((key, None))
        return super().pop(key, *default)


def replayed(log: list[tuple[bytes, bytes | None]]) -> dict[bytes, bytes]:
    """The table a worker recovers from these changelog records (compaction aside)."""
    table: dict[bytes, bytes] = {}
    for key, value in log:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return table


def test_a_small_value_is_stored_as_itself_under_its_key() -> None:
    table = RecordingTable()
    assert write_value(table, KEY, b'{"v":1}') == 1
    assert table == {KEY.encode(): b'{"v":1}'}
    assert read_value(table, KEY) == b'{"v":1}'
    assert read_value(table, "district:370103") is None


def test_a_large_value_is_stored_in_parts_no_larger_than_a_part_and_read_back() -> None:
    value = os.urandom(2 * PART_BYTES + 1000)
    table = RecordingTable()
    assert write_value(table, KEY, value) == 4  # three parts and the head
    parts = {k: v for k, v in table.items() if k != KEY.encode()}
    assert sorted(parts) == [f"{KEY}/a{n}".encode() for n in range(3)]
    assert max(map(len, table.values())) <= PART_BYTES
    assert read_value(table, KEY) == value
    assert head_keys(table) == {KEY}
    assert table.log[-1][0] == KEY.encode(), "the head must be written after its parts"


def test_rewrites_alternate_sets_and_leave_no_stale_part() -> None:
    table = RecordingTable()
    write_value(table, KEY, os.urandom(3 * PART_BYTES))
    second = os.urandom(PART_BYTES + 1)
    write_value(table, KEY, second)
    assert sorted(table) == sorted([KEY.encode(), f"{KEY}/b0".encode(), f"{KEY}/b1".encode()])
    assert read_value(table, KEY) == second
    write_value(table, KEY, b"small again")
    assert table == {KEY.encode(): b"small again"}
    delete_value(table, KEY)
    assert table == {}


@pytest.mark.parametrize("before", [b"small before", os.urandom(PART_BYTES * 2 + 7)])
def test_a_worker_that_died_at_any_point_of_a_write_recovers_the_old_or_the_new_value(
        before: bytes) -> None:
    """Cut the changelog after every record of a write (a crash mid-write, or the embedded
    broker's short end offsets): the recovered table holds the value before or after the
    write, never a mix and never nothing."""
    table = RecordingTable()
    write_value(table, KEY, before)
    write_value(table, KEY, os.urandom(PART_BYTES + 5))  # the other set holds a value too
    before_log = len(table.log)
    middle = read_value(table, KEY)
    after = os.urandom(3 * PART_BYTES - 3)
    write_value(table, KEY, after)
    seen = set()
    for cut in range(before_log, len(table.log) + 1):
        recovered = read_value(replayed(table.log[:cut]), KEY)
        assert recovered in (middle, after), f"cut after record {cut}"
        seen.add(recovered == after)
    assert seen == {False, True}


def test_parts_that_do_not_make_their_heads_value_are_refused() -> None:
    table = RecordingTable()
    write_value(table, KEY, os.urandom(2 * PART_BYTES))
    table[f"{KEY}/a1".encode()] = os.urandom(PART_BYTES)  # a part of some other value
    with pytest.raises(ValueError, match="do not make"):
        read_value(table, KEY)
    del table[f"{KEY}/a1".encode()]
    with pytest.raises(ValueError, match="2 parts expected, 1 found"):
        read_value(table, KEY)


def test_every_part_goes_to_the_partition_of_its_key() -> None:
    table = SimpleNamespace(partitions=8)
    home = partition_of_key(KEY, 8)
    for key in (KEY.encode(), f"{KEY}/a0".encode(), f"{KEY}/b17".encode(), f'"{KEY}"'):
        assert PartedTable.partition_for_key(table, key) == home  # type: ignore[arg-type]
    assert head_keys([KEY.encode(), f"{KEY}/a0".encode(), b'"city:370100"']) == {
        KEY, "city:370100"}
