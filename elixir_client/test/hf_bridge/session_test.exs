defmodule HFBridge.SessionTest do
  use HFBridge.ServerCase, async: true

  import HFBridge.TestHelpers
  alias HFBridge.{Batch, Client, Session}

  setup_all %{data_dir: data_dir} do
    %{
      small: simple_parquet!(Path.join(data_dir, "small.parquet"), 100),
      large: simple_parquet!(Path.join(data_dir, "large.parquet"), 200_000)
    }
  end

  # A session id the server no longer knows: reading it fails with NOT_FOUND.
  defp assert_closed_on_server(client, session_id) do
    {:ok, stream} =
      Client.server_stream(client, :ReadBatches, %{session_id: session_id, max_batches: 1})

    assert {:error, %HFBridge.Error{code: :not_found}} = Client.recv(stream, 30_000)
  end

  defp ids(batch), do: Enum.map(Batch.rows!(batch), & &1["id"])

  # A process opens a session, reads batches 0 and 1, acknowledges 0 and exits
  # with `reason`; returns the resume token once the session process is gone.
  defp owner_acks_batch_0_then_exits(client, data_files, reason) do
    parent = self()

    {pid, mon} =
      spawn_monitor(fn ->
        {:ok, session} = HFBridge.open(client, "parquet", data_files: data_files, batch_size: 10)
        {:ok, %Batch{seq: 0}} = Session.next_batch(session)
        {:ok, %Batch{seq: 1}} = Session.next_batch(session)
        :ok = Session.ack(session, 0)
        :ok = Session.flush_acks(session)
        send(parent, {:token, Session.resume_token(session), session})
        exit(reason)
      end)

    assert_receive {:token, token, session}, 60_000
    assert_receive {:DOWN, ^mon, :process, ^pid, ^reason}, 30_000
    ref = Process.monitor(session)
    assert_receive {:DOWN, ^ref, :process, ^session, _}, 30_000
    token
  end

  describe "lazy streams" do
    test "Enum.take/2 reads the first batch and closes its session", %{
      client: client,
      large: large
    } do
      parent = self()

      rows =
        HFBridge.rows("parquet",
          client: client,
          data_files: large,
          batch_size: 100,
          on_open: &send(parent, {:opened, &1})
        )
        |> Enum.take(5)

      assert Enum.map(rows, & &1["id"]) == [0, 1, 2, 3, 4]
      assert_received {:opened, %{session_id: id, session: session}}
      refute Process.alive?(session)
      assert_closed_on_server(client, id)
    end

    test "nothing is opened until the stream is enumerated", %{client: client, large: large} do
      parent = self()

      stream =
        HFBridge.stream("parquet",
          client: client,
          data_files: large,
          on_open: &send(parent, {:opened, &1})
        )

      refute_received {:opened, _}
      assert [%Batch{seq: 0}] = Enum.take(stream, 1)
      assert_received {:opened, _}
    end

    test "a stream acks each batch once the consumer asks past it", %{
      client: client,
      small: small
    } do
      parent = self()

      stream =
        HFBridge.stream("parquet",
          client: client,
          data_files: small,
          batch_size: 10,
          on_open: &send(parent, {:opened, &1})
        )

      # While the consumer holds batch 3 (asking for it acknowledged batch 2,
      # asynchronously: flush_acks/1 waits for that), a resume by token
      # continues at batch 3.
      seqs =
        Enum.reduce_while(stream, [], fn batch, acc ->
          if batch.seq == 3 do
            assert_received {:opened, %{resume_token: token, session: session}}
            assert :ok = Session.flush_acks(session)
            {:ok, resumed} = Session.resume(client, token)
            assert {:ok, %Batch{seq: 3} = again} = Session.next_batch(resumed)
            assert ids(again) == ids(batch)
            Session.close(resumed)
            {:halt, acc ++ [batch.seq]}
          else
            {:cont, acc ++ [batch.seq]}
          end
        end)

      assert seqs == [0, 1, 2, 3]
    end

    test "a halted stream releases its checkpoint", %{client: client, small: small} do
      parent = self()

      assert [_, _] =
               HFBridge.stream("parquet",
                 client: client,
                 data_files: small,
                 batch_size: 10,
                 on_open: &send(parent, {:opened, &1})
               )
               |> Enum.take(2)

      assert_received {:opened, %{resume_token: token}}
      assert {:error, %HFBridge.Error{code: :not_found}} = Session.resume(client, token)
    end

    test "a killed consumer's session closes on the server and stays resumable", %{
      client: client,
      large: large
    } do
      parent = self()

      consumer =
        spawn(fn ->
          HFBridge.rows("parquet",
            client: client,
            data_files: large,
            batch_size: 100,
            on_open: &send(parent, {:opened, &1})
          )
          |> Enum.each(fn _row ->
            send(parent, :reading)
            Process.sleep(:infinity)
          end)
        end)

      assert_receive {:opened, %{session_id: id, session: session, resume_token: token}}, 60_000
      assert_receive :reading, 60_000
      ref = Process.monitor(session)
      Process.exit(consumer, :kill)
      assert_receive {:DOWN, ^ref, :process, ^session, _}, 30_000
      assert_closed_on_server(client, id)

      # A consumer that died keeps its place: batch 0 was delivered, never acknowledged.
      {:ok, resumed} = Session.resume(client, token)
      assert {:ok, %Batch{seq: 0} = again} = Session.next_batch(resumed)
      assert hd(ids(again)) == 0
      assert :ok = Session.close(resumed)
      assert {:error, %HFBridge.Error{code: :not_found}} = Session.resume(client, token)
    end

    test "an owner that exits normally ends its session for good", %{
      client: client,
      small: small
    } do
      token = owner_acks_batch_0_then_exits(client, small, :normal)
      assert {:error, %HFBridge.Error{code: :not_found}} = Session.resume(client, token)
    end

    test "an owner that crashes leaves the session resumable after its last ack", %{
      client: client,
      small: small
    } do
      token = owner_acks_batch_0_then_exits(client, small, :boom)
      {:ok, resumed} = Session.resume(client, token)
      assert {:ok, %Batch{seq: 1} = b1} = Session.next_batch(resumed)
      assert hd(ids(b1)) == 10
      assert :ok = Session.close(resumed)
    end
  end

  describe "sessions" do
    test "read, ack, resume: continues exactly after the acked batch", %{
      client: client,
      small: small
    } do
      {:ok, session} = HFBridge.open(client, "parquet", data_files: small, batch_size: 10)
      assert {:ok, %Batch{seq: 0} = b0} = Session.next_batch(session)
      assert {:ok, %Batch{seq: 1}} = Session.next_batch(session)
      assert {:ok, %Batch{seq: 2} = b2} = Session.next_batch(session)
      assert ids(b0) == Enum.to_list(0..9)
      assert :ok = Session.ack(session, 1)

      {:ok, resumed} = Session.resume(client, Session.resume_token(session))
      assert {:ok, %Batch{seq: 2} = again} = Session.next_batch(resumed)
      assert ids(again) == ids(b2)

      rest =
        Stream.repeatedly(fn -> Session.next_batch(resumed) end)
        |> Enum.take_while(&match?({:ok, _}, &1))

      assert Enum.flat_map(rest, fn {:ok, b} -> ids(b) end) == Enum.to_list(30..99)
      assert :done = Session.next_batch(resumed)
      assert :ok = Session.close(resumed)
      assert :ok = Session.close(session)
      assert :ok = Session.close(session)
    end

    test "a resumed stream continues after the acked batch", %{client: client, small: small} do
      {:ok, session} = HFBridge.open(client, "parquet", data_files: small, batch_size: 25)
      {:ok, %Batch{seq: 0}} = Session.next_batch(session)
      :ok = Session.ack(session, 0)
      token = Session.resume_token(session)

      ids = HFBridge.rows("parquet", client: client, resume_token: token) |> Enum.map(& &1["id"])
      assert ids == Enum.to_list(25..99)
      Session.close(session)
    end

    test "session info has the id, token, schema and features", %{client: client, small: small} do
      {:ok, session} = HFBridge.open(client, "parquet", data_files: small, batch_size: 7)
      info = Session.info(session)
      assert is_binary(info.session_id) and info.session_id != ""
      assert is_binary(info.resume_token) and info.resume_token != ""
      assert info.next_seq == 0
      assert info.batch_size == 7
      assert {:ok, schema} = HFBridge.Arrow.read_schema(info.arrow_schema)
      assert Enum.map(schema.fields, & &1.name) == ["id", "text"]
      assert Session.id(session) == info.session_id
      Session.close(session)
      assert {:error, %HFBridge.Error{code: :closed}} = Session.next_batch(session)
    end

    test "the session closes when the process that opened it exits", %{
      client: client,
      small: small
    } do
      parent = self()

      {pid, ref} =
        spawn_monitor(fn ->
          {:ok, session} = HFBridge.open(client, "parquet", data_files: small)
          send(parent, {:session, session, Session.id(session)})
        end)

      assert_receive {:session, session, id}, 60_000
      assert_receive {:DOWN, ^ref, :process, ^pid, :normal}
      session_ref = Process.monitor(session)
      assert_receive {:DOWN, ^session_ref, :process, ^session, _}, 30_000
      assert_closed_on_server(client, id)
    end

    test "an explicit owner keeps the session alive past its opener", %{
      client: client,
      small: small
    } do
      parent = self()

      task =
        Task.async(fn ->
          {:ok, session} = HFBridge.open(client, "parquet", data_files: small, owner: parent)
          session
        end)

      session = Task.await(task, 60_000)
      assert {:ok, %Batch{seq: 0}} = Session.next_batch(session)
      Session.close(session)
    end

    test "asynchronous acks coalesce and are flushed in order", %{client: client, small: small} do
      {:ok, session} = HFBridge.open(client, "parquet", data_files: small, batch_size: 10)
      for _ <- 0..5, do: {:ok, _} = Session.next_batch(session)
      for seq <- 0..4, do: :ok = Session.ack_async(session, seq)
      assert :ok = Session.flush_acks(session)
      {:ok, resumed} = Session.resume(client, session)
      assert {:ok, %Batch{seq: 5} = batch} = Session.next_batch(resumed)
      assert ids(batch) == Enum.to_list(50..59)
      Session.close(resumed)
    end

    test "asynchronous acks are rate-limited by :ack_interval", %{client: client, small: small} do
      {:ok, session} =
        HFBridge.open(client, "parquet", data_files: small, batch_size: 10, ack_interval: 60_000)

      for _ <- 0..3, do: {:ok, _} = Session.next_batch(session)
      assert Session.acked(session) == nil
      assert :ok = Session.ack(session, 0)
      assert Session.acked(session) == 0
      # Within the interval after the last Ack call: held and coalesced.
      :ok = Session.ack_async(session, 1)
      :ok = Session.ack_async(session, 2)
      assert Session.acked(session) == 0

      {:ok, resumed} = Session.resume(client, Session.resume_token(session))
      assert {:ok, %Batch{seq: 1}} = Session.next_batch(resumed)
      Session.close(resumed)
      Session.close(session)
    end

    test "pending acks are sent at once at the end of the data", %{client: client, small: small} do
      {:ok, session} =
        HFBridge.open(client, "parquet", data_files: small, batch_size: 10, ack_interval: 60_000)

      {:ok, %Batch{seq: 0}} = Session.next_batch(session)
      assert :ok = Session.ack(session, 0)

      last =
        Enum.reduce_while(Stream.repeatedly(fn -> Session.next_batch(session) end), 0, fn
          {:ok, batch}, _ ->
            :ok = Session.ack_async(session, batch.seq)
            {:cont, batch.seq}

          :done, last ->
            {:halt, last}
        end)

      assert last == 9
      wait_until(fn -> Session.acked(session) == last end, 500)
      Session.close(session)
    end

    test "ack_interval must be a non-negative integer", %{client: client, small: small} do
      assert {:error, %HFBridge.Error{message: message}} =
               HFBridge.open(client, "parquet", data_files: small, ack_interval: -1)

      assert message =~ "ack_interval"

      # 0: every request is sent as soon as the previous Ack call returned
      {:ok, session} =
        HFBridge.open(client, "parquet", data_files: small, batch_size: 10, ack_interval: 0)

      for _ <- 0..2, do: {:ok, _} = Session.next_batch(session)
      :ok = Session.ack_async(session, 0)
      :ok = Session.ack_async(session, 2)
      wait_until(fn -> Session.acked(session) == 2 end, 500)
      Session.close(session)
    end

    test "a failed asynchronous ack is returned by the next call", %{client: client, small: small} do
      {:ok, session} = HFBridge.open(client, "parquet", data_files: small, batch_size: 10)
      {:ok, _} = Session.next_batch(session)
      # Batch 7 was never delivered: the server refuses to acknowledge it.
      :ok = Session.ack_async(session, 7)
      assert {:error, %HFBridge.Error{}} = Session.flush_acks(session)
      assert {:ok, %Batch{seq: 1}} = Session.next_batch(session)
      Session.close(session)
    end

    test "a batch that times out is not lost: the next call delivers it", %{
      client: client,
      large: large
    } do
      {:ok, session} = HFBridge.open(client, "parquet", data_files: large, batch_size: 100)

      first =
        case Session.next_batch(session, 0) do
          {:error, %HFBridge.Error{code: :timeout}} -> Session.next_batch(session)
          other -> other
        end

      assert {:ok, %Batch{seq: 0} = batch} = first
      assert ids(batch) == Enum.to_list(0..99)
      assert {:ok, %Batch{seq: 1}} = Session.next_batch(session)
      Session.close(session)
    end

    test "resuming an unknown token is NOT_FOUND", %{client: client} do
      assert {:error, %HFBridge.Error{code: code}} = Session.resume(client, "no-such-token")
      assert code in [:not_found, :invalid_argument]
    end
  end

  describe "clients" do
    test "a client's connection closes when its owner exits", %{address: address} do
      parent = self()

      {pid, ref} =
        spawn_monitor(fn ->
          {:ok, client} = HFBridge.connect(address: address)
          send(parent, {:conn, client.conn})
        end)

      assert_receive {:conn, conn}
      assert_receive {:DOWN, ^ref, :process, ^pid, :normal}
      conn_ref = Process.monitor(conn)
      assert_receive {:DOWN, ^conn_ref, :process, ^conn, _}, 10_000
    end

    test "call/4 and server_stream/4 speak the proto messages", %{client: client, small: small} do
      {:ok, spec} = HFBridge.Spec.build("parquet", data_files: small)

      assert {:ok, %{builder: "parquet", splits: [%{name: "train"}]}} =
               Client.call(client, :GetInfo, spec)

      assert {:ok, %{session_id: id}} =
               Client.call(client, :OpenSession, %{spec: spec, batch_size: 60})

      {:ok, stream} =
        Client.server_stream(client, :ReadBatches, %{session_id: id, max_batches: 1})

      assert {:ok, %{seq: 0, num_rows: 60, end_of_data: false}} = Client.recv(stream)
      assert :done = Client.recv(stream)
      assert {:ok, %{}} = Client.call(client, :CloseSession, %{session_id: id})
      assert {:error, %HFBridge.Error{code: :unimplemented}} = Client.call(client, :Nope, %{})
    end
  end
end
