defmodule HFBridge.Arrow.Dictionary do
  @moduledoc false
  # The values of one dictionary of an IPC stream, looked up by index.
  #
  # A dictionary that arrived whole is a tuple (constant-time lookups). The
  # first delta batch for it turns it into an `:array` (logarithmic lookups
  # and appends), so a stream of many deltas costs time in proportion to the
  # values it adds rather than, delta after delta, to the whole dictionary.

  @typedoc "A dictionary: `{:tuple, values}` or, after a delta, `{:array, values}`."
  @type t :: {:tuple, tuple()} | {:array, :array.array()}

  @doc "A dictionary of `values` (a replacement dictionary batch)."
  @spec new([term()]) :: t()
  def new(values), do: {:tuple, List.to_tuple(values)}

  @doc "`dict` with `values` appended (a delta dictionary batch)."
  @spec append(t(), [term()]) :: t()
  def append({:tuple, values}, more),
    do: append({:array, :array.from_list(Tuple.to_list(values))}, more)

  def append({:array, array}, more) do
    {:array,
     Enum.reduce(more, array, fn value, acc -> :array.set(:array.size(acc), value, acc) end)}
  end

  @doc "Number of values."
  @spec size(t()) :: non_neg_integer()
  def size({:tuple, values}), do: tuple_size(values)
  def size({:array, array}), do: :array.size(array)

  @doc "The value at `index` (`0 <= index < size(dict)`)."
  @spec at(t(), non_neg_integer()) :: term()
  def at({:tuple, values}, index), do: elem(values, index)
  def at({:array, array}, index), do: :array.get(index, array)
end
