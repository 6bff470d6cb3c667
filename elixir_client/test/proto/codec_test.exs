defmodule HFBridge.Proto.CodecTest do
  use ExUnit.Case, async: true

  alias HFBridge.Error
  alias HFBridge.Proto
  alias HFBridge.Proto.{Codec, Schema, Wire}

  doctest HFBridge.Proto

  @u64 0xFFFF_FFFF_FFFF_FFFF

  describe "wire primitives" do
    test "varints round-trip at the byte boundaries" do
      for v <- [0, 1, 127, 128, 300, 16_383, 16_384, 2 ** 32 - 1, 2 ** 63, @u64] do
        assert Wire.decode_varint(Wire.encode_varint(v) <> "rest") == {v, "rest"}
      end

      assert Wire.encode_varint(300) == <<0xAC, 0x02>>
      assert byte_size(Wire.encode_varint(@u64)) == 10
    end

    test "truncated and over-long varints are errors" do
      assert Wire.decode_varint(<<0x80>>) == :error
      assert Wire.decode_varint(<<>>) == :error
      assert Wire.decode_varint(:binary.copy(<<0xFF>>, 10) <> <<0x01>>) == :error
      # Ten bytes whose last carries bits past 64: the excess is dropped.
      assert {@u64, ""} = Wire.decode_varint(:binary.copy(<<0xFF>>, 9) <> <<0x7F>>)
    end

    test "zigzag maps signed to unsigned as the encoding guide shows" do
      pairs = [
        {0, 0},
        {-1, 1},
        {1, 2},
        {-2, 3},
        {2_147_483_647, 4_294_967_294},
        {-2_147_483_648, 4_294_967_295}
      ]

      for {signed, unsigned} <- pairs do
        assert Wire.zigzag_encode(signed) == unsigned
        assert Wire.zigzag_decode(unsigned) == signed
      end
    end

    test "non-finite floats" do
      for v <- [:infinity, :neg_infinity, :nan] do
        assert Wire.decode_double(Wire.encode_double(v)) == v
        assert Wire.decode_float(Wire.encode_float(v)) == v
      end

      assert Wire.decode_float(Wire.encode_float(1.0e300)) == :infinity
      assert Wire.decode_float(Wire.encode_float(1.5)) == 1.5
    end
  end

  describe "examples of the protobuf encoding guide" do
    setup do
      schema =
        Schema.parse!("""
        syntax = "proto3";
        message Test1 { int32 a = 1; }
        message Test2 { string b = 2; }
        message Test3 { Test1 c = 3; }
        message Test4 { repeated int32 d = 4; }
        """)

      %{s: schema}
    end

    test "varint, string, embedded message and packed fields", %{s: s} do
      assert Codec.encode(s, :Test1, %{a: 150}) == <<0x08, 0x96, 0x01>>
      assert Codec.encode(s, :Test2, %{b: "testing"}) == <<0x12, 0x07, "testing">>
      assert Codec.encode(s, :Test3, %{c: %{a: 150}}) == <<0x1A, 0x03, 0x08, 0x96, 0x01>>

      assert Codec.encode(s, :Test4, %{d: [3, 270, 86_942]}) ==
               <<0x22, 0x06, 0x03, 0x8E, 0x02, 0x9E, 0xA7, 0x05>>

      assert Codec.decode(s, :Test3, <<0x1A, 0x03, 0x08, 0x96, 0x01>>) == {:ok, %{c: %{a: 150}}}
      # Unpacked elements, and packed and unpacked mixed, decode the same.
      assert Codec.decode(s, :Test4, <<0x20, 0x03, 0x20, 0x8E, 0x02, 0x20, 0x9E, 0xA7, 0x05>>) ==
               {:ok, %{d: [3, 270, 86_942]}}

      assert Codec.decode(s, :Test4, <<0x20, 0x01, 0x22, 0x02, 0x02, 0x03, 0x20, 0x04>>) ==
               {:ok, %{d: [1, 2, 3, 4]}}
    end

    test "negative int32 uses ten bytes and decodes back", %{s: s} do
      bin = Codec.encode(s, :Test1, %{a: -1})
      assert bin == <<0x08>> <> :binary.copy(<<0xFF>>, 9) <> <<0x01>>
      assert Codec.decode(s, :Test1, bin) == {:ok, %{a: -1}}
    end
  end

  describe "malformed input is an error value" do
    test "truncated varint" do
      assert {:error, %Error{layer: :proto, code: :malformed}} =
               Proto.decode(:AckResponse, <<0x08, 0x80>>)

      assert {:error, %Error{layer: :proto}} = Proto.decode(:AckResponse, <<0x88>>)
    end

    test "length past the end" do
      assert {:error, %Error{layer: :proto, message: msg}} =
               Proto.decode(:CloseRequest, <<0x0A, 0x05, "ab">>)

      assert msg =~ "runs past the end"
      assert {:error, _} = Proto.decode(:CloseRequest, <<0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F>>)
    end

    test "wrong wire type for a known field" do
      assert {:error, %Error{message: msg}} = Proto.decode(:AckResponse, <<0x09, 0::64>>)
      assert msg =~ "wire type"
      assert {:error, _} = Proto.decode(:OpenRequest, <<0x08, 0x01>>)
      # A string field sent as a varint.
      assert {:error, _} = Proto.decode(:ResumeRequest, <<0x08, 0x01>>)
    end

    test "invalid UTF-8 in a string field, but not in a bytes field" do
      assert {:error, %Error{message: msg}} =
               Proto.decode(:ResumeRequest, <<0x0A, 0x02, 0xFF, 0xFE>>)

      assert msg =~ "UTF-8"

      assert {:ok, %{arrow_ipc: <<0xFF, 0xFE>>}} =
               Proto.decode(:Batch, <<0x1A, 0x02, 0xFF, 0xFE>>)
    end

    test "field number 0, invalid wire types, stray end-group, unterminated group" do
      assert {:error, _} = Proto.decode(:AckResponse, <<0x00, 0x00>>)
      assert {:error, _} = Proto.decode(:AckResponse, <<0xF6, 0x01, 0x00>>)
      assert {:error, _} = Proto.decode(:AckResponse, <<0xF7, 0x01, 0x00>>)
      assert {:error, _} = Proto.decode(:AckResponse, <<0xF4, 0x01>>)
      assert {:error, _} = Proto.decode(:AckResponse, <<0xF3, 0x01, 0x08, 0x01>>)

      assert {:ok, %{acked_seq: 5}} =
               Proto.decode(:AckResponse, <<0xF3, 0x01, 0x08, 0x01, 0xF4, 0x01, 0x08, 0x05>>)
    end

    test "nesting depth is bounded" do
      s = Schema.parse!("syntax = \"proto3\"; message Node { Node child = 1; int32 v = 2; }")

      nest = fn n ->
        Enum.reduce(1..n, <<0x10, 0x07>>, fn _, inner -> <<0x0A, byte_size(inner)>> <> inner end)
      end

      # One-byte lengths keep this under 128 bytes deep only for small n; use varints.
      nest_big = fn n ->
        Enum.reduce(1..n, <<0x10, 0x07>>, fn _, inner ->
          <<0x0A>> <> Wire.encode_varint(byte_size(inner)) <> inner
        end)
      end

      assert {:ok, %{child: %{child: %{child: nil, v: 7}, v: 0}, v: 0}} =
               Codec.decode(s, :Node, nest.(2))

      assert {:ok, _} = Codec.decode(s, :Node, nest_big.(90))
      assert {:error, %Error{message: msg}} = Codec.decode(s, :Node, nest_big.(101))
      assert msg =~ "nested deeper"
    end
  end

  describe "encoding programmer errors raise ArgumentError" do
    test "unknown message, unknown field, wrong types, ranges" do
      assert_raise ArgumentError, ~r/unknown protobuf message/, fn -> Proto.encode(:Nope, %{}) end

      assert_raise ArgumentError, ~r/no field :nope/, fn ->
        Proto.encode(:AckRequest, %{nope: 1})
      end

      assert_raise ArgumentError, ~r/no field "seq"/, fn ->
        Proto.encode(:AckRequest, %{"seq" => 1})
      end

      assert_raise ArgumentError, ~r/uint64/, fn -> Proto.encode(:AckRequest, %{seq: -1}) end

      assert_raise ArgumentError, ~r/uint64/, fn ->
        Proto.encode(:AckRequest, %{seq: @u64 + 1})
      end

      assert_raise ArgumentError, ~r/uint64/, fn -> Proto.encode(:AckRequest, %{seq: "1"}) end

      assert_raise ArgumentError, ~r/uint32/, fn ->
        Proto.encode(:ReadRequest, %{max_batches: 2 ** 32})
      end

      assert_raise ArgumentError, ~r/int64/, fn ->
        Proto.encode(:Scalar, %{int_value: 2 ** 63})
      end

      assert_raise ArgumentError, ~r/UTF-8/, fn ->
        Proto.encode(:CloseRequest, %{session_id: <<0xFF>>})
      end

      assert_raise ArgumentError, ~r/bool/, fn -> Proto.encode(:Batch, %{end_of_data: 1}) end
      assert_raise ArgumentError, ~r/list/, fn -> Proto.encode(:DatasetSpec, %{columns: "a"}) end

      assert_raise ArgumentError, ~r/map of fields/, fn ->
        Proto.encode(:OpenRequest, %{spec: [path: "x"]})
      end

      assert_raise ArgumentError, ~r/oneof kind/, fn ->
        Proto.encode(:Scalar, %{int_value: 1, bool_value: true})
      end

      assert_raise ArgumentError, ~r/double/, fn ->
        Proto.encode(:Scalar, %{float_value: "1.0"})
      end
    end

    test "a default given with the wrong type still raises" do
      assert_raise ArgumentError, fn -> Proto.encode(:AckRequest, %{seq: 0.0}) end
    end
  end

  describe "encoding semantics" do
    test "defaults of plain scalars are not written; optional and oneof zeros are" do
      assert Proto.encode(:DatasetSpec, %{path: "", seed: 0, shuffle: false, columns: []}) == ""
      assert Proto.encode(:DatasetSpec, %{take: 0}) == <<0x70, 0x00>>
      assert Proto.encode(:Scalar, %{int_value: 0}) == <<0x08, 0x00>>
      assert Proto.encode(:OpenRequest, %{spec: %{}}) == <<0x0A, 0x00>>
      assert Proto.encode(:OpenRequest, %{spec: nil}) == ""
    end

    test "integers are accepted for doubles; -0.0 is written" do
      assert Proto.encode(:ExportProgress, %{elapsed_seconds: 2}) ==
               Proto.encode(:ExportProgress, %{elapsed_seconds: 2.0})

      assert Proto.encode(:ExportProgress, %{elapsed_seconds: 0}) == ""

      assert Proto.encode(:ExportProgress, %{elapsed_seconds: -0.0}) ==
               <<0x29, 0, 0, 0, 0, 0, 0, 0, 0x80>>
    end

    test "decoded bytes fields are sub-binaries of the input (no copy of large payloads)" do
      payload = :binary.copy(<<1, 2, 3, 4>>, 100_000)
      bin = Proto.encode(:Batch, %{seq: 1, arrow_ipc: payload})
      assert {:ok, %{arrow_ipc: ^payload}} = Proto.decode(:Batch, bin)
      {:ok, %{arrow_ipc: got}} = Proto.decode(:Batch, bin)
      assert :binary.referenced_byte_size(got) == byte_size(bin)
    end
  end

  describe "schemas from other .proto text" do
    @proto """
    // A schema exercising what hf_bridge.proto does not use.
    syntax = "proto3";
    package demo.v2;
    import "google/protobuf/empty.proto";
    option java_package = "x.y";

    /* Block comment
       over lines. */
    enum Color { COLOR_UNSPECIFIED = 0; RED = 1; BLUE = 2 [deprecated = true]; }

    message Outer {
      message Inner { sint64 z = 1; fixed32 f = 2; sfixed64 sf = 3; float fl = 4; }
      enum Mode { MODE_A = 0; MODE_B = 1; }
      reserved 9, 10 to 12;
      reserved "old";
      Inner inner = 1;
      repeated Inner inners = 2;
      Color color = 3;
      repeated Color colors = 4;
      Mode mode = 5;
      map<string, Inner> by_name = 6;
      map<int32, string> labels = 7;
      repeated sint32 zs = 8 [packed = false];
      repeated double ds = 13;
      repeated bool bs = 14;
      .demo.v2.Outer.Inner qualified = 15;
      oneof choice { string s = 16; Inner msg = 17; }
      optional Color maybe = 18;
      bytes raw = 19 [json_name = "RAW"];
    }

    service Demo {
      option deprecated = false;
      rpc Unary(Outer) returns (Outer.Inner);
      rpc Both(stream Outer) returns (stream Outer) { option deprecated = true; }
    }
    """

    setup do
      %{s: Schema.parse!(@proto)}
    end

    test "parses messages, nested types, enums, maps and rpcs", %{s: s} do
      assert Schema.messages(s) == [:Outer, :"Outer.Inner"]
      assert Map.has_key?(s.messages, :"Outer.ByNameEntry")
      assert s.enums[:Color].by_name == %{COLOR_UNSPECIFIED: 0, RED: 1, BLUE: 2}
      assert s.enums[:"Outer.Mode"].default == :MODE_A

      assert {:ok,
              %{
                path: "/demo.v2.Demo/Unary",
                input: :Outer,
                output: :"Outer.Inner",
                server_streaming: false
              }} = Schema.rpc(s, :Unary)

      assert {:ok, %{client_streaming: true, server_streaming: true}} = Schema.rpc(s, :Both)
    end

    test "defaults of a decoded empty message", %{s: s} do
      assert {:ok, m} = Codec.decode(s, :Outer, "")

      assert m == %{
               inner: nil,
               inners: [],
               color: :COLOR_UNSPECIFIED,
               colors: [],
               mode: :MODE_A,
               by_name: %{},
               labels: %{},
               zs: [],
               ds: [],
               bs: [],
               qualified: nil,
               s: nil,
               msg: nil,
               maybe: nil,
               raw: ""
             }
    end

    test "round-trips every kind of field", %{s: s} do
      value = %{
        inner: %{z: -5, f: 0xFFFF_FFFF, sf: -(2 ** 63), fl: 1.5},
        inners: [%{z: 1, f: 0, sf: 0, fl: 0.0}, %{z: 0, f: 0, sf: 0, fl: :neg_infinity}],
        color: :RED,
        colors: [:BLUE, :RED, 7],
        mode: :MODE_B,
        by_name: %{"a" => %{z: 2, f: 0, sf: 0, fl: 0.0}, "é" => %{z: 0, f: 0, sf: 0, fl: 0.0}},
        labels: %{-1 => "minus", 5 => ""},
        zs: [-1, 0, 2_147_483_647, -2_147_483_648],
        ds: [0.1, -0.0, :nan, 1.0e308],
        bs: [true, false, true],
        qualified: %{z: 9, f: 0, sf: 0, fl: 0.0},
        s: nil,
        msg: %{z: 3, f: 0, sf: 0, fl: 0.0},
        maybe: :COLOR_UNSPECIFIED,
        raw: <<0, 255>>
      }

      bin = Codec.encode(s, :Outer, value)
      assert Codec.decode(s, :Outer, bin) == {:ok, value}
      # zs is unpacked on request: four separate keys with field 8, wire type 0.
      assert length(:binary.matches(bin, <<0x40>>)) >= 4
    end

    test "a map entry without a value gets the value type's default", %{s: s} do
      # by_name entry with only a key.
      bin = <<0x32, 0x03, 0x0A, 0x01, ?k>>

      assert {:ok, %{by_name: %{"k" => %{z: 0, f: 0, sf: 0, fl: 0.0}}}} =
               Codec.decode(s, :Outer, bin)
    end

    test "invalid .proto text is an error naming the problem" do
      for {text, pattern} <- [
            {"syntax = \"proto3\"; message A { B b = 1; }", ~r/unknown type B/},
            {"syntax = \"proto3\"; message A { int32 a = 1; int32 b = 1; }",
             ~r/duplicate field number/},
            {"syntax = \"proto3\"; message A { int32 a = 0; }", ~r/invalid number/},
            {"syntax = \"proto3\"; message A { int32 a = 1 }", ~r/line 1: expected ;/},
            {"message A {\n int32 a = 1;\n", ~r/not closed/},
            {"syntax = \"proto3\";\n\n message A { int32 a = 1; } $",
             ~r/line 3: unexpected character/},
            {"syntax = \"proto4\";", ~r/unsupported syntax/},
            {"/* open", ~r/unterminated block comment/},
            {"message A { map<float, int32> m = 1; }", ~r/cannot be a map key/},
            {"service S { rpc X(Missing) returns (Missing); }", ~r/not a message/}
          ] do
        assert {:error, %Error{layer: :proto, code: :invalid_schema, message: msg}} =
                 Schema.parse(text)

        assert msg =~ pattern
      end
    end

    test "proto2 fields have explicit presence and are not packed" do
      s =
        Schema.parse!(
          "syntax = \"proto2\"; message P { optional int32 a = 1; required string b = 2; repeated int32 c = 3; }"
        )

      assert {:ok, %{a: nil, b: nil, c: []}} = Codec.decode(s, :P, "")
      assert Codec.encode(s, :P, %{a: 0, c: [1, 2]}) == <<0x08, 0x00, 0x18, 0x01, 0x18, 0x02>>
    end
  end

  test "the contract's rpc table" do
    assert Proto.rpc_path(:GetInfo) == "/hf_bridge.v1.HFBridge/GetInfo"

    assert Proto.rpc(:Export) == %{
             path: "/hf_bridge.v1.HFBridge/Export",
             input: :ExportRequest,
             output: :ExportEvent,
             server_streaming: true,
             client_streaming: false
           }

    assert_raise ArgumentError, fn -> Proto.rpc(:Nope) end
    assert :Batch in Proto.messages()
    assert File.exists?(Proto.proto_path())
  end
end
