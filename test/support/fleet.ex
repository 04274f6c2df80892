defmodule DynamicSrv.Test.Fleet do
  @moduledoc false
  # A fleet of real nodes behind real DNS servers (dnsmasq, optionally behind a
  # DynamicSrv.Test.ScriptedDns that injects faults): the shared pieces of the membership,
  # fault (test/chaos), TLS and IPv6 suites. When the strategy runs, only it forms the mesh:
  # the nodes never call Node.connect themselves, and they run with `-connect_all false` so
  # global does not connect them transitively either (every connection is one the strategy
  # made, through the cache its SRV polls filled).
  #
  # A spec is `%{name: "n1", port: dist_port, ip: "127.0.0.1", netns: nil, service:
  # "svc.dyn.test"}`: the node `n1@svc.dyn.test`, listening on `port`, reached at `ip`,
  # running in `netns` (or on the host). Call these from the test process: they register
  # on_exit cleanups.
  import ExUnit.Assertions

  alias DynamicSrv.Test.{DnsServer, Mesh, NodeAgent, Peer, Ports, ScriptedDns}

  @service "svc.dyn.test"
  @poll 300
  # NXDOMAIN (not REFUSED) for unknown names; one process per TCP connection, since the
  # nodes' resolvers keep their TCP connections open (see DnsServer's :tcp_workers).
  @dns_opts [extra: ["--local=/dyn.test/"], tcp_workers: true]

  @doc "The service every fleet node is listed under unless its spec names another."
  def service, do: @service

  @doc "The polling interval start_clusters!/2 uses unless told otherwise."
  def poll_interval, do: @poll

  @doc """
  The strategy's connect/list MFAs, wrapped to count connect attempts per node and applied
  polls (see NodeAgent.counting_connect/1 and counting_list_nodes/0); they then do what the
  defaults do.
  """
  def counting do
    [
      connect: {NodeAgent, :counting_connect, []},
      list_nodes: {NodeAgent, :counting_list_nodes, []}
    ]
  end

  # --- specs and their DNS records ---------------------------------------------------------

  @doc """
  One spec per name, each on its own free port; `fields` (e.g. `ip`, `netns`, `service`) go
  in every spec.
  """
  def specs(names, fields \\ %{}) do
    ports = free_ports(length(names), [])
    defaults = %{ip: "127.0.0.1", netns: nil, service: @service}

    for {name, port} <- Enum.zip(names, ports),
        do: defaults |> Map.merge(fields) |> Map.merge(%{name: name, port: port})
  end

  defp free_ports(0, acc), do: acc

  defp free_ports(n, acc) do
    port = Ports.free()
    if port in acc, do: free_ports(n, acc), else: free_ports(n - 1, [port | acc])
  end

  @doc "A free port not in `taken`."
  def fresh_port(taken) do
    port = Ports.free()
    if port in taken, do: fresh_port(taken), else: port
  end

  defp service_of(spec), do: Map.get(spec, :service, @service)

  @doc "The SRV target (and A/AAAA record name) of a spec."
  def target(%{name: name} = spec), do: "#{name}.#{service_of(spec)}"

  @doc "The node name of a spec, as an atom."
  def node_name(%{name: name} = spec), do: :"#{name}@#{service_of(spec)}"

  @doc """
  The service SRV lists every node; each node also has its own SRV (what the epmd module
  asks for `name@host` on a cache miss) and an address record on the same name (AAAA when
  the spec's ip is an IPv6 one).
  """
  def records(specs) do
    Enum.flat_map(specs, fn spec ->
      t = target(spec)
      ip = Map.get(spec, :ip, "127.0.0.1")
      [{:srv, service_of(spec), t, spec.port}, {:srv, t, t, spec.port}, {:a, t, ip}]
    end)
  end

  @doc "The same records as `ScriptedDns.Wire` records, for ScriptedDns's `{:answer, records}`."
  def wire_records(specs) do
    Enum.flat_map(specs, fn spec ->
      t = target(spec)
      {:ok, ip} = :inet.parse_address(String.to_charlist(Map.get(spec, :ip, "127.0.0.1")))

      [{:srv, service_of(spec), 0, 0, spec.port, t}, {:srv, t, 0, 0, spec.port, t}, {:a, t, ip}]
    end)
  end

  # --- DNS servers ---------------------------------------------------------------------------

  @doc """
  Starts dnsmasq with `records`; `:extra` adds dnsmasq arguments to the defaults, the other
  options go to DnsServer.start!/2 (`:port`, `:listen_address`, `:netns`).
  """
  def start_dns!(records, opts \\ []) do
    {extra, opts} = Keyword.pop(opts, :extra, [])
    dns = DnsServer.start!(records, Keyword.update!(@dns_opts, :extra, &(&1 ++ extra)) ++ opts)
    ExUnit.Callbacks.on_exit(fn -> stop_dns(dns) end)
    dns
  end

  @doc """
  A dnsmasq serving `specs`, and a ScriptedDns in `:forward` mode in front of it: boot the
  nodes against the scripted one, then switch it to a fault.
  """
  def start_scripted_dns!(specs) do
    dnsmasq = start_dns!(records(specs))
    scripted = ScriptedDns.start!({{127, 0, 0, 1}, dnsmasq.port})
    ExUnit.Callbacks.on_exit(fn -> ScriptedDns.stop(scripted) end)
    {dnsmasq, scripted}
  end

  @doc """
  Stops this very dnsmasq (its command line names its own directory, so a recycled pid is
  never hit) and removes its files.
  """
  def stop_dns(dns) do
    case File.read("/proc/#{dns.os_pid}/cmdline") do
      {:ok, cmdline} -> if String.contains?(cmdline, dns.dir), do: DnsServer.stop(dns)
      {:error, _} -> :ok
    end

    File.rm_rf(dns.dir)
    :ok
  end

  @doc """
  A new dnsmasq on the same loopback port with new records. (DnsServer.restart!/3 reuses the
  directory, whose log already says "started", so it can return before the new server
  answers; a fresh directory makes start! wait for the new one.)
  """
  def restart_dns!(dns, records, extra \\ []) do
    stop_dns(dns)
    start_dns!(records, port: dns.port, extra: extra)
  end

  defp nameserver(%DnsServer{} = dns), do: DnsServer.nameserver(dns)
  defp nameserver(%ScriptedDns{} = dns), do: ScriptedDns.nameserver(dns)

  # --- booting -------------------------------------------------------------------------------

  # A short lookup timeout so that a DNS fault costs a poll half a second, not the default 3.
  defp env(spec, dns, extra) do
    Map.merge(
      %{
        "ERL_DIST_PORT" => Integer.to_string(spec.port),
        "DYNAMIC_SRV_NAMESERVERS" => nameserver(dns),
        "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "500"
      },
      extra
    )
  end

  @doc """
  Boots the nodes in parallel (each in its spec's netns, if any) against `dns` (a DnsServer
  or a ScriptedDns); the test process becomes the owner of every node's port. Options:
  `:erl_args`, a list or a function of the spec, added to `-connect_all false`;
  `global: :otp_defaults` leaves `-connect_all false` out (global connects transitively and
  prevents overlapping partitions, as in production).
  """
  def boot!(specs, dns, extra_env \\ %{}, opts \\ []) do
    erl_args =
      case Keyword.get(opts, :erl_args, []) do
        args when is_function(args, 1) -> args
        args when is_list(args) -> fn _spec -> args end
      end

    start_peers!(specs, fn spec ->
      Peer.start!(Atom.to_string(node_name(spec)), env(spec, dns, extra_env),
        erl_args: global_args(opts) ++ erl_args.(spec),
        netns: Map.get(spec, :netns),
        epmd_config: Keyword.get(opts, :epmd_config, :flag)
      )
    end)
  end

  defp global_args(opts) do
    if Keyword.get(opts, :global) == :otp_defaults, do: [], else: ["-connect_all", "false"]
  end

  @doc """
  Runs `start` (which returns a started Peer) on every item in parallel, makes the test
  process the owner of every node's port, and stops every node on exit. (Booting one by one
  would cost a VM start each; the port must be moved because the Task that opened it exits.)
  """
  def start_peers!(items, start, max_concurrency \\ 8) do
    parent = self()

    peers =
      items
      |> Task.async_stream(
        fn item ->
          peer = start.(item)
          true = Port.connect(peer.port, parent)
          Process.unlink(peer.port)
          peer
        end,
        timeout: 60_000,
        max_concurrency: max_concurrency
      )
      |> Enum.map(fn {:ok, peer} -> peer end)

    for peer <- peers, do: ExUnit.Callbacks.on_exit(fn -> Peer.stop(peer) end)
    peers
  end

  # --- the strategy ------------------------------------------------------------------------

  @doc """
  Starts DynamicSrv.Cluster on every peer: service, a 300 ms poll and `removal_delay: 0`
  (these tests count polls; the Consul test runs the default delay) unless `opts` say.
  """
  def start_clusters!(peers, opts) do
    opts = Keyword.merge([service: @service, polling_interval: @poll, removal_delay: 0], opts)

    for peer <- peers do
      assert {:ok, _pid} = Peer.call(peer, NodeAgent, :start_cluster, [opts])
    end

    :ok
  end

  @doc """
  Starts DynamicSrv.Cluster with the counting MFAs and `opts` on every peer, waits for the
  full mesh, and proves epmd was not used: where every fault test starts from.
  """
  def start_counted_mesh!(peers, opts) do
    start_clusters!(peers, opts ++ counting())
    assert_full_mesh(peers)
    for peer <- peers, do: Mesh.assert_no_epmd(peer)
    :ok
  end

  @doc """
  Where the DNS fault tests start: the named nodes behind a ScriptedDns (forwarding to
  dnsmasq), logs captured, DynamicSrv.Cluster running with the counting MFAs and
  `cluster_opts`, full mesh, no epmd. Returns `%{specs: specs, scripted: scripted, peers: peers, everyone: names}`
  (`everyone` sorted, as `members/1` is).
  """
  def boot_behind_scripted_dns!(names, cluster_opts \\ []) do
    specs = specs(names)
    {_dnsmasq, scripted} = start_scripted_dns!(specs)
    peers = boot!(specs, scripted)
    capture_logs!(peers)
    start_counted_mesh!(peers, cluster_opts)

    %{
      specs: specs,
      scripted: scripted,
      peers: peers,
      everyone: Enum.sort(Enum.map(peers, & &1.name))
    }
  end

  @doc "Keeps every peer's log events at info and above, for `logs/1`."
  def capture_logs!(peers) do
    for peer <- peers do
      # Kernel's logger drops info events by default (primary level notice) when Elixir's
      # Logger application is not started, as in these bare nodes.
      :ok = Peer.call(peer, :logger, :set_primary_config, [:level, :info])
      :ok = Peer.call(peer, NodeAgent, :start_log_capture, [:info])
    end

    :ok
  end

  @doc "What a peer logged since `capture_logs!/1`: `[{level, text}]`."
  def logs(peer), do: Peer.call(peer, NodeAgent, :captured_logs, [])

  @doc "The outage warnings and recovery lines a peer logged about the service's lookups."
  def outage_logs(peer) do
    for {level, text} <- logs(peer), text =~ "DNS lookup of #{@service}", do: {level, text}
  end

  # --- observing -----------------------------------------------------------------------------

  def node_list(peer), do: Enum.sort(Peer.call(peer, Node, :list, []))

  @doc "Whether every peer is connected to exactly the other peers, right now."
  def full_mesh?(peers) do
    names = Enum.map(peers, & &1.name)
    Enum.all?(peers, fn peer -> node_list(peer) == Enum.sort(names -- [peer.name]) end)
  end

  def assert_full_mesh(peers) do
    names = Enum.map(peers, & &1.name)

    for peer <- peers do
      expected = Enum.sort(names -- [peer.name])

      assert Mesh.eventually(fn -> node_list(peer) == expected end, 300),
             "#{peer.name} sees #{inspect(node_list(peer))}, expected #{inspect(expected)}"
    end

    :ok
  end

  @doc "Every peer is connected to every other one (and maybe to nodes outside `peers`)."
  def assert_connected(peers) do
    for peer <- peers, other <- peers, other != peer do
      assert Mesh.eventually(fn -> other.name in node_list(peer) end, 300),
             "#{peer.name} is not connected to #{other.name}: #{inspect(node_list(peer))}"
    end
  end

  @doc "The members the peer's DynamicSrv.Cluster holds, sorted."
  def members(peer), do: Enum.sort(Peer.call(peer, NodeAgent, :cluster_members, []))

  @doc "How many nodedown events the peer's recorder saw."
  def nodedowns(peer), do: Peer.call(peer, NodeAgent, :nodedown_count, [])

  @doc "Polls the peer applied so far (needs the `counting/0` MFAs)."
  def polls(peer), do: Peer.call(peer, NodeAgent, :list_nodes_calls, [])

  @doc """
  Waits until every peer has applied at least `n` more polls (counted by the counting
  :list_nodes MFA, which the cluster calls once per applied poll). Allows a second per poll
  and at least a minute: a poll during a black hole also waits out the lookup timeout.
  """
  def await_polls(peers, n) do
    start = Map.new(peers, &{&1.name, polls(&1)})
    tries = max(1200, n * 20)

    for peer <- peers do
      assert Mesh.eventually(fn -> polls(peer) >= start[peer.name] + n end, tries),
             "#{peer.name} did not apply #{n} polls"
    end

    :ok
  end

  @doc "How many times the peer's strategy tried to connect to `node` (counting MFAs)."
  def connects(peer, node), do: Peer.call(peer, NodeAgent, :connect_count, [node])
end
