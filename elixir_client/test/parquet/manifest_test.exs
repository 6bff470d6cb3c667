Code.require_file("fixtures.exs", __DIR__)

defmodule HFBridge.Parquet.ManifestTest do
  # Manifests written by the real Python exporter, read without Explorer.
  use ExUnit.Case, async: true

  alias HFBridge.{Error, ExportFixtures, Parquet}
  alias HFBridge.Parquet.Manifest

  @moduletag timeout: 180_000

  setup_all do
    root = ExportFixtures.tmp_dir("manifest")
    on_exit(fn -> File.rm_rf!(root) end)
    glob = ExportFixtures.make_dataset(root, 3, 120)
    # Small files so the export rolls over several of them.
    dest =
      ExportFixtures.python_export(glob, Path.join(root, "export"), root, [
        "--max-file-bytes",
        "4KiB",
        "--row-group-rows",
        "50",
        "--batch-size",
        "40"
      ])

    %{root: root, glob: glob, dest: dest}
  end

  # A private copy of the export that a test may damage.
  defp copy_export(%{dest: dest, root: root}, name) do
    copy = Path.join(root, "copy_#{name}_#{System.unique_integer([:positive])}")
    File.cp_r!(dest, copy)
    copy
  end

  defp rewrite_manifest(dir, fun) do
    path = Path.join(dir, "_manifest.json")
    map = path |> File.read!() |> HFBridge.JSON.decode!()
    File.write!(path, HFBridge.JSON.encode!(fun.(map)))
    path
  end

  test "reads the exporter's manifest from the directory or the file", %{dest: dest} do
    assert {:ok, %Manifest{} = m} = Parquet.read_manifest(dest)
    assert {:ok, ^m} = Parquet.read_manifest(Path.join(dest, "_manifest.json"))

    assert m.uri == Path.join(dest, "_manifest.json")
    assert m.base == dest
    assert m.format == "hf_bridge.export/v1"
    assert m.rows == 360
    assert m.file_count == length(m.files) and m.file_count > 1
    assert m.bytes == m.files |> Enum.map(& &1.bytes) |> Enum.sum()
    assert m.spec["path"] == "parquet"
    assert %DateTime{} = m.created_at
    assert DateTime.compare(m.created_at, m.finished_at) in [:lt, :eq]
  end

  test "file entries match the Parquet files on disk", %{dest: dest} do
    {:ok, m} = Parquet.read_manifest(dest)

    on_disk = dest |> File.ls!() |> Enum.filter(&String.ends_with?(&1, ".parquet")) |> Enum.sort()
    assert Enum.map(m.files, & &1.path) |> Enum.sort() == on_disk

    for file <- m.files do
      assert file.uri == Path.join(dest, file.path)
      assert File.stat!(file.uri).size == file.bytes

      assert file.sha256 ==
               :sha256 |> :crypto.hash(File.read!(file.uri)) |> Base.encode16(case: :lower)

      assert file.row_groups >= 1
    end

    # Rows per file as pyarrow counts them from the footers.
    assert ExportFixtures.parquet_rows(Enum.map(m.files, & &1.uri)) ==
             Enum.map(m.files, & &1.rows)
  end

  test "schema and HF features come through", %{dest: dest} do
    {:ok, m} = Parquet.read_manifest(dest)

    for column <- ~w(id label text tokens emb meta day) do
      assert m.schema =~ column
      assert Map.has_key?(m.features, column)
    end

    assert m.features["label"]["names"] == ["neg", "pos"]
    # The Arrow schema is an IPC stream (continuation marker 0xFFFFFFFF first).
    assert <<0xFF, 0xFF, 0xFF, 0xFF, _::binary>> = m.arrow_schema
  end

  test "files/2 lists absolute paths in manifest order, from a manifest or a location", %{
    dest: dest
  } do
    {:ok, m} = Parquet.read_manifest(dest)
    assert {:ok, paths} = Parquet.files(m)
    assert paths == Enum.map(m.files, &Path.join(dest, &1.path))
    assert {:ok, ^paths} = Parquet.files(dest)
    assert Manifest.file_uris(m) == paths
  end

  test "verify/2 accepts the intact export", %{dest: dest} do
    assert :ok = Parquet.verify(dest)
    {:ok, m} = Parquet.read_manifest(dest)
    assert :ok = Parquet.verify(m, max_concurrency: 1)
  end

  test "verify/2 finds a flipped byte, a truncated file and a missing file", ctx do
    copy = copy_export(ctx, "damage")
    {:ok, m} = Parquet.read_manifest(copy)
    [first, second, third | _] = m.files

    # Same size, one byte changed in the middle.
    data = File.read!(first.uri)
    pos = div(byte_size(data), 2)
    <<head::binary-size(pos), byte, tail::binary>> = data
    File.write!(first.uri, [head, Bitwise.bxor(byte, 0xFF), tail])

    assert {:error, %Error{code: :data_loss, details: %{file: file, expected: expected}}} =
             Parquet.verify(m, max_concurrency: 1)

    assert file == first.uri and expected == first.sha256
    File.write!(first.uri, data)
    assert :ok = Parquet.verify(m)

    File.write!(second.uri, binary_part(File.read!(second.uri), 0, 10))
    assert {:error, %Error{code: :data_loss, message: message}} = Parquet.verify(m)
    assert message =~ "has 10 bytes"

    File.rm!(second.uri)
    File.rm!(third.uri)

    assert {:error, %Error{code: :not_found, details: %{file: missing}}} =
             Parquet.verify(m, max_concurrency: 1)

    assert missing == second.uri
  end

  test "a missing manifest is :not_found and names the place", %{root: root} do
    dir = Path.join(root, "nothing_here")
    assert {:error, %Error{code: :not_found, message: message}} = Parquet.read_manifest(dir)
    assert message =~ Path.join(dir, "_manifest.json")
  end

  test "damaged manifests are :malformed with a precise message", ctx do
    cases = [
      {fn m -> Map.put(m, "format", "something/v9") end, "unsupported manifest format"},
      {fn m -> Map.delete(m, "format") end, "not an hf_bridge export manifest"},
      {fn m -> put_in(m, ["totals", "rows"], m["totals"]["rows"] + 1) end,
       "disagree with the files"},
      {fn m ->
         update_in(m["files"], fn [f | r] -> [Map.put(f, "path", "../../etc/passwd") | r] end)
       end, "files[0]: path \"../../etc/passwd\""},
      {fn m ->
         update_in(m["files"], fn [f | r] -> [Map.put(f, "path", "/abs.parquet") | r] end)
       end, "not a plain relative file name"},
      {fn m -> update_in(m["files"], fn [f | r] -> [Map.put(f, "sha256", "abc") | r] end) end,
       "sha256 must be 64 hexadecimal digits"},
      {fn m -> update_in(m["files"], fn [f | r] -> [Map.put(f, "rows", -1) | r] end) end,
       "non-negative integers"},
      {fn m -> Map.put(m, "files", "nope") end, "\"files\" must be a list"},
      {fn m -> Map.put(m, "created_at", "yesterday") end, "not an RFC 3339 timestamp"},
      {fn m -> put_in(m, ["schema", "ipc_stream_base64"], "***") end, "not valid base64"}
    ]

    for {change, expected} <- cases do
      copy = copy_export(ctx, "malformed")
      rewrite_manifest(copy, change)

      assert {:error, %Error{code: :malformed, layer: :parquet, message: message}} =
               Parquet.read_manifest(copy)

      assert message =~ expected
      File.rm_rf!(copy)
    end

    copy = copy_export(ctx, "notjson")
    File.write!(Path.join(copy, "_manifest.json"), "{\"format\": ")
    assert {:error, %Error{code: :malformed, message: message}} = Parquet.read_manifest(copy)
    assert message =~ "not valid JSON"
  end

  test "a manifest parsed from text resolves files against its URI", %{dest: dest} do
    text = File.read!(Path.join(dest, "_manifest.json"))
    assert {:ok, m} = Manifest.parse(text, "s3://bucket/some/prefix/_manifest.json")
    assert m.base == "s3://bucket/some/prefix"
    assert hd(m.files).uri == "s3://bucket/some/prefix/" <> hd(m.files).path
  end

  test "bad locations are rejected before any I/O" do
    assert {:error, %Error{code: :invalid_argument}} =
             Parquet.read_manifest("http://example.com/x")

    assert {:error, %Error{code: :invalid_argument}} = Parquet.read_manifest("s3:///no-bucket")
    assert {:error, %Error{code: :invalid_argument}} = Parquet.read_manifest("s3://b/a/../b")
    assert {:error, %Error{code: :invalid_option}} = Parquet.read_manifest("/x", bogus: 1)
  end
end
