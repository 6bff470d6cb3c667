defmodule HFBridge do
  # Streams read sequentially to the end: a deeper read-ahead than a bare
  # session's means fewer ReadBatches calls (client memory stays bounded by
  # the HTTP/2 stream window).
  @stream_read_ahead 16

  @stream_schema [
    client: [
      type: {:custom, __MODULE__, :check_client},
      type_doc: "`HFBridge.Client.t()`",
      doc:
        "A connected client to use; without it the stream connects (and disconnects) by itself."
    ],
    ack: [
      type: :boolean,
      default: true,
      doc: "Acknowledge each batch once the consumer asks for data past it."
    ],
    resume_token: [
      type: {:or, [:string, nil]},
      default: nil,
      type_doc: "`String.t() | nil`",
      doc: "Resume this session instead of opening a new one (dataset options are then ignored)."
    ],
    on_open: [
      type: {:or, [{:custom, __MODULE__, :check_callback}, nil]},
      default: nil,
      type_doc: "`(map() -> any) | nil`",
      doc:
        "Called in the consuming process once the session is open, with the session info " <>
          "(`HFBridge.Session.info/1`: id, resume token, ...) and `:session`, the session pid."
    ],
    batch_timeout: [
      type: :timeout,
      default: 60_000,
      doc: "How long to wait for each batch, in milliseconds."
    ],
    as: [
      type: {:custom, HFBridge.Explorer, :check_as},
      default: :batch,
      type_doc: "`:batch | :dataframe`",
      doc:
        "`stream/2` only: `:dataframe` yields an `Explorer.DataFrame` per batch " <>
          "(needs the `:explorer` package; see `HFBridge.Explorer`)."
    ]
  ]

  @moduledoc """
  HuggingFace datasets for Elixir: Arrow record batches streamed from pooled
  Python `datasets` workers over gRPC.

  ## Lazy streams

      HFBridge.rows("parquet", data_files: "data/*.parquet", columns: ["text", "label"])
      |> Enum.take(5)

      HFBridge.stream("imdb", split: "test", batch_size: 1024)
      |> Stream.map(&HFBridge.Batch.table!/1)
      |> Enum.each(&process/1)

  Without a `:client` option, every enumeration connects by itself — and,
  when no server address is configured, starts (and then stops) a local
  Python server, which takes a few seconds; pass `client:` to reuse one
  connection across streams.

  Streams are pull-driven: a session is opened when enumeration starts,
  a batch is fetched only when the consumer asks for it (with at most
  `:read_ahead` batches in flight; #{@stream_read_ahead} unless given), batch `k`
  is acknowledged once the consumer asks for data past it, and the session — and any local server the
  stream started — is closed when enumeration ends or is halted.

  ## Sessions

      {:ok, client} = HFBridge.connect(address: "127.0.0.1:50051")
      {:ok, info} = HFBridge.info(client, "parquet", data_files: "data/*.parquet")
      {:ok, session} = HFBridge.open(client, "parquet", data_files: "data/*.parquet")
      {:ok, batch} = HFBridge.Session.next_batch(session)

  See `HFBridge.Session`.

  ## Options

  Dataset options (see `HFBridge.Spec`):

  #{HFBridge.Options.docs(HFBridge.Spec.schema())}

  Connection options (see `HFBridge.Client`):

  #{HFBridge.Options.docs(HFBridge.Client.schema())}

  Session options (see `HFBridge.Session`):

  #{HFBridge.Options.docs(HFBridge.Session.schema())}

  Stream options (`stream/2` and `rows/2` only):

  #{HFBridge.Options.docs(@stream_schema)}

  Every function returns `{:error, %HFBridge.Error{}}` on failure; streams
  raise `HFBridge.Error` (invalid options raise when the stream is built).
  """

  alias HFBridge.{Batch, Client, Error, Info, Options, Session, Spec}

  @doc """
  Connects to a server; starts a local one when no address is configured.
  See `HFBridge.Client` for the options.
  """
  @spec connect(keyword()) :: {:ok, Client.t()} | {:error, Error.t()}
  defdelegate connect(opts \\ []), to: Client

  @doc "Disconnects, stopping the local server the client started, if any."
  @spec disconnect(Client.t()) :: :ok
  defdelegate disconnect(client), to: Client

  @doc """
  Describes `dataset` (features, Arrow schema, splits, shards) without
  opening a session. Takes dataset options and `:timeout`.
  """
  @spec info(Client.t(), String.t(), keyword()) :: {:ok, Info.t()} | {:error, Error.t()}
  def info(%Client{} = client, dataset, opts \\ []), do: Info.fetch(client, dataset, opts)

  @doc """
  Opens a streaming session on `dataset`. Takes dataset and session options;
  the session closes when the calling process exits.
  """
  @spec open(Client.t(), String.t(), keyword()) :: {:ok, Session.t()} | {:error, Error.t()}
  def open(%Client{} = client, dataset, opts \\ []), do: Session.open(client, dataset, opts)

  @doc """
  Exports `dataset` to Parquet at `destination` (a directory under the
  server's export roots, or `s3://bucket/prefix`) and returns the published
  manifest. `client_or_opts` is a client or `connect/1` options. Progress goes
  to a pid or a callback (`progress:`); see `HFBridge.Export` for the options.
  """
  @spec export(Client.t() | keyword(), String.t(), String.t(), keyword()) ::
          {:ok, HFBridge.Parquet.Manifest.t()} | {:error, Error.t()}
  defdelegate export(client_or_opts, dataset, destination, opts \\ []),
    to: HFBridge.Export,
    as: :run

  @doc """
  A lazy `Stream` of `HFBridge.Batch` structs of `dataset`.

  Takes dataset, connection, session and stream options (see the module
  docs). Raises `HFBridge.Error` at once when the options are invalid, and
  during enumeration when the server reports an error.
  """
  @spec stream(String.t(), keyword()) :: Enumerable.t()
  def stream(dataset, opts \\ []) do
    plan = plan!(dataset, opts)

    Stream.resource(fn -> start(plan) end, &next/1, &finish/1)
    |> HFBridge.Explorer.convert(plan.stream_opts[:as])
  end

  @doc """
  A lazy `Stream` of the rows of `dataset`, each a map with string keys.
  Takes the same options as `stream/2`.
  """
  @spec rows(String.t(), keyword()) :: Enumerable.t()
  def rows(dataset, opts \\ []) do
    dataset
    |> stream(if(is_list(opts), do: opts ++ [as: :batch], else: opts))
    |> Stream.flat_map(&Batch.rows!/1)
  end

  @doc false
  @spec check_client(term()) :: {:ok, Client.t()} | {:error, String.t()}
  def check_client(%Client{} = client), do: {:ok, client}

  def check_client(other),
    do: {:error, "expected an %HFBridge.Client{}, got: #{inspect(other, limit: 5)}"}

  @doc false
  @spec check_callback(term()) :: {:ok, function()} | {:error, String.t()}
  def check_callback(fun) when is_function(fun, 1), do: {:ok, fun}

  def check_callback(other),
    do: {:error, "expected a function of arity 1, got: #{inspect(other, limit: 5)}"}

  # -- stream internals ------------------------------------------------------------

  defp plan!(dataset, opts) do
    schema = Spec.schema() ++ Client.schema() ++ Session.schema() ++ @stream_schema

    with {:ok, _} <- Options.validate(opts, schema),
         {stream_opts, rest} = Options.take(opts, @stream_schema),
         {session_opts, rest} = Options.take(rest, Session.schema()),
         {client_opts, spec_opts} = Options.take(rest, Client.schema()),
         {:ok, stream_opts} <- Options.validate(stream_opts, @stream_schema),
         {:ok, _} <- Spec.open_request(dataset, spec_opts) do
      %{
        dataset: dataset,
        spec_opts: spec_opts,
        session_opts: Keyword.put_new(session_opts, :read_ahead, @stream_read_ahead),
        client_opts: client_opts,
        stream_opts: stream_opts
      }
    else
      {:error, error} -> raise error
    end
  end

  defp start(plan) do
    {client, own?} =
      case plan.stream_opts[:client] do
        %Client{} = client -> {client, false}
        nil -> {ok!(Client.connect(plan.client_opts)), true}
      end

    session_result =
      case plan.stream_opts[:resume_token] do
        nil -> Session.open(client, plan.dataset, plan.spec_opts ++ plan.session_opts)
        token -> Session.resume(client, token, plan.session_opts)
      end

    case session_result do
      {:ok, session} ->
        if callback = plan.stream_opts[:on_open],
          do: callback.(Map.put(Session.info(session), :session, session))

        %{
          client: client,
          own_client?: own?,
          session: session,
          last_seq: nil,
          ack?: plan.stream_opts[:ack],
          timeout: plan.stream_opts[:batch_timeout]
        }

      {:error, error} ->
        if own?, do: Client.disconnect(client)
        raise error
    end
  end

  defp next(state) do
    if state.ack? and state.last_seq != nil, do: Session.ack_async(state.session, state.last_seq)

    case Session.next_batch(state.session, state.timeout) do
      {:ok, batch} -> {[batch], %{state | last_seq: batch.seq}}
      :done -> {:halt, %{state | last_seq: nil}}
      {:error, error} -> raise error
    end
  end

  defp finish(state) do
    Session.close(state.session)
    if state.own_client?, do: Client.disconnect(state.client)
    :ok
  end

  defp ok!(:ok), do: :ok
  defp ok!({:ok, value}), do: value
  defp ok!({:error, error}), do: raise(error)
end
