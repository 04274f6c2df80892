defmodule Mix.Tasks.DynamicSrv.Doctor do
  @shortdoc "Checks the DynamicSrv configuration and what DNS answers"
  @moduledoc """
  Checks a DynamicSrv setup without starting distribution: the same environment variables
  the node reads, what DNS answers (timed) and every problem with its likely fix.

      ERL_DIST_PORT=24501 DYNAMIC_SRV_NAMESERVERS=127.0.0.1:8600 \\
        mix dynamic_srv.doctor --node a@my-app.service.consul --service my-app.service.consul

  Options:

    * `--node name@host` — check this node as it would start: its port and what DNS
      advertises for it (the SRV record `name.host` in `srv` mode).
    * `--service name` — query this SRV name (repeatable).
    * `--peer name@host` — look up this node as `DynamicSrv.Epmd` would (repeatable).
    * `--nameservers list` — instead of `DYNAMIC_SRV_NAMESERVERS`.
    * `--inet6` — look up AAAA records, as `-proto_dist inet6_tcp` does.

  Exits with status 1 when it finds a problem, so it can gate a deploy. On a running node
  use `DynamicSrv.diagnose/1` instead (`bin/my_app rpc "DynamicSrv.diagnose()"`), which also
  shows connected peers and the address cache.
  """
  use Mix.Task

  @switches [node: :string, service: :keep, peer: :keep, nameservers: :string, inet6: :boolean]

  @impl true
  @spec run([String.t()]) :: :ok
  def run(argv) do
    {opts, rest, invalid} = OptionParser.parse(argv, strict: @switches)

    if rest != [] or invalid != [] do
      Mix.raise(
        "unexpected arguments #{inspect(rest ++ Enum.map(invalid, &elem(&1, 0)))}; " <>
          "usage: mix dynamic_srv.doctor [--node name@host] [--service name] [--peer name@host] " <>
          "[--nameservers list] [--inet6]"
      )
    end

    Mix.Task.run("compile")

    diagnosis_opts =
      [
        services: Keyword.get_values(opts, :service),
        peers: Keyword.get_values(opts, :peer),
        family: if(opts[:inet6], do: :inet6, else: :inet)
      ] ++
        Enum.flat_map([:node, :nameservers], fn key ->
          if value = opts[key], do: [{key, value}], else: []
        end)

    report = DynamicSrv.Diagnosis.run(diagnosis_opts)
    Enum.each(DynamicSrv.Diagnosis.format(report), fn line -> Mix.shell().info(line) end)

    if report.problems != [], do: exit({:shutdown, 1})
    :ok
  end
end
