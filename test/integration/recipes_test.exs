defmodule DynamicSrv.Integration.RecipesTest do
  # Each deployment recipe in examples/, run as written: the environment variables, VM flags
  # and node name come from the recipe's own files (the Nomad job, the StatefulSet, the
  # compose file, fly.toml, their env.sh.eex), and the strategy config from its runtime.exs.
  # A real dnsmasq serves that platform's DNS shape; real nodes boot with that config and
  # only the strategy connects them (`-connect_all false`, no Node.connect of our own).
  #
  # What the test changes, because one machine stands in for many: each node listens on its
  # own loopback (or namespace) address (`-kernel inet_dist_use_interface`), and the cookie is
  # the test's. Kubernetes, docker compose and Fly.io run in a private network namespace, with
  # the recipe's ports and the platform's DNS server address (port 53); the first two leave
  # DYNAMIC_SRV_NAMESERVERS unset as documented and resolve through the namespace's own
  # /etc/resolv.conf, written in the platform's shape. Nomad runs on the host's loopback, so
  # its DNS server and ports are the test's own.
  use ExUnit.Case, async: false
  @moduletag :integration

  alias DynamicSrv.Test.{DnsServer, Fleet, Mesh, Netns, NodeAgent, Peer, Ports}

  import DynamicSrv.Test.Recipes

  # --- reading a recipe ------------------------------------------------------------------

  # `- name: KEY` / `value: "..."` pairs of a container's env list (valueFrom ones skipped).
  defp kubernetes_env(file),
    do: pairs(~r/- name: ([A-Z_]+)\n\s+value: "([^"]*)"/, recipe(file))

  # `KEY: "value"` lines under a compose service's `environment:`.
  defp compose_env(file) do
    [block] = Regex.run(~r/environment:\n(.*)/s, recipe(file), capture: :all_but_first)
    pairs(~r/^\s+([A-Z_]+): "([^"]*)"/m, block)
  end

  # `KEY = "value"` lines of fly.toml's `[env]` table.
  defp fly_env(file) do
    [block] = Regex.run(~r/^\[env\]\n(.*?)(?:\n\[|\z)/ms, recipe(file), capture: :all_but_first)
    pairs(~r/^\s*([A-Z_]+)\s*=\s*"([^"]*)"/m, block)
  end

  # RELEASE_NODE as the recipe's env.sh.eex sets it, run by sh with `env` and, when given, a
  # `hostname` command printing `hostname_i` (what `hostname -i` prints in the container).
  defp release_node_from_env_sh(file, env, hostname_i \\ nil) do
    script = ". #{examples_path(file)}; printf %s \"$RELEASE_NODE\""
    bin = Path.join(System.tmp_dir!(), "recipes_bin_#{System.unique_integer([:positive])}")

    path =
      if hostname_i do
        File.mkdir_p!(bin)
        File.write!(Path.join(bin, "hostname"), "#!/bin/sh\necho '#{hostname_i}'\n")
        File.chmod!(Path.join(bin, "hostname"), 0o755)
        bin <> ":" <> System.get_env("PATH")
      else
        System.get_env("PATH")
      end

    {node, 0} = System.cmd("sh", ["-c", script], env: [{"PATH", path} | Map.to_list(env)])
    File.rm_rf!(bin)
    node
  end

  # --- running it ------------------------------------------------------------------------

  defp start_dns!(records, opts), do: Fleet.start_dns!(records, opts)

  defp node_list(peer), do: Fleet.node_list(peer)

  # A network namespace of the test's own (removed when the test ends), for addresses and
  # ports the host's loopback cannot give: the platform's DNS server on port 53, port 4370 on
  # every node, several IPv6 addresses.
  defp private_network(_context) do
    unless Netns.available?(),
      do: flunk("this recipe test needs root and iproute2 for a network namespace")

    ns = Netns.create!()
    on_exit(fn -> Netns.destroy(ns) end)
    %{ns: ns}
  end

  # A static-port recipe's env run as written inside the namespace: port 4370 is free there,
  # and DYNAMIC_SRV_NAMESERVERS stays unset, so the nodes resolve through the namespace's
  # /etc/resolv.conf as they would through the platform's.
  defp platform_resolver_env(env) do
    assert env["DYNAMIC_SRV_PORT_MODE"] == "static"
    assert env["ERL_DIST_PORT"] == "4370"
    refute Map.has_key?(env, "DYNAMIC_SRV_NAMESERVERS")
    env
  end

  # Has the node's own resolver (DynamicSrv.Diagnosis, on the library's DNS thread, set up as
  # the node's is) ask for SRV `name`; returns the servers it reports using and its answer.
  defp ask_srv(peer, name) do
    report = Peer.call(peer, DynamicSrv.Diagnosis, :run, [[services: [name]]])
    {report.nameservers, Enum.find(report.services, &(&1.service == name)).probe}
  end

  defp queries_for(dns, name),
    do: Enum.filter(DnsServer.queries(dns), &(&1 =~ ~r/^query\[\w+\] #{Regex.escape(name)}[ .]/))

  # Starts the recipe's strategy on every node and waits for the full mesh; returns the ms
  # it took (printed, never asserted).
  defp form_cluster!(peers, config) do
    names = Enum.sort(Enum.map(peers, & &1.name))
    for peer <- peers, do: assert(node_list(peer) == [], "connected before the strategy ran")

    started = System.monotonic_time(:millisecond)
    for peer <- peers, do: assert({:ok, _} = Peer.call(peer, NodeAgent, :start_cluster, [config]))

    for peer <- peers do
      expected = names -- [peer.name]

      assert Mesh.eventually(fn -> node_list(peer) == expected end, 600),
             "#{peer.name} sees #{inspect(node_list(peer))}, expected #{inspect(expected)}"
    end

    elapsed = System.monotonic_time(:millisecond) - started

    for peer <- peers do
      assert Enum.sort(Peer.call(peer, NodeAgent, :cluster_members, [])) == names
      Mesh.assert_no_epmd(peer)
    end

    elapsed
  end

  defp report(platform, peers, ms, dns) do
    queries = DnsServer.queries(dns)
    count = fn type -> Enum.count(queries, &String.starts_with?(&1, "query[#{type}]")) end

    IO.puts(
      "\n[recipes] #{platform}: #{length(peers)} nodes in a full mesh #{ms} ms after the " <>
        "strategies started; DNS queries: SRV #{count.("SRV")}, A #{count.("A")}, " <>
        "AAAA #{count.("AAAA")}"
    )

    queries
  end

  # --- the recipes -----------------------------------------------------------------------

  describe "Consul + Nomad (examples/nomad)" do
    test "app-PORT@IP nodes cluster from every SRV target form Consul answers with" do
      config = strategy_config("nomad")
      service = config[:service]
      assert service == "my-app.service.consul"
      assert hex_ip("127.0.0.11") == "7f00000b"

      # Two allocations on one host (Consul >= 1.7 names the target after the registered
      # IP, so both share it), one service registered without an address (the agent's
      # node name), one registered under a host name, which Consul leaves out of the
      # additional section when it cannot resolve it (dnsmasq's --address= records too).
      instances =
        for {ip, target} <- [
              {"127.0.0.11", "#{hex_ip("127.0.0.11")}.addr.dc1.consul"},
              {"127.0.0.11", "#{hex_ip("127.0.0.11")}.addr.dc1.consul"},
              {"127.0.0.12", "worker-2.node.dc1.consul"},
              {"127.0.0.13", "app-4.apps.example"}
            ],
            do: %{ip: ip, target: target, port: Ports.free()}

      # Consul answers <tag>.<service> for each tag too; the strategy asks the service.
      srv =
        for i <- instances,
            name <- [service, "v1." <> service],
            do: {:srv, name, i.target, i.port}

      addresses =
        for i <- instances,
            String.ends_with?(i.target, ".consul"),
            uniq: true,
            do: {:a, i.target, i.ip}

      dns =
        start_dns!(srv ++ addresses,
          extra: ["--local=/consul/", "--local=/example/", "--address=/apps.example/127.0.0.13"]
        )

      nodes =
        for i <- instances do
          {name, flags, env} = nomad_node(i.ip, i.port)

          assert name == "app-#{i.port}@#{i.ip}"
          assert flags == []
          assert env["DYNAMIC_SRV_PORT_MODE"] == "name"
          {name, i.ip, Map.put(env, "DYNAMIC_SRV_NAMESERVERS", DnsServer.nameserver(dns))}
        end

      peers = boot!(nodes, [])
      ms = form_cluster!(peers, config)
      queries = report("Consul + Nomad", peers, ms, dns)

      # The ports came from the names and the addresses from the SRV answers: only the
      # target missing from the additional section was looked up.
      assert Enum.any?(queries, &(&1 =~ "query[SRV] my-app.service.consul"))
      assert Enum.any?(queries, &(&1 =~ "query[A] app-4.apps.example"))
      refute Enum.any?(queries, &(&1 =~ ~r/^query\[A+\] (7f00000b|worker-2)/))
    end
  end

  describe "Kubernetes (examples/kubernetes)" do
    setup :private_network

    test "StatefulSet pods cluster from the headless Service's SRV records through the pod's resolv.conf",
         %{ns: ns} do
      config = strategy_config("kubernetes")
      service = config[:service]
      assert service == "_dist._tcp.my-app.default.svc.cluster.local"
      assert recipe("kubernetes/service.yaml") =~ ~r/- name: dist\b.*\n\s+protocol: TCP/
      assert recipe("kubernetes/statefulset.yaml") =~ "serviceName: my-app"

      # A pod's /etc/resolv.conf as the kubelet writes it (ClusterFirst): the cluster DNS
      # Service's IP, the namespace's search list, ndots:5.
      Netns.add_address!(ns, "10.96.0.10/32")

      Netns.put_resolv_conf!(ns, """
      search default.svc.cluster.local svc.cluster.local cluster.local
      nameserver 10.96.0.10
      options ndots:5
      """)

      pods = for i <- 0..2, do: %{pod: "my-app-#{i}", ip: "127.0.0.#{31 + i}"}
      fqdn = fn pod -> "#{pod.pod}.my-app.default.svc.cluster.local" end

      records = Enum.flat_map(pods, &[{:srv, service, fqdn.(&1), 4370}, {:a, fqdn.(&1), &1.ip}])

      dns =
        start_dns!(records,
          netns: ns,
          listen_address: "10.96.0.10",
          port: 53,
          extra: ["--local=/cluster.local/"]
        )

      nodes =
        for pod <- pods do
          {name, flags, env} =
            kubernetes_env("kubernetes/statefulset.yaml")
            |> interpolate(%{"POD_NAME" => pod.pod, "POD_NAMESPACE" => "default"})
            |> boot_spec()

          assert name == "app@" <> fqdn.(pod)
          assert flags == []
          {name, pod.ip, platform_resolver_env(env)}
        end

      peers = boot!(nodes, [], netns: ns)
      ms = form_cluster!(peers, config)
      queries = report("Kubernetes", peers, ms, dns)

      assert Enum.any?(queries, &(&1 =~ "query[SRV] #{service} "))
      asked = for q <- queries, [_, name] <- [Regex.run(~r/^query\[\w+\] (\S+) /, q)], do: name
      assert Enum.all?(asked, &(&1 in [service | Enum.map(pods, fqdn)])), inspect(asked)

      # A service with no pods (NXDOMAIN): a dotted name is taken as fully qualified, so it
      # is asked once, never again with each search domain appended as ndots:5 would have it.
      gone = "_dist._tcp.gone.default.svc.cluster.local"
      {nameservers, probe} = ask_srv(hd(peers), gone)
      assert nameservers == "10.96.0.10:53 (from /etc/resolv.conf)"
      assert probe.failure.reason == "nxdomain", inspect(probe)
      assert [_] = queries_for(dns, gone)
    end
  end

  describe "docker compose (examples/docker-compose)" do
    setup :private_network

    test "replicas cluster from the A records of the service name through Docker's DNS",
         %{ns: ns} do
      config = strategy_config("docker-compose")
      assert config[:service] == "app"

      # A container's /etc/resolv.conf on a user-defined network: Docker's embedded DNS
      # server, the host's search domains copied in (here one, corp.example), ndots:0.
      Netns.put_resolv_conf!(ns, """
      # Generated by Docker Engine.
      nameserver 127.0.0.11
      search corp.example
      options ndots:0
      """)

      ips = for i <- 1..3, do: "127.0.0.#{20 + i}"

      # Another service only under the search domain, for a single label the search finds.
      other = {:srv, "backup.corp.example", "app", 4370}

      dns =
        start_dns!([other | for(ip <- ips, do: {:a, "app", ip})],
          netns: ns,
          listen_address: "127.0.0.11",
          port: 53,
          extra: ["--local=/example/", "--local=/backup/"]
        )

      nodes =
        for ip <- ips do
          # A container on a second network: `hostname -i` prints both addresses.
          name = release_node_from_env_sh("docker-compose/env.sh.eex", %{}, "#{ip} 172.30.0.9")
          assert name == "app@" <> ip

          {nil, flags, env} = boot_spec(compose_env("docker-compose/compose.yaml"))
          assert flags == []
          {name, ip, platform_resolver_env(env)}
        end

      peers = boot!(nodes, [], netns: ns)
      ms = form_cluster!(peers, config)
      queries = report("docker compose", peers, ms, dns)

      # ndots:0: the single label is asked as it is, and answered, before any search domain.
      assert Enum.any?(queries, &(&1 =~ ~r/^query\[A\] app /))
      refute Enum.any?(queries, &(&1 =~ "app.corp.example")), inspect(queries)
      refute Enum.any?(queries, &String.starts_with?(&1, "query[SRV]"))

      # A single label the server does not know as it is goes on through the search list, as
      # the system resolver would take it.
      {nameservers, probe} = ask_srv(hd(peers), "backup")
      assert nameservers == "127.0.0.11:53 (from /etc/resolv.conf)"
      assert probe.failure == nil, inspect(probe)
      assert [answer] = probe.answers
      assert answer =~ "app:4370"

      # (hickory also tries the domain of a dotted host name in between, where there is one)
      asked = queries_for(dns, "backup")
      assert hd(asked) =~ ~r/^query\[SRV\] backup /, inspect(asked)
      assert List.last(asked) =~ ~r/^query\[SRV\] backup\.corp\.example /, inspect(asked)
    end
  end

  describe "Fly.io (examples/fly)" do
    # Fly's private network is IPv6 only: several IPv6 addresses need a namespace of our own.
    setup :private_network

    test "machines cluster from AAAA-only answers on <app>.internal over IPv6", %{ns: ns} do
      config = strategy_config("fly")
      assert config[:service] == "my-app.internal"
      assert config[:ip_family] == :inet6

      env = fly_env("fly/fly.toml")
      # Fly's DNS server, at the address and port the recipe names.
      assert env["DYNAMIC_SRV_NAMESERVERS"] == "[fdaa::3]:53"
      Netns.add_address!(ns, "fdaa::3/128")
      ips = for i <- 2..4, do: "fdaa:0:1::#{i}"
      for ip <- ips, do: Netns.add_address!(ns, ip <> "/128")

      # AAAA records only; A queries get NODATA (no error, no records), as from Fly's DNS.
      dns =
        start_dns!(for(ip <- ips, do: {:a, "my-app.internal", ip}),
          netns: ns,
          listen_address: "fdaa::3",
          port: 53,
          extra: ["--local=/internal/"]
        )

      assert DnsServer.nameserver(dns) == env["DYNAMIC_SRV_NAMESERVERS"]

      {nil, flags, node_env} = boot_spec(env)
      assert flags == ["-proto_dist", "inet6_tcp"]
      # The recipe's environment unchanged: port 4370 is free inside the namespace.
      assert node_env["DYNAMIC_SRV_PORT_MODE"] == "static"
      assert node_env["ERL_DIST_PORT"] == "4370"

      nodes =
        for ip <- ips do
          name = release_node_from_env_sh("fly/env.sh.eex", %{"FLY_PRIVATE_IP" => ip})
          assert name == "app@" <> ip
          {name, ip, node_env}
        end

      peers = boot!(nodes, flags, netns: ns)

      for peer <- peers do
        assert Peer.call(peer, :init, :get_argument, [:proto_dist]) == {:ok, [[~c"inet6_tcp"]]}
      end

      ms = form_cluster!(peers, config)
      queries = report("Fly.io (IPv6)", peers, ms, dns)

      # The A/AAAA polling mode asked for AAAA records only: no A query was made, so no
      # A answer (or the lack of one) was ever used.
      assert Enum.any?(queries, &(&1 =~ ~r/^query\[AAAA\] my-app\.internal /))
      refute Enum.any?(queries, &String.starts_with?(&1, "query[A]")), inspect(queries)
      refute Enum.any?(queries, &String.starts_with?(&1, "query[SRV]"))

      # The shape really is AAAA-only: asked afterwards, A finds nothing, AAAA every machine.
      fly_dns = [nameservers: [{{0xFDAA, 0, 0, 0, 0, 0, 0, 3}, 53}]]

      lookup = fn type ->
        Peer.call(hd(peers), :inet_res, :lookup, [~c"my-app.internal", :in, type, fly_dns])
      end

      assert lookup.(:a) == []
      assert Enum.sort(Enum.map(lookup.(:aaaa), &to_string(:inet.ntoa(&1)))) == ips

      # Every connection runs over IPv6, on the machines' private addresses.
      for peer <- peers, other <- peers, other != peer do
        {:ok, info} = Peer.call(peer, :net_kernel, :node_info, [other.name])
        assert {:net_address, {address, _port}, _, :tcp, :inet6} = info[:address]
        assert to_string(:inet.ntoa(address)) in ips
      end
    end
  end
end
