"""Folders written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, served memory-mapped.

Truth is what `datasets` yields in-process for the same spec: the saved split
as `to_iterable_dataset(num_shards=N)` with N = max(Arrow files of the split,
num_shards of the spec) (the rule `py_worker.spec.saved_num_shards` documents),
then select -> shard -> shuffle -> skip -> take.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from conftest import read_all

from py_worker.client import BridgeClient
from py_worker.config import ServerConfig
from py_worker.errors import InvalidArgument, NotFound, PermissionDenied
from py_worker.spec import DatasetSpec

PLAIN_ROWS = 3000
PLAIN_FILES = 3


def _dataset(n: int, start: int = 0):
    import datasets

    features = datasets.Features({
        "id": datasets.Value("int64"),
        "text": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["neg", "pos", "mixed"]),
        "tags": datasets.Sequence(datasets.Value("int32")),
        "score": datasets.Value("float32"),
    })
    rows = {
        "id": list(range(start, start + n)),
        "text": [f"row {i} " + "word " * (i % 13) for i in range(start, start + n)],
        "label": [i % 3 for i in range(start, start + n)],
        "tags": [list(range(i % 4)) for i in range(start, start + n)],
        "score": [i / 7 for i in range(start, start + n)],
    }
    return datasets.Dataset.from_dict(rows, features=features)


@pytest.fixture(scope="module")
def saved(data_root: Path) -> dict[str, Path]:
    """Saved datasets under the data root: a plain Dataset, a DatasetDict and an empty Dataset."""
    import datasets

    datasets.disable_progress_bars()
    out = {}
    plain = data_root / "saved_plain"
    if not plain.exists():
        _dataset(PLAIN_ROWS).save_to_disk(str(plain), num_shards=PLAIN_FILES)
    out["plain"] = plain
    dd = data_root / "saved_dict"
    if not dd.exists():
        datasets.DatasetDict({"train": _dataset(2000), "test": _dataset(500, start=10_000)}).save_to_disk(
            str(dd), num_shards={"train": 2, "test": 1})
    out["dict"] = dd
    empty = data_root / "saved_empty"
    if not empty.exists():
        _dataset(0).save_to_disk(str(empty))
    out["empty"] = empty
    return out


def _truth(path: Path, split: str = "train", *, columns: list[str] | None = None,
           shard: tuple[int, int] | None = None, shuffle: tuple[int, int] | None = None,
           skip: int = 0, take: int | None = None) -> pa.Table:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    ds = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    n = max(len(ds.cache_files), shard[0] if shard else 0)
    ids = ds.to_iterable_dataset(num_shards=n)
    if columns:
        ids = ids.select_columns(columns)
    if shard:
        ids = ids.shard(num_shards=shard[0], index=shard[1])
    if shuffle:
        ids = ids.shuffle(seed=shuffle[0], buffer_size=shuffle[1])
    if skip:
        ids = ids.skip(skip)
    if take is not None:
        ids = ids.take(take)
    return pa.concat_tables(list(ids.with_format("arrow").iter(batch_size=1000)))


def _rows(table: pa.Table | None) -> list[dict[str, Any]]:
    return [] if table is None else table.to_pylist()


def _ids(batches) -> list[int]:
    return [i for b in batches if b.table is not None for i in b.table.column("id").to_pylist()]


def test_plain_saved_dataset_matches_datasets_row_for_row(client, saved):
    h = client.open(DatasetSpec(str(saved["plain"])), batch_size=256)
    table, batches = read_all(client, h.session_id)
    truth = _truth(saved["plain"])
    assert truth.num_rows == PLAIN_ROWS
    assert _rows(table) == _rows(truth)
    assert [b.num_rows for b in batches[:-1]] == [256] * 11 + [PLAIN_ROWS - 11 * 256]
    assert batches[-1].end_of_data and [b.seq for b in batches] == list(range(len(batches)))
    assert table.schema.remove_metadata().equals(truth.schema.remove_metadata())
    assert h.features["label"] == {"names": ["neg", "pos", "mixed"], "_type": "ClassLabel"}
    # A relative path names the folder under the data root, as for any local dataset.
    h2 = client.open(DatasetSpec("saved_plain", take=5), batch_size=2)
    assert _rows(read_all(client, h2.session_id)[0]) == _rows(truth.slice(0, 5))


def test_a_split_of_a_dataset_dict_with_columns(client, saved):
    spec = DatasetSpec(str(saved["dict"]), split="test", columns=("text", "id"))
    h = client.open(spec, batch_size=100)
    table, _ = read_all(client, h.session_id)
    truth = _truth(saved["dict"], "test", columns=["text", "id"])
    assert table.column_names == ["text", "id"] == truth.column_names
    assert _rows(table) == _rows(truth)
    assert table.column("id").to_pylist() == list(range(10_000, 10_500))


def test_unknown_split_and_column_are_refused(client, saved):
    with pytest.raises(NotFound, match=r"split 'validation'.*\['train', 'test'\]"):
        client.open(DatasetSpec(str(saved["dict"]), split="validation"))
    with pytest.raises(NotFound, match=r"split 'test'.*\['train'\]"):
        client.open(DatasetSpec(str(saved["plain"]), split="test"))
    with pytest.raises(InvalidArgument, match="unknown column"):
        client.open(DatasetSpec(str(saved["plain"]), columns=("nope",)))
    # A DatasetDict without a "train" split would need one named; here "train" is the default.
    h = client.open(DatasetSpec(str(saved["dict"]), take=3), batch_size=10)
    assert read_all(client, h.session_id)[0].column("id").to_pylist() == [0, 1, 2]


def test_fields_that_do_not_apply_are_invalid(client, saved):
    from py_worker.spec import FilterTerm

    path = str(saved["plain"])
    with pytest.raises(InvalidArgument, match="data_files"):
        client.open(DatasetSpec(path, data_files=(("", ("*.arrow",)),)))
    with pytest.raises(InvalidArgument, match="Parquet"):
        client.open(DatasetSpec(path, filters=((FilterTerm("id", ">", 3),),)))
    with pytest.raises(InvalidArgument, match="configs"):
        client.open(DatasetSpec(path, config="other"))


@pytest.mark.parametrize("n", [2, PLAIN_FILES, 5])
def test_shard_i_of_n_matches_datasets_and_covers_every_row_once(client, saved, n):
    got = []
    for i in range(n):
        h = client.open(DatasetSpec(str(saved["plain"]), num_shards=n, shard_index=i), batch_size=300)
        table, _ = read_all(client, h.session_id)
        assert _rows(table) == _rows(_truth(saved["plain"], shard=(n, i)))
        got += table.column("id").to_pylist()
    assert sorted(got) == list(range(PLAIN_ROWS))
    with pytest.raises(InvalidArgument, match="num_shards"):
        client.open(DatasetSpec(str(saved["dict"]), split="test", num_shards=501))


def test_shuffle_skip_take_match_datasets(client, saved):
    spec = DatasetSpec(str(saved["plain"]), shuffle=True, seed=7, shuffle_buffer=200, skip=30, take=1500)
    h = client.open(spec, batch_size=128)
    table, _ = read_all(client, h.session_id)
    truth = _truth(saved["plain"], shuffle=(7, 200), skip=30, take=1500)
    assert _rows(table) == _rows(truth)
    assert table.column("id").to_pylist() != sorted(table.column("id").to_pylist())


@pytest.mark.parametrize("max_bytes", [0, 5000])
def test_resume_from_an_acked_checkpoint_mid_way(server, saved, max_bytes):
    """Acked part + resumed rest == every row once, in order, also when wire batches cut HF batches."""
    spec = DatasetSpec(str(saved["dict"]))
    c = BridgeClient(server.target, timeout=60)
    try:
        h = c.open(spec, batch_size=150, max_batch_bytes=max_bytes)
        first = list(c.read(h.session_id, max_batches=9))
        k = 6
        assert c.ack(h.session_id, k) == k
    finally:
        c.close()  # drop the channel; batches after k were delivered but not acked
    c2 = BridgeClient(server.target, timeout=60)
    try:
        r = c2.resume(h.resume_token)
        assert r.next_seq == k + 1
        rest = list(c2.read(r.session_id))
        assert rest[0].seq == k + 1
        assert _ids(rest[:1]) == _ids(first[k + 1:k + 2])  # an unacked batch re-reads identically
        assert _ids(first[: k + 1]) + _ids(rest) == list(range(2000))
        c2.close_session(r.session_id)
    finally:
        c2.close()


def test_get_info_reports_exact_row_counts(client, saved):
    info = client.info(DatasetSpec(str(saved["dict"])))
    assert info.splits == [("train", 2000), ("test", 500)]
    assert info.num_shards == 2 and info.builder == "load_from_disk"
    assert set(info.features) == {"id", "text", "label", "tags", "score"}
    assert info.schema is not None and info.schema.names == ["id", "text", "label", "tags", "score"]
    raw = {s.name: s for s in info.raw.splits}
    assert raw["test"].num_bytes > 0
    plain = client.info(DatasetSpec(str(saved["plain"]), split="train"))
    assert plain.splits == [("train", PLAIN_ROWS)] and plain.num_shards == PLAIN_FILES
    assert json.loads(info.raw.features_json)["label"]["names"] == ["neg", "pos", "mixed"]


def test_an_empty_saved_dataset_ends_at_once(client, saved):
    h = client.open(DatasetSpec(str(saved["empty"])), batch_size=10)
    table, batches = read_all(client, h.session_id)
    assert table is None and len(batches) == 1 and batches[0].end_of_data
    assert h.schema is not None and "id" in h.schema.names
    assert client.info(DatasetSpec(str(saved["empty"]))).splits == [("train", 0)]


def test_saved_dataset_outside_the_roots_is_refused(client, saved, outside_dir, data_root):
    target = outside_dir / "saved_secret"
    if not target.exists():
        shutil.copytree(saved["plain"], target)
    with pytest.raises(PermissionDenied):
        client.open(DatasetSpec(str(target)))
    with pytest.raises(PermissionDenied):
        client.info(DatasetSpec(str(target)))
    link = data_root / "saved_escape"
    if not link.exists():
        link.symlink_to(target, target_is_directory=True)
    with pytest.raises(PermissionDenied):
        client.open(DatasetSpec("saved_escape"))
    # A saved folder whose Arrow file is a symlink leading outside the roots is refused too.
    inner = data_root / "saved_inner_link"
    if not inner.exists():
        shutil.copytree(saved["dict"] / "test", inner)
        arrow = next(inner.glob("*.arrow"))
        arrow.unlink()
        arrow.symlink_to(next(target.glob("*.arrow")))
    with pytest.raises(PermissionDenied):
        client.open(DatasetSpec(str(inner)))


def test_export_of_a_saved_split_matches_datasets(tmp_path, saved, data_root):
    from py_worker.export.destination import resolve_destination
    from py_worker.export.engine import run_export
    from py_worker.export.options import ExportOptions

    from export_support import read_export

    config = ServerConfig(data_roots=[data_root], export_roots=[tmp_path])
    spec = DatasetSpec(str(saved["dict"]), split="test")
    dest = resolve_destination(str(tmp_path / "out"), config.export_roots)
    progress: list = []
    result = run_export(spec, dest, ExportOptions(batch_size=64, max_file_bytes=3_000), config,
                        progress=progress.append)
    manifest, got = read_export(tmp_path / "out")
    truth = _truth(saved["dict"], "test")
    assert result.rows == manifest["totals"]["rows"] == 500
    assert len(manifest["files"]) > 1
    assert _rows(got) == _rows(truth)
    assert progress and progress[-1].total_rows == 500  # the exact row count of the saved split


def test_the_shard_count_rule(saved):
    import datasets

    from py_worker.spec import saved_num_shards

    plain = datasets.load_from_disk(str(saved["plain"]))
    small = datasets.load_from_disk(str(saved["dict"]))["test"]
    assert saved_num_shards(plain, DatasetSpec("p")) == PLAIN_FILES  # one per Arrow file
    assert saved_num_shards(plain, DatasetSpec("p", num_shards=2)) == PLAIN_FILES
    assert saved_num_shards(plain, DatasetSpec("p", num_shards=8, shard_index=1)) == 8
    assert saved_num_shards(small, DatasetSpec("p", num_shards=900)) == 500  # never more shards than rows
    # The same spec over the same data always gives the same shards (so checkpoints resume).
    assert saved_num_shards(datasets.load_from_disk(str(saved["plain"])), DatasetSpec("p")) == PLAIN_FILES


def test_a_saved_folder_rewritten_in_place_is_served_anew(client, data_root):
    """Workers keep recently opened saved splits mapped; a new `save_to_disk` to the same folder is seen."""
    folder = data_root / "saved_rewritten"
    shutil.rmtree(folder, ignore_errors=True)
    _dataset(40).save_to_disk(str(folder))
    for _ in range(2):  # the second open is served from the worker's cache
        h = client.open(DatasetSpec(str(folder)), batch_size=16)
        assert _ids(read_all(client, h.session_id)[1]) == list(range(40))
    shutil.rmtree(folder)
    _dataset(25, start=1000).save_to_disk(str(folder))
    h = client.open(DatasetSpec(str(folder)), batch_size=16)
    assert _ids(read_all(client, h.session_id)[1]) == list(range(1000, 1025))


def test_saved_splits_are_cached_per_version(tmp_path):
    from py_worker import spec as spec_mod

    folder = tmp_path / "ds"
    _dataset(10).save_to_disk(str(folder))
    first = spec_mod._load_saved_split(folder)
    assert spec_mod._load_saved_split(folder) is first
    shutil.rmtree(folder)
    _dataset(12).save_to_disk(str(folder))
    second = spec_mod._load_saved_split(folder)
    assert second is not first and len(second) == 12
