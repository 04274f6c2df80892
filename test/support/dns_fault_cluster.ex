defmodule DynamicSrv.Test.DnsFaultCluster do
  @moduledoc false
  # Real nodes running DynamicSrv.Cluster behind a `DynamicSrv.Test.ScriptedDns`, which
  # forwards to a real dnsmasq until a test switches it to a fault. Call from a test process:
  # everything started is stopped by `on_exit`.

  import ExUnit.Assertions
  import ExUnit.Callbacks, only: [on_exit: 1]

  alias DynamicSrv.Test.{DnsServer, Mesh, NodeAgent, Peer, Ports, ScriptedDns}

  @service "svc.dyn.test"
  @poll 300

  # The strategy's connect/list MFAs, counting connect attempts and applied polls.
  @counting [
    connect: {NodeAgent, :counting_connect, []},
    list_nodes: {NodeAgent, :counting_list_nodes, []}
  ]

  def service, do: @service
  def poll_interval, do: @poll

  @doc ~s(`%{name: "n1", port: free_port}` for each name.)
  def specs(names) do
    Enum.reduce(names, [], fn name, acc ->
      [%{name: name, port: fresh_port(Enum.map(acc, & &1.port))} | acc]
    end)
    |> Enum.reverse()
  end

  defp fresh_port(taken) do
    port = Ports.free()
    if port in taken, do: fresh_port(taken), else: port
  end

  def target(%{name: name}), do: "#{name}.#{@service}"
  def node_name(%{name: name}), do: :"#{name}@#{@service}"

  @doc "dnsmasq records: the service SRV lists every node; each has its own SRV and A."
  def records(specs) do
    Enum.flat_map(specs, fn spec ->
      t = target(spec)
      [{:srv, @service, t, spec.port}, {:srv, t, t, spec.port}, {:a, t, "127.0.0.1"}]
    end)
  end

  @doc "The same records as `ScriptedDns.Wire` records, for `{:answer, records}`."
  def wire_records(specs) do
    Enum.flat_map(specs, fn spec ->
      t = target(spec)

      [
        {:srv, @service, 0, 0, spec.port, t},
        {:srv, t, 0, 0, spec.port, t},
        {:a, t, {127, 0, 0, 1}}
      ]
    end)
  end

  @doc "A dnsmasq serving `specs`, and a ScriptedDns in `:forward` mode in front of it."
  def start_dns!(specs) do
    dnsmasq = DnsServer.start!(records(specs), extra: ["--local=/dyn.test/"], tcp_workers: true)

    on_exit(fn -> DnsServer.stop_and_clean(dnsmasq) end)
    scripted = ScriptedDns.start!({{127, 0, 0, 1}, dnsmasq.port})
    on_exit(fn -> ScriptedDns.stop(scripted) end)
    {dnsmasq, scripted}
  end

  @doc "Boots the nodes in parallel, pointed at the scripted server, with `-connect_all false`."
  def boot!(specs, scripted, extra_env \\ %{}) do
    parent = self()

    peers =
      specs
      |> Task.async_stream(
        fn spec ->
          env =
            Map.merge(
              %{
                "ERL_DIST_PORT" => Integer.to_string(spec.port),
                "DYNAMIC_SRV_NAMESERVERS" => ScriptedDns.nameserver(scripted),
                "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "500"
              },
              extra_env
            )

          peer = Peer.start!("#{spec.name}@#{@service}", env, erl_args: ["-connect_all", "false"])

          true = Port.connect(peer.port, parent)
          Process.unlink(peer.port)
          peer
        end,
        timeout: 60_000,
        max_concurrency: 8
      )
      |> Enum.map(fn {:ok, peer} -> peer end)

    for peer <- peers, do: on_exit(fn -> Peer.stop(peer) end)
    peers
  end

  @doc "Starts log capture and DynamicSrv.Cluster (counting MFAs) on every peer."
  def start_clusters!(peers, opts \\ []) do
    opts = Keyword.merge([service: @service, polling_interval: @poll] ++ @counting, opts)

    for peer <- peers do
      # Kernel's logger drops info events by default (primary level notice) when Elixir's
      # Logger application is not started, as in these bare nodes.
      :ok = Peer.call(peer, :logger, :set_primary_config, [:level, :info])
      :ok = Peer.call(peer, NodeAgent, :start_log_capture, [:info])
      assert {:ok, _pid} = Peer.call(peer, NodeAgent, :start_cluster, [opts])
    end

    :ok
  end

  def node_list(peer), do: Enum.sort(Peer.call(peer, Node, :list, []))
  def members(peer), do: Enum.sort(Peer.call(peer, NodeAgent, :cluster_members, []))
  def polls(peer), do: Peer.call(peer, NodeAgent, :list_nodes_calls, [])
  def nodedowns(peer), do: Peer.call(peer, NodeAgent, :nodedown_count, [])
  def logs(peer), do: Peer.call(peer, NodeAgent, :captured_logs, [])

  def assert_full_mesh(peers) do
    names = Enum.map(peers, & &1.name)

    for peer <- peers do
      expected = Enum.sort(names -- [peer.name])

      assert Mesh.eventually(fn -> node_list(peer) == expected end, 300),
             "#{peer.name} sees #{inspect(node_list(peer))}, expected #{inspect(expected)}"
    end

    :ok
  end

  @doc "Waits until every peer has applied at least `n` more polls."
  def await_polls(peers, n) do
    start = Map.new(peers, &{&1.name, polls(&1)})

    for peer <- peers do
      assert Mesh.eventually(fn -> polls(peer) >= start[peer.name] + n end, 1200),
             "#{peer.name} did not apply #{n} polls"
    end

    :ok
  end

  @doc "The outage warnings and recovery lines a peer logged for the service."
  def outage_logs(peer) do
    for {level, text} <- logs(peer),
        text =~ "DNS lookup of #{@service}",
        do: {level, text}
  end

  @doc "Milliseconds since `t0` (a `System.monotonic_time/0`)."
  def ms_since(t0),
    do: System.convert_time_unit(System.monotonic_time() - t0, :native, :microsecond) / 1000

  @doc "min / median / p90 / max of a list of numbers, rounded, for printing."
  def distribution(values) do
    sorted = Enum.sort(values)
    n = length(sorted)
    at = fn q -> Enum.at(sorted, min(n - 1, trunc(q * n))) end

    "n=#{n} min=#{round1(hd(sorted))} median=#{round1(at.(0.5))} p90=#{round1(at.(0.9))} " <>
      "max=#{round1(List.last(sorted))}"
  end

  defp round1(x), do: Float.round(x / 1, 1)
end
