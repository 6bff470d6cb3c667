defmodule HFBridge.ExportFixtures do
  @moduledoc false
  # Exports written by the real Python exporter (`python -m py_worker.export`,
  # i.e. `hf-bridge export`) for the Parquet and export tests.

  alias HFBridge.ServerCase

  @doc "A fresh temporary directory; the caller removes it (see `on_exit/1`)."
  def tmp_dir(tag) do
    dir =
      Path.join(
        System.tmp_dir!(),
        "hf_bridge_#{tag}_#{System.unique_integer([:positive])}_#{:os.getpid()}"
      )

    File.rm_rf!(dir)
    File.mkdir_p!(dir)
    dir
  end

  @doc """
  Writes `files` Parquet shards of `rows` rows each into `dir` with HF
  features (so exports carry them); `id` runs 0..n-1 in file order. The
  dataset is `HFBridge.ServerCase.rich_parquet!/3`'s. Returns the glob.
  """
  def write_dataset(dir, files, rows), do: ServerCase.rich_parquet!(dir, files, rows)

  @doc "Writes `files` shards of `rows` rows under `root/data` (see `write_dataset/3`); returns their glob."
  def make_dataset(root, files \\ 3, rows \\ 100),
    do: write_dataset(Path.join(root, "data"), files, rows)

  @doc "Runs `hf-bridge export parquet DEST --data-files GLOB ...` to completion; returns DEST."
  def python_export(data_glob, dest, root, args \\ [], extra_env \\ []) do
    argv =
      ["-m", "py_worker.export", "parquet", dest, "--data-files", data_glob] ++
        ["--data-root", root, "--export-root", root, "--quiet"] ++ args

    env = [
      {"HF_HUB_OFFLINE", "1"},
      {"HF_DATASETS_DISABLE_PROGRESS_BARS", "1"},
      {"PYTHONPATH", ServerCase.repo_root()}
      | extra_env
    ]

    {out, status} =
      System.cmd(ServerCase.python(), argv,
        env: env,
        stderr_to_stdout: true,
        cd: ServerCase.repo_root()
      )

    if status != 0,
      do: raise("hf-bridge export #{Enum.join(argv, " ")} exited with #{status}:\n#{out}")

    dest
  end

  @doc "Rows per file of a local export, counted by pyarrow from the Parquet footers."
  def parquet_rows(paths) do
    code =
      "import sys, pyarrow.parquet as pq; print(*[pq.ParquetFile(p).metadata.num_rows for p in sys.argv[1:]])"

    code
    |> ServerCase.run_python!(paths)
    |> String.split()
    |> Enum.map(&String.to_integer/1)
  end
end

defmodule HFBridge.MotoServer do
  @moduledoc false
  # moto's standalone S3 server (`python -m moto.server`) on a free loopback
  # port: a real S3-protocol peer for the S3 tests. Stopped with stop/1.

  def start! do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)

    python = System.find_executable(HFBridge.ServerCase.python()) || HFBridge.ServerCase.python()

    os_port =
      Port.open({:spawn_executable, python}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: ["-m", "moto.server", "-H", "127.0.0.1", "-p", Integer.to_string(port)]
      ])

    {:os_pid, os_pid} = Port.info(os_port, :os_pid)
    endpoint = "http://127.0.0.1:#{port}"
    server = %{endpoint: endpoint, port: port, os_pid: os_pid, os_port: os_port}
    wait_ready!(server, 100)
    server
  end

  def stop(%{os_pid: os_pid}) do
    pid = Integer.to_string(os_pid)
    System.cmd("kill", ["-TERM", pid], stderr_to_stdout: true)

    # Up to 5 s for a clean exit, then SIGKILL.
    Enum.find(1..50, fn _ ->
      Process.sleep(100)
      {_, status} = System.cmd("kill", ["-0", pid], stderr_to_stdout: true)
      status != 0
    end) || System.cmd("kill", ["-KILL", pid], stderr_to_stdout: true)

    :ok
  end

  @doc "AWS_* variables pointing `hf-bridge export` at this server."
  def env(%{endpoint: endpoint}) do
    [
      {"AWS_ENDPOINT_URL", endpoint},
      {"AWS_ACCESS_KEY_ID", "testing"},
      {"AWS_SECRET_ACCESS_KEY", "testing"},
      {"AWS_REGION", "us-east-1"},
      {"AWS_EC2_METADATA_DISABLED", "true"}
    ]
  end

  @doc "ExAws configuration overrides for this server."
  def ex_aws(%{port: port}) do
    [
      access_key_id: "testing",
      secret_access_key: "testing",
      region: "us-east-1",
      scheme: "http://",
      host: "127.0.0.1",
      port: port
    ]
  end

  @doc "Creates a bucket (moto accepts any signature while its IAM checks are off)."
  def create_bucket!(%{endpoint: endpoint}, bucket) do
    auth =
      {"authorization",
       "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"}

    {:ok, %{status_code: 200}} =
      HFBridge.ExAws.HttpClient.request(:put, "#{endpoint}/#{bucket}", "", [auth], [])

    :ok
  end

  defp wait_ready!(server, 0), do: raise("moto server on #{server.endpoint} did not start")

  defp wait_ready!(server, tries) do
    receive do
      {_, {:exit_status, status}} -> raise "moto server exited with #{status}"
    after
      0 -> :ok
    end

    case :httpc.request(:get, {~c"#{server.endpoint}/moto-api/", []}, [timeout: 1_000], []) do
      {:ok, {{_, 200, _}, _, _}} ->
        :ok

      _ ->
        Process.sleep(100)
        wait_ready!(server, tries - 1)
    end
  end
end
