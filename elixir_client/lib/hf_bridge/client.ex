defmodule HFBridge.Client do
  @schema [
    address: [
      type: {:or, [:string, nil]},
      default: nil,
      type_doc: "`String.t() | nil`",
      doc:
        "Server address `\"host:port\"`. Without it (and without `:host`), the address comes from " <>
          "`config :hf_bridge, address: ...` or the `HF_BRIDGE_ADDRESS` environment variable; " <>
          "when none is set a local server is started."
    ],
    host: [
      type: {:or, [:string, nil]},
      default: nil,
      type_doc: "`String.t() | nil`",
      doc: "Server host (with `:port`)."
    ],
    port: [
      type: {:or, [:pos_integer, nil]},
      default: nil,
      type_doc: "`pos_integer() | nil`",
      doc: "Server port (with `:host`)."
    ],
    tls: [
      type: {:or, [:boolean, :keyword_list]},
      default: false,
      type_doc: "`boolean() | keyword()`",
      doc: "Use TLS; a keyword list is passed to `:ssl` as client options."
    ],
    token: [
      type: {:or, [:string, nil]},
      default: nil,
      type_doc: "`String.t() | nil`",
      doc: "Bearer token, sent as `authorization: Bearer <token>` on every call."
    ],
    timeout: [
      type: :timeout,
      default: 60_000,
      doc: "Deadline of each unary call, in milliseconds."
    ],
    connect_timeout: [
      type: :timeout,
      default: 10_000,
      doc: "Deadline of connecting, in milliseconds."
    ],
    keepalive: [
      type: {:or, [:pos_integer, {:in, [:infinity]}]},
      default: 30_000,
      type_doc: "`pos_integer() | :infinity`",
      doc:
        "Milliseconds without anything from the server after which the connection PINGs it; " <>
          "a server that then stays silent for `:keepalive_timeout` more is treated as gone " <>
          "(its calls fail with a retryable `:unavailable` error and the next call reconnects)."
    ],
    keepalive_timeout: [
      type: :pos_integer,
      default: 10_000,
      doc: "Milliseconds to wait for the answer to a keepalive PING."
    ],
    local: [
      type: :boolean,
      type_doc: "`boolean()`",
      doc:
        "`true` always starts a local server; `false` never does (an address is then required). " <>
          "Unset: start one only when no address is configured."
    ],
    local_server: [
      type: :keyword_list,
      default: [],
      doc: "Options for the local server (see `HFBridge.LocalServer`)."
    ],
    owner: [
      type: {:custom, HFBridge.Session, :check_pid},
      type_doc: "`pid()`",
      doc:
        "The connection (and the local server, if one was started) is closed when this process " <>
          "exits. Defaults to the process calling `connect/1`; pass a long-lived process when the " <>
          "client is shared."
    ],
    metadata: [
      type: {:list, {:tuple, [:string, :string]}},
      default: [],
      type_doc: "`[{String.t(), String.t()}]`",
      doc: "Extra gRPC metadata sent on every call."
    ]
  ]

  @moduledoc """
  A connection to an hf_bridge server, and the typed calls made over it.

  `connect/1` connects to a running server or, when no address is configured,
  starts a local Python server (see `HFBridge.LocalServer`). Both live until
  `disconnect/1` or the exit of the client's owner (the process that called
  `connect/1`, unless `:owner` says otherwise).

  A client outlives its connection: when the connection goes (the server
  restarted, the TCP connection dropped), the next call opens a new one to
  the same address with the same options. A call that was under way when
  the connection went fails with a retryable `:unavailable` error;
  sessions recover from that on their own (see `HFBridge.Session`).

  `call/4` and `server_stream/4` take and return messages as maps keyed by
  proto field names (see `HFBridge.Proto`); RPCs are named by atoms such as
  `:GetInfo` or `:OpenSession`.

  ## Options

  #{HFBridge.Options.docs(@schema)}
  """

  alias HFBridge.{Error, LocalServer, Options}
  alias HFBridge.Client.Keeper

  @derive {Inspect, except: [:reconnect, :keeper]}
  defstruct [:conn, :address, :server, :timeout, :tls, :reconnect, :keeper]

  @typedoc """
  A connected client. `conn` is the `HFBridge.GRPC` connection it was
  opened with; `keeper` the `HFBridge.Client.Keeper` that opens another
  when that one has gone; `server` the pid of the local server this client
  started, if any; `reconnect` what it takes to open the same connection
  again (host, port, TLS options, token and metadata).
  """
  @type t :: %__MODULE__{
          conn: term(),
          address: String.t(),
          server: pid() | nil,
          timeout: timeout(),
          tls: boolean() | keyword(),
          reconnect: {String.t(), :inet.port_number(), keyword()} | nil,
          keeper: pid() | nil
        }

  @typedoc "An RPC of the `hf_bridge.v1.HFBridge` service."
  @type rpc ::
          :GetInfo | :OpenSession | :ReadBatches | :Ack | :ResumeSession | :CloseSession | :Export

  @rpcs %{
    GetInfo: {:DatasetSpec, :DatasetInfo},
    OpenSession: {:OpenRequest, :SessionInfo},
    ReadBatches: {:ReadRequest, :Batch},
    Ack: {:AckRequest, :AckResponse},
    ResumeSession: {:ResumeRequest, :SessionInfo},
    CloseSession: {:CloseRequest, :CloseResponse},
    Export: {:ExportRequest, :ExportEvent}
  }

  defmodule Stream do
    @moduledoc """
    A server-streaming call opened by `HFBridge.Client.server_stream/4`.
    Read it with `HFBridge.Client.recv/2`; it belongs to the process that
    opened it.
    """
    defstruct [:grpc, :response]

    @typedoc "The underlying `HFBridge.GRPC` stream and the response message name."
    @type t :: %__MODULE__{grpc: term(), response: atom()}
  end

  @doc "The options schema (see `HFBridge.Options`)."
  @spec schema() :: Options.schema()
  def schema, do: @schema

  @doc "The names of all client options."
  @spec option_names() :: [atom()]
  def option_names, do: [:client | Keyword.keys(@schema)]

  @doc """
  Connects to a server, starting a local one when no address is configured
  (or when `local: true`).
  """
  @spec connect(keyword()) :: {:ok, t()} | {:error, Error.t()}
  def connect(opts \\ []) do
    with {:ok, opts} <- Options.validate(opts, @schema),
         {:ok, _} <- ensure_started(),
         {:ok, target} <- target(opts),
         opts = Keyword.put_new(opts, :owner, self()),
         {:ok, client} <- connect_to(target, opts) do
      {:ok, keep(opts[:owner], client)}
    end
  end

  # The keeper follows the owner, reconnects on demand and emits the
  # `[:hf_bridge, :connection, :up | :down]` telemetry events.
  defp keep(owner, %__MODULE__{conn: conn, address: address, tls: tls} = client) do
    meta = %{address: address, tls: tls != false and tls != nil}
    {:ok, keeper} = Keeper.start(owner, conn, client.reconnect, meta)
    %{client | keeper: keeper}
  end

  @doc """
  Closes the connection and stops the local server this client started, if
  any. Calls made with the client afterwards return an error; it does not
  reconnect.
  """
  @spec disconnect(t()) :: :ok
  def disconnect(%__MODULE__{conn: conn, keeper: keeper, server: server}) do
    if keeper, do: Keeper.stop(keeper)
    safe(fn -> HFBridge.GRPC.disconnect(conn) end)
    if server, do: LocalServer.stop(server)
    :ok
  end

  @doc """
  Opens a new connection to the same server with the same options (TLS,
  token, metadata) and returns a client using it; the new connection closes
  when `owner` exits (default: the caller). The local server a client
  started, if any, stays owned by the original client. Used by sessions to
  recover from a dropped connection; the original client is left as it is.
  The new connection takes the client's keepalive as it stands (doubled
  after a server's GOAWAY `too_many_pings`, see `HFBridge.Client.Keeper`).
  """
  @spec reconnect(t(), pid()) :: {:ok, t()} | {:error, Error.t()}
  def reconnect(client, owner \\ self())

  def reconnect(%__MODULE__{reconnect: {_, _, _} = initial} = client, owner) do
    {host, port, conn_opts} = target = current_target(client) || initial

    case HFBridge.GRPC.connect(host, port, conn_opts) do
      {:ok, conn} ->
        {:ok, keep(owner, %{client | conn: conn, server: nil, reconnect: target})}

      {:error, %Error{}} = error ->
        error
    end
  end

  def reconnect(%__MODULE__{}, _owner),
    do: {:error, Error.new(:session, :closed, "this client cannot reconnect (no address known)")}

  defp current_target(%__MODULE__{keeper: keeper}) when is_pid(keeper), do: Keeper.target(keeper)
  defp current_target(_client), do: nil

  @doc """
  Whether the client has an open connection now. A client whose connection
  has gone opens a new one on its next call (unless it was disconnected).
  """
  @spec connected?(t()) :: boolean()
  def connected?(%__MODULE__{conn: conn, keeper: keeper}) do
    cond do
      is_pid(conn) and Process.alive?(conn) -> true
      is_pid(keeper) -> is_pid(Keeper.current(keeper))
      true -> false
    end
  end

  @doc """
  Whether the client opens a new connection on its next call once the
  current one has gone: true until `disconnect/1` or the exit of its owner.
  """
  @spec reconnects?(t()) :: boolean()
  def reconnects?(%__MODULE__{keeper: keeper}), do: is_pid(keeper) and Process.alive?(keeper)

  @doc "Whether this client started its own local server."
  @spec local?(t()) :: boolean()
  def local?(%__MODULE__{server: server}), do: is_pid(server)

  @doc """
  Makes a unary call. `request` is a map of the RPC's request message.
  Options: `:timeout` (defaults to the client's), `:metadata`.
  """
  @spec call(t(), rpc(), map(), keyword()) :: {:ok, map()} | {:error, Error.t()}
  def call(%__MODULE__{} = client, rpc, request, opts \\ []) do
    with {:ok, {request_type, response_type}} <- rpc_types(rpc),
         {:ok, body} <- encode(request_type, request),
         {:ok, reply} <- grpc_unary(client, rpc, body, opts) do
      decode(response_type, reply)
    end
  end

  @doc """
  Opens a server-streaming call (`:ReadBatches`, `:Export`). The stream
  belongs to the calling process. Options: `:timeout` (a deadline for the
  whole call; none by default), `:metadata`.
  """
  @spec server_stream(t(), rpc(), map(), keyword()) :: {:ok, Stream.t()} | {:error, Error.t()}
  def server_stream(%__MODULE__{} = client, rpc, request, opts \\ []) do
    with {:ok, {request_type, response_type}} <- rpc_types(rpc),
         {:ok, body} <- encode(request_type, request),
         {:ok, grpc} <- grpc_stream(client, rpc, body, opts) do
      {:ok, %Stream{grpc: grpc, response: response_type}}
    end
  end

  @doc "Receives the next message of a server stream: `:done` after the last one."
  @spec recv(Stream.t(), timeout()) :: {:ok, map()} | :done | {:error, Error.t()}
  def recv(%Stream{grpc: grpc, response: response}, timeout \\ 60_000) do
    case HFBridge.GRPC.recv(grpc, timeout) do
      {:ok, message} -> decode(response, message)
      :done -> :done
      {:error, %Error{}} = error -> error
    end
  end

  @doc "Cancels a server stream (RST_STREAM CANCEL). Idempotent."
  @spec cancel(Stream.t()) :: :ok
  def cancel(%Stream{grpc: grpc}) do
    safe(fn -> HFBridge.GRPC.cancel(grpc) end)
    :ok
  end

  @doc "The request and response message names of an RPC."
  @spec rpc_types(atom()) :: {:ok, {atom(), atom()}} | {:error, Error.t()}
  def rpc_types(rpc) do
    case Map.fetch(@rpcs, rpc) do
      {:ok, types} -> {:ok, types}
      :error -> {:error, Error.new(:grpc, :unimplemented, "unknown RPC #{inspect(rpc)}")}
    end
  end

  # -- internals -----------------------------------------------------------------

  defp ensure_started do
    case Application.ensure_all_started(:hf_bridge) do
      {:ok, apps} ->
        {:ok, apps}

      {:error, reason} ->
        {:error, Error.new(:session, :not_started, "cannot start :hf_bridge: #{inspect(reason)}")}
    end
  end

  defp target(opts) do
    configured =
      cond do
        opts[:address] ->
          opts[:address]

        opts[:host] || opts[:port] ->
          {opts[:host], opts[:port]}

        true ->
          Application.get_env(:hf_bridge, :address) ||
            non_empty(System.get_env("HF_BRIDGE_ADDRESS"))
      end

    case {opts[:local], configured} do
      {true, _} ->
        :local

      {false, nil} ->
        {:error,
         Error.new(
           :options,
           :invalid_option,
           "local: false needs an address (option :address, or HF_BRIDGE_ADDRESS)"
         )}

      {_, nil} ->
        :local

      {_, {host, port}} when is_binary(host) and is_integer(port) ->
        {:ok, {host, port, opts[:tls]}}

      {_, {_, _}} ->
        {:error,
         Error.new(:options, :invalid_option, "options :host and :port must be given together")}

      {_, address} ->
        parse_address(address, opts[:tls])
    end
    |> case do
      :local -> {:ok, :local}
      other -> other
    end
  end

  @doc false
  @spec parse_address(String.t(), boolean() | keyword()) ::
          {:ok, {String.t(), pos_integer(), boolean() | keyword()}} | {:error, Error.t()}
  def parse_address(address, tls) when is_binary(address) do
    {rest, tls} =
      case address do
        "https://" <> rest -> {rest, if(tls == false, do: true, else: tls)}
        "http://" <> rest -> {rest, tls}
        rest -> {rest, tls}
      end

    rest = String.trim_trailing(rest, "/")

    {host, port} =
      case Regex.run(~r/^\[([^\]]+)\]:(\d+)$/, rest) do
        [_, host, port] ->
          {host, port}

        nil ->
          case String.split(rest, ":") do
            [host, port] -> {host, port}
            _ -> {nil, nil}
          end
      end

    case host && Integer.parse(port) do
      {port, ""} when host != "" and port in 1..65_535 ->
        {:ok, {host, port, tls}}

      _ ->
        {:error,
         Error.new(
           :options,
           :invalid_option,
           "invalid server address #{inspect(address)}; expected \"host:port\""
         )}
    end
  end

  defp connect_to(:local, opts) do
    server_opts = Keyword.put_new(opts[:local_server], :owner, opts[:owner])

    with {:ok, server, address} <- LocalServer.start(server_opts),
         {:ok, {host, port, _}} <- parse_address(address, false) do
      case open_conn(host, port, false, opts) do
        {:ok, client} ->
          {:ok, %{client | server: server}}

        {:error, error} ->
          LocalServer.stop(server)
          {:error, error}
      end
    end
  end

  defp connect_to({host, port, tls}, opts), do: open_conn(host, port, tls, opts)

  defp open_conn(host, port, tls, opts) do
    metadata =
      opts[:metadata] ++
        if(opts[:token], do: [{"authorization", "Bearer " <> opts[:token]}], else: [])

    conn_opts = [
      tls: tls,
      connect_timeout: opts[:connect_timeout],
      metadata: metadata,
      keepalive: opts[:keepalive],
      keepalive_timeout: opts[:keepalive_timeout]
    ]

    case HFBridge.GRPC.connect(host, port, conn_opts) do
      {:ok, conn} ->
        {:ok,
         %__MODULE__{
           conn: conn,
           address: "#{host}:#{port}",
           timeout: opts[:timeout],
           tls: tls,
           reconnect: {host, port, conn_opts}
         }}

      {:error, %Error{} = error} ->
        {:error, with_tls_hint(error, tls)}
    end
  end

  # A server that closes the connection right after it was opened is often a
  # TLS/plaintext mismatch or a missing client certificate: say so.
  defp with_tls_hint(%Error{code: :unavailable, message: message} = error, tls) do
    cond do
      String.starts_with?(message, "cannot connect") ->
        error

      tls == false ->
        %{
          error
          | message:
              message <>
                " (if the server uses TLS, connect with `tls: true` or `tls: [cacertfile: ...]`)"
        }

      true ->
        %{
          error
          | message:
              message <>
                " (if the server verifies client certificates, pass `tls: [certfile: ..., keyfile: ...]`)"
        }
    end
  end

  defp with_tls_hint(error, _tls), do: error

  defp grpc_unary(client, rpc, body, opts) do
    with {:ok, conn} <- live_conn(client) do
      HFBridge.GRPC.unary(conn, HFBridge.Proto.rpc_path(rpc), body,
        timeout: Keyword.get(opts, :timeout, client.timeout),
        metadata: Keyword.get(opts, :metadata, [])
      )
    end
  end

  defp grpc_stream(client, rpc, body, opts) do
    grpc_opts = [metadata: Keyword.get(opts, :metadata, [])]
    grpc_opts = if opts[:timeout], do: [{:timeout, opts[:timeout]} | grpc_opts], else: grpc_opts

    with {:ok, conn} <- live_conn(client) do
      HFBridge.GRPC.server_stream(conn, HFBridge.Proto.rpc_path(rpc), body, grpc_opts)
    end
  end

  # The connection the client was opened with while it runs; after it has
  # gone, the keeper's (opened again when needed).
  defp live_conn(%__MODULE__{conn: conn, keeper: keeper} = client) do
    cond do
      is_pid(conn) and Process.alive?(conn) -> {:ok, conn}
      is_pid(keeper) -> Keeper.conn(keeper, reconnect_wait(client))
      true -> {:ok, conn}
    end
  end

  defp reconnect_wait(%__MODULE__{reconnect: {_, _, opts}}) do
    case Keyword.get(opts, :connect_timeout) do
      ms when is_integer(ms) -> ms + 5_000
      _ -> 60_000
    end
  end

  defp reconnect_wait(_client), do: 60_000

  defp encode(type, request) do
    {:ok, HFBridge.Proto.encode(type, request)}
  rescue
    e ->
      {:error,
       Error.new(:proto, :invalid_message, "cannot encode #{type}: #{Exception.message(e)}")}
  end

  defp decode(type, binary) do
    case HFBridge.Proto.decode(type, binary) do
      {:ok, message} ->
        {:ok, message}

      {:error, %Error{}} = error ->
        error

      {:error, reason} ->
        {:error, Error.new(:proto, :malformed, "cannot decode #{type}: #{inspect(reason)}")}
    end
  end

  defp safe(fun) do
    fun.()
  catch
    _, _ -> :ok
  end

  defp non_empty(""), do: nil
  defp non_empty(value), do: value
end
