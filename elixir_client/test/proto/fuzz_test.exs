Code.require_file("python_golden.exs", __DIR__)

defmodule HFBridge.Proto.FuzzTest do
  # Random and mutated inputs must give {:ok, _} or {:error, %HFBridge.Error{}},
  # never a raise; whatever decodes must re-encode and decode to itself.
  use ExUnit.Case, async: true

  alias HFBridge.Proto
  alias HFBridge.ProtoTest.PythonGolden

  setup_all do
    %{cases: PythonGolden.run("golden")}
  end

  setup do
    :rand.seed(:exsss, {20, 24, 611})
    :ok
  end

  test "random byte strings into every message" do
    for msg <- Proto.messages(), _ <- 1..150 do
      check(msg, :rand.bytes(:rand.uniform(48) - 1) |> bias())
    end
  end

  test "mutations of valid messages into every message", %{cases: cases} do
    seeds = Enum.map(cases, &{&1.message, &1.bytes})

    for {msg, bin} <- seeds, _ <- 1..12 do
      mutated = mutate(bin)
      check(msg, mutated)
      # The same bytes read as a different message type.
      check(Enum.random(Proto.messages()), mutated)
    end
  end

  test "unknown groups nested without bound are rejected, shallow ones skipped" do
    # Field 100, start-group key 0xA3 0x06, end-group key 0xA4 0x06.
    nest = fn n -> String.duplicate(<<0xA3, 0x06>>, n) <> String.duplicate(<<0xA4, 0x06>>, n) end

    assert {:ok, %{acked_seq: 3}} = Proto.decode(:AckResponse, nest.(50) <> <<0x08, 0x03>>)
    assert {:error, %HFBridge.Error{layer: :proto}} = Proto.decode(:AckResponse, nest.(5000))

    assert {:error, %HFBridge.Error{layer: :proto}} =
             Proto.decode(:AckResponse, String.duplicate(<<0xA3, 0x06>>, 50))
  end

  @rich """
  syntax = "proto3";
  enum Color { NONE = 0; RED = 1; }
  message Node {
    Node child = 1;
    repeated Node kids = 2;
    map<string, Node> named = 3;
    map<sint64, Color> colors = 4;
    repeated float fs = 5;
    repeated sfixed64 xs = 6;
    repeated Color cs = 7;
    oneof pick { bool b = 8; bytes raw = 9; Node other = 10; }
    optional sint32 z = 11;
    fixed32 f = 12;
    double d = 13;
    string s = 14;
  }
  """

  test "random and mutated bytes into a schema with maps, enums, packed fields and recursion" do
    schema = HFBridge.Proto.Schema.parse!(@rich)
    codec = HFBridge.Proto.Codec

    seed =
      codec.encode(schema, :Node, %{
        child: %{kids: [%{s: "é", z: -3}], named: %{"k" => %{fs: [1.5, :nan]}}},
        colors: %{-1 => :RED, 5 => 9},
        xs: [-(2 ** 63), 0],
        cs: [:RED, :NONE],
        other: %{b: true},
        f: 7,
        d: -0.0,
        s: "x"
      })

    inputs =
      for(_ <- 1..600, do: mutate(seed)) ++
        for(_ <- 1..600, do: bias(:rand.bytes(:rand.uniform(40))))

    for bin <- inputs do
      case codec.decode(schema, :Node, bin) do
        {:ok, map} ->
          assert codec.decode(schema, :Node, codec.encode(schema, :Node, map)) == {:ok, map}

        {:error, %HFBridge.Error{layer: :proto}} ->
          :ok
      end
    end
  end

  defp check(msg, bin) do
    case Proto.decode(msg, bin) do
      {:ok, map} ->
        again = Proto.encode(msg, map)
        assert Proto.decode(msg, again) == {:ok, map}, "round trip of #{msg} #{inspect(bin)}"

      {:error, %HFBridge.Error{layer: :proto, code: :malformed}} ->
        :ok

      other ->
        flunk("#{msg} #{inspect(bin)} gave #{inspect(other)}")
    end
  end

  # Random bytes rarely form valid keys; make some of them plausible.
  defp bias(bin) do
    for <<b <- bin>>, into: <<>> do
      case :rand.uniform(4) do
        1 -> <<Enum.random([0x08, 0x10, 0x12, 0x0A, 0x1A, 0x09, 0x0D, 0x18, 0x20, 0x22])>>
        _ -> <<b>>
      end
    end
  end

  defp mutate(<<>>), do: :rand.bytes(4)

  defp mutate(bin) do
    size = byte_size(bin)
    pos = :rand.uniform(size) - 1

    case :rand.uniform(7) do
      1 ->
        binary_part(bin, 0, pos)

      2 ->
        replace(bin, pos, <<:rand.uniform(256) - 1>>)

      3 ->
        replace(
          bin,
          pos,
          <<Bitwise.bxor(:binary.at(bin, pos), Bitwise.bsl(1, :rand.uniform(8) - 1))>>
        )

      4 ->
        binary_part(bin, 0, pos) <>
          :rand.bytes(:rand.uniform(4)) <> binary_part(bin, pos, size - pos)

      5 ->
        replace(bin, pos, <<0xFF>>)

      6 ->
        bin <> binary_part(bin, pos, size - pos)

      7 ->
        binary_part(bin, pos, size - pos)
    end
  end

  defp replace(bin, pos, byte),
    do: binary_part(bin, 0, pos) <> byte <> binary_part(bin, pos + 1, byte_size(bin) - pos - 1)
end
