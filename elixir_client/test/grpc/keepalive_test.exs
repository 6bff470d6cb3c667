defmodule HFBridge.GRPC.KeepaliveTest do
  # Keepalive PINGs against the real hf_bridge server: an idle connection is
  # PINGed and kept; a server that stops answering (SIGSTOP: the TCP
  # connection stays open, nothing comes back) is found dead, and the
  # client's next call after the server is back opens a new connection.
  use ExUnit.Case, async: true

  import HFBridge.ServerCase, only: [start_server!: 1]
  import HFBridge.TestHelpers

  alias HFBridge.{Client, Error, GRPC, LocalServer}
  alias HFBridge.GRPC.Connection

  @moduletag timeout: 120_000

  setup_all do
    start_server!(workers: 1)
  end

  defp host_port(address) do
    [host, port] = String.split(address, ":")
    {host, String.to_integer(port)}
  end

  defp signal(server, sig),
    do: {_, 0} = System.cmd("kill", ["-#{sig}", Integer.to_string(LocalServer.os_pid(server))])

  # A round trip that needs no data: the server answers NOT_FOUND.
  defp round_trip(client),
    do: Client.call(client, :CloseSession, %{session_id: "no-such-session"})

  test "an idle connection is PINGed, the server answers and keeps it", ctx do
    {host, port} = host_port(ctx.address)
    # The server takes one PING per second on an idle connection.
    {:ok, conn} = GRPC.connect(host, port, keepalive: 1_000, keepalive_timeout: 2_000)
    on_exit(fn -> GRPC.disconnect(conn) end)

    wait_until(fn -> Connection.stats(conn).keepalive_acks >= 3 end, 300)
    stats = Connection.stats(conn)
    assert (stats.keepalive_pings - stats.keepalive_acks) in 0..1
    assert Process.alive?(conn)
    assert {:ok, _} = GRPC.unary(conn, "/grpc.health.v1.Health/Check", "")
  end

  test "a busy connection sends no PINGs", ctx do
    {host, port} = host_port(ctx.address)
    {:ok, conn} = GRPC.connect(host, port, keepalive: 500)
    on_exit(fn -> GRPC.disconnect(conn) end)

    for _ <- 1..60 do
      assert {:ok, _} = GRPC.unary(conn, "/grpc.health.v1.Health/Check", "")
      Process.sleep(25)
    end

    assert Connection.stats(conn).keepalive_pings == 0
  end

  test "keepalive: :infinity sends no PINGs", ctx do
    {host, port} = host_port(ctx.address)
    {:ok, conn} = GRPC.connect(host, port, keepalive: :infinity)
    on_exit(fn -> GRPC.disconnect(conn) end)
    Process.sleep(400)
    assert Connection.stats(conn).keepalive_pings == 0
  end

  test "bad keepalive options are refused", ctx do
    {host, port} = host_port(ctx.address)

    for opts <- [[keepalive: 0], [keepalive: "1s"], [keepalive_timeout: :infinity]] do
      assert {:error, %Error{code: :invalid_argument, message: message}} =
               GRPC.connect(host, port, opts)

      assert message =~ "keepalive"
    end

    assert {:error, %Error{code: :invalid_option, message: message}} =
             Client.connect(address: ctx.address, local: false, keepalive: -5)

    assert message =~ ":keepalive"
  end

  test "a server that stops answering is found dead; the next call after it is back reconnects",
       ctx do
    {:ok, client} =
      Client.connect(address: ctx.address, local: false, keepalive: 200, keepalive_timeout: 300)

    on_exit(fn -> Client.disconnect(client) end)
    assert {:error, %Error{code: :not_found}} = round_trip(client)
    ref = Process.monitor(client.conn)

    signal(ctx.server, "STOP")
    on_exit(fn -> signal(ctx.server, "CONT") end)

    # A call made meanwhile would wait for its 60 s deadline on a silent
    # server; keepalive ends it within about keepalive + keepalive_timeout.
    call = Task.async(fn -> round_trip(client) end)

    assert {:error, %Error{code: :unavailable, retryable: true, message: message}} =
             Task.await(call, 5_000)

    assert message =~ "keepalive PING"
    assert_receive {:DOWN, ^ref, :process, _, _}, 1_000

    signal(ctx.server, "CONT")
    assert {:error, %Error{code: :not_found}} = round_trip(client)
    assert Client.connected?(client)
  end
end
