defmodule HFBridge.HPACKTest do
  use ExUnit.Case, async: true

  alias HFBridge.HPACK
  alias HFBridge.HPACK.Huffman

  # hpack-test-case vectors live in `shared/testdata/hpack` beside the repo
  # checkout (elixir_client/../../shared).
  @repo_root Path.expand("../../..", __DIR__)
  @vectors Path.expand("../shared/testdata/hpack", @repo_root)

  describe "Huffman code (RFC 7541 Appendix B)" do
    test "derived codes match entries of the published table" do
      assert Huffman.code(0) == {0x1FF8, 13}
      assert Huffman.code(?a) == {0x3, 5}
      assert Huffman.code(?0) == {0x0, 5}
      assert Huffman.code(?:) == {0x5C, 7}
      assert Huffman.code(10) == {0x3FFFFFFC, 30}
      assert Huffman.code(22) == {0x3FFFFFFE, 30}
      assert Huffman.code(127) == {0xFFFFFFC, 28}
      assert Huffman.code(249) == {0xFFFFFFE, 28}
      assert Huffman.code(255) == {0x3FFFFEE, 26}
      assert Huffman.code(256) == {0x3FFFFFFF, 30}
    end

    test "RFC 7541 C.4.1 example string" do
      assert Huffman.encode("www.example.com") == Base.decode16!("F1E3C2E5F23A6BA0AB90F4FF")

      assert Huffman.decode(Base.decode16!("F1E3C2E5F23A6BA0AB90F4FF")) ==
               {:ok, "www.example.com"}
    end

    test "every byte value round-trips" do
      all = :binary.list_to_bin(Enum.to_list(0..255))
      assert {:ok, ^all} = Huffman.decode(Huffman.encode(all))
    end

    test "rejects bad padding and EOS" do
      # 'a' (00011) padded with zeros instead of ones
      assert {:error, _} = Huffman.decode(<<0b00011000>>)
      # eight or more bits of padding
      assert {:error, _} = Huffman.decode(<<0b00011111, 0xFF>>)
      # the EOS symbol itself
      assert {:error, _} = Huffman.decode(<<0xFF, 0xFF, 0xFF, 0xFF>>)
    end
  end

  describe "RFC 7541 Appendix C examples" do
    test "C.3 requests without Huffman share one context" do
      ctx = HPACK.new()

      {:ok, h1, ctx} =
        HPACK.decode(Base.decode16!("828684410F7777772E6578616D706C652E636F6D"), ctx)

      assert h1 == [
               {":method", "GET"},
               {":scheme", "http"},
               {":path", "/"},
               {":authority", "www.example.com"}
             ]

      {:ok, h2, ctx} = HPACK.decode(Base.decode16!("828684BE58086E6F2D6361636865"), ctx)
      assert List.last(h2) == {"cache-control", "no-cache"}

      {:ok, h3, ctx} =
        HPACK.decode(
          Base.decode16!("828785BF400A637573746F6D2D6B65790C637573746F6D2D76616C7565"),
          ctx
        )

      assert List.last(h3) == {"custom-key", "custom-value"}
      assert HPACK.table(ctx).size == 164
    end
  end

  describe "errors" do
    test "index 0, out-of-range index, truncated data and late size updates" do
      ctx = HPACK.new()
      assert {:error, %HFBridge.Error{layer: :hpack}} = HPACK.decode(<<0x80>>, ctx)
      assert {:error, _} = HPACK.decode(<<0xBE>>, ctx)
      assert {:error, _} = HPACK.decode(<<0x41, 0x05, "ab">>, ctx)
      assert {:error, _} = HPACK.decode(<<0x82, 0x20>>, ctx)
      assert {:error, _} = HPACK.decode(<<0x3F, 0xE1, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F>>, ctx)
      # size update above the allowed maximum
      assert {:error, _} = HPACK.decode(<<0x3F, 0xE2, 0x1F>>, ctx)
    end

    test "header list size cap keeps the context in step" do
      ctx = HPACK.new()

      {block, enc} =
        HPACK.encode([{"x-big", String.duplicate("v", 100)}, {"x-a", "1"}], HPACK.new())

      assert {:too_large, dctx} = HPACK.decode(IO.iodata_to_binary(block), ctx, 50)
      {block2, _} = HPACK.encode([{"x-a", "1"}], enc)
      assert {:ok, [{"x-a", "1"}], _} = HPACK.decode(IO.iodata_to_binary(block2), dctx, 50)
    end

    test "fuzz: random and mutated blocks never raise" do
      :rand.seed(:exsss, {1, 2, 3})

      {good, _} =
        HPACK.encode(
          [{":status", "200"}, {"content-type", "application/grpc"}, {"x-k", "some value"}],
          HPACK.new()
        )

      good = IO.iodata_to_binary(good)

      for i <- 1..3000 do
        input =
          if rem(i, 2) == 0 do
            :crypto.strong_rand_bytes(:rand.uniform(64))
          else
            mutate(good)
          end

        result = HPACK.decode(input, HPACK.new(), 8192)

        assert match?({:ok, _, _}, result) or match?({:error, %HFBridge.Error{}}, result) or
                 match?({:too_large, _}, result)
      end
    end
  end

  defp mutate(bin) do
    pos = :rand.uniform(byte_size(bin)) - 1
    <<a::binary-size(pos), _, b::binary>> = bin

    case :rand.uniform(3) do
      1 -> <<a::binary, :rand.uniform(256) - 1, b::binary>>
      2 -> a
      3 -> <<a::binary, :crypto.strong_rand_bytes(3)::binary, b::binary>>
    end
  end

  describe "hpack-test-case vectors" do
    @tag timeout: 300_000
    test "every story of every encoder decodes exactly, and re-encodes" do
      if File.dir?(@vectors) do
        dirs =
          @vectors
          |> File.ls!()
          |> Enum.filter(&File.dir?(Path.join(@vectors, &1)))
          |> Enum.reject(&(&1 == "raw-data"))

        assert dirs != []

        count =
          for dir <- dirs,
              file <- Path.wildcard(Path.join([@vectors, dir, "*.json"])),
              reduce: 0 do
            acc -> acc + check_story(file)
          end

        assert count > 1000
      else
        IO.puts("skipping hpack-test-case vectors: #{@vectors} is absent")
      end
    end
  end

  defp check_story(file) do
    story = file |> File.read!() |> HFBridge.HPACKTest.JSON.decode!()
    cases = get(story, "cases")

    {_, _, _, n} =
      Enum.reduce(cases, {HPACK.new(), HPACK.new(), HPACK.new(), 0}, fn c, {dec, enc, dec2, n} ->
        headers = Enum.map(get(c, "headers"), fn [{k, v}] -> {k, v} end)

        {dec, enc, dec2} =
          case get(c, "header_table_size") do
            nil ->
              {dec, enc, dec2}

            size ->
              {HPACK.set_max_table_size(dec, size), HPACK.set_encoder_table_size(enc, size),
               HPACK.set_max_table_size(dec2, size)}
          end

        wire = Base.decode16!(get(c, "wire"), case: :mixed)
        assert {:ok, ^headers, dec} = HPACK.decode(wire, dec), "#{file} seq #{get(c, "seqno")}"

        {block, enc} = HPACK.encode(headers, enc)
        assert {:ok, ^headers, dec2} = HPACK.decode(IO.iodata_to_binary(block), dec2)
        {dec, enc, dec2, n + 1}
      end)

    n
  end

  defp get(pairs, key) do
    case List.keyfind(pairs, key, 0) do
      {_, v} -> v
      nil -> nil
    end
  end

  defmodule JSON do
    @moduledoc false
    # Minimal JSON reader for the test vectors: objects become ordered lists
    # of {key, value} pairs (header order matters).

    def decode!(text) do
      {value, rest} = value(skip(text))
      "" = skip(rest)
      value
    end

    defp skip(<<c, rest::binary>>) when c in [?\s, ?\n, ?\r, ?\t], do: skip(rest)
    defp skip(rest), do: rest

    defp value(<<?{, rest::binary>>), do: object(skip(rest), [])
    defp value(<<?[, rest::binary>>), do: array(skip(rest), [])
    defp value(<<?", rest::binary>>), do: string(rest, [])
    defp value(<<"true", rest::binary>>), do: {true, rest}
    defp value(<<"false", rest::binary>>), do: {false, rest}
    defp value(<<"null", rest::binary>>), do: {nil, rest}

    defp value(text) do
      [num] = Regex.run(~r/^-?\d+(\.\d+)?([eE][-+]?\d+)?/, text)
      rest = binary_part(text, byte_size(num), byte_size(text) - byte_size(num))

      parsed =
        if String.contains?(num, [".", "e", "E"]),
          do: String.to_float(num),
          else: String.to_integer(num)

      {parsed, rest}
    end

    defp object(<<?}, rest::binary>>, acc), do: {Enum.reverse(acc), rest}

    defp object(<<?", rest::binary>>, acc) do
      {key, rest} = string(rest, [])
      <<?:, rest::binary>> = skip(rest)
      {val, rest} = value(skip(rest))

      case skip(rest) do
        <<?,, rest::binary>> -> object(skip(rest), [{key, val} | acc])
        <<?}, rest::binary>> -> {Enum.reverse([{key, val} | acc]), rest}
      end
    end

    defp array(<<?], rest::binary>>, acc), do: {Enum.reverse(acc), rest}

    defp array(text, acc) do
      {val, rest} = value(text)

      case skip(rest) do
        <<?,, rest::binary>> -> array(skip(rest), [val | acc])
        <<?], rest::binary>> -> {Enum.reverse([val | acc]), rest}
      end
    end

    defp string(<<?", rest::binary>>, acc), do: {IO.iodata_to_binary(Enum.reverse(acc)), rest}

    defp string(<<?\\, ?u, hex::binary-size(4), rest::binary>>, acc) do
      cp = String.to_integer(hex, 16)

      case {cp, rest} do
        {hi, <<?\\, ?u, lo_hex::binary-size(4), rest2::binary>>} when hi in 0xD800..0xDBFF ->
          lo = String.to_integer(lo_hex, 16)
          string(rest2, [<<0x10000 + (hi - 0xD800) * 0x400 + (lo - 0xDC00)::utf8>> | acc])

        _ ->
          string(rest, [<<cp::utf8>> | acc])
      end
    end

    defp string(<<?\\, c, rest::binary>>, acc) do
      ch =
        case c do
          ?n -> "\n"
          ?t -> "\t"
          ?r -> "\r"
          ?b -> "\b"
          ?f -> "\f"
          other -> <<other>>
        end

      string(rest, [ch | acc])
    end

    defp string(<<c, rest::binary>>, acc), do: string(rest, [<<c>> | acc])
  end
end
