defmodule HFBridge.Broadway.AckTracker do
  @moduledoc """
  Acknowledgement bookkeeping of one producer: which record batches are
  open (fetched, with messages not yet all acknowledged), and which batch
  may be committed.

  A batch is *complete* when every message made from it has been
  acknowledged, successfully or not. Acknowledgements arrive in any order
  (Broadway processors and batchers run concurrently); commits do not: the
  tracker releases the highest sequence number of the longest run of
  complete batches at the head, so a commit of `seq` always means every
  batch up to `seq` is complete.

  Failure policy (`t:policy/0`):

    * `:commit` — a failed message counts as handled.
    * `:stop` — the first batch holding a failed message is never
      released, nor is any batch after it; `blocked/1` then returns its
      sequence number.
  """

  @typedoc "What a failed message does to commits."
  @type policy :: :commit | :stop

  @typedoc "Per open batch: messages not yet acknowledged, and failed ones."
  @type entry :: %{remaining: non_neg_integer(), failed: non_neg_integer()}

  defstruct order: :queue.new(), open: %{}, last_tracked: nil, blocked: nil, failed: 0

  @type t :: %__MODULE__{
          order: :queue.queue(non_neg_integer()),
          open: %{non_neg_integer() => entry()},
          last_tracked: non_neg_integer() | nil,
          blocked: non_neg_integer() | nil,
          failed: non_neg_integer()
        }

  @doc "An empty tracker."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc """
  Registers batch `seq`, from which `count` messages were made. Batches
  must be registered in increasing `seq` order; a batch of zero messages
  is complete at once.
  """
  @spec track(t(), non_neg_integer(), non_neg_integer()) :: t()
  def track(%__MODULE__{last_tracked: last} = tracker, seq, count)
      when is_integer(seq) and seq >= 0 and is_integer(count) and count >= 0 do
    if last != nil and seq <= last do
      raise ArgumentError, "batch #{seq} tracked after batch #{last}; batches must be in order"
    end

    %{
      tracker
      | order: :queue.in(seq, tracker.order),
        open: Map.put(tracker.open, seq, %{remaining: count, failed: 0}),
        last_tracked: seq
    }
  end

  @doc """
  Records `ok` successful and `failed` failed acknowledgements of messages
  of batch `seq`. Acknowledgements of a batch that is not open (already
  released, or never tracked) are ignored; more acknowledgements than the
  batch has messages are capped at its count.
  """
  @spec ack(t(), non_neg_integer(), non_neg_integer(), non_neg_integer()) :: t()
  def ack(%__MODULE__{} = tracker, seq, ok, failed)
      when is_integer(ok) and ok >= 0 and is_integer(failed) and failed >= 0 do
    case Map.fetch(tracker.open, seq) do
      {:ok, entry} ->
        failed = min(failed, entry.remaining)
        ok = min(ok, entry.remaining - failed)
        entry = %{remaining: entry.remaining - ok - failed, failed: entry.failed + failed}
        %{tracker | open: Map.put(tracker.open, seq, entry), failed: tracker.failed + failed}

      :error ->
        tracker
    end
  end

  @doc """
  Releases the complete batches at the head, in order, under `policy`.
  Returns the highest released `seq` (the one to commit), or `nil` when
  none was released.
  """
  @spec release(t(), policy()) :: {non_neg_integer() | nil, t()}
  def release(%__MODULE__{} = tracker, policy) when policy in [:commit, :stop] do
    do_release(tracker, policy, nil)
  end

  defp do_release(%{blocked: blocked} = tracker, _policy, released) when blocked != nil,
    do: {released, tracker}

  defp do_release(tracker, policy, released) do
    case :queue.peek(tracker.order) do
      {:value, seq} ->
        case Map.fetch!(tracker.open, seq) do
          %{remaining: 0, failed: failed} when failed > 0 and policy == :stop ->
            {released, %{tracker | blocked: seq}}

          %{remaining: 0} ->
            tracker = %{
              tracker
              | order: :queue.drop(tracker.order),
                open: Map.delete(tracker.open, seq)
            }

            do_release(tracker, policy, seq)

          _incomplete ->
            {released, tracker}
        end

      :empty ->
        {released, tracker}
    end
  end

  @doc "How many batches are open (tracked and not released)."
  @spec open_count(t()) :: non_neg_integer()
  def open_count(%__MODULE__{open: open}), do: map_size(open)

  @doc "Whether no batch is open."
  @spec empty?(t()) :: boolean()
  def empty?(%__MODULE__{open: open}), do: map_size(open) == 0

  @doc "Under the `:stop` policy, the batch that blocks commits; otherwise `nil`."
  @spec blocked(t()) :: non_neg_integer() | nil
  def blocked(%__MODULE__{blocked: blocked}), do: blocked

  @doc "Failed messages acknowledged so far."
  @spec failed_count(t()) :: non_neg_integer()
  def failed_count(%__MODULE__{failed: failed}), do: failed

  @doc """
  Counts acknowledgements by batch: given the `seq`s of successful and of
  failed messages, returns `[{seq, ok, failed}]` sorted by `seq`. Used by
  the acknowledger so that one message per Broadway ack call reaches the
  producer.
  """
  @spec count_by_seq([non_neg_integer()], [non_neg_integer()]) ::
          [{non_neg_integer(), non_neg_integer(), non_neg_integer()}]
  def count_by_seq(successful, failed) do
    counts =
      Enum.reduce(successful, %{}, fn seq, acc ->
        Map.update(acc, seq, {1, 0}, fn {o, f} -> {o + 1, f} end)
      end)

    counts =
      Enum.reduce(failed, counts, fn seq, acc ->
        Map.update(acc, seq, {0, 1}, fn {o, f} -> {o, f + 1} end)
      end)

    counts
    |> Enum.map(fn {seq, {ok, failed}} -> {seq, ok, failed} end)
    |> Enum.sort()
  end
end
