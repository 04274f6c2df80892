defmodule DynamicSrv.Integration.LibclusterLogsTest do
  # Under libcluster (its 3.5 test double, compiled into a real node), behind a real dnsmasq:
  # a failed connect is one line (libcluster's), and this package's lines carry libcluster's
  # `[libcluster:<topology>] ` prefix.
  use ExUnit.Case, async: false
  @moduletag :integration

  alias DynamicSrv.Test.{DnsServer, Mesh, NodeAgent, Peer, Ports}

  @tag timeout: 120_000
  test "one line per failed connect, and the topology prefix on the outage warning" do
    [p1, p_down] = [Ports.free(), Ports.free()]

    records = [
      {:srv, "svc.dyn.test", "n1.svc.dyn.test", p1},
      {:srv, "svc.dyn.test", "down.svc.dyn.test", p_down},
      {:srv, "n1.svc.dyn.test", "n1-host.dyn.test", p1},
      {:srv, "down.svc.dyn.test", "n1-host.dyn.test", p_down},
      {:a, "n1-host.dyn.test", "127.0.0.1"}
    ]

    dns = DnsServer.start!(records, extra: ["--local=/dyn.test/"])
    on_exit(fn -> DnsServer.stop_and_clean(dns) end)

    n1 =
      Peer.start!("n1@svc.dyn.test", %{
        "ERL_DIST_PORT" => Integer.to_string(p1),
        "DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns),
        "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "300"
      })

    on_exit(fn -> Peer.stop(n1) end)

    double = Path.expand("../fixtures/libcluster/cluster_strategy.ex", __DIR__)
    Peer.call(n1, Code, :compile_file, [double])
    assert Peer.call(n1, Code, :ensure_loaded?, [Cluster.Strategy])
    Peer.call(n1, NodeAgent, :start_log_capture, [:debug])

    state = %{
      topology: :app,
      connect: {:net_kernel, :connect_node, []},
      disconnect: {:erlang, :disconnect_node, []},
      list_nodes: {:erlang, :nodes, [:connected]},
      config: [service: "svc.dyn.test", polling_interval: 600_000],
      meta: nil
    }

    {:ok, pid} = Peer.call(n1, Cluster.Strategy.DynamicSrv, :start_link, [[state]])
    :ok = Peer.call(n1, DynamicSrv.Cluster, :poll_now, [pid])

    down = "down@svc.dyn.test"

    assert Mesh.eventually(fn ->
             Peer.call(n1, Cluster.Strategy, :calls, [:connect_nodes]) |> Enum.member?(:"#{down}")
           end)

    # Wait for the attempt's outcome, then count the lines naming the node.
    assert Mesh.eventually(fn ->
             Enum.any?(logs(n1), fn {_, text} -> text =~ "unable to connect to :\"#{down}\"" end)
           end)

    # The first poll (at start) and poll_now may both have dialed it: each attempt's line
    # comes when its connect fails, so the count is compared once no line is pending.
    attempts = fn ->
      Peer.call(n1, Cluster.Strategy, :calls, [:connect_nodes]) |> Enum.count(&(&1 == :"#{down}"))
    end

    lines = fn -> for {level, text} <- logs(n1), text =~ down, do: {level, text} end
    assert Mesh.eventually(fn -> length(lines.()) >= attempts.() end)
    Process.sleep(500)
    IO.puts("lines for #{down}: #{inspect(lines.())}")
    assert length(lines.()) == attempts.()

    assert Enum.all?(lines.(), fn {_, text} -> text =~ "[libcluster:app] unable to connect to" end)

    DnsServer.stop(dns)
    :ok = Peer.call(n1, DynamicSrv.Cluster, :poll_now, [pid])

    assert Enum.any?(logs(n1), fn {level, text} ->
             level == :warning and
               text =~ ~r/^\[libcluster:app\] DNS lookup of svc\.dyn\.test failed: /
           end),
           inspect(logs(n1))
  end

  defp logs(peer), do: Peer.call(peer, NodeAgent, :captured_logs, [])
end
