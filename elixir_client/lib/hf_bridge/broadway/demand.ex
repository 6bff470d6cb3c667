defmodule HFBridge.Broadway.Demand do
  @moduledoc """
  Demand accounting of one producer: consumer demand not yet met, messages
  fetched but not yet emitted, and whether to fetch another record batch.

  A batch is fetched only when all of these hold:

    * no fetch is in flight, the dataset is not exhausted, the producer is
      not draining or stopped;
    * the demand is larger than what is buffered (so fetching is driven by
      demand alone);
    * fewer than `max_pending` batches are open (fetched and not fully
      acknowledged) — the prefetch bound.

  Messages leave the buffer in the order they were fetched, never more
  than demanded.
  """

  defstruct demand: 0,
            buffer: :queue.new(),
            buffered: 0,
            max_pending: 1,
            fetching: false,
            exhausted: false,
            halted: false

  @type t :: %__MODULE__{
          demand: non_neg_integer(),
          buffer: :queue.queue(term()),
          buffered: non_neg_integer(),
          max_pending: pos_integer(),
          fetching: boolean(),
          exhausted: boolean(),
          halted: boolean()
        }

  @doc "A state with no demand, bounded by `max_pending` open batches."
  @spec new(pos_integer()) :: t()
  def new(max_pending) when is_integer(max_pending) and max_pending > 0,
    do: %__MODULE__{max_pending: max_pending}

  @doc "Adds `n` to the outstanding demand."
  @spec add_demand(t(), non_neg_integer()) :: t()
  def add_demand(%__MODULE__{} = state, n) when is_integer(n) and n >= 0,
    do: %{state | demand: state.demand + n}

  @doc "Takes as many buffered messages as the demand allows, in order."
  @spec take(t()) :: {[term()], t()}
  def take(%__MODULE__{demand: demand, buffered: buffered} = state) do
    n = min(demand, buffered)
    {taken, rest} = split(state.buffer, n, [])
    {taken, %{state | buffer: rest, buffered: buffered - n, demand: demand - n}}
  end

  defp split(queue, 0, acc), do: {Enum.reverse(acc), queue}

  defp split(queue, n, acc) do
    {{:value, item}, queue} = :queue.out(queue)
    split(queue, n - 1, [item | acc])
  end

  @doc "Whether to fetch a batch now, given how many batches are open."
  @spec fetch?(t(), non_neg_integer()) :: boolean()
  def fetch?(%__MODULE__{} = state, open_batches) do
    not state.fetching and not state.exhausted and not state.halted and
      state.demand > state.buffered and open_batches < state.max_pending
  end

  @doc "Marks a fetch as in flight."
  @spec fetch_started(t()) :: t()
  def fetch_started(%__MODULE__{} = state), do: %{state | fetching: true}

  @doc "Ends the fetch in flight, appending the `messages` it produced."
  @spec fetched(t(), [term()]) :: t()
  def fetched(%__MODULE__{} = state, messages) when is_list(messages) do
    %{
      state
      | buffer: Enum.reduce(messages, state.buffer, &:queue.in/2),
        buffered: state.buffered + length(messages),
        fetching: false
    }
  end

  @doc "Ends the fetch in flight without messages (a timeout, say); fetching may resume."
  @spec fetch_failed(t()) :: t()
  def fetch_failed(%__MODULE__{} = state), do: %{state | fetching: false}

  @doc "Ends the fetch in flight: the dataset has no more batches."
  @spec exhausted(t()) :: t()
  def exhausted(%__MODULE__{} = state), do: %{state | fetching: false, exhausted: true}

  @doc """
  Stops fetching for good (draining, or a blocked checkpoint). Buffered
  messages are still emitted on demand.
  """
  @spec halt(t()) :: t()
  def halt(%__MODULE__{} = state), do: %{state | halted: true}

  @doc "Whether the dataset is exhausted and every fetched message was emitted."
  @spec finished?(t()) :: boolean()
  def finished?(%__MODULE__{} = state), do: state.exhausted and state.buffered == 0
end
