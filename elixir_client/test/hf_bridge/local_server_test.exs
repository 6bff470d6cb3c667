defmodule HFBridge.LocalServerTest do
  use ExUnit.Case, async: true

  import HFBridge.ServerCase, only: [python: 0, simple_parquet!: 2]

  alias HFBridge.{Client, Error, LocalServer, Python}

  setup do
    dir = Path.join(System.tmp_dir!(), "hf_bridge_local_#{System.unique_integer([:positive])}")
    File.mkdir_p!(Path.join(dir, "data"))
    on_exit(fn -> File.rm_rf!(dir) end)
    state_dir = Path.join(dir, "state-#{System.unique_integer([:positive])}")

    server_opts = [
      python: python(),
      workers: 1,
      data_roots: [Path.join(dir, "data")],
      export_root: dir,
      state_dir: state_dir,
      env: [{"HF_HUB_OFFLINE", "1"}]
    ]

    %{dir: dir, state_dir: state_dir, server_opts: server_opts}
  end

  # Whether a Python server started with this (unique) state dir is running.
  defp server_running?(state_dir) do
    {out, _} = System.cmd("pgrep", ["-f", "--", "--state-dir #{state_dir}"])
    String.trim(out) != ""
  end

  defp os_alive?(os_pid),
    do:
      match?(
        {_, 0},
        System.cmd("kill", ["-0", Integer.to_string(os_pid)], stderr_to_stdout: true)
      )

  test "connect(local: true) starts a server that disconnect/1 stops", ctx do
    assert {:ok, client} = HFBridge.connect(local: true, local_server: ctx.server_opts)
    assert Client.local?(client)
    os_pid = LocalServer.os_pid(client.server)
    assert is_integer(os_pid) and os_alive?(os_pid)
    assert server_running?(ctx.state_dir)
    assert LocalServer.address(client.server) == client.address

    path = simple_parquet!(Path.join([ctx.dir, "data", "t.parquet"]), 20)

    assert {:ok, %HFBridge.Info{builder: "parquet"}} =
             HFBridge.info(client, "parquet", data_files: path)

    ref = Process.monitor(client.server)
    assert :ok = HFBridge.disconnect(client)
    assert_receive {:DOWN, ^ref, :process, _, _}
    refute os_alive?(os_pid)
    refute server_running?(ctx.state_dir)
  end

  test "the server stops when the process that connected exits", ctx do
    parent = self()

    spawn(fn ->
      {:ok, client} = HFBridge.connect(local: true, local_server: ctx.server_opts)
      send(parent, {:server, client.server, LocalServer.os_pid(client.server)})
    end)

    assert_receive {:server, server, os_pid}, 120_000
    ref = Process.monitor(server)
    assert_receive {:DOWN, ^ref, :process, ^server, _}, 30_000
    refute os_alive?(os_pid)
  end

  test "a stream without a client starts a local server and stops it when done", ctx do
    path = simple_parquet!(Path.join([ctx.dir, "data", "t.parquet"]), 50)

    rows =
      HFBridge.rows("parquet",
        local: true,
        local_server: ctx.server_opts,
        data_files: path,
        take: 3
      )
      |> Enum.to_list()

    assert rows == [
             %{"id" => 0, "text" => "row 0"},
             %{"id" => 1, "text" => "row 1"},
             %{"id" => 2, "text" => "row 2"}
           ]

    refute server_running?(ctx.state_dir)
  end

  test "a server killed with kill -9 starts again on its port; a stream reading it loses nothing",
       ctx do
    path = simple_parquet!(Path.join([ctx.dir, "data", "r.parquet"]), 3_000)
    {:ok, server, address} = LocalServer.start([log_level: false] ++ ctx.server_opts)
    on_exit(fn -> LocalServer.stop(server) end)
    {:ok, client} = Client.connect(address: address, local: false)
    first = LocalServer.os_pid(server)

    ids =
      HFBridge.stream("parquet",
        client: client,
        data_files: path,
        batch_size: 100,
        retry: [max_attempts: 60, base_delay: 50, max_delay: 1_000]
      )
      |> Stream.with_index()
      |> Stream.each(fn {_batch, i} ->
        if i == 5, do: System.cmd("kill", ["-9", Integer.to_string(first)])
      end)
      |> Enum.flat_map(fn {batch, _} -> Enum.map(HFBridge.Batch.rows!(batch), & &1["id"]) end)

    assert ids == Enum.to_list(0..2_999)
    assert LocalServer.address(server) == address
    assert is_integer(LocalServer.os_pid(server)) and LocalServer.os_pid(server) != first
    refute os_alive?(first)
    assert {:ok, %HFBridge.Info{}} = HFBridge.info(client, "parquet", data_files: path)
    Client.disconnect(client)
  end

  test "with restart: false a server that dies stays down", ctx do
    Process.flag(:trap_exit, true)
    opts = [log_level: false, restart: false] ++ ctx.server_opts
    {:ok, server, _address} = LocalServer.start(opts)
    ref = Process.monitor(server)
    System.cmd("kill", ["-9", Integer.to_string(LocalServer.os_pid(server))])
    assert_receive {:DOWN, ^ref, :process, ^server, {:shutdown, {:server_exited, _}}}, 30_000
  end

  test "a Python that does not exist is a clear error", ctx do
    opts = Keyword.put(ctx.server_opts, :python, "/nonexistent/bin/python")

    assert {:error, %Error{code: :python_not_found, message: message}} =
             HFBridge.connect(local: true, local_server: opts)

    assert message =~ "/nonexistent/bin/python"
    assert message =~ "make install" or message =~ "pip install"
  end

  test "a server that exits before it is ready is an error with its exit status", ctx do
    false_bin = System.find_executable("false")
    opts = Keyword.put(ctx.server_opts, :python, false_bin)
    assert {:error, %Error{code: :server_exited, message: message}} = LocalServer.start(opts)
    assert message =~ "status 1"
  end

  test "bad server options are errors naming the option", ctx do
    assert {:error, %Error{message: m}} =
             LocalServer.start(Keyword.put(ctx.server_opts, :workers, 0))

    assert m =~ "option :workers"

    assert {:error, %Error{message: m}} =
             LocalServer.start(Keyword.put(ctx.server_opts, :wrkers, 1))

    assert m =~ "unknown option :wrkers"
  end

  describe "HFBridge.Python.find/1" do
    test "with no Python anywhere, says how to install", %{dir: dir} do
      assert {:error, %Error{code: :python_not_found, message: m}} =
               Python.find(env: %{"PATH" => Path.join(dir, "empty")}, repo_root: nil)

      assert m =~ "pip install"
      assert m =~ "HF_BRIDGE_PYTHON"

      assert {:error, %Error{message: m}} = Python.find(env: %{"PATH" => ""}, repo_root: dir)
      assert m =~ "make install"
    end

    test "a python3 that cannot import py_worker is rejected with the reason", %{dir: dir} do
      bin = Path.join(dir, "bin")
      File.mkdir_p!(bin)
      File.ln_s!(System.find_executable("python3") || python(), Path.join(bin, "python3"))
      assert {:error, %Error{message: m}} = Python.find(env: %{"PATH" => bin}, repo_root: dir)
      assert m =~ "cannot import py_worker"
    end

    test "HF_BRIDGE_PYTHON wins and must be executable", %{dir: dir} do
      assert {:ok, %{executable: exe}} =
               Python.find(env: %{"HF_BRIDGE_PYTHON" => python(), "PATH" => ""})

      assert exe == Path.expand(python())

      assert {:error, %Error{message: m}} =
               Python.find(env: %{"HF_BRIDGE_PYTHON" => Path.join(dir, "nope")})

      assert m =~ "HF_BRIDGE_PYTHON names"
    end

    test "the repository's Python can run the server" do
      assert {:ok, %{executable: exe, cwd: cwd, env: env}} = Python.find(python: python())
      {_, 0} = System.cmd(exe, ["-c", "import py_worker"], cd: cwd || File.cwd!(), env: env)
    end
  end
end
