defmodule DynamicSrv.Integration.ConsulTest do
  # The Consul + Nomad recipe (examples/nomad, as the README gives it) at a size where
  # Consul's DNS server trims answers: 24 real nodes, each on its own loopback address
  # (127.0.0.k, as Nomad allocations on 24 hosts would be), registered as Nomad registers
  # them (service address = the allocation's IP, so SRV targets are <hex-ip>.addr.dc1.consul
  # with A and node-meta TXT records in the additional section), served by ConsulDns, which
  # answers by Consul's own rules: shuffled per query, UDP answers silently trimmed to
  # hickory's 1232-byte EDNS size (19 of 24 instances), TC only with enable_truncate.
  #
  # Every phase runs 60+ polls and asserts the mesh stayed whole throughout: every node saw
  # the other 23 at every sample, no node ever saw a nodedown, no poll decided anyone left.
  use ExUnit.Case, async: false
  @moduletag :integration
  @moduletag timeout: 600_000

  import DynamicSrv.Test.Recipes

  alias DynamicSrv.Test.{ConsulDns, Fleet, Mesh, NodeAgent, Peer, Ports}

  @instances 24
  @poll 300
  @polls 60

  # One boot of 24 nodes for all phases: a Peer answers only the process that owns its port.
  setup do
    config = strategy_config("nomad")
    service = config[:service]
    assert service == "my-app.service.consul"
    consul = ConsulDns.start!(dc: "dc1")
    on_exit(fn -> ConsulDns.stop(consul) end)

    instances =
      for k <- 1..@instances do
        %{id: "alloc-#{k}", node: "client-#{k}", ip: "127.0.0.#{100 + k}", port: Ports.free()}
      end

    for i <- instances, do: register(consul, i)

    nodes =
      for i <- instances do
        {name, flags, env} = nomad_node(i.ip, i.port)

        assert name == "app-#{i.port}@#{i.ip}" and flags == []
        {name, i.ip, Map.put(env, "DYNAMIC_SRV_NAMESERVERS", ConsulDns.nameserver(consul))}
      end

    peers = boot!(nodes, [], max_concurrency: 6)
    for peer <- peers, do: :ok = Peer.call(peer, NodeAgent, :start_log_capture, [:info])

    %{consul: consul, config: config, instances: instances, peers: peers}
  end

  defp register(consul, i) do
    ConsulDns.register(consul, "my-app", i.id, %{
      node: i.node,
      address: ip_tuple(i.ip),
      port: i.port
    })
  end

  defp ip_tuple(ip) do
    {:ok, address} = :inet.parse_address(String.to_charlist(ip))
    address
  end

  # Starts the recipe's strategy (plus `extra`) on every node and waits for the full mesh.
  defp start_strategy!(peers, config, extra) do
    opts = Keyword.merge(config, [polling_interval: @poll] ++ extra ++ Fleet.counting())

    for peer <- peers, do: assert({:ok, _} = Peer.call(peer, NodeAgent, :start_cluster, [opts]))

    names = Enum.map(peers, & &1.name)

    for peer <- peers do
      assert Mesh.eventually(
               fn -> Fleet.node_list(peer) == Enum.sort(names -- [peer.name]) end,
               600
             ),
             "#{peer.name} sees #{length(Fleet.node_list(peer))} nodes"
    end

    :ok
  end

  defp stop_strategy!(peers) do
    for peer <- peers, do: :ok = Peer.call(peer, NodeAgent, :stop_cluster, [])
  end

  defp polls(peer), do: Peer.call(peer, NodeAgent, :list_nodes_calls, [])

  defp logs(peer), do: Enum.map(Peer.call(peer, NodeAgent, :captured_logs, []), &elem(&1, 1))

  defp nodedowns(peer), do: Peer.call(peer, NodeAgent, :nodedown_count, [])

  # Samples every node's view until each has applied `@polls` more polls; returns the number
  # of samples and how many of them saw a node short of the full mesh.
  defp hold_mesh(peers) do
    names = Enum.map(peers, & &1.name)
    start = Map.new(peers, &{&1.name, polls(&1)})
    hold_mesh(peers, names, start, 0, [])
  end

  defp hold_mesh(peers, names, start, samples, broken) do
    broken =
      for peer <- peers,
          seen = Fleet.node_list(peer),
          seen != Enum.sort(names -- [peer.name]),
          into: broken,
          do: {peer.name, length(seen)}

    if Enum.all?(peers, &(polls(&1) - start[&1.name] >= @polls)) do
      {samples + 1, broken}
    else
      Process.sleep(@poll)
      hold_mesh(peers, names, start, samples + 1, broken)
    end
  end

  defp srv_stats(consul, transport) do
    ConsulDns.stats(consul)
    |> Enum.filter(fn {{qtype, t}, _} -> qtype == :srv and t == transport end)
    |> Enum.reduce(%{queries: 0, trimmed: 0, tc: 0}, fn {_, s}, acc ->
      %{queries: acc.queries + s.queries, trimmed: acc.trimmed + s.trimmed, tc: acc.tc + s.tc}
    end)
  end

  defp run_phase(label, %{consul: consul, config: config, peers: peers}, extra) do
    udp_before = srv_stats(consul, :udp)
    tcp_before = srv_stats(consul, :tcp)
    downs_before = Map.new(peers, &{&1.name, nodedowns(&1)})
    logs_before = Map.new(peers, &{&1.name, length(logs(&1))})
    start_strategy!(peers, config, extra)
    {samples, broken} = hold_mesh(peers)
    stop_strategy!(peers)

    udp = Map.merge(udp_before, srv_stats(consul, :udp), fn _k, a, b -> b - a end)
    tcp = Map.merge(tcp_before, srv_stats(consul, :tcp), fn _k, a, b -> b - a end)
    downs = Enum.sum(for peer <- peers, do: nodedowns(peer) - downs_before[peer.name])

    IO.puts(
      "\n[consul] #{label}: #{@instances} nodes, #{@polls}+ polls each at #{@poll} ms: " <>
        "#{samples} mesh samples, #{length(broken)} short of the full mesh, #{downs} nodedowns; " <>
        "SRV over UDP #{udp.queries} (#{udp.trimmed} trimmed, #{udp.tc} with TC), " <>
        "over TCP #{tcp.queries} (#{tcp.trimmed} trimmed)"
    )

    assert broken == [], "the mesh broke: #{inspect(Enum.take(broken, 10))}"
    assert downs == 0

    logs = Map.new(peers, &{&1.name, Enum.drop(logs(&1), logs_before[&1.name])})

    for {name, lines} <- logs do
      refute Enum.any?(lines, &(&1 =~ "left my-app.service.consul")),
             "#{name} decided a node left"
    end

    %{udp: udp, tcp: tcp, logs: logs}
  end

  # The default (TCP) poll sees every instance: full mesh, no nodedowns, no trimmed answer.
  defp tcp_phase(context) do
    %{udp: udp, tcp: tcp} = run_phase("TCP (default)", context, [])
    assert tcp.queries >= @instances * @polls
    assert tcp.trimmed == 0
    assert udp.queries == 0
  end

  # Over UDP, Consul's silently trimmed answers never remove a member, and say so once.
  defp udp_phase(context) do
    # removal_delay: 0 leaves only the partial-answer rule between a trimmed answer and a
    # disconnect (at this poll rate the 10 s default alone would also hold the mesh).
    %{udp: udp, logs: logs} =
      run_phase("UDP, no TC", context, dns_transport: :udp, removal_delay: 0)

    # The server really did trim, without TC, on (nearly) every poll.
    assert udp.trimmed >= @instances * @polls
    assert udp.tc == 0

    for {name, lines} <- logs do
      warnings = Enum.filter(lines, &(&1 =~ "may be partial"))
      assert length(warnings) == 1, "#{name}: #{inspect(warnings)}"
      [warning] = warnings
      assert warning =~ ConsulDns.nameserver(context.consul)
      assert warning =~ "enable_truncate"
      assert warning =~ "without the TC bit"
    end
  end

  # Over UDP with enable_truncate, TC sends the poll to TCP and the answer is whole.
  defp enable_truncate_phase(context) do
    ConsulDns.set_option(context.consul, :enable_truncate, true)

    %{udp: udp, tcp: tcp, logs: logs} =
      run_phase("UDP + enable_truncate", context, dns_transport: :udp, removal_delay: 0)

    ConsulDns.set_option(context.consul, :enable_truncate, false)
    assert udp.tc >= @instances * @polls
    # Every trimmed answer was retried over TCP (a UDP query resent after a timeout under
    # load can add a TC answer without a TCP retry of its own), and no answer the poll used
    # looked partial: no warning.
    assert tcp.queries >= @instances * @polls and tcp.trimmed == 0

    for {name, lines} <- logs,
        do: refute(Enum.any?(lines, &(&1 =~ "may be partial")), "#{name}: #{inspect(lines)}")
  end

  # A deregistered instance is dropped by every node after the removal delay, and only it.
  defp deregistration_phase(%{consul: consul, config: config, instances: instances, peers: peers}) do
    start_strategy!(peers, config, [])
    downs_before = Map.new(peers, &{&1.name, nodedowns(&1)})
    [leaving | staying] = peers
    gone = Enum.find(instances, &(leaving.name == :"app-#{&1.port}@#{&1.ip}"))
    :ok = ConsulDns.deregister(consul, "my-app", gone.id)

    # The documented bound: removal_delay (10 s) plus two polls; waited for with room.
    for peer <- staying do
      assert Mesh.eventually(
               fn -> leaving.name not in Peer.call(peer, NodeAgent, :cluster_members, []) end,
               300,
               100
             ),
             "#{peer.name} still lists #{leaving.name}"
    end

    # The leaver stopped dialing (it saw itself leave); nobody else lost a link.
    names = Enum.map(staying, & &1.name)

    for peer <- staying do
      assert Mesh.eventually(fn -> Fleet.node_list(peer) == Enum.sort(names -- [peer.name]) end)
      events = Peer.call(peer, NodeAgent, :node_events, [])
      lost = for {:nodedown, node} <- events, node != leaving.name, do: node
      assert lost == [], "#{peer.name} lost #{inspect(lost)}"
      assert nodedowns(peer) - downs_before[peer.name] <= 1
    end

    stop_strategy!(peers)
  end

  test "the Consul recipe at 24 instances holds the full mesh over TCP, UDP and UDP+TC, and drops a deregistered node",
       context do
    tcp_phase(context)
    udp_phase(context)
    enable_truncate_phase(context)
    diagnosis_phase(context)
    deregistration_phase(context)
  end

  # DynamicSrv.diagnose() (and so `mix dynamic_srv.doctor`) on a node names the trimming: a
  # note for a service polled over TCP (the default, and what `--service` assumes), a problem
  # for one polled over UDP.
  defp diagnosis_phase(%{peers: [peer | _], consul: consul, config: config}) do
    trimmed = fn text -> text =~ "trims UDP answers" end
    asked = Peer.call(peer, DynamicSrv.Diagnosis, :run, [[services: ["my-app.service.consul"]]])
    refute Enum.any?(asked.problems, &trimmed.(&1.what)), inspect(asked.problems)
    text = Enum.join(DynamicSrv.Diagnosis.format(asked), "\n")
    assert text =~ "note: SRV my-app.service.consul: #{ConsulDns.nameserver(consul)} trims UDP"
    assert text =~ "without setting the TC bit: 19 records over UDP, 24 over TCP"
    assert text =~ "enable_truncate = true"

    opts = Keyword.merge(config, dns_transport: :udp, polling_interval: 60_000)
    assert {:ok, _} = Peer.call(peer, NodeAgent, :start_cluster, [opts])
    polled = Peer.call(peer, DynamicSrv.Diagnosis, :run, [[]])
    :ok = Peer.call(peer, NodeAgent, :stop_cluster, [])
    assert [%{what: what, fix: fix}] = Enum.filter(polled.problems, &trimmed.(&1.what))
    assert what =~ "without setting the TC bit: 19 records over UDP, 24 over TCP"
    assert fix =~ "enable_truncate = true"
  end
end
