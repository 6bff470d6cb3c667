if Code.ensure_loaded?(Broadway) do
  defmodule HFBridge.Broadway.Producer do
    @moduledoc """
    A Broadway producer reading a dataset through an hf_bridge server.

        defmodule MyPipeline do
          use Broadway

          def start_link(_) do
            Broadway.start_link(__MODULE__,
              name: __MODULE__,
              producer: [
                module:
                  {HFBridge.Broadway.Producer,
                   dataset: "parquet",
                   data_files: "/data/reviews/*.parquet",
                   columns: ["id", "text"],
                   batch_size: 500,
                   address: "127.0.0.1:50051",
                   checkpoint: "/var/lib/my_app/hf_checkpoints"},
                concurrency: 2
              ],
              processors: [default: [concurrency: 4]]
            )
          end

          @impl true
          def handle_message(_processor, message, _context) do
            %{"id" => _id, "text" => _text} = message.data
            message
          end
        end

    ## Options

    #{HFBridge.Options.docs(HFBridge.Broadway.Options.schema())}

    Dataset options (`HFBridge.Spec`) and connection options
    (`HFBridge.Client`) go in the same list. See
    `HFBridge.Broadway.Options` for how they are combined.

    ## Messages

    With `message: :rows` (the default) each message's `data` is one row, a
    map with string keys; with `message: :batches` it is an
    `HFBridge.Batch` (decode it with `HFBridge.Batch.table!/1`, or
    `HFBridge.Batch.to_dataframe/1` with Explorer). `metadata` holds:

      * `:session_id` — the server session;
      * `:seq` — the record batch's sequence number in the session;
      * `:row_index` — the row's index within the batch (`nil` for
        `:batches` messages);
      * `:num_rows` — rows in the batch;
      * `:shard` — `{index, count}`, the shard the producer reads (`{0, 1}`
        for the whole dataset).

    ## Demand and prefetch

    A batch is fetched only when the demand exceeds the messages already
    buffered, and only while fewer than `:max_pending_batches` batches are
    open (fetched and not fully acknowledged). See `HFBridge.Broadway.Demand`.

    ## Acknowledgements and checkpoints

    When every message made from a batch has been acknowledged — successful
    or failed, in any order — the batch is complete. The producer commits
    (the `Ack` RPC) the highest batch such that it and every batch before it
    are complete, so commits go in order, one at a time. With
    `on_failure: :stop`, a batch holding a failed message is never
    committed, nor anything after it, and the producer fetches no more.
    See `HFBridge.Broadway.AckTracker`.

    With `:checkpoint`, each producer stores its session's resume token
    when it opens the session, and a producer that starts again — after a
    crash, a kill, a node restart or `Broadway.stop/1` — resumes that
    session: its first batch is the one after the last committed one.
    Rows of batches that were committed are never delivered again; rows of
    a batch that was open when the pipeline stopped are delivered again
    (batch-level at-least-once). Once a producer has committed its last
    batch it stores `:done`, closes the session, and a restarted pipeline
    emits nothing for that shard; delete the checkpoint to read again.

    Without `:checkpoint`, a producer always opens a new session and
    closes it when it stops.

    ## Recovery

    When the connection drops, or a worker or the server restarts, the
    producer's reader resumes the session (`:retry` bounds the attempts) and
    the server sends again from the last committed batch; batches emitted
    already are dropped, so no message is lost or emitted twice. A commit
    that fails meanwhile is tried again (with the same policy) once the
    resumed server has sent its batch again. Only when the policy is spent,
    or the failure is not one recovery helps with, does the producer stop.

    ## Concurrency

    With `concurrency: n` (`n > 1`), producer `i` reads shard `{i, n}`
    (the server splits the source shards, so the producers' rows are
    disjoint and together are the whole dataset).

    ## Draining

    `prepare_for_draining/1` stops fetching; messages already emitted are
    still acknowledged and committed before the producer stops.
    """

    # A GenStage producer by behaviour only: Broadway's producer stage calls
    # these callbacks, and no GenStage function is called at compile time.
    @behaviour GenStage
    @behaviour Broadway.Producer

    require Logger

    alias HFBridge.{Batch, Client, Error, Spec, Telemetry}
    alias HFBridge.Broadway.{AckTracker, Acknowledger, Checkpoint, Demand, Options, Reader}

    @impl Broadway.Producer
    def prepare_for_start(_module, broadway_opts) do
      # Validates early, so Broadway.start_link/2 fails with a clear error.
      with {_module, opts} when is_list(opts) <- broadway_opts[:producer][:module] do
        Options.validate!(
          Keyword.put(opts, :broadway,
            name: broadway_opts[:name],
            producer: broadway_opts[:producer],
            index: 0
          )
        )
      end

      {[], broadway_opts}
    end

    @impl GenStage
    def init(opts) do
      Process.flag(:trap_exit, true)

      with {:ok, config} <- Options.validate(opts),
           {:ok, client, own?} <- connect(config),
           {:ok, state} <- start_reading(config, client, own?) do
        {:producer, state}
      else
        {:error, error} -> {:stop, error}
      end
    end

    defp connect(%{client: %Client{} = client}), do: {:ok, client, false}

    defp connect(config) do
      case Client.connect(config.client_opts) do
        {:ok, client} -> {:ok, client, true}
        {:error, error} -> {:error, error}
      end
    end

    defp start_reading(config, client, own?) do
      key = Options.checkpoint_key(config)

      state = %{
        config: config,
        client: client,
        own_client?: own?,
        key: key,
        reader: nil,
        reader_ref: nil,
        session_id: nil,
        token: nil,
        ack_ref: make_ref(),
        tracker: AckTracker.new(),
        demand: Demand.new(config.max_pending_batches),
        server_seq: -1,
        commit_task: nil,
        commit_next: nil,
        commit_attempt: 0,
        commit_timer: nil,
        finished: false
      }

      stored =
        case config.checkpoint do
          nil -> {:ok, nil}
          store -> Checkpoint.load(store, key)
        end

      result =
        case stored do
          {:ok, :done} ->
            Logger.info("HFBridge.Broadway.Producer #{key}: already read to the end")
            {:ok, %{state | demand: Demand.exhausted(state.demand), finished: true}}

          {:ok, {:token, token}} ->
            open_reader(state, {:resume, token})

          {:ok, nil} ->
            with {:ok, request} <- Spec.open_request(config.dataset, config.spec_opts),
                 {:ok, state} <- open_reader(state, {:open, request}),
                 :ok <- save_token(state) do
              {:ok, state}
            end

          {:error, error} ->
            {:error, error}
        end

      with {:error, error} <- result do
        if own?, do: Client.disconnect(client)
        {:error, error}
      end
    end

    defp open_reader(state, how) do
      config = state.config

      opts = [
        read_ahead: config.read_ahead,
        batch_timeout: config.batch_timeout,
        open_timeout: config.open_timeout,
        keep: config.checkpoint != nil,
        retry: config.retry,
        dataset: config.dataset
      ]

      case Reader.start(state.client, how, opts) do
        {:ok, reader, info} ->
          {:ok,
           %{
             state
             | reader: reader,
               reader_ref: Process.monitor(reader),
               session_id: info.session_id,
               token: info.resume_token,
               server_seq: info.next_seq - 1
           }}

        {:error, error} ->
          {:error, error}
      end
    end

    defp save_token(%{config: %{checkpoint: nil}}), do: :ok

    defp save_token(state) do
      case Checkpoint.save(state.config.checkpoint, state.key, {:token, state.token}) do
        :ok ->
          :ok

        {:error, error} ->
          Reader.stop(state.reader, :close)
          {:error, error}
      end
    end

    @impl GenStage
    def handle_demand(demand, state) do
      dispatch(%{state | demand: Demand.add_demand(state.demand, demand)})
    end

    @impl Broadway.Producer
    def prepare_for_draining(state) do
      {:noreply, [], %{state | demand: Demand.halt(state.demand)}}
    end

    @impl GenStage
    def handle_info({:hf_bridge_reader, reader, result}, %{reader: reader} = state) do
      case result do
        {:ok, %Batch{} = batch} ->
          state = served(state, batch.seq)

          case messages(batch, state) do
            {:ok, messages} ->
              tracker = AckTracker.track(state.tracker, batch.seq, length(messages))
              demand = Demand.fetched(state.demand, messages)

              %{state | tracker: tracker, demand: demand}
              |> release()
              |> dispatch()

            {:error, error} ->
              {:stop, error, state}
          end

        :done ->
          dispatch(maybe_finish(%{state | demand: Demand.exhausted(state.demand)}))

        {:resent, seq} ->
          {:noreply, [], served(state, seq)}

        {:resumed, info} ->
          Logger.warning(
            "HFBridge.Broadway.Producer #{state.key}: session #{info.session_id} resumed after " <>
              "batch #{info.next_seq - 1}"
          )

          # Commits past the resumed server's position wait until it sends those batches again.
          {:noreply, [], %{state | session_id: info.session_id, server_seq: info.next_seq - 1}}

        {:error, %Error{layer: :grpc, code: :timeout}} ->
          dispatch(%{state | demand: Demand.fetch_failed(state.demand)})

        {:error, error} ->
          {:stop, error, state}
      end
    end

    def handle_info({:hf_bridge_ack, ref, counts}, %{ack_ref: ref} = state) do
      state
      |> apply_acks(counts)
      |> release()
      |> maybe_finish()
      |> dispatch()
    end

    def handle_info({ref, result}, %{commit_task: {%Task{ref: ref}, seq}} = state) do
      Process.demonitor(ref, [:flush])

      case result do
        :ok ->
          state = %{state | commit_task: nil, commit_attempt: 0}

          case state.commit_next do
            nil -> dispatch(maybe_finish(state))
            _next -> dispatch(commit_held(state))
          end

        {:error, error} ->
          state = %{state | commit_task: nil}

          if commit_retryable?(error) and
               HFBridge.Retry.allow?(state.config.retry, state.commit_attempt) do
            {:noreply, [], retry_commit(state, seq, error)}
          else
            Logger.error("HFBridge.Broadway.Producer #{state.key}: commit of batch #{seq} failed")
            {:stop, error, state}
          end
      end
    end

    def handle_info({:hf_bridge_commit_retry, ref}, %{commit_timer: ref} = state),
      do: dispatch(commit_held(%{state | commit_timer: nil}))

    def handle_info(
          {:DOWN, ref, :process, _, reason},
          %{commit_task: {%Task{ref: ref}, _}} = state
        ) do
      {:stop, {:commit_failed, reason}, %{state | commit_task: nil}}
    end

    def handle_info({:DOWN, ref, :process, _, reason}, %{reader_ref: ref} = state) do
      {:stop, {:reader_down, reason}, %{state | reader: nil}}
    end

    def handle_info(_other, state), do: {:noreply, [], state}

    @impl GenStage
    def handle_call(request, _from, state),
      do: {:reply, {:error, {:unknown_call, request}}, [], state}

    @impl GenStage
    def handle_cast(_request, state), do: {:noreply, [], state}

    @impl GenStage
    def terminate(_reason, state) do
      state = state |> flush_acks() |> release()
      state = await_commits(state)

      cond do
        state.reader == nil ->
          :ok

        Demand.finished?(state.demand) and AckTracker.empty?(state.tracker) ->
          finish(state)

        true ->
          Reader.stop(state.reader, if(state.config.checkpoint, do: :keep, else: :close))
      end

      if state.own_client?, do: Client.disconnect(state.client)
      :ok
    end

    # -- internals ---------------------------------------------------------------

    defp dispatch(state) do
      {events, demand} = Demand.take(state.demand)
      state = %{state | demand: demand}

      state =
        if state.reader && Demand.fetch?(demand, AckTracker.open_count(state.tracker)) do
          Reader.fetch(state.reader)
          %{state | demand: Demand.fetch_started(demand)}
        else
          state
        end

      {:noreply, events, state}
    end

    defp messages(%Batch{} = batch, %{config: %{message: :batches}} = state) do
      {:ok, [message(batch, batch, nil, state)]}
    end

    defp messages(%Batch{} = batch, state) do
      case Batch.rows(batch) do
        {:ok, rows} ->
          {:ok,
           rows
           |> Enum.with_index()
           |> Enum.map(fn {row, index} -> message(row, batch, index, state) end)}

        {:error, error} ->
          {:error, error}
      end
    end

    defp message(data, batch, row_index, state) do
      %Broadway.Message{
        data: data,
        metadata: %{
          session_id: batch.session_id,
          seq: batch.seq,
          row_index: row_index,
          num_rows: batch.num_rows,
          shard: state.config.spec_opts[:shard] || {0, 1}
        },
        acknowledger: {Acknowledger, {self(), state.ack_ref}, %{seq: batch.seq}}
      }
    end

    defp apply_acks(state, counts) do
      tracker =
        Enum.reduce(counts, state.tracker, fn {seq, ok, failed}, tracker ->
          AckTracker.ack(tracker, seq, ok, failed)
        end)

      %{state | tracker: tracker}
    end

    defp release(state) do
      was_blocked = AckTracker.blocked(state.tracker)
      {seq, tracker} = AckTracker.release(state.tracker, state.config.on_failure)
      state = commit(%{state | tracker: tracker}, seq)

      case AckTracker.blocked(tracker) do
        nil ->
          state

        ^was_blocked ->
          state

        blocked ->
          Logger.error(
            "HFBridge.Broadway.Producer #{state.key}: batch #{blocked} has failed messages; " <>
              "on_failure: :stop, so nothing from it on is committed and fetching stopped"
          )

          %{state | demand: Demand.halt(state.demand)}
      end
    end

    defp commit(state, nil), do: state

    # One commit in flight; none while a failed one waits for its retry, and
    # none past the batches the (resumed) server has sent: it would refuse it.
    defp commit(%{commit_task: nil, commit_timer: nil, server_seq: served} = state, seq)
         when seq <= served do
      %{client: client, session_id: id} = state
      task = Task.async(fn -> send_ack(client, id, seq) end)
      %{state | commit_task: {task, seq}}
    end

    defp commit(state, seq), do: %{state | commit_next: max(seq, state.commit_next || seq)}

    defp commit_held(%{commit_next: nil} = state), do: state
    defp commit_held(%{commit_next: seq} = state), do: commit(%{state | commit_next: nil}, seq)

    # The server has sent batch `seq` (again, after a resume): commits up to it may go.
    defp served(state, seq) do
      if seq > state.server_seq,
        do: commit_held(%{state | server_seq: seq}),
        else: state
    end

    # A dropped connection, a restarted server or a resumed session that has not
    # sent the batch again yet (an Ack that raced the resume): the reader is
    # recovering, so the commit is tried again after the policy's delay.
    defp commit_retryable?(%Error{code: :invalid_argument, message: message}),
      do: String.contains?(message, "cannot ack batch")

    defp commit_retryable?(error), do: HFBridge.Recovery.recoverable?(error)

    defp retry_commit(state, seq, error) do
      attempt = state.commit_attempt + 1
      delay = HFBridge.Retry.delay(state.config.retry, attempt)

      Logger.warning(
        "HFBridge.Broadway.Producer #{state.key}: commit of batch #{seq} failed " <>
          "(#{Exception.message(error)}); retrying in #{delay} ms"
      )

      ref = make_ref()
      Process.send_after(self(), {:hf_bridge_commit_retry, ref}, delay)

      %{
        state
        | commit_attempt: attempt,
          commit_timer: ref,
          commit_next: max(seq, state.commit_next || seq)
      }
    end

    defp send_ack(client, id, seq) do
      Telemetry.span([:hf_bridge, :ack], %{session_id: id, seq: seq}, fn ->
        case Client.call(client, :Ack, %{session_id: id, seq: seq}) do
          {:ok, _} -> {:ok, %{session_id: id, seq: seq}}
          {:error, error} -> {{:error, error}, %{session_id: id, seq: seq, error: error}}
        end
      end)
    end

    defp maybe_finish(state) do
      if not state.finished and state.reader != nil and Demand.finished?(state.demand) and
           AckTracker.empty?(state.tracker) and state.commit_task == nil and
           state.commit_next == nil do
        finish(state)
      else
        state
      end
    end

    # Every batch was committed: remember it, then close the session.
    defp finish(state) do
      result =
        case state.config.checkpoint do
          nil -> :ok
          store -> Checkpoint.save(store, state.key, :done)
        end

      case result do
        :ok ->
          Process.demonitor(state.reader_ref, [:flush])
          Reader.stop(state.reader, :close)
          %{state | reader: nil, reader_ref: nil, finished: true}

        {:error, error} ->
          Logger.error("HFBridge.Broadway.Producer #{state.key}: #{Exception.message(error)}")
          Reader.stop(state.reader, :keep)
          %{state | reader: nil, reader_ref: nil}
      end
    end

    # Acknowledgements sent by processors and batchers that stopped before
    # this producer are still in the mailbox.
    defp flush_acks(%{ack_ref: ref} = state) do
      receive do
        {:hf_bridge_ack, ^ref, counts} -> state |> apply_acks(counts) |> flush_acks()
      after
        0 -> state
      end
    end

    defp await_commits(%{commit_task: nil, commit_next: nil} = state), do: state

    defp await_commits(%{commit_task: nil, commit_next: seq} = state) do
      # Stopping: a commit waiting for its retry (or for the server to send its
      # batch again) is tried once more now.
      state = %{
        state
        | commit_next: nil,
          commit_timer: nil,
          server_seq: max(state.server_seq, seq)
      }

      await_commits(commit(state, seq))
    end

    defp await_commits(%{commit_task: {task, seq}} = state) do
      case Task.yield(task, 30_000) || Task.shutdown(task) do
        {:ok, :ok} ->
          await_commits(%{state | commit_task: nil})

        other ->
          Logger.error(
            "HFBridge.Broadway.Producer #{state.key}: commit of batch #{seq} failed: #{inspect(other)}"
          )

          %{state | commit_task: nil, commit_next: nil}
      end
    end
  end
end
