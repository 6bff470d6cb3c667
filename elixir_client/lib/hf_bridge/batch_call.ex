defmodule HFBridge.BatchCall do
  @moduledoc """
  One session's `ReadBatches` calls, as `HFBridge.Session` and
  `HFBridge.Broadway.Reader` both read them.

  A reader keeps at most one call open, capped at a number of batches
  (`open/3`); a call that ends without `end_of_data` has delivered its cap,
  and the next call continues at the server's next batch. `next/3` reads
  one message of the open call and says what it was, so that each reader
  applies its own policy (sequence checks, recovery) to the outcome.
  """

  alias HFBridge.{Batch, Client, Error}

  @typedoc "What one read of the open call gave."
  @type outcome ::
          {:batch, Batch.t()}
          | :end_of_data
          | :call_ended
          | {:timeout, Error.t()}
          | {:error, Error.t()}

  @doc "Opens a `ReadBatches` call for `session_id`, capped at `max_batches` (0: no cap)."
  @spec open(Client.t(), String.t(), non_neg_integer()) ::
          {:ok, Client.Stream.t()} | {:error, Error.t()}
  def open(client, session_id, max_batches),
    do:
      Client.server_stream(client, :ReadBatches, %{
        session_id: session_id,
        max_batches: max_batches
      })

  @doc """
  Reads the next message of `stream` within `timeout` ms:

    * `{:batch, batch}` — a batch of `session_id` (not yet checked for order);
    * `:end_of_data` — the session has no more rows; the call is cancelled;
    * `:call_ended` — the call delivered its cap; open the next one;
    * `{:timeout, error}` — nothing arrived in time; the call stays open, so
      a batch already on its way is read by the next `next/3`;
    * `{:error, error}` — the call failed and is cancelled.
  """
  @spec next(Client.Stream.t(), timeout(), String.t()) :: outcome()
  def next(stream, timeout, session_id) do
    case Client.recv(stream, timeout) do
      {:ok, %{end_of_data: true}} ->
        Client.cancel(stream)
        :end_of_data

      {:ok, message} ->
        {:batch, Batch.from_message(message, session_id)}

      :done ->
        :call_ended

      {:error, %Error{layer: :grpc, code: :timeout} = error} ->
        {:timeout, error}

      {:error, %Error{} = error} ->
        Client.cancel(stream)
        {:error, error}
    end
  end

  @doc "Emits `[:hf_bridge, :batch, :received]` for a batch handed to the consumer."
  @spec received(Batch.t()) :: :ok
  def received(%Batch{} = batch) do
    HFBridge.Telemetry.execute(
      [:hf_bridge, :batch, :received],
      %{rows: batch.num_rows, bytes: byte_size(batch.ipc)},
      %{session_id: batch.session_id, seq: batch.seq}
    )
  end

  @doc """
  Cancels `stream`, whose server skipped from batch `delivered` to `seq`,
  and returns the error saying so (rows would be lost).
  """
  @spec skipped(Client.Stream.t(), integer(), non_neg_integer()) :: Error.t()
  def skipped(stream, delivered, seq) do
    Client.cancel(stream)

    Error.new(
      :session,
      :data_loss,
      "the server skipped from batch #{delivered} to #{seq}; refusing to lose rows"
    )
  end

  @doc "The error for two calls in a row that ended with no batch and no `end_of_data`."
  @spec ended_without_end_of_data() :: Error.t()
  def ended_without_end_of_data,
    do:
      Error.new(
        :session,
        :protocol_error,
        "the server ended the batch stream without end_of_data"
      )
end
