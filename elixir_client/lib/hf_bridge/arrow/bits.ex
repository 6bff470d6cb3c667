defmodule HFBridge.Arrow.Bits do
  @moduledoc """
  Bit-packed buffers of the Arrow columnar format: validity bitmaps and
  boolean values. Bits are numbered least-significant first within each byte
  (element `i` is bit `i rem 8` of byte `i div 8`).
  """

  @doc """
  Unpacks the first `n` bits of `bitmap` into booleans. The caller has
  checked that `bitmap` holds at least `ceil(n / 8)` bytes.
  """
  @spec to_booleans(binary(), non_neg_integer()) :: [boolean()]
  def to_booleans(_bitmap, 0), do: []

  def to_booleans(<<h::1, g::1, f::1, e::1, d::1, c::1, b::1, a::1, rest::binary>>, n)
      when n >= 8 do
    [a == 1, b == 1, c == 1, d == 1, e == 1, f == 1, g == 1, h == 1 | to_booleans(rest, n - 8)]
  end

  def to_booleans(<<byte, _::binary>>, n) do
    for i <- 0..(n - 1), do: Bitwise.band(Bitwise.bsr(byte, i), 1) == 1
  end

  @doc """
  Replaces the elements of `values` whose validity bit is 0 with `nil`.
  `values` has exactly the length the bitmap describes; the caller has
  checked that the bitmap is long enough.
  """
  @spec mask(list(), binary()) :: list()
  def mask([v0, v1, v2, v3, v4, v5, v6, v7 | rest], <<byte, bits::binary>>) do
    case byte do
      255 ->
        [v0, v1, v2, v3, v4, v5, v6, v7 | mask(rest, bits)]

      0 ->
        [nil, nil, nil, nil, nil, nil, nil, nil | mask(rest, bits)]

      _ ->
        <<b7::1, b6::1, b5::1, b4::1, b3::1, b2::1, b1::1, b0::1>> = <<byte>>

        [
          pick(b0, v0),
          pick(b1, v1),
          pick(b2, v2),
          pick(b3, v3),
          pick(b4, v4),
          pick(b5, v5),
          pick(b6, v6),
          pick(b7, v7)
          | mask(rest, bits)
        ]
    end
  end

  def mask([], _), do: []
  def mask(values, <<byte, _::binary>>), do: mask_tail(values, byte)

  defp mask_tail([], _), do: []

  defp mask_tail([v | rest], byte),
    do: [pick(Bitwise.band(byte, 1), v) | mask_tail(rest, Bitwise.bsr(byte, 1))]

  @compile {:inline, pick: 2}
  defp pick(1, v), do: v
  defp pick(0, _), do: nil
end
