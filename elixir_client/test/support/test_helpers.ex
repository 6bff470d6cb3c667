defmodule HFBridge.TestHelpers do
  @moduledoc false
  # Small helpers shared by test modules: `import HFBridge.TestHelpers`.

  import ExUnit.Assertions, only: [flunk: 1]

  @doc "A TCP port on 127.0.0.1 that was free a moment ago."
  def free_port do
    {:ok, l} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(l)
    :gen_tcp.close(l)
    port
  end

  @doc "Polls `fun` every 20 ms until it is truthy; flunks after `tries` tries."
  def wait_until(fun, tries \\ 100) do
    cond do
      fun.() -> :ok
      tries == 0 -> flunk("condition not reached")
      true -> Process.sleep(20) && wait_until(fun, tries - 1)
    end
  end
end
