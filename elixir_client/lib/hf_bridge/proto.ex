defmodule HFBridge.Proto do
  @moduledoc """
  Protobuf codec for the hf_bridge wire contract,
  `proto/hf_bridge/v1/hf_bridge.proto`.

  The codec tables are built at compile time from that very file (it is an
  `@external_resource`, so editing it recompiles this module), so the Elixir
  client and the contract cannot drift apart.

  Messages are named by atoms without the package (`:DatasetSpec`,
  `:OpenRequest`, `:Batch`, ...); their fields are maps with atom keys equal
  to the proto field names.

      iex> bin = HFBridge.Proto.encode(:AckRequest, %{session_id: "s1", seq: 7})
      iex> HFBridge.Proto.decode(:AckRequest, bin)
      {:ok, %{session_id: "s1", seq: 7}}

  A decoded map holds every field of the message: plain scalars at their
  proto3 default (`0`, `""`, `false`), repeated fields as lists, message,
  `optional` and oneof fields that were not sent as `nil`. When encoding,
  a missing key or `nil` means "not set". See `HFBridge.Proto.Encoder` and
  `HFBridge.Proto.Decoder` for the value rules; `HFBridge.Proto.Schema`
  builds the same kind of codec from any other `.proto` text.
  """

  alias HFBridge.Proto.{Codec, Schema}

  # The repository's /proto: lib/hf_bridge -> lib -> elixir_client -> root.
  @proto_path Path.expand("../../../proto/hf_bridge/v1/hf_bridge.proto", __DIR__)
  @external_resource @proto_path
  @schema Schema.from_file!(@proto_path)

  @typedoc "A message name of the wire contract, such as `:DatasetSpec`."
  @type message :: atom()

  @typedoc "An rpc method of the `HFBridge` service."
  @type rpc_info :: %{
          path: String.t(),
          input: message(),
          output: message(),
          server_streaming: boolean(),
          client_streaming: boolean()
        }

  @doc "Path of the `.proto` file the codec was built from."
  @spec proto_path() :: Path.t()
  def proto_path, do: @proto_path

  @doc "The compiled schema (fields, numbers, types) of the wire contract."
  @spec schema() :: Schema.t()
  def schema, do: @schema

  @doc """
  Encodes `fields` as message `message`. Raises `ArgumentError` on a
  programming error: unknown message or field, value of the wrong type or
  out of range.
  """
  @spec encode(message(), map()) :: binary()
  def encode(message, fields) when is_atom(message) and is_map(fields),
    do: Codec.encode(@schema, message, fields)

  @doc """
  Decodes `binary` as message `message`. Malformed bytes give
  `{:error, %HFBridge.Error{layer: :proto, code: :malformed}}`, never a
  raise. (An unknown message name is a programming error and raises
  `ArgumentError`.)
  """
  @spec decode(message(), binary()) :: {:ok, map()} | {:error, HFBridge.Error.t()}
  def decode(message, binary) when is_atom(message) and is_binary(binary),
    do: Codec.decode(@schema, message, binary)

  @doc "Every message name of the contract, in declaration order."
  @spec messages() :: [message()]
  def messages, do: unquote(Schema.messages(@schema))

  @doc ~S'The HTTP/2 path of an rpc: `rpc_path(:GetInfo)` is `"/hf_bridge.v1.HFBridge/GetInfo"`.'
  @spec rpc_path(atom()) :: String.t()
  def rpc_path(rpc), do: rpc(rpc).path

  @doc """
  Describes an rpc method: its path, input and output message, and whether
  the server (or client) streams. Raises `ArgumentError` for an unknown rpc.
  """
  @spec rpc(atom()) :: rpc_info()
  def rpc(rpc)

  for name <- @schema.rpc_order do
    info =
      Map.take(@schema.rpcs[name], [:path, :input, :output, :server_streaming, :client_streaming])

    def rpc(unquote(name)), do: unquote(Macro.escape(info))
  end

  def rpc(other),
    do: raise(ArgumentError, "unknown rpc #{inspect(other)} of service hf_bridge.v1.HFBridge")

  @doc "Names of every rpc of the service, in declaration order."
  @spec rpcs() :: [atom()]
  def rpcs, do: unquote(@schema.rpc_order)
end
