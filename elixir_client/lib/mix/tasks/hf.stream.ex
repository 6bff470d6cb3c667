defmodule Mix.Tasks.Hf.Stream do
  @shortdoc "Streams rows of a HuggingFace dataset to the terminal"

  @moduledoc """
  Streams rows of a dataset through an hf_bridge server and prints them.

      mix hf.stream SPEC [options]

  SPEC is a Hub id (`user/name`), a packaged builder (`parquet`, `json`,
  `csv`, `arrow`, `text`) used with `--data-files`, or a local dataset
  folder.

  ## Examples

      mix hf.stream parquet --data-files 'data/*.parquet' --take 10
      mix hf.stream ./my_dataset --split test --columns text,label --format jsonl > rows.jsonl
      mix hf.stream imdb --shuffle --seed 7 --take 100 --address 127.0.0.1:50051

  ## Output options

      --format table|jsonl   aligned columns (default) or one JSON object per line
      -n, --take N           read at most N rows
      --batch-size N         rows per batch (default: the server's)
      --max-width N          table: widest column, longer values are cut (default: 40)
    --show N               print only the first N rows; the rest are still read
                           and decoded (a throughput run)
      --quiet                no progress line and no summary

  Rows go to stdout. On stderr: a progress line on long runs (rows, rows/s),
  redrawn in place on a terminal, and at the end
  `N rows in T s (R rows/s, M MB/s)`. In JSON lines, bytes that are not
  UTF-8 are base64 strings and dates and times ISO 8601 strings.

  #{HFBridge.CLI.moduledoc_flags()}
  """

  use Mix.Task

  alias HFBridge.{Batch, CLI}
  alias HFBridge.CLI.{Format, Progress}

  @task "hf.stream"
  @switches [
    format: :string,
    batch_size: :integer,
    max_width: :integer,
    quiet: :boolean,
    show: :integer
  ]
  @aliases [n: :take, f: :format]

  @impl Mix.Task
  def run(argv) do
    parsed = CLI.parse!(@task, argv, @switches, @aliases)
    opts = parsed.task_opts
    format = format!(opts[:format] || "table")
    max_width = positive!(opts, :max_width, 40)
    batch_size = opts[:batch_size] && positive!(opts, :batch_size, nil)
    show = if Keyword.has_key?(opts, :show), do: non_negative!(opts, :show)
    dataset_opts = parsed.dataset_opts ++ if(batch_size, do: [batch_size: batch_size], else: [])

    CLI.with_client(@task, parsed.client_opts, fn client ->
      progress = Progress.new(enabled?: !opts[:quiet])
      printer = %{format: format, max_width: max_width, columns: nil, widths: nil, show: show}

      # Rates count from the moment the session is open (not from server start-up).
      me = self()
      on_open = fn _info -> send(me, {:hf_stream_opened, System.monotonic_time(:millisecond)}) end

      {progress, _printer} =
        try do
          parsed.dataset
          |> HFBridge.stream([client: client, on_open: on_open] ++ dataset_opts)
          |> Enum.reduce({progress, printer}, fn batch, {progress, printer} ->
            progress =
              receive(
                do: ({:hf_stream_opened, t} -> Progress.restart(progress, t)),
                after: (0 -> progress)
              )

            printer = print_batch(batch, printer)
            {Progress.advance(progress, batch.num_rows, byte_size(batch.ipc)), printer}
          end)
        rescue
          error in [HFBridge.Error] -> CLI.raise_error(@task, error)
        end

      progress = Progress.finish(progress)
      hidden = progress.rows - (show || progress.rows)

      if hidden > 0 and format == "table" do
        IO.puts("… #{hidden} more rows read and decoded, not shown")
      end

      unless opts[:quiet] do
        CLI.status(Format.summary(progress.rows, progress.bytes, Progress.elapsed(progress)))
      end
    end)
  end

  # Past --show: decode the batch to columns (the work a consumer does) but print nothing.
  defp print_batch(batch, %{show: 0} = printer) do
    _ = Batch.table!(batch)
    printer
  end

  defp print_batch(batch, %{format: "jsonl"} = printer) do
    batch
    |> Batch.rows!()
    |> limit(printer.show)
    |> Enum.map(&[Format.json_line(&1), "\n"])
    |> IO.write()

    shown(printer, batch.num_rows)
  end

  defp print_batch(batch, %{format: "table"} = printer) do
    table = Batch.table!(batch)
    rows = table |> HFBridge.Arrow.to_rows() |> limit(printer.show)

    printer =
      if printer.columns do
        printer
      else
        columns = Enum.map(table.columns, &elem(&1, 0))
        widths = Format.widths(columns, rows, printer.max_width)
        IO.write(Format.header(columns, widths))
        %{printer | columns: columns, widths: widths}
      end

    IO.write(Enum.map(rows, &Format.row(&1, printer.columns, printer.widths)))
    shown(printer, batch.num_rows)
  end

  defp limit(rows, nil), do: rows
  defp limit(rows, show), do: Enum.take(rows, show)

  defp shown(%{show: nil} = printer, _rows), do: printer
  defp shown(%{show: show} = printer, rows), do: %{printer | show: max(show - rows, 0)}

  defp non_negative!(opts, name) do
    case Keyword.fetch!(opts, name) do
      value when is_integer(value) and value >= 0 -> value
      value -> Mix.raise("mix #{@task}: --#{name} must be 0 or more, got #{value}")
    end
  end

  defp format!(format) when format in ["table", "jsonl"], do: format

  defp format!(other),
    do:
      Mix.raise("mix #{@task}: invalid value #{inspect(other)} for --format; use table or jsonl")

  defp positive!(opts, name, default) do
    case Keyword.get(opts, name, default) do
      value when is_integer(value) and value > 0 ->
        value

      nil ->
        nil

      value ->
        Mix.raise(
          "mix #{@task}: --#{String.replace(to_string(name), "_", "-")} must be positive, got #{value}"
        )
    end
  end
end
