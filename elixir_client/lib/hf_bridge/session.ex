defmodule HFBridge.Session do
  @schema [
    read_ahead: [
      type: :pos_integer,
      default: 2,
      doc:
        "Batches the server may send ahead of what was asked for (each `ReadBatches` call " <>
          "is capped at this many batches). Client memory is bounded by the HTTP/2 stream " <>
          "window whatever the value; a larger value means fewer calls (each call start " <>
          "costs a round trip). `HFBridge.stream/2` and `HFBridge.rows/2` default to 16."
    ],
    open_timeout: [
      type: :timeout,
      default: 120_000,
      doc: "Deadline for opening or resuming the session (opening a Hub dataset can be slow)."
    ],
    owner: [
      type: {:custom, __MODULE__, :check_pid},
      type_doc: "`pid()`",
      doc: "The process whose exit closes the session. Defaults to the caller."
    ],
    ack_interval: [
      type: :non_neg_integer,
      default: 100,
      doc:
        "Least time in milliseconds between two `Ack` calls sent for `ack_async/2` (which " <>
          "`HFBridge.stream/2` uses): requests made meanwhile coalesce into one for the " <>
          "highest batch, so the committed checkpoint trails the consumer by at most about " <>
          "this long. Pending acknowledgements are sent at once when the stream reaches its " <>
          "end and by `flush_acks/1` (closing a session deletes its checkpoint, so none are " <>
          "sent then). `0` sends each as soon as " <>
          "the previous one is answered."
    ],
    retry: [
      type: {:custom, HFBridge.Retry, :check},
      default: [],
      type_doc: "`keyword()`",
      doc:
        "Recovery from a dropped connection or a restarted worker or server: `max_attempts` " <>
          "(10), `base_delay` and `max_delay` in ms (100, 5000); see `HFBridge.Retry`. " <>
          "`[max_attempts: 0]` turns recovery off."
    ]
  ]

  @moduledoc """
  A streaming session on the server: an iterator over a dataset that
  delivers numbered record batches and commits checkpoints on `ack/2`.

  A session is a process that holds the session's gRPC stream and monitors
  its *owner* (the process that opened it, by default): when the owner exits,
  the session is closed on the server. An owner that exits normally (or with
  `:shutdown`) ends the session for good; one that crashes or is killed
  leaves its checkpoint on the server, so `resume/2` with the resume token
  (saved by the consumer, say from `:on_open`) continues after the last
  acknowledged batch. A session process that crashes does the same.

  Batches are fetched only when asked
  for (`next_batch/2`); the server sends at most `:read_ahead` batches beyond
  those asked for. The first `ReadBatches` call asks for one batch and each
  later call for twice as many as the one before, up to `:read_ahead`, so a
  consumer that takes a few rows reads one batch while a long read soon
  keeps `:read_ahead` batches in flight.

  ## Recovery

  When the connection drops or the server reports a retryable failure (a
  worker restarting: `UNAVAILABLE`), or no longer knows the session (the
  server restarted), the session retries with bounded backoff (the `:retry`
  option): it reconnects when its connection is gone and resumes the session
  with its resume token, so the server continues after the last acknowledged
  batch. Batches the server sends again are recognised by their sequence
  numbers and dropped, so `next_batch/2` delivers every batch exactly once,
  in order. Acknowledgements of batches the recovered server
  has not sent again yet are held back until it has.

      {:ok, client} = HFBridge.connect(address: "127.0.0.1:50051")
      {:ok, session} = HFBridge.open(client, "parquet", data_files: "data/*.parquet")
      {:ok, batch} = HFBridge.Session.next_batch(session)
      :ok = HFBridge.Session.ack(session, batch.seq)
      token = HFBridge.Session.resume_token(session)

      # later, after the consumer crashed or the server restarted:
      {:ok, session} = HFBridge.Session.resume(client, token)

      # `close/1` ends the session for good (its checkpoint is deleted)
      :ok = HFBridge.Session.close(session)

  ## Options

  #{HFBridge.Options.docs(@schema)}

  `open/3` also takes the dataset options of `HFBridge.Spec`.
  """

  use GenServer, restart: :temporary

  # How long closing lets an Ack already in flight finish.
  @close_ack_timeout 2_000

  alias HFBridge.{Batch, BatchCall, Client, Error, Options, Recovery, Spec, Telemetry}

  @typedoc "A session process."
  @type t :: pid()

  @typedoc """
  What the server said about the session: id, resume token, Arrow schema
  (IPC bytes), HF features JSON, next sequence number, owning worker and
  batch size.
  """
  @type info :: %{
          session_id: String.t(),
          resume_token: String.t(),
          arrow_schema: binary(),
          features_json: String.t(),
          next_seq: non_neg_integer(),
          worker: String.t(),
          batch_size: non_neg_integer()
        }

  @doc "The options schema of sessions (see `HFBridge.Options`)."
  @spec schema() :: Options.schema()
  def schema, do: @schema

  @doc "The names of all session options."
  @spec option_names() :: [atom()]
  def option_names, do: Keyword.keys(@schema)

  @doc """
  Opens a session on `dataset`. `opts` are dataset options (see
  `HFBridge.Spec`) and session options (above).
  """
  @spec open(Client.t(), String.t(), keyword()) :: {:ok, t()} | {:error, Error.t()}
  def open(%Client{} = client, dataset, opts \\ []) do
    {session_opts, spec_opts} = Options.take(opts, @schema)

    with {:ok, session_opts} <- Options.validate(session_opts, @schema),
         {:ok, request} <- Spec.open_request(dataset, spec_opts) do
      meta = %{dataset: dataset, split: request.spec.split}
      start(client, {:open, request}, meta, session_opts)
    end
  end

  @doc """
  Resumes a session from a resume token (or the token of another session
  process): the first batch delivered is the one after the last acknowledged.
  Takes the session options above.
  """
  @spec resume(Client.t(), String.t() | t(), keyword()) :: {:ok, t()} | {:error, Error.t()}
  def resume(client, token_or_session, opts \\ [])

  def resume(%Client{} = client, session, opts) when is_pid(session) do
    case resume_token(session) do
      token when is_binary(token) -> resume(client, token, opts)
      {:error, error} -> {:error, error}
    end
  end

  def resume(%Client{} = client, token, opts) when is_binary(token) do
    with {:ok, opts} <- Options.validate(opts, @schema) do
      start(client, {:resume, token}, %{dataset: nil, split: nil}, opts)
    end
  end

  def resume(%Client{}, other, _opts) do
    {:error,
     Error.new(
       :options,
       :invalid_option,
       "expected a resume token string, got: #{inspect(other, limit: 10)}"
     )}
  end

  @doc """
  Returns the next batch, `:done` after the last one, or an error. Waits up
  to `timeout` milliseconds for the server.
  """
  @spec next_batch(t(), timeout()) :: {:ok, Batch.t()} | :done | {:error, Error.t()}
  def next_batch(session, timeout \\ 60_000) do
    call(session, {:next_batch, timeout}, call_timeout(timeout))
  end

  @doc """
  Acknowledges batches up to and including `seq`: the server commits the
  checkpoint after it, and `resume/3` continues with batch `seq + 1`.
  """
  @spec ack(t(), non_neg_integer()) :: :ok | {:error, Error.t()}
  def ack(session, seq) when is_integer(seq) and seq >= 0, do: call(session, {:ack, seq}, 120_000)

  def ack(_session, seq),
    do:
      {:error,
       Error.new(
         :options,
         :invalid_option,
         "seq must be a non-negative integer, got: #{inspect(seq)}"
       )}

  @doc """
  Acknowledges batches up to `seq` without waiting for the server. At most
  one `Ack` call is in flight per session, and calls start at most once per
  `:ack_interval`; requests made meanwhile coalesce into one for the highest
  `seq`. Pending requests are sent without waiting for the interval when the
  session reaches the end of the data and by `flush_acks/1` (not on close:
  closing deletes the checkpoint). A failed asynchronous ack is returned by the next
  `next_batch/2` (or `ack/2`).
  """
  @spec ack_async(t(), non_neg_integer()) :: :ok
  def ack_async(session, seq) when is_integer(seq) and seq >= 0 do
    GenServer.cast(session, {:ack, seq})
  end

  @doc """
  Waits until every acknowledgement requested with `ack_async/2` reached the
  server. Returns the error of a failed one.
  """
  @spec flush_acks(t()) :: :ok | {:error, Error.t()}
  def flush_acks(session), do: call(session, :flush_acks, 125_000)

  @doc "What the server said about the session when it was opened or resumed (see `t:info/0`)."
  @spec info(t()) :: info() | {:error, Error.t()}
  def info(session), do: call(session, :info, 10_000)

  @doc "The session's resume token."
  @spec resume_token(t()) :: String.t() | {:error, Error.t()}
  def resume_token(session) do
    case info(session) do
      %{resume_token: token} -> token
      error -> error
    end
  end

  @doc """
  The highest sequence number whose acknowledgement the server confirmed to
  this session process (by `ack/2`, `flush_acks/1` or an asynchronous
  request), or `nil` before the first.
  """
  @spec acked(t()) :: non_neg_integer() | nil | {:error, Error.t()}
  def acked(session), do: call(session, :acked, 10_000)

  @doc "How many times the session recovered from a dropped connection or a restart."
  @spec recoveries(t()) :: non_neg_integer() | {:error, Error.t()}
  def recoveries(session), do: call(session, :recoveries, 10_000)

  @doc "The session id on the server."
  @spec id(t()) :: String.t() | {:error, Error.t()}
  def id(session) do
    case info(session) do
      %{session_id: id} -> id
      error -> error
    end
  end

  @doc """
  Closes the session on the server and stops the process. Idempotent: closing
  a closed session returns `:ok`.
  """
  @spec close(t()) :: :ok
  def close(session) do
    GenServer.stop(session, :normal, 30_000)
  catch
    :exit, _ -> :ok
  end

  @doc false
  @spec check_pid(term()) :: {:ok, pid()} | {:error, String.t()}
  def check_pid(pid) when is_pid(pid), do: {:ok, pid}
  def check_pid(other), do: {:error, "expected a pid, got: #{inspect(other)}"}

  defp start(client, how, meta, opts) do
    opts = Keyword.put_new(opts, :owner, self())
    timeout = opts[:open_timeout]

    Telemetry.span([:hf_bridge, :session, :open], meta, fn ->
      case GenServer.start(__MODULE__, {client, how, opts}, timeout: call_timeout(timeout)) do
        {:ok, pid} ->
          case info(pid) do
            %{session_id: id, worker: worker} ->
              {{:ok, pid}, Map.merge(meta, %{session_id: id, worker: worker})}

            _closed ->
              {{:ok, pid}, meta}
          end

        {:error, %Error{} = error} ->
          {{:error, error}, Map.put(meta, :error, error)}

        {:error, reason} ->
          error =
            Error.new(:session, :open_failed, "cannot start the session: #{inspect(reason)}")

          {{:error, error}, Map.put(meta, :error, error)}
      end
    end)
  end

  defp call(session, request, timeout) do
    GenServer.call(session, request, timeout)
  catch
    :exit, {:timeout, _} ->
      {:error,
       Error.new(:session, :timeout, "the session did not answer in time", retryable: true)}

    :exit, _ ->
      {:error, Error.new(:session, :closed, "the session is closed")}
  end

  defp call_timeout(:infinity), do: :infinity
  defp call_timeout(timeout), do: timeout + 5_000

  # -- GenServer ---------------------------------------------------------------

  @impl true
  def init({client, how, opts}) do
    owner_ref = Process.monitor(opts[:owner])

    case open_on_server(client, how, opts[:open_timeout]) do
      {:ok, info} ->
        {:ok,
         %{
           client: client,
           info: info,
           owner_ref: owner_ref,
           read_ahead: opts[:read_ahead],
           call_batches: 1,
           stream: nil,
           ack_task: nil,
           pending_ack: nil,
           ack_error: nil,
           done: false,
           batches: 0,
           rows: 0,
           retry: retry_policy(opts[:retry]),
           delivered: info.next_seq - 1,
           server_seq: info.next_seq - 1,
           attempt: 0,
           recoveries: 0,
           own_conn: nil,
           keep_checkpoint: false,
           ack_task_seq: nil,
           ack_interval: opts[:ack_interval],
           ack_timer: nil,
           last_ack_at: nil,
           acked: nil
         }}

      {:error, error} ->
        {:stop, error}
    end
  end

  defp retry_policy(opts) do
    {:ok, policy} = HFBridge.Retry.new(opts || [])
    policy
  end

  defp open_on_server(client, {:open, request}, timeout),
    do: Client.call(client, :OpenSession, request, timeout: timeout)

  defp open_on_server(client, {:resume, token}, timeout),
    do: Client.call(client, :ResumeSession, %{resume_token: token}, timeout: timeout)

  @impl true
  def handle_call({:next_batch, _timeout}, _from, %{ack_error: %Error{} = error} = state),
    do: {:reply, {:error, error}, %{state | ack_error: nil}}

  def handle_call({:next_batch, _timeout}, _from, %{done: true} = state),
    do: {:reply, :done, state}

  def handle_call({:next_batch, timeout}, _from, state) do
    case fetch(state, timeout, 0) do
      {{:ok, batch}, state} -> {:reply, {:ok, batch}, state}
      # The end: what was acknowledged so far goes out now.
      {:done, state} -> {:reply, :done, maybe_ack(state)}
      {other, state} -> {:reply, other, state}
    end
  end

  def handle_call({:ack, seq}, _from, state) do
    # Acks reach the server in order: finish the asynchronous one first.
    state = await_ack_task(state)

    case state do
      %{ack_error: %Error{} = error} ->
        {:reply, {:error, error}, %{state | ack_error: nil}}

      %{server_seq: server_seq, delivered: delivered}
      when seq > server_seq and seq <= delivered ->
        # Delivered before a recovery and not sent again yet: held back (see "Recovery").
        {:reply, :ok, hold_ack(state, seq)}

      _ ->
        # A pending asynchronous request for a later batch stays pending.
        pending =
          if is_integer(state.pending_ack) and state.pending_ack > seq, do: state.pending_ack

        state = %{state | pending_ack: pending, last_ack_at: now()}
        state = if pending, do: state, else: cancel_ack_timer(state)
        sync_ack(state, seq)
    end
  end

  def handle_call(:flush_acks, _from, state) do
    state = await_ack_task(state)

    case state do
      %{ack_error: %Error{} = error} ->
        {:reply, {:error, error}, %{state | ack_error: nil, pending_ack: nil}}

      %{pending_ack: nil} ->
        {:reply, :ok, state}

      %{pending_ack: seq} ->
        state = cancel_ack_timer(%{state | pending_ack: nil, last_ack_at: now()})
        sync_ack(state, seq)
    end
  end

  def handle_call(:info, _from, state), do: {:reply, state.info, state}
  def handle_call(:recoveries, _from, state), do: {:reply, state.recoveries, state}
  def handle_call(:acked, _from, state), do: {:reply, state.acked, state}

  @impl true
  # Requests coalesce into `pending_ack`; `maybe_ack/1` sends it when the
  # rate limit and the server allow (after a recovery the server only
  # accepts acks for batches it sent again).
  def handle_cast({:ack, seq}, state), do: {:noreply, state |> hold_ack(seq) |> maybe_ack()}

  @impl true
  def handle_info({ref, result}, %{ack_task: %Task{ref: ref}} = state) do
    Process.demonitor(ref, [:flush])
    {:noreply, ack_done(state, result)}
  end

  def handle_info({:DOWN, ref, :process, _, reason}, %{ack_task: %Task{ref: ref}} = state) do
    error = Error.new(:session, :ack_failed, "acknowledging failed: #{inspect(reason)}")
    {:noreply, ack_done(state, {:error, error})}
  end

  # An owner that finished closes the session; one that died leaves its
  # checkpoint on the server, so the resume token continues where it acked.
  def handle_info({:DOWN, ref, :process, _, reason}, %{owner_ref: ref} = state),
    do: {:stop, :normal, %{state | keep_checkpoint: close_reason(reason) == :error}}

  def handle_info({:timeout, ref, :ack_due}, %{ack_timer: ref} = state),
    do: {:noreply, maybe_ack(%{state | ack_timer: nil})}

  def handle_info(_other, state), do: {:noreply, state}

  defp hold_ack(state, seq), do: %{state | pending_ack: max(seq, state.pending_ack || seq)}

  defp start_ack_task(state, seq) do
    client = state.client
    id = state.info.session_id

    %{
      cancel_ack_timer(state)
      | ack_task: Task.async(fn -> send_ack(client, id, seq) end),
        ack_task_seq: seq,
        pending_ack: nil,
        last_ack_at: now()
    }
  end

  defp now, do: System.monotonic_time(:millisecond)

  # A timer's message carries its reference, so a stale one is ignored.
  defp cancel_ack_timer(%{ack_timer: nil} = state), do: state

  defp cancel_ack_timer(%{ack_timer: ref} = state) do
    Process.cancel_timer(ref)
    %{state | ack_timer: nil}
  end

  defp ack_done(state, result) do
    {seq, state} = {state.ack_task_seq, %{state | ack_task: nil}}

    state =
      case result do
        :ok ->
          confirmed(state, seq)

        {:error, error} ->
          if soft_ack_error?(error) do
            # Lost to a restart: acks are cumulative, so send it again later.
            %{state | pending_ack: max(seq || 0, state.pending_ack || seq || 0)}
          else
            %{state | ack_error: error}
          end
      end

    maybe_ack(state)
  end

  defp soft_ack_error?(%Error{code: :not_found}), do: true
  defp soft_ack_error?(error), do: HFBridge.Retry.retryable?(error)

  # Sends the pending acknowledgement when no Ack call is in flight, the
  # server has (re)sent its batch and `ack_interval` has passed since the
  # last call (or the data is at its end); otherwise a timer brings it back.
  defp maybe_ack(%{ack_task: nil, pending_ack: seq, server_seq: server_seq} = state)
       when is_integer(seq) and seq <= server_seq do
    wait =
      if state.done or state.last_ack_at == nil,
        do: 0,
        else: state.last_ack_at + state.ack_interval - now()

    cond do
      wait <= 0 ->
        start_ack_task(state, seq)

      state.ack_timer != nil ->
        state

      true ->
        %{state | ack_timer: :erlang.start_timer(wait, self(), :ack_due)}
    end
  end

  defp maybe_ack(state), do: state

  defp await_ack_task(%{ack_task: nil} = state), do: state

  defp await_ack_task(%{ack_task: task} = state) do
    result =
      case Task.yield(task, 120_000) || Task.shutdown(task) do
        {:ok, result} ->
          result

        _ ->
          {:error,
           Error.new(:session, :timeout, "acknowledging did not finish in time", retryable: true)}
      end

    state = %{state | ack_task: nil}

    case result do
      :ok -> confirmed(state, state.ack_task_seq)
      {:error, error} -> %{state | ack_error: error}
    end
  end

  defp sync_ack(state, seq) do
    case send_ack(state.client, state.info.session_id, seq) do
      :ok -> {:reply, :ok, maybe_ack(confirmed(state, seq))}
      error -> {:reply, error, maybe_ack(state)}
    end
  end

  defp confirmed(state, seq) when is_integer(seq),
    do: %{state | acked: max(seq, state.acked || seq)}

  defp confirmed(state, _seq), do: state

  defp send_ack(client, id, seq, opts \\ []) do
    Telemetry.span([:hf_bridge, :ack], %{session_id: id, seq: seq}, fn ->
      case Client.call(client, :Ack, %{session_id: id, seq: seq}, opts) do
        {:ok, _} -> {:ok, %{session_id: id, seq: seq}}
        {:error, error} -> {{:error, error}, %{session_id: id, seq: seq, error: error}}
      end
    end)
  end

  @impl true
  def terminate(reason, state) do
    if state.stream, do: Client.cancel(state.stream)
    id = state.info.session_id
    flush_on_close(state)
    keep = state.keep_checkpoint or close_reason(reason) == :error

    _ =
      Client.call(state.client, :CloseSession, %{session_id: id, keep_checkpoint: keep},
        timeout: 10_000
      )

    Recovery.release_own_conn(state)

    Telemetry.execute(
      [:hf_bridge, :session, :close],
      %{batches: state.batches, rows: state.rows},
      %{session_id: id, reason: close_reason(reason)}
    )
  end

  # An Ack in flight may finish before CloseSession (which deletes the
  # checkpoint, so pending acknowledgements are not sent).
  defp flush_on_close(%{ack_task: nil}), do: :ok

  defp flush_on_close(%{ack_task: task}) do
    _ = Task.yield(task, @close_ack_timeout) || Task.shutdown(task, :brutal_kill)
    :ok
  end

  defp close_reason(:normal), do: :normal
  defp close_reason(:shutdown), do: :normal
  defp close_reason({:shutdown, _}), do: :normal
  defp close_reason(_), do: :error

  # Reads the next batch, opening a ReadBatches call (capped at `read_ahead`
  # batches, see ensure_stream/1) when none is open (see HFBridge.BatchCall).
  defp fetch(state, timeout, empty_calls) do
    case ensure_stream(state) do
      {:ok, state} -> receive_batch(state, timeout, empty_calls)
      {:error, error} -> recover(state, error, timeout)
    end
  end

  # The first call asks for one batch, so a consumer that takes a few rows
  # reads one batch; each further call doubles, up to `read_ahead`.
  defp ensure_stream(%{stream: nil} = state) do
    case BatchCall.open(state.client, state.info.session_id, state.call_batches) do
      {:ok, stream} ->
        {:ok,
         %{state | stream: stream, call_batches: min(state.call_batches * 2, state.read_ahead)}}

      {:error, error} ->
        {:error, error}
    end
  end

  defp ensure_stream(state), do: {:ok, state}

  defp receive_batch(state, timeout, empty_calls) do
    case BatchCall.next(state.stream, timeout, state.info.session_id) do
      :end_of_data ->
        {:done, %{state | stream: nil, done: true}}

      {:batch, %Batch{seq: seq}} when seq <= state.delivered ->
        # Sent again after a recovery: already delivered, drop it.
        state = maybe_ack(%{state | server_seq: max(state.server_seq, seq)})
        receive_batch(state, timeout, 0)

      {:batch, %Batch{seq: seq}} when seq > state.delivered + 1 ->
        {{:error, BatchCall.skipped(state.stream, state.delivered, seq)}, %{state | stream: nil}}

      {:batch, batch} ->
        # Once per VM: a hint when the VM is set up to receive large batches slowly.
        _ = HFBridge.Runtime.maybe_hint(byte_size(batch.ipc))
        state = %{state | delivered: batch.seq, attempt: 0}
        state = maybe_ack(%{state | server_seq: max(state.server_seq, batch.seq)})
        BatchCall.received(batch)
        state = %{state | batches: state.batches + 1, rows: state.rows + batch.num_rows}
        {{:ok, batch}, state}

      :call_ended when empty_calls < 1 ->
        fetch(%{state | stream: nil}, timeout, empty_calls + 1)

      :call_ended ->
        {{:error, BatchCall.ended_without_end_of_data()}, %{state | stream: nil}}

      # Nothing arrived in time: the call stays open and the next request
      # continues it, so no batch already on its way is lost.
      {:timeout, error} ->
        {{:error, error}, state}

      {:error, error} ->
        recover(%{state | stream: nil}, error, timeout)
    end
  end

  # -- recovery (see HFBridge.Recovery) -------------------------------------------

  defp recover(state, error, timeout) do
    case Recovery.backoff(state, error) do
      {:error, error} ->
        {{:error, error}, state}

      {:ok, state} ->
        # The recovered server re-sends from its last acknowledged batch.
        state = %{state | recoveries: state.recoveries + 1, server_seq: -1}

        with {:ok, state} <- Recovery.reconnect(state),
             {:ok, state} <- Recovery.resume(state) do
          fetch(state, timeout, 0)
        else
          {:error, next_error} -> recover(state, next_error, timeout)
        end
    end
  end
end
