defmodule HFBridge.Arrow.Message do
  @moduledoc """
  Splits an Arrow IPC stream into encapsulated messages.

  Each message (Arrow columnar format, "Encapsulated message format") is:

    * an optional continuation marker `0xFFFFFFFF` (absent in the legacy
      pre-0.15 form),
    * an int32 little-endian metadata length (8-byte padded),
    * the `Message` flatbuffer,
    * `bodyLength` bytes of body.

  A metadata length of 0 (with or without the continuation marker) is the
  end-of-stream marker; a stream that simply ends at a message boundary is
  also accepted.

  Message.fbs fields used: `Message` { version 0, header_type 1, header 2,
  bodyLength 3 }; header union tags Schema = 1, DictionaryBatch = 2,
  RecordBatch = 3; `RecordBatch` { length 0, nodes 1, buffers 2,
  compression 3 }; `DictionaryBatch` { id 0, data 1, isDelta 2 }.
  """

  alias HFBridge.Arrow.{FlatBuffer, Schema}

  @typedoc "Record batch metadata: row count, field nodes `{length, null_count}` and body buffers `{offset, length}`."
  @type batch_meta :: %{
          length: integer(),
          nodes: [{integer(), integer()}],
          buffers: [{integer(), integer()}]
        }

  @type t ::
          {:schema, Schema.t()}
          | {:record_batch, batch_meta(), binary()}
          | {:dictionary_batch, integer(), boolean(), batch_meta(), binary()}
          | {:other, non_neg_integer()}

  @doc """
  Reads the next message from `ipc`. Returns `{:ok, message, rest}` or
  `:eos` at the end of the stream. Throws `{:arrow_malformed, msg}` or
  `{:arrow_unsupported, msg}`.
  """
  @spec next(binary()) :: {:ok, t(), binary()} | :eos
  def next(<<>>), do: :eos
  def next(<<0xFFFFFFFF::32, 0::32, _::binary>>), do: :eos
  def next(<<0xFFFFFFFF::32, len::little-signed-32, rest::binary>>), do: framed(len, rest)
  def next(<<0::32, _::binary>>), do: :eos
  def next(<<len::little-signed-32, rest::binary>>), do: framed(len, rest)
  def next(_), do: throw({:arrow_malformed, "truncated message prefix"})

  defp framed(len, rest) do
    cond do
      len < 0 ->
        throw({:arrow_malformed, "negative metadata length #{len}"})

      len > byte_size(rest) ->
        throw(
          {:arrow_malformed,
           "metadata length #{len} exceeds the remaining #{byte_size(rest)} bytes"}
        )

      true ->
        :ok
    end

    <<meta::binary-size(len), after_meta::binary>> = rest
    msg = FlatBuffer.root(meta)
    body_len = FlatBuffer.int(msg, 3, 64, :signed, 0)

    cond do
      body_len < 0 ->
        throw({:arrow_malformed, "negative body length"})

      body_len > byte_size(after_meta) ->
        throw(
          {:arrow_malformed,
           "body length #{body_len} exceeds the remaining #{byte_size(after_meta)} bytes"}
        )

      true ->
        :ok
    end

    <<body::binary-size(body_len), rest2::binary>> = after_meta
    {:ok, header(msg, body), rest2}
  end

  defp header(msg, body) do
    tag = FlatBuffer.int(msg, 1, 8, :unsigned, 0)
    h = FlatBuffer.table(msg, 2)

    case {tag, h} do
      {_, nil} when tag in 1..3 ->
        throw({:arrow_malformed, "message header missing"})

      {1, h} ->
        {:schema, Schema.from_flatbuffer(h)}

      {2, h} ->
        data =
          FlatBuffer.table(h, 1) || throw({:arrow_malformed, "dictionary batch without data"})

        {:dictionary_batch, FlatBuffer.int(h, 0, 64, :signed, 0), FlatBuffer.bool(h, 2, false),
         batch(data), body}

      {3, h} ->
        {:record_batch, batch(h), body}

      {tag, _} ->
        {:other, tag}
    end
  end

  defp batch(rb) do
    if c = FlatBuffer.table(rb, 3) do
      codec =
        case FlatBuffer.int(c, 0, 8, :signed, 0) do
          0 -> "LZ4_FRAME"
          1 -> "ZSTD"
          n -> "codec #{n}"
        end

      throw(
        {:arrow_unsupported,
         "compressed record batch bodies (#{codec}) are not supported; write the stream without IPC compression"}
      )
    end

    nodes =
      for <<l::little-signed-64, n::little-signed-64 <- FlatBuffer.structs(rb, 1, 16)>>,
        do: {l, n}

    buffers =
      for <<o::little-signed-64, l::little-signed-64 <- FlatBuffer.structs(rb, 2, 16)>>,
        do: {o, l}

    %{length: FlatBuffer.int(rb, 0, 64, :signed, 0), nodes: nodes, buffers: buffers}
  end
end
