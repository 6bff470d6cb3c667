defmodule HFBridge.Parquet do
  @moduledoc """
  Reading what an export wrote: its manifest, its data files, their
  checksums, and — with Explorer — the data itself.

  An export (see `HFBridge.Export` and `mix hf.export`) is a directory or
  `s3://bucket/prefix` holding `part-NNNNN.parquet` files and a
  `_manifest.json` published last. Every function here takes the export's
  location (the directory/prefix or the manifest itself) or an
  already-read `HFBridge.Parquet.Manifest`.

      {:ok, manifest} = HFBridge.Parquet.read_manifest("exports/imdb")
      manifest.rows
      #=> 25000
      :ok = HFBridge.Parquet.verify(manifest)
      {:ok, df} = HFBridge.Parquet.load(manifest)          # needs :explorer

  ## Optional libraries

    * `load/2` needs the `:explorer` package and reads files with
      `Explorer.DataFrame.from_parquet/2`, S3 included (pass Explorer's own
      S3 settings as `config:`).
    * Everything on `s3://` except `load/2` (reading a manifest, verifying
      checksums, listing and downloading — see `HFBridge.Parquet.S3`) needs
      the `:ex_aws` package. `HFBridge.ExAws.HttpClient` lets ExAws talk
      HTTP through OTP's `:httpc`, so no other HTTP client is required.

  Without them the core still compiles and works on local exports; the
  functions that need them return
  `{:error, %HFBridge.Error{code: :unavailable}}` naming the package.
  """

  alias HFBridge.Error
  alias HFBridge.Parquet.{Location, Manifest}

  @typedoc "An export location (directory, `s3://` prefix or manifest path) or a manifest."
  @type source :: String.t() | Manifest.t()

  @load_schema [
    lazy: [
      type: :boolean,
      default: false,
      doc: "Return a lazy data frame (nothing is read until collected)."
    ],
    columns: [
      type: {:or, [{:list, :string}, nil]},
      default: nil,
      type_doc: "`[String.t()] | nil`",
      doc: "Columns to read; `nil` reads all."
    ],
    config: [
      type: :any,
      default: nil,
      type_doc: "`term()`",
      doc:
        "Explorer's S3 settings for `s3://` exports (e.g. `FSS.S3.config_from_system_env()` or a " <>
          "keyword list with `:access_key_id`, `:secret_access_key`, `:region`, `:endpoint`), passed " <>
          "to `Explorer.DataFrame.from_parquet/2` as `:config`."
    ],
    verify: [
      type: :boolean,
      default: false,
      doc: "Check every file's SHA-256 against the manifest first."
    ],
    s3: [
      type: :keyword_list,
      default: [],
      doc: "ExAws options used to read an `s3://` manifest (see `HFBridge.Parquet.S3`)."
    ]
  ]

  @doc """
  Reads and checks an export's manifest.

  `source` is the export directory or `s3://bucket/prefix`, or the path/URI
  of its `_manifest.json`. Options: `:s3` — ExAws options for `s3://`
  sources (see `HFBridge.Parquet.S3`).
  """
  @spec read_manifest(String.t(), keyword()) :: {:ok, Manifest.t()} | {:error, Error.t()}
  def read_manifest(source, opts \\ []) do
    with {:ok, opts} <- HFBridge.Options.validate(opts, s3: [type: :keyword_list, default: []]),
         {:ok, location} <- Location.parse(source) do
      location = Location.manifest(location)
      uri = Location.to_string(location)

      with {:ok, text} <- read_location(location, opts[:s3]) do
        Manifest.parse(text, uri)
      end
    end
  end

  @doc """
  The data files of an export, in order: absolute local paths or `s3://`
  URIs. Given a location instead of a manifest, reads the manifest first
  (options as `read_manifest/2`).
  """
  @spec files(source(), keyword()) :: {:ok, [String.t()]} | {:error, Error.t()}
  def files(source, opts \\ [])
  def files(%Manifest{} = manifest, _opts), do: {:ok, Manifest.file_uris(manifest)}

  def files(source, opts) do
    with {:ok, manifest} <- read_manifest(source, opts), do: files(manifest, opts)
  end

  @doc """
  Checks every data file of an export against its manifest: the file exists,
  has the recorded size, and its SHA-256 matches.

  Local files are hashed with `:crypto` as they are read, in chunks (memory
  stays small). `s3://` files are fetched in ranges through ExAws (see
  `HFBridge.Parquet.S3`). Options: `:s3` (ExAws options), `:max_concurrency`
  (files checked at once; defaults to the number of schedulers).

  Returns `:ok`, or the first problem: code `:not_found` for a missing file,
  `:data_loss` for a size or checksum mismatch (with `details` naming the
  file, expected and actual values).
  """
  @spec verify(source(), keyword()) :: :ok | {:error, Error.t()}
  def verify(source, opts \\ [])

  def verify(%Manifest{} = manifest, opts) do
    schema = [
      s3: [type: :keyword_list, default: []],
      max_concurrency: [type: :pos_integer, default: System.schedulers_online()]
    ]

    with {:ok, opts} <- HFBridge.Options.validate(opts, schema) do
      manifest.files
      |> Task.async_stream(&verify_file(&1, opts[:s3]),
        max_concurrency: opts[:max_concurrency],
        ordered: true,
        timeout: :infinity
      )
      |> Enum.find_value(:ok, fn
        {:ok, :ok} ->
          nil

        {:ok, {:error, %Error{}} = error} ->
          error

        {:exit, reason} ->
          {:error, Error.new(:parquet, :internal, "verification crashed: #{inspect(reason)}")}
      end)
    end
  end

  def verify(source, opts) do
    {s3, rest} = Keyword.split(opts, [:s3])

    with {:ok, manifest} <- read_manifest(source, s3), do: verify(manifest, s3 ++ rest)
  end

  @doc """
  Loads an export into an `Explorer.DataFrame` (needs the `:explorer`
  package): every data file is read with `Explorer.DataFrame.from_parquet/2`
  and the frames are concatenated in manifest order. An export without files
  gives an empty frame with the export's columns.

  ## Options

  #{HFBridge.Options.docs(@load_schema)}

  Without Explorer, returns `{:error, %HFBridge.Error{code: :unavailable}}`.
  """
  @spec load(source(), keyword()) :: {:ok, struct()} | {:error, Error.t()}
  def load(source, opts \\ []) do
    with :ok <- HFBridge.Parquet.Explorer.ensure_available(),
         {:ok, opts} <- HFBridge.Options.validate(opts, @load_schema),
         {:ok, manifest} <- manifest(source, opts[:s3]),
         :ok <- if(opts[:verify], do: verify(manifest, s3: opts[:s3]), else: :ok) do
      HFBridge.Parquet.Explorer.load(manifest, opts)
    end
  end

  # -- internals -----------------------------------------------------------------

  defp manifest(%Manifest{} = manifest, _s3), do: {:ok, manifest}
  defp manifest(source, s3), do: read_manifest(source, s3: s3)

  defp read_location({:local, path}, _s3) do
    case File.read(path) do
      {:ok, text} ->
        {:ok, text}

      {:error, :enoent} ->
        {:error,
         Error.new(
           :parquet,
           :not_found,
           "no export manifest at #{path} (is the export finished?)",
           details: %{uri: path}
         )}

      {:error, reason} ->
        {:error,
         Error.new(:parquet, :io_error, "cannot read #{path}: #{:file.format_error(reason)}",
           details: %{uri: path, reason: reason}
         )}
    end
  end

  defp read_location({:s3, _, _} = location, s3) do
    HFBridge.Parquet.S3.read(Location.to_string(location), s3)
  end

  defp verify_file(%{uri: "s3://" <> _} = file, s3) do
    with {:ok, {size, digest}} <- HFBridge.Parquet.S3.digest(file.uri, s3) do
      compare(file, size, digest)
    end
  end

  defp verify_file(file, _s3) do
    case File.stat(file.uri) do
      {:ok, %File.Stat{size: size}} when size != file.bytes ->
        compare(file, size, nil)

      {:ok, _} ->
        compare(file, file.bytes, sha256_file(file.uri))

      {:error, :enoent} ->
        {:error,
         Error.new(:parquet, :not_found, "export file #{file.uri} is missing",
           details: %{file: file.uri}
         )}

      {:error, reason} ->
        {:error,
         Error.new(:parquet, :io_error, "cannot read #{file.uri}: #{:file.format_error(reason)}",
           details: %{file: file.uri, reason: reason}
         )}
    end
  end

  @doc false
  @spec sha256_file(Path.t()) :: String.t()
  def sha256_file(path) do
    path
    |> File.stream!([], 1_048_576)
    |> Enum.reduce(:crypto.hash_init(:sha256), &:crypto.hash_update(&2, &1))
    |> :crypto.hash_final()
    |> Base.encode16(case: :lower)
  end

  defp compare(file, size, _digest) when size != file.bytes do
    {:error,
     Error.new(
       :parquet,
       :data_loss,
       "export file #{file.uri} has #{size} bytes, the manifest says #{file.bytes}",
       details: %{file: file.uri, expected: file.bytes, actual: size}
     )}
  end

  defp compare(file, _size, digest) do
    if digest == file.sha256 do
      :ok
    else
      {:error,
       Error.new(
         :parquet,
         :data_loss,
         "export file #{file.uri} has SHA-256 #{digest}, the manifest says #{file.sha256}",
         details: %{file: file.uri, expected: file.sha256, actual: digest}
       )}
    end
  end
end
