defmodule HFBridge.CLI do
  @flags_doc """
  ## Dataset flags

  As in `hf-bridge` on the Python side:

      --config NAME          dataset configuration
      --split NAME           split to read (default: train)
      --revision REV         Hub revision
      --data-files [SPLIT=]PATTERN   data files, globs allowed; repeatable
      --columns a,b          columns to keep, in order
      --filter EXPR          Parquet row filter such as "label == 1 and lang in (en, fr)";
                             repeat for OR
      --shuffle              shuffle with a seeded buffer
      --seed N               shuffle seed (default: 0)
      --shuffle-buffer N     shuffle buffer size (default: server's, 1000)
      --num-shards N         split the source into N shards ...
      --shard-index I        ... and read shard I (default: 0)
      --skip N               skip N rows first
      --take N               read at most N rows

  ## Connection flags

      --address HOST:PORT    use a running server (else HF_BRIDGE_ADDRESS, else
                             `config :hf_bridge, address: ...`, else a local server)
      --token TOKEN          bearer token (default: HF_BRIDGE_TOKEN)
      --tls                  connect with TLS
      --local                always start a local server
      --data-root DIR        local server: directory data may be read from;
                             repeatable (default: current directory)
      --workers N            local server: worker processes (default: 2)
      --python PATH          local server: Python to run (default: HF_BRIDGE_PYTHON, .venv, python3)
      --verbose              print the local server's log lines
  """

  @moduledoc """
  Shared plumbing of the `mix hf.*` tasks: the dataset and connection flags,
  their parsing into `HFBridge` options, and the server lifecycle (connect to
  a configured server, or start a local one and always stop it).

  #{@flags_doc}
  """

  alias HFBridge.{Client, Error}

  @dataset_switches [
    config: :string,
    split: :string,
    revision: :string,
    data_files: :keep,
    columns: :string,
    filter: :keep,
    shuffle: :boolean,
    seed: :integer,
    shuffle_buffer: :integer,
    num_shards: :integer,
    shard_index: :integer,
    skip: :integer,
    take: :integer
  ]

  @connection_switches [
    address: :string,
    token: :string,
    tls: :boolean,
    local: :boolean,
    data_root: :keep,
    workers: :integer,
    python: :string,
    verbose: :boolean
  ]

  @typedoc "Parsed command line: the SPEC argument and options grouped by use."
  @type parsed :: %{
          dataset: String.t(),
          dataset_opts: keyword(),
          client_opts: keyword(),
          task_opts: keyword()
        }

  @doc "The help text of the dataset and connection flags, for the tasks' `@moduledoc`."
  @spec moduledoc_flags() :: String.t()
  def moduledoc_flags, do: @flags_doc

  @doc "The OptionParser switches of the dataset flags."
  @spec dataset_switches() :: keyword()
  def dataset_switches, do: @dataset_switches

  @doc "The OptionParser switches of the connection flags."
  @spec connection_switches() :: keyword()
  def connection_switches, do: @connection_switches

  @doc """
  Parses `argv` for `task` (its name, for messages): exactly one SPEC
  argument, the dataset and connection flags, and the task's own
  `task_switches`. Raises `Mix.Error` naming any invalid or unknown flag.
  """
  @spec parse!(String.t(), [String.t()], keyword(), keyword()) :: parsed()
  def parse!(task, argv, task_switches \\ [], aliases \\ []) do
    switches = @dataset_switches ++ @connection_switches ++ task_switches
    {opts, args, invalid} = OptionParser.parse(argv, strict: switches, aliases: aliases)

    case invalid do
      [] ->
        :ok

      [{flag, nil} | _] ->
        Mix.raise("mix #{task}: unknown option #{flag}. Run `mix help #{task}` for usage.")

      [{flag, value} | _] ->
        Mix.raise(
          "mix #{task}: invalid value #{inspect(value)} for #{flag}. Run `mix help #{task}`."
        )
    end

    dataset =
      case args do
        [spec] ->
          local_path(spec)

        [] ->
          Mix.raise(
            "mix #{task}: missing SPEC (a Hub id, a builder such as parquet, or a local folder)"
          )

        [_ | extra] ->
          Mix.raise("mix #{task}: unexpected arguments #{Enum.join(extra, " ")}")
      end

    {dataset_flags, rest} = Keyword.split(opts, Keyword.keys(@dataset_switches))
    {connection_flags, task_opts} = Keyword.split(rest, Keyword.keys(@connection_switches))

    %{
      dataset: dataset,
      dataset_opts: dataset_opts!(task, dataset_flags),
      client_opts: client_opts(connection_flags),
      task_opts: task_opts
    }
  end

  # A SPEC naming a folder or file on this machine is sent as an absolute
  # path, so the server resolves it the same way whatever its working directory.
  defp local_path(spec) do
    if File.exists?(spec), do: Path.expand(spec), else: spec
  end

  @doc "Turns dataset flags into `HFBridge.Spec` options; raises `Mix.Error` on bad values."
  @spec dataset_opts!(String.t(), keyword()) :: keyword()
  def dataset_opts!(task, flags) do
    non_negative!(task, flags, [:seed, :shuffle_buffer, :num_shards, :shard_index, :skip, :take])

    shuffle =
      cond do
        flags[:shuffle] || flags[:seed] || flags[:shuffle_buffer] ->
          [seed: flags[:seed] || 0] ++ if(b = flags[:shuffle_buffer], do: [buffer: b], else: [])

        true ->
          nil
      end

    shard =
      case {flags[:num_shards], flags[:shard_index]} do
        {nil, nil} -> nil
        {nil, _} -> Mix.raise("mix #{task}: --shard-index needs --num-shards")
        {count, index} -> {index || 0, count}
      end

    [
      config: flags[:config],
      split: flags[:split],
      revision: flags[:revision],
      data_files: data_files(Keyword.get_values(flags, :data_files)),
      columns: columns(flags[:columns]),
      filters: filters!(task, Keyword.get_values(flags, :filter)),
      shuffle: shuffle,
      shard: shard,
      skip: flags[:skip],
      take: flags[:take]
    ]
    |> Enum.reject(fn {_, v} -> is_nil(v) end)
  end

  defp non_negative!(task, flags, names) do
    Enum.each(names, fn name ->
      case flags[name] do
        value when is_integer(value) and value < 0 ->
          Mix.raise("mix #{task}: --#{flag_name(name)} must not be negative, got #{value}")

        _ ->
          :ok
      end
    end)
  end

  @doc "Turns `[SPLIT=]PATTERN` values into the `:data_files` option."
  @spec data_files([String.t()]) ::
          String.t() | [String.t()] | %{String.t() => [String.t()]} | nil
  def data_files([]), do: nil

  def data_files(values) do
    pairs =
      Enum.map(values, fn value ->
        case String.split(value, "=", parts: 2) do
          [split, pattern] when split != "" ->
            if named_split?(split), do: {split, pattern}, else: {"", value}

          _ ->
            {"", value}
        end
      end)

    if Enum.all?(pairs, fn {split, _} -> split == "" end) do
      Enum.map(pairs, &elem(&1, 1))
    else
      pairs
      |> Enum.group_by(
        fn {split, _} -> if split == "", do: "train", else: split end,
        &elem(&1, 1)
      )
    end
  end

  defp named_split?(split), do: not String.contains?(split, ["/", "*", "?", "["])

  defp columns(nil), do: nil

  defp columns(text) do
    case text |> String.split(",") |> Enum.map(&String.trim/1) |> Enum.reject(&(&1 == "")) do
      [] -> nil
      columns -> columns
    end
  end

  @doc """
  Parses `--filter` expressions (`"label == 1 and lang in (en, fr)"`) into
  the `:filters` option: each expression is one AND-clause, several are ORed.
  Values: quoted strings, `true`/`false`, integers, floats, else bare strings.
  """
  @spec filters!(String.t(), [String.t()]) :: [[{String.t(), atom(), term()}]] | nil
  def filters!(_task, []), do: nil

  def filters!(task, expressions) do
    Enum.map(expressions, fn expression ->
      case parse_clause(expression) do
        {:ok, clause} -> clause
        {:error, reason} -> Mix.raise("mix #{task}: --filter #{inspect(expression)}: #{reason}")
      end
    end)
  end

  @term ~r/^\s*([^\s=!<>]+)\s*(==|!=|<=|>=|<|>|not\s+in|in)\s*(.+?)\s*$/i

  defp parse_clause(expression) do
    expression
    |> String.trim()
    |> String.split(~r/\s+and\s+/i)
    |> Enum.reduce_while({:ok, []}, fn part, {:ok, acc} ->
      case Regex.run(@term, part) do
        [_, column, op, raw] ->
          case term(column, String.downcase(String.replace(op, ~r/\s+/, " ")), raw) do
            {:ok, term} -> {:cont, {:ok, acc ++ [term]}}
            error -> {:halt, error}
          end

        nil ->
          {:halt,
           {:error, "expected 'column op value' with op one of ==, !=, <, <=, >, >=, in, not in"}}
      end
    end)
  end

  defp term(column, op, raw) when op in ["in", "not in"] do
    if String.match?(raw, ~r/^[(\[].*[)\]]$/) do
      values =
        raw
        |> String.slice(1..-2//1)
        |> String.split(",")
        |> Enum.reject(&(String.trim(&1) == ""))
        |> Enum.map(&scalar/1)

      {:ok, {column, if(op == "in", do: :in, else: :not_in), values}}
    else
      {:error, "'#{op}' needs a list such as (a, b)"}
    end
  end

  defp term(column, op, raw), do: {:ok, {column, String.to_existing_atom(op), scalar(raw)}}

  defp scalar(text) do
    t = String.trim(text)

    cond do
      String.length(t) >= 2 and String.first(t) == String.last(t) and
          String.first(t) in ["'", "\""] ->
        String.slice(t, 1..-2//1)

      String.downcase(t) in ["true", "false"] ->
        String.downcase(t) == "true"

      match?({_, ""}, Integer.parse(t)) ->
        elem(Integer.parse(t), 0)

      match?({_, ""}, Float.parse(t)) ->
        elem(Float.parse(t), 0)

      true ->
        t
    end
  end

  @doc "Turns connection flags into `HFBridge.Client` options."
  @spec client_opts(keyword()) :: keyword()
  def client_opts(flags) do
    local_server =
      [
        data_roots:
          case Keyword.get_values(flags, :data_root) do
            [] -> nil
            roots -> Enum.map(roots, &Path.expand/1)
          end,
        workers: flags[:workers],
        python: flags[:python],
        log_level: if(flags[:verbose], do: :info, else: false)
      ]
      |> Enum.reject(fn {_, v} -> is_nil(v) end)

    [
      address: flags[:address],
      token: flags[:token] || non_empty(System.get_env("HF_BRIDGE_TOKEN")),
      tls: flags[:tls],
      local: flags[:local],
      local_server: local_server
    ]
    |> Enum.reject(fn {_, v} -> is_nil(v) end)
  end

  @doc """
  Starts `:hf_bridge` (after loading the project's configuration), connects
  with `client_opts`, runs `fun.(client)` and always disconnects — which
  stops the local server when one was started. Connection errors raise
  `Mix.Error`.
  """
  @spec with_client(String.t(), keyword(), (Client.t() -> result)) :: result when result: term()
  def with_client(task, client_opts, fun) do
    start_app!(task)

    if local?(client_opts), do: status("Starting a local hf_bridge server...")

    client =
      case Client.connect(client_opts) do
        {:ok, client} -> client
        {:error, error} -> raise_error(task, error)
      end

    try do
      fun.(client)
    after
      Client.disconnect(client)
    end
  end

  @doc "Loads the project configuration and starts the `:hf_bridge` application."
  @spec start_app!(String.t()) :: :ok
  def start_app!(task) do
    if Mix.Project.get(), do: Mix.Task.run("app.config")
    # Rows go to stdout (`--format jsonl` is meant for pipes): log lines, such as
    # HFBridge.Runtime's one-time hint, go to stderr.
    Logger.configure_backend(:console, device: :standard_error)

    case Application.ensure_all_started(:hf_bridge) do
      {:ok, _} -> :ok
      {:error, reason} -> Mix.raise("mix #{task}: cannot start :hf_bridge: #{inspect(reason)}")
    end
  end

  defp local?(opts) do
    opts[:local] == true or
      (is_nil(opts[:address]) and is_nil(Application.get_env(:hf_bridge, :address)) and
         non_empty(System.get_env("HF_BRIDGE_ADDRESS")) == nil)
  end

  @doc "Raises `Mix.Error` with a readable message for an `HFBridge.Error` (or any exception)."
  @spec raise_error(String.t(), Exception.t()) :: no_return()
  def raise_error(task, %Error{} = error) do
    Mix.raise("mix #{task}: #{error.message} (#{error.code})")
  end

  def raise_error(task, exception), do: Mix.raise("mix #{task}: #{Exception.message(exception)}")

  @doc "Prints a status line to stderr."
  @spec status(String.t()) :: :ok
  def status(line), do: IO.puts(:stderr, line)

  defp flag_name(name), do: name |> Atom.to_string() |> String.replace("_", "-")

  defp non_empty(nil), do: nil
  defp non_empty(""), do: nil
  defp non_empty(value), do: value
end
