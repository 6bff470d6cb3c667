defmodule HFBridge.MixProject do
  use Mix.Project

  @version "0.1.0"

  def project do
    [
      app: :hf_bridge,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      elixirc_options: [warnings_as_errors: System.get_env("CI") == "true"],
      deps: deps(),
      description: "HuggingFace datasets for Elixir: Arrow record batches over gRPC",
      docs: [main: "HFBridge"]
    ]
  end

  def application do
    [
      extra_applications: [:logger, :crypto, :public_key, :ssl, :inets],
      mod: {HFBridge.Application, []}
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]

  # The core uses Elixir and OTP alone. Explorer, Broadway, ExAws and
  # :telemetry integrations compile only when the host application brings
  # those libraries; they are deliberately not listed here.
  defp deps, do: []
end
