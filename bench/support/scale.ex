defmodule DynamicSrv.Bench.Scale do
  @moduledoc false
  # Section 10 (issue 15): 25, 50 and 100 real nodes, each on its own loopback address
  # 127.0.C.k (Linux routes all of 127.0.0.0/8 to lo: no alias, no namespace, no root), at the
  # default 5 s poll, against dnsmasq and against ConsulDns, ours and classic side by side.
  #
  # A *cluster* is one arm against one DNS server of its own: N registered nodes plus one
  # booted spare (the joiner). Clusters are run in *groups* that fit the machine's memory
  # (about 310 VMs at once): in a group every cluster boots and forms one after the other
  # (each timed on its own), then the steady-state window, the join, the leave and the
  # rolling restart run in all of them at once.
  #
  #   dnsmasq: nodes nK@sN-C.bench.test, SRV service -> nK.sN-C.bench.test:port (+ A record);
  #            ours: DynamicSrv.Epmd (srv mode) + DynamicSrv.Cluster; classic: ClassicEpmd
  #            (SRV + A per address_please, no NIF) + ClassicPoller. A record update restarts
  #            dnsmasq (it cannot reload SRV records).
  #   consul:  the Consul + Nomad recipe of section 8: app-PORT@IP, DynamicSrv.Epmd in name
  #            mode in both arms; ours: DynamicSrv.Cluster (TCP); classic: ClassicPoller (one
  #            :inet_res query, 3 records without EDNS). A record update is instant.

  alias DynamicSrv.Bench.{Consul, Dns, Os, Peer, Stats}
  alias DynamicSrv.Test.{ConsulDns, NodeAgent}

  @agent DynamicSrv.Bench.Agent
  @warnings DynamicSrv.Bench.Agent.Warnings
  @interval 5_000
  @consul_service "my-app.service.consul"
  # Three groups (25 and 50 nodes; the 100-node pair against dnsmasq; the pair against
  # ConsulDns): ~55 MB a VM, 17 GB of this machine's 24 at the peak.
  @max_vms 310
  # Three 100-node clusters rolling out at once overloaded the 2 cores (a VM did not boot
  # in 90 s; tens of thousands of nodedowns): a group takes at most two of that size.
  @max_large 2
  @large 100
  # A VM needs about 55 MB; a cluster is not booted without this much headroom per VM.
  @mb_per_vm 80
  @sample_ms 250
  # At 100 nodes a wave's new VMs mesh while 25 old ones shut down: 11–17 s when they booted
  # after the old ones had gone, over 20 s when their pollers started at the SIGTERM.
  @wave_timeout 45_000
  @call_timeout 30_000
  # A mesh sample a node has not answered by then counts as "not in the mesh yet".
  @sample_timeout 10_000
  # The nodes under test run below the DNS servers and this harness: a real Consul agent or
  # dnsmasq has its own cores. At niceness 5, 100 busy nodes starved ConsulDns's acceptor
  # (thousands of TCP listen overflows, polls asked again: 1.78 queries per poll). Under
  # SCHED_IDLE (any ordinary process first) a dnsmasq restart amid 200 starved nodes took
  # 80 s, and waves took longer than at niceness 19.
  @nice 19
  # And this harness (ConsulDns answers in it) and dnsmasq above every ordinary process: at
  # niceness 0, 100 VMs' hundreds of threads outweighed its 2 schedulers. Two 100-node
  # rollouts at once: a ConsulDns query took 26 s, a registration 20–28 s, and a wave's
  # pollers, whose every poll failed, never listed each other.
  @server_nice -10
  # Schedulers that sleep instead of spinning when idle: 200 VMs share 2 cores.
  @vm_flags ["+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"]

  @doc """
  Options: `sizes` ([25, 50, 100]), `steady_ms` (60_000), `pop_off` (the size at which ours
  against dnsmasq also runs with `prevent_overlapping_partitions false`; default nil: none),
  `cost_members` ([100, 1000]), `cost_polls` (100), `only` (a predicate on a cluster's
  `%{dns:, arm:, pop:, n:}`: just those clusters, for trying one corner).
  """
  def run(opts \\ []) do
    sizes = Keyword.get(opts, :sizes, [25, 50, 100])
    pop_off = Keyword.get(opts, :pop_off)
    only = Keyword.get(opts, :only, fn _cluster -> true end)
    cfg = %{steady_ms: Keyword.get(opts, :steady_ms, 60_000)}

    specs =
      for n <- Enum.sort(sizes),
          # Both arms against one DNS server share a group, so they see the same load.
          spec <-
            if(n == pop_off, do: [{:dnsmasq, :ours, false}, {:consul, :ours, false}], else: []) ++
              [{:dnsmasq, :ours, true}, {:dnsmasq, :classic, true}] ++
              [{:consul, :ours, true}, {:consul, :classic, true}] do
        {dns, arm, pop} = spec
        %{dns: dns, arm: arm, pop: pop, n: n}
      end
      |> Enum.filter(only)
      |> Enum.with_index(1)
      |> Enum.map(fn {spec, c} -> Map.put(spec, :net, c) end)

    :persistent_term.put({__MODULE__, :t0}, System.monotonic_time(:millisecond))
    cfg = Map.put(cfg, :priority, Os.renice(System.pid(), @server_nice))

    results =
      specs
      |> groups()
      |> Enum.reduce(%{}, fn group, acc ->
        labels = Enum.map_join(group, ", ", &label/1)
        IO.puts(:stderr, "    #{clock()} scale: #{labels}")
        Map.merge(acc, guarded_group(group, cfg))
      end)

    IO.puts(:stderr, "    scale: one poll's CPU")

    cost =
      guarded(fn ->
        poll_cost(Keyword.get(opts, :cost_members, [100, 1000]), opts[:cost_polls] || 100)
      end)

    section(specs, results, cost, cfg)
  end

  defp label(s),
    do: "#{s.n} #{s.dns} #{s.arm}#{if s.pop, do: "", else: " (pop off)"}"

  defp key(s), do: {s.dns, s.arm, s.pop, s.n}

  # Consecutive clusters while their VMs fit @max_vms and at most @max_large are large.
  defp groups(specs) do
    specs
    |> Enum.chunk_while(
      [],
      fn s, group ->
        vms = Enum.sum(Enum.map([s | group], &(&1.n + 1)))
        large = Enum.count([s | group], &(&1.n >= @large))

        if group != [] and (vms > @max_vms or large > @max_large),
          do: {:cont, Enum.reverse(group), [s]},
          else: {:cont, [s | group]}
      end,
      fn group -> {:cont, Enum.reverse(group), []} end
    )
  end

  # A raise or an exit (a call to an overloaded ConsulDns timing out) costs the cluster's
  # cells, not the run.
  defp guarded(fun) do
    # A task linked below this process (a call to every node, a boot) that crashes then
    # surfaces here as an exit from Task.await, instead of killing the whole run.
    Process.flag(:trap_exit, true)
    fun.()
  rescue
    error ->
      IO.puts(:stderr, Exception.format(:error, error, __STACKTRACE__))
      %{failed: Exception.message(error)}
  catch
    :exit, reason ->
      IO.puts(:stderr, "exit: #{inspect(reason, limit: 5)}")
      %{failed: "exit: #{inspect(reason, limit: 3, printable_limit: 80)}"}
  end

  # --- one group ------------------------------------------------------------------------

  defp guarded_group(specs, cfg) do
    Process.put(:scale_clusters, [])
    tracked = Os.tracked()

    try do
      clusters =
        for spec <- specs do
          c = guarded(fn -> form(boot(spec)) end)
          c = if c[:failed], do: Map.merge(spec, c), else: c
          # A cluster that never formed has no steady state to measure: stopped now, so its
          # churn does not load the clusters booting and measured after it.
          c = if c[:peers] && c.formed_us == nil, do: retire(c), else: c
          Process.put(:scale_clusters, [c | Process.get(:scale_clusters)])
          c
        end

      clusters = each(clusters, &(&1[:peers] && steady(&1, cfg)))
      # Join, leave and rolling restart need a mesh that holds: a cluster that never formed,
      # or lost links all through the steady window (the classic rule against Consul's
      # trimmed answers), is not taken further.
      clusters = Enum.map(clusters, &Map.put(&1, :stable, stable?(&1)))
      # Done with those: their churn (the classic poller against Consul's trimmed answers
      # reconnects all the time) would only load the machine the others still measure on.
      clusters = Enum.map(clusters, &if(&1.stable, do: &1, else: retire(&1)))
      clusters = each(clusters, &(&1.stable && guarded_merge(&1, :join)))
      clusters = each(clusters, &(&1.stable && leave(&1)))
      # The rollouts' new VMs boot ahead of their waves; all at once if they fit.
      replacements = clusters |> Enum.filter(& &1.stable) |> Enum.map(&MapSet.size(&1.registered))
      # (At 100 nodes clusters roll out one at a time: one cluster's replacements at once.)
      need = if large?(clusters), do: Enum.max([0 | replacements]), else: Enum.sum(replacements)
      upfront? = Os.mem_available_mb() >= need * @mb_per_vm
      clusters = each_rollout(clusters, &(&1.stable && rolling(&1, upfront?)))
      Process.put(:scale_clusters, clusters)
      Map.new(clusters, &{key(&1), result(&1)})
    after
      Enum.each(Process.delete(:scale_clusters) || [], &teardown/1)
      # VMs of a phase that failed half-way (replacements booted for a rollout that raised)
      # are in no cluster's map: every VM this group started goes.
      Os.kill_all(for {pid, _} <- Os.tracked() -- tracked, do: pid)
    end
  end

  defp stable?(c), do: c[:formed_us] != nil and match?(%{downs: 0}, c[:steady])

  defp guarded_merge(c, :join) do
    case guarded(fn -> join(c) end) do
      %{failed: why} -> Map.put(c, :join_failed, why)
      c -> c
    end
  end

  # Runs `fun` on every cluster at once; a cluster it returns nil or false for is unchanged,
  # one it fails for keeps the failure.
  defp each(clusters, fun) do
    clusters
    |> Enum.map(fn c ->
      Task.async(fn ->
        case guarded(fn -> fun.(c) end) do
          %{failed: why} -> Map.update(c, :phase_failures, [why], &[why | &1])
          nil -> c
          false -> c
          c -> c
        end
      end)
    end)
    |> Task.await_many(:infinity)
    |> tap(&Process.put(:scale_clusters, &1))
  end

  # 100-node rollouts one cluster at a time, ours first: beside the classic arm's first wave
  # (6,831 links lost), calls to ours' 100 nodes timed out after 30 s and ended its rollout.
  # Each then rolls out beside the other cluster idle, the same load for both arms.
  defp each_rollout(clusters, fun) do
    if large?(clusters) do
      order = Enum.sort_by(clusters, &(&1.arm != :ours))

      Enum.reduce(order, clusters, fn c, all ->
        [rolled] = each([c], fun)
        all = Enum.map(all, &if(key(&1) == key(rolled), do: rolled, else: &1))
        Process.put(:scale_clusters, all)
        all
      end)
    else
      each(clusters, fun)
    end
  end

  defp large?(clusters), do: Enum.any?(clusters, &(&1.n >= @large))

  defp retire(c) do
    teardown(c)
    Map.drop(c, [:peers, :server, :dir])
  end

  defp teardown(c) do
    Peer.stop_all(Map.values(c[:peers] || %{}))

    case c[:server] do
      %Dns{} = dns -> Dns.stop_and_clean(dns)
      %ConsulDns{} = consul -> ConsulDns.stop(consul)
      nil -> :ok
    end

    if c[:dir], do: File.rm_rf(c.dir)
  end

  # --- boot and formation ---------------------------------------------------------------

  defp boot(spec) do
    n = spec.n
    free_mb = Os.mem_available_mb()

    if free_mb < (n + 1) * @mb_per_vm,
      do: raise("not booted: #{free_mb} MB available, #{n + 1} VMs need #{(n + 1) * @mb_per_vm}")

    c =
      Map.merge(spec, %{
        service: "s#{n}-#{spec.net}.bench.test",
        dir: Os.tmp_dir("scale"),
        gen: 0,
        nodes: Map.new(1..(n + 1), &{&1, node_spec(spec, &1)}),
        registered: MapSet.new(1..n)
      })

    c = Map.put(c, :server, start_dns(c))
    Process.put(:scale_clusters, [c | Process.get(:scale_clusters)])
    t0 = System.monotonic_time(:millisecond)
    peers = start_peers(c, Map.keys(c.nodes))
    boot_ms = System.monotonic_time(:millisecond) - t0
    true = Enum.all?(call(Map.values(peers), NodeAgent, :start_recorder, []), &(&1 == :ok))
    Map.merge(c, %{peers: peers, boot_ms: boot_ms})
  end

  defp node_spec(spec, k) do
    ip = {127, 0, spec.net, k}
    port = Os.free_port()
    %{ip: ip, port: port, name: node_name(spec, k, ip, port)}
  end

  defp node_name(%{dns: :dnsmasq} = s, k, _ip, _port), do: "n#{k}@s#{s.n}-#{s.net}.bench.test"
  defp node_name(%{dns: :consul}, _k, ip, port), do: "app-#{port}@#{:inet.ntoa(ip)}"

  defp start_dns(%{dns: :dnsmasq} = c), do: prioritized(Dns.start!(records(c)))
  defp start_dns(%{dns: :consul} = c), do: register(c, ConsulDns.start!(dc: "dc1"), %{})

  # Its TCP workers, forked per connection, inherit it.
  defp prioritized(%Dns{os_pid: os_pid} = dns) do
    Os.renice(os_pid, @server_nice)
    dns
  end

  defp records(c) do
    for k <- Enum.sort(c.registered), node = c.nodes[k], reduce: [] do
      acc ->
        target = "n#{k}.#{c.service}"

        acc ++
          [
            {:srv, c.service, target, node.port},
            {:srv, target, target, node.port},
            {:a, target, node.ip |> :inet.ntoa() |> to_string()}
          ]
    end
  end

  # ConsulDns: (re)registers what changed since `before` (k => port), as Nomad does.
  defp register(c, consul, before) do
    now = Map.new(c.registered, &{&1, c.nodes[&1].port})

    for {k, port} <- before,
        now[k] != port,
        do: :ok = ConsulDns.deregister(consul, "my-app", "alloc-#{k}-#{port}")

    for {k, port} <- now, before[k] != port do
      node = c.nodes[k]

      :ok =
        ConsulDns.register(consul, "my-app", "alloc-#{k}-#{port}", %{
          node: "client-#{k}",
          address: node.ip,
          port: port
        })
    end

    consul
  end

  # Makes DNS list `c.registered` at their current ports.
  defp publish(%{dns: :dnsmasq} = c, _before),
    do: %{c | server: prioritized(Dns.restart!(c.server, records(c)))}

  defp publish(%{dns: :consul} = c, before), do: %{c | server: register(c, c.server, before)}

  defp listed(c), do: Map.new(c.registered, &{&1, c.nodes[&1].port})

  defp start_peers(c, ks) do
    dns =
      case c.server do
        %Dns{} = dns -> dns
        %ConsulDns{port: port} -> %{dir: c.dir, port: port}
      end

    shared =
      [erl_args: @vm_flags ++ if(c.pop, do: [], else: pop_off_flags()), nice: @nice] ++
        if c.dns == :consul,
          do: [epmd_module: "Elixir.DynamicSrv.Epmd", env: %{"DYNAMIC_SRV_PORT_MODE" => "name"}],
          else: []

    specs =
      for k <- ks, node = c.nodes[k] do
        interface = "{" <> (node.ip |> Tuple.to_list() |> Enum.join(",")) <> "}"

        {node.name, c.arm, node.port,
         [erl_args: ["-kernel", "inet_dist_use_interface", interface]]}
      end

    Enum.zip(ks, Peer.start_many!(specs, dns, shared)) |> Map.new()
  end

  defp pop_off_flags, do: ["-kernel", "prevent_overlapping_partitions", "false"]

  defp poller_opts(%{dns: :dnsmasq, arm: :ours} = c),
    do: [service: c.service, polling_interval: @interval, nameservers: Dns.nameserver(c.server)]

  defp poller_opts(%{dns: :dnsmasq, arm: :classic} = c),
    do: [service: c.service, polling_interval: @interval]

  defp poller_opts(%{dns: :consul, arm: :ours} = c),
    do: [
      service: @consul_service,
      polling_interval: @interval,
      node_naming: {:basename_port_ip, "app"},
      nameservers: ConsulDns.nameserver(c.server)
    ]

  defp poller_opts(%{dns: :consul, arm: :classic} = c),
    do: [
      service: @consul_service,
      polling_interval: @interval,
      node_naming: {:basename_port_ip, "app"},
      inet_res_options: [nameservers: [{{127, 0, 0, 1}, c.server.port}]]
    ]

  defp start_pollers(c, ks, at_us),
    do: call(Enum.map(ks, &c.peers[&1]), @agent, :start_poller_at, [c.arm, at_us, poller_opts(c)])

  defp members(c), do: c.registered |> Enum.sort() |> Enum.map(&c.peers[&1])

  # All N registered nodes booted; every poller starts at T; time until each lists the others.
  defp form(c) do
    peers = members(c)
    watch(peers)
    q0 = queries(c)
    t = System.os_time(:microsecond) + 500_000
    start_pollers(c, Enum.sort(c.registered), t)
    # Past 1.5× the boot time the goal is missed; a mesh that forms later (by 30 s, or 1.5×
    # the boot time if longer, at most 45 s) is still measured on.
    deadline = c.boot_ms |> Kernel.*(3) |> div(2) |> max(30_000) |> min(45_000)
    formed_us = await_mesh(peers, t, deadline)
    unless formed_us, do: progress(c, "no full mesh: " <> gap(peers, []))

    progress(
      c,
      "booted in #{c.boot_ms} ms, formed in #{inspect(formed_us && div(formed_us, 1000))} ms"
    )

    Map.merge(c, %{
      formed_us: formed_us,
      form_queries: diff(queries(c), q0),
      deadline: deadline,
      formed_footprint: Enum.map(peers, &Os.status(&1.os_pid))
    })
  end

  # A node too busy to answer (global's work at 100 nodes can stall one for 30 s) still gets
  # the watch: calls run on it in order, so the samples after it come after it.
  defp watch(peers) do
    names = Enum.map(peers, & &1.name)
    answers = Peer.call_each(peers, @agent, :watch_mesh, [names], @call_timeout)
    true = Enum.all?(answers, &(&1 in [{:ok, :ok}, :no_answer]))
  end

  # µs from `t` until every peer's watch saw all the others, or nil after `deadline_ms`. A
  # node that does not answer a sample in time has not been seen in the mesh yet.
  defp await_mesh(peers, t, deadline_ms) do
    Process.sleep(@sample_ms)
    times = Peer.call_each(peers, @agent, :mesh_time, [], @sample_timeout)

    cond do
      Enum.all?(times, &match?({:ok, us} when is_integer(us), &1)) ->
        # A sample answered late may show a mesh that came past the deadline.
        us = times |> Enum.map(fn {:ok, us} -> us end) |> Enum.max() |> Kernel.-(t)
        if us <= deadline_ms * 1_000, do: us

      System.os_time(:microsecond) - t > deadline_ms * 1_000 ->
        nil

      true ->
        await_mesh(peers, t, deadline_ms)
    end
  end

  # Who is still missing whom when a mesh did not come: links missing between new nodes
  # (`fresh`) and the others, and how many of those the missing side's poller lists.
  defp gap(peers, fresh) do
    fresh = MapSet.new(fresh, & &1.name)
    answers = Enum.zip(peers, Peer.call_each(peers, @agent, :mesh_gap, [], @call_timeout))
    silent = Enum.count(answers, &match?({_peer, :no_answer}, &1))
    gaps = for {p, {:ok, g}} <- answers, do: {p, g}

    pairs =
      for {p, %{missing: missing}} <- gaps,
          m <- missing,
          do: {MapSet.member?(fresh, p.name), MapSet.member?(fresh, m)}

    unlisted = Enum.sum(for {_p, %{unlisted: u}} <- gaps, is_list(u), do: length(u))

    example =
      Enum.find_value(gaps, fn {p, g} -> g.missing != [] && "#{p.name} lacks #{hd(g.missing)}" end)

    lacking = Enum.count(gaps, fn {_p, g} -> g.missing != [] end)

    facts =
      gaps
      |> Enum.filter(fn {_p, g} -> g.missing != [] end)
      |> Enum.take(3)
      |> Enum.map_join("; ", fn {p, g} ->
        "#{p.name}: #{inspect(g.poller)}, lists #{length(g.unexpected || [])} beyond the expected (#{inspect(Enum.take(g.unexpected || [], 2))}), " <>
          "last warnings #{inspect(g.warnings)}"
      end)

    "#{facts}; #{silent} nodes did not answer within #{div(@call_timeout, 1000)} s; " <>
      "#{lacking} nodes lack #{length(pairs)} links (new-new #{Enum.count(pairs, &(&1 == {true, true}))}, " <>
      "new-old #{Enum.count(pairs, &(elem(&1, 0) != elem(&1, 1)))}, old-old #{Enum.count(pairs, &(&1 == {false, false}))}); " <>
      "#{unlisted} not listed by the lacking node's poller; e.g. #{example}"
  end

  # --- steady state -----------------------------------------------------------------------

  # Polls and queries are counted in one window of OS time: the queries read at its two
  # ends (at the server, in this VM), the polls afterwards from each node's timestamped
  # trace. Reading 100 busy nodes takes seconds, so counters read from them at the two ends
  # would describe another window than the server's (0.56–0.94 queries per poll at 100).
  defp steady(c, cfg) do
    peers = Enum.filter(members(c), & &1)
    sinks = Consul.count_polls!(peers)
    start = snapshot(peers)
    from_us = System.os_time(:microsecond)
    q0 = queries(c)
    Process.sleep(cfg.steady_ms)
    q1 = queries(c)
    to_us = System.os_time(:microsecond)
    finish = snapshot(peers)
    footprint = Enum.map(peers, &Os.status(&1.os_pid))

    Map.put(c, :steady, %{
      n: length(peers),
      polls: Consul.polls_between!(peers, sinks, from_us, to_us),
      queries: diff(q1, q0),
      downs: finish.downs - start.downs,
      cpu_s: (finish.cpu.total - start.cpu.total) / 100,
      nif_s: (finish.cpu.nif - start.cpu.nif) / 100,
      minutes: cfg.steady_ms / 60_000,
      footprint: footprint
    })
  end

  defp snapshot(peers) do
    cpu = call(peers, @agent, :cpu_ticks, [])

    %{
      downs: Enum.sum(call(peers, NodeAgent, :nodedown_count, [])),
      cpu: %{total: Enum.sum(Enum.map(cpu, & &1.total)), nif: Enum.sum(Enum.map(cpu, & &1.nif))}
    }
  end

  # DNS queries so far by type (dnsmasq's log) or by type and transport (ConsulDns).
  defp queries(%{server: %Dns{} = dns}), do: Map.delete(Dns.queries(dns), :total)

  defp queries(%{server: %ConsulDns{} = consul}) do
    for {{type, transport}, s} <- ConsulDns.stats(consul), into: %{} do
      {"#{String.upcase(to_string(type))}/#{String.upcase(to_string(transport))}", s.queries}
    end
  end

  defp diff(now, before),
    do: for({k, v} <- now, d = v - Map.get(before, k, 0), d > 0, into: %{}, do: {k, d})

  # --- join and leave ---------------------------------------------------------------------

  # The spare joins: every node (spare included) watches for all N + 1; DNS lists the spare
  # and its poller starts at the same moment T.
  defp join(c) do
    spare = c.n + 1
    before = listed(c)
    all = Enum.map(Enum.sort([spare | Enum.to_list(c.registered)]), &c.peers[&1])
    watch(all)
    c = publish(%{c | registered: MapSet.put(c.registered, spare)}, before)
    t = System.os_time(:microsecond)
    start_pollers(c, [spare], t)
    join_us = await_mesh(all, t, 30_000)
    progress(c, "joined in #{inspect(join_us && div(join_us, 1000))} ms")
    Map.put(c, :join_us, join_us)
  end

  # Node 1 is deregistered (and keeps running its poller, as a drained instance does): time
  # until no other node is connected to it, whether that holds one poll later, and the
  # nodedowns the others saw about anyone else meanwhile.
  defp leave(c) do
    victim = c.peers[1]
    before = listed(c)
    c = publish(%{c | registered: MapSet.delete(c.registered, 1)}, before)
    others = members(c)
    downs0 = downs_by_subject(others)
    t = System.os_time(:microsecond)
    left_us = await_dropped(others, victim.name, t, 25_000)
    if left_us, do: Process.sleep(@interval + 1_000)
    stayed? = left_us != nil and not connected_to_any?(others, victim.name)
    lost = lost_links(downs0, downs_by_subject(others), [victim.name])
    progress(c, "left in #{inspect(left_us && div(left_us, 1000))} ms, #{lost} other nodedowns")
    Peer.stop_all([victim])

    Map.merge(c, %{
      peers: Map.delete(c.peers, 1),
      leave: %{us: left_us, stayed: stayed?, lost: lost}
    })
  end

  defp await_dropped(peers, name, t, deadline_ms) do
    Process.sleep(@sample_ms)

    cond do
      not connected_to_any?(peers, name) -> System.os_time(:microsecond) - t
      System.os_time(:microsecond) - t > deadline_ms * 1_000 -> nil
      true -> await_dropped(peers, name, t, deadline_ms)
    end
  end

  # A node that does not answer may still be connected to it.
  defp connected_to_any?(peers, name) do
    peers
    |> Peer.call_each(:erlang, :nodes, [], @call_timeout)
    |> Enum.any?(fn
      {:ok, nodes} -> name in nodes
      :no_answer -> true
    end)
  end

  # %{{observer, os_pid} => %{subject => nodedowns}} (by OS pid too: under dnsmasq a new
  # incarnation has the old one's name). An observer that does not answer is left out, so it
  # counts in neither reading around it: losses are then a lower bound (`unread/2`).
  defp downs_by_subject(peers) do
    peers
    |> Peer.call_each(NodeAgent, :node_events, [], @call_timeout)
    |> Enum.zip(peers)
    |> Enum.flat_map(fn
      {{:ok, events}, peer} ->
        [{observer(peer), Enum.frequencies(for {:nodedown, subject} <- events, do: subject)}]

      {:no_answer, _peer} ->
        []
    end)
    |> Map.new()
  end

  defp observer(peer), do: {peer.name, peer.os_pid}

  # How many of `peers` a lost-link count between two readings could not include.
  defp unread(peers, readings),
    do: Enum.count(peers, &(not Map.has_key?(readings, observer(&1))))

  # Nodedowns observers saw between two readings, about subjects not in `expected`.
  defp lost_links(before, now, expected),
    do: before |> lost_by_subject(now, expected) |> Map.values() |> Enum.sum()

  # The same, per subject: %{subject => nodedowns}.
  defp lost_by_subject(before, now, expected) do
    for {observer, subjects} <- now,
        Map.has_key?(before, observer),
        {subject, count} <- subjects,
        subject not in expected,
        lost = count - Map.get(before[observer], subject, 0),
        lost > 0,
        reduce: %{} do
      acc -> Map.update(acc, subject, lost, &(&1 + lost))
    end
  end

  # What the node most links were lost to, and one other node not restarting, last warned
  # about (global's disconnects name who cut whom).
  defp why_lost(stay, lost) do
    {subject, _} = Enum.max_by(lost, fn {_subject, count} -> count end)

    # The kept warnings only: mesh_gap would also poll and probe DNS between waves.
    peers =
      Enum.reject(
        [Enum.find(stay, &(&1.name == subject)), Enum.find(stay, &(&1.name != subject))],
        &is_nil/1
      )

    peers
    |> Peer.call_each(:ets, :lookup, [@warnings, :last], @call_timeout)
    |> Enum.zip(peers)
    |> Enum.map_join(fn
      {{:ok, [{:last, warnings}]}, peer} -> "; #{peer.name} last warned: #{inspect(warnings)}"
      {{:ok, []}, peer} -> "; #{peer.name} warned nothing"
      {:no_answer, peer} -> "; #{peer.name} did not answer"
    end)
  end

  # The subjects most links were lost to, for a wave's progress line.
  defp worst_subjects(lost) do
    lost
    |> Enum.sort_by(fn {_subject, count} -> -count end)
    |> Enum.take(4)
    |> Enum.map_join(", ", fn {subject, count} -> "#{subject} ×#{count}" end)
  end

  # --- rolling restart --------------------------------------------------------------------

  # Every node in turn, a wave of max(1, N/4) at a time (a Kubernetes Deployment's default
  # maxUnavailable, 25%): SIGTERM, DNS updated to the new port, the new VM's poller started
  # (same name under dnsmasq, a new app-PORT@IP under Consul). The new VMs are booted before
  # their wave, as a Deployment's surge pods start before old ones stop: all of them before
  # the rollout when the group's replacements fit in memory (`upfront?`), else each wave's
  # just before it. (Booted during the wave before, they slowed its mesh: 858 links lost
  # at 50 nodes.) Per wave: the time until every node lists every other again, from the new
  # pollers' start and from the SIGTERM, and the nodedowns nodes outside the wave saw about
  # nodes outside the wave.
  defp rolling(c, upfront?) do
    ks = Enum.sort(c.registered)
    size = max(1, div(length(ks), 4))
    t0 = System.monotonic_time(:millisecond)
    c = Map.put(c, :downs_mark, downs_by_subject(members(c)))
    ahead = if upfront?, do: boot_replacements(c, ks)

    {c, results} =
      ks
      |> Enum.chunk_every(size)
      |> Enum.reduce({c, []}, fn
        # A wave that never got back to a full mesh ends the rollout (the rest would wait too).
        _wave, {c, [%{back_us: nil} | _] = done} ->
          {c, done}

        wave, {c, done} ->
          booted =
            if upfront?,
              do: %{nodes: Map.take(ahead.nodes, wave), peers: Map.take(ahead.peers, wave)},
              else: boot_replacements(c, wave)

          {c, result} = restart_wave(c, booted)

          progress(
            c,
            "wave #{length(done) + 1}: back in #{inspect(result.back_us && div(result.back_us, 1000))} ms, #{result.lost} lost"
          )

          {c, [result | done]}
      end)

    # Replacements booted for waves the rollout did not reach go with the group's VMs.
    waves = Enum.reverse(results)

    # Nodedowns that land after the last wave's mesh (global's cascades) still count.
    Process.sleep(1_000)
    others = members(c)
    last = List.last(waves)
    final = downs_by_subject(others)
    late = lost_links(last.downs_after, final, last.expected)

    Map.put(c, :rolling, %{
      wave_size: size,
      waves: length(waves),
      upfront: upfront?,
      lost: Enum.sum(Enum.map(waves, & &1.lost)) + late,
      # Nodes whose nodedowns some reading missed: the count is a lower bound then.
      unread: Enum.sum(Enum.map(waves, & &1.unread)) + unread(others, final),
      back_us: Enum.map(waves, & &1.back_us),
      from_term_us: Enum.map(waves, & &1.from_term_us),
      ms: System.monotonic_time(:millisecond) - t0
    })
  end

  # Replacements for `ks` (new ports; new names under Consul): idle VMs, not yet in DNS, with
  # no poller.
  defp boot_replacements(c, ks) do
    nodes =
      Map.new(ks, fn k ->
        port = Os.free_port()
        node = c.nodes[k]
        {k, %{node | port: port, name: node_name(c, k, node.ip, port)}}
      end)

    peers = start_peers(%{c | nodes: Map.merge(c.nodes, nodes)}, ks)
    true = Enum.all?(call(Map.values(peers), NodeAgent, :start_recorder, []), &(&1 == :ok))
    %{nodes: nodes, peers: peers}
  end

  defp restart_wave(c, %{nodes: new_nodes, peers: new}) do
    wave = Map.keys(new)
    stay = for k <- Enum.sort(c.registered), k not in wave, do: c.peers[k]
    # Counted from where the last wave's count ended, so nothing between waves is missed.
    downs0 = c.downs_mark
    old = for k <- wave, do: c.peers[k]
    # Watched before the SIGTERM: calls to 100 nodes amid 25 nodedowns took seconds.
    all = members(%{c | peers: Map.merge(c.peers, new)})
    watch(all)
    t_term = System.os_time(:microsecond)
    Os.signal_all(Enum.map(old, & &1.os_pid), "TERM")

    # Nomad's default kill_timeout: 5 s from SIGTERM to SIGKILL. DNS moves to the new VMs
    # once the old ones are gone, as Nomad places an allocation's successor after stopping
    # it (and under dnsmasq the new VM takes the old one's name). Started at the SIGTERM, 25
    # new pollers at 100 nodes met the old VMs' nodedowns on two saturated cores: their polls
    # timed out and no wave was back in full mesh within 45 s.
    Os.kill_all(Os.still_running(Enum.map(old, & &1.os_pid), 5_000))
    Enum.each(old, &Process.exit(&1.owner, :kill))

    t_gone = System.os_time(:microsecond)
    before = listed(c)
    c = publish(%{c | nodes: Map.merge(c.nodes, new_nodes)}, before)
    c = %{c | peers: Map.merge(c.peers, new)}
    t_up = System.os_time(:microsecond)
    progress(c, "old gone #{div(t_gone - t_term, 1000)} ms, DNS #{div(t_up - t_gone, 1000)} ms")
    start_pollers(c, wave, t_up)
    back = await_mesh(all, t_up, @wave_timeout)
    unless back, do: progress(c, "not back in full mesh: " <> gap(all, Map.values(new)))
    downs1 = downs_by_subject(all)

    # Under Consul an old incarnation may still be shutting down when its wave ends: its
    # nodedown, seen during a later wave, is a restarting node's, not a lost link. Under
    # dnsmasq the new incarnation has the old one's name (the old one was gone before it
    # started), so a later nodedown about that name is a lost link to the new one.
    gone =
      if c.dns == :consul,
        do: Enum.map(old, & &1.name) ++ Map.get(c, :gone, []),
        else: Enum.map(old, & &1.name)

    c = Map.merge(c, %{gone: gone, downs_mark: downs1})
    expected = gone ++ Enum.map(Map.values(new), & &1.name)

    lost = lost_by_subject(downs0, Map.take(downs1, Enum.map(stay, &observer/1)), expected)
    unread = max(unread(stay, downs0), unread(stay, downs1))

    if lost != %{},
      do: progress(c, "links lost to: " <> worst_subjects(lost) <> why_lost(stay, lost))

    if unread > 0,
      do: progress(c, "#{unread} nodes' nodedowns unread (they did not answer): a lower bound")

    {c,
     %{
       # ≤ 0: the others had dialed it (from DNS) before its own poller started.
       back_us: back && max(back, 0),
       from_term_us: back && back + t_up - t_term,
       lost: lost |> Map.values() |> Enum.sum(),
       unread: unread,
       downs_after: downs1,
       expected: expected
     }}
  end

  defp progress(c, text), do: IO.puts(:stderr, "      #{clock()} #{label(c)}: #{text}")

  # Minutes and seconds since the section started, so a run's log shows where time goes.
  defp clock do
    s =
      div(System.monotonic_time(:millisecond) - :persistent_term.get({__MODULE__, :t0}, 0), 1000)

    :io_lib.format("~2..0B:~2..0B", [div(s, 60), rem(s, 60)]) |> to_string()
  end

  defp call(peers, m, f, a), do: Peer.call_all(peers, m, f, a, @call_timeout)

  # --- what one cluster reports -----------------------------------------------------------

  defp result(%{failed: why}), do: %{failed: why}

  defp result(c) do
    %{join_us: nil, leave: nil, rolling: nil, stable: false}
    |> Map.merge(
      Map.take(c, [
        :n,
        :boot_ms,
        :formed_us,
        :form_queries,
        :deadline,
        :join_us,
        :leave,
        :rolling,
        :stable
      ])
    )
    |> Map.put(:steady, c[:steady] && Map.drop(c.steady, [:footprint]))
    |> Map.merge(
      if c[:steady],
        do: %{footprint: c.steady.footprint, footprint_at: :steady},
        else: %{footprint: c[:formed_footprint], footprint_at: :formation}
    )
    |> Map.put(:phase_failures, c[:phase_failures] || [])
    |> Map.put(:join_failed, c[:join_failed])
  end

  # --- one poll's CPU, in a node of its own ----------------------------------------------

  # One node (ours, name mode) polls a ConsulDns listing `m` instances over TCP (no node-meta
  # TXT records, so 1000 fit Consul's 64 KB TCP cap); list_nodes lists every member, so
  # nothing is dialed: the cost is the query, the answer's mapping, the diff and the cache.
  defp poll_cost(sizes, polls) do
    consul = ConsulDns.start!(dc: "dc1", node_meta_txt: false)
    dir = Os.tmp_dir("scale_cost")
    port = Os.free_port()

    peer =
      Peer.start!("app-#{port}@127.0.250.1", :ours, port, %{dir: dir, port: consul.port},
        epmd_module: "Elixir.DynamicSrv.Epmd",
        env: %{"DYNAMIC_SRV_PORT_MODE" => "name"},
        erl_args: @vm_flags
      )

    try do
      for m <- sizes, into: %{} do
        names =
          for k <- 1..m do
            ip = {127, 1, div(k, 250), rem(k, 250) + 1}
            port = 20_000 + k
            :ok = ConsulDns.register(consul, "my-app", "c#{m}-#{k}", %{address: ip, port: port})
            :"app-#{port}@#{:inet.ntoa(ip)}"
          end

        opts = [
          service: @consul_service,
          node_naming: {:basename_port_ip, "app"},
          nameservers: ConsulDns.nameserver(consul),
          polling_interval: 3_600_000,
          max_nodes: 1024,
          connect: {Function, :identity, []},
          disconnect: {Function, :identity, []},
          list_nodes: {Function, :identity, [names]}
        ]

        cost = Peer.call(peer, @agent, :poll_cost, [opts, polls], 300_000)
        for k <- 1..m, do: :ok = ConsulDns.deregister(consul, "my-app", "c#{m}-#{k}")
        {m, cost}
      end
    after
      Peer.stop_all([peer])
      ConsulDns.stop(consul)
      File.rm_rf(dir)
    end
  end

  # --- the section ------------------------------------------------------------------------

  @columns [
    {:dnsmasq, :ours},
    {:dnsmasq, :classic},
    {:consul, :ours},
    {:consul, :classic}
  ]

  defp section(specs, results, cost, cfg) do
    sizes = specs |> Enum.map(& &1.n) |> Enum.uniq() |> Enum.sort()
    pop_sizes = for s <- specs, not s.pop, uniq: true, do: s.n

    rows =
      Enum.flat_map(sizes, fn n -> rows(n, "", &results[{&1, &2, true, n}]) end) ++
        Enum.flat_map(pop_sizes, fn n ->
          rows(n, ", `prevent_overlapping_partitions false`", &results[{&1, &2, false, n}])
        end) ++ cost_rows(results, cost, Enum.max(sizes))

    verdicts = Map.new(sizes, &{&1, verdict(&1, results, cost, sizes)})
    met = for n <- sizes, Enum.all?(verdicts[n], fn {_, ok} -> ok end), do: n

    %{
      key: :scale,
      title: "10. Scale (issue 15): #{Enum.join(sizes, ", ")} nodes at the default 5 s poll",
      columns: [
        "Per cluster",
        "dnsmasq: ours",
        "dnsmasq: classic",
        "Consul DNS: ours",
        "Consul DNS: classic"
      ],
      rows: rows,
      notes: notes(specs, results, cost, cfg, verdicts, met),
      goals: goals(sizes, results, cost),
      data: %{
        results: Map.new(results, fn {k, r} -> {k, Map.drop(r, [:footprint])} end),
        cost: cost
      }
    }
  end

  defp rows(n, suffix, get) do
    row = fn label, fun ->
      [
        "#{n} nodes#{suffix}: #{label}"
        | Enum.map(@columns, fn {dns, arm} -> cell(get.(dns, arm), fun) end)
      ]
    end

    rows = [
      row.("boot, all VMs in parallel", &Stats.dur(&1.boot_ms * 1_000_000)),
      row.("formation: full mesh after (× boot)", &formation/1),
      row.("formation: DNS queries", &types(&1.form_queries)),
      row.("steady: DNS queries per node per poll", &per_poll/1),
      row.("steady: CPU per node per minute (NIF thread)", &cpu/1),
      row.("steady: nodedowns", &steady_downs/1),
      row.("join: all have the new node after", &join_cell/1),
      row.("leave: all dropped it after; other links lost", &leave_cell/1),
      row.("rolling restart: disconnects among non-restarting nodes", &rolling_lost/1),
      row.(
        "rolling restart: back in full mesh per wave, median (max), from poller start / SIGTERM",
        &rolling_back/1
      )
    ]

    # All-blank rows (no cluster of this kind) are left out.
    Enum.reject(rows, fn [_ | cells] -> Enum.all?(cells, &(&1 == "")) end)
  end

  defp cell(nil, _fun), do: ""
  defp cell(%{failed: why}, _fun), do: "failed: #{why}"

  defp cell(r, fun) do
    fun.(r)
  rescue
    _ -> "—"
  end

  defp formation(%{formed_us: nil} = r), do: "never in #{Stats.dur(r.deadline * 1_000_000)}"

  defp formation(r),
    do: "#{Stats.dur(r.formed_us * 1_000)} (#{Stats.fmt(r.formed_us / 1_000 / r.boot_ms, 2)}×)"

  defp types(counts) when map_size(counts) == 0, do: "0"

  defp types(counts),
    do: counts |> Enum.sort() |> Enum.map_join(", ", fn {t, q} -> "#{q} #{t}" end)

  defp per_poll(%{steady: s}) do
    s.queries
    |> Enum.sort()
    |> Enum.map_join(", ", fn {t, q} -> "#{Stats.fmt(q / max(s.polls, 1), 2)} #{t}" end)
    |> case do
      "" -> "0"
      text -> text
    end
  end

  defp cpu(%{steady: s}) do
    per = fn secs -> secs / s.n / s.minutes end
    "#{ms(per.(s.cpu_s))} (#{ms(per.(s.nif_s))})"
  end

  defp ms(seconds), do: "#{Stats.fmt(seconds * 1_000, 0)} ms"

  defp steady_downs(%{steady: s}), do: "#{s.downs}"

  defp join_cell(%{stable: false}), do: "— (no mesh that holds)"
  defp join_cell(%{join_failed: why}) when is_binary(why), do: "failed: #{why}"
  defp join_cell(%{join_us: nil}), do: "never in 30 s"
  defp join_cell(%{join_us: us}), do: Stats.dur(us * 1_000)

  defp leave_cell(%{stable: false}), do: "—"
  defp leave_cell(%{leave: nil}), do: "—"
  defp leave_cell(%{leave: %{us: nil} = l}), do: "never in 25 s; #{l.lost}"

  defp leave_cell(%{leave: l}),
    do: "#{Stats.dur(l.us * 1_000)}#{if l.stayed, do: "", else: " (it came back)"}; #{l.lost}"

  defp rolling_lost(%{stable: false}), do: "—"
  defp rolling_lost(%{rolling: nil}), do: "—"

  defp rolling_lost(%{rolling: r}),
    do: "#{if r.unread > 0, do: "≥ "}#{r.lost} (#{r.waves} waves of #{r.wave_size})"

  defp rolling_back(%{rolling: nil}), do: "—"

  defp rolling_back(%{rolling: r}) do
    # A wave not back ends the rollout: the waves before it, then that one.
    show = fn list ->
      {back, never} = Enum.split_while(list, &is_integer/1)
      shown = Enum.map_join(back, ", ", &Stats.dur(&1 * 1_000))

      cond do
        never != [] and back == [] -> "wave 1 not back in #{div(@wave_timeout, 1000)} s"
        never != [] -> "#{shown}; wave #{length(back) + 1} not back"
        true -> "#{Stats.dur(Stats.median(list) * 1_000)} (#{Stats.dur(Enum.max(list) * 1_000)})"
      end
    end

    "#{show.(r.back_us)} / #{show.(r.from_term_us)}"
  end

  # RSS and threads from the dnsmasq clusters of the largest size after the steady window (or
  # at the formation deadline of one that never formed): ours (NIF) against classic
  # (ClassicEpmd, no NIF), same flags, same cluster size.
  defp footprint(results, n) do
    # Read at the same point (both after the steady window, or both at a formation deadline
    # they missed), or not compared: a formed mesh holds more connections than a partial one.
    with %{footprint: [_ | _] = o, footprint_at: at} <- results[{:dnsmasq, :ours, true, n}],
         %{footprint: [_ | _] = c, footprint_at: ^at} <- results[{:dnsmasq, :classic, true, n}] do
      med = fn list, key -> Stats.median(Enum.map(list, & &1[key])) end

      Map.new(["VmRSS", "RssAnon", "RssFile", "Threads"], fn key ->
        {key, {med.(o, key), med.(c, key)}}
      end)
      |> Map.put(:at, at)
    else
      _ -> nil
    end
  end

  defp cost_rows(results, cost, n) do
    fp =
      case footprint(results, n) do
        nil ->
          [
            [
              "#{n} nodes: per node, RSS and threads",
              "not compared: ours and classic were not read at the same point (one never formed)",
              "",
              "",
              ""
            ]
          ]

        fp ->
          kb = fn {o, c} ->
            "#{Stats.kb(o)} vs #{Stats.kb(c)} without the NIF: #{signed(o - c)}"
          end

          [
            [
              "#{n} nodes: per node, VmRSS (RssAnon), #{if fp.at == :steady, do: "after the steady window", else: "at the missed formation deadline"}",
              "#{kb.(fp["VmRSS"])} (#{kb.(fp["RssAnon"])})",
              "",
              "",
              ""
            ],
            [
              "#{n} nodes: per node, OS threads",
              "#{elem(fp["Threads"], 0)} vs #{elem(fp["Threads"], 1)}: +#{elem(fp["Threads"], 0) - elem(fp["Threads"], 1)}",
              "",
              "",
              ""
            ]
          ]
      end

    polls =
      case cost do
        %{failed: why} ->
          [["one poll's CPU", "", "", "failed: #{why}", ""]]

        cost ->
          for {m, c} <- Enum.sort(cost) do
            [
              "one poll of #{m} members: CPU (NIF thread), wall",
              "",
              "",
              "#{Stats.fmt(c.total * 10 / c.polls, 2)} ms (#{Stats.fmt(c.nif * 10 / c.polls, 2)} ms), #{Stats.dur(c.wall_us * 1_000 / c.polls)}",
              ""
            ]
          end
      end

    fp ++ polls
  end

  defp signed(kb), do: if(kb >= 0, do: "+", else: "−") <> Stats.kb(abs(kb))

  # --- goals ------------------------------------------------------------------------------

  defp ours(results, n),
    do: for(dns <- [:dnsmasq, :consul], r = results[{dns, :ours, true, n}], do: {dns, r})

  defp ok?(r), do: r != nil and not Map.has_key?(r, :failed)

  defp formation_ok?(r),
    do: ok?(r) and r.formed_us != nil and r.formed_us / 1_000 <= 1.5 * r.boot_ms

  defp steady_ok?(r) do
    ok?(r) and r.steady != nil and r.steady.downs == 0 and
      Enum.all?(r.steady.queries, fn {t, _} -> String.starts_with?(t, "SRV") end) and
      abs(Enum.sum(Map.values(r.steady.queries)) / max(r.steady.polls, 1) - 1.0) <= 0.05
  end

  defp rolling_ok?(r),
    do: ok?(r) and r.rolling != nil and r.rolling.lost == 0 and nil not in r.rolling.back_us

  defp cost_ok?(results, n) do
    case footprint(results, n) do
      nil ->
        false

      fp ->
        {o, c} = fp["VmRSS"]
        {to, tc} = fp["Threads"]
        o - c <= 2048 and to - tc <= 1
    end
  end

  defp verdict(n, results, _cost, sizes) do
    rs = ours(results, n)

    [
      formation: rs != [] and Enum.all?(rs, fn {_, r} -> formation_ok?(r) end),
      steady: rs != [] and Enum.all?(rs, fn {_, r} -> steady_ok?(r) end),
      rolling: rs != [] and Enum.all?(rs, fn {_, r} -> rolling_ok?(r) end)
    ] ++ if(n == Enum.max(sizes), do: [cost: cost_ok?(results, n)], else: [])
  end

  defp goals(sizes, results, _cost) do
    big = Enum.max(sizes)

    each = fn fun ->
      Enum.map_join(sizes, " / ", fn n -> Enum.map_join(ours(results, n), ", ", fun) end)
    end

    fp = footprint(results, big)

    [
      {"Scale, ours (#{Enum.join(sizes, "/")} nodes; dnsmasq, Consul): formation ≤ 1.5× boot time",
       each.(fn {_, r} -> if ok?(r), do: formation(r), else: "failed" end),
       Enum.all?(sizes, fn n -> Enum.all?(ours(results, n), fn {_, r} -> formation_ok?(r) end) end)},
      {"Scale, ours: steady state 1 SRV query per node per poll, 0 A/AAAA, 0 nodedowns",
       each.(fn {_, r} ->
         if ok?(r) and r.steady, do: "#{per_poll(r)}, #{r.steady.downs} down", else: "failed"
       end),
       Enum.all?(sizes, fn n -> Enum.all?(ours(results, n), fn {_, r} -> steady_ok?(r) end) end)},
      {"Scale, ours: rolling restart, 0 disconnects among non-restarting nodes",
       each.(fn {_, r} -> if ok?(r) and r.rolling, do: "#{r.rolling.lost}", else: "failed" end),
       Enum.all?(sizes, fn n -> Enum.all?(ours(results, n), fn {_, r} -> rolling_ok?(r) end) end)},
      {"Scale, #{big} nodes: ≤ 2 MB RSS and ≤ 1 thread added per node",
       if(fp,
         do:
           "#{signed(elem(fp["VmRSS"], 0) - elem(fp["VmRSS"], 1))}, +#{elem(fp["Threads"], 0) - elem(fp["Threads"], 1)} thread",
         else: "not measured"
       ), cost_ok?(results, big)}
    ]
  end

  defp rollout_modes(results) do
    for({k, %{rolling: %{upfront: upfront}}} <- Enum.sort(results), do: {k, upfront})
    |> Enum.group_by(fn {_, upfront} -> upfront end, fn {{dns, arm, _, n}, _} ->
      "#{n} #{dns} #{arm}"
    end)
    |> Enum.map_join("; ", fn
      {true, ks} -> "ahead of the rollout: " <> Enum.join(ks, ", ")
      {false, ks} -> "before each wave: " <> Enum.join(ks, ", ")
    end)
  end

  defp priority(:ok),
    do: "this harness, which runs ConsulDns, and dnsmasq run at niceness #{@server_nice}"

  defp priority({:error, why}),
    do:
      "this harness and dnsmasq could not be raised to niceness #{@server_nice} (#{why}), so waves may time out on a slow DNS server"

  defp notes(specs, results, cost, cfg, verdicts, met) do
    groups =
      specs |> groups() |> Enum.map_join("; ", fn g -> Enum.map_join(g, ", ", &label/1) end)

    missed = for {n, v} <- Enum.sort(verdicts), {goal, false} <- v, do: "#{n}: #{goal}"

    cost_note =
      case cost do
        %{failed: _} ->
          ""

        cost ->
          "One poll's CPU: a node of its own (ours, name mode) polls a ConsulDns listing 100 or 1000 instances over TCP (no node-meta TXT records, so 1000 fit Consul's 64 KB TCP cap) with `poll_now/1`, #{cost |> Map.values() |> hd() |> Map.get(:polls)} times after 5 to warm up; `list_nodes` lists every member, so nothing is dialed: the query, the answer's mapping, the membership diff and the cache update. CPU is the node's utime + stime from /proc (every thread; in brackets the `dynamic_srv_dns` thread), divided by the polls."
      end

    [
      "Clusters: one arm against one DNS server of its own, N registered nodes plus one booted spare (the joiner), each node on its own loopback address 127.0.C.k (Linux routes all of 127.0.0.0/8 to `lo`, so no alias or namespace is needed and no root; each node binds its distribution listener to its address with `-kernel inet_dist_use_interface`). All VMs run `+sbwt none +sbwtdcpu none +sbwtdio none` (idle schedulers sleep rather than spin: up to #{@max_vms} VMs share 2 cores) at niceness #{@nice}, below the DNS servers and the harness (a real Consul agent or dnsmasq has its own cores; #{priority(cfg.priority)}), OTP defaults otherwise (`global` with `connect_all` and `prevent_overlapping_partitions true`) unless a row says `prevent_overlapping_partitions false`. " <>
        "dnsmasq: nodes `nK@sN-C.bench.test`, SRV on the service to `nK.sN-C.bench.test` with its port, an SRV and an A record on that target; ours: `DynamicSrv.Epmd` (srv mode) and `DynamicSrv.Cluster` (defaults: TCP, `removal_delay` 10 s); classic: the classic epmd module (SRV + A per `address_please/3`, no NIF) and the classic poller (one `:inet_res` SRV query per poll, the last answer is the membership). A DNS change restarts dnsmasq (it cannot reload SRV records): a few ms without a server, which ours rides out (a failed poll keeps the membership) and the classic poller reads as an empty answer. " <>
        "Consul DNS: the Consul + Nomad recipe of section 8 (`app-PORT@IP`, `DynamicSrv.Epmd` in name mode in both arms, so they differ only in the poller), ConsulDns updated in place as Nomad updates Consul; it answers each query in a process of its own, on both cores, as Consul's agent does (answering in one process, it answered 100 nodes' polls late enough for their resolvers to ask again: 1.15–1.38 queries per poll at 100 nodes, in both arms).",
      "Groups of clusters that fit the machine at once (#{@max_vms} VMs, at most #{@max_large} of #{@large}+ nodes: three 100-node rollouts at once overloaded the 2 cores): #{groups}. In a group each cluster boots (all its VMs in parallel; the time until the last is up) and forms on its own, one after the other; then the steady window, the join, the leave and the rolling restart run in every cluster of the group at once, so both arms see the same load, except #{@large}-node rollouts: one cluster at a time, ours first, each beside the other cluster idle (beside the classic arm's first wave, which lost thousands of links, calls to ours' nodes timed out after 30 s). " <>
        "Formation: every poller starts at one instant T; the time until every node has seen all N−1 others (each node's `:net_kernel.monitor_nodes/1`, sampled every #{@sample_ms} ms), against the boot time (the goal: 1.5×); a mesh is waited for until 30 s or 1.5× the boot time, whichever is later (at most 45 s), \"never\" past that. DNS queries from T to the full mesh, by type (dnsmasq's log) or type and transport (ConsulDns). " <>
        "Steady: #{div(cfg.steady_ms, 1000)} s, once every cluster of the group has formed; queries and polls counted in one window of OS time: the queries at the server at its two ends, the polls afterwards from each poller's timer messages, traced with timestamps; CPU is each node's utime + stime (every thread: the node runs nothing but the poller and the benchmark agent), per node per minute, in brackets the `dynamic_srv_dns` thread; nodedowns from `:net_kernel.monitor_nodes/2` on every node.",
      "A cluster that never formed is stopped then (no steady state to measure; its RSS and threads are read at that moment). Join, leave and rolling restart run only in clusters whose mesh held through the steady window (no nodedown); the others are stopped then, so their churn does not load the rest. Join: the spare is listed in DNS and its poller starts at T; the time until all N+1 nodes list each other. Leave: node 1 is delisted and keeps running its poller (a drained instance; ours leaves by itself through `:global.disconnect/0` when its poll finds it delisted, classic is dropped by each node at its next poll); the time until no other node is connected to it (\"it came back\" if one is again #{div(@interval, 1000) + 1} s later), and the nodedowns the others saw about anyone else. " <>
        "Rolling restart: every node in turn, in waves of max(1, N/4) (a Kubernetes Deployment's default `maxUnavailable` of 25%; Nomad's `max_parallel`): SIGTERM (OTP's graceful `init:stop`; SIGKILL to those still running 5 s later, Nomad's default `kill_timeout`), once the old VMs are gone (Nomad places an allocation's successor after stopping it), DNS updated to a new VM on a new port (the same name under dnsmasq; a new `app-PORT@IP` under Consul) and its poller started; the wave ends when every node lists every other. The new VMs boot before their wave, as a Deployment's surge pods start before old ones stop: all of a group's before its rollouts when they fit in memory, else each wave's just before it (#{rollout_modes(results)}). So from SIGTERM counts no VM boot: booting 25 VMs beside a busy 100-node cluster took 25–60 s, the VM's cost (the boot row), not this package's. A wave not back in full mesh #{div(@wave_timeout, 1000)} s after its pollers started ends the rollout. Disconnects: nodedowns seen by nodes outside the wave about nodes outside the wave (under Consul, no old incarnation's), counted from the end of the wave before (so between waves too) and 1 s past the last. Back in full mesh: per wave, from the new pollers' start and from the SIGTERM (the old VMs' shutdown, the DNS update and the mesh).",
      cost_note,
      "Largest size at which ours met every goal of this section: #{if met == [], do: "none", else: Enum.max(met)}." <>
        if(missed == [], do: "", else: " Missed: #{Enum.join(missed, "; ")}.")
    ]
    |> Enum.reject(&(&1 == ""))
    |> then(fn notes ->
      failures =
        for {k, r} <- results,
            why <- Map.get(r, :phase_failures, []) ++ List.wrap(r[:failed]),
            do: "#{inspect(k)}: #{why}"

      if failures == [], do: notes, else: notes ++ ["Failures: " <> Enum.join(failures, "; ")]
    end)
  end
end
