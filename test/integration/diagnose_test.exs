defmodule DynamicSrv.Integration.DiagnoseTest do
  # Real nodes behind a real dnsmasq, diagnosed the way an operator does it: one node calls
  # DynamicSrv.diagnose() on another over distribution, as `bin/app rpc` does, and the text
  # arrives on the caller's group leader.
  use ExUnit.Case, async: false
  @moduletag :integration

  alias DynamicSrv.Test.{DnsServer, Mesh, NodeAgent, Peer, Ports}

  @zone_opts [extra: ["--local=/dyn.test/"]]

  defp start_dns!(records, opts) do
    dns = DnsServer.start!(records, opts)
    on_exit(fn -> DnsServer.stop_and_clean(dns) end)
    dns
  end

  defp boot!(name, port, dns, extra \\ %{}) do
    peer =
      Peer.start!(
        name,
        Map.merge(
          %{
            "ERL_DIST_PORT" => Integer.to_string(port),
            "DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns),
            "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "300"
          },
          extra
        )
      )

    on_exit(fn -> Peer.stop(peer) end)
    peer
  end

  defp lines(text), do: String.split(text, "\n")

  defp assert_line(text, expected) do
    assert Enum.any?(lines(text), &String.contains?(&1, expected)),
           "expected a line containing\n  #{expected}\nin:\n#{text}"
  end

  @tag timeout: 120_000
  test "diagnose over rpc on a healthy node; port mismatch, REFUSED and a dead server named with fixes" do
    [p1, p2, p3] = distinct_ports(3)
    wrong = p3 + 1

    records = [
      {:srv, "n1.dyn.test", "n1-host.dyn.test", p1},
      {:a, "n1-host.dyn.test", "127.0.0.1"},
      {:srv, "n2.dyn.test", "n2-host.dyn.test", p2},
      {:a, "n2-host.dyn.test", "127.0.0.1"},
      # n3 listens on p3 but DNS advertises another port: the classic misconfiguration.
      {:srv, "n3.dyn.test", "n3-host.dyn.test", wrong},
      {:a, "n3-host.dyn.test", "127.0.0.1"}
    ]

    dns = start_dns!(records, @zone_opts)
    n1 = boot!("n1@dyn.test", p1, dns)
    n2 = boot!("n2@dyn.test", p2, dns)
    Mesh.connect_and_assert_full_mesh([n1, n2])
    Mesh.assert_no_epmd(n1)

    cache_before = cache_keys(n1)

    # As `bin/app rpc "DynamicSrv.diagnose()"`: runs on n1, prints on the caller (n2).
    {result, text} =
      Peer.call(n2, NodeAgent, :capture_output, [
        :erpc,
        :call,
        [:"n1@dyn.test", DynamicSrv, :diagnose, []]
      ])

    IO.puts(text)
    assert result == :ok
    assert_line(text, "DynamicSrv diagnosis of n1@dyn.test")
    assert_line(text, ~s(ERL_DIST_PORT = #{p1}    from the environment: ERL_DIST_PORT="#{p1}"))
    assert_line(text, "DYNAMIC_SRV_PORT_MODE = srv    default (DYNAMIC_SRV_PORT_MODE is not set)")
    assert_line(text, "name: n1@dyn.test (running)")
    assert_line(text, "port mode: srv; distribution port: #{p1} (listening)")
    assert_line(text, "nameservers: #{DnsServer.nameserver(dns)}")
    assert text =~ ~r/SRV n1\.dyn\.test: 1 answer in [\d.]+ ms/
    assert_line(text, "=> connects to 127.0.0.1:#{p1}")
    assert_line(text, "n2@dyn.test [connected]")
    assert_line(text, "=> connects to 127.0.0.1:#{p2}")
    # n1 reached n2 through the cache, which the diagnosis shows with its remaining TTL.
    assert text =~ ~r/n2@dyn\.test IPv4 127\.0\.0\.1:#{p2}: fresh, [\d.]+ s left/
    assert_line(text, "No problems found.")

    n3 = boot!("n3@dyn.test", p3, dns)
    {result, text} = Peer.call(n3, NodeAgent, :capture_output, [DynamicSrv, :diagnose, []])
    IO.puts(text)
    assert result == {:problems, 1}

    assert_line(
      text,
      "DNS advertises port #{wrong} for this node (n3.dyn.test), but it listens on #{p3}: " <>
        "peers will dial the wrong port"
    )

    assert_line(
      text,
      "fix: register the SRV record n3.dyn.test with the port in ERL_DIST_PORT (#{p3})"
    )

    # A nameserver that does not serve the zone: dnsmasq without --local refuses.
    other = start_dns!([{:a, "unrelated.example", "127.0.0.1"}], [])

    {_, text} =
      Peer.call(n3, NodeAgent, :capture_output, [
        DynamicSrv,
        :diagnose,
        [[nameservers: DnsServer.nameserver(other)]]
      ])

    IO.puts(text)
    assert text =~ ~r/SRV n3\.dyn\.test: FAILED after [\d.]+ ms \(refused\)/
    assert_line(text, "fix: #{DnsServer.nameserver(other)} refused the query (REFUSED)")

    dead = "127.0.0.1:#{Peer.dead_port()}"

    {_, text} =
      Peer.call(n3, NodeAgent, :capture_output, [DynamicSrv, :diagnose, [[nameservers: dead]]])

    IO.puts(text)
    assert text =~ ~r/SRV n3\.dyn\.test: FAILED after [\d.]+ ms \((timeout|unreachable)\)/

    assert Enum.any?(lines(text), fn line ->
             line =~ "fix: nothing answered at #{dead} within 300 ms: is the DNS server" or
               line =~ "fix: cannot reach #{dead}"
           end),
           text

    # The diagnosis asked DNS with its own cache: n1's cache is as it was.
    assert cache_keys(n1) == cache_before
    assert {"n2@dyn.test", :inet, "127.0.0.1:#{p2}"} in cache_before
  end

  @tag timeout: 180_000
  test "during a DNS outage the cache shows the peer STALE and DNS FAILING, then fresh again" do
    [p1, p2] = distinct_ports(2)
    hold_ms = 2_000
    max_stale_s = 600

    records = [
      {:srv, "n1.dyn.test", "n1-host.dyn.test", p1},
      {:a, "n1-host.dyn.test", "127.0.0.1"},
      {:srv, "n2.dyn.test", "n2-host.dyn.test", p2},
      {:a, "n2-host.dyn.test", "127.0.0.1"}
    ]

    dns = start_dns!(records, @zone_opts)
    nameserver = DnsServer.nameserver(dns)

    # dnsmasq answers with TTL 0, so every entry is held exactly DYNAMIC_SRV_MIN_TTL_MS.
    short_ttl = %{
      "DYNAMIC_SRV_MIN_TTL_MS" => Integer.to_string(hold_ms),
      "DYNAMIC_SRV_MAX_STALE_S" => Integer.to_string(max_stale_s)
    }

    n1 = boot!("n1@dyn.test", p1, dns, short_ttl)
    n2 = boot!("n2@dyn.test", p2, dns)
    Mesh.connect_and_assert_full_mesh([n1, n2])
    Mesh.assert_no_epmd(n1)
    n2_entry = "n2@dyn.test IPv4 127.0.0.1:#{p2}"

    # Healthy: the entry is fresh with what is left of its hold. A loaded machine may let it
    # expire before the diagnosis reads the cache, so look it up again until one reading is
    # taken while it is fresh.
    fresh_text =
      diagnose_until(
        n1,
        fn -> assert address_please(n1, ~c"n2") == {:ok, {127, 0, 0, 1}, p2, 6} end,
        &(fresh_left(&1, n2_entry) != nil)
      )

    IO.puts(fresh_text)
    left_s = fresh_left(fresh_text, n2_entry)
    IO.puts("fresh entry: #{left_s} s left of a #{hold_ms / 1000} s hold")
    assert left_s >= 0.0 and left_s <= hold_ms / 1000
    assert_line(fresh_text, "Address cache (1 entry; DNS answering):")
    assert_line(fresh_text, "No problems found.")

    # DNS goes down; the entry expires unused.
    DnsServer.stop(dns)
    assert Mesh.eventually(fn -> cache_state(n1, "n2@dyn.test") == "stale" end, 200, 50)

    # One lookup fails: the outage is marked and the expired address is served instead.
    assert address_please(n1, ~c"n2") == {:ok, {127, 0, 0, 1}, p2, 6}

    {result, text} = Peer.call(n1, NodeAgent, :capture_output, [DynamicSrv, :diagnose, []])
    IO.puts(text)
    assert {:problems, count} = result
    assert count >= 1

    assert [_, failed_ago] =
             Regex.run(
               ~r/^Address cache \(1 entry; DNS FAILING: last failed lookup ([\d.]+) s ago\):$/m,
               text
             ),
           text

    assert [_, stale_left, refresh_failed_ago] =
             Regex.run(
               ~r/^  #{Regex.escape(n2_entry)}: STALE \(expired; served only while DNS fails, for ([\d.]+) s more\); last refresh FAILED ([\d.]+) s ago$/m,
               text
             ),
           text

    IO.puts(
      "stale entry: #{stale_left} s of its #{max_stale_s} s stale window left; " <>
        "DNS failed #{failed_ago} s ago, its refresh #{refresh_failed_ago} s ago"
    )

    assert String.to_float(stale_left) > 0 and String.to_float(stale_left) <= max_stale_s
    assert String.to_float(failed_ago) >= 0
    assert String.to_float(refresh_failed_ago) >= 0

    # The diagnosis asks the dead server too, and names it in a problem with its fix.
    assert text =~ ~r/^Problems \(#{count}\):$/m
    assert text =~ ~r/^  \d+\. SRV lookup of n1\.dyn\.test/m

    assert Enum.any?(lines(text), fn line ->
             line =~ "     fix: nothing answered at #{nameserver} within 300 ms" or
               line =~ "     fix: cannot reach #{nameserver}"
           end),
           text

    # The outage disconnected nobody.
    assert Peer.call(n1, Node, :list, []) == [:"n2@dyn.test"]

    # DNS is back on the same port: a lookup refreshes the entry and clears the outage.
    dns = DnsServer.restart!(dns, records, @zone_opts)
    on_exit(fn -> DnsServer.stop_and_clean(dns) end)

    text =
      diagnose_until(
        n1,
        fn -> address_please(n1, ~c"n2") end,
        &(fresh_left(&1, n2_entry) != nil and &1 =~ "Address cache (1 entry; DNS answering):")
      )

    IO.puts(text)
    left_s = fresh_left(text, n2_entry)
    assert left_s >= 0.0 and left_s <= hold_ms / 1000
    refute text =~ ": STALE ("
    refute text =~ "DNS FAILING"
    refute text =~ "last refresh FAILED"
    assert_line(text, "No problems found.")
    assert Peer.call(n1, Node, :list, []) == [:"n2@dyn.test"]
  end

  defp address_please(peer, name),
    do: Peer.call(peer, DynamicSrv.Epmd, :address_please, [name, ~c"dyn.test", :inet])

  # Runs `prepare` (a lookup) then diagnoses, until the diagnosis passes `ready?`; flunks
  # with the last one otherwise. The tries span longer than the 2 s outage window, after
  # which a lookup asks DNS again instead of answering stale.
  defp diagnose_until(peer, prepare, ready?, tries \\ 40) do
    prepare.()
    {_, text} = Peer.call(peer, NodeAgent, :capture_output, [DynamicSrv, :diagnose, []])

    cond do
      ready?.(text) -> text
      tries <= 1 -> flunk("no diagnosis matched; the last one:\n#{text}")
      true -> Process.sleep(100) && diagnose_until(peer, prepare, ready?, tries - 1)
    end
  end

  # The seconds left on a fresh entry's line, nil when the line shows it otherwise.
  defp fresh_left(text, entry) do
    case Regex.run(~r/^  #{Regex.escape(entry)}: fresh, ([\d.]+) s left$/m, text) do
      [_, left] -> String.to_float(left)
      nil -> nil
    end
  end

  defp cache_state(peer, node) do
    snapshot = Peer.call(peer, DynamicSrv.Native, :cache_snapshot, [100])
    Enum.find_value(snapshot.entries, fn e -> e.node == node && e.state end)
  end

  defp cache_keys(peer) do
    for e <- Peer.call(peer, DynamicSrv.Native, :cache_snapshot, [100]).entries,
        do: {e.node, e.family, e.endpoint}
  end

  defp distinct_ports(n, acc \\ [])
  defp distinct_ports(0, acc), do: acc

  defp distinct_ports(n, acc) do
    port = Ports.free()

    if port in acc or (port + 1) in acc or (port - 1) in acc,
      do: distinct_ports(n, acc),
      else: distinct_ports(n - 1, [port | acc])
  end
end
