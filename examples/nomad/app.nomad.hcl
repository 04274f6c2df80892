# A Mix release clustered through Consul DNS on Nomad's dynamic ports, without epmd.
#
# Each node is named app-<its port>@<its IP>: Consul's SRV answer for my-app.service.consul
# gives every instance's port and (in the additional section) its address, whatever it
# calls the target (<hex-ip>.addr.dc1.consul since Consul 1.7, <node>.node.dc1.consul for a
# service registered without an address, or the host name you registered), so the strategy
# names each peer from that answer, and the epmd module reaches app-23456@10.0.0.4 at
# 10.0.0.4:23456 with no DNS query at all (DYNAMIC_SRV_PORT_MODE=name).
#
# The release starts the topology in runtime.exs next to this file:
#   service: "my-app.service.consul", node_naming: {:basename_port_ip, "app"}
# Tested by test/integration/recipes_test.exs ("Consul + Nomad").
job "my-app" {
  group "app" {
    count = 3

    network {
      port "dist" {}            # dynamic: Nomad picks it; NOMAD_PORT_dist / NOMAD_IP_dist
      port "http" { to = 4000 }
    }

    # The distribution port in Consul. Only instances passing the check are in the SRV
    # answer; the strategy disconnects an instance once it is missing from two answers.
    service {
      name = "my-app"
      port = "dist"

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
        # The node listens on NOMAD_PORT_dist and is reached at NOMAD_IP_dist on that port:
        # host networking makes the two the same (with bridge networking, keep the host
        # port and the container port equal: no `to` on the "dist" port).
        network_mode = "host"
        ports        = ["dist", "http"]
      }

      env {
        ELIXIR_ERL_OPTIONS      = "-start_epmd false -epmd_module Elixir.DynamicSrv.Epmd"
        RELEASE_DISTRIBUTION    = "name"
        RELEASE_NODE            = "app-${NOMAD_PORT_dist}@${NOMAD_IP_dist}"
        # Peers' ports are the digits of their names; this node listens on its own.
        DYNAMIC_SRV_PORT_MODE   = "name"
        # The Consul agent on the host (host networking); use the agent's address otherwise.
        DYNAMIC_SRV_NAMESERVERS = "127.0.0.1:8600"
      }

      # The cookie comes from a Nomad Variable, never from the image (SECURITY.md):
      #   nomad var put nomad/jobs/my-app cookie="$(openssl rand -base64 48)"
      template {
        data        = "RELEASE_COOKIE={{ with nomadVar \"nomad/jobs/my-app\" }}{{ .cookie }}{{ end }}"
        destination = "secrets/cookie.env"
        env         = true
      }
    }
  }
}
