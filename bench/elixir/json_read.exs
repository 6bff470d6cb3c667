# Baseline D: rows as JSON over gRPC, one message per batch, received by the
# HFBridge.GRPC client and decoded by HFBridge.JSON.decode/1.
# Prints BENCH {"rows":..,"bytes":..,"seconds":..,"decoder":"HFBridge.JSON.decode/1"}.
#
#   mix run ../bench/elixir/json_read.exs --port PORT --path /svc/Method
Code.require_file("bench_helper.exs", __DIR__)
alias HFBridgeBench.Helper

opts = Helper.args(port: :integer, path: :string)

conn =
  case HFBridge.GRPC.connect("127.0.0.1", opts[:port] || Helper.fail!("--port is required"),
         max_message_size: 256 * 1024 * 1024
       ) do
    {:ok, c} -> c
    {:error, e} -> Helper.fail!("connect: " <> Exception.message(e))
  end

t0 = Helper.now()
cpu0 = Helper.cpu_seconds()

{:ok, stream} = HFBridge.GRPC.server_stream(conn, opts[:path], <<>>, timeout: 3_600_000)

loop = fn loop, rows, bytes, msgs ->
  case HFBridge.GRPC.recv(stream, 120_000) do
    {:ok, message} ->
      case HFBridge.JSON.decode(message) do
        {:ok, list} when is_list(list) ->
          loop.(loop, rows + length(list), bytes + byte_size(message), msgs + 1)

        {:ok, _} ->
          Helper.fail!("a message is not a JSON array")

        {:error, e} ->
          Helper.fail!("JSON: " <> Exception.message(e))
      end

    :done ->
      {rows, bytes, msgs}

    {:error, e} ->
      Helper.fail!("recv: " <> Exception.message(e))
  end
end

{rows, bytes, msgs} = loop.(loop, 0, 0, 0)
seconds = Helper.now() - t0
cpu1 = Helper.cpu_seconds()

Helper.emit(%{
  rows: rows,
  bytes: bytes,
  messages: msgs,
  seconds: seconds,
  cpu_seconds: cpu1 - cpu0,
  decoder: "HFBridge.JSON.decode/1"
})

HFBridge.GRPC.disconnect(conn)
