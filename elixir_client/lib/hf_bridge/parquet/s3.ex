defmodule HFBridge.Parquet.S3 do
  @moduledoc """
  Exports on S3 (or any S3-protocol store): listing, reading and
  downloading, through ExAws.

  Needs the `:ex_aws` package (core only: `ex_aws_s3` and XML libraries
  are not required). Requests go through `HFBridge.ExAws.HttpClient`
  (OTP's `:httpc`) unless the application configured its own
  `config :ex_aws, http_client: ...` or has hackney. Without ExAws every
  function returns `{:error, %HFBridge.Error{code: :unavailable}}`.

  ## Options

  Every function takes the ExAws configuration overrides as its options
  (`:access_key_id`, `:secret_access_key`, `:region`, `:scheme`, `:host`,
  `:port`, `:http_client`, ...; see `ExAws.Config`). When none of
  `:host`/`:scheme`/`:port` is given and `AWS_ENDPOINT_URL` is set (as for
  `hf-bridge export`), requests go to that endpoint.

      {:ok, objects} = HFBridge.Parquet.S3.list("s3://bucket/exports/imdb")
      {:ok, manifest} = HFBridge.Parquet.S3.download("s3://bucket/exports/imdb", "/tmp/imdb")
  """

  # ExAws is an optional dependency: every call to it is made after checking
  # at run time that it is loaded, through ex_aws/0 and struct/2, so the
  # compiler neither expects it nor counts it as a dependency of :hf_bridge.

  alias HFBridge.Error
  alias HFBridge.Parquet.{Location, Manifest}

  @chunk 8 * 1024 * 1024

  @typedoc "An object found by `list/2`."
  @type object :: %{
          key: String.t(),
          uri: String.t(),
          size: non_neg_integer(),
          etag: String.t() | nil,
          last_modified: String.t() | nil
        }

  @doc "Whether ExAws is available."
  @spec available?() :: boolean()
  def available?, do: Code.ensure_loaded?(ExAws) and Code.ensure_loaded?(ExAws.Operation.S3)

  @doc """
  Lists every object under an `s3://bucket/prefix` (following continuation
  tokens), sorted by key. Only objects inside the prefix "directory" are
  listed: `s3://b/run1` lists `run1/...`, not `run10/...`.
  """
  @spec list(String.t(), keyword()) :: {:ok, [object()]} | {:error, Error.t()}
  def list(uri, opts \\ []) do
    with :ok <- ensure_available(),
         {:ok, {:s3, bucket, prefix}} <- s3_location(uri) do
      prefix = if prefix == "" or String.ends_with?(prefix, "/"), do: prefix, else: prefix <> "/"
      list_pages(bucket, prefix, nil, [], opts)
    end
  end

  @doc "Reads a whole object into memory (meant for manifests and small files)."
  @spec read(String.t(), keyword()) :: {:ok, binary()} | {:error, Error.t()}
  def read(uri, opts \\ []) do
    with :ok <- ensure_available(),
         {:ok, {:s3, bucket, key}} <- s3_location(uri),
         {:ok, %{body: body}} <-
           request(%{http_method: :get, bucket: bucket, path: key}, opts, uri) do
      {:ok, body}
    end
  end

  @doc "Size (bytes) of an object, from a HEAD request."
  @spec size(String.t(), keyword()) :: {:ok, non_neg_integer()} | {:error, Error.t()}
  def size(uri, opts \\ []) do
    with :ok <- ensure_available(),
         {:ok, {:s3, bucket, key}} <- s3_location(uri),
         {:ok, %{headers: headers}} <-
           request(%{http_method: :head, bucket: bucket, path: key}, opts, uri) do
      case header(headers, "content-length") do
        nil -> {:error, Error.new(:parquet, :malformed, "HEAD #{uri} returned no content-length")}
        value -> {:ok, String.to_integer(String.trim(value))}
      end
    end
  end

  @doc """
  Downloads one object to `path` in ranged requests of 8 MiB (memory stays
  small), writing to a temporary name that is renamed into place only when
  complete. Returns its size and lowercase hex SHA-256.
  """
  @spec download_file(String.t(), Path.t(), keyword()) ::
          {:ok, %{bytes: non_neg_integer(), sha256: String.t()}} | {:error, Error.t()}
  def download_file(uri, path, opts \\ []) do
    tmp = path <> ".part-" <> Integer.to_string(System.unique_integer([:positive]))

    with :ok <- ensure_available(),
         :ok <- mkdir(Path.dirname(path)),
         {:ok, io} <- open(tmp) do
      result =
        try do
          fold_ranges(uri, opts, :crypto.hash_init(:sha256), fn chunk, hash ->
            :ok = :file.write(io, chunk)
            :crypto.hash_update(hash, chunk)
          end)
        after
          File.close(io)
        end

      with {:ok, {size, hash}} <- result,
           :ok <- rename(tmp, path) do
        {:ok, %{bytes: size, sha256: Base.encode16(:crypto.hash_final(hash), case: :lower)}}
      else
        error ->
          File.rm(tmp)
          error
      end
    end
  end

  @doc """
  Downloads a whole export — its data files and then its manifest — into
  the local directory `dir`, checking each file's size and SHA-256 against
  the manifest. Returns the manifest of the local copy, ready for
  `HFBridge.Parquet.load/2`.

  `source` is the export's `s3://` prefix or manifest URI, or a manifest
  read from S3.
  """
  @spec download(String.t() | Manifest.t(), Path.t(), keyword()) ::
          {:ok, Manifest.t()} | {:error, Error.t()}
  def download(source, dir, opts \\ []) do
    with :ok <- ensure_available(),
         {:ok, manifest} <- remote_manifest(source, opts),
         :ok <- mkdir(dir),
         :ok <- download_files(manifest, dir, opts) do
      local = Path.join(Path.expand(dir), Location.manifest_name())

      with :ok <- write(local, HFBridge.JSON.encode!(manifest.raw)) do
        Manifest.from_map(manifest.raw, {:local, local})
      end
    end
  end

  @doc false
  # Size and SHA-256 of an object, streamed in ranges (used by HFBridge.Parquet.verify/2).
  @spec digest(String.t(), keyword()) ::
          {:ok, {non_neg_integer(), String.t()}} | {:error, Error.t()}
  def digest(uri, opts) do
    with :ok <- ensure_available(),
         {:ok, {size, hash}} <-
           fold_ranges(uri, opts, :crypto.hash_init(:sha256), &:crypto.hash_update(&2, &1)) do
      {:ok, {size, Base.encode16(:crypto.hash_final(hash), case: :lower)}}
    end
  end

  # -- internals -----------------------------------------------------------------

  defp ensure_available do
    if available?() do
      :ok
    else
      {:error,
       Error.new(
         :parquet,
         :unavailable,
         "s3:// exports need the :ex_aws package; add {:ex_aws, \"~> 2.5\"} to your dependencies " <>
           "(hf_bridge brings its own HTTP client for it, HFBridge.ExAws.HttpClient)"
       )}
    end
  end

  defp s3_location(uri) do
    case Location.parse(uri) do
      {:ok, {:s3, _, _} = location} ->
        {:ok, location}

      {:ok, _} ->
        {:error,
         Error.new(:parquet, :invalid_argument, "expected an s3:// URI, got: #{inspect(uri)}")}

      error ->
        error
    end
  end

  defp remote_manifest(%Manifest{uri: "s3://" <> _} = manifest, _opts), do: {:ok, manifest}

  defp remote_manifest(%Manifest{uri: uri}, _opts),
    do: {:error, Error.new(:parquet, :invalid_argument, "manifest #{uri} is not on S3")}

  defp remote_manifest(uri, opts) do
    with {:ok, location} <- s3_location(uri) do
      manifest = Location.manifest(location)

      with {:ok, text} <- read(Location.to_string(manifest), opts) do
        Manifest.parse(text, Location.to_string(manifest))
      end
    end
  end

  defp download_files(manifest, dir, opts) do
    manifest.files
    |> Task.async_stream(
      fn file ->
        case download_file(file.uri, Path.join(dir, file.path), opts) do
          {:ok, %{bytes: bytes, sha256: sha}} when bytes == file.bytes and sha == file.sha256 ->
            :ok

          {:ok, got} ->
            {:error,
             Error.new(:parquet, :data_loss, "downloaded #{file.uri} does not match the manifest",
               details: %{
                 file: file.uri,
                 expected: Map.take(file, [:bytes, :sha256]),
                 actual: got
               }
             )}

          error ->
            error
        end
      end,
      max_concurrency: 4,
      timeout: :infinity
    )
    |> Enum.find_value(:ok, fn
      {:ok, :ok} ->
        nil

      {:ok, error} ->
        error

      {:exit, reason} ->
        {:error, Error.new(:parquet, :internal, "download crashed: #{inspect(reason)}")}
    end)
  end

  # Reads an object in ranges; `fun.(chunk, acc)` folds over the chunks.
  defp fold_ranges(uri, opts, acc, fun) do
    with {:ok, {:s3, bucket, key}} <- s3_location(uri),
         {:ok, size} <- size(uri, opts) do
      Stream.iterate(0, &(&1 + @chunk))
      |> Stream.take_while(&(&1 < size))
      |> Enum.reduce_while({:ok, {0, acc}}, fn offset, {:ok, {done, acc}} ->
        last = min(offset + @chunk, size) - 1

        op = %{
          http_method: :get,
          bucket: bucket,
          path: key,
          headers: %{"range" => "bytes=#{offset}-#{last}"}
        }

        case request(op, opts, uri) do
          {:ok, %{body: body}} when byte_size(body) == last - offset + 1 ->
            {:cont, {:ok, {done + byte_size(body), fun.(body, acc)}}}

          {:ok, %{body: body}} ->
            {:halt,
             {:error,
              Error.new(
                :parquet,
                :data_loss,
                "#{uri}: range #{offset}-#{last} returned #{byte_size(body)} bytes",
                details: %{uri: uri}
              )}}

          error ->
            {:halt, error}
        end
      end)
    end
  end

  defp list_pages(bucket, prefix, token, acc, opts) do
    params = %{"list-type" => "2", "prefix" => prefix}
    params = if token, do: Map.put(params, "continuation-token", token), else: params
    uri = Location.to_string({:s3, bucket, prefix})

    with {:ok, %{body: body}} <-
           request(%{http_method: :get, bucket: bucket, path: "/", params: params}, opts, uri) do
      objects =
        for contents <- xml_elements(body, "Contents") do
          key = xml_text(contents, "Key")

          %{
            key: key,
            uri: Location.to_string({:s3, bucket, key}),
            size: String.to_integer(xml_text(contents, "Size") || "0"),
            etag: xml_text(contents, "ETag"),
            last_modified: xml_text(contents, "LastModified")
          }
        end

      acc = acc ++ objects

      case {xml_text(body, "IsTruncated"), xml_text(body, "NextContinuationToken")} do
        {"true", next} when is_binary(next) and next != "" ->
          list_pages(bucket, prefix, next, acc, opts)

        _ ->
          {:ok, Enum.sort_by(acc, & &1.key)}
      end
    end
  end

  # The S3 ListObjectsV2 response is flat, well-known XML; these two helpers
  # read the few elements used above without an XML library.
  defp xml_elements(xml, name) do
    Regex.scan(~r/<#{name}>(.*?)<\/#{name}>/s, xml, capture: :all_but_first) |> Enum.map(&hd/1)
  end

  defp xml_text(xml, name) do
    case Regex.run(~r/<#{name}>(.*?)<\/#{name}>/s, xml, capture: :all_but_first) do
      [text] -> xml_unescape(text)
      nil -> nil
    end
  end

  # XML 1.0 section 4.6 predefined entities and numeric character references.
  defp xml_unescape(text) do
    Regex.replace(~r/&(lt|gt|amp|quot|apos|#x[0-9a-fA-F]+|#[0-9]+);/, text, fn
      _, "lt" -> "<"
      _, "gt" -> ">"
      _, "amp" -> "&"
      _, "quot" -> "\""
      _, "apos" -> "'"
      _, "#x" <> hex -> <<String.to_integer(hex, 16)::utf8>>
      _, "#" <> dec -> <<String.to_integer(dec)::utf8>>
    end)
  end

  defp request(fields, opts, uri) do
    operation = struct(ExAws.Operation.S3, Map.put_new(fields, :params, %{}))

    case ex_aws().request(operation, config(opts)) do
      {:ok, response} ->
        {:ok, response}

      {:error, {:http_error, 404, _}} ->
        {:error, Error.new(:parquet, :not_found, "#{uri} does not exist", details: %{uri: uri})}

      {:error, {:http_error, status, body}} when status in [401, 403] ->
        {:error,
         Error.new(:parquet, :permission_denied, "S3 refused access to #{uri} (HTTP #{status})",
           details: %{uri: uri, status: status, body: body}
         )}

      {:error, {:http_error, status, body}} ->
        {:error,
         Error.new(
           :parquet,
           :s3_error,
           "S3 request for #{uri} failed with HTTP #{status}: #{inspect(body, limit: 20)}",
           retryable: status >= 500,
           details: %{uri: uri, status: status}
         )}

      {:error, reason} ->
        {:error,
         Error.new(
           :parquet,
           :unavailable,
           "S3 request for #{uri} failed: #{inspect(reason, limit: 20)}",
           retryable: true,
           details: %{uri: uri}
         )}
    end
  rescue
    exception ->
      {:error,
       Error.new(
         :parquet,
         :s3_error,
         "S3 request for #{uri} failed: #{Exception.message(exception)}"
       )}
  end

  @doc false
  # ExAws configuration overrides: the caller's options, the AWS_ENDPOINT_URL
  # endpoint when no host is given, and — when the application set up none —
  # the :httpc client and HFBridge.JSON (ExAws decodes error bodies as JSON).
  @spec config(keyword()) :: keyword()
  def config(opts) do
    opts
    |> endpoint_from_env()
    |> default(:http_client, HFBridge.ExAws.HttpClient, :hackney)
    |> default(:json_codec, HFBridge.JSON, Jason)
  end

  defp default(opts, key, value, usual_library) do
    if Keyword.has_key?(opts, key) or Application.get_env(:ex_aws, key) != nil or
         Code.ensure_loaded?(usual_library) do
      opts
    else
      Keyword.put(opts, key, value)
    end
  end

  defp endpoint_from_env(opts) do
    endpoint = System.get_env("AWS_ENDPOINT_URL_S3") || System.get_env("AWS_ENDPOINT_URL")

    if endpoint in [nil, ""] or Enum.any?([:host, :scheme, :port], &Keyword.has_key?(opts, &1)) do
      opts
    else
      uri = URI.parse(endpoint)

      opts
      |> Keyword.put(:scheme, (uri.scheme || "https") <> "://")
      |> Keyword.put(:host, uri.host)
      |> Keyword.put(:port, uri.port)
    end
  end

  defp ex_aws, do: ExAws

  defp header(headers, name) do
    Enum.find_value(headers, fn {key, value} ->
      if String.downcase(to_string(key)) == name, do: to_string(value)
    end)
  end

  defp mkdir(dir) do
    case File.mkdir_p(dir) do
      :ok ->
        :ok

      {:error, reason} ->
        {:error,
         Error.new(:parquet, :io_error, "cannot create #{dir}: #{:file.format_error(reason)}")}
    end
  end

  defp open(path) do
    case File.open(path, [:write, :binary, :raw]) do
      {:ok, io} ->
        {:ok, io}

      {:error, reason} ->
        {:error,
         Error.new(:parquet, :io_error, "cannot write #{path}: #{:file.format_error(reason)}")}
    end
  end

  defp write(path, data) do
    tmp = path <> ".tmp"

    with :ok <- File.write(tmp, data), :ok <- File.rename(tmp, path) do
      :ok
    else
      {:error, reason} ->
        {:error,
         Error.new(:parquet, :io_error, "cannot write #{path}: #{:file.format_error(reason)}")}
    end
  end

  defp rename(from, to) do
    case File.rename(from, to) do
      :ok ->
        :ok

      {:error, reason} ->
        {:error,
         Error.new(:parquet, :io_error, "cannot rename #{from}: #{:file.format_error(reason)}")}
    end
  end
end
