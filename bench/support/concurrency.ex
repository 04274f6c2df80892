defmodule DynamicSrv.Bench.Concurrency do
  @moduledoc false
  # (7) Lookups per second with 1, 10 and 100 concurrent callers in this VM, each arm for a
  # fixed time: ours warm (cached), ours cold (every call a miss: one SRV query), the classic
  # module (SRV + A query per call), stock epmd (A query + epmd round trip), one bare SRV query.

  alias DynamicSrv.Bench.{ClassicEpmd, Dns, Latency, Local, Stats, StockEpmd}
  alias DynamicSrv.Epmd

  @host ~c"lat.bench.test"

  def run(opts \\ []) do
    levels = Keyword.get(opts, :levels, [1, 10, 100])
    ms = Keyword.get(opts, :ms, 1_000)
    dns = Dns.start!(Latency.records())
    Local.use_dns(dns)
    epmd = StockEpmd.start!("stock", 4370)
    ns = Dns.nameservers(dns)

    arms = [
      ours_warm:
        {fn -> Local.configure_ours(dns) end,
         fn -> {:ok, _, 4370, 6} = Epmd.address_please(~c"w", @host, :inet) end},
      ours_cold:
        {fn -> Local.configure_ours(dns, %{"DYNAMIC_SRV_MIN_TTL_MS" => "0"}) end,
         fn -> {:ok, _, 4370, 6} = Epmd.address_please(caller_name(), @host, :inet) end},
      classic:
        {fn -> :ok end,
         fn -> {:ok, _, 4370, 6} = ClassicEpmd.address_please(~c"k", @host, :inet) end},
      stock:
        {fn -> :ok end,
         fn ->
           {:ok, _, 4370, 6} =
             StockEpmd.address_please(epmd, ~c"stock", ~c"stock-host.lat.bench.test", :inet)
         end},
      bare:
        {fn -> :ok end,
         fn -> [_] = :inet_res.lookup(~c"b.lat.bench.test", :in, :srv, nameservers: ns) end}
    ]

    try do
      cells =
        for level <- levels, {arm, {setup, fun}} <- arms, into: %{} do
          setup.()
          Process.put(:bench_caller, 1)
          fun.()
          q0 = Dns.total(dns)
          {rate, calls} = rate(level, ms, fun)
          {{arm, level}, %{rate: rate, queries_per_call: (Dns.total(dns) - q0) / max(calls, 1)}}
        end

      result(cells, levels, ms)
    after
      StockEpmd.stop(epmd)
      Dns.stop_and_clean(dns)
    end
  end

  # Caller i of the cold arm asks for its own name c<i>, as net_kernel connecting to
  # different nodes would: concurrent misses on one name would share one query.
  defp caller_name, do: ~c"c#{Process.get(:bench_caller)}"

  # Callers loop until the deadline; a call in flight at the deadline still counts.
  defp rate(callers, ms, fun) do
    parent = self()
    t0 = System.monotonic_time(:microsecond)
    deadline = t0 + ms * 1_000

    pids =
      for i <- 1..callers do
        spawn_link(fn ->
          Process.put(:bench_caller, i)
          send(parent, {self(), loop(fun, deadline, 0)})
        end)
      end

    total = Enum.reduce(pids, 0, fn pid, acc -> receive(do: ({^pid, n} -> acc + n)) end)
    {total / ((System.monotonic_time(:microsecond) - t0) / 1_000_000), total}
  end

  defp qpc(cells, arm, levels) do
    levels |> Enum.map(&Stats.fmt(cells[{arm, &1}].queries_per_call, 2)) |> Enum.join(" / ")
  end

  defp loop(fun, deadline, n) do
    if rem(n, 16) == 0 and System.monotonic_time(:microsecond) >= deadline do
      n
    else
      fun.()
      loop(fun, deadline, n + 1)
    end
  end

  defp result(cells, levels, ms) do
    rows =
      for level <- levels do
        r = fn arm -> cells[{arm, level}].rate end

        [
          "#{level} concurrent caller#{if level > 1, do: "s"}",
          Stats.rate(r.(:ours_warm)),
          Stats.rate(r.(:ours_cold)),
          Stats.rate(r.(:classic)),
          Stats.rate(r.(:stock)),
          Stats.rate(r.(:bare)),
          Stats.ratio(r.(:ours_warm), r.(:classic)),
          Stats.ratio(r.(:ours_cold), r.(:classic))
        ]
      end

    %{
      key: :concurrency,
      title: "7. Concurrency: lookups per second",
      columns: [
        "",
        "Ours warm",
        "Ours cold (miss)",
        "Classic",
        "Stock epmd",
        "Bare SRV query",
        "Ours warm / Classic",
        "Ours cold / Classic"
      ],
      rows: rows,
      notes: [
        "Each cell: as many `address_please/3` calls as the callers complete in #{ms} ms in the benchmark VM (2 schedulers), against the same dnsmasq. " <>
          "Cold = a zero hold time, every call a miss answered by the library's single DNS thread, caller i asking for its own name c<i>; classic = SRV + A query per call in the caller.",
        "DNS queries per call (1 / 10 / 100 callers): ours cold #{qpc(cells, :ours_cold, levels)}, classic #{qpc(cells, :classic, levels)}, stock #{qpc(cells, :stock, levels)}, bare #{qpc(cells, :bare, levels)}."
      ],
      goals: [],
      data: cells
    }
  end
end
