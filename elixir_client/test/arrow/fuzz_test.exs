Code.require_file("golden_helper.exs", __DIR__)

defmodule HFBridge.Arrow.FuzzTest do
  # Truncated and bit-flipped variants of the pyarrow goldens: every one must
  # decode to {:ok, table} or {:error, %HFBridge.Error{}} — never raise, never
  # crash the process, and stay within a bounded heap.
  use ExUnit.Case, async: true

  alias HFBridge.Arrow
  alias HFBridge.Arrow.GoldenHelper

  # Small limits, so that the heap bound below is meaningful.
  @opts [max_array_length: 100_000, max_unbacked_values: 100_000]
  # 20M words (160 MB on 64-bit): far above what any golden needs, far below
  # what an unbounded allocation would take.
  @max_heap_words 20_000_000

  setup_all do
    dir = GoldenHelper.generate!()

    sources =
      for name <- GoldenHelper.names(dir), name != "hf_like_big" do
        {ipc, _expected} = GoldenHelper.load(dir, name)
        {name, ipc}
      end

    %{sources: sources}
  end

  test "truncated streams", %{sources: sources} do
    counts =
      for {name, ipc} <- sources, cut <- cuts(byte_size(ipc)) do
        classify(name, "cut at #{cut}", binary_part(ipc, 0, cut))
      end

    assert length(counts) > 1000
    # Some prefixes end at a message boundary and decode fine, most do not.
    assert :error in counts and :ok in counts
  end

  test "bit flips and overwritten bytes", %{sources: sources} do
    :rand.seed(:exsss, {20, 26, 11})

    counts =
      for {name, ipc} <- sources, _ <- 1..80 do
        # One to three mutations per case.
        {labels, mutated} =
          Enum.map_reduce(1..:rand.uniform(3), ipc, fn _, acc -> mutate(acc) end)

        classify(name, Enum.join(labels, ", "), mutated)
      end

    assert length(counts) > 2000
    assert :error in counts and :ok in counts
  end

  test "garbage and tiny inputs" do
    inputs = [
      <<>>,
      <<0>>,
      <<255, 255, 255, 255>>,
      <<255, 255, 255, 255, 8, 0, 0, 0>>,
      :crypto.strong_rand_bytes(64)
    ]

    for input <- inputs do
      assert classify("garbage", inspect(input), input) in [:ok, :error]
    end
  end

  # Every prefix up to 256 bytes (the schema message), then a stride.
  defp cuts(size) do
    Enum.uniq(
      Enum.to_list(0..min(size - 1, 255)) ++ Enum.to_list(256..(size - 1)//max(1, div(size, 40)))
    )
  end

  defp mutate(ipc) do
    size = byte_size(ipc)
    pos = :rand.uniform(size) - 1
    <<before::binary-size(pos), byte, rest::binary>> = ipc

    {label, new} =
      case :rand.uniform(4) do
        1 -> {"flip bit", Bitwise.bxor(byte, Bitwise.bsl(1, :rand.uniform(8) - 1))}
        2 -> {"set 0xFF", 0xFF}
        3 -> {"set 0x7F", 0x7F}
        4 -> {"set 0x00", 0x00}
      end

    {"#{label} at #{pos}", <<before::binary, new, rest::binary>>}
  end

  # Runs every entry point in a process with a bounded heap; returns :ok or :error.
  defp classify(name, label, input) do
    parent = self()

    {pid, ref} =
      spawn_monitor(fn ->
        Process.flag(:max_heap_size, %{size: @max_heap_words, kill: true, error_logger: false})
        stream = Arrow.read_stream(input, @opts)
        batches = Arrow.read_batches(input, @opts)
        schema = Arrow.read_schema(input)
        rows = with {:ok, table} <- stream, do: {:ok, Arrow.to_rows(table)}
        send(parent, {:result, self(), {stream, batches, schema, rows}})
      end)

    receive do
      {:result, ^pid, {stream, batches, schema, rows}} ->
        Process.demonitor(ref, [:flush])
        what = "#{name}: #{label}"
        assert_result(stream, HFBridge.Arrow.Table, what)
        assert_result(schema, HFBridge.Arrow.Schema, what)

        case batches do
          {:ok, list} when is_list(list) -> :ok
          {:error, %HFBridge.Error{}} -> :ok
          other -> flunk("#{what}: read_batches returned #{inspect(other, limit: 5)}")
        end

        case {stream, rows} do
          {{:ok, table}, {:ok, rows}} -> assert length(rows) == table.num_rows
          _ -> :ok
        end

        if match?({:ok, _}, stream), do: :ok, else: :error

      {:DOWN, ^ref, :process, ^pid, reason} ->
        flunk("#{name}: #{label}: the reader process died: #{inspect(reason, limit: 5)}")
    after
      60_000 ->
        Process.exit(pid, :kill)
        flunk("#{name}: #{label}: no result within 60 s")
    end
  end

  defp assert_result({:ok, %mod{}}, mod, _what), do: :ok
  # Errors come from explicit validation, not from the reader's last-resort
  # exception guard (which records the exception in details).
  defp assert_result({:error, %HFBridge.Error{layer: :arrow, message: m, details: d}}, _mod, what)
       when is_binary(m) do
    refute Map.has_key?(d, :exception), "#{what}: unvalidated failure #{inspect(d)}"
    :ok
  end

  defp assert_result(other, _mod, what),
    do: flunk("#{what}: unexpected result #{inspect(other, limit: 5)}")
end
