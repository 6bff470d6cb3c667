defmodule HFBridge.Proto.Schema do
  @moduledoc """
  Codec tables built from `.proto` text: every message (nested ones named
  `:"Outer.Inner"`), its fields by number and by name, enums, and the rpc
  methods of the services. Any `.proto` file in the supported subset (see
  `HFBridge.Proto.Parser`) can be turned into a schema and used with
  `HFBridge.Proto.Codec`:

      {:ok, schema} = HFBridge.Proto.Schema.parse(File.read!("x.proto"))
      bin = HFBridge.Proto.Codec.encode(schema, :Thing, %{id: 1})
      {:ok, %{id: 1}} = HFBridge.Proto.Codec.decode(schema, :Thing, bin)

  Names of messages and enums are atoms without the package; field names are
  atoms equal to the proto field names. Atoms are created from the schema
  text, so build schemas only from trusted `.proto` files.
  """

  alias HFBridge.Error
  alias HFBridge.Proto.Parser

  defmodule Field do
    @moduledoc """
    One field of a message.

      * `:kind` — `:scalar` (then `:type` is the scalar type atom such as
        `:uint64`), `:enum` / `:message` (then `:type` is the enum or message
        name) or `:map` (then `:type` is the synthesized entry message with
        fields `key` = 1 and `value` = 2).
      * `:presence` — `:implicit` (proto3 scalar: absent means the default),
        `:explicit` (`optional`, oneof members, message fields: absent means
        `nil`) or `:repeated` (lists and maps).
      * `:wire_type` — the wire type of one element; `:packed` says whether
        repeated scalars are written packed.
    """
    @enforce_keys [:name, :number, :kind, :type, :presence, :wire_type]
    defstruct [
      :name,
      :number,
      :kind,
      :type,
      :presence,
      :wire_type,
      :label,
      oneof: nil,
      packed: false,
      siblings: []
    ]

    @type t :: %__MODULE__{
            name: atom(),
            number: pos_integer(),
            kind: :scalar | :enum | :message | :map,
            type: atom(),
            presence: :implicit | :explicit | :repeated,
            wire_type: 0 | 1 | 2 | 5,
            label: :none | :optional | :repeated | :required,
            oneof: atom() | nil,
            packed: boolean(),
            siblings: [atom()]
          }
  end

  defmodule Message do
    @moduledoc """
    One message type: fields ordered by number, lookups by number and name,
    its oneofs, and the map a decode starts from (every field at its default).
    """
    defstruct [
      :name,
      :full_name,
      fields: [],
      by_number: %{},
      by_name: %{},
      oneofs: %{},
      defaults: %{},
      map_entry: false
    ]

    @type t :: %__MODULE__{
            name: atom(),
            full_name: String.t(),
            fields: [HFBridge.Proto.Schema.Field.t()],
            by_number: %{pos_integer() => HFBridge.Proto.Schema.Field.t()},
            by_name: %{atom() => HFBridge.Proto.Schema.Field.t()},
            oneofs: %{atom() => [atom()]},
            defaults: map(),
            map_entry: boolean()
          }
  end

  defmodule EnumType do
    @moduledoc "One enum type: value numbers to names and back; `:default` is the first value."
    defstruct [:name, :full_name, :default, by_number: %{}, by_name: %{}]

    @type t :: %__MODULE__{
            name: atom(),
            full_name: String.t(),
            default: atom(),
            by_number: %{integer() => atom()},
            by_name: %{atom() => integer()}
          }
  end

  @type rpc :: %{
          path: String.t(),
          service: String.t(),
          input: atom(),
          output: atom(),
          client_streaming: boolean(),
          server_streaming: boolean()
        }

  defstruct syntax: "proto3",
            package: "",
            messages: %{},
            message_order: [],
            enums: %{},
            rpcs: %{},
            rpc_order: []

  @type t :: %__MODULE__{
          syntax: String.t(),
          package: String.t(),
          messages: %{atom() => Message.t()},
          message_order: [atom()],
          enums: %{atom() => EnumType.t()},
          rpcs: %{atom() => rpc()},
          rpc_order: [atom()]
        }

  @scalar_wire %{
    "double" => 1,
    "float" => 5,
    "int32" => 0,
    "int64" => 0,
    "uint32" => 0,
    "uint64" => 0,
    "sint32" => 0,
    "sint64" => 0,
    "fixed32" => 5,
    "fixed64" => 1,
    "sfixed32" => 5,
    "sfixed64" => 1,
    "bool" => 0,
    "string" => 2,
    "bytes" => 2
  }

  @map_key_types ~w(int32 int64 uint32 uint64 sint32 sint64 fixed32 fixed64 sfixed32 sfixed64 bool string)

  @doc "Scalar type names of the proto language."
  @spec scalar_types() :: [String.t()]
  def scalar_types, do: Map.keys(@scalar_wire)

  @doc "Parses `.proto` text into a schema."
  @spec parse(String.t()) :: {:ok, t()} | {:error, Error.t()}
  def parse(text) do
    with {:ok, desc} <- Parser.parse(text), do: build(desc)
  end

  @doc "Like `parse/1` but raises `ArgumentError` on a bad `.proto`."
  @spec parse!(String.t()) :: t()
  def parse!(text) do
    case parse(text) do
      {:ok, schema} -> schema
      {:error, err} -> raise ArgumentError, "invalid .proto: " <> err.message
    end
  end

  @doc "Reads and parses a `.proto` file; raises on a missing or invalid file."
  @spec from_file!(Path.t()) :: t()
  def from_file!(path) do
    case parse(File.read!(path)) do
      {:ok, schema} -> schema
      {:error, err} -> raise ArgumentError, "invalid .proto #{path}: " <> err.message
    end
  end

  @doc "Looks up a message by name."
  @spec message(t(), atom()) :: {:ok, Message.t()} | :error
  def message(%__MODULE__{messages: messages}, name), do: Map.fetch(messages, name)

  @doc "Looks up a message by name; raises `ArgumentError` when it does not exist."
  @spec message!(t(), atom()) :: Message.t()
  def message!(schema, name) do
    case message(schema, name) do
      {:ok, m} -> m
      :error -> raise ArgumentError, "unknown protobuf message #{inspect(name)}"
    end
  end

  @doc "Message names in declaration order (synthesized map entries excluded)."
  @spec messages(t()) :: [atom()]
  def messages(%__MODULE__{message_order: order}), do: order

  @doc "Looks up an rpc method by name."
  @spec rpc(t(), atom()) :: {:ok, rpc()} | :error
  def rpc(%__MODULE__{rpcs: rpcs}, name), do: Map.fetch(rpcs, name)

  ## ---- building ------------------------------------------------------------------

  @doc """
  Builds a schema from a description produced by `HFBridge.Proto.Parser.parse/1`,
  resolving type names and checking numbers and names.
  """
  @spec build(Parser.description()) :: {:ok, t()} | {:error, Error.t()}
  def build(desc) do
    pkg = desc.package
    flat_msgs = flatten_messages(desc.messages, [])
    flat_enums = Enum.map(desc.enums, &{[&1.name], &1}) ++ nested_enums(flat_msgs)

    index =
      Map.new(flat_msgs, fn {path, _} -> {qualify(pkg, path), {:message, path_atom(path)}} end)
      |> Map.merge(
        Map.new(flat_enums, fn {path, _} -> {qualify(pkg, path), {:enum, path_atom(path)}} end)
      )

    enums =
      Map.new(flat_enums, fn {path, e} ->
        by_number = e.values |> Enum.reverse() |> Map.new(fn {n, v} -> {v, String.to_atom(n)} end)

        {path_atom(path),
         %EnumType{
           name: path_atom(path),
           full_name: qualify(pkg, path),
           default: e.values |> hd() |> elem(0) |> String.to_atom(),
           by_number: by_number,
           by_name: Map.new(e.values, fn {n, v} -> {String.to_atom(n), v} end)
         }}
      end)

    ctx = %{pkg: pkg, syntax: desc.syntax, index: index, enums: enums}

    {messages, entries} =
      Enum.map_reduce(flat_msgs, [], fn {path, m}, entries ->
        {msg, new_entries} = build_message(path, m, ctx)
        {{msg.name, msg}, new_entries ++ entries}
      end)

    messages = Map.new(messages ++ Enum.map(entries, &{&1.name, &1}))

    messages =
      Map.new(messages, fn {name, m} -> {name, %{m | defaults: defaults(m, enums, messages)}} end)

    {rpcs, rpc_order} = build_rpcs(desc.services, ctx)

    {:ok,
     %__MODULE__{
       syntax: desc.syntax,
       package: pkg,
       messages: messages,
       message_order: Enum.map(flat_msgs, fn {path, _} -> path_atom(path) end),
       enums: enums,
       rpcs: rpcs,
       rpc_order: rpc_order
     }}
  catch
    {:proto_schema_error, message} -> {:error, Error.new(:proto, :invalid_schema, message)}
  end

  defp fail(message), do: throw({:proto_schema_error, message})

  defp flatten_messages(msgs, scope) do
    Enum.flat_map(msgs, fn m ->
      path = scope ++ [m.name]
      [{path, m} | flatten_messages(m.messages, path)]
    end)
  end

  defp nested_enums(flat_msgs) do
    Enum.flat_map(flat_msgs, fn {path, m} -> Enum.map(m.enums, &{path ++ [&1.name], &1}) end)
  end

  defp qualify("", path), do: Enum.join(path, ".")
  defp qualify(pkg, path), do: pkg <> "." <> Enum.join(path, ".")

  defp path_atom(path), do: path |> Enum.join(".") |> String.to_atom()

  defp build_message(path, m, ctx) do
    name = path_atom(path)

    dup_check(m.fields, & &1.number, "field number", name)
    dup_check(m.fields, & &1.name, "field name", name)

    {fields, entries} =
      Enum.map_reduce(m.fields, [], fn f, entries ->
        {field, entry} = build_field(f, path, ctx)
        {field, if(entry, do: [entry | entries], else: entries)}
      end)

    oneofs =
      m.oneofs
      |> Map.new(fn o ->
        {String.to_atom(o), for(f <- fields, f.oneof == String.to_atom(o), do: f.name)}
      end)

    fields =
      fields
      |> Enum.map(fn f ->
        if f.oneof, do: %{f | siblings: Map.fetch!(oneofs, f.oneof) -- [f.name]}, else: f
      end)
      |> Enum.sort_by(& &1.number)

    msg = %Message{
      name: name,
      full_name: qualify(ctx.pkg, path),
      fields: fields,
      by_number: Map.new(fields, &{&1.number, &1}),
      by_name: Map.new(fields, &{&1.name, &1}),
      oneofs: oneofs
    }

    {msg, entries}
  end

  defp dup_check(fields, key, what, msg) do
    fields
    |> Enum.group_by(key)
    |> Enum.each(fn
      {_k, [_]} -> :ok
      {k, _} -> fail("message #{msg}: duplicate #{what} #{k}")
    end)
  end

  defp build_field(%{type: {:map, k, v}} = f, path, ctx) do
    unless k in @map_key_types, do: fail("field #{f.name}: #{k} cannot be a map key")
    entry_path = path ++ [Macro.camelize(f.name) <> "Entry"]
    {vkind, vtype, vwire} = resolve_type(v, path, ctx)

    key_field = %Field{
      name: :key,
      number: 1,
      kind: :scalar,
      type: String.to_atom(k),
      presence: :implicit,
      wire_type: @scalar_wire[k],
      label: :none
    }

    value_field = %Field{
      name: :value,
      number: 2,
      kind: vkind,
      type: vtype,
      presence: if(vkind == :message, do: :explicit, else: :implicit),
      wire_type: vwire,
      label: :none
    }

    entry = %Message{
      name: path_atom(entry_path),
      full_name: qualify(ctx.pkg, entry_path),
      fields: [key_field, value_field],
      by_number: %{1 => key_field, 2 => value_field},
      by_name: %{key: key_field, value: value_field},
      map_entry: true
    }

    field = %Field{
      name: String.to_atom(f.name),
      number: f.number,
      kind: :map,
      type: entry.name,
      presence: :repeated,
      wire_type: 2,
      label: :none
    }

    {field, entry}
  end

  defp build_field(f, path, ctx) do
    {kind, type, wire} = resolve_type(f.type, path, ctx)

    if f.label == :repeated and f.packed == true and wire == 2,
      do: fail("field #{f.name}: only scalar fields can be packed")

    presence =
      cond do
        f.label == :repeated -> :repeated
        f.oneof != nil -> :explicit
        kind == :message -> :explicit
        f.label in [:optional, :required] -> :explicit
        ctx.syntax == "proto2" -> :explicit
        true -> :implicit
      end

    packed =
      f.label == :repeated and wire != 2 and
        if f.packed == nil, do: ctx.syntax == "proto3", else: f.packed

    field = %Field{
      name: String.to_atom(f.name),
      number: f.number,
      kind: kind,
      type: type,
      presence: presence,
      wire_type: wire,
      label: f.label,
      oneof: f.oneof && String.to_atom(f.oneof),
      packed: packed
    }

    {field, nil}
  end

  defp resolve_type(type, scope, ctx) do
    case Map.fetch(@scalar_wire, type) do
      {:ok, wire} ->
        {:scalar, String.to_atom(type), wire}

      :error ->
        case lookup(type, scope, ctx) do
          {:message, name} -> {:message, name, 2}
          {:enum, name} -> {:enum, name, 0}
          nil -> fail("unknown type #{type} (referenced in #{Enum.join(scope, ".")})")
        end
    end
  end

  # Scope rules of the proto language, simplified: a leading dot means fully
  # qualified; otherwise try the innermost enclosing scope first, then
  # each outer one (package components included).
  defp lookup("." <> full, _scope, ctx), do: Map.get(ctx.index, full)

  defp lookup(type, scope, ctx) do
    pkg_parts = if ctx.pkg == "", do: [], else: String.split(ctx.pkg, ".")
    full_scope = pkg_parts ++ scope

    Enum.find_value(length(full_scope)..0//-1, fn i ->
      candidate = Enum.join(Enum.take(full_scope, i) ++ [type], ".")
      Map.get(ctx.index, candidate)
    end)
  end

  defp defaults(%Message{fields: fields}, enums, _messages) do
    Map.new(fields, fn f ->
      value =
        case {f.presence, f.kind} do
          {:repeated, :map} -> %{}
          {:repeated, _} -> []
          {:explicit, _} -> nil
          {:implicit, :enum} -> Map.fetch!(enums, f.type).default
          {:implicit, :scalar} -> scalar_default(f.type)
        end

      {f.name, value}
    end)
  end

  @doc "The proto3 default of a scalar type."
  @spec scalar_default(atom()) :: term()
  def scalar_default(type) when type in [:double, :float], do: 0.0
  def scalar_default(:bool), do: false
  def scalar_default(type) when type in [:string, :bytes], do: ""
  def scalar_default(_integer), do: 0

  defp build_rpcs(services, ctx) do
    pairs =
      for svc <- services, rpc <- svc.rpcs do
        service = qualify(ctx.pkg, [svc.name])

        {String.to_atom(rpc.name),
         %{
           path: "/#{service}/#{rpc.name}",
           service: service,
           input: rpc_message(rpc.input, ctx),
           output: rpc_message(rpc.output, ctx),
           client_streaming: rpc.client_streaming,
           server_streaming: rpc.server_streaming
         }}
      end

    dup_check(pairs, &elem(&1, 0), "rpc name", :services)
    {Map.new(pairs), Enum.map(pairs, &elem(&1, 0))}
  end

  defp rpc_message(type, ctx) do
    case lookup(type, [], ctx) do
      {:message, name} -> name
      _ -> fail("rpc type #{type} is not a message of this file")
    end
  end
end
