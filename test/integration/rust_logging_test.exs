defmodule DynamicSrv.Integration.RustLoggingTest do
  # The Rust side's log events in a real node: they reach Logger, a node boots without a
  # stray line of output, and a DNS outage is logged once, not once per failed lookup.
  use ExUnit.Case, async: false
  @moduletag :integration

  alias DynamicSrv.Test.{DnsServer, Mesh, NodeAgent, Peer, Ports}

  @zone_opts [extra: ["--local=/dyn.test/"]]

  defp records(port) do
    [{:srv, "peer.dyn.test", "peer-host.dyn.test", port}, {:a, "peer-host.dyn.test", "127.0.0.1"}]
  end

  defp boot!(dns, erl_args \\ []) do
    peer =
      Peer.start!(
        "logs@dyn.test",
        %{
          "ERL_DIST_PORT" => Integer.to_string(Ports.free()),
          "DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns),
          "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "300",
          "DYNAMIC_SRV_MIN_TTL_MS" => "0"
        },
        erl_args: erl_args
      )

    on_exit(fn -> Peer.stop(peer) end)
    peer
  end

  defp address_please(peer, name),
    do: Peer.call(peer, DynamicSrv.Epmd, :address_please, [name, ~c"dyn.test", :inet])

  test "a node that resolves peers during boot prints nothing before READY" do
    dns = DnsServer.start!(records(4444), @zone_opts)
    on_exit(fn -> DnsServer.stop_and_clean(dns) end)

    # Lookups during boot (one answered, one NXDOMAIN) emit Rust debug events before any
    # Logger runs; none of them may reach stdout.
    peer =
      boot!(dns, [
        "-eval",
        ~S|'Elixir.DynamicSrv.Epmd':address_please("peer", "dyn.test", inet), | <>
          ~S|'Elixir.DynamicSrv.Epmd':address_please("ghost", "dyn.test", inet)|
      ])

    assert peer.boot_output == []
    assert Enum.any?(DnsServer.queries(dns), &(&1 =~ "ghost.dyn.test"))
    stats = Peer.call(peer, DynamicSrv.Native, :log_stats, [])
    assert stats.forwarder
    assert stats.queue_full + stats.backlog_dropped == 0
    Mesh.assert_no_epmd(peer)
  end

  @tag timeout: 120_000
  test "a DNS outage is one warning however many lookups fail, then one line when it ends" do
    dns = DnsServer.start!(records(4444), @zone_opts)
    peer = boot!(dns)
    :ok = Peer.call(peer, :logger, :set_primary_config, [:level, :info])
    :ok = Peer.call(peer, NodeAgent, :start_log_capture, [:info])

    assert {:ok, {127, 0, 0, 1}, 4444, 6} = address_please(peer, ~c"peer")

    DnsServer.stop_and_clean(dns)

    results = for i <- 1..12, do: address_please(peer, ~c"ghost-#{i}")
    IO.puts("lookups during the outage: #{inspect(Enum.frequencies(results))}")
    assert Enum.all?(results, &match?({:error, _}, &1))

    # Served from the stale entry while DNS is down (min TTL 0, so it expired at once).
    assert {:ok, {127, 0, 0, 1}, 4444, 6} = address_please(peer, ~c"peer")

    assert Mesh.eventually(fn -> warnings(peer) != [] end)
    dns = DnsServer.start!(records(4444), Keyword.put(@zone_opts, :port, dns.port))
    on_exit(fn -> DnsServer.stop_and_clean(dns) end)

    assert Mesh.eventually(fn ->
             match?({:ok, _, _, _}, address_please(peer, ~c"peer")) and recovered(peer) != []
           end)

    logs = Peer.call(peer, NodeAgent, :captured_rust_logs, [])
    IO.puts("Rust log lines seen by Logger:\n" <> Enum.map_join(logs, "\n", &inspect/1))

    assert [{:warning, warning}] = warnings(peer)
    assert warning =~ "DNS lookups failing (nameservers #{DnsServer.nameserver(dns)})"
    assert warning =~ "Further failures are logged at debug level until DNS answers again"
    assert [{:info, recovered}] = recovered(peer)
    assert recovered =~ ~r/DNS answers again .* after \d+ failed lookups? over/
    # In that order.
    assert Enum.find_index(logs, &(&1 == {:warning, warning})) <
             Enum.find_index(logs, &(&1 == {:info, recovered}))

    # Nothing was lost between the DNS thread and Logger.
    stats = Peer.call(peer, DynamicSrv.Native, :log_stats, [])
    assert stats.queue_full + stats.backlog_dropped == 0
  end

  defp warnings(peer) do
    for {level, text} <- Peer.call(peer, NodeAgent, :captured_rust_logs, []),
        level in [:warning, :error, :critical, :alert, :emergency],
        do: {level, text}
  end

  defp recovered(peer) do
    for {:info, text} <- Peer.call(peer, NodeAgent, :captured_rust_logs, []),
        text =~ "DNS answers again",
        do: {:info, text}
  end
end
