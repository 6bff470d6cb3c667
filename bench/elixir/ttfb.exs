# Time to first batch: open a session and receive its first batch, --reps times
# on one connected client; prints BENCH {"seconds":[..],"median":..}.
#
#   mix run ../bench/elixir/ttfb.exs --address 127.0.0.1:PORT --files '/abs/*.parquet' [--reps 5]
Code.require_file("bench_helper.exs", __DIR__)
alias HFBridgeBench.Helper

opts =
  Helper.args(
    address: :string,
    dataset: :string,
    files: :keep,
    batch_size: :integer,
    reps: :integer
  )

client = Helper.connect!(opts[:address] || Helper.fail!("--address is required"))
spec = [data_files: Keyword.get_values(opts, :files), batch_size: opts[:batch_size] || 1024]

times =
  for _ <- 1..(opts[:reps] || 5) do
    t0 = Helper.now()

    session =
      case HFBridge.open(client, opts[:dataset] || "parquet", spec) do
        {:ok, s} -> s
        {:error, e} -> Helper.fail!("open: " <> Exception.message(e))
      end

    case HFBridge.Session.next_batch(session, 120_000) do
      {:ok, _batch} -> :ok
      other -> Helper.fail!("first batch: " <> inspect(other, limit: 5))
    end

    dt = Helper.now() - t0
    HFBridge.Session.close(session)
    dt
  end

Helper.emit(%{seconds: times, median: Helper.median(times)})
HFBridge.disconnect(client)
