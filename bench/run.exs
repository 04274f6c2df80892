# Every benchmark of issue 5, side by side with the classic baseline in the same run; prints
# the results and rewrites the results section of BENCHMARKS.md. Run it through
# ./scripts/bench (which compiles, sets MIX_ENV=test and cleans up after a crash):
#
#   ./scripts/bench            the full run (about 8 minutes on 2 cores)
#   ./scripts/bench --quick    shorter, for trying changes; BENCHMARKS.md is left alone
#   ./scripts/bench --only latency,safety   some sections (implies --no-write)
#   ./scripts/bench --only consul --write   writes just those sections into BENCHMARKS.md
#   ./scripts/bench --no-write
#   BENCH_BEFORE_EBIN=<another build's ebin> ./scripts/bench --only consul --no-write
#                              adds that build's DynamicSrv.Cluster as a "before" arm to
#                              section 8 (e.g. the commit before issue 10)
Code.require_file("support/load.exs", __DIR__)

alias DynamicSrv.Bench.{
  Cache,
  ClusterResults,
  ClusterRun,
  Concurrency,
  Consul,
  Footprint,
  LargeAnswer,
  Latency,
  Report,
  Safety,
  Scale,
  SafetyInCluster
}

{opts, _, _} =
  OptionParser.parse(System.argv(), strict: [quick: :boolean, write: :boolean, only: :string])

quick = Keyword.get(opts, :quick, false)
only = opts[:only] && opts[:only] |> String.split(",") |> Enum.map(&String.to_atom/1)
write = Keyword.get(opts, :write, not quick and only == nil)
# Section 10 (scale) alone takes about 13 minutes: it runs only when named (--only scale).
want? = fn section -> if only == nil, do: section != :scale, else: section in only end

started = DateTime.utc_now() |> DateTime.truncate(:second)
t0 = System.monotonic_time(:millisecond)
load_before = Report.loadavg()
{:ok, _} = Application.ensure_all_started(:libcluster_dynamic_srv)
Logger.configure(level: :error)

step = fn name, fun ->
  IO.puts(:stderr, "==> #{name} (#{div(System.monotonic_time(:millisecond) - t0, 1000)} s)")

  try do
    {:ok, fun.()}
  rescue
    error ->
      IO.puts(:stderr, Exception.format(:error, error, __STACKTRACE__))
      {:failed, Exception.message(error)}
  end
end

failed = fn key, title, reason ->
  %{key: key, title: title, failed: reason, goals: [], rows: [], notes: [], columns: []}
end

latency =
  if want?.(:latency) do
    case step.("1. address_please latency", fn ->
           Latency.run(if quick, do: [rounds: 3, ttl0_ms: 2_000], else: [])
         end) do
      {:ok, sections} -> sections
      {:failed, why} -> [failed.(:latency, "1. `address_please/3` latency", why)]
    end
  else
    []
  end

large =
  if want?.(:large_answer) do
    case step.("4. large answer", fn -> LargeAnswer.run(if quick, do: [polls: 10], else: []) end) do
      {:ok, section} -> section
      {:failed, why} -> failed.(:large_answer, "4. Large answers", why)
    end
  end

safety =
  if want?.(:safety) do
    case step.("6. scheduler safety", fn ->
           Safety.run(if quick, do: [lookups: 20_000, classic_lookups: 5_000], else: [])
         end) do
      {:ok, section} -> section
      {:failed, why} -> failed.(:safety, "6. Scheduler safety", why)
    end
  end

concurrency =
  if want?.(:concurrency) do
    case step.("7. concurrency", fn -> Concurrency.run(if quick, do: [ms: 300], else: []) end) do
      {:ok, section} -> section
      {:failed, why} -> failed.(:concurrency, "7. Concurrency", why)
    end
  end

consul =
  if want?.(:consul) do
    quick_opts = [settle_ms: 5_000, window_ms: 6_000, latency_polls: 50]

    case step.("8. Consul's DNS, 24 and 50 instances", fn ->
           Consul.run(
             if(quick, do: quick_opts, else: []) ++
               [before_ebin: System.get_env("BENCH_BEFORE_EBIN")]
           )
         end) do
      {:ok, section} -> section
      {:failed, why} -> failed.(:consul, "8. Consul's DNS", why)
    end
  end

consul =
  if consul && quick && not Map.has_key?(consul, :failed),
    do: %{
      consul
      | notes: consul.notes ++ ["--quick: a 6 s window 5 s after T, 50 polls per transport."]
    },
    else: consul

cache =
  if want?.(:cache) do
    case step.("9. a full address cache", fn ->
           Cache.run(if quick, do: [phase_ms: 1_000], else: [])
         end) do
      {:ok, section} -> section
      {:failed, why} -> failed.(:cache, "9. A full address cache", why)
    end
  end

scale_only = fn
  nil ->
    fn _cluster -> true end

  text ->
    wanted = text |> String.split(",") |> Enum.map(&String.to_atom/1)
    {dns, arms} = Enum.split_with(wanted, &(&1 in [:dnsmasq, :consul]))
    fn c -> (dns == [] or c.dns in dns) and (arms == [] or c.arm in arms) end
end

scale =
  if want?.(:scale) do
    # BENCH_SCALE_SIZES=10,20 (and BENCH_SCALE_STEADY_S) for trying changes on a busy machine.
    sizes =
      case System.get_env("BENCH_SCALE_SIZES") do
        nil -> if quick, do: [10, 20], else: [25, 50, 100]
        text -> text |> String.split(",") |> Enum.map(&String.to_integer/1)
      end

    steady_s =
      String.to_integer(System.get_env("BENCH_SCALE_STEADY_S") || if(quick, do: "15", else: "60"))

    pop_off_size = fn
      nil -> nil
      text -> String.to_integer(text)
    end

    case step.("10. scale, #{Enum.join(sizes, ", ")} nodes", fn ->
           Scale.run(
             sizes: sizes,
             steady_ms: steady_s * 1_000,
             # BENCH_SCALE_POP_OFF=100: also ours against each DNS server at that size with
             # prevent_overlapping_partitions false (two clusters more: past the 15 minutes).
             pop_off: pop_off_size.(System.get_env("BENCH_SCALE_POP_OFF")),
             cost_members: [Enum.max(sizes), 1000],
             # BENCH_SCALE_ONLY=dnsmasq,ours: just the clusters with those DNS servers / arms.
             only: scale_only.(System.get_env("BENCH_SCALE_ONLY"))
           )
         end) do
      {:ok, section} -> section
      {:failed, why} -> failed.(:scale, "10. Scale", why)
    end
  end

idle =
  if want?.(:footprint) do
    case step.("5. footprint, idle nodes", fn -> Footprint.run() end) do
      {:ok, idle} -> idle
      {:failed, why} -> {:failed, why}
    end
  end

keep_ms = if quick, do: 5_000, else: 30_000

load_runs =
  if want?.(:dns_load) or want?.(:convergence) or want?.(:footprint) do
    for arm <- [:ours, :classic], into: %{} do
      {arm,
       step.("2. DNS load, 10 nodes, #{arm}", fn ->
         ClusterRun.trial(arm, 10, keep_ms: keep_ms, join: true)
       end)}
    end
  end

trials =
  if want?.(:convergence) do
    sizes = [5, 10, 20]
    per = if quick, do: 1, else: 3

    for round <- 1..per, n <- sizes, arm <- [:ours, :classic] do
      step.("3. convergence #{n} nodes, #{arm} (#{round}/#{per})", fn ->
        ClusterRun.trial(arm, n)
      end)
    end
  end

loaded = fn -> match?(%{ours: {:ok, _}, classic: {:ok, _}}, load_runs) end

dns_load =
  cond do
    not want?.(:dns_load) -> nil
    loaded.() -> ClusterResults.dns_load(elem(load_runs.ours, 1), elem(load_runs.classic, 1))
    true -> failed.(:dns_load, "2. DNS load", inspect(load_runs))
  end

dns_load =
  if dns_load && quick,
    do: %{
      dns_load
      | notes: dns_load.notes ++ ["--quick: #{div(keep_ms, 1000)} s instead of 30 s."]
    },
    else: dns_load

convergence =
  cond do
    not want?.(:convergence) ->
      nil

    not loaded.() ->
      failed.(:convergence, "3. Convergence", "the DNS load run failed")

    true ->
      ok = for {:ok, t} <- trials, do: t
      bad = for {:failed, why} <- trials, do: why

      section =
        ClusterResults.convergence(ok, elem(load_runs.ours, 1), elem(load_runs.classic, 1))

      if bad == [],
        do: section,
        else: %{
          section
          | notes: section.notes ++ ["#{length(bad)} trials failed: #{Enum.join(bad, "; ")}"]
        }
  end

footprint =
  cond do
    not want?.(:footprint) ->
      nil

    match?({:failed, _}, idle) ->
      failed.(:footprint, "5. Footprint", elem(idle, 1))

    true ->
      cluster =
        if loaded.() do
          statuses =
            for arm <- [:ours, :classic], s <- elem(load_runs[arm], 1).footprint, do: {arm, s}

          Footprint.summarize(statuses)
        end

      Footprint.result(idle, cluster, div(keep_ms, 1000))
  end

safety =
  if safety && Map.has_key?(safety, :data) && loaded.(),
    do: SafetyInCluster.add(safety, elem(load_runs.ours, 1), elem(load_runs.classic, 1)),
    else: safety

sections =
  Enum.reject(
    latency ++
      [dns_load, convergence, large, footprint, safety, concurrency, consul, cache, scale],
    &is_nil/1
  )

elapsed_s = div(System.monotonic_time(:millisecond) - t0, 1000)

info = %{
  started: Calendar.strftime(started, "%Y-%m-%d %H:%M UTC"),
  machine: Report.machine(),
  software: Report.software(),
  load_before: load_before,
  load_after: Report.loadavg(),
  elapsed: "#{div(elapsed_s, 60)} min #{rem(elapsed_s, 60)} s (benchmarks only, after compiling)",
  extra: if(quick, do: " **Quick run (--quick): fewer samples and trials.**", else: "")
}

results = Report.render(sections, info)
IO.puts(results)

cond do
  write and only != nil ->
    # --only ... --write: only these sections change; the others keep their last full run.
    path = Path.expand("../BENCHMARKS.md", __DIR__)
    Report.merge(path, sections, info)
    IO.puts(:stderr, "==> wrote #{Enum.join(only, ", ")} into #{Path.relative_to_cwd(path)}")

  write ->
    path = Path.expand("../BENCHMARKS.md", __DIR__)
    # Section 10 runs only when named: a full run keeps the one already written.
    Report.write(path, results, keep: [{"10.", "Scale"}])
    IO.puts(:stderr, "==> wrote the results section of #{Path.relative_to_cwd(path)}")

  true ->
    :ok
end

if Enum.any?(sections, &Map.has_key?(&1, :failed)), do: System.halt(1)
