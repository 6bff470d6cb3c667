defmodule HFBridge.ExplorerAbsentTest do
  # Where Explorer is absent (the default here): data frames say what they need.
  use ExUnit.Case, async: true

  if Code.ensure_loaded?(Explorer.DataFrame) do
    IO.puts("skipping HFBridge.ExplorerAbsentTest: :explorer is available")
    @moduletag skip: ":explorer is available"
  end

  alias HFBridge.{Batch, Error}

  test "to_dataframe/1 returns :unavailable naming the :explorer package" do
    batch = %Batch{seq: 0, num_rows: 0, ipc: <<>>}
    assert {:error, %Error{code: :unavailable, message: message}} = Batch.to_dataframe(batch)
    assert message =~ ":explorer package"
    assert_raise Error, ~r/:explorer package/, fn -> Batch.to_dataframe!(batch) end
    refute HFBridge.Explorer.available?()
  end

  test "stream(as: :dataframe) raises when the stream is built, before connecting" do
    assert_raise Error, ~r/as: :dataframe unavailable.*:explorer package/, fn ->
      HFBridge.stream("parquet", data_files: "x.parquet", as: :dataframe)
    end
  end
end

defmodule HFBridge.ExplorerOptionTest do
  use ExUnit.Case, async: true

  test "the :as option accepts :batch and :dataframe only" do
    assert_raise HFBridge.Error,
                 ~r/invalid value for option :as: expected :batch or :dataframe/,
                 fn ->
                   HFBridge.stream("parquet", data_files: "x.parquet", as: :table)
                 end

    assert is_function(HFBridge.stream("parquet", data_files: "x.parquet", as: :batch), 2)
  end
end

defmodule HFBridge.ExplorerTest do
  # Runs only where the :explorer package is available.
  use HFBridge.ServerCase, async: true

  if Code.ensure_loaded?(Explorer.DataFrame) do
    setup_all %{data_dir: data_dir} do
      %{path: simple_parquet!(Path.join(data_dir, "frames.parquet"), 95)}
    end
  else
    IO.puts("skipping HFBridge.ExplorerTest: :explorer is not available")
    @moduletag skip: ":explorer is not available"
  end

  # Explorer calls go through apply/3 so this file compiles without Explorer.
  defp df(fun, args), do: apply(Explorer.DataFrame, fun, args)
  defp to_list(series), do: apply(Explorer.Series, :to_list, [series])

  test "each batch loads as a data frame with the batch's rows", %{client: client, path: path} do
    frames =
      HFBridge.stream("parquet", client: client, data_files: path, batch_size: 40, as: :dataframe)
      |> Enum.to_list()

    assert Enum.map(frames, &df(:n_rows, [&1])) == [40, 40, 15]
    assert df(:names, [hd(frames)]) == ["id", "text"]
    ids = Enum.flat_map(frames, &to_list(df(:pull, [&1, "id"])))
    assert ids == Enum.to_list(0..94)
  end

  test "Batch.to_dataframe/2 agrees with the built-in decoder", %{client: client, path: path} do
    [batch | _] = HFBridge.stream("parquet", client: client, data_files: path) |> Enum.take(1)
    {:ok, frame} = HFBridge.Batch.to_dataframe(batch)

    assert to_list(df(:pull, [frame, "text"])) ==
             Enum.map(HFBridge.Batch.rows!(batch), & &1["text"])
  end
end
