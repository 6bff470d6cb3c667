defmodule HFBridge.GRPC.FaultTest do
  # Faults and protocol corners, against a scripted HTTP/2 peer on a
  # loopback :gen_tcp listener and against a real server that is killed.
  use ExUnit.Case, async: false

  import HFBridge.TestHelpers

  alias HFBridge.GRPC
  alias HFBridge.GRPC.Connection
  alias HFBridge.HPACK
  alias HFBridge.HTTP2.Frame
  alias HFBridge.Test.{InteropMessages, InteropServer}

  @moduletag timeout: 120_000

  defmodule Peer do
    @moduledoc false
    # A scripted HTTP/2 server: accepts one connection and runs `script`.

    alias HFBridge.HPACK
    alias HFBridge.HTTP2.Frame

    defstruct [:sock, :test, buf: "", enc: nil]

    def start(script) do
      {:ok, listen} =
        :gen_tcp.listen(0, [:binary, active: false, ip: {127, 0, 0, 1}, reuseaddr: true])

      {:ok, port} = :inet.port(listen)
      test = self()

      pid =
        spawn(fn ->
          {:ok, sock} = :gen_tcp.accept(listen, 10_000)
          peer = %__MODULE__{sock: sock, test: test, enc: HPACK.new()}
          script.(peer)

          receive do
            :stop -> :ok
          after
            60_000 -> :ok
          end

          :gen_tcp.close(sock)
          :gen_tcp.close(listen)
        end)

      {port, pid}
    end

    def handshake(peer, settings \\ []) do
      {:ok, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"} = :gen_tcp.recv(peer.sock, 24, 5_000)
      out(peer, Frame.settings(settings))
      peer
    end

    def out(peer, iodata), do: :ok = :gen_tcp.send(peer.sock, iodata)

    def next_frame(peer) do
      case Frame.decode(peer.buf, 16_384) do
        {:ok, frame, rest} ->
          {frame, %{peer | buf: rest}}

        :more ->
          case :gen_tcp.recv(peer.sock, 0, 10_000) do
            {:ok, data} -> next_frame(%{peer | buf: peer.buf <> data})
            {:error, reason} -> {{:closed, reason}, peer}
          end
      end
    end

    # Reads frames until `fun` accepts one.
    def await(peer, fun) do
      {frame, peer} = next_frame(peer)

      cond do
        match?({:closed, _}, frame) -> {frame, peer}
        fun.(frame) -> {frame, peer}
        true -> await(peer, fun)
      end
    end

    def await_request(peer), do: await(peer, &match?({:headers, _, _, _, _}, &1))

    def headers(peer, sid, headers, end_stream?, max_frame \\ 16_384) do
      {block, enc} = HPACK.encode(headers, peer.enc)
      out(peer, Frame.headers(sid, block, end_stream?, max_frame))
      %{peer | enc: enc}
    end

    # Handshake, take the first request and answer with gRPC response headers.
    def answer_grpc_call(peer) do
      peer = handshake(peer)
      {{:headers, sid, _, _, _}, peer} = await_request(peer)
      {sid, headers(peer, sid, [{":status", "200"}, {"content-type", "application/grpc"}], false)}
    end

    def respond(peer, sid, message, status \\ "0") do
      peer = headers(peer, sid, [{":status", "200"}, {"content-type", "application/grpc"}], false)
      out(peer, Frame.data(sid, [<<0, byte_size(message)::32>>, message], false))
      headers(peer, sid, [{"grpc-status", status}], true)
    end
  end

  defp connect(port, opts \\ []), do: GRPC.connect("127.0.0.1", port, opts)

  defp assert_gone(conn) do
    ref = Process.monitor(conn)
    assert_receive {:DOWN, ^ref, :process, ^conn, reason}, 5_000
    assert reason in [:normal, :noproc]
  end

  defp refute_stray_messages do
    Process.sleep(50)
    {:messages, messages} = Process.info(self(), :messages)
    assert Enum.filter(messages, &match?({:hf_bridge_grpc, _, _}, &1)) == []
  end

  test "GOAWAY: streams up to last-stream-id finish, later ones fail retryably" do
    {port, _peer} =
      Peer.start(fn peer ->
        peer = Peer.handshake(peer)
        {{:headers, s1, _, _, _}, peer} = Peer.await_request(peer)
        {{:headers, s2, _, _, _}, peer} = Peer.await_request(peer)
        Peer.out(peer, Frame.goaway(min(s1, s2), :no_error, "maintenance"))
        Peer.respond(peer, min(s1, s2), "hello")
      end)

    {:ok, conn} = connect(port)
    tasks = for _ <- 1..2, do: Task.async(fn -> GRPC.unary(conn, "/s/M", "x") end)
    results = Task.await_many(tasks, 10_000)

    assert {:ok, "hello"} in results

    assert Enum.any?(
             results,
             &match?({:error, %HFBridge.Error{code: :unavailable, retryable: true}}, &1)
           ),
           inspect(results)

    # no new calls on a connection that is going away; it ends by itself
    assert {:error, %HFBridge.Error{code: :unavailable, retryable: true}} =
             GRPC.unary(conn, "/s/M", "x")

    assert_gone(conn)
    refute_stray_messages()
  end

  test "garbage instead of a server preface fails the connect" do
    {port, _} = Peer.start(fn peer -> Peer.out(peer, "HTTP/1.1 400 Bad Request\r\n\r\n") end)
    assert {:error, %HFBridge.Error{}} = connect(port)
  end

  test "garbage mid-stream fails the call; the process ends cleanly" do
    {port, _} =
      Peer.start(fn peer ->
        {_sid, peer} = Peer.answer_grpc_call(peer)

        # A frame header announcing 16 MiB (above the announced
        # SETTINGS_MAX_FRAME_SIZE), then noise.
        Peer.out(peer, <<255, 255, 255, 9, 9, 9, 9, 9, 9>> <> :crypto.strong_rand_bytes(64))
      end)

    {:ok, conn} = connect(port)
    mon = Process.monitor(conn)
    {:ok, stream} = GRPC.server_stream(conn, "/s/M", "x")
    assert {:error, %HFBridge.Error{}} = GRPC.recv(stream, 5_000)
    assert_receive {:DOWN, ^mon, :process, ^conn, :normal}, 5_000
    refute_stray_messages()
  end

  test "the server closing the socket mid-stream fails in-flight calls with :unavailable" do
    {port, _} =
      Peer.start(fn peer ->
        {sid, peer} = Peer.answer_grpc_call(peer)

        Peer.out(peer, Frame.data(sid, [<<0, 3::32>>, "abc", <<0, 100::32>>, "partial"], false))
        Process.sleep(100)
        :gen_tcp.close(peer.sock)
      end)

    {:ok, conn} = connect(port)
    {:ok, stream} = GRPC.server_stream(conn, "/s/M", "x")
    assert {:ok, "abc"} = GRPC.recv(stream, 5_000)

    assert {:error, %HFBridge.Error{code: :unavailable, retryable: true}} =
             GRPC.recv(stream, 5_000)

    assert_gone(conn)
    refute_stray_messages()
  end

  test "a killed real server fails the stream with a retryable error" do
    {:ok, server} = InteropServer.start(:python)

    try do
      {:ok, conn} = connect(server.port)
      req = InteropMessages.streaming_request(List.duplicate({1_000, 100_000}, 200))

      {:ok, stream} =
        GRPC.server_stream(conn, "/grpc.testing.TestService/StreamingOutputCall", req)

      assert {:ok, _} = GRPC.recv(stream, 10_000)
      InteropServer.kill(server)

      result =
        Enum.reduce_while(1..300, nil, fn _, _ ->
          case GRPC.recv(stream, 10_000) do
            {:ok, _} -> {:cont, nil}
            other -> {:halt, other}
          end
        end)

      assert {:error, %HFBridge.Error{code: :unavailable, retryable: true}} = result
      assert_gone(conn)
      assert {:error, %HFBridge.Error{code: :unavailable}} = GRPC.unary(conn, "/x/Y", "")
    after
      InteropServer.stop(server)
    end
  end

  test "local deadline: DEADLINE_EXCEEDED and RST_STREAM CANCEL to the server" do
    test = self()

    {port, _} =
      Peer.start(fn peer ->
        peer = Peer.handshake(peer)
        {{:headers, sid, block, _, _}, peer} = Peer.await_request(peer)
        {:ok, headers, _} = HPACK.decode(block, HPACK.new())
        send(test, {:request_headers, headers})
        {frame, _peer} = Peer.await(peer, &match?({:rst_stream, ^sid, _}, &1))
        send(test, {:peer_saw, frame})
      end)

    {:ok, conn} = connect(port)

    assert {:error, %HFBridge.Error{code: :deadline_exceeded, layer: :grpc}} =
             GRPC.unary(conn, "/s/M", "x", timeout: 200, metadata: [{"authorization", "Bearer t"}])

    assert_receive {:request_headers, headers}, 5_000
    assert {"grpc-timeout", "200m"} in headers
    assert {"te", "trailers"} in headers
    assert {"authorization", "Bearer t"} in headers
    assert {":path", "/s/M"} in headers
    assert_receive {:peer_saw, {:rst_stream, _, :cancel}}, 5_000
    assert %{calls: 0} = Connection.stats(conn)
    GRPC.disconnect(conn)
  end

  test "cancel/1 and a dying caller both send RST_STREAM CANCEL" do
    test = self()

    {port, _} =
      Peer.start(fn peer ->
        peer = Peer.handshake(peer)

        Enum.reduce(1..2, peer, fn _, peer ->
          {{:headers, sid, _, _, _}, peer} = Peer.await_request(peer)

          peer =
            Peer.headers(
              peer,
              sid,
              [{":status", "200"}, {"content-type", "application/grpc"}],
              false
            )

          Peer.out(peer, Frame.data(sid, [<<0, 2::32>>, "hi"], false))
          {frame, peer} = Peer.await(peer, &match?({:rst_stream, ^sid, _}, &1))
          send(test, {:peer_saw, frame})
          peer
        end)
      end)

    {:ok, conn} = connect(port)
    {:ok, stream} = GRPC.server_stream(conn, "/s/A", "x")
    assert {:ok, "hi"} = GRPC.recv(stream, 5_000)
    assert :ok = GRPC.cancel(stream)
    assert_receive {:peer_saw, {:rst_stream, 1, :cancel}}, 5_000
    assert {:error, %HFBridge.Error{code: :cancelled}} = GRPC.recv(stream)

    owner =
      spawn(fn ->
        {:ok, stream} = GRPC.server_stream(conn, "/s/B", "x")
        {:ok, "hi"} = GRPC.recv(stream, 5_000)
        send(test, :owner_ready)
        Process.sleep(:infinity)
      end)

    assert_receive :owner_ready, 5_000
    Process.exit(owner, :kill)
    assert_receive {:peer_saw, {:rst_stream, 3, :cancel}}, 5_000
    assert Process.alive?(conn)
    assert %{calls: 0} = Connection.stats(conn)
    GRPC.disconnect(conn)
    refute_stray_messages()
  end

  test "calls beyond the server's max concurrent streams wait for a free slot" do
    test = self()

    {port, peer_pid} =
      Peer.start(fn peer ->
        peer = Peer.handshake(peer, max_concurrent_streams: 1)
        {{:headers, s1, _, _, _}, peer} = Peer.await_request(peer)
        send(test, {:opened, s1})

        receive do
          :go -> :ok
        end

        peer = Peer.respond(peer, s1, "one")
        {{:headers, s2, _, _, _}, peer} = Peer.await_request(peer)
        send(test, {:opened, s2})
        Peer.respond(peer, s2, "two")
      end)

    {:ok, conn} = connect(port)
    t1 = Task.async(fn -> GRPC.unary(conn, "/s/A", "x") end)
    assert_receive {:opened, 1}, 5_000
    t2 = Task.async(fn -> GRPC.unary(conn, "/s/B", "x") end)
    wait_until(fn -> Connection.stats(conn).queued == 1 end)
    assert %{open_streams: 1, calls: 2} = Connection.stats(conn)
    send(peer_pid, :go)
    assert {:ok, "one"} = Task.await(t1, 5_000)
    assert {:ok, "two"} = Task.await(t2, 5_000)
    assert_received {:opened, 3}
    GRPC.disconnect(conn)
  end

  test "CONTINUATION, trailers-only responses, PING and percent-encoded messages" do
    test = self()

    {port, _} =
      Peer.start(fn peer ->
        peer = Peer.handshake(peer)
        {{:headers, s1, _, _, _}, peer} = Peer.await_request(peer)
        Peer.out(peer, Frame.ping("pingpong", false))
        {{:ping, true, payload}, peer} = Peer.await(peer, &match?({:ping, true, _}, &1))
        send(test, {:pong, payload})

        # response headers split over HEADERS + CONTINUATION frames
        headers = [
          {":status", "200"},
          {"content-type", "application/grpc+proto"},
          {"x-long", :binary.copy("y", 500)},
          {"x-data-bin", Base.encode64(<<1, 2, 3>>)}
        ]

        peer = Peer.headers(peer, s1, headers, false, 64)
        Peer.out(peer, Frame.data(s1, [<<0, 2::32>>, "ok"], false))
        peer = Peer.headers(peer, s1, [{"grpc-status", "0"}, {"x-t", "1"}], true, 8)

        # trailers-only error with a percent-encoded message
        {{:headers, s2, _, _, _}, peer} = Peer.await_request(peer)

        Peer.headers(
          peer,
          s2,
          [
            {":status", "200"},
            {"content-type", "application/grpc"},
            {"grpc-status", "5"},
            {"grpc-message", "no such dataset: caf%C3%A9 %25"}
          ],
          true
        )
      end)

    {:ok, conn} = connect(port)
    assert {:ok, "ok", md} = GRPC.unary(conn, "/s/A", "x", return_metadata: true)
    assert {"x-long", :binary.copy("y", 500)} in md.headers
    assert {"x-data-bin", <<1, 2, 3>>} in md.headers
    assert {"x-t", "1"} in md.trailers
    assert_received {:pong, "pingpong"}

    assert {:error,
            %HFBridge.Error{
              code: :not_found,
              message: "no such dataset: café %",
              retryable: false
            }} = GRPC.unary(conn, "/s/B", "x")

    GRPC.disconnect(conn)
  end

  test "oversized response headers fail that call only" do
    {port, _} =
      Peer.start(fn peer ->
        peer = Peer.handshake(peer)
        {{:headers, s1, _, _, _}, peer} = Peer.await_request(peer)

        peer =
          Peer.headers(
            peer,
            s1,
            [
              {":status", "200"},
              {"x-huge", :crypto.strong_rand_bytes(20_000) |> Base.encode64()}
            ],
            false
          )

        {{:headers, s2, _, _, _}, peer} = Peer.await_request(peer)
        Peer.respond(peer, s2, "fine")
      end)

    {:ok, conn} = connect(port, max_header_list_size: 16_384)
    assert {:error, %HFBridge.Error{code: :resource_exhausted}} = GRPC.unary(conn, "/s/A", "x")
    assert {:ok, "fine"} = GRPC.unary(conn, "/s/B", "x")
    GRPC.disconnect(conn)
  end

  test "HTTP errors and non-gRPC content types map to gRPC statuses" do
    {port, _} =
      Peer.start(fn peer ->
        peer = Peer.handshake(peer)
        {{:headers, s1, _, _, _}, peer} = Peer.await_request(peer)
        peer = Peer.headers(peer, s1, [{":status", "503"}, {"content-type", "text/plain"}], true)
        {{:headers, s2, _, _, _}, peer} = Peer.await_request(peer)
        Peer.headers(peer, s2, [{":status", "200"}, {"content-type", "text/html"}], false)
      end)

    {:ok, conn} = connect(port)

    assert {:error, %HFBridge.Error{code: :unavailable, retryable: true}} =
             GRPC.unary(conn, "/s/A", "x")

    assert {:error, %HFBridge.Error{code: :unknown}} = GRPC.unary(conn, "/s/B", "x")
    GRPC.disconnect(conn)
  end

  test "a unary call answered with two messages fails with :internal" do
    {port, _} =
      Peer.start(fn peer ->
        {sid, peer} = Peer.answer_grpc_call(peer)

        Peer.out(peer, Frame.data(sid, [<<0, 1::32>>, "a", <<0, 1::32>>, "b"], false))
        Peer.headers(peer, sid, [{"grpc-status", "0"}], true)
      end)

    {:ok, conn} = connect(port)
    assert {:error, %HFBridge.Error{code: :internal}} = GRPC.unary(conn, "/s/A", "x")
    refute_stray_messages()
    GRPC.disconnect(conn)
  end

  test "invalid metadata and options are rejected before anything is sent" do
    assert {:error, %HFBridge.Error{code: :invalid_argument}} =
             GRPC.connect("127.0.0.1", 1, bogus: 1)

    assert {:error, %HFBridge.Error{code: :invalid_argument}} =
             GRPC.connect("127.0.0.1", 1, metadata: [{"grpc-status", "0"}])

    assert {:error, %HFBridge.Error{code: :unavailable, retryable: true}} =
             GRPC.connect("127.0.0.1", free_port(), connect_timeout: 2_000)

    assert {:error, %HFBridge.Error{code: :invalid_argument}} = GRPC.connect(~c"localhost", 80)
  end

  test "bad call arguments are errors and leave the connection alone" do
    {port, _} = Peer.start(fn peer -> Peer.handshake(peer) end)
    {:ok, conn} = connect(port, connect_timeout: nil, tls: nil, metadata: nil)

    assert {:error, %HFBridge.Error{code: :invalid_argument}} = GRPC.unary(conn, "no-slash", "")

    assert {:error, %HFBridge.Error{code: :invalid_argument}} =
             GRPC.unary(conn, "/a/B", [:not_iodata])

    assert {:error, %HFBridge.Error{code: :invalid_argument}} =
             GRPC.unary(conn, "/a/B", "", timeout: -1)

    assert {:error, %HFBridge.Error{code: :invalid_argument}} =
             GRPC.server_stream(conn, "/a/B", "", metadata: [{"bad name", "v"}])

    assert {:error, %HFBridge.Error{code: :invalid_argument}} =
             GRPC.unary(conn, "/a/B", "", metadata: [{"x-k", "line\nbreak"}])

    assert Process.alive?(conn)
    assert %{calls: 0} = Connection.stats(conn)
    GRPC.disconnect(conn)
  end
end
