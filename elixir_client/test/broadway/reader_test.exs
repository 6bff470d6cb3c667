defmodule HFBridge.Broadway.ReaderTest do
  # The producer's session reader against the real Python server; needs no
  # Broadway, so it runs everywhere.
  use HFBridge.ServerCase, async: true

  alias HFBridge.{Batch, Client, Spec}
  alias HFBridge.Broadway.Reader

  setup_all %{data_dir: data_dir} do
    %{path: simple_parquet!(Path.join(data_dir, "reader.parquet"), 50)}
  end

  defp request(path) do
    {:ok, request} = Spec.open_request("parquet", data_files: path, batch_size: 10)
    request
  end

  defp next(reader) do
    :ok = Reader.fetch(reader)

    receive do
      {:hf_bridge_reader, ^reader, result} -> result
    after
      30_000 -> flunk("no answer from the reader")
    end
  end

  defp ids(%Batch{} = batch), do: Enum.map(Batch.rows!(batch), & &1["id"])

  test "reads every batch in order, then :done; closing forgets the session", %{
    client: client,
    path: path
  } do
    assert {:ok, reader, info} = Reader.start(client, {:open, request(path)}, dataset: "parquet")
    assert info.next_seq == 0

    batches = Stream.repeatedly(fn -> next(reader) end) |> Enum.take_while(&match?({:ok, _}, &1))
    assert Enum.map(batches, fn {:ok, b} -> b.seq end) == [0, 1, 2, 3, 4]
    assert Enum.flat_map(batches, fn {:ok, b} -> ids(b) end) == Enum.to_list(0..49)
    assert next(reader) == :done

    :ok = Reader.stop(reader, :close)
    refute Process.alive?(reader)

    assert {:error, %HFBridge.Error{code: :not_found}} =
             Client.call(client, :ResumeSession, %{resume_token: info.resume_token})
  end

  test "a killed owner leaves a kept session resumable after the last ack", %{
    client: client,
    path: path
  } do
    parent = self()

    owner =
      spawn(fn ->
        {:ok, reader, info} =
          Reader.start(client, {:open, request(path)}, keep: true, read_ahead: 1)

        {:ok, b0} = next(reader)
        {:ok, b1} = next(reader)
        {:ok, _} = Client.call(client, :Ack, %{session_id: info.session_id, seq: b1.seq})
        send(parent, {:read, reader, info, [b0.seq, b1.seq]})
        Process.sleep(:infinity)
      end)

    assert_receive {:read, reader, info, [0, 1]}, 60_000
    ref = Process.monitor(reader)
    Process.exit(owner, :kill)
    assert_receive {:DOWN, ^ref, :process, _, _}, 10_000

    assert {:ok, reader2, info2} = Reader.start(client, {:resume, info.resume_token})
    assert info2.next_seq == 2
    assert {:ok, %Batch{seq: 2} = batch} = next(reader2)
    assert ids(batch) == Enum.to_list(20..29)
    :ok = Reader.stop(reader2, :close)
  end

  test "stop(:keep) releases the server session and keeps its checkpoint for the token", %{
    client: client,
    path: path
  } do
    {:ok, reader, info} = Reader.start(client, {:open, request(path)}, keep: true, read_ahead: 1)
    {:ok, _} = next(reader)
    {:ok, b1} = next(reader)
    {:ok, _} = Client.call(client, :Ack, %{session_id: info.session_id, seq: b1.seq})

    :ok = Reader.stop(reader, :keep)
    refute Process.alive?(reader)

    # The session is gone from the server ...
    assert {:error, %HFBridge.Error{code: :not_found}} =
             Client.call(client, :Ack, %{session_id: info.session_id, seq: b1.seq})

    # ... and its token resumes after the last ack.
    assert {:ok, reader2, info2} = Reader.start(client, {:resume, info.resume_token})
    assert info2.next_seq == 2
    assert {:ok, %Batch{seq: 2}} = next(reader2)
    :ok = Reader.stop(reader2, :close)
  end

  test "an unknown resume token is an error value, not a crash", %{client: client} do
    Process.flag(:trap_exit, true)

    assert {:error, %HFBridge.Error{code: :not_found}} =
             Reader.start(client, {:resume, "bm90LWEtdG9rZW4tYXQtYWxsLXJlYWxseQ"})

    refute_received {:EXIT, _, _}
  end
end
