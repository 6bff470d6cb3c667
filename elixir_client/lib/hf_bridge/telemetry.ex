defmodule HFBridge.Telemetry do
  @moduledoc """
  `:telemetry` events emitted by hf_bridge.

  hf_bridge does not depend on `:telemetry`. When the host application has it
  (most Phoenix, Ecto and Broadway applications do), the events below are
  emitted through `:telemetry.execute/3` and `:telemetry.span/3`; without it
  every function here is a no-op that costs one `:persistent_term` lookup, and
  `span/3` simply runs its function and returns its result.

  All event names start with `:hf_bridge`. Durations are in
  `:native` time units, as `:telemetry.span/3` reports them (convert with
  `System.convert_time_unit/3`).

  ## Spans

  Each span emits `prefix ++ [:start]`, then either `prefix ++ [:stop]` or,
  when the function raises, throws or exits, `prefix ++ [:exception]`
  (metadata then also holds `:kind`, `:reason` and `:stacktrace`).
  Start measurements are `%{system_time, monotonic_time}`; stop and exception
  measurements are `%{duration, monotonic_time}`.

    * `[:hf_bridge, :session, :open, :start | :stop | :exception]` — opening
      or resuming a streaming session. Metadata: `:dataset` (the spec path),
      `:split`; on stop also `:session_id` and `:worker` when it succeeded,
      `:error` (an `HFBridge.Error`) when it did not.
    * `[:hf_bridge, :ack, :start | :stop | :exception]` — one `Ack` call.
      Metadata: `:session_id`, `:seq`; on stop `:error` when it failed.
    * `[:hf_bridge, :export, :start | :stop | :exception]` — a whole Parquet
      export (`HFBridge.Export.run/4`). Metadata: `:dataset`, `:destination`;
      on stop `:rows`, `:bytes`, `:files` and `:manifest_uri` when it
      succeeded, `:error` when it did not.

  ## Single events

    * `[:hf_bridge, :session, :close]` — a session was released.
      Measurements: `%{batches: non_neg_integer, rows: non_neg_integer}`
      (what the client received over the session's life, when known).
      Metadata: `:session_id`, `:reason` (`:normal`, `:cancelled`,
      `:error`, ...).
    * `[:hf_bridge, :batch, :received]` — one record batch arrived.
      Measurements: `%{rows: non_neg_integer, bytes: non_neg_integer}` (rows
      in the batch, size of its Arrow IPC stream). Metadata: `:session_id`,
      `:seq`.
    * `[:hf_bridge, :export, :progress]` — the server reported export
      progress. Measurements: `%{rows, bytes, files, elapsed_seconds}`.
      Metadata: `:dataset`, `:destination`, `:total_rows` (`nil` when
      unknown).
    * `[:hf_bridge, :connection, :up]` — a connection to a server is
      established (also each time a client connects again after losing its
      connection, see `HFBridge.Client.Keeper`). Measurements:
      `%{system_time}`. Metadata: `:address` (`"host:port"`), `:tls`
      (boolean).
    * `[:hf_bridge, :connection, :down]` — a connection closed or was lost.
      Measurements: `%{system_time}`. Metadata: `:address`, `:tls`,
      `:reason` (`:closed` after `disconnect/1`, `:owner_exited`, or the
      connection process's exit reason).

  `events/0` returns every name above, which suits
  `:telemetry.attach_many/4`:

      :telemetry.attach_many("log-hf-bridge", HFBridge.Telemetry.events(),
        &MyApp.Telemetry.handle_event/4, nil)
  """

  # :telemetry is optional: calls to it are made only after checking at run
  # time that it is loaded, through telemetry/0, so the compiler neither
  # expects it at compile time nor counts it as a dependency of :hf_bridge.

  @typedoc "A full event name, such as `[:hf_bridge, :batch, :received]`."
  @type event_name :: [atom(), ...]
  @typedoc "A span prefix; `[:start]`, `[:stop]` or `[:exception]` is appended."
  @type span_prefix :: [atom(), ...]

  @spans [
    [:hf_bridge, :session, :open],
    [:hf_bridge, :ack],
    [:hf_bridge, :export]
  ]

  @single [
    [:hf_bridge, :session, :close],
    [:hf_bridge, :batch, :received],
    [:hf_bridge, :export, :progress],
    [:hf_bridge, :connection, :up],
    [:hf_bridge, :connection, :down]
  ]

  @events (for prefix <- @spans, suffix <- [:start, :stop, :exception] do
             prefix ++ [suffix]
           end) ++ @single

  @enabled_key {__MODULE__, :enabled}

  @doc """
  Every event name hf_bridge emits (spans expanded into their `:start`,
  `:stop` and `:exception` events).
  """
  @spec events() :: [event_name()]
  def events, do: @events

  @doc "The span prefixes (without the `:start`/`:stop`/`:exception` suffix)."
  @spec spans() :: [span_prefix()]
  def spans, do: @spans

  @doc """
  Whether `:telemetry` is available and running, so events are really emitted.

  Whether the module can be loaded is computed once and cached (`refresh/0`
  recomputes it, useful when `:telemetry` is loaded after hf_bridge's first
  event); whether its application is started (its handler table exists) is
  checked on every call, so events before `:telemetry` starts are dropped
  quietly instead of logging lookup failures.
  """
  @spec enabled?() :: boolean()
  def enabled? do
    loaded? =
      case :persistent_term.get(@enabled_key, :unknown) do
        :unknown -> refresh()
        value -> value
      end

    loaded? and :ets.whereis(:telemetry_handler_table) != :undefined
  end

  @doc "Recomputes and caches whether the `:telemetry` module can be loaded; returns it."
  @spec refresh() :: boolean()
  def refresh do
    value = Code.ensure_loaded?(:telemetry) and function_exported?(:telemetry, :span, 3)
    :persistent_term.put(@enabled_key, value)
    value
  end

  @doc """
  Emits one event with `measurements` and `metadata`, as
  `:telemetry.execute/3` does. Returns `:ok`, also when `:telemetry` is
  absent (then nothing happens).
  """
  @spec execute(event_name(), map(), map()) :: :ok
  def execute(event, measurements, metadata \\ %{})
      when is_list(event) and is_map(measurements) and is_map(metadata) do
    if enabled?() do
      telemetry().execute(event, measurements, metadata)
    end

    :ok
  end

  @doc """
  Runs `fun` inside a span named by `prefix`, as `:telemetry.span/3` does.

  `fun` takes no arguments and returns `{result, stop_metadata}` or
  `{result, extra_measurements, stop_metadata}`; `span/3` returns `result`.
  Without `:telemetry`, `fun` runs and its `result` is returned, nothing is
  emitted. Exceptions, throws and exits propagate unchanged in both cases.
  """
  @spec span(span_prefix(), map(), (() -> {term(), map()} | {term(), map(), map()})) :: term()
  def span(prefix, start_metadata, fun)
      when is_list(prefix) and is_map(start_metadata) and is_function(fun, 0) do
    if enabled?() do
      telemetry().span(prefix, start_metadata, fun)
    else
      case fun.() do
        {result, stop_metadata} when is_map(stop_metadata) ->
          result

        {result, measurements, stop_metadata}
        when is_map(measurements) and is_map(stop_metadata) ->
          result

        other ->
          raise ArgumentError,
                "HFBridge.Telemetry.span/3 expects its function to return " <>
                  "{result, stop_metadata} or {result, measurements, stop_metadata}, got: " <>
                  inspect(other)
      end
    end
  end

  defp telemetry, do: :telemetry
end
