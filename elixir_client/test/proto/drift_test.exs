Code.require_file("python_golden.exs", __DIR__)

defmodule HFBridge.Proto.DriftTest do
  # The codec tables Elixir built from the .proto must equal what protoc
  # (via Python's generated descriptor) reports for the same file.
  use ExUnit.Case, async: true

  alias HFBridge.Proto
  alias HFBridge.Proto.Schema
  alias HFBridge.ProtoTest.PythonGolden

  setup_all do
    %{desc: PythonGolden.run("descriptor")}
  end

  test "same package and messages in the same order", %{desc: desc} do
    assert Proto.schema().package == desc.package
    assert Proto.messages() == desc.message_order
    assert Enum.sort(Map.keys(desc.messages)) == Enum.sort(Map.keys(Proto.schema().messages))
  end

  test "same fields, numbers, types, labels and oneofs", %{desc: desc} do
    schema = Proto.schema()

    for {name, py_fields} <- desc.messages do
      msg = Schema.message!(schema, name)

      ours =
        for f <- msg.fields do
          %{
            name: f.name,
            number: f.number,
            type: wire_type_name(f),
            type_name: if(f.kind in [:message, :enum, :map], do: f.type),
            repeated: f.presence == :repeated,
            proto3_optional: f.label == :optional,
            oneof: f.oneof
          }
        end

      assert ours == Enum.sort_by(py_fields, & &1.number), "message #{name} differs"
    end
  end

  test "same rpc methods, paths and streaming flags", %{desc: desc} do
    assert Enum.sort(Proto.rpcs()) == Enum.sort(Map.keys(desc.rpcs))

    for {rpc, info} <- desc.rpcs do
      assert Proto.rpc(rpc) == info
      assert Proto.rpc_path(rpc) == info.path
    end

    assert Proto.rpc_path(:GetInfo) == "/hf_bridge.v1.HFBridge/GetInfo"

    assert %{server_streaming: true, input: :ReadRequest, output: :Batch} =
             Proto.rpc(:ReadBatches)
  end

  defp wire_type_name(%{kind: :scalar, type: t}), do: t
  defp wire_type_name(%{kind: :enum}), do: :enum
  defp wire_type_name(%{kind: kind}) when kind in [:message, :map], do: :message
end
