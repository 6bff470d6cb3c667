defmodule HFBridge.Arrow.Schema do
  @moduledoc """
  An Arrow schema: the ordered fields of a table and its custom metadata
  (for HuggingFace data, `metadata["huggingface"]` holds the `Features` JSON).

  ## Types

  `t:type/0` values, one per Arrow logical type supported by
  `HFBridge.Arrow`:

    * `:null`, `:bool`
    * `:int8`, `:int16`, `:int32`, `:int64`, `:uint8`, `:uint16`, `:uint32`, `:uint64`
    * `:float16`, `:float32`, `:float64`
    * `:utf8`, `:large_utf8`, `:binary`, `:large_binary`, `{:fixed_size_binary, byte_width}`
    * `{:decimal, precision, scale, bit_width}` (bit width 32, 64, 128 or 256)
    * `:date32` (days), `:date64` (milliseconds)
    * `{:time32, unit}`, `{:time64, unit}`, `{:timestamp, unit, timezone | nil}`,
      `{:duration, unit}` where unit is `:second | :millisecond | :microsecond | :nanosecond`
    * `:list`, `:large_list`, `{:fixed_size_list, size}`, `:struct`,
      `{:map, keys_sorted :: boolean}` — the item/member types are in the
      field's `children`
    * `{:unsupported, name}` — a type the reader does not decode (union,
      interval, run-end encoded, view types); decoding a batch holding such a
      column returns an `:unsupported` error.
  """

  alias HFBridge.Arrow.{Field, FlatBuffer}

  @type time_unit :: :second | :millisecond | :microsecond | :nanosecond
  @type type ::
          :null
          | :bool
          | :int8
          | :int16
          | :int32
          | :int64
          | :uint8
          | :uint16
          | :uint32
          | :uint64
          | :float16
          | :float32
          | :float64
          | :utf8
          | :large_utf8
          | :binary
          | :large_binary
          | {:fixed_size_binary, non_neg_integer()}
          | {:decimal, integer(), integer(), 32 | 64 | 128 | 256}
          | :date32
          | :date64
          | {:time32, time_unit()}
          | {:time64, time_unit()}
          | {:timestamp, time_unit(), String.t() | nil}
          | {:duration, time_unit()}
          | :list
          | :large_list
          | {:fixed_size_list, non_neg_integer()}
          | :struct
          | {:map, boolean()}
          | {:unsupported, String.t()}

  @type t :: %__MODULE__{fields: [Field.t()], metadata: %{optional(String.t()) => String.t()}}

  defstruct fields: [], metadata: %{}

  @max_depth 64

  @doc """
  Builds a schema from a `Schema` flatbuffer table (Schema.fbs: `endianness`
  = field 0, `fields` = 1, `custom_metadata` = 2). Throws
  `{:arrow_malformed, msg}` / `{:arrow_unsupported, msg}` on bad input.

  Nesting is capped at #{@max_depth} levels, and the number of fields and
  metadata entries at one per 8 bytes of flatbuffer (a real schema needs
  more than that per entry), so tables shared or looped by a hostile
  flatbuffer cannot blow up into an exponential tree.
  """
  @spec from_flatbuffer(FlatBuffer.table()) :: t()
  def from_flatbuffer(table) do
    if FlatBuffer.int(table, 0, 16, :signed, 0) != 0 do
      throw({:arrow_unsupported, "big-endian Arrow data is not supported"})
    end

    budget = div(byte_size(elem(table, 0)), 8)

    {fields, budget} =
      Enum.map_reduce(FlatBuffer.tables(table, 1, budget), budget, &parse_field(&1, 0, &2))

    {metadata, _} = metadata(table, 2, budget)
    %__MODULE__{fields: fields, metadata: metadata}
  end

  @doc "Finds a top-level field by name."
  @spec field(t(), String.t()) :: Field.t() | nil
  def field(%__MODULE__{fields: fields}, name), do: Enum.find(fields, &(&1.name == name))

  # Field (Schema.fbs): name 0, nullable 1, type_type 2, type 3, dictionary 4,
  # children 5, custom_metadata 6.
  defp parse_field(_t, depth, _budget) when depth > @max_depth,
    do: throw({:arrow_malformed, "schema nesting deeper than #{@max_depth} levels"})

  defp parse_field(_t, _depth, budget) when budget <= 0,
    do: throw({:arrow_malformed, "schema has more fields than its flatbuffer can hold"})

  defp parse_field(t, depth, budget) do
    type_tag = FlatBuffer.int(t, 2, 8, :unsigned, 0)
    type_table = FlatBuffer.table(t, 3)

    {children, budget} =
      Enum.map_reduce(
        FlatBuffer.tables(t, 5, budget - 1),
        budget - 1,
        &parse_field(&1, depth + 1, &2)
      )

    type = type(type_tag, type_table)
    check_children(type, length(children))
    {metadata, budget} = metadata(t, 6, budget)

    field = %Field{
      name: FlatBuffer.string(t, 0) || "",
      nullable: FlatBuffer.bool(t, 1, false),
      type: type,
      children: children,
      metadata: metadata,
      dictionary: dictionary(FlatBuffer.table(t, 4))
    }

    {field, budget}
  end

  defp check_children(type, n) do
    needed =
      case type do
        :list -> 1
        :large_list -> 1
        {:fixed_size_list, _} -> 1
        {:map, _} -> 1
        :struct -> nil
        {:unsupported, _} -> nil
        _ -> 0
      end

    if needed != nil and needed != n do
      throw({:arrow_malformed, "type #{inspect(type)} needs #{needed} child field(s), got #{n}"})
    end
  end

  # DictionaryEncoding: id 0, indexType 1 (Int table), isOrdered 2.
  defp dictionary(nil), do: nil

  defp dictionary(d) do
    index_type =
      case FlatBuffer.table(d, 1) do
        nil -> :int32
        int -> int_type(int)
      end

    %{
      id: FlatBuffer.int(d, 0, 64, :signed, 0),
      index_type: index_type,
      ordered: FlatBuffer.bool(d, 2, false)
    }
  end

  defp metadata(t, idx, budget) do
    entries = FlatBuffer.tables(t, idx, budget)
    budget = budget - length(entries)

    if budget < 0,
      do: throw({:arrow_malformed, "more metadata entries than the flatbuffer can hold"})

    map =
      for kv <- entries,
          into: %{},
          do: {FlatBuffer.string(kv, 0) || "", FlatBuffer.string(kv, 1) || ""}

    {map, budget}
  end

  # Type union tags (Schema.fbs `union Type`).
  defp type(1, _), do: :null
  defp type(2, t), do: int_type(need(t))
  defp type(3, t), do: float_type(FlatBuffer.int(need(t), 0, 16, :signed, 0))
  defp type(4, _), do: :binary
  defp type(5, _), do: :utf8
  defp type(6, _), do: :bool

  defp type(7, t) do
    t = need(t)
    bits = FlatBuffer.int(t, 2, 32, :signed, 128)

    if bits not in [32, 64, 128, 256],
      do: throw({:arrow_unsupported, "decimal bit width #{bits}"})

    {:decimal, FlatBuffer.int(t, 0, 32, :signed, 0), FlatBuffer.int(t, 1, 32, :signed, 0), bits}
  end

  defp type(8, t) do
    case FlatBuffer.int(need(t), 0, 16, :signed, 1) do
      0 -> :date32
      1 -> :date64
      u -> throw({:arrow_malformed, "bad date unit #{u}"})
    end
  end

  defp type(9, t) do
    t = need(t)
    unit = unit(FlatBuffer.int(t, 0, 16, :signed, 1))

    case {FlatBuffer.int(t, 1, 32, :signed, 32), unit} do
      {32, u} when u in [:second, :millisecond] -> {:time32, u}
      {64, u} when u in [:microsecond, :nanosecond] -> {:time64, u}
      {bits, u} -> throw({:arrow_malformed, "bad time type: #{bits} bits in #{u}"})
    end
  end

  defp type(10, t) do
    t = need(t)
    {:timestamp, unit(FlatBuffer.int(t, 0, 16, :signed, 0)), FlatBuffer.string(t, 1)}
  end

  defp type(11, _), do: {:unsupported, "interval"}
  defp type(12, _), do: :list
  defp type(13, _), do: :struct
  defp type(14, _), do: {:unsupported, "union"}

  defp type(15, t) do
    case FlatBuffer.int(need(t), 0, 32, :signed, 0) do
      w when w >= 0 -> {:fixed_size_binary, w}
      w -> throw({:arrow_malformed, "bad fixed_size_binary width #{w}"})
    end
  end

  defp type(16, t) do
    case FlatBuffer.int(need(t), 0, 32, :signed, 0) do
      n when n >= 0 -> {:fixed_size_list, n}
      n -> throw({:arrow_malformed, "bad fixed_size_list size #{n}"})
    end
  end

  defp type(17, t), do: {:map, t != nil and FlatBuffer.bool(t, 0, false)}
  defp type(18, t), do: {:duration, unit(FlatBuffer.int(need(t), 0, 16, :signed, 1))}
  defp type(19, _), do: :large_binary
  defp type(20, _), do: :large_utf8
  defp type(21, _), do: :large_list
  defp type(22, _), do: {:unsupported, "run_end_encoded"}
  defp type(23, _), do: {:unsupported, "binary_view"}
  defp type(24, _), do: {:unsupported, "utf8_view"}
  defp type(25, _), do: {:unsupported, "list_view"}
  defp type(26, _), do: {:unsupported, "large_list_view"}
  defp type(tag, _), do: throw({:arrow_malformed, "unknown type tag #{tag}"})

  defp need(nil), do: throw({:arrow_malformed, "field type table missing"})
  defp need(t), do: t

  # Int: bitWidth 0, is_signed 1.
  defp int_type(t) do
    case {FlatBuffer.int(t, 0, 32, :signed, 0), FlatBuffer.bool(t, 1, false)} do
      {8, true} -> :int8
      {16, true} -> :int16
      {32, true} -> :int32
      {64, true} -> :int64
      {8, false} -> :uint8
      {16, false} -> :uint16
      {32, false} -> :uint32
      {64, false} -> :uint64
      {bits, _} -> throw({:arrow_malformed, "bad integer bit width #{bits}"})
    end
  end

  # Precision: HALF 0, SINGLE 1, DOUBLE 2.
  defp float_type(0), do: :float16
  defp float_type(1), do: :float32
  defp float_type(2), do: :float64
  defp float_type(p), do: throw({:arrow_malformed, "bad float precision #{p}"})

  # TimeUnit: SECOND 0, MILLISECOND 1, MICROSECOND 2, NANOSECOND 3.
  defp unit(0), do: :second
  defp unit(1), do: :millisecond
  defp unit(2), do: :microsecond
  defp unit(3), do: :nanosecond
  defp unit(u), do: throw({:arrow_malformed, "bad time unit #{u}"})
end
