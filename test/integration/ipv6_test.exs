defmodule DynamicSrv.Integration.Ipv6Test do
  # IPv6 distribution (`-proto_dist inet6_tcp`, and `inet6_tls`): DNS served by a dnsmasq on
  # ::1, SRV targets with AAAA records only, every node on ::1 on its own port, no epmd.
  use ExUnit.Case, async: false
  @moduletag :integration

  alias DynamicSrv.Test.{Certs, DnsServer, Fleet, Mesh, Peer}

  @service "svc6.dyn.test"
  @loopback6 {0, 0, 0, 0, 0, 0, 0, 1}

  # --- helpers ---------------------------------------------------------------------------

  # Every node on ::1 with only an AAAA record: an IPv4 lookup of these names finds nothing.
  defp specs(names), do: Fleet.specs(names, %{ip: "::1", service: @service})

  defp start_dns!(specs), do: Fleet.start_dns!(Fleet.records(specs), listen_address: "::1")

  defp boot!(specs, dns, erl_args), do: Fleet.boot!(specs, dns, %{}, erl_args: erl_args)

  # What net_kernel recorded for each of `peer`'s connections: `{family, protocol, ip}`.
  defp connection_addresses(peer) do
    {:ok, infos} = Peer.call(peer, :net_kernel, :nodes_info, [])

    for {node, info} <- infos, info[:state] == :up, into: %{} do
      {:net_address, {ip, _port}, _host, protocol, family} = Keyword.fetch!(info, :address)
      {node, {family, protocol, ip}}
    end
  end

  # Over TCP the distribution controller is the socket itself: ask it for both ends.
  defp socket_ends(peer) do
    for {node, socket} <- Peer.call(peer, :erlang, :system_info, [:dist_ctrl]), into: %{} do
      {:ok, {local, _}} = Peer.call(peer, :inet, :sockname, [socket])
      {:ok, {remote, _}} = Peer.call(peer, :inet, :peername, [socket])
      {node, {local, remote}}
    end
  end

  # The peer address is the IPv6 one the TLS or TCP socket reports. (OTP 25's inet_tls_dist
  # labels every TLS connection's family `inet`, OTP 27+ `inet6`: over TLS the label proves
  # nothing, the address does.)
  defp assert_ipv6_connections(peers, protocol) do
    families = if protocol == :tls, do: [:inet, :inet6], else: [:inet6]

    for peer <- peers do
      addresses = connection_addresses(peer)
      assert map_size(addresses) == length(peers) - 1

      for {node, {family, _, _} = address} <- addresses do
        assert family in families and address == {family, protocol, @loopback6},
               "#{peer.name} -> #{node}: #{inspect(address)}"
      end

      Mesh.assert_no_epmd(peer)
    end
  end

  defp assert_no_address_queries(dns) do
    queries = DnsServer.queries(dns)
    assert Enum.any?(queries, &String.starts_with?(&1, "query[SRV]"))
    # Every address came from the SRV answers' additional AAAA records.
    assert Enum.filter(queries, &String.starts_with?(&1, ["query[A]", "query[AAAA]"])) == []
  end

  # --- scenarios -------------------------------------------------------------------------

  test "inet6_tcp nodes on ::1 form a full mesh from SRV records with AAAA targets, no epmd" do
    specs = specs(["n1", "n2", "n3"])
    dns = start_dns!(specs)
    peers = boot!(specs, dns, fn _ -> ["-proto_dist", "inet6_tcp"] end)

    {micros, _} = :timer.tc(fn -> Mesh.connect_and_assert_full_mesh(peers) end)
    IO.puts("\n[ipv6] 3 inet6_tcp nodes: full mesh by Node.connect in #{div(micros, 1000)} ms")

    assert_ipv6_connections(peers, :tcp)

    for peer <- peers,
        {_node, ends} <- socket_ends(peer),
        do: assert(ends == {@loopback6, @loopback6})

    # Each peer's address and port as the epmd module gives them to inet6_tcp_dist.
    [p1 | _] = peers

    for spec <- tl(specs) do
      assert Peer.call(p1, DynamicSrv.Epmd, :address_please, [
               String.to_charlist(spec.name),
               String.to_charlist(@service),
               :inet6
             ]) == {:ok, @loopback6, spec.port, 6}
    end

    assert_no_address_queries(dns)
    assert DnsServer.nameserver(dns) =~ ~r/^\[::1\]:\d+$/
  end

  test "the strategy forms the inet6_tcp mesh; inet_dist_use_interface binds the listener to ::1" do
    specs = specs(["n1", "n2", "n3", "n4"])
    dns = start_dns!(specs)

    peers =
      boot!(specs, dns, fn _ ->
        ["-proto_dist", "inet6_tcp", "-kernel", "inet_dist_use_interface", "{0,0,0,0,0,0,0,1}"]
      end)

    for peer <- peers, do: assert(Fleet.node_list(peer) == [])

    {micros, _} =
      :timer.tc(fn ->
        Fleet.start_clusters!(peers, service: @service, ip_family: :inet6)
        Fleet.assert_full_mesh(peers)
      end)

    IO.puts(
      "\n[ipv6] strategy: 4 inet6_tcp nodes in full mesh #{div(micros, 1000)} ms after start"
    )

    assert_ipv6_connections(peers, :tcp)

    for {peer, spec} <- Enum.zip(peers, specs) do
      # The listening socket is bound to ::1 only, on the node's own port.
      listeners =
        for port <- Peer.call(peer, :erlang, :ports, []),
            Peer.call(peer, :erlang, :port_info, [port, :name]) == {:name, ~c"tcp_inet"},
            {:ok, {ip, listen_port}} <- [Peer.call(peer, :inet, :sockname, [port])],
            listen_port == spec.port,
            do: ip

      assert @loopback6 in listeners, inspect(listeners)
      refute {0, 0, 0, 0, 0, 0, 0, 0} in listeners
    end

    assert_no_address_queries(dns)
  end

  test "inet6_tls nodes with mutual verification form a full mesh over IPv6" do
    dir = Path.join(System.tmp_dir!(), "dynamic_srv_tls6_#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf(dir) end)
    ca = Certs.ca!(dir, "cluster-ca")
    specs = specs(["n1", "n2", "n3"])
    dns = start_dns!(specs)

    peers =
      boot!(specs, dns, fn spec ->
        identity = Certs.issue!(ca, dir, spec.name, [@service])
        optfile = Certs.dist_optfile!(identity, Path.join(dir, "#{spec.name}.ssl_dist.conf"))
        ["-proto_dist", "inet6_tls", "-ssl_dist_optfile", optfile]
      end)

    {micros, _} = :timer.tc(fn -> Mesh.connect_and_assert_full_mesh(peers) end)
    IO.puts("\n[ipv6] 3 inet6_tls nodes: full mesh by Node.connect in #{div(micros, 1000)} ms")

    assert_ipv6_connections(peers, :tls)

    for peer <- peers,
        {_node, controller} <- Peer.call(peer, :erlang, :system_info, [:dist_ctrl]),
        do: assert(is_pid(controller))

    assert_no_address_queries(dns)
  end
end
