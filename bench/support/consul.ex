defmodule DynamicSrv.Bench.Consul do
  @moduledoc false
  # Section 8 (issue 10): the Consul + Nomad recipe against ConsulDns, the test DNS server that
  # answers by Consul's rules (shuffled per query, UDP answers silently trimmed: 3 records
  # without EDNS, what fits 1232 bytes with it, no TC bit). At 24 and 50 instances, real nodes,
  # each on its own loopback address 127.0.0.(100+k) and named app-PORT@IP as the recipe names
  # them, all with DynamicSrv.Epmd in name mode (port and IP from the name, no DNS per
  # connection), so the arms differ only in the membership poller:
  #   :ours      DynamicSrv.Cluster, default options (polls over TCP)
  #   :ours_udp  the same with dns_transport: :udp (partial answers must not remove anyone)
  #   :classic   DynamicSrv.Bench.ClassicPoller: one :inet_res SRV query per poll (no EDNS, so
  #              Consul gives it 3 records), members = the last answer, the absent disconnected
  #   :before    optional (BENCH_BEFORE_EBIN): another build's DynamicSrv.Cluster (e.g. the
  #              commit before issue 10), options it knows only, over UDP as it always did
  # Plus, in this VM, the cost of one poll over UDP and over TCP (poll_now/1, no nodes).

  alias DynamicSrv.Bench.{ClusterRun, Os, Peer, Stats}
  alias DynamicSrv.Test.{ConsulDns, NodeAgent}

  @agent DynamicSrv.Bench.Agent
  @service "my-app.service.consul"
  @naming {:basename_port_ip, "app"}
  @sample_ms 250
  @start_delay_us 300_000
  @call_timeout 15_000

  @doc """
  Options: `sizes` ([24, 50]), `interval` (poll ms, 500), `settle_ms` (8_000: from the start
  of the pollers to the start of the window), `window_ms` (20_000), `latency_polls` (200 per
  transport and size), `before_ebin` (adds the :before arm).
  """
  def run(opts \\ []) do
    sizes = Keyword.get(opts, :sizes, [24, 50])
    before = opts[:before_ebin]
    arms = [:ours, :ours_udp, :classic] ++ if(before, do: [:before], else: [])

    cfg = %{
      interval: Keyword.get(opts, :interval, 500),
      settle_ms: Keyword.get(opts, :settle_ms, 8_000),
      window_ms: Keyword.get(opts, :window_ms, 20_000),
      before_ebin: before
    }

    trials =
      for n <- sizes, arm <- arms, into: %{} do
        IO.puts(:stderr, "    consul: #{n} instances, #{arm}")
        {{n, arm}, guarded(fn -> trial(arm, n, cfg) end)}
      end

    latency =
      for n <- sizes, into: %{} do
        IO.puts(:stderr, "    consul: poll latency, #{n} instances")
        {n, guarded(fn -> poll_latency(n, Keyword.get(opts, :latency_polls, 200)) end)}
      end

    section(sizes, arms, trials, latency, cfg)
  end

  # One failed trial (a node that did not boot, say) costs its cells, not the section.
  defp guarded(fun) do
    fun.()
  rescue
    error ->
      IO.puts(:stderr, Exception.format(:error, error, __STACKTRACE__))
      %{failed: Exception.message(error)}
  end

  # --- one arm at one size ---------------------------------------------------------------

  def trial(arm, n, cfg) do
    consul = ConsulDns.start!(dc: "dc1")
    dir = Os.tmp_dir("consul")
    Process.put(:bench_peers, [])

    try do
      instances = register_all(consul, n)
      peers = boot(arm, instances, %{dir: dir, port: consul.port}, cfg)
      Process.put(:bench_peers, peers)
      names = MapSet.new(peers, & &1.name)
      true = Enum.all?(Peer.call_all(peers, NodeAgent, :start_recorder, []), &(&1 == :ok))

      t = System.os_time(:microsecond) + @start_delay_us
      agent_arm = if arm == :classic, do: :classic, else: :ours
      poller = poller_opts(arm, consul, cfg.interval)
      Peer.call_all(peers, @agent, :start_poller_at, [agent_arm, t, poller])
      sampler = Task.async(fn -> sample(peers, names, t, cfg.settle_ms + cfg.window_ms) end)

      # Polls are counted by tracing each poller's :poll timer message (the first poll runs
      # at start, before the window): exact for every arm, whatever its list_nodes use.
      # Only OTP functions are called on the nodes for this, as a :before node is another build.
      ClusterRun.sleep_until(t + 1_000_000)
      sinks = count_polls!(peers)

      ClusterRun.sleep_until(t + cfg.settle_ms * 1_000)
      start = snapshot(peers, sinks, consul)
      ClusterRun.sleep_until(t + (cfg.settle_ms + cfg.window_ms) * 1_000)
      finish = snapshot(peers, sinks, consul)
      samples = Task.await(sampler, 60_000)

      summarize(arm, n, samples, start, finish, cfg)
    after
      Peer.stop_all(Process.get(:bench_peers, []))
      Process.delete(:bench_peers)
      ConsulDns.stop(consul)
      File.rm_rf(dir)
    end
  end

  # Each poller's :poll messages are traced to a sink process that never reads them: its
  # queue length is the number of polls since. Returns the sinks. (Section 10 uses it too.)
  @doc false
  def count_polls!(peers) do
    # One task per node: at load 200 a call takes tens of ms, and 100 nodes × 3 calls in a
    # row would take longer than the window they set up.
    peers
    |> Enum.map(fn peer -> Task.async(fn -> trace_polls!(peer) end) end)
    |> Task.await_many(120_000)
  end

  defp trace_polls!(peer) do
    owner = Peer.call(peer, :persistent_term, :get, [{@agent, :poller_owner}])

    poller =
      case Peer.call(peer, :erlang, :process_info, [owner, :links]) do
        {:links, [poller]} -> poller
        other -> raise "#{peer.name}: no poller (#{inspect(other)})"
      end

    sink = Peer.call(peer, :erlang, :spawn, [:timer, :sleep, [:infinity]])
    _ = Peer.call(peer, :erlang, :trace_pattern, [:receive, [{[:_, :_, :poll], [], []}], []])
    1 = Peer.call(peer, :erlang, :trace, [poller, true, [:receive, :timestamp, {:tracer, sink}]])
    sink
  end

  @doc false
  # Polls whose :poll message arrived between two OS times (µs), summed over the nodes. Read
  # after the fact, so it does not matter how long the calls take on a busy machine. The
  # trace timestamps are the node's erlang:now(), OS time at its boot plus monotonic time
  # since: on one machine, within a fraction of a second of the harness's clock.
  def polls_between!(peers, sinks, from_us, to_us) do
    Enum.zip(peers, sinks)
    |> Enum.map(fn {peer, sink} ->
      Task.async(fn ->
        {:messages, traced} =
          Peer.call(peer, :erlang, :process_info, [sink, :messages], @call_timeout)

        Enum.count(traced, fn {:trace_ts, _, :receive, :poll, {mega, s, us}} ->
          ((mega * 1_000_000 + s) * 1_000_000 + us) in from_us..to_us
        end)
      end)
    end)
    |> Task.await_many(@call_timeout + 1_000)
    |> Enum.sum()
  end

  # Counters at one instant: polls so far (trace messages waiting in each sink), nodedowns,
  # ConsulDns's per-{type, transport} stats.
  defp snapshot(peers, sinks, consul) do
    dns = Task.async(fn -> ConsulDns.stats(consul) end)

    polls =
      Enum.zip(peers, sinks)
      |> Enum.map(fn {peer, sink} ->
        Task.async(fn ->
          {:message_queue_len, len} =
            Peer.call(peer, :erlang, :process_info, [sink, :message_queue_len], @call_timeout)

          len
        end)
      end)
      |> Task.await_many(@call_timeout + 1_000)

    downs = Peer.call_all(peers, NodeAgent, :nodedown_count, [], @call_timeout)
    %{polls: Enum.sum(polls), downs: Enum.sum(downs), dns: Task.await(dns)}
  end

  # Every @sample_ms from T for `ms`: did every node list all the others?
  defp sample(peers, names, t, ms) do
    expected = Enum.map(peers, &MapSet.delete(names, &1.name))
    sample(peers, expected, t, t, t + ms * 1_000, [])
  end

  defp sample(peers, expected, t, next, stop, acc) when next <= stop do
    ClusterRun.sleep_until(next)
    at_ms = div(System.os_time(:microsecond) - t, 1_000)
    views = Peer.call_all(peers, :erlang, :nodes, [], @call_timeout)

    full =
      Enum.zip(views, expected)
      |> Enum.all?(fn {seen, want} -> MapSet.subset?(want, MapSet.new(seen)) end)

    # A slow sample (a busy machine) is not made up for with a burst.
    next = max(next + @sample_ms * 1_000, System.os_time(:microsecond))
    sample(peers, expected, t, next, stop, [{at_ms, full} | acc])
  end

  defp sample(_peers, _expected, _t, _next, _stop, acc), do: Enum.reverse(acc)

  defp summarize(arm, n, samples, start, finish, cfg) do
    window = for {at, full} <- samples, at >= cfg.settle_ms, do: full
    polls = finish.polls - start.polls

    queries =
      for {key, s} <- finish.dns,
          q = s.queries - Map.get(start.dns, key, %{queries: 0}).queries,
          q > 0,
          into: %{},
          do: {key, q}

    udp_srv = fn stats -> get_in(stats, [{:srv, :udp}]) || %{queries: 0, trimmed: 0} end

    %{
      arm: arm,
      n: n,
      samples: length(window),
      fraction: if(window == [], do: 0.0, else: Enum.count(window, & &1) / length(window)),
      first_full_ms: Enum.find_value(samples, fn {at, full} -> full && at end),
      downs_per_node_min: (finish.downs - start.downs) / n / (cfg.window_ms / 60_000),
      polls: polls,
      queries: queries,
      per_poll: Map.new(queries, fn {k, q} -> {k, q / max(polls, 1)} end),
      udp_trimmed: udp_srv.(finish.dns).trimmed - udp_srv.(start.dns).trimmed
    }
  end

  defp register_all(consul, n) do
    for k <- 1..n do
      ip = {127, 0, 0, 100 + k}
      port = Os.free_port()
      id = "alloc-#{k}"

      :ok =
        ConsulDns.register(consul, "my-app", id, %{node: "client-#{k}", address: ip, port: port})

      %{k: k, ip: ip, port: port, name: "app-#{port}@#{:inet.ntoa(ip)}"}
    end
  end

  # The recipe's boot: its node name, DYNAMIC_SRV_PORT_MODE=name, listening on its own
  # address only. OTP defaults otherwise (global's connect_all and
  # prevent_overlapping_partitions, as in production), as every other cluster section.
  defp boot(arm, instances, dns, cfg) do
    shared = [
      epmd_module: "Elixir.DynamicSrv.Epmd",
      env: %{"DYNAMIC_SRV_PORT_MODE" => "name"},
      ebin: if(arm == :before, do: cfg.before_ebin)
    ]

    specs =
      for i <- instances do
        interface = "{" <> (i.ip |> Tuple.to_list() |> Enum.join(",")) <> "}"
        peer_arm = if arm == :classic, do: :classic, else: :ours
        {i.name, peer_arm, i.port, [erl_args: ["-kernel", "inet_dist_use_interface", interface]]}
      end

    Peer.start_many!(specs, dns, shared)
  end

  defp poller_opts(:classic, consul, interval) do
    [
      service: @service,
      polling_interval: interval,
      node_naming: @naming,
      inet_res_options: [nameservers: [{{127, 0, 0, 1}, consul.port}]]
    ]
  end

  # The before arm gets only what that build knows, so it runs its own defaults.
  defp poller_opts(arm, consul, interval) do
    base = [
      service: @service,
      polling_interval: interval,
      node_naming: @naming,
      nameservers: ConsulDns.nameserver(consul)
    ]

    if arm == :ours_udp, do: base ++ [dns_transport: :udp], else: base
  end

  # --- poll latency, UDP vs TCP, in this VM ----------------------------------------------

  @doc """
  Times `polls` `DynamicSrv.Cluster.poll_now/1` calls per transport against ConsulDns with
  `n` instances, alternating UDP and TCP so both see the same machine. The MFAs do nothing
  (list_nodes answers every member, so nothing is dialed): a poll is the query, the answer's
  mapping and the membership update. Returns ns samples per transport.
  """
  def poll_latency(n, polls) do
    consul = ConsulDns.start!(dc: "dc1")

    try do
      names = for i <- register_all(consul, n), do: String.to_atom(i.name)

      common = [
        service: @service,
        node_naming: @naming,
        nameservers: ConsulDns.nameserver(consul),
        polling_interval: 3_600_000,
        connect: {Function, :identity, []},
        disconnect: {Function, :identity, []},
        list_nodes: {Function, :identity, [names]}
      ]

      pollers =
        for transport <- [:udp, :tcp], into: %{} do
          {:ok, pid} = GenServer.start(DynamicSrv.Cluster, common ++ [dns_transport: transport])
          {transport, pid}
        end

      Process.put(:bench_pollers, Map.values(pollers))

      try do
        # Warm-up: the TCP connection, the NIF's runtime, the code paths.
        for _ <- 1..5, {_, pid} <- pollers, do: :ok = DynamicSrv.Cluster.poll_now(pid)

        samples =
          for _ <- 1..polls, {transport, pid} <- pollers do
            t0 = :erlang.monotonic_time(:nanosecond)
            :ok = DynamicSrv.Cluster.poll_now(pid)
            {transport, :erlang.monotonic_time(:nanosecond) - t0}
          end

        members =
          for {t, pid} <- pollers, into: %{}, do: {t, length(DynamicSrv.Cluster.members(pid))}

        stats = ConsulDns.stats(consul)

        %{
          udp: for({:udp, ns} <- samples, do: ns),
          tcp: for({:tcp, ns} <- samples, do: ns),
          members: members,
          udp_sent: sent_per_answer(stats[{:srv, :udp}]),
          tcp_sent: sent_per_answer(stats[{:srv, :tcp}])
        }
      after
        for pid <- Process.delete(:bench_pollers), do: GenServer.stop(pid)
      end
    after
      ConsulDns.stop(consul)
    end
  end

  defp sent_per_answer(nil), do: 0
  defp sent_per_answer(s), do: s.sent / max(s.queries, 1)

  # --- the section ------------------------------------------------------------------------

  defp section(sizes, arms, trials, latency, cfg) do
    title = fn
      :ours -> "Ours (TCP)"
      :ours_udp -> "Ours, UDP"
      :classic -> "Classic"
      :before -> "Before (UDP)"
    end

    cell = fn n, arm, fun ->
      case trials[{n, arm}] do
        %{failed: why} -> "failed: #{why}"
        t -> fun.(t)
      end
    end

    ratio = fn n, fun ->
      case {trials[{n, :ours}], trials[{n, :classic}]} do
        {%{failed: _}, _} -> "—"
        {_, %{failed: _}} -> "—"
        {o, c} -> fun.(o, c)
      end
    end

    rows =
      Enum.flat_map(sizes, fn n ->
        row = fn label, fun, r ->
          ["#{n} instances: #{label}" | Enum.map(arms, &cell.(n, &1, fun))] ++ [ratio.(n, r)]
        end

        [
          row.("full-mesh fraction", &Stats.fmt(&1.fraction, 2), fn o, c ->
            Stats.ratio(o.fraction, c.fraction)
          end),
          row.("time to first full mesh", &first_mesh/1, fn o, c ->
            if o.first_full_ms && c.first_full_ms,
              do: Stats.ratio(o.first_full_ms, c.first_full_ms),
              else: "—"
          end),
          row.("nodedowns per node per minute", &Stats.fmt(&1.downs_per_node_min, 1), fn o, c ->
            if o.downs_per_node_min == 0 and c.downs_per_node_min > 0,
              do: "0×",
              else: Stats.ratio(o.downs_per_node_min, c.downs_per_node_min)
          end),
          row.("DNS queries per node per poll", &per_poll/1, fn o, c ->
            Stats.ratio(total(o.per_poll), total(c.per_poll))
          end),
          latency_row(n, latency[n], arms)
        ]
      end)

    ours = for n <- sizes, do: trials[{n, :ours}]
    ok? = Enum.all?(ours, &(not Map.has_key?(&1, :failed)))

    each = fn fun ->
      Enum.map_join(ours, " / ", &if(&1[:failed], do: "failed", else: fun.(&1)))
    end

    srv_only? = fn t ->
      srv = Map.get(t.per_poll, {:srv, :tcp}, 0) + Map.get(t.per_poll, {:srv, :udp}, 0)
      addr = for {{type, _}, x} <- t.per_poll, type in [:a, :aaaa], do: x
      abs(srv - 1.0) <= 0.05 and Enum.sum(addr) == 0
    end

    addr_queries = fn t -> Enum.sum(for {{ty, _}, q} <- t.queries, ty in [:a, :aaaa], do: q) end

    %{
      key: :consul,
      title: "8. Consul's DNS (issue 10): the Consul + Nomad recipe at 24 and 50 instances",
      columns: ["#{cfg.interval} ms poll" | Enum.map(arms, title)] ++ ["Ours / Classic"],
      rows: rows,
      notes: notes(sizes, arms, trials, latency, cfg),
      goals: [
        {"Consul (24, 50 instances), ours: full-mesh fraction 1.0",
         each.(&Stats.fmt(&1.fraction, 2)), ok? and Enum.all?(ours, &(&1.fraction == 1.0))},
        {"Consul (24, 50 instances), ours: 0 nodedowns",
         each.(&Stats.fmt(&1.downs_per_node_min, 1)) <> " per node per minute",
         ok? and Enum.all?(ours, &(&1.downs_per_node_min == 0))},
        {"Consul (24, 50 instances), ours: 1 SRV query per node per poll, 0 A/AAAA",
         each.(&"#{per_poll(&1)}, #{addr_queries.(&1)} A/AAAA"),
         ok? and Enum.all?(ours, srv_only?)}
      ],
      data: %{trials: trials, latency: summarize_latency(latency)}
    }
  end

  defp first_mesh(%{first_full_ms: nil}), do: "never"
  defp first_mesh(%{first_full_ms: ms}), do: Stats.dur(ms * 1_000_000)

  defp total(per_poll), do: per_poll |> Map.values() |> Enum.sum()

  defp per_poll(%{per_poll: per_poll}) when map_size(per_poll) == 0, do: "0"

  defp per_poll(%{per_poll: per_poll}) do
    per_poll
    |> Enum.sort()
    |> Enum.map_join(", ", fn {{qtype, transport}, x} ->
      "#{Stats.fmt(x, 2)} #{qtype |> Atom.to_string() |> String.upcase()}/#{transport |> Atom.to_string() |> String.upcase()}"
    end)
  end

  defp latency_row(n, %{failed: why}, arms),
    do:
      ["#{n} instances: one poll in this VM" | Enum.map(arms, fn _ -> "failed: #{why}" end)] ++
        ["—"]

  defp latency_row(n, l, arms) do
    u = Stats.summary(l.udp)
    t = Stats.summary(l.tcp)
    show = fn s -> "#{Stats.dur(s.p50)} (p99 #{Stats.dur(s.p99)})" end

    cells =
      Enum.map(arms, fn
        :ours -> show.(t)
        :ours_udp -> show.(u)
        _ -> "—"
      end)

    ["#{n} instances: one poll in this VM, median (p99)" | cells] ++
      ["TCP / UDP: #{Stats.ratio(t.p50, u.p50)} (p99 #{Stats.ratio(t.p99, u.p99)})"]
  end

  defp summarize_latency(latency) do
    Map.new(latency, fn
      {n, %{failed: _} = f} ->
        {n, f}

      {n, l} ->
        {n,
         %{
           udp: Map.take(Stats.summary(l.udp), [:p50, :p99]),
           tcp: Map.take(Stats.summary(l.tcp), [:p50, :p99]),
           members: l.members,
           udp_sent: l.udp_sent,
           tcp_sent: l.tcp_sent
         }}
    end)
  end

  defp notes(sizes, arms, trials, latency, cfg) do
    trimmed =
      for n <- sizes, arm <- arms, t = trials[{n, arm}], not Map.has_key?(t, :failed) do
        udp = t.queries |> Map.get({:srv, :udp}, 0)
        "#{n}/#{arm}: #{t.udp_trimmed} of #{udp}"
      end

    records =
      for n <- sizes, l = latency[n], not Map.has_key?(l, :failed) do
        "#{n} instances: #{Stats.fmt(l.udp_sent, 1)} SRV records per UDP answer, #{Stats.fmt(l.tcp_sent, 1)} per TCP answer"
      end

    before =
      if :before in arms,
        do: [
          "Before: `DynamicSrv.Cluster` of the build in `BENCH_BEFORE_EBIN` (#{cfg.before_ebin}), with only `service`, `polling_interval`, `node_naming`, `nameservers` (it polls over UDP with EDNS and knows no `removal_delay`), and that build's `DynamicSrv.Epmd`."
        ],
        else: []

    [
      "ConsulDns (test/support/consul_dns.ex) answers by Consul's DNS rules: instances shuffled on every query, UDP answers trimmed without the TC bit to 3 records without EDNS or to the client's EDNS size (hickory advertises 1232 bytes: 19 instances with one address each), TCP complete, `<hex-ip>.addr.dc1.consul` targets with A and node-meta TXT records in the additional section, TTL 0. " <>
        "Each arm boots fresh nodes, one per instance, each registered as Nomad registers an allocation and listening on its own address 127.0.0.(100+k) as `app-PORT@IP` (the README's Consul + Nomad recipe: `service: \"#{@service}\"`, `node_naming: {:basename_port_ip, \"app\"}`), all with `DynamicSrv.Epmd` and `DYNAMIC_SRV_PORT_MODE=name` (ports and IPs from the names, no DNS per connection), OTP defaults otherwise (`global`'s `connect_all` and `prevent_overlapping_partitions`), so the arms differ only in the poller. " <>
        "Ours: `DynamicSrv.Cluster`, default options (polls over TCP). Ours, UDP: `dns_transport: :udp`. Classic: one `:inet_res` SRV query per poll (no EDNS, so Consul sends 3 records), the members are exactly the last answer and whoever is absent is disconnected (the original library's rule), names from the additional section's A records.",
      "All pollers start at the same instant T, every #{cfg.interval} ms. Every #{@sample_ms} ms each node's `Node.list()` is read; a sample is a full mesh when every node lists all n−1 others. Time to first full mesh: the first such sample after T (#{@sample_ms} ms resolution), \"never\" if none within #{div(cfg.settle_ms + cfg.window_ms, 1000)} s. " <>
        "The window: #{div(cfg.window_ms, 1000)} s starting #{div(cfg.settle_ms, 1000)} s after T; the full-mesh fraction, the nodedowns (`:net_kernel.monitor_nodes/2` on every node) and the DNS queries (ConsulDns's counts by type and transport) are over the window. Polls are counted on each node by tracing its poller's `:poll` timer messages. " <>
        "UDP SRV answers trimmed in the window (arm: trimmed of queries): #{Enum.join(trimmed, "; ")}. " <>
        "Over UDP, more than one query per poll is a retry after an answer came late on the loaded machine: hickory retries once after its attempt timeout (a third of `DYNAMIC_SRV_LOOKUP_TIMEOUT_MS`, 1 s), `:inet_res` (classic) after 2 s; ConsulDns is one Erlang process in the bench VM that trims every UDP answer."
    ] ++
      before ++
      [
        "One poll in this VM: a `DynamicSrv.Cluster` per transport against a ConsulDns in this VM with 24 or 50 instances, MFAs that do nothing (no connection is made), the median and p99 of the time `poll_now/1` takes (query, mapping, membership update), #{latency_count(latency)} polls per transport, UDP and TCP alternating. Over UDP Consul sends fewer records (#{Enum.join(records, "; ")}), so part of TCP's extra time is the larger, complete answer."
      ]
  end

  defp latency_count(latency) do
    case Enum.find(Map.values(latency), &Map.has_key?(&1, :udp)) do
      nil -> "?"
      l -> length(l.udp)
    end
  end
end
