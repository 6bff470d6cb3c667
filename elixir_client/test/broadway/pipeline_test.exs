if Code.ensure_loaded?(Broadway) do
  defmodule HFBridge.Broadway.TestPipeline do
    # A Broadway pipeline whose handler is given in the context.
    use Broadway

    @impl true
    def handle_message(_processor, message, %{handle: handle}), do: handle.(message)
  end
end

defmodule HFBridge.Broadway.PipelineTest do
  # Real Broadway pipelines over the real Python server. Runs only where
  # :broadway (and so :gen_stage and :telemetry) can be loaded.
  use HFBridge.ServerCase, async: false

  if Code.ensure_loaded?(Broadway) do
    setup_all %{data_dir: data_dir} do
      {:ok, _} = Application.ensure_all_started(:broadway)
      HFBridge.Telemetry.refresh()

      # four source files of 60 rows: ids 0..239
      shards = Path.join(data_dir, "shards")

      run_python!(
        """
        import sys, pyarrow as pa, pyarrow.parquet as pq
        for f in range(4):
            ids = list(range(f * 60, f * 60 + 60))
            table = pa.table({"id": pa.array(ids, pa.int64()), "text": [f"row {i}" for i in ids]})
            pq.write_table(table, f"{sys.argv[1]}/part-{f}.parquet")
        """,
        [File.mkdir_p!(shards) && shards]
      )

      single = simple_parquet!(Path.join(data_dir, "single.parquet"), 200)
      %{shards: Path.join(shards, "*.parquet"), single: single}
    end
  else
    IO.puts("skipping HFBridge.Broadway pipeline tests: :broadway is not available")
    @moduletag skip: ":broadway is not available"
  end

  alias HFBridge.Broadway.{Checkpoint, Producer}
  alias HFBridge.Broadway.TestPipeline
  alias HFBridge.Test.CuttingProxy, as: Proxy

  setup %{data_dir: data_dir} do
    %{tmp_dir: Path.join(data_dir, "checkpoints_#{System.unique_integer([:positive])}")}
  end

  # Broadway and :telemetry are called through apply/3 so that this file
  # compiles where they are absent.
  defp broadway(fun, args), do: apply(Broadway, fun, args)

  defp start_pipeline(name, producer_opts, handle, opts \\ []) do
    {:ok, pid} =
      broadway(:start_link, [
        TestPipeline,
        [
          name: name,
          context: %{handle: handle},
          producer: [
            module: {Producer, producer_opts},
            concurrency: Keyword.get(opts, :producers, 1)
          ],
          processors: [
            default: [
              concurrency: Keyword.get(opts, :processors, 1),
              max_demand: Keyword.get(opts, :max_demand, 10)
            ]
          ]
        ]
      ])

    pid
  end

  defp stop_pipeline(name) do
    if Process.whereis(name), do: broadway(:stop, [name])
  catch
    :exit, _ -> :ok
  end

  defp attach_acks(id) do
    test = self()

    :ok =
      apply(:telemetry, :attach, [
        id,
        [:hf_bridge, :ack, :stop],
        fn _, _, meta, _ -> send(test, {:committed, meta.seq, Map.get(meta, :error)}) end,
        nil
      ])

    on_exit(fn -> apply(:telemetry, :detach, [id]) end)
  end

  defp wait_until(what, fun, deadline \\ 60_000) do
    cond do
      fun.() -> :ok
      deadline <= 0 -> flunk("timed out waiting for #{what}")
      true -> Process.sleep(20) && wait_until(what, fun, deadline - 20)
    end
  end

  defp done?(dir, key), do: Checkpoint.load({Checkpoint.File, dir}, key) == {:ok, :done}

  defp committed_seqs(acc \\ []) do
    receive do
      {:committed, seq, _} -> committed_seqs([seq | acc])
    after
      0 -> acc
    end
  end

  defp collect(tag, acc \\ []) do
    receive do
      {^tag, item} -> collect(tag, [item | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  test "invalid producer options make Broadway.start_link/2 fail with the option named" do
    Process.flag(:trap_exit, true)

    assert {:error, {%HFBridge.Error{code: :invalid_option, message: message}, _}} =
             broadway(:start_link, [
               TestPipeline,
               [
                 name: :"hf_pipeline_bad_#{System.unique_integer([:positive])}",
                 context: %{handle: & &1},
                 producer: [module: {Producer, [dataset: "parquet", message: :lines]}],
                 processors: [default: []]
               ]
             ])

    assert message =~ "option :message"
  end

  test "two producers read disjoint shards; every row is handled exactly once", %{
    client: client,
    shards: shards,
    tmp_dir: dir
  } do
    test = self()
    name = :"hf_pipeline_all_#{System.unique_integer([:positive])}"

    handle = fn message ->
      %{"id" => id} = message.data
      send(test, {:row, {id, message.metadata}})
      # some messages fail; under on_failure: :commit they still count as handled
      if rem(id, 17) == 0, do: apply(Broadway.Message, :failed, [message, :odd]), else: message
    end

    start_pipeline(
      name,
      [
        dataset: "parquet",
        data_files: shards,
        batch_size: 16,
        client: client,
        checkpoint: dir,
        max_pending_batches: 2
      ],
      handle,
      producers: 2,
      processors: 3
    )

    on_exit(fn -> stop_pipeline(name) end)
    key = fn i -> "#{inspect(name) |> String.trim_leading(":")}.p#{i}of2" end
    wait_until("both producers to finish", fn -> done?(dir, key.(0)) and done?(dir, key.(1)) end)

    rows = collect(:row)
    ids = Enum.map(rows, &elem(&1, 0))
    assert Enum.sort(ids) == Enum.to_list(0..239)

    by_shard = Enum.group_by(rows, fn {_, meta} -> meta.shard end, &elem(&1, 0))
    assert Map.keys(by_shard) |> Enum.sort() == [{0, 2}, {1, 2}]
    assert MapSet.disjoint?(MapSet.new(by_shard[{0, 2}]), MapSet.new(by_shard[{1, 2}]))
    assert length(by_shard[{0, 2}]) == 120

    # metadata: row i of batch seq, every batch of a session numbered from 0
    for {_shard, shard_rows} <- Enum.group_by(rows, fn {_, m} -> m.session_id end) do
      seqs = shard_rows |> Enum.map(fn {_, m} -> m.seq end) |> Enum.uniq() |> Enum.sort()
      assert seqs == Enum.to_list(0..(length(seqs) - 1))
      assert Enum.all?(shard_rows, fn {_, m} -> m.row_index in 0..(m.num_rows - 1) end)
    end

    # finished producers closed their sessions on the server
    assert {:ok, :done} = Checkpoint.load({Checkpoint.File, dir}, key.(0))
  end

  test "cut connections: the producer recovers, every row is handled once, every batch committed",
       %{address: address, single: single, tmp_dir: dir} do
    test = self()
    name = :"hf_pipeline_cut_#{System.unique_integer([:positive])}"
    attach_acks("hf-pipeline-cut-acks")
    [_, upstream] = String.split(address, ":")
    {proxy, proxy_port} = Proxy.start(String.to_integer(upstream))
    {:ok, client} = HFBridge.Client.connect(address: "127.0.0.1:#{proxy_port}", local: false)

    on_exit(fn ->
      stop_pipeline(name)
      HFBridge.Client.disconnect(client)
      Process.exit(proxy, :kill)
    end)

    handle = fn message ->
      %{"id" => id} = message.data
      send(test, {:row, id})
      # Cut while batches are on their way and commits are being made.
      if id in [45, 121], do: send(test, {:cut, Proxy.cut(proxy)})
      message
    end

    key = "#{inspect(name) |> String.trim_leading(":")}.p0of1"

    log =
      ExUnit.CaptureLog.capture_log(fn ->
        start_pipeline(
          name,
          [
            dataset: "parquet",
            data_files: single,
            batch_size: 10,
            client: client,
            checkpoint: dir,
            read_ahead: 4,
            max_pending_batches: 3,
            retry: [base_delay: 10, max_delay: 100]
          ],
          handle
        )

        wait_until("the producer to finish", fn -> done?(dir, key) end)
      end)

    # A cut under a ReadBatches call made the session resume (a cut between
    # two calls needs nothing more than the next call's new connection).
    assert log =~ "resumed after batch"

    ids = collect(:row)
    assert Enum.sort(ids) == Enum.to_list(0..199), "rows lost or handled twice"
    assert [first_cut, second_cut] = collect(:cut)
    assert first_cut >= 1 and second_cut >= 1
    committed = committed_seqs()
    assert Enum.max(committed) == 19
  end

  test "a killed pipeline resumes after the last fully acknowledged batch", %{
    client: client,
    single: single,
    tmp_dir: dir
  } do
    Process.flag(:trap_exit, true)
    test = self()
    name = :"hf_pipeline_kill_#{System.unique_integer([:positive])}"
    attach_acks("hf-kill-#{name}")

    opts = [
      dataset: "parquet",
      data_files: single,
      batch_size: 10,
      client: client,
      checkpoint: dir,
      message: :batches,
      max_pending_batches: 2
    ]

    # run 1: batch 7 never completes
    blocking = fn message ->
      send(test, {:batch, {1, message.metadata.seq}})

      if message.metadata.seq >= 7 do
        send(test, {:blocked, self()})
        Process.sleep(:infinity)
      end

      message
    end

    pid = start_pipeline(name, opts, blocking, max_demand: 1)
    assert_receive {:blocked, processor}, 60_000
    # batches 0..6 were acknowledged one by one; wait for the commit of 6
    assert_receive {:committed, 6, nil}, 60_000

    [producer] = broadway(:producer_names, [name])
    ref = Process.monitor(pid)
    # a hard stop: no terminate/2 runs in the producer or the processor
    Process.exit(Process.whereis(producer), :kill)
    Process.exit(processor, :kill)
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^ref, :process, _, _}, 10_000
    prefix = Atom.to_string(name)

    wait_until("the old pipeline's processes to exit", fn ->
      not Enum.any?(Process.registered(), &String.starts_with?(Atom.to_string(&1), prefix))
    end)

    run1 = collect(:batch) |> Enum.map(&elem(&1, 1))
    assert Enum.uniq(run1) == Enum.to_list(0..7)

    # run 2, same name and checkpoint: starts at batch 7, reads to the end
    rows_handler = fn message ->
      send(test, {:batch, {2, message.metadata.seq, HFBridge.Batch.rows!(message.data)}})
      message
    end

    key = "#{inspect(name) |> String.trim_leading(":")}.p0of1"
    {:ok, {:token, token}} = Checkpoint.load({Checkpoint.File, dir}, key)
    start_pipeline(name, opts, rows_handler, max_demand: 1)
    on_exit(fn -> stop_pipeline(name) end)
    wait_until("the resumed pipeline to finish", fn -> done?(dir, key) end)

    run2 = collect(:batch)
    assert Enum.map(run2, &elem(&1, 1)) == Enum.to_list(7..19)
    ids = Enum.flat_map(run2, fn {_, _, rows} -> Enum.map(rows, & &1["id"]) end)
    assert ids == Enum.to_list(70..199)

    # the finished session was closed on the server
    assert {:error, %HFBridge.Error{code: :not_found}} =
             HFBridge.Client.call(client, :ResumeSession, %{resume_token: token})
  end

  test "a drained pipeline commits every complete batch; the next run continues after it", %{
    client: client,
    single: single,
    tmp_dir: dir
  } do
    test = self()
    name = :"hf_pipeline_drain_#{System.unique_integer([:positive])}"

    opts = [
      dataset: "parquet",
      data_files: single,
      batch_size: 10,
      client: client,
      checkpoint: dir
    ]

    handler = fn message ->
      send(test, {:row, message.data["id"]})

      if message.data["id"] == 45 do
        send(test, {:waiting, self()})
        receive do: (:go -> :ok)
      end

      message
    end

    start_pipeline(name, opts, handler, processors: 2)
    assert_receive {:waiting, processor}, 60_000

    [producer] = broadway(:producer_names, [name])
    stopper = Task.async(fn -> broadway(:stop, [name]) end)

    wait_until("the producer to drain", fn ->
      %{state: %{module_state: state}} = :sys.get_state(producer)
      state.demand.halted
    end)

    send(processor, :go)
    Task.await(stopper, 60_000)
    run1 = collect(:row)
    assert length(run1) == length(Enum.uniq(run1))
    refute Enum.sort(run1) == Enum.to_list(0..199)

    # the first batch not wholly handled in run 1; all before it were committed
    handled = MapSet.new(run1)

    first_open =
      Enum.find(0..19, fn seq -> not Enum.all?((seq * 10)..(seq * 10 + 9), &(&1 in handled)) end)

    assert is_integer(first_open)

    start_pipeline(name, opts, fn message -> send(test, {:row, message.data["id"]}) && message end)

    on_exit(fn -> stop_pipeline(name) end)
    key = "#{inspect(name) |> String.trim_leading(":")}.p0of1"
    wait_until("the second run to finish", fn -> done?(dir, key) end)

    run2 = collect(:row)
    assert Enum.sort(run2) == Enum.to_list((first_open * 10)..199)
  end

  test "on_failure: :stop holds the checkpoint before the first failed batch", %{
    client: client,
    single: single,
    tmp_dir: dir
  } do
    test = self()
    name = :"hf_pipeline_fail_#{System.unique_integer([:positive])}"
    attach_acks("hf-fail-#{name}")

    opts = [
      dataset: "parquet",
      data_files: single,
      batch_size: 10,
      client: client,
      checkpoint: dir,
      message: :batches,
      on_failure: :stop
    ]

    failing = fn message ->
      send(test, {:batch, message.metadata.seq})

      if message.metadata.seq == 3,
        do: apply(Broadway.Message, :failed, [message, :bad]),
        else: message
    end

    start_pipeline(name, opts, failing, max_demand: 1)
    assert_receive {:committed, 2, nil}, 60_000
    broadway(:stop, [name])
    run1 = collect(:batch)
    assert 3 in run1
    # nothing at or after batch 3 was committed
    assert Enum.all?(committed_seqs(), &(&1 < 3))

    start_pipeline(
      name,
      opts,
      fn message -> send(test, {:batch, message.metadata.seq}) && message end,
      max_demand: 1
    )

    on_exit(fn -> stop_pipeline(name) end)
    key = "#{inspect(name) |> String.trim_leading(":")}.p0of1"
    wait_until("the second run to finish", fn -> done?(dir, key) end)
    assert collect(:batch) == Enum.to_list(3..19)
  end
end
