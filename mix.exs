# The compiler that builds the Rust NIF lives outside lib/ so Mix can use it before lib/ compiles,
# including when this package is a dependency of another project.
Code.require_file("mix/tasks/compile.dynamic_srv_native.ex", __DIR__)

defmodule DynamicSrv.MixProject do
  use Mix.Project

  @version "0.1.0"

  def project do
    [
      app: :libcluster_dynamic_srv,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:dynamic_srv_native | Mix.compilers()],
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: [],
      description:
        "Cluster BEAM nodes without epmd, on dynamic ports, through DNS SRV records (Rust NIF)",
      package: [
        licenses: ["MIT"],
        files: ~w(lib mix native/dynamic_srv_dns/src native/dynamic_srv_dns/Cargo.toml
                  native/dynamic_srv_nif/src native/dynamic_srv_nif/Cargo.toml
                  Cargo.toml Cargo.lock mix.exs README.md LICENSE)
      ]
    ]
  end

  def application do
    [extra_applications: [:logger | test_applications(Mix.env())]]
  end

  # Elixir 1.15+ keeps only the OTP applications a project lists on the code path; the TLS
  # distribution tests drive :ssl from the test VM.
  defp test_applications(:test), do: [:crypto, :asn1, :public_key, :ssl]
  defp test_applications(_), do: []

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
