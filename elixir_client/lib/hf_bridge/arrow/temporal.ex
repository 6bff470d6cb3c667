defmodule HFBridge.Arrow.Temporal do
  @moduledoc """
  Conversions of Arrow temporal integers to Elixir calendar types (used when
  reading with `temporal: :elixir`, the default).

    * `date32` (days since 1970-01-01) and `date64` (milliseconds since the
      epoch, floored to whole days) become `Date`.
    * `time32` / `time64` (time of day in the field's unit) become `Time`.
    * `timestamp` without a timezone becomes `NaiveDateTime`; with a
      timezone it becomes a `DateTime` in `Etc/UTC` holding the same instant
      (the original zone name stays in the field type, since zone databases
      are not part of OTP).

  Sub-second precision follows the unit: seconds give precision 0,
  milliseconds 3, microseconds and nanoseconds 6. Nanoseconds are floored to
  microseconds (Elixir calendar types stop at microseconds); read with
  `temporal: :raw` to keep them.

  Values outside the years -9999..9999 (or times of day outside
  00:00..24:00) throw `{:arrow_malformed, msg}`.
  """

  @epoch_days 719_528
  @min_days Date.to_gregorian_days(~D[-9999-01-01])
  @max_days Date.to_gregorian_days(~D[9999-12-31])

  @doc "Converts a list of raw integers (and `nil`s) of an Arrow temporal type."
  @spec convert(list(), HFBridge.Arrow.Schema.type()) :: list()
  def convert(values, :date32), do: for(v <- values, do: v && date(v + @epoch_days))

  def convert(values, :date64),
    do: for(v <- values, do: v && date(Integer.floor_div(v, 86_400_000) + @epoch_days))

  def convert(values, {kind, unit}) when kind in [:time32, :time64] do
    for v <- values, do: v && time(v, unit)
  end

  def convert(values, {:timestamp, unit, nil}) do
    for v <- values, do: v && DateTime.to_naive(datetime(v, unit))
  end

  def convert(values, {:timestamp, unit, _tz}), do: for(v <- values, do: v && datetime(v, unit))

  defp date(days) when days >= @min_days and days <= @max_days, do: Date.from_gregorian_days(days)

  defp date(_),
    do: throw({:arrow_malformed, "date outside the years -9999..9999; read with temporal: :raw"})

  defp datetime(v, unit) do
    case DateTime.from_unix(v, unit) do
      {:ok, dt} ->
        %{dt | microsecond: {elem(dt.microsecond, 0), precision(unit)}}

      {:error, _} ->
        throw(
          {:arrow_malformed,
           "timestamp #{v} #{unit} outside the years -9999..9999; read with temporal: :raw"}
        )
    end
  end

  defp time(v, unit) do
    us = to_microseconds(v, unit)

    if us < 0 or us >= 86_400_000_000 do
      throw(
        {:arrow_malformed,
         "time of day #{v} #{unit} outside 00:00..24:00; read with temporal: :raw"}
      )
    end

    secs = div(us, 1_000_000)

    %Time{
      hour: div(secs, 3600),
      minute: rem(div(secs, 60), 60),
      second: rem(secs, 60),
      microsecond: {rem(us, 1_000_000), precision(unit)}
    }
  end

  defp to_microseconds(v, :second), do: v * 1_000_000
  defp to_microseconds(v, :millisecond), do: v * 1_000
  defp to_microseconds(v, :microsecond), do: v
  defp to_microseconds(v, :nanosecond), do: Integer.floor_div(v, 1_000)

  defp precision(:second), do: 0
  defp precision(:millisecond), do: 3
  defp precision(_), do: 6
end
