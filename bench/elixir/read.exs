# Streams a dataset from a running hf_bridge server into Elixir and prints
#   BENCH {"rows":..,"bytes":..,"batches":..,"values":..,"seconds":..,"first_batch_seconds":..}
#
#   mix run ../bench/elixir/read.exs --address 127.0.0.1:PORT --dataset parquet \
#     [--files '/abs/*.parquet'] [--batch-size 1024] [--sessions 1] [--decode none|arrow|rows|rows_api]
#     [--max-bytes N] [--take N] [--read-ahead N] [--no-ack]
#
# --sessions N reads shard i of N in N concurrent sessions (one process each)
# over one shared connection. --decode: none counts the IPC bytes only; arrow
# decodes every batch to columns (HFBridge.Arrow.read_stream/2); rows builds
# row maps per batch; rows_api enumerates HFBridge.rows/2.
Code.require_file("bench_helper.exs", __DIR__)
alias HFBridgeBench.Helper

opts =
  Helper.args(
    address: :string,
    dataset: :string,
    files: :keep,
    batch_size: :integer,
    sessions: :integer,
    decode: :string,
    max_bytes: :integer,
    take: :integer,
    read_ahead: :integer,
    ack: :boolean
  )

address = opts[:address] || Helper.fail!("--address is required")
files = Keyword.get_values(opts, :files)
sessions = opts[:sessions] || 1
decode = opts[:decode] || "none"
max_bytes = opts[:max_bytes] || 0
client = Helper.connect!(address)

base =
  [
    client: client,
    batch_size: opts[:batch_size] || 1024,
    ack: Keyword.get(opts, :ack, true)
  ]
  |> then(fn o -> if files != [], do: Keyword.put(o, :data_files, files), else: o end)
  |> then(fn o -> if opts[:take], do: Keyword.put(o, :take, opts[:take]), else: o end)
  |> then(fn o ->
    if opts[:read_ahead], do: Keyword.put(o, :read_ahead, opts[:read_ahead]), else: o
  end)

dataset = opts[:dataset] || "parquet"

run_session = fn index ->
  stream_opts = if sessions > 1, do: Keyword.put(base, :shard, {index, sessions}), else: base
  t0 = Helper.now()

  acc0 = %{rows: 0, bytes: 0, batches: 0, values: 0, first: nil}

  acc =
    if decode == "rows_api" do
      dataset
      |> HFBridge.rows(stream_opts)
      |> Enum.reduce(acc0, fn row, acc ->
        acc = if acc.first == nil, do: %{acc | first: Helper.now() - t0}, else: acc
        %{acc | rows: acc.rows + 1, values: acc.values + map_size(row)}
      end)
    else
      dataset
      |> HFBridge.stream(stream_opts)
      |> Enum.reduce_while(acc0, fn batch, acc ->
        acc = if acc.first == nil, do: %{acc | first: Helper.now() - t0}, else: acc

        values =
          case decode do
            "none" ->
              0

            "arrow" ->
              {:ok, table} = HFBridge.Arrow.read_stream(batch.ipc)
              table.num_rows * length(table.columns)

            "rows" ->
              batch |> HFBridge.Batch.rows!() |> Enum.reduce(0, fn r, n -> n + map_size(r) end)
          end

        acc = %{
          acc
          | rows: acc.rows + batch.num_rows,
            bytes: acc.bytes + byte_size(batch.ipc),
            batches: acc.batches + 1,
            values: acc.values + values
        }

        if max_bytes > 0 and acc.bytes >= max_bytes, do: {:halt, acc}, else: {:cont, acc}
      end)
    end

  Map.put(acc, :seconds, Helper.now() - t0)
end

t0 = Helper.now()
cpu0 = Helper.cpu_seconds()

results =
  try do
    if sessions == 1 do
      [run_session.(0)]
    else
      0..(sessions - 1)
      |> Enum.map(fn i -> Task.async(fn -> run_session.(i) end) end)
      |> Task.await_many(:infinity)
    end
  rescue
    e -> Helper.fail!(Exception.message(e))
  end

wall = Helper.now() - t0
cpu1 = Helper.cpu_seconds()

Helper.emit(%{
  rows: Enum.sum(Enum.map(results, & &1.rows)),
  bytes: Enum.sum(Enum.map(results, & &1.bytes)),
  batches: Enum.sum(Enum.map(results, & &1.batches)),
  values: Enum.sum(Enum.map(results, & &1.values)),
  seconds: wall,
  first_batch_seconds: hd(results).first || wall,
  session_seconds: Enum.map(results, & &1.seconds),
  session_rows: Enum.map(results, & &1.rows),
  sessions: sessions,
  cpu_seconds: cpu1 - cpu0,
  decode: decode
})

HFBridge.disconnect(client)
