"""Parquet row groups decoded ahead (py_worker/parquet_readahead.py): same tables, same checkpoints."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from export_support import make_parquet_dataset

from py_worker import parquet_readahead


@pytest.fixture
def readahead() -> Iterator[Any]:
    """Switches read-ahead for the test; this process reads as `datasets` does again afterwards
    (the round-trip truth of other tests is computed here)."""
    yield parquet_readahead.enable
    parquet_readahead.enable(0)


def _stream(data: Path, **config: Any) -> Any:
    from datasets import load_dataset

    files = sorted(str(p) for p in data.glob("*.parquet"))
    return load_dataset("parquet", data_files=files, split="train", streaming=True, **config).with_format("arrow")


def _tables_and_states(data: Path, batch_size: int, state: dict | None = None) -> tuple[list[pa.Table], list[dict]]:
    ds = _stream(data)
    if state is not None:
        ds.load_state_dict(state)
    tables, states = [], []
    for table in ds.iter(batch_size=batch_size):
        tables.append(table)
        states.append(ds.state_dict())
    return tables, states


def test_tables_and_checkpoints_are_those_of_datasets_own_reader(tmp_path, readahead):
    data = make_parquet_dataset(tmp_path, n_files=3, rows_per_file=500)  # row groups of 97 rows
    assert pq.ParquetFile(next(data.glob("*.parquet"))).num_row_groups > 3

    readahead(0)
    plain, plain_states = _tables_and_states(data, 64)
    assert readahead(3) and parquet_readahead.enabled() == 3
    ahead, ahead_states = _tables_and_states(data, 64)

    assert [t.num_rows for t in ahead] == [t.num_rows for t in plain]
    assert pa.concat_tables(ahead).equals(pa.concat_tables(plain))
    assert ahead_states == plain_states

    # A checkpoint taken with read-ahead resumes exactly, with or without it.
    middle = ahead_states[10]
    rest_ahead, _ = _tables_and_states(data, 64, middle)
    readahead(0)
    rest_plain, _ = _tables_and_states(data, 64, middle)
    expected = pa.concat_tables(plain[11:])
    assert pa.concat_tables(rest_ahead).equals(expected)
    assert pa.concat_tables(rest_plain).equals(expected)


class _Recorder:
    """pyarrow.dataset, noting the `batch_readahead` each Parquet fragment scan is asked for."""

    def __init__(self, base: Any, seen: list[Any]) -> None:
        self._base, self._seen = base, seen

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._base, name)
        return _Recorder(value, self._seen) if name in ("ParquetFileFormat", "make_fragment", "subset") else value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _Recorder(self._base(*args, **kwargs), self._seen)

    def to_batches(self, *args: Any, **kwargs: Any) -> Any:
        options = kwargs.get("fragment_scan_options")
        self._seen.append((kwargs.get("batch_readahead"), None if options is None else options.pre_buffer))
        return self._base.to_batches(*args, **kwargs)


def test_datasets_parquet_scans_are_asked_to_read_ahead(tmp_path, readahead):
    data = make_parquet_dataset(tmp_path, n_files=2, rows_per_file=300)
    module = importlib.import_module("datasets.packaged_modules.parquet.parquet")
    seen: list[Any] = []
    assert readahead(3)
    pads = module.ds.base
    module.ds.base = _Recorder(pads, seen)  # what pyarrow is asked for, through the view
    own_options = pads.ParquetFragmentScanOptions(pre_buffer=True)
    try:
        rows = sum(t.num_rows for t in _stream(data).iter(batch_size=50))
        own = sum(t.num_rows for t in _stream(data, fragment_scan_options=own_options).iter(batch_size=50))
    finally:
        module.ds.base = pads
    assert rows == own == 600
    # One scan per file, each reading 3 row groups ahead; local files are
    # read as they are decoded rather than pre-buffered, unless the dataset's
    # configuration chose its own scan options.
    assert seen == [(3, False), (3, False), (3, None), (3, None)]

    readahead(0)
    assert module.ds is importlib.import_module("pyarrow.dataset")


def test_large_row_groups_are_read_fewer_ahead(tmp_path, readahead, monkeypatch):
    data = make_parquet_dataset(tmp_path, n_files=1, rows_per_file=300)
    meta = pq.ParquetFile(next(data.glob("*.parquet"))).metadata
    group = max(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    module = importlib.import_module("datasets.packaged_modules.parquet.parquet")
    seen: list[Any] = []
    assert readahead(3)
    pads = module.ds.base
    module.ds.base = _Recorder(pads, seen)
    try:
        for budget in (10 * group, 2 * group, group // 2):
            monkeypatch.setattr(parquet_readahead, "MAX_AHEAD_BYTES", budget)
            assert sum(t.num_rows for t in _stream(data).iter(batch_size=50)) == 300
    finally:
        module.ds.base = pads
    assert [ahead for ahead, _ in seen] == [3, 2, 0]


def test_off_or_with_another_parquet_reader_it_is_left_alone(monkeypatch, readahead):
    assert readahead(0) is False and parquet_readahead.enabled() == 0
    module = importlib.import_module("datasets.packaged_modules.parquet.parquet")
    monkeypatch.setattr(module, "ds", object())  # a reader that does not use pyarrow.dataset
    assert readahead(2) is False
    assert parquet_readahead.enabled() == 0
