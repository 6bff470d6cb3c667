# The Elixir gRPC client alone, reading baseline B's grpcio server (the same
# pre-built Arrow IPC messages B's Python client reads): how fast
# HFBridge.GRPC takes a server stream off the wire, without our Python front,
# workers or sessions in the way. Counts bytes only. Prints
#   BENCH {"bytes":..,"messages":..,"seconds":..,"cpu_seconds":..}
#
#   mix run ../bench/elixir/raw_read.exs --port PORT [--path /hf_bridge_bench.Raw/Read]
Code.require_file("bench_helper.exs", __DIR__)
alias HFBridgeBench.Helper

opts = Helper.args(port: :integer, path: :string)
port = opts[:port] || Helper.fail!("--port is required")
path = opts[:path] || "/hf_bridge_bench.Raw/Read"

conn =
  case HFBridge.GRPC.connect("127.0.0.1", port, max_message_size: 256 * 1024 * 1024) do
    {:ok, conn} -> conn
    {:error, error} -> Helper.fail!("connect: " <> Exception.message(error))
  end

read_all = fn read_all, stream, bytes, messages ->
  case HFBridge.GRPC.recv(stream, 120_000) do
    {:ok, message} -> read_all.(read_all, stream, bytes + byte_size(message), messages + 1)
    :done -> {bytes, messages}
    {:error, error} -> Helper.fail!("recv: " <> Exception.message(error))
  end
end

t0 = Helper.now()
cpu0 = Helper.cpu_seconds()

{bytes, messages} =
  case HFBridge.GRPC.server_stream(conn, path, <<>>, timeout: 3_600_000) do
    {:ok, stream} -> read_all.(read_all, stream, 0, 0)
    {:error, error} -> Helper.fail!("call: " <> Exception.message(error))
  end

Helper.emit(%{
  bytes: bytes,
  messages: messages,
  seconds: Helper.now() - t0,
  cpu_seconds: Helper.cpu_seconds() - cpu0
})

HFBridge.GRPC.disconnect(conn)
