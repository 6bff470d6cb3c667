defmodule HFBridge.HPACK.Huffman do
  @moduledoc """
  The static Huffman code of HPACK (RFC 7541, Section 5.2 and Appendix B).

  The code in Appendix B is canonical: codes are assigned in order of bit
  length and, within one length, in symbol order. The table below therefore
  holds only the code length of each of the 257 symbols (256 octets plus EOS);
  the codes are derived from the lengths at compile time.
  """

  # Code lengths in bits for symbols 0..256 (RFC 7541, Appendix B).
  @lengths [
    13,
    23,
    28,
    28,
    28,
    28,
    28,
    28,
    28,
    24,
    30,
    28,
    28,
    30,
    28,
    28,
    28,
    28,
    28,
    28,
    28,
    28,
    30,
    28,
    28,
    28,
    28,
    28,
    28,
    28,
    28,
    28,
    6,
    10,
    10,
    12,
    13,
    6,
    8,
    11,
    10,
    10,
    8,
    11,
    8,
    6,
    6,
    6,
    5,
    5,
    5,
    6,
    6,
    6,
    6,
    6,
    6,
    6,
    7,
    8,
    15,
    6,
    12,
    10,
    13,
    6,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    8,
    7,
    8,
    13,
    19,
    13,
    14,
    6,
    15,
    5,
    6,
    5,
    6,
    5,
    6,
    6,
    6,
    5,
    7,
    7,
    6,
    6,
    6,
    5,
    6,
    7,
    6,
    5,
    5,
    6,
    7,
    7,
    7,
    7,
    7,
    15,
    11,
    14,
    13,
    28,
    20,
    22,
    20,
    20,
    22,
    22,
    22,
    23,
    22,
    23,
    23,
    23,
    23,
    23,
    24,
    23,
    24,
    24,
    22,
    23,
    24,
    23,
    23,
    23,
    23,
    21,
    22,
    23,
    22,
    23,
    23,
    24,
    22,
    21,
    20,
    22,
    22,
    23,
    23,
    21,
    23,
    22,
    22,
    24,
    21,
    22,
    23,
    23,
    21,
    21,
    22,
    21,
    23,
    22,
    23,
    23,
    20,
    22,
    22,
    22,
    23,
    22,
    22,
    23,
    26,
    26,
    20,
    19,
    22,
    23,
    22,
    25,
    26,
    26,
    26,
    27,
    27,
    26,
    24,
    25,
    19,
    21,
    26,
    27,
    27,
    26,
    27,
    24,
    21,
    21,
    26,
    26,
    28,
    27,
    27,
    27,
    20,
    24,
    20,
    21,
    22,
    21,
    21,
    23,
    22,
    22,
    25,
    25,
    24,
    24,
    26,
    23,
    26,
    27,
    26,
    26,
    27,
    27,
    27,
    27,
    27,
    28,
    27,
    27,
    27,
    27,
    27,
    26,
    30
  ]

  @eos 256

  # Canonical code assignment: sort by {length, symbol}, count upwards and
  # shift left whenever the length grows.
  {codes, _, _} =
    @lengths
    |> Enum.with_index()
    |> Enum.sort_by(fn {len, sym} -> {len, sym} end)
    |> Enum.reduce({%{}, 0, 0}, fn {len, sym}, {acc, code, prev_len} ->
      code = if prev_len == 0, do: 0, else: Bitwise.bsl(code + 1, len - prev_len)
      {Map.put(acc, sym, {code, len}), code, len}
    end)

  @codes codes
  @encode_table List.to_tuple(for sym <- 0..255, do: Map.fetch!(codes, sym))

  # For decoding: per bit length, the first code of that length, how many
  # codes have it, and the offset of its first symbol in @sorted_symbols.
  sorted = Enum.sort_by(Map.to_list(codes), fn {sym, {code, len}} -> {len, code, sym} end)
  @sorted_symbols List.to_tuple(Enum.map(sorted, &elem(&1, 0)))

  @length_info (for len <- 0..30 do
                  entries =
                    sorted
                    |> Enum.with_index()
                    |> Enum.filter(fn {{_s, {_c, l}}, _i} -> l == len end)

                  case entries do
                    [] -> {0, 0, 0}
                    [{{_s, {first, _}}, idx} | _] -> {first, length(entries), idx}
                  end
                end)
               |> List.to_tuple()

  @doc "Returns `{code, bit_length}` for a symbol (0..256, 256 being EOS)."
  @spec code(0..256) :: {non_neg_integer(), pos_integer()}
  def code(symbol), do: Map.fetch!(@codes, symbol)

  @doc "Number of octets `data` takes once Huffman encoded."
  @spec encoded_size(binary()) :: non_neg_integer()
  def encoded_size(data), do: div(bit_size_of(data, 0) + 7, 8)

  defp bit_size_of(<<byte, rest::binary>>, acc),
    do: bit_size_of(rest, acc + elem(elem(@encode_table, byte), 1))

  defp bit_size_of(<<>>, acc), do: acc

  @doc "Huffman-encodes `data`, padding the last octet with the EOS prefix (ones)."
  @spec encode(binary()) :: binary()
  def encode(data) do
    bits = encode_bits(data, <<>>)
    pad = rem(8 - rem(bit_size(bits), 8), 8)
    <<bits::bitstring, -1::size(pad)>>
  end

  defp encode_bits(<<byte, rest::binary>>, acc) do
    {code, len} = elem(@encode_table, byte)
    encode_bits(rest, <<acc::bitstring, code::size(len)>>)
  end

  defp encode_bits(<<>>, acc), do: acc

  @doc """
  Decodes a Huffman-encoded string.

  Fails when the input contains EOS, or when the padding is longer than
  7 bits or not a prefix of EOS (RFC 7541, Section 5.2).
  """
  @spec decode(binary()) :: {:ok, binary()} | {:error, String.t()}
  def decode(data), do: decode_bits(data, 0, 0, [])

  defp decode_bits(<<bit::1, rest::bitstring>>, code, len, acc) do
    code = Bitwise.bor(Bitwise.bsl(code, 1), bit)
    len = len + 1

    if len > 30 do
      {:error, "invalid Huffman code"}
    else
      {first, count, offset} = elem(@length_info, len)

      if count > 0 and code >= first and code - first < count do
        case elem(@sorted_symbols, offset + code - first) do
          @eos -> {:error, "EOS symbol in Huffman-encoded string"}
          sym -> decode_bits(rest, 0, 0, [sym | acc])
        end
      else
        decode_bits(rest, code, len, acc)
      end
    end
  end

  defp decode_bits(<<>>, code, len, acc) do
    cond do
      len > 7 -> {:error, "Huffman padding longer than 7 bits"}
      code != Bitwise.bsl(1, len) - 1 -> {:error, "Huffman padding is not the EOS prefix"}
      true -> {:ok, acc |> Enum.reverse() |> :erlang.list_to_binary()}
    end
  end
end
