defmodule HFBridge.CLI.Format do
  @moduledoc """
  Terminal output of the `mix hf.*` tasks: rows as aligned text tables or as
  JSON lines, and human-readable sizes and rates.

  Values that JSON cannot hold are mapped to JSON: binaries that are not
  UTF-8 become base64 strings, calendar values ISO 8601 strings, `:nan` and
  infinities `null`, decimals `{unscaled, scale}` numbers, map-typed
  columns (lists of `{key, value}`) objects.
  """

  @default_width 40

  @doc "Converts a row value to plain JSON terms (maps, lists, strings, numbers, booleans, nil)."
  @spec jsonable(term()) :: term()
  def jsonable(value) when is_binary(value) do
    if String.valid?(value), do: value, else: Base.encode64(value)
  end

  def jsonable(value) when value in [:nan, :infinity, :neg_infinity], do: nil
  def jsonable(value) when is_number(value) or is_boolean(value) or is_nil(value), do: value
  def jsonable(%DateTime{} = value), do: DateTime.to_iso8601(value)
  def jsonable(%NaiveDateTime{} = value), do: NaiveDateTime.to_iso8601(value)
  def jsonable(%Date{} = value), do: Date.to_iso8601(value)
  def jsonable(%Time{} = value), do: Time.to_iso8601(value)

  def jsonable({unscaled, scale}) when is_integer(unscaled) and is_integer(scale),
    do: unscaled / :math.pow(10, scale)

  def jsonable(value) when is_map(value),
    do: Map.new(value, fn {k, v} -> {to_string(k), jsonable(v)} end)

  def jsonable(value) when is_list(value) do
    if pairs?(value) do
      Map.new(value, fn {k, v} -> {k, jsonable(v)} end)
    else
      Enum.map(value, &jsonable/1)
    end
  end

  def jsonable(value) when is_atom(value), do: Atom.to_string(value)
  def jsonable(value), do: inspect(value)

  @doc "One row as a JSON line (no trailing newline)."
  @spec json_line(map()) :: iodata()
  def json_line(row), do: HFBridge.JSON.encode!(jsonable(row))

  @doc """
  A value as table-cell text on one line: strings as they are (newlines and
  tabs escaped), binaries as `<N bytes>`, nested values in compact JSON.
  """
  @spec cell(term()) :: String.t()
  def cell(nil), do: "null"

  def cell(value) when is_binary(value) do
    if String.valid?(value) and String.printable?(value) do
      value
      |> String.replace("\n", "\\n")
      |> String.replace("\t", "\\t")
      |> String.replace("\r", "\\r")
    else
      "<#{byte_size(value)} bytes>"
    end
  end

  def cell(value) when is_float(value), do: short_float(value)

  def cell(value) when is_integer(value) or is_boolean(value) or is_atom(value),
    do: to_string(value)

  def cell(%{__struct__: _} = value), do: value |> jsonable() |> to_string()

  def cell(value) when is_map(value) or is_list(value) do
    value |> cell_json() |> HFBridge.JSON.encode!() |> IO.iodata_to_binary() |> cell()
  end

  def cell(value), do: inspect(value)

  defp cell_json(value) when is_binary(value) do
    if String.printable?(value), do: value, else: "<#{byte_size(value)} bytes>"
  end

  defp cell_json(%{__struct__: _} = value), do: jsonable(value)

  defp cell_json(value) when is_map(value),
    do: Map.new(value, fn {k, v} -> {to_string(k), cell_json(v)} end)

  defp cell_json(value) when is_list(value) do
    if pairs?(value),
      do: Map.new(value, fn {k, v} -> {k, cell_json(v)} end),
      else: Enum.map(value, &cell_json/1)
  end

  defp cell_json(value), do: jsonable(value)

  # A float32 column arrives widened to a double (0.446 shows as
  # 0.44600000977516174): print the fewest significant digits that read back
  # as the same float32. Doubles that are not float32 values print in full.
  defp short_float(value) when is_float(value) and abs(value) < 3.0e38 do
    bits = <<value::float-32>>
    <<single::float-32>> = bits

    if single == value do
      Enum.find_value(1..9, Float.to_string(value), &float32_digits(value, bits, &1))
    else
      Float.to_string(value)
    end
  end

  defp short_float(value), do: Float.to_string(value)

  defp float32_digits(value, bits, digits) do
    text = :io_lib.format("~.#{digits}g", [value]) |> IO.iodata_to_binary() |> String.trim()

    with {parsed, ""} <- Float.parse(text),
         true <- <<parsed::float-32>> == bits do
      Float.to_string(parsed)
    else
      _ -> nil
    end
  end

  defp pairs?(list), do: list != [] and Enum.all?(list, &match?({k, _} when is_binary(k), &1))

  @doc "Truncates `text` to `width` characters, marking the cut with `…`."
  @spec truncate(String.t(), pos_integer()) :: String.t()
  def truncate(text, width) do
    if String.length(text) > width,
      do: String.slice(text, 0, max(width - 1, 0)) <> "…",
      else: text
  end

  @doc """
  Column widths for `columns` from the header and the cells of `rows`, each
  capped at `max_width` (default #{@default_width}).
  """
  @spec widths([String.t()], [map()], pos_integer()) :: [pos_integer()]
  def widths(columns, rows, max_width \\ @default_width) do
    Enum.map(columns, fn column ->
      rows
      |> Enum.map(&String.length(cell(Map.get(&1, column))))
      |> Enum.max(fn -> 0 end)
      |> max(String.length(column))
      |> min(max_width)
      |> max(1)
    end)
  end

  @doc "The header line and the rule line under it."
  @spec header([String.t()], [pos_integer()]) :: iodata()
  def header(columns, widths) do
    [line(columns, widths), "\n", Enum.map_join(widths, "  ", &String.duplicate("-", &1)), "\n"]
  end

  @doc """
  One table row: cells padded to `widths` and separated by two spaces;
  text longer than its column is cut, numbers never are (the row widens).
  """
  @spec row(map(), [String.t()], [pos_integer()]) :: iodata()
  def row(row, columns, widths) do
    cells = Enum.map(columns, &Map.get(row, &1))
    [line(Enum.map(cells, &cell/1), widths, Enum.map(cells, &is_number/1)), "\n"]
  end

  defp line(texts, widths, keep \\ nil) do
    keep = keep || Enum.map(texts, fn _ -> false end)

    [texts, widths, keep]
    |> Enum.zip()
    |> Enum.map_join("  ", fn
      {text, width, true} -> String.pad_trailing(text, width)
      {text, width, false} -> String.pad_trailing(truncate(text, width), width)
    end)
    |> String.trim_trailing()
  end

  @doc "A byte count as `12.3 MB` (decimal units)."
  @spec bytes(non_neg_integer()) :: String.t()
  def bytes(n) when n < 1000, do: "#{n} B"
  def bytes(n) when n < 1_000_000, do: "#{Float.round(n / 1000, 1)} kB"
  def bytes(n) when n < 1_000_000_000, do: "#{Float.round(n / 1_000_000, 1)} MB"
  def bytes(n), do: "#{Float.round(n / 1_000_000_000, 2)} GB"

  @doc "The closing summary: `N rows in T s (R rows/s, M MB/s)`."
  @spec summary(non_neg_integer(), non_neg_integer(), number()) :: String.t()
  def summary(rows, bytes, seconds) do
    seconds = max(seconds, 1.0e-6)

    "#{rows} rows in #{:erlang.float_to_binary(seconds * 1.0, decimals: 2)} s " <>
      "(#{round(rows / seconds)} rows/s, #{:erlang.float_to_binary(bytes / 1_000_000 / seconds, decimals: 2)} MB/s)"
  end
end
