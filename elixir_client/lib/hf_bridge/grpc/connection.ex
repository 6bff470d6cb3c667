defmodule HFBridge.GRPC.Connection do
  @moduledoc """
  One HTTP/2 connection carrying many concurrent gRPC calls: a process
  owning the socket and an `HFBridge.HTTP2.Conn` state.

  Callers never link to it: a caller that dies only has its call cancelled
  (its process is monitored; the stream gets RST_STREAM CANCEL). A dropped
  socket fails every call in flight with a retryable `:unavailable` error
  and ends the process. A GOAWAY from the server lets streams at or below
  its last-stream-id finish and fails the others (retryable); new calls are
  refused and the process ends when the last call does.

  Each call's owner receives messages of the form
  `{:hf_bridge_grpc, ref, event}` where `event` is `{:message, binary}`,
  `{:done, metadata}` or `{:error, HFBridge.Error.t(), metadata}`. Calls in
  `:pull` mode get one message per `{:demand, ref, pid}` they send; `:push` calls
  get everything as it arrives. Use the `HFBridge.GRPC` API rather than this
  protocol directly.

  ## Keepalive

  A server can stop answering without closing the TCP connection (it hung,
  or the network between went away). After `:keepalive` milliseconds
  (default 30 000) in which nothing arrived, the connection sends a PING;
  when nothing, its acknowledgement included, arrives within
  `:keepalive_timeout` milliseconds more (default 10 000), the connection is
  dead: every call on it fails with a retryable `:unavailable` error and the
  process ends. A busy connection sends no PINGs. `keepalive: :infinity`
  turns this off. gRPC servers limit how often a client may PING an idle
  connection (grpc-core allows one per 5 minutes by default; the hf_bridge
  server one per second), and answer more with GOAWAY `too_many_pings`; the
  connection then ends with reason `{:shutdown, :too_many_pings}` once its
  calls are done, and `HFBridge.Client` doubles the keepalive interval of
  the connections it opens after that (as gRPC's keepalive design, A8,
  asks of clients).
  """

  use GenServer, restart: :temporary

  alias HFBridge.Error
  alias HFBridge.GRPC.{MessageBuffer, Metadata, Transport}
  alias HFBridge.HTTP2.Conn

  @user_agent "hf_bridge-elixir/0.1 grpc-otp"

  # SETTINGS_MAX_FRAME_SIZE announced by default: a server may then send a
  # large message in a few big DATA frames rather than many 16 KiB ones,
  # which costs less per byte to receive (the stream windows still bound
  # what is buffered).
  @max_frame_size 1024 * 1024

  defstruct [
    :socket,
    :transport,
    :h2,
    :scheme,
    :authority,
    metadata: [],
    max_message_size: 64 * 1024 * 1024,
    calls: %{},
    by_sid: %{},
    queue: :queue.new(),
    ready?: false,
    waiters: [],
    exit_reason: :normal,
    # interval, timeout, bytes received when last looked (`seen`), the PING
    # awaiting its answer (`waiting`), counts sent and answered (see init/1)
    keepalive: nil
  ]

  @keepalive 30_000
  @keepalive_timeout 10_000

  ## ------------------------------------------------------------------- API

  @doc "The `:keepalive` interval (milliseconds) a connection uses unless told otherwise."
  @spec default_keepalive() :: pos_integer()
  def default_keepalive, do: @keepalive

  @doc false
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, Keyword.take(opts, [:name]))

  @doc """
  Starts a connection process (under `HFBridge.ConnectionSupervisor` when it
  runs, or the `:supervisor` given). It has no socket until `activate/4`.
  """
  @spec start(keyword()) :: {:ok, pid()} | {:error, term()}
  def start(opts) do
    supervisor = Keyword.get(opts, :supervisor, HFBridge.ConnectionSupervisor)

    if is_pid(supervisor) or Process.whereis(supervisor) do
      DynamicSupervisor.start_child(supervisor, {__MODULE__, opts})
    else
      GenServer.start(__MODULE__, opts, Keyword.take(opts, [:name]))
    end
  end

  @doc """
  Hands the socket over and performs the HTTP/2 handshake: returns `:ok`
  once the server's SETTINGS arrived.
  """
  @spec activate(pid(), Transport.kind(), Transport.socket(), timeout()) ::
          :ok | {:error, Error.t()}
  def activate(pid, transport, socket, timeout) do
    GenServer.call(pid, {:activate, transport, socket}, timeout)
  end

  @doc """
  Snapshot of the connection for monitoring and tests: open streams, active
  and queued calls, bytes buffered for consumers (total and largest per
  call) and the per-stream window.
  """
  @spec stats(GenServer.server()) :: map()
  def stats(conn), do: GenServer.call(conn, :stats)

  ## ------------------------------------------------------------- callbacks

  @impl true
  def init(opts) do
    h2 =
      Conn.new(
        stream_window: Keyword.get(opts, :stream_window, 4 * 1024 * 1024),
        connection_window: Keyword.get(opts, :connection_window, 32 * 1024 * 1024),
        max_header_list_size: Keyword.get(opts, :max_header_list_size, 256 * 1024),
        max_frame_size: Keyword.get(opts, :max_frame_size, @max_frame_size)
      )

    state = %__MODULE__{
      h2: h2,
      scheme: Keyword.get(opts, :scheme, "http"),
      authority: Keyword.fetch!(opts, :authority),
      metadata: Keyword.get(opts, :metadata, []),
      max_message_size: Keyword.get(opts, :max_message_size, 64 * 1024 * 1024),
      keepalive: %{
        interval: Keyword.get(opts, :keepalive, @keepalive),
        timeout: Keyword.get(opts, :keepalive_timeout, @keepalive_timeout),
        seen: nil,
        waiting: nil,
        pings: 0,
        acks: 0
      }
    }

    {:ok, state}
  end

  @impl true
  def handle_call({:activate, transport, socket}, from, %{socket: nil} = state) do
    {h2, preface} = Conn.preface(state.h2)
    state = %{state | transport: transport, socket: socket, h2: h2, waiters: [from]}

    with :ok <- Transport.send(transport, socket, preface),
         :ok <- Transport.activate(transport, socket) do
      {:noreply, state}
    else
      {:error, reason} ->
        closed(state, "connection failed during the HTTP/2 handshake: #{inspect(reason)}")
    end
  end

  def handle_call({:start, path, body, opts}, {caller, _}, state) do
    cond do
      Conn.going_away?(state.h2) ->
        {:reply, {:error, unavailable("the connection is closing (GOAWAY)")}, state}

      not state.ready? ->
        {:reply, {:error, unavailable("the connection is not ready")}, state}

      true ->
        start_call(path, body, opts, caller, state)
    end
  end

  def handle_call({:cancel, ref}, _from, state) do
    case Map.fetch(state.calls, ref) do
      {:ok, call} ->
        {:reply, :ok, state |> reset(call, :cancel) |> forget(call) |> after_events()}

      :error ->
        {:reply, :ok, state}
    end
  end

  def handle_call({:metadata, ref}, _from, state) do
    case Map.fetch(state.calls, ref) do
      {:ok, call} -> {:reply, metadata(call), state}
      :error -> {:reply, nil, state}
    end
  end

  def handle_call(:stats, _from, state) do
    sizes = Enum.map(state.calls, fn {_, c} -> MessageBuffer.size(c.buffer) end)

    stats = %{
      open_streams: Conn.open_streams(state.h2),
      calls: map_size(state.calls),
      queued: Enum.count(state.calls, fn {_, c} -> c.sid == nil end),
      buffered_bytes: Enum.sum(sizes),
      max_buffered_bytes: Enum.max(sizes, fn -> 0 end),
      stream_window: state.h2.stream_window,
      max_message_size: state.max_message_size,
      keepalive_pings: state.keepalive.pings,
      keepalive_acks: state.keepalive.acks
    }

    {:reply, stats, state}
  end

  def handle_call(:disconnect, _from, state) do
    if state.socket, do: send_bytes(state, Conn.goaway(state.h2, :no_error))
    error = Error.new(:grpc, :cancelled, "the connection was closed by the client")
    state = fail_all(state, error)
    if state.socket, do: Transport.close(state.transport, state.socket)
    {:stop, :normal, :ok, %{state | socket: nil}}
  end

  @impl true
  def handle_info({tag, socket, data}, %{socket: socket} = state) when tag in [:tcp, :ssl] do
    case Conn.receive_data(state.h2, data) do
      {:ok, h2, events, out} ->
        state = %{state | h2: h2}

        with :ok <- send_bytes(state, out) do
          state = Enum.reduce(events, state, &handle_event/2) |> after_events()

          case Transport.activate(state.transport, socket) do
            :ok -> stop_if_done(state)
            {:error, _} -> closed(state, "the connection was closed by the server")
          end
        else
          _ -> closed(state, "the connection was closed by the server")
        end

      {:error, h2, error, out} ->
        _ = send_bytes(%{state | h2: h2}, out)
        Transport.close(state.transport, socket)
        state = %{state | h2: h2, socket: nil}
        state = state |> reply_waiters({:error, error}) |> fail_all(error)
        {:stop, :normal, state}
    end
  end

  def handle_info({tag, socket}, %{socket: socket} = state)
      when tag in [:tcp_closed, :ssl_closed],
      do: closed(%{state | socket: nil}, "the connection was closed by the server")

  def handle_info({tag, socket, reason}, %{socket: socket} = state)
      when tag in [:tcp_error, :ssl_error],
      do: closed(state, "connection error: #{inspect(reason)}")

  def handle_info({:demand, ref, from}, state) do
    case Map.fetch(state.calls, ref) do
      {:ok, call} ->
        {:noreply, state |> deliver(%{call | demand: true}) |> after_events()}

      :error ->
        error =
          Error.new(
            :grpc,
            :cancelled,
            "the stream was cancelled or is unknown to this connection"
          )

        send(from, {:hf_bridge_grpc, ref, {:error, error, %{headers: [], trailers: []}}})
        {:noreply, state}
    end
  end

  def handle_info({:deadline, ref}, state) do
    case Map.fetch(state.calls, ref) do
      {:ok, call} ->
        error =
          Error.from_grpc_status(4, "deadline of #{call.timeout} ms exceeded", %{
            timeout: call.timeout
          })

        stop_if_done(state |> fail(%{call | timer: nil}, error, :cancel) |> after_events())

      :error ->
        {:noreply, state}
    end
  end

  def handle_info({:DOWN, mon, :process, _pid, _reason}, state) do
    case Enum.find(state.calls, fn {_, c} -> c.owner_mon == mon end) do
      {_ref, call} ->
        stop_if_done(state |> reset(call, :cancel) |> forget(call) |> after_events())

      nil ->
        {:noreply, state}
    end
  end

  def handle_info({:keepalive, _}, %{socket: nil} = state), do: {:noreply, state}

  def handle_info({:keepalive, :tick}, %{keepalive: ka} = state) do
    case Transport.received_bytes(state.transport, state.socket) do
      seen when seen == ka.seen and is_integer(seen) ->
        ping = ka.pings + 1
        _ = send_bytes(state, Conn.ping(state.h2, <<ping::64>>))
        Process.send_after(self(), {:keepalive, {:check, ping, seen}}, ka.timeout)
        {:noreply, %{state | keepalive: %{ka | pings: ping, waiting: ping}}}

      seen ->
        {:noreply, schedule_keepalive(%{state | keepalive: %{ka | seen: seen}})}
    end
  end

  def handle_info({:keepalive, {:check, ping, before}}, %{keepalive: %{waiting: ping}} = state) do
    ka = state.keepalive

    case Transport.received_bytes(state.transport, state.socket) do
      ^before ->
        closed(
          state,
          "the server did not answer a keepalive PING within #{ka.timeout} ms (nothing " <>
            "arrived for #{ka.interval + ka.timeout} ms); the connection is treated as dead"
        )

      seen ->
        # Bytes arrived but not yet the acknowledgement: the server is alive.
        {:noreply, schedule_keepalive(%{state | keepalive: %{ka | seen: seen, waiting: nil}})}
    end
  end

  def handle_info({:keepalive, {:check, _ping, _before}}, state), do: {:noreply, state}

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    if state.socket, do: Transport.close(state.transport, state.socket)
    :ok
  end

  ## --------------------------------------------------------------- calls

  defp start_call(path, body, opts, caller, state) do
    owner = Keyword.get(opts, :owner, caller)
    timeout = Keyword.get(opts, :timeout)

    with {:ok, default_md} <- Metadata.encode(state.metadata),
         {:ok, call_md} <- Metadata.encode(Keyword.get(opts, :metadata, [])) do
      ref = make_ref()

      headers =
        [
          {":method", "POST"},
          {":scheme", state.scheme},
          {":path", path},
          {":authority", state.authority},
          {"content-type", "application/grpc"},
          {"te", "trailers"},
          {"user-agent", @user_agent},
          {"grpc-accept-encoding", "identity,gzip"}
        ] ++
          if(timeout, do: [{"grpc-timeout", Metadata.encode_timeout(timeout)}], else: []) ++
          default_md ++ call_md

      call = %{
        ref: ref,
        sid: nil,
        owner: owner,
        owner_mon: Process.monitor(owner),
        mode: Keyword.get(opts, :mode, :pull),
        demand: false,
        buffer: MessageBuffer.new(),
        consumed: 0,
        delivered: 0,
        headers: nil,
        trailers: [],
        encoding: nil,
        final: nil,
        timeout: timeout,
        timer: if(timeout, do: Process.send_after(self(), {:deadline, ref}, timeout)),
        request: {headers, IO.iodata_to_binary(MessageBuffer.encode(body))}
      }

      state = %{
        state
        | calls: Map.put(state.calls, ref, call),
          queue: :queue.in(ref, state.queue)
      }

      {:reply, {:ok, ref}, after_events(state)}
    else
      {:error, error} -> {:reply, {:error, error}, state}
    end
  end

  # Starts queued calls while the peer's concurrency limit allows.
  defp after_events(state) do
    if state.socket != nil and state.ready? and Conn.can_open?(state.h2) do
      case :queue.out(state.queue) do
        {{:value, ref}, queue} ->
          state = %{state | queue: queue}

          case Map.fetch(state.calls, ref) do
            {:ok, %{sid: nil} = call} -> state |> open(call) |> after_events()
            _ -> after_events(state)
          end

        {:empty, _} ->
          state
      end
    else
      state
    end
  end

  defp open(state, call) do
    {headers, body} = call.request

    case Conn.open_stream(state.h2, headers, false) do
      {:ok, h2, sid, frames} ->
        {h2, data} = Conn.send_data(h2, sid, body, true)
        call = %{call | sid: sid, request: nil}

        state = %{
          state
          | h2: h2,
            calls: Map.put(state.calls, call.ref, call),
            by_sid: Map.put(state.by_sid, sid, call.ref)
        }

        case send_bytes(state, [frames, data]) do
          :ok -> state
          {:error, _} -> state
        end

      {:error, error} ->
        fail(state, call, error, nil)
    end
  end

  ## -------------------------------------------------------------- events

  defp handle_event({:settings, _}, %{ready?: false} = state),
    do: %{state | ready?: true} |> reply_waiters(:ok) |> start_keepalive()

  defp handle_event({:settings, _}, state), do: state

  defp handle_event({:headers, sid, headers, end_stream?}, state) do
    with_call(state, sid, fn call ->
      cond do
        call.headers == nil and end_stream? ->
          # Trailers-Only response
          finish(state, %{call | headers: headers}, headers)

        call.headers == nil ->
          case check_response_headers(headers) do
            :ok ->
              encoding = header(headers, "grpc-encoding")
              put_call(state, %{call | headers: headers, encoding: encoding})

            {:error, error} ->
              fail(state, %{call | headers: headers}, error, :cancel)
          end

        end_stream? ->
          finish(state, call, headers)

        true ->
          fail(
            state,
            call,
            internal("the server sent a second header block without ending the stream"),
            :cancel
          )
      end
    end)
  end

  defp handle_event({:data, sid, data, end_stream?}, state) do
    with_call(state, sid, fn
      %{headers: nil} = call ->
        fail(state, call, internal("the server sent DATA before HEADERS"), :cancel)

      call ->
        call = %{call | buffer: MessageBuffer.push(call.buffer, data)}

        if end_stream? do
          fail(state, call, internal("the server ended the stream without trailers"), nil)
        else
          state |> put_call(call) |> deliver(call)
        end
    end)
  end

  defp handle_event({:reset, sid, code}, state) do
    with_call(state, sid, fn call ->
      status = Metadata.rst_to_grpc(code)

      error =
        Error.from_grpc_status(status, "the server reset the stream (HTTP/2 #{code})", %{
          http2_error: code
        })

      fail(%{state | by_sid: Map.delete(state.by_sid, sid)}, %{call | sid: nil}, error, nil)
    end)
  end

  defp handle_event({:stream_error, sid, error}, state) do
    with_call(state, sid, fn call -> fail(state, %{call | sid: nil}, error, nil) end)
  end

  defp handle_event({:ping_ack, <<ping::64>>}, %{keepalive: %{waiting: ping} = ka} = state) do
    seen = Transport.received_bytes(state.transport, state.socket)
    schedule_keepalive(%{state | keepalive: %{ka | acks: ka.acks + 1, waiting: nil, seen: seen}})
  end

  defp handle_event({:ping_ack, _payload}, state), do: state

  defp handle_event({:goaway, _last, :enhance_your_calm, "too_many_pings"} = goaway, state),
    do: handle_goaway(goaway, %{state | exit_reason: {:shutdown, :too_many_pings}})

  defp handle_event({:goaway, _, _, _} = goaway, state), do: handle_goaway(goaway, state)

  defp handle_goaway({:goaway, last, code, debug}, state) do
    message =
      "the server is going away (HTTP/2 #{code}#{if debug != "", do: ": " <> debug, else: ""})"

    error = unavailable(message)

    Enum.reduce(state.calls, state, fn {_ref, call}, state ->
      if call.sid == nil or call.sid > last,
        do: fail(state, call, error, :cancel),
        else: state
    end)
  end

  defp with_call(state, sid, fun) do
    with {:ok, ref} <- Map.fetch(state.by_sid, sid),
         {:ok, call} <- Map.fetch(state.calls, ref) do
      fun.(call)
    else
      _ -> state
    end
  end

  defp check_response_headers(headers) do
    status = header(headers, ":status")
    content_type = header(headers, "content-type") || ""

    cond do
      status != "200" ->
        code = Metadata.http_status_to_grpc(parse_int(status))

        {:error,
         Error.from_grpc_status(code, "the server answered HTTP status #{status}", %{
           http_status: status
         })}

      not String.starts_with?(content_type, "application/grpc") ->
        {:error, Error.from_grpc_status(2, "unexpected content-type #{inspect(content_type)}")}

      true ->
        :ok
    end
  end

  defp finish(state, call, trailers) do
    headers = call.headers

    final =
      case header(trailers, "grpc-status") do
        nil ->
          http = header(headers, ":status")

          if http != "200" do
            code = Metadata.http_status_to_grpc(parse_int(http))

            {:error,
             Error.from_grpc_status(code, "the server answered HTTP status #{http}", %{
               http_status: http
             })}
          else
            {:error, internal("the server sent no grpc-status")}
          end

        "0" ->
          :ok

        status ->
          message = Metadata.percent_decode(header(trailers, "grpc-message") || "")
          details = %{metadata: Metadata.decode(trailers)}

          case Integer.parse(status) do
            {n, ""} when n >= 0 -> {:error, Error.from_grpc_status(n, message, details)}
            _ -> {:error, internal("invalid grpc-status #{inspect(status)}")}
          end
      end

    call = %{call | trailers: trailers, final: final}
    state = %{state | by_sid: Map.delete(state.by_sid, call.sid)}
    deliver(put_call(state, %{call | sid: nil}), %{call | sid: nil})
  end

  ## ------------------------------------------------------------ delivery

  defp deliver(state, call) do
    case call.mode do
      :push -> deliver_all(state, call)
      :pull when call.demand -> deliver_one(state, call)
      :pull -> after_take(state, call)
    end
  end

  # Push mode serves unary calls: a second response message is a protocol
  # violation and must not pile up in the caller's mailbox.
  defp deliver_all(state, call) do
    case next_message(call) do
      {:ok, _message, %{delivered: 1} = call} ->
        fail(
          state,
          call,
          Error.from_grpc_status(13, "the server sent more than one message to a unary call"),
          :cancel
        )

      {:ok, message, call} ->
        send(call.owner, {:hf_bridge_grpc, call.ref, {:message, message}})
        deliver_all(state, %{call | delivered: 1})

      :more ->
        state |> put_call(call) |> after_take(call)

      {:error, error, call} ->
        fail(state, call, error, :cancel)
    end
  end

  defp deliver_one(state, call) do
    case next_message(call) do
      {:ok, message, call} ->
        send(call.owner, {:hf_bridge_grpc, call.ref, {:message, message}})
        call = %{call | demand: false}
        state |> put_call(call) |> after_take(call)

      :more ->
        state |> put_call(call) |> after_take(call)

      {:error, error, call} ->
        fail(state, call, error, :cancel)
    end
  end

  defp next_message(call) do
    case MessageBuffer.take(call.buffer) do
      {:ok, compressed?, message, buffer} ->
        call = %{call | buffer: buffer, consumed: call.consumed + 5 + byte_size(message)}

        case decompress(compressed?, call.encoding, message) do
          {:ok, message} -> {:ok, message, call}
          {:error, error} -> {:error, error, call}
        end

      :more ->
        :more
    end
  end

  # After taking data: finish the call if it ended, else return credit.
  defp after_take(state, call) do
    cond do
      call.final != nil and MessageBuffer.size(call.buffer) == 0 ->
        if call.mode == :push or call.demand, do: complete(state, call), else: state

      call.final != nil ->
        # The stream ended; complete messages are already delivered.
        if MessageBuffer.take(call.buffer) == :more,
          do: fail(state, call, internal("the stream ended inside a message"), nil),
          else: state

      call.sid == nil ->
        state

      MessageBuffer.needed(call.buffer) - 5 > state.max_message_size ->
        fail(
          state,
          call,
          resource_exhausted(MessageBuffer.needed(call.buffer) - 5, state.max_message_size),
          :cancel
        )

      true ->
        {h2, out} =
          Conn.update_stream_credit(
            state.h2,
            call.sid,
            call.consumed,
            MessageBuffer.needed(call.buffer)
          )

        state = %{state | h2: h2} |> put_call(%{call | consumed: 0})
        _ = send_bytes(state, out)
        state
    end
  end

  defp complete(state, call) do
    event =
      case call.final do
        :ok -> {:done, metadata(call)}
        {:error, error} -> {:error, error, metadata(call)}
      end

    send(call.owner, {:hf_bridge_grpc, call.ref, event})
    forget(state, call)
  end

  # Fails a call now, discarding what is buffered. `rst` is the RST_STREAM
  # code to send when the stream is still open, or nil.
  defp fail(state, call, error, rst) do
    state = if rst, do: reset(state, call, rst), else: state
    send(call.owner, {:hf_bridge_grpc, call.ref, {:error, error, metadata(call)}})
    forget(state, call)
  end

  defp reset(state, %{sid: nil}, _code), do: state

  defp reset(state, call, code) do
    {h2, out} = Conn.reset_stream(state.h2, call.sid, code)
    state = %{state | h2: h2}
    _ = send_bytes(state, out)
    state
  end

  defp forget(state, call) do
    Process.demonitor(call.owner_mon, [:flush])
    if call.timer, do: Process.cancel_timer(call.timer)

    by_sid = if call.sid, do: Map.delete(state.by_sid, call.sid), else: state.by_sid
    %{state | calls: Map.delete(state.calls, call.ref), by_sid: by_sid}
  end

  defp put_call(state, call), do: %{state | calls: Map.put(state.calls, call.ref, call)}

  defp metadata(call) do
    %{
      headers: Metadata.decode(call.headers || []),
      trailers: Metadata.decode(call.trailers || [])
    }
  end

  defp decompress(false, _encoding, message), do: {:ok, message}

  defp decompress(true, "gzip", message) do
    {:ok, :zlib.gunzip(message)}
  rescue
    _ -> {:error, internal("could not gunzip a compressed message")}
  end

  defp decompress(true, encoding, _message),
    do:
      {:error, internal("compressed message with unsupported grpc-encoding #{inspect(encoding)}")}

  ## -------------------------------------------------------------- helpers

  defp send_bytes(_state, []), do: :ok
  defp send_bytes(%{socket: nil}, _), do: {:error, :closed}

  defp send_bytes(state, iodata) do
    if IO.iodata_length(iodata) == 0,
      do: :ok,
      else: Transport.send(state.transport, state.socket, iodata)
  end

  defp start_keepalive(%{keepalive: ka} = state) do
    seen = Transport.received_bytes(state.transport, state.socket)
    schedule_keepalive(%{state | keepalive: %{ka | seen: seen}})
  end

  # Arms the next keepalive check (see "Keepalive" in the moduledoc).
  defp schedule_keepalive(%{keepalive: %{interval: :infinity}} = state), do: state

  defp schedule_keepalive(%{keepalive: ka} = state) do
    Process.send_after(self(), {:keepalive, :tick}, ka.interval)
    state
  end

  defp closed(state, message) do
    if state.socket, do: Transport.close(state.transport, state.socket)
    error = unavailable(message)
    state = %{state | socket: nil} |> reply_waiters({:error, error}) |> fail_all(error)
    {:stop, state.exit_reason, state}
  end

  defp stop_if_done(state) do
    if Conn.going_away?(state.h2) and map_size(state.calls) == 0 do
      if state.socket, do: Transport.close(state.transport, state.socket)
      {:stop, state.exit_reason, %{state | socket: nil}}
    else
      {:noreply, state}
    end
  end

  defp fail_all(state, error) do
    Enum.reduce(state.calls, state, fn {_ref, call}, state ->
      fail(state, %{call | sid: nil}, error, nil)
    end)
  end

  defp reply_waiters(state, reply) do
    Enum.each(state.waiters, &GenServer.reply(&1, reply))
    %{state | waiters: []}
  end

  defp header(headers, name) do
    case List.keyfind(headers, name, 0) do
      {_, value} -> value
      nil -> nil
    end
  end

  defp parse_int(nil), do: 0

  defp parse_int(value) do
    case Integer.parse(value) do
      {n, _} -> n
      :error -> 0
    end
  end

  defp unavailable(message), do: Error.new(:grpc, :unavailable, message, retryable: true)
  defp internal(message), do: Error.from_grpc_status(13, message)

  defp resource_exhausted(size, limit),
    do:
      Error.from_grpc_status(
        8,
        "received message of #{size} bytes exceeds the limit of #{limit} bytes"
      )
end
