defmodule HFBridge.HTTP2.ConnTest do
  use ExUnit.Case, async: true

  alias HFBridge.HPACK
  alias HFBridge.HTTP2.{Conn, Frame}

  defp frames(iodata) do
    decode_all(IO.iodata_to_binary(iodata), [])
  end

  defp decode_all("", acc), do: Enum.reverse(acc)

  defp decode_all(bin, acc) do
    {:ok, frame, rest} = Frame.decode(bin, 16_777_215)
    decode_all(rest, [frame | acc])
  end

  defp ready(opts \\ [], server_settings \\ []) do
    {conn, preface} = Conn.preface(Conn.new(opts))
    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" <> rest = IO.iodata_to_binary(preface)
    sent = frames(rest)

    {:ok, conn, [{:settings, _}], ack} =
      Conn.receive_data(conn, IO.iodata_to_binary(Frame.settings(server_settings)))

    assert [{:settings, true, []}] = frames(ack)
    {conn, sent}
  end

  test "preface announces the stream window and raises the connection window" do
    {_conn, sent} = ready(stream_window: 1_000_000, connection_window: 40_000_000)

    assert [{:settings, false, settings}, {:window_update, 0, inc}] = sent
    assert settings[:initial_window_size] == 1_000_000
    assert settings[:enable_push] == 0
    assert inc == 40_000_000 - 65_535
  end

  test "the first server frame must be SETTINGS" do
    {conn, _} = Conn.preface(Conn.new())

    assert {:error, _, %HFBridge.Error{code: :protocol_error}, out} =
             Conn.receive_data(conn, IO.iodata_to_binary(Frame.ping("12345678", false)))

    assert [{:goaway, 0, :protocol_error, _}] = frames(out)
  end

  test "PING is answered with the same payload" do
    {conn, _} = ready()

    {:ok, _conn, [], out} =
      Conn.receive_data(conn, IO.iodata_to_binary(Frame.ping("abcdefgh", false)))

    assert [{:ping, true, "abcdefgh"}] = frames(out)
  end

  test "ping/2 sends a PING whose acknowledgement comes back as an event" do
    {conn, _} = ready()
    assert [{:ping, false, <<7::64>>}] = frames(Conn.ping(conn, <<7::64>>))

    assert {:ok, _conn, [{:ping_ack, <<7::64>>}], _out} =
             Conn.receive_data(conn, IO.iodata_to_binary(Frame.ping(<<7::64>>, true)))
  end

  test "stream credit is returned only as the consumer takes data" do
    {conn, _} = ready(stream_window: 1000, connection_window: 1_000_000)
    {:ok, conn, sid, _} = Conn.open_stream(conn, [{":path", "/"}], true)

    {:ok, conn, [{:data, ^sid, _, false}], out} =
      Conn.receive_data(conn, IO.iodata_to_binary(Frame.data(sid, :binary.copy("a", 900), false)))

    # no stream-level WINDOW_UPDATE on receipt
    assert frames(out) == []
    # the consumer took nothing yet: nothing to return
    assert {conn, []} = Conn.update_stream_credit(conn, sid, 0, 5)
    # it took 800 bytes: credit goes back up to window - unconsumed
    {conn, out} = Conn.update_stream_credit(conn, sid, 800, 5)
    assert [{:window_update, ^sid, 800}] = frames(out)

    # a message larger than the window gets enough credit to complete
    {_conn, out} = Conn.update_stream_credit(conn, sid, 0, 5_000)
    assert [{:window_update, ^sid, inc}] = frames(out)
    assert inc == 5_000 - 100 - 900
  end

  test "exceeding the stream window is a flow-control error" do
    {conn, _} = ready(stream_window: 100)
    {:ok, conn, sid, _} = Conn.open_stream(conn, [{":path", "/"}], true)

    assert {:error, _, %HFBridge.Error{code: :flow_control_error}, _} =
             Conn.receive_data(
               conn,
               IO.iodata_to_binary(Frame.data(sid, :binary.copy("a", 101), false))
             )
  end

  test "request data waits for send window and is cut to the frame size" do
    {conn, _} = ready([], initial_window_size: 10)
    {:ok, conn, sid, _} = Conn.open_stream(conn, [{":path", "/"}], false)
    {conn, out} = Conn.send_data(conn, sid, :binary.copy("b", 25), true)
    assert [{:data, ^sid, "bbbbbbbbbb", false, 10}] = frames(out)

    {:ok, conn, [], out} =
      Conn.receive_data(conn, IO.iodata_to_binary(Frame.window_update(sid, 100)))

    assert [{:data, ^sid, rest, true, 15}] = frames(out)
    assert byte_size(rest) == 15
    assert conn.streams[sid].local_closed?
  end

  test "max concurrent streams from the peer's SETTINGS" do
    {conn, _} = ready([], max_concurrent_streams: 1)
    assert Conn.can_open?(conn)
    {:ok, conn, _sid, _} = Conn.open_stream(conn, [{":path", "/"}], true)
    refute Conn.can_open?(conn)
  end

  test "HEADERS + CONTINUATION are joined; interleaved frames are an error" do
    {conn, _} = ready()
    {:ok, conn, sid, _} = Conn.open_stream(conn, [{":path", "/"}], true)

    {block, _} =
      HPACK.encode([{":status", "200"}, {"x-long", :binary.copy("v", 100)}], HPACK.new())

    bin = IO.iodata_to_binary(Frame.headers(sid, block, false, 20))

    assert {:ok, _conn, [{:headers, ^sid, [{":status", "200"}, {"x-long", _}], false}], _} =
             Conn.receive_data(conn, bin)

    <<first::binary-size(29), _::binary>> = bin

    assert {:error, _, %HFBridge.Error{code: :protocol_error}, _} =
             Conn.receive_data(conn, first <> IO.iodata_to_binary(Frame.ping("12345678", false)))
  end

  test "oversized header lists reset the stream but keep the connection" do
    {conn, _} = ready(max_header_list_size: 1_000)
    {:ok, conn, sid, _} = Conn.open_stream(conn, [{":path", "/"}], true)

    {block, _} =
      HPACK.encode([{":status", "200"}, {"x-big", :binary.copy("v", 2_000)}], HPACK.new())

    assert {:ok, conn, [{:stream_error, ^sid, %HFBridge.Error{code: :resource_exhausted}}], out} =
             Conn.receive_data(
               conn,
               IO.iodata_to_binary(Frame.headers(sid, block, false, 16_384))
             )

    assert [{:rst_stream, ^sid, :protocol_error}] = frames(out)
    assert Conn.open_streams(conn) == 0
  end

  # Feeds `bin` to the connection in pieces of `cut` bytes; returns the events.
  defp feed(conn, bin, cut) do
    pieces = for <<piece::binary-size(cut) <- bin>>, do: piece
    tail = binary_part(bin, length(pieces) * cut, byte_size(bin) - length(pieces) * cut)

    Enum.reduce(pieces ++ [tail], {conn, []}, fn piece, {conn, events} ->
      {:ok, conn, new, _out} = Conn.receive_data(conn, piece)
      {conn, events ++ new}
    end)
  end

  test "frames cut anywhere across receive_data/2 calls decode the same" do
    {conn, _} = ready([], [])
    {:ok, conn, sid, _} = Conn.open_stream(conn, [{":path", "/"}], true)

    {block, _} = HPACK.encode([{":status", "200"}], HPACK.new())
    padded = <<4, "padded!", 0, 0, 0, 0>>

    bin =
      IO.iodata_to_binary([
        Frame.headers(sid, block, false, 16_384),
        Frame.data(sid, :binary.copy("d", 10_000), false),
        Frame.ping("12345678", false),
        <<byte_size(padded)::24, 0, 0x8, 0::1, sid::31>>,
        padded,
        Frame.data(sid, "", false),
        Frame.data(sid, "end", true)
      ])

    for cut <- [1, 2, 5, 8, 9, 10, 17, 4096, 10_008, byte_size(bin)] do
      {conn, events} = feed(conn, bin, cut)

      assert [
               {:headers, ^sid, [{":status", "200"}], false},
               {:data, ^sid, d1, false},
               {:data, ^sid, "padded!", false},
               {:data, ^sid, d2, false},
               {:data, ^sid, d3, true}
             ] = events

      assert IO.iodata_to_binary(d1) == :binary.copy("d", 10_000)
      assert IO.iodata_to_binary(d2) == ""
      assert IO.iodata_to_binary(d3) == "end"
      assert conn.buffer == ""
      assert Conn.open_streams(conn) == 0
    end
  end

  test "a larger SETTINGS_MAX_FRAME_SIZE is announced and frames up to it accepted" do
    {conn, sent} = ready(max_frame_size: 100_000, stream_window: 1_000_000)
    assert [{:settings, false, settings}, _] = sent
    assert settings[:max_frame_size] == 100_000
    {:ok, conn, sid, _} = Conn.open_stream(conn, [{":path", "/"}], true)

    data = :binary.copy("x", 100_000)

    assert {:ok, _conn, [{:data, ^sid, got, false}], _} =
             Conn.receive_data(conn, IO.iodata_to_binary(Frame.data(sid, data, false)))

    assert IO.iodata_to_binary(got) == data

    assert {:error, _, %HFBridge.Error{code: :frame_size_error}, _} =
             Conn.receive_data(conn, IO.iodata_to_binary(Frame.data(sid, data <> "x", false)))

    # the header alone is enough to refuse an oversized frame
    assert {:error, _, %HFBridge.Error{code: :frame_size_error}, _} =
             Conn.receive_data(conn, <<100_001::24, 0, 0, 0::1, sid::31, "xx">>)
  end

  test "the default frame size is 16 384 and is not announced" do
    {conn, sent} = ready()
    assert [{:settings, false, settings}, _] = sent
    refute Keyword.has_key?(settings, :max_frame_size)
    {:ok, conn, sid, _} = Conn.open_stream(conn, [{":path", "/"}], true)

    assert {:error, _, %HFBridge.Error{code: :frame_size_error}, _} =
             Conn.receive_data(conn, <<16_385::24, 0, 0, 0::1, sid::31>>)
  end

  test "GOAWAY is reported and blocks new streams" do
    {conn, _} = ready()

    {:ok, conn, [{:goaway, 0, :no_error, "bye"}], _} =
      Conn.receive_data(conn, IO.iodata_to_binary(Frame.goaway(0, :no_error, "bye")))

    refute Conn.can_open?(conn)
  end
end
