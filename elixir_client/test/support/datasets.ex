defmodule HFBridge.TestDatasets do
  @moduledoc """
  Small on-disk datasets for end-to-end tests, written with pyarrow and
  `datasets.Features` (so the Parquet files carry HF feature metadata) by
  `HFBridge.ServerCase.run_python!/2`.
  """

  import HFBridge.ServerCase, only: [run_python!: 2]

  @doc """
  Writes `files` Parquet files of `rows_per_file` rows each under `dir`
  with every feature kind the end-to-end tests cover: `id` (int64),
  `label` (ClassLabel neg/pos), `text` (string, some nulls and non-ASCII),
  `tokens` (list of strings), `emb` (fixed-size list of 3 float32), `meta`
  (struct of source: string, score: float64), `img` (Image: PNG-like bytes,
  path), `ts` (timestamp[us]), `ts_utc` (timestamp[ms, UTC]) and `day`
  (date32). Returns the glob of the files.
  """
  @spec rich_parquet!(String.t(), pos_integer(), pos_integer()) :: String.t()
  def rich_parquet!(dir, files, rows_per_file) do
    File.mkdir_p!(dir)

    code = ~S"""
    import datetime, sys
    import pyarrow as pa, pyarrow.parquet as pq
    from datasets import ClassLabel, Features, Image, List, Value

    out, files, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    features = Features({
        "id": Value("int64"),
        "label": ClassLabel(names=["neg", "pos"]),
        "text": Value("string"),
        "tokens": List(Value("string")),
        "emb": List(Value("float32"), length=3),
        "meta": {"source": Value("string"), "score": Value("float64")},
        "img": Image(),
        "ts": Value("timestamp[us]"),
        "ts_utc": Value("timestamp[ms, tz=UTC]"),
        "day": Value("date32"),
    })
    base = datetime.datetime(2024, 2, 29, 23, 59, 58, 123456)
    for f in range(files):
        ids = range(f * per, (f + 1) * per)
        data = {
            "id": list(ids),
            "label": [i % 2 for i in ids],
            "text": [None if i % 7 == 3 else f"row {i} \u00e9\u6f22 \"q\" #{{x}}" for i in ids],
            "tokens": [[f"t{j}" for j in range(i % 4)] for i in ids],
            "emb": [[i * 0.5, -1.25, float(i % 3)] for i in ids],
            "meta": [{"source": "src" + str(i % 3), "score": i / 3} for i in ids],
            "img": [{"bytes": b"\x89PNG\r\n\x1a\n" + i.to_bytes(4, "big") + bytes(range(i % 16)), "path": None if i % 2 else f"img{i}.png"} for i in ids],
            "ts": [base + datetime.timedelta(seconds=i, microseconds=i) for i in ids],
            "ts_utc": [datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(milliseconds=37 * i) for i in ids],
            "day": [datetime.date(1999, 12, 31) + datetime.timedelta(days=i) for i in ids],
        }
        table = pa.Table.from_pydict(data, schema=features.arrow_schema)
        pq.write_table(table, f"{out}/part-{f:05d}.parquet", row_group_size=max(per // 2, 1))
    """

    run_python!(code, [dir, Integer.to_string(files), Integer.to_string(rows_per_file)])
    Path.join(dir, "*.parquet")
  end

  @doc "Writes one Parquet file of `n` rows with just `id` (int64) and `text`; returns its path."
  @spec simple_parquet!(String.t(), pos_integer()) :: String.t()
  def simple_parquet!(path, n) do
    File.mkdir_p!(Path.dirname(path))

    code = ~S"""
    import sys
    import pyarrow as pa, pyarrow.parquet as pq
    path, n = sys.argv[1], int(sys.argv[2])
    pq.write_table(pa.table({"id": pa.array(range(n), pa.int64()), "text": [f"row {i}" for i in range(n)]}), path, row_group_size=10_000)
    """

    run_python!(code, [path, Integer.to_string(n)])
    path
  end
end
