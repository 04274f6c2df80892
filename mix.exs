# The compiler that builds the Rust NIF lives outside lib/ so Mix can use it before lib/ compiles,
# including when this package is a dependency of another project.
Code.require_file("mix/tasks/compile.dynamic_srv_native.ex", __DIR__)

defmodule DynamicSrv.MixProject do
  use Mix.Project

  @version "0.2.0"
  # The repository this package is published from: package links, docs source links and the
  # README's links to files the package leaves out (examples/, test/) all point here.
  @source_url "https://github.com/libcluster-dynamic-srv/libcluster_dynamic_srv"

  def project do
    [
      app: :libcluster_dynamic_srv,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:dynamic_srv_native | Mix.compilers()],
      elixirc_paths: elixirc_paths(Mix.env()),
      # No Hex dependencies at all, not even optional ones (libcluster, ex_doc): the package
      # builds with Mix and cargo alone.
      deps: [],
      description:
        "Cluster BEAM nodes without epmd, on dynamic ports, through DNS SRV records (Rust NIF)",
      source_url: @source_url,
      homepage_url: @source_url,
      package: package(),
      docs: docs()
    ]
  end

  def application do
    [extra_applications: [:logger | test_applications(Mix.env())]]
  end

  # Elixir 1.15+ keeps only the OTP applications a project lists on the code path; the TLS
  # distribution tests drive :ssl from the test VM.
  defp test_applications(:test), do: [:crypto, :asn1, :public_key, :ssl]
  defp test_applications(_), do: []

  # What a Hex tarball holds, and all it needs to build from scratch: the Elixir sources, the
  # Mix compiler, the Rust workspace (sources, manifests, lock file) and the docs. No priv/ and
  # no target/: the compiler builds the NIF into _build on the first compile.
  # test/integration/packaging_test.exs builds a release from exactly this list.
  defp package do
    [
      licenses: ["MIT"],
      links: %{
        "GitHub" => @source_url,
        "Changelog" => "#{@source_url}/blob/main/CHANGELOG.md"
      },
      files: ~w(lib mix native/dynamic_srv_dns/src native/dynamic_srv_dns/Cargo.toml
                native/dynamic_srv_nif/src native/dynamic_srv_nif/Cargo.toml
                Cargo.toml Cargo.lock mix.exs
                README.md CHANGELOG.md LICENSE SECURITY.md RELIABILITY.md BENCHMARKS.md)
    ]
  end

  # For ex_doc (`mix docs`, `mix hex.publish`). ex_doc is not a dependency (this package has
  # none); add `{:ex_doc, "~> 0.34", only: :dev, runtime: false}` locally to build the docs.
  defp docs do
    [
      main: "readme",
      source_ref: "v#{@version}",
      source_url: @source_url,
      extras: ["README.md", "CHANGELOG.md", "SECURITY.md", "RELIABILITY.md", "BENCHMARKS.md"],
      groups_for_modules: [
        "Epmd module": [DynamicSrv.Epmd],
        Clustering: [DynamicSrv.Cluster, Cluster.Strategy.DynamicSrv],
        Diagnosis: [
          DynamicSrv,
          DynamicSrv.Diagnosis,
          DynamicSrv.LogForwarder,
          DynamicSrv.Telemetry
        ],
        "Mix tasks": [Mix.Tasks.DynamicSrv.Doctor, Mix.Tasks.Compile.DynamicSrvNative]
      ],
      groups_for_extras: [Reference: ["SECURITY.md", "RELIABILITY.md", "BENCHMARKS.md"]]
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
