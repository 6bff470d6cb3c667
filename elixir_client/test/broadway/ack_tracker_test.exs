defmodule HFBridge.Broadway.AckTrackerTest do
  use ExUnit.Case, async: true

  alias HFBridge.Broadway.AckTracker, as: T

  defp tracker(batches) do
    Enum.reduce(batches, T.new(), fn {seq, count}, t -> T.track(t, seq, count) end)
  end

  test "a batch is released only once all its messages are acknowledged" do
    t = tracker([{0, 3}])
    t = T.ack(t, 0, 2, 0)
    assert {nil, t} = T.release(t, :commit)
    assert T.open_count(t) == 1
    t = T.ack(t, 0, 1, 0)
    assert {0, t} = T.release(t, :commit)
    assert T.empty?(t)
  end

  test "out-of-order acknowledgements commit in order, the highest complete prefix" do
    t = tracker([{0, 2}, {1, 2}, {2, 2}, {3, 2}])
    t = t |> T.ack(2, 2, 0) |> T.ack(1, 2, 0)
    # batch 0 is still open: nothing may be committed past it
    assert {nil, t} = T.release(t, :commit)
    t = T.ack(t, 0, 2, 0)
    assert {2, t} = T.release(t, :commit)
    assert T.open_count(t) == 1
    t = T.ack(t, 3, 1, 0)
    assert {nil, t} = T.release(t, :commit)
    assert {3, t} = t |> T.ack(3, 1, 0) |> T.release(:commit)
    assert T.empty?(t)
  end

  test "acknowledgements split across several calls and interleaved batches" do
    t = tracker([{5, 3}, {6, 1}])
    t = t |> T.ack(6, 1, 0) |> T.ack(5, 1, 0) |> T.ack(5, 0, 1)
    assert {nil, t} = T.release(t, :commit)
    assert {6, _} = t |> T.ack(5, 1, 0) |> T.release(:commit)
  end

  test "failed messages complete a batch under :commit" do
    t = tracker([{0, 2}, {1, 1}]) |> T.ack(0, 1, 1) |> T.ack(1, 0, 1)
    assert {1, t} = T.release(t, :commit)
    assert T.failed_count(t) == 2
    assert T.blocked(t) == nil
  end

  test "under :stop, the first batch with a failed message blocks it and everything after" do
    t = tracker([{0, 1}, {1, 2}, {2, 1}]) |> T.ack(0, 1, 0) |> T.ack(2, 1, 0) |> T.ack(1, 1, 1)
    assert {0, t} = T.release(t, :stop)
    assert T.blocked(t) == 1
    assert T.open_count(t) == 2
    # later acknowledgements never release past the blocked batch
    assert {nil, ^t} = T.release(t, :stop)
  end

  test "partial batches: zero-message batches complete at once, in order" do
    t = tracker([{0, 2}, {1, 0}, {2, 0}])
    assert {nil, t} = T.release(t, :commit)
    assert {2, t} = t |> T.ack(0, 2, 0) |> T.release(:commit)
    assert T.empty?(t)
    assert {3, _} = t |> T.track(3, 0) |> T.release(:commit)
  end

  test "unknown or released batches and excess acknowledgements are ignored" do
    t = tracker([{0, 1}])
    assert T.ack(t, 42, 1, 0) == t
    t = T.ack(t, 0, 5, 0)
    assert {0, t} = T.release(t, :commit)
    assert T.ack(t, 0, 1, 0) == t
  end

  test "batches must be tracked in increasing order" do
    t = tracker([{3, 1}])
    assert_raise ArgumentError, fn -> T.track(t, 3, 1) end
    assert_raise ArgumentError, fn -> T.track(t, 2, 1) end
  end

  test "count_by_seq groups successful and failed messages by batch, sorted" do
    assert T.count_by_seq([2, 0, 2, 1], [0, 3]) == [{0, 1, 1}, {1, 1, 0}, {2, 2, 0}, {3, 0, 1}]
    assert T.count_by_seq([], []) == []
  end

  test "random acknowledgement orders always commit a prefix, never past an open batch" do
    for round <- 1..200 do
      :rand.seed(:exsss, {round, 7, 11})
      counts = for _ <- 0..(:rand.uniform(8) - 1), do: :rand.uniform(4) - 1
      batches = Enum.with_index(counts, fn count, seq -> {seq, count} end)
      acks = for {seq, count} <- batches, _ <- List.duplicate(nil, count), do: seq
      t = tracker(batches)

      {t, committed} =
        acks
        |> Enum.shuffle()
        |> Enum.reduce({t, -1}, fn seq, {t, committed} ->
          {released, t} = t |> T.ack(seq, 1, 0) |> T.release(:commit)
          committed = if released, do: max(committed, released), else: committed
          # every batch up to the commit point is fully acknowledged
          open = t.open |> Map.keys()
          assert Enum.all?(open, &(&1 > committed))
          {t, committed}
        end)

      {last, t} = T.release(t, :commit)
      assert max(committed, last || -1) == length(counts) - 1
      assert T.empty?(t)
    end
  end
end
