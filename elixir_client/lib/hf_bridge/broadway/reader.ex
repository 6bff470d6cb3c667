defmodule HFBridge.Broadway.Reader do
  @moduledoc """
  The process that reads one session's record batches for a producer.

  It opens (or resumes) the session on the server, then reads one batch
  per `fetch/1` and sends the outcome to its owner as
  `{:hf_bridge_reader, reader_pid, result}`, where `result` is
  `{:ok, HFBridge.Batch.t()}`, `:done` or `{:error, HFBridge.Error.t()}`
  (the recovery notices below come as the same kind of message).
  The owner keeps working meanwhile (a GenStage producer must not block).

  ## Recovery

  When the connection drops or the server loses the session (a worker or
  the server restarted), the reader resumes the session with its token and
  the retry policy of `:retry` (see `HFBridge.Recovery`), then goes on with
  the fetch it was answering: the owner sees no error, only two kinds of
  notice, `{:hf_bridge_reader, reader_pid, {:resumed, info}}` (the server
  restarted the session after its last acknowledged batch, `info.next_seq
  - 1`) and `{:hf_bridge_reader, reader_pid, {:resent, seq}}` for each batch
  the resumed server sent again and the reader dropped, because it was
  delivered before. An `Ack` for a batch delivered before the resume is
  only accepted by the server once the batch has been sent again: the owner
  holds such acknowledgements until the `:resent` notice (or a later batch)
  passes them.

  A reader started with `keep: true` leaves the session's checkpoint on the
  server when it stops, so a restarted pipeline can resume it with the
  resume token: `stop/2` with `:keep` closes the server session but keeps
  its checkpoint; when the owner is killed the session is left as it is
  (the restarted owner may be resuming it already) until the server reaps
  it as idle. `stop/2` with `:close` closes it and deletes the checkpoint.

  Emits the `HFBridge.Telemetry` session events: `[:hf_bridge, :session,
  :open]` (span), `[:hf_bridge, :batch, :received]` and `[:hf_bridge,
  :session, :close]`.
  """

  use GenServer, restart: :temporary

  alias HFBridge.{Batch, BatchCall, Client, Error, Recovery, Telemetry}

  @typedoc "How to start: a new session from an `OpenRequest`, or a resume token."
  @type how :: {:open, HFBridge.Spec.open_request()} | {:resume, String.t()}

  @doc """
  Starts a reader owned by the caller and opens or resumes the session. The
  reader stops when its owner exits; the owner should monitor the reader.
  Options: `:read_ahead` (default 2), `:batch_timeout` (default 60 s),
  `:open_timeout` (default 120 s), `:keep` (default `false`), `:retry` (an
  `HFBridge.Retry` keyword list; `[max_attempts: 0]` turns recovery off),
  `:dataset` (for telemetry metadata).

  Returns the reader and the session info (`session_id`, `resume_token`,
  `next_seq`, ...).
  """
  @spec start(Client.t(), how(), keyword()) :: {:ok, pid(), map()} | {:error, Error.t()}
  def start(%Client{} = client, how, opts \\ []) do
    open_timeout = Keyword.get(opts, :open_timeout, 120_000)
    start_timeout = if open_timeout == :infinity, do: :infinity, else: open_timeout + 5_000
    meta = %{dataset: Keyword.get(opts, :dataset), split: split(how)}

    Telemetry.span([:hf_bridge, :session, :open], meta, fn ->
      # Not linked: a failed open must return an error, not kill the caller.
      case GenServer.start(__MODULE__, {client, how, self(), opts}, timeout: start_timeout) do
        {:ok, pid} ->
          info = GenServer.call(pid, :info)
          {{:ok, pid, info}, Map.merge(meta, %{session_id: info.session_id, worker: info.worker})}

        {:error, %Error{} = error} ->
          {{:error, error}, Map.put(meta, :error, error)}

        {:error, reason} ->
          error = Error.new(:session, :open_failed, "cannot start the reader: #{inspect(reason)}")
          {{:error, error}, Map.put(meta, :error, error)}
      end
    end)
  end

  defp split({:open, %{spec: %{split: split}}}), do: split
  defp split(_), do: nil

  @doc "Asks for the next batch; the result arrives as a message (see the module docs)."
  @spec fetch(pid()) :: :ok
  def fetch(reader), do: GenServer.cast(reader, :fetch)

  @doc """
  Stops the reader. `:close` closes the session on the server (its
  checkpoint is deleted); `:keep` closes it but keeps the checkpoint, so the
  resume token still works.
  """
  @spec stop(pid(), :close | :keep) :: :ok
  def stop(reader, how) when how in [:close, :keep] do
    GenServer.call(reader, {:set_keep, how == :keep}, 30_000)
    GenServer.stop(reader, :normal, 30_000)
  catch
    :exit, _ -> :ok
  end

  # -- GenServer ---------------------------------------------------------------

  @impl true
  def init({client, how, owner, opts}) do
    owner_ref = Process.monitor(owner)
    timeout = Keyword.get(opts, :open_timeout, 120_000)

    with {:ok, retry} <- retry_policy(opts),
         {:ok, info} <- open_on_server(client, how, timeout) do
      {:ok,
       %{
         client: client,
         owner: owner,
         owner_ref: owner_ref,
         info: info,
         stream: nil,
         read_ahead: Keyword.get(opts, :read_ahead, 2),
         timeout: Keyword.get(opts, :batch_timeout, 60_000),
         keep: Keyword.get(opts, :keep, false),
         done: false,
         batches: 0,
         rows: 0,
         retry: retry,
         delivered: info.next_seq - 1,
         attempt: 0,
         own_conn: nil
       }}
    else
      {:error, error} -> {:stop, error}
    end
  end

  defp retry_policy(opts) do
    case HFBridge.Retry.new(Keyword.get(opts, :retry, [])) do
      {:ok, policy} -> {:ok, policy}
      {:error, message} -> {:error, Error.new(:session, :invalid_options, "retry: " <> message)}
    end
  end

  defp open_on_server(client, {:open, request}, timeout),
    do: Client.call(client, :OpenSession, request, timeout: timeout)

  defp open_on_server(client, {:resume, token}, timeout),
    do: Client.call(client, :ResumeSession, %{resume_token: token}, timeout: timeout)

  @impl true
  def handle_call(:info, _from, state), do: {:reply, state.info, state}
  def handle_call({:set_keep, keep}, _from, state), do: {:reply, :ok, %{state | keep: keep}}

  @impl true
  def handle_cast(:fetch, %{done: true} = state) do
    send(state.owner, {:hf_bridge_reader, self(), :done})
    {:noreply, state}
  end

  def handle_cast(:fetch, state) do
    {result, state} = fetch(state, 0)
    send(state.owner, {:hf_bridge_reader, self(), result})
    {:noreply, state}
  end

  @impl true
  def handle_info({:DOWN, ref, :process, _, reason}, %{owner_ref: ref} = state),
    do: {:stop, {:shutdown, {:owner_down, reason}}, state}

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(reason, state) do
    if state.stream, do: Client.cancel(state.stream)
    id = state.info.session_id

    cond do
      not state.keep ->
        _ = Client.call(state.client, :CloseSession, %{session_id: id}, timeout: 10_000)

      reason == :normal ->
        # Stopped on purpose (stop/2, before the owner goes): the server
        # releases the session now and keeps its checkpoint for the token.
        _ =
          Client.call(state.client, :CloseSession, %{session_id: id, keep_checkpoint: true},
            timeout: 10_000
          )

      true ->
        # The owner is gone: a restarted owner may be resuming this very
        # session already, so it is left to the server's idle reaper.
        :ok
    end

    Recovery.release_own_conn(state)

    Telemetry.execute(
      [:hf_bridge, :session, :close],
      %{batches: state.batches, rows: state.rows},
      %{session_id: id, reason: close_reason(reason, state.keep)}
    )
  end

  defp close_reason(_, true), do: :kept
  defp close_reason(:normal, _), do: :normal
  defp close_reason(:shutdown, _), do: :normal
  defp close_reason({:shutdown, _}, _), do: :normal
  defp close_reason(_, _), do: :error

  # One ReadBatches call is open at a time, capped at read_ahead batches
  # (see HFBridge.BatchCall).
  defp fetch(%{stream: nil} = state, empty_calls) do
    case BatchCall.open(state.client, state.info.session_id, state.read_ahead) do
      {:ok, stream} -> receive_batch(%{state | stream: stream}, empty_calls)
      {:error, error} -> recover(state, error)
    end
  end

  defp fetch(state, empty_calls), do: receive_batch(state, empty_calls)

  defp receive_batch(state, empty_calls) do
    case BatchCall.next(state.stream, state.timeout, state.info.session_id) do
      :end_of_data ->
        {:done, %{state | stream: nil, done: true}}

      {:batch, %Batch{seq: seq}} when seq <= state.delivered ->
        # Sent again after a recovery: delivered already, so dropped; the
        # owner may now acknowledge it.
        send(state.owner, {:hf_bridge_reader, self(), {:resent, seq}})
        receive_batch(state, 0)

      {:batch, %Batch{seq: seq}} when seq > state.delivered + 1 ->
        {{:error, BatchCall.skipped(state.stream, state.delivered, seq)}, %{state | stream: nil}}

      {:batch, batch} ->
        BatchCall.received(batch)

        {{:ok, batch},
         %{
           state
           | delivered: batch.seq,
             attempt: 0,
             batches: state.batches + 1,
             rows: state.rows + batch.num_rows
         }}

      :call_ended when empty_calls < 1 ->
        fetch(%{state | stream: nil}, empty_calls + 1)

      :call_ended ->
        {{:error, BatchCall.ended_without_end_of_data()}, %{state | stream: nil}}

      # Nothing arrived in time: the call stays open for the next fetch.
      {:timeout, error} ->
        {{:error, error}, state}

      {:error, error} ->
        recover(%{state | stream: nil}, error)
    end
  end

  # See HFBridge.Recovery and "Recovery" in the module docs.
  defp recover(state, error) do
    case Recovery.backoff(state, error) do
      {:error, error} ->
        {{:error, error}, state}

      {:ok, state} ->
        with {:ok, state} <- Recovery.reconnect(state),
             {:ok, state} <- Recovery.resume(state) do
          send(state.owner, {:hf_bridge_reader, self(), {:resumed, state.info}})
          fetch(state, 0)
        else
          {:error, next_error} -> recover(state, next_error)
        end
    end
  end
end
