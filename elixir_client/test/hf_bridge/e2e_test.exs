defmodule HFBridge.E2ETest do
  # Round-trip truth: rows read through the bridge equal, row for row, what
  # `datasets` yields in-process for the same spec (tests/golden/e2e_rows.py).
  use HFBridge.ServerCase, async: true

  alias HFBridge.Spec

  setup_all %{data_dir: data_dir} do
    glob = rich_parquet!(Path.join(data_dir, "rich"), 4, 150)
    %{glob: glob}
  end

  defp bridge_rows(client, dataset, opts) do
    HFBridge.rows(dataset, [client: client] ++ opts) |> Enum.to_list() |> normalize()
  end

  defp golden(dataset, opts) do
    {:ok, spec} = Spec.build(dataset, Keyword.drop(opts, [:batch_size]))
    golden_rows!(spec)
  end

  defp assert_same(client, dataset, opts) do
    expected = golden(dataset, opts)
    actual = bridge_rows(client, dataset, opts)
    assert length(actual) == length(expected)
    assert actual == expected
    actual
  end

  test "all rows and feature kinds equal datasets in-process", %{client: client, glob: glob} do
    rows = assert_same(client, "parquet", data_files: glob, batch_size: 64)
    assert length(rows) == 600
    assert Enum.map(rows, & &1["id"]) == Enum.to_list(0..599)

    row = Enum.at(rows, 3)
    assert row["label"] == 1
    assert row["text"] == nil
    assert row["tokens"] == ["t0", "t1", "t2"]
    assert row["emb"] == [1.5, -1.25, 0.0]
    assert row["meta"] == %{"source" => "src0", "score" => 1.0}

    assert %{"bytes" => <<0x89, "PNG\r\n", 0x1A, "\n", 0, 0, 0, 3, 0, 1, 2>>, "path" => nil} =
             row["img"]

    assert {:naive_datetime, _} = row["ts"]
    assert {:datetime, _} = row["ts_utc"]
    assert row["day"] == {:date, "2000-01-03"}
    assert Enum.at(rows, 4)["text"] == "row 4 é漢 \"q\" \#{x}"
  end

  test "shuffled rows equal datasets in-process and are a permutation", %{
    client: client,
    glob: glob
  } do
    rows =
      assert_same(client, "parquet",
        data_files: glob,
        shuffle: [seed: 42, buffer: 50],
        batch_size: 100
      )

    ids = Enum.map(rows, & &1["id"])
    assert Enum.sort(ids) == Enum.to_list(0..599)
    assert ids != Enum.to_list(0..599)
  end

  test "sharded, column-selected, skipped and taken rows equal datasets in-process", %{
    client: client,
    glob: glob
  } do
    rows =
      assert_same(client, "parquet",
        data_files: glob,
        shard: {1, 2},
        columns: ["meta", "id"],
        skip: 10,
        take: 100,
        batch_size: 32
      )

    assert length(rows) == 100
    assert Enum.all?(rows, &(Map.keys(&1) |> Enum.sort() == ["id", "meta"]))
  end

  test "filtered rows equal datasets in-process", %{client: client, glob: glob} do
    rows =
      assert_same(client, "parquet",
        data_files: glob,
        filters: [[{"label", :==, 1}, {"id", :<, 100}], [{"id", :in, [300, 301, 302]}]]
      )

    assert Enum.map(rows, & &1["id"]) == Enum.to_list(1..99//2) ++ [300, 301, 302]
  end

  test "two processes reading different shards together see every row once", %{
    client: client,
    glob: glob
  } do
    parent = self()

    tasks =
      for index <- 0..1 do
        Task.async(fn ->
          ids =
            HFBridge.rows("parquet",
              client: client,
              data_files: glob,
              shard: {index, 2},
              batch_size: 50
            )
            |> Enum.map(& &1["id"])

          send(parent, {:shard_done, index})
          ids
        end)
      end

    [a, b] = Task.await_many(tasks, 120_000)
    assert a != [] and b != []
    assert MapSet.disjoint?(MapSet.new(a), MapSet.new(b))
    assert Enum.sort(a ++ b) == Enum.to_list(0..599)

    for index <- 0..1 do
      {:ok, spec} = Spec.build("parquet", data_files: glob, shard: {index, 2}, columns: ["id"])
      assert Enum.map(golden_rows!(spec), & &1["id"]) == Enum.at([a, b], index)
    end
  end

  test "batches carry sequence numbers and Arrow IPC any reader takes", %{
    client: client,
    glob: glob
  } do
    batches =
      HFBridge.stream("parquet", client: client, data_files: glob, batch_size: 256)
      |> Enum.to_list()

    assert Enum.map(batches, & &1.seq) == Enum.to_list(0..(length(batches) - 1))
    assert Enum.sum(Enum.map(batches, & &1.num_rows)) == 600

    for batch <- batches do
      assert {:ok, table} = HFBridge.Batch.table(batch)
      assert table.num_rows == batch.num_rows
      assert length(HFBridge.Batch.rows!(batch)) == batch.num_rows
    end
  end

  test "info describes features, schema and splits", %{client: client, glob: glob} do
    assert {:ok, info} = HFBridge.info(client, "parquet", data_files: glob)
    assert info.builder == "parquet"
    assert info.num_shards == 4
    assert [%{name: "train"}] = info.splits
    assert info.features["label"] == %{"_type" => "ClassLabel", "names" => ["neg", "pos"]}
    assert info.features["img"]["_type"] == "Image"

    assert Enum.map(info.schema.fields, & &1.name) ==
             ~w(id label text tokens emb meta img ts ts_utc day)
  end

  test "server errors are HFBridge.Error values", %{
    client: client,
    data_dir: data_dir,
    glob: glob
  } do
    assert {:error, %HFBridge.Error{code: :not_found}} =
             HFBridge.info(client, Path.join(data_dir, "no_such_dataset"))

    assert {:error, %HFBridge.Error{code: :invalid_argument} = error} =
             HFBridge.open(client, "parquet", data_files: glob, columns: ["nope"])

    assert error.message =~ "nope"

    assert_raise HFBridge.Error, ~r/nope/, fn ->
      HFBridge.rows("parquet", client: client, data_files: glob, columns: ["nope"])
      |> Enum.take(1)
    end
  end
end
