defmodule DynamicSrv.Bench.ClusterRun do
  @moduledoc false
  # Real nodes (OS processes) of one arm against a dnsmasq of their own: pollers started on
  # every node at the same instant, time to full mesh, DNS queries logged, optionally a
  # steady-state phase, a node joining, footprint and long_schedule events.

  alias DynamicSrv.Bench.{Dns, Os, Peer}

  @agent DynamicSrv.Bench.Agent
  @start_delay_us 300_000

  @doc """
  Options: `:interval` (poll ms, default 1000), `:keep_ms` (run on after T this long and
  count), `:join` (then boot one more node and time its joining).
  """
  def trial(arm, n, opts \\ []) do
    interval = Keyword.get(opts, :interval, 1_000)
    keep_ms = Keyword.get(opts, :keep_ms, 0)
    service = "s#{n}.bench.test"
    nodes = for i <- 1..n, do: {"n#{i}", Os.free_port()}
    join = if opts[:join], do: {"n#{n + 1}", Os.free_port()}
    Process.put(:bench_dns, Dns.start!(records(service, nodes)))

    try do
      dns = Process.get(:bench_dns)

      peers =
        Peer.start_many!(for({name, port} <- nodes, do: {"#{name}@#{service}", arm, port}), dns)

      Process.put(:bench_peers, peers)
      names = Enum.map(peers, & &1.name)
      true = Enum.all?(Peer.call_all(peers, @agent, :watch_mesh, [names]), &(&1 == :ok))
      Peer.call_all(peers, @agent, :monitor_long_schedule, [1])
      q_boot = Dns.queries(dns)
      t = System.os_time(:microsecond) + @start_delay_us
      poller = poller_opts(arm, service, dns, interval)
      Peer.call_all(peers, @agent, :start_poller_at, [arm, t, poller])
      formed = await_mesh(peers, dns, t)

      result = %{
        arm: arm,
        n: n,
        converge_us: formed.us,
        detect_lag_us: formed.lag_us,
        boot_queries: q_boot.total,
        form_queries: Dns.diff(formed.queries, q_boot)
      }

      result =
        if keep_ms > 0 do
          sleep_until(t + keep_ms * 1_000)
          kept = Dns.diff(Dns.queries(dns), q_boot)
          footprint = Enum.map(peers, &Os.status(&1.os_pid))
          Map.merge(result, %{keep_ms: keep_ms, keep_queries: kept, footprint: footprint})
        else
          result
        end

      result =
        if join do
          Map.put(result, :join, join(arm, join, peers, nodes, service, interval))
        else
          result
        end

      long = Peer.call_all(Process.get(:bench_peers), @agent, :long_schedule_report, [])
      Map.put(result, :long_schedule, long)
    after
      Peer.stop_all(Process.get(:bench_peers, []))
      Dns.stop_and_clean(Process.get(:bench_dns))
      Process.delete(:bench_peers)
      Process.delete(:bench_dns)
    end
  end

  # Boots the new node (no poller yet), then registers it (restarts DNS with its records
  # added) and starts its poller at once, as a node that registers when it comes up. T is the
  # moment DNS serves the new records; the time is until all n + 1 nodes see the full mesh.
  defp join(arm, {name, port}, peers, nodes, service, interval) do
    dns = Process.get(:bench_dns)
    new = Peer.start!("#{name}@#{service}", arm, port, dns)
    all = peers ++ [new]
    Process.put(:bench_peers, all)
    names = Enum.map(all, & &1.name)
    true = Enum.all?(Peer.call_all(all, @agent, :watch_mesh, [names]), &(&1 == :ok))
    dns = Dns.restart!(dns, records(service, nodes ++ [{name, port}]))
    t = System.os_time(:microsecond)
    q0 = Dns.queries(dns)
    Process.put(:bench_dns, dns)
    Peer.call(new, @agent, :start_poller_at, [arm, t, poller_opts(arm, service, dns, interval)])
    joined = await_mesh(all, dns, t)
    %{us: joined.us, lag_us: joined.lag_us, queries: Dns.diff(joined.queries, q0)}
  end

  defp poller_opts(:ours, service, dns, interval) do
    [
      service: service,
      polling_interval: interval,
      nameservers: Dns.nameserver(dns),
      disconnect_on_deregister: false
    ]
  end

  defp poller_opts(:classic, service, _dns, interval) do
    [service: service, polling_interval: interval, disconnect_on_deregister: false]
  end

  # Polls every node's mesh time; the DNS count is taken as soon as all have one.
  defp await_mesh(peers, dns, t, deadline_ms \\ 60_000) do
    times = Peer.call_all(peers, @agent, :mesh_time, [])

    cond do
      Enum.all?(times, &is_integer/1) ->
        queries = Dns.queries(dns)
        last = Enum.max(times)
        %{us: last - t, lag_us: System.os_time(:microsecond) - last, queries: queries}

      deadline_ms <= 0 ->
        missing = for {p, nil} <- Enum.zip(peers, times), do: p.name
        raise "no full mesh within 60 s after the pollers started; missing: #{inspect(missing)}"

      true ->
        Process.sleep(10)
        await_mesh(peers, dns, t, deadline_ms - 10)
    end
  end

  def records(service, nodes) do
    Enum.flat_map(nodes, fn {name, port} ->
      target = "#{name}.#{service}"
      [{:srv, service, target, port}, {:srv, target, target, port}, {:a, target, "127.0.0.1"}]
    end)
  end

  @doc "Sleeps until os_time `at_us` (µs), if it is still ahead."
  def sleep_until(at_us) do
    left = div(at_us - System.os_time(:microsecond), 1_000)
    if left > 0, do: Process.sleep(left)
  end
end
