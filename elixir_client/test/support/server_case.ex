defmodule HFBridge.ServerCase do
  @moduledoc """
  An ExUnit case template for tests against a real hf_bridge Python server.

      defmodule MyTest do
        use HFBridge.ServerCase, async: true     # options: workers: 2, server_args: [...]

        test "reads", %{client: client, data_dir: dir} do
          path = write_rows!(Path.join(dir, "t.parquet"), [%{"a" => 1}])
          assert [%{"a" => 1}] = HFBridge.rows("parquet", client: client, data_files: path) |> Enum.to_list()
        end
      end

  Once per test module (in `setup_all`) it creates a fresh temporary
  directory, starts `python -m py_worker serve` on a free loopback port (via
  `HFBridge.LocalServer`, with `HF_HUB_OFFLINE=1`, the directory's `data/` as
  the only data root, `export/` as the export root and `state/` for
  checkpoints), connects a client, and always stops both and removes the
  directory after the module's tests.

  Context keys: `:client` (an `HFBridge.Client`), `:server` (the
  `HFBridge.LocalServer` pid), `:address`, `:data_dir`, `:export_dir`,
  `:state_dir`, `:python` (the interpreter path).

  Python comes from `HF_BRIDGE_PYTHON`, else `HFBridge.Python.find/1`.
  The helpers below build small datasets by running that Python:
  `write_rows!/3` (any rows, optional HF features), `simple_parquet!/2` and
  `rich_parquet!/3` (every feature kind the end-to-end tests cover).
  """

  use ExUnit.CaseTemplate

  alias HFBridge.{Client, LocalServer}

  using opts do
    quote do
      import HFBridge.ServerCase

      setup_all do
        HFBridge.ServerCase.start_server!(unquote(opts))
      end
    end
  end

  @repo_root Path.expand("../../..", __DIR__)

  @doc "The repository root (holds `py_worker/` and `tests/golden/`)."
  @spec repo_root() :: String.t()
  def repo_root, do: @repo_root

  @doc "The Python interpreter the tests use."
  @spec python() :: String.t()
  def python do
    case System.get_env("HF_BRIDGE_PYTHON") do
      value when value not in [nil, ""] ->
        value

      _ ->
        case HFBridge.Python.find() do
          {:ok, %{executable: executable}} -> executable
          {:error, error} -> raise error
        end
    end
  end

  @doc """
  Starts a server and a client for the calling process (a `setup_all`);
  registers their cleanup with `on_exit/1`. Options: `:workers` (default 2),
  `:server_args` (more `serve` arguments), `:env`.
  """
  @spec start_server!(keyword()) :: map()
  def start_server!(opts \\ []) do
    dir =
      Path.join(
        System.tmp_dir!(),
        "hf_bridge_test_#{System.unique_integer([:positive])}_#{:os.getpid()}"
      )

    data_dir = Path.join(dir, "data")
    export_dir = Path.join(dir, "export")
    state_dir = Path.join(dir, "state")
    Enum.each([data_dir, export_dir, state_dir], &File.mkdir_p!/1)
    python = python()

    {:ok, server, address} =
      LocalServer.start(
        python: python,
        workers: Keyword.get(opts, :workers, 2),
        data_roots: [data_dir],
        export_root: export_dir,
        state_dir: state_dir,
        extra_args: Keyword.get(opts, :server_args, []),
        env: [
          {"HF_HUB_OFFLINE", "1"},
          {"HF_DATASETS_DISABLE_PROGRESS_BARS", "1"} | Keyword.get(opts, :env, [])
        ]
      )

    {:ok, client} = Client.connect(address: address, local: false)

    ExUnit.Callbacks.on_exit(fn ->
      Client.disconnect(client)
      LocalServer.stop(server)
      File.rm_rf!(dir)
    end)

    %{
      client: client,
      server: server,
      address: address,
      data_dir: data_dir,
      export_dir: export_dir,
      state_dir: state_dir,
      python: python
    }
  end

  @doc """
  Runs Python `code` (with `HF_HUB_OFFLINE=1`, the repository on
  `PYTHONPATH`) and returns its stdout; raises with the output when it fails.
  `args` become `sys.argv[1:]`.
  """
  @spec run_python!(String.t(), [String.t()]) :: String.t()
  def run_python!(code, args \\ []) do
    env = [
      {"HF_HUB_OFFLINE", "1"},
      {"HF_DATASETS_DISABLE_PROGRESS_BARS", "1"},
      {"PYTHONPATH", @repo_root}
    ]

    # stderr goes to a file so that stdout stays parseable.
    err = Path.join(System.tmp_dir!(), "hf_bridge_py_err_#{System.unique_integer([:positive])}")

    try do
      {out, status} =
        System.cmd("sh", ["-c", ~s(exec "$0" "$@" 2>"#{err}"), python(), "-c", code | args],
          env: env,
          cd: @repo_root
        )

      if status != 0 do
        raise "python failed with status #{status}:\n#{File.read!(err)}\n#{out}"
      end

      out
    after
      File.rm(err)
    end
  end

  @doc """
  Writes `rows` (a list of maps with JSON-representable values) as a dataset
  file at `path` through `datasets.Dataset.from_list`; the format follows the
  extension (`.parquet`, `.jsonl`/`.json`, `.csv`). `features` is an optional
  Python expression for `datasets.Features` (evaluated with `datasets`'
  names in scope, e.g. `"Features({'label': ClassLabel(names=['a', 'b'])})"`).
  Returns `path`.
  """
  @spec write_rows!(String.t(), [map()], String.t() | nil) :: String.t()
  def write_rows!(path, rows, features \\ nil) do
    File.mkdir_p!(Path.dirname(path))

    code = """
    import json, sys
    import datasets
    path = sys.argv[1]
    with open(sys.argv[2]) as f:
        rows = json.load(f)
    features = eval(sys.argv[3], dict(vars(datasets))) if len(sys.argv) > 3 else None
    ds = datasets.Dataset.from_list(rows, features=features)
    if path.endswith('.parquet'):
        ds.to_parquet(path)
    elif path.endswith(('.jsonl', '.json')):
        ds.to_json(path, lines=True)
    elif path.endswith('.csv'):
        ds.to_csv(path, index=False)
    else:
        raise SystemExit('unknown extension: ' + path)
    """

    json_file = path <> ".rows.json"
    File.write!(json_file, HFBridge.JSON.encode!(rows))

    try do
      run_python!(code, [path, json_file] ++ if(features, do: [features], else: []))
    after
      File.rm(json_file)
    end

    path
  end

  @doc """
  The rows `datasets` yields in-process for `spec` (a `DatasetSpec` map as
  built by `HFBridge.Spec.build/2`), via `tests/golden/e2e_rows.py`,
  normalised with `normalize/1`.
  """
  @spec golden_rows!(map()) :: [map()]
  def golden_rows!(spec) do
    script = Path.join(@repo_root, "tests/golden/e2e_rows.py")

    spec_file =
      Path.join(System.tmp_dir!(), "hf_bridge_spec_#{System.unique_integer([:positive])}.json")

    File.write!(spec_file, HFBridge.JSON.encode!(spec))

    try do
      code =
        "import runpy, sys; sys.argv = [sys.argv[1], '--spec', open(sys.argv[2]).read()]; runpy.run_path(sys.argv[0], run_name='__main__')"

      {rows, _} = Code.eval_string(run_python!(code, [script, spec_file]))
      rows
    after
      File.rm(spec_file)
    end
  end

  @doc """
  Rewrites calendar values into the tagged forms `tests/golden/e2e_rows.py`
  prints (`NaiveDateTime` → `{:naive_datetime, µs}`, `DateTime` →
  `{:datetime, µs}`, `Date` → `{:date, iso}`, `Time` → `{:time, iso}`),
  recursively, so bridge rows and golden rows compare with `==`.
  """
  @spec normalize(term()) :: term()
  def normalize(%NaiveDateTime{} = value),
    do:
      {:naive_datetime,
       value |> DateTime.from_naive!("Etc/UTC") |> DateTime.to_unix(:microsecond)}

  def normalize(%DateTime{} = value), do: {:datetime, DateTime.to_unix(value, :microsecond)}
  def normalize(%Date{} = value), do: {:date, Date.to_iso8601(value)}

  def normalize(%Time{} = value) do
    text = value |> Time.truncate(:second) |> Time.to_iso8601()
    {us, _} = value.microsecond

    {:time,
     if(us == 0, do: text, else: text <> "." <> String.pad_leading(Integer.to_string(us), 6, "0"))}
  end

  def normalize(value) when is_map(value), do: Map.new(value, fn {k, v} -> {k, normalize(v)} end)
  def normalize(value) when is_list(value), do: Enum.map(value, &normalize/1)
  def normalize(value), do: value

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
