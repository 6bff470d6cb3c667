Code.require_file("fixtures.exs", __DIR__)

defmodule HFBridge.Parquet.S3Test do
  # S3 exports through ExAws against a real S3-protocol server (moto).
  # Runs only where the :ex_aws package is available.
  use ExUnit.Case, async: false

  alias HFBridge.{Error, ExportFixtures, Parquet}
  alias HFBridge.Parquet.S3

  @moduletag timeout: 180_000

  if Code.ensure_loaded?(ExAws) do
    setup_all do
      {:ok, _} = Application.ensure_all_started(:ex_aws)
      root = ExportFixtures.tmp_dir("s3")
      moto = HFBridge.MotoServer.start!()

      on_exit(fn ->
        HFBridge.MotoServer.stop(moto)
        File.rm_rf!(root)
      end)

      :ok = HFBridge.MotoServer.create_bucket!(moto, "exports")
      glob = ExportFixtures.make_dataset(root, 2, 80)

      ExportFixtures.python_export(
        glob,
        "s3://exports/runs/one",
        root,
        ["--max-file-bytes", "4KiB", "--batch-size", "30", "--row-group-rows", "30"],
        HFBridge.MotoServer.env(moto)
      )

      %{root: root, moto: moto, s3: HFBridge.MotoServer.ex_aws(moto)}
    end
  else
    IO.puts("skipping HFBridge.Parquet.S3Test: :ex_aws is not available")
    @moduletag skip: ":ex_aws is not available"
  end

  test "read_manifest/2 reads an s3:// export; files are s3:// URIs", %{s3: s3} do
    assert {:ok, m} = Parquet.read_manifest("s3://exports/runs/one", s3: s3)
    assert m.uri == "s3://exports/runs/one/_manifest.json"
    assert m.rows == 160 and m.file_count > 1
    assert {:ok, uris} = Parquet.files(m)
    assert Enum.all?(uris, &String.starts_with?(&1, "s3://exports/runs/one/part-"))
    assert {:ok, ^m} = Parquet.read_manifest("s3://exports/runs/one/_manifest.json", s3: s3)
  end

  test "list/2 lists the export's objects, and only inside the prefix", %{s3: s3} do
    {:ok, m} = Parquet.read_manifest("s3://exports/runs/one", s3: s3)
    assert {:ok, objects} = S3.list("s3://exports/runs/one", s3)
    keys = Enum.map(objects, & &1.key)
    assert "runs/one/_manifest.json" in keys

    for file <- m.files do
      assert %{size: size} = Enum.find(objects, &(&1.key == "runs/one/" <> file.path))
      assert size == file.bytes
    end

    assert {:ok, []} = S3.list("s3://exports/runs/on", s3)
  end

  test "verify/2 hashes S3 objects and notices a replaced one", %{s3: s3, moto: moto} do
    {:ok, m} = Parquet.read_manifest("s3://exports/runs/one", s3: s3)
    assert :ok = Parquet.verify(m, s3: s3)

    # Replace one object with other bytes of the same size, then restore it.
    file = hd(m.files)

    auth =
      {"authorization",
       "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"}

    url = "#{moto.endpoint}/exports/runs/one/#{file.path}"

    {:ok, %{status_code: 200, body: original}} =
      HFBridge.ExAws.HttpClient.request(:get, url, "", [auth], [])

    changed = :crypto.strong_rand_bytes(byte_size(original))
    {:ok, %{status_code: 200}} = HFBridge.ExAws.HttpClient.request(:put, url, changed, [auth], [])

    try do
      assert {:error, %Error{code: :data_loss, details: %{file: uri}}} =
               Parquet.verify(m, s3: s3, max_concurrency: 1)

      assert uri == file.uri
    after
      {:ok, %{status_code: 200}} =
        HFBridge.ExAws.HttpClient.request(:put, url, original, [auth], [])
    end

    assert :ok = Parquet.verify(m, s3: s3)
  end

  test "download/3 copies the export locally, checked, ready to read", %{s3: s3, root: root} do
    dir = Path.join(root, "downloaded")
    assert {:ok, local} = S3.download("s3://exports/runs/one", dir, s3)
    assert local.uri == Path.join(dir, "_manifest.json")
    assert local.rows == 160
    assert :ok = Parquet.verify(dir)
    assert {:ok, ^local} = Parquet.read_manifest(dir)

    assert ExportFixtures.parquet_rows(Parquet.Manifest.file_uris(local)) ==
             Enum.map(local.files, & &1.rows)

    # No temporary files are left behind.
    assert Enum.sort(File.ls!(dir)) ==
             Enum.sort(["_manifest.json" | Enum.map(local.files, & &1.path)])
  end

  test "missing objects and prefixes are :not_found", %{s3: s3} do
    assert {:error, %Error{code: :not_found}} =
             Parquet.read_manifest("s3://exports/runs/none", s3: s3)

    assert {:error, %Error{code: :not_found}} = S3.read("s3://exports/nothing.bin", s3)
    assert {:error, %Error{}} = S3.list("s3://no-such-bucket/x", s3)
  end
end
