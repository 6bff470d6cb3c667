defmodule HFBridge.HTTP2.Frame do
  @moduledoc """
  HTTP/2 frame encoding and decoding (RFC 9113, Sections 4 and 6).

  Decoded frames are tagged tuples (see `t:t/0`). `decode/2` validates the
  frame header against SETTINGS_MAX_FRAME_SIZE and the fixed payload sizes and
  stream-id rules of each frame type; violations come back as
  `{:error, {error_code, message}}` where `error_code` is an HTTP/2 error
  code atom (`:protocol_error`, `:frame_size_error`, ...). Decoding never
  raises.
  """

  import Bitwise

  @data 0x0
  @headers 0x1
  @priority 0x2
  @rst_stream 0x3
  @settings 0x4
  @push_promise 0x5
  @ping 0x6
  @goaway 0x7
  @window_update 0x8
  @continuation 0x9

  @flag_end_stream 0x1
  @flag_ack 0x1
  @flag_end_headers 0x4
  @flag_padded 0x8
  @flag_priority 0x20

  @error_codes %{
    0x0 => :no_error,
    0x1 => :protocol_error,
    0x2 => :internal_error,
    0x3 => :flow_control_error,
    0x4 => :settings_timeout,
    0x5 => :stream_closed,
    0x6 => :frame_size_error,
    0x7 => :refused_stream,
    0x8 => :cancel,
    0x9 => :compression_error,
    0xA => :connect_error,
    0xB => :enhance_your_calm,
    0xC => :inadequate_security,
    0xD => :http_1_1_required
  }
  @error_numbers Map.new(@error_codes, fn {k, v} -> {v, k} end)

  @settings_ids %{
    0x1 => :header_table_size,
    0x2 => :enable_push,
    0x3 => :max_concurrent_streams,
    0x4 => :initial_window_size,
    0x5 => :max_frame_size,
    0x6 => :max_header_list_size
  }
  @settings_numbers Map.new(@settings_ids, fn {k, v} -> {v, k} end)

  @typedoc "A 31-bit stream identifier."
  @type stream_id :: non_neg_integer()
  @typedoc "An HTTP/2 error code (RFC 9113, Section 7); unknown codes stay integers."
  @type error_code :: atom() | non_neg_integer()
  @type setting ::
          {:header_table_size
           | :enable_push
           | :max_concurrent_streams
           | :initial_window_size
           | :max_frame_size
           | :max_header_list_size
           | non_neg_integer(), non_neg_integer()}

  @typedoc """
  A decoded frame. For DATA, `flow_len` is the whole payload length,
  padding included, which is what flow control counts (Section 6.9.1);
  `data` is a binary, or a list of binaries from `decode_parts/2`.
  """
  @type t ::
          {:data, stream_id(), data :: iodata(), end_stream :: boolean(),
           flow_len :: non_neg_integer()}
          | {:headers, stream_id(), fragment :: binary(), end_stream :: boolean(),
             end_headers :: boolean()}
          | {:priority, stream_id()}
          | {:rst_stream, stream_id(), error_code()}
          | {:settings, ack :: boolean(), [setting()]}
          | {:push_promise, stream_id(), promised :: stream_id(), fragment :: binary(),
             end_headers :: boolean()}
          | {:ping, ack :: boolean(), payload :: <<_::64>>}
          | {:goaway, last_stream_id :: stream_id(), error_code(), debug :: binary()}
          | {:window_update, stream_id(), increment :: non_neg_integer()}
          | {:continuation, stream_id(), fragment :: binary(), end_headers :: boolean()}
          | {:unknown, type :: byte(), stream_id()}

  @type decode_error :: {:error, {error_code(), String.t()}}

  @doc "The 24-byte client connection preface (RFC 9113, Section 3.4)."
  @spec preface() :: binary()
  def preface, do: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

  @doc "Maps a numeric error code to its atom (unknown codes stay integers)."
  @spec error_code(non_neg_integer()) :: error_code()
  def error_code(number), do: Map.get(@error_codes, number, number)

  @doc "Maps an error code atom to its number (unknown atoms: INTERNAL_ERROR)."
  @spec error_number(error_code()) :: non_neg_integer()
  def error_number(code) when is_integer(code), do: code
  def error_number(code), do: Map.get(@error_numbers, code, 0x2)

  ## ------------------------------------------------------------------ decode

  @doc """
  Decodes one frame from the front of `buffer`.

  Returns `{:ok, frame, rest}`, `:more` when the buffer holds no complete
  frame yet, or an error for a frame that violates RFC 9113.
  """
  @spec decode(binary(), pos_integer()) :: {:ok, t(), binary()} | :more | decode_error()
  def decode(<<len::24, _type, _flags, _r::1, _sid::31, _::binary>>, max_frame_size)
      when len > max_frame_size,
      do:
        {:error,
         {:frame_size_error, "frame of #{len} bytes exceeds the maximum #{max_frame_size}"}}

  def decode(
        <<len::24, type, flags, _r::1, sid::31, payload::binary-size(len), rest::binary>>,
        _max
      ) do
    case decode_payload(type, flags, sid, payload) do
      {:error, _} = error -> error
      frame -> {:ok, frame, rest}
    end
  end

  def decode(buffer, _max) when is_binary(buffer), do: :more

  @typedoc "A frame header: payload length, type, flags and stream id."
  @type header :: {length :: non_neg_integer(), type :: byte(), flags :: byte(), stream_id()}

  @doc """
  Decodes the 9-byte header at the front of `buffer`, for a receiver that
  collects a frame's payload itself: `{:ok, header, rest}`, `:more` with
  fewer than 9 bytes, or a `:frame_size_error` when the length exceeds
  `max_frame_size`.
  """
  @spec decode_header(binary(), pos_integer()) ::
          {:ok, header(), binary()} | :more | decode_error()
  def decode_header(<<len::24, _type, _flags, _r::1, _sid::31, _::binary>>, max_frame_size)
      when len > max_frame_size,
      do:
        {:error,
         {:frame_size_error, "frame of #{len} bytes exceeds the maximum #{max_frame_size}"}}

  def decode_header(<<len::24, type, flags, _r::1, sid::31, rest::binary>>, _max),
    do: {:ok, {len, type, flags, sid}, rest}

  def decode_header(buffer, _max) when is_binary(buffer), do: :more

  @doc """
  Decodes a frame from its header and its whole payload given as a list of
  binaries. The payload of an unpadded DATA frame stays that list (no
  copy); every other frame is joined and decoded as by `decode/2`.
  """
  @spec decode_parts(header(), [binary()]) :: {:ok, t()} | decode_error()
  def decode_parts({len, @data, flags, sid}, parts)
      when sid != 0 and band(flags, @flag_padded) == 0,
      do: {:ok, {:data, sid, parts, flag?(flags, @flag_end_stream), len}}

  def decode_parts({_len, type, flags, sid}, parts) do
    case decode_payload(type, flags, sid, IO.iodata_to_binary(parts)) do
      {:error, _} = error -> error
      frame -> {:ok, frame}
    end
  end

  defp decode_payload(type, _flags, 0, _payload)
       when type in [@data, @headers, @priority, @rst_stream, @push_promise, @continuation],
       do: {:error, {:protocol_error, "frame type #{type} on stream 0"}}

  defp decode_payload(type, _flags, sid, _payload)
       when sid != 0 and type in [@settings, @ping, @goaway],
       do: {:error, {:protocol_error, "frame type #{type} on stream #{sid}"}}

  defp decode_payload(@data, flags, sid, payload) do
    with {:ok, data} <- strip_padding(flags, payload) do
      {:data, sid, data, flag?(flags, @flag_end_stream), byte_size(payload)}
    end
  end

  defp decode_payload(@headers, flags, sid, payload) do
    with {:ok, data} <- strip_padding(flags, payload),
         {:ok, fragment} <- strip_priority(flags, data) do
      {:headers, sid, fragment, flag?(flags, @flag_end_stream), flag?(flags, @flag_end_headers)}
    end
  end

  defp decode_payload(@priority, _flags, sid, <<_::binary-size(5)>>), do: {:priority, sid}

  defp decode_payload(@priority, _flags, _sid, _),
    do: {:error, {:frame_size_error, "PRIORITY frame must be 5 bytes"}}

  defp decode_payload(@rst_stream, _flags, sid, <<code::32>>),
    do: {:rst_stream, sid, error_code(code)}

  defp decode_payload(@rst_stream, _flags, _sid, _),
    do: {:error, {:frame_size_error, "RST_STREAM frame must be 4 bytes"}}

  defp decode_payload(@settings, flags, _sid, payload) do
    cond do
      flag?(flags, @flag_ack) and payload != "" ->
        {:error, {:frame_size_error, "SETTINGS ACK with a payload"}}

      flag?(flags, @flag_ack) ->
        {:settings, true, []}

      rem(byte_size(payload), 6) != 0 ->
        {:error, {:frame_size_error, "SETTINGS payload is not a multiple of 6 bytes"}}

      true ->
        settings =
          for <<id::16, value::32 <- payload>>, do: {Map.get(@settings_ids, id, id), value}

        {:settings, false, settings}
    end
  end

  defp decode_payload(@push_promise, flags, sid, payload) do
    case strip_padding(flags, payload) do
      {:ok, <<_::1, promised::31, fragment::binary>>} ->
        {:push_promise, sid, promised, fragment, flag?(flags, @flag_end_headers)}

      {:ok, _} ->
        {:error, {:frame_size_error, "PUSH_PROMISE frame too short"}}

      error ->
        error
    end
  end

  defp decode_payload(@ping, flags, _sid, <<payload::binary-size(8)>>),
    do: {:ping, flag?(flags, @flag_ack), payload}

  defp decode_payload(@ping, _flags, _sid, _),
    do: {:error, {:frame_size_error, "PING frame must be 8 bytes"}}

  defp decode_payload(@goaway, _flags, _sid, <<_::1, last::31, code::32, debug::binary>>),
    do: {:goaway, last, error_code(code), debug}

  defp decode_payload(@goaway, _flags, _sid, _),
    do: {:error, {:frame_size_error, "GOAWAY frame too short"}}

  defp decode_payload(@window_update, _flags, sid, <<_::1, inc::31>>),
    do: {:window_update, sid, inc}

  defp decode_payload(@window_update, _flags, _sid, _),
    do: {:error, {:frame_size_error, "WINDOW_UPDATE frame must be 4 bytes"}}

  defp decode_payload(@continuation, flags, sid, payload),
    do: {:continuation, sid, payload, flag?(flags, @flag_end_headers)}

  # Unknown frame types are ignored (Section 4.1).
  defp decode_payload(type, _flags, sid, _payload), do: {:unknown, type, sid}

  defp strip_padding(flags, payload) do
    if flag?(flags, @flag_padded) do
      case payload do
        <<pad, rest::binary>> when pad <= byte_size(rest) ->
          {:ok, binary_part(rest, 0, byte_size(rest) - pad)}

        _ ->
          {:error, {:protocol_error, "padding exceeds the frame payload"}}
      end
    else
      {:ok, payload}
    end
  end

  defp strip_priority(flags, data) do
    if flag?(flags, @flag_priority) do
      case data do
        <<_::binary-size(5), fragment::binary>> -> {:ok, fragment}
        _ -> {:error, {:frame_size_error, "HEADERS priority block truncated"}}
      end
    else
      {:ok, data}
    end
  end

  defp flag?(flags, flag), do: band(flags, flag) != 0

  ## ------------------------------------------------------------------ encode

  @doc "Encodes a frame header plus payload."
  @spec encode(byte(), byte(), stream_id(), iodata()) :: iodata()
  def encode(type, flags, sid, payload) do
    [<<IO.iodata_length(payload)::24, type, flags, 0::1, sid::31>>, payload]
  end

  @doc "A SETTINGS frame carrying `settings` (a keyword list of setting atoms)."
  @spec settings([{atom(), non_neg_integer()}]) :: iodata()
  def settings(settings) do
    payload =
      for {name, value} <- settings, do: <<Map.fetch!(@settings_numbers, name)::16, value::32>>

    encode(@settings, 0, 0, payload)
  end

  @doc "A SETTINGS acknowledgement."
  @spec settings_ack() :: iodata()
  def settings_ack, do: encode(@settings, @flag_ack, 0, [])

  @doc "A PING frame (or its acknowledgement)."
  @spec ping(<<_::64>>, boolean()) :: iodata()
  def ping(payload, ack?), do: encode(@ping, if(ack?, do: @flag_ack, else: 0), 0, payload)

  @doc "A WINDOW_UPDATE frame."
  @spec window_update(stream_id(), pos_integer()) :: iodata()
  def window_update(sid, increment), do: encode(@window_update, 0, sid, <<0::1, increment::31>>)

  @doc "An RST_STREAM frame."
  @spec rst_stream(stream_id(), error_code()) :: iodata()
  def rst_stream(sid, code), do: encode(@rst_stream, 0, sid, <<error_number(code)::32>>)

  @doc "A GOAWAY frame."
  @spec goaway(stream_id(), error_code(), binary()) :: iodata()
  def goaway(last_sid, code, debug \\ ""),
    do: encode(@goaway, 0, 0, [<<0::1, last_sid::31, error_number(code)::32>>, debug])

  @doc "A DATA frame."
  @spec data(stream_id(), iodata(), boolean()) :: iodata()
  def data(sid, data, end_stream?),
    do: encode(@data, if(end_stream?, do: @flag_end_stream, else: 0), sid, data)

  @doc """
  A header block as one HEADERS frame followed by as many CONTINUATION
  frames as `max_frame_size` requires (Section 6.10).
  """
  @spec headers(stream_id(), iodata(), boolean(), pos_integer()) :: iodata()
  def headers(sid, block, end_stream?, max_frame_size) do
    block = IO.iodata_to_binary(block)
    es = if end_stream?, do: @flag_end_stream, else: 0

    case split(block, max_frame_size) do
      [only] ->
        encode(@headers, es ||| @flag_end_headers, sid, only)

      [first | rest] ->
        last = length(rest) - 1

        conts =
          rest
          |> Enum.with_index()
          |> Enum.map(fn {chunk, i} ->
            encode(@continuation, if(i == last, do: @flag_end_headers, else: 0), sid, chunk)
          end)

        [encode(@headers, es, sid, first) | conts]
    end
  end

  defp split(bin, max) when byte_size(bin) <= max, do: [bin]

  defp split(bin, max) do
    <<chunk::binary-size(max), rest::binary>> = bin
    [chunk | split(rest, max)]
  end
end
