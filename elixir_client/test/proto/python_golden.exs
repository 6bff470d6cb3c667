defmodule HFBridge.ProtoTest.PythonGolden do
  @moduledoc false
  # Runs tests/golden/proto_golden.py (Python's protobuf is the reference
  # implementation) and reads the Elixir term text it prints.

  @script Path.expand("../../../tests/golden/proto_golden.py", __DIR__)

  @spec run(String.t(), [String.t()]) :: term()
  def run(mode, args \\ []) do
    python = System.get_env("HF_BRIDGE_PYTHON", "python3")

    {out, status} =
      System.cmd(python, [@script, mode | args],
        env: [{"HF_HUB_OFFLINE", "1"}],
        stderr_to_stdout: false
      )

    if status != 0,
      do: raise("#{@script} #{mode} exited with #{status}: #{String.slice(out, 0, 2000)}")

    {term, _} = Code.eval_string(out)
    term
  end

  @doc "Parses `{message, bytes}` pairs with Python; one result per pair."
  @spec parse([{atom(), binary()}]) :: [tuple()]
  def parse(pairs) do
    path =
      Path.join(System.tmp_dir!(), "hfb_proto_parse_#{System.unique_integer([:positive])}.txt")

    text =
      Enum.map_join(pairs, "\n", fn {msg, bin} -> "#{msg} #{Base.encode16(bin, case: :lower)}" end)

    File.write!(path, text <> "\n")

    try do
      run("parse", [path])
    after
      File.rm(path)
    end
  end
end
