defmodule Cluster.Strategy.DynamicSrv do
  @moduledoc """
  A libcluster strategy: nodes listed in DNS SRV records, found without epmd.

      config :libcluster,
        topologies: [
          app: [
            strategy: Cluster.Strategy.DynamicSrv,
            config: [
              service: "my-app.service.consul",
              node_naming: {:basename_port_ip, "app"},
              polling_interval: 5_000
            ]
          ]
        ]

  It takes the original `libcluster_dynamic_srv` config unchanged (`service`,
  `polling_interval`, `disconnect_on_deregister`, `resolver`) plus the keys documented in
  `DynamicSrv.Cluster`, which runs the polling. Connections and disconnections go through
  libcluster's `Cluster.Strategy.connect_nodes/4` and `disconnect_nodes/4`, so libcluster's
  logs and telemetry still happen, and through the topology's `connect`/`disconnect` MFAs.
  A failed connect is logged once, by libcluster. Every line this package logs for the
  topology starts with libcluster's own prefix, `[libcluster:<topology>] `.

  The `meta` of the `%Cluster.Strategy.State{}` it is started with (libcluster passes `nil`)
  may list nodes, as a list or MapSet: they are the starting membership, connected by the
  first poll and removed by the same rules as nodes DNS listed (see `DynamicSrv.Cluster`).

  The topology's name (`app` above) is what `max_node_atoms` counts against for the life of
  the VM, so a topology libcluster restarts does not get a fresh budget.

  libcluster starts a topology only under its supervisor: put
  `{Cluster.Supervisor, [topologies, [name: MyApp.ClusterSupervisor]]}` among your
  application's children, `topologies` being `Application.get_env(:libcluster, :topologies)`.

  This package does not declare libcluster as a dependency, optional or not: add
  `{:libcluster, "~> 3.4"}` to your own deps (3.4 for its telemetry events). The strategy
  compiles and works without it (`DynamicSrv.Cluster` is the libcluster-free child); when
  libcluster is compiled in, the module declares `@behaviour Cluster.Strategy`.
  """

  # Decided when this module compiles: libcluster is then compiled (it is a dependency of
  # the app), or absent for good. No `@impl` below, so both cases compile without warnings.
  if Code.ensure_loaded?(Cluster.Strategy) and
       function_exported?(Cluster.Strategy, :behaviour_info, 1) do
    @behaviour Cluster.Strategy
  end

  @doc false
  def child_spec(args) do
    %{id: __MODULE__, start: {__MODULE__, :start_link, [args]}}
  end

  @doc """
  Called by `Cluster.Supervisor` with `[%Cluster.Strategy.State{}]`: `topology`, `connect`,
  `disconnect`, `list_nodes`, `config` and `meta` (nodes to start with, or `nil`).
  """
  @spec start_link([map()]) :: GenServer.on_start()
  def start_link([%{topology: topology, config: config} = state]) do
    DynamicSrv.Cluster.start_link(
      [
        topology: topology,
        connect: Map.get(state, :connect) || {:net_kernel, :connect_node, []},
        disconnect: Map.get(state, :disconnect) || {:erlang, :disconnect_node, []},
        list_nodes: Map.get(state, :list_nodes) || {:erlang, :nodes, [:connected]},
        libcluster: libcluster_loaded?(),
        initial_members: Map.get(state, :meta),
        log_prefix: true
      ] ++ (config || [])
    )
  end

  defp libcluster_loaded? do
    Code.ensure_loaded?(Cluster.Strategy) and
      function_exported?(Cluster.Strategy, :connect_nodes, 4)
  end
end
