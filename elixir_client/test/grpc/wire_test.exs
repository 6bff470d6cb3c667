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

    defp take_all(buffer, acc) do
      case MessageBuffer.take(buffer) do
        {:ok, false, message, buffer} -> take_all(buffer, [message | acc])
        :more -> assert(MessageBuffer.size(buffer) == 0) && Enum.reverse(acc)
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
