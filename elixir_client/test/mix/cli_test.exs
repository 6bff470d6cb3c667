defmodule HFBridge.CLITest do
  use ExUnit.Case, async: true

  alias HFBridge.CLI
  alias HFBridge.CLI.{Describe, Format}

  describe "parse!/4" do
    test "maps dataset flags to HFBridge options" do
      parsed =
        CLI.parse!(
          "hf.stream",
          [
            "parquet",
            "--data-files",
            "train=a/*.parquet",
            "--data-files",
            "test=b.parquet",
            "--columns",
            "a, b,",
            "--filter",
            "label == 1 and lang in (en, 'fr')",
            "--filter",
            "score >= 0.5",
            "--seed",
            "7",
            "--num-shards",
            "4",
            "--shard-index",
            "3",
            "--skip",
            "2",
            "-n",
            "9",
            "--format",
            "jsonl"
          ],
          [format: :string],
          n: :take
        )

      assert parsed.dataset == "parquet"
      assert parsed.task_opts == [format: "jsonl"]
      opts = parsed.dataset_opts
      assert opts[:data_files] == %{"train" => ["a/*.parquet"], "test" => ["b.parquet"]}
      assert opts[:columns] == ["a", "b"]

      assert opts[:filters] == [
               [{"label", :==, 1}, {"lang", :in, ["en", "fr"]}],
               [{"score", :>=, 0.5}]
             ]

      assert opts[:shuffle] == [seed: 7]
      assert opts[:shard] == {3, 4}
      assert {opts[:skip], opts[:take]} == {2, 9}
      # What the flags produce is what the library accepts.
      assert {:ok, _} = HFBridge.Spec.build("parquet", opts)
    end

    test "plain data files stay a list; globs with = are not split names" do
      assert CLI.data_files(["data/*.parquet", "x/y=1/*.parquet"]) == [
               "data/*.parquet",
               "x/y=1/*.parquet"
             ]

      assert CLI.data_files([]) == nil
    end

    test "connection flags become client options" do
      parsed =
        CLI.parse!(
          "hf.info",
          ~w(d --address h:1 --token t --data-root /x --workers 3 --python /p)
        )

      opts = parsed.client_opts
      assert opts[:address] == "h:1"
      assert opts[:token] == "t"

      assert opts[:local_server] == [
               data_roots: ["/x"],
               workers: 3,
               python: "/p",
               log_level: false
             ]

      assert {:ok, _} = HFBridge.Options.validate(opts, HFBridge.Client.schema())
    end

    test "bad input raises Mix.Error naming the flag" do
      assert_raise Mix.Error, ~r/unknown option --nope/, fn ->
        CLI.parse!("hf.info", ~w(d --nope))
      end

      assert_raise Mix.Error, ~r/invalid value "x" for --take/, fn ->
        CLI.parse!("hf.info", ~w(d --take x))
      end

      assert_raise Mix.Error, ~r/--skip must not be negative/, fn ->
        CLI.parse!("hf.info", ~w(d --skip -1))
      end

      assert_raise Mix.Error, ~r/--shard-index needs --num-shards/, fn ->
        CLI.parse!("hf.info", ~w(d --shard-index 1))
      end

      assert_raise Mix.Error, ~r/missing SPEC/, fn -> CLI.parse!("hf.info", []) end
      assert_raise Mix.Error, ~r/unexpected arguments b/, fn -> CLI.parse!("hf.info", ~w(a b)) end

      assert_raise Mix.Error, ~r/--filter "a ~ 1"/, fn ->
        CLI.parse!("hf.info", ["a", "--filter", "a ~ 1"])
      end

      assert_raise Mix.Error, ~r/needs a list/, fn ->
        CLI.parse!("hf.info", ["a", "--filter", "a in 1"])
      end
    end
  end

  describe "Format" do
    test "cells are one line; binaries and nested values are readable" do
      assert Format.cell("a\nb\tc") == "a\\nb\\tc"
      assert Format.cell(<<0, 255, 1>>) == "<3 bytes>"
      assert Format.cell(nil) == "null"
      assert Format.cell(1.5) == "1.5"
      # float32 values arrive widened to doubles; they print as written
      assert Format.cell(0.44600000977516174) == "0.446"
      assert Format.cell(0.1) == "0.1"
      assert Format.cell(0.30000000000000004) == "0.30000000000000004"
      assert Format.cell(1.0e300) == "1.0e300"

      assert Format.cell(%{"bytes" => <<0, 1>>, "path" => nil}) ==
               ~s({"bytes":"<2 bytes>","path":null})

      assert Format.cell(["a", 1]) == ~s(["a",1])
      assert Format.cell(~N[2024-01-02 03:04:05]) == "2024-01-02T03:04:05"
    end

    test "JSON lines carry every value kind" do
      row = %{
        "b" => <<0, 255>>,
        "t" => ~U[2024-01-02 03:04:05Z],
        "d" => ~D[2024-01-02],
        "f" => :nan,
        "m" => [{"k", 1}],
        "s" => "é"
      }

      assert HFBridge.JSON.decode!(IO.iodata_to_binary(Format.json_line(row))) == %{
               "b" => Base.encode64(<<0, 255>>),
               "t" => "2024-01-02T03:04:05Z",
               "d" => "2024-01-02",
               "f" => nil,
               "m" => %{"k" => 1},
               "s" => "é"
             }
    end

    test "tables align, cut long text and keep numbers whole" do
      rows = [%{"id" => 1, "text" => "short"}, %{"id" => 2, "text" => String.duplicate("y", 50)}]
      widths = Format.widths(["id", "text"], rows, 10)
      assert widths == [2, 10]

      assert IO.iodata_to_binary(Format.header(["id", "text"], widths)) ==
               "id  text\n--  ----------\n"

      assert IO.iodata_to_binary(Format.row(Enum.at(rows, 1), ["id", "text"], widths)) ==
               "2   yyyyyyyyy…\n"

      assert IO.iodata_to_binary(
               Format.row(%{"id" => 123_456, "text" => "z"}, ["id", "text"], widths)
             ) == "123456  z\n"
    end

    test "summary and sizes" do
      assert Format.summary(1000, 2_000_000, 2.0) == "1000 rows in 2.00 s (500 rows/s, 1.00 MB/s)"
      assert Format.bytes(999) == "999 B"
      assert Format.bytes(1_500_000) == "1.5 MB"
    end
  end

  describe "Describe" do
    test "features in short form" do
      assert Describe.feature(%{"_type" => "Value", "dtype" => "int64"}) == "int64"

      assert Describe.feature(%{"_type" => "ClassLabel", "names" => ["a", "b"]}) ==
               "ClassLabel(a, b)"

      assert Describe.feature(%{
               "_type" => "List",
               "feature" => %{"_type" => "Value", "dtype" => "float32"},
               "length" => 3
             }) ==
               "list<float32, length: 3>"

      assert Describe.feature(%{"a" => %{"_type" => "Value", "dtype" => "string"}}) ==
               "{a: string}"

      assert Describe.feature(%{"_type" => "Image"}) == "Image"
    end
  end
end
