defmodule HFBridge.Runtime do
  @moduledoc """
  Checks how the Erlang VM is set up for receiving large record batches, and
  tells the user once per VM when a setting costs throughput.

  ## What is measured, and why

  Every batch a session streams arrives as one gRPC message of one to a few
  MB, which the client holds as one binary. The VM's binary allocator
  (`binary_alloc`) places each binary larger than its *single-block carrier
  threshold* (`sbct`, 512 KiB by default on 64-bit systems) in a carrier of
  its own: memory mapped from the operating system for that one binary and
  returned when it is freed. A received batch can then cost an `mmap`, a
  page fault for every 4 KiB page written and an `munmap`: system time that
  grows with the bytes received, and that matters most where the client
  builds many large binaries (a receive path that grows binaries piece by
  piece spent most of its time there). With a threshold above the batch
  size the binaries live in multi-block carriers that are reused.

  `binary_alloc_advice/0` reads `sbct` from
  `:erlang.system_info({:allocator, :binary_alloc})` and advises raising it
  when it is below 4 MiB. The fix is a VM flag:

    * with `mix` or `iex`: `ELIXIR_ERL_OPTIONS="+MBsbct 8192" mix run ...`
    * in a release: the line `+MBsbct 8192` in `rel/vm.args.eex`

  (`8192` is in KiB: binaries up to 8 MiB stay in multi-block carriers.)
  Processes that decode large batches themselves (`HFBridge.Arrow`) can
  build process heaps above the threshold of the heap allocator, which
  treats them the same way (`+MHsbct` is its flag).

  HFBridge's own receive path joins each message once and keeps received
  data in the pieces the socket delivered, so with the VM's defaults it runs
  about as fast as with the flag (`python -m bench` reports both: row 9d).
  The setting matters for code that builds many large binaries itself. The
  hint is therefore off by default; with

      config :hf_bridge, runtime_advice: true

  the first time a session receives a batch of 512 KiB or more (smaller
  batches are not affected), `maybe_hint/1` logs the advice (if any) once
  per VM, remembered in `:persistent_term`.
  """

  require Logger

  # Below this single-block carrier threshold the advice is given.
  @min_sbct 4 * 1024 * 1024
  # Messages from this size on land in single-block carriers by default.
  @large_message 512 * 1024
  @hint_key {__MODULE__, :hinted}

  @doc """
  `:ok` when the VM's binary allocator keeps binaries of a few MB in
  multi-block carriers (or is not in use: `+Mea min`), else
  `{:advise, message}` naming the flag to set and how.
  """
  @spec binary_alloc_advice() :: :ok | {:advise, String.t()}
  def binary_alloc_advice,
    do: binary_alloc_advice(:erlang.system_info({:allocator, :binary_alloc}))

  @doc """
  Like `binary_alloc_advice/0`, for a given
  `:erlang.system_info({:allocator, :binary_alloc})` result.
  """
  @spec binary_alloc_advice(term()) :: :ok | {:advise, String.t()}
  def binary_alloc_advice(info) do
    case sbct(info) do
      sbct when is_integer(sbct) and sbct < @min_sbct -> {:advise, message(sbct)}
      _ -> :ok
    end
  end

  # The smallest `sbct` over the allocator instances; nil when the allocator
  # is disabled (`false`) or the shape is unknown.
  defp sbct(instances) when is_list(instances) do
    instances
    |> Enum.flat_map(fn
      {:instance, _n, props} when is_list(props) ->
        case List.keyfind(props, :options, 0) do
          {:options, options} when is_list(options) ->
            case List.keyfind(options, :sbct, 0) do
              {:sbct, value} when is_integer(value) -> [value]
              _ -> []
            end

          _ ->
            []
        end

      _ ->
        []
    end)
    |> Enum.min(fn -> nil end)
  end

  defp sbct(_), do: nil

  defp message(sbct) do
    "hf_bridge: this Erlang VM gives every binary above #{div(sbct, 1024)} KiB its own " <>
      "memory mapping (binary_alloc sbct), so received record batches can cost an mmap " <>
      "and page faults each. To keep batches of up to 8 MiB in reused memory, start the " <>
      "VM with +MBsbct 8192: ELIXIR_ERL_OPTIONS=\"+MBsbct 8192\" for mix and iex, or the " <>
      "line +MBsbct 8192 in rel/vm.args.eex for releases. Silence this hint with " <>
      "`config :hf_bridge, runtime_advice: false` (the default)."
  end

  @doc """
  Calls `hint_once/0` when a received message of `bytes` bytes is large
  enough (512 KiB) for the allocator setting to matter; else `:skipped`.
  Costs one comparison and, for large messages, one `:persistent_term`
  lookup once the hint was given.
  """
  @spec maybe_hint(non_neg_integer()) :: :logged | :skipped
  def maybe_hint(bytes) when is_integer(bytes) and bytes >= @large_message, do: hint_once()
  def maybe_hint(_bytes), do: :skipped

  @doc """
  Logs the advice of `binary_alloc_advice/0` (at `:info` level) the first
  time it is called in this VM when `config :hf_bridge, runtime_advice:
  true`. Returns `:logged` when it logged, else `:skipped`.
  """
  @spec hint_once() :: :logged | :skipped
  def hint_once do
    cond do
      :persistent_term.get(@hint_key, false) -> :skipped
      not enabled?() -> :skipped
      true -> hint_with(binary_alloc_advice())
    end
  end

  defp enabled?, do: Application.get_env(:hf_bridge, :runtime_advice, false) == true

  @doc false
  # `hint_once/0` for a given advice (tests).
  @spec hint_with(:ok | {:advise, String.t()}) :: :logged | :skipped
  def hint_with(advice) do
    cond do
      not enabled?() ->
        :skipped

      :persistent_term.get(@hint_key, false) ->
        :skipped

      true ->
        :persistent_term.put(@hint_key, true)

        case advice do
          {:advise, message} ->
            Logger.info(message)
            :logged

          :ok ->
            :skipped
        end
    end
  end

  @doc false
  # Forgets that the hint was given (tests).
  @spec forget_hint() :: :ok
  def forget_hint do
    _ = :persistent_term.erase(@hint_key)
    :ok
  end
end
