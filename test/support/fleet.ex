defmodule DynamicSrv.Test.Fleet do
  @moduledoc false
  # A fleet of real nodes, each running DynamicSrv.Cluster, behind real dnsmasq servers: the
  # shared pieces of the membership and fault (test/chaos) suites. Only the strategy forms the
  # mesh: the nodes never call Node.connect themselves, and they run with `-connect_all
  # false` so global does not connect them transitively either (every connection is one the
  # strategy made, through the cache its SRV polls filled).
  #
  # A spec is `%{name: "n1", port: dist_port, ip: "127.0.0.1", netns: nil}`: the node
  # `n1@svc.dyn.test`, listening on `port`, reached at `ip`, running in `netns` (or on the host).
  # Call these from the test process: they register on_exit cleanups.
  import ExUnit.Assertions

  alias DynamicSrv.Test.{DnsServer, Mesh, NodeAgent, Peer, Ports}

  @service "svc.dyn.test"
  @poll 300
  # NXDOMAIN (not REFUSED) for unknown names; one process per TCP connection, since the
  # nodes' resolvers keep their TCP connections open (see DnsServer's :tcp_workers).
  @dns_opts [extra: ["--local=/dyn.test/"], tcp_workers: true]

  @doc "The service every fleet node is listed under."
  def service, do: @service

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

  @doc "One spec per name, each on its own free port; `fields` (e.g. `ip`, `netns`) go in every spec."
  def specs(names, fields \\ %{}) do
    ports = free_ports(length(names), [])

    for {name, port} <- Enum.zip(names, ports),
        do: Map.merge(%{name: name, port: port, ip: "127.0.0.1", netns: nil}, fields)
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

  @doc "The SRV target (and A record name) of a spec."
  def target(%{name: name}), do: "#{name}.#{@service}"

  @doc """
  The service SRV lists every node; each node also has its own SRV (what the epmd module
  asks for `name@host` on a cache miss) and an A record on the same name.
  """
  def records(specs) do
    Enum.flat_map(specs, fn spec ->
      t = target(spec)
      ip = Map.get(spec, :ip, "127.0.0.1")
      [{:srv, @service, t, spec.port}, {:srv, t, t, spec.port}, {:a, t, ip}]
    end)
  end

  @doc "Starts dnsmasq with `records`; `:extra` adds dnsmasq arguments to the defaults."
  def start_dns!(records, opts \\ []) do
    {extra, opts} = Keyword.pop(opts, :extra, [])
    dns = DnsServer.start!(records, Keyword.update!(@dns_opts, :extra, &(&1 ++ extra)) ++ opts)
    ExUnit.Callbacks.on_exit(fn -> stop_dns(dns) end)
    dns
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

  defp env(spec, dns, extra) do
    Map.merge(
      %{
        "ERL_DIST_PORT" => Integer.to_string(spec.port),
        "DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns),
        "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "500"
      },
      extra
    )
  end

  @doc """
  Boots the nodes in parallel (each in its spec's netns, if any); the test process becomes
  the owner of every node's port. Options: `:erl_args` (added to `-connect_all false`).
  """
  def boot!(specs, dns, extra_env \\ %{}, opts \\ []) do
    parent = self()
    erl_args = ["-connect_all", "false" | Keyword.get(opts, :erl_args, [])]

    peers =
      specs
      |> Task.async_stream(
        fn spec ->
          peer =
            Peer.start!("#{spec.name}@#{@service}", env(spec, dns, extra_env),
              erl_args: erl_args,
              netns: Map.get(spec, :netns)
            )

          true = Port.connect(peer.port, parent)
          Process.unlink(peer.port)
          peer
        end,
        timeout: 60_000,
        max_concurrency: 8
      )
      |> Enum.map(fn {:ok, peer} -> peer end)

    for peer <- peers, do: ExUnit.Callbacks.on_exit(fn -> Peer.stop(peer) end)
    peers
  end

  @doc "Starts DynamicSrv.Cluster on every peer (service and a 300 ms poll unless `opts` say)."
  def start_clusters!(peers, opts) do
    opts = Keyword.merge([service: @service, polling_interval: @poll], opts)

    for peer <- peers do
      assert {:ok, _pid} = Peer.call(peer, NodeAgent, :start_cluster, [opts])
    end
  end

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
  end

  @doc "Every peer is connected to every other one (and maybe to nodes outside `peers`)."
  def assert_connected(peers) do
    for peer <- peers, other <- peers, other != peer do
      assert Mesh.eventually(fn -> other.name in node_list(peer) end, 300),
             "#{peer.name} is not connected to #{other.name}: #{inspect(node_list(peer))}"
    end
  end

  def members(peer), do: Peer.call(peer, NodeAgent, :cluster_members, [])

  @doc "Polls the peer applied so far (needs the `counting/0` MFAs)."
  def polls(peer), do: Peer.call(peer, NodeAgent, :list_nodes_calls, [])

  @doc """
  Waits until every peer has applied at least `n` more polls (counted by the counting
  :list_nodes MFA, which the cluster calls once per applied poll).
  """
  def await_polls(peers, n) do
    start = Map.new(peers, &{&1.name, polls(&1)})

    for peer <- peers do
      assert Mesh.eventually(fn -> polls(peer) >= start[peer.name] + n end, 600),
             "#{peer.name} did not apply #{n} polls"
    end
  end

  @doc "How many times the peer's strategy tried to connect to `node` (counting MFAs)."
  def connects(peer, node), do: Peer.call(peer, NodeAgent, :connect_count, [node])
end
