defmodule HFBridge.Arrow.Decoder do
  @moduledoc """
  Decodes the body of a `RecordBatch` (or of a `DictionaryBatch`) into one
  Elixir list per field.

  Field nodes and body buffers are consumed in schema pre-order (Arrow
  columnar format, "Record batch body structure"). Buffers per layout:

    * null — none
    * bool, fixed width (ints, floats, decimals, temporal, fixed_size_binary),
      dictionary indices — validity, values
    * utf8 / binary (and large) — validity, offsets, data
    * list / large_list / map — validity, offsets, then the child
    * fixed_size_list / struct — validity, then the children

  Every buffer is checked against the body size, every declared length
  against its buffers, every offset against the data it points into, and
  every length against `:max_array_length`. Arrays whose elements take no
  body bytes (null, empty struct, zero-width fixed-size types) draw on the
  `unbacked` budget of the context, so hostile lengths cannot make the reader
  allocate without bound. Problems throw `{:arrow_malformed, msg}` or
  `{:arrow_unsupported, msg}`.

  Values: see `HFBridge.Arrow` for the Elixir representation of each type.
  """

  alias HFBridge.Arrow.{Bits, Dictionary, Field, Temporal}

  @typedoc """
  Decoding context: the message body, decoding options and the dictionaries
  seen so far (id → tuple of values).
  """
  @type ctx :: %{
          body: binary(),
          copy: boolean(),
          temporal: :raw | :elixir,
          max_array_length: pos_integer(),
          unbacked: non_neg_integer(),
          dicts: %{optional(integer()) => HFBridge.Arrow.Dictionary.t()}
        }

  @doc """
  Decodes a record batch: returns one value list per field, each of
  `meta.length` elements, and what is left of the `unbacked` budget.
  """
  @spec decode([Field.t()], HFBridge.Arrow.Message.batch_meta(), ctx()) ::
          {[list()], non_neg_integer()}
  def decode(fields, %{length: length, nodes: nodes, buffers: buffers}, ctx) do
    check_length(length, ctx)

    {columns, {_, _, unbacked}} =
      Enum.map_reduce(fields, {nodes, buffers, ctx.unbacked}, fn field, st ->
        {values, n, st} = field(field, st, ctx)

        if n != length do
          malformed("column #{inspect(field.name)} has #{n} rows, the batch declares #{length}")
        end

        {values, st}
      end)

    {columns, unbacked}
  end

  # -- one field -----------------------------------------------------------

  defp field(%Field{dictionary: nil} = f, st, ctx) do
    {{len, nulls}, st} = node(st, ctx)
    {values, st} = typed(f.type, f, len, nulls, st, ctx)
    {values, len, st}
  end

  defp field(%Field{dictionary: %{id: id, index_type: itype}} = f, st, ctx) do
    {{len, nulls}, st} = node(st, ctx)
    {validity, st} = buffer(st, ctx)
    {data, st} = buffer(st, ctx)
    indices = validate(ints(itype, data, len), validity, len, nulls)

    dict =
      case ctx.dicts do
        %{^id => d} ->
          d

        _ ->
          malformed(
            "column #{inspect(f.name)} refers to dictionary #{id}, which the stream has not sent"
          )
      end

    size = Dictionary.size(dict)

    values =
      for i <- indices do
        cond do
          i == nil -> nil
          i >= 0 and i < size -> Dictionary.at(dict, i)
          true -> malformed("dictionary index #{i} outside a dictionary of #{size} values")
        end
      end

    {values, len, st}
  end

  # -- per type ------------------------------------------------------------

  defp typed(:null, _f, len, _nulls, st, _ctx), do: filled(st, len, nil)

  defp typed(:bool, _f, len, nulls, st, ctx) do
    {validity, st} = buffer(st, ctx)
    {data, st} = buffer(st, ctx)
    need(data, bitmap_bytes(len), "bool values")
    {validate(Bits.to_booleans(data, len), validity, len, nulls), st}
  end

  defp typed(type, _f, len, nulls, st, ctx)
       when type in [:int8, :int16, :int32, :int64, :uint8, :uint16, :uint32, :uint64] do
    {validity, st} = buffer(st, ctx)
    {data, st} = buffer(st, ctx)
    {validate(ints(type, data, len), validity, len, nulls), st}
  end

  defp typed(type, _f, len, nulls, st, ctx) when type in [:float16, :float32, :float64] do
    {validity, st} = buffer(st, ctx)
    {data, st} = buffer(st, ctx)
    {validate(floats(type, data, len), validity, len, nulls), st}
  end

  defp typed({:decimal, _precision, scale, bits}, _f, len, nulls, st, ctx) do
    {validity, st} = buffer(st, ctx)
    {data, st} = buffer(st, ctx)
    w = div(bits, 8)
    data = need(data, len * w, "decimal values")
    values = for <<v::little-signed-size(bits) <- data>>, do: {v, scale}
    {validate(values, validity, len, nulls), st}
  end

  defp typed(type, _f, len, nulls, st, ctx)
       when type in [:date32, :date64] or
              (is_tuple(type) and elem(type, 0) in [:time32, :time64, :timestamp, :duration]) do
    {validity, st} = buffer(st, ctx)
    {data, st} = buffer(st, ctx)
    raw = validate(ints(storage(type), data, len), validity, len, nulls)

    case {ctx.temporal, type} do
      {_, {:duration, _}} -> {raw, st}
      {:raw, _} -> {raw, st}
      {:elixir, _} -> {Temporal.convert(raw, type), st}
    end
  end

  defp typed({:fixed_size_binary, w}, _f, len, nulls, st, ctx) do
    {validity, st} = buffer(st, ctx)
    {data, st} = buffer(st, ctx)
    data = need(data, len * w, "fixed_size_binary values")

    {values, st} =
      cond do
        w == 0 -> filled(st, len, "")
        ctx.copy -> {for(<<v::binary-size(w) <- data>>, do: :binary.copy(v)), st}
        true -> {for(<<v::binary-size(w) <- data>>, do: v), st}
      end

    {validate(values, validity, len, nulls), st}
  end

  defp typed(type, _f, len, nulls, st, ctx)
       when type in [:utf8, :binary, :large_utf8, :large_binary] do
    {validity, st} = buffer(st, ctx)
    {offsets, st} = buffer(st, ctx)
    {data, st} = buffer(st, ctx)
    bits = if type in [:utf8, :binary], do: 32, else: 64

    values =
      if len == 0 do
        []
      else
        offsets = need(offsets, (len + 1) * div(bits, 8), "offsets")
        <<first::little-signed-size(bits), rest::binary>> = offsets

        if first < 0 or first > byte_size(data),
          do: malformed("first offset #{first} outside the data buffer")

        case {bits, ctx.copy} do
          {32, false} -> slices32(rest, first, data)
          {32, true} -> copies32(rest, first, data)
          {64, false} -> slices64(rest, first, data)
          {64, true} -> copies64(rest, first, data)
        end
      end

    {validate(values, validity, len, nulls), st}
  end

  defp typed(type, f, len, nulls, st, ctx) when type in [:list, :large_list] do
    {validity, st} = buffer(st, ctx)
    {offsets, st} = buffer(st, ctx)
    [child] = f.children
    bits = if type == :list, do: 32, else: 64

    if flat_child?(child, st) do
      {values, st} = flat_lists(child, offsets, bits, len, st, ctx)
      {validate(values, validity, len, nulls), st}
    else
      {child_values, child_len, st} = field(child, st, ctx)

      {validate(
         split_by_offsets(offsets, bits, len, child_values, child_len),
         validity,
         len,
         nulls
       ), st}
    end
  end

  defp typed({:map, _}, f, len, nulls, st, ctx) do
    {validity, st} = buffer(st, ctx)
    {offsets, st} = buffer(st, ctx)
    [entries] = f.children
    {pairs, pairs_len, st} = map_entries(entries, st, ctx)
    {validate(split_by_offsets(offsets, 32, len, pairs, pairs_len), validity, len, nulls), st}
  end

  defp typed({:fixed_size_list, size}, f, len, nulls, st, ctx) do
    {validity, st} = buffer(st, ctx)
    [child] = f.children
    {child_values, child_len, st} = field(child, st, ctx)

    if child_len < len * size do
      malformed(
        "fixed_size_list child has #{child_len} values, #{len} lists of #{size} need #{len * size}"
      )
    end

    if size == 0 do
      {values, st} = filled(st, len, [])
      {validate(values, validity, len, nulls), st}
    else
      {validate(chunks(child_values, size, len), validity, len, nulls), st}
    end
  end

  defp typed(:struct, f, len, nulls, st, ctx) do
    {validity, st} = buffer(st, ctx)

    {columns, st} =
      Enum.map_reduce(f.children, st, fn child, st ->
        {values, n, st} = field(child, st, ctx)

        if n < len,
          do: malformed("struct child #{inspect(child.name)} has #{n} values, the struct #{len}")

        {values, st}
      end)

    names = Enum.map(f.children, & &1.name)
    st = if names == [], do: unbacked(st, len), else: st
    {validate(HFBridge.Arrow.Table.zip_rows(names, columns, len), validity, len, nulls), st}
  end

  defp typed({:unsupported, name}, f, _len, _nulls, _st, _ctx) do
    throw(
      {:arrow_unsupported,
       "column #{inspect(f.name)} has Arrow type #{name}, which is not supported"}
    )
  end

  # Map entries: a struct node of {key, value} decoded to tuples.
  defp map_entries(%Field{type: :struct, children: [k, v]}, st, ctx) do
    {{len, nulls}, st} = node(st, ctx)
    {validity, st} = buffer(st, ctx)
    {keys, klen, st} = field(k, st, ctx)
    {vals, vlen, st} = field(v, st, ctx)
    if klen < len or vlen < len, do: malformed("map keys/values shorter than the map entries")
    {validate(zip_pairs(keys, vals, len), validity, len, nulls), len, st}
  end

  defp map_entries(_, _st, _ctx), do: malformed("map child must be a struct of key and value")

  defp zip_pairs(_, _, 0), do: []
  defp zip_pairs([k | ks], [v | vs], n), do: [{k, v} | zip_pairs(ks, vs, n - 1)]

  # -- nodes and buffers ---------------------------------------------------

  defp node({[{len, nulls} | nodes], buffers, unbacked}, ctx) do
    check_length(len, ctx)
    if nulls < 0 or nulls > len, do: malformed("null count #{nulls} outside 0..#{len}")
    {{len, nulls}, {nodes, buffers, unbacked}}
  end

  defp node({[], _, _}, _ctx),
    do: malformed("record batch has fewer field nodes than the schema needs")

  defp buffer({nodes, [{offset, length} | buffers], unbacked}, ctx) do
    if offset < 0 or length < 0 or offset + length > byte_size(ctx.body) do
      malformed(
        "buffer at #{offset} of #{length} bytes outside a body of #{byte_size(ctx.body)} bytes"
      )
    end

    {binary_part(ctx.body, offset, length), {nodes, buffers, unbacked}}
  end

  defp buffer({_, [], _}, _ctx),
    do: malformed("record batch has fewer buffers than the schema needs")

  # `len` copies of `value`, charged to the budget before they are allocated.
  defp filled(st, len, value) do
    st = unbacked(st, len)
    {List.duplicate(value, len), st}
  end

  # Charges `len` elements that no body bytes back against the budget.
  defp unbacked({nodes, buffers, budget}, len) when len <= budget,
    do: {nodes, buffers, budget - len}

  defp unbacked(_st, len),
    do: malformed("#{len} values without body data exceed the :max_unbacked_values budget")

  defp check_length(len, ctx) do
    if len < 0 or len > ctx.max_array_length do
      malformed(
        "array length #{len} outside 0..#{ctx.max_array_length} (see the :max_array_length option)"
      )
    end
  end

  # Returns the first `bytes` bytes of `buf`, or throws when it is shorter.
  defp need(buf, bytes, what) do
    if byte_size(buf) < bytes do
      malformed("#{what} buffer holds #{byte_size(buf)} bytes, #{bytes} needed")
    end

    binary_part(buf, 0, bytes)
  end

  defp bitmap_bytes(len), do: div(len + 7, 8)

  # Applies the validity bitmap when the node has nulls.
  defp validate(values, _validity, _len, 0), do: values

  defp validate(values, validity, len, _nulls) do
    Bits.mask(values, need(validity, bitmap_bytes(len), "validity"))
  end

  # -- fixed width ---------------------------------------------------------

  defp storage(:date32), do: :int32
  defp storage(:date64), do: :int64
  defp storage({:time32, _}), do: :int32
  defp storage(_), do: :int64

  defp ints(:int8, data, n), do: for(<<v::signed-8 <- need(data, n, "int8")>>, do: v)

  defp ints(:int16, data, n),
    do: for(<<v::little-signed-16 <- need(data, n * 2, "int16")>>, do: v)

  defp ints(:int32, data, n),
    do: for(<<v::little-signed-32 <- need(data, n * 4, "int32")>>, do: v)

  defp ints(:int64, data, n),
    do: for(<<v::little-signed-64 <- need(data, n * 8, "int64")>>, do: v)

  defp ints(:uint8, data, n), do: for(<<v::8 <- need(data, n, "uint8")>>, do: v)
  defp ints(:uint16, data, n), do: for(<<v::little-16 <- need(data, n * 2, "uint16")>>, do: v)
  defp ints(:uint32, data, n), do: for(<<v::little-32 <- need(data, n * 4, "uint32")>>, do: v)
  defp ints(:uint64, data, n), do: for(<<v::little-64 <- need(data, n * 8, "uint64")>>, do: v)

  # Binary float matching fails on NaN and infinities, which are mapped to
  # atoms from their IEEE 754 bit patterns.
  defp floats(:float64, data, n), do: f64(need(data, n * 8, "float64"))
  defp floats(:float32, data, n), do: f32(need(data, n * 4, "float32"))
  defp floats(:float16, data, n), do: f16(need(data, n * 2, "float16"))

  defp f64(<<v::little-float-64, rest::binary>>), do: [v | f64(rest)]
  defp f64(<<bits::little-64, rest::binary>>), do: [special(bits, 52) | f64(rest)]
  defp f64(<<>>), do: []

  defp f32(<<v::little-float-32, rest::binary>>), do: [v | f32(rest)]
  defp f32(<<bits::little-32, rest::binary>>), do: [special(bits, 23) | f32(rest)]
  defp f32(<<>>), do: []

  defp f16(<<v::little-float-16, rest::binary>>), do: [v | f16(rest)]
  defp f16(<<bits::little-16, rest::binary>>), do: [special(bits, 10) | f16(rest)]
  defp f16(<<>>), do: []

  # Only called for exponent-all-ones patterns (the ones that do not match as floats).
  defp special(bits, mantissa_bits) do
    mantissa = Bitwise.band(bits, Bitwise.bsl(1, mantissa_bits) - 1)
    negative = Bitwise.bsr(bits, mantissa_bits + exponent_bits(mantissa_bits)) == 1

    cond do
      mantissa != 0 -> :nan
      negative -> :neg_infinity
      true -> :infinity
    end
  end

  defp exponent_bits(52), do: 11
  defp exponent_bits(23), do: 8
  defp exponent_bits(10), do: 5

  # -- variable width ------------------------------------------------------

  defp slices32(<<o::little-signed-32, rest::binary>>, prev, data)
       when o >= prev and o <= byte_size(data),
       do: [binary_part(data, prev, o - prev) | slices32(rest, o, data)]

  defp slices32(<<>>, _, _), do: []
  defp slices32(_, _, _), do: bad_offsets()

  defp copies32(<<o::little-signed-32, rest::binary>>, prev, data)
       when o >= prev and o <= byte_size(data),
       do: [:binary.copy(binary_part(data, prev, o - prev)) | copies32(rest, o, data)]

  defp copies32(<<>>, _, _), do: []
  defp copies32(_, _, _), do: bad_offsets()

  defp slices64(<<o::little-signed-64, rest::binary>>, prev, data)
       when o >= prev and o <= byte_size(data),
       do: [binary_part(data, prev, o - prev) | slices64(rest, o, data)]

  defp slices64(<<>>, _, _), do: []
  defp slices64(_, _, _), do: bad_offsets()

  defp copies64(<<o::little-signed-64, rest::binary>>, prev, data)
       when o >= prev and o <= byte_size(data),
       do: [:binary.copy(binary_part(data, prev, o - prev)) | copies64(rest, o, data)]

  defp copies64(<<>>, _, _), do: []
  defp copies64(_, _, _), do: bad_offsets()

  defp bad_offsets, do: malformed("offsets decrease or point past the end of the data buffer")

  # Lists of a fixed-width number type without nulls (the child node comes
  # next, null count 0): each list is decoded straight from its slice of the
  # child's data, without building the child column first.
  @flat_widths %{
    int8: 1,
    int16: 2,
    int32: 4,
    int64: 8,
    uint8: 1,
    uint16: 2,
    uint32: 4,
    uint64: 8,
    float16: 2,
    float32: 4,
    float64: 8
  }

  defp flat_child?(%Field{dictionary: nil, type: type}, {[{_len, 0} | _], _, _}),
    do: Map.has_key?(@flat_widths, type)

  defp flat_child?(_child, _st), do: false

  defp flat_lists(%Field{type: type}, offsets, bits, len, st, ctx) do
    {{child_len, 0}, st} = node(st, ctx)
    {_validity, st} = buffer(st, ctx)
    {data, st} = buffer(st, ctx)
    w = Map.fetch!(@flat_widths, type)
    data = need(data, child_len * w, Atom.to_string(type))

    if len == 0 do
      {[], st}
    else
      offsets = need(offsets, (len + 1) * div(bits, 8), "list offsets")
      <<first::little-signed-size(bits), rest::binary>> = offsets

      if first < 0 or first > child_len,
        do: malformed("list offsets decrease or point past the #{child_len} child values")

      {flat_rows(bits, rest, first, child_len, data, type, w), st}
    end
  end

  defp flat_rows(bits, offsets, prev, max, data, type, w) do
    case offsets do
      <<o::little-signed-size(bits), rest::binary>> when o >= prev and o <= max ->
        row = fixed_values(type, binary_part(data, prev * w, (o - prev) * w))
        [row | flat_rows(bits, rest, o, max, data, type, w)]

      <<>> ->
        []

      _ ->
        malformed("list offsets decrease or point past the #{max} child values")
    end
  end

  defp fixed_values(:int8, bin), do: for(<<v::signed-8 <- bin>>, do: v)
  defp fixed_values(:int16, bin), do: for(<<v::little-signed-16 <- bin>>, do: v)
  defp fixed_values(:int32, bin), do: for(<<v::little-signed-32 <- bin>>, do: v)
  defp fixed_values(:int64, bin), do: for(<<v::little-signed-64 <- bin>>, do: v)
  defp fixed_values(:uint8, bin), do: for(<<v::8 <- bin>>, do: v)
  defp fixed_values(:uint16, bin), do: for(<<v::little-16 <- bin>>, do: v)
  defp fixed_values(:uint32, bin), do: for(<<v::little-32 <- bin>>, do: v)
  defp fixed_values(:uint64, bin), do: for(<<v::little-64 <- bin>>, do: v)
  defp fixed_values(:float16, bin), do: f16(bin)
  defp fixed_values(:float32, bin), do: f32(bin)
  defp fixed_values(:float64, bin), do: f64(bin)

  # Splits child values into `len` lists delimited by `len + 1` offsets.
  defp split_by_offsets(_offsets, _bits, 0, _child, _child_len), do: []

  defp split_by_offsets(offsets, bits, len, child, child_len) do
    offsets = need(offsets, (len + 1) * div(bits, 8), "list offsets")

    [first | rest] =
      case bits do
        32 -> for <<o::little-signed-32 <- offsets>>, do: o
        64 -> for <<o::little-signed-64 <- offsets>>, do: o
      end

    if first < 0 or List.last(rest) > child_len or not ascending?(first, rest) do
      malformed("list offsets decrease or point past the #{child_len} child values")
    end

    split_lists(rest, first, drop(child, first))
  end

  defp ascending?(_, []), do: true
  defp ascending?(prev, [o | rest]) when o >= prev, do: ascending?(o, rest)
  defp ascending?(_, _), do: false

  defp split_lists([], _, _), do: []

  defp split_lists([o | os], prev, values) do
    {chunk, rest} = :lists.split(o - prev, values)
    [chunk | split_lists(os, o, rest)]
  end

  defp drop(list, 0), do: list
  defp drop([_ | t], n), do: drop(t, n - 1)

  defp chunks(_values, _size, 0), do: []

  defp chunks(values, size, n) do
    {chunk, rest} = :lists.split(size, values)
    [chunk | chunks(rest, size, n - 1)]
  end

  @spec malformed(String.t()) :: no_return()
  defp malformed(msg), do: throw({:arrow_malformed, msg})
end
