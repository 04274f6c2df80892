# config/runtime.exs of the release compose.yaml runs.
# Without libcluster, start {DynamicSrv.Cluster, <the same config list>} in your supervisor.
import Config

config :libcluster,
  topologies: [
    app: [
      strategy: Cluster.Strategy.DynamicSrv,
      config: [
        # The compose service name: its A records are the replicas.
        service: "app",
        # app@<IP>, the RELEASE_NODE env.sh.eex gives each container.
        node_naming: {:basename_ip, "app"}
      ]
    ]
  ]
