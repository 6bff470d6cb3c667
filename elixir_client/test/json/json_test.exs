Code.require_file("../proto/python_golden.exs", __DIR__)

defmodule HFBridge.JSONTest do
  use ExUnit.Case, async: true

  alias HFBridge.Error
  alias HFBridge.JSON
  alias HFBridge.ProtoTest.PythonGolden

  # RFC 8259 §13.
  @rfc_object """
  {
    "Image": {
        "Width":  800,
        "Height": 600,
        "Title":  "View from 15th Floor",
        "Thumbnail": {
            "Url":    "http://www.example.com/image/481989943",
            "Height": 125,
            "Width":  100
        },
        "Animated" : false,
        "IDs": [116, 943, 234, 38793]
      }
  }
  """

  @rfc_array """
  [
    {
       "precision": "zip",
       "Latitude":  37.7668,
       "Longitude": -122.3959,
       "Address":   "",
       "City":      "SAN FRANCISCO",
       "State":     "CA",
       "Zip":       "94107",
       "Country":   "US"
    },
    {
       "precision": "zip",
       "Latitude":  37.371991,
       "Longitude": -122.026020,
       "Address":   "",
       "City":      "SUNNYVALE",
       "State":     "CA",
       "Zip":       "94085",
       "Country":   "US"
    }
  ]
  """

  describe "decode" do
    test "the RFC 8259 examples" do
      assert {:ok, %{"Image" => image}} = JSON.decode(@rfc_object)
      assert image["Thumbnail"]["Url"] == "http://www.example.com/image/481989943"
      assert image["IDs"] == [116, 943, 234, 38_793]
      assert image["Animated"] == false

      assert {:ok, [a, b]} = JSON.decode(@rfc_array)
      assert a["Latitude"] == 37.7668
      assert b["Longitude"] == -122.02602
      assert b["Address"] == ""

      # Scalars are JSON texts too (§2).
      assert JSON.decode(~s("Hello world!")) == {:ok, "Hello world!"}
      assert JSON.decode("42") == {:ok, 42}
      assert JSON.decode(" true ") == {:ok, true}
      assert JSON.decode("null") == {:ok, nil}
    end

    test "string escapes, including surrogate pairs (§7)" do
      assert JSON.decode(~S("\"\\\/\b\f\n\r\t")) == {:ok, "\"\\/\b\f\n\r\t"}
      assert JSON.decode(~S("\u0041\u00e9\u20AC")) == {:ok, "Aé€"}
      # G clef U+1D11E, the RFC's own example, and an emoji.
      assert JSON.decode(~S("\uD834\uDD1E")) == {:ok, "𝄞"}
      assert JSON.decode(~S("\ud83e\udd17 hug")) == {:ok, "🤗 hug"}
      assert JSON.decode(~S("\u0000")) == {:ok, <<0>>}
      assert JSON.decode(~s("raw ünïcødé 𝄞")) == {:ok, "raw ünïcødé 𝄞"}
    end

    test "numbers (§6)" do
      cases = [
        {"0", 0},
        {"-0", 0},
        {"-0.0", -0.0},
        {"1", 1},
        {"-17", -17},
        {"1.5", 1.5},
        {"1e2", 100.0},
        {"1E+2", 100.0},
        {"-2.5e-3", -0.0025},
        {"0.1", 0.1},
        {"1.7976931348623157e308", 1.7976931348623157e308},
        {"5e-324", 5.0e-324},
        {"123456789012345678901234567890", 123_456_789_012_345_678_901_234_567_890},
        {"-9223372036854775809", -9_223_372_036_854_775_809}
      ]

      for {text, expected} <- cases do
        assert {:ok, got} = JSON.decode(text)
        assert got === expected, "#{text} decoded to #{inspect(got)}"
      end

      assert <<1::1, _::63>> = <<JSON.decode!("-0.0")::float>>
    end

    test "nesting and whitespace" do
      deep = String.duplicate("[", 100) <> "1" <> String.duplicate("]", 100)
      assert {:ok, list} = JSON.decode(deep)
      assert List.flatten(list) == [1]

      assert JSON.decode(" \t\r\n{ \"a\" : [ { } , [ ] ] } \n") == {:ok, %{"a" => [%{}, []]}}
      assert JSON.decode(~s({"a": 1, "a": 2})) == {:ok, %{"a" => 2}}
    end

    test "depth limit" do
      too_deep = String.duplicate("[", 600) <> String.duplicate("]", 600)
      assert {:error, %Error{layer: :json, details: %{offset: 512}}} = JSON.decode(too_deep)
      assert {:error, _} = JSON.decode("[[[1]]]", max_depth: 2)
      assert {:ok, _} = JSON.decode("[[1]]", max_depth: 2)
    end

    test "errors carry the byte offset" do
      cases = [
        {"", 0, "end of input"},
        {"[1,]", 3, "expected a value"},
        {"{\"a\":1,}", 7, "expected a string key"},
        {"{'a':1}", 1, "expected a string key"},
        {"{\"a\" 1}", 5, "expected ':'"},
        {"[1 2]", 3, "expected ',' or ']'"},
        {"01", 0, "leading zeros"},
        {"-", 1, "expected a digit"},
        {"1.", 2, "after '.'"},
        {".5", 0, "expected a value"},
        {"1e", 2, "exponent"},
        {"+1", 0, "expected a value"},
        {"NaN", 0, "expected a value"},
        {"Infinity", 0, "expected a value"},
        {"1e400", 0, "out of range"},
        {"tru", 0, "expected a value"},
        {"[1] x", 4, "after the JSON value"},
        {"\"abc", 4, "unterminated string"},
        {"\"a\tb\"", 2, "control character"},
        {"\"\\x\"", 1, "invalid escape"},
        {"\"\\u12G4\"", 1, "invalid \\u escape"},
        {"\"\\u12\"", 1, "\\u escape"},
        {"\"\\uD800\"", 1, "lone high surrogate"},
        {"\"\\uD800\\u0041\"", 1, "not followed by a low surrogate"},
        {"\"\\uDC00\"", 1, "lone low surrogate"},
        {"\"ab\xFFcd\"", 3, "UTF-8"},
        {"\"\xED\xA0\x80\"", 1, "UTF-8"},
        {"\xEF\xBB\xBF{}", 0, "byte order mark"},
        {"// c\n1", 0, "expected a value"},
        {String.duplicate("9", 4301), 0, "4300 digits"}
      ]

      for {text, offset, pattern} <- cases do
        assert {:error,
                %Error{layer: :json, code: :malformed, message: msg, details: %{offset: ^offset}}} =
                 JSON.decode(text),
               "#{inspect(text)} should fail at #{offset}"

        assert msg =~ pattern
        assert msg =~ "offset #{offset}"
      end

      assert {:error, %Error{}} = JSON.decode(:not_a_binary)
      assert_raise Error, ~r/offset 3/, fn -> JSON.decode!("[1,]") end
    end
  end

  describe "encode" do
    test "values" do
      assert JSON.encode!(nil) == "null"
      assert JSON.encode!([true, false, 1, -2, 1.5, "x"]) == ~s([true,false,1,-2,1.5,"x"])
      assert JSON.encode!(%{b: 1, a: [], c: %{}}) == ~s({"a":[],"b":1,"c":{}})
      assert JSON.encode!(%{"k" => :atom_value}) == ~s({"k":"atom_value"})
      assert JSON.encode!(0.1) == "0.1"
      assert JSON.encode!(1.0e300) == "1.0e300"
      assert JSON.encode!(-0.0) == "-0.0"
      assert JSON.encode!(2 ** 70) == "1180591620717411303424"
      assert {:ok, iodata} = JSON.encode([1])
      assert IO.iodata_to_binary(iodata) == "[1]"
    end

    test "string escaping" do
      assert JSON.encode!("a\"b\\c\n\r\t\b\f\u0001\u001f/é𝄞") ==
               ~S("a\"b\\c\n\r\t\b\f\u0001\u001F/é𝄞")
    end

    test "pretty printing" do
      assert JSON.encode!(%{"a" => [1, %{"b" => nil}], "c" => []}, pretty: true) ==
               "{\n  \"a\": [\n    1,\n    {\n      \"b\": null\n    }\n  ],\n  \"c\": []\n}"
    end

    test "terms JSON cannot express are errors" do
      for term <- [
            {1, 2},
            self(),
            <<0xFF>>,
            %{1 => 2},
            %{nil => 1},
            %{:a => 1, "a" => 2},
            [1 | 2],
            %URI{},
            make_ref()
          ] do
        assert {:error, %Error{layer: :json, code: :unencodable}} = JSON.encode(term),
               inspect(term)
      end

      assert_raise Error, fn -> JSON.encode!({:x}) end
    end
  end

  describe "round trips and fuzz" do
    setup do
      :rand.seed(:exsss, {8, 2, 59})
      :ok
    end

    test "encode then decode gives the term back (keys as strings)" do
      for _ <- 1..300 do
        term = random_term(4)
        assert JSON.decode!(JSON.encode!(term)) == term
        assert JSON.decode!(JSON.encode!(term, pretty: true)) == term
      end
    end

    test "Python's json module reads our output as the same values" do
      terms = for _ <- 1..150, do: random_term(3)
      path = Path.join(System.tmp_dir!(), "hfb_json_#{System.unique_integer([:positive])}.txt")
      File.write!(path, Enum.map_join(terms, "\n", &JSON.encode!/1) <> "\n")

      results =
        try do
          PythonGolden.run("json-parse", [path])
        after
          File.rm(path)
        end

      assert length(results) == length(terms)

      for {term, result} <- Enum.zip(terms, results) do
        assert result == {:ok, term}
      end
    end

    test "mutated documents never raise" do
      seeds =
        [@rfc_object, @rfc_array, ~S({"a":"\ud83e\udd17","b":[1.5e-3,-0,null]})] ++
          for(_ <- 1..20, do: JSON.encode!(random_term(3)))

      for seed <- seeds, _ <- 1..120 do
        text = mutate(seed)

        case JSON.decode(text) do
          {:ok, value} ->
            assert JSON.decode!(JSON.encode!(value)) == value

          {:error, %Error{layer: :json, details: %{offset: off}}} ->
            assert off in 0..byte_size(text)
        end
      end
    end

    test "a real datasets Features.to_dict() JSON document" do
      %{json: json, expected: expected} = PythonGolden.run("features")
      assert {:ok, decoded} = JSON.decode(json)
      assert decoded == expected
      assert decoded["label"]["_type"] == "ClassLabel"
      assert decoded["label"]["names"] == ["neg", "pos", "naïve ✓"]
      assert JSON.decode!(JSON.encode!(decoded)) == decoded
    end
  end

  defp random_term(0), do: random_scalar()

  defp random_term(depth) do
    case :rand.uniform(6) do
      1 -> for _ <- 1..:rand.uniform(4)//1, do: random_term(depth - 1)
      2 -> Map.new(1..:rand.uniform(4)//1, fn _ -> {random_string(), random_term(depth - 1)} end)
      3 -> []
      4 -> %{}
      _ -> random_scalar()
    end
  end

  defp random_scalar do
    case :rand.uniform(9) do
      1 ->
        nil

      2 ->
        :rand.uniform(2) == 1

      3 ->
        :rand.uniform(1_000_000) - 500_000

      4 ->
        Enum.random([0, -1, 2 ** 64, -(2 ** 63), 2 ** 100])

      5 ->
        (:rand.uniform() - 0.5) * :math.pow(10, :rand.uniform(600) - 300)

      6 ->
        Enum.random([0.0, -0.0, 0.1, 1.0e-7, 5.0e-324, 1.7976931348623157e308, 1.0e21, 123.456])

      _ ->
        random_string()
    end
  end

  defp random_string do
    alphabet =
      ~w(a b Z 0 _ - / \\ " ' é ß ✓ 日 𝄞 🤗) ++ ["\n", "\t", <<0>>, <<0x1F>>, " ", "\u2028"]

    Enum.map_join(1..:rand.uniform(10)//1, fn _ -> Enum.random(alphabet) end)
  end

  defp mutate(bin) do
    size = byte_size(bin)
    pos = :rand.uniform(size) - 1
    tail = fn p -> binary_part(bin, p, size - p) end

    case :rand.uniform(6) do
      1 ->
        binary_part(bin, 0, pos)

      2 ->
        binary_part(bin, 0, pos) <> <<:rand.uniform(256) - 1>> <> tail.(min(pos + 1, size))

      3 ->
        binary_part(bin, 0, pos) <>
          Enum.random(["{", "}", "[", "]", ",", ":", "\"", "\\", "\\u", "-", "e", "0", "."]) <>
          tail.(pos)

      4 ->
        binary_part(bin, 0, pos) <> tail.(min(pos + 1, size))

      5 ->
        tail.(pos)

      6 ->
        binary_part(bin, 0, pos) <> binary_part(bin, 0, size - pos) <> tail.(pos)
    end
  end
end
