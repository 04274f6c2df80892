defmodule HelloCluster.MixProject do
  use Mix.Project

  def project do
    [
      app: :hello_cluster,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      # A path dependency only: building this release needs no Hex at all.
      deps: [{:libcluster_dynamic_srv, path: "../.."}],
      releases: [hello_cluster: [include_executables_for: [:unix]]]
    ]
  end

  def application do
    [extra_applications: [:logger], mod: {HelloCluster.Application, []}]
  end
end
