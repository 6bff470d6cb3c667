Code.require_file("golden_helper.exs", __DIR__)

defmodule HFBridge.Arrow.ApiTest do
  use ExUnit.Case, async: true

  alias HFBridge.Arrow
  alias HFBridge.Arrow.{Field, GoldenHelper, Schema, Table}
  alias HFBridge.Error

  setup_all do
    dir = GoldenHelper.generate!()
    read = fn name -> File.read!(Path.join(dir, name <> ".arrows")) end
    %{read: read}
  end

  defp eos_stripped(ipc) do
    size = byte_size(ipc) - 8
    <<body::binary-size(size), 0xFFFFFFFF::32, 0::32>> = ipc
    body
  end

  # The first message of a stream is the schema (no body).
  defp split_schema(<<0xFFFFFFFF::32, len::little-32, meta::binary-size(len), rest::binary>>),
    do: {<<0xFFFFFFFF::32, len::little-32, meta::binary>>, rest}

  describe "input and option validation" do
    test "non-binary input" do
      assert {:error, %Error{layer: :options, code: :invalid_argument}} = Arrow.read_stream(:nope)
      assert {:error, %Error{layer: :options}} = Arrow.read_batches(123, [])
      assert {:error, %Error{layer: :options}} = Arrow.read_schema(nil)
    end

    test "bad options", %{read: read} do
      ipc = read.("primitives")

      for opts <- [
            [copy: :yes],
            [temporal: :iso],
            [max_array_length: 0],
            [max_unbacked_values: -1],
            :not_a_list
          ] do
        assert {:error, %Error{layer: :options, code: :invalid_argument}} =
                 Arrow.read_stream(ipc, opts)
      end
    end

    test "empty and garbage input" do
      assert {:error, %Error{layer: :arrow, code: :malformed}} = Arrow.read_stream(<<>>)
      assert {:error, %Error{layer: :arrow, code: :malformed}} = Arrow.read_schema(<<>>)
      assert {:error, %Error{layer: :arrow, code: :malformed}} = Arrow.read_stream(<<1, 2, 3>>)

      assert {:error, %Error{layer: :arrow, code: :malformed}} =
               Arrow.read_stream(<<0xFFFFFFFF::32, 64::little-32, 0::64>>)
    end
  end

  describe "stream framing" do
    test "a stream without the end-of-stream marker is read to its end", %{read: read} do
      ipc = read.("primitives_batches")
      assert Arrow.read_stream(eos_stripped(ipc)) == Arrow.read_stream(ipc)
    end

    test "a stream that does not start with a schema", %{read: read} do
      {_schema, rest} = split_schema(read.("primitives"))
      assert {:error, %Error{code: :malformed, message: msg}} = Arrow.read_stream(rest)
      assert msg =~ "schema"
    end

    test "a second schema message is an error", %{read: read} do
      ipc = read.("primitives")

      assert {:error, %Error{code: :malformed, message: msg}} =
               Arrow.read_stream(eos_stripped(ipc) <> ipc)

      assert msg =~ "second schema"
    end

    test "a record batch message cut short is an error", %{read: read} do
      ipc = eos_stripped(read.("strings"))

      assert {:error, %Error{code: :malformed}} =
               Arrow.read_stream(binary_part(ipc, 0, byte_size(ipc) - 1))
    end

    test "read_schema reads only the schema", %{read: read} do
      {schema_msg, _} = split_schema(read.("hf_like"))
      assert {:ok, %Schema{} = schema} = Arrow.read_schema(schema_msg)
      assert {:ok, ^schema} = Arrow.read_schema(read.("hf_like"))

      assert Enum.map(schema.fields, & &1.name) ==
               ~w(text label score tokens meta image embedding)

      assert %Field{
               type: :struct,
               children: [%Field{name: "bytes", type: :binary}, %Field{name: "path"}]
             } = Schema.field(schema, "image")

      assert schema.metadata["huggingface"] =~ "features"
    end

    test "a schema-only stream reads as an empty table", %{read: read} do
      ipc = read.("schema_only")
      assert {:ok, %Table{num_rows: 0, columns: columns, schema: schema}} = Arrow.read_stream(ipc)
      assert Enum.map(columns, &elem(&1, 0)) == Enum.map(schema.fields, & &1.name)
      assert Enum.all?(columns, fn {_, values} -> values == [] end)
      assert {:ok, []} = Arrow.read_batches(ipc)
      assert Arrow.to_rows(%Table{num_rows: 0, columns: columns, schema: schema}) == []
    end
  end

  # A hand-built schema message: `levels` nested struct fields where every
  # field lists the next level's field `fanout` times (a shared table, so the
  # flatbuffer stays small while the tree it describes has fanout^levels nodes).
  defp dag_schema(levels, fanout) do
    field_vtable =
      <<16::little-16, 12::little-16, 0::16, 0::16, 4::little-16, 0::16, 0::16, 8::little-16>>

    {chunks, _} =
      Enum.map_reduce(0..(levels - 1), 60, fn _k, p ->
        q = p + 4 + 4 * fanout
        entries = for i <- 0..(fanout - 1), into: <<>>, do: <<q - (p + 4 + 4 * i)::little-32>>
        field = <<q - 44::little-signed-32, 13, 0, 0, 0, 4::little-32>>
        {<<fanout::little-32, entries::binary, field::binary>>, q + 12}
      end)

    meta =
      IO.iodata_to_binary([
        <<16::little-32>>,
        # Message vtable (version absent, header_type at +4, header at +8) and table.
        <<10::little-16, 12::little-16, 0::16, 4::little-16, 8::little-16, 0::16>>,
        <<12::little-signed-32, 1, 0, 0, 0, 12::little-32>>,
        # Schema vtable (fields at +4) and table.
        <<8::little-16, 8::little-16, 0::16, 4::little-16>>,
        <<8::little-signed-32, 20::little-32>>,
        field_vtable,
        chunks,
        <<0::little-32>>
      ])

    <<0xFFFFFFFF::32, byte_size(meta)::little-32, meta::binary>>
  end

  describe "hostile schemas" do
    test "the hand-built schema helper makes valid schemas" do
      assert {:ok,
              %Schema{fields: [%Field{type: :struct, children: [%Field{children: [_, _]}, _]}, _]}} =
               Arrow.read_schema(dag_schema(3, 2))
    end

    test "shared tables cannot blow up into an exponential tree" do
      assert {:error, %Error{code: :malformed, message: msg}} =
               Arrow.read_schema(dag_schema(40, 2))

      assert msg =~ ~r/more fields|at most/
    end

    test "nesting depth is capped" do
      assert {:ok, _} = Arrow.read_schema(dag_schema(60, 1))

      assert {:error, %Error{code: :malformed, message: msg}} =
               Arrow.read_schema(dag_schema(70, 1))

      assert msg =~ "deeper"
    end
  end

  describe "limits" do
    test "max_array_length bounds every array", %{read: read} do
      ipc = read.("primitives")

      assert {:error, %Error{code: :malformed, message: msg}} =
               Arrow.read_stream(ipc, max_array_length: 5)

      assert msg =~ "max_array_length"
      assert {:ok, %Table{num_rows: 9}} = Arrow.read_stream(ipc, max_array_length: 9)
    end

    test "max_unbacked_values bounds arrays without body data across the stream", %{read: read} do
      # One null column of 9 rows, written as 5 batches of 2 + 1.
      ipc = read.("primitives_batches")

      assert {:error, %Error{code: :malformed, message: msg}} =
               Arrow.read_stream(ipc, max_unbacked_values: 8)

      assert msg =~ "max_unbacked_values"
      assert {:ok, %Table{num_rows: 9}} = Arrow.read_stream(ipc, max_unbacked_values: 9)
    end
  end

  describe "binaries" do
    test "values are sub-binaries of the message unless copy: true", %{read: read} do
      ipc = read.("strings")
      long = String.duplicate("x", 100)

      {:ok, table} = Arrow.read_stream(ipc)
      value = Enum.find(Arrow.column(table, "utf8"), &(&1 == long))
      assert :binary.referenced_byte_size(value) == byte_size(ipc)

      {:ok, table} = Arrow.read_stream(ipc, copy: true)
      value = Enum.find(Arrow.column(table, "utf8"), &(&1 == long))
      assert :binary.referenced_byte_size(value) == byte_size(long)
    end
  end

  describe "temporal option" do
    test ":raw keeps integers, :elixir gives calendar types", %{read: read} do
      ipc = read.("temporal")
      {:ok, raw} = Arrow.read_stream(ipc, temporal: :raw)
      {:ok, ex} = Arrow.read_stream(ipc)
      assert [19_782 | _] = Arrow.column(raw, "date32")
      assert [~D[2024-02-29] | _] = Arrow.column(ex, "date32")
      assert [%NaiveDateTime{} | _] = Arrow.column(ex, "ts_us")
      assert [%DateTime{time_zone: "Etc/UTC"} | _] = Arrow.column(ex, "ts_nyc")
      # Durations are integers either way.
      assert Arrow.column(ex, "dur_ms") == Arrow.column(raw, "dur_ms")
    end
  end
end
