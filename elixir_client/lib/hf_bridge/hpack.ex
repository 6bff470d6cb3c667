defmodule HFBridge.HPACK do
  @moduledoc """
  HPACK header compression for HTTP/2 (RFC 7541).

  One `t:t/0` value is one compression context (decoder or encoder side);
  HTTP/2 keeps one of each per connection and feeds header blocks through
  them in the order they appear on the wire.

  Decoding supports every representation of Section 6: indexed fields,
  literals with incremental, without and never indexing, dynamic table size
  updates (only at the start of a block, Section 4.2) and Huffman strings.
  A malformed block yields `{:error, %HFBridge.Error{layer: :hpack}}`; it
  never raises. A decoding error leaves the context unusable, as RFC 9113
  requires the connection to be closed with COMPRESSION_ERROR.

  Encoding uses the static and dynamic tables, incremental indexing for
  ordinary headers, never-indexed literals for credentials, and Huffman
  coding whenever it is shorter.
  """

  alias HFBridge.Error
  alias HFBridge.HPACK.{Huffman, Table}

  defstruct table: %Table{}, max_allowed: 4096, pending_resize: nil

  @typedoc "A header field: lowercase name and value, both binaries."
  @type header :: {binary(), binary()}

  @type t :: %__MODULE__{
          table: Table.t(),
          max_allowed: non_neg_integer(),
          pending_resize: nil | [non_neg_integer()]
        }

  # Integers above this are rejected: no sane header block needs them and it
  # keeps the decoder away from bignums.
  @max_int 0xFFFFFFFF

  # Headers never put into the dynamic table by the encoder (RFC 7541, 7.1.3).
  @sensitive ["authorization", "proxy-authorization", "cookie", "set-cookie"]

  @doc "A new context whose dynamic table may hold `max_table_size` octets."
  @spec new(non_neg_integer()) :: t()
  def new(max_table_size \\ 4096),
    do: %__MODULE__{table: Table.new(max_table_size), max_allowed: max_table_size}

  @doc """
  Decoder side: the largest table size the peer may choose, i.e. our
  SETTINGS_HEADER_TABLE_SIZE once acknowledged. Shrinks the table if needed.
  """
  @spec set_max_table_size(t(), non_neg_integer()) :: t()
  def set_max_table_size(%__MODULE__{} = ctx, size) do
    table = if ctx.table.max_size > size, do: Table.resize(ctx.table, size), else: ctx.table
    %{ctx | max_allowed: size, table: table}
  end

  @doc """
  Encoder side: the peer announced a new SETTINGS_HEADER_TABLE_SIZE. The next
  encoded block starts with the matching dynamic table size update(s).
  """
  @spec set_encoder_table_size(t(), non_neg_integer()) :: t()
  def set_encoder_table_size(%__MODULE__{} = ctx, size) do
    new_size = min(size, 4096)
    current = ctx.table.max_size
    pending = ctx.pending_resize || []

    cond do
      new_size == current and pending == [] -> ctx
      true -> %{ctx | pending_resize: pending ++ [new_size], max_allowed: size}
    end
  end

  @doc "The dynamic table (for inspection and tests)."
  @spec table(t()) :: Table.t()
  def table(%__MODULE__{table: table}), do: table

  ## ------------------------------------------------------------------ decode

  @doc """
  Decodes a complete header block.

  `max_list_size` caps the decoded header list (Section 4.1 sizes, as for
  SETTINGS_MAX_HEADER_LIST_SIZE); past it the block is still processed to
  keep the context in step, but `{:too_large, ctx}` is returned instead of
  the headers.
  """
  @spec decode(binary(), t(), non_neg_integer() | :infinity) ::
          {:ok, [header()], t()} | {:too_large, t()} | {:error, Error.t()}
  def decode(block, %__MODULE__{} = ctx, max_list_size \\ :infinity) when is_binary(block) do
    case decode_updates(block, ctx) do
      {:ok, rest, ctx} -> decode_fields(rest, ctx, [], 0, max_list_size)
      {:error, _} = error -> error
    end
  catch
    # Defensive: every decoding path returns tuples; anything unexpected is
    # still reported as a compression error rather than raised.
    kind, reason when kind in [:error, :throw] ->
      {:error, error("malformed header block (#{inspect(reason)})")}
  end

  # Dynamic table size updates may only appear at the start of a block.
  defp decode_updates(<<0b001::3, _::bitstring>> = data, ctx) do
    with {:ok, size, rest} <- decode_int(data, 5) do
      if size > ctx.max_allowed do
        {:error, error("dynamic table size update #{size} exceeds the limit #{ctx.max_allowed}")}
      else
        decode_updates(rest, %{ctx | table: Table.resize(ctx.table, size)})
      end
    end
  end

  defp decode_updates(data, ctx), do: {:ok, data, ctx}

  defp decode_fields(<<>>, ctx, acc, size, max) do
    if max != :infinity and size > max,
      do: {:too_large, ctx},
      else: {:ok, Enum.reverse(acc), ctx}
  end

  # 6.1 Indexed Header Field
  defp decode_fields(<<1::1, _::bitstring>> = data, ctx, acc, size, max) do
    with {:ok, index, rest} <- decode_int(data, 7),
         {:ok, {name, value}} <- fetch(ctx, index) do
      emit(rest, ctx, name, value, acc, size, max)
    end
  end

  # 6.2.1 Literal Header Field with Incremental Indexing
  defp decode_fields(<<0b01::2, _::bitstring>> = data, ctx, acc, size, max) do
    with {:ok, name, value, rest} <- decode_literal(data, 6, ctx) do
      ctx = %{ctx | table: Table.add(ctx.table, name, value)}
      emit(rest, ctx, name, value, acc, size, max)
    end
  end

  # 6.3 Dynamic Table Size Update in the middle of a block is an error.
  defp decode_fields(<<0b001::3, _::bitstring>>, _ctx, _acc, _size, _max),
    do: {:error, error("dynamic table size update after the start of a header block")}

  # 6.2.2 without indexing (0000) and 6.2.3 never indexed (0001)
  defp decode_fields(<<0b000::3, _::bitstring>> = data, ctx, acc, size, max) do
    with {:ok, name, value, rest} <- decode_literal(data, 4, ctx) do
      emit(rest, ctx, name, value, acc, size, max)
    end
  end

  defp emit(rest, ctx, name, value, acc, size, max) do
    size = size + Table.entry_size(name, value)

    if max != :infinity and size > max,
      do: decode_fields(rest, ctx, acc, size, max),
      else: decode_fields(rest, ctx, [{name, value} | acc], size, max)
  end

  defp fetch(_ctx, 0), do: {:error, error("header index 0 is invalid")}

  defp fetch(ctx, index) do
    case Table.lookup(ctx.table, index) do
      {:ok, entry} -> {:ok, entry}
      :error -> {:error, error("header index #{index} is outside the tables")}
    end
  end

  defp decode_literal(data, prefix, ctx) do
    with {:ok, index, rest} <- decode_int(data, prefix),
         {:ok, name, rest} <- literal_name(index, rest, ctx),
         {:ok, value, rest} <- decode_string(rest) do
      {:ok, name, value, rest}
    end
  end

  defp literal_name(0, rest, _ctx), do: decode_string(rest)

  defp literal_name(index, rest, ctx) do
    with {:ok, {name, _}} <- fetch(ctx, index), do: {:ok, name, rest}
  end

  @doc false
  # Integer representation, Section 5.1, with an N-bit prefix.
  @spec decode_int(bitstring(), 1..8) :: {:ok, non_neg_integer(), binary()} | {:error, Error.t()}
  def decode_int(data, prefix) do
    skip = 8 - prefix
    max_prefix = Bitwise.bsl(1, prefix) - 1

    case data do
      <<_::size(skip), value::size(prefix), rest::binary>> when value < max_prefix ->
        {:ok, value, rest}

      <<_::size(skip), _::size(prefix), rest::binary>> ->
        decode_int_cont(rest, max_prefix, 0)

      _ ->
        {:error, error("truncated integer")}
    end
  end

  defp decode_int_cont(<<more::1, bits::7, rest::binary>>, acc, shift) do
    acc = acc + Bitwise.bsl(bits, shift)

    cond do
      acc > @max_int -> {:error, error("integer too large")}
      more == 1 -> decode_int_cont(rest, acc, shift + 7)
      true -> {:ok, acc, rest}
    end
  end

  defp decode_int_cont(_, _acc, _shift), do: {:error, error("truncated integer")}

  # String literal, Section 5.2.
  defp decode_string(<<huffman::1, _::bitstring>> = data) do
    with {:ok, len, rest} <- decode_int(data, 7) do
      case rest do
        <<raw::binary-size(len), rest::binary>> when huffman == 1 ->
          case Huffman.decode(raw) do
            {:ok, string} -> {:ok, string, rest}
            {:error, message} -> {:error, error(message)}
          end

        <<raw::binary-size(len), rest::binary>> ->
          {:ok, raw, rest}

        _ ->
          {:error, error("string literal longer than the header block")}
      end
    end
  end

  defp decode_string(_), do: {:error, error("truncated string literal")}

  ## ------------------------------------------------------------------ encode

  @doc """
  Encodes a header list into one header block, updating the encoder context.
  Names must already be lowercase (HTTP/2 requires it).
  """
  @spec encode([header()], t()) :: {iodata(), t()}
  def encode(headers, %__MODULE__{} = ctx) do
    {prefix, ctx} = encode_pending_resize(ctx)

    {acc, ctx} =
      Enum.reduce(headers, {[], ctx}, fn {name, value}, {acc, ctx} ->
        {bin, ctx} = encode_field(to_string(name), to_string(value), ctx)
        {[acc | bin], ctx}
      end)

    {[prefix | acc], ctx}
  end

  defp encode_pending_resize(%__MODULE__{pending_resize: nil} = ctx), do: {[], ctx}

  defp encode_pending_resize(%__MODULE__{pending_resize: sizes} = ctx) do
    # Signal the smallest size first, then the final one (Section 4.2).
    final = List.last(sizes)
    smallest = Enum.min(sizes)
    steps = if smallest < final, do: [smallest, final], else: [final]

    table = Enum.reduce(steps, ctx.table, &Table.resize(&2, &1))
    iodata = Enum.map(steps, &encode_int(&1, 5, 0b001))
    {iodata, %{ctx | table: table, pending_resize: nil}}
  end

  defp encode_field(name, value, ctx) do
    sensitive? = name in @sensitive

    case Table.find(ctx.table, name, value) do
      {:full, index} when not sensitive? ->
        {encode_int(index, 7, 1), ctx}

      {kind, index} when kind in [:full, :name] and sensitive? ->
        {[encode_int(index, 4, 0b0001), encode_string(value)], ctx}

      {_kind, index} ->
        if indexable?(name, value, ctx),
          do: {[encode_int(index, 6, 0b01), encode_string(value)], add(ctx, name, value)},
          else: {[encode_int(index, 4, 0), encode_string(value)], ctx}

      :none when sensitive? ->
        {[<<0b0001::4, 0::4>>, encode_string(name), encode_string(value)], ctx}

      :none ->
        literal = [encode_string(name), encode_string(value)]

        if indexable?(name, value, ctx),
          do: {[<<0b01::2, 0::6>> | literal], add(ctx, name, value)},
          else: {[<<0::8>> | literal], ctx}
    end
  end

  # Large values would only flush the table; they are sent without indexing.
  defp indexable?(name, value, ctx),
    do: Table.entry_size(name, value) <= div(ctx.table.max_size, 2)

  defp add(ctx, name, value), do: %{ctx | table: Table.add(ctx.table, name, value)}

  @doc false
  @spec encode_int(non_neg_integer(), 1..8, non_neg_integer()) :: binary()
  def encode_int(value, prefix, flags) do
    max_prefix = Bitwise.bsl(1, prefix) - 1
    skip = 8 - prefix

    if value < max_prefix do
      <<flags::size(skip), value::size(prefix)>>
    else
      <<flags::size(skip), max_prefix::size(prefix), encode_int_cont(value - max_prefix)::binary>>
    end
  end

  defp encode_int_cont(value) when value < 128, do: <<value>>

  defp encode_int_cont(value),
    do: <<1::1, Bitwise.band(value, 127)::7, encode_int_cont(Bitwise.bsr(value, 7))::binary>>

  defp encode_string(string) do
    huff_size = Huffman.encoded_size(string)

    if huff_size < byte_size(string) do
      [encode_int(huff_size, 7, 1), Huffman.encode(string)]
    else
      [encode_int(byte_size(string), 7, 0), string]
    end
  end

  defp error(message), do: Error.new(:hpack, :compression_error, message)
end
