defmodule HFBridge.Broadway.ReaderTest do
  # The producer's session reader against the real Python server; needs no
  # Broadway, so it runs everywhere.
  use HFBridge.ServerCase, async: true

  alias HFBridge.{Batch, Client, Spec}
  alias HFBridge.Broadway.Reader
  alias HFBridge.Test.CuttingProxy, as: Proxy

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

  # A client connected to the case's server through a CuttingProxy; both stopped on exit.
  defp proxied_client!(ctx) do
    [_, upstream] = String.split(ctx.address, ":")
    {proxy, proxy_port} = Proxy.start(String.to_integer(upstream))
    {:ok, client} = Client.connect(address: "127.0.0.1:#{proxy_port}", local: false)

    on_exit(fn ->
      Client.disconnect(client)
      Process.exit(proxy, :kill)
    end)

    {client, proxy}
  end

  # Results of fetches, with the recovery notices that came before each.
  defp next_with_notices(reader, notices \\ []) do
    receive do
      {:hf_bridge_reader, ^reader, {:resent, _} = notice} ->
        next_with_notices(reader, [notice | notices])

      {:hf_bridge_reader, ^reader, {:resumed, _} = notice} ->
        next_with_notices(reader, [notice | notices])

      {:hf_bridge_reader, ^reader, result} ->
        {result, Enum.reverse(notices)}
    after
      60_000 -> flunk("no answer from the reader")
    end
  end

  test "cut connections: the reader resumes, drops what it delivered and loses nothing", ctx do
    path = simple_parquet!(Path.join(ctx.data_dir, "reader_cut.parquet"), 300)
    {client, proxy} = proxied_client!(ctx)

    {:ok, reader, info} =
      Reader.start(client, {:open, request(path)},
        read_ahead: 4,
        retry: [base_delay: 10, max_delay: 100]
      )

    {results, notices} =
      Enum.reduce_while(Stream.iterate(0, &(&1 + 1)), {[], []}, fn i, {results, notices} ->
        :ok = Reader.fetch(reader)

        case next_with_notices(reader) do
          {{:ok, batch}, new} ->
            if batch.seq == 3,
              do: {:ok, _} = Client.call(client, :Ack, %{session_id: info.session_id, seq: 3})

            # Cut while a ReadBatches call has batches on their way.
            if i in [5, 12], do: assert(Proxy.cut(proxy) >= 1)
            {:cont, {[batch | results], notices ++ new}}

          {:done, new} ->
            {:halt, {Enum.reverse(results), notices ++ new}}

          {{:error, error}, _} ->
            flunk("the reader failed: #{Exception.message(error)}")
        end
      end)

    # Every batch once, in order: nothing lost, nothing repeated.
    assert Enum.map(results, & &1.seq) == Enum.to_list(0..29)
    assert Enum.flat_map(results, &ids/1) == Enum.to_list(0..299)

    resumes = for {:resumed, resumed} <- notices, do: resumed
    assert length(resumes) in 1..2, "notices: #{inspect(notices)}"
    # The first resume restarts after the last acknowledged batch (3), so the
    # batches delivered since were sent again and dropped.
    assert hd(resumes).session_id == info.session_id and hd(resumes).next_seq == 4
    resent = for {:resent, seq} <- notices, do: seq
    assert resent != [] and Enum.all?(resent, &(&1 >= 4 and &1 < 29))

    # Sent again, the last batches can be acknowledged on the resumed session.
    assert {:ok, _} = Client.call(client, :Ack, %{session_id: info.session_id, seq: 29})
    :ok = Reader.stop(reader, :close)
  end

  test "with recovery off, a cut is an error for the owner", ctx do
    path = simple_parquet!(Path.join(ctx.data_dir, "reader_nocut.parquet"), 300)
    {client, proxy} = proxied_client!(ctx)

    {:ok, reader, _info} =
      Reader.start(client, {:open, request(path)}, read_ahead: 8, retry: [max_attempts: 0])

    assert {:ok, %Batch{seq: 0}} = next(reader)
    assert Proxy.cut(proxy) >= 1

    assert {:error, %HFBridge.Error{retryable: false} = error} =
             Stream.repeatedly(fn -> next(reader) end) |> Enum.find(&match?({:error, _}, &1))

    assert error.message =~ "gave up after 0 recovery attempts"
    :ok = Reader.stop(reader, :close)
  end

  test "an unknown resume token is an error value, not a crash", %{client: client} do
    Process.flag(:trap_exit, true)

    assert {:error, %HFBridge.Error{code: :not_found}} =
             Reader.start(client, {:resume, "bm90LWEtdG9rZW4tYXQtYWxsLXJlYWxseQ"})

    refute_received {:EXIT, _, _}
  end
end
