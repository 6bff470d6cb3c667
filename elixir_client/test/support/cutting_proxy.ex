defmodule HFBridge.Test.CuttingProxy do
  @moduledoc false
  # A loopback TCP proxy in front of a server; `cut/1` drops every open
  # connection (both directions) while the proxy keeps accepting new ones.

  @spec start(:inet.port_number()) :: {pid(), :inet.port_number()}
  def start(upstream) do
    {:ok, listen} =
      :gen_tcp.listen(0, [:binary, active: false, ip: {127, 0, 0, 1}, reuseaddr: true])

    {:ok, port} = :inet.port(listen)
    pid = spawn(fn -> serve(listen, upstream, []) end)
    :ok = :gen_tcp.controlling_process(listen, pid)
    send(pid, :go)
    {pid, port}
  end

  @spec cut(pid()) :: non_neg_integer()
  def cut(proxy) do
    send(proxy, {:cut, self()})

    receive do
      {:cut, n} -> n
    after
      5_000 -> 0
    end
  end

  defp serve(listen, upstream, pairs) do
    receive do
      :go -> :ok
    after
      0 -> :ok
    end

    case :gen_tcp.accept(listen, 50) do
      {:ok, down} ->
        {:ok, up} =
          :gen_tcp.connect({127, 0, 0, 1}, upstream, [:binary, active: false, nodelay: true])

        pair = spawn(fn -> pump(down, up) end)
        :ok = :gen_tcp.controlling_process(down, pair)
        :ok = :gen_tcp.controlling_process(up, pair)
        send(pair, :go)
        serve(listen, upstream, [pair | pairs])

      {:error, :timeout} ->
        receive do
          {:cut, from} ->
            live = Enum.filter(pairs, &Process.alive?/1)
            Enum.each(live, &send(&1, :cut))
            send(from, {:cut, length(live)})
            serve(listen, upstream, [])
        after
          0 -> serve(listen, upstream, pairs)
        end
    end
  end

  defp pump(down, up) do
    receive do
      :go -> :ok
    end

    :ok = :inet.setopts(down, active: true)
    :ok = :inet.setopts(up, active: true)
    loop(down, up)
  end

  defp loop(down, up) do
    receive do
      {:tcp, ^down, data} ->
        :gen_tcp.send(up, data)
        loop(down, up)

      {:tcp, ^up, data} ->
        :gen_tcp.send(down, data)
        loop(down, up)

      {:tcp_closed, _} ->
        close(down, up)

      :cut ->
        close(down, up)
    end
  end

  defp close(down, up) do
    :gen_tcp.close(down)
    :gen_tcp.close(up)
  end
end
