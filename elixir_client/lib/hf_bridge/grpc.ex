defmodule HFBridge.GRPC do
  @moduledoc """
  A gRPC client over HTTP/2 built on `:gen_tcp` and `:ssl` alone.

  A connection is a process (`HFBridge.GRPC.Connection`) that owns the
  socket; any number of calls share it concurrently. Requests and responses
  are already-encoded protobuf binaries: this layer does not know message
  types.

      {:ok, conn} = HFBridge.GRPC.connect("127.0.0.1", 50051)
      {:ok, reply} = HFBridge.GRPC.unary(conn, "/pkg.Service/Method", request, timeout: 5_000)

      {:ok, stream} = HFBridge.GRPC.server_stream(conn, "/pkg.Service/Stream", request)
      {:ok, message} = HFBridge.GRPC.recv(stream)   # ... until :done

  Server streams are pull based: the connection delivers one message per
  `recv/2`, and returns HTTP/2 flow-control credit to the server only as
  messages are taken, so a slow consumer slows the server down and buffered
  data stays bounded by the stream window (or one message, if larger).

  Failures are `{:error, %HFBridge.Error{layer: :grpc, code: status}}` with
  the server's (percent-decoded) `grpc-message`; a dropped connection or a
  GOAWAY gives a retryable `:unavailable`, an expired `:timeout` gives
  `:deadline_exceeded`.
  """

  alias HFBridge.Error
  alias HFBridge.GRPC.{Connection, Stream, Transport}

  @typedoc "A connection process."
  @type conn :: pid()
  @typedoc "Metadata: `{name, value}` pairs; names ending in `-bin` carry bytes."
  @type metadata :: [{String.t(), String.t()}]
  @type call_opts :: [
          timeout: non_neg_integer(),
          metadata: metadata(),
          return_metadata: boolean()
        ]

  @connect_opts [
    :tls,
    :connect_timeout,
    :metadata,
    :name,
    :supervisor,
    :stream_window,
    :connection_window,
    :max_header_list_size,
    :max_message_size,
    :max_frame_size,
    :keepalive,
    :keepalive_timeout
  ]

  @doc """
  Opens a connection and completes the HTTP/2 handshake.

  Options:

    * `:tls` — `false` (default), `true`, or a keyword list of `:ssl`
      options (`cacertfile`, `server_name_indication`, `certfile`,
      `keyfile`, `verify`, ...). TLS negotiates ALPN `h2` and verifies the
      server by default.
    * `:connect_timeout` — milliseconds for TCP, TLS and HTTP/2 setup
      (default 10 000).
    * `:metadata` — sent with every call (e.g. `[{"authorization", "Bearer …"}]`).
    * `:stream_window`, `:connection_window` — receive windows in bytes
      (defaults 4 MiB and 32 MiB).
    * `:max_message_size` — largest accepted response message (64 MiB).
    * `:max_header_list_size` — largest accepted response header list.
    * `:max_frame_size` — largest HTTP/2 frame payload the server may send,
      announced as SETTINGS_MAX_FRAME_SIZE (default 1 MiB; 16 384 to
      16 777 215). Fewer, larger frames cost less per byte received.
    * `:keepalive` — milliseconds without anything received after which the
      connection PINGs the server (default 30 000), or `:infinity`.
    * `:keepalive_timeout` — milliseconds to wait for anything, the PING's
      acknowledgement included, before the connection is treated as dead and
      its calls fail with a retryable `:unavailable` error (default 10 000).
      See "Keepalive" in `HFBridge.GRPC.Connection`.
    * `:name`, `:supervisor` — registration and supervisor of the process.
  """
  @spec connect(String.t(), :inet.port_number(), keyword()) :: {:ok, conn()} | {:error, Error.t()}
  def connect(host, port, opts \\ [])

  def connect(host, port, opts) when is_binary(host) and port in 0..65_535 and is_list(opts) do
    cond do
      not Keyword.keyword?(opts) ->
        {:error, invalid_option("connect options must be a keyword list")}

      (unknown = Keyword.keys(opts) -- @connect_opts) != [] ->
        {:error, invalid_option("unknown connect options: #{inspect(unknown)}")}

      not valid_frame_size?(Keyword.get(opts, :max_frame_size)) ->
        {:error,
         invalid_option(
           "max_frame_size must be an integer from 16384 to 16777215 (RFC 9113, " <>
             "Section 6.5.2), got: #{inspect(Keyword.get(opts, :max_frame_size))}"
         )}

      not valid_keepalive?(opts) ->
        {:error,
         invalid_option(
           "keepalive must be a positive number of milliseconds or :infinity and " <>
             "keepalive_timeout a positive number of milliseconds, got: " <>
             inspect(Keyword.take(opts, [:keepalive, :keepalive_timeout]))
         )}

      true ->
        do_connect(host, port, opts)
    end
  end

  def connect(host, port, _opts),
    do:
      {:error,
       invalid_option(
         "connect expects a host string and a port, got: #{inspect(host)}, #{inspect(port)}"
       )}

  defp invalid_option(message), do: Error.new(:options, :invalid_argument, message)

  defp valid_keepalive?(opts) do
    case {Keyword.get(opts, :keepalive), Keyword.get(opts, :keepalive_timeout)} do
      {interval, timeout}
      when (interval in [nil, :infinity] or (is_integer(interval) and interval > 0)) and
             (timeout == nil or (is_integer(timeout) and timeout > 0)) ->
        true

      _ ->
        false
    end
  end

  defp valid_frame_size?(nil), do: true
  defp valid_frame_size?(size), do: is_integer(size) and size in 16_384..16_777_215

  defp do_connect(host, port, opts) do
    # Options given as nil mean "the default".
    opts = Enum.reject(opts, fn {_k, v} -> v == nil end)
    timeout = Keyword.get(opts, :connect_timeout, 10_000)
    tls = Keyword.get(opts, :tls, false)

    authority = if String.contains?(host, ":"), do: "[#{host}]:#{port}", else: "#{host}:#{port}"

    conn_opts =
      opts
      |> Keyword.drop([:tls, :connect_timeout])
      |> Keyword.merge(authority: authority, scheme: if(tls, do: "https", else: "http"))

    with {:ok, md} <- validate_metadata(Keyword.get(opts, :metadata, [])),
         conn_opts = Keyword.put(conn_opts, :metadata, md),
         {:ok, kind, socket} <- Transport.connect(host, port, tls, timeout),
         {:ok, pid} <- start_process(conn_opts, kind, socket),
         :ok <- handover(kind, socket, pid) do
      try do
        case Connection.activate(pid, kind, socket, timeout) do
          :ok -> {:ok, pid}
          {:error, error} -> {:error, error}
        end
      catch
        :exit, {:timeout, _} ->
          stop(pid)

          {:error,
           Error.new(:grpc, :unavailable, "HTTP/2 handshake with #{authority} timed out",
             retryable: true
           )}

        :exit, reason ->
          {:error,
           Error.new(:grpc, :unavailable, "connection process failed: #{inspect(reason)}",
             retryable: true
           )}
      end
    end
  end

  defp validate_metadata(md) do
    case HFBridge.GRPC.Metadata.encode(md) do
      {:ok, _} -> {:ok, md}
      error -> error
    end
  end

  defp start_process(opts, kind, socket) do
    case Connection.start(opts) do
      {:ok, pid} ->
        {:ok, pid}

      other ->
        Transport.close(kind, socket)

        {:error,
         Error.new(:grpc, :internal, "could not start the connection process: #{inspect(other)}")}
    end
  end

  defp handover(kind, socket, pid) do
    case Transport.controlling_process(kind, socket, pid) do
      :ok ->
        :ok

      {:error, reason} ->
        Transport.close(kind, socket)
        stop(pid)

        {:error,
         Error.new(:grpc, :internal, "could not hand the socket over: #{inspect(reason)}")}
    end
  end

  defp stop(pid) do
    GenServer.stop(pid, :normal, 5_000)
  catch
    :exit, _ -> :ok
  end

  @doc "Closes a connection (GOAWAY); calls still running fail with `:cancelled`."
  @spec disconnect(conn()) :: :ok
  def disconnect(conn) do
    GenServer.call(conn, :disconnect, 10_000)
  catch
    :exit, _ -> :ok
  end

  @doc """
  A unary call. `request` is the encoded request message.

  Options: `:timeout` (ms, also sent as `grpc-timeout`; the call fails with
  `:deadline_exceeded` when it expires), `:metadata`, and `:return_metadata`
  (`{:ok, response, %{headers: [...], trailers: [...]}}`).
  """
  @spec unary(conn(), String.t(), iodata(), call_opts()) ::
          {:ok, binary()} | {:ok, binary(), map()} | {:error, Error.t()}
  def unary(conn, path, request, opts \\ []) do
    with {:ok, ref, mon} <- start(conn, path, request, opts, :push) do
      result = collect(ref, mon, [], opts[:timeout])
      Process.demonitor(mon, [:flush])

      case {result, opts[:return_metadata]} do
        {{:ok, message, md}, true} -> {:ok, message, md}
        {{:ok, message, _md}, _} -> {:ok, message}
        {{:error, error}, _} -> {:error, error}
      end
    end
  end

  defp collect(ref, mon, messages, timeout) do
    receive do
      {:hf_bridge_grpc, ^ref, {:message, message}} ->
        collect(ref, mon, [message | messages], timeout)

      {:hf_bridge_grpc, ^ref, {:done, md}} ->
        case messages do
          [message] ->
            {:ok, message, md}

          [] ->
            {:error, Error.from_grpc_status(12, "the server sent no response message")}

          _ ->
            {:error,
             Error.from_grpc_status(
               12,
               "the server sent #{length(messages)} messages to a unary call"
             )}
        end

      {:hf_bridge_grpc, ^ref, {:error, error, _md}} ->
        {:error, error}

      {:DOWN, ^mon, :process, _, reason} ->
        {:error, down_error(reason)}
    after
      # The connection enforces the deadline; this only guards against a
      # connection process that stopped answering.
      if(timeout, do: timeout + 5_000, else: :infinity) ->
        {:error, Error.from_grpc_status(4, "deadline of #{timeout} ms exceeded")}
    end
  end

  @doc """
  Starts a server-streaming call owned by the calling process. Same options
  as `unary/4` (the `:timeout` covers the whole stream). Read it with
  `recv/2`.
  """
  @spec server_stream(conn(), String.t(), iodata(), call_opts()) ::
          {:ok, Stream.t()} | {:error, Error.t()}
  def server_stream(conn, path, request, opts \\ []) do
    with {:ok, ref, mon} <- start(conn, path, request, opts, :pull) do
      Process.demonitor(mon, [:flush])
      {:ok, %Stream{conn: GenServer.whereis(conn), ref: ref, owner: self()}}
    end
  end

  @doc """
  Waits for the next message of a server stream: `{:ok, message}`, `:done`
  once the stream ended with status OK, or `{:error, error}`. Only the owner
  may call it. After `:done`, an error or `cancel/1`, further calls return
  the same result. On `timeout` it returns
  `{:error, %HFBridge.Error{code: :timeout}}` and the stream stays usable.
  """
  @spec recv(Stream.t(), timeout()) :: {:ok, binary()} | :done | {:error, Error.t()}
  def recv(%Stream{ref: ref, conn: conn} = stream, timeout \\ :infinity) do
    case Process.get({__MODULE__, ref}) do
      {:final, result, _md} ->
        result

      _ when stream.owner != self() ->
        {:error,
         Error.new(
           :grpc,
           :invalid_argument,
           "only the process that started the stream may read it"
         )}

      demand ->
        # A monitor per wait: a connection that dies ends the wait.
        mon = Process.monitor(conn)

        if demand != :demanded do
          send(conn, {:demand, ref, self()})
          Process.put({__MODULE__, ref}, :demanded)
        end

        result =
          receive do
            {:hf_bridge_grpc, ^ref, {:message, message}} ->
              Process.delete({__MODULE__, ref})
              {:ok, message}

            {:hf_bridge_grpc, ^ref, {:done, md}} ->
              final(ref, :done, md)

            {:hf_bridge_grpc, ^ref, {:error, error, md}} ->
              final(ref, {:error, error}, md)

            {:DOWN, ^mon, :process, _, reason} ->
              final(ref, {:error, down_error(reason)}, %{headers: [], trailers: []})
          after
            timeout ->
              {:error,
               Error.new(:grpc, :timeout, "no message within #{timeout} ms", retryable: true)}
          end

        Process.demonitor(mon, [:flush])
        result
    end
  end

  # The outcome of a finished stream stays readable by `recv/2` and
  # `stream_metadata/1`; only the most recent @keep_finished are kept so a
  # long-lived owner does not accumulate them.
  @keep_finished 64

  defp final(ref, result, md) do
    Process.put({__MODULE__, ref}, {:final, result, md})
    finished = [ref | Process.get({__MODULE__, :finished}, [])]

    {keep, drop} = Enum.split(finished, @keep_finished)
    Enum.each(drop, &Process.delete({__MODULE__, &1}))
    Process.put({__MODULE__, :finished}, keep)
    result
  end

  @doc """
  Cancels a stream (RST_STREAM CANCEL) and drops its pending messages.
  Later `recv/2` calls return a `:cancelled` error; a stream that had
  already finished keeps its result. Always `:ok`.
  """
  @spec cancel(Stream.t()) :: :ok
  def cancel(%Stream{ref: ref, conn: conn}) do
    case Process.get({__MODULE__, ref}) do
      {:final, _, _} ->
        :ok

      _ ->
        try do
          GenServer.call(conn, {:cancel, ref}, 5_000)
        catch
          :exit, _ -> :ok
        end

        flush(ref)
        error = Error.new(:grpc, :cancelled, "the stream was cancelled by the client")
        final(ref, {:error, error}, %{headers: [], trailers: []})
        :ok
    end
  end

  defp flush(ref) do
    receive do
      {:hf_bridge_grpc, ^ref, _} -> flush(ref)
    after
      0 -> :ok
    end
  end

  @doc """
  Response headers and trailers of a stream (`-bin` values decoded).
  Complete after `:done` or an error; before that, what arrived so far.
  """
  @spec stream_metadata(Stream.t()) :: %{headers: list(), trailers: list()}
  def stream_metadata(%Stream{ref: ref, conn: conn}) do
    case Process.get({__MODULE__, ref}) do
      {:final, _result, md} ->
        md

      _ ->
        try do
          GenServer.call(conn, {:metadata, ref}, 5_000) || %{headers: [], trailers: []}
        catch
          :exit, _ -> %{headers: [], trailers: []}
        end
    end
  end

  defp start(conn, path, request, opts, mode) do
    with :ok <- validate_call(path, opts),
         {:ok, request} <- to_binary(request) do
      start_validated(conn, path, request, opts, mode)
    end
  end

  defp validate_call(path, opts) do
    timeout = Keyword.get(opts, :timeout)

    cond do
      not is_binary(path) or not String.starts_with?(path, "/") ->
        {:error,
         invalid_option(
           "the method path must look like \"/package.Service/Method\", got: #{inspect(path)}"
         )}

      timeout != nil and not (is_integer(timeout) and timeout >= 0) ->
        {:error,
         invalid_option("timeout must be a non-negative integer (ms), got: #{inspect(timeout)}")}

      true ->
        :ok
    end
  end

  defp to_binary(request) do
    {:ok, IO.iodata_to_binary(request)}
  rescue
    ArgumentError -> {:error, invalid_option("the request must be iodata (an encoded message)")}
  end

  defp start_validated(conn, path, request, opts, mode) do
    case GenServer.whereis(conn) do
      pid when is_pid(pid) ->
        mon = Process.monitor(pid)
        call_opts = [mode: mode, timeout: opts[:timeout], metadata: opts[:metadata] || []]

        try do
          case GenServer.call(pid, {:start, path, request, call_opts}, 30_000) do
            {:ok, ref} ->
              {:ok, ref, mon}

            {:error, error} ->
              Process.demonitor(mon, [:flush])
              {:error, error}
          end
        catch
          :exit, reason ->
            Process.demonitor(mon, [:flush])
            {:error, down_error(reason)}
        end

      _ ->
        {:error, down_error(:noproc)}
    end
  end

  # `reason` may be the exit of a GenServer.call (`{reason, {GenServer, :call,
  # args}}`, whose args hold the request): only its head is kept.
  defp down_error({reason, {GenServer, :call, _}}), do: down_error(reason)

  defp down_error(reason) do
    why =
      case reason do
        :noproc -> "its process is not running"
        :normal -> "it was closed"
        {:shutdown, _} -> "it was shut down"
        other -> "its process exited: #{inspect(other, limit: 5, printable_limit: 80)}"
      end

    Error.new(:grpc, :unavailable, "the connection is gone (#{why})",
      retryable: true,
      details: %{reason: reason}
    )
  end
end
