defmodule HFBridge.Arrow do
  @moduledoc """
  A pure-Elixir reader for the Arrow IPC *stream* format (the format of
  every `Batch.arrow_ipc` the hf_bridge server sends, and of pyarrow's
  `pa.ipc.new_stream`).

  Supported: encapsulated messages with and without the `0xFFFFFFFF`
  continuation marker, the end-of-stream marker, `Schema`, `RecordBatch` and
  `DictionaryBatch` messages (replacement and delta dictionaries),
  little-endian uncompressed bodies. Compressed bodies (LZ4/ZSTD) and
  big-endian data are rejected with an `:unsupported` error.

  ## Values

  Columns are lists in row order; nulls are `nil`.

  | Arrow type | Elixir value |
  |---|---|
  | null | `nil` |
  | bool | `true` / `false` |
  | int8..int64, uint8..uint64 | integer |
  | float16/32/64 | float, or `:nan`, `:infinity`, `:neg_infinity` |
  | utf8, large_utf8 | binary (bytes as sent, not re-validated) |
  | binary, large_binary, fixed_size_binary | binary |
  | decimal (32/64/128/256 bits) | `{unscaled :: integer, scale :: integer}`, value = unscaled × 10^-scale |
  | date32, date64 | `Date` (`temporal: :raw`: days / milliseconds since the epoch) |
  | time32, time64 | `Time` (`:raw`: integer in the field's unit) |
  | timestamp without zone | `NaiveDateTime` (`:raw`: integer in the unit since the epoch) |
  | timestamp with zone | `DateTime` in `Etc/UTC` (`:raw`: integer) |
  | duration | integer in the field's unit (the unit is in the field type) |
  | list, large_list, fixed_size_list | list |
  | struct | map with string keys |
  | map | list of `{key, value}` tuples |
  | dictionary-encoded | the dictionary value (the indices are resolved) |

  See `HFBridge.Arrow.Temporal` for precision rules of calendar values.

  Strings and binaries are sub-binaries of the input by default: cheap, but
  they keep the whole message alive. Pass `copy: true` when rows are kept
  long after the batch.

  ## Options

    * `:copy` — copy strings and binaries out of the message (default `false`).
    * `:temporal` — `:elixir` (default) or `:raw`, see the table above.
    * `:max_array_length` — the largest number of elements any one array in a
      batch may declare (default #{2 ** 26}).
    * `:max_unbacked_values` — how many values the whole stream may hold in
      arrays that take no body bytes (null columns, structs without fields,
      zero-width fixed-size types; default #{2 ** 22}). Every other value is
      backed by bytes of the input, so together the two limits bound the
      memory a hostile stream can make the reader allocate.

  ## Errors

  Never raises on bad input: a truncated or malformed stream gives
  `{:error, %HFBridge.Error{layer: :arrow, code: :malformed}}`, a valid but
  unsupported feature `code: :unsupported`, bad options
  `layer: :options, code: :invalid_argument`.
  """

  alias HFBridge.Arrow.{Decoder, Dictionary, Field, Message, Schema, Table}
  alias HFBridge.Error

  @default_max_array_length 2 ** 26
  @default_max_unbacked_values 2 ** 22

  @type option ::
          {:copy, boolean()}
          | {:temporal, :raw | :elixir}
          | {:max_array_length, pos_integer()}
          | {:max_unbacked_values, non_neg_integer()}

  @doc """
  Reads a whole IPC stream into one table (the record batches concatenated
  in order). A stream holding only a schema gives a table with zero rows.
  """
  @spec read_stream(binary(), [option()]) :: {:ok, Table.t()} | {:error, Error.t()}
  def read_stream(ipc, opts \\ []) do
    with {:ok, schema, tables} <- run(ipc, opts) do
      {:ok, Table.concat(schema, tables)}
    end
  end

  @doc "Reads an IPC stream into one table per record batch, in stream order."
  @spec read_batches(binary(), [option()]) :: {:ok, [Table.t()]} | {:error, Error.t()}
  def read_batches(ipc, opts \\ []) do
    with {:ok, _schema, tables} <- run(ipc, opts), do: {:ok, tables}
  end

  @doc """
  Reads the schema at the start of an IPC stream (any messages after it are
  not decoded).
  """
  @spec read_schema(binary()) :: {:ok, Schema.t()} | {:error, Error.t()}
  def read_schema(ipc) when is_binary(ipc) do
    guard(fn ->
      case Message.next(ipc) do
        {:ok, {:schema, schema}, _rest} -> {:ok, schema}
        {:ok, _other, _} -> malformed("the stream does not start with a schema message")
        :eos -> malformed("the stream is empty")
      end
    end)
  end

  def read_schema(_),
    do: {:error, Error.new(:options, :invalid_argument, "Arrow IPC input must be a binary")}

  @doc """
  The rows of a table as maps with string keys (structs are maps with string
  keys, lists are lists, map columns are lists of `{key, value}` tuples).
  """
  @spec to_rows(Table.t()) :: [%{String.t() => term()}]
  def to_rows(%Table{} = table), do: Table.to_rows(table)

  @doc "The values of column `name` of `table`, or `nil` if there is no such column."
  @spec column(Table.t(), String.t()) :: list() | nil
  def column(%Table{} = table, name), do: Table.column(table, name)

  # -- stream loop -----------------------------------------------------------

  defp run(ipc, opts) when is_binary(ipc) do
    with {:ok, ctx} <- context(opts) do
      guard(fn ->
        case Message.next(ipc) do
          {:ok, {:schema, schema}, rest} -> {:ok, schema, loop(rest, schema, ctx, [])}
          {:ok, _other, _} -> malformed("the stream does not start with a schema message")
          :eos -> malformed("the stream is empty")
        end
      end)
    end
  end

  defp run(_, _),
    do: {:error, Error.new(:options, :invalid_argument, "Arrow IPC input must be a binary")}

  defp loop(ipc, schema, ctx, acc) do
    case Message.next(ipc) do
      :eos ->
        Enum.reverse(acc)

      {:ok, {:record_batch, meta, body}, rest} ->
        {columns, unbacked} = Decoder.decode(schema.fields, meta, %{ctx | body: body})

        loop(rest, schema, %{ctx | unbacked: unbacked}, [
          Table.new(schema, meta.length, columns) | acc
        ])

      {:ok, {:dictionary_batch, id, delta?, meta, body}, rest} ->
        loop(rest, schema, add_dictionary(schema, id, delta?, meta, body, ctx), acc)

      {:ok, {:schema, _}, _} ->
        malformed("a second schema message in one stream")

      {:ok, {:other, tag}, _} ->
        throw({:arrow_unsupported, "IPC message type #{tag} (tensor messages) is not supported"})
    end
  end

  defp add_dictionary(schema, id, delta?, meta, body, ctx) do
    field =
      find_dictionary_field(schema.fields, id) ||
        malformed("dictionary batch for id #{id}, which no schema field uses")

    {[values], unbacked} =
      Decoder.decode([%Field{field | dictionary: nil}], meta, %{ctx | body: body})

    dict =
      case {delta?, ctx.dicts} do
        {true, %{^id => old}} -> Dictionary.append(old, values)
        _ -> Dictionary.new(values)
      end

    %{ctx | dicts: Map.put(ctx.dicts, id, dict), unbacked: unbacked}
  end

  defp find_dictionary_field(fields, id) do
    Enum.find_value(fields, fn
      %Field{dictionary: %{id: ^id}} = f -> f
      %Field{children: children} -> find_dictionary_field(children, id)
    end)
  end

  defp context(opts) when is_list(opts) do
    copy = Keyword.get(opts, :copy, false)
    temporal = Keyword.get(opts, :temporal, :elixir)
    max = Keyword.get(opts, :max_array_length, @default_max_array_length)
    unbacked = Keyword.get(opts, :max_unbacked_values, @default_max_unbacked_values)

    cond do
      not is_boolean(copy) ->
        {:error,
         Error.new(:options, :invalid_argument, "copy must be a boolean, got #{inspect(copy)}")}

      temporal not in [:raw, :elixir] ->
        {:error,
         Error.new(
           :options,
           :invalid_argument,
           "temporal must be :raw or :elixir, got #{inspect(temporal)}"
         )}

      not (is_integer(max) and max > 0) ->
        {:error,
         Error.new(
           :options,
           :invalid_argument,
           "max_array_length must be a positive integer, got #{inspect(max)}"
         )}

      not (is_integer(unbacked) and unbacked >= 0) ->
        {:error,
         Error.new(
           :options,
           :invalid_argument,
           "max_unbacked_values must be a non-negative integer, got #{inspect(unbacked)}"
         )}

      true ->
        {:ok,
         %{
           body: <<>>,
           copy: copy,
           temporal: temporal,
           max_array_length: max,
           unbacked: unbacked,
           dicts: %{}
         }}
    end
  end

  defp context(opts),
    do:
      {:error,
       Error.new(
         :options,
         :invalid_argument,
         "options must be a keyword list, got #{inspect(opts)}"
       )}

  # Turns the reader's throws — and, as a last line of defence, any exception
  # from unexpected input — into error values.
  defp guard(fun) do
    fun.()
  catch
    {:arrow_malformed, msg} ->
      {:error, Error.new(:arrow, :malformed, "malformed Arrow IPC stream: " <> msg)}

    {:arrow_unsupported, msg} ->
      {:error, Error.new(:arrow, :unsupported, msg)}

    :error, exception ->
      {:error,
       Error.new(:arrow, :malformed, "malformed Arrow IPC stream",
         details: %{exception: Exception.format_banner(:error, exception, __STACKTRACE__)}
       )}
  end

  @spec malformed(String.t()) :: no_return()
  defp malformed(msg), do: throw({:arrow_malformed, msg})
end
