defmodule HFBridge.Python do
  @moduledoc """
  Finds the Python interpreter that runs the hf_bridge server (`py_worker`).

  The first of these that applies wins:

    1. the `:python` option, or `config :hf_bridge, python: "/path/to/python"`;
    2. the `HF_BRIDGE_PYTHON` environment variable (set by `make`);
    3. `.venv/bin/python` in the hf_bridge repository, when this client is
       compiled from a checkout of it;
    4. `python3` on the `PATH`, if it can `import py_worker`.

  Options 1 and 2 are taken as given (they must name an executable); 3 and 4
  are probed. When nothing fits, the error says how to install the server.
  """

  alias HFBridge.Error

  # The repository root when this file is compiled from a checkout
  # (elixir_client/lib/hf_bridge/python.ex is three levels below it).
  @repo_root Path.expand("../../..", __DIR__)

  @typedoc """
  A located interpreter: the executable, the directory to run it in (the
  repository root, or `nil` when `py_worker` is installed), and environment
  variables to add.
  """
  @type t :: %{executable: String.t(), cwd: String.t() | nil, env: [{String.t(), String.t()}]}

  @doc """
  Locates the interpreter. Options: `:python` (an explicit path), and for
  tests `:env` (a map replacing the OS environment lookups) and `:repo_root`.
  """
  @spec find(keyword()) :: {:ok, t()} | {:error, Error.t()}
  def find(opts \\ []) do
    env = Keyword.get(opts, :env)
    root = Keyword.get_lazy(opts, :repo_root, &repo_root/0)
    explicit = Keyword.get(opts, :python) || Application.get_env(:hf_bridge, :python)
    venv = root && Path.join(root, ".venv/bin/python")

    cond do
      explicit ->
        given(explicit, "the :python option", root)

      value = getenv(env, "HF_BRIDGE_PYTHON") ->
        given(value, "HF_BRIDGE_PYTHON", root)

      venv && File.exists?(venv) ->
        {:ok, located(venv, root)}

      python3 = find_executable(env, "python3") ->
        probe(python3, root)

      true ->
        not_found(root, "no python3 on the PATH")
    end
  end

  @doc "The hf_bridge repository root, when this client was compiled from a checkout; otherwise `nil`."
  @spec repo_root() :: String.t() | nil
  def repo_root do
    if File.exists?(Path.join(@repo_root, "py_worker/__init__.py")), do: @repo_root, else: nil
  end

  defp given(path, source, root) do
    executable =
      if String.contains?(path, "/"), do: Path.expand(path), else: System.find_executable(path)

    if executable && File.regular?(executable) do
      {:ok, located(executable, root)}
    else
      {:error,
       Error.new(
         :server,
         :python_not_found,
         "#{source} names #{inspect(path)}, which is not an executable file. " <>
           install_hint(root)
       )}
    end
  end

  defp probe(python3, root) do
    located = located(python3, root)
    opts = [stderr_to_stdout: true, env: located.env] ++ if(root, do: [cd: root], else: [])

    case System.cmd(python3, ["-c", "import py_worker"], opts) do
      {_, 0} -> {:ok, located}
      {output, _} -> not_found(root, "#{python3} cannot import py_worker: #{last_line(output)}")
    end
  rescue
    e in ErlangError -> not_found(root, "running #{python3} failed: #{Exception.message(e)}")
  end

  defp located(executable, nil), do: %{executable: executable, cwd: nil, env: []}

  defp located(executable, root) do
    path = Enum.join(Enum.reject([root, System.get_env("PYTHONPATH")], &(&1 in [nil, ""])), ":")
    %{executable: executable, cwd: root, env: [{"PYTHONPATH", path}]}
  end

  defp not_found(root, why) do
    {:error,
     Error.new(
       :server,
       :python_not_found,
       "cannot find a Python with the hf_bridge server installed (#{why}). " <> install_hint(root)
     )}
  end

  defp install_hint(nil) do
    "Install it with `pip install hf-bridge` (or `pip install -e .` in an hf_bridge checkout), " <>
      "or set HF_BRIDGE_PYTHON to a Python that has it, or pass address: \"host:port\" to use a running server."
  end

  defp install_hint(root) do
    "Run `make install` in #{root} (or `pip install -e .` there), " <>
      "or set HF_BRIDGE_PYTHON to a Python that has py_worker installed, " <>
      "or pass address: \"host:port\" to use a running server."
  end

  defp last_line(output) do
    output |> String.trim() |> String.split("\n") |> List.last() |> to_string()
  end

  defp getenv(nil, name), do: non_empty(System.get_env(name))
  defp getenv(env, name), do: non_empty(Map.get(env, name))

  defp find_executable(nil, name), do: System.find_executable(name)

  defp find_executable(env, name) do
    env
    |> Map.get("PATH", "")
    |> String.split(":", trim: true)
    |> Enum.map(&Path.join(&1, name))
    |> Enum.find(&(File.regular?(&1) and executable?(&1)))
  end

  defp executable?(path) do
    case File.stat(path) do
      {:ok, %File.Stat{mode: mode}} -> Bitwise.band(mode, 0o111) != 0
      _ -> false
    end
  end

  defp non_empty(""), do: nil
  defp non_empty(value), do: value
end
