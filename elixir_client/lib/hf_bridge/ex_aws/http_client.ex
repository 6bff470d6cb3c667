defmodule HFBridge.ExAws.HttpClient do
  @moduledoc """
  An HTTP client for ExAws built on OTP's `:httpc`, so ExAws works without
  hackney or any other HTTP library.

  It implements the `ExAws.Request.HttpClient` behaviour (declared when
  ExAws is present at compile time; the function works either way).
  `HFBridge.Parquet.S3` uses it unless the application configured its own
  `config :ex_aws, http_client: ...`. To use it for all of ExAws:

      config :ex_aws, http_client: HFBridge.ExAws.HttpClient

  `http_opts` (ExAws's `:http_opts` setting) may hold `:timeout` and
  `:connect_timeout` (milliseconds, defaults 60 s and 10 s) and `:ssl`
  (`:ssl` client options; by default peers are verified against the OS CA
  store, RFC 6125 host name checks included).
  """

  if Code.ensure_loaded?(ExAws.Request.HttpClient) do
    @behaviour ExAws.Request.HttpClient
  end

  @typedoc "An HTTP method as ExAws names them."
  @type method :: :get | :post | :put | :delete | :options | :head | :patch

  @doc """
  Performs one request. Returns `{:ok, %{status_code, headers, body}}` for
  any HTTP status (ExAws interprets it) or `{:error, %{reason: term}}` when
  no response arrived.
  """
  @spec request(method(), binary(), iodata(), [{binary(), binary()}], keyword()) ::
          {:ok, %{status_code: pos_integer(), headers: [{binary(), binary()}], body: binary()}}
          | {:error, %{reason: term()}}
  def request(method, url, body, headers, http_opts \\ []) do
    http_opts = if Keyword.keyword?(http_opts), do: http_opts, else: []
    body = IO.iodata_to_binary(body || "")
    {content_type, headers} = pop_header(headers, "content-type")

    # :httpc computes content-length from the body itself.
    {_length, headers} = pop_header(headers, "content-length")
    headers = Enum.map(headers, fn {name, value} -> {to_charlist(name), to_charlist(value)} end)
    url = to_charlist(url)

    request =
      if body == "" and method in [:get, :head, :delete, :options] do
        {url, headers}
      else
        {url, headers, to_charlist(content_type || "application/octet-stream"), body}
      end

    options = [
      timeout: Keyword.get(http_opts, :timeout, 60_000),
      connect_timeout: Keyword.get(http_opts, :connect_timeout, 10_000),
      autoredirect: false,
      ssl: Keyword.get_lazy(http_opts, :ssl, &ssl_options/0)
    ]

    case :httpc.request(method, request, options, body_format: :binary) do
      {:ok, {{_version, status, _reason}, response_headers, response_body}} ->
        {:ok,
         %{
           status_code: status,
           headers:
             Enum.map(response_headers, fn {name, value} ->
               {to_string(name), to_string(value)}
             end),
           body: response_body
         }}

      {:error, reason} ->
        {:error, %{reason: reason}}
    end
  end

  defp pop_header(headers, name) do
    {matching, rest} =
      Enum.split_with(headers, fn {key, _} -> String.downcase(to_string(key)) == name end)

    case matching do
      [] -> {nil, rest}
      [{_, value} | _] -> {to_string(value), rest}
    end
  end

  defp ssl_options do
    [
      verify: :verify_peer,
      cacerts: :public_key.cacerts_get(),
      depth: 4,
      customize_hostname_check: [match_fun: :public_key.pkix_verify_hostname_match_fun(:https)]
    ]
  rescue
    # No OS CA store readable: fall back to :ssl's defaults.
    _ -> []
  end
end
