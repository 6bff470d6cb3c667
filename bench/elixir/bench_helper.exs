defmodule HFBridgeBench.Helper do
  @moduledoc """
  Shared by the bench/elixir scripts: argument parsing, timing and the one
  machine-readable `BENCH {json}` line each script prints for `python -m bench`.
  """

  @doc "Parses `System.argv()` with the given OptionParser switches; unknown flags raise."
  @spec args(keyword()) :: keyword()
  def args(switches) do
    case OptionParser.parse(System.argv(), strict: switches) do
      {opts, [], []} -> opts
      {_, rest, bad} -> raise ArgumentError, "bad arguments: #{inspect(rest ++ bad)}"
    end
  end

  @doc "Connects to the server at `address` (never starts a local one)."
  @spec connect!(String.t()) :: HFBridge.Client.t()
  def connect!(address) do
    case HFBridge.connect(address: address, local: false, timeout: 120_000) do
      {:ok, client} -> client
      {:error, error} -> fail!("connect: " <> Exception.message(error))
    end
  end

  @doc """
  CPU seconds (user + system, all threads) of this OS process so far, from
  `/proc/self/stat`; falls back to `:erlang.statistics(:runtime)` elsewhere.
  """
  @spec cpu_seconds() :: float()
  def cpu_seconds do
    with {:ok, stat} <- File.read("/proc/self/stat"),
         [_, after_comm] <- String.split(stat, ") ", parts: 2),
         fields = String.split(after_comm, " "),
         {utime, ""} <- Integer.parse(Enum.at(fields, 11, "")),
         {stime, ""} <- Integer.parse(Enum.at(fields, 12, "")) do
      # Clock ticks; USER_HZ is 100 on Linux.
      (utime + stime) / 100
    else
      _ ->
        {ms, _} = :erlang.statistics(:runtime)
        ms / 1000
    end
  end

  @doc "Monotonic time in seconds (float)."
  @spec now() :: float()
  def now, do: System.monotonic_time(:microsecond) / 1.0e6

  @doc "Prints `BENCH {json}` for a flat map of numbers, strings, booleans and number lists."
  @spec emit(map()) :: :ok
  def emit(map) do
    body =
      map
      |> Enum.map(fn {k, v} -> "\"#{k}\":" <> value(v) end)
      |> Enum.join(",")

    IO.puts("BENCH {" <> body <> "}")
  end

  @doc "Prints `BENCH {\"error\": message}` and halts with status 1."
  @spec fail!(String.t()) :: no_return()
  def fail!(message) do
    emit(%{error: message})
    System.halt(1)
  end

  defp value(v) when is_integer(v), do: Integer.to_string(v)
  defp value(v) when is_float(v), do: :erlang.float_to_binary(v, [:short])
  defp value(v) when is_boolean(v), do: to_string(v)
  defp value(v) when is_list(v), do: "[" <> Enum.map_join(v, ",", &value/1) <> "]"

  defp value(v) when is_binary(v),
    do:
      "\"" <>
        (v
         |> String.replace("\\", "\\\\")
         |> String.replace("\"", "\\\"")
         |> String.replace("\n", " ")) <> "\""

  defp value(v), do: value(inspect(v))

  @doc "Median of a non-empty list of numbers."
  @spec median([number()]) :: float()
  def median(xs) do
    s = Enum.sort(xs)
    n = length(s)

    if rem(n, 2) == 1,
      do: Enum.at(s, div(n, 2)) * 1.0,
      else: (Enum.at(s, div(n, 2) - 1) + Enum.at(s, div(n, 2))) / 2
  end
end
