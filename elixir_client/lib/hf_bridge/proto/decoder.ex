defmodule HFBridge.Proto.Decoder do
  @moduledoc """
  Decodes protobuf wire bytes into maps using a `HFBridge.Proto.Schema`.

  The result holds every field of the message: implicit-presence scalars at
  their proto3 default, repeated fields as lists (maps for `map<>` fields),
  absent message / `optional` / oneof fields as `nil`. Enum values decode to
  their name atoms, or to the integer when the number is not in the enum.

  Wire semantics follow the protobuf encoding rules: the last value of a
  singular scalar wins, repeated occurrences of a singular message field are
  merged, a oneof member clears its siblings, packed and unpacked encodings of
  repeated scalars are both accepted, unknown fields (groups included) are
  skipped.

  Malformed input never raises: truncated varints, lengths past the end,
  known fields with the wrong wire type, invalid UTF-8 in `string` fields,
  field number 0, and nesting deeper than `max_depth/0` all give
  `{:error, %HFBridge.Error{layer: :proto, code: :malformed}}`. Values are
  sub-binaries of the input, so nothing larger than the input is allocated.
  """

  import Bitwise
  alias HFBridge.Error
  alias HFBridge.Proto.Schema
  alias HFBridge.Proto.Schema.{Field, Message}
  alias HFBridge.Proto.Wire

  @max_depth 100

  @doc "Deepest nesting of messages (and groups in unknown fields) that is accepted."
  @spec max_depth() :: pos_integer()
  def max_depth, do: @max_depth

  @doc """
  Decodes `bin` as message `name` of `schema`. Raises `ArgumentError` only
  when `name` is not a message of the schema (a programming error).
  """
  @spec decode(Schema.t(), atom(), binary()) :: {:ok, map()} | {:error, Error.t()}
  def decode(%Schema{} = schema, name, bin) when is_binary(bin) do
    message = Schema.message!(schema, name)

    try do
      {:ok, message(schema, message, bin, 0)}
    catch
      {:proto_malformed, reason, msg} ->
        {:error,
         Error.new(:proto, :malformed, "malformed #{msg}: #{reason}",
           details: %{message: name, in_message: msg}
         )}
    end
  end

  defp malformed(reason, %Message{name: name}), do: throw({:proto_malformed, reason, name})

  defp message(_schema, msg, _bin, depth) when depth > @max_depth,
    do: malformed("messages nested deeper than #{@max_depth} levels", msg)

  defp message(schema, msg, bin, depth) do
    acc = fields(bin, schema, msg, depth, %{})

    Enum.reduce(acc, msg.defaults, fn {name, raw}, out ->
      Map.put(out, name, finish(Map.fetch!(msg.by_name, name), raw, schema, msg, depth))
    end)
  end

  ## ---- the field loop ------------------------------------------------------------

  # `acc` holds raw values: the value of singular scalars, reversed lists of
  # elements for repeated fields, and reversed lists of payloads for message
  # fields (decoded, merged, once the message is complete).
  defp fields(<<>>, _schema, _msg, _depth, acc), do: acc

  defp fields(bin, schema, msg, depth, acc) do
    {key, rest} = varint(bin, msg, "truncated field key")
    number = bsr(key, 3)
    wt = band(key, 7)

    cond do
      number == 0 -> malformed("field number 0", msg)
      key > 0xFFFF_FFFF -> malformed("field key out of range", msg)
      true -> :ok
    end

    case Map.fetch(msg.by_number, number) do
      {:ok, field} ->
        {acc, rest} = field(field, wt, rest, msg, acc)
        fields(rest, schema, msg, depth, acc)

      :error ->
        case Wire.skip(wt, number, rest, @max_depth - depth) do
          {:ok, rest} -> fields(rest, schema, msg, depth, acc)
          {:error, reason} -> malformed(reason, msg)
        end
    end
  end

  defp field(%Field{presence: :repeated} = f, wt, rest, msg, acc),
    do: repeated(f, wt, rest, msg, acc)

  defp field(%Field{kind: :message} = f, 2, rest, msg, acc) do
    {payload, rest} = delimited(rest, msg)
    acc = clear_siblings(f, acc)
    {Map.update(acc, f.name, [payload], &[payload | &1]), rest}
  end

  defp field(%Field{wire_type: wt} = f, wt, rest, msg, acc) do
    {value, rest} = value(f, wt, rest, msg)
    {Map.put(clear_siblings(f, acc), f.name, value), rest}
  end

  defp field(f, wt, _rest, msg, _acc), do: wrong_wire_type(f, wt, msg)

  defp repeated(%Field{wire_type: ewt} = f, 2, rest, msg, acc) when ewt != 2 do
    # Packed encoding: a run of elements in one length-delimited payload.
    {payload, rest} = delimited(rest, msg)
    {Map.put(acc, f.name, packed(f, ewt, payload, msg, Map.get(acc, f.name, []))), rest}
  end

  defp repeated(%Field{wire_type: wt} = f, wt, rest, msg, acc) do
    {value, rest} =
      case f.kind do
        kind when kind in [:message, :map] -> delimited(rest, msg)
        _ -> value(f, wt, rest, msg)
      end

    {Map.update(acc, f.name, [value], &[value | &1]), rest}
  end

  defp repeated(f, wt, _rest, msg, _acc), do: wrong_wire_type(f, wt, msg)

  defp packed(_f, _wt, <<>>, _msg, list), do: list

  defp packed(f, wt, payload, msg, list) do
    {value, rest} = value(f, wt, payload, msg)
    packed(f, wt, rest, msg, [value | list])
  end

  defp wrong_wire_type(f, wt, msg),
    do:
      malformed("field #{f.name} (#{f.number}) has wire type #{wt}, expected #{f.wire_type}", msg)

  defp clear_siblings(%Field{siblings: []}, acc), do: acc
  defp clear_siblings(%Field{siblings: siblings}, acc), do: Map.drop(acc, siblings)

  ## ---- scalar values ---------------------------------------------------------------

  defp value(f, 0, bin, msg) do
    {v, rest} = varint(bin, msg, "truncated varint in field #{f.name}")
    {varint_value(f, v), rest}
  end

  defp value(f, 1, bin, msg) do
    case bin do
      <<raw::binary-size(8), rest::binary>> -> {fixed64_value(f.type, raw), rest}
      _ -> malformed("truncated 64-bit value in field #{f.name}", msg)
    end
  end

  defp value(f, 5, bin, msg) do
    case bin do
      <<raw::binary-size(4), rest::binary>> -> {fixed32_value(f.type, raw), rest}
      _ -> malformed("truncated 32-bit value in field #{f.name}", msg)
    end
  end

  defp value(f, 2, bin, msg) do
    {payload, rest} = delimited(bin, msg)

    if f.type == :string and not String.valid?(payload),
      do: malformed("field #{f.name} is not valid UTF-8", msg)

    {payload, rest}
  end

  defp varint_value(%Field{kind: :enum}, v), do: {:enum, Wire.to_int32(v)}
  defp varint_value(%Field{type: :int32}, v), do: Wire.to_int32(v)
  defp varint_value(%Field{type: :int64}, v), do: Wire.to_int64(v)
  defp varint_value(%Field{type: :uint32}, v), do: Wire.to_uint32(v)
  defp varint_value(%Field{type: :uint64}, v), do: v
  defp varint_value(%Field{type: :sint32}, v), do: Wire.zigzag_decode(Wire.to_uint32(v))
  defp varint_value(%Field{type: :sint64}, v), do: Wire.zigzag_decode(v)
  defp varint_value(%Field{type: :bool}, v), do: v != 0

  defp fixed64_value(:double, raw), do: Wire.decode_double(raw)
  defp fixed64_value(:fixed64, <<v::little-unsigned-64>>), do: v
  defp fixed64_value(:sfixed64, <<v::little-signed-64>>), do: v

  defp fixed32_value(:float, raw), do: Wire.decode_float(raw)
  defp fixed32_value(:fixed32, <<v::little-unsigned-32>>), do: v
  defp fixed32_value(:sfixed32, <<v::little-signed-32>>), do: v

  defp varint(bin, msg, what) do
    case Wire.decode_varint(bin) do
      :error -> malformed(what, msg)
      ok -> ok
    end
  end

  defp delimited(bin, msg) do
    {len, rest} = varint(bin, msg, "truncated length")

    if len > byte_size(rest),
      do:
        malformed(
          "length #{len} runs past the end of the message (#{byte_size(rest)} bytes left)",
          msg
        )

    <<payload::binary-size(len), rest::binary>> = rest
    {payload, rest}
  end

  ## ---- finishing a message ------------------------------------------------------------

  defp finish(%Field{presence: :repeated, kind: :map} = f, entries, schema, _msg, depth) do
    entry = Schema.message!(schema, f.type)
    value_field = entry.by_number[2]

    entries
    |> Enum.reverse()
    |> Enum.reduce(%{}, fn payload, map ->
      e = message(schema, entry, payload, depth + 1)
      value = if e.value == nil, do: default_message(schema, value_field.type), else: e.value
      Map.put(map, e.key, enum_name(value_field, value, schema))
    end)
  end

  defp finish(%Field{presence: :repeated, kind: :message} = f, payloads, schema, _msg, depth) do
    sub = Schema.message!(schema, f.type)

    Enum.reduce(payloads, [], fn payload, list ->
      [message(schema, sub, payload, depth + 1) | list]
    end)
  end

  defp finish(%Field{presence: :repeated} = f, values, schema, _msg, _depth),
    do: Enum.reduce(values, [], fn v, list -> [enum_name(f, v, schema) | list] end)

  defp finish(%Field{kind: :message} = f, payloads, schema, _msg, depth) do
    sub = Schema.message!(schema, f.type)

    payload =
      case payloads do
        [one] -> one
        many -> many |> Enum.reverse() |> IO.iodata_to_binary()
      end

    message(schema, sub, payload, depth + 1)
  end

  defp finish(f, value, schema, _msg, _depth), do: enum_name(f, value, schema)

  defp enum_name(%Field{kind: :enum, type: type}, {:enum, n}, schema) do
    Map.get(schema.enums[type].by_number, n, n)
  end

  defp enum_name(_f, value, _schema), do: value

  defp default_message(schema, name), do: Schema.message!(schema, name).defaults
end
