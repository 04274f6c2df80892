defmodule DynamicSrv.Integration.MisconfigTest do
  # Real nodes behind a real dnsmasq, each misconfigured one way, each running
  # DynamicSrv.Cluster: every misconfiguration gives its one warning within two polls (and
  # only one), a healthy node gives none. See DynamicSrv.Cluster.Misconfig.
  use ExUnit.Case, async: false
  @moduletag :integration

  import DynamicSrv.Test.Fleet
  alias DynamicSrv.Test.{DnsServer, Mesh, Netns, NodeAgent, Peer, Ports}

  @tag timeout: 120_000
  test "a service DNS says does not exist (NXDOMAIN) or has no SRV records (NODATA)" do
    [spec] = specs(["n1"])
    # nodata.dyn.test has an A record but no SRV record; missing.dyn.test nothing at all.
    dns = start_dns!(records([spec]) ++ [{:a, "nodata.dyn.test", "127.0.0.1"}])
    [peer] = boot!([spec], dns)
    capture_logs!([peer])

    start_clusters!([peer], [service: "missing.dyn.test"] ++ counting())
    await_polls([peer], 2)

    assert [warning] = warnings(peer), inspect(logs(peer))
    assert warning =~ "DNS says missing.dyn.test does not exist (NXDOMAIN): no members from it."
    assert warning =~ "Asked #{DnsServer.nameserver(dns)} (from DYNAMIC_SRV_NAMESERVERS)."
    assert warning =~ "Likely fix: "
    assert warning =~ "(Repeated every 5 min while it lasts.)"
    IO.puts("\n[misconfig] NXDOMAIN: #{warning}")

    # Not repeated on every poll.
    await_polls([peer], 3)
    assert length(warnings(peer)) == 1

    :ok = Peer.call(peer, NodeAgent, :stop_cluster, [])
    start_clusters!([peer], [service: "nodata.dyn.test"] ++ counting())
    await_polls([peer], 2)

    assert [_, nodata] = warnings(peer)
    assert nodata =~ "DNS says nodata.dyn.test exists but has no SRV records (NODATA)"
    assert nodata =~ "Asked #{DnsServer.nameserver(dns)}"
    IO.puts("[misconfig] NODATA: #{nodata}")

    # Registered: one info line.
    dns =
      restart_dns!(dns, records([spec]) ++ [{:srv, "nodata.dyn.test", target(spec), spec.port}])

    assert Mesh.eventually(
             fn -> {:info, "nodata.dyn.test is listed in DNS again"} in logs(peer) end,
             200
           ),
           inspect(logs(peer))

    assert Mesh.eventually(fn -> DnsServer.queries(dns) != [] end, 100)
  end

  # The issue's case: no DYNAMIC_SRV_NAMESERVERS and no inetrc, so /etc/resolv.conf (here the
  # namespace's) is asked, and that server knows nothing of the Consul name.
  test "the resolv.conf server answers NXDOMAIN for a Consul service name" do
    unless Netns.available?(),
      do: flunk("this test needs root and iproute2 for a network namespace")

    ns = Netns.create!()
    on_exit(fn -> Netns.destroy(ns) end)
    Netns.add_address!(ns, "10.53.0.1/32")
    Netns.put_resolv_conf!(ns, "nameserver 10.53.0.1\n")

    start_dns!([{:a, "other.consul", "127.0.0.1"}],
      netns: ns,
      listen_address: "10.53.0.1",
      port: 53,
      extra: ["--local=/consul/"]
    )

    peer = Peer.start!("n1@dyn.test", %{"ERL_DIST_PORT" => "#{Ports.free()}"}, netns: ns)

    on_exit(fn -> Peer.stop(peer) end)
    capture_logs!([peer])
    start_clusters!([peer], [service: "my-app.service.consul"] ++ counting())
    await_polls([peer], 2)

    assert [warning] = warnings(peer), inspect(logs(peer))

    assert warning ==
             "DNS says my-app.service.consul does not exist (NXDOMAIN): no members from it. " <>
               "Asked 10.53.0.1:53 (from /etc/resolv.conf). Likely fix: the system resolver " <>
               "does not know this name (a Consul or other private zone?): set " <>
               "DYNAMIC_SRV_NAMESERVERS (or the topology's nameservers:) to the DNS server " <>
               "that serves it, e.g. the Consul agent, 127.0.0.1:8600. " <>
               "(Repeated every 5 min while it lasts.)"

    IO.puts("\n[misconfig] NXDOMAIN from resolv.conf: #{warning}")
  end

  test "a healthy node gives no warning" do
    [spec] = specs(["n1"])
    dns = start_dns!(records([spec]))
    [peer] = boot!([spec], dns)
    capture_logs!([peer])
    start_clusters!([peer], counting())
    await_polls([peer], 2)
    assert warnings(peer) == [], inspect(logs(peer))
  end

  describe "this node cannot cluster" do
    setup do
      [spec] = specs(["n1"])
      %{spec: spec, dns: start_dns!(records([spec]))}
    end

    test "not distributed", %{dns: dns} do
      peer = start_peer!("nodist", dns, %{}, dist: :none)
      assert [warning] = warnings_after_two_polls(peer)
      assert warning =~ "this node is not distributed (nonode@nohost)"
      assert warning =~ "--name NAME@HOST"
      IO.puts("\n[misconfig] not distributed: #{warning}")
    end

    test "short names", %{dns: dns} do
      peer = start_peer!("short", dns, %{"ERL_DIST_PORT" => "#{Ports.free()}"}, dist: "-sname")
      assert [warning] = warnings_after_two_polls(peer)
      assert warning =~ "this node uses short names (short@"
      IO.puts("\n[misconfig] short names: #{warning}")
    end

    test "the stock epmd module", %{dns: dns} do
      # -dist_listen false: stock erl_epmd then never needs a daemon (none runs here).
      peer =
        start_peer!("stock@127.0.0.1", dns, %{},
          epmd_config: :none,
          erl_args: ["-dist_listen", "false"]
        )

      assert [warning] = warnings_after_two_polls(peer)
      assert warning =~ "this node's epmd module is :erl_epmd, not DynamicSrv.Epmd"
      IO.puts("\n[misconfig] stock epmd: #{warning}")
    end

    test "an epmd daemon started alongside (no -start_epmd false)", %{dns: dns} do
      # The VM starts `epmd -daemon` on ERL_EPMD_PORT: a port held here, so that daemon
      # cannot bind and exits at once; nothing is left running.
      {:ok, held} = :gen_tcp.listen(0, ip: {0, 0, 0, 0})
      on_exit(fn -> :gen_tcp.close(held) end)
      {:ok, epmd_port} = :inet.port(held)

      peer =
        start_peer!(
          "daemon@dyn.test",
          dns,
          %{"ERL_DIST_PORT" => "#{Ports.free()}", "ERL_EPMD_PORT" => "#{epmd_port}"},
          start_epmd_false: false
        )

      assert Peer.call(peer, :init, :get_argument, [:start_epmd]) == :error
      assert [warning] = warnings_after_two_polls(peer)
      assert warning =~ "this VM was started without -start_epmd false"
      IO.puts("\n[misconfig] epmd daemon: #{warning}")
    end
  end

  describe "service: :ignore and service: nil" do
    for value <- [:ignore, nil] do
      test "#{inspect(value)} disables the topology with one info line" do
        [spec] = specs(["n1"])
        dns = start_dns!(records([spec]))
        [peer] = boot!([spec], dns)
        capture_logs!([peer])

        assert :ignore = Peer.call(peer, NodeAgent, :start_cluster, [[service: unquote(value)]])

        line =
          "DynamicSrv.Cluster topology :dynamic_srv: service is #{inspect(unquote(value))}, " <>
            "so this topology is disabled (nothing is polled or connected)"

        assert logs(peer) == [{:info, line}]
        IO.puts("\n[misconfig] service: #{inspect(unquote(value))}: #{line}")
      end
    end
  end

  defp start_peer!(name, dns, env, opts) do
    env = Map.merge(%{"DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns)}, env)
    peer = Peer.start!(name, env, opts)
    on_exit(fn -> Peer.stop(peer) end)
    capture_logs!([peer])
    peer
  end

  defp warnings_after_two_polls(peer) do
    start_clusters!([peer], counting())
    await_polls([peer], 2)
    warnings(peer)
  end

  defp warnings(peer), do: for({:warning, text} <- logs(peer), do: text)
end
