defmodule HFBridge.Proto.Parser do
  @moduledoc """
  Parses `.proto` source text into a plain, unresolved description that
  `HFBridge.Proto.Schema` turns into codec tables.

  Supported (the proto3 subset hf_bridge uses, plus a little more):
  `syntax`, `package`, `import` (recorded, not followed), `option` (skipped),
  messages (nested), enums, scalar / message / enum fields, `repeated`,
  `optional`, `required` (proto2), `oneof`, `map<K, V>`, `reserved`,
  `extensions`, field options (`packed` is honoured, the rest skipped),
  line and block comments, and `service` blocks with `rpc` methods
  (including `stream` and option bodies). Groups and `extend` are rejected
  with an error.

  The description is a map:

      %{syntax: "proto3", package: "a.b", imports: [String.t()],
        messages: [message], enums: [enum], services: [service]}

      message :: %{name: String.t(), fields: [field], oneofs: [String.t()],
                   messages: [message], enums: [enum]}
      field   :: %{name: String.t(), number: pos_integer(), label: label,
                   type: String.t() | {:map, String.t(), String.t()},
                   oneof: String.t() | nil, packed: boolean() | nil, line: pos_integer()}
      enum    :: %{name: String.t(), values: [{String.t(), integer()}]}
      service :: %{name: String.t(), rpcs: [%{name: String.t(), input: String.t(),
                   output: String.t(), client_streaming: boolean(), server_streaming: boolean()}]}
  """

  alias HFBridge.Error

  @type label :: :none | :optional | :repeated | :required
  @type description :: map()

  @typep token ::
           {:ident, String.t(), pos_integer()}
           | {:int, integer(), pos_integer()}
           | {:float, float(), pos_integer()}
           | {:string, String.t(), pos_integer()}
           | {:sym, String.t(), pos_integer()}

  @doc """
  Parses `.proto` text. Returns `{:ok, description}` or
  `{:error, %HFBridge.Error{layer: :proto, code: :invalid_schema}}` naming
  the line.
  """
  @spec parse(String.t()) :: {:ok, description()} | {:error, Error.t()}
  def parse(text) when is_binary(text) do
    tokens = tokenize(text, 1, [])

    {:ok,
     parse_file(tokens, %{
       syntax: "proto2",
       package: "",
       imports: [],
       messages: [],
       enums: [],
       services: []
     })}
  catch
    {:proto_parse_error, message, line} ->
      {:error,
       Error.new(:proto, :invalid_schema, "line #{line}: #{message}", details: %{line: line})}
  end

  defp fail(message, line), do: throw({:proto_parse_error, message, line})

  ## ---- tokenizer --------------------------------------------------------------

  @spec tokenize(binary(), pos_integer(), [token()]) :: [token()]
  defp tokenize(<<>>, _line, acc), do: Enum.reverse(acc)
  defp tokenize(<<?\n, rest::binary>>, line, acc), do: tokenize(rest, line + 1, acc)

  defp tokenize(<<c, rest::binary>>, line, acc) when c in [?\s, ?\t, ?\r, ?\f, ?\v],
    do: tokenize(rest, line, acc)

  defp tokenize(<<"//", rest::binary>>, line, acc) do
    case :binary.split(rest, "\n") do
      [_comment, rest] -> tokenize(rest, line + 1, acc)
      [_comment] -> tokenize(<<>>, line, acc)
    end
  end

  defp tokenize(<<"/*", rest::binary>>, line, acc) do
    case :binary.split(rest, "*/") do
      [comment, rest] -> tokenize(rest, line + count_newlines(comment), acc)
      [_] -> fail("unterminated block comment", line)
    end
  end

  defp tokenize(<<c, _::binary>> = bin, line, acc)
       when c in ?a..?z or c in ?A..?Z or c == ?_ or c == ?. do
    case bin do
      <<?., d, _::binary>> when d in ?0..?9 ->
        {tok, rest} = number(bin, line)
        tokenize(rest, line, [tok | acc])

      _ ->
        {word, rest} = take_while(bin, &ident_char?/1)
        tokenize(rest, line, [{:ident, word, line} | acc])
    end
  end

  defp tokenize(<<c, _::binary>> = bin, line, acc) when c in ?0..?9 do
    {tok, rest} = number(bin, line)
    tokenize(rest, line, [tok | acc])
  end

  defp tokenize(<<q, rest::binary>>, line, acc) when q in [?", ?'] do
    {str, rest} = string(rest, q, line, [])
    tokenize(rest, line, [{:string, str, line} | acc])
  end

  defp tokenize(<<c, rest::binary>>, line, acc) when c in ~c"{}[]()<>;=,-+:/" do
    tokenize(rest, line, [{:sym, <<c>>, line} | acc])
  end

  defp tokenize(<<c, _::binary>>, line, _acc),
    do: fail("unexpected character #{inspect(<<c>>)}", line)

  defp ident_char?(c), do: c in ?a..?z or c in ?A..?Z or c in ?0..?9 or c == ?_ or c == ?.

  defp count_newlines(bin), do: length(:binary.matches(bin, "\n"))

  defp take_while(bin, pred), do: take_while(bin, pred, 0)

  defp take_while(bin, pred, n) do
    case bin do
      <<_::binary-size(n), c, _::binary>> ->
        if pred.(c), do: take_while(bin, pred, n + 1), else: split_at(bin, n)

      _ ->
        split_at(bin, n)
    end
  end

  defp split_at(bin, n) do
    <<taken::binary-size(n), rest::binary>> = bin
    {taken, rest}
  end

  defp number(bin, line) do
    {word, rest} =
      take_while(bin, &(&1 in ?0..?9 or &1 in ?a..?z or &1 in ?A..?Z or &1 == ?. or &1 == ?_))

    # An exponent sign belongs to the number: 1e-5.
    {word, rest} =
      case {word, rest} do
        {w, <<s, d, _::binary>>} when s in [?+, ?-] and d in ?0..?9 ->
          if String.ends_with?(w, ["e", "E"]) and not String.starts_with?(w, ["0x", "0X"]) do
            {more, rest2} = take_while(binary_part(rest, 1, byte_size(rest) - 1), &(&1 in ?0..?9))
            {w <> <<s>> <> more, rest2}
          else
            {w, rest}
          end

        other ->
          other
      end

    {parse_number(word, line), rest}
  end

  defp parse_number(<<"0", x, hex::binary>> = word, line) when x in [?x, ?X] do
    case Integer.parse(hex, 16) do
      {n, ""} -> {:int, n, line}
      _ -> fail("bad number #{word}", line)
    end
  end

  defp parse_number(word, line) do
    cond do
      String.match?(word, ~r/^0[0-7]+$/) ->
        {:int, String.to_integer(word, 8), line}

      String.match?(word, ~r/^[0-9]+$/) ->
        {:int, String.to_integer(word), line}

      true ->
        case Float.parse(normalize_float(word)) do
          {f, ""} -> {:float, f, line}
          _ -> fail("bad number #{word}", line)
        end
    end
  end

  defp normalize_float(word) do
    word = if String.starts_with?(word, "."), do: "0" <> word, else: word

    case String.split(String.downcase(word), "e", parts: 2) do
      [m, e] -> fix_mantissa(m) <> "e" <> e
      [m] -> fix_mantissa(m)
    end
  end

  defp fix_mantissa(m) do
    cond do
      String.ends_with?(m, ".") -> m <> "0"
      String.contains?(m, ".") -> m
      true -> m <> ".0"
    end
  end

  defp string(<<q, rest::binary>>, q, _line, acc),
    do: {IO.iodata_to_binary(Enum.reverse(acc)), rest}

  defp string(<<?\n, _::binary>>, _q, line, _acc), do: fail("newline in string literal", line)

  defp string(<<?\\, c, rest::binary>>, q, line, acc),
    do: string(rest, q, line, [escape(c, line) | acc])

  defp string(<<c, rest::binary>>, q, line, acc), do: string(rest, q, line, [c | acc])
  defp string(<<>>, _q, line, _acc), do: fail("unterminated string literal", line)

  defp escape(?n, _), do: ?\n
  defp escape(?t, _), do: ?\t
  defp escape(?r, _), do: ?\r
  defp escape(?\\, _), do: ?\\
  defp escape(?", _), do: ?"
  defp escape(?', _), do: ?'
  defp escape(?0, _), do: 0
  defp escape(c, line), do: fail("unsupported escape \\#{<<c>>} in string literal", line)

  ## ---- file level ----------------------------------------------------------

  defp parse_file([], acc) do
    %{
      acc
      | imports: Enum.reverse(acc.imports),
        messages: Enum.reverse(acc.messages),
        enums: Enum.reverse(acc.enums),
        services: Enum.reverse(acc.services)
    }
  end

  defp parse_file([{:sym, ";", _} | rest], acc), do: parse_file(rest, acc)

  defp parse_file([{:ident, "syntax", _}, {:sym, "=", _}, {:string, syntax, line} | rest], acc) do
    unless syntax in ["proto2", "proto3"], do: fail("unsupported syntax #{inspect(syntax)}", line)
    parse_file(expect_sym(rest, ";"), %{acc | syntax: syntax})
  end

  defp parse_file([{:ident, "package", _}, {:ident, name, _} | rest], acc),
    do: parse_file(expect_sym(rest, ";"), %{acc | package: name})

  defp parse_file([{:ident, "import", _} | rest], acc) do
    rest =
      case rest do
        [{:ident, kind, _} | r] when kind in ["public", "weak"] -> r
        r -> r
      end

    case rest do
      [{:string, path, _} | rest] ->
        parse_file(expect_sym(rest, ";"), %{acc | imports: [path | acc.imports]})

      [tok | _] ->
        fail("expected an import path", line_of(tok))
    end
  end

  defp parse_file([{:ident, "option", _} | rest], acc), do: parse_file(skip_statement(rest), acc)

  defp parse_file([{:ident, "message", _}, {:ident, name, _}, {:sym, "{", _} | rest], acc) do
    {msg, rest} = message_body(rest, new_message(name))
    parse_file(rest, %{acc | messages: [msg | acc.messages]})
  end

  defp parse_file([{:ident, "enum", _}, {:ident, name, _}, {:sym, "{", _} | rest], acc) do
    {enum, rest} = enum_body(rest, %{name: name, values: []})
    parse_file(rest, %{acc | enums: [enum | acc.enums]})
  end

  defp parse_file([{:ident, "service", _}, {:ident, name, _}, {:sym, "{", _} | rest], acc) do
    {svc, rest} = service_body(rest, %{name: name, rpcs: []})
    parse_file(rest, %{acc | services: [svc | acc.services]})
  end

  defp parse_file([{:ident, "extend", line} | _], _acc),
    do: fail("extensions (extend) are not supported", line)

  defp parse_file([tok | _], _acc),
    do: fail("unexpected #{describe(tok)} at top level", line_of(tok))

  ## ---- messages --------------------------------------------------------------

  defp new_message(name), do: %{name: name, fields: [], oneofs: [], messages: [], enums: []}

  defp finish_message(msg) do
    %{
      msg
      | fields: Enum.reverse(msg.fields),
        oneofs: Enum.reverse(msg.oneofs),
        messages: Enum.reverse(msg.messages),
        enums: Enum.reverse(msg.enums)
    }
  end

  defp message_body([{:sym, "}", _} | rest], msg), do: {finish_message(msg), rest}
  defp message_body([{:sym, ";", _} | rest], msg), do: message_body(rest, msg)

  defp message_body([{:ident, "message", _}, {:ident, name, _}, {:sym, "{", _} | rest], msg) do
    {inner, rest} = message_body(rest, new_message(name))
    message_body(rest, %{msg | messages: [inner | msg.messages]})
  end

  defp message_body([{:ident, "enum", _}, {:ident, name, _}, {:sym, "{", _} | rest], msg) do
    {enum, rest} = enum_body(rest, %{name: name, values: []})
    message_body(rest, %{msg | enums: [enum | msg.enums]})
  end

  defp message_body([{:ident, "oneof", _}, {:ident, name, _}, {:sym, "{", _} | rest], msg) do
    {fields, rest} = oneof_body(rest, name, [])
    message_body(rest, %{msg | fields: fields ++ msg.fields, oneofs: [name | msg.oneofs]})
  end

  defp message_body([{:ident, word, _} | rest], msg)
       when word in ["option", "reserved", "extensions"],
       do: message_body(skip_statement(rest), msg)

  defp message_body([{:ident, "extend", line} | _], _msg),
    do: fail("extensions (extend) are not supported", line)

  defp message_body([{:ident, label, _} | rest], msg)
       when label in ["repeated", "optional", "required"] do
    {field, rest} = field(rest, String.to_atom(label), nil)
    message_body(rest, %{msg | fields: [field | msg.fields]})
  end

  defp message_body([{:ident, _, _} | _] = tokens, msg) do
    {field, rest} = field(tokens, :none, nil)
    message_body(rest, %{msg | fields: [field | msg.fields]})
  end

  defp message_body([tok | _], msg),
    do: fail("unexpected #{describe(tok)} in message #{msg.name}", line_of(tok))

  defp message_body([], msg), do: fail("message #{msg.name} is not closed", 0)

  defp oneof_body([{:sym, "}", _} | rest], _name, acc), do: {acc, rest}
  defp oneof_body([{:sym, ";", _} | rest], name, acc), do: oneof_body(rest, name, acc)

  defp oneof_body([{:ident, "option", _} | rest], name, acc),
    do: oneof_body(skip_statement(rest), name, acc)

  defp oneof_body([{:ident, label, line} | _], _name, _acc)
       when label in ["repeated", "optional", "required"],
       do: fail("oneof members cannot be #{label}", line)

  defp oneof_body([{:ident, _, _} | _] = tokens, name, acc) do
    {field, rest} = field(tokens, :none, name)
    oneof_body(rest, name, [field | acc])
  end

  defp oneof_body([tok | _], name, _acc),
    do: fail("unexpected #{describe(tok)} in oneof #{name}", line_of(tok))

  defp oneof_body([], name, _acc), do: fail("oneof #{name} is not closed", 0)

  # field := type name "=" number [options] ";"
  defp field(
         [
           {:ident, "map", line},
           {:sym, "<", _},
           {:ident, k, _},
           {:sym, ",", _},
           {:ident, v, _},
           {:sym, ">", _} | rest
         ],
         label,
         oneof
       ) do
    if label != :none or oneof != nil,
      do: fail("map fields cannot be labelled or in a oneof", line)

    field_rest(rest, {:map, k, v}, label, oneof, line)
  end

  defp field([{:ident, "group", line} | _], _label, _oneof),
    do: fail("groups are not supported", line)

  defp field([{:ident, type, line} | rest], label, oneof),
    do: field_rest(rest, type, label, oneof, line)

  defp field([tok | _], _label, _oneof),
    do: fail("expected a field type, got #{describe(tok)}", line_of(tok))

  defp field_rest(
         [{:ident, name, _}, {:sym, "=", _}, {:int, number, nline} | rest],
         type,
         label,
         oneof,
         line
       ) do
    unless number in 1..536_870_911 and number not in 19_000..19_999,
      do: fail("field #{name} has an invalid number #{number}", nline)

    {opts, rest} = field_options(rest)
    rest = expect_sym(rest, ";")

    packed =
      case Map.get(opts, "packed") do
        nil -> nil
        {:ident, "true"} -> true
        {:ident, "false"} -> false
        other -> fail("packed must be true or false, got #{inspect(other)}", line)
      end

    {%{
       name: name,
       number: number,
       label: label,
       type: type,
       oneof: oneof,
       packed: packed,
       line: line
     }, rest}
  end

  defp field_rest([tok | _], _type, _label, _oneof, _line),
    do: fail("malformed field near #{describe(tok)}", line_of(tok))

  defp field_rest([], _type, _label, _oneof, line),
    do: fail("unexpected end of file in a field", line)

  defp field_options([{:sym, "[", _} | rest]), do: option_list(rest, %{})
  defp field_options(rest), do: {%{}, rest}

  defp option_list(tokens, acc) do
    {name, tokens} = option_name(tokens, [])

    case tokens do
      [{:sym, "=", _} | tokens] ->
        {value, tokens} = option_value(tokens)
        acc = Map.put(acc, name, value)

        case tokens do
          [{:sym, ",", _} | tokens] -> option_list(tokens, acc)
          [{:sym, "]", _} | tokens] -> {acc, tokens}
          [tok | _] -> fail("unexpected #{describe(tok)} in field options", line_of(tok))
          [] -> fail("unterminated field options", 0)
        end

      [tok | _] ->
        fail("expected = in field options, got #{describe(tok)}", line_of(tok))

      [] ->
        fail("unterminated field options", 0)
    end
  end

  defp option_name([{:sym, "(", _}, {:ident, n, _}, {:sym, ")", _} | rest], acc),
    do: option_name(rest, ["(#{n})" | acc])

  defp option_name([{:ident, n, _} | rest], acc), do: option_name(rest, [n | acc])
  defp option_name(rest, []), do: fail("expected an option name", line_of(List.first(rest)))
  defp option_name(rest, acc), do: {acc |> Enum.reverse() |> Enum.join(""), rest}

  defp option_value([{:sym, "-", _}, {kind, v, _} | rest]) when kind in [:int, :float],
    do: {{kind, -v}, rest}

  defp option_value([{:sym, "+", _}, {kind, v, _} | rest]) when kind in [:int, :float],
    do: {{kind, v}, rest}

  defp option_value([{:sym, "{", _} | rest]), do: {{:aggregate, nil}, skip_braces(rest, 1)}

  defp option_value([{kind, v, _} | rest]) when kind in [:int, :float, :string, :ident],
    do: {{kind, v}, rest}

  defp option_value([tok | _]), do: fail("bad option value #{describe(tok)}", line_of(tok))
  defp option_value([]), do: fail("missing option value", 0)

  ## ---- enums ---------------------------------------------------------------------

  defp enum_body([{:sym, "}", _} | rest], enum) do
    if enum.values == [], do: fail("enum #{enum.name} has no values", 0)
    {%{enum | values: Enum.reverse(enum.values)}, rest}
  end

  defp enum_body([{:sym, ";", _} | rest], enum), do: enum_body(rest, enum)

  defp enum_body([{:ident, word, _} | rest], enum) when word in ["option", "reserved"],
    do: enum_body(skip_statement(rest), enum)

  defp enum_body([{:ident, name, _}, {:sym, "=", _} | rest], enum) do
    {number, rest} =
      case rest do
        [{:sym, "-", _}, {:int, n, _} | rest] -> {-n, rest}
        [{:int, n, _} | rest] -> {n, rest}
        [tok | _] -> fail("expected an enum value number, got #{describe(tok)}", line_of(tok))
        [] -> fail("unexpected end of file in enum #{enum.name}", 0)
      end

    {_opts, rest} = field_options(rest)
    enum_body(expect_sym(rest, ";"), %{enum | values: [{name, number} | enum.values]})
  end

  defp enum_body([tok | _], enum),
    do: fail("unexpected #{describe(tok)} in enum #{enum.name}", line_of(tok))

  defp enum_body([], enum), do: fail("enum #{enum.name} is not closed", 0)

  ## ---- services -------------------------------------------------------------------

  defp service_body([{:sym, "}", _} | rest], svc),
    do: {%{svc | rpcs: Enum.reverse(svc.rpcs)}, rest}

  defp service_body([{:sym, ";", _} | rest], svc), do: service_body(rest, svc)

  defp service_body([{:ident, "option", _} | rest], svc),
    do: service_body(skip_statement(rest), svc)

  defp service_body([{:ident, "rpc", _}, {:ident, name, _}, {:sym, "(", _} | rest], svc) do
    {client_streaming, input, rest} = rpc_type(rest)

    rest =
      case rest do
        [{:ident, "returns", _}, {:sym, "(", _} | rest] -> rest
        [tok | _] -> fail("expected returns (...) after rpc #{name}", line_of(tok))
        [] -> fail("unexpected end of file in rpc #{name}", 0)
      end

    {server_streaming, output, rest} = rpc_type(rest)

    rest =
      case rest do
        [{:sym, ";", _} | rest] -> rest
        [{:sym, "{", _} | rest] -> skip_braces(rest, 1)
        [tok | _] -> fail("expected ; or { after rpc #{name}", line_of(tok))
        [] -> fail("unexpected end of file in rpc #{name}", 0)
      end

    rpc = %{
      name: name,
      input: input,
      output: output,
      client_streaming: client_streaming,
      server_streaming: server_streaming
    }

    service_body(rest, %{svc | rpcs: [rpc | svc.rpcs]})
  end

  defp service_body([tok | _], svc),
    do: fail("unexpected #{describe(tok)} in service #{svc.name}", line_of(tok))

  defp service_body([], svc), do: fail("service #{svc.name} is not closed", 0)

  defp rpc_type([{:ident, "stream", _}, {:ident, type, _}, {:sym, ")", _} | rest]),
    do: {true, type, rest}

  defp rpc_type([{:ident, type, _}, {:sym, ")", _} | rest]), do: {false, type, rest}
  defp rpc_type([tok | _]), do: fail("malformed rpc type near #{describe(tok)}", line_of(tok))
  defp rpc_type([]), do: fail("unexpected end of file in an rpc", 0)

  ## ---- helpers ------------------------------------------------------------------------

  defp expect_sym([{:sym, s, _} | rest], s), do: rest
  defp expect_sym([tok | _], s), do: fail("expected #{s}, got #{describe(tok)}", line_of(tok))
  defp expect_sym([], s), do: fail("expected #{s}, got end of file", 0)

  # Skips to the end of a statement: the next ";" at brace depth 0, or a
  # balanced { ... } block.
  defp skip_statement([{:sym, ";", _} | rest]), do: rest
  defp skip_statement([{:sym, "{", _} | rest]), do: skip_statement(skip_braces(rest, 1))
  defp skip_statement([_ | rest]), do: skip_statement(rest)
  defp skip_statement([]), do: fail("unterminated statement", 0)

  defp skip_braces(rest, 0), do: rest
  defp skip_braces([{:sym, "{", _} | rest], d), do: skip_braces(rest, d + 1)
  defp skip_braces([{:sym, "}", _} | rest], d), do: skip_braces(rest, d - 1)
  defp skip_braces([_ | rest], d), do: skip_braces(rest, d)
  defp skip_braces([], _d), do: fail("unbalanced braces", 0)

  defp line_of({_, _, line}), do: line
  defp line_of(_), do: 0

  defp describe({:ident, v, _}), do: "identifier #{v}"
  defp describe({:int, v, _}), do: "number #{v}"
  defp describe({:float, v, _}), do: "number #{v}"
  defp describe({:string, v, _}), do: "string #{inspect(v)}"
  defp describe({:sym, v, _}), do: inspect(v)
end
