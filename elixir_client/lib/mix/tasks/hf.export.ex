defmodule Mix.Tasks.Hf.Export do
  @shortdoc "Exports a HuggingFace dataset to Parquet (local directory or S3)"

  @moduledoc """
  Writes a dataset to Parquet files through an hf_bridge server, with a
  `_manifest.json` (files, rows, bytes, SHA-256 checksums, schema, HF
  features) published last.

      mix hf.export SPEC DEST [options]

  SPEC is a Hub id (`user/name`), a packaged builder (`parquet`, `json`,
  `csv`, `arrow`, `text`) used with `--data-files`, or a local dataset
  folder. DEST is a directory on the server's machine or
  `s3://bucket/prefix` (the server's `AWS_*` settings apply). When no server
  is configured a local one is started, allowed to write to DEST.

  ## Examples

      mix hf.export parquet exports/reviews --data-files 'data/*.parquet'
      mix hf.export ./my_dataset s3://bucket/exports/my_dataset --split test --compression zstd
      mix hf.export imdb exports/imdb --columns text,label --max-file-bytes 64MiB --overwrite

  ## Export options

      --overwrite            replace an existing export at DEST
      --resume               continue an interrupted export from its checkpoint
      --compression CODEC    zstd (default), snappy, gzip, lz4, brotli or none
      --max-file-bytes SIZE  start a new file past this size: 268435456, 256MiB, 64MB, 1G
                             (default: 256MiB)
      --row-group-rows N     rows per Parquet row group (default: 100000)
      --batch-size N         rows per read from the dataset (default: 1000)
      --cdc                  content-defined chunking of data pages (dedup-friendly)
      --verify               afterwards, check every file's SHA-256 against the
                             manifest (local destinations on this machine)
      --timeout SECONDS      longest wait for the next event from the server (default: 300)
      --quiet                no progress line

  On stderr: a progress line (rows, of the total when known, MB written,
  files, rows/s and ETA), redrawn in place on a terminal, then a summary
  with the manifest's location. The exit status is non-zero on any error.

  #{HFBridge.CLI.moduledoc_flags()}
  """

  use Mix.Task

  alias HFBridge.CLI
  alias HFBridge.CLI.Format

  @task "hf.export"
  @switches [
    overwrite: :boolean,
    resume: :boolean,
    compression: :string,
    max_file_bytes: :string,
    row_group_rows: :integer,
    batch_size: :integer,
    cdc: :boolean,
    verify: :boolean,
    timeout: :integer,
    quiet: :boolean
  ]

  @impl Mix.Task
  def run(argv) do
    {spec_argv, dest} = split_destination!(argv)
    parsed = CLI.parse!(@task, spec_argv, @switches)
    task_opts = parsed.task_opts
    export_opts = export_opts!(task_opts)
    client_opts = allow_local_export(parsed.client_opts, dest)
    quiet = task_opts[:quiet] || false

    CLI.with_client(@task, client_opts, fn client ->
      started = System.monotonic_time(:millisecond)
      printer = start_printer(quiet)

      result =
        HFBridge.Export.run(
          client,
          parsed.dataset,
          dest,
          parsed.dataset_opts ++ export_opts ++ [progress: &send(printer, {:progress, &1})]
        )

      stop_printer(printer)

      case result do
        {:ok, manifest} ->
          seconds = (System.monotonic_time(:millisecond) - started) / 1000
          CLI.status(summary(manifest, seconds))
          if task_opts[:verify], do: verify!(manifest)
          :ok

        {:error, error} ->
          CLI.raise_error(@task, error)
      end
    end)
  end

  # -- arguments -----------------------------------------------------------------

  # SPEC and DEST are the two positional arguments; HFBridge.CLI.parse!/4
  # takes exactly one, so DEST is taken out and the rest is handed on
  # (flags re-rendered by OptionParser, SPEC last).
  defp split_destination!(argv) do
    switches = CLI.dataset_switches() ++ CLI.connection_switches() ++ @switches
    {opts, args, invalid} = OptionParser.parse(argv, strict: switches)

    case invalid do
      [] ->
        :ok

      [{flag, nil} | _] ->
        Mix.raise("mix #{@task}: unknown option #{flag}. Run `mix help #{@task}` for usage.")

      [{flag, value} | _] ->
        Mix.raise(
          "mix #{@task}: invalid value #{inspect(value)} for #{flag}. Run `mix help #{@task}`."
        )
    end

    case args do
      [spec, dest] ->
        {OptionParser.to_argv(opts, switches: switches) ++ ["--", spec], dest}

      [_spec] ->
        Mix.raise(
          "mix #{@task}: missing DEST (a directory or s3://bucket/prefix). Usage: mix hf.export SPEC DEST [options]"
        )

      [] ->
        Mix.raise("mix #{@task}: missing SPEC and DEST. Usage: mix hf.export SPEC DEST [options]")

      [_, _ | extra] ->
        Mix.raise(
          "mix #{@task}: unexpected arguments #{Enum.join(extra, " ")}. Usage: mix hf.export SPEC DEST [options]"
        )
    end
  end

  defp export_opts!(opts) do
    for name <- [:row_group_rows, :batch_size, :timeout],
        (value = opts[name]) != nil,
        value <= 0 do
      Mix.raise("mix #{@task}: --#{flag(name)} must be a positive integer, got #{value}")
    end

    if opts[:overwrite] && opts[:resume] do
      Mix.raise("mix #{@task}: --overwrite and --resume exclude each other")
    end

    [
      overwrite: opts[:overwrite],
      resume: opts[:resume],
      compression: opts[:compression],
      max_file_bytes: opts[:max_file_bytes] && size!(opts[:max_file_bytes]),
      row_group_rows: opts[:row_group_rows],
      batch_size: opts[:batch_size],
      cdc: opts[:cdc],
      timeout: opts[:timeout] && opts[:timeout] * 1000
    ]
    |> Enum.reject(fn {_, value} -> is_nil(value) end)
  end

  @units [
    {"kib", 1024},
    {"mib", 1024 * 1024},
    {"gib", 1024 * 1024 * 1024},
    {"kb", 1000},
    {"mb", 1_000_000},
    {"gb", 1_000_000_000},
    {"k", 1024},
    {"m", 1024 * 1024},
    {"g", 1024 * 1024 * 1024},
    {"b", 1}
  ]

  @doc false
  # A byte count such as 1000000, 256MiB, 64MB or 1G (K/M/G alone are binary
  # units, as in `hf-bridge export`).
  @spec size!(String.t()) :: pos_integer()
  def size!(text) do
    normalized = text |> String.trim() |> String.downcase() |> String.replace("_", "")

    {number, multiplier} =
      Enum.find_value(@units, {normalized, 1}, fn {suffix, multiplier} ->
        if String.ends_with?(normalized, suffix),
          do: {normalized |> String.trim_trailing(suffix) |> String.trim(), multiplier}
      end)

    value =
      case {Integer.parse(number), Float.parse(number)} do
        {{int, ""}, _} -> int * multiplier
        {_, {float, ""}} -> trunc(float * multiplier)
        _ -> nil
      end

    if is_integer(value) and value > 0 do
      value
    else
      Mix.raise(
        "mix #{@task}: --max-file-bytes: not a byte count: #{inspect(text)} (e.g. 268435456, 256MiB, 1G)"
      )
    end
  end

  # A local server started for this task may write to a local DEST.
  defp allow_local_export(client_opts, dest) do
    if String.contains?(dest, "://") do
      client_opts
    else
      Keyword.update(client_opts, :local_server, [export_root: Path.expand(dest)], fn server ->
        Keyword.put_new(server, :export_root, Path.expand(dest))
      end)
    end
  end

  # -- output --------------------------------------------------------------------

  defp verify!(manifest) do
    if String.starts_with?(manifest.uri, "s3://") do
      CLI.status("verify: skipped (#{manifest.uri} is on S3)")
    else
      case HFBridge.Parquet.verify(manifest) do
        :ok -> CLI.status("verified: #{manifest.file_count} files match their SHA-256")
        {:error, error} -> CLI.raise_error(@task, error)
      end
    end
  end

  @doc false
  @spec summary(HFBridge.Parquet.Manifest.t(), number()) :: String.t()
  def summary(manifest, seconds) do
    files = manifest.file_count

    "exported #{delimit(manifest.rows)} rows in #{files} file#{if files == 1, do: "", else: "s"} " <>
      "(#{Format.bytes(manifest.bytes)}) in #{duration(seconds)}\nmanifest: #{manifest.uri}"
  end

  @doc false
  # One progress line: rows (of the total, with a percentage, when known),
  # bytes and files written, rate, and the ETA when the total is known.
  @spec progress_line(HFBridge.Export.progress()) :: String.t()
  def progress_line(p) do
    rate = if p.elapsed_seconds > 0, do: p.rows / p.elapsed_seconds, else: 0.0

    rows =
      case p.total_rows do
        total when is_integer(total) and total > 0 ->
          percent = min(100.0, 100 * p.rows / total)

          "#{delimit(p.rows)} / #{delimit(total)} rows  #{:erlang.float_to_binary(percent, decimals: 1)}%"

        _ ->
          "#{delimit(p.rows)} rows"
      end

    eta =
      case p.total_rows do
        total when is_integer(total) and total > 0 and rate > 0 ->
          "  ETA #{duration(max(total - p.rows, 0) / rate)}"

        _ ->
          ""
      end

    "export  #{rows}  |  #{Format.bytes(p.bytes)}  #{p.files} file#{if p.files == 1, do: "", else: "s"}" <>
      "  |  #{delimit(round(rate))} rows/s#{eta}"
  end

  defp start_printer(quiet) do
    tty? = match?({:ok, _}, :io.columns(:standard_error))
    parent = self()

    spawn_link(fn ->
      Process.flag(:trap_exit, false)

      printer_loop(%{
        quiet: quiet,
        tty?: tty?,
        last: nil,
        drawn?: false,
        latest: nil,
        parent: parent
      })
    end)
  end

  defp stop_printer(printer) do
    ref = Process.monitor(printer)
    send(printer, {:stop, self()})

    receive do
      {:DOWN, ^ref, _, _, _} -> :ok
    end
  end

  # Progress arrives a few times a second; the line is drawn at most ten
  # times a second on a terminal and every five seconds elsewhere.
  defp printer_loop(state) do
    receive do
      {:progress, progress} ->
        printer_loop(maybe_draw(%{state | latest: progress}))

      {:stop, _from} ->
        if state.drawn? and state.tty?, do: IO.write(:stderr, "\r\e[2K")
        :ok
    end
  end

  defp maybe_draw(%{quiet: true} = state), do: state

  defp maybe_draw(state) do
    now = System.monotonic_time(:millisecond)
    interval = if state.tty?, do: 100, else: 5_000

    if state.last == nil or now - state.last >= interval do
      line = progress_line(state.latest)

      if state.tty?,
        do: IO.write(:stderr, "\r\e[2K" <> line),
        else: IO.write(:stderr, line <> "\n")

      %{state | last: now, drawn?: true}
    else
      state
    end
  end

  defp duration(seconds) do
    s = max(0, round(seconds))
    "#{div(s, 3600)}:#{pad(div(rem(s, 3600), 60))}:#{pad(rem(s, 60))}"
  end

  defp pad(n), do: n |> Integer.to_string() |> String.pad_leading(2, "0")

  defp delimit(n) when is_integer(n) do
    n
    |> Integer.to_string()
    |> String.reverse()
    |> String.graphemes()
    |> Enum.chunk_every(3)
    |> Enum.map_join(",", &Enum.join/1)
    |> String.reverse()
  end

  defp flag(name), do: name |> Atom.to_string() |> String.replace("_", "-")
end
