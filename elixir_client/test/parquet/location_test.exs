defmodule HFBridge.Parquet.LocationTest do
  use ExUnit.Case, async: true

  alias HFBridge.Parquet.Location

  doctest Location

  test "export locations resolve to their manifest" do
    assert {:ok, loc} = Location.parse("s3://bucket/exports/run1/")
    assert Location.manifest(loc) == {:s3, "bucket", "exports/run1/_manifest.json"}
    assert {:ok, loc} = Location.parse("s3://bucket")
    assert Location.manifest(loc) == {:s3, "bucket", "_manifest.json"}
    assert {:ok, loc} = Location.parse("s3://bucket/x/_manifest.json")
    assert Location.manifest(loc) == loc

    assert {:ok, {:local, path}} = Location.parse("relative/dir")
    assert path == Path.expand("relative/dir")
    assert Location.manifest({:local, "/data/run"}) == {:local, "/data/run/_manifest.json"}

    assert Location.manifest({:local, "/data/run/_manifest.json"}) ==
             {:local, "/data/run/_manifest.json"}
  end

  test "dirname, join and to_string" do
    assert Location.dirname({:s3, "b", "a/b/_manifest.json"}) == {:s3, "b", "a/b"}
    assert Location.dirname({:s3, "b", "_manifest.json"}) == {:s3, "b", ""}
    assert Location.join({:s3, "b", ""}, "part-00000.parquet") == {:s3, "b", "part-00000.parquet"}
    assert Location.join({:s3, "b", "p"}, "f") |> Location.to_string() == "s3://b/p/f"
    assert Location.to_string({:s3, "b", ""}) == "s3://b"
    assert Location.join({:local, "/x"}, "f") |> Location.to_string() == "/x/f"
  end

  test "only plain relative names are safe file names" do
    assert Location.safe_relative?("part-00000.parquet")
    assert Location.safe_relative?("sub/part-00000.parquet")

    for bad <- ["", "/abs", "../up", "a/../b", "a//b", "./a", "s3://b/k", "a\\b", "a\0b", nil, 1] do
      refute Location.safe_relative?(bad), "#{inspect(bad)} passed"
    end
  end

  test "unsupported or malformed locations are errors" do
    assert {:error, %HFBridge.Error{code: :invalid_argument}} = Location.parse("gs://bucket/x")
    assert {:error, %HFBridge.Error{code: :invalid_argument}} = Location.parse("s3://")
    assert {:error, %HFBridge.Error{code: :invalid_argument}} = Location.parse("")
    assert {:error, %HFBridge.Error{code: :invalid_argument}} = Location.parse(nil)
  end
end
