Code.require_file("../parquet/fixtures.exs", __DIR__)

defmodule Mix.Tasks.Hf.ExportTest do
  # `mix hf.export` run as a user runs it: a separate `mix` process.
  use HFBridge.ServerCase, async: false

  alias HFBridge.{ExportFixtures, Parquet}

  @moduletag timeout: 300_000
  @project Path.expand("../..", __DIR__)

  setup_all %{data_dir: data_dir} do
    %{glob: ExportFixtures.write_dataset(Path.join(data_dir, "rich"), 2, 150)}
  end

  # Runs `mix hf.export ARGS` in this project, with this run's build path.
  defp mix_export(args) do
    env =
      [
        {"MIX_ENV", "test"},
        {"HF_HUB_OFFLINE", "1"},
        {"HF_BRIDGE_PYTHON", HFBridge.ServerCase.python()},
        {"HF_BRIDGE_ADDRESS", nil}
      ] ++ if(path = System.get_env("MIX_BUILD_PATH"), do: [{"MIX_BUILD_PATH", path}], else: [])

    {out, status} =
      System.cmd("mix", ["hf.export" | args], cd: @project, env: env, stderr_to_stdout: true)

    {status, out}
  end

  test "exports through a running server and prints a summary", ctx do
    dest = Path.join(ctx.export_dir, "cli")

    {status, out} =
      mix_export([
        "parquet",
        dest,
        "--data-files",
        ctx.glob,
        "--address",
        ctx.address,
        "--max-file-bytes",
        "8KiB",
        "--batch-size",
        "40",
        "--row-group-rows",
        "40",
        "--compression",
        "gzip",
        "--verify"
      ])

    assert status == 0, out
    assert out =~ "exported 300 rows in"
    assert out =~ "manifest: #{Path.join(dest, "_manifest.json")}"
    assert out =~ "verified:"

    {:ok, m} = Parquet.read_manifest(dest)
    assert m.rows == 300 and m.file_count > 1
    assert m.writer["compression"] == "gzip"
    assert :ok = Parquet.verify(m)

    assert ExportFixtures.parquet_rows(Parquet.Manifest.file_uris(m)) ==
             Enum.map(m.files, & &1.rows)

    # A second run without --overwrite fails with the server's reason.
    {status, out} =
      mix_export(["parquet", dest, "--data-files", ctx.glob, "--address", ctx.address])

    assert status != 0
    assert out =~ "overwrite"
  end

  test "starts its own local server when none is configured", ctx do
    root = ExportFixtures.tmp_dir("mix_local")
    on_exit(fn -> File.rm_rf!(root) end)
    dest = Path.join(root, "out")

    {status, out} =
      mix_export([
        "parquet",
        "--data-files",
        ctx.glob,
        "--data-root",
        ctx.data_dir,
        dest,
        "--columns",
        "id,label",
        "--take",
        "42",
        "--quiet"
      ])

    assert status == 0, out
    assert out =~ "exported 42 rows in 1 file"
    {:ok, m} = Parquet.read_manifest(dest)
    assert m.rows == 42
    assert m.spec["columns"] == ["id", "label"]
    assert :ok = Parquet.verify(m)
  end

  test "bad command lines fail with a usage message and a non-zero exit" do
    {status, out} = mix_export(["parquet"])
    assert status != 0 and out =~ "missing DEST"

    # The same checks in-process: they raise Mix.Error before connecting.
    for {argv, message} <- [
          {["parquet", "out", "--bogus"], "unknown option --bogus"},
          {["parquet", "out", "--max-file-bytes", "lots"], "not a byte count"},
          {["parquet", "out", "--overwrite", "--resume"], "exclude each other"},
          {["parquet", "out", "--batch-size", "0"], "--batch-size must be a positive integer"},
          {["parquet", "out", "extra"], "unexpected arguments extra"},
          {[], "missing SPEC and DEST"}
        ] do
      error = assert_raise Mix.Error, fn -> Mix.Tasks.Hf.Export.run(argv) end
      assert error.message =~ message
    end
  end

  test "size parsing and the progress line" do
    assert Mix.Tasks.Hf.Export.size!("268435456") == 268_435_456
    assert Mix.Tasks.Hf.Export.size!("256MiB") == 256 * 1024 * 1024
    assert Mix.Tasks.Hf.Export.size!("64MB") == 64_000_000
    assert Mix.Tasks.Hf.Export.size!("1G") == 1024 * 1024 * 1024
    assert Mix.Tasks.Hf.Export.size!("1.5k") == 1536

    line =
      Mix.Tasks.Hf.Export.progress_line(%{
        rows: 25_000,
        bytes: 3_200_000,
        files: 2,
        total_rows: 100_000,
        elapsed_seconds: 2.5
      })

    assert line =~ "25,000 / 100,000 rows  25.0%"
    assert line =~ "3.2 MB  2 files"
    assert line =~ "10,000 rows/s"
    assert line =~ "ETA 0:00:08"

    line =
      Mix.Tasks.Hf.Export.progress_line(%{
        rows: 10,
        bytes: 10,
        files: 1,
        total_rows: nil,
        elapsed_seconds: 1.0
      })

    assert line =~ "10 rows  |" and line =~ "1 file " and not (line =~ "ETA")
  end
end
