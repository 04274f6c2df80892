defmodule DynamicSrv.Chaos.BadDnsTest do
  # Fault 3: the DNS server answers, but badly (SERVFAIL, REFUSED, or a truncated UDP answer
  # with TCP refused). Five real nodes, each running DynamicSrv.Cluster, behind a scripted DNS
  # server that forwards to a real dnsmasq until the fault is switched on. Once with the
  # default TCP poll (where the third fault is a refused TCP connection) and once over UDP.
  use ExUnit.Case, async: false
  @moduletag :chaos
  @moduletag :integration
  @moduletag timeout: 300_000

  import DynamicSrv.Test.Fleet
  import DynamicSrv.Test.Chaos, only: [ms_since: 1]

  alias DynamicSrv.Test.ScriptedDns

  # The reason each fault's warning names, by the poll's transport.
  defp faults(:udp) do
    [
      {{:rcode, :servfail}, ~r/answered Server Failure/},
      {{:rcode, :refused}, ~r/answered Query Refused/},
      {:truncate_tcp_refused, ~r/truncated/}
    ]
  end

  defp faults(:tcp) do
    [
      {{:rcode, :servfail}, ~r/answered Server Failure/},
      {{:rcode, :refused}, ~r/answered Query Refused/},
      # A TCP connection refused: "cannot reach the DNS server: no server accepted the query"
      {:truncate_tcp_refused, ~r/cannot reach the DNS server/}
    ]
  end

  test "SERVFAIL, REFUSED, TCP refused (the default TCP poll): membership kept, no nodedown, one warning per outage, recovery" do
    run_faults(5, :tcp)
  end

  test "SERVFAIL, REFUSED, truncated+TCP refused (UDP poll): membership kept, no nodedown, one warning per outage, recovery" do
    run_faults(5, :udp)
  end

  @tag :slow
  test "slow variant: each bad answer for 60 polls" do
    run_faults(60, :tcp)
    run_faults(60, :udp)
  end

  defp run_faults(polls, transport) do
    %{scripted: scripted, peers: peers, everyone: everyone} =
      boot_behind_scripted_dns!(for(i <- 1..5, do: "n#{i}"), dns_transport: transport)

    for peer <- peers, do: assert(members(peer) == everyone)

    rows =
      for {{mode, expected_reason}, outage} <- Enum.with_index(faults(transport), 1) do
        name = ScriptedDns.mode_name(mode)
        :ok = ScriptedDns.set_mode(scripted, mode)
        t0 = System.monotonic_time()
        # Several polls on every node inside the fault.
        await_polls(peers, polls)
        hit = ScriptedDns.count(scripted, name)

        # A refused TCP connection carries no query for the server to count.
        unless transport == :tcp and mode == :truncate_tcp_refused,
          do: assert(hit >= polls * length(peers), "only #{hit} queries saw #{name}")

        for peer <- peers do
          assert members(peer) == everyone, "#{peer.name} during #{name}"
          assert nodedowns(peer) == 0, "#{peer.name} lost a connection during #{name}"
          assert node_list(peer) == everyone -- [peer.name]
        end

        fault_ms = ms_since(t0)
        :ok = ScriptedDns.set_mode(scripted, :forward)
        t1 = System.monotonic_time()

        # Recovery: every node logs that DNS answers again (the outage's closing line).
        for peer <- peers do
          assert DynamicSrv.Test.Mesh.eventually(
                   fn -> count_lines(peer, "answers again after") == outage end,
                   600
                 ),
                 "#{peer.name} never logged the end of outage #{outage}: " <>
                   "#{inspect(outage_logs(peer))}; queries: #{inspect(ScriptedDns.counts(scripted))}"
        end

        heal_ms = ms_since(t1)

        for peer <- peers do
          warnings = for {:warning, text} <- outage_logs(peer), do: text
          # Exactly one warning per outage so far, this one naming what went wrong.
          assert length(warnings) == outage, "#{peer.name}: #{inspect(outage_logs(peer))}"
          assert List.last(warnings) =~ expected_reason, List.last(warnings)
          assert List.last(warnings) =~ "keeping the last membership (5 nodes)"
        end

        IO.puts(
          "\n[bad_dns] #{transport} poll, #{name}: #{hit} queries answered badly over #{round(fault_ms)} ms " <>
            "(#{polls} polls on each of 5 nodes); 0 nodedowns; members kept; all 5 nodes logged " <>
            "the end of the outage #{round(heal_ms)} ms after DNS recovered"
        )

        {name, hit, round(fault_ms), round(heal_ms)}
      end

    # After the three outages: still one warning and one recovery line each, nothing else
    # about DNS, and the mesh is whole.
    for peer <- peers do
      assert count_lines(peer, "failed:") == 3
      assert count_lines(peer, "answers again after") == 3
      assert length(outage_logs(peer)) == 6, inspect(outage_logs(peer))
      assert members(peer) == everyone
      assert nodedowns(peer) == 0
      assert DynamicSrv.Test.Peer.call(peer, DynamicSrv.Test.NodeAgent, :cluster_exits, []) == []
    end

    assert_full_mesh(peers)
    IO.puts("[bad_dns] rows: #{inspect(rows)}")
  end

  defp count_lines(peer, fragment),
    do: Enum.count(outage_logs(peer), fn {_level, text} -> text =~ fragment end)
end
