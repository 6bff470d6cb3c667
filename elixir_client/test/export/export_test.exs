Code.require_file("../parquet/fixtures.exs", __DIR__)

defmodule HFBridge.ExportTest do
  # HFBridge.Export.run/4 against the real Python server.
  use HFBridge.ServerCase, async: false

  alias HFBridge.{Error, Export, ExportFixtures, Parquet}
  alias HFBridge.Parquet.Manifest

  @moduletag timeout: 300_000

  setup_all %{data_dir: data_dir} do
    %{glob: ExportFixtures.write_dataset(Path.join(data_dir, "rich"), 3, 200)}
  end

  # The exported rows equal the source rows, compared by pyarrow.
  defp same_rows?(source_glob, files) do
    code = """
    import glob, sys, pyarrow as pa, pyarrow.parquet as pq
    src = pa.concat_tables([pq.read_table(p) for p in sorted(glob.glob(sys.argv[1]))])
    out = pa.concat_tables([pq.read_table(p) for p in sys.argv[2:]])
    cols = src.column_names
    print(out.num_rows, src.select(cols).equals(out.select(cols).cast(src.schema)))
    """

    run_python!(code, [source_glob | files]) |> String.trim()
  end

  test "exports, reports progress to a pid, and the manifest checks out", ctx do
    dest = Path.join(ctx.export_dir, "to_pid")
    ref = make_ref()

    assert {:ok, %Manifest{} = m} =
             Export.run(ctx.client, "parquet", dest,
               data_files: ctx.glob,
               max_file_bytes: 8 * 1024,
               batch_size: 50,
               row_group_rows: 50,
               compression: :snappy,
               progress: self(),
               progress_ref: ref
             )

    assert m.rows == 600
    assert m.file_count > 1
    assert m.uri == Path.join(dest, "_manifest.json")
    assert m.writer["compression"] == "snappy"
    assert {:ok, ^m} = Parquet.read_manifest(dest)
    assert :ok = Parquet.verify(m)
    assert ExportFixtures.parquet_rows(Manifest.file_uris(m)) == Enum.map(m.files, & &1.rows)
    assert same_rows?(ctx.glob, Manifest.file_uris(m)) == "600 True"

    progress = collect_progress(ref)
    assert progress != []

    for p <- progress do
      assert %{rows: rows, bytes: bytes, files: files, total_rows: total, elapsed_seconds: secs} =
               p

      assert rows <= 600 and bytes >= 0 and files >= 0 and is_float(secs)
      assert total in [nil, 600]
    end

    assert Enum.map(progress, & &1.rows) == Enum.sort(Enum.map(progress, & &1.rows))
  end

  test "a progress callback sees every event; dataset options apply", ctx do
    parent = self()
    dest = Path.join(ctx.export_dir, "to_fun")

    assert {:ok, m} =
             Export.run(ctx.client, "parquet", dest,
               data_files: ctx.glob,
               columns: ["id", "text"],
               skip: 10,
               take: 150,
               progress: fn p -> send(parent, {:seen, p}) end
             )

    assert m.rows == 150
    assert m.spec["columns"] == ["id", "text"]
    assert Map.keys(m.features) |> Enum.sort() == ["id", "text"]
    assert_received {:seen, %{rows: _}}
    assert :ok = Parquet.verify(m)
  end

  test "an existing export needs overwrite: true, which rewrites the same files", ctx do
    dest = Path.join(ctx.export_dir, "twice")
    opts = [data_files: ctx.glob, take: 20]
    assert {:ok, first} = Export.run(ctx.client, "parquet", dest, opts)

    assert {:error, %Error{code: code, message: message}} =
             Export.run(ctx.client, "parquet", dest, opts)

    assert code in [:already_exists, :failed_precondition]
    assert message =~ "overwrite"

    assert {:ok, second} = Export.run(ctx.client, "parquet", dest, [overwrite: true] ++ opts)
    assert second.rows == first.rows
    assert Enum.map(second.files, & &1.sha256) == Enum.map(first.files, & &1.sha256)
  end

  test "a stream with no event in time is cancelled; the client stays usable", ctx do
    dest = Path.join(ctx.export_dir, "stalled")
    opts = [data_files: ctx.glob, take: 100]

    # The server needs far longer than 1 ms to start an export job.
    assert {:error, %Error{code: :timeout, message: message}} =
             Export.run(ctx.client, "parquet", dest, [timeout: 1] ++ opts)

    assert message =~ "resume: true"
    refute File.exists?(Path.join(dest, "_manifest.json"))

    # (Resuming into `dest` right away could race the cancelled job while it
    # stops, so the follow-up export goes elsewhere.)
    assert {:ok, m} =
             Export.run(ctx.client, "parquet", Path.join(ctx.export_dir, "after_stall"), opts)

    assert m.rows == 100
  end

  test "connect options instead of a client: the connection is opened and closed", ctx do
    dest = Path.join(ctx.export_dir, "own_conn")

    assert {:ok, m} =
             Export.run([address: ctx.address, local: false], "parquet", dest,
               data_files: ctx.glob,
               take: 5
             )

    assert m.rows == 5
  end

  test "server-side refusals come back as errors", ctx do
    outside =
      Path.join(System.tmp_dir!(), "hf_bridge_outside_#{System.unique_integer([:positive])}")

    assert {:error, %Error{code: :permission_denied}} =
             Export.run(ctx.client, "parquet", outside, data_files: ctx.glob)

    refute File.exists?(outside)

    assert {:error, %Error{code: code}} =
             Export.run(ctx.client, "parquet", Path.join(ctx.export_dir, "nothing"),
               data_files: Path.join(ctx.data_dir, "missing/*.parquet")
             )

    assert code in [:not_found, :invalid_argument]

    assert {:error, %Error{code: :invalid_argument}} =
             Export.run(ctx.client, "parquet", Path.join(ctx.export_dir, "badcol"),
               data_files: ctx.glob,
               columns: ["no_such_column"]
             )
  end

  test "options are validated locally, naming the culprit", ctx do
    run = fn opts ->
      Export.run(ctx.client, "parquet", Path.join(ctx.export_dir, "never"), opts)
    end

    assert {:error, %Error{code: :invalid_option, message: m1}} =
             run.(data_files: ctx.glob, compresion: :zstd)

    assert m1 =~ "unknown option :compresion" and m1 =~ "did you mean :compression"
    assert {:error, %Error{message: m2}} = run.(compression: :lzma)
    assert m2 =~ ":compression" and m2 =~ "zstd"
    assert {:error, %Error{message: m3}} = run.(overwrite: true, resume: true)
    assert m3 =~ "exclude each other"
    assert {:error, %Error{message: m4}} = run.(max_file_bytes: 0)
    assert m4 =~ ":max_file_bytes"
    assert {:error, %Error{message: m5}} = run.(progress: :nope)
    assert m5 =~ ":progress"
    assert {:error, %Error{message: m6}} = run.(max_batch_bytes: 10)
    assert m6 =~ "unknown option :max_batch_bytes"
    assert {:error, %Error{message: m7}} = Export.run(ctx.client, "parquet", "", [])
    assert m7 =~ "destination"
    assert {:error, %Error{message: m8}} = Export.run(:nope, "parquet", "x", [])
    assert m8 =~ "HFBridge.Client"
    refute File.exists?(Path.join(ctx.export_dir, "never"))
  end

  test "request/3 maps options onto the ExportRequest" do
    assert {:ok, request, opts} =
             Export.request("parquet", "s3://b/p",
               data_files: "x/*.parquet",
               compression: "Uncompressed",
               cdc: true,
               max_file_bytes: 1024,
               row_group_rows: 10,
               batch_size: 7,
               resume: true
             )

    assert request.compression == "none"
    assert request.content_defined_chunking
    assert {request.max_file_bytes, request.row_group_rows, request.batch_size} == {1024, 10, 7}
    assert request.resume and not request.overwrite
    assert request.spec.data_files == [%{split: "", patterns: ["x/*.parquet"]}]
    assert is_reference(opts[:progress_ref])
    # The map encodes as an ExportRequest.
    assert is_binary(HFBridge.Proto.encode(:ExportRequest, request))
  end

  defp collect_progress(ref, acc \\ []) do
    receive do
      {:hf_bridge_export, ^ref, progress} -> collect_progress(ref, [progress | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end
end

defmodule HFBridge.ExportTelemetryTest do
  # With :telemetry loaded, an export is a span with progress events.
  use HFBridge.ServerCase, async: false

  @moduletag timeout: 300_000

  if Code.ensure_loaded?(:telemetry) do
    setup_all do
      {:ok, _} = Application.ensure_all_started(:telemetry)
      :ok
    end
  else
    IO.puts("skipping HFBridge.ExportTelemetryTest: :telemetry is not available")
    @moduletag skip: ":telemetry is not available"
  end

  test "[:hf_bridge, :export] span and progress events", ctx do
    glob = HFBridge.ExportFixtures.write_dataset(Path.join(ctx.data_dir, "simple"), 1, 500)
    parent = self()

    events = [
      [:hf_bridge, :export, :start],
      [:hf_bridge, :export, :stop],
      [:hf_bridge, :export, :progress]
    ]

    handler = fn name, measurements, metadata, _ ->
      send(parent, {:event, name, measurements, metadata})
    end

    :ok = apply(:telemetry, :attach_many, ["export-test", events, handler, nil])
    on_exit(fn -> apply(:telemetry, :detach, ["export-test"]) end)

    dest = Path.join(ctx.export_dir, "telemetry")

    assert {:ok, m} =
             HFBridge.Export.run(ctx.client, "parquet", dest, data_files: glob, batch_size: 50)

    assert_received {:event, [:hf_bridge, :export, :start], _,
                     %{dataset: "parquet", destination: ^dest}}

    assert_received {:event, [:hf_bridge, :export, :progress], %{rows: _, bytes: _, files: _},
                     %{total_rows: _}}

    assert_received {:event, [:hf_bridge, :export, :stop], %{duration: _},
                     %{rows: 500, files: files, manifest_uri: uri}}

    assert files == m.file_count and uri == m.uri
  end
end
