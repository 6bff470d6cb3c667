defmodule HFBridge.Faults.RecoveryTest do
  # "Nothing lost" with real processes: a long HFBridge.rows/2 read survives
  # kill -9 of the owning worker (5 times), kill -9 of the whole server
  # (restarted on the same port and state directory) and cut TCP
  # connections; the rows equal what `datasets` yields in-process.
  use ExUnit.Case, async: false

  import HFBridge.TestHelpers

  alias HFBridge.{Client, LocalServer, Session}
  alias HFBridge.ServerCase
  alias HFBridge.Test.CuttingProxy, as: Proxy

  @moduletag timeout: 240_000
  @rows 12_000
  @batch 100

  setup_all do
    dir = Path.join(System.tmp_dir!(), "hf_bridge_faults_#{System.unique_integer([:positive])}")

    data_dir = Path.join(dir, "data")
    File.mkdir_p!(data_dir)
    path = ServerCase.simple_parquet!(Path.join(data_dir, "rows.parquet"), @rows)
    truth = truth!(path)
    on_exit(fn -> File.rm_rf!(dir) end)
    %{dir: dir, data_dir: data_dir, path: path, truth: truth}
  end

  # What `datasets` yields in-process: row count and checksums of ids and texts.
  defp truth!(path) do
    code = ~S"""
    import hashlib, sys
    from datasets import load_dataset
    ds = load_dataset("parquet", data_files=sys.argv[1], split="train", streaming=True)
    ids, texts = [], []
    for t in ds.with_format("arrow").iter(batch_size=1000):
        ids += t.column("id").to_pylist()
        texts += t.column("text").to_pylist()
    print(len(ids))
    print(hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest())
    print(hashlib.sha256("\n".join(texts).encode()).hexdigest())
    """

    [n, ids, texts] = code |> ServerCase.run_python!([path]) |> String.split()
    %{count: String.to_integer(n), ids: ids, texts: texts}
  end

  defp checksums(rows) do
    ids = Enum.map(rows, & &1["id"])
    texts = Enum.map(rows, & &1["text"])

    %{
      count: length(rows),
      ids: sha256(Enum.map_join(ids, ",", &Integer.to_string/1)),
      texts: sha256(Enum.join(texts, "\n"))
    }
  end

  defp sha256(data), do: :crypto.hash(:sha256, data) |> Base.encode16(case: :lower)

  defp start_server!(ctx, port, metrics_port) do
    {:ok, server, address} =
      LocalServer.start(
        python: ServerCase.python(),
        port: port,
        workers: 2,
        data_roots: [ctx.data_dir],
        state_dir: Path.join(ctx.dir, "state"),
        export_root: ctx.dir,
        owner: ctx.owner,
        # These tests restart servers themselves, as an outside supervisor would.
        restart: false,
        extra_args: ["--metrics-port", Integer.to_string(metrics_port)],
        env: [{"HF_HUB_OFFLINE", "1"}, {"HF_DATASETS_DISABLE_PROGRESS_BARS", "1"}]
      )

    {server, address}
  end

  defp metrics(port) do
    url = ~c"http://127.0.0.1:#{port}/metrics"
    {:ok, {{_, 200, _}, _, body}} = :httpc.request(:get, {url, []}, [timeout: 5_000], [])
    to_string(body)
  end

  defp metric(text, name) do
    case Regex.run(~r/^#{name} (\d+)$/m, text) do
      [_, v] -> String.to_integer(v)
      nil -> nil
    end
  end

  # The OS pid of the worker that holds a session right now (waits while the
  # session is being re-homed).
  defp owning_worker_pid(metrics_port, deadline \\ 20) do
    owners =
      Regex.scan(
        ~r/^hf_bridge_worker_sessions\{worker="\w+",pid="(\d+)"\} (\d+)$/m,
        metrics(metrics_port)
      )
      |> Enum.filter(fn [_, _pid, n] -> String.to_integer(n) > 0 end)

    case owners do
      [[_, pid, _]] ->
        pid

      _ when deadline > 0 ->
        Process.sleep(250)
        owning_worker_pid(metrics_port, deadline - 1)
    end
  end

  defp kill9(pid), do: {_, 0} = System.cmd("kill", ["-9", to_string(pid)])

  test "worker kill -9 (5 times) and a server kill -9 with restart lose and repeat nothing",
       ctx do
    test_pid = self()
    ctx = Map.put(ctx, :owner, test_pid)
    port = free_port()
    metrics_port = free_port()
    {server, address} = start_server!(ctx, port, metrics_port)
    {:ok, client} = Client.connect(address: address, local: false)
    # Outlives the test process, so that on_exit can stop every server.
    {:ok, servers} = Agent.start(fn -> [current: server] end)

    on_exit(fn ->
      Client.disconnect(client)
      Enum.each(Agent.get(servers, & &1), fn {_, pid} -> LocalServer.stop(pid) end)
      Agent.stop(servers)
    end)

    worker_kills = MapSet.new([8, 25, 42, 59, 76])
    server_kill = 95

    rows =
      HFBridge.stream("parquet",
        client: client,
        data_files: ctx.path,
        batch_size: @batch,
        retry: [max_attempts: 60, base_delay: 50, max_delay: 1_000],
        batch_timeout: 90_000,
        on_open: fn info -> send(test_pid, {:session, info.session}) end
      )
      |> Stream.with_index()
      |> Stream.each(fn {_batch, i} ->
        cond do
          MapSet.member?(worker_kills, i) ->
            kill9(owning_worker_pid(metrics_port))

          i == server_kill ->
            assert metric(metrics(metrics_port), "hf_bridge_worker_restarts_total") == 5
            kill9(LocalServer.os_pid(server))

            # Restart on the same port and state directory while the stream retries.
            spawn(fn ->
              Process.sleep(300)
              {new_server, _} = start_server!(ctx, port, metrics_port)
              Agent.update(servers, &[{:restarted, new_server} | &1])
            end)

          true ->
            :ok
        end
      end)
      |> Stream.flat_map(fn {batch, _i} -> HFBridge.Batch.rows!(batch) end)
      |> Enum.to_list()

    assert_receive {:session, session}
    assert checksums(rows) == ctx.truth
    assert Enum.map(rows, & &1["id"]) == Enum.to_list(0..(@rows - 1))
    # the session is closed once the stream ends; the recoveries show in the log
    refute Process.alive?(session)
    assert Keyword.has_key?(Agent.get(servers, & &1), :restarted)
  end

  # A server behind a Proxy, and a client connected through it; all stopped on exit.
  defp proxied_client!(ctx) do
    {server, address} = start_server!(Map.put(ctx, :owner, self()), 0, free_port())
    [_, upstream] = String.split(address, ":")
    {proxy, proxy_port} = Proxy.start(String.to_integer(upstream))
    {:ok, client} = Client.connect(address: "127.0.0.1:#{proxy_port}", local: false)

    on_exit(fn ->
      Client.disconnect(client)
      Process.exit(proxy, :kill)
      LocalServer.stop(server)
    end)

    {client, proxy}
  end

  test "cut TCP connections mid-stream: the client reconnects and resumes, nothing lost", ctx do
    {client, proxy} = proxied_client!(ctx)

    {:ok, session} =
      HFBridge.open(client, "parquet", data_files: ctx.path, batch_size: @batch, read_ahead: 3)

    batches =
      Stream.repeatedly(fn -> Session.next_batch(session, 60_000) end)
      |> Stream.with_index()
      |> Enum.reduce_while([], fn
        {{:ok, batch}, i}, acc ->
          # (a batch already buffered before a cut arrives without a new connection)
          if i in [5, 30, 50, 70], do: send(self(), {:cut, Proxy.cut(proxy)})
          if rem(i, 2) == 0, do: Session.ack_async(session, batch.seq)
          {:cont, [batch | acc]}

        {:done, _}, acc ->
          {:halt, Enum.reverse(acc)}

        {{:error, error}, _}, _acc ->
          flunk("the session failed: #{Exception.message(error)}")
      end)

    assert Enum.map(batches, & &1.seq) == Enum.to_list(0..(length(batches) - 1))
    rows = Enum.flat_map(batches, &HFBridge.Batch.rows!/1)
    assert checksums(rows) == ctx.truth
    cuts = for _ <- 1..4, do: receive(do: ({:cut, n} -> n))
    assert Enum.all?(cuts, &(&1 >= 1)), "connections cut: #{inspect(cuts)}"
    # A cut under a ReadBatches call makes the session recover; a cut between
    # two calls needs nothing more than the next call's new connection.
    assert Session.recoveries(session) in 1..4
    :ok = Session.close(session)
  end

  test "sessions recovering from a cut share the client's next connection", ctx do
    {client, proxy} = proxied_client!(ctx)

    sessions =
      for _ <- 1..3 do
        {:ok, session} =
          HFBridge.open(client, "parquet", data_files: ctx.path, batch_size: @batch, read_ahead: 2)

        session
      end

    read = fn n ->
      for session <- sessions, _ <- 1..n do
        assert {:ok, _batch} = Session.next_batch(session, 60_000)
      end
    end

    read.(3)
    assert Proxy.cut(proxy) == 1
    # Every session reads on past what it had buffered: one whose call the
    # cut broke recovers, one that was between calls just makes its next
    # call (which of the two depends on timing; at least one was mid-call)...
    read.(12)
    assert Enum.any?(sessions, &(Session.recoveries(&1) >= 1))
    # ...and all over one connection: the client's, opened again once.
    assert Proxy.cut(proxy) == 1
    Enum.each(sessions, &Session.close/1)
  end

  test "a client outlives its connection: after a cut or a server restart, its next call reconnects",
       ctx do
    ctx = Map.put(ctx, :owner, self())
    port = free_port()
    {server, _address} = start_server!(ctx, port, free_port())
    {:ok, servers} = Agent.start(fn -> [server] end)
    {proxy, proxy_port} = Proxy.start(port)
    {:ok, client} = Client.connect(address: "127.0.0.1:#{proxy_port}", local: false)

    on_exit(fn ->
      Client.disconnect(client)
      Process.exit(proxy, :kill)
      Enum.each(Agent.get(servers, & &1), &LocalServer.stop/1)
      Agent.stop(servers)
    end)

    spec = [data_files: ctx.path]
    assert {:ok, %HFBridge.Info{}} = HFBridge.info(client, "parquet", spec)

    # The TCP connection drops: the client notices, and its next call opens another.
    assert Proxy.cut(proxy) >= 1
    wait_until(fn -> not Client.connected?(client) end)
    assert {:ok, %HFBridge.Info{}} = HFBridge.info(client, "parquet", spec)
    assert Client.connected?(client)

    # The server restarts on the same port: streams opened afterwards work.
    LocalServer.stop(server)
    wait_until(fn -> not Client.connected?(client) end)
    {restarted, _} = start_server!(ctx, port, free_port())
    Agent.update(servers, &[restarted | &1])

    rows =
      HFBridge.rows("parquet", [client: client, batch_size: @batch, take: 250] ++ spec)
      |> Enum.map(& &1["id"])

    assert rows == Enum.to_list(0..249)

    # A disconnected client stays disconnected, with an error that says so.
    :ok = Client.disconnect(client)

    assert {:error, %HFBridge.Error{code: :closed} = error} =
             HFBridge.info(client, "parquet", spec)

    assert error.message =~ "disconnected"
    refute Client.connected?(client)
  end

  test "a call on a connection that is gone says so plainly", ctx do
    ctx = Map.put(ctx, :owner, self())
    {server, address} = start_server!(ctx, 0, free_port())
    on_exit(fn -> LocalServer.stop(server) end)

    {:ok, conn} =
      HFBridge.GRPC.connect(
        "127.0.0.1",
        address |> String.split(":") |> List.last() |> String.to_integer()
      )

    :ok = HFBridge.GRPC.disconnect(conn)

    assert {:error, %HFBridge.Error{code: :unavailable, retryable: true} = error} =
             HFBridge.GRPC.unary(conn, "/hf_bridge.v1.HFBridge/GetInfo", <<>>)

    assert error.message =~ "the connection is gone"
    refute error.message =~ "GenServer"
  end

  test "recovery is bounded: with the server gone for good the stream fails with a retryable cause",
       ctx do
    ctx = Map.put(ctx, :owner, self())
    {server, address} = start_server!(ctx, 0, free_port())
    {:ok, client} = Client.connect(address: address, local: false)
    on_exit(fn -> Client.disconnect(client) end)

    {:ok, session} =
      HFBridge.open(client, "parquet",
        data_files: ctx.path,
        batch_size: @batch,
        retry: [max_attempts: 3, base_delay: 10, max_delay: 50]
      )

    assert {:ok, %{seq: 0}} = Session.next_batch(session)
    LocalServer.stop(server)
    assert {:error, %HFBridge.Error{} = error} = drain(session)
    assert error.message =~ "gave up after 3 recovery attempts"
    assert Session.recoveries(session) == 3
    Session.close(session)
  end

  defp drain(session) do
    case Session.next_batch(session, 30_000) do
      {:ok, _} -> drain(session)
      other -> other
    end
  end
end
