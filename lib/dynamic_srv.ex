defmodule DynamicSrv do
  @moduledoc """
  Cluster Elixir and Erlang nodes without the epmd daemon, on dynamically assigned ports,
  discovering peers through DNS SRV and A/AAAA records.

      # environment of every node (or rel/env.sh.eex)
      export ELIXIR_ERL_OPTIONS="-start_epmd false -epmd_module Elixir.DynamicSrv.Epmd"
      export ERL_DIST_PORT=24501
      export DYNAMIC_SRV_NAMESERVERS=127.0.0.1:8600

  `DynamicSrv.Epmd` is the epmd module the VM uses to listen and to find peers. See the
  README for every environment variable and deployment recipes. When something does not
  connect, run `diagnose/1` on the node (`bin/my_app rpc "DynamicSrv.diagnose()"`) or
  `mix dynamic_srv.doctor` before it starts.
  """

  alias DynamicSrv.Diagnosis

  @doc """
  Prints what this node is configured with, what DNS answers for it, its services and its
  peers (each answer timed), the address cache, and every problem with its likely fix.

  Prints on the caller's group leader, so through `bin/my_app rpc "DynamicSrv.diagnose()"`
  the text appears on your terminal. Returns `:ok` when no problem was found, else
  `{:problems, count}`. Takes the options of `DynamicSrv.Diagnosis.run/1`, e.g.
  `DynamicSrv.diagnose(services: ["my-app.service.consul"])`.
  """
  @spec diagnose(keyword()) :: :ok | {:problems, pos_integer()}
  def diagnose(opts \\ []) do
    report = Diagnosis.run(opts)
    Enum.each(Diagnosis.format(report), &IO.puts/1)

    case length(report.problems) do
      0 -> :ok
      n -> {:problems, n}
    end
  end
end
