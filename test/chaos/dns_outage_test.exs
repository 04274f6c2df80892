defmodule DynamicSrv.Chaos.DnsOutageTest do
  # Fault 2: the DNS server is down (its process stopped, so queries are refused) for a
  # while. Nobody may be disconnected by it, and a connection dropped for another reason
  # during the outage must come back from the stale cache.
  use ExUnit.Case, async: false
  @moduletag :integration
  @moduletag :chaos
  @moduletag timeout: 600_000

  import DynamicSrv.Test.Fleet
  alias DynamicSrv.Test.{Chaos, DnsServer, Mesh, NodeAgent, Peer}

  @poll 500

  setup do
    specs = specs(for i <- 1..5, do: "n#{i}")
    dns = start_dns!(records(specs))
    # Cached answers expire after 1 s, so during the outage every lookup is a stale one.
    peers = boot!(specs, dns, %{"DYNAMIC_SRV_MIN_TTL_MS" => "1000"})
    start_counted_mesh!(peers, polling_interval: @poll)
    %{specs: specs, dns: dns, peers: peers}
  end

  test "DNS down for 5 polls: no disconnects; a pair cut meanwhile reconnects from the stale cache",
       ctx do
    outage(ctx, {:polls, 5}, "2 DNS outage (5 polls)")
  end

  @tag :slow
  test "DNS down for 60 s: no disconnects; a pair cut meanwhile reconnects from the stale cache",
       ctx do
    outage(ctx, {:ms, 60_000}, "2 DNS outage (60 s)")
  end

  defp outage(%{specs: specs, dns: dns, peers: peers}, length, fault) do
    mark = Chaos.mark(peers)
    names = Enum.sort(Enum.map(peers, & &1.name))

    started_at = Chaos.now()
    stop_dns(dns)
    polls_at_start = Map.new(peers, &{&1.name, polls(&1)})
    # Every node has noticed: at least one poll failed against the dead server.
    await_polls(peers, 1)

    # Cut one pair during the outage, as a flaky link would. Their strategies dial again,
    # and the epmd module answers from the expired (stale) cache entries since DNS cannot.
    [p1, p2 | _] = peers

    assert Peer.call(p1, DynamicSrv.Epmd, :address_please, [~c"n2", ~c"svc.dyn.test", :inet]) ==
             {:ok, {127, 0, 0, 1}, Enum.at(specs, 1).port, 6}

    dials_before = connects(p1, p2.name) + connects(p2, p1.name)
    cut_polls = Map.new([p1, p2], &{&1.name, polls(&1)})
    cut_at = Chaos.now()
    assert Peer.call(p1, :erlang, :disconnect_node, [p2.name]) == true
    rejoined_at = Chaos.await_full_mesh(peers)
    rejoin_polls = Enum.max(for p <- [p1, p2], do: polls(p) - cut_polls[p.name])
    # The strategies made the new connection (nothing else dials in these tests).
    assert connects(p1, p2.name) + connects(p2, p1.name) > dials_before

    wait_out(peers, length, started_at, polls_at_start)
    outage_polls = Enum.min(for p <- peers, do: polls(p) - polls_at_start[p.name])
    ended_at = Chaos.now()

    for peer <- peers do
      assert Enum.sort(members(peer)) == names, "#{peer.name} lost members during the outage"
      assert Peer.call(peer, NodeAgent, :cluster_exits, []) == []
    end

    dns = start_dns!(records(specs), port: dns.port)
    # Nothing to heal: the mesh is whole when DNS comes back.
    assert full_mesh?(peers)

    # Polls reach the server again, and nothing changes.
    assert Mesh.eventually(
             fn ->
               Enum.count(DnsServer.queries(dns), &(&1 =~ "query[SRV] svc.dyn.test")) >= 5
             end,
             600
           )

    await_polls(peers, 2)
    assert full_mesh?(peers)
    for peer <- peers, do: assert(Enum.sort(members(peer)) == names)

    # The one connection lost is the one cut on purpose.
    downs = Chaos.nodedowns_since(peers, mark)

    for peer <- peers do
      expected =
        cond do
          peer == p1 -> [p2.name]
          peer == p2 -> [p1.name]
          true -> []
        end

      assert downs[peer.name] == expected, "#{peer.name} saw nodedowns #{inspect(downs)}"
    end

    Chaos.report(fault, [
      {"outage_ms", ended_at - started_at},
      {"failed_polls_per_node_min", outage_polls},
      {"connections_lost", Chaos.connections_lost(downs)},
      {"lost_to_outage", Chaos.connections_lost(downs) - 1},
      {"cut_pair_rejoin_ms", rejoined_at - cut_at},
      {"cut_pair_rejoin_polls", rejoin_polls}
    ])
  end

  defp wait_out(peers, {:polls, n}, _started_at, polls_at_start) do
    for peer <- peers do
      assert Mesh.eventually(fn -> polls(peer) - polls_at_start[peer.name] >= n end, 600)
    end
  end

  defp wait_out(_peers, {:ms, ms}, started_at, _polls_at_start) do
    Process.sleep(max(0, started_at + ms - Chaos.now()))
  end
end
