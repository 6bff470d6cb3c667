Code.require_file("golden_helper.exs", __DIR__)

defmodule HFBridge.Arrow.GoldenTest do
  # Streams written by pyarrow during the run; expected values are what
  # pyarrow's to_pylist() reports for the same streams.
  use ExUnit.Case, async: true

  alias HFBridge.Arrow
  alias HFBridge.Arrow.{GoldenHelper, Table}

  @cases ~w(
    compressed_lz4 compressed_zstd decimals decimals_sliced dict_deltas
    dict_deltas_then_replacement dict_replacement dictionaries dictionaries_sliced
    empty_batch empty_between hf_like hf_like_big hf_like_sliced interval
    legacy_dicts legacy_format metadata_v4 nested nested_batches nested_sliced
    nested_sliced_tail primitives primitives_batches primitives_sliced
    primitives_sliced_batches schema_only strings strings_copy strings_sliced
    strings_sliced_large temporal temporal_raw temporal_sliced union
  )

  setup_all do
    %{dir: GoldenHelper.generate!()}
  end

  test "the generator wrote exactly the cases this module checks", %{dir: dir} do
    assert GoldenHelper.names(dir) == Enum.sort(@cases)
  end

  for name <- @cases do
    @tag golden: name
    test "golden #{name}", %{dir: dir} do
      {ipc, expected} = GoldenHelper.load(dir, unquote(name))
      check(ipc, expected)
    end
  end

  defp check(ipc, %{error: code} = expected) when code != nil do
    assert {:error, %HFBridge.Error{layer: :arrow, code: ^code, message: msg}} =
             Arrow.read_stream(ipc, expected.opts)

    assert is_binary(msg) and msg != ""
    # The schema itself is still readable.
    assert {:ok, schema} = Arrow.read_schema(ipc)
    assert length(schema.fields) == length(expected.fields)
  end

  defp check(ipc, expected) do
    assert {:ok, schema} = Arrow.read_schema(ipc)
    assert Enum.map(schema.fields, &project/1) == expected.fields
    assert schema.metadata == expected.metadata

    assert {:ok, %Table{} = table} = Arrow.read_stream(ipc, expected.opts)
    assert table.schema == schema
    assert table.num_rows == expected.num_rows

    for {{name, values}, {exp_name, exp_values}} <- Enum.zip(table.columns, expected.columns) do
      assert name == exp_name
      assert length(values) == expected.num_rows
      assert_same(values, exp_values, "column #{name}")
      assert Arrow.column(table, name) == values
    end

    assert length(table.columns) == length(expected.columns)
    rows = expected.rows || rows_from_columns(expected)
    assert_same(Arrow.to_rows(table), rows, "rows")
    assert Arrow.column(table, "no such column") == nil

    assert {:ok, batches} = Arrow.read_batches(ipc, expected.opts)
    assert Enum.map(batches, & &1.num_rows) == expected.batch_rows
    assert_same(Enum.flat_map(batches, &Arrow.to_rows/1), rows, "batch rows")

    if Keyword.get(expected.opts, :copy, false), do: assert_copied(table, ipc)
  end

  # Exact comparison (=== keeps 1 and 1.0 apart), reporting the first differing element.
  defp assert_same(actual, expected, what) do
    unless actual === expected do
      {a, e, i} =
        Enum.zip(actual, expected)
        |> Enum.with_index()
        |> Enum.find_value({actual, expected, nil}, fn {{a, e}, i} ->
          if a !== e, do: {a, e, i}
        end)

      flunk(
        "#{what} differs at index #{inspect(i)}:\n  got:      #{inspect(a, limit: 50)}\n  expected: #{inspect(e, limit: 50)}"
      )
    end
  end

  defp rows_from_columns(%{columns: columns, num_rows: n}) do
    for i <- 0..(n - 1)//1 do
      Map.new(columns, fn {name, values} -> {name, Enum.at(values, i)} end)
    end
  end

  defp project(field) do
    %{
      name: field.name,
      type: field.type,
      nullable: field.nullable,
      children: Enum.map(field.children, &project/1),
      dictionary: field.dictionary && Map.take(field.dictionary, [:index_type, :ordered])
    }
  end

  # With copy: true no binary value refers into the message.
  defp assert_copied(table, ipc) do
    for {_name, values} <- table.columns,
        v <- List.flatten(values),
        is_binary(v),
        byte_size(v) > 0 do
      refute :binary.referenced_byte_size(v) == byte_size(ipc)
    end
  end
end
