defmodule HFBridge.Retry do
  @moduledoc """
  The bounded retry policy of sessions: which errors are worth retrying and
  how long to wait before each attempt (capped exponential backoff with
  jitter).

  A policy is built from the `:retry` session option, a keyword list:

    * `:max_attempts` — retries after the first failure before giving up
      (default 10; `0` turns retrying off).
    * `:base_delay` — milliseconds before the first retry (default 100).
    * `:max_delay` — cap of a single wait, in milliseconds (default 5 000).

  The waits double from `:base_delay` up to `:max_delay`, each shortened by a
  random jitter of up to 20 %, so clients that lost the same server do not
  come back in lockstep. With the defaults, a session keeps trying for about
  half a minute — enough for a server restart.
  """

  alias HFBridge.Error

  defstruct max_attempts: 10, base_delay: 100, max_delay: 5_000

  @typedoc "A retry policy."
  @type t :: %__MODULE__{
          max_attempts: non_neg_integer(),
          base_delay: non_neg_integer(),
          max_delay: non_neg_integer()
        }

  @keys [:max_attempts, :base_delay, :max_delay]

  @doc "Builds a policy from a keyword list (see the module docs); `{:error, message}` when invalid."
  @spec new(keyword() | t()) :: {:ok, t()} | {:error, String.t()}
  def new(%__MODULE__{} = policy), do: {:ok, policy}

  def new(opts) when is_list(opts) do
    cond do
      not Keyword.keyword?(opts) ->
        {:error, "expected a keyword list, got: #{inspect(opts, limit: 5)}"}

      (unknown = Keyword.keys(opts) -- @keys) != [] ->
        {:error, "unknown retry options #{inspect(unknown)}; known: #{inspect(@keys)}"}

      Enum.any?(opts, fn {_k, v} -> not (is_integer(v) and v >= 0) end) ->
        {:error, "retry options must be non-negative integers, got: #{inspect(opts)}"}

      true ->
        {:ok, struct(__MODULE__, opts)}
    end
  end

  def new(other), do: {:error, "expected a keyword list, got: #{inspect(other, limit: 5)}"}

  @doc "Validator for `HFBridge.Options` (`{:custom, HFBridge.Retry, :check}`)."
  @spec check(term()) :: {:ok, t()} | {:error, String.t()}
  def check(value), do: new(value)

  @doc """
  Milliseconds to wait before retry number `attempt` (1 for the first retry).
  """
  @spec delay(t(), pos_integer()) :: non_neg_integer()
  def delay(%__MODULE__{base_delay: base, max_delay: cap}, attempt) when attempt >= 1 do
    full = min(cap, base * Integer.pow(2, min(attempt - 1, 30)))
    jitter = if full > 4, do: :rand.uniform(div(full, 5) + 1) - 1, else: 0
    full - jitter
  end

  @doc "Whether another retry is allowed after `attempt` retries were made."
  @spec allow?(t(), non_neg_integer()) :: boolean()
  def allow?(%__MODULE__{max_attempts: max}, attempt), do: attempt < max

  @doc """
  Whether `error` may go away by itself: a dropped connection, a GOAWAY, a
  worker or server restarting (`retryable: true`, `:unavailable`,
  `:aborted`), or a transport failure while connecting.
  """
  @spec retryable?(Error.t()) :: boolean()
  def retryable?(%Error{retryable: true}), do: true
  def retryable?(%Error{layer: :grpc, code: code}) when code in [:unavailable, :aborted], do: true
  def retryable?(%Error{layer: :http2, code: code}) when code in [:closed, :goaway], do: true
  def retryable?(%Error{}), do: false
end
