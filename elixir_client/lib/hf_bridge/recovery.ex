defmodule HFBridge.Recovery do
  @moduledoc """
  The steps a session reader takes to recover from a dropped connection or
  a restarted worker or server, shared by `HFBridge.Session` and
  `HFBridge.Broadway.Reader`.

  A reader's state is a map with at least `:client` (an `HFBridge.Client`),
  `:own_conn` (the connection this reader opened for itself, or `nil`),
  `:retry` (an `HFBridge.Retry` policy), `:attempt` (recovery attempts since
  the last batch arrived) and `:info` (the session info, whose
  `resume_token` resumes it). Recovering is:

    1. `backoff/2`: give up on an error that recovery cannot help, or once
       the retry policy is spent; otherwise log and sleep.
    2. `reconnect/1`: make sure the client has a connection.
    3. `resume/1`: `ResumeSession` with the token. The server restarts the
       session after its last acknowledged batch and re-sends from there, so
       the reader drops batches it delivered already, and acknowledgements of
       those batches must wait until they have been sent again (the resumed
       server holds checkpoints only for batches it has sent).
  """

  require Logger

  alias HFBridge.{Client, Error, Retry}

  @typedoc "A reader's state (see the module docs for the keys used)."
  @type state :: %{
          required(:client) => Client.t(),
          required(:own_conn) => pid() | nil,
          required(:retry) => Retry.t(),
          required(:attempt) => non_neg_integer(),
          required(:info) => map(),
          optional(atom()) => term()
        }

  @doc """
  Whether recovering can help with `error`: a retryable failure, or a
  server that no longer knows the session (it restarted).
  """
  @spec recoverable?(Error.t()) :: boolean()
  def recoverable?(%Error{code: :not_found, layer: :grpc, message: message}),
    do: String.contains?(message, "unknown or closed session")

  def recoverable?(error), do: Retry.retryable?(error)

  @doc """
  Decides on the next attempt after `error`: `{:ok, state}` with `:attempt`
  counted, after logging and sleeping the policy's delay, or
  `{:error, error}` when `error` is not recoverable or the policy is spent
  (then marked not retryable, saying how many attempts were made).
  """
  @spec backoff(state(), Error.t()) :: {:ok, state()} | {:error, Error.t()}
  def backoff(state, error) do
    cond do
      not recoverable?(error) ->
        {:error, error}

      not Retry.allow?(state.retry, state.attempt) ->
        {:error,
         %{
           error
           | message: error.message <> " (gave up after #{state.attempt} recovery attempts)",
             retryable: false
         }}

      true ->
        attempt = state.attempt + 1
        delay = Retry.delay(state.retry, attempt)

        Logger.warning(
          "hf_bridge session #{state.info.session_id}: #{Exception.message(error)}; " <>
            "recovering (attempt #{attempt}/#{state.retry.max_attempts}) in #{delay} ms"
        )

        Process.sleep(delay)
        {:ok, %{state | attempt: attempt}}
    end
  end

  @doc """
  Makes sure the reader has a connection. A client that reconnects on its
  own opens the next connection on the reader's next call, shared with
  every other session and call made with it; only a client that no longer
  does (it was disconnected while this reader lives on) gets a connection
  of the reader's own, owned by the calling process.
  """
  @spec reconnect(state()) :: {:ok, state()} | {:error, Error.t()}
  def reconnect(state) do
    if Client.connected?(state.client) or Client.reconnects?(state.client) do
      {:ok, state}
    else
      case Client.reconnect(state.client, self()) do
        {:ok, client} ->
          release_own_conn(state)
          {:ok, %{state | client: client, own_conn: client.conn}}

        {:error, error} ->
          {:error, error}
      end
    end
  end

  @doc """
  Resumes the session with its token from the last acknowledged checkpoint
  (the server releases the old incarnation, if any); `:info` becomes the
  resumed session's.
  """
  @spec resume(state()) :: {:ok, state()} | {:error, Error.t()}
  def resume(state) do
    request = %{resume_token: state.info.resume_token}

    case Client.call(state.client, :ResumeSession, request, timeout: 120_000) do
      {:ok, info} -> {:ok, %{state | info: info}}
      {:error, error} -> {:error, error}
    end
  end

  @doc "Closes the connection the reader opened for itself, if any."
  @spec release_own_conn(state()) :: :ok
  def release_own_conn(%{own_conn: nil}), do: :ok
  def release_own_conn(%{client: client}), do: Client.disconnect(%{client | server: nil})
end
