defmodule HFBridge.Export do
  @export_schema [
    overwrite: [
      type: :boolean,
      default: false,
      doc: "Replace an existing export at the destination."
    ],
    resume: [
      type: :boolean,
      default: false,
      doc:
        "Continue an interrupted export at the destination from its checkpoint (excludes `:overwrite`)."
    ],
    compression: [
      type: {:custom, __MODULE__, :check_compression},
      default: nil,
      type_doc: "`:zstd | :snappy | :gzip | :lz4 | :brotli | :none | nil`",
      doc: "Parquet codec (atom or string); `nil` uses the server default, zstd."
    ],
    max_file_bytes: [
      type: {:or, [:pos_integer, nil]},
      default: nil,
      type_doc: "`pos_integer() | nil`",
      doc: "Start a new file once one reaches this size; `nil` uses the server default (256 MiB)."
    ],
    row_group_rows: [
      type: {:or, [:pos_integer, nil]},
      default: nil,
      type_doc: "`pos_integer() | nil`",
      doc: "Rows per Parquet row group; `nil` uses the server default (100,000)."
    ],
    cdc: [
      type: :boolean,
      default: false,
      doc:
        "Content-defined chunking of data pages, so re-exports of similar data deduplicate well on upload."
    ],
    batch_size: [
      type: {:or, [:pos_integer, nil]},
      default: nil,
      type_doc: "`pos_integer() | nil`",
      doc: "Rows per read from the dataset; `nil` uses the server default (1,000)."
    ],
    progress: [
      type: {:custom, __MODULE__, :check_progress},
      default: nil,
      type_doc: "`pid() | (progress() -> any()) | nil`",
      doc:
        "Where progress goes: a pid receives `{:hf_bridge_export, ref, progress}` messages, a " <>
          "one-argument function is called with each `progress` map."
    ],
    progress_ref: [
      type: :any,
      default: nil,
      type_doc: "`term()`",
      doc: "The `ref` of progress messages; defaults to a new reference (`make_ref/0`)."
    ],
    timeout: [
      type: :timeout,
      default: 300_000,
      doc:
        "Longest wait for the next event from the server, in milliseconds (opening a dataset " <>
          "can take a while; the server reports progress a few times a second after that)."
    ]
  ]

  @dataset_schema Keyword.drop(HFBridge.Spec.schema(), [:batch_size, :max_batch_bytes])

  @moduledoc """
  Writes a dataset to Parquet through the server's `Export` RPC.

  The server streams the dataset into size-bounded Parquet files (zstd,
  page index, checksums) at a local directory (under its export roots) or
  `s3://bucket/prefix`, writes them under temporary names, and publishes
  `_manifest.json` last. `run/4` follows the export's progress and returns
  the parsed manifest.

      {:ok, client} = HFBridge.Client.connect()

      {:ok, manifest} =
        HFBridge.Export.run(client, "parquet", "exports/reviews",
          data_files: "data/*.parquet",
          columns: ["text", "label"],
          compression: :zstd,
          progress: fn p -> IO.write("\\r\#{p.rows} rows") end
        )

      manifest.rows        #=> 25000
      manifest.files       #=> [%{path: "part-00000.parquet", rows: ..., sha256: ...}, ...]

  The first argument is a connected `HFBridge.Client` or the options for
  `HFBridge.Client.connect/1` (a keyword list; `[]` starts a local server),
  in which case the connection is opened for the export and closed after.

  ## Progress

  A progress map is `%{rows:, bytes:, files:, total_rows:, elapsed_seconds:}`:
  rows and Parquet bytes written so far, files published, the total row count
  when the server knows it (else `nil`) and seconds since the export began.
  With `progress: pid` each one arrives as `{:hf_bridge_export, ref, progress}`
  (`ref` is `:progress_ref`); with `progress: fun` the function is called with
  it in the calling process. Each one is also a
  `[:hf_bridge, :export, :progress]` telemetry event, and the whole export is
  a `[:hf_bridge, :export]` span (see `HFBridge.Telemetry`).

  ## Export options

  #{HFBridge.Options.docs(@export_schema)}

  ## Dataset options

  What to export, as for `HFBridge.Spec.build/2`:

  #{HFBridge.Options.docs(@dataset_schema)}

  Unknown options are errors naming the option. Server-side failures come
  back as `{:error, %HFBridge.Error{}}` with the gRPC status as `code`:
  `:failed_precondition` for an existing export without `overwrite: true`,
  `:permission_denied` for a destination outside the export roots,
  `:not_found` for a missing dataset or bucket, `:invalid_argument` for bad
  options.
  """

  alias HFBridge.{Client, Error, Options, Spec, Telemetry}
  alias HFBridge.Parquet.Manifest

  @compressions ~w(zstd snappy gzip lz4 brotli none)

  @typedoc "Progress of a running export."
  @type progress :: %{
          rows: non_neg_integer(),
          bytes: non_neg_integer(),
          files: non_neg_integer(),
          total_rows: non_neg_integer() | nil,
          elapsed_seconds: float()
        }

  @doc "The schema (see `HFBridge.Options`) of the export options (without the dataset options)."
  @spec schema() :: Options.schema()
  def schema, do: @export_schema

  @doc "Every option `run/4` accepts: export options and dataset options."
  @spec option_names() :: [atom()]
  def option_names, do: Keyword.keys(@export_schema) ++ Keyword.keys(@dataset_schema)

  @doc """
  Exports `dataset` to `destination` (a directory on the server's machine,
  under its export roots, or `s3://bucket/prefix`) and returns the parsed
  manifest once the export is published. See the module docs for options.
  """
  @spec run(Client.t() | keyword(), String.t(), String.t(), keyword()) ::
          {:ok, Manifest.t()} | {:error, Error.t()}
  def run(client_or_opts, dataset, destination, opts \\ [])

  def run(%Client{} = client, dataset, destination, opts) do
    with {:ok, request, opts} <- request(dataset, destination, opts) do
      stream(client, request, opts)
    end
  end

  def run(connect_opts, dataset, destination, opts) when is_list(connect_opts) do
    with {:ok, request, opts} <- request(dataset, destination, opts),
         {:ok, client} <- Client.connect(connect_opts) do
      try do
        stream(client, request, opts)
      after
        Client.disconnect(client)
      end
    end
  end

  def run(other, _dataset, _destination, _opts) do
    {:error,
     Error.new(
       :options,
       :invalid_option,
       "expected an HFBridge.Client or connect options (a keyword list), got: #{inspect(other, limit: 10)}"
     )}
  end

  @doc """
  Validates `opts` and builds the `ExportRequest` map. Returns it with the
  validated export options (progress target, timeout, ...).
  """
  @spec request(String.t(), String.t(), keyword()) ::
          {:ok, map(), keyword()} | {:error, Error.t()}
  def request(dataset, destination, opts) do
    with :ok <- check_destination(destination),
         :ok <- check_keyword(opts),
         {:ok, _all} <- Options.validate(opts, @export_schema ++ @dataset_schema),
         {export_opts, dataset_opts} = Options.take(opts, @export_schema),
         {:ok, export} <- Options.validate(export_opts, @export_schema),
         :ok <- check_exclusive(export),
         {:ok, spec} <- Spec.build(dataset, dataset_opts) do
      request = %{
        spec: spec,
        destination: destination,
        max_file_bytes: export[:max_file_bytes] || 0,
        row_group_rows: export[:row_group_rows] || 0,
        compression: export[:compression] || "",
        overwrite: export[:overwrite],
        content_defined_chunking: export[:cdc],
        batch_size: export[:batch_size] || 0,
        resume: export[:resume]
      }

      export = Keyword.update!(export, :progress_ref, &(&1 || make_ref()))
      {:ok, request, export}
    end
  end

  # -- the call ------------------------------------------------------------------

  defp stream(client, request, opts) do
    meta = %{dataset: request.spec.path, destination: request.destination}

    Telemetry.span([:hf_bridge, :export], meta, fn ->
      result =
        case Client.server_stream(client, :Export, request, []) do
          {:ok, stream} -> follow(stream, opts, meta)
          {:error, %Error{}} = error -> error
        end

      case result do
        {:ok, %Manifest{} = m} ->
          {result,
           Map.merge(meta, %{
             rows: m.rows,
             bytes: m.bytes,
             files: m.file_count,
             manifest_uri: m.uri
           })}

        {:error, error} ->
          {result, Map.put(meta, :error, error)}
      end
    end)
  end

  defp follow(stream, opts, meta) do
    loop(stream, opts, meta)
  catch
    kind, reason ->
      Client.cancel(stream)
      :erlang.raise(kind, reason, __STACKTRACE__)
  end

  defp loop(stream, opts, meta) do
    case Client.recv(stream, opts[:timeout]) do
      {:ok, event} ->
        case event(event) do
          {:progress, progress} ->
            report(progress, opts, meta)
            loop(stream, opts, meta)

          {:result, result} ->
            finish(stream, result, opts)

          :empty ->
            loop(stream, opts, meta)
        end

      :done ->
        {:error,
         Error.new(:grpc, :internal, "the server ended the export without reporting a result")}

      {:error, %Error{code: code} = error} when code in [:timeout, :deadline_exceeded] ->
        Client.cancel(stream)

        {:error,
         %{
           error
           | message:
               error.message <>
                 " (no export event for #{opts[:timeout]} ms, so the export was stopped; " <>
                 "raise :timeout to wait longer, and pass resume: true to continue it)"
         }}

      {:error, %Error{}} = error ->
        Client.cancel(stream)
        error
    end
  end

  # The result is the last event; wait for the end of the stream so the
  # call completes cleanly, but the export is published either way.
  defp finish(stream, result, opts) do
    parsed = Manifest.parse(result.manifest_json, result.manifest_uri)

    case Client.recv(stream, min_timeout(opts[:timeout], 30_000)) do
      :done -> :ok
      _ -> Client.cancel(stream)
    end

    parsed
  end

  defp min_timeout(:infinity, other), do: other
  defp min_timeout(a, b), do: min(a, b)

  # ExportEvent's oneof, decoded as fields set to nil when absent; the tagged
  # form {member, value} is accepted as well.
  defp event(%{progress: %{} = progress}), do: {:progress, progress}
  defp event(%{result: %{} = result}), do: {:result, result}
  defp event(%{event: {:progress, progress}}), do: {:progress, progress}
  defp event(%{event: {:result, result}}), do: {:result, result}
  defp event(_), do: :empty

  defp report(progress, opts, meta) do
    progress = %{
      rows: progress[:rows] || 0,
      bytes: progress[:bytes] || 0,
      files: progress[:files] || 0,
      total_rows: progress[:total_rows],
      elapsed_seconds: (progress[:elapsed_seconds] || 0) * 1.0
    }

    Telemetry.execute(
      [:hf_bridge, :export, :progress],
      Map.take(progress, [:rows, :bytes, :files, :elapsed_seconds]),
      Map.put(meta, :total_rows, progress.total_rows)
    )

    case opts[:progress] do
      nil -> :ok
      pid when is_pid(pid) -> send(pid, {:hf_bridge_export, opts[:progress_ref], progress})
      fun when is_function(fun, 1) -> fun.(progress)
    end
  end

  # -- validation ----------------------------------------------------------------

  defp check_destination(destination) when is_binary(destination) do
    if String.trim(destination) == "" do
      invalid("destination must be a directory or s3://bucket/prefix, got an empty string")
    else
      :ok
    end
  end

  defp check_destination(other),
    do:
      invalid(
        "destination must be a string (a directory or s3://bucket/prefix), got: #{inspect(other, limit: 10)}"
      )

  defp check_keyword(opts) do
    if Keyword.keyword?(opts),
      do: :ok,
      else: invalid("options must be a keyword list, got: #{inspect(opts, limit: 10)}")
  end

  defp check_exclusive(export) do
    if export[:overwrite] and export[:resume] do
      invalid(
        "options :overwrite and :resume exclude each other: resume continues an export, overwrite replaces it"
      )
    else
      :ok
    end
  end

  defp invalid(message), do: {:error, Error.new(:options, :invalid_option, message)}

  @doc false
  @spec check_compression(term()) :: {:ok, String.t() | nil} | {:error, String.t()}
  def check_compression(nil), do: {:ok, nil}

  def check_compression(value) when is_atom(value) and not is_boolean(value),
    do: check_compression(Atom.to_string(value))

  def check_compression(value) when is_binary(value) do
    normalized = value |> String.trim() |> String.downcase()
    normalized = if normalized == "uncompressed", do: "none", else: normalized

    if normalized in @compressions do
      {:ok, normalized}
    else
      {:error, "expected one of #{Enum.join(@compressions, ", ")}, got: #{inspect(value)}"}
    end
  end

  def check_compression(other),
    do:
      {:error,
       "expected one of #{Enum.join(@compressions, ", ")}, got: #{inspect(other, limit: 10)}"}

  @doc false
  @spec check_progress(term()) ::
          {:ok, pid() | (progress() -> any()) | nil} | {:error, String.t()}
  def check_progress(nil), do: {:ok, nil}
  def check_progress(pid) when is_pid(pid), do: {:ok, pid}
  def check_progress(fun) when is_function(fun, 1), do: {:ok, fun}

  def check_progress(other),
    do: {:error, "expected a pid or a one-argument function, got: #{inspect(other, limit: 10)}"}
end
