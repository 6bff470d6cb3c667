# The Elixir Arrow IPC reader on bench data held in memory: reads every
# `*.arrows` file of --dir with HFBridge.Arrow.read_stream/2, repeating until
# --min-bytes were decoded. Prints BENCH {"bytes":..,"rows":..,"seconds":..}.
#
#   mix run ../bench/elixir/arrow_reader.exs --dir /abs/ipc [--min-bytes N]
Code.require_file("bench_helper.exs", __DIR__)
alias HFBridgeBench.Helper

opts = Helper.args(dir: :string, min_bytes: :integer)
dir = opts[:dir] || Helper.fail!("--dir is required")
blobs = dir |> Path.join("*.arrows") |> Path.wildcard() |> Enum.sort() |> Enum.map(&File.read!/1)
if blobs == [], do: Helper.fail!("no .arrows files in #{dir}")
total = blobs |> Enum.map(&byte_size/1) |> Enum.sum()
passes = div(opts[:min_bytes] || 100_000_000, total) + 1

t0 = Helper.now()

rows =
  Enum.reduce(1..passes, 0, fn _, acc ->
    Enum.reduce(blobs, acc, fn blob, acc ->
      case HFBridge.Arrow.read_stream(blob) do
        {:ok, table} -> acc + table.num_rows
        {:error, e} -> Helper.fail!("read_stream: " <> Exception.message(e))
      end
    end)
  end)

Helper.emit(%{bytes: total * passes, rows: rows, seconds: Helper.now() - t0})
