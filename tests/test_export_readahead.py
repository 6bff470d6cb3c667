"""The export's read-ahead thread (py_worker.export.readahead) over real `datasets` iterables."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest
from datasets import Dataset

from py_worker.export.readahead import read_ahead

ROWS = 1000


def _iterable(rows: int = ROWS, fail_at: int | None = None):
    """An Arrow-format IterableDataset of `rows` rows; with `fail_at`, iterating raises at that row."""
    ds = Dataset.from_dict({"id": list(range(rows)), "text": [f"row {i}" * 10 for i in range(rows)]})
    it = ds.to_iterable_dataset(num_shards=4)
    if fail_at is not None:
        def check(row: dict) -> dict:
            if row["id"] == fail_at:
                raise ValueError(f"bad row {fail_at}")
            return row

        it = it.map(check)
    return it.with_format("arrow")


def test_tables_arrive_in_order_each_with_the_state_after_it():
    plain = _iterable()
    expected = []
    for table in plain.iter(batch_size=64):
        expected.append((table.column("id").to_pylist(), plain.state_dict()))
    got = [(t.column("id").to_pylist(), s) for t, s in read_ahead(_iterable(), 64, max_bytes=1 << 20)]
    assert got == expected
    assert [i for ids, _ in got for i in ids] == list(range(ROWS))


def test_a_checkpoint_from_a_handed_over_state_resumes_after_that_table():
    pairs = list(read_ahead(_iterable(), 100, max_bytes=1 << 20))
    table, state = pairs[3]  # say a file closed after this table
    resumed = _iterable()
    resumed.load_state_dict(state)
    rest = [i for t in resumed.iter(batch_size=100) for i in t.column("id").to_pylist()]
    assert rest == list(range(table.column("id")[-1].as_py() + 1, ROWS))


def test_an_error_in_the_reader_reaches_the_consumer_after_the_tables_before_it():
    seen = []
    with pytest.raises(ValueError, match="bad row 700"):
        for table, _ in read_ahead(_iterable(fail_at=700), 50, max_bytes=1 << 20):
            seen.extend(table.column("id").to_pylist())
    assert seen == list(range(700))


def test_the_reader_stays_within_its_byte_bound_and_stops_when_the_consumer_leaves():
    one = next(iter(_iterable().iter(batch_size=10))).nbytes
    gen = read_ahead(_iterable(), 10, max_bytes=3 * one)
    first, _ = next(gen)
    assert isinstance(first, pa.Table)
    time.sleep(0.5)  # the reader runs ahead as far as it may
    frame = gen.gi_frame
    handover = frame.f_locals["handover"]
    assert handover.bytes <= 3 * one + one  # the bound, plus the one table always let through
    assert len(handover.items) < ROWS // 10 - 1
    reader = frame.f_locals["thread"]
    gen.close()
    assert not reader.is_alive()
    assert not any(t.name == "export-read-ahead" for t in threading.enumerate())


def test_a_bound_below_one_byte_is_refused():
    with pytest.raises(ValueError, match="max_bytes must be positive"):
        next(read_ahead(_iterable(), 10, max_bytes=0))
