defmodule HFBridge.Options do
  @moduledoc """
  A small validator for keyword-list options, used by every public function
  of hf_bridge that takes options.

  A *schema* is a keyword list of option names to their definitions:

      schema = [
        batch_size: [type: :pos_integer, doc: "Rows per batch."],
        split: [type: :string, default: "train", doc: "Split to read."]
      ]

      {:ok, opts} = HFBridge.Options.validate([batch_size: 10], schema)
      opts[:split]
      #=> "train"

  Definition keys:

    * `:type` — see "Types" below. Defaults to `:any`.
    * `:default` — the value used when the option is absent. Options without
      a default are absent from the result when not given.
    * `:required` — `true` makes a missing option an error.
    * `:doc` — one line of Markdown for `docs/1`.
    * `:type_doc` — how `docs/1` names the type, overriding the derived name.

  Types: `:any`, `:atom`, `:string`, `:boolean`, `:integer`,
  `:non_neg_integer`, `:pos_integer`, `:float`, `:number`, `:timeout`
  (a non-negative integer or `:infinity`), `:map`, `:keyword_list`,
  `{:keyword_list, schema}` (validated recursively), `{:list, type}`,
  `{:in, values}`, `{:or, [type]}`, `{:tuple, [type]}`, `nil` (the value
  `nil`), and `{:custom, module, function}` — `module.function(value)` returns
  `{:ok, value}` or `{:error, reason_string}`.

  Unknown options are errors that name the option (and suggest the closest
  known name); every error is an `HFBridge.Error` with layer `:options` and
  code `:invalid_option`.
  """

  alias HFBridge.Error

  @typedoc "An option definition (see the module docs)."
  @type definition :: keyword()
  @typedoc "A schema: option names mapped to definitions."
  @type schema :: [{atom(), definition()}]

  @doc """
  Validates `opts` against `schema`. Returns the options in schema order with
  defaults filled in, or the first error found.
  """
  @spec validate(term(), schema()) :: {:ok, keyword()} | {:error, Error.t()}
  def validate(opts, schema) do
    with :ok <- check_keyword(opts, "options"),
         :ok <- check_unknown(opts, schema) do
      validate_known(opts, schema, "")
    end
  end

  @doc "Like `validate/2` but raises `HFBridge.Error` on invalid options."
  @spec validate!(term(), schema()) :: keyword()
  def validate!(opts, schema) do
    case validate(opts, schema) do
      {:ok, valid} -> valid
      {:error, error} -> raise error
    end
  end

  @doc """
  Splits `opts` into the options named in `schema` and the rest, keeping
  order. Does not validate.
  """
  @spec take(keyword(), schema()) :: {keyword(), keyword()}
  def take(opts, schema) do
    names = Keyword.keys(schema)
    Enum.split_with(opts, fn {key, _} -> key in names end)
  end

  @doc """
  Renders `schema` as a Markdown list: name, type, default and doc of each
  option. Meant for `@moduledoc` and `@doc` strings.
  """
  @spec docs(schema()) :: String.t()
  def docs(schema) do
    schema
    |> Enum.map(fn {name, definition} ->
      type =
        Keyword.get_lazy(definition, :type_doc, fn ->
          type_name(Keyword.get(definition, :type, :any))
        end)

      doc = Keyword.get(definition, :doc, "")

      extra =
        cond do
          Keyword.get(definition, :required, false) ->
            " Required."

          Keyword.has_key?(definition, :default) ->
            " Defaults to `#{inspect(definition[:default])}`."

          true ->
            ""
        end

      "  * `#{inspect(name)}` (#{type}) — #{doc}#{extra}"
    end)
    |> Enum.join("\n")
  end

  # -- validation --------------------------------------------------------------

  defp check_keyword(opts, what) do
    if is_list(opts) and Enum.all?(opts, &match?({key, _} when is_atom(key), &1)) do
      :ok
    else
      error("#{what} must be a keyword list, got: #{inspect(opts, limit: 10)}")
    end
  end

  defp check_unknown(opts, schema) do
    known = Keyword.keys(schema)

    case Enum.find(opts, fn {key, _} -> key not in known end) do
      nil ->
        :ok

      {key, _} ->
        error(
          "unknown option #{inspect(key)}#{suggestion(key, known)}; known options: " <>
            Enum.map_join(known, ", ", &inspect/1),
          %{option: key}
        )
    end
  end

  defp suggestion(key, known) do
    name = Atom.to_string(key)

    known
    |> Enum.map(&{&1, String.jaro_distance(name, Atom.to_string(&1))})
    |> Enum.max_by(&elem(&1, 1), fn -> nil end)
    |> case do
      {best, score} when score >= 0.8 -> " (did you mean #{inspect(best)}?)"
      _ -> ""
    end
  end

  defp validate_known(opts, schema, prefix) do
    Enum.reduce_while(schema, {:ok, []}, fn {name, definition}, {:ok, acc} ->
      case fetch_last(opts, name) do
        {:ok, value} ->
          case check_type(value, Keyword.get(definition, :type, :any)) do
            {:ok, value} ->
              {:cont, {:ok, [{name, value} | acc]}}

            {:error, reason} ->
              {:halt,
               error("invalid value for option #{prefix}#{inspect(name)}: #{reason}", %{
                 option: name
               })}
          end

        :error ->
          cond do
            Keyword.has_key?(definition, :default) ->
              {:cont, {:ok, [{name, definition[:default]} | acc]}}

            Keyword.get(definition, :required, false) ->
              {:halt,
               error("required option #{prefix}#{inspect(name)} not found", %{option: name})}

            true ->
              {:cont, {:ok, acc}}
          end
      end
    end)
    |> case do
      {:ok, acc} -> {:ok, Enum.reverse(acc)}
      other -> other
    end
  end

  # The last occurrence wins, as with Keyword.merge/2 and OptionParser.
  defp fetch_last(opts, name) do
    opts
    |> Enum.reverse()
    |> Enum.find_value(:error, fn
      {^name, value} -> {:ok, value}
      _ -> nil
    end)
  end

  @doc false
  @spec check_type(term(), term()) :: {:ok, term()} | {:error, String.t()}
  def check_type(value, :any), do: {:ok, value}
  def check_type(value, nil), do: if(is_nil(value), do: {:ok, nil}, else: expected("nil", value))
  def check_type(value, :atom) when is_atom(value), do: {:ok, value}
  def check_type(value, :string) when is_binary(value), do: {:ok, value}
  def check_type(value, :boolean) when is_boolean(value), do: {:ok, value}
  def check_type(value, :integer) when is_integer(value), do: {:ok, value}
  def check_type(value, :non_neg_integer) when is_integer(value) and value >= 0, do: {:ok, value}
  def check_type(value, :pos_integer) when is_integer(value) and value > 0, do: {:ok, value}
  def check_type(value, :float) when is_float(value), do: {:ok, value}
  def check_type(value, :number) when is_number(value), do: {:ok, value}
  def check_type(:infinity, :timeout), do: {:ok, :infinity}
  def check_type(value, :timeout) when is_integer(value) and value >= 0, do: {:ok, value}
  def check_type(value, :map) when is_map(value), do: {:ok, value}

  def check_type(value, :keyword_list) do
    if Keyword.keyword?(value), do: {:ok, value}, else: expected("a keyword list", value)
  end

  def check_type(value, {:keyword_list, schema}) do
    with :ok <- check_keyword(value, "value"),
         :ok <- check_unknown(value, schema),
         {:ok, valid} <- validate_known(value, schema, "") do
      {:ok, valid}
    else
      {:error, %Error{message: message}} -> {:error, message}
    end
  end

  def check_type(value, {:list, type}) when is_list(value) do
    value
    |> Enum.with_index()
    |> Enum.reduce_while({:ok, []}, fn {item, index}, {:ok, acc} ->
      case check_type(item, type) do
        {:ok, item} -> {:cont, {:ok, [item | acc]}}
        {:error, reason} -> {:halt, {:error, "element #{index}: #{reason}"}}
      end
    end)
    |> case do
      {:ok, acc} -> {:ok, Enum.reverse(acc)}
      other -> other
    end
  end

  def check_type(value, {:in, values}) do
    if value in values,
      do: {:ok, value},
      else:
        {:error,
         "expected one of #{Enum.map_join(values, ", ", &inspect/1)}, got: #{inspect(value, limit: 10)}"}
  end

  def check_type(value, {:or, types} = type) do
    Enum.find_value(types, expected(type_name(type), value), fn type ->
      case check_type(value, type) do
        {:ok, value} -> {:ok, value}
        {:error, _} -> nil
      end
    end)
  end

  def check_type(value, {:tuple, types} = type)
      when is_tuple(value) and tuple_size(value) == length(types) do
    value
    |> Tuple.to_list()
    |> Enum.zip(types)
    |> Enum.reduce_while({:ok, []}, fn {item, item_type}, {:ok, acc} ->
      case check_type(item, item_type) do
        {:ok, item} -> {:cont, {:ok, [item | acc]}}
        {:error, _} -> {:halt, expected(type_name(type), value)}
      end
    end)
    |> case do
      {:ok, acc} -> {:ok, acc |> Enum.reverse() |> List.to_tuple()}
      other -> other
    end
  end

  def check_type(value, {:custom, module, function}) do
    case apply(module, function, [value]) do
      {:ok, value} -> {:ok, value}
      {:error, reason} when is_binary(reason) -> {:error, reason}
      other -> {:error, "custom validation returned #{inspect(other)}"}
    end
  end

  def check_type(value, type), do: expected(type_name(type), value)

  defp expected(what, value), do: {:error, "expected #{what}, got: #{inspect(value, limit: 10)}"}

  @doc false
  @spec type_name(term()) :: String.t()
  def type_name(:any), do: "any term"
  def type_name(nil), do: "nil"
  def type_name(:atom), do: "atom"
  def type_name(:string), do: "string"
  def type_name(:boolean), do: "boolean"
  def type_name(:integer), do: "integer"
  def type_name(:non_neg_integer), do: "non-negative integer"
  def type_name(:pos_integer), do: "positive integer"
  def type_name(:float), do: "float"
  def type_name(:number), do: "number"
  def type_name(:timeout), do: "timeout (milliseconds or :infinity)"
  def type_name(:map), do: "map"
  def type_name(:keyword_list), do: "keyword list"

  def type_name({:keyword_list, schema}),
    do: "keyword list of #{Enum.map_join(Keyword.keys(schema), ", ", &inspect/1)}"

  def type_name({:list, type}), do: "list of #{type_name(type)}"
  def type_name({:in, values}), do: "one of #{Enum.map_join(values, ", ", &inspect/1)}"
  def type_name({:or, types}), do: Enum.map_join(types, " or ", &type_name/1)
  def type_name({:tuple, types}), do: "{" <> Enum.map_join(types, ", ", &type_name/1) <> "}"
  def type_name({:custom, _, _}), do: "custom value"
  def type_name(other), do: inspect(other)

  defp error(message, details \\ %{}),
    do: {:error, Error.new(:options, :invalid_option, message, details: details)}
end
