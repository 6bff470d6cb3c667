defmodule HFBridge.Info do
  @moduledoc """
  What a dataset offers, as returned by `HFBridge.info/3`: its HF features,
  Arrow schema, splits, source shards, builder and configurations.
  """

  alias HFBridge.{Client, Error, Spec}

  defstruct [
    :dataset,
    :features,
    :features_json,
    :schema,
    :arrow_schema,
    :builder,
    :description,
    splits: [],
    configs: [],
    num_shards: 0
  ]

  @typedoc "A split: name and, when known, its row and byte counts."
  @type split :: %{
          name: String.t(),
          num_rows: non_neg_integer() | nil,
          num_bytes: non_neg_integer() | nil
        }

  @typedoc """
  * `:dataset` — the dataset path asked about.
  * `:features` — HF `Features` as decoded JSON (string keys), `nil` when the
    server sent none.
  * `:features_json` — the same as the server sent it.
  * `:schema` — the Arrow schema (`HFBridge.Arrow.read_schema/1`), or `nil`
    when absent or undecodable.
  * `:arrow_schema` — the schema as an Arrow IPC stream.
  * `:splits`, `:configs`, `:num_shards` (source files of the requested
    split), `:builder` (`"parquet"`, `"json"`, ...), `:description`.
  """
  @type t :: %__MODULE__{
          dataset: String.t(),
          features: map() | nil,
          features_json: String.t(),
          schema: term(),
          arrow_schema: binary(),
          builder: String.t(),
          description: String.t(),
          splits: [split()],
          configs: [String.t()],
          num_shards: non_neg_integer()
        }

  @doc """
  Asks the server about `dataset`. Takes dataset options (see
  `HFBridge.Spec`) plus `:timeout`.
  """
  @spec fetch(Client.t(), String.t(), keyword()) :: {:ok, t()} | {:error, Error.t()}
  def fetch(%Client{} = client, dataset, opts \\ []) do
    {call_opts, spec_opts} = Keyword.split(opts, [:timeout])

    with {:ok, spec} <- Spec.build(dataset, spec_opts),
         {:ok, message} <- Client.call(client, :GetInfo, spec, call_opts) do
      from_message(dataset, message)
    end
  end

  @doc "Builds the struct from a decoded `DatasetInfo` message."
  @spec from_message(String.t(), map()) :: {:ok, t()} | {:error, Error.t()}
  def from_message(dataset, message) do
    with {:ok, features} <- features(message.features_json) do
      {:ok,
       %__MODULE__{
         dataset: dataset,
         features: features,
         features_json: message.features_json,
         schema: schema(message.arrow_schema),
         arrow_schema: message.arrow_schema,
         builder: message.builder,
         description: message.description,
         splits: Enum.map(message.splits, &Map.take(&1, [:name, :num_rows, :num_bytes])),
         configs: message.configs,
         num_shards: message.num_shards
       }}
    end
  end

  @doc false
  @spec features(String.t() | nil) :: {:ok, map() | nil} | {:error, Error.t()}
  def features(json) when json in [nil, ""], do: {:ok, nil}

  def features(json) do
    case HFBridge.JSON.decode(json) do
      {:ok, features} ->
        {:ok, features}

      {:error, %Error{}} = error ->
        error

      {:error, reason} ->
        {:error, Error.new(:json, :malformed, "features JSON: #{inspect(reason)}")}
    end
  end

  defp schema(ipc) when ipc in [nil, ""], do: nil

  defp schema(ipc) do
    case HFBridge.Arrow.read_schema(ipc) do
      {:ok, schema} -> schema
      _ -> nil
    end
  end
end
