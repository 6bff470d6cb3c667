defmodule HFBridge.Error do
  @moduledoc """
  The one error value of hf_bridge: every failing public function returns
  `{:error, %HFBridge.Error{}}`.

  Fields:

    * `:code` — an atom. For failures reported by the server this is the gRPC
      status in snake case (`:not_found`, `:invalid_argument`,
      `:permission_denied`, `:unauthenticated`, `:resource_exhausted`,
      `:unavailable`, `:deadline_exceeded`, `:cancelled`, `:internal`, ...).
      Local failures use descriptive atoms such as `:closed`,
      `:protocol_error`, `:malformed`, `:timeout`.
    * `:message` — a sentence a person can act on.
    * `:layer` — where it happened: `:grpc`, `:http2`, `:hpack`, `:proto`,
      `:arrow`, `:json`, `:session`, `:server`, `:options`, `:parquet`.
    * `:retryable` — whether the same call may succeed if tried again
      (a dropped connection, a GOAWAY, a worker restarting).
    * `:details` — a map with anything else useful (status number, metadata).
  """

  @type code :: atom()
  @type layer ::
          :grpc
          | :http2
          | :hpack
          | :proto
          | :arrow
          | :json
          | :session
          | :server
          | :options
          | :parquet
          | atom()

  @type t :: %__MODULE__{
          code: code(),
          message: String.t(),
          layer: layer(),
          retryable: boolean(),
          details: map()
        }

  defexception code: :unknown,
               message: "unknown error",
               layer: :unknown,
               retryable: false,
               details: %{}

  @grpc_codes %{
    0 => :ok,
    1 => :cancelled,
    2 => :unknown,
    3 => :invalid_argument,
    4 => :deadline_exceeded,
    5 => :not_found,
    6 => :already_exists,
    7 => :permission_denied,
    8 => :resource_exhausted,
    9 => :failed_precondition,
    10 => :aborted,
    11 => :out_of_range,
    12 => :unimplemented,
    13 => :internal,
    14 => :unavailable,
    15 => :data_loss,
    16 => :unauthenticated
  }

  @doc "Builds an error. `opts` may set `:retryable` and `:details`."
  @spec new(layer(), code(), String.t(), keyword()) :: t()
  def new(layer, code, message, opts \\ []) do
    %__MODULE__{
      layer: layer,
      code: code,
      message: message,
      retryable: Keyword.get(opts, :retryable, false),
      details: Map.new(Keyword.get(opts, :details, %{}))
    }
  end

  @doc "Maps a numeric gRPC status (0..16) to its atom; unknown numbers map to `:unknown`."
  @spec grpc_code(non_neg_integer()) :: code()
  def grpc_code(number) when is_integer(number), do: Map.get(@grpc_codes, number, :unknown)

  @doc "Maps a gRPC status atom back to its number; unknown atoms map to 2 (UNKNOWN)."
  @spec grpc_number(code()) :: non_neg_integer()
  def grpc_number(code) do
    Enum.find_value(@grpc_codes, 2, fn {n, c} -> if c == code, do: n end)
  end

  @doc "Builds the error for a non-OK gRPC status received from a server."
  @spec from_grpc_status(non_neg_integer(), String.t(), map()) :: t()
  def from_grpc_status(status, message, details \\ %{}) do
    code = grpc_code(status)

    %__MODULE__{
      layer: :grpc,
      code: code,
      message: message,
      retryable: code in [:unavailable, :aborted],
      details: Map.put(details, :status, status)
    }
  end

  @impl true
  def message(%__MODULE__{layer: layer, code: code, message: message}),
    do: "#{layer} #{code}: #{message}"
end
