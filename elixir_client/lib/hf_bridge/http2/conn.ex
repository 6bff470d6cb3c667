defmodule HFBridge.HTTP2.Conn do
  @moduledoc """
  The client side of one HTTP/2 connection (RFC 9113) as a pure data
  structure: bytes in, events and bytes out. It owns no socket and no
  process; `HFBridge.GRPC.Connection` drives it.

  ## Flow control (RFC 9113, Section 5.2 and 6.9)

  Receiving: the peer is granted `:connection_window` octets on stream 0
  (WINDOW_UPDATE right after the preface) and `:stream_window` octets per
  stream (SETTINGS_INITIAL_WINDOW_SIZE). Stream credit is returned only
  through `update_stream_credit/4`, which the owner calls when the consumer
  takes data: it re-grants the stream up to
  `max(stream_window, needed) - unconsumed` octets, in batches of at least a
  quarter window. So the octets received but not consumed on one stream
  never exceed `max(stream_window, bytes needed to complete the message in
  progress)`.
  Connection credit is returned as DATA arrives (batched, a quarter of the
  window at a time): the stream windows already bound memory, and a slow
  stream must not starve the others.

  Sending: DATA waits in a per-stream queue until both the stream and the
  connection send windows allow it, and is cut to SETTINGS_MAX_FRAME_SIZE.

  ## Events

  `receive_data/2` returns events:

    * `{:headers, stream_id, headers, end_stream?}`
    * `{:data, stream_id, iodata, end_stream?}` — the payload as a binary, or
      as a list of binaries when the frame arrived in several pieces
    * `{:reset, stream_id, error_code}` — the peer reset the stream
    * `{:stream_error, stream_id, HFBridge.Error.t()}` — we reset it
    * `{:goaway, last_stream_id, error_code, debug}`
    * `{:settings, [setting]}` — the peer's settings were applied
    * `{:ping_ack, payload}` — the peer answered a PING we sent (`ping/2`)
  """

  alias HFBridge.Error
  alias HFBridge.HPACK
  alias HFBridge.HTTP2.Frame

  @max_window 0x7FFFFFFF
  @default_window 65_535
  @min_frame_size 16_384
  @max_frame_size 16_777_215

  defstruct buffer: "",
            settings_received?: false,
            encoder: nil,
            decoder: nil,
            next_stream_id: 1,
            stream_window: 4 * 1024 * 1024,
            connection_window: 32 * 1024 * 1024,
            max_header_list_size: 256 * 1024,
            max_frame_size: 16_384,
            recv_window: @default_window,
            send_window: @default_window,
            peer: %{
              max_concurrent_streams: :infinity,
              initial_window_size: @default_window,
              max_frame_size: 16_384,
              max_header_list_size: :infinity
            },
            streams: %{},
            partial_headers: nil,
            goaway: nil

  @typedoc "Connection state."
  @type t :: %__MODULE__{}
  @type stream_id :: pos_integer()
  @type event ::
          {:headers, stream_id(), [HPACK.header()], boolean()}
          | {:data, stream_id(), iodata(), boolean()}
          | {:reset, stream_id(), Frame.error_code()}
          | {:stream_error, stream_id(), Error.t()}
          | {:goaway, non_neg_integer(), Frame.error_code(), binary()}
          | {:settings, [Frame.setting()]}
          | {:ping_ack, <<_::64>>}

  @doc """
  A new connection state. Options: `:stream_window` (default 4 MiB),
  `:connection_window` (default 32 MiB), `:max_header_list_size` (256 KiB)
  and `:max_frame_size`, the largest frame payload the peer may send us
  (SETTINGS_MAX_FRAME_SIZE, RFC 9113 Section 6.5.2; default 16 384, the
  protocol's initial value, clamped to 16 384..16 777 215).
  """
  @spec new(keyword()) :: t()
  def new(opts \\ []) do
    %__MODULE__{
      encoder: HPACK.new(),
      decoder: HPACK.new(),
      stream_window: min(Keyword.get(opts, :stream_window, 4 * 1024 * 1024), @max_window),
      connection_window:
        min(Keyword.get(opts, :connection_window, 32 * 1024 * 1024), @max_window),
      max_header_list_size: Keyword.get(opts, :max_header_list_size, 256 * 1024),
      max_frame_size:
        opts
        |> Keyword.get(:max_frame_size, @min_frame_size)
        |> max(@min_frame_size)
        |> min(@max_frame_size)
    }
  end

  @doc """
  The bytes a client sends first: the preface, our SETTINGS and the
  connection-level WINDOW_UPDATE raising the receive window.
  """
  @spec preface(t()) :: {t(), iodata()}
  def preface(%__MODULE__{} = conn) do
    # A larger SETTINGS_MAX_FRAME_SIZE means fewer frames per message. Frames
    # up to it are accepted from the start, before the peer acknowledges it.
    frame_size =
      if conn.max_frame_size > @min_frame_size,
        do: [max_frame_size: conn.max_frame_size],
        else: []

    settings =
      Frame.settings(
        [
          enable_push: 0,
          initial_window_size: conn.stream_window,
          max_header_list_size: conn.max_header_list_size
        ] ++ frame_size
      )

    increment = conn.connection_window - @default_window
    update = if increment > 0, do: Frame.window_update(0, increment), else: []

    {%{conn | recv_window: max(conn.connection_window, @default_window)},
     [Frame.preface(), settings, update]}
  end

  @doc "Number of open streams."
  @spec open_streams(t()) :: non_neg_integer()
  def open_streams(%__MODULE__{streams: streams}), do: map_size(streams)

  @doc "Whether a new stream may be opened now (peer concurrency limit, GOAWAY)."
  @spec can_open?(t()) :: boolean()
  def can_open?(%__MODULE__{goaway: nil} = conn) do
    case conn.peer.max_concurrent_streams do
      :infinity -> true
      max -> map_size(conn.streams) < max
    end
  end

  def can_open?(_conn), do: false

  @doc "Whether the peer sent GOAWAY."
  @spec going_away?(t()) :: boolean()
  def going_away?(%__MODULE__{goaway: goaway}), do: goaway != nil

  @doc """
  Opens a stream by sending HEADERS (+ CONTINUATION). The caller checks
  `can_open?/1` first.
  """
  @spec open_stream(t(), [HPACK.header()], boolean()) ::
          {:ok, t(), stream_id(), iodata()} | {:error, Error.t()}
  def open_stream(%__MODULE__{} = conn, headers, end_stream?) do
    size = Enum.reduce(headers, 0, fn {n, v}, acc -> acc + byte_size(n) + byte_size(v) + 32 end)

    cond do
      conn.next_stream_id > @max_window ->
        {:error, Error.new(:http2, :unavailable, "stream identifiers exhausted", retryable: true)}

      conn.peer.max_header_list_size != :infinity and size > conn.peer.max_header_list_size ->
        {:error,
         Error.new(
           :http2,
           :invalid_argument,
           "request headers exceed the server's header list limit"
         )}

      true ->
        sid = conn.next_stream_id
        {block, encoder} = HPACK.encode(headers, conn.encoder)
        frames = Frame.headers(sid, block, end_stream?, conn.peer.max_frame_size)

        stream = %{
          id: sid,
          send_window: conn.peer.initial_window_size,
          recv_window: conn.stream_window,
          unconsumed: 0,
          pending: [],
          pending_size: 0,
          fin: end_stream?,
          local_closed?: end_stream?,
          remote_closed?: false
        }

        conn = %{
          conn
          | encoder: encoder,
            next_stream_id: sid + 2,
            streams: Map.put(conn.streams, sid, stream)
        }

        {:ok, conn, sid, frames}
    end
  end

  @doc "Queues DATA on a stream and sends what the windows allow."
  @spec send_data(t(), stream_id(), iodata(), boolean()) :: {t(), iodata()}
  def send_data(%__MODULE__{} = conn, sid, data, end_stream?) do
    case Map.fetch(conn.streams, sid) do
      {:ok, %{local_closed?: false} = stream} ->
        stream = %{
          stream
          | pending: [stream.pending | data],
            pending_size: stream.pending_size + IO.iodata_length(data),
            fin: end_stream?
        }

        flush(%{conn | streams: Map.put(conn.streams, sid, stream)})

      _ ->
        {conn, []}
    end
  end

  @doc """
  Reports that the consumer took `consumed` octets of a stream's DATA and
  re-grants credit. `needed` is the number of octets, counted from the first
  octet not yet consumed, required to complete the message in progress.

  The stream is granted up to `max(stream_window, needed) - unconsumed`
  octets, where `unconsumed` is what was received and not yet consumed; a
  WINDOW_UPDATE goes out once the gap reaches a quarter window, or at once
  when the message in progress could not otherwise complete.
  """
  @spec update_stream_credit(t(), stream_id(), non_neg_integer(), non_neg_integer()) ::
          {t(), iodata()}
  def update_stream_credit(%__MODULE__{} = conn, sid, consumed, needed) do
    case Map.fetch(conn.streams, sid) do
      {:ok, %{remote_closed?: false} = stream} ->
        unconsumed = max(stream.unconsumed - consumed, 0)
        stream = %{stream | unconsumed: unconsumed}
        target = min(max(conn.stream_window, needed) - unconsumed, @max_window)
        gap = target - stream.recv_window

        if gap > 0 and
             (gap >= div(conn.stream_window, 4) or needed > unconsumed + stream.recv_window) do
          stream = %{stream | recv_window: target}
          {%{conn | streams: Map.put(conn.streams, sid, stream)}, Frame.window_update(sid, gap)}
        else
          {%{conn | streams: Map.put(conn.streams, sid, stream)}, []}
        end

      _ ->
        {conn, []}
    end
  end

  @doc "Resets a stream (RST_STREAM) and forgets it. A no-op for unknown streams."
  @spec reset_stream(t(), stream_id(), Frame.error_code()) :: {t(), iodata()}
  def reset_stream(%__MODULE__{} = conn, sid, code) do
    if Map.has_key?(conn.streams, sid),
      do: {%{conn | streams: Map.delete(conn.streams, sid)}, Frame.rst_stream(sid, code)},
      else: {conn, []}
  end

  @doc """
  A PING frame carrying `payload` (8 bytes); the peer's answer comes back as
  a `{:ping_ack, payload}` event.
  """
  @spec ping(t(), <<_::64>>) :: iodata()
  def ping(%__MODULE__{}, <<_::64>> = payload), do: Frame.ping(payload, false)

  @doc "A GOAWAY frame to end the connection from our side."
  @spec goaway(t(), Frame.error_code(), binary()) :: iodata()
  def goaway(%__MODULE__{}, code, debug \\ ""), do: Frame.goaway(0, code, debug)

  ## ------------------------------------------------------------- receiving

  @doc """
  Feeds received bytes. Returns the events in order and the bytes to send
  back (SETTINGS ACK, PING ACK, WINDOW_UPDATE, ...). A connection error
  returns `{:error, conn, error, bytes}` where `bytes` ends with GOAWAY; the
  connection must then be closed.
  """
  @spec receive_data(t(), binary()) ::
          {:ok, t(), [event()], iodata()} | {:error, t(), Error.t(), iodata()}
  def receive_data(%__MODULE__{} = conn, ""), do: {:ok, conn, [], []}
  def receive_data(%__MODULE__{buffer: ""} = conn, bytes), do: loop(conn, bytes, [], [])

  def receive_data(%__MODULE__{buffer: pending} = conn, bytes),
    do: resume(%{conn | buffer: ""}, pending, bytes, [], [])

  # `bytes` start at a frame boundary. A frame cut by the end of `bytes` is
  # kept as its header plus the payload parts received so far, so the bytes
  # of a frame are never joined just to wait for the rest (`buffer` is
  # `{header, parts_newest_first, received}`, or the first < 9 bytes of a
  # header).
  defp loop(conn, bytes, events, out) do
    case Frame.decode(bytes, conn.max_frame_size) do
      {:ok, frame, rest} ->
        handle(conn, frame, rest, events, out)

      :more when byte_size(bytes) < 9 ->
        done(%{conn | buffer: bytes}, events, out)

      :more ->
        {:ok, header, payload} = Frame.decode_header(bytes, conn.max_frame_size)
        done(%{conn | buffer: {header, [payload], byte_size(payload)}}, events, out)

      {:error, {code, message}} ->
        connection_error(conn, code, message, events, out)
    end
  end

  defp resume(conn, head, bytes, events, out) when is_binary(head) do
    missing = 9 - byte_size(head)

    case bytes do
      <<more::binary-size(missing), rest::binary>> ->
        case Frame.decode_header(head <> more, conn.max_frame_size) do
          {:ok, header, ""} -> resume(conn, {header, [], 0}, rest, events, out)
          {:error, {code, message}} -> connection_error(conn, code, message, events, out)
        end

      _ ->
        done(%{conn | buffer: head <> bytes}, events, out)
    end
  end

  defp resume(conn, {{len, _, _, _} = header, parts, received}, bytes, events, out) do
    missing = len - received

    case bytes do
      <<last::binary-size(missing), rest::binary>> ->
        parts = if last == "", do: parts, else: [last | parts]

        case Frame.decode_parts(header, Enum.reverse(parts)) do
          {:ok, frame} -> handle(conn, frame, rest, events, out)
          {:error, {code, message}} -> connection_error(conn, code, message, events, out)
        end

      _ ->
        done(
          %{conn | buffer: {header, [bytes | parts], received + byte_size(bytes)}},
          events,
          out
        )
    end
  end

  defp handle(conn, frame, rest, events, out) do
    case handle_frame(frame, conn) do
      {:ok, conn, new_events, new_out} when rest == "" ->
        done(conn, prepend(new_events, events), [new_out | out])

      {:ok, conn, new_events, new_out} ->
        loop(conn, rest, prepend(new_events, events), [new_out | out])

      {:error, code, message} ->
        connection_error(conn, code, message, events, out)
    end
  end

  defp done(conn, events, out), do: {:ok, conn, Enum.reverse(events), Enum.reverse(out)}

  defp prepend([], events), do: events
  defp prepend([e], events), do: [e | events]
  defp prepend(list, events), do: Enum.reverse(list, events)

  defp connection_error(conn, code, message, _events, out) do
    error =
      Error.new(:http2, code, "HTTP/2 connection error (#{code}): #{message}",
        details: %{http2_error: code}
      )

    {:error, conn, error, Enum.reverse([Frame.goaway(0, code, message) | out])}
  end

  # The server preface is a SETTINGS frame (RFC 9113, Section 3.4).
  defp handle_frame({:settings, false, _} = frame, %{settings_received?: false} = conn),
    do: handle_frame(frame, %{conn | settings_received?: true})

  defp handle_frame(_frame, %{settings_received?: false}),
    do: {:error, :protocol_error, "the server preface must start with SETTINGS"}

  # While a header block is open only its CONTINUATION frames may arrive.
  defp handle_frame(
         {:continuation, sid, fragment, end_headers?},
         %{partial_headers: {sid, es, acc, size}} = conn
       ) do
    size = size + byte_size(fragment)

    cond do
      size > 4 * conn.max_header_list_size + 65_536 ->
        {:error, :enhance_your_calm, "header block too large"}

      end_headers? ->
        header_block(
          %{conn | partial_headers: nil},
          sid,
          IO.iodata_to_binary([acc | fragment]),
          es
        )

      true ->
        {:ok, %{conn | partial_headers: {sid, es, [acc | fragment], size}}, [], []}
    end
  end

  defp handle_frame(_frame, %{partial_headers: {_, _, _, _}}),
    do: {:error, :protocol_error, "expected CONTINUATION"}

  defp handle_frame({:continuation, _, _, _}, _conn),
    do: {:error, :protocol_error, "unexpected CONTINUATION"}

  defp handle_frame({:headers, sid, fragment, es, true}, conn),
    do: header_block(conn, sid, fragment, es)

  defp handle_frame({:headers, sid, fragment, es, false}, conn),
    do: {:ok, %{conn | partial_headers: {sid, es, fragment, byte_size(fragment)}}, [], []}

  defp handle_frame({:data, sid, data, es, flow_len}, conn) do
    recv_window = conn.recv_window - flow_len

    if recv_window < 0 do
      {:error, :flow_control_error, "connection receive window exceeded"}
    else
      {conn, out} = connection_credit(%{conn | recv_window: recv_window})

      case Map.fetch(conn.streams, sid) do
        {:ok, %{remote_closed?: false} = stream} ->
          stream_window = stream.recv_window - flow_len

          if stream_window < 0 do
            {:error, :flow_control_error, "stream #{sid} receive window exceeded"}
          else
            stream = %{
              stream
              | recv_window: stream_window,
                unconsumed: stream.unconsumed + IO.iodata_length(data)
            }

            {conn, close_out} = put_stream(conn, stream, es)
            {:ok, conn, [{:data, sid, data, es}], [out | close_out]}
          end

        {:ok, _closed} ->
          {conn, rst} = reset_stream(conn, sid, :stream_closed)
          {:ok, conn, [{:stream_error, sid, closed_error(sid)}], [out | rst]}

        :error ->
          if known_stream?(conn, sid),
            do: {:ok, conn, [], out},
            else: {:error, :protocol_error, "DATA on idle stream #{sid}"}
      end
    end
  end

  defp handle_frame({:priority, _sid}, conn), do: {:ok, conn, [], []}

  defp handle_frame({:rst_stream, sid, code}, conn) do
    cond do
      Map.has_key?(conn.streams, sid) ->
        {:ok, %{conn | streams: Map.delete(conn.streams, sid)}, [{:reset, sid, code}], []}

      known_stream?(conn, sid) ->
        {:ok, conn, [], []}

      true ->
        {:error, :protocol_error, "RST_STREAM on idle stream #{sid}"}
    end
  end

  defp handle_frame({:settings, true, _}, conn), do: {:ok, conn, [], []}

  defp handle_frame({:settings, false, settings}, conn) do
    case apply_settings(settings, conn) do
      {:ok, conn} ->
        {conn, flushed} = flush(conn)
        {:ok, conn, [{:settings, settings}], [Frame.settings_ack(), flushed]}

      error ->
        error
    end
  end

  defp handle_frame({:push_promise, _, _, _, _}, _conn),
    do: {:error, :protocol_error, "PUSH_PROMISE received although push is disabled"}

  defp handle_frame({:ping, false, payload}, conn), do: {:ok, conn, [], Frame.ping(payload, true)}
  defp handle_frame({:ping, true, payload}, conn), do: {:ok, conn, [{:ping_ack, payload}], []}

  defp handle_frame({:goaway, last, code, debug}, conn),
    do: {:ok, %{conn | goaway: {last, code, debug}}, [{:goaway, last, code, debug}], []}

  defp handle_frame({:window_update, 0, 0}, _conn),
    do: {:error, :protocol_error, "WINDOW_UPDATE with a zero increment"}

  defp handle_frame({:window_update, 0, inc}, conn) do
    window = conn.send_window + inc

    if window > @max_window do
      {:error, :flow_control_error, "connection send window overflow"}
    else
      {conn, out} = flush(%{conn | send_window: window})
      {:ok, conn, [], out}
    end
  end

  defp handle_frame({:window_update, sid, inc}, conn) do
    case Map.fetch(conn.streams, sid) do
      {:ok, stream} when inc == 0 or stream.send_window + inc > @max_window ->
        {conn, rst} =
          reset_stream(conn, sid, if(inc == 0, do: :protocol_error, else: :flow_control_error))

        error = Error.new(:http2, :protocol_error, "invalid WINDOW_UPDATE on stream #{sid}")
        {:ok, conn, [{:stream_error, sid, error}], rst}

      {:ok, stream} ->
        stream = %{stream | send_window: stream.send_window + inc}
        {conn, out} = flush(%{conn | streams: Map.put(conn.streams, sid, stream)})
        {:ok, conn, [], out}

      :error ->
        {:ok, conn, [], []}
    end
  end

  defp handle_frame({:unknown, _type, _sid}, conn), do: {:ok, conn, [], []}

  defp header_block(conn, sid, block, es) do
    case HPACK.decode(block, conn.decoder, conn.max_header_list_size) do
      {:error, error} ->
        {:error, :compression_error, error.message}

      {:too_large, decoder} ->
        conn = %{conn | decoder: decoder}

        if Map.has_key?(conn.streams, sid) do
          {conn, rst} = reset_stream(conn, sid, :protocol_error)

          error =
            Error.new(
              :http2,
              :resource_exhausted,
              "response headers exceed #{conn.max_header_list_size} bytes"
            )

          {:ok, conn, [{:stream_error, sid, error}], rst}
        else
          stray_headers(conn, sid)
        end

      {:ok, headers, decoder} ->
        conn = %{conn | decoder: decoder}

        case Map.fetch(conn.streams, sid) do
          {:ok, %{remote_closed?: false} = stream} ->
            {conn, out} = put_stream(conn, stream, es)
            {:ok, conn, [{:headers, sid, headers, es}], out}

          {:ok, _closed} ->
            {conn, rst} = reset_stream(conn, sid, :stream_closed)
            {:ok, conn, [{:stream_error, sid, closed_error(sid)}], rst}

          :error ->
            stray_headers(conn, sid)
        end
    end
  end

  defp stray_headers(conn, sid) do
    if known_stream?(conn, sid),
      do: {:ok, conn, [], []},
      else: {:error, :protocol_error, "HEADERS on idle or server-initiated stream #{sid}"}
  end

  defp closed_error(sid),
    do: Error.new(:http2, :stream_closed, "frame on half-closed stream #{sid}")

  # A stream we opened and already forgot (finished or reset).
  defp known_stream?(conn, sid), do: rem(sid, 2) == 1 and sid < conn.next_stream_id

  # Stores a stream; when the peer ended it, close it fully. If we had not
  # finished sending, the response makes the rest moot: RST_STREAM NO_ERROR.
  defp put_stream(conn, stream, false),
    do: {%{conn | streams: Map.put(conn.streams, stream.id, stream)}, []}

  defp put_stream(conn, %{local_closed?: true} = stream, true),
    do: {%{conn | streams: Map.delete(conn.streams, stream.id)}, []}

  defp put_stream(conn, stream, true),
    do:
      {%{conn | streams: Map.delete(conn.streams, stream.id)},
       Frame.rst_stream(stream.id, :no_error)}

  defp connection_credit(conn) do
    gap = conn.connection_window - conn.recv_window

    if gap > 0 and gap >= div(conn.connection_window, 4),
      do: {%{conn | recv_window: conn.connection_window}, Frame.window_update(0, gap)},
      else: {conn, []}
  end

  defp apply_settings([], conn), do: {:ok, conn}

  defp apply_settings([{:header_table_size, size} | rest], conn),
    do: apply_settings(rest, %{conn | encoder: HPACK.set_encoder_table_size(conn.encoder, size)})

  defp apply_settings([{:enable_push, v} | _], _conn) when v > 1,
    do: {:error, :protocol_error, "invalid SETTINGS_ENABLE_PUSH"}

  defp apply_settings([{:max_concurrent_streams, n} | rest], conn),
    do: apply_settings(rest, put_peer(conn, :max_concurrent_streams, n))

  defp apply_settings([{:initial_window_size, n} | _], _conn) when n > @max_window,
    do: {:error, :flow_control_error, "SETTINGS_INITIAL_WINDOW_SIZE too large"}

  defp apply_settings([{:initial_window_size, n} | rest], conn) do
    delta = n - conn.peer.initial_window_size

    streams =
      Map.new(conn.streams, fn {sid, s} -> {sid, %{s | send_window: s.send_window + delta}} end)

    if Enum.any?(streams, fn {_, s} -> s.send_window > @max_window end) do
      {:error, :flow_control_error, "stream send window overflow"}
    else
      apply_settings(rest, put_peer(%{conn | streams: streams}, :initial_window_size, n))
    end
  end

  defp apply_settings([{:max_frame_size, n} | _], _conn) when n < 16_384 or n > 16_777_215,
    do: {:error, :protocol_error, "invalid SETTINGS_MAX_FRAME_SIZE"}

  defp apply_settings([{:max_frame_size, n} | rest], conn),
    do: apply_settings(rest, put_peer(conn, :max_frame_size, n))

  defp apply_settings([{:max_header_list_size, n} | rest], conn),
    do: apply_settings(rest, put_peer(conn, :max_header_list_size, n))

  defp apply_settings([_unknown | rest], conn), do: apply_settings(rest, conn)

  defp put_peer(conn, key, value), do: %{conn | peer: Map.put(conn.peer, key, value)}

  ## --------------------------------------------------------------- sending

  defp flush(conn) do
    Enum.reduce(conn.streams, {conn, []}, fn {sid, _}, {conn, out} ->
      {conn, frames} = flush_stream(conn, Map.fetch!(conn.streams, sid), [])
      {conn, [out | frames]}
    end)
  end

  defp flush_stream(conn, %{local_closed?: true}, acc), do: {conn, acc}

  defp flush_stream(conn, %{pending_size: 0, fin: true} = stream, acc) do
    stream = %{stream | local_closed?: true}

    {%{conn | streams: Map.put(conn.streams, stream.id, stream)},
     [acc | Frame.data(stream.id, [], true)]}
  end

  defp flush_stream(conn, %{pending_size: 0}, acc), do: {conn, acc}

  defp flush_stream(conn, stream, acc) do
    n =
      Enum.min([
        stream.pending_size,
        stream.send_window,
        conn.send_window,
        conn.peer.max_frame_size
      ])

    if n <= 0 do
      {conn, acc}
    else
      <<chunk::binary-size(n), rest::binary>> = IO.iodata_to_binary(stream.pending)
      last? = rest == "" and stream.fin

      stream = %{
        stream
        | pending: rest,
          pending_size: stream.pending_size - n,
          send_window: stream.send_window - n,
          local_closed?: last?
      }

      conn = %{
        conn
        | send_window: conn.send_window - n,
          streams: Map.put(conn.streams, stream.id, stream)
      }

      flush_stream(conn, stream, [acc | Frame.data(stream.id, chunk, last?)])
    end
  end
end
