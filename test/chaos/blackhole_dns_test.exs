defmodule DynamicSrv.Chaos.BlackholeDnsTest do
  # Fault 4: a nameserver that reads every query and never answers, over UDP and TCP.
  # Real nodes behind a scripted DNS server that forwards to a real dnsmasq until the black
  # hole opens. No wall-clock asserts: durations are measured and printed.
  use ExUnit.Case, async: false
  @moduletag :chaos
  @moduletag :integration
  @moduletag timeout: 300_000

  import DynamicSrv.Test.Fleet
  import DynamicSrv.Test.Chaos, only: [ms_since: 1, distribution: 1]

  alias DynamicSrv.Test.{DnsFaultProbe, Mesh, Peer, ScriptedDns}

  @lookup_timeout_ms 500

  test "the mesh stays up while the poller hits a black hole; one warning; it heals when DNS answers" do
    poller_in_black_hole(5)
  end

  @tag :slow
  test "slow variant: the poller in the black hole for 60 polls" do
    poller_in_black_hole(60)
  end

  defp poller_in_black_hole(polls) do
    %{scripted: scripted, peers: peers, everyone: everyone} =
      boot_behind_scripted_dns!(for i <- 1..5, do: "n#{i}")

    :ok = ScriptedDns.set_mode(scripted, :blackhole)
    t0 = System.monotonic_time()
    # Each failed poll waits out the lookup timeout before the next is scheduled.
    await_polls(peers, polls)
    fault_ms = ms_since(t0)
    swallowed = ScriptedDns.count(scripted, :blackhole)
    assert swallowed >= polls * 5

    for peer <- peers do
      assert nodedowns(peer) == 0, "#{peer.name} lost a connection"
      assert members(peer) == everyone
      assert node_list(peer) == everyone -- [peer.name]
    end

    :ok = ScriptedDns.set_mode(scripted, :forward)
    t1 = System.monotonic_time()

    for peer <- peers do
      assert Mesh.eventually(fn -> recovered?(peer) end, 600), inspect(outage_logs(peer))
    end

    heal_ms = ms_since(t1)

    for peer <- peers do
      assert [{:warning, warning}, {:info, recovered}] = outage_logs(peer)
      assert warning =~ "no answer within #{@lookup_timeout_ms}ms"
      assert recovered =~ "answers again after"
      assert nodedowns(peer) == 0
    end

    assert_full_mesh(peers)

    IO.puts(
      "\n[blackhole] poller: #{swallowed} queries swallowed over #{round(fault_ms)} ms " <>
        "(#{polls} polls on each of 5 nodes, lookup timeout #{@lookup_timeout_ms} ms); 0 nodedowns; " <>
        "members kept; recovery logged on all 5 nodes #{round(heal_ms)} ms after DNS answered"
    )
  end

  test "address_please on a miss returns within its bound; a cached peer connects while lookups hang" do
    [a, b] = specs = specs(["a1", "b1"])
    {_dnsmasq, scripted} = start_scripted_dns!(specs)
    # Cached answers stay fresh for the whole test: the cached peer never needs DNS. Misses
    # hang for a good second in the black hole, so "completes while they hang" is an order
    # of events, not a race against a short timer.
    env = %{"DYNAMIC_SRV_MIN_TTL_MS" => "600000", "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "1500"}
    [pa, pb] = boot!(specs, scripted, env)
    host = service()

    assert {:ok, {127, 0, 0, 1}, b.port, 6} ==
             Peer.call(pa, DynamicSrv.Epmd, :address_please, [~c"b1", to_charlist(host), :inet])

    # Healthy DNS: the same connect while uncached lookups run (they get NXDOMAIN).
    healthy = connect_rounds(pa, pb, node_name(b), "healthy", 5)

    :ok = ScriptedDns.set_mode(scripted, :blackhole)
    hole = connect_rounds(pa, pb, node_name(b), "hole", 5)

    # Misses against the black hole, 20 at once: the DNS thread's own bound ends each one
    # (`:timeout`); the epmd module's last-resort wait would say `:no_reply`.
    misses = for i <- 1..20, do: "miss#{i}"
    timed = Peer.call(pa, DnsFaultProbe, :time_address_please, [misses, host], 120_000)

    for {name, result, _ms} <- timed do
      assert {:error, :timeout} = result, "#{name}: #{inspect(result)}"
    end

    reasons = timed |> Enum.map(fn {_, {:error, r}, _} -> r end) |> Enum.frequencies()

    ratio = median(hole.connect_ms) / median(healthy.connect_ms)

    IO.puts("""

    [blackhole] address_please misses (20 concurrent, lookup timeout 1500 ms): \
    #{distribution(Enum.map(timed, &elem(&1, 2)))} ms, results #{inspect(reasons)}
    [blackhole] Node.connect of 3 uncached ghost nodes (blackhole): \
    #{distribution(hole.ghost_ms)} ms
    [blackhole] Node.connect to the cached peer, healthy DNS: #{distribution(healthy.connect_ms)} ms
    [blackhole] Node.connect to the cached peer while 3 ghost lookups hang in the black hole: \
    #{distribution(hole.connect_ms)} ms (median ratio #{Float.round(ratio, 1)}x)
    """)

    # The cached peer was reached every time, each time before any ghost's lookup gave up:
    # net_kernel did not wait on the black hole.
    assert Enum.all?(hole.results, &(&1 == true))
    assert hole.ghosts_returned_before == [0, 0, 0, 0, 0]
    assert node_name(a) in Peer.call(pb, Node, :list, [])
  end

  # `rounds` times: drop the connection, then have `pa` connect to `target` while 3 connects
  # to uncached ghost nodes look them up.
  defp connect_rounds(pa, pb, target, label, rounds) do
    results =
      for round <- 1..rounds do
        assert Peer.call(pa, DnsFaultProbe, :disconnect_and_wait, [target])
        assert Peer.call(pb, DnsFaultProbe, :disconnect_and_wait, [pa.name])
        ghosts = for g <- 1..3, do: :"ghost-#{label}-#{round}-#{g}@#{service()}"

        Peer.call(pa, DnsFaultProbe, :connect_while_lookups_hang, [target, ghosts, 50], 120_000)
      end

    for %{ghosts: ghosts} <- results, {ghost, result, _} <- ghosts do
      assert result == false, "#{ghost}: #{inspect(result)}"
    end

    %{
      results: Enum.map(results, fn %{target: {r, _}} -> r end),
      connect_ms: Enum.map(results, fn %{target: {_, ms}} -> ms end),
      ghost_ms: for(%{ghosts: g} <- results, {_, _, ms} <- g, do: ms),
      ghosts_returned_before: Enum.map(results, & &1.ghosts_returned_before)
    }
  end

  defp recovered?(peer), do: Enum.any?(outage_logs(peer), &(elem(&1, 1) =~ "answers again after"))

  defp median(values), do: Enum.at(Enum.sort(values), div(length(values), 2))
end
