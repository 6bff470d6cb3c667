defmodule HFBridge.Client.Keeper do
  @moduledoc """
  Keeps a client's connection open for as long as the client is in use.

  `HFBridge.Client.connect/1` starts one keeper per client. The keeper holds
  the client's current `HFBridge.GRPC` connection and:

    * opens a new one, when asked for it (`conn/2`), once the last has gone —
      the server restarted, the TCP connection dropped, the server sent
      GOAWAY — so a client held in a shell or a long-lived service outlives
      its connections;
    * closes the connection and stops when the client's owner exits, or on
      `stop/1` (`HFBridge.Client.disconnect/1`); after that, `conn/2` returns
      an error and nothing reconnects.

  A server that closed a connection for too many keepalive PINGs (GOAWAY
  `too_many_pings`) gets half as many on the next: the keeper doubles the
  `:keepalive` interval it reconnects with, and logs a warning.

  It emits `[:hf_bridge, :connection, :up]` each time a connection opens and
  `[:hf_bridge, :connection, :down]` (metadata `:reason`) each time one ends;
  the metadata also holds `:address` and `:tls`.
  """

  use GenServer

  require Logger

  alias HFBridge.{Error, Telemetry}

  @typedoc "How to open the connection again: host, port and `HFBridge.GRPC.connect/3` options."
  @type target :: {String.t(), :inet.port_number(), keyword()}

  @doc """
  Starts the keeper of `conn` (already open) for `owner`. `target` says how
  to reconnect (nil: never), `meta` is the telemetry metadata (`:address`,
  `:tls`). The keeper is not linked to the caller: it follows `owner`.
  """
  @spec start(pid(), pid(), target() | nil, map()) :: {:ok, pid()} | {:error, term()}
  def start(owner, conn, target, meta) when is_pid(owner) and is_pid(conn),
    do: GenServer.start(__MODULE__, {owner, conn, target, meta})

  @doc """
  The current connection, opened again first when the last one has gone
  (waiting up to `timeout` ms for that). `{:error, %HFBridge.Error{}}` when
  reconnecting fails or the client was disconnected.
  """
  @spec conn(pid(), timeout()) :: {:ok, pid()} | {:error, Error.t()}
  def conn(keeper, timeout) do
    GenServer.call(keeper, :conn, timeout)
  catch
    :exit, {:timeout, _} ->
      {:error,
       Error.new(:grpc, :unavailable, "reconnecting to the server took longer than #{timeout} ms",
         retryable: true
       )}

    :exit, _ ->
      {:error, disconnected()}
  end

  @doc "The current connection if it is open, without reconnecting; nil otherwise."
  @spec current(pid()) :: pid() | nil
  def current(keeper), do: call_or(keeper, :current, nil)

  @doc """
  How the keeper opens its next connection now (its `:keepalive` doubled
  after a GOAWAY `too_many_pings`); nil when it never reconnects or has
  stopped.
  """
  @spec target(pid()) :: target() | nil
  def target(keeper), do: call_or(keeper, :target, nil)

  @doc "Closes the connection and stops the keeper (idempotent)."
  @spec stop(pid()) :: :ok
  def stop(keeper), do: call_or(keeper, :stop, :ok)

  # The keeper's answer to `request`, or `gone` when the keeper has stopped.
  defp call_or(keeper, request, gone) do
    GenServer.call(keeper, request, 10_000)
  catch
    :exit, _ -> gone
  end

  @doc "The error for a call made on a client that was disconnected."
  @spec disconnected() :: Error.t()
  def disconnected do
    Error.new(
      :grpc,
      :closed,
      "this client is disconnected (HFBridge.disconnect/1 was called or its owner exited); " <>
        "connect again with HFBridge.connect/1"
    )
  end

  @impl true
  def init({owner, conn, target, meta}) do
    state = %{
      owner_ref: Process.monitor(owner),
      conn: nil,
      conn_ref: nil,
      target: target,
      meta: meta
    }

    {:ok, watch(state, conn)}
  end

  @impl true
  def handle_call(request, from, %{conn: conn} = state)
      when request in [:conn, :current] and is_pid(conn) do
    if Process.alive?(conn) do
      {:reply, if(request == :conn, do: {:ok, conn}, else: conn), state}
    else
      # Gone, its :DOWN not read yet (it says why: see calm_down/2).
      ref = state.conn_ref

      reason =
        receive do
          {:DOWN, ^ref, :process, _, reason} -> reason
        after
          100 -> Process.demonitor(ref, [:flush]) && :noproc
        end

      handle_call(request, from, state |> down(reason) |> calm_down(reason))
    end
  end

  def handle_call(:conn, _from, %{target: nil} = state),
    do:
      {:reply,
       {:error,
        Error.new(:grpc, :unavailable, "the connection is gone and this client cannot reconnect")},
       state}

  def handle_call(:conn, _from, %{target: {host, port, opts}} = state) do
    case HFBridge.GRPC.connect(host, port, opts) do
      {:ok, conn} -> {:reply, {:ok, conn}, watch(state, conn)}
      {:error, %Error{}} = error -> {:reply, error, state}
    end
  end

  def handle_call(:current, _from, state), do: {:reply, nil, state}

  def handle_call(:target, _from, state), do: {:reply, state.target, state}

  def handle_call(:stop, _from, state) do
    close(state, :closed)
    {:stop, :normal, :ok, state}
  end

  @impl true
  def handle_info({:DOWN, ref, :process, _, _}, %{owner_ref: ref} = state) do
    close(state, :owner_exited)
    {:stop, :normal, state}
  end

  def handle_info({:DOWN, ref, :process, _, reason}, %{conn_ref: ref} = state),
    do: {:noreply, state |> down(reason) |> calm_down(reason)}

  def handle_info(_other, state), do: {:noreply, state}

  defp down(state, reason) do
    Telemetry.execute(
      [:hf_bridge, :connection, :down],
      now(),
      Map.put(state.meta, :reason, reason)
    )

    %{state | conn: nil, conn_ref: nil}
  end

  defp calm_down(%{target: {host, port, opts}} = state, {:shutdown, :too_many_pings}) do
    case Keyword.get(opts, :keepalive, HFBridge.GRPC.Connection.default_keepalive()) do
      interval when is_integer(interval) ->
        Logger.warning(
          "hf_bridge: #{host}:#{port} closed the connection for too many keepalive PINGs " <>
            "(GOAWAY too_many_pings); keepalive is now every #{2 * interval} ms"
        )

        %{state | target: {host, port, Keyword.put(opts, :keepalive, 2 * interval)}}

      _ ->
        state
    end
  end

  defp calm_down(state, _reason), do: state

  defp watch(state, conn) do
    Telemetry.execute([:hf_bridge, :connection, :up], now(), state.meta)
    %{state | conn: conn, conn_ref: Process.monitor(conn)}
  end

  # The connection's :down event is emitted here, as its monitor will not
  # be read once the keeper stops.
  defp close(%{conn: nil}, _reason), do: :ok

  defp close(%{conn: conn, conn_ref: ref, meta: meta}, reason) do
    HFBridge.GRPC.disconnect(conn)
    Process.demonitor(ref, [:flush])
    Telemetry.execute([:hf_bridge, :connection, :down], now(), Map.put(meta, :reason, reason))
  end

  defp now, do: %{system_time: System.system_time()}
end
