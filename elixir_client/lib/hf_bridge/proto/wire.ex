defmodule HFBridge.Proto.Wire do
  @moduledoc """
  Protocol Buffers wire-format primitives: base-128 varints, ZigZag, fixed
  32/64-bit little-endian values, IEEE 754 floats, tags and wire types
  (see the "Encoding" section of the Protocol Buffers documentation).

  Readers return `{value, rest}` or `:error` and never raise; they never
  allocate more than the input they were given.

  Non-finite floats have no Erlang float representation, so they travel as
  the atoms `:infinity`, `:neg_infinity` and `:nan`.
  """

  import Bitwise

  @typedoc "The six wire types of the format (3 and 4 are the deprecated groups)."
  @type wire_type :: 0..5

  @typedoc "A float value, or one of the atoms used for non-finite values."
  @type float_value :: float() | :infinity | :neg_infinity | :nan

  @mask32 0xFFFF_FFFF
  @mask64 0xFFFF_FFFF_FFFF_FFFF

  ## ---- varints -----------------------------------------------------------

  @doc """
  Encodes a non-negative integer below 2^64 as a base-128 varint.
  """
  @spec encode_varint(non_neg_integer()) :: binary()
  def encode_varint(v) when is_integer(v) and v >= 0 and v < 128, do: <<v>>

  def encode_varint(v) when is_integer(v) and v >= 128,
    do: <<1::1, band(v, 127)::7, encode_varint(bsr(v, 7))::binary>>

  @doc """
  Reads a varint of at most 10 bytes. Bits beyond the 64th are discarded, as
  every conforming decoder does. Returns `:error` for a truncated or
  over-long varint.
  """
  @spec decode_varint(binary()) :: {non_neg_integer(), binary()} | :error
  def decode_varint(bin), do: decode_varint(bin, 0, 0)

  defp decode_varint(<<0::1, b::7, rest::binary>>, shift, acc),
    do: {band(bor(acc, bsl(b, shift)), @mask64), rest}

  defp decode_varint(<<1::1, b::7, rest::binary>>, shift, acc) when shift < 63,
    do: decode_varint(rest, shift + 7, bor(acc, bsl(b, shift)))

  defp decode_varint(_bin, _shift, _acc), do: :error

  @doc "Encodes a field key (tag): field number and wire type."
  @spec encode_tag(pos_integer(), wire_type()) :: binary()
  def encode_tag(number, wire_type), do: encode_varint(bor(bsl(number, 3), wire_type))

  ## ---- integer conversions ----------------------------------------------

  @doc "Two's complement of a signed integer into 64 bits (how negative int32/int64 are sent)."
  @spec to_uint64(integer()) :: non_neg_integer()
  def to_uint64(v) when v < 0, do: band(v, @mask64)
  def to_uint64(v), do: v

  @doc "Reads the low 32 bits of `v` as a signed integer."
  @spec to_int32(non_neg_integer()) :: integer()
  def to_int32(v) do
    v = band(v, @mask32)
    if v >= 0x8000_0000, do: v - 0x1_0000_0000, else: v
  end

  @doc "Reads the low 64 bits of `v` as a signed integer."
  @spec to_int64(non_neg_integer()) :: integer()
  def to_int64(v) do
    v = band(v, @mask64)
    if v >= 0x8000_0000_0000_0000, do: v - 0x1_0000_0000_0000_0000, else: v
  end

  @doc "Low 32 bits of `v`, unsigned."
  @spec to_uint32(non_neg_integer()) :: non_neg_integer()
  def to_uint32(v), do: band(v, @mask32)

  @doc "ZigZag encoding: maps signed integers to unsigned so small magnitudes stay short."
  @spec zigzag_encode(integer()) :: non_neg_integer()
  def zigzag_encode(n) when n >= 0, do: n * 2
  def zigzag_encode(n), do: -n * 2 - 1

  @doc "Inverse of `zigzag_encode/1`."
  @spec zigzag_decode(non_neg_integer()) :: integer()
  def zigzag_decode(n) when band(n, 1) == 0, do: bsr(n, 1)
  def zigzag_decode(n), do: -bsr(n, 1) - 1

  ## ---- floats -------------------------------------------------------------

  @float32_max 3.4028234663852886e38

  @doc "Encodes a double (8 bytes, little-endian)."
  @spec encode_double(float_value()) :: binary()
  def encode_double(:infinity), do: <<0x7FF0_0000_0000_0000::little-64>>
  def encode_double(:neg_infinity), do: <<0xFFF0_0000_0000_0000::little-64>>
  def encode_double(:nan), do: <<0x7FF8_0000_0000_0000::little-64>>
  def encode_double(x) when is_float(x), do: <<x::float-little-64>>

  @doc """
  Encodes a float (4 bytes, little-endian). Finite values beyond the float32
  range become infinities, as a C cast would make them.
  """
  @spec encode_float(float_value()) :: binary()
  def encode_float(:infinity), do: <<0x7F80_0000::little-32>>
  def encode_float(:neg_infinity), do: <<0xFF80_0000::little-32>>
  def encode_float(:nan), do: <<0x7FC0_0000::little-32>>

  def encode_float(x) when is_float(x) do
    cond do
      x > @float32_max and float32_round_up?(x) -> encode_float(:infinity)
      x < -@float32_max and float32_round_up?(-x) -> encode_float(:neg_infinity)
      x > @float32_max -> <<@float32_max::float-little-32>>
      x < -@float32_max -> <<-@float32_max::float-little-32>>
      true -> <<x::float-little-32>>
    end
  end

  # Round-to-nearest: values at or above max + half an ulp (2^103) overflow.
  defp float32_round_up?(x), do: x >= 3.4028235677973366e38

  @doc "Decodes 8 little-endian bytes as a double."
  @spec decode_double(<<_::64>>) :: float_value()
  def decode_double(<<bits::little-64>>) do
    exp = band(bsr(bits, 52), 0x7FF)
    mant = band(bits, 0xF_FFFF_FFFF_FFFF)

    cond do
      exp == 0x7FF and mant != 0 -> :nan
      exp == 0x7FF and bits >= 0x8000_0000_0000_0000 -> :neg_infinity
      exp == 0x7FF -> :infinity
      true -> with <<x::float-64>> <- <<bits::64>>, do: x
    end
  end

  @doc "Decodes 4 little-endian bytes as a float (widened to a double)."
  @spec decode_float(<<_::32>>) :: float_value()
  def decode_float(<<bits::little-32>>) do
    exp = band(bsr(bits, 23), 0xFF)
    mant = band(bits, 0x7F_FFFF)

    cond do
      exp == 0xFF and mant != 0 -> :nan
      exp == 0xFF and bits >= 0x8000_0000 -> :neg_infinity
      exp == 0xFF -> :infinity
      true -> with <<x::float-32>> <- <<bits::32>>, do: x
    end
  end

  @doc "True when a float's bit pattern is all zero (+0.0), the proto3 default; -0.0 is not."
  @spec zero_bits?(float_value() | integer()) :: boolean()
  def zero_bits?(x) when is_float(x), do: <<x::float-64>> == <<0::64>>
  def zero_bits?(0), do: true
  def zero_bits?(_), do: false

  ## ---- skipping -------------------------------------------------------------

  @doc """
  Skips the value of an unknown field whose key has been read. Groups
  (wire types 3/4) are skipped up to their matching end key, nesting at
  most `depth_left` levels. Returns the rest or `{:error, reason}`.
  """
  @spec skip(non_neg_integer(), non_neg_integer(), binary(), non_neg_integer()) ::
          {:ok, binary()} | {:error, String.t()}
  def skip(0, _number, bin, _depth) do
    case decode_varint(bin) do
      {_, rest} -> {:ok, rest}
      :error -> {:error, "truncated or over-long varint"}
    end
  end

  def skip(1, _number, <<_::64, rest::binary>>, _depth), do: {:ok, rest}
  def skip(1, _number, _bin, _depth), do: {:error, "truncated 64-bit value"}
  def skip(5, _number, <<_::32, rest::binary>>, _depth), do: {:ok, rest}
  def skip(5, _number, _bin, _depth), do: {:error, "truncated 32-bit value"}

  def skip(2, _number, bin, _depth) do
    case decode_varint(bin) do
      {len, rest} when len <= byte_size(rest) ->
        <<_::binary-size(len), rest::binary>> = rest
        {:ok, rest}

      {_, _} ->
        {:error, "length-delimited field runs past the end of the message"}

      :error ->
        {:error, "truncated or over-long length"}
    end
  end

  def skip(3, _number, _bin, 0), do: {:error, "groups nested too deeply"}
  def skip(3, number, bin, depth), do: skip_group(bin, number, depth - 1)
  def skip(4, number, _bin, _depth), do: {:error, "unexpected end-group key for field #{number}"}
  def skip(wt, number, _bin, _depth), do: {:error, "invalid wire type #{wt} for field #{number}"}

  defp skip_group(bin, number, depth) do
    case decode_varint(bin) do
      :error ->
        {:error, "unterminated group for field #{number}"}

      {key, rest} ->
        inner = bsr(key, 3)
        wt = band(key, 7)

        cond do
          wt == 4 and inner == number ->
            {:ok, rest}

          wt == 4 ->
            {:error, "mismatched end-group key #{inner} inside group #{number}"}

          inner == 0 ->
            {:error, "field number 0 inside group #{number}"}

          true ->
            with {:ok, rest} <- skip(wt, inner, rest, depth), do: skip_group(rest, number, depth)
        end
    end
  end
end
