defmodule HFBridge.Test.InteropServer do
  @moduledoc false
  # Starts and stops the interop test servers of tests/interop (Python
  # grpcio, Node @grpc/grpc-js). Each prints "READY <port>" once listening
  # on 127.0.0.1 and exits when its stdin closes.

  @repo_root Path.expand("../../..", __DIR__)

  def interop_dir, do: Path.join(@repo_root, "tests/interop")

  @doc "Starts a server; returns {:ok, %{port: port, os_pid: pid, handle: port_ref}} or {:skip, reason}."
  def start(kind, env \\ [])

  def start(:python, env) do
    python = System.get_env("HF_BRIDGE_PYTHON", "python3")
    exe = System.find_executable(python) || python
    spawn_server(exe, [Path.join(interop_dir(), "python/interop_server.py")], env)
  end

  def start(:node, env) do
    node_dir = Path.join(interop_dir(), "node")

    cond do
      System.find_executable("node") == nil ->
        {:skip, "node is not installed"}

      not File.dir?(Path.join(node_dir, "node_modules/@grpc/grpc-js")) ->
        {:skip, "run `npm install` in #{node_dir}"}

      true ->
        spawn_server(
          System.find_executable("node"),
          [Path.join(node_dir, "interop_server.js")],
          env
        )
    end
  end

  defp spawn_server(exe, args, env) do
    port =
      Port.open({:spawn_executable, exe}, [
        :binary,
        :exit_status,
        :use_stdio,
        :stderr_to_stdout,
        {:line, 4096},
        args: args,
        env: [
          {~c"HF_HUB_OFFLINE", ~c"1"}
          | Enum.map(env, fn {k, v} -> {to_charlist(k), to_charlist(v)} end)
        ]
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    await_ready(port, os_pid, [])
  end

  defp await_ready(port, os_pid, lines) do
    receive do
      {^port, {:data, {:eol, "READY " <> num}}} ->
        {:ok, %{port: String.to_integer(String.trim(num)), os_pid: os_pid, handle: port}}

      {^port, {:data, {_, line}}} ->
        await_ready(port, os_pid, [line | lines])

      {^port, {:exit_status, status}} ->
        raise "interop server exited with #{status}: #{lines |> Enum.reverse() |> Enum.join("\n")}"
    after
      60_000 ->
        stop(%{os_pid: os_pid, handle: port})
        raise "interop server did not get ready: #{lines |> Enum.reverse() |> Enum.join("\n")}"
    end
  end

  @doc "Stops a server: closes its stdin and kills it."
  def stop(%{os_pid: os_pid, handle: port}) do
    try do
      Port.close(port)
    rescue
      _ -> :ok
    end

    System.cmd("kill", ["-9", Integer.to_string(os_pid)], stderr_to_stdout: true)
    :ok
  end

  @doc "Kills the server abruptly (for fault tests)."
  def kill(%{os_pid: os_pid}) do
    System.cmd("kill", ["-9", Integer.to_string(os_pid)], stderr_to_stdout: true)
    :ok
  end
end
