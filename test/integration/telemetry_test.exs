defmodule DynamicSrv.Integration.TelemetryTest do
  # Telemetry events on real nodes behind a real dnsmasq: a poll, a DNS outage and its end, a
  # cache-miss lookup by the epmd module. `:telemetry` is the test build's stand-in
  # (test/support/telemetry_stand_in.ex); the handler records events on the node itself.
  use ExUnit.Case, async: false
  @moduletag :integration

  alias DynamicSrv.Test.{DnsServer, Mesh, NodeAgent, Peer, Ports, TelemetryRecorder}

  @zone_opts [extra: ["--local=/dyn.test/"]]

  defp records(p1, p2) do
    [
      {:srv, "svc.dyn.test", "n1.svc.dyn.test", p1},
      {:srv, "svc.dyn.test", "n2.svc.dyn.test", p2},
      {:srv, "n1.svc.dyn.test", "n1-host.dyn.test", p1},
      {:srv, "n2.svc.dyn.test", "n2-host.dyn.test", p2},
      {:a, "n1-host.dyn.test", "127.0.0.1"},
      {:a, "n2-host.dyn.test", "127.0.0.1"}
    ]
  end

  defp boot!(name, port, dns) do
    peer =
      Peer.start!(name, %{
        "ERL_DIST_PORT" => Integer.to_string(port),
        "DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns),
        "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "300",
        "DYNAMIC_SRV_MIN_TTL_MS" => "60000"
      })

    on_exit(fn -> Peer.stop(peer) end)
    peer
  end

  @tag timeout: 120_000
  test "events arrive for a poll, an outage and its end, and a cache miss; a cache hit emits none" do
    [p1, p2] = [Ports.free(), Ports.free()]
    dns = DnsServer.start!(records(p1, p2), @zone_opts)
    on_exit(fn -> DnsServer.stop_and_clean(dns) end)

    n1 = boot!("n1@svc.dyn.test", p1, dns)
    n2 = boot!("n2@svc.dyn.test", p2, dns)
    Mesh.assert_no_epmd(n1)
    :ok = Peer.call(n1, TelemetryRecorder, :start, [])

    # A cache miss, from a process that is not net_kernel, as a connection's setup process.
    assert {:ok, {127, 0, 0, 1}, ^p2, 6} = address_please(n1, ~c"n2")
    assert {:error, :nxdomain} = address_please(n1, ~c"nobody")

    assert [
             {%{duration: d1}, %{node: "n2@svc.dyn.test", result: :ok, address: address}},
             {%{duration: d2}, %{node: "nobody@svc.dyn.test", result: :error, reason: :nxdomain}}
           ] = Peer.call(n1, TelemetryRecorder, :events, [[:dynamic_srv, :lookup, :stop]])

    assert address == "127.0.0.1:#{p2}"
    assert is_integer(d1) and d1 >= 0 and is_integer(d2) and d2 >= 0

    # The same node again answers from the cache: no DNS lookup, no event.
    assert {:ok, {127, 0, 0, 1}, ^p2, 6} = address_please(n1, ~c"n2")

    assert length(Peer.call(n1, TelemetryRecorder, :events, [[:dynamic_srv, :lookup, :stop]])) ==
             2

    # A poll: both nodes listed, both joined.
    {:ok, _} =
      Peer.call(n1, NodeAgent, :start_cluster, [
        [service: "svc.dyn.test", polling_interval: 600_000, topology: :app]
      ])

    :ok = Peer.call(n1, NodeAgent, :cluster_poll_now, [])

    [{poll, meta} | _] = Peer.call(n1, TelemetryRecorder, :events, [[:dynamic_srv, :poll, :stop]])
    IO.puts("poll event: #{inspect(poll)} #{inspect(meta)}")
    assert %{members: 2, joined: 2, left: 0, duration: duration} = poll
    assert is_integer(duration) and duration >= 0
    assert meta == %{topology: :app, service: "svc.dyn.test", result: :ok, error: nil}
    assert Mesh.eventually(fn -> Peer.call(n1, Node, :list, []) == [:"n2@svc.dyn.test"] end)

    # DNS goes away: the outage starts, the failed poll says why, the membership is kept.
    :ok = Peer.call(n1, TelemetryRecorder, :clear, [])
    DnsServer.stop(dns)
    :ok = Peer.call(n1, NodeAgent, :cluster_poll_now, [])
    :ok = Peer.call(n1, NodeAgent, :cluster_poll_now, [])

    events = Peer.call(n1, TelemetryRecorder, :events, [])
    IO.puts("outage events: #{inspect(events)}")

    assert [{[:dynamic_srv, :outage, :start], %{system_time: _}, start_meta, _}] =
             for(e = {[:dynamic_srv, :outage, _], _, _, _} <- events, do: e)

    assert %{topology: :app, service: "svc.dyn.test", members: 2, error: error} = start_meta
    assert is_binary(error) and error != ""

    failed = for {[:dynamic_srv, :poll, :stop], m, md, _} <- events, do: {m, md}
    assert [{%{members: 2, joined: 0, left: 0}, %{result: :error, error: ^error}}, _] = failed

    # DNS is back: the outage ends, with how long it lasted and how many polls failed.
    dns = DnsServer.restart!(dns, records(p1, p2), @zone_opts)
    on_exit(fn -> DnsServer.stop_and_clean(dns) end)
    :ok = Peer.call(n1, TelemetryRecorder, :clear, [])
    :ok = Peer.call(n1, NodeAgent, :cluster_poll_now, [])

    events = Peer.call(n1, TelemetryRecorder, :events, [])
    IO.puts("recovery events: #{inspect(events)}")

    assert [{[:dynamic_srv, :outage, :stop], %{duration: outage, failed_polls: 2}, stop_meta, _}] =
             for(e = {[:dynamic_srv, :outage, _], _, _, _} <- events, do: e)

    assert stop_meta == %{topology: :app, service: "svc.dyn.test"}
    assert is_integer(outage) and outage > 0

    assert [{%{members: 2, joined: 0, left: 0}, %{result: :ok, error: nil}}] =
             for({[:dynamic_srv, :poll, :stop], m, md, _} <- events, do: {m, md})

    assert Peer.call(n2, Node, :list, []) == [:"n1@svc.dyn.test"]
  end

  test "the README's telemetry table lists exactly the events, with the keys they carry" do
    rows =
      for line <- String.split(DynamicSrv.Test.Readme.text(), "\n"),
          [_, event, _when, measurements, metadata] <-
            [Regex.run(~r/^\| `(\[:dynamic_srv[^`]*\])` \| ([^|]*) \| ([^|]*) \| (.*) \|$/, line)],
          into: %{} do
        # The backticked names outside parentheses (which explain values).
        keys = fn cell ->
          cell = Regex.replace(~r/\([^()]*\)/, cell, "")
          for [_, key] <- Regex.scan(~r/`(\w+)`/, cell), do: key
        end

        {Code.eval_string(event) |> elem(0), {keys.(measurements), keys.(metadata)}}
      end

    assert rows == %{
             [:dynamic_srv, :poll, :stop] =>
               {~w(duration members joined left), ~w(topology service result error)},
             [:dynamic_srv, :outage, :start] =>
               {~w(system_time), ~w(topology service error members)},
             [:dynamic_srv, :outage, :stop] => {~w(duration failed_polls), ~w(topology service)},
             [:dynamic_srv, :lookup, :stop] =>
               {~w(duration), ~w(node family result reason address)}
           }
  end

  defp address_please(peer, name) do
    Peer.call(peer, DynamicSrv.Epmd, :address_please, [name, ~c"svc.dyn.test", :inet])
  end
end
