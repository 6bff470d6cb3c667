defmodule HFBridge.OptionsTest do
  use ExUnit.Case, async: true

  alias HFBridge.{Error, Options}

  @schema [
    name: [type: :string, required: true, doc: "A name."],
    size: [type: :pos_integer, default: 10, doc: "A size."],
    mode: [type: {:in, [:fast, :slow]}, default: :fast],
    tags: [type: {:list, :atom}],
    limit: [type: {:or, [:non_neg_integer, nil]}, default: nil],
    pair: [type: {:tuple, [:integer, :string]}],
    nested: [type: {:keyword_list, [depth: [type: :integer, default: 1]]}],
    wait: [type: :timeout, default: 5000]
  ]

  test "fills defaults, keeps schema order, last occurrence wins" do
    assert {:ok, opts} = Options.validate([tags: [:a], name: "x", name: "y"], @schema)
    assert opts == [name: "y", size: 10, mode: :fast, tags: [:a], limit: nil, wait: 5000]
  end

  test "validates nested keyword lists with their defaults" do
    assert {:ok, opts} = Options.validate([name: "x", nested: []], @schema)
    assert opts[:nested] == [depth: 1]

    assert {:error, %Error{message: m}} =
             Options.validate([name: "x", nested: [deep: 2]], @schema)

    assert m =~ "option :nested" and m =~ "unknown option :deep"
  end

  test "errors name the option and say what was expected" do
    check = fn opts ->
      {:error, %Error{layer: :options, code: :invalid_option, message: m}} =
        Options.validate(opts, @schema)

      m
    end

    assert check.([]) =~ "required option :name not found"
    assert check.(name: 1) =~ "invalid value for option :name: expected string, got: 1"
    assert check.(name: "x", size: 0) =~ "expected positive integer, got: 0"
    assert check.(name: "x", mode: :medium) =~ "expected one of :fast, :slow, got: :medium"
    assert check.(name: "x", tags: [:a, "b"]) =~ "element 1: expected atom"
    assert check.(name: "x", limit: -1) =~ "expected non-negative integer or nil"
    assert check.(name: "x", pair: {1, 2}) =~ "expected {integer, string}"
    assert check.(name: "x", wait: :never) =~ "timeout"
    assert check.(name: "x", nme: 1) =~ "unknown option :nme (did you mean :name?)"
    assert check.(%{name: "x"}) =~ "must be a keyword list"
  end

  test "validate!/2 raises the error" do
    assert_raise Error, ~r/unknown option :zzz/, fn -> Options.validate!([zzz: 1], @schema) end
  end

  test "take/2 splits known from other options" do
    assert Options.take([size: 1, other: 2, name: "n"], @schema) ==
             {[size: 1, name: "n"], [other: 2]}
  end

  test "docs/1 lists every option with type and default" do
    docs = Options.docs(@schema)
    assert docs =~ "* `:name` (string) — A name. Required."
    assert docs =~ "* `:size` (positive integer) — A size. Defaults to `10`."
    assert docs =~ "`:mode` (one of :fast, :slow)"
  end
end
