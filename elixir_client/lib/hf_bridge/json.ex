defmodule HFBridge.JSON do
  @moduledoc """
  A small, strict JSON (RFC 8259) decoder and encoder, for HF `Features`
  JSON, export manifests and similar documents of a few kilobytes.

  Decoding maps JSON to Elixir as:

  | JSON          | Elixir                                  |
  |---------------|-----------------------------------------|
  | object        | map with string keys (last duplicate wins) |
  | array         | list                                    |
  | string        | UTF-8 binary                            |
  | number        | integer when written without fraction or exponent, else float |
  | true / false  | `true` / `false`                        |
  | null          | `nil`                                   |

  The decoder is strict: no comments, trailing commas, single quotes,
  leading zeros, `NaN`/`Infinity`, unescaped control characters, invalid
  UTF-8 or lone UTF-16 surrogates in `\\u` escapes (RFC 8259 §7, §8.2).
  `-0` decodes to the integer `0`, `-0.0` to the float `-0.0`. As RFC 8259
  §9 allows, it sets limits: nesting depth (`:max_depth`, default 512),
  integer literals of at most 4300 digits, and floats within the double
  range. Errors are `{:error, %HFBridge.Error{layer: :json, code: :malformed}}`
  whose message and `details.offset` give the byte offset of the problem.

  Encoding accepts maps (atom or string keys), lists, integers, floats
  (printed in the shortest form that reads back to the same float), binaries
  (must be UTF-8), booleans, `nil` and other atoms (written as strings).
  Map keys are written sorted, so output is deterministic.
  """

  alias HFBridge.Error

  @default_max_depth 512
  @max_integer_digits 4300

  @type json ::
          nil | boolean() | number() | String.t() | [json()] | %{optional(String.t()) => json()}

  @type decode_opt :: {:max_depth, pos_integer()}
  @type encode_opt :: {:pretty, boolean()}

  ## ---- decoding -------------------------------------------------------------------

  @doc """
  Decodes a JSON text. Options: `max_depth` (default #{@default_max_depth}),
  the deepest nesting of arrays and objects accepted.
  """
  @spec decode(binary(), [decode_opt()]) :: {:ok, json()} | {:error, Error.t()}
  def decode(text, opts \\ [])

  def decode(text, opts) when is_binary(text) do
    max_depth = Keyword.get(opts, :max_depth, @default_max_depth)
    {rest, pos} = ws(text, 0)
    {value, rest, pos} = value(rest, pos, max_depth)
    {rest, pos} = ws(rest, pos)

    case rest do
      <<>> -> {:ok, value}
      <<c, _::binary>> -> fail("unexpected #{show(c)} after the JSON value", pos)
    end
  catch
    {:json_error, message, offset} ->
      {:error,
       Error.new(:json, :malformed, "#{message} at byte offset #{offset}",
         details: %{offset: offset}
       )}
  end

  def decode(other, _opts),
    do:
      {:error,
       Error.new(:json, :malformed, "JSON text must be a binary, got #{inspect(other, limit: 5)}")}

  @doc "Like `decode/2` but raises `HFBridge.Error` on invalid JSON."
  @spec decode!(binary(), [decode_opt()]) :: json()
  def decode!(text, opts \\ []) do
    case decode(text, opts) do
      {:ok, value} -> value
      {:error, err} -> raise err
    end
  end

  defp fail(message, offset), do: throw({:json_error, message, offset})

  defp show(c) when c in 0x21..0x7E, do: "character #{<<?', c, ?'>>}"
  defp show(c), do: "byte 0x" <> Base.encode16(<<c>>)

  defp ws(<<c, rest::binary>>, pos) when c in [?\s, ?\t, ?\n, ?\r], do: ws(rest, pos + 1)
  defp ws(rest, pos), do: {rest, pos}

  defp value(<<?{, rest::binary>>, pos, depth), do: object(rest, pos + 1, nest(depth, pos))
  defp value(<<?[, rest::binary>>, pos, depth), do: array(rest, pos + 1, nest(depth, pos))
  defp value(<<?", rest::binary>>, pos, _depth), do: string(rest, pos + 1)
  defp value(<<"true", rest::binary>>, pos, _depth), do: {true, rest, pos + 4}
  defp value(<<"false", rest::binary>>, pos, _depth), do: {false, rest, pos + 5}
  defp value(<<"null", rest::binary>>, pos, _depth), do: {nil, rest, pos + 4}

  defp value(<<c, _::binary>> = bin, pos, _depth) when c == ?- or c in ?0..?9,
    do: number(bin, pos)

  defp value(<<0xEF, 0xBB, 0xBF, _::binary>>, pos, _depth),
    do: fail("unexpected byte order mark", pos)

  defp value(<<c, _::binary>>, pos, _depth),
    do: fail("unexpected #{show(c)}, expected a value", pos)

  defp value(<<>>, pos, _depth), do: fail("unexpected end of input, expected a value", pos)

  defp nest(0, pos), do: fail("arrays and objects nested too deeply", pos)
  defp nest(depth, _pos), do: depth - 1

  # Objects: pairs are collected in order, then put into a map (last wins).
  defp object(bin, pos, depth) do
    case ws(bin, pos) do
      {<<?}, rest::binary>>, pos} -> {%{}, rest, pos + 1}
      {rest, pos} -> members(rest, pos, depth, [])
    end
  end

  defp members(bin, pos, depth, acc) do
    {key, rest, pos} =
      case bin do
        <<?", rest::binary>> -> string(rest, pos + 1)
        <<c, _::binary>> -> fail("unexpected #{show(c)}, expected a string key", pos)
        <<>> -> fail("unexpected end of input in an object", pos)
      end

    {rest, pos} = ws(rest, pos)

    {rest, pos} =
      case rest do
        <<?:, rest::binary>> -> ws(rest, pos + 1)
        <<c, _::binary>> -> fail("unexpected #{show(c)}, expected ':'", pos)
        <<>> -> fail("unexpected end of input in an object", pos)
      end

    {value, rest, pos} = value(rest, pos, depth)
    acc = [{key, value} | acc]

    case ws(rest, pos) do
      {<<?,, rest::binary>>, pos} ->
        {rest, pos} = ws(rest, pos + 1)
        members(rest, pos, depth, acc)

      {<<?}, rest::binary>>, pos} ->
        {Map.new(Enum.reverse(acc)), rest, pos + 1}

      {<<c, _::binary>>, pos} ->
        fail("unexpected #{show(c)}, expected ',' or '}'", pos)

      {<<>>, pos} ->
        fail("unexpected end of input in an object", pos)
    end
  end

  defp array(bin, pos, depth) do
    case ws(bin, pos) do
      {<<?], rest::binary>>, pos} -> {[], rest, pos + 1}
      {rest, pos} -> elements(rest, pos, depth, [])
    end
  end

  defp elements(bin, pos, depth, acc) do
    {value, rest, pos} = value(bin, pos, depth)
    acc = [value | acc]

    case ws(rest, pos) do
      {<<?,, rest::binary>>, pos} ->
        {rest, pos} = ws(rest, pos + 1)
        elements(rest, pos, depth, acc)

      {<<?], rest::binary>>, pos} ->
        {Enum.reverse(acc), rest, pos + 1}

      {<<c, _::binary>>, pos} ->
        fail("unexpected #{show(c)}, expected ',' or ']'", pos)

      {<<>>, pos} ->
        fail("unexpected end of input in an array", pos)
    end
  end

  # Strings: runs of plain bytes are taken as slices of the input; escapes
  # are decoded one by one. `pos` is the offset of `bin`'s first byte.
  defp string(bin, pos), do: string(bin, pos, [])

  defp string(bin, pos, acc) do
    len = plain_run(bin, 0)
    <<chunk::binary-size(len), rest::binary>> = bin
    unless String.valid?(chunk), do: fail("invalid UTF-8 in a string", pos + invalid_at(chunk, 0))
    acc = if len > 0, do: [acc | chunk], else: acc
    pos = pos + len

    case rest do
      <<?", rest::binary>> ->
        {IO.iodata_to_binary(acc), rest, pos + 1}

      <<?\\, rest::binary>> ->
        {char, rest, used} = escape(rest, pos)
        string(rest, pos + used, [acc | char])

      <<c, _::binary>> ->
        fail("unescaped control character #{show(c)} in a string", pos)

      <<>> ->
        fail("unterminated string", pos)
    end
  end

  defp plain_run(bin, n) do
    case bin do
      <<_::binary-size(n), c, _::binary>> when c >= 0x20 and c != ?" and c != ?\\ ->
        plain_run(bin, n + 1)

      _ ->
        n
    end
  end

  defp invalid_at(chunk, n) do
    case chunk do
      <<_::binary-size(n), _::utf8, _::binary>> ->
        invalid_at(chunk, n + byte_size(next_char(chunk, n)))

      _ ->
        n
    end
  end

  defp next_char(chunk, n) do
    <<_::binary-size(n), c::utf8, _::binary>> = chunk
    <<c::utf8>>
  end

  # Returns {utf8_binary, rest, bytes_consumed_including_backslash}.
  defp escape(<<c, rest::binary>>, _pos) when c in [?", ?\\, ?/], do: {<<c>>, rest, 2}
  defp escape(<<?b, rest::binary>>, _pos), do: {<<?\b>>, rest, 2}
  defp escape(<<?f, rest::binary>>, _pos), do: {<<?\f>>, rest, 2}
  defp escape(<<?n, rest::binary>>, _pos), do: {<<?\n>>, rest, 2}
  defp escape(<<?r, rest::binary>>, _pos), do: {<<?\r>>, rest, 2}
  defp escape(<<?t, rest::binary>>, _pos), do: {<<?\t>>, rest, 2}

  defp escape(<<?u, rest::binary>>, pos) do
    {cp, rest} = hex4(rest, pos)

    cond do
      cp in 0xD800..0xDBFF ->
        case rest do
          <<?\\, ?u, rest2::binary>> ->
            {low, rest2} = hex4(rest2, pos + 6)

            if low in 0xDC00..0xDFFF do
              {<<0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00)::utf8>>, rest2, 12}
            else
              fail("high surrogate not followed by a low surrogate", pos)
            end

          _ ->
            fail("lone high surrogate in a \\u escape", pos)
        end

      cp in 0xDC00..0xDFFF ->
        fail("lone low surrogate in a \\u escape", pos)

      true ->
        {<<cp::utf8>>, rest, 6}
    end
  end

  defp escape(<<c, _::binary>>, pos), do: fail("invalid escape \\#{<<c>>}", pos)
  defp escape(<<>>, pos), do: fail("unterminated string", pos)

  defp hex4(<<a, b, c, d, rest::binary>>, pos) do
    case Integer.parse(<<a, b, c, d>>, 16) do
      {n, ""} when a not in [?+, ?-] -> {n, rest}
      _ -> fail("invalid \\u escape", pos)
    end
  end

  defp hex4(_bin, pos), do: fail("truncated \\u escape", pos)

  # number = [ "-" ] int [ frac ] [ exp ]   (RFC 8259 §6)
  defp number(bin, pos) do
    {sign_len, after_sign} =
      case bin do
        <<?-, rest::binary>> -> {1, rest}
        _ -> {0, bin}
      end

    int_len =
      case after_sign do
        <<?0, d, _::binary>> when d in ?0..?9 ->
          fail("leading zeros are not allowed", pos + sign_len)

        <<?0, _::binary>> ->
          1

        <<d, _::binary>> when d in ?1..?9 ->
          digits(after_sign, 0)

        _ ->
          fail("expected a digit", pos + sign_len)
      end

    n = sign_len + int_len

    frac_len =
      case bin do
        <<_::binary-size(n), ?., rest::binary>> ->
          case digits(rest, 0) do
            0 -> fail("expected a digit after '.'", pos + n + 1)
            k -> k + 1
          end

        _ ->
          0
      end

    n = n + frac_len

    exp_len =
      case bin do
        <<_::binary-size(n), e, s, rest::binary>> when e in [?e, ?E] and s in [?+, ?-] ->
          exp_digits(rest, 2, pos + n + 2)

        <<_::binary-size(n), e, rest::binary>> when e in [?e, ?E] ->
          exp_digits(rest, 1, pos + n + 1)

        _ ->
          0
      end

    total = n + exp_len
    <<text::binary-size(total), rest::binary>> = bin

    value =
      if frac_len == 0 and exp_len == 0 do
        if int_len > @max_integer_digits,
          do: fail("integer literal longer than #{@max_integer_digits} digits", pos)

        String.to_integer(text)
      else
        to_float(text, sign_len + int_len, frac_len, pos)
      end

    {value, rest, pos + total}
  end

  defp digits(bin, n) do
    case bin do
      <<_::binary-size(n), d, _::binary>> when d in ?0..?9 -> digits(bin, n + 1)
      _ -> n
    end
  end

  defp exp_digits(rest, prefix, at) do
    case digits(rest, 0) do
      0 -> fail("expected a digit in the exponent", at)
      k -> prefix + k
    end
  end

  # :erlang.binary_to_float/1 needs a fraction: "1e5" is read as "1.0e5".
  defp to_float(text, int_end, frac_len, pos) do
    text =
      if frac_len == 0 do
        <<int::binary-size(int_end), exp::binary>> = text
        int <> ".0" <> exp
      else
        text
      end

    :erlang.binary_to_float(text)
  rescue
    ArgumentError -> fail("number out of range", pos)
  end

  ## ---- encoding ----------------------------------------------------------------------

  @doc """
  Encodes a term as JSON iodata. Option `pretty: true` indents with two
  spaces. Returns `{:error, %HFBridge.Error{layer: :json, code: :unencodable}}`
  for terms JSON cannot express (tuples, pids, non-UTF-8 binaries,
  non-finite numbers, structs, keys other than atoms and strings, keys that
  collide once converted to strings).
  """
  @spec encode(term(), [encode_opt()]) :: {:ok, iodata()} | {:error, Error.t()}
  def encode(term, opts \\ []) do
    indent = if Keyword.get(opts, :pretty, false), do: 0, else: nil
    {:ok, enc(term, indent)}
  catch
    {:json_encode_error, message} -> {:error, Error.new(:json, :unencodable, message)}
  end

  @doc "Like `encode/2` but returns a binary and raises `HFBridge.Error` on failure."
  @spec encode!(term(), [encode_opt()]) :: binary()
  def encode!(term, opts \\ []) do
    case encode(term, opts) do
      {:ok, iodata} -> IO.iodata_to_binary(iodata)
      {:error, err} -> raise err
    end
  end

  defp cannot(message), do: throw({:json_encode_error, message})

  defp enc(nil, _), do: "null"
  defp enc(true, _), do: "true"
  defp enc(false, _), do: "false"
  defp enc(atom, _) when is_atom(atom), do: enc_string(Atom.to_string(atom))
  defp enc(int, _) when is_integer(int), do: Integer.to_string(int)
  defp enc(float, _) when is_float(float), do: :erlang.float_to_binary(float, [:short])
  defp enc(bin, _) when is_binary(bin), do: enc_string(bin)
  defp enc(list, indent) when is_list(list), do: enc_list(list, indent)
  defp enc(%{__struct__: mod}, _), do: cannot("cannot encode a #{inspect(mod)} struct")
  defp enc(map, indent) when is_map(map), do: enc_map(map, indent)
  defp enc(other, _), do: cannot("cannot encode #{inspect(other, limit: 5)}")

  defp enc_list([], _indent), do: "[]"

  defp enc_list(list, nil) do
    unless proper_list?(list), do: cannot("cannot encode an improper list")
    [?[, Enum.map_intersperse(list, ?,, &enc(&1, nil)), ?]]
  end

  defp enc_list(list, indent) do
    unless proper_list?(list), do: cannot("cannot encode an improper list")
    inner = indent + 1
    pad = newline(inner)
    [?[, pad, Enum.map_intersperse(list, [?, | pad], &enc(&1, inner)), newline(indent), ?]]
  end

  defp proper_list?([]), do: true
  defp proper_list?([_ | tail]), do: proper_list?(tail)
  defp proper_list?(_), do: false

  defp enc_map(map, _indent) when map_size(map) == 0, do: "{}"

  defp enc_map(map, indent) do
    pairs =
      map
      |> Enum.map(fn {k, v} -> {key_string(k), v} end)
      |> Enum.sort_by(&elem(&1, 0))

    pairs
    |> Enum.chunk_every(2, 1, :discard)
    |> Enum.each(fn [{a, _}, {b, _}] ->
      if a == b, do: cannot("duplicate key #{inspect(a)} in a map")
    end)

    case indent do
      nil ->
        [
          ?{,
          Enum.map_intersperse(pairs, ?,, fn {k, v} -> [enc_string(k), ?:, enc(v, nil)] end),
          ?}
        ]

      _ ->
        inner = indent + 1
        pad = newline(inner)

        body =
          Enum.map_intersperse(pairs, [?, | pad], fn {k, v} ->
            [enc_string(k), ": ", enc(v, inner)]
          end)

        [?{, pad, body, newline(indent), ?}]
    end
  end

  defp newline(level), do: [?\n | :binary.copy("  ", level)]

  defp key_string(k) when is_binary(k), do: k
  defp key_string(k) when is_atom(k) and k not in [nil, true, false], do: Atom.to_string(k)
  defp key_string(k), do: cannot("map keys must be strings or atoms, got #{inspect(k, limit: 5)}")

  # Escapes what RFC 8259 §7 requires: quotation mark, reverse solidus and
  # control characters. Plain runs are emitted as slices of the input.
  defp enc_string(bin) do
    unless String.valid?(bin),
      do: cannot("cannot encode a binary that is not UTF-8: #{inspect(bin, limit: 20)}")

    [?", escape_runs(bin, bin, 0, 0, []), ?"]
  end

  defp escape_runs(orig, rest, start, len, acc) do
    case rest do
      <<>> ->
        [acc | binary_part(orig, start, len)]

      <<c, tail::binary>> when c < 0x20 or c == ?" or c == ?\\ ->
        acc = [acc, binary_part(orig, start, len) | escaped(c)]
        escape_runs(orig, tail, start + len + 1, 0, acc)

      <<_, tail::binary>> ->
        escape_runs(orig, tail, start, len + 1, acc)
    end
  end

  defp escaped(?"), do: "\\\""
  defp escaped(?\\), do: "\\\\"
  defp escaped(?\n), do: "\\n"
  defp escaped(?\r), do: "\\r"
  defp escaped(?\t), do: "\\t"
  defp escaped(?\b), do: "\\b"
  defp escaped(?\f), do: "\\f"
  defp escaped(c), do: "\\u00" <> Base.encode16(<<c>>)
end
