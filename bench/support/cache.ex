defmodule DynamicSrv.Bench.Cache do
  @moduledoc false
  # Section 9 (issue 11): the shared address cache when it is full. A ScriptedDns answers
  # 65 services of 1024 instances each (with their addresses); one poll of each of 64
  # topologies fills the 65,536-entry cache (one topology cannot: it holds max_nodes
  # members and removes none while answers rotate, issue 10). Then a
  # cache hit (what `address_please/3` does for a known node) is timed idle, and again while
  # the diagnosis snapshot (`DynamicSrv.diagnose/0`'s `cache_snapshot`) and polls of 1024
  # more new names run beside it. The same NIF in both phases: the ratio is the cost a full
  # cache puts on connections.

  alias DynamicSrv.Bench.Stats
  alias DynamicSrv.Native
  alias DynamicSrv.Test.ScriptedDns

  @domain "rot.bench.test"
  @per_answer 1024
  @capacity 65_536
  @refreshed div(@capacity, @per_answer)

  def run(opts \\ []) do
    phase_ms = Keyword.get(opts, :phase_ms, 3_000)
    :ok = Native.load()
    dns = ScriptedDns.start!(nil, {:forge, &answer/2})

    try do
      vars = %{
        "DYNAMIC_SRV_NAMESERVERS" => ScriptedDns.nameserver(dns),
        "DYNAMIC_SRV_PORT_MODE" => "srv",
        "ERL_DIST_PORT" => "4370"
      }

      {:ok, engine} = Native.configure(vars)

      # The last fill service answers with TTL 0 and is polled with no minimum TTL: each of
      # its polls rewrites all 1024 entries (the costliest refresh, Consul's default TTL).
      topology = fn k ->
        vars = if k == @refreshed, do: Map.put(vars, "DYNAMIC_SRV_MIN_TTL_MS", "0"), else: vars

        {:ok, topology} =
          Native.topology_new(
            vars,
            {"s#{k}.#{@domain}", :service_prefix, nil, :inet, @per_answer, nil,
             {:tcp, 10_000, 5_000}}
          )

        topology
      end

      fill_polls = div(@capacity, @per_answer)
      fill = for k <- 1..fill_polls, do: hd(Stats.time_n(1, fn -> poll!(topology.(k)) end))
      total = Native.cache_snapshot(1).total
      total >= @capacity || raise "the cache holds #{total} entries after #{fill_polls} polls"

      hot = "n1@s1.#{@domain}"
      {:ok, _, _} = Native.lookup_cached(engine, hot, :inet)
      hit = fn -> Native.lookup_cached(engine, hot, :inet) end

      idle = summary(time_for(phase_ms, hit))
      # 1024 names the full cache has no room for, offered on every poll.
      extra = topology.(fill_polls + 1)
      {loaded, background} = while_loaded(extra, fn -> time_for(phase_ms, hit) end)
      # 1024 names the cache holds, rewritten on every poll.
      refresh = topology.(@refreshed)
      {refreshing, rewrites} = while_loaded(refresh, fn -> time_for(phase_ms, hit) end)

      result(%{
        idle: idle,
        loaded: summary(loaded),
        refreshing: summary(refreshing),
        refresh_poll: Stats.summary(rewrites.polls),
        fill: Stats.summary(fill),
        snapshot: Stats.summary(background.snapshots),
        full_poll: Stats.summary(background.polls),
        phase_ms: phase_ms,
        total: total
      })
    after
      ScriptedDns.stop(dns)
    end
  end

  # Snapshots (as `DynamicSrv.diagnose/0` takes them, every 5 ms) and polls of new names
  # (back to back) while `measure` runs; their own timings come back too.
  defp while_loaded(topology, measure) do
    parent = self()
    stop = :atomics.new(1, [])

    loop = fn name, pause, fun ->
      spawn_link(fn ->
        times =
          Stream.repeatedly(fn ->
            [t] = Stats.time_n(1, fun)
            Process.sleep(pause)
            t
          end)
          |> Enum.take_while(fn _ -> :atomics.get(stop, 1) == 0 end)

        send(parent, {name, times})
      end)
    end

    loop.(:snapshots, 5, fn -> Native.cache_snapshot(50) end)
    loop.(:polls, 0, fn -> poll!(topology) end)
    # Let both get going before the clock starts.
    Process.sleep(200)
    samples = measure.()
    :atomics.put(stop, 1, 1)

    background =
      for name <- [:snapshots, :polls], into: %{} do
        receive do
          {^name, times} -> {name, times}
        after
          60_000 -> raise "the #{name} loop did not stop"
        end
      end

    {samples, background}
  end

  # Times `fun` over and over for `ms` milliseconds, in batches of 1000, in a process of its
  # own whose heap stays small: a sample must not include a collection of all the others.
  defp time_for(ms, fun) do
    parent = self()
    deadline = System.monotonic_time(:millisecond) + ms

    pid =
      spawn_link(fn ->
        Stream.repeatedly(fn -> send(parent, {:batch, self(), Stats.time_n(1000, fun)}) end)
        |> Enum.find(fn _ -> System.monotonic_time(:millisecond) >= deadline end)

        send(parent, {:done, self()})
      end)

    collect(pid, [])
  end

  defp collect(pid, acc) do
    receive do
      {:batch, ^pid, batch} -> collect(pid, [batch | acc])
      {:done, ^pid} -> List.flatten(acc)
    end
  end

  defp summary(samples) do
    sorted = Enum.sort(samples)
    n = length(sorted)
    Map.put(Stats.summary(sorted), :p999, Enum.at(sorted, min(n - 1, ceil(0.999 * n) - 1)))
  end

  defp poll!(topology) do
    tag = make_ref()
    :ok = Native.topology_poll(topology, self(), tag)

    receive do
      {^tag, %{failed: false, records: @per_answer}} -> :ok
      {^tag, poll} -> raise "a fill poll failed: #{inspect(Map.drop(poll, [:members, :joined]))}"
    after
      60_000 -> raise "no poll answer"
    end
  end

  # Service `s<k>`: instances `n1`..`n1024`, each with its own address.
  defp answer("s" <> _ = service, :srv) do
    {srv, a} =
      for n <- 1..@per_answer do
        target = "n#{n}.#{service}"
        ip = {127, 2, div(n, 256), rem(n, 256)}
        {{:srv, service, 1, 1, 10_000 + n, target}, {:a, target, ip}}
      end
      |> Enum.unzip()

    {srv, a, ttl: if(service == "s#{@refreshed}.#{@domain}", do: 0, else: 3600)}
  end

  defp answer(_name, _type), do: nil

  defp result(s) do
    d = &Stats.dur/1

    row = fn label, key ->
      [
        label,
        d.(s.idle[key]),
        d.(s.loaded[key]),
        Stats.ratio(s.loaded[key], s.idle[key]),
        d.(s.refreshing[key]),
        Stats.ratio(s.refreshing[key], s.idle[key])
      ]
    end

    count = &Stats.group(Integer.to_string(&1))

    rows = [
      row.("cache hit p50", :p50),
      row.("cache hit p99", :p99),
      row.("cache hit p99.9", :p999),
      row.("cache hit max", :max),
      [
        "hits done in #{div(s.phase_ms, 1000)} s",
        count.(s.idle.n),
        count.(s.loaded.n),
        Stats.ratio(s.loaded.n, s.idle.n),
        count.(s.refreshing.n),
        Stats.ratio(s.refreshing.n, s.idle.n)
      ]
    ]

    %{
      key: :cache,
      title: "9. A full address cache: cache hits beside snapshots and polls of new names",
      columns: [
        "",
        "Idle",
        "Snapshots + polls of 1024 new names",
        "/ Idle",
        "Snapshots + polls rewriting 1024 names",
        "/ Idle"
      ],
      rows: rows,
      notes: [
        "#{Stats.group(Integer.to_string(s.total))} entries (full) after one poll each of #{s.fill.n} topologies of 1024 instances (p50 #{d.(s.fill.p50)} per poll while filling). " <>
          "#{s.phase_ms} ms of hits per phase, back to back, on one node name: `lookup_cached`, as `address_please/3` calls it. A hit that waits on the cache's lock shows in the tail and in how many hits get done.",
        "Beside the loaded phase: #{s.snapshot.n} snapshots of 50 entries (diagnose's view; p50 #{d.(s.snapshot.p50)}, max #{d.(s.snapshot.max)}) and #{s.full_poll.n} polls of a 65th topology, whose 1024 names the full cache has no room for, (p50 #{d.(s.full_poll.p50)}, max #{d.(s.full_poll.max)}), answered by ScriptedDns over TCP."
      ],
      goals: [
        {"cache hit p99 with a full-cache snapshot and a 1024-name poll running ≤ 2× idle",
         Stats.ratio(s.loaded.p99, s.idle.p99), s.loaded.p99 <= 2 * s.idle.p99}
      ],
      data: s
    }
  end
end
