defmodule HFBridge.SpecTest do
  use ExUnit.Case, async: true

  alias HFBridge.{Error, Spec}

  doctest HFBridge.Spec

  defp message({:error, %Error{layer: :options, code: :invalid_option, message: message}}),
    do: message

  test "defaults give an empty spec" do
    assert {:ok, spec} = Spec.build("user/name")

    assert spec == %{
             path: "user/name",
             config: "",
             split: "",
             revision: "",
             data_files: [],
             columns: [],
             filters: [],
             shuffle: false,
             seed: 0,
             shuffle_buffer: 0,
             num_shards: 0,
             shard_index: 0,
             skip: 0,
             take: nil
           }

    assert HFBridge.Proto.encode(:DatasetSpec, spec) |> is_binary()
  end

  test "every option maps to its proto field" do
    {:ok, request} =
      Spec.open_request("parquet",
        config: "c",
        split: :test,
        revision: "main",
        data_files: %{"test" => "a/*.parquet", train: ["b.parquet", "c.parquet"]},
        columns: [:a, "b"],
        filters: [{"a", :>=, 1.5}, {"b", :not_in, ["x", "y"]}, {"c", "!=", true}],
        shuffle: [seed: 7, buffer: 64],
        shard: {1, 3},
        skip: 5,
        take: 0,
        batch_size: 32,
        max_batch_bytes: 1_000_000
      )

    assert request.batch_size == 32
    assert request.max_batch_bytes == 1_000_000
    spec = request.spec
    assert spec.config == "c" and spec.split == "test" and spec.revision == "main"

    assert spec.data_files == [
             %{split: "test", patterns: ["a/*.parquet"]},
             %{split: "train", patterns: ["b.parquet", "c.parquet"]}
           ]

    assert spec.columns == ["a", "b"]

    assert spec.filters == [
             %{
               all: [
                 %{column: "a", op: ">=", value: %{float_value: 1.5}, values: []},
                 %{
                   column: "b",
                   op: "not in",
                   value: nil,
                   values: [%{string_value: "x"}, %{string_value: "y"}]
                 },
                 %{column: "c", op: "!=", value: %{bool_value: true}, values: []}
               ]
             }
           ]

    assert {spec.shuffle, spec.seed, spec.shuffle_buffer} == {true, 7, 64}
    assert {spec.shard_index, spec.num_shards} == {1, 3}
    assert {spec.skip, spec.take} == {5, 0}

    # The codec takes the request as is, and decodes it back to the same values.
    {:ok, decoded} =
      HFBridge.Proto.decode(:OpenRequest, HFBridge.Proto.encode(:OpenRequest, request))

    assert HFBridge.Proto.encode(:DatasetSpec, decoded.spec) ==
             HFBridge.Proto.encode(:DatasetSpec, spec)

    assert [%{all: [%{value: %{float_value: 1.5}}, %{values: [%{string_value: "x"}, _]}, _]}] =
             decoded.spec.filters

    assert decoded.spec.take == 0
  end

  test "a DNF list of clauses is kept as clauses" do
    {:ok, spec} =
      Spec.build("parquet", filters: [[{"a", :==, 1}], [{"b", :<, 2}, {"c", :in, [1, 2]}]])

    assert length(spec.filters) == 2

    assert [%{all: [_]}, %{all: [_, %{op: "in", values: [%{int_value: 1}, %{int_value: 2}]}]}] =
             spec.filters
  end

  test "shuffle: true uses seed 0 and the server's buffer" do
    {:ok, spec} = Spec.build("d", shuffle: true)
    assert {spec.shuffle, spec.seed, spec.shuffle_buffer} == {true, 0, 0}
  end

  test "unknown options are errors naming the option" do
    assert message(Spec.build("d", splt: "train")) =~
             "unknown option :splt (did you mean :split?)"

    assert message(Spec.build("d", bogus: 1)) =~ "unknown option :bogus"
    assert message(Spec.build("d", shuffle: [sed: 1])) =~ "unknown option :sed"
  end

  test "bad values are clear errors naming the option" do
    assert message(Spec.build("d", take: -1)) =~ "invalid value for option :take"
    assert message(Spec.build("d", batch_size: 0)) =~ "option :batch_size"
    assert message(Spec.build("d", shard: {2, 2})) =~ "0 <= index < count"
    assert message(Spec.build("d", shard: 3)) =~ ":shard"
    assert message(Spec.build("d", columns: "a,b")) =~ "list of column names"
    assert message(Spec.build("d", data_files: [])) =~ "non-empty list"
    assert message(Spec.build("d", data_files: %{"train" => 1})) =~ "map of split name"
    assert message(Spec.build("d", filters: [{"a", :like, 1}])) =~ "unknown operator :like"
    assert message(Spec.build("d", filters: [{"a", :==, %{}}])) =~ "filter values must be"
    assert message(Spec.build("d", filters: [{"a", :in, 1}])) =~ "needs a non-empty list"
    assert message(Spec.build("d", filters: "a == 1")) =~ ":filters"
    assert message(Spec.build("d", shuffle: "yes")) =~ ":shuffle"
    assert message(Spec.build("d", config: 1)) =~ ":config"
    assert message(Spec.build("", [])) =~ "dataset must be a non-empty string"
    assert message(Spec.build(:imdb, [])) =~ "dataset must be a non-empty string"
    assert message(Spec.build("d", [:split])) =~ "keyword list"
  end

  describe "HFBridge.stream/2 and rows/2" do
    test "raise at once on invalid options, naming the option" do
      assert_raise Error, ~r/unknown option :batchsize \(did you mean :batch_size\?\)/, fn ->
        HFBridge.stream("d", batchsize: 10)
      end

      assert_raise Error, ~r/invalid value for option :read_ahead/, fn ->
        HFBridge.rows("d", read_ahead: 0)
      end

      assert_raise Error, ~r/option :client/, fn -> HFBridge.rows("d", client: :nope) end

      assert_raise Error, ~r/option :on_open/, fn ->
        HFBridge.rows("d", on_open: fn -> :ok end)
      end

      assert_raise Error, ~r/option :timeout/, fn -> HFBridge.rows("d", timeout: -5) end
    end
  end

  describe "HFBridge.connect/1" do
    test "rejects unknown options and bad addresses" do
      assert {:error, %Error{message: message}} = HFBridge.connect(adress: "x:1")
      assert message =~ "unknown option :adress (did you mean :address?)"
      assert {:error, %Error{message: message}} = HFBridge.connect(address: "nohost")
      assert message =~ ~s(invalid server address "nohost")
      assert {:error, %Error{}} = HFBridge.connect(address: "h:99999")
      assert {:error, %Error{message: message}} = HFBridge.connect(host: "h")
      assert message =~ ":host and :port"
      assert {:error, %Error{message: message}} = HFBridge.connect(local: false, address: nil)
      assert message =~ "local: false needs an address"
    end

    test "a server that is not there is a retryable :unavailable error" do
      {:ok, socket} = :gen_tcp.listen(0, [])
      {:ok, port} = :inet.port(socket)
      :gen_tcp.close(socket)

      assert {:error, %Error{code: :unavailable, retryable: true}} =
               HFBridge.connect(address: "127.0.0.1:#{port}")
    end
  end
end
