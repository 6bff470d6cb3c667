defmodule HFBridge.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    children = [
      {DynamicSupervisor, name: HFBridge.ConnectionSupervisor, strategy: :one_for_one},
      {DynamicSupervisor, name: HFBridge.ServerSupervisor, strategy: :one_for_one}
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: HFBridge.Supervisor)
  end
end
