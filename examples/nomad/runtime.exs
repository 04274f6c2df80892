# config/runtime.exs of the release the Nomad job (app.nomad.hcl) runs.
# Without libcluster, start {DynamicSrv.Cluster, <the same config list>} in your supervisor.
import Config

config :libcluster,
  topologies: [
    app: [
      strategy: Cluster.Strategy.DynamicSrv,
      config: [
        # Consul's SRV name for the service (add .<dc> for another datacenter).
        service: "my-app.service.consul",
        # app-<SRV port>@<target's address>: the RELEASE_NODE the job gives each node.
        node_naming: {:basename_port_ip, "app"}
      ]
    ]
  ]
