defmodule HFBridge.Parquet.Explorer do
  @moduledoc """
  Loads exported Parquet into `Explorer.DataFrame`s; used by
  `HFBridge.Parquet.load/2`.

  Explorer is optional: this module checks at run time that
  `Explorer.DataFrame` is loaded (so it works whatever order the host
  application's dependencies were compiled in) and otherwise returns
  `{:error, %HFBridge.Error{code: :unavailable}}`.
  """

  # Explorer is an optional dependency: every call to it is made after
  # checking at run time that it is loaded, through data_frame/0, so the
  # compiler neither expects it nor counts it as a dependency of :hf_bridge.

  alias HFBridge.Error
  alias HFBridge.Parquet.Manifest

  @doc "Whether `Explorer.DataFrame` is available."
  @spec available?() :: boolean()
  defdelegate available?, to: HFBridge.Explorer

  @doc "`:ok` when Explorer is available, else the `:unavailable` error."
  @spec ensure_available() :: :ok | {:error, Error.t()}
  def ensure_available do
    HFBridge.Explorer.ensure_available(
      :parquet,
      "HFBridge.Parquet.load/2 needs",
      "read the files listed by HFBridge.Parquet.files/2 with another Parquet reader"
    )
  end

  @doc """
  Reads every file of `manifest` and concatenates the frames in order.
  `opts` are validated options of `HFBridge.Parquet.load/2` (`:lazy`,
  `:columns`, `:config`).
  """
  @spec load(Manifest.t(), keyword()) :: {:ok, struct()} | {:error, Error.t()}
  def load(%Manifest{} = manifest, opts) do
    with :ok <- ensure_available() do
      case manifest.files do
        [] -> empty(manifest, opts)
        files -> read_all(files, opts)
      end
    end
  end

  defp read_all(files, opts) do
    read_opts =
      [lazy: opts[:lazy], columns: opts[:columns], config: opts[:config]]
      |> Enum.reject(fn {key, value} -> is_nil(value) or (key == :lazy and value == false) end)

    files
    |> Enum.reduce_while({:ok, []}, fn file, {:ok, acc} ->
      case from_parquet(file.uri, read_opts) do
        {:ok, df} -> {:cont, {:ok, [df | acc]}}
        {:error, error} -> {:halt, {:error, error}}
      end
    end)
    |> case do
      {:ok, [df]} -> {:ok, df}
      {:ok, frames} -> concat(Enum.reverse(frames))
      error -> error
    end
  end

  defp from_parquet(uri, read_opts) do
    case data_frame().from_parquet(uri, read_opts) do
      {:ok, df} -> {:ok, df}
      {:error, reason} -> {:error, explorer_error("cannot read #{uri}", reason, uri)}
    end
  rescue
    exception -> {:error, explorer_error("cannot read #{uri}", exception, uri)}
  end

  defp concat(frames) do
    {:ok, data_frame().concat_rows(frames)}
  rescue
    exception -> {:error, explorer_error("cannot concatenate the export's files", exception, nil)}
  end

  # An export with no rows has no files; its schema (an IPC stream with no
  # batches) still gives the columns.
  defp empty(%Manifest{arrow_schema: ""} = manifest, _opts) do
    {:error,
     Error.new(
       :parquet,
       :malformed,
       "manifest #{manifest.uri} lists no files and holds no schema"
     )}
  end

  defp empty(manifest, opts) do
    with {:ok, df} <- data_frame().load_ipc_stream(manifest.arrow_schema) do
      df = if opts[:columns], do: data_frame().select(df, opts[:columns]), else: df
      {:ok, if(opts[:lazy], do: data_frame().lazy(df), else: df)}
    else
      {:error, reason} ->
        {:error, explorer_error("cannot build an empty frame from the schema", reason, nil)}
    end
  rescue
    exception ->
      {:error, explorer_error("cannot build an empty frame from the schema", exception, nil)}
  end

  defp explorer_error(what, reason, uri) do
    text = if is_exception(reason), do: Exception.message(reason), else: inspect(reason)
    Error.new(:parquet, :explorer_error, "#{what}: #{text}", details: %{uri: uri, reason: reason})
  end

  defp data_frame, do: Explorer.DataFrame
end
