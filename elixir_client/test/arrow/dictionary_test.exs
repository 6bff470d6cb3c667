defmodule HFBridge.Arrow.DictionaryTest do
  use ExUnit.Case, async: true

  alias HFBridge.Arrow.Dictionary

  test "a whole dictionary, then many deltas: every value where its index says" do
    dict = Dictionary.new(["a", "b"])
    assert Dictionary.size(dict) == 2 and Dictionary.at(dict, 1) == "b"

    # 1,000 deltas of three values each (a stream that grows its dictionary
    # batch by batch); each costs in proportion to what it adds.
    dict =
      Enum.reduce(1..1000, dict, fn i, acc ->
        Dictionary.append(acc, ["x#{i}", nil, i])
      end)

    assert Dictionary.size(dict) == 3002
    assert Dictionary.at(dict, 0) == "a"
    assert Dictionary.at(dict, 2) == "x1"
    assert Dictionary.at(dict, 3) == nil
    assert Dictionary.at(dict, 3001) == 1000

    assert Enum.map(0..3001, &Dictionary.at(dict, &1)) ==
             ["a", "b" | Enum.flat_map(1..1000, &["x#{&1}", nil, &1])]
  end
end
