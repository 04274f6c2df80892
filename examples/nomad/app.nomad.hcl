# A Mix release clustered through Consul DNS on Nomad's dynamic ports, without epmd.
# The release depends on :libcluster_dynamic_srv and starts
#   {DynamicSrv.Cluster, service: "my-app.service.consul"}
# (or the libcluster topology from the README).
job "my-app" {
  group "app" {
    count = 3

    network {
      port "dist" {}            # dynamic: Nomad picks it, we read it from NOMAD_PORT_dist
      port "http" { to = 4000 }
    }

    # Each allocation registers its distribution port under its own tag, so Consul answers
    # SRV <alloc id>.my-app.service.consul with this node's address and port, and
    # SRV my-app.service.consul with every node.
    service {
      name = "my-app"
      port = "dist"
      tags = ["${NOMAD_ALLOC_ID}"]

      check {
        type     = "tcp"
        port     = "dist"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "app" {
      driver = "docker"

      config {
        image        = "my-app:latest"
        network_mode = "host"
        ports        = ["dist", "http"]
      }

      env {
        ELIXIR_ERL_OPTIONS      = "-start_epmd false -epmd_module Elixir.DynamicSrv.Epmd"
        RELEASE_DISTRIBUTION    = "name"
        RELEASE_NODE            = "${NOMAD_ALLOC_ID}@my-app.service.consul"
        ERL_DIST_PORT           = "${NOMAD_PORT_dist}"
        # The Consul agent on the host (host networking); use the agent's address otherwise.
        DYNAMIC_SRV_NAMESERVERS = "127.0.0.1:8600"
      }
    }
  }
}
