defmodule HFBridge.GRPC.MessageBuffer do
  @moduledoc """
  Reassembles gRPC length-prefixed messages from DATA payloads.

  Each message on the wire is a 1-byte compressed flag, a 4-byte big-endian
  length and the message bytes (gRPC over HTTP/2, "Length-Prefixed-Message").
  DATA frames may cut messages anywhere; the buffer keeps the chunks as
  received and joins only the bytes of one message when it is taken, so
  reassembling a large message costs one copy.
  """

  defstruct chunks: :queue.new(), size: 0

  @type t :: %__MODULE__{chunks: :queue.queue(binary()), size: non_neg_integer()}

  @doc "An empty buffer."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc "Number of buffered bytes."
  @spec size(t()) :: non_neg_integer()
  def size(%__MODULE__{size: size}), do: size

  @doc "Appends a DATA payload."
  @spec push(t(), binary()) :: t()
  def push(buffer, ""), do: buffer

  def push(%__MODULE__{chunks: chunks, size: size}, data),
    do: %__MODULE__{chunks: :queue.in(data, chunks), size: size + byte_size(data)}

  @doc """
  Bytes required, counted from the start of the buffer, to complete the next
  message: 5 while the prefix is incomplete, else 5 + its length.
  """
  @spec needed(t()) :: pos_integer()
  def needed(%__MODULE__{size: size}) when size < 5, do: 5

  def needed(buffer) do
    <<_flag, len::32>> = peek(buffer, 5)
    5 + len
  end

  @doc """
  Takes the next complete message: `{:ok, compressed?, bytes, buffer}`, or
  `:more` when it is not all here yet.
  """
  @spec take(t()) :: {:ok, boolean(), binary(), t()} | :more
  def take(%__MODULE__{size: size} = buffer) when size >= 5 do
    need = needed(buffer)

    if size >= need do
      {bin, buffer} = take_bytes(buffer, need)
      <<flag, _len::32, message::binary>> = bin
      {:ok, flag == 1, message, buffer}
    else
      :more
    end
  end

  def take(_buffer), do: :more

  defp peek(%__MODULE__{chunks: chunks}, n), do: peek_chunks(chunks, n, [])

  defp peek_chunks(chunks, n, acc) do
    {{:value, chunk}, rest} = :queue.out(chunks)

    if byte_size(chunk) >= n,
      do: IO.iodata_to_binary([acc | binary_part(chunk, 0, n)]),
      else: peek_chunks(rest, n - byte_size(chunk), [acc | chunk])
  end

  defp take_bytes(%__MODULE__{chunks: chunks, size: size}, n) do
    {iodata, chunks} = take_chunks(chunks, n, [])
    {IO.iodata_to_binary(iodata), %__MODULE__{chunks: chunks, size: size - n}}
  end

  defp take_chunks(chunks, 0, acc), do: {acc, chunks}

  defp take_chunks(chunks, n, acc) do
    {{:value, chunk}, rest} = :queue.out(chunks)

    case chunk do
      <<part::binary-size(n), left::binary>> when left != "" ->
        # Copy the remainder so a small tail does not pin a large chunk.
        {[acc | part], :queue.in_r(:binary.copy(left), rest)}

      _ ->
        take_chunks(rest, n - byte_size(chunk), [acc | chunk])
    end
  end

  @doc "Frames one message: the 5-byte prefix (uncompressed) and the bytes."
  @spec encode(iodata()) :: iodata()
  def encode(message), do: [<<0, IO.iodata_length(message)::32>>, message]
end
