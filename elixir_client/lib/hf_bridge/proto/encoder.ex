defmodule HFBridge.Proto.Encoder do
  @moduledoc """
  Encodes maps into protobuf wire bytes using a `HFBridge.Proto.Schema`.

  Fields are written in field-number order, as the reference
  implementations do. A missing key or `nil` means "not set". Fields with
  implicit presence (plain proto3 scalars and enums) are not written when
  they hold their default; `optional` fields, oneof members and message
  fields are written whenever they are non-nil (a message given as `%{}` is
  written as an empty message). Repeated numeric fields are packed when the
  schema says so (the proto3 default).

  Input that does not fit the schema — an unknown field, a value of the
  wrong type or out of range, invalid UTF-8 in a `string`, two members of
  one oneof — is a programming error and raises `ArgumentError`.

  Values: integers for integer types (range-checked), floats or integers for
  `double`/`float` (also `:infinity`, `:neg_infinity`, `:nan`), booleans,
  binaries for `string` (UTF-8) and `bytes`, enum name atoms or integers,
  maps for messages, lists for repeated fields and maps for `map<>` fields.
  """

  alias HFBridge.Proto.Schema
  alias HFBridge.Proto.Schema.{Field, Message}
  alias HFBridge.Proto.Wire

  @int32 -0x8000_0000..0x7FFF_FFFF
  @uint32_max 0xFFFF_FFFF
  @int64_min -0x8000_0000_0000_0000
  @int64_max 0x7FFF_FFFF_FFFF_FFFF
  @uint64_max 0xFFFF_FFFF_FFFF_FFFF

  @doc "Encodes `fields` as message `name` of `schema` into a binary."
  @spec encode(Schema.t(), atom(), map()) :: binary()
  def encode(%Schema{} = schema, name, fields) do
    schema |> Schema.message!(name) |> message(fields, schema) |> IO.iodata_to_binary()
  end

  defp message(%Message{} = msg, fields, schema) when is_map(fields) and not is_struct(fields) do
    Enum.each(fields, fn {key, _value} ->
      unless is_atom(key) and Map.has_key?(msg.by_name, key),
        do: raise(ArgumentError, "#{msg.name} has no field #{inspect(key)}")
    end)

    Enum.each(msg.oneofs, fn {oneof, members} ->
      case Enum.filter(members, &(Map.get(fields, &1) != nil)) do
        [_, _ | _] = set ->
          raise ArgumentError,
                "#{msg.name}: oneof #{oneof} has several members set: #{inspect(set)}"

        _ ->
          :ok
      end
    end)

    for %Field{name: name} = f <- msg.fields, (value = Map.get(fields, name)) != nil do
      field(f, value, msg, schema)
    end
  end

  defp message(msg, other, _schema),
    do:
      raise(ArgumentError, "#{msg.name} must be given as a map of fields, got #{inspect(other)}")

  defp field(%Field{presence: :repeated, kind: :map} = f, value, msg, schema) do
    unless is_map(value) and not is_struct(value),
      do: raise(ArgumentError, "#{msg.name}.#{f.name} must be a map, got #{inspect(value)}")

    entry = Schema.message!(schema, f.type)

    value
    |> Enum.sort()
    |> Enum.map(fn {k, v} ->
      if v == nil,
        do: raise(ArgumentError, "#{msg.name}.#{f.name}: nil map value for key #{inspect(k)}")

      # Entries always carry both key and value.
      payload = [
        tagged(entry.by_number[1], k, entry, schema),
        tagged(entry.by_number[2], v, entry, schema)
      ]

      delimited(f.number, payload)
    end)
  end

  defp field(%Field{presence: :repeated} = f, value, msg, schema) do
    unless is_list(value),
      do: raise(ArgumentError, "#{msg.name}.#{f.name} must be a list, got #{inspect(value)}")

    Enum.each(value, fn
      nil -> raise ArgumentError, "#{msg.name}.#{f.name}: nil is not a valid element"
      _ -> :ok
    end)

    cond do
      value == [] -> []
      f.packed -> delimited(f.number, Enum.map(value, &raw_value(f, &1, msg, schema)))
      true -> Enum.map(value, &tagged(f, &1, msg, schema))
    end
  end

  defp field(%Field{presence: :implicit} = f, value, msg, schema) do
    if default?(f, value, msg, schema) do
      # Still type-check what was given.
      _ = raw_value(f, value, msg, schema)
      []
    else
      tagged(f, value, msg, schema)
    end
  end

  defp field(f, value, msg, schema), do: tagged(f, value, msg, schema)

  defp tagged(%Field{wire_type: 2, number: n} = f, value, msg, schema),
    do: delimited(n, raw_value(f, value, msg, schema))

  defp tagged(%Field{wire_type: wt, number: n} = f, value, msg, schema),
    do: [Wire.encode_tag(n, wt), raw_value(f, value, msg, schema)]

  defp delimited(number, iodata),
    do: [Wire.encode_tag(number, 2), Wire.encode_varint(IO.iodata_length(iodata)), iodata]

  defp default?(%Field{kind: :enum} = f, value, msg, schema),
    do: enum_number(f, value, msg, schema) == 0

  defp default?(%Field{type: type}, value, _msg, _schema) when type in [:double, :float],
    do: Wire.zero_bits?(value)

  defp default?(%Field{type: :bool}, value, _msg, _schema), do: value == false

  defp default?(%Field{type: type}, value, _msg, _schema) when type in [:string, :bytes],
    do: value == ""

  defp default?(_f, value, _msg, _schema), do: value === 0

  ## ---- values ---------------------------------------------------------------------------

  defp raw_value(%Field{kind: :message, type: type}, value, _msg, schema),
    do: message(Schema.message!(schema, type), value, schema)

  defp raw_value(%Field{kind: :enum} = f, value, msg, schema),
    do: Wire.encode_varint(Wire.to_uint64(enum_number(f, value, msg, schema)))

  defp raw_value(%Field{type: type} = f, value, msg, _schema), do: scalar(type, value, f, msg)

  defp enum_number(%Field{type: type} = f, value, msg, schema) do
    enum = Map.fetch!(schema.enums, type)

    cond do
      is_atom(value) and Map.has_key?(enum.by_name, value) -> enum.by_name[value]
      is_integer(value) and value in @int32 -> value
      true -> bad(f, value, msg, "a value of enum #{type}")
    end
  end

  defp scalar(:int32, v, _f, _m) when is_integer(v) and v in @int32,
    do: Wire.encode_varint(Wire.to_uint64(v))

  defp scalar(:int64, v, _f, _m) when is_integer(v) and v >= @int64_min and v <= @int64_max,
    do: Wire.encode_varint(Wire.to_uint64(v))

  defp scalar(:uint32, v, _f, _m) when is_integer(v) and v >= 0 and v <= @uint32_max,
    do: Wire.encode_varint(v)

  defp scalar(:uint64, v, _f, _m) when is_integer(v) and v >= 0 and v <= @uint64_max,
    do: Wire.encode_varint(v)

  defp scalar(:sint32, v, _f, _m) when is_integer(v) and v in @int32,
    do: Wire.encode_varint(Wire.zigzag_encode(v))

  defp scalar(:sint64, v, _f, _m) when is_integer(v) and v >= @int64_min and v <= @int64_max,
    do: Wire.encode_varint(Wire.zigzag_encode(v))

  defp scalar(:bool, true, _f, _m), do: <<1>>
  defp scalar(:bool, false, _f, _m), do: <<0>>

  defp scalar(:fixed32, v, _f, _m) when is_integer(v) and v >= 0 and v <= @uint32_max,
    do: <<v::little-32>>

  defp scalar(:sfixed32, v, _f, _m) when is_integer(v) and v in @int32,
    do: <<v::little-signed-32>>

  defp scalar(:fixed64, v, _f, _m) when is_integer(v) and v >= 0 and v <= @uint64_max,
    do: <<v::little-64>>

  defp scalar(:sfixed64, v, _f, _m) when is_integer(v) and v >= @int64_min and v <= @int64_max,
    do: <<v::little-signed-64>>

  defp scalar(:double, v, _f, _m) when is_float(v) or v in [:infinity, :neg_infinity, :nan],
    do: Wire.encode_double(v)

  defp scalar(:float, v, _f, _m) when is_float(v) or v in [:infinity, :neg_infinity, :nan],
    do: Wire.encode_float(v)

  defp scalar(type, v, f, m) when type in [:double, :float] and is_integer(v) do
    # Integers are accepted where a float is expected, if exactly representable as a double.
    if abs(v) <= 9_007_199_254_740_992,
      do: scalar(type, v * 1.0, f, m),
      else: bad(f, v, m, "a #{type}")
  end

  defp scalar(:string, v, f, m) when is_binary(v) do
    if String.valid?(v), do: v, else: bad(f, v, m, "a UTF-8 string")
  end

  defp scalar(:bytes, v, _f, _m) when is_binary(v), do: v
  defp scalar(type, v, f, m), do: bad(f, v, m, "a #{type}")

  defp bad(f, value, msg, expected) do
    raise ArgumentError,
          "#{msg.name}.#{f.name} must be #{expected}, got #{inspect(value, limit: 20, printable_limit: 80)}"
  end
end
