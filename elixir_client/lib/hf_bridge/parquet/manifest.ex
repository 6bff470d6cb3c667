defmodule HFBridge.Parquet.Manifest do
  @moduledoc """
  The `_manifest.json` of a Parquet export, parsed and checked.

  An export publishes its manifest last, so a manifest means every file it
  lists is complete. Format `hf_bridge.export/v1`:

      {
        "format": "hf_bridge.export/v1",
        "hf_bridge_version": "0.1.0",
        "job_id": "...",
        "spec": {...the DatasetSpec exported...},
        "schema": {"text": "...", "ipc_stream_base64": "..."},
        "features": {...HF Features...} | null,
        "files": [{"path", "rows", "bytes", "sha256", "row_groups"}, ...],
        "totals": {"rows", "bytes", "files"},
        "created_at": "2026-01-01T00:00:00Z", "finished_at": "...",
        "writer": {...writer options and library versions...},
        "shards": null | {...}
      }

  Fields of the struct:

    * `:uri` — where the manifest was read from (absolute path or `s3://` URI).
    * `:base` — the export's directory or `s3://` prefix; file paths are
      relative to it.
    * `:files` — one map per data file, in order: `:path` (relative, as in the
      manifest), `:uri` (absolute path or `s3://` URI), `:rows`, `:bytes`,
      `:sha256` (lowercase hex), `:row_groups`.
    * `:rows`, `:bytes`, `:file_count` — the totals.
    * `:schema` — the Arrow schema as text; `:arrow_schema` — the same as an
      Arrow IPC stream holding only the schema message (`HFBridge.Arrow` and
      Explorer's `load_ipc_stream` read it).
    * `:features` — HF `Features` as a map (string keys), or `nil`.
    * `:spec` — the exported `DatasetSpec` (string keys).
    * `:created_at`, `:finished_at` — `DateTime`s (UTC).
    * `:format`, `:hf_bridge_version`, `:job_id`, `:writer`, `:shards`.
    * `:raw` — the whole decoded JSON object.
  """

  alias HFBridge.Error
  alias HFBridge.Parquet.Location

  @format "hf_bridge.export/v1"

  defstruct uri: nil,
            base: nil,
            format: @format,
            hf_bridge_version: nil,
            job_id: "",
            spec: %{},
            schema: "",
            arrow_schema: "",
            features: nil,
            files: [],
            rows: 0,
            bytes: 0,
            file_count: 0,
            created_at: nil,
            finished_at: nil,
            writer: %{},
            shards: nil,
            raw: %{}

  @typedoc "One data file of an export."
  @type file :: %{
          path: String.t(),
          uri: String.t(),
          rows: non_neg_integer(),
          bytes: non_neg_integer(),
          sha256: String.t(),
          row_groups: non_neg_integer()
        }

  @type t :: %__MODULE__{
          uri: String.t() | nil,
          base: String.t() | nil,
          format: String.t(),
          hf_bridge_version: String.t() | nil,
          job_id: String.t(),
          spec: map(),
          schema: String.t(),
          arrow_schema: binary(),
          features: map() | nil,
          files: [file()],
          rows: non_neg_integer(),
          bytes: non_neg_integer(),
          file_count: non_neg_integer(),
          created_at: DateTime.t() | nil,
          finished_at: DateTime.t() | nil,
          writer: map(),
          shards: map() | nil,
          raw: map()
        }

  @doc "The manifest format this module reads, `#{@format}`."
  @spec format() :: String.t()
  def format, do: @format

  @doc """
  Parses manifest JSON text. `uri` is where the manifest lives (a local
  path or `s3://` URI); data file locations are resolved against its
  directory.
  """
  @spec parse(binary(), String.t()) :: {:ok, t()} | {:error, Error.t()}
  def parse(json, uri) when is_binary(json) and is_binary(uri) do
    with {:ok, location} <- Location.parse(uri) do
      case HFBridge.JSON.decode(json) do
        {:ok, map} when is_map(map) ->
          from_map(map, location)

        {:ok, other} ->
          malformed(uri, "expected a JSON object, got #{inspect(other, limit: 5)}")

        {:error, %Error{message: message}} ->
          malformed(uri, "not valid JSON: #{message}")

        {:error, reason} ->
          malformed(uri, "not valid JSON: #{inspect(reason)}")
      end
    end
  end

  @doc """
  Builds a manifest from its decoded JSON object (string keys) and its
  parsed location. Checks the format, every file entry, and that the totals
  agree with the files.
  """
  @spec from_map(map(), Location.t()) :: {:ok, t()} | {:error, Error.t()}
  def from_map(map, location) when is_map(map) do
    uri = Location.to_string(location)
    base = Location.dirname(location)

    with :ok <- check_format(map, uri),
         {:ok, files} <- files(map, base, uri),
         {:ok, totals} <- totals(map, files, uri),
         {:ok, schema_text, arrow_schema} <- schema(map, uri),
         {:ok, created_at} <- timestamp(map, "created_at", uri),
         {:ok, finished_at} <- timestamp(map, "finished_at", uri) do
      {:ok,
       %__MODULE__{
         uri: uri,
         base: Location.to_string(base),
         format: map["format"],
         hf_bridge_version: map["hf_bridge_version"],
         job_id: map["job_id"] || "",
         spec: map_or(map["spec"], %{}),
         schema: schema_text,
         arrow_schema: arrow_schema,
         features: map_or(map["features"], nil),
         files: files,
         rows: totals.rows,
         bytes: totals.bytes,
         file_count: totals.files,
         created_at: created_at,
         finished_at: finished_at,
         writer: map_or(map["writer"], %{}),
         shards: map_or(map["shards"], nil),
         raw: map
       }}
    end
  end

  @doc "The absolute paths / `s3://` URIs of the data files, in order."
  @spec file_uris(t()) :: [String.t()]
  def file_uris(%__MODULE__{files: files}), do: Enum.map(files, & &1.uri)

  # -- checks --------------------------------------------------------------------

  defp check_format(%{"format" => @format}, _uri), do: :ok

  defp check_format(%{"format" => other}, uri),
    do:
      malformed(
        uri,
        "unsupported manifest format #{inspect(other)}; this client reads #{@format}"
      )

  defp check_format(_map, uri),
    do: malformed(uri, "not an hf_bridge export manifest (no \"format\" field)")

  defp files(%{"files" => files}, base, uri) when is_list(files) do
    files
    |> Enum.with_index()
    |> Enum.reduce_while({:ok, []}, fn {entry, index}, {:ok, acc} ->
      case file(entry, base) do
        {:ok, file} -> {:cont, {:ok, [file | acc]}}
        {:error, reason} -> {:halt, malformed(uri, "files[#{index}]: #{reason}")}
      end
    end)
    |> case do
      {:ok, acc} -> {:ok, Enum.reverse(acc)}
      error -> error
    end
  end

  defp files(_map, _base, uri), do: malformed(uri, "\"files\" must be a list")

  defp file(%{"path" => path, "rows" => rows, "bytes" => bytes, "sha256" => sha} = entry, base) do
    row_groups = Map.get(entry, "row_groups", 0)

    cond do
      not Location.safe_relative?(path) ->
        {:error, "path #{inspect(path)} is not a plain relative file name"}

      not non_neg_int?(rows) or not non_neg_int?(bytes) or not non_neg_int?(row_groups) ->
        {:error, "rows, bytes and row_groups must be non-negative integers"}

      not sha256?(sha) ->
        {:error, "sha256 must be 64 hexadecimal digits, got #{inspect(sha, limit: 5)}"}

      true ->
        {:ok,
         %{
           path: path,
           uri: base |> Location.join(path) |> Location.to_string(),
           rows: rows,
           bytes: bytes,
           sha256: String.downcase(sha),
           row_groups: row_groups
         }}
    end
  end

  defp file(other, _base),
    do:
      {:error,
       "expected an object with path, rows, bytes and sha256, got #{inspect(other, limit: 5)}"}

  defp totals(map, files, uri) do
    sums = %{
      rows: files |> Enum.map(& &1.rows) |> Enum.sum(),
      bytes: files |> Enum.map(& &1.bytes) |> Enum.sum(),
      files: length(files)
    }

    case map["totals"] do
      nil ->
        {:ok, sums}

      %{"rows" => rows, "bytes" => bytes, "files" => count} ->
        if {rows, bytes, count} == {sums.rows, sums.bytes, sums.files} do
          {:ok, sums}
        else
          malformed(
            uri,
            "totals (#{inspect(rows)} rows, #{inspect(bytes)} bytes, #{inspect(count)} files) " <>
              "disagree with the files listed (#{sums.rows} rows, #{sums.bytes} bytes, #{sums.files} files)"
          )
        end

      other ->
        malformed(
          uri,
          "\"totals\" must be an object with rows, bytes and files, got #{inspect(other, limit: 5)}"
        )
    end
  end

  defp schema(map, uri) do
    case map["schema"] do
      nil ->
        {:ok, "", ""}

      %{} = schema ->
        text = schema["text"] || ""

        case schema["ipc_stream_base64"] do
          nil ->
            {:ok, text, ""}

          encoded when is_binary(encoded) ->
            case Base.decode64(encoded, ignore: :whitespace) do
              {:ok, bytes} -> {:ok, text, bytes}
              :error -> malformed(uri, "schema.ipc_stream_base64 is not valid base64")
            end

          _ ->
            malformed(uri, "schema.ipc_stream_base64 must be a string")
        end

      other ->
        malformed(uri, "\"schema\" must be an object, got #{inspect(other, limit: 5)}")
    end
  end

  defp timestamp(map, key, uri) do
    case map[key] do
      nil ->
        {:ok, nil}

      text when is_binary(text) ->
        case DateTime.from_iso8601(text) do
          {:ok, datetime, _offset} -> {:ok, datetime}
          {:error, _} -> malformed(uri, "#{key} #{inspect(text)} is not an RFC 3339 timestamp")
        end

      other ->
        malformed(uri, "#{key} must be a string, got #{inspect(other, limit: 5)}")
    end
  end

  defp map_or(value, _default) when is_map(value), do: value
  defp map_or(_value, default), do: default

  defp non_neg_int?(value), do: is_integer(value) and value >= 0

  defp sha256?(value) when is_binary(value) and byte_size(value) == 64,
    do: String.match?(value, ~r/\A[0-9a-fA-F]{64}\z/)

  defp sha256?(_), do: false

  defp malformed(uri, message),
    do:
      {:error,
       Error.new(:parquet, :malformed, "manifest #{uri}: #{message}", details: %{uri: uri})}
end
