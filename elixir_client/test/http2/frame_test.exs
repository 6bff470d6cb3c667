defmodule HFBridge.HTTP2.FrameTest do
  use ExUnit.Case, async: true

  alias HFBridge.HTTP2.{Conn, Frame}

  defp decode(iodata), do: Frame.decode(IO.iodata_to_binary(iodata), 16_384)

  test "frames round-trip through encode and decode" do
    assert {:ok, {:settings, false, [enable_push: 0, initial_window_size: 100]}, ""} =
             decode(Frame.settings(enable_push: 0, initial_window_size: 100))

    assert {:ok, {:settings, true, []}, ""} = decode(Frame.settings_ack())
    assert {:ok, {:ping, true, "12345678"}, ""} = decode(Frame.ping("12345678", true))
    assert {:ok, {:window_update, 3, 1000}, ""} = decode(Frame.window_update(3, 1000))
    assert {:ok, {:rst_stream, 5, :cancel}, ""} = decode(Frame.rst_stream(5, :cancel))
    assert {:ok, {:goaway, 7, :no_error, "bye"}, ""} = decode(Frame.goaway(7, :no_error, "bye"))

    assert {:ok, {:data, 1, "abc", true, 3}, "rest"} =
             decode([Frame.data(1, "abc", true), "rest"])
  end

  test "a header block larger than the frame size is split into CONTINUATION frames" do
    block = :binary.copy("x", 50)
    bin = IO.iodata_to_binary(Frame.headers(1, block, true, 16))
    assert {:ok, {:headers, 1, f1, true, false}, rest} = Frame.decode(bin, 16_384)
    assert {:ok, {:continuation, 1, f2, false}, rest} = Frame.decode(rest, 16_384)
    assert {:ok, {:continuation, 1, f3, false}, rest} = Frame.decode(rest, 16_384)
    assert {:ok, {:continuation, 1, f4, true}, ""} = Frame.decode(rest, 16_384)
    assert f1 <> f2 <> f3 <> f4 == block
  end

  test "padding is stripped and counted for flow control" do
    payload = <<3, "hello", 0, 0, 0>>
    frame = <<byte_size(payload)::24, 0, 0x8 + 0x1, 0::1, 1::31, payload::binary>>
    assert {:ok, {:data, 1, "hello", true, 9}, ""} = Frame.decode(frame, 16_384)
  end

  test "size and stream-id violations are errors" do
    assert {:error, {:frame_size_error, _}} =
             Frame.decode(<<20_000::24, 0, 0, 0::1, 1::31>>, 16_384)

    assert {:error, {:frame_size_error, _}} = Frame.decode(<<3::24, 6, 0, 0::32, "abc">>, 16_384)
    assert {:error, {:protocol_error, _}} = Frame.decode(<<0::24, 0, 0, 0::32>>, 16_384)

    assert {:error, {:protocol_error, _}} =
             Frame.decode(<<8::24, 6, 0, 0::1, 1::31, 0::64>>, 16_384)

    assert {:error, {:frame_size_error, _}} = Frame.decode(<<5::24, 4, 0, 0::32, 0::40>>, 16_384)

    assert {:error, {:protocol_error, _}} =
             Frame.decode(<<2::24, 0, 0x8, 0::1, 1::31, 5, 0>>, 16_384)

    assert :more = Frame.decode(<<10::24, 0, 0, 0::1, 1::31, "abc">>, 16_384)
  end

  test "fuzz: random and mutated frames never raise" do
    :rand.seed(:exsss, {7, 8, 9})

    valid =
      IO.iodata_to_binary([
        Frame.settings(max_concurrent_streams: 10),
        Frame.headers(1, <<0x88>>, false, 16_384),
        Frame.data(1, "hello world", false),
        Frame.ping("abcdefgh", false),
        Frame.window_update(0, 10),
        Frame.goaway(1, :no_error, "x")
      ])

    for i <- 1..3_000 do
      input =
        if rem(i, 2) == 0, do: :crypto.strong_rand_bytes(:rand.uniform(80)), else: mutate(valid)

      assert_decodes_all(input)
      assert_conn_survives(input)
    end
  end

  defp assert_decodes_all(input) do
    case Frame.decode(input, 16_384) do
      {:ok, _frame, rest} ->
        assert_decodes_all(rest)

      :more ->
        :ok

      {:error, {code, message}} ->
        assert (is_atom(code) or is_integer(code)) and is_binary(message)
    end
  end

  # The connection state machine, fed the same bytes after a valid server
  # preface, always answers with a result tuple.
  defp assert_conn_survives(input) do
    {conn, _} = Conn.preface(Conn.new())
    {:ok, conn, _, _} = Conn.receive_data(conn, IO.iodata_to_binary(Frame.settings([])))
    {:ok, conn, 1, _} = Conn.open_stream(conn, [{":method", "POST"}, {":path", "/x"}], false)

    case Conn.receive_data(conn, input) do
      {:ok, %Conn{}, events, _out} -> assert is_list(events)
      {:error, %Conn{}, %HFBridge.Error{layer: :http2}, out} -> assert IO.iodata_length(out) > 0
    end
  end

  defp mutate(bin) do
    pos = :rand.uniform(byte_size(bin)) - 1
    <<a::binary-size(pos), _, b::binary>> = bin

    case :rand.uniform(4) do
      1 -> <<a::binary, :rand.uniform(256) - 1, b::binary>>
      2 -> a
      3 -> <<a::binary, :crypto.strong_rand_bytes(:rand.uniform(6))::binary, b::binary>>
      4 -> <<a::binary, b::binary>>
    end
  end
end
