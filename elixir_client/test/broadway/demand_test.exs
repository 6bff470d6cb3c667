defmodule HFBridge.Broadway.DemandTest do
  use ExUnit.Case, async: true

  alias HFBridge.Broadway.Demand, as: D

  test "fetches only when demand exceeds the buffer" do
    d = D.new(4)
    refute D.fetch?(d, 0)
    d = D.add_demand(d, 3)
    assert D.fetch?(d, 0)
    d = d |> D.fetch_started() |> D.fetched([:a, :b, :c, :d, :e])
    assert {[:a, :b, :c], d} = D.take(d)
    assert d.demand == 0 and d.buffered == 2
    d = D.add_demand(d, 2)
    refute D.fetch?(d, 1)
    assert {[:d, :e], d} = D.take(d)
    refute D.fetch?(d, 1)
    d = D.add_demand(d, 1)
    assert D.fetch?(d, 1)
  end

  test "never more than one fetch in flight" do
    d = D.new(4) |> D.add_demand(100) |> D.fetch_started()
    refute D.fetch?(d, 0)
    d = D.fetch_failed(d)
    assert D.fetch?(d, 0)
  end

  test "the prefetch bound stops fetching whatever the demand" do
    d = D.new(2) |> D.add_demand(1_000)
    assert D.fetch?(d, 1)
    refute D.fetch?(d, 2)
    refute D.fetch?(d, 3)
  end

  test "take never emits more than demanded, and keeps order across fetches" do
    d = D.new(3) |> D.fetched([1, 2]) |> D.fetched([3])
    assert {[], d} = D.take(d)
    d = D.add_demand(d, 2)
    assert {[1, 2], d} = D.take(d)
    d = D.add_demand(d, 5)
    assert {[3], d} = D.take(d)
    assert d.demand == 4
  end

  test "an exhausted or halted state stops fetching; finished? waits for the buffer" do
    d = D.new(2) |> D.add_demand(1) |> D.fetch_started() |> D.fetched([:x, :y])
    d = D.exhausted(d)
    refute D.finished?(d)
    d = D.add_demand(d, 10)
    refute D.fetch?(d, 0)
    {[:x, :y], d} = D.take(d)
    assert D.finished?(d)

    h = D.new(2) |> D.add_demand(5) |> D.halt()
    refute D.fetch?(h, 0)
  end

  test "random demand and batch sizes: emitted is an in-order prefix, never above demand" do
    for round <- 1..100 do
      :rand.seed(:exsss, {round, 3, 5})

      {fetched, emitted, demanded, d} =
        Enum.reduce(1..40, {[], [], 0, D.new(3)}, fn _, {fetched, emitted, demanded, d} ->
          n = :rand.uniform(7) - 1
          d = D.add_demand(d, n)

          {fetched, d} =
            if D.fetch?(d, 0) do
              batch = for _ <- 1..(:rand.uniform(5) - 1)//1, do: make_ref()
              {fetched ++ batch, D.fetched(D.fetch_started(d), batch)}
            else
              {fetched, d}
            end

          {events, d} = D.take(d)
          # nothing is withheld while demand is outstanding
          assert d.demand == 0 or d.buffered == 0
          {fetched, emitted ++ events, demanded + n, d}
        end)

      assert length(emitted) <= demanded
      assert emitted == Enum.take(fetched, length(emitted))
      assert length(emitted) + d.buffered == length(fetched)
    end
  end
end
