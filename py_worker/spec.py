"""DatasetSpec: what to read and how, mirroring `hf_bridge.v1.DatasetSpec`.

`open_iterable` turns a spec into a streaming `datasets.IterableDataset`;
`describe` answers GetInfo. The pipeline applied to the source is, in order:
select columns -> shard -> shuffle -> skip -> take (filters are pushed into
the Parquet reader). `trust_remote_code` is never enabled.

A local folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`
(it holds `state.json` or `dataset_dict.json`) is served memory-mapped: it is
opened with `datasets.load_from_disk(keep_in_memory=False)` and streamed with
`Dataset.to_iterable_dataset(num_shards=N)`, N chosen by `saved_num_shards`
(one shard per Arrow file of the split, more when a shard selection asks for
more), so every open of the same spec yields the same shards and checkpoints
resume exactly. A plain saved `Dataset` is the one split "train".
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Union

from py_worker.errors import BridgeError, FailedPrecondition, InvalidArgument, NotFound, from_exception
from py_worker import paths

if TYPE_CHECKING:  # pragma: no cover
    import datasets

    from py_worker.config import ServerConfig

Scalar = Union[int, float, str, bool]

PACKAGED_BUILDERS = ("parquet", "json", "csv", "arrow", "text")
FILTER_OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in")
DEFAULT_SHUFFLE_BUFFER = 1000
# `datasets` is not thread-safe while it resolves and prepares builders; opening is
# serialised per process (iteration itself runs concurrently).
OPEN_LOCK = threading.RLock()
# `save_to_disk` folders: a Dataset has state.json, a DatasetDict dataset_dict.json.
SAVED_DATASET_STATE = "state.json"
SAVED_DICT_STATE = "dataset_dict.json"
SAVED_BUILDER = "load_from_disk"
_EXT_BUILDER = {
    ".parquet": "parquet",
    ".jsonl": "json",
    ".json": "json",
    ".ndjson": "json",
    ".csv": "csv",
    ".arrow": "arrow",
    ".txt": "text",
}


@dataclass(frozen=True)
class FilterTerm:
    """One comparison `column op value`; for "in"/"not in" `value` is a tuple of scalars."""

    column: str
    op: str
    value: Any

    def as_tuple(self) -> tuple:
        """The pyarrow DNF tuple `(column, op, value)`."""
        v = list(self.value) if isinstance(self.value, tuple) else self.value
        return (self.column, self.op, v)


@dataclass(frozen=True)
class DatasetSpec:
    """A frozen, validated description of a dataset read (see the proto `DatasetSpec`)."""

    path: str
    config: str = ""
    split: str = ""
    revision: str = ""
    data_files: tuple[tuple[str, tuple[str, ...]], ...] = ()
    columns: tuple[str, ...] = ()
    filters: tuple[tuple[FilterTerm, ...], ...] = ()
    shuffle: bool = False
    seed: int = 0
    shuffle_buffer: int = 0
    num_shards: int = 0
    shard_index: int = 0
    skip: int = 0
    take: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    # ---- validation -------------------------------------------------------

    def validate(self) -> None:
        """Raise InvalidArgument when the spec is malformed (independent of any data)."""
        if not self.path or not self.path.strip():
            raise InvalidArgument("spec.path is empty: give a Hub id, a packaged builder or a local folder")
        if "\x00" in self.path:
            raise InvalidArgument("spec.path contains a NUL byte")
        for split, patterns in self.data_files:
            if not patterns:
                raise InvalidArgument(f"data_files for split '{split or 'train'}' has no patterns")
            for p in patterns:
                if not p or "\x00" in p:
                    raise InvalidArgument(f"data_files pattern {p!r} is empty or malformed")
        splits = [s for s, _ in self.data_files]
        if len(set(splits)) != len(splits):
            raise InvalidArgument(f"data_files names a split twice: {splits}")
        if len(set(self.columns)) != len(self.columns) or any(not c for c in self.columns):
            raise InvalidArgument(f"columns must be distinct non-empty names, got {list(self.columns)}")
        for clause in self.filters:
            if not clause:
                raise InvalidArgument("a filter clause (conjunction) is empty")
            for term in clause:
                if not term.column:
                    raise InvalidArgument("a filter has an empty column name")
                if term.op not in FILTER_OPS:
                    raise InvalidArgument(f"filter op {term.op!r} is not one of {', '.join(FILTER_OPS)}")
                if term.op in ("in", "not in"):
                    if not isinstance(term.value, tuple) or not term.value:
                        raise InvalidArgument(f"filter '{term.column} {term.op}' needs a non-empty list of values")
                    if any(isinstance(v, float) and not math.isfinite(v) for v in term.value):
                        raise InvalidArgument(f"filter '{term.column} {term.op}' has a non-finite value")
                else:
                    if term.value is None or isinstance(term.value, tuple):
                        raise InvalidArgument(f"filter '{term.column} {term.op}' needs exactly one value")
                    if isinstance(term.value, float) and math.isnan(term.value):
                        raise InvalidArgument(f"filter '{term.column} {term.op}' compares with NaN")
        if self.num_shards == 0 and self.shard_index != 0:
            raise InvalidArgument("shard_index given without num_shards")
        if self.num_shards and not 0 <= self.shard_index < self.num_shards:
            raise InvalidArgument(f"shard_index {self.shard_index} is not in [0, {self.num_shards})")
        for name in ("seed", "shuffle_buffer", "num_shards", "shard_index", "skip"):
            if getattr(self, name) < 0:
                raise InvalidArgument(f"{name} must not be negative")
        if self.take is not None and self.take < 0:
            raise InvalidArgument("take must not be negative")
        if self.seed >= 2**63:
            raise InvalidArgument("seed must be below 2**63")

    # ---- conversions -------------------------------------------------------

    @property
    def split_name(self) -> str:
        """The split to read ("train" when none is given)."""
        return self.split or "train"

    def filters_dnf(self) -> list[list[tuple]]:
        """Filters as pyarrow's disjunctive normal form: a list of lists of tuples."""
        return [[t.as_tuple() for t in clause] for clause in self.filters]

    def data_files_dict(self) -> dict[str, list[str]]:
        """data_files as `{split: [patterns]}` (an unnamed split is "train")."""
        return {(s or "train"): list(p) for s, p in self.data_files}

    @classmethod
    def from_proto(cls, msg: Any) -> "DatasetSpec":
        """Build from a `pb.DatasetSpec` (raises InvalidArgument when malformed)."""
        filters = []
        for clause in msg.filters:
            terms = []
            for f in clause.all:
                if f.op in ("in", "not in"):
                    value: Any = tuple(_scalar_from_proto(v, f.column) for v in f.values)
                else:
                    if not f.HasField("value"):
                        raise InvalidArgument(f"filter '{f.column} {f.op}' has no value")
                    value = _scalar_from_proto(f.value, f.column)
                terms.append(FilterTerm(f.column, f.op, value))
            filters.append(tuple(terms))
        return cls(
            path=msg.path,
            config=msg.config,
            split=msg.split,
            revision=msg.revision,
            data_files=tuple((d.split, tuple(d.patterns)) for d in msg.data_files),
            columns=tuple(msg.columns),
            filters=tuple(filters),
            shuffle=msg.shuffle,
            seed=msg.seed,
            shuffle_buffer=msg.shuffle_buffer,
            num_shards=msg.num_shards,
            shard_index=msg.shard_index,
            skip=msg.skip,
            take=msg.take if msg.HasField("take") else None,
        )

    def to_proto(self) -> Any:
        """The `pb.DatasetSpec` for this spec."""
        from py_worker.wire import pb

        msg = pb.DatasetSpec(
            path=self.path,
            config=self.config,
            split=self.split,
            revision=self.revision,
            columns=list(self.columns),
            shuffle=self.shuffle,
            seed=self.seed,
            shuffle_buffer=self.shuffle_buffer,
            num_shards=self.num_shards,
            shard_index=self.shard_index,
            skip=self.skip,
        )
        for s, patterns in self.data_files:
            msg.data_files.add(split=s, patterns=list(patterns))
        for clause in self.filters:
            c = msg.filters.add()
            for t in clause:
                f = c.all.add(column=t.column, op=t.op)
                if isinstance(t.value, tuple):
                    for v in t.value:
                        _scalar_to_proto(f.values.add(), v)
                else:
                    _scalar_to_proto(f.value, t.value)
        if self.take is not None:
            msg.take = self.take
        return msg

    def to_dict(self) -> dict:
        """A JSON-safe dict (stored in sqlite checkpoints and export manifests)."""
        d: dict[str, Any] = {
            "path": self.path,
            "config": self.config,
            "split": self.split,
            "revision": self.revision,
            "data_files": [{"split": s, "patterns": list(p)} for s, p in self.data_files],
            "columns": list(self.columns),
            "filters": [
                [{"column": t.column, "op": t.op, "value": list(t.value) if isinstance(t.value, tuple) else t.value}
                 for t in clause]
                for clause in self.filters
            ],
            "shuffle": self.shuffle,
            "seed": self.seed,
            "shuffle_buffer": self.shuffle_buffer,
            "num_shards": self.num_shards,
            "shard_index": self.shard_index,
            "skip": self.skip,
            "take": self.take,
        }
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetSpec":
        """Inverse of `to_dict` (missing keys take their defaults)."""
        try:
            filters = tuple(
                tuple(
                    FilterTerm(t["column"], t["op"], tuple(t["value"]) if isinstance(t["value"], list) else t["value"])
                    for t in clause
                )
                for clause in d.get("filters", [])
            )
            return cls(
                path=d["path"],
                config=d.get("config", ""),
                split=d.get("split", ""),
                revision=d.get("revision", ""),
                data_files=tuple((x.get("split", ""), tuple(x["patterns"])) for x in d.get("data_files", [])),
                columns=tuple(d.get("columns", [])),
                filters=filters,
                shuffle=bool(d.get("shuffle", False)),
                seed=int(d.get("seed", 0)),
                shuffle_buffer=int(d.get("shuffle_buffer", 0)),
                num_shards=int(d.get("num_shards", 0)),
                shard_index=int(d.get("shard_index", 0)),
                skip=int(d.get("skip", 0)),
                take=None if d.get("take") is None else int(d["take"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise InvalidArgument(f"malformed dataset spec dict: {exc}") from exc

    def to_json(self) -> str:
        """`to_dict` as compact JSON."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "DatasetSpec":
        """Inverse of `to_json`."""
        return cls.from_dict(json.loads(text))


def _scalar_from_proto(s: Any, column: str) -> Scalar:
    kind = s.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(f"filter on '{column}' has an empty value")
    return getattr(s, kind)


def _scalar_to_proto(target: Any, value: Scalar) -> None:
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.float_value = value
    elif isinstance(value, str):
        target.string_value = value
    else:
        raise InvalidArgument(f"filter value {value!r} is not an int, float, string or bool")


# ---- resolution ----------------------------------------------------------------


@dataclass
class Resolved:
    """Where a spec's data comes from, after the path policy was applied."""

    kind: str  # "builder", "folder", "file", "saved" (a save_to_disk folder) or "hub"
    path: str  # argument for load_dataset_builder
    data_files: dict[str, list[str]] | None = None
    local: Path | None = None
    extra: dict = field(default_factory=dict)


def resolve(spec: DatasetSpec, config: "ServerConfig") -> Resolved:
    """Classify the spec's path and check every local path against the data roots."""
    roots = config.data_roots
    df = spec.data_files_dict() or None
    if spec.path in PACKAGED_BUILDERS:
        if not df:
            raise InvalidArgument(f"builder '{spec.path}' needs data_files (e.g. --data-files 'data/*.{spec.path}')")
        return Resolved(
            "builder", spec.path, {s: paths.check_patterns(p, None, roots) for s, p in df.items()}
        )
    local = paths.find_local(spec.path, roots)
    if local is not None:
        if not local.exists():
            raise NotFound(f"local dataset '{spec.path}' does not exist (looked under {', '.join(map(str, roots))})")
        if local.is_file():
            builder = _EXT_BUILDER.get(local.suffix.lower())
            if builder is None:
                raise InvalidArgument(
                    f"cannot tell the format of '{local.name}'; use a packaged builder (parquet/json/csv/arrow/text) "
                    "with data_files"
                )
            if df:
                raise InvalidArgument("data_files cannot be combined with a single-file path")
            return Resolved("file", builder, {spec.split_name: [str(local)]}, local)
        if _is_saved_dir(local):
            paths.check_tree(local, roots)
            _check_saved_spec(spec)
            return Resolved("saved", str(local), None, local)
        script = local / f"{local.name}.py"
        if script.exists() and not (local / "README.md").exists() and not df:
            raise FailedPrecondition(
                f"dataset folder '{spec.path}' has a loading script ({script.name}); hf_bridge never runs dataset "
                "code (trust_remote_code stays off); point at its data files instead"
            )
        paths.check_tree(local, roots)
        data_files = {s: paths.check_patterns(p, local, roots) for s, p in df.items()} if df else None
        return Resolved("folder", str(local), data_files, local)
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise NotFound(
            f"dataset '{spec.path}' is not a local path under the data roots "
            f"({', '.join(map(str, roots))}) and the Hub is offline (HF_HUB_OFFLINE=1)"
        )
    return Resolved("hub", spec.path, df)


def _is_saved_dir(local: Path) -> bool:
    """True for a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return local.is_dir() and ((local / SAVED_DATASET_STATE).is_file() or (local / SAVED_DICT_STATE).is_file())


def _check_saved_spec(spec: DatasetSpec) -> None:
    """Refuse the spec fields that have no meaning for a `save_to_disk` folder."""
    if spec.data_files:
        raise InvalidArgument(f"'{spec.path}' is a saved dataset (save_to_disk); data_files do not apply to it")
    if spec.filters:
        raise InvalidArgument(f"filters apply to Parquet data only; '{spec.path}' is a saved dataset (save_to_disk)")
    if spec.config:
        raise InvalidArgument(f"'{spec.path}' is a saved dataset (save_to_disk); it has no configs, got {spec.config!r}")
    if spec.revision:
        raise InvalidArgument(f"'{spec.path}' is a saved dataset (save_to_disk); it has no revisions")


def _load_saved(spec: DatasetSpec, res: Resolved) -> tuple[dict[str, "datasets.Dataset"], str]:
    """Memory-map a `save_to_disk` folder: `({split: Dataset}, split to read)`.

    A plain `Dataset` is one split called "train". Raises NOT_FOUND for an
    unknown split, naming the splits there are.
    """
    folder = Path(res.path)
    try:
        if (folder / SAVED_DICT_STATE).is_file():
            names = json.loads((folder / SAVED_DICT_STATE).read_text())["splits"]
            splits = {}
            for name in names:
                sub = paths.check_under_roots(folder / str(name), [folder], "split folder")
                splits[str(name)] = _load_saved_split(sub)
        else:
            splits = {"train": _load_saved_split(folder)}
    except BridgeError:
        raise
    except Exception as exc:
        raise from_exception(exc, f"opening saved dataset '{spec.path}'") from exc
    return splits, spec.split_name


# Saved splits opened recently, kept memory-mapped: a worker opens the same saved
# dataset for many sessions (shards of one pipeline, re-runs), and a mapping that
# stays open costs neither `load_from_disk` nor a page fault per page again.
SAVED_CACHE_SIZE = 8
_saved_cache: "OrderedDict[tuple, datasets.Dataset]" = OrderedDict()
_saved_cache_lock = threading.Lock()


def _saved_signature(folder: Path, state: dict) -> tuple:
    """What identifies one version of a saved split: its state file and Arrow files, by size and mtime."""
    files = [folder / SAVED_DATASET_STATE] + [folder / str(f.get("filename", "")) for f in state.get("_data_files", [])]
    sig = []
    for f in files:
        st = f.stat()
        sig.append((f.name, st.st_size, st.st_mtime_ns))
    return (str(folder.resolve()), tuple(sig))


def _load_saved_split(folder: Path) -> "datasets.Dataset":
    """One saved `Dataset`, memory-mapped (cached per version, see `SAVED_CACHE_SIZE`); one saved with no
    rows (and so no Arrow file) is built empty."""
    state = json.loads((folder / SAVED_DATASET_STATE).read_text())
    key = _saved_signature(folder, state)
    with _saved_cache_lock:
        ds = _saved_cache.get(key)
        if ds is not None:
            _saved_cache.move_to_end(key)
            return ds
    ds = _open_saved_split(folder, state)
    with _saved_cache_lock:
        _saved_cache[key] = ds
        _saved_cache.move_to_end(key)
        while len(_saved_cache) > SAVED_CACHE_SIZE:
            _saved_cache.popitem(last=False)
    return ds


def _open_saved_split(folder: Path, state: dict) -> "datasets.Dataset":
    """Open one saved split from disk (its parsed `state.json` given)."""
    import datasets

    if not state.get("_data_files"):  # `load_from_disk` cannot open these
        info = datasets.DatasetInfo.from_directory(str(folder))
        features = info.features or datasets.Features()
        return datasets.Dataset.from_dict({name: [] for name in features}, features=features, info=info)
    return datasets.Dataset.load_from_disk(str(folder), keep_in_memory=False)


def saved_num_shards(ds: "datasets.Dataset", spec: DatasetSpec) -> int:
    """How many shards a saved split is streamed as (the same for every open of the same spec and data).

    The rule: one shard per Arrow file of the split; when the spec selects
    shard i of n with n larger than that, n shards (contiguous row ranges);
    never more shards than rows, and at least one.
    """
    n = max(len(ds.cache_files), spec.num_shards, 1)
    return max(1, min(n, len(ds)))


def _saved_iterable(ds: "datasets.Dataset", spec: DatasetSpec, split: str) -> "datasets.IterableDataset":
    """The saved split as a streaming dataset over its memory-mapped Arrow files."""
    import datasets

    if len(ds) == 0:  # `to_iterable_dataset` refuses zero rows
        ids = datasets.IterableDataset.from_generator(_no_rows, features=ds.features)
    else:
        ids = ds.to_iterable_dataset(num_shards=saved_num_shards(ds, spec))
    try:  # exact row count, so export jobs know their total
        splits = datasets.SplitDict()
        splits.add(datasets.SplitInfo(name=split, num_examples=len(ds), num_bytes=ds.data.nbytes))
        ids.info.splits = splits
    except Exception:  # noqa: BLE001 - the count is informative only
        pass
    return ids


def _no_rows() -> Iterator[dict]:
    """A generator of no rows (the source of an empty saved split)."""
    return
    yield  # pragma: no cover


def _builder(spec: DatasetSpec, config: "ServerConfig", res: Resolved | None = None) -> Any:
    import datasets

    res = res or resolve(spec, config)
    kwargs: dict[str, Any] = {}
    if spec.filters:
        if res.kind in ("builder", "file") and res.path != "parquet":
            raise InvalidArgument(f"filters apply to Parquet data only; this data is read by '{res.path}'")
        kwargs["filters"] = spec.filters_dnf()
    try:
        builder = datasets.load_dataset_builder(
            res.path,
            name=spec.config or None,
            data_files=res.data_files,
            revision=spec.revision or None,
            token=os.environ.get("HF_TOKEN") or None,
            **kwargs,
        )
    except BridgeError:
        raise
    except (ValueError, TypeError) as exc:
        if spec.filters and "filters" in str(exc):
            raise InvalidArgument(
                f"filters apply to Parquet data only; '{spec.path}' is not read by the parquet builder"
            ) from exc
        raise from_exception(exc, f"opening dataset '{spec.path}'") from exc
    except Exception as exc:
        raise from_exception(exc, f"opening dataset '{spec.path}'") from exc
    if spec.filters and builder.name != "parquet" and getattr(builder.config, "filters", None) is None:
        raise InvalidArgument(f"filters apply to Parquet data only; '{spec.path}' is read by '{builder.name}'")
    return builder


def _split_names(builder: Any) -> list[str]:
    files = getattr(builder.config, "data_files", None)
    if files:
        return [str(s) for s in files.keys()]
    if builder.info.splits:
        return [str(s) for s in builder.info.splits.keys()]
    return []


def _check_filters(spec: DatasetSpec, features: Any) -> None:
    if not spec.filters or features is None:
        return
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    for clause in spec.filters:
        for t in clause:
            if t.column not in features:
                raise InvalidArgument(f"filter column '{t.column}' is not in the dataset; columns: {list(features)}")
    try:
        expr = pq.filters_to_expression(spec.filters_dnf())
        pads.dataset(pa.Table.from_batches([], schema=features.arrow_schema)).to_table(filter=expr)
    except Exception as exc:
        raise InvalidArgument(f"filter does not apply to the data: {exc}") from exc


def open_iterable(spec: DatasetSpec, config: "ServerConfig") -> "datasets.IterableDataset":
    """Open `spec` as a streaming `IterableDataset` with columns, shard, shuffle, skip and take applied.

    Raises a BridgeError (NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED,
    FAILED_PRECONDITION, UNAVAILABLE, ...) with an actionable message.
    """
    with OPEN_LOCK:
        res = resolve(spec, config)
        if res.kind == "saved":
            return _open_saved(spec, res)[0]
        ds, _ = _open(spec, config, res=res)
    return ds


def _open_saved(spec: DatasetSpec, res: Resolved) -> tuple["datasets.IterableDataset", dict]:
    """A `save_to_disk` folder as a streaming dataset with the pipeline applied; also returns its splits."""
    splits, split = _load_saved(spec, res)
    if split not in splits:
        raise NotFound(f"split '{split}' not found in saved dataset '{spec.path}'; available splits: {list(splits)}")
    ds = _saved_iterable(splits[split], spec, split)
    return _pipeline(ds, spec, ds.features), splits


def _open(spec: DatasetSpec, config: "ServerConfig", builder: Any = None, res: Resolved | None = None) -> Any:
    builder = builder if builder is not None else _builder(spec, config, res)
    names = _split_names(builder)
    if names and spec.split_name not in names:
        raise NotFound(f"split '{spec.split_name}' not found; available splits: {names}")
    try:
        ds = builder.as_streaming_dataset(split=spec.split_name)
    except Exception as exc:
        raise from_exception(exc, f"opening split '{spec.split_name}' of '{spec.path}'") from exc
    features = known_features(ds, spec)
    _check_filters(spec, features)
    return _pipeline(ds, spec, features), builder


def _pipeline(ds: Any, spec: DatasetSpec, features: Any) -> Any:
    """Apply columns -> shard -> shuffle -> skip -> take to a streaming dataset."""
    try:
        if spec.columns:
            missing = [c for c in spec.columns if features is not None and c not in features]
            if missing:
                raise InvalidArgument(f"unknown column(s) {missing}; the dataset has columns {list(features or [])}")
            ds = ds.select_columns(list(spec.columns))
        if spec.num_shards:
            if spec.num_shards > ds.num_shards:
                ds = ds.reshard()
            if spec.num_shards > ds.num_shards:
                raise InvalidArgument(
                    f"num_shards {spec.num_shards} exceeds the {ds.num_shards} source shard(s) of this split"
                )
            ds = ds.shard(num_shards=spec.num_shards, index=spec.shard_index)
        if spec.shuffle:
            ds = ds.shuffle(seed=spec.seed, buffer_size=spec.shuffle_buffer or DEFAULT_SHUFFLE_BUFFER)
        if spec.skip:
            ds = ds.skip(spec.skip)
        if spec.take is not None:
            ds = ds.take(spec.take)
    except BridgeError:
        raise
    except Exception as exc:
        raise from_exception(exc, f"preparing '{spec.path}'") from exc
    return ds


def known_features(ds: Any, spec: DatasetSpec | None = None) -> Any:
    """The dataset's HF Features; when `datasets` infers them lazily (JSON, CSV), infer them from the first rows.

    The dataset itself is left as is, so its batches stay exactly what `datasets` yields.
    """
    if ds.features is not None:
        return ds.features
    try:
        with OPEN_LOCK:
            return ds._resolve_features().features
    except Exception as exc:
        where = f" of '{spec.path}'" if spec is not None else ""
        raise from_exception(exc, f"reading the first rows{where}") from exc


def schema_ipc(schema: Any) -> bytes:
    """An Arrow IPC stream holding only `schema` (then end-of-stream)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema):
        pass
    return sink.getvalue().to_pybytes()


def features_json(features: Any) -> str:
    """HF `Features` as JSON (`Features.to_dict()`), or "{}" when unknown."""
    if features is None:
        return "{}"
    return json.dumps(features.to_dict())


def describe(spec: DatasetSpec, config: "ServerConfig") -> Any:
    """GetInfo: a `pb.DatasetInfo` with features, Arrow schema, splits, shards, builder and configs.

    An empty split in `spec` describes "train" when present, else the first split.
    """
    with OPEN_LOCK:
        return _describe(spec, config)


def _describe_saved(spec: DatasetSpec, res: Resolved) -> Any:
    """GetInfo for a `save_to_disk` folder: exact row and byte counts of every split."""
    from dataclasses import replace

    from py_worker.wire import pb

    splits, _ = _load_saved(spec, res)
    if not spec.split and "train" not in splits and splits:
        spec = replace(spec, split=next(iter(splits)))
    ds, _ = _open_saved(spec, res)
    features = known_features(ds, spec)
    source = splits[spec.split_name]
    info = pb.DatasetInfo(
        features_json=features_json(features),
        arrow_schema=schema_ipc(features.arrow_schema) if features is not None else b"",
        num_shards=ds.num_shards,
        builder=SAVED_BUILDER,
        description=(source.info.description or "")[:10_000],
    )
    for name, split in splits.items():
        info.splits.add(name=name, num_rows=len(split), num_bytes=split.data.nbytes)
    info.configs.append("default")
    return info


def _describe(spec: DatasetSpec, config: "ServerConfig") -> Any:
    import datasets

    from py_worker.wire import pb

    res = resolve(spec, config)
    if res.kind == "saved":
        return _describe_saved(spec, res)
    builder = _builder(spec, config, res)
    names = _split_names(builder)
    if not spec.split and names and "train" not in names:
        from dataclasses import replace

        spec = replace(spec, split=names[0])
    ds, _ = _open(spec, config, builder)
    features = known_features(ds, spec)
    info = pb.DatasetInfo(
        features_json=features_json(features),
        arrow_schema=schema_ipc(features.arrow_schema) if features is not None else b"",
        num_shards=ds.num_shards,
        builder=builder.name or "",
        description=(builder.info.description or "")[:10_000],
    )
    known = builder.info.splits or {}
    for name in names or [spec.split_name]:
        si = info.splits.add(name=name)
        if name in known and known[name].num_examples:
            si.num_rows = known[name].num_examples
            if known[name].num_bytes:
                si.num_bytes = known[name].num_bytes
    if res.kind in ("folder", "hub") and not spec.data_files:
        try:
            configs = datasets.get_dataset_config_names(
                res.path, revision=spec.revision or None, token=os.environ.get("HF_TOKEN") or None
            )
        except Exception:
            configs = [builder.config.name]
        info.configs.extend(str(c) for c in configs)
    else:
        info.configs.append(builder.config.name or "default")
    return info
