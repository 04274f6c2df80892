defmodule DynamicSrv.Bench.Safety do
  @moduledoc false
  # (6) Scheduler safety: 100k address_please/3 calls, 9 hits to 1 miss, from 10 concurrent
  # callers in this VM, under :erlang.system_monitor(pid, [{:long_schedule, 1}]). Then the
  # classic module the same way (it has no cache: every call asks DNS twice).

  alias DynamicSrv.Bench.{Agent, ClassicEpmd, Dns, Local, Stats}
  alias DynamicSrv.Epmd

  @domain "safe.bench.test"
  @host ~c"safe.bench.test"
  @hits 100
  @misses 10

  def records do
    for prefix <- ["h", "m"], i <- 1..max(@hits, @misses), prefix == "h" or i <= @misses do
      name = "#{prefix}#{i}.#{@domain}"
      [{:srv, name, name, 4370}, {:a, name, "127.0.0.1"}]
    end
    |> List.flatten()
  end

  def run(opts \\ []) do
    total = Keyword.get(opts, :lookups, 100_000)
    classic_total = Keyword.get(opts, :classic_lookups, total)
    callers = Keyword.get(opts, :callers, 10)
    dns = Dns.start!(records())
    Local.use_dns(dns)

    try do
      # Hits: cached for an hour. Misses: then a zero hold time (TTL 0 records), so every call
      # to m1..m10 misses and asks DNS once. The cache is shared by every configuration, so the
      # hits stay cached; the DNS query count below checks the hit/miss split.
      Local.configure_ours(dns, %{"DYNAMIC_SRV_MIN_TTL_MS" => "3600000"})
      for i <- 1..@hits, do: {:ok, _, _, 6} = Epmd.address_please(~c"h#{i}", @host, :inet)
      Local.configure_ours(dns, %{"DYNAMIC_SRV_MIN_TTL_MS" => "0"})
      ours = monitored(dns, total, callers, &Epmd.address_please/3)
      # The control runs as long as ours did, so both are exposed to the machine equally.
      control = monitored(dns, total, callers, &control_lookup/3, ours.elapsed_us)
      classic = monitored(dns, classic_total, callers, &ClassicEpmd.address_please/3)
      result(ours, classic, control, callers)
    after
      Dns.stop_and_clean(dns)
    end
  end

  # Runs `total` lookups over `callers` processes (or, with `for_us`, repeats them until that
  # much time has passed) under the long_schedule monitor.
  defp monitored(dns, total, callers, lookup, for_us \\ nil) do
    q0 = Dns.total(dns)
    per_caller = div(total, callers)
    :ok = Agent.stop_long_schedule()
    Agent.monitor_long_schedule(1)
    wait0 = scheduler_wait_ns()
    t0 = System.monotonic_time(:microsecond)
    deadline = for_us && t0 + for_us

    {calls, errors} =
      1..callers
      |> Enum.map(fn c -> Task.async(fn -> calls(lookup, c, per_caller, deadline) end) end)
      |> Task.await_many(600_000)
      |> Enum.reduce({0, 0}, fn {n, e}, {calls, errors} -> {calls + n, errors + e} end)

    elapsed_us = System.monotonic_time(:microsecond) - t0
    wait_ns = scheduler_wait_ns() - wait0
    report = Agent.long_schedule_report()
    :ok = Agent.stop_long_schedule()

    %{
      calls: calls,
      misses: div(calls, 10),
      errors: errors,
      queries: Dns.total(dns) - q0,
      elapsed_us: elapsed_us,
      wait_ms_per_s: wait_ns / elapsed_us,
      long: report
    }
  end

  # Time this VM's scheduler threads spent runnable but waiting for a CPU (Linux schedstat):
  # the OS preemption that long_schedule events, measured in wall time, also include.
  defp scheduler_wait_ns do
    for task <- Path.wildcard("/proc/self/task/*"),
        {:ok, comm} <- [File.read(Path.join(task, "comm"))],
        Regex.match?(~r/^\d+_scheduler$/, String.trim(comm)),
        {:ok, stat} <- [File.read(Path.join(task, "schedstat"))],
        reduce: 0 do
      acc -> acc + (stat |> String.split() |> Enum.at(1) |> String.to_integer())
    end
  end

  # The control arm: the same callers and the same scheduling pattern with no NIF and no DNS.
  # A "hit" returns at once; a "miss" waits for a process it spawns, as address_please/3
  # waits for its lookup. Events here are the machine's own noise (OS preemption).
  defp control_lookup([?m | _], _host, _family) do
    parent = self()
    ref = make_ref()
    spawn(fn -> send(parent, {ref, {:ok, {127, 0, 0, 1}, 4370, 6}}) end)

    receive do
      {^ref, reply} -> reply
    end
  end

  defp control_lookup(_name, _host, _family), do: {:ok, {127, 0, 0, 1}, 4370, 6}

  # Every 10th call is a miss; the others cycle through the hit names. Returns {calls, errors}.
  defp calls(lookup, caller, n, deadline) do
    errors = calls(lookup, caller, n)

    if deadline && System.monotonic_time(:microsecond) < deadline do
      {more, more_errors} = calls(lookup, caller, n, deadline)
      {n + more, errors + more_errors}
    else
      {n, errors}
    end
  end

  defp calls(lookup, caller, n) do
    Enum.reduce(1..n, 0, fn i, errors ->
      name =
        if rem(i, 10) == 0,
          do: ~c"m#{rem(i + caller, @misses) + 1}",
          else: ~c"h#{rem(i + caller, @hits) + 1}"

      case lookup.(name, @host, :inet) do
        {:ok, _, 4370, 6} -> errors
        _ -> errors + 1
      end
    end)
  end

  defp result(ours, classic, control, callers) do
    all = fn r -> r.long.all end
    mine = fn r -> r.long.lookup_code end

    rows = [
      [
        "lookups (of which cache misses)",
        "#{Stats.group("#{ours.calls}")} (#{Stats.group("#{ours.misses}")})",
        "#{Stats.group("#{classic.calls}")} (all)",
        "—",
        "#{Stats.group("#{control.calls}")} (#{Stats.group("#{control.misses}")})"
      ],
      [
        "DNS queries",
        Stats.group("#{ours.queries}"),
        Stats.group("#{classic.queries}"),
        Stats.ratio(ours.queries, classic.queries),
        "#{control.queries}"
      ],
      [
        "wall time",
        Stats.dur(ours.elapsed_us * 1000),
        Stats.dur(classic.elapsed_us * 1000),
        Stats.ratio(ours.elapsed_us / ours.calls, classic.elapsed_us / classic.calls) <>
          " per lookup",
        Stats.dur(control.elapsed_us * 1000)
      ],
      [
        "scheduler threads waiting for a CPU (schedstat)",
        "#{Stats.fmt(ours.wait_ms_per_s, 0)} ms/s",
        "#{Stats.fmt(classic.wait_ms_per_s, 0)} ms/s",
        "—",
        "#{Stats.fmt(control.wait_ms_per_s, 0)} ms/s"
      ],
      [
        "long_schedule events ≥ 1 ms, whole VM",
        "#{all.(ours).count}",
        "#{all.(classic).count}",
        "—",
        "#{all.(control).count}"
      ],
      [
        "longest event, whole VM",
        max_ms(all.(ours)),
        max_ms(all.(classic)),
        "—",
        max_ms(all.(control))
      ],
      [
        "events in lookup code (DynamicSrv / :inet_res)",
        "#{mine.(ours).count}",
        "#{mine.(classic).count}",
        "—",
        "—"
      ],
      [
        "longest event in lookup code",
        max_ms(mine.(ours)),
        max_ms(mine.(classic)),
        "—",
        "—"
      ],
      ["failed lookups", "#{ours.errors}", "#{classic.errors}", "—", "—"]
    ]

    %{
      key: :safety,
      title: "6. Scheduler safety: lookups under `system_monitor` `{:long_schedule, 1}`",
      columns: ["", "Ours", "Classic", "Ours / Classic", "Control (no NIF, no DNS)"],
      rows: rows,
      notes: [
        "#{callers} concurrent callers in the benchmark VM, 9 of 10 calls cached names, every 10th a miss (a zero hold time on TTL 0 records, so each miss makes one SRV query). The classic module has no cache. " <>
          "`long_schedule` reports any process or port that ran ≥ 1 ms between being scheduled in and out, in wall time; the whole VM is monitored, including the benchmark's own processes, and events are also counted separately when the process was in DynamicSrv or `:inet_res`/`:inet_db` code when scheduled in or out. " <>
          "The control arm repeats the same pattern with no NIF and no DNS (a \"hit\" returns at once, a \"miss\" waits for a process it spawns) for as long as ours ran: its events are what the machine's own noise produces. " <>
          "\"Waiting for a CPU\" is the time this VM's two scheduler threads were runnable but not running (`/proc/self/task/*/schedstat`: after each wake-up and whenever preempted), per second of the run: with dnsmasq and the DNS thread on the same 2 cores it is high in both lookup arms, and it is wall time that long_schedule counts too.",
        "Event samples, ours: #{samples(all.(ours))}; classic: #{samples(all.(classic))}; control: #{samples(all.(control))}."
      ],
      goals: [
        {"zero long_schedule events (100k mixed lookups)",
         "#{all.(ours).count} (#{mine.(ours).count} in lookup code), max #{max_ms(all.(ours))}",
         all.(ours).count == 0}
      ],
      data: %{ours: ours, classic: classic, control: control}
    }
  end

  defp max_ms(%{count: 0}), do: "—"
  defp max_ms(%{max_ms: ms}), do: "#{ms} ms"

  defp samples(%{sample: []}), do: "none"

  defp samples(%{sample: sample}) do
    sample
    |> Enum.map(fn {ms, {from, to}} -> "#{ms} ms #{mfa(from)} → #{mfa(to)}" end)
    |> Enum.join("; ")
  end

  defp mfa({m, f, a}), do: "#{inspect(m)}.#{f}/#{a}"
  defp mfa(other), do: inspect(other)
end

defmodule DynamicSrv.Bench.SafetyInCluster do
  @moduledoc false
  # Adds the long_schedule events counted inside every node of the DNS load runs (10 nodes per
  # arm, formation + 30 s of 1 s polls) to the scheduler safety table.

  def add(result, ours, classic) do
    sum = fn trial, key ->
      reports = Enum.reject(trial.long_schedule, &is_nil/1)
      count = reports |> Enum.map(& &1[key].count) |> Enum.sum()
      max = reports |> Enum.map(& &1[key].max_ms) |> Enum.max(fn -> 0 end)
      if count == 0, do: "0", else: "#{count} (max #{max} ms)"
    end

    rows = [
      [
        "10-node cluster run, all nodes: events, whole VM",
        sum.(ours, :all),
        sum.(classic, :all),
        "—",
        "—"
      ],
      [
        "10-node cluster run: events in lookup code",
        sum.(ours, :lookup_code),
        sum.(classic, :lookup_code),
        "—",
        "—"
      ]
    ]

    samples =
      for {label, trial} <- [{"ours", ours}, {"classic", classic}] do
        events =
          trial.long_schedule
          |> Enum.reject(&is_nil/1)
          |> Enum.flat_map(& &1.lookup_code.sample)
          |> Enum.sort_by(fn {ms, _} -> -ms end)
          |> Enum.take(3)
          |> Enum.map(fn {ms, {from, to}} -> "#{ms} ms #{mfa(from)} → #{mfa(to)}" end)

        "#{label}: #{if events == [], do: "none", else: Enum.join(events, "; ")}"
      end

    keep_s = div(ours.keep_ms, 1000)

    %{
      result
      | rows: result.rows ++ rows,
        notes:
          result.notes ++
            [
              "The cluster rows: every node of the DNS load run monitored itself from just before its poller started to the end (formation, #{keep_s} s of polls, the join); events include node start-up work such as code loading. " <>
                "Longest events in lookup code there: " <> Enum.join(samples, "; ") <> "."
            ]
    }
  end

  defp mfa({m, f, a}), do: "#{inspect(m)}.#{f}/#{a}"
  defp mfa(other), do: inspect(other)
end
