defmodule HFBridge.Parquet.Location do
  @moduledoc """
  Where an export lives: a local directory or an `s3://bucket/prefix` URI.

  Exports are addressed by their directory (or prefix) or by their
  `_manifest.json`; this module turns either form into the manifest's
  location and joins data file names onto the export's base.
  """

  alias HFBridge.Error

  @manifest "_manifest.json"

  @typedoc "A parsed location: a local absolute path, or an S3 bucket and key."
  @type t :: {:local, Path.t()} | {:s3, bucket :: String.t(), key :: String.t()}

  @doc "The file name of an export's manifest, `#{@manifest}`."
  @spec manifest_name() :: String.t()
  def manifest_name, do: @manifest

  @doc """
  Parses a local path (made absolute) or an `s3://bucket/key` URI.

      iex> HFBridge.Parquet.Location.parse("s3://bucket/exports/run1")
      {:ok, {:s3, "bucket", "exports/run1"}}
  """
  @spec parse(String.t()) :: {:ok, t()} | {:error, Error.t()}
  def parse("s3://" <> rest = uri) do
    case String.split(rest, "/", parts: 2) do
      [bucket | key] when bucket != "" ->
        key = key |> List.first("") |> String.trim("/")

        if key |> String.split("/", trim: true) |> Enum.any?(&(&1 in [".", ".."])) do
          error("S3 URI #{inspect(uri)} has '.' or '..' segments")
        else
          {:ok, {:s3, bucket, key}}
        end

      _ ->
        error("S3 URI #{inspect(uri)} names no bucket; expected s3://bucket/prefix")
    end
  end

  def parse(path) when is_binary(path) and path != "" do
    cond do
      String.contains?(path, "://") ->
        error("#{inspect(path)}: only local paths and s3://bucket/prefix URIs are supported")

      true ->
        {:ok, {:local, Path.expand(path)}}
    end
  end

  def parse(other),
    do: error("expected a local path or an s3:// URI, got: #{inspect(other, limit: 10)}")

  @doc """
  The manifest location for an export given by its directory/prefix or by the
  manifest itself. A local directory (or a path not ending in `.json`) gets
  `#{@manifest}` appended; an S3 key not ending in `.json` likewise.
  """
  @spec manifest(t()) :: t()
  def manifest({:local, path}) do
    if String.ends_with?(path, ".json") and not File.dir?(path),
      do: {:local, path},
      else: {:local, Path.join(path, @manifest)}
  end

  def manifest({:s3, bucket, key}) do
    cond do
      String.ends_with?(key, ".json") -> {:s3, bucket, key}
      key == "" -> {:s3, bucket, @manifest}
      true -> {:s3, bucket, key <> "/" <> @manifest}
    end
  end

  @doc "The directory (or S3 prefix) holding a file location."
  @spec dirname(t()) :: t()
  def dirname({:local, path}), do: {:local, Path.dirname(path)}

  def dirname({:s3, bucket, key}) do
    case String.split(key, "/") do
      [_single] -> {:s3, bucket, ""}
      parts -> {:s3, bucket, parts |> Enum.drop(-1) |> Enum.join("/")}
    end
  end

  @doc "Joins a relative file name onto a directory location."
  @spec join(t(), String.t()) :: t()
  def join({:local, dir}, name), do: {:local, Path.join(dir, name)}
  def join({:s3, bucket, ""}, name), do: {:s3, bucket, name}
  def join({:s3, bucket, prefix}, name), do: {:s3, bucket, prefix <> "/" <> name}

  @doc "The string form: the absolute local path, or `s3://bucket/key`."
  @spec to_string(t()) :: String.t()
  def to_string({:local, path}), do: path
  def to_string({:s3, bucket, ""}), do: "s3://" <> bucket
  def to_string({:s3, bucket, key}), do: "s3://" <> bucket <> "/" <> key

  @doc """
  Whether `name` is a safe relative file name inside an export: not empty,
  not absolute, no `.`/`..` segments, no URI scheme, no backslashes.
  """
  @spec safe_relative?(term()) :: boolean()
  def safe_relative?(name) when is_binary(name) and name != "" do
    segments = String.split(name, "/")

    not String.starts_with?(name, "/") and not String.contains?(name, ["://", "\\", <<0>>]) and
      Enum.all?(segments, &(&1 not in ["", ".", ".."]))
  end

  def safe_relative?(_), do: false

  defp error(message), do: {:error, Error.new(:parquet, :invalid_argument, message)}
end
