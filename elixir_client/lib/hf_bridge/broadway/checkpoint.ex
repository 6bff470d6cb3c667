defmodule HFBridge.Broadway.Checkpoint do
  @moduledoc """
  Where `HFBridge.Broadway.Producer` keeps what it needs to resume after a
  restart: the resume token of its session, or the fact that its part of
  the dataset was read and acknowledged to the end.

  The server keeps the iterator checkpoint itself (committed on every
  acknowledgement); the store only has to remember, per producer, which
  session to resume. `HFBridge.Broadway.Checkpoint.File` keeps one small
  file per producer in a directory; implement this behaviour to keep them
  elsewhere (a database row, for instance) and pass
  `checkpoint: {MyStore, arg}` to the producer.

  Keys are strings made of the topology name and the producer's shard
  (see `HFBridge.Broadway.Options.checkpoint_key/1`).
  """

  @typedoc "What is stored per producer."
  @type state :: {:token, String.t()} | :done

  @doc "Returns the stored state of `key`, `nil` when there is none."
  @callback load(arg :: term(), key :: String.t()) :: {:ok, state() | nil} | {:error, term()}

  @doc "Stores `state` under `key`, durably, before returning `:ok`."
  @callback save(arg :: term(), key :: String.t(), state()) :: :ok | {:error, term()}

  alias HFBridge.Error

  @doc "Loads through `{module, arg}`; errors become `HFBridge.Error`s."
  @spec load({module(), term()}, String.t()) :: {:ok, state() | nil} | {:error, Error.t()}
  def load({module, arg}, key) do
    case module.load(arg, key) do
      {:ok, nil} -> {:ok, nil}
      {:ok, :done} -> {:ok, :done}
      {:ok, {:token, token}} when is_binary(token) -> {:ok, {:token, token}}
      other -> {:error, store_error("loading", key, module, other)}
    end
  end

  @doc "Saves through `{module, arg}`; errors become `HFBridge.Error`s."
  @spec save({module(), term()}, String.t(), state()) :: :ok | {:error, Error.t()}
  def save({module, arg}, key, state) do
    case module.save(arg, key, state) do
      :ok -> :ok
      other -> {:error, store_error("saving", key, module, other)}
    end
  end

  defp store_error(what, key, module, result) do
    Error.new(
      :session,
      :checkpoint_failed,
      "#{what} the checkpoint #{inspect(key)} with #{inspect(module)} failed: #{inspect(result)}",
      details: %{key: key, result: result}
    )
  end
end
