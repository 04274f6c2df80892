defmodule DynamicSrv.Chaos.KilledPeerTest do
  # Fault 1: a node is killed with SIGKILL and booted again on a new port; DNS is updated
  # to the new port. It must be back in the full mesh within 2 polling intervals, counted in
  # the survivors' applied polls, and a pid of its old incarnation must not reach the new one.
  use ExUnit.Case, async: false
  @moduletag :integration
  @moduletag :chaos
  @moduletag timeout: 600_000

  import DynamicSrv.Test.Fleet
  alias DynamicSrv.Test.{Chaos, ChaosAgent, Mesh, Peer}

  @poll 1_000

  setup do
    specs = specs(for i <- 1..5, do: "n#{i}")
    dns = start_dns!(records(specs))
    peers = boot!(specs, dns)
    start_counted_mesh!(peers, polling_interval: @poll)
    %{specs: specs, dns: dns, peers: peers}
  end

  test "a SIGKILLed node restarted on a new port is back within 2 polls; its old pids alias nothing",
       ctx do
    kill_and_restart(ctx, 2)
  end

  @tag :slow
  test "three nodes in turn: SIGKILLed, restarted on a new port, back within 2 polls", ctx do
    Enum.reduce([1, 2, 3], ctx, fn index, ctx -> kill_and_restart(ctx, index) end)
  end

  # Kills the node at `index`, lists it at a new port, boots it again and measures; returns
  # the context with the new incarnation in place.
  defp kill_and_restart(%{specs: specs, dns: dns, peers: peers}, index) do
    victim = Enum.at(peers, index)
    survivors = List.delete(peers, victim)
    old_pid = Peer.call(victim, ChaosAgent, :spawn_sleeper, [])
    mark = Chaos.mark(survivors)

    killed_at = Chaos.now()
    Peer.kill(victim)

    for peer <- survivors do
      assert Mesh.eventually(fn -> victim.name not in node_list(peer) end, 300)
    end

    new_spec = %{Enum.at(specs, index) | port: fresh_port(Enum.map(specs, & &1.port))}
    specs = List.replace_at(specs, index, new_spec)
    dns = restart_dns!(dns, records(specs))
    [reborn] = boot!([new_spec], dns)
    start_clusters!([reborn], [polling_interval: @poll] ++ counting())

    # The fault ends here: the node runs again, on its new port, listed in DNS.
    restarted_at = Chaos.now()
    polls_before = Map.new(survivors, &{&1.name, polls(&1)})
    peers = List.replace_at(peers, index, reborn)
    healed_at = Chaos.await_full_mesh(peers)
    # Read after the mesh was seen, so these are upper bounds.
    polls_taken = for peer <- survivors, do: polls(peer) - polls_before[peer.name]
    reborn_polls = polls(reborn)

    assert Enum.all?(polls_taken, &(&1 <= 2)),
           "back only after #{inspect(polls_taken)} survivor polls (at most 2 allowed)"

    assert reborn_polls <= 2, "the restarted node needed #{reborn_polls} polls"

    # Every survivor reaches the new port, from its own polls' answers.
    for peer <- survivors do
      assert Mesh.eventually(fn ->
               Peer.call(peer, DynamicSrv.Epmd, :address_please, [
                 String.to_charlist(new_spec.name),
                 ~c"svc.dyn.test",
                 :inet
               ]) == {:ok, {127, 0, 0, 1}, new_spec.port, 6}
             end)
    end

    {monitor_reasons, delivered} = assert_no_alias(old_pid, reborn, survivors)

    downs = Chaos.nodedowns_since(survivors, mark)
    # Only the killed node's connections went down, once each.
    for peer <- survivors, do: assert(downs[peer.name] == [victim.name])

    Chaos.report("1 killed peer", [
      {"node", victim.name},
      {"connections_lost", Chaos.connections_lost(downs)},
      {"down_ms", restarted_at - killed_at},
      {"heal_ms", healed_at - restarted_at},
      {"heal_intervals", Chaos.intervals(healed_at - restarted_at, @poll)},
      {"survivor_polls_to_heal", polls_taken},
      {"reborn_polls_to_heal", reborn_polls},
      {"old_pid_monitor", monitor_reasons},
      {"old_pid_messages_delivered", delivered}
    ])

    %{specs: specs, dns: dns, peers: peers}
  end

  # A pid held from the old incarnation: same node name, same number and serial as a live
  # process of the new incarnation, different creation. It must reach nothing.
  defp assert_no_alias(old_pid, reborn, survivors) do
    new_pid = Peer.call(reborn, ChaosAgent, :spawn_catcher_like, [old_pid])
    assert is_pid(new_pid), "could not spawn a look-alike pid: #{inspect(new_pid)}"
    assert node(old_pid) == node(new_pid)
    assert ChaosAgent.pid_fields(old_pid) == ChaosAgent.pid_fields(new_pid)
    assert ChaosAgent.creation(old_pid) != ChaosAgent.creation(new_pid)
    refute old_pid == new_pid

    reasons =
      for peer <- survivors do
        reason = Peer.call(peer, ChaosAgent, :probe_old_pid, [old_pid, new_pid])
        assert reason in [:noproc, :noconnection], "#{peer.name}: monitor said #{inspect(reason)}"
        reason
      end

    # Only the markers arrived: none of the probes sent to the old pid.
    markers = for peer <- survivors, do: {:marker_to_new_pid, peer.name}

    assert Mesh.eventually(fn -> Peer.call(reborn, ChaosAgent, :caught, []) == markers end),
           "the new process received #{inspect(Peer.call(reborn, ChaosAgent, :caught, []))}"

    caught = Peer.call(reborn, ChaosAgent, :caught, [])
    {Enum.uniq(reasons), Enum.count(caught, &match?({:probe_to_old_pid, _}, &1))}
  end
end
