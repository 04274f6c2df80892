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
