defmodule DynamicSrv.Chaos.HostileTargetsTest do
  # Hostile SRV targets: a scripted DNS server puts on the wire what dnsmasq refuses to serve
  # (labels over 63 bytes, names over 255, spaces, `*`, dots and non-ASCII bytes inside a
  # label, any letter case), mixed with the real nodes' records, and floods the service
  # with thousands of new names. Five real nodes run DynamicSrv.Cluster behind it.
  use ExUnit.Case, async: false
  @moduletag :chaos
  @moduletag :integration
  @moduletag timeout: 600_000

  import DynamicSrv.Test.Fleet
  import DynamicSrv.Test.Chaos, only: [ms_since: 1]

  alias DynamicSrv.Test.{Mesh, NodeAgent, Peer, ScriptedDns}

  @domain ["svc", "dyn", "test"]

  # SRV targets (as raw labels) that must never become a node, each with an A record so a
  # server that wanted them dialed would have made it easy.
  @malformed [
    ["a*b" | @domain],
    ["*" | @domain],
    ["a b" | @domain],
    [<<0xC3, 0xA9>> | @domain],
    [<<0xFF, ?x>> | @domain],
    ["n1.evil" | @domain],
    ["x@y" | @domain],
    ["-lead" | @domain]
  ]

  # Well-formed names outside the service domain (ignored under :service_prefix).
  @outside [
    ["n9", "other", "test"],
    @domain,
    ["n1", "svc", "dyn", "test", "evil", "example"],
    ["n1svc", "dyn", "test"],
    ["n1", "svc", "dyn"]
  ]

  # Case variants of real nodes' targets.
  @case_variants [["N1", "SVC", "DYN", "TEST"], ["N2" | @domain], ["n3", "Svc", "DYN", "test"]]

  test "malformed, outside and upper-case targets mixed with real ones: real ones are members, nothing else becomes an atom, nothing crashes" do
    %{specs: specs, scripted: scripted, peers: peers, everyone: everyone} =
      boot_behind_scripted_dns!(for i <- 1..5, do: "n#{i}")

    pids = Map.new(peers, &{&1.name, Peer.call(&1, NodeAgent, :cluster_pid, [])})
    atoms_before = Map.new(peers, &{&1.name, atom_count(&1)})
    dead = DynamicSrv.Test.Peer.dead_port()

    hostile = fn targets ->
      Enum.flat_map(targets, fn labels ->
        [{:srv, service(), 0, 0, dead, labels}, {:a, labels, {127, 0, 0, 1}}]
      end)
    end

    # 1. Record-level garbage: the answer decodes, each bad record is dropped on its own.
    answer = wire_records(specs) ++ hostile.(@malformed ++ @outside ++ @case_variants)
    :ok = ScriptedDns.set_mode(scripted, {:answer, answer})
    await_polls(peers, 4)
    assert ScriptedDns.count(scripted, :answer) >= 20

    bad_names =
      for labels <- @malformed ++ @outside ++ @case_variants,
          dotted = Enum.join(labels, "."),
          name <- [
            dotted,
            String.replace(dotted, ".svc.dyn.test", "@svc.dyn.test"),
            node_of(labels)
          ],
          name not in Enum.map(everyone, &Atom.to_string/1),
          do: name

    for peer <- peers do
      assert members(peer) == everyone, "#{peer.name}: #{inspect(members(peer))}"
      assert Peer.call(peer, NodeAgent, :existing_atoms, [bad_names]) == []
      assert Peer.call(peer, NodeAgent, :cluster_pid, []) == pids[peer.name]
      assert nodedowns(peer) == 0
      # A decodable answer with bad records in it is not an outage.
      assert outage_logs(peer) == []
    end

    assert_full_mesh(peers)

    # 2. Message-level garbage: a label over 63 bytes, then a name over 255 bytes. hickory
    # rejects the whole message, so these polls fail, and a failure keeps the membership.
    long_label = [String.duplicate("a", 64) | @domain]
    long_name = List.duplicate(String.duplicate("b", 60), 4) ++ @domain

    failures =
      for {kind, labels} <- [label_over_63: long_label, name_over_255: long_name] do
        before = ScriptedDns.count(scripted, :answer)
        :ok = ScriptedDns.set_mode(scripted, {:answer, wire_records(specs) ++ hostile.([labels])})
        await_polls(peers, 4)
        assert ScriptedDns.count(scripted, :answer) > before

        for peer <- peers do
          assert members(peer) == everyone, "#{kind}: #{peer.name}: #{inspect(members(peer))}"
          assert Peer.call(peer, NodeAgent, :cluster_pid, []) == pids[peer.name]
          assert nodedowns(peer) == 0
        end

        {kind, Enum.map(peers, &outage_logs/1)}
      end

    # One warning for the two malformed answers in a row (one outage), on every node.
    for peer <- peers do
      assert [{:warning, warning}] = outage_logs(peer)
      assert warning =~ "failed"
      assert warning =~ "keeping the last membership (5 nodes)"
    end

    :ok = ScriptedDns.set_mode(scripted, :forward)

    for peer <- peers do
      assert Mesh.eventually(
               fn -> Enum.any?(outage_logs(peer), &(elem(&1, 1) =~ "answers again after")) end,
               600
             )
    end

    deltas = for peer <- peers, do: atom_count(peer) - atoms_before[peer.name]

    for peer <- peers do
      assert Peer.call(peer, NodeAgent, :existing_atoms, [bad_names]) == []
      assert Peer.call(peer, NodeAgent, :cluster_exits, []) == []
    end

    assert_full_mesh(peers)
    [{:warning, warning}] = peers |> hd() |> outage_logs() |> Enum.take(1)

    IO.puts("""

    [hostile] #{length(@malformed)} malformed, #{length(@outside)} outside-domain and \
    #{length(@case_variants)} upper-case targets mixed with 5 real ones: members = the 5 real \
    nodes; none of #{length(bad_names)} derived names is an atom; atom_count deltas over the \
    whole test #{inspect(deltas)}
    [hostile] a label over 63 bytes / a name over 255 bytes in one record: the whole answer \
    is rejected; #{inspect(Enum.map(failures, &elem(&1, 0)))} polls failed and kept the \
    5 members; one warning per node: #{inspect(warning)}
    """)
  end

  @tag :slow
  test "thousands of distinct names over successive polls (slow variant: 20 x 500)" do
    flood(20, 500)
  end

  test "thousands of distinct names over successive polls: atoms stay within max_node_atoms" do
    flood(6, 500)
  end

  # `rounds` answers, each with `per_round` names never seen before plus the 5 real nodes.
  defp flood(rounds, per_round) do
    max_node_atoms = div(rounds * per_round, 3)

    %{specs: specs, scripted: scripted, peers: peers, everyone: everyone} =
      boot_behind_scripted_dns!(for(i <- 1..5, do: "n#{i}"),
        max_nodes: 600,
        max_node_atoms: max_node_atoms
      )

    pids = Map.new(peers, &{&1.name, Peer.call(&1, NodeAgent, :cluster_pid, [])})
    atoms_before = Map.new(peers, &{&1.name, atom_count(&1)})
    dead = DynamicSrv.Test.Peer.dead_port()
    t0 = System.monotonic_time()

    for round <- 1..rounds do
      fakes =
        Enum.flat_map(1..per_round, fn i ->
          labels = ["f#{round}-#{i}" | @domain]
          [{:srv, service(), 0, 0, dead, labels}, {:a, labels, {127, 0, 0, 1}}]
        end)

      :ok = ScriptedDns.set_mode(scripted, {:answer, wire_records(specs) ++ fakes})
      await_polls(peers, 2)

      for peer <- peers do
        members = members(peer)
        assert Enum.all?(everyone, &(&1 in members)), "round #{round}: #{peer.name}"
        assert length(members) <= 600
      end
    end

    flood_ms = ms_since(t0)

    # A steady answer over max_nodes (5 + 700 names, max_nodes 600) is warned about once,
    # not on every poll.
    steady =
      Enum.flat_map(1..700, fn i ->
        labels = ["f1-#{i}" | @domain]
        [{:srv, service(), 0, 0, dead, labels}, {:a, labels, {127, 0, 0, 1}}]
      end)

    :ok = ScriptedDns.set_mode(scripted, {:answer, wire_records(specs) ++ steady})
    await_polls(peers, 2)

    over_limit_warnings = fn peer ->
      Enum.count(logs(peer), &(elem(&1, 1) =~ "beyond max_nodes"))
    end

    before_steady = Map.new(peers, &{&1.name, over_limit_warnings.(&1)})
    await_polls(peers, 6)

    for peer <- peers do
      assert over_limit_warnings.(peer) == before_steady[peer.name],
             "#{peer.name} warned again: #{inspect(Enum.take(logs(peer), -6))}"
    end

    names = for round <- 1..rounds, i <- 1..per_round, do: "f#{round}-#{i}@#{service()}"

    results =
      for peer <- peers do
        made = length(Peer.call(peer, NodeAgent, :existing_atoms, [names]))
        delta = atom_count(peer) - atoms_before[peer.name]
        # The budget, not the flood, bounds the atoms: all of it is used, never more. (Up to
        # 4 atoms of it may have gone to the other real nodes, if the first poll named them
        # before any connection did.)
        assert made <= max_node_atoms and made >= max_node_atoms - 4, "#{peer.name}: #{made}"
        assert delta >= made and delta <= made + 500, "#{peer.name}: atom_count +#{delta}"
        assert Peer.call(peer, NodeAgent, :cluster_pid, []) == pids[peer.name]
        assert Peer.call(peer, NodeAgent, :cluster_exits, []) == []
        assert nodedowns(peer) == 0
        warnings = for {:warning, t} <- logs(peer), t =~ "max_node_atoms", do: t
        assert length(warnings) == 1, inspect(warnings)
        over = for {:warning, t} <- logs(peer), t =~ "beyond max_nodes", do: t
        {made, delta, length(over)}
      end

    assert_full_mesh(peers)

    IO.puts(
      "\n[hostile] flood: #{rounds} polls x #{per_round} new names (#{rounds * per_round}) " <>
        "on 5 nodes in #{round(flood_ms)} ms, max_node_atoms #{max_node_atoms}: " <>
        "{atoms made of those names, atom_count delta, max_nodes warnings} per node #{inspect(results)}; " <>
        "0 nodedowns, 1 warning per node, no crash"
    )
  end

  defp atom_count(peer), do: Peer.call(peer, :erlang, :system_info, [:atom_count])

  # The node name :service_prefix would make of a target, right or wrong.
  defp node_of([prefix | _]), do: "#{prefix}@#{service()}"
end
