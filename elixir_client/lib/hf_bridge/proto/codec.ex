defmodule HFBridge.Proto.Codec do
  @moduledoc """
  The generic protobuf codec: encode and decode any message of any
  `HFBridge.Proto.Schema`. `HFBridge.Proto` is this codec bound to the
  hf_bridge wire contract.
  """

  alias HFBridge.Proto.{Decoder, Encoder, Schema}

  @doc "Encodes `fields` as message `name`; raises `ArgumentError` on input that does not fit the schema."
  @spec encode(Schema.t(), atom(), map()) :: binary()
  defdelegate encode(schema, name, fields), to: Encoder

  @doc "Decodes `bin` as message `name`; malformed input gives `{:error, %HFBridge.Error{layer: :proto}}`."
  @spec decode(Schema.t(), atom(), binary()) :: {:ok, map()} | {:error, HFBridge.Error.t()}
  defdelegate decode(schema, name, bin), to: Decoder
end
