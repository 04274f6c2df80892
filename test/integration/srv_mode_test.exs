defmodule DynamicSrv.Integration.SrvModeTest do
  use ExUnit.Case, async: false
  @moduletag :integration

  alias DynamicSrv.Test.{DnsServer, Mesh, Peer, Ports}

  test "three nodes on their own dynamic ports form a full mesh through SRV records, without epmd" do
    nodes =
      for {name, ip} <- [{"n1", "127.0.0.1"}, {"n2", "127.0.0.2"}, {"n3", "127.0.0.3"}] do
        %{name: name, ip: ip, port: Ports.free()}
      end

    records =
      Enum.flat_map(nodes, fn n ->
        [
          {:srv, "#{n.name}.dyn.test", "#{n.name}-host.dyn.test", n.port},
          {:a, "#{n.name}-host.dyn.test", n.ip}
        ]
      end)

    dns = DnsServer.start!(records)
    on_exit(fn -> DnsServer.stop_and_clean(dns) end)

    peers =
      for n <- nodes do
        peer =
          Peer.start!("#{n.name}@dyn.test", %{
            "ERL_DIST_PORT" => Integer.to_string(n.port),
            "DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns)
          })

        on_exit(fn -> Peer.stop(peer) end)
        peer
      end

    Mesh.connect_and_assert_full_mesh(peers)

    for {peer, n} <- Enum.zip(peers, nodes) do
      facts = Mesh.assert_no_epmd(peer)
      # OTP picked a random 32-bit creation, not one of the 1..3 the classic modules reuse.
      assert facts.creation > 3

      assert Peer.call(peer, DynamicSrv.Epmd, :names, [~c"dyn.test"]) ==
               {:ok, [{String.to_charlist(n.name), n.port}]}
    end

    # Each peer was reached at the address of its SRV target, on its own port.
    [p1 | _] = peers

    for n <- tl(nodes) do
      assert {:ok, ip, port, 6} =
               Peer.call(p1, DynamicSrv.Epmd, :address_please, [
                 String.to_charlist(n.name),
                 ~c"dyn.test",
                 :inet
               ])

      assert :inet.ntoa(ip) == String.to_charlist(n.ip)
      assert port == n.port
    end

    srv_queries = Enum.filter(DnsServer.queries(dns), &String.starts_with?(&1, "query[SRV]"))
    assert srv_queries != []
    # The target addresses came from the SRV answer's additional section: no A queries.
    assert Enum.filter(DnsServer.queries(dns), &String.starts_with?(&1, "query[A]")) == []
  end
end
