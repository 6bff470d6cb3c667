defmodule HFBridge.RuntimeTest do
  # Changes the application environment and a :persistent_term key.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  alias HFBridge.Runtime

  defp info(sbcts),
    do:
      for(
        {sbct, n} <- Enum.with_index(sbcts),
        do: {:instance, n, [options: [e: true, sbct: sbct]]}
      )

  describe "binary_alloc_advice/1" do
    test "advises +MBsbct below 4 MiB, naming how to set it" do
      assert {:advise, message} = Runtime.binary_alloc_advice(info([512 * 1024, 512 * 1024]))
      assert message =~ "+MBsbct 8192"
      assert message =~ "ELIXIR_ERL_OPTIONS"
      assert message =~ "vm.args"
      assert message =~ "512 KiB"
      assert message =~ "runtime_advice: false"
    end

    test "is content from 4 MiB on, in every instance" do
      assert :ok = Runtime.binary_alloc_advice(info([8 * 1024 * 1024, 4 * 1024 * 1024]))
      # one instance below the threshold is enough to advise
      assert {:advise, _} = Runtime.binary_alloc_advice(info([8 * 1024 * 1024, 1024 * 1024]))
    end

    test "a disabled allocator or an unknown shape gives no advice" do
      assert :ok = Runtime.binary_alloc_advice(false)
      assert :ok = Runtime.binary_alloc_advice([{:instance, 0, [versions: {0, 0, 0}]}])
      assert :ok = Runtime.binary_alloc_advice(:nonsense)
    end

    test "reads this VM's allocator" do
      sbct =
        :erlang.system_info({:allocator, :binary_alloc})
        |> Enum.map(fn {:instance, _, props} -> props[:options][:sbct] end)
        |> Enum.min()

      expected = if sbct < 4 * 1024 * 1024, do: :advise, else: :ok

      got =
        case Runtime.binary_alloc_advice() do
          {:advise, _} -> :advise
          :ok -> :ok
        end

      assert got == expected
    end
  end

  describe "hints" do
    setup do
      Runtime.forget_hint()
      previous = Application.get_env(:hf_bridge, :runtime_advice)
      Application.put_env(:hf_bridge, :runtime_advice, true)

      on_exit(fn ->
        Runtime.forget_hint()

        if previous == nil,
          do: Application.delete_env(:hf_bridge, :runtime_advice),
          else: Application.put_env(:hf_bridge, :runtime_advice, previous)
      end)
    end

    test "logs the advice once per VM" do
      log =
        capture_log([level: :info], fn ->
          assert :logged = Runtime.hint_with({:advise, "raise sbct please"})
          assert :skipped = Runtime.hint_with({:advise, "raise sbct please"})
          assert :skipped = Runtime.hint_once()
        end)

      assert length(String.split(log, "raise sbct please")) == 2
    end

    test "maybe_hint/1 considers only messages of 512 KiB or more" do
      log =
        capture_log([level: :info], fn ->
          assert :skipped = Runtime.maybe_hint(512 * 1024 - 1)
          first = Runtime.maybe_hint(512 * 1024)
          assert :skipped = Runtime.maybe_hint(10_000_000)

          # logged only when this VM's allocator needs the advice
          case Runtime.binary_alloc_advice() do
            {:advise, _} -> assert first == :logged
            :ok -> assert first == :skipped
          end
        end)

      expected = if Runtime.binary_alloc_advice() == :ok, do: 0, else: 1
      assert length(String.split(log, "this Erlang VM gives")) - 1 == expected
    end

    test "logs nothing when there is nothing to advise" do
      log = capture_log([level: :info], fn -> assert :skipped = Runtime.hint_with(:ok) end)
      refute log =~ "sbct"
    end

    test "the hint is off unless configured" do
      Application.delete_env(:hf_bridge, :runtime_advice)

      log =
        capture_log([level: :info], fn ->
          assert :skipped = Runtime.hint_with({:advise, "raise sbct please"})
        end)

      refute log =~ "raise sbct please"
    end

    test "config :hf_bridge, runtime_advice: false turns it off" do
      Application.put_env(:hf_bridge, :runtime_advice, false)

      log =
        capture_log([level: :info], fn ->
          assert :skipped = Runtime.hint_with({:advise, "raise sbct please"})
        end)

      refute log =~ "raise sbct please"
      # Not remembered as given: switching it back on still hints.
      Application.put_env(:hf_bridge, :runtime_advice, true)

      assert capture_log([level: :info], fn ->
               assert :logged = Runtime.hint_with({:advise, "raise sbct please"})
             end) =~ "raise sbct please"
    end
  end
end
