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
      check(msg, :crypto.strong_rand_bytes(:rand.uniform(48) - 1) |> bias())
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

  test "deeply nested length prefixes are rejected, not followed without bound" do
    # OpenRequest.spec -> DatasetSpec.filters -> FilterClause.all -> ... and
    # bytes claiming a nesting far deeper than any real message.
    bin = Enum.reduce(1..5000, <<>>, fn _, inner -> <<0x0A, 0x7F>> <> inner end)
    check(:OpenRequest, bin)
    check(:FilterClause, bin)
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

  defp mutate(<<>>), do: :crypto.strong_rand_bytes(4)

  defp mutate(bin) do
    size = byte_size(bin)
    pos = :rand.uniform(size) - 1

    case :rand.uniform(7) do
      1 -> binary_part(bin, 0, pos)
      2 -> replace(bin, pos, <<:rand.uniform(256) - 1>>)
      3 -> replace(bin, pos, <<Bitwise.bxor(:binary.at(bin, pos), Bitwise.bsl(1, :rand.uniform(8) - 1))>>)
      4 -> binary_part(bin, 0, pos) <> :crypto.strong_rand_bytes(:rand.uniform(4)) <> binary_part(bin, pos, size - pos)
      5 -> replace(bin, pos, <<0xFF>>)
      6 -> bin <> binary_part(bin, pos, size - pos)
      7 -> binary_part(bin, pos, size - pos)
    end
  end

  defp replace(bin, pos, byte),
    do: binary_part(bin, 0, pos) <> byte <> binary_part(bin, pos + 1, byte_size(bin) - pos - 1)
end
