defmodule HFBridge.CLI.Describe do
  @moduledoc """
  Renders an `HFBridge.Info` for people (`text/1`) or programs (`to_json/1`),
  as `mix hf.info` prints it.
  """

  alias HFBridge.Arrow.Field
  alias HFBridge.Info

  @doc "A multi-line description: builder, configs, shards, splits, features, Arrow schema."
  @spec text(Info.t()) :: String.t()
  def text(%Info{} = info) do
    lines =
      [
        "dataset:    #{info.dataset}",
        "builder:    #{info.builder}",
        if(info.configs != [], do: "configs:    #{Enum.join(info.configs, ", ")}"),
        "num_shards: #{info.num_shards}",
        "splits:"
      ] ++
        Enum.map(info.splits, &"  #{&1.name}: #{split_rows(&1)}") ++
        ["features:"] ++
        features(info.features, info.schema) ++
        schema(info.schema)

    lines |> Enum.reject(&is_nil/1) |> Enum.map_join("", &(&1 <> "\n"))
  end

  @doc "The description as JSON terms (features as the server sent them)."
  @spec to_json(Info.t()) :: map()
  def to_json(%Info{} = info) do
    %{
      "dataset" => info.dataset,
      "builder" => info.builder,
      "configs" => info.configs,
      "num_shards" => info.num_shards,
      "splits" =>
        Enum.map(
          info.splits,
          &%{"name" => &1.name, "num_rows" => &1.num_rows, "num_bytes" => &1.num_bytes}
        ),
      "features" => info.features,
      "arrow_schema" =>
        if(info.schema,
          do: Enum.map(info.schema.fields, &%{"name" => &1.name, "type" => type(&1)})
        )
    }
  end

  defp split_rows(%{num_rows: nil}), do: "rows unknown"
  defp split_rows(%{num_rows: n, num_bytes: nil}), do: "#{n} rows"
  defp split_rows(%{num_rows: n, num_bytes: b}), do: "#{n} rows, #{HFBridge.CLI.Format.bytes(b)}"

  defp features(nil, _schema), do: ["  (unknown)"]
  defp features(features, _schema) when map_size(features) == 0, do: ["  (none)"]

  # Features come as a JSON object (no order); list them in the schema's column order.
  defp features(features, schema) do
    order = if schema, do: Enum.map(schema.fields, & &1.name), else: []

    features
    |> Enum.sort_by(fn {name, _} -> Enum.find_index(order, &(&1 == name)) || length(order) end)
    |> Enum.map(fn {name, f} -> "  #{name}: #{feature(f)}" end)
  end

  @doc """
  One HF feature (as in `Features.to_dict()`) in short form, e.g.
  `string`, `ClassLabel(neg, pos)`, `list<int64>`, `{a: string, b: int32}`.
  """
  @spec feature(term()) :: String.t()
  def feature(%{"_type" => "Value", "dtype" => dtype}), do: dtype

  def feature(%{"_type" => "ClassLabel", "names" => names}) when is_list(names),
    do: "ClassLabel(#{Enum.join(names, ", ")})"

  def feature(%{"_type" => type, "feature" => inner} = f)
      when type in ["Sequence", "List", "LargeList"] do
    length = Map.get(f, "length", -1)
    suffix = if is_integer(length) and length >= 0, do: ", length: #{length}", else: ""
    "list<#{feature(inner)}#{suffix}>"
  end

  def feature(%{"_type" => type} = f) do
    extras =
      f
      |> Map.drop(["_type", "id"])
      |> Enum.reject(fn {_, v} -> is_nil(v) end)
      |> Enum.map_join(", ", fn {k, v} -> "#{k}: #{inspect(v)}" end)

    if extras == "", do: type, else: "#{type}(#{extras})"
  end

  def feature(f) when is_map(f),
    do: "{" <> Enum.map_join(f, ", ", fn {k, v} -> "#{k}: #{feature(v)}" end) <> "}"

  def feature([inner]), do: "list<#{feature(inner)}>"
  def feature(other), do: inspect(other)

  defp schema(nil), do: []

  defp schema(schema) do
    ["arrow schema:" | Enum.map(schema.fields, &"  #{&1.name}: #{type(&1)}")]
  end

  @doc "An Arrow field's type in short form, e.g. `list<item: int64>`, `timestamp[us, UTC]`."
  @spec type(Field.t()) :: String.t()
  def type(%Field{type: type, children: children}) do
    case type do
      t when t in [:list, :large_list] -> "#{t}<#{children_text(children)}>"
      {:fixed_size_list, n} -> "fixed_size_list<#{children_text(children)}>[#{n}]"
      :struct -> "struct<#{children_text(children)}>"
      {:map, _} -> "map<#{children_text(children)}>"
      {:timestamp, unit, nil} -> "timestamp[#{unit(unit)}]"
      {:timestamp, unit, tz} -> "timestamp[#{unit(unit)}, #{tz}]"
      {kind, unit} when kind in [:time32, :time64, :duration] -> "#{kind}[#{unit(unit)}]"
      {:fixed_size_binary, n} -> "fixed_size_binary[#{n}]"
      {:decimal, p, s, _} -> "decimal(#{p}, #{s})"
      {:unsupported, name} -> "#{name} (unsupported)"
      atom when is_atom(atom) -> Atom.to_string(atom)
      other -> inspect(other)
    end
  end

  defp children_text(children), do: Enum.map_join(children, ", ", &"#{&1.name}: #{type(&1)}")

  defp unit(:second), do: "s"
  defp unit(:millisecond), do: "ms"
  defp unit(:microsecond), do: "us"
  defp unit(:nanosecond), do: "ns"
end
