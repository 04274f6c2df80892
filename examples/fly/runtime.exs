# config/runtime.exs of the release fly.toml runs.
# Without libcluster, start {DynamicSrv.Cluster, <the same config list>} in your supervisor.
import Config

config :libcluster,
  topologies: [
    app: [
      strategy: Cluster.Strategy.DynamicSrv,
      config: [
        # <app>.internal (write your app's name, or "#{System.fetch_env!("FLY_APP_NAME")}.internal").
        service: "my-app.internal",
        # app@<IPv6>, the RELEASE_NODE env.sh.eex gives each machine, from AAAA records.
        node_naming: {:basename_ip, "app"},
        ip_family: :inet6
      ]
    ]
  ]
