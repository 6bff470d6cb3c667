defmodule HFBridge.GRPC.WireTest do
  use ExUnit.Case, async: true

  alias HFBridge.GRPC.{MessageBuffer, Metadata}

  describe "MessageBuffer" do
    test "reassembles messages cut at arbitrary points" do
      messages = [<<>>, "a", :binary.copy("xyz", 10_000), "tail"]
      wire = messages |> Enum.map(&MessageBuffer.encode/1) |> IO.iodata_to_binary()

      for cut <- [1, 2, 3, 5, 7, 4096, 16_384] do
        chunks = for <<chunk::binary-size(cut) <- wire>>, do: chunk
        rest = binary_part(wire, length(chunks) * cut, byte_size(wire) - length(chunks) * cut)
        buffer = Enum.reduce(chunks ++ [rest], MessageBuffer.new(), &MessageBuffer.push(&2, &1))
        assert MessageBuffer.size(buffer) == byte_size(wire)
        assert take_all(buffer, []) == messages
      end
    end

    test "needed/1 reports the bytes required for the next message" do
      buffer = MessageBuffer.push(MessageBuffer.new(), <<0, 0, 0>>)
      assert MessageBuffer.needed(buffer) == 5
      assert MessageBuffer.take(buffer) == :more
      buffer = MessageBuffer.push(buffer, <<1, 0, ?a, ?b>>)
      assert MessageBuffer.needed(buffer) == 5 + 256
      assert MessageBuffer.take(buffer) == :more
    end

    test "payloads given as lists of binaries, many messages queued before a take" do
      messages = for n <- 0..299, do: :binary.copy(<<rem(n, 251)>>, rem(n * 37, 700))
      wire = messages |> Enum.map(&MessageBuffer.encode/1) |> IO.iodata_to_binary()
      pieces = for <<piece::binary-size(13) <- wire>>, do: piece
      tail = binary_part(wire, length(pieces) * 13, byte_size(wire) - length(pieces) * 13)

      buffer =
        (pieces ++ [tail])
        |> Enum.chunk_every(3)
        |> Enum.reduce(MessageBuffer.new(), &MessageBuffer.push(&2, &1))

      assert MessageBuffer.size(buffer) == byte_size(wire)
      assert MessageBuffer.needed(buffer) == 5
      assert take_all(buffer, []) == messages
    end

    test "sizes and needs stay right as messages are taken from a queue" do
      wire = Enum.map(["ab", "cde", ""], &MessageBuffer.encode/1)
      buffer = Enum.reduce(List.flatten(wire), MessageBuffer.new(), &MessageBuffer.push(&2, &1))
      assert MessageBuffer.size(buffer) == 20
      assert MessageBuffer.needed(buffer) == 7
      assert {:ok, false, "ab", buffer} = MessageBuffer.take(buffer)
      assert {MessageBuffer.size(buffer), MessageBuffer.needed(buffer)} == {13, 8}
      assert {:ok, false, "cde", buffer} = MessageBuffer.take(buffer)
      assert {:ok, false, "", buffer} = MessageBuffer.take(buffer)
      assert {MessageBuffer.size(buffer), MessageBuffer.needed(buffer)} == {0, 5}
      assert MessageBuffer.take(buffer) == :more
    end

    test "the compressed flag is reported" do
      buffer = MessageBuffer.push(MessageBuffer.new(), <<1, 3::32, "xyz", 0, 0::32>>)
      assert {:ok, true, "xyz", buffer} = MessageBuffer.take(buffer)
      assert {:ok, false, "", _} = MessageBuffer.take(buffer)
    end

    test "a large message within one payload is not copied; a small one is" do
      big = :binary.copy("b", 300_000)
      payload = IO.iodata_to_binary([MessageBuffer.encode(big), MessageBuffer.encode("small")])
      buffer = MessageBuffer.push(MessageBuffer.new(), payload)

      assert {:ok, false, ^big, buffer} = MessageBuffer.take(buffer)
      {:ok, false, ^big, _} = MessageBuffer.take(MessageBuffer.push(MessageBuffer.new(), payload))
      # the large one is a slice of the payload, the small one a copy of its bytes
      assert {:ok, false, "small", _} = MessageBuffer.take(buffer)

      {:ok, false, first, rest} =
        MessageBuffer.take(MessageBuffer.push(MessageBuffer.new(), payload))

      assert :binary.referenced_byte_size(first) == byte_size(payload)
      {:ok, false, small, _} = MessageBuffer.take(rest)
      assert :binary.referenced_byte_size(small) == 5
    end

    defp take_all(buffer, acc) do
      case MessageBuffer.take(buffer) do
        {:ok, false, message, buffer} -> take_all(buffer, [message | acc])
        :more -> assert(MessageBuffer.size(buffer) == 0) && Enum.reverse(acc)
      end
    end
  end

  describe "connect options" do
    test "max_frame_size must be a valid SETTINGS_MAX_FRAME_SIZE" do
      for bad <- [16_383, 16_777_216, "big", 1.5e6] do
        assert {:error, %HFBridge.Error{code: :invalid_argument, message: message}} =
                 HFBridge.GRPC.connect("127.0.0.1", 1, max_frame_size: bad)

        assert message =~ "max_frame_size"
      end
    end
  end

  describe "Metadata" do
    test "percent-decoding of grpc-message" do
      assert Metadata.percent_decode("a%20b%25c%E2%98%BA") == "a b%c☺"
      assert Metadata.percent_decode("100%") == "100%"
      assert Metadata.percent_decode("%zz%4") == "%zz%4"
    end

    test "grpc-timeout values have at most eight digits" do
      assert Metadata.encode_timeout(0) == "0m"
      assert Metadata.encode_timeout(99_999_999) == "99999999m"
      assert Metadata.encode_timeout(100_000_000) == "100000S"
      assert Metadata.encode_timeout(86_400_000_000_000) |> String.length() <= 9
    end

    test "request metadata: -bin values are base64, reserved names refused" do
      assert {:ok, [{"x-a", "1"}, {"x-b-bin", "AAEC"}]} =
               Metadata.encode([{"X-A", "1"}, {"x-b-bin", <<0, 1, 2>>}])

      assert {:error, %HFBridge.Error{code: :invalid_argument}} =
               Metadata.encode([{":path", "/"}])

      assert {:error, _} = Metadata.encode([{"grpc-timeout", "1S"}])
      assert {:error, _} = Metadata.encode([{"x-a", <<0xFF>>}])
      assert {:error, _} = Metadata.encode([{"x a", "v"}])
      assert {:error, _} = Metadata.encode(:nope)
    end

    test "response metadata: -bin decoded with or without padding, pseudo-headers dropped" do
      assert Metadata.decode([{":status", "200"}, {"a-bin", "AAE="}, {"b-bin", "AAE"}, {"c", "v"}]) ==
               [{"a-bin", <<0, 1>>}, {"b-bin", <<0, 1>>}, {"c", "v"}]
    end

    test "HTTP and RST_STREAM codes map to gRPC statuses" do
      assert Metadata.http_status_to_grpc(404) == 12
      assert Metadata.http_status_to_grpc(503) == 14
      assert Metadata.http_status_to_grpc(418) == 2
      assert Metadata.rst_to_grpc(:refused_stream) == 14
      assert Metadata.rst_to_grpc(:cancel) == 1
      assert Metadata.rst_to_grpc(:protocol_error) == 13
    end
  end
end
