if Code.ensure_loaded?(Broadway) do
  defmodule HFBridge.Broadway.Acknowledger do
    @moduledoc """
    The `Broadway.Acknowledger` of messages emitted by
    `HFBridge.Broadway.Producer`.

    Each Broadway acknowledgement (from a processor or batcher) becomes one
    message to the producer that emitted the messages, carrying per record
    batch the number of successful and failed messages
    (`HFBridge.Broadway.AckTracker.count_by_seq/2`). The producer decides
    from them what to commit.
    """

    @behaviour Broadway.Acknowledger

    alias HFBridge.Broadway.AckTracker

    @typedoc "The producer pid and the reference of its current session."
    @type ack_ref :: {pid(), reference()}

    @impl true
    @spec ack(ack_ref(), [Broadway.Message.t()], [Broadway.Message.t()]) :: :ok
    def ack({producer, ref}, successful, failed) do
      counts = AckTracker.count_by_seq(Enum.map(successful, &seq/1), Enum.map(failed, &seq/1))
      send(producer, {:hf_bridge_ack, ref, counts})
      :ok
    end

    defp seq(%Broadway.Message{acknowledger: {_, _, %{seq: seq}}}), do: seq
  end
end
