defmodule HFBridge.Broadway.OptionsTest do
  use ExUnit.Case, async: true

  alias HFBridge.Broadway.Options
  alias HFBridge.Error

  @base [dataset: "parquet", data_files: "/data/*.parquet"]

  test "defaults, and dataset and connection options are split out" do
    assert {:ok, config} =
             Options.validate(@base ++ [batch_size: 10, address: "127.0.0.1:1", columns: ["a"]])

    assert config.message == :rows
    assert config.max_pending_batches == 4
    assert config.on_failure == :commit
    assert config.checkpoint == nil
    assert config.spec_opts == [data_files: "/data/*.parquet", batch_size: 10, columns: ["a"]]
    assert config.client_opts == [address: "127.0.0.1:1"]
    assert {config.name, config.index, config.count} == {nil, 0, 1}
  end

  test "the dataset is required and options are checked" do
    assert {:error, %Error{code: :invalid_option, message: m}} = Options.validate(data_files: "x")
    assert m =~ ":dataset"

    for {bad, name} <- [
          {[message: :lines], ":message"},
          {[max_pending_batches: 0], ":max_pending_batches"},
          {[on_failure: :retry], ":on_failure"},
          {[checkpoint: 42], ":checkpoint"},
          {[checkpoint: {String, nil}], "does not implement"},
          {[batch_sizee: 3], "did you mean :batch_size"},
          {[take: -1], ":take"}
        ] do
      assert {:error, %Error{layer: :options, message: message}} = Options.validate(@base ++ bad)
      assert message =~ name
    end

    assert_raise Error, fn -> Options.validate!(:nope) end
  end

  test "a directory checkpoint uses the file store" do
    assert {:ok, %{checkpoint: {HFBridge.Broadway.Checkpoint.File, "/tmp/ck"}}} =
             Options.validate(@base ++ [checkpoint: "/tmp/ck"])
  end

  test "with several producers, each reads its own shard; :shard is then refused" do
    broadway = [name: My.Pipeline, index: 2, producer: [concurrency: 3]]
    assert {:ok, config} = Options.validate(@base ++ [broadway: broadway])
    assert config.spec_opts[:shard] == {2, 3}
    assert {config.index, config.count} == {2, 3}
    assert Options.checkpoint_key(config) == "My.Pipeline.p2of3"

    assert {:error, %Error{message: message}} =
             Options.validate(@base ++ [shard: {0, 2}, broadway: broadway])

    assert message =~ ":shard option cannot be combined"

    # one producer may pick a shard itself
    one = [name: {:via, Registry, {R, "x y"}}, index: 0, producer: [concurrency: 1]]
    assert {:ok, config} = Options.validate(@base ++ [shard: {1, 4}, broadway: one])
    assert config.spec_opts[:shard] == {1, 4}
    assert Options.checkpoint_key(config) =~ ~r/^[A-Za-z0-9._-]+\.p0of1$/
  end

  test "the producer schema's docs name every option" do
    docs = HFBridge.Options.docs(Options.schema())

    for {name, _} <- Options.schema() do
      assert docs =~ "`#{inspect(name)}`"
    end
  end
end
