defmodule HFBridge.Arrow.GoldenHelper do
  @moduledoc false
  # Runs tests/golden/arrow_golden.py (pyarrow) into a fresh temporary
  # directory and loads the cases it wrote.

  @script Path.expand("../../../tests/golden/arrow_golden.py", __DIR__)

  @doc "Generates the goldens; returns the directory. Removed when the test module exits."
  def generate! do
    dir =
      Path.join(System.tmp_dir!(), "hf_bridge_arrow_golden_#{System.unique_integer([:positive])}")

    File.mkdir_p!(dir)
    python = System.get_env("HF_BRIDGE_PYTHON", "python3")

    {out, status} =
      System.cmd(python, [@script, dir], stderr_to_stdout: true, env: [{"HF_HUB_OFFLINE", "1"}])

    if status != 0, do: raise("#{@script} failed (#{status}):\n#{out}")
    ExUnit.Callbacks.on_exit(fn -> File.rm_rf!(dir) end)
    dir
  end

  @doc "Names of the cases in `dir`."
  def names(dir) do
    dir
    |> File.ls!()
    |> Enum.filter(&String.ends_with?(&1, ".exs"))
    |> Enum.map(&Path.rootname/1)
    |> Enum.sort()
  end

  @doc "Loads case `name`: `{ipc_bytes, expected_map}`."
  def load(dir, name) do
    ipc = File.read!(Path.join(dir, name <> ".arrows"))
    {expected, _} = Code.eval_string(File.read!(Path.join(dir, name <> ".exs")))
    {ipc, expected}
  end
end
