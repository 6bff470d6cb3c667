defmodule HFBridge.Spec do
  @schema [
    config: [
      type: {:or, [:string, nil]},
      default: nil,
      type_doc: "`String.t() | nil`",
      doc: "Dataset configuration name (HF `name`)."
    ],
    split: [
      type: {:or, [:string, :atom, nil]},
      default: nil,
      type_doc: "`String.t() | nil`",
      doc: "Split to read; `nil` reads `\"train\"`."
    ],
    revision: [
      type: {:or, [:string, nil]},
      default: nil,
      type_doc: "`String.t() | nil`",
      doc: "Hub revision: branch, tag or commit."
    ],
    data_files: [
      type: {:custom, __MODULE__, :check_data_files},
      default: nil,
      type_doc: "`String.t() | [String.t()] | %{split => String.t() | [String.t()]}`",
      doc:
        "Data files for packaged builders (`\"parquet\"`, `\"json\"`, `\"csv\"`, `\"arrow\"`, " <>
          "`\"text\"`) and dataset folders; globs allowed. A map gives files per split."
    ],
    columns: [
      type: {:custom, __MODULE__, :check_columns},
      default: nil,
      type_doc: "`[String.t()] | nil`",
      doc: "Columns to keep, in this order; `nil` keeps all."
    ],
    filters: [
      type: {:custom, __MODULE__, :check_filters},
      default: nil,
      type_doc: "`[[{column, op, value}]] | [{column, op, value}] | nil`",
      doc:
        "Row filters on Parquet data in disjunctive normal form: a list of AND-clauses, " <>
          "or one clause. `op` is one of `:==`, `:!=`, `:<`, `:<=`, `:>`, `:>=`, `:in`, " <>
          "`:not_in`; values are integers, floats, strings or booleans (lists for `:in`)."
    ],
    shuffle: [
      type: {:custom, __MODULE__, :check_shuffle},
      default: false,
      type_doc: "`boolean() | [seed: non_neg_integer(), buffer: pos_integer()]`",
      doc:
        "Shuffle with a seeded buffer. `true` uses seed 0 and the server's buffer size " <>
          "(1000 rows unless configured)."
    ],
    shard: [
      type: {:custom, __MODULE__, :check_shard},
      default: nil,
      type_doc: "`{index, count} | nil`",
      doc: "Read shard `index` (0-based) of `count` shards of the source."
    ],
    skip: [type: :non_neg_integer, default: 0, doc: "Rows to skip first."],
    take: [
      type: {:or, [:non_neg_integer, nil]},
      default: nil,
      type_doc: "`non_neg_integer() | nil`",
      doc: "Read at most this many rows (after `:skip`); `nil` reads all."
    ],
    batch_size: [
      type: {:or, [:pos_integer, nil]},
      default: nil,
      type_doc: "`pos_integer() | nil`",
      doc: "Rows per batch; `nil` uses the server default."
    ],
    max_batch_bytes: [
      type: {:or, [:pos_integer, nil]},
      default: nil,
      type_doc: "`pos_integer() | nil`",
      doc: "Byte cap per batch (Arrow buffer bytes); `nil` uses the server default."
    ]
  ]

  @moduledoc """
  Builds the wire `DatasetSpec` (and `OpenRequest`) from a dataset name and
  keyword options, mirroring `datasets.load_dataset(..., streaming=True)`.

  The dataset is a Hub id (`"user/name"`), a packaged builder (`"parquet"`,
  `"json"`, `"csv"`, `"arrow"`, `"text"`) used with `:data_files`, or a local
  dataset folder laid out as on the Hub.

  ## Options

  #{HFBridge.Options.docs(@schema)}

  ## Examples

      iex> {:ok, spec} = HFBridge.Spec.build("parquet", data_files: "data/*.parquet", take: 10)
      iex> {spec.path, spec.take, spec.data_files}
      {"parquet", 10, [%{split: "", patterns: ["data/*.parquet"]}]}

      iex> {:error, error} = HFBridge.Spec.build("imdb", splt: "test")
      iex> error.message =~ "unknown option :splt"
      true
  """

  alias HFBridge.{Error, Options}

  @typedoc "A `DatasetSpec` message as a map with the proto field names as keys."
  @type t :: %{
          path: String.t(),
          config: String.t(),
          split: String.t(),
          revision: String.t(),
          data_files: [%{split: String.t(), patterns: [String.t()]}],
          columns: [String.t()],
          filters: [%{all: [map()]}],
          shuffle: boolean(),
          seed: non_neg_integer(),
          shuffle_buffer: non_neg_integer(),
          num_shards: non_neg_integer(),
          shard_index: non_neg_integer(),
          skip: non_neg_integer(),
          take: non_neg_integer() | nil
        }

  @typedoc "An `OpenRequest` message as a map."
  @type open_request :: %{
          spec: t(),
          batch_size: non_neg_integer(),
          max_batch_bytes: non_neg_integer()
        }

  @ops %{
    :== => "==",
    :!= => "!=",
    :< => "<",
    :<= => "<=",
    :> => ">",
    :>= => ">=",
    :in => "in",
    :not_in => "not in"
  }

  @doc "The options schema (see `HFBridge.Options`) of dataset options."
  @spec schema() :: HFBridge.Options.schema()
  def schema, do: @schema

  @doc "The names of all dataset options."
  @spec option_names() :: [atom()]
  def option_names, do: Keyword.keys(@schema)

  @doc """
  Validates `opts` and returns the `DatasetSpec` map for `dataset`.

  `:batch_size` and `:max_batch_bytes` are accepted and validated but belong
  to the open request (see `open_request/2`).
  """
  @spec build(String.t(), keyword()) :: {:ok, t()} | {:error, Error.t()}
  def build(dataset, opts \\ []) do
    with :ok <- check_dataset(dataset),
         {:ok, valid} <- Options.validate(opts, @schema) do
      {:ok, to_spec(dataset, valid)}
    end
  end

  @doc "Validates `opts` and returns the `OpenRequest` map for `dataset`."
  @spec open_request(String.t(), keyword()) :: {:ok, open_request()} | {:error, Error.t()}
  def open_request(dataset, opts \\ []) do
    with :ok <- check_dataset(dataset),
         {:ok, valid} <- Options.validate(opts, @schema) do
      {:ok,
       %{
         spec: to_spec(dataset, valid),
         batch_size: valid[:batch_size] || 0,
         max_batch_bytes: valid[:max_batch_bytes] || 0
       }}
    end
  end

  defp check_dataset(dataset) when is_binary(dataset) and dataset != "", do: :ok

  defp check_dataset(dataset) do
    {:error,
     Error.new(
       :options,
       :invalid_option,
       "dataset must be a non-empty string, got: #{inspect(dataset, limit: 10)}"
     )}
  end

  defp to_spec(dataset, valid) do
    {shuffle, seed, buffer} =
      case valid[:shuffle] do
        {_, _, _} = shuffle -> shuffle
        _unset -> {false, 0, 0}
      end

    {shard_index, num_shards} = valid[:shard] || {0, 0}

    %{
      path: dataset,
      config: valid[:config] || "",
      split: to_string(valid[:split] || ""),
      revision: valid[:revision] || "",
      data_files: valid[:data_files] || [],
      columns: valid[:columns] || [],
      filters: valid[:filters] || [],
      shuffle: shuffle,
      seed: seed,
      shuffle_buffer: buffer,
      num_shards: num_shards,
      shard_index: shard_index,
      skip: valid[:skip],
      take: valid[:take]
    }
  end

  # -- custom validators (public for HFBridge.Options) -------------------------

  @doc false
  @spec check_data_files(term()) :: {:ok, [map()] | nil} | {:error, String.t()}
  def check_data_files(nil), do: {:ok, nil}
  def check_data_files(pattern) when is_binary(pattern), do: check_data_files([pattern])

  def check_data_files(patterns) when is_list(patterns) do
    if patterns != [] and Enum.all?(patterns, &(is_binary(&1) and &1 != "")) do
      {:ok, [%{split: "", patterns: patterns}]}
    else
      {:error,
       "expected a non-empty list of non-empty path strings, got: #{inspect(patterns, limit: 10)}"}
    end
  end

  def check_data_files(per_split) when is_map(per_split) and map_size(per_split) > 0 do
    per_split
    |> Enum.sort_by(fn {split, _} -> to_string(split) end)
    |> Enum.reduce_while({:ok, []}, fn {split, patterns}, {:ok, acc} ->
      with true <- (is_binary(split) and split != "") or (is_atom(split) and not is_nil(split)),
           {:ok, [%{patterns: patterns}]} <- check_data_files(patterns) do
        {:cont, {:ok, [%{split: to_string(split), patterns: patterns} | acc]}}
      else
        _ ->
          {:halt,
           {:error,
            "expected a map of split name to path string or list of path strings, got: " <>
              inspect(per_split, limit: 10)}}
      end
    end)
    |> case do
      {:ok, acc} -> {:ok, Enum.reverse(acc)}
      error -> error
    end
  end

  def check_data_files(other),
    do:
      {:error,
       "expected a path string, a list of them, or a map of split to paths, got: #{inspect(other, limit: 10)}"}

  @doc false
  @spec check_columns(term()) :: {:ok, [String.t()] | nil} | {:error, String.t()}
  def check_columns(nil), do: {:ok, nil}

  def check_columns(columns) when is_list(columns) do
    if Enum.all?(columns, &column_name?/1) do
      {:ok, Enum.map(columns, &to_string/1)}
    else
      {:error, "expected a list of column names (strings), got: #{inspect(columns, limit: 10)}"}
    end
  end

  def check_columns(other),
    do: {:error, "expected a list of column names (strings), got: #{inspect(other, limit: 10)}"}

  defp column_name?(name),
    do: (is_binary(name) and name != "") or (is_atom(name) and name not in [nil, true, false])

  @doc false
  @spec check_shuffle(term()) ::
          {:ok, {boolean(), non_neg_integer(), non_neg_integer()}} | {:error, String.t()}
  def check_shuffle(false), do: {:ok, {false, 0, 0}}
  def check_shuffle(nil), do: {:ok, {false, 0, 0}}
  def check_shuffle(true), do: {:ok, {true, 0, 0}}

  def check_shuffle(opts) when is_list(opts) do
    schema = [
      seed: [type: :non_neg_integer, default: 0],
      buffer: [type: :pos_integer]
    ]

    case Options.validate(opts, schema) do
      {:ok, valid} -> {:ok, {true, valid[:seed], valid[:buffer] || 0}}
      {:error, %Error{message: message}} -> {:error, message}
    end
  end

  def check_shuffle(other),
    do:
      {:error,
       "expected true, false or [seed: integer, buffer: integer], got: #{inspect(other, limit: 10)}"}

  @doc false
  @spec check_shard(term()) ::
          {:ok, {non_neg_integer(), pos_integer()} | nil} | {:error, String.t()}
  def check_shard(nil), do: {:ok, nil}

  def check_shard({index, count})
      when is_integer(index) and is_integer(count) and count > 0 and index >= 0 and index < count,
      do: {:ok, {index, count}}

  def check_shard(other),
    do:
      {:error,
       "expected {index, count} with 0 <= index < count, got: #{inspect(other, limit: 10)}"}

  @doc false
  @spec check_filters(term()) :: {:ok, [map()] | nil} | {:error, String.t()}
  def check_filters(nil), do: {:ok, nil}
  def check_filters([]), do: {:ok, nil}

  def check_filters([first | _] = clauses) when is_list(first) do
    clauses
    |> Enum.reduce_while({:ok, []}, fn clause, {:ok, acc} ->
      case clause(clause) do
        {:ok, filters} -> {:cont, {:ok, [%{all: filters} | acc]}}
        {:error, reason} -> {:halt, {:error, reason}}
      end
    end)
    |> case do
      {:ok, acc} -> {:ok, Enum.reverse(acc)}
      error -> error
    end
  end

  def check_filters([first | _] = clause) when is_tuple(first) do
    with {:ok, filters} <- clause(clause), do: {:ok, [%{all: filters}]}
  end

  def check_filters(other),
    do:
      {:error,
       "expected a list of {column, op, value} tuples or a list of such lists, got: #{inspect(other, limit: 10)}"}

  defp clause(clause) when is_list(clause) and clause != [] do
    Enum.reduce_while(clause, {:ok, []}, fn filter, {:ok, acc} ->
      case filter(filter) do
        {:ok, filter} -> {:cont, {:ok, acc ++ [filter]}}
        {:error, reason} -> {:halt, {:error, reason}}
      end
    end)
  end

  defp clause(other),
    do:
      {:error,
       "each filter clause must be a non-empty list of tuples, got: #{inspect(other, limit: 10)}"}

  defp filter({column, op, value} = filter) do
    with {:column, true} <- {:column, column_name?(column)},
         {:ok, op} <- op(op),
         {:ok, value_fields} <- filter_value(op, value) do
      {:ok, Map.merge(%{column: to_string(column), op: op, value: nil, values: []}, value_fields)}
    else
      {:column, false} -> {:error, "filter #{inspect(filter)}: column must be a string"}
      {:error, reason} -> {:error, "filter #{inspect(filter)}: #{reason}"}
    end
  end

  defp filter(other),
    do: {:error, "expected a {column, op, value} tuple, got: #{inspect(other, limit: 10)}"}

  defp op(op) when is_map_key(@ops, op), do: {:ok, Map.fetch!(@ops, op)}

  defp op(op) when is_binary(op) do
    if op in Map.values(@ops), do: {:ok, op}, else: op(:invalid)
  end

  defp op(op),
    do:
      {:error,
       "unknown operator #{inspect(op)}; use one of #{Enum.map_join(Map.keys(@ops), ", ", &inspect/1)}"}

  defp filter_value(op, values) when op in ["in", "not in"] do
    if is_list(values) and values != [] do
      Enum.reduce_while(values, {:ok, []}, fn value, {:ok, acc} ->
        case scalar(value) do
          {:ok, scalar} -> {:cont, {:ok, acc ++ [scalar]}}
          error -> {:halt, error}
        end
      end)
      |> case do
        {:ok, scalars} -> {:ok, %{values: scalars}}
        error -> error
      end
    else
      {:error, "#{inspect(op)} needs a non-empty list of values"}
    end
  end

  defp filter_value(_op, value) do
    with {:ok, scalar} <- scalar(value), do: {:ok, %{value: scalar}}
  end

  @doc false
  @spec scalar(term()) :: {:ok, map()} | {:error, String.t()}
  def scalar(value) when is_boolean(value), do: {:ok, %{bool_value: value}}
  def scalar(value) when is_integer(value), do: {:ok, %{int_value: value}}
  def scalar(value) when is_float(value), do: {:ok, %{float_value: value}}
  def scalar(value) when is_binary(value), do: {:ok, %{string_value: value}}

  def scalar(value),
    do:
      {:error,
       "filter values must be integers, floats, strings or booleans, got: #{inspect(value, limit: 10)}"}
end
