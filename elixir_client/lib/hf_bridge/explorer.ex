defmodule HFBridge.Explorer do
  @moduledoc """
  Record batches as `Explorer.DataFrame`s.

  Each batch's `ipc` is a complete Arrow IPC stream, which
  `Explorer.DataFrame.load_ipc_stream/2` reads as is (no decoding by
  hf_bridge). Used by `HFBridge.Batch.to_dataframe/2` and
  `HFBridge.stream(dataset, as: :dataframe)`.

  Explorer is optional: every call to it is made after checking at run
  time that `Explorer.DataFrame` is loaded; without it the functions here
  return `{:error, %HFBridge.Error{code: :unavailable}}`.
  """

  # Calls go through data_frame/0 so the compiler neither expects Explorer
  # nor counts it as a dependency of :hf_bridge.

  alias HFBridge.{Batch, Error}

  @doc "Whether `Explorer.DataFrame` is available."
  @spec available?() :: boolean()
  def available?, do: Code.ensure_loaded?(Explorer.DataFrame)

  @doc """
  `:ok` when Explorer is available, else the `:unavailable` error of `layer`
  naming the package: `subject` says what needs it ("data frames need") and
  `instead` what to do without it.
  """
  @spec ensure_available(Error.layer(), String.t(), String.t()) :: :ok | {:error, Error.t()}
  def ensure_available(
        layer \\ :arrow,
        subject \\ "data frames need",
        instead \\ "decode batches with HFBridge.Batch.table/2 instead"
      ) do
    if available?() do
      :ok
    else
      {:error,
       Error.new(
         layer,
         :unavailable,
         "#{subject} the :explorer package; add {:explorer, \"~> 0.10\"} to your " <>
           "dependencies, or #{instead}"
       )}
    end
  end

  @doc """
  Loads `batch` into an `Explorer.DataFrame` with
  `Explorer.DataFrame.load_ipc_stream/2`; `opts` are passed to it (for
  example `columns: ["text"]`).
  """
  @spec to_dataframe(Batch.t(), keyword()) :: {:ok, struct()} | {:error, Error.t()}
  def to_dataframe(%Batch{ipc: ipc} = batch, opts \\ []) do
    with :ok <- ensure_available() do
      case data_frame().load_ipc_stream(ipc, opts) do
        {:ok, df} -> {:ok, df}
        {:error, reason} -> {:error, load_error(batch, reason)}
      end
    end
  rescue
    exception -> {:error, load_error(batch, exception)}
  end

  @doc "Like `to_dataframe/2`, raising `HFBridge.Error`."
  @spec to_dataframe!(Batch.t(), keyword()) :: struct()
  def to_dataframe!(batch, opts \\ []) do
    case to_dataframe(batch, opts) do
      {:ok, df} -> df
      {:error, error} -> raise error
    end
  end

  @doc false
  # Validates the `:as` option of `HFBridge.stream/2`.
  @spec check_as(term()) :: {:ok, :batch | :dataframe} | {:error, String.t()}
  def check_as(:batch), do: {:ok, :batch}

  def check_as(:dataframe) do
    case ensure_available() do
      :ok -> {:ok, :dataframe}
      {:error, error} -> {:error, "as: :dataframe unavailable: " <> error.message}
    end
  end

  def check_as(other),
    do: {:error, "expected :batch or :dataframe, got: #{inspect(other, limit: 5)}"}

  @doc """
  Maps a stream of batches to what `as` asks for: the batches themselves
  (`:batch`) or data frames (`:dataframe`, raising `HFBridge.Error` on a
  batch Explorer cannot read).
  """
  @spec convert(Enumerable.t(), :batch | :dataframe) :: Enumerable.t()
  def convert(stream, :batch), do: stream
  def convert(stream, :dataframe), do: Stream.map(stream, &to_dataframe!/1)

  defp load_error(batch, reason) do
    text = if is_exception(reason), do: Exception.message(reason), else: inspect(reason)

    Error.new(:arrow, :explorer_error, "Explorer cannot read batch #{batch.seq}: #{text}",
      details: %{seq: batch.seq, session_id: batch.session_id, reason: reason}
    )
  end

  defp data_frame, do: Explorer.DataFrame
end
