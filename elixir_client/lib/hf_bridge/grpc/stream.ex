defmodule HFBridge.GRPC.Stream do
  @moduledoc """
  Handle of one server-streaming call, owned by the process that started it.
  Use `HFBridge.GRPC.recv/2`, `HFBridge.GRPC.cancel/1` and
  `HFBridge.GRPC.stream_metadata/1` with it.
  """

  @enforce_keys [:conn, :ref, :owner]
  defstruct [:conn, :ref, :owner]

  @type t :: %__MODULE__{conn: pid(), ref: reference(), owner: pid()}
end
