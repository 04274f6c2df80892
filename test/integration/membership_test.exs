defmodule DynamicSrv.Integration.MembershipTest do
  # Real nodes, each running DynamicSrv.Cluster, behind a real dnsmasq (see
  # DynamicSrv.Test.Fleet: only the strategies form the mesh).
  use ExUnit.Case, async: false
  @moduletag :integration

  import DynamicSrv.Test.Fleet
  alias DynamicSrv.Test.{DnsServer, Mesh, NodeAgent, Peer, ScriptedDns}

  @service "svc.dyn.test"
  @poll 300

  # --- helpers (the shared ones are DynamicSrv.Test.Fleet's) ------------------------------

  # The service's SRV answer, asked over TCP from this VM and read raw: its size, record
  # counts and whether :inet_dns can decode it.
  defp srv_answer(dns) do
    query =
      :inet_dns.encode(
        :inet_dns.make_msg(
          header: :inet_dns.make_header(id: 7, rd: true),
          qdlist: [:inet_dns.make_dns_query(domain: ~c"svc.dyn.test", type: :srv, class: :in)]
        )
      )

    {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, dns.port, [:binary, active: false], 5_000)
    :ok = :gen_tcp.send(socket, <<byte_size(query)::16, query::binary>>)
    {:ok, <<size::16>>} = :gen_tcp.recv(socket, 2, 5_000)
    {:ok, body} = :gen_tcp.recv(socket, size, 5_000)
    :gen_tcp.close(socket)
    <<_id::16, _flags::16, _qd::16, answers::16, _ns::16, additional::16, _::binary>> = body

    %{
      bytes: size,
      answers: answers,
      additional: additional,
      decodes: match?({:ok, _}, :inet_dns.decode(body))
    }
  end

  # --- scenarios -------------------------------------------------------------------------

  test "convergence: 5 nodes form a full mesh from the service's SRV answers alone" do
    specs = specs(for i <- 1..5, do: "n#{i}")
    dns = start_dns!(records(specs))
    peers = boot!(specs, dns)

    # Nothing connects the nodes before their strategies run.
    for peer <- peers, do: assert(node_list(peer) == [])

    start_clusters!(peers, [])
    assert_full_mesh(peers)

    queries = DnsServer.queries(dns)
    service_srv = Enum.count(queries, &(&1 =~ ~r/^query\[SRV\] #{@service} /))

    per_node_srv =
      Enum.filter(queries, &(&1 =~ ~r/^query\[SRV\] n\d+\.#{Regex.escape(@service)} /))

    a = Enum.count(queries, &String.starts_with?(&1, "query[A]"))
    aaaa = Enum.count(queries, &String.starts_with?(&1, "query[AAAA]"))

    IO.puts(
      "\n[membership] full 5-node mesh formed after #{length(queries)} DNS queries in all: " <>
        "SRV #{@service}: #{service_srv}, SRV nK.#{@service}: #{length(per_node_srv)}, " <>
        "A: #{a}, AAAA: #{aaaa} (polling every #{@poll} ms; a lookup per connection " <>
        "would take 2 queries x 20 connections = 40)"
    )

    # Every node polled the service at least once; nothing else was asked: the addresses
    # came from the answers' additional section and the cache the poll filled.
    assert service_srv >= 5
    assert per_node_srv == [], "address_please missed the cache: #{inspect(per_node_srv)}"
    assert a == 0 and aaaa == 0

    for peer <- peers do
      assert Enum.sort(members(peer)) == Enum.sort(Enum.map(peers, & &1.name))
    end
  end

  describe "deregistration" do
    setup do
      specs = specs(for i <- 1..5, do: "n#{i}")
      dns = start_dns!(records(specs))
      peers = boot!(specs, dns)
      {gone, kept} = List.pop_at(peers, 4)
      %{specs: specs, dns: dns, peers: peers, gone: gone, kept: kept}
    end

    defp deregister_last!(specs, dns),
      do: restart_dns!(dns, records(Enum.take(specs, 4)))

    defp nodedowns(peer, node),
      do: Enum.count(Peer.call(peer, NodeAgent, :node_events, []), &(&1 == {:nodedown, node}))

    # After `gone` left every kept node's membership, none of them tries to connect to it
    # again: their connect attempts for it stay the same over several polls.
    defp assert_no_more_attempts(kept, gone) do
      for peer <- kept do
        assert Mesh.eventually(fn -> gone.name not in members(peer) end, 300),
               "#{peer.name} still lists #{gone.name}: #{inspect(members(peer))}"
      end

      await_polls(kept, 1)
      before = Map.new(kept, &{&1.name, connects(&1, gone.name)})
      await_polls(kept, 4)

      for peer <- kept do
        assert connects(peer, gone.name) == before[peer.name],
               "#{peer.name} kept trying to connect to #{gone.name}"
      end
    end

    test "removed from DNS while running, its own strategy stopped: the others disconnect it for good",
         %{specs: specs, dns: dns, peers: peers, gone: gone, kept: kept} do
      start_clusters!(peers, counting())
      assert_full_mesh(peers)

      # A draining node: its strategy stops and its records go, but the VM keeps running.
      :ok = Peer.call(gone, NodeAgent, :stop_cluster, [])
      deregister_last!(specs, dns)

      assert_no_more_attempts(kept, gone)

      for peer <- kept do
        assert nodedowns(peer, gone.name) == 1
        refute gone.name in node_list(peer)
      end

      assert Peer.call(gone, Node, :list, []) == []
      # The rest of the mesh is untouched.
      assert_full_mesh(kept)
      for peer <- kept, other <- kept -- [peer], do: assert(nodedowns(peer, other.name) == 0)
    end

    test "removed from DNS while running with its strategy: the others disconnect it, never dial it again, and it stays out",
         %{specs: specs, dns: dns, peers: peers, gone: gone, kept: kept} do
      start_clusters!(peers, counting())
      assert_full_mesh(peers)

      deregister_last!(specs, dns)
      assert_no_more_attempts(kept, gone)

      # Its own strategy saw it leave DNS and stopped dialing, so the disconnect sticks.
      for peer <- kept do
        assert nodedowns(peer, gone.name) >= 1
        refute gone.name in node_list(peer)
      end

      assert_connected(kept)
    end

    test "with disconnect_on_deregister: false a node removed from DNS stays connected",
         %{specs: specs, dns: dns, peers: peers, gone: gone, kept: kept} do
      start_clusters!(peers, [disconnect_on_deregister: false] ++ counting())
      assert_full_mesh(peers)

      deregister_last!(specs, dns)
      assert_no_more_attempts(kept, gone)

      # Never disconnected, by anyone: no nodedown anywhere.
      for peer <- peers, do: assert(Peer.call(peer, NodeAgent, :nodedown_count, []) == 0)
      assert_full_mesh(peers)
    end

    test "removed from DNS and stopped: the others drop it and stop trying",
         %{specs: specs, dns: dns, peers: peers, gone: gone, kept: kept} do
      start_clusters!(peers, counting())
      assert_full_mesh(peers)

      Peer.stop(gone)
      deregister_last!(specs, dns)

      assert_no_more_attempts(kept, gone)

      for peer <- kept do
        assert nodedowns(peer, gone.name) == 1
        refute gone.name in node_list(peer)
      end

      assert_full_mesh(kept)
    end
  end

  # OTP's defaults (connect_all, prevent_overlapping_partitions): a node the others drop
  # one by one reports each loss, and global on the rest then drops the reporter too. The
  # delisted node leaves by itself through :global.disconnect/0 instead (Departure).
  test "under global's defaults a node delisted while running leaves, and no other link drops" do
    specs = specs(for i <- 1..6, do: "n#{i}")
    dns = start_dns!(records(specs))
    peers = boot!(specs, dns, %{}, global: :otp_defaults)
    {gone, kept} = List.pop_at(peers, 5)

    for peer <- peers do
      for setting <- [:connect_all, :prevent_overlapping_partitions],
          do: refute(Peer.call(peer, :application, :get_env, [:kernel, setting]) == {:ok, false})

      :ok = Peer.call(peer, :logger, :set_primary_config, [:level, :info])
      :ok = Peer.call(peer, NodeAgent, :start_log_capture, [:info])
    end

    # The removal delay spreads the nodes' decisions over several polls, as in production.
    start_clusters!(peers, [removal_delay: 1_500] ++ counting())
    assert_full_mesh(peers)
    downs_before = Map.new(kept, &{&1.name, nodedowns(&1)})

    restart_dns!(dns, records(Enum.take(specs, 5)))

    for peer <- kept do
      assert Mesh.eventually(fn -> gone.name not in node_list(peer) end, 300),
             "#{peer.name} is still connected to #{gone.name}"
    end

    # Past every node's removal and grace (3 polls), nothing comes back and nothing else fell.
    await_polls(kept, 8)
    assert Peer.call(gone, Node, :list, []) == []

    for peer <- kept do
      refute gone.name in node_list(peer)
      downs = nodedowns(peer) - downs_before[peer.name]

      assert downs == 1,
             "#{peer.name} saw #{downs} nodedowns (only #{gone.name}'s expected): " <>
               inspect(Peer.call(peer, NodeAgent, :node_events, []))
    end

    assert_full_mesh(kept)

    logs = Peer.call(gone, NodeAgent, :captured_logs, [])
    assert Enum.any?(logs, fn {_, text} -> text =~ "this node left #{@service} in DNS" end)

    assert Enum.any?(logs, fn {_, text} ->
             text =~
               "this node leaves the cluster: disconnecting from its 5 nodes through " <>
                 ":global.disconnect/0" and text =~ "found it gone too"
           end),
           inspect(logs)
  end

  test "a node killed and booted again on a new port is back in every node's Node.list" do
    specs = specs(for i <- 1..5, do: "n#{i}")
    dns = start_dns!(records(specs))
    peers = boot!(specs, dns)
    start_clusters!(peers, [])
    assert_full_mesh(peers)

    victim = Enum.at(peers, 2)
    old_spec = Enum.at(specs, 2)
    old_creation = Peer.call(victim, :erlang, :system_info, [:creation])

    Peer.kill(victim)
    others = List.delete(peers, victim)

    for peer <- others do
      assert Mesh.eventually(fn -> victim.name not in node_list(peer) end, 300)
    end

    new_port = fresh_port(Enum.map(specs, & &1.port))
    new_spec = %{old_spec | port: new_port}
    specs = List.replace_at(specs, 2, new_spec)
    dns = restart_dns!(dns, records(specs))

    [reborn] = boot!([new_spec], dns)
    start_clusters!([reborn], [])
    peers = List.replace_at(peers, 2, reborn)
    assert_full_mesh(peers)

    assert Peer.call(reborn, DynamicSrv.Epmd, :names, [~c"svc.dyn.test"]) ==
             {:ok, [{~c"n3", new_port}]}

    # Every other node's strategy learned the new port from its polls.
    for peer <- others do
      assert Mesh.eventually(fn ->
               Peer.call(peer, DynamicSrv.Epmd, :address_please, [~c"n3", ~c"svc.dyn.test", :inet]) ==
                 {:ok, {127, 0, 0, 1}, new_port, 6}
             end)
    end

    new_creation = Peer.call(reborn, :erlang, :system_info, [:creation])
    assert new_creation != old_creation

    # Everyone reaches the new incarnation: a call to it from every node answers with the
    # new creation, so no stale connection or cached port to the old one is in use.
    for peer <- others do
      assert Peer.call(peer, :erpc, :call, [reborn.name, :erlang, :system_info, [:creation]]) ==
               new_creation
    end
  end

  test "a DNS outage disconnects nobody; the mesh heals from the stale cache and grows after it" do
    specs = specs(for i <- 1..6, do: "n#{i}")
    {new_spec, specs} = List.pop_at(specs, 5)
    dns = start_dns!(records(specs))
    # Cached answers expire after 1 s, so during the outage every lookup is a stale one.
    peers = boot!(specs, dns, %{"DYNAMIC_SRV_MIN_TTL_MS" => "1000"})
    start_clusters!(peers, counting())
    assert_full_mesh(peers)

    stop_dns(dns)
    await_polls(peers, 10)

    for peer <- peers do
      assert Peer.call(peer, NodeAgent, :nodedown_count, []) == 0
      assert Enum.sort(members(peer)) == Enum.sort(Enum.map(peers, & &1.name))
    end

    assert_full_mesh(peers)

    # Still in the outage: cut one pair. Their strategies dial again, and the epmd module
    # answers from the expired (stale) cache entries since DNS cannot.
    [p1, p2 | _] = peers
    p2_spec = Enum.at(specs, 1)

    assert Peer.call(p1, DynamicSrv.Epmd, :address_please, [~c"n2", ~c"svc.dyn.test", :inet]) ==
             {:ok, {127, 0, 0, 1}, p2_spec.port, 6}

    dials = fn -> connects(p1, p2.name) + connects(p2, p1.name) end
    dials_before = dials.()
    assert Peer.call(p1, Node, :disconnect, [p2.name]) == true
    await_polls(peers, 2)
    assert_full_mesh(peers)
    # The strategies made the new connection (nothing else dials in these tests).
    assert dials.() > dials_before

    nodedowns = Map.new(peers, &{&1.name, Peer.call(&1, NodeAgent, :node_events, [])})
    assert Enum.count(nodedowns[p1.name], &(&1 == {:nodedown, p2.name})) == 1
    assert Enum.count(nodedowns[p2.name], &(&1 == {:nodedown, p1.name})) == 1

    for {name, events} <- nodedowns, name not in [p1.name, p2.name] do
      assert Enum.count(events, &match?({:nodedown, _}, &1)) == 0, "#{name}: #{inspect(events)}"
    end

    # DNS is back, on the same port, now also listing a sixth node.
    dns = start_dns!(records(specs ++ [new_spec]), port: dns.port)

    [n6] = boot!([new_spec], dns)
    start_clusters!([n6], counting())
    all = peers ++ [n6]
    assert_full_mesh(all)

    for peer <- all do
      assert Mesh.eventually(fn -> length(members(peer)) == 6 end)
    end

    # Nobody was disconnected but the pair we cut.
    for peer <- peers do
      downs =
        Enum.count(Peer.call(peer, NodeAgent, :node_events, []), &match?({:nodedown, _}, &1))

      assert downs == if(peer in [p1, p2], do: 1, else: 0)
    end
  end

  test "a service listing 305 targets (a TCP-sized answer): members lists them all, the real mesh forms" do
    specs = specs(for i <- 1..5, do: "n#{i}")
    # 300 more targets with A records, on a port where nothing listens.
    fakes =
      Enum.flat_map(1..300, fn i ->
        t = "f#{i}.#{@service}"
        [{:srv, @service, t, Peer.dead_port()}, {:a, t, "127.0.0.1"}]
      end)

    dns = start_dns!(fakes ++ records(specs))
    answer = srv_answer(dns)
    assert answer.answers == 305 and answer.additional == 305
    # Too big for UDP (the nodes' EDNS buffer is 1232 bytes), so only TCP carries it. And
    # under 16 KB: dnsmasq 2.90 compresses a name to an earlier copy past offset 16383 with a
    # pointer cut to 14 bits (a malformed answer), and it rotates the order of SRV records
    # between queries, so any larger answer with additional records breaks now and then.
    assert answer.decodes
    assert answer.bytes > 4096 and answer.bytes < 16_384

    peers = boot!(specs, dns)
    start_clusters!(peers, max_nodes: 400)
    assert_full_mesh(peers)

    for peer <- peers do
      assert Mesh.eventually(fn -> length(members(peer)) == 305 end)
      members = members(peer)
      assert Enum.all?(peers, &(&1.name in members))
    end

    # Still exactly the real mesh: the fake targets never connect, and nothing crashed.
    assert_full_mesh(peers)

    for peer <- peers do
      assert Peer.call(peer, NodeAgent, :cluster_exits, []) == []
      assert Peer.call(peer, NodeAgent, :nodedown_count, []) == 0
    end
  end

  test "a hostile answer of thousands of names cannot exhaust atoms, crash the node, or cut the mesh" do
    specs = specs(for i <- 1..5, do: "n#{i}")
    # The nodes ask a scripted server that relays to dnsmasq (restarted below on the same
    # port), so that at the end it can serve what dnsmasq 2.93 refuses to load.
    {dns, scripted} = start_scripted_dns!(specs)
    peers = boot!(specs, scripted)
    max_node_atoms = 100
    start_clusters!(peers, [max_nodes: 50, max_node_atoms: max_node_atoms] ++ counting())
    assert_full_mesh(peers)
    pids = Map.new(peers, &{&1.name, Peer.call(&1, NodeAgent, :cluster_pid, [])})

    # Targets dnsmasq serves but that are no host name (dnsmasq refuses labels over 63
    # characters at startup, so those cannot be served), and one outside the service.
    invalid =
      for(t <- ["-lead", "trail-", "a+b", "a=b"], do: "#{t}.#{@service}") ++ ["outside.example"]

    # 1000 SRV records and no additional records at all, so the ~40 KB answer is well formed
    # (see the 16 KB note above): the real nodes keep their SRV records, their addresses
    # come from --address, which dnsmasq does not add to SRV answers.
    hostile = fn round ->
      fakes =
        for i <- 1..1000, do: {:srv, @service, "h#{round}-#{i}.#{@service}", Peer.dead_port()}

      invalid = for t <- invalid, do: {:srv, @service, t, Peer.dead_port()}
      real = Enum.reject(records(specs), &match?({:a, _, _}, &1))
      addresses = for spec <- specs, do: "--address=/#{target(spec)}/127.0.0.1"
      {fakes ++ invalid ++ real, addresses}
    end

    _dns =
      Enum.reduce(1..3, dns, fn round, dns ->
        {records, extra} = hostile.(round)
        dns = restart_dns!(dns, records, extra)
        answer = srv_answer(dns)
        assert answer.answers == 1005 + length(invalid) and answer.additional == 0
        assert answer.decodes and answer.bytes < 65_535

        # Each configuration is applied: members turn over to some of this round's names
        # (until the atom budget runs out, in round 3). A poll made while dnsmasq restarts
        # fails, and leaving takes two agreeing answers: wait for the turnover itself.
        await_polls(peers, 4)

        if round < 3 do
          prefix = "h#{round}-"

          assert Mesh.eventually(
                   fn ->
                     Enum.all?(peers, fn peer ->
                       Enum.count(members(peer), &String.starts_with?(Atom.to_string(&1), prefix)) >=
                         45
                     end)
                   end,
                   500
                 ),
                 "round #{round}: #{inspect(Enum.take(members(hd(peers)), 6))} " <>
                   inspect(Enum.take(logs(hd(peers)), -10))
        end

        for peer <- peers do
          members = members(peer)
          assert Enum.all?(peers, &(&1.name in members))
          assert length(members) <= 50
        end

        dns
      end)

    fake_names = for round <- 1..3, i <- 1..1000, do: "h#{round}-#{i}@#{@service}"
    invalid_names = for t <- invalid, do: String.replace(t, ".#{@service}", "@#{@service}")

    counts =
      for peer <- peers do
        existing = Peer.call(peer, NodeAgent, :existing_atoms, [fake_names])
        assert length(existing) <= max_node_atoms
        # The budget, not max_nodes alone, stopped the growth: three rounds of 45 new
        # members each would have made 135 atoms.
        assert length(existing) > 90
        assert Peer.call(peer, NodeAgent, :existing_atoms, [invalid_names]) == []
        length(existing)
      end

    IO.puts(
      "\n[membership] hostile answers: of 3000 names, #{inspect(counts, charlists: :as_lists)} became atoms on " <>
        "the 5 nodes (max_node_atoms: #{max_node_atoms})"
    )

    # A name over 253 characters (4 labels of 60, 259 bytes on the wire) makes the whole
    # answer undecodable: those polls fail and the membership stands, as for any malformed
    # answer. dnsmasq 2.93 refuses such a target at start-up ("bad SRV target"), so the
    # scripted server answers it, with the real nodes' records.
    label = String.duplicate("b", 60)
    too_long = [label, label, label, label | String.split(@service, ".")]
    too_long_srv = {:srv, @service, 0, 0, Peer.dead_port(), too_long}
    :ok = ScriptedDns.set_mode(scripted, {:answer, [too_long_srv | wire_records(specs)]})
    before = Map.new(peers, &{&1.name, Enum.sort(members(&1))})
    await_polls(peers, 3)
    assert ScriptedDns.count(scripted, :answer) >= 3

    for peer <- peers do
      assert Enum.sort(members(peer)) == before[peer.name]
      assert Peer.call(peer, NodeAgent, :existing_atoms, [["h4-1@#{@service}"]]) == []
      assert Peer.call(peer, NodeAgent, :cluster_pid, []) == pids[peer.name]
      assert Peer.call(peer, NodeAgent, :cluster_exits, []) == []
      assert Peer.call(peer, NodeAgent, :nodedown_count, []) == 0
    end

    assert_full_mesh(peers)
  end
end
