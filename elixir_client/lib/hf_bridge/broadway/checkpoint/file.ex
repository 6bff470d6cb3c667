defmodule HFBridge.Broadway.Checkpoint.File do
  @moduledoc """
  A `HFBridge.Broadway.Checkpoint` store keeping one file per producer,
  `<dir>/<key>.checkpoint`, holding either `token <resume token>` or
  `done`. Files are replaced atomically (written under a temporary name,
  then renamed), so a crash never leaves a half-written one.

  Delete the directory (or a file) to read the dataset again from the
  beginning.
  """

  @behaviour HFBridge.Broadway.Checkpoint

  @doc "The file holding `key` under `dir`."
  @spec path(Path.t(), String.t()) :: Path.t()
  def path(dir, key), do: Path.join(dir, key <> ".checkpoint")

  @impl true
  @spec load(Path.t(), String.t()) ::
          {:ok, HFBridge.Broadway.Checkpoint.state() | nil} | {:error, term()}
  def load(dir, key) do
    case File.read(path(dir, key)) do
      {:ok, "done\n"} -> {:ok, :done}
      {:ok, "token " <> rest} -> parse_token(String.trim_trailing(rest, "\n"))
      {:ok, other} -> {:error, {:malformed, String.slice(other, 0, 80)}}
      {:error, :enoent} -> {:ok, nil}
      {:error, reason} -> {:error, reason}
    end
  end

  defp parse_token(token) do
    if token != "" and not String.contains?(token, ["\n", " "]),
      do: {:ok, {:token, token}},
      else: {:error, {:malformed, token}}
  end

  @impl true
  @spec save(Path.t(), String.t(), HFBridge.Broadway.Checkpoint.state()) :: :ok | {:error, term()}
  def save(dir, key, state) do
    body =
      case state do
        :done -> "done\n"
        {:token, token} -> "token " <> token <> "\n"
      end

    final = path(dir, key)
    tmp = final <> ".tmp#{System.unique_integer([:positive])}"

    with :ok <- File.mkdir_p(dir),
         :ok <- File.write(tmp, body, [:sync]),
         :ok <- File.rename(tmp, final) do
      :ok
    else
      error ->
        File.rm(tmp)
        error
    end
  end
end
