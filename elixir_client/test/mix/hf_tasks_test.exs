defmodule Mix.Tasks.HfTasksTest do
  # Runs `mix hf.stream` / `mix hf.info` as a user would: a separate `mix`
  # process with the test build, against a real server.
  use HFBridge.ServerCase, async: true

  @project_dir Path.expand("../..", __DIR__)

  setup_all %{data_dir: data_dir} do
    simple = simple_parquet!(Path.join(data_dir, "simple.parquet"), 30)
    # Compile the project once up front, so that the task runs below print only their own output.
    {_, _, 0} = mix(~w(compile))

    labeled =
      write_rows!(
        Path.join(data_dir, "labeled.parquet"),
        Enum.map(
          0..9,
          &%{
            "id" => &1,
            "label" => rem(&1, 2),
            "words" => ["w#{&1}"],
            "note" => String.duplicate("x", 100)
          }
        ),
        "Features({'id': Value('int64'), 'label': ClassLabel(names=['neg', 'pos']), " <>
          "'words': List(Value('string')), 'note': Value('string')})"
      )

    %{simple: simple, labeled: labeled}
  end

  # Runs `mix task args...`; returns {stdout, stderr, exit_status}. Lines of a
  # compilation (sources changed since the test run compiled) are dropped.
  defp mix(args, env \\ []) do
    err = Path.join(System.tmp_dir!(), "hf_bridge_mix_err_#{System.unique_integer([:positive])}")

    env =
      [
        {"MIX_ENV", "test"},
        {"MIX_BUILD_PATH", Mix.Project.build_path()},
        {"HF_HUB_OFFLINE", "1"},
        {"HF_BRIDGE_PYTHON", python()},
        {"HF_BRIDGE_ADDRESS", nil}
      ] ++ env

    try do
      {out, status} =
        System.cmd("sh", ["-c", ~s(exec mix "$@" 2>"#{err}" </dev/null), "mix" | args],
          cd: @project_dir,
          env: env
        )

      out =
        out
        |> String.split("\n")
        |> Enum.reject(&(&1 =~ ~r/^(Compiling \d+ files? \(\.exs?\)|Generated hf_bridge app)$/))
        |> Enum.join("\n")

      {out, File.read!(err), status}
    after
      File.rm(err)
    end
  end

  describe "mix hf.stream" do
    test "prints JSON lines and a summary", %{address: address, simple: simple} do
      {out, err, 0} =
        mix(
          ~w(hf.stream parquet --data-files #{simple} --take 3 --format jsonl --address #{address})
        )

      lines = String.split(out, "\n", trim: true)

      assert Enum.map(lines, &HFBridge.JSON.decode!/1) ==
               for(i <- 0..2, do: %{"id" => i, "text" => "row #{i}"})

      assert err =~ ~r/3 rows in \d+\.\d+ s \(\d+ rows\/s, \d+\.\d+ MB\/s\)/
    end

    test "prints an aligned table with long values cut", %{address: address, labeled: labeled} do
      {out, _err, 0} =
        mix(
          ~w(hf.stream parquet --data-files #{labeled} --columns id,label,note -n 2 --max-width 20 --address #{address})
        )

      assert [header, rule, row0, row1] = String.split(out, "\n", trim: true)
      assert header == "id  label  note"
      assert rule == "--  -----  --------------------"
      assert row0 == "0   0      " <> String.duplicate("x", 19) <> "…"
      assert row1 =~ ~r/^1   1      x+…$/
    end

    test "shuffles and shards like the library", %{
      address: address,
      simple: simple,
      client: client
    } do
      args =
        ~w(hf.stream parquet --data-files #{simple} --shuffle --seed 3 --shuffle-buffer 8 --format jsonl --quiet --address #{address})

      {out, err, 0} = mix(args)
      refute err =~ "rows in"
      ids = out |> String.split("\n", trim: true) |> Enum.map(&HFBridge.JSON.decode!(&1)["id"])

      expected =
        HFBridge.rows("parquet", client: client, data_files: simple, shuffle: [seed: 3, buffer: 8])
        |> Enum.map(& &1["id"])

      assert ids == expected
      assert Enum.sort(ids) == Enum.to_list(0..29)
    end

    test "starts and stops a local server when no address is configured", %{data_dir: data_dir} do
      root = Path.join(data_dir, "local_root")
      simple = simple_parquet!(Path.join(root, "simple.parquet"), 5)

      {out, err, 0} =
        mix(
          ~w(hf.stream parquet --data-files #{simple} --take 2 --format jsonl --data-root #{root} --workers 1)
        )

      assert length(String.split(out, "\n", trim: true)) == 2
      assert err =~ "Starting a local hf_bridge server"
      {running, _} = System.cmd("pgrep", ["-f", "--", "--data-root #{root} --export-root"])
      assert running == ""
    end

    test "a missing Python install is a clear error", %{simple: simple} do
      {_out, err, status} =
        mix(~w(hf.stream parquet --data-files #{simple} --python /nonexistent/python3))

      assert status != 0
      assert err =~ "/nonexistent/python3"
      assert err =~ "make install" or err =~ "pip install"
    end

    test "unknown or invalid flags name the flag and exit non-zero", %{address: address} do
      {_, err, status} = mix(~w(hf.stream parquet --bogus 1 --address #{address}))
      assert status != 0
      assert err =~ "unknown option --bogus"

      {_, err, status} = mix(~w(hf.stream parquet --take many --address #{address}))
      assert status != 0
      assert err =~ "--take"

      {_, err, status} = mix(~w(hf.stream parquet --format xml --address #{address}))
      assert status != 0
      assert err =~ "--format"
    end

    test "an unknown dataset is a clear error", %{address: address, data_dir: data_dir} do
      {_, err, status} = mix(~w(hf.stream #{Path.join(data_dir, "missing")} --address #{address}))
      assert status != 0
      assert err =~ "not_found"
      assert err =~ "missing"
    end
  end

  describe "mix hf.info" do
    test "prints features, schema and splits", %{address: address, labeled: labeled} do
      {out, _err, 0} = mix(~w(hf.info parquet --data-files #{labeled} --address #{address}))
      assert out =~ "builder:    parquet"
      assert out =~ "  train: "
      assert out =~ "  label: ClassLabel(neg, pos)"
      assert out =~ "  words: list<string>"
      assert out =~ "arrow schema:"
      assert out =~ "  id: int64"
    end

    test "prints JSON with --json", %{address: address, simple: simple} do
      {out, _err, 0} = mix(~w(hf.info parquet --data-files #{simple} --json --address #{address}))
      info = HFBridge.JSON.decode!(out)
      assert info["builder"] == "parquet"
      assert Map.keys(info["features"]) |> Enum.sort() == ["id", "text"]
    end

    test "needs a SPEC", %{address: address} do
      {_, err, status} = mix(~w(hf.info --address #{address}))
      assert status != 0
      assert err =~ "missing SPEC"
    end
  end
end
