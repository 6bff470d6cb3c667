defmodule HFBridge.Broadway.Options do
  @producer_schema [
    dataset: [
      type: :string,
      required: true,
      doc:
        "The dataset: a Hub id, a packaged builder (`\"parquet\"`, `\"json\"`, ...) " <>
          "with `:data_files`, or a dataset folder."
    ],
    client: [
      type: {:or, [{:custom, HFBridge, :check_client}, nil]},
      default: nil,
      type_doc: "`HFBridge.Client.t() | nil`",
      doc:
        "A connected client to share (connect it with `owner:` a long-lived process). Without " <>
          "it each producer connects by itself with the connection options."
    ],
    message: [
      type: {:in, [:rows, :batches]},
      default: :rows,
      doc:
        "`:rows` emits one message per row (data: a map with string keys); `:batches` one " <>
          "message per record batch (data: an `HFBridge.Batch`)."
    ],
    max_pending_batches: [
      type: :pos_integer,
      default: 4,
      doc:
        "Prefetch bound: record batches a producer holds at once, fetched but not yet fully " <>
          "acknowledged. No batch is fetched past it, whatever the demand."
    ],
    read_ahead: [
      type: :pos_integer,
      default: 2,
      doc: "Batches the server may prepare ahead of each fetch (the `ReadBatches` cap)."
    ],
    checkpoint: [
      type: {:custom, __MODULE__, :check_checkpoint},
      default: nil,
      type_doc: "`nil | Path.t() | {module(), term()}`",
      doc:
        "Where each producer keeps its resume token so a restarted pipeline resumes after the " <>
          "last fully acknowledged batch: a directory (`HFBridge.Broadway.Checkpoint.File`), or " <>
          "`{module, arg}` implementing `HFBridge.Broadway.Checkpoint`. `nil` starts every " <>
          "producer at the beginning and closes its session when it stops."
    ],
    on_failure: [
      type: {:in, [:commit, :stop]},
      default: :commit,
      doc:
        "What a failed message does to the checkpoint. `:commit`: a failed message counts as " <>
          "handled (Broadway has passed it to `handle_failed/2`). `:stop`: nothing at or after the " <>
          "first batch holding a failed message is committed and the producer fetches no more, " <>
          "so a restarted pipeline reads that batch again."
    ],
    batch_timeout: [
      type: :timeout,
      default: 60_000,
      doc: "How long to wait for each batch, in milliseconds; the wait is then retried."
    ],
    open_timeout: [
      type: :timeout,
      default: 120_000,
      doc: "Deadline for opening or resuming the session, in milliseconds."
    ],
    retry: [
      type: {:custom, HFBridge.Retry, :check},
      default: [],
      type_doc: "`keyword()`",
      doc:
        "Recovery from a dropped connection or a restarted worker or server, for reading and " <>
          "for commits alike: `max_attempts` (10), `base_delay` and `max_delay` in ms (100, " <>
          "5000); see `HFBridge.Retry`. The session resumes after its last committed batch and " <>
          "the producer goes on with no message lost or emitted twice. `[max_attempts: 0]` " <>
          "turns recovery off: the first such failure stops the producer."
    ],
    broadway: [
      type: :keyword_list,
      type_doc: "`keyword()`",
      doc: "Set by Broadway (topology name, producer index); do not pass it."
    ]
  ]

  @moduledoc """
  Options of `HFBridge.Broadway.Producer`, their validation and what
  follows from them (session spec, shard, checkpoint key).

  Producer options:

  #{HFBridge.Options.docs(@producer_schema)}

  Dataset options (see `HFBridge.Spec`) are given alongside, for example
  `data_files:`, `split:`, `columns:`, `batch_size:`. So are connection
  options (see `HFBridge.Client`), such as `address:`, used when no
  `:client` is given.

  With `concurrency: n` in Broadway's producer options (`n > 1`), producer
  `i` reads shard `{i, n}` of the dataset, so the producers cover disjoint
  parts; the `:shard` dataset option is then not allowed.
  """

  alias HFBridge.{Client, Error, Spec}

  @typedoc "Validated options: producer, dataset (`:spec_opts`) and connection (`:client_opts`)."
  @type t :: %{
          dataset: String.t(),
          client: Client.t() | nil,
          message: :rows | :batches,
          max_pending_batches: pos_integer(),
          read_ahead: pos_integer(),
          checkpoint: nil | {module(), term()},
          on_failure: :commit | :stop,
          batch_timeout: timeout(),
          open_timeout: timeout(),
          retry: HFBridge.Retry.t(),
          spec_opts: keyword(),
          client_opts: keyword(),
          name: term(),
          index: non_neg_integer(),
          count: pos_integer()
        }

  @doc "The schema of the producer's own options (see `HFBridge.Options`)."
  @spec schema() :: HFBridge.Options.schema()
  def schema, do: @producer_schema

  @doc """
  Validates producer options (as Broadway passes them, `:broadway` included
  or not). Returns a map of them, with the dataset options in `:spec_opts`
  (the shard of this producer added), connection options in
  `:client_opts`, and `:name`, `:index`, `:count` taken from `:broadway`.
  """
  @spec validate(term()) :: {:ok, t()} | {:error, Error.t()}
  def validate(opts) do
    all = @producer_schema ++ Spec.schema() ++ Client.schema()

    with {:ok, _} <- HFBridge.Options.validate(opts, all),
         {own, rest} = HFBridge.Options.take(opts, @producer_schema),
         {spec_opts, client_opts} = HFBridge.Options.take(rest, Spec.schema()),
         {:ok, own} <- HFBridge.Options.validate(own, @producer_schema),
         {:ok, _} <- HFBridge.Options.validate(client_opts, Client.schema()),
         {name, index, count} = topology(own[:broadway]),
         {:ok, spec_opts} <- shard(spec_opts, index, count),
         {:ok, _} <- Spec.open_request(own[:dataset], spec_opts) do
      {:ok,
       own
       |> Keyword.delete(:broadway)
       |> Map.new()
       |> Map.merge(%{
         spec_opts: spec_opts,
         client_opts: client_opts,
         name: name,
         index: index,
         count: count
       })}
    end
  end

  @doc "Like `validate/1`, raising `HFBridge.Error`."
  @spec validate!(term()) :: t()
  def validate!(opts) do
    case validate(opts) do
      {:ok, config} -> config
      {:error, error} -> raise error
    end
  end

  @doc """
  The key under which a producer's resume token is stored: the topology
  name, the dataset and the producer's shard, e.g. `"MyPipeline.p0of2"`.
  A pipeline started with another concurrency gets new keys (new sessions).
  """
  @spec checkpoint_key(t()) :: String.t()
  def checkpoint_key(%{name: name, index: index, count: count}) do
    base =
      case name do
        nil ->
          "hf_bridge"

        atom when is_atom(atom) ->
          atom |> Atom.to_string() |> String.replace_prefix("Elixir.", "")

        other ->
          inspect(other)
      end

    safe = String.replace(base, ~r/[^A-Za-z0-9._-]/, "_")
    "#{safe}.p#{index}of#{count}"
  end

  @doc false
  @spec check_checkpoint(term()) :: {:ok, nil | {module(), term()}} | {:error, String.t()}
  def check_checkpoint(nil), do: {:ok, nil}

  def check_checkpoint(dir) when is_binary(dir) and dir != "",
    do: {:ok, {HFBridge.Broadway.Checkpoint.File, dir}}

  def check_checkpoint({module, arg}) when is_atom(module) and not is_nil(module) do
    if Code.ensure_loaded?(module) and function_exported?(module, :load, 2) and
         function_exported?(module, :save, 3) do
      {:ok, {module, arg}}
    else
      {:error,
       "#{inspect(module)} does not implement HFBridge.Broadway.Checkpoint (load/2 and save/3)"}
    end
  end

  def check_checkpoint(other),
    do:
      {:error,
       "expected nil, a directory path or {module, arg}, got: #{inspect(other, limit: 10)}"}

  defp topology(nil), do: {nil, 0, 1}

  defp topology(broadway) do
    count =
      case broadway[:producer] do
        producer when is_list(producer) -> producer[:concurrency] || 1
        _ -> 1
      end

    {broadway[:name], broadway[:index] || 0, count}
  end

  defp shard(spec_opts, _index, 1), do: {:ok, spec_opts}

  defp shard(spec_opts, index, count) do
    if Keyword.get(spec_opts, :shard) do
      {:error,
       Error.new(
         :options,
         :invalid_option,
         "the :shard option cannot be combined with producer concurrency #{count}: " <>
           "each producer already reads its own shard {index, #{count}}",
         details: %{option: :shard}
       )}
    else
      {:ok, spec_opts ++ [shard: {index, count}]}
    end
  end
end
