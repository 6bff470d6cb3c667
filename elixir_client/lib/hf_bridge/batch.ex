defmodule HFBridge.Batch do
  @moduledoc """
  One record batch of a session: its sequence number, row count and the
  Arrow IPC stream (schema, one record batch, end-of-stream) as received.

  The IPC bytes are decoded only on request: `table/1` returns an
  `HFBridge.Arrow.Table` (columns), `rows/1` a list of row maps with string
  keys. Hand `ipc` to any Arrow reader (Explorer's `load_ipc_stream/1`, for
  instance) to skip this decoder altogether.
  """

  alias HFBridge.Error

  @enforce_keys [:seq, :num_rows, :ipc]
  defstruct [:seq, :num_rows, :ipc, :session_id]

  @typedoc """
  * `:seq` — sequence number within the session (0-based).
  * `:num_rows` — rows in the batch.
  * `:ipc` — the Arrow IPC stream bytes.
  * `:session_id` — the session it came from.
  """
  @type t :: %__MODULE__{
          seq: non_neg_integer(),
          num_rows: non_neg_integer(),
          ipc: binary(),
          session_id: String.t() | nil
        }

  @doc "Builds a batch from a decoded `Batch` message."
  @spec from_message(map(), String.t() | nil) :: t()
  def from_message(%{seq: seq, num_rows: num_rows, arrow_ipc: ipc}, session_id \\ nil) do
    %__MODULE__{seq: seq, num_rows: num_rows, ipc: ipc, session_id: session_id}
  end

  @doc """
  Decodes the batch into an `HFBridge.Arrow.Table`. Options are passed to
  `HFBridge.Arrow.read_stream/2` (for example `copy: true` to detach column
  data from the received binary).
  """
  @spec table(t(), keyword()) :: {:ok, HFBridge.Arrow.Table.t()} | {:error, Error.t()}
  def table(%__MODULE__{ipc: ipc}, opts \\ []) do
    HFBridge.Arrow.read_stream(ipc, opts)
  end

  @doc "Like `table/2`, raising `HFBridge.Error` on malformed data."
  @spec table!(t(), keyword()) :: HFBridge.Arrow.Table.t()
  def table!(batch, opts \\ []) do
    case table(batch, opts) do
      {:ok, table} -> table
      {:error, error} -> raise error
    end
  end

  @doc "Decodes the batch into row maps with string keys, in row order."
  @spec rows(t(), keyword()) :: {:ok, [%{String.t() => term()}]} | {:error, Error.t()}
  def rows(%__MODULE__{} = batch, opts \\ []) do
    with {:ok, table} <- table(batch, opts), do: {:ok, HFBridge.Arrow.to_rows(table)}
  end

  @doc "Like `rows/2`, raising `HFBridge.Error` on malformed data."
  @spec rows!(t(), keyword()) :: [%{String.t() => term()}]
  def rows!(batch, opts \\ []) do
    case rows(batch, opts) do
      {:ok, rows} -> rows
      {:error, error} -> raise error
    end
  end

  @doc """
  Loads the batch into an `Explorer.DataFrame` through
  `Explorer.DataFrame.load_ipc_stream/2` (`opts` are passed on). Needs the
  `:explorer` package; without it returns an `:unavailable` error. See
  `HFBridge.Explorer`.
  """
  @spec to_dataframe(t(), keyword()) :: {:ok, struct()} | {:error, Error.t()}
  defdelegate to_dataframe(batch, opts \\ []), to: HFBridge.Explorer

  @doc "Like `to_dataframe/2`, raising `HFBridge.Error`."
  @spec to_dataframe!(t(), keyword()) :: struct()
  defdelegate to_dataframe!(batch, opts \\ []), to: HFBridge.Explorer
end
