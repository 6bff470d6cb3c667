defmodule HFBridge.GRPC.InteropTest do
  # The client against two independent gRPC server implementations
  # (Python grpcio and Node @grpc/grpc-js) serving grpc.testing.TestService
  # from tests/interop. Cases follow the gRPC interop test descriptions.
  use ExUnit.Case, async: false

  import HFBridge.TestHelpers

  alias HFBridge.GRPC
  alias HFBridge.Test.{InteropMessages, InteropServer}

  @moduletag timeout: 300_000

  @svc "/grpc.testing.TestService/"

  setup_all do
    servers =
      for kind <- [:python, :node], into: %{} do
        case InteropServer.start(kind) do
          {:ok, info} ->
            {kind, info}

          {:skip, reason} ->
            IO.puts("interop #{kind} server unavailable: #{reason}")
            {kind, nil}
        end
      end

    on_exit(fn -> for {_k, info} <- servers, info, do: InteropServer.stop(info) end)
    %{servers: servers}
  end

  defp connect!(%{servers: servers}, kind, opts \\ []) do
    case servers[kind] do
      nil ->
        flunk("#{kind} interop server is not available")

      info ->
        {:ok, conn} = GRPC.connect("127.0.0.1", info.port, opts)
        on_exit(fn -> GRPC.disconnect(conn) end)
        conn
    end
  end

  defp drain(stream, acc \\ []) do
    case GRPC.recv(stream, 30_000) do
      {:ok, msg} -> drain(stream, [msg | acc])
      :done -> {:done, Enum.reverse(acc)}
      {:error, error} -> {:error, error, Enum.reverse(acc)}
    end
  end

  defp sizes(messages), do: Enum.map(messages, &byte_size(InteropMessages.payload_body(&1)))

  for kind <- [:python, :node] do
    describe "#{kind} server" do
      test "empty_unary", ctx do
        conn = connect!(ctx, unquote(kind))
        assert {:ok, ""} = GRPC.unary(conn, @svc <> "EmptyCall", "")
      end

      test "large_unary", ctx do
        conn = connect!(ctx, unquote(kind))
        req = InteropMessages.simple_request(response_size: 314_159, payload_size: 271_828)
        assert {:ok, resp} = GRPC.unary(conn, @svc <> "UnaryCall", req, timeout: 20_000)
        assert InteropMessages.payload_body(resp) == :binary.copy(<<0>>, 314_159)
      end

      test "server_streaming", ctx do
        conn = connect!(ctx, unquote(kind))
        req = InteropMessages.streaming_request([31_415, 9, 2_653, 58_979])
        {:ok, stream} = GRPC.server_stream(conn, @svc <> "StreamingOutputCall", req)
        assert {:done, messages} = drain(stream)
        assert sizes(messages) == [31_415, 9, 2_653, 58_979]
        assert GRPC.recv(stream) == :done
        assert {_, "0"} = List.keyfind(GRPC.stream_metadata(stream).trailers, "grpc-status", 0)
      end

      test "status_code_and_message (unary and streaming)", ctx do
        conn = connect!(ctx, unquote(kind))
        req = InteropMessages.simple_request(status: {2, "test status message"})

        assert {:error,
                %HFBridge.Error{layer: :grpc, code: :unknown, message: "test status message"}} =
                 GRPC.unary(conn, @svc <> "UnaryCall", req)

        req = InteropMessages.streaming_request([10], status: {2, "test status message"})
        {:ok, stream} = GRPC.server_stream(conn, @svc <> "StreamingOutputCall", req)

        assert {:error, %HFBridge.Error{code: :unknown, message: "test status message"}, [_]} =
                 drain(stream)
      end

      test "special_status_message", ctx do
        conn = connect!(ctx, unquote(kind))
        message = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n"
        req = InteropMessages.simple_request(status: {2, message})

        assert {:error, %HFBridge.Error{code: :unknown, message: ^message}} =
                 GRPC.unary(conn, @svc <> "UnaryCall", req)
      end

      test "custom_metadata (initial and trailing, -bin)", ctx do
        conn = connect!(ctx, unquote(kind))

        md = [
          {"x-grpc-test-echo-initial", "test_initial_metadata_value"},
          {"x-grpc-test-echo-trailing-bin", <<0xAB, 0xAB, 0xAB>>}
        ]

        req = InteropMessages.simple_request(response_size: 314_159, payload_size: 271_828)

        assert {:ok, _resp, %{headers: headers, trailers: trailers}} =
                 GRPC.unary(conn, @svc <> "UnaryCall", req, metadata: md, return_metadata: true)

        assert {"x-grpc-test-echo-initial", "test_initial_metadata_value"} in headers
        assert {"x-grpc-test-echo-trailing-bin", <<0xAB, 0xAB, 0xAB>>} in trailers

        req = InteropMessages.streaming_request([31_415, 9, 2_653, 58_979])
        {:ok, stream} = GRPC.server_stream(conn, @svc <> "StreamingOutputCall", req, metadata: md)
        assert {:done, [_, _, _, _]} = drain(stream)
        %{headers: headers, trailers: trailers} = GRPC.stream_metadata(stream)
        assert {"x-grpc-test-echo-initial", "test_initial_metadata_value"} in headers
        assert {"x-grpc-test-echo-trailing-bin", <<0xAB, 0xAB, 0xAB>>} in trailers
      end

      test "unimplemented_method", ctx do
        conn = connect!(ctx, unquote(kind))

        assert {:error, %HFBridge.Error{code: :unimplemented, layer: :grpc}} =
                 GRPC.unary(conn, @svc <> "UnimplementedCall", "")
      end

      test "unimplemented_service", ctx do
        conn = connect!(ctx, unquote(kind))

        assert {:error, %HFBridge.Error{code: :unimplemented}} =
                 GRPC.unary(conn, "/grpc.testing.UnimplementedService/UnimplementedCall", "")
      end

      test "timeout_on_sleeping_server", ctx do
        conn = connect!(ctx, unquote(kind))
        req = InteropMessages.streaming_request([{27_182, 5_000_000}])
        {:ok, stream} = GRPC.server_stream(conn, @svc <> "StreamingOutputCall", req, timeout: 300)
        assert {:error, %HFBridge.Error{code: :deadline_exceeded}, []} = drain(stream)
        # the connection stays usable
        assert {:ok, ""} = GRPC.unary(conn, @svc <> "EmptyCall", "", timeout: 5_000)
      end

      test "cancel_after_first_response (server stream)", ctx do
        conn = connect!(ctx, unquote(kind))
        req = InteropMessages.streaming_request([31_415, {9, 500_000}, {2_653, 500_000}, 58_979])
        {:ok, stream} = GRPC.server_stream(conn, @svc <> "StreamingOutputCall", req)
        assert {:ok, first} = GRPC.recv(stream, 10_000)
        assert byte_size(InteropMessages.payload_body(first)) == 31_415
        assert :ok = GRPC.cancel(stream)
        assert {:error, %HFBridge.Error{code: :cancelled}} = GRPC.recv(stream, 5_000)
        assert %{calls: 0} = GRPC.Connection.stats(conn)
        assert {:ok, ""} = GRPC.unary(conn, @svc <> "EmptyCall", "")
      end

      test "a caller that dies cancels its call, not the connection", ctx do
        conn = connect!(ctx, unquote(kind))
        req = InteropMessages.streaming_request(List.duplicate({1000, 200_000}, 50))
        parent = self()

        pid =
          spawn(fn ->
            {:ok, stream} = GRPC.server_stream(conn, @svc <> "StreamingOutputCall", req)
            {:ok, _} = GRPC.recv(stream, 10_000)
            send(parent, :got_one)
            Process.sleep(:infinity)
          end)

        assert_receive :got_one, 10_000
        assert %{calls: 1} = GRPC.Connection.stats(conn)
        Process.exit(pid, :kill)
        wait_until(fn -> GRPC.Connection.stats(conn).calls == 0 end)
        assert Process.alive?(conn)
        assert {:ok, ""} = GRPC.unary(conn, @svc <> "EmptyCall", "")
      end

      test "server stream of 1 MiB and 8 MiB messages, at several frame sizes", ctx do
        want = [1_048_576, 1_048_576, 8_388_608, 1_048_576, 8_388_608]
        req = InteropMessages.streaming_request(want)

        # the default (1 MiB), the protocol's initial size and the largest allowed
        for opts <- [[], [max_frame_size: 16_384], [max_frame_size: 16_777_215]] do
          conn = connect!(ctx, unquote(kind), opts)

          {:ok, stream} =
            GRPC.server_stream(conn, @svc <> "StreamingOutputCall", req, timeout: 60_000)

          assert {:done, messages} = drain(stream)
          assert sizes(messages) == want
          assert Enum.all?(messages, fn m -> InteropMessages.payload_body(m) =~ ~r/^\0*$/ end)
        end
      end

      test "server stream of 10,000 small messages", ctx do
        conn = connect!(ctx, unquote(kind))
        req = InteropMessages.streaming_request(Enum.map(1..10_000, &rem(&1, 50)))

        {:ok, stream} =
          GRPC.server_stream(conn, @svc <> "StreamingOutputCall", req, timeout: 120_000)

        assert {:done, messages} = drain(stream)
        assert sizes(messages) == Enum.map(1..10_000, &rem(&1, 50))
      end

      test "100 concurrent streams on one connection", ctx do
        conn = connect!(ctx, unquote(kind))

        tasks =
          for i <- 1..100 do
            Task.async(fn ->
              want = [i, 1_000 + i, 20_000 + i]
              req = InteropMessages.streaming_request(want)

              {:ok, stream} =
                GRPC.server_stream(conn, @svc <> "StreamingOutputCall", req, timeout: 120_000)

              {:done, messages} = drain(stream)
              sizes(messages) == want
            end)
          end

        assert Enum.all?(Task.await_many(tasks, 150_000))
        assert %{calls: 0, open_streams: 0} = GRPC.Connection.stats(conn)
      end

      test "keepalive PINGs on an idle connection are acknowledged", ctx do
        # (A grpc-core server with default settings then closes the connection
        # with GOAWAY too_many_pings after a few of them: the hf_bridge
        # server allows one per second.)
        conn = connect!(ctx, unquote(kind), keepalive: 100, keepalive_timeout: 1_000)
        wait_until(fn -> GRPC.Connection.stats(conn).keepalive_acks >= 2 end, 100)
      end

      test "a slow consumer keeps buffered data within the stream window", ctx do
        window = 1024 * 1024
        conn = connect!(ctx, unquote(kind), stream_window: window)
        # ~1 GiB on offer; only a few MiB are read before cancelling.
        req = InteropMessages.streaming_request(List.duplicate(128 * 1024, 8_192))
        {:ok, stream} = GRPC.server_stream(conn, @svc <> "StreamingOutputCall", req)

        peak =
          Enum.reduce(1..24, 0, fn i, peak ->
            assert {:ok, msg} = GRPC.recv(stream, 30_000)
            assert byte_size(msg) > 128 * 1024
            # give the server time to push as much as flow control lets it
            if rem(i, 8) == 0, do: Process.sleep(300), else: Process.sleep(10)
            stats = GRPC.Connection.stats(conn)
            assert stats.max_buffered_bytes <= window
            {:binary, bins} = Process.info(conn, :binary)
            held = bins |> Enum.uniq_by(&elem(&1, 0)) |> Enum.map(&elem(&1, 1)) |> Enum.sum()
            assert held <= 4 * window + 2 * 1024 * 1024
            max(peak, stats.max_buffered_bytes)
          end)

        # the window was actually used, i.e. the server was not idle
        assert peak > 128 * 1024
        GRPC.cancel(stream)
      end
    end
  end

  test "python server: GOAWAY too_many_pings ends the connection and doubles the client's keepalive",
       %{servers: servers} do
    info = servers[:python] || flunk("python interop server is not available")
    # grpc-core's default policy takes more than a couple of PINGs on an idle
    # connection as abuse.
    {:ok, client} =
      HFBridge.Client.connect(
        address: "127.0.0.1:#{info.port}",
        local: false,
        keepalive: 100,
        keepalive_timeout: 1_000
      )

    on_exit(fn -> HFBridge.Client.disconnect(client) end)
    ref = Process.monitor(client.conn)

    log =
      ExUnit.CaptureLog.capture_log(fn ->
        assert_receive {:DOWN, ^ref, :process, _, {:shutdown, :too_many_pings}}, 10_000
        wait_until(fn -> not HFBridge.Client.connected?(client) end)
      end)

    assert log =~ "too many keepalive PINGs"
    assert {_host, _port, opts} = HFBridge.Client.Keeper.target(client.keeper)
    assert opts[:keepalive] == 200

    # A connection of its own that a session opens from this client (to
    # recover) starts with the doubled interval too.
    {:ok, own} = HFBridge.Client.reconnect(client)
    on_exit(fn -> HFBridge.Client.disconnect(own) end)
    assert {_host, _port, own_opts} = own.reconnect
    assert own_opts[:keepalive] == 200
    assert {_host, _port, ^own_opts} = HFBridge.Client.Keeper.target(own.keeper)
  end
end
