defmodule HFBridge.TelemetryTest do
  # Behaviour that holds with and without :telemetry loaded.
  use ExUnit.Case, async: true

  alias HFBridge.Telemetry

  test "events/0 lists every span event and single event, all under :hf_bridge" do
    events = Telemetry.events()
    assert length(events) == length(Enum.uniq(events))
    assert Enum.all?(events, &match?([:hf_bridge | _], &1))

    for prefix <- Telemetry.spans(), suffix <- [:start, :stop, :exception] do
      assert (prefix ++ [suffix]) in events
    end

    for name <- [
          [:hf_bridge, :session, :close],
          [:hf_bridge, :batch, :received],
          [:hf_bridge, :export, :progress],
          [:hf_bridge, :connection, :up],
          [:hf_bridge, :connection, :down]
        ] do
      assert name in events
    end
  end

  test "the moduledoc documents every event" do
    {:docs_v1, _, _, _, %{"en" => doc}, _, _} = Code.fetch_docs(Telemetry)

    for prefix <- Telemetry.spans() do
      assert doc =~ String.trim_trailing("`" <> inspect(prefix), "]")
    end

    for [_ | _] = name <- Telemetry.events(),
        List.last(name) not in [:start, :stop, :exception] do
      assert doc =~ inspect(name), "#{inspect(name)} is not in the moduledoc"
    end
  end

  test "span/3 returns the function's result, with either return shape" do
    assert Telemetry.span([:hf_bridge, :ack], %{seq: 1}, fn -> {:done, %{ok: true}} end) == :done

    assert Telemetry.span([:hf_bridge, :ack], %{}, fn -> {[1, 2], %{extra: 1}, %{}} end) ==
             [1, 2]
  end

  test "span/3 lets exceptions, throws and exits through" do
    assert_raise RuntimeError, "boom", fn ->
      Telemetry.span([:hf_bridge, :ack], %{}, fn -> raise "boom" end)
    end

    assert catch_throw(Telemetry.span([:hf_bridge, :ack], %{}, fn -> throw(:t) end)) == :t
    assert catch_exit(Telemetry.span([:hf_bridge, :ack], %{}, fn -> exit(:e) end)) == :e
  end

  test "execute/3 returns :ok" do
    assert Telemetry.execute([:hf_bridge, :batch, :received], %{rows: 3, bytes: 10}, %{seq: 0}) ==
             :ok
  end

  test "enabled?/0 holds when :telemetry can be loaded and its application runs" do
    running? = :ets.whereis(:telemetry_handler_table) != :undefined
    assert Telemetry.enabled?() == (Code.ensure_loaded?(:telemetry) and running?)
    assert Telemetry.refresh() == Code.ensure_loaded?(:telemetry)
  end
end

defmodule HFBridge.TelemetryAbsentTest do
  # Only meaningful where :telemetry is not installed (the default here).
  use ExUnit.Case, async: true

  if Code.ensure_loaded?(:telemetry) do
    IO.puts("skipping HFBridge.TelemetryAbsentTest: :telemetry is loaded, so events are real")
    @moduletag skip: ":telemetry is loaded"
  end

  alias HFBridge.Telemetry

  test "without :telemetry, nothing is emitted and span/3 is a plain call" do
    refute Telemetry.enabled?()
    parent = self()

    assert Telemetry.span([:hf_bridge, :export], %{}, fn ->
             send(parent, :ran)
             {42, %{}}
           end) == 42

    assert_received :ran
    assert Telemetry.execute([:hf_bridge, :connection, :up], %{system_time: 1}) == :ok
  end

  test "without :telemetry, span/3 rejects a function of the wrong shape" do
    assert_raise ArgumentError, ~r/expects its function to return/, fn ->
      Telemetry.span([:hf_bridge, :ack], %{}, fn -> :not_a_tuple end)
    end
  end
end

defmodule HFBridge.TelemetryPresentTest do
  # Runs where :telemetry is installed: handlers really receive the events.
  use ExUnit.Case, async: false

  if Code.ensure_loaded?(:telemetry) do
    setup_all do
      {:ok, _} = Application.ensure_all_started(:telemetry)
      :ok
    end
  else
    IO.puts("skipping HFBridge.TelemetryPresentTest: :telemetry is not available")
    @moduletag skip: ":telemetry is not available"
  end

  alias HFBridge.Telemetry

  # Called through apply/3 so the module compiles without :telemetry.
  defp attach(id, events) do
    parent = self()

    handler = fn name, measurements, metadata, _ ->
      send(parent, {:event, name, measurements, metadata})
    end

    :ok = apply(:telemetry, :attach_many, [id, events, handler, nil])
    on_exit(fn -> apply(:telemetry, :detach, [id]) end)
  end

  test "execute/3 reaches attached handlers" do
    attach("hf-exec", [[:hf_bridge, :batch, :received]])
    assert Telemetry.enabled?()
    Telemetry.execute([:hf_bridge, :batch, :received], %{rows: 5, bytes: 99}, %{seq: 7})
    assert_received {:event, [:hf_bridge, :batch, :received], %{rows: 5, bytes: 99}, %{seq: 7}}
  end

  test "span/3 emits start and stop with the stop metadata" do
    attach("hf-span", [[:hf_bridge, :ack, :start], [:hf_bridge, :ack, :stop]])

    assert Telemetry.span([:hf_bridge, :ack], %{seq: 3}, fn -> {:ok, %{seq: 3, acked: true}} end) ==
             :ok

    assert_received {:event, [:hf_bridge, :ack, :start], %{system_time: _}, %{seq: 3}}
    assert_received {:event, [:hf_bridge, :ack, :stop], %{duration: d}, %{acked: true}}
    assert is_integer(d) and d >= 0
  end

  test "a client's connection emits :up, then :down with a reason" do
    {:ok, server} = HFBridge.Test.InteropServer.start(:python)
    on_exit(fn -> HFBridge.Test.InteropServer.stop(server) end)
    attach("hf-conn", [[:hf_bridge, :connection, :up], [:hf_bridge, :connection, :down]])

    {:ok, client} = HFBridge.Client.connect(address: "127.0.0.1:#{server.port}")
    address = "127.0.0.1:#{server.port}"

    assert_receive {:event, [:hf_bridge, :connection, :up], %{system_time: _},
                    %{address: ^address}},
                   5_000

    HFBridge.Client.disconnect(client)

    assert_receive {:event, [:hf_bridge, :connection, :down], _, %{address: ^address, reason: _}},
                   5_000
  end

  test "span/3 emits exception and re-raises" do
    attach("hf-exc", [[:hf_bridge, :export, :exception]])

    assert_raise RuntimeError, fn ->
      Telemetry.span([:hf_bridge, :export], %{}, fn -> raise "bad" end)
    end

    assert_received {:event, [:hf_bridge, :export, :exception], _, %{kind: :error}}
  end
end
