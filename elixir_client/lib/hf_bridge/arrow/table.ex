defmodule HFBridge.Arrow.Table do
  @moduledoc """
  A decoded Arrow table: the schema, the row count and one value list per
  column, in schema order (`columns: [{name, values}]`). Nulls are `nil`.
  See `HFBridge.Arrow` for how each Arrow type is represented.
  """

  alias HFBridge.Arrow.Schema

  @type t :: %__MODULE__{
          schema: Schema.t(),
          num_rows: non_neg_integer(),
          columns: [{String.t(), list()}]
        }

  defstruct schema: %Schema{}, num_rows: 0, columns: []

  @doc "Builds a table from a schema, a row count and the column value lists in schema order."
  @spec new(Schema.t(), non_neg_integer(), [list()]) :: t()
  def new(%Schema{fields: fields} = schema, num_rows, column_values) do
    columns = Enum.zip_with(fields, column_values, fn f, values -> {f.name, values} end)
    %__MODULE__{schema: schema, num_rows: num_rows, columns: columns}
  end

  @doc """
  Concatenates tables sharing `schema` into one table (linear in the total
  number of values).
  """
  @spec concat(Schema.t(), [t()]) :: t()
  def concat(%Schema{fields: fields} = schema, tables) do
    per_column =
      case tables do
        [] ->
          Enum.map(fields, fn _ -> [] end)

        [one] ->
          Enum.map(one.columns, &elem(&1, 1))

        _ ->
          tables
          |> Enum.map(fn t -> Enum.map(t.columns, &elem(&1, 1)) end)
          |> Enum.zip_with(&:lists.append/1)
      end

    new(schema, Enum.reduce(tables, 0, &(&1.num_rows + &2)), per_column)
  end

  @doc "The values of column `name`, or `nil` when the table has no such column."
  @spec column(t(), String.t()) :: list() | nil
  def column(%__MODULE__{columns: columns}, name) do
    case List.keyfind(columns, name, 0) do
      {_, values} -> values
      nil -> nil
    end
  end

  @doc "The rows of the table as maps with string keys, in row order."
  @spec to_rows(t()) :: [%{String.t() => term()}]
  def to_rows(%__MODULE__{columns: columns, num_rows: n}) do
    {names, values} = Enum.unzip(columns)
    zip_rows(names, values, n)
  end

  @doc """
  Transposes `columns` (each at least `n` long) into `n` maps keyed by
  `names`. Used for rows and for struct values.
  """
  @spec zip_rows([String.t()], [list()], non_neg_integer()) :: [map()]
  def zip_rows(_names, _columns, 0), do: []
  def zip_rows([], _columns, n), do: List.duplicate(%{}, n)

  def zip_rows(names, columns, n) do
    {heads, tails} = split_heads(columns)
    [:maps.from_list(:lists.zip(names, heads)) | zip_rows(names, tails, n - 1)]
  end

  defp split_heads([]), do: {[], []}

  defp split_heads([[h | t] | rest]) do
    {hs, ts} = split_heads(rest)
    {[h | hs], [t | ts]}
  end
end
