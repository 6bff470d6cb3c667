defmodule HFBridge.LocalServer do
  # Restarts allowed within @restart_window ms before the server is left stopped.
  @max_restarts 5
  @restart_window 60_000

  @schema [
    python: [
      type: {:or, [:string, nil]},
      default: nil,
      type_doc: "`String.t() | nil`",
      doc: "Python executable; `nil` locates one (see `HFBridge.Python`)."
    ],
    host: [type: :string, default: "127.0.0.1", doc: "Interface to bind."],
    port: [type: :non_neg_integer, default: 0, doc: "Port to bind; 0 picks a free one."],
    workers: [type: :pos_integer, default: 2, doc: "Worker processes of the server."],
    data_roots: [
      type: {:list, :string},
      type_doc: "`[String.t()]`",
      doc: "Directories local data files may be read from. Defaults to the current directory."
    ],
    export_root: [
      type: :string,
      doc: "Directory local exports may be written under. Defaults to the current directory."
    ],
    state_dir: [
      type: :string,
      doc:
        "Where the server keeps session checkpoints. Defaults to the server's own default (`~/.cache/hf_bridge`)."
    ],
    extra_args: [
      type: {:list, :string},
      default: [],
      type_doc: "`[String.t()]`",
      doc: "More arguments for `serve`."
    ],
    env: [
      type: {:list, {:tuple, [:string, :string]}},
      default: [],
      type_doc: "`[{String.t(), String.t()}]`",
      doc: "Extra environment variables for the server."
    ],
    ready_timeout: [
      type: :timeout,
      default: 120_000,
      doc: "How long to wait for the server to be ready."
    ],
    owner: [
      type: {:or, [:any]},
      type_doc: "`pid()`",
      doc: "Stop the server when this process exits. Defaults to the caller of `start/1`."
    ],
    log_level: [
      type: {:in, [:debug, :info, :warning, :error, false]},
      default: :debug,
      doc: "Logger level of the server's log lines; `false` drops them."
    ],
    restart: [
      type: :boolean,
      default: true,
      doc:
        "Start the server again, on the same port and state directory, when it exits " <>
          "unexpectedly after it was ready (at most #{@max_restarts} times a minute)."
    ]
  ]

  @moduledoc """
  Runs the Python hf_bridge server (`python -m py_worker serve`) as an Erlang
  port under `HFBridge.ServerSupervisor`, on a free loopback port.

  The server is started through a small `/bin/sh` wrapper that stops it with
  SIGTERM when the port closes, so the Python process never outlives the
  BEAM, even when the BEAM is killed. `stop/1`, the exit of the owning
  process, and supervisor shutdown all stop it with SIGTERM, falling back to
  SIGKILL after 10 seconds. The server's log lines (stderr) go to `Logger`;
  the last lines are kept for error messages.

  A server that exits unexpectedly once it was ready (killed, crashed) is
  started again on the port it had and with the same state directory, so
  its address stays valid: clients connect again on their next call (see
  `HFBridge.Client`) and sessions resume from their last acknowledged
  checkpoint. After #{@max_restarts} such restarts within a minute it is
  left stopped.

  ## Options

  #{HFBridge.Options.docs(@schema)}

  Application environment `config :hf_bridge, :local_server, [...]` supplies
  defaults for these options.
  """

  use GenServer, restart: :temporary, shutdown: 15_000

  require Logger
  alias HFBridge.{Error, Options, Python}

  @ready_prefix "HF_BRIDGE_READY "
  @pid_prefix "HF_BRIDGE_CHILD_PID "
  @kept_log_lines 40
  @term_grace 10_000

  # Runs "$@" in the background, reports its pid, and sends it SIGTERM when
  # our stdin (the port) reaches end-of-file; exits with the child's status.
  @wrapper """
  exec 3<&0
  "$@" </dev/null &
  child=$!
  echo "#{@pid_prefix}$child"
  ( read _line <&3; kill -TERM "$child" 2>/dev/null ) &
  watcher=$!
  exec 3<&-
  wait "$child"
  status=$?
  kill "$watcher" 2>/dev/null
  exit $status
  """

  @doc "The options schema (see `HFBridge.Options`)."
  @spec schema() :: Options.schema()
  def schema, do: @schema

  @doc """
  Starts a server under `HFBridge.ServerSupervisor` and waits until it is
  ready. Returns its pid and `"host:port"` address.
  """
  @spec start(keyword()) :: {:ok, pid(), String.t()} | {:error, Error.t()}
  def start(opts \\ []) do
    opts = Keyword.merge(Application.get_env(:hf_bridge, :local_server, []), opts)

    with {:ok, opts} <- Options.validate(opts, @schema),
         {:ok, python} <- Python.find(python: opts[:python]),
         :ok <- ensure_supervisor(),
         opts = Keyword.put_new(opts, :owner, self()),
         {:ok, pid} <- start_child(python, opts) do
      case await_ready(pid, opts[:ready_timeout]) do
        {:ok, address} ->
          {:ok, pid, address}

        {:error, error} ->
          stop(pid)
          {:error, error}
      end
    end
  end

  @doc "Starts the server process linked to the caller (for supervision trees); does not wait for readiness."
  @spec start_link({Python.t(), keyword()}) :: GenServer.on_start()
  def start_link({python, opts}), do: GenServer.start_link(__MODULE__, {python, opts})

  @doc "Waits until the server printed its ready line; returns its address."
  @spec await_ready(pid(), timeout()) :: {:ok, String.t()} | {:error, Error.t()}
  def await_ready(pid, timeout \\ 120_000) do
    GenServer.call(pid, :await_ready, timeout)
  catch
    :exit, {:timeout, _} ->
      {:error,
       Error.new(
         :server,
         :timeout,
         "the local hf_bridge server was not ready within #{timeout} ms",
         retryable: true
       )}

    :exit, _ ->
      {:error,
       Error.new(
         :server,
         :server_exited,
         "the local hf_bridge server stopped before it was ready"
       )}
  end

  @doc "The address (`\"host:port\"`) of a ready server, or `nil`."
  @spec address(pid()) :: String.t() | nil
  def address(pid), do: GenServer.call(pid, :address)

  @doc "The OS pid of the Python server process, or `nil` before it is known."
  @spec os_pid(pid()) :: non_neg_integer() | nil
  def os_pid(pid), do: GenServer.call(pid, :os_pid)

  @doc "The last log lines the server printed (oldest first)."
  @spec log_lines(pid()) :: [String.t()]
  def log_lines(pid), do: GenServer.call(pid, :log_lines)

  @doc "Stops the server (SIGTERM, then SIGKILL) and waits for it to exit. Idempotent."
  @spec stop(pid()) :: :ok
  def stop(pid) do
    GenServer.stop(pid, :normal, @term_grace + 5_000)
  catch
    :exit, _ -> :ok
  end

  defp ensure_supervisor do
    if Process.whereis(HFBridge.ServerSupervisor) do
      :ok
    else
      case Application.ensure_all_started(:hf_bridge) do
        {:ok, _} ->
          :ok

        {:error, reason} ->
          {:error,
           Error.new(
             :server,
             :not_started,
             "cannot start the :hf_bridge application: #{inspect(reason)}"
           )}
      end
    end
  end

  defp start_child(python, opts) do
    case DynamicSupervisor.start_child(HFBridge.ServerSupervisor, {__MODULE__, {python, opts}}) do
      {:ok, pid} ->
        {:ok, pid}

      {:error, %Error{} = error} ->
        {:error, error}

      {:error, reason} ->
        {:error,
         Error.new(
           :server,
           :start_failed,
           "cannot start the local hf_bridge server: #{inspect(reason)}"
         )}
    end
  end

  # -- GenServer ---------------------------------------------------------------

  @impl true
  def init({python, opts}) do
    Process.flag(:trap_exit, true)
    cwd = File.cwd!()
    data_roots = Enum.map(opts[:data_roots] || [cwd], &Path.expand/1)
    export_root = Path.expand(opts[:export_root] || cwd)
    state_dir = opts[:state_dir] && Path.expand(opts[:state_dir])

    launch = fn port_number ->
      open_port(python, opts, port_number, data_roots, export_root, state_dir)
    end

    with :ok <- if(state_dir, do: mkdir(state_dir), else: :ok),
         {:ok, port} <- launch.(opts[:port]) do
      ref = if is_pid(opts[:owner]), do: Process.monitor(opts[:owner])

      {:ok,
       %{
         launch: launch,
         restart?: opts[:restart],
         restarts: [],
         port: port,
         os_pid: nil,
         address: nil,
         waiters: [],
         log: :queue.new(),
         log_count: 0,
         partial: "",
         owner_ref: ref,
         log_level: opts[:log_level],
         exit_status: nil
       }}
    else
      {:error, %Error{} = error} -> {:stop, error}
    end
  end

  defp mkdir(dir) do
    case File.mkdir_p(dir) do
      :ok ->
        :ok

      {:error, reason} ->
        {:error,
         Error.new(:server, :start_failed, "cannot create #{dir}: #{:file.format_error(reason)}")}
    end
  end

  defp open_port(python, opts, port_number, data_roots, export_root, state_dir) do
    sh = System.find_executable("sh") || "/bin/sh"

    args =
      [
        "-m",
        "py_worker",
        "serve",
        "--host",
        opts[:host],
        "--port",
        Integer.to_string(port_number)
      ] ++
        ["--workers", Integer.to_string(opts[:workers])] ++
        Enum.flat_map(data_roots, &["--data-root", &1]) ++
        ["--export-root", export_root] ++
        if(state_dir, do: ["--state-dir", state_dir], else: []) ++ opts[:extra_args]

    env =
      Enum.map(python.env ++ [{"PYTHONUNBUFFERED", "1"} | opts[:env]], fn {k, v} ->
        {String.to_charlist(k), String.to_charlist(v)}
      end)

    port_opts =
      [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 8192},
        {:args, ["-c", @wrapper, "hf_bridge_server", python.executable | args]},
        {:env, env}
      ] ++ if(python.cwd, do: [{:cd, python.cwd}], else: [])

    {:ok, Port.open({:spawn_executable, sh}, port_opts)}
  rescue
    e in ErlangError ->
      {:error,
       Error.new(
         :server,
         :start_failed,
         "cannot start #{python.executable}: #{Exception.message(e)}"
       )}
  end

  @impl true
  def handle_call(:await_ready, _from, %{address: address} = state) when is_binary(address),
    do: {:reply, {:ok, address}, state}

  def handle_call(:await_ready, from, state),
    do: {:noreply, %{state | waiters: [from | state.waiters]}}

  def handle_call(:address, _from, state), do: {:reply, state.address, state}
  def handle_call(:os_pid, _from, state), do: {:reply, state.os_pid, state}
  def handle_call(:log_lines, _from, state), do: {:reply, :queue.to_list(state.log), state}

  @impl true
  def handle_info({port, {:data, {:noeol, chunk}}}, %{port: port} = state),
    do: {:noreply, %{state | partial: state.partial <> chunk}}

  def handle_info({port, {:data, {:eol, chunk}}}, %{port: port} = state) do
    line = state.partial <> chunk
    {:noreply, handle_line(line, %{state | partial: ""})}
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    state = %{state | exit_status: status, port: nil, os_pid: nil}

    if state.address do
      restart_or_stop(state, status)
    else
      error =
        Error.new(
          :server,
          :server_exited,
          "the local hf_bridge server exited with status #{status} before it was ready: #{tail(state)}",
          details: %{status: status}
        )

      Enum.each(state.waiters, &GenServer.reply(&1, {:error, error}))
      {:stop, :normal, %{state | waiters: []}}
    end
  end

  def handle_info({:DOWN, ref, :process, _, _}, %{owner_ref: ref} = state),
    do: {:stop, :normal, state}

  # A port that exited (its exit status was handled above); a restarted
  # server runs on a new one.
  def handle_info({:EXIT, port, _reason}, state) when is_port(port), do: {:noreply, state}
  def handle_info({:EXIT, _, reason}, state), do: {:stop, reason, state}
  def handle_info(_other, state), do: {:noreply, state}

  # A server that was ready and exited with a failure status starts again on
  # its port (exit status 0 is a deliberate stop, e.g. a signal sent by an
  # operator that the server handled).
  defp restart_or_stop(state, status) do
    now = System.monotonic_time(:millisecond)
    recent = Enum.filter(state.restarts, &(now - &1 < @restart_window))

    with true <- state.restart? and status != 0 and length(recent) < @max_restarts,
         {:ok, port_number} <- bound_port(state.address),
         {:ok, port} <- state.launch.(port_number) do
      Logger.warning(
        "hf_bridge local server exited with status #{status}; starting it again on port " <>
          "#{port_number} (restart #{length(recent) + 1} within a minute): #{tail(state)}"
      )

      {:noreply, %{state | port: port, restarts: [now | recent], partial: ""}}
    else
      _ ->
        Logger.error("hf_bridge local server exited with status #{status}: #{tail(state)}")
        {:stop, {:shutdown, {:server_exited, status}}, state}
    end
  end

  defp bound_port(address) do
    with [_, port] <- Regex.run(~r/:(\d+)$/, address),
         {number, ""} <- Integer.parse(port) do
      {:ok, number}
    else
      _ -> :error
    end
  end

  @impl true
  def terminate(_reason, state) do
    Enum.each(state.waiters, fn from ->
      GenServer.reply(
        from,
        {:error, Error.new(:server, :server_exited, "the local hf_bridge server was stopped")}
      )
    end)

    shutdown(state)
  end

  defp handle_line(@ready_prefix <> address, state) do
    address = String.trim(address)
    Enum.each(state.waiters, &GenServer.reply(&1, {:ok, address}))
    %{state | address: address, waiters: []}
  end

  defp handle_line(@pid_prefix <> pid, state) do
    case Integer.parse(String.trim(pid)) do
      {os_pid, ""} -> %{state | os_pid: os_pid}
      _ -> state
    end
  end

  defp handle_line(line, state) do
    if state.log_level, do: Logger.log(state.log_level, "[hf_bridge server] " <> line)
    log = :queue.in(line, state.log)

    if state.log_count >= @kept_log_lines do
      %{state | log: :queue.drop(log)}
    else
      %{state | log: log, log_count: state.log_count + 1}
    end
  end

  defp tail(state) do
    case :queue.to_list(state.log) do
      [] -> "(no output)"
      lines -> lines |> Enum.take(-15) |> Enum.join("\n")
    end
  end

  defp shutdown(%{port: nil}), do: :ok

  # The wrapper has not reported the server's pid yet: closing the port makes
  # it send SIGTERM itself.
  defp shutdown(%{port: port, os_pid: nil}), do: close(port)

  defp shutdown(%{port: port, os_pid: os_pid}) do
    signal("TERM", os_pid)

    receive do
      {^port, {:exit_status, _}} -> :ok
    after
      @term_grace ->
        signal("KILL", os_pid)
        close(port)
    end
  end

  defp close(port) do
    Port.close(port)
  catch
    _, _ -> :ok
  end

  defp signal(name, os_pid) do
    System.cmd("kill", ["-#{name}", Integer.to_string(os_pid)], stderr_to_stdout: true)
    :ok
  rescue
    _ -> :ok
  end
end
