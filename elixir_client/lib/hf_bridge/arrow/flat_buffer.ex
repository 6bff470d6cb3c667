defmodule HFBridge.Arrow.FlatBuffer do
  @moduledoc """
  A minimal, bounds-checked reader for FlatBuffers tables, enough for the
  Arrow IPC metadata (`Message.fbs` / `Schema.fbs`).

  Layout facts used (FlatBuffers binary format):

    * the buffer starts with a `uoffset` (u32, little-endian) to the root table;
    * a table starts with an `soffset` (i32); the table's vtable lives at
      `table_pos - soffset`;
    * a vtable is `u16 vtable_bytes, u16 table_bytes, u16 field_offset...`,
      a field offset of 0 (or a field beyond the vtable) means "absent, use
      the default";
    * references to tables, vectors and strings are `uoffset`s relative to
      the position where the reference is stored;
    * vectors and strings start with a u32 element count.

  Every read is checked against the buffer size. A violation throws
  `{:arrow_malformed, message}`; callers (`HFBridge.Arrow`) turn that into an
  `HFBridge.Error`.
  """

  @typedoc "A table: the whole buffer, the table position, the vtable position and the vtable size."
  @type table :: {binary(), non_neg_integer(), non_neg_integer(), non_neg_integer()}

  @doc "Returns the root table of `buf`."
  @spec root(binary()) :: table()
  def root(buf) when is_binary(buf) do
    table_at(buf, deref(buf, 0))
  end

  @doc "Returns the table whose start is at absolute position `pos`."
  @spec table_at(binary(), non_neg_integer()) :: table()
  def table_at(buf, pos) do
    soffset = read_int(buf, pos, 32, :signed)
    vt = pos - soffset

    if vt < 0 or vt + 4 > byte_size(buf), do: malformed("vtable out of bounds")
    vt_size = read_int(buf, vt, 16, :unsigned)

    if vt_size < 4 or vt + vt_size > byte_size(buf), do: malformed("bad vtable size")
    {buf, pos, vt, vt_size}
  end

  @doc "Absolute position of field `idx`, or `nil` when the field is absent."
  @spec field_pos(table(), non_neg_integer()) :: non_neg_integer() | nil
  def field_pos({buf, pos, vt, vt_size}, idx) do
    slot = 4 + 2 * idx

    if slot + 2 > vt_size do
      nil
    else
      case read_int(buf, vt + slot, 16, :unsigned) do
        0 -> nil
        off -> pos + off
      end
    end
  end

  @doc "Reads a scalar integer field (`bits` wide), or `default` when absent."
  @spec int(table(), non_neg_integer(), 8 | 16 | 32 | 64, :signed | :unsigned, integer()) ::
          integer()
  def int({buf, _, _, _} = t, idx, bits, sign, default) do
    case field_pos(t, idx) do
      nil -> default
      p -> read_int(buf, p, bits, sign)
    end
  end

  @doc "Reads a boolean field, or `default` when absent."
  @spec bool(table(), non_neg_integer(), boolean()) :: boolean()
  def bool(t, idx, default) do
    case field_pos(t, idx) do
      nil -> default
      _ -> int(t, idx, 8, :unsigned, 0) != 0
    end
  end

  @doc "Reads a string field (a sub-binary of the buffer), or `nil` when absent."
  @spec string(table(), non_neg_integer()) :: binary() | nil
  def string({buf, _, _, _} = t, idx) do
    case field_pos(t, idx) do
      nil ->
        nil

      p ->
        start = deref(buf, p)
        len = read_int(buf, start, 32, :unsigned)
        slice(buf, start + 4, len)
    end
  end

  @doc "Reads a sub-table field, or `nil` when absent."
  @spec table(table(), non_neg_integer()) :: table() | nil
  def table({buf, _, _, _} = t, idx) do
    case field_pos(t, idx) do
      nil -> nil
      p -> table_at(buf, deref(buf, p))
    end
  end

  @doc """
  Reads a vector of tables (empty list when absent). A vector of more than
  `max` elements throws before any element is read.
  """
  @spec tables(table(), non_neg_integer(), non_neg_integer() | :infinity) :: [table()]
  def tables({buf, _, _, _} = t, idx, max \\ :infinity) do
    case vector(t, idx, 4) do
      nil ->
        []

      {_start, count} when max != :infinity and count > max ->
        malformed("vector of #{count} tables where at most #{max} fit")

      {start, count} ->
        for i <- 0..(count - 1)//1 do
          p = start + 4 * i
          table_at(buf, deref(buf, p))
        end
    end
  end

  @doc """
  Reads a vector of inline structs of `size` bytes each; returns the raw
  bytes of the elements (a sub-binary) or `<<>>` when absent.
  """
  @spec structs(table(), non_neg_integer(), pos_integer()) :: binary()
  def structs({buf, _, _, _} = t, idx, size) do
    case vector(t, idx, size) do
      nil -> <<>>
      {start, count} -> slice(buf, start, count * size)
    end
  end

  # {first element position, count}, with the whole vector checked in bounds.
  defp vector({buf, _, _, _} = t, idx, elem_size) do
    case field_pos(t, idx) do
      nil ->
        nil

      p ->
        start = deref(buf, p)
        count = read_int(buf, start, 32, :unsigned)
        if start + 4 + count * elem_size > byte_size(buf), do: malformed("vector out of bounds")
        {start + 4, count}
    end
  end

  defp deref(buf, p), do: p + read_int(buf, p, 32, :unsigned)

  defp slice(buf, start, len) do
    if start < 0 or len < 0 or start + len > byte_size(buf), do: malformed("slice out of bounds")
    binary_part(buf, start, len)
  end

  @doc false
  @spec read_int(binary(), integer(), 8 | 16 | 32 | 64, :signed | :unsigned) :: integer()
  def read_int(buf, pos, bits, sign) do
    bytes = div(bits, 8)
    if pos < 0 or pos + bytes > byte_size(buf), do: malformed("read out of bounds")

    case sign do
      :signed ->
        <<_::binary-size(pos), v::little-signed-size(bits), _::binary>> = buf
        v

      :unsigned ->
        <<_::binary-size(pos), v::little-unsigned-size(bits), _::binary>> = buf
        v
    end
  end

  @spec malformed(String.t()) :: no_return()
  defp malformed(msg), do: throw({:arrow_malformed, "flatbuffer: " <> msg})
end
