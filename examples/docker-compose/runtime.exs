# config/runtime.exs of the release compose.yaml runs.
# Without libcluster, start {DynamicSrv.Cluster, <the same config list>} in your supervisor.
import Config

config :libcluster,
  topologies: [
    app: [
      strategy: Cluster.Strategy.DynamicSrv,
      config: [
        # The compose service name: its A records are the replicas. A single label is
        # resolved as the container's resolver would: with ndots:0 asked as it is first,
        # then with each search domain of /etc/resolv.conf (copied from the host) appended.
        service: "app",
        # app@<IP>, the RELEASE_NODE env.sh.eex gives each container.
        node_naming: {:basename_ip, "app"}
      ]
    ]
  ]
