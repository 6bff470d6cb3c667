Code.require_file("fixtures.exs", __DIR__)

defmodule HFBridge.Parquet.WithoutExplorerTest do
  # Where Explorer is absent (the default here): load/2 says what it needs.
  use ExUnit.Case, async: true

  if Code.ensure_loaded?(Explorer.DataFrame) do
    IO.puts("skipping HFBridge.Parquet.WithoutExplorerTest: :explorer is available")
    @moduletag skip: ":explorer is available"
  end

  alias HFBridge.{Error, Parquet}

  test "load/2 returns :unavailable naming the :explorer package" do
    assert {:error, %Error{code: :unavailable, layer: :parquet, message: message}} =
             Parquet.load("/any/export")

    assert message =~ "HFBridge.Parquet.load/2 needs the :explorer package"
    refute HFBridge.Parquet.Explorer.available?()
  end
end

defmodule HFBridge.Parquet.WithoutExAwsTest do
  # Where ExAws is absent (the default here): s3:// sources say what they need.
  use ExUnit.Case, async: true

  if Code.ensure_loaded?(ExAws) do
    IO.puts("skipping HFBridge.Parquet.WithoutExAwsTest: :ex_aws is available")
    @moduletag skip: ":ex_aws is available"
  end

  alias HFBridge.{Error, Parquet}
  alias HFBridge.Parquet.S3

  test "s3:// manifests, listings and downloads return :unavailable naming :ex_aws" do
    refute S3.available?()

    for result <- [
          Parquet.read_manifest("s3://bucket/export"),
          S3.list("s3://bucket/export"),
          S3.read("s3://bucket/export/_manifest.json"),
          S3.download("s3://bucket/export", "/tmp/never"),
          S3.download_file("s3://bucket/export/part-00000.parquet", "/tmp/never/x")
        ] do
      assert {:error, %Error{code: :unavailable, message: message}} = result
      assert message =~ ":ex_aws package"
    end

    refute File.exists?("/tmp/never")
  end
end

defmodule HFBridge.Parquet.ExplorerTest do
  # Runs only where the :explorer package is available.
  use ExUnit.Case, async: true

  if Code.ensure_loaded?(Explorer.DataFrame) do
    setup_all do
      root = HFBridge.ExportFixtures.tmp_dir("explorer")
      on_exit(fn -> File.rm_rf!(root) end)
      glob = HFBridge.ExportFixtures.make_dataset(root, 2, 60)

      dest =
        HFBridge.ExportFixtures.python_export(glob, Path.join(root, "export"), root, [
          "--max-file-bytes",
          "4KiB",
          "--batch-size",
          "25",
          "--row-group-rows",
          "25"
        ])

      empty =
        HFBridge.ExportFixtures.python_export(glob, Path.join(root, "empty"), root, [
          "--take",
          "0"
        ])

      %{dest: dest, empty: empty}
    end
  else
    IO.puts("skipping HFBridge.Parquet.ExplorerTest: :explorer is not available")
    @moduletag skip: ":explorer is not available"
  end

  # Explorer calls go through apply/3 so this file compiles without Explorer.
  defp df(fun, args), do: apply(Explorer.DataFrame, fun, args)

  test "load/2 concatenates every file in manifest order", %{dest: dest} do
    {:ok, m} = HFBridge.Parquet.read_manifest(dest)
    assert m.file_count > 1
    assert {:ok, frame} = HFBridge.Parquet.load(dest, verify: true)
    assert df(:n_rows, [frame]) == 120
    ids = frame |> then(&df(:pull, [&1, "id"])) |> then(&apply(Explorer.Series, :to_list, [&1]))
    assert ids == Enum.to_list(0..119)
  end

  test "load/2 with columns and lazy: true", %{dest: dest} do
    {:ok, m} = HFBridge.Parquet.read_manifest(dest)
    assert {:ok, lazy} = HFBridge.Parquet.load(m, lazy: true, columns: ["id", "text"])
    frame = df(:collect, [lazy])
    assert df(:names, [frame]) == ["id", "text"]
    assert df(:n_rows, [frame]) == 120
  end

  test "an export without rows loads as an empty frame with its columns", %{empty: empty} do
    assert {:ok, frame} = HFBridge.Parquet.load(empty)
    assert df(:n_rows, [frame]) == 0
    assert "id" in df(:names, [frame])
  end
end
