defmodule HFBridge.HPACK.Table do
  @moduledoc """
  The HPACK indexing tables (RFC 7541, Section 2.3): the 61-entry static
  table (Appendix A) followed by a FIFO dynamic table bounded in octets.

  Entry size is `byte_size(name) + byte_size(value) + 32` (Section 4.1).
  Index 1..61 address the static table, 62.. the dynamic table, newest first.
  """

  @static [
    {":authority", ""},
    {":method", "GET"},
    {":method", "POST"},
    {":path", "/"},
    {":path", "/index.html"},
    {":scheme", "http"},
    {":scheme", "https"},
    {":status", "200"},
    {":status", "204"},
    {":status", "206"},
    {":status", "304"},
    {":status", "400"},
    {":status", "404"},
    {":status", "500"},
    {"accept-charset", ""},
    {"accept-encoding", "gzip, deflate"},
    {"accept-language", ""},
    {"accept-ranges", ""},
    {"accept", ""},
    {"access-control-allow-origin", ""},
    {"age", ""},
    {"allow", ""},
    {"authorization", ""},
    {"cache-control", ""},
    {"content-disposition", ""},
    {"content-encoding", ""},
    {"content-language", ""},
    {"content-length", ""},
    {"content-location", ""},
    {"content-range", ""},
    {"content-type", ""},
    {"cookie", ""},
    {"date", ""},
    {"etag", ""},
    {"expect", ""},
    {"expires", ""},
    {"from", ""},
    {"host", ""},
    {"if-match", ""},
    {"if-modified-since", ""},
    {"if-none-match", ""},
    {"if-range", ""},
    {"if-unmodified-since", ""},
    {"last-modified", ""},
    {"link", ""},
    {"location", ""},
    {"max-forwards", ""},
    {"proxy-authenticate", ""},
    {"proxy-authorization", ""},
    {"range", ""},
    {"referer", ""},
    {"refresh", ""},
    {"retry-after", ""},
    {"server", ""},
    {"set-cookie", ""},
    {"strict-transport-security", ""},
    {"transfer-encoding", ""},
    {"user-agent", ""},
    {"vary", ""},
    {"via", ""},
    {"www-authenticate", ""}
  ]

  @static_count length(@static)
  @static_tuple List.to_tuple(@static)
  # {name, value} => index and name => first index, for the encoder.
  @static_full @static |> Enum.with_index(1) |> Enum.reverse() |> Map.new()
  @static_names @static
                |> Enum.with_index(1)
                |> Enum.reverse()
                |> Map.new(fn {{name, _}, i} -> {name, i} end)

  defstruct entries: [], count: 0, size: 0, max_size: 4096

  @type t :: %__MODULE__{
          entries: [{binary(), binary()}],
          count: non_neg_integer(),
          size: non_neg_integer(),
          max_size: non_neg_integer()
        }

  @doc "A new table whose dynamic part holds at most `max_size` octets."
  @spec new(non_neg_integer()) :: t()
  def new(max_size \\ 4096), do: %__MODULE__{max_size: max_size}

  @doc "Number of static entries (61)."
  @spec static_count() :: pos_integer()
  def static_count, do: @static_count

  @doc "Looks up an index in the static then dynamic table."
  @spec lookup(t(), non_neg_integer()) :: {:ok, {binary(), binary()}} | :error
  def lookup(_table, index) when index >= 1 and index <= @static_count,
    do: {:ok, elem(@static_tuple, index - 1)}

  def lookup(%__MODULE__{entries: entries, count: count}, index)
      when index > @static_count and index - @static_count <= count,
      do: {:ok, Enum.at(entries, index - @static_count - 1)}

  def lookup(_table, _index), do: :error

  @doc """
  Finds a header for encoding: `{:full, index}` when name and value match,
  `{:name, index}` when only the name does, `:none` otherwise.
  """
  @spec find(t(), binary(), binary()) :: {:full, pos_integer()} | {:name, pos_integer()} | :none
  def find(%__MODULE__{entries: entries}, name, value) do
    case Map.fetch(@static_full, {name, value}) do
      {:ok, i} ->
        {:full, i}

      :error ->
        case find_dynamic(entries, name, value, @static_count + 1, nil) do
          {:full, i} ->
            {:full, i}

          dyn_name ->
            case Map.fetch(@static_names, name) do
              {:ok, i} -> {:name, i}
              :error -> if dyn_name, do: {:name, dyn_name}, else: :none
            end
        end
    end
  end

  defp find_dynamic([], _name, _value, _i, name_hit), do: name_hit
  defp find_dynamic([{name, value} | _], name, value, i, _), do: {:full, i}

  defp find_dynamic([{name, _} | rest], name, value, i, nil),
    do: find_dynamic(rest, name, value, i + 1, i)

  defp find_dynamic([_ | rest], name, value, i, hit),
    do: find_dynamic(rest, name, value, i + 1, hit)

  @doc "Size of one entry (RFC 7541, Section 4.1)."
  @spec entry_size(binary(), binary()) :: pos_integer()
  def entry_size(name, value), do: byte_size(name) + byte_size(value) + 32

  @doc """
  Adds an entry, evicting the oldest ones first (Section 4.4). An entry larger
  than the whole table empties it and is not added.
  """
  @spec add(t(), binary(), binary()) :: t()
  def add(%__MODULE__{} = table, name, value) do
    size = entry_size(name, value)

    if size > table.max_size do
      %{table | entries: [], count: 0, size: 0}
    else
      table = evict(table, table.max_size - size)

      %{
        table
        | entries: [{name, value} | table.entries],
          count: table.count + 1,
          size: table.size + size
      }
    end
  end

  @doc "Changes the maximum size, evicting entries that no longer fit (Section 4.3)."
  @spec resize(t(), non_neg_integer()) :: t()
  def resize(%__MODULE__{} = table, max_size), do: evict(%{table | max_size: max_size}, max_size)

  defp evict(%__MODULE__{size: size} = table, limit) when size <= limit, do: table

  defp evict(%__MODULE__{entries: entries, count: count, size: size} = table, limit) do
    {kept, dropped} = Enum.split(entries, count - 1)
    [{name, value}] = dropped
    evict(%{table | entries: kept, count: count - 1, size: size - entry_size(name, value)}, limit)
  end
end
