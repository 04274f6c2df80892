defmodule Mix.Tasks.DynamicSrv.Doctor do
  @shortdoc "Checks the DynamicSrv configuration and what DNS answers"
  @moduledoc """
  Checks a DynamicSrv setup without starting distribution: the same environment variables
  the node reads, what DNS answers (timed) and every problem with its likely fix.

      ERL_DIST_PORT=24501 DYNAMIC_SRV_NAMESERVERS=127.0.0.1:8600 \\
        mix dynamic_srv.doctor --node a@my-app.service.consul --service my-app.service.consul

  Run in your project without `--service`, it checks the clusters the project configures:
  libcluster topologies using `Cluster.Strategy.DynamicSrv` (`config :libcluster,
  topologies: [...]`, or any config key holding them) and `{DynamicSrv.Cluster, opts}` kept in
  config, each with its own `nameservers` and `node_naming`:

      ERL_DIST_PORT=24501 mix dynamic_srv.doctor --node a@my-app.service.consul

  With `--node`, each service's answer must list that node: it finds a node missing from its
  service, a node listed under another name (its IP instead of its host name, say), and a node
  named after an IP address in `srv` port mode, each with the line to change.

  Options:

    * `--node name@host` — check this node as it would start: its port, what DNS
      advertises for it (the SRV record `name.host` in `srv` mode), and that each service
      lists it.
    * `--service name` — query this SRV name (repeatable).
    * `--naming kind[:basename]` — how `--service` answers name nodes, as `node_naming`:
      `service_prefix` (default), `basename_port:app`, `basename_port_ip:app`, `basename:app`,
      `basename_ip:app`.
    * `--peer name@host` — look up this node as `DynamicSrv.Epmd` would (repeatable).
    * `--nameservers list` — instead of `DYNAMIC_SRV_NAMESERVERS`.
    * `--inet6` — look up AAAA records, as `-proto_dist inet6_tcp` does.

  Exits with status 1 when it finds a problem, so it can gate a deploy. On a running node
  use `DynamicSrv.diagnose/1` instead (`bin/my_app rpc "DynamicSrv.diagnose()"`), which also
  shows connected peers and the address cache.
  """
  use Mix.Task

  @switches [
    node: :string,
    service: :keep,
    peer: :keep,
    nameservers: :string,
    inet6: :boolean,
    naming: :string
  ]

  @impl true
  @spec run([String.t()]) :: :ok
  def run(argv) do
    {opts, rest, invalid} = OptionParser.parse(argv, strict: @switches)

    if rest != [] or invalid != [] do
      Mix.raise(
        "unexpected arguments #{inspect(rest ++ Enum.map(invalid, &elem(&1, 0)))}; " <>
          "usage: mix dynamic_srv.doctor [--node name@host] [--service name] [--peer name@host] " <>
          "[--nameservers list] [--inet6] [--naming kind[:basename]]"
      )
    end

    # Compiles and loads the project's configuration (runtime.exs too), for its topologies.
    Mix.Task.run("app.config")

    diagnosis_opts =
      [
        services: Keyword.get_values(opts, :service),
        peers: Keyword.get_values(opts, :peer),
        family: if(opts[:inet6], do: :inet6, else: :inet),
        naming: naming(opts[:naming]),
        nameservers_source: "--nameservers",
        topologies: config_apps()
      ] ++
        Enum.flat_map([:node, :nameservers], fn key ->
          if value = opts[key], do: [{key, value}], else: []
        end)

    report = DynamicSrv.Diagnosis.run(diagnosis_opts)
    Enum.each(DynamicSrv.Diagnosis.format(report), fn line -> Mix.shell().info(line) end)

    if report.problems != [], do: exit({:shutdown, 1})
    :ok
  end

  defp naming(nil), do: :service_prefix
  defp naming("service_prefix"), do: :service_prefix

  @naming_kinds ~w(basename_port basename_port_ip basename basename_ip)

  defp naming(text) do
    kinds = @naming_kinds

    case String.split(text, ":", parts: 2) do
      [kind, base] when kind in @naming_kinds and base != "" ->
        {String.to_atom(kind), base}

      _ ->
        Mix.raise(
          "--naming #{text}: expected service_prefix or KIND:BASENAME, KIND one of #{Enum.join(kinds, ", ")}"
        )
    end
  end

  # The project's own application and its dependencies' (their config may hold the topologies).
  defp config_apps do
    project = List.wrap(Mix.Project.config()[:app])
    loaded = Enum.map(Application.loaded_applications(), &elem(&1, 0))
    Enum.uniq(project ++ Mix.Project.deps_apps() ++ loaded)
  end
end
