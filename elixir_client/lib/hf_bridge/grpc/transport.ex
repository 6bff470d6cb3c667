defmodule HFBridge.GRPC.Transport do
  @moduledoc """
  Opens the byte stream under an HTTP/2 connection: plain TCP
  (`:gen_tcp`) or TLS (`:ssl`) with ALPN `h2`.

  TLS verifies the server by default (`verify: :verify_peer` against the
  given `:cacertfile`/`:cacerts`, or the operating system's trust store),
  sends the host name as SNI and checks it against the certificate. Any
  `:ssl` client option can be passed through the `tls:` keyword list.
  """

  alias HFBridge.Error

  @type kind :: :gen_tcp | :ssl
  @type socket :: :gen_tcp.socket() | :ssl.sslsocket()

  @tcp_opts [:binary, active: false, packet: :raw, nodelay: true, buffer: 256 * 1024]

  @doc "Connects to `host:port`; `tls` is `false`, `true` or a keyword list of `:ssl` options."
  @spec connect(String.t(), :inet.port_number(), boolean() | keyword(), timeout()) ::
          {:ok, kind(), socket()} | {:error, Error.t()}
  def connect(host, port, tls, timeout) do
    host_cl = String.to_charlist(host)

    if tls do
      connect_tls(host, host_cl, port, if(tls == true, do: [], else: tls), timeout)
    else
      case :gen_tcp.connect(host_cl, port, @tcp_opts, timeout) do
        {:ok, socket} -> {:ok, :gen_tcp, socket}
        {:error, reason} -> {:error, connect_error(host, port, reason)}
      end
    end
  end

  defp connect_tls(host, host_cl, port, user_opts, timeout) do
    opts = tls_options(host_cl, user_opts) ++ @tcp_opts

    case :ssl.connect(host_cl, port, opts, timeout) do
      {:ok, socket} ->
        case :ssl.negotiated_protocol(socket) do
          {:ok, "h2"} ->
            {:ok, :ssl, socket}

          _ ->
            :ssl.close(socket)

            {:error,
             Error.new(
               :http2,
               :protocol_error,
               "TLS server at #{host}:#{port} did not negotiate ALPN h2"
             )}
        end

      {:error, reason} ->
        {:error, connect_error(host, port, reason)}
    end
  end

  defp tls_options(host_cl, user_opts) do
    verify = Keyword.get(user_opts, :verify, :verify_peer)

    base = [
      verify: verify,
      alpn_advertised_protocols: ["h2"],
      versions: [:"tlsv1.3", :"tlsv1.2"]
    ]

    sni =
      case :inet.parse_address(host_cl) do
        {:ok, _ip} -> []
        _ -> [server_name_indication: host_cl]
      end

    cacerts =
      cond do
        verify != :verify_peer -> []
        Keyword.has_key?(user_opts, :cacertfile) or Keyword.has_key?(user_opts, :cacerts) -> []
        true -> [cacerts: os_cacerts()]
      end

    hostname_check = [
      customize_hostname_check: [match_fun: :public_key.pkix_verify_hostname_match_fun(:https)]
    ]

    base
    |> Keyword.merge(sni ++ cacerts ++ hostname_check)
    |> Keyword.merge(Keyword.drop(user_opts, [:verify]))
  end

  defp os_cacerts do
    :public_key.cacerts_get()
  rescue
    _ -> []
  end

  defp connect_error(host, port, reason) do
    Error.new(:grpc, :unavailable, "cannot connect to #{host}:#{port}: #{format(reason)}",
      retryable: true,
      details: %{reason: reason}
    )
  end

  defp format(reason) when is_atom(reason), do: :inet.format_error(reason) |> to_string()
  defp format(reason), do: inspect(reason)

  @doc "Sends bytes."
  @spec send(kind(), socket(), iodata()) :: :ok | {:error, term()}
  def send(:gen_tcp, socket, data), do: :gen_tcp.send(socket, data)
  def send(:ssl, socket, data), do: :ssl.send(socket, data)

  @doc "Asks for the next chunk of received bytes as a message."
  @spec activate(kind(), socket()) :: :ok | {:error, term()}
  def activate(:gen_tcp, socket), do: :inet.setopts(socket, active: :once)
  def activate(:ssl, socket), do: :ssl.setopts(socket, active: :once)

  @doc "Hands the socket to another process."
  @spec controlling_process(kind(), socket(), pid()) :: :ok | {:error, term()}
  def controlling_process(:gen_tcp, socket, pid), do: :gen_tcp.controlling_process(socket, pid)
  def controlling_process(:ssl, socket, pid), do: :ssl.controlling_process(socket, pid)

  @doc "Bytes received on the socket so far (`nil` once it is closed)."
  @spec received_bytes(kind(), socket()) :: non_neg_integer() | nil
  def received_bytes(:gen_tcp, socket), do: recv_oct(:inet.getstat(socket, [:recv_oct]))
  def received_bytes(:ssl, socket), do: recv_oct(:ssl.getstat(socket, [:recv_oct]))

  defp recv_oct({:ok, [recv_oct: n]}), do: n
  defp recv_oct(_), do: nil

  @doc "Closes the socket."
  @spec close(kind(), socket()) :: :ok
  def close(:gen_tcp, socket), do: :gen_tcp.close(socket)
  def close(:ssl, socket), do: :ssl.close(socket) |> then(fn _ -> :ok end)
end
