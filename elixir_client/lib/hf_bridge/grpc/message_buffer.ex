defmodule HFBridge.GRPC.MessageBuffer do
  @moduledoc """
  Reassembles gRPC length-prefixed messages from DATA payloads.

  Each message on the wire is a 1-byte compressed flag, a 4-byte big-endian
  length and the message bytes (gRPC over HTTP/2, "Length-Prefixed-Message").
  DATA frames may cut messages anywhere.

  The buffer parses the prefix of the message in progress once, as soon as
  its 5 bytes are here, and then only appends payloads (in O(1)) until the
  message is complete, so `needed/1` and `take/1` cost nothing per DATA
  frame. A message is joined once, when it is taken: a message that arrived
  within one payload is handed out as a sub-binary of it (no copy) unless it
  would keep a much larger binary alive; one spread over several payloads
  costs exactly one copy.
  """

  # `head`: the first bytes (< 5) of a prefix not yet complete, while `need`
  # is nil. Once the prefix is parsed, `need` is 5 + the message length,
  # `compressed?` its flag, and `body` holds the payloads received after the
  # prefix (newest first, `body_size` bytes; the newest may run past the
  # message). Payloads arriving once the message is complete wait unparsed
  # in a queue (`front` in order, then `back` newest first), so a consumer
  # that lets many messages pile up costs O(1) per payload and per message.
  # `size` counts every buffered byte, prefixes included.
  defstruct head: "",
            need: nil,
            compressed?: false,
            body: [],
            body_size: 0,
            front: [],
            back: [],
            size: 0

  @type t :: %__MODULE__{
          head: binary(),
          need: nil | pos_integer(),
          compressed?: boolean(),
          body: [binary()],
          body_size: non_neg_integer(),
          front: [binary()],
          back: [binary()],
          size: non_neg_integer()
        }

  # A message that is a slice of a larger binary is copied when it is at most
  # this large and uses less than half of that binary, so a small message
  # kept by its consumer does not keep a large receive buffer alive.
  @copy_below 64 * 1024

  @doc "An empty buffer."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc "Number of buffered bytes."
  @spec size(t()) :: non_neg_integer()
  def size(%__MODULE__{size: size}), do: size

  @doc "Appends a DATA payload (a binary or a list of binaries)."
  @spec push(t(), iodata()) :: t()
  def push(buffer, data) when is_binary(data), do: push_binary(buffer, data)
  def push(buffer, []), do: buffer
  def push(buffer, [part | rest]), do: buffer |> push(part) |> push(rest)

  defp push_binary(buffer, ""), do: buffer

  defp push_binary(%__MODULE__{need: need, body_size: body_size} = buffer, data)
       when is_integer(need) and body_size >= need - 5,
       do: %{buffer | back: [data | buffer.back], size: buffer.size + byte_size(data)}

  defp push_binary(buffer, data), do: %{feed(buffer, data) | size: buffer.size + byte_size(data)}

  # Parses `data` into the message in progress (leaves `size` alone).
  defp feed(%__MODULE__{need: nil, head: head} = buffer, data) do
    missing = 5 - byte_size(head)

    case data do
      <<prefix::binary-size(missing), body::binary>> ->
        <<flag, len::32>> = head <> prefix

        %{
          buffer
          | head: "",
            need: 5 + len,
            compressed?: flag == 1,
            body: if(body == "", do: [], else: [body]),
            body_size: byte_size(body)
        }

      _ ->
        %{buffer | head: head <> data}
    end
  end

  defp feed(%__MODULE__{body: body, body_size: body_size} = buffer, data),
    do: %{buffer | body: [data | body], body_size: body_size + byte_size(data)}

  @doc """
  Bytes required, counted from the start of the buffer, to complete the next
  message: 5 while the prefix is incomplete, else 5 + its length.
  """
  @spec needed(t()) :: pos_integer()
  def needed(%__MODULE__{need: nil}), do: 5
  def needed(%__MODULE__{need: need}), do: need

  @doc """
  Takes the next complete message: `{:ok, compressed?, bytes, buffer}`, or
  `:more` when it is not all here yet.
  """
  @spec take(t()) :: {:ok, boolean(), binary(), t()} | :more
  def take(%__MODULE__{need: need, body_size: body_size} = buffer)
      when is_integer(need) and body_size >= need - 5 do
    {message, left} = split(Enum.reverse(buffer.body), need - 5)
    next = %__MODULE__{size: buffer.size - need}
    next = if left == "", do: next, else: feed(next, left)
    {:ok, buffer.compressed?, detach(message), advance(next, buffer.front, buffer.back)}
  end

  def take(_buffer), do: :more

  # The first `len` bytes of the payloads (in order) and what follows them in
  # the last one used; the body never holds payloads past that one.
  defp split([], 0), do: {"", ""}

  defp split([first], len) do
    <<message::binary-size(len), left::binary>> = first
    {message, left}
  end

  defp split(parts, len), do: join(parts, len, [])

  defp join([part], len, acc) do
    <<last::binary-size(len), left::binary>> = part
    {IO.iodata_to_binary([acc | last]), left}
  end

  defp join([part | rest], len, acc), do: join(rest, len - byte_size(part), [acc | part])

  # Feeds queued payloads until the next message is complete or none are left.
  defp advance(buffer, [], []), do: buffer
  defp advance(buffer, [], back), do: advance(buffer, Enum.reverse(back), [])

  defp advance(%__MODULE__{need: need, body_size: body_size} = buffer, front, back)
       when is_integer(need) and body_size >= need - 5,
       do: %{buffer | front: front, back: back}

  defp advance(buffer, [part | front], back), do: advance(feed(buffer, part), front, back)

  defp detach(bin) do
    size = byte_size(bin)

    if size <= @copy_below and size * 2 < :binary.referenced_byte_size(bin),
      do: :binary.copy(bin),
      else: bin
  end

  @doc "Frames one message: the 5-byte prefix (uncompressed) and the bytes."
  @spec encode(iodata()) :: iodata()
  def encode(message), do: [<<0, IO.iodata_length(message)::32>>, message]
end
