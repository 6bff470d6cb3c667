Code.require_file("python_golden.exs", __DIR__)

defmodule HFBridge.Proto.GoldenTest do
  # Cross-checks the Elixir codec against Python's protobuf, both directions.
  use ExUnit.Case, async: true

  alias HFBridge.Proto
  alias HFBridge.ProtoTest.PythonGolden

  setup_all do
    %{cases: PythonGolden.run("golden")}
  end

  test "golden cases cover every message of the contract", %{cases: cases} do
    covered = cases |> Enum.map(& &1.message) |> MapSet.new()
    assert MapSet.new(Proto.messages()) == covered
    assert length(cases) > 3 * length(Proto.messages())
  end

  test "bytes written by Python decode to the values Python reports", %{cases: cases} do
    failures =
      for c <- cases, (got = Proto.decode(c.message, c.bytes)) != {:ok, c.expected} do
        {c.label, got, c.expected}
      end

    assert failures == []
  end

  test "Elixir encodes the decoded values to Python's exact bytes", %{cases: cases} do
    failures =
      for c <- cases, (got = Proto.encode(c.message, c.expected)) != c.canonical do
        {c.label, got, c.canonical}
      end

    assert failures == []
  end

  test "unknown fields and a wider schema's extra fields are skipped", %{cases: cases} do
    unknown = Enum.filter(cases, &(&1.label =~ "unknown" or &1.label =~ "wider"))
    assert length(unknown) >= 20

    for c <- unknown do
      assert byte_size(c.bytes) > byte_size(c.canonical)
      assert {:ok, c.expected} == Proto.decode(c.message, c.bytes)
    end
  end

  test "Elixir encodings parse in Python to the same values", %{cases: cases} do
    u64 = 0xFFFF_FFFF_FFFF_FFFF

    handmade = [
      {:Scalar, %{int_value: 0}},
      {:Scalar, %{float_value: -0.0}},
      {:Scalar, %{float_value: :infinity}},
      {:Scalar, %{string_value: "ünïcødé 𝄞 🤗"}},
      {:Scalar, %{bool_value: false}},
      {:Scalar, %{}},
      {:DatasetSpec,
       %{path: "csv", seed: u64, skip: u64, take: 0, shuffle: true, columns: ["a", "é"]}},
      {:DatasetSpec,
       %{take: nil, skip: 0, data_files: [%{split: "train", patterns: ["*.csv"]}, %{}]}},
      {:DatasetSpec,
       %{
         filters: [
           %{
             all: [
               %{
                 column: "x",
                 op: "in",
                 values: [%{int_value: -(2 ** 63)}, %{float_value: 1.0e300}]
               }
             ]
           }
         ]
       }},
      {:SplitInfo, %{name: "train", num_rows: 0}},
      {:DatasetInfo,
       %{arrow_schema: :binary.list_to_bin(Enum.to_list(0..255)), splits: [%{}, %{num_bytes: 1}]}},
      {:OpenRequest, %{spec: %{}, batch_size: 0xFFFF_FFFF}},
      {:Batch,
       %{seq: u64, num_rows: 1, arrow_ipc: String.duplicate(<<0, 255>>, 5000), end_of_data: true}},
      {:ExportProgress, %{total_rows: 0, elapsed_seconds: 12.25, files: 1}},
      {:ExportEvent, %{progress: %{}}},
      {:ExportEvent, %{result: %{manifest_json: "{}", rows: 3}}},
      {:CloseResponse, %{}}
    ]

    inputs = handmade ++ Enum.map(cases, &{&1.message, &1.expected})
    encoded = Enum.map(inputs, fn {msg, fields} -> {msg, Proto.encode(msg, fields)} end)
    results = PythonGolden.parse(encoded)
    assert length(results) == length(encoded)

    failures =
      for {{msg, bin}, result} <- Enum.zip(encoded, results),
          {:ok, ours} = Proto.decode(msg, bin),
          result != {:ok, ours, bin, 0} do
        {msg, bin, ours, result}
      end

    assert failures == []
  end

  test "handmade values decode back to themselves with defaults filled in" do
    bin = Proto.encode(:SplitInfo, %{name: "train", num_rows: 0})

    assert Proto.decode(:SplitInfo, bin) == {:ok, %{name: "train", num_rows: 0, num_bytes: nil}}
    assert Proto.decode(:SplitInfo, "") == {:ok, %{name: "", num_rows: nil, num_bytes: nil}}

    assert {:ok, %{int_value: nil, float_value: 2.5, string_value: nil, bool_value: nil}} =
             Proto.decode(:Scalar, Proto.encode(:Scalar, %{float_value: 2.5}))
  end
end
