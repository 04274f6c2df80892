defmodule DynamicSrv.Integration.DepartureTest do
  # How nodes leave (DynamicSrv.Cluster.Departure), on real nodes under OTP's global
  # defaults (connect_all, prevent_overlapping_partitions): no nodedown between nodes DNS
  # lists all along, in the cases an adversarial review found. (The plain case is in
  # membership_test.exs.)
  use ExUnit.Case, async: false
  @moduletag :integration
  @moduletag timeout: 180_000

  import DynamicSrv.Test.Fleet
  alias DynamicSrv.Test.{Mesh, NodeAgent, Peer, ScriptedDns}

  # Nodedowns a peer saw of `names` since its recorder started.
  defp downs_of(peer, names) do
    peer
    |> Peer.call(NodeAgent, :node_events, [])
    |> Enum.count(fn {kind, node} -> kind == :nodedown and node in names end)
  end

  defp healthy_downs(kept) do
    names = Enum.map(kept, & &1.name)
    Map.new(kept, &{&1.name, downs_of(&1, names)})
  end

  # A stable-named node (fixed hostname / StatefulSet pod) crashes, is removed from DNS,
  # and comes back under the same name, dialing its listed peers before its own record is
  # visible again. The grace the others gave the old incarnation must not disconnect the
  # new one: global would turn that into nodedowns between healthy nodes.
  test "a departure timer does not hit the node's next incarnation" do
    specs = specs(for i <- 1..5, do: "n#{i}")
    dns = start_dns!(records(specs))
    peers = boot!(specs, dns, %{}, global: :otp_defaults)
    grace = 10_000
    grace_opt = [disconnect_grace: grace]

    start_clusters!(peers, grace_opt ++ counting())
    assert_full_mesh(peers)

    {victim, kept} = List.pop_at(peers, 4)
    victim_spec = Enum.at(specs, 4)
    kept_names = Enum.map(kept, & &1.name)

    Peer.kill(victim)
    dns = restart_dns!(dns, records(Enum.take(specs, 4)))

    for peer <- kept,
        do: assert(Mesh.eventually(fn -> victim.name not in members(peer) end, 300))

    left_at = System.monotonic_time(:millisecond)
    before = healthy_downs(kept)

    # Same name, same port; DNS does not list it yet.
    [reborn] = boot!([victim_spec], dns, %{}, global: :otp_defaults)
    start_clusters!([reborn], grace_opt ++ counting())

    assert Mesh.eventually(fn -> Enum.sort(node_list(reborn)) == Enum.sort(kept_names) end, 300),
           "the reborn node did not join: #{inspect(node_list(reborn))}"

    joined_after = System.monotonic_time(:millisecond) - left_at
    IO.puts("\n[departure] reborn #{victim.name} connected #{joined_after} ms after removal")
    assert joined_after < grace, "boot too slow for the scenario; raise grace"

    Process.sleep(max(grace - joined_after, 0) + 4_000)
    after_ = healthy_downs(kept)
    lost = Map.new(kept, &{&1.name, after_[&1.name] - before[&1.name]})

    events = for peer <- kept, do: {peer.name, Peer.call(peer, NodeAgent, :node_events, [])}

    IO.puts("[departure] healthy nodedowns after the grace: #{inspect(lost)}")
    IO.puts("[departure] reborn's links now: #{inspect(node_list(reborn))}")

    assert Enum.all?(lost, fn {_, n} -> n == 0 end),
           "healthy links dropped: #{inspect(lost)}\n#{inspect(events, limit: :infinity)}"
  end

  # The other nodes' resolver fails for a few polls after they saw the delisted node missing
  # but before they removed it: they must not dial it meanwhile (a failed poll keeps who is
  # on the way out), and when DNS answers again it leaves cleanly.
  test "a DNS outage on the other nodes while one node leaves costs no healthy link" do
    specs = specs(for i <- 1..5, do: "n#{i}")
    {dnsmasq, scripted} = start_scripted_dns!(specs)
    {others_specs, [gone_spec]} = Enum.split(specs, 4)
    # The leaving node asks dnsmasq directly; the others go through the scripted server.
    others = boot!(others_specs, scripted, %{}, global: :otp_defaults)
    [gone] = boot!([gone_spec], dnsmasq, %{}, global: :otp_defaults)
    peers = others ++ [gone]
    capture_logs!(peers)

    opts = [removal_delay: 3_000] ++ counting()
    start_clusters!(peers, opts)
    assert_full_mesh(peers)
    before = healthy_downs(others)

    _dnsmasq = restart_dns!(dnsmasq, records(others_specs))
    # Every other node sees gone missing from a complete answer (so it is `leaving`) ...
    await_polls(others, 2)
    # ... then their DNS fails for a few polls. (gone is still connected: nobody confirmed.)
    dials = fn -> Enum.sum(for peer <- others, do: connects(peer, gone.name)) end
    dials_before = dials.()
    :ok = ScriptedDns.set_mode(scripted, {:rcode, :servfail})
    await_polls(others, 4)
    redialed = dials.() > dials_before
    :ok = ScriptedDns.set_mode(scripted, :forward)

    for peer <- others,
        do: assert(Mesh.eventually(fn -> gone.name not in node_list(peer) end, 300))

    await_polls(others, 8)
    after_ = healthy_downs(others)
    lost = Map.new(others, &{&1.name, after_[&1.name] - before[&1.name]})

    IO.puts(
      "\n[departure] gone redialed during the outage: #{redialed}; healthy nodedowns: #{inspect(lost)}"
    )

    refute redialed, "the others dialed gone (on its way out) during their DNS outage"
    assert Peer.call(gone, Node, :list, []) == []
    assert Enum.all?(lost, fn {_, n} -> n == 0 end), "healthy links dropped: #{inspect(lost)}"
  end

  # A rolling deploy: a new node (n6) is up and connected (it dials the listed nodes, and
  # global connects it to everyone) but not listed yet (readiness pending) when an old node
  # (n5) is delisted. n5 still leaves through :global.disconnect/0 (n6 included).
  test "a delisted node leaves through global even while a not-yet-listed node is connected" do
    specs = specs(for i <- 1..6, do: "n#{i}")
    {listed, [pending]} = Enum.split(specs, 5)
    dns = start_dns!(records(listed))
    peers = boot!(specs, dns, %{}, global: :otp_defaults)
    capture_logs!(peers)
    start_clusters!(peers, [removal_delay: 1_500] ++ counting())
    assert_full_mesh(peers)

    gone = Enum.at(peers, 4)
    kept = List.delete(peers, gone)
    before = healthy_downs(kept)

    _dns = restart_dns!(dns, records(Enum.take(listed, 4)))

    for peer <- kept,
        do: assert(Mesh.eventually(fn -> gone.name not in node_list(peer) end, 300))

    await_polls(kept, 8)
    after_ = healthy_downs(kept)
    lost = Map.new(kept, &{&1.name, after_[&1.name] - before[&1.name]})

    why = for {_, text} <- logs(gone), text =~ "this node left", do: text

    IO.puts("\n[departure] #{pending.name} pending; gone logged: #{inspect(why)}")
    IO.puts("[departure] healthy nodedowns: #{inspect(lost)}")
    assert Enum.all?(lost, fn {_, n} -> n == 0 end), "healthy links dropped: #{inspect(lost)}"
  end

  # One node's resolver lies (or is stale, split-horizon): it alone sees itself delisted,
  # while every other node's DNS lists it. No member confirms, so it keeps its links.
  test "a lie told to one node alone costs it no link" do
    specs = specs(for i <- 1..4, do: "n#{i}")
    {dnsmasq, scripted} = start_scripted_dns!(specs)
    {others_specs, [victim_spec]} = Enum.split(specs, 3)
    others = boot!(others_specs, dnsmasq, %{}, global: :otp_defaults)
    [victim] = boot!([victim_spec], scripted, %{}, global: :otp_defaults)
    peers = others ++ [victim]
    capture_logs!(peers)
    start_clusters!(peers, [removal_delay: 1_000] ++ counting())
    assert_full_mesh(peers)
    downs_before = nodedowns(victim)

    :ok = ScriptedDns.set_mode(scripted, {:answer, wire_records(others_specs)})
    # (await_polls cannot count a delisted node's polls: it no longer lists nodes.)
    assert Mesh.eventually(fn -> victim.name not in members(victim) end, 300)
    Process.sleep(2_000)
    await_polls(others, 5)
    assert_full_mesh(peers)

    lost = nodedowns(victim) - downs_before
    IO.puts("\n[departure] victim lost #{lost} links to a lie only it was told")
    assert lost == 0, inspect(for {_, t} <- logs(victim), t =~ "left", do: t)
  end
end
