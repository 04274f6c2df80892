defmodule DynamicSrv.Bench.Latency do
  @moduledoc false
  # (1) address_please/3 latency in this VM, arms interleaved round by round against one
  # dnsmasq: ours warm and cold, the classic module, stock epmd, one bare :inet_res SRV query;
  # then TTL 0 records at a steady call rate.

  alias DynamicSrv.Bench.{ClassicEpmd, Dns, Local, Stats, StockEpmd}
  alias DynamicSrv.{Epmd, Native}

  @domain "lat.bench.test"
  @host ~c"lat.bench.test"
  @port 4370
  @ttl0_names 20

  def records do
    single =
      for name <- ~w(w c k b) do
        [
          {:srv, "#{name}.#{@domain}", "#{name}.#{@domain}", @port},
          {:a, "#{name}.#{@domain}", "127.0.0.1"}
        ]
      end

    # z/y: the TTL 0 runs; c1..c100: concurrent misses on distinct names (concurrency).
    ttl0 =
      for {prefix, count} <- [{"z", @ttl0_names}, {"y", @ttl0_names}, {"c", 100}],
          i <- 1..count do
        name = "#{prefix}#{i}.#{@domain}"
        [{:srv, name, name, @port}, {:a, name, "127.0.0.1"}]
      end

    List.flatten([single, ttl0, {:a, "stock-host.#{@domain}", "127.0.0.1"}])
  end

  def run(opts \\ []) do
    rounds = Keyword.get(opts, :rounds, 10)
    warm_n = Keyword.get(opts, :warm_per_round, 2_000)
    slow_n = Keyword.get(opts, :slow_per_round, 100)
    ttl0_ms = Keyword.get(opts, :ttl0_ms, 6_000)

    dns = Dns.start!(records())
    Local.use_dns(dns)
    epmd = StockEpmd.start!("stock", @port)

    try do
      arms = [
        ours_warm: fn -> ours_warm(dns, warm_n) end,
        ours_cold: fn -> ours_cold(dns, slow_n) end,
        classic: fn -> classic(slow_n) end,
        stock: fn -> stock(epmd, slow_n) end,
        bare: fn -> bare(dns, slow_n) end
      ]

      samples =
        for _round <- 1..rounds, {arm, fun} <- arms, reduce: %{} do
          acc ->
            samples = fun.()
            Map.update(acc, arm, samples, &(samples ++ &1))
        end

      stats = Map.new(samples, fn {arm, s} -> {arm, Stats.summary(s)} end)
      cold_queries = Dns.queries(dns, ~r/^c\./).total
      # Each round configures once and makes one untimed call first.
      cold_calls = rounds * (slow_n + 1)
      timer = Stats.summary(Stats.time_n(20_000, fn -> :ok end))

      ttl0 = ttl0(dns, ttl0_ms)
      profile = profile(dns, rounds)

      result(stats, ttl0, profile, %{
        cold_queries_per_call: cold_queries / cold_calls,
        classic_queries_per_call: Dns.queries(dns, ~r/^k\./).total / (rounds * slow_n),
        timer_p50: timer.p50
      })
    after
      StockEpmd.stop(epmd)
      Dns.stop_and_clean(dns)
    end
  end

  defp ours_warm(dns, n) do
    Local.configure_ours(dns)
    {:ok, _, @port, 6} = Epmd.address_please(~c"w", @host, :inet)
    Stats.time_n(n, fn -> {:ok, _, @port, 6} = Epmd.address_please(~c"w", @host, :inet) end)
  end

  # A zero hold time: every call misses the cache and makes one SRV query.
  defp ours_cold(dns, n) do
    Local.configure_ours(dns, %{"DYNAMIC_SRV_MIN_TTL_MS" => "0"})
    {:ok, _, @port, 6} = Epmd.address_please(~c"c", @host, :inet)
    Stats.time_n(n, fn -> {:ok, _, @port, 6} = Epmd.address_please(~c"c", @host, :inet) end)
  end

  defp classic(n) do
    Stats.time_n(n, fn -> {:ok, _, @port, 6} = ClassicEpmd.address_please(~c"k", @host, :inet) end)
  end

  defp stock(epmd, n) do
    Stats.time_n(n, fn ->
      {:ok, _, @port, 6} =
        StockEpmd.address_please(epmd, ~c"stock", ~c"stock-host.#{@domain}", :inet)
    end)
  end

  defp bare(dns, n) do
    ns = Dns.nameservers(dns)

    Stats.time_n(n, fn -> [_] = :inet_res.lookup(~c"b.#{@domain}", :in, :srv, nameservers: ns) end)
  end

  # TTL 0 records (dnsmasq's and Consul's default) and our default hold time, one call per
  # millisecond per arm, round robin over 20 peers: ours on z1..z20, classic on y1..y20.
  defp ttl0(dns, duration_ms) do
    Local.configure_ours(dns)
    q0 = {Dns.queries(dns, ~r/^z\d/).total, Dns.queries(dns, ~r/^y\d/).total}
    start = System.monotonic_time(:millisecond)
    ticks = duration_ms

    {ours, classic} =
      Enum.reduce(1..ticks, {[], []}, fn tick, {ours, classic} ->
        wait = start + tick - System.monotonic_time(:millisecond)
        if wait > 0, do: Process.sleep(wait)
        i = rem(tick, @ttl0_names) + 1
        zn = ~c"z#{i}"
        yn = ~c"y#{i}"

        [o] =
          Stats.time_n(1, fn -> {:ok, _, @port, 6} = Epmd.address_please(zn, @host, :inet) end)

        [c] =
          Stats.time_n(1, fn ->
            {:ok, _, @port, 6} = ClassicEpmd.address_please(yn, @host, :inet)
          end)

        {[o | ours], [c | classic]}
      end)

    {oq0, cq0} = q0

    %{
      ours: Stats.summary(ours),
      classic: Stats.summary(classic),
      calls: ticks,
      ours_queries: Dns.queries(dns, ~r/^z\d/).total - oq0,
      classic_queries: Dns.queries(dns, ~r/^y\d/).total - cq0,
      seconds: duration_ms / 1000
    }
  end

  # Where the time of a hit and of a miss goes: the same work cut at each layer, interleaved.
  defp profile(dns, rounds) do
    Local.configure_ours(dns)
    {:ok, _, @port, 6} = Epmd.address_please(~c"w", @host, :inet)
    {engine, _timeout} = :persistent_term.get({DynamicSrv.Epmd, :engine})
    env = %{"DYNAMIC_SRV_NAMESERVERS" => Dns.nameserver(dns)}

    {:ok, srv_engine} =
      Native.configure(
        Map.merge(env, %{"ERL_DIST_PORT" => "4999", "DYNAMIC_SRV_MIN_TTL_MS" => "0"})
      )

    {:ok, name_engine} = Native.configure(Map.put(env, "DYNAMIC_SRV_PORT_MODE", "name"))
    Local.configure_ours(dns, %{"DYNAMIC_SRV_MIN_TTL_MS" => "0"})
    ns = Dns.nameservers(dns)

    nif_lookup = fn engine, node ->
      tag = make_ref()
      :ok = Native.lookup(engine, node, :inet, self(), tag)

      receive do
        {^tag, result} -> result
      after
        5_000 -> raise "no answer from Native.lookup"
      end
    end

    steps = [
      hit_nif:
        {2_000, fn -> {:ok, _, @port} = Native.lookup_cached(engine, "w@#{@domain}", :inet) end},
      miss_nif:
        {2_000, fn -> :miss = Native.lookup_cached(srv_engine, "c@#{@domain}", :inet) end},
      proxy: {200, fn -> spawn_reply() end},
      hop: {200, fn -> {:ok, _, 4370} = nif_lookup.(name_engine, "app-4370@127.0.0.1") end},
      nif_srv: {200, fn -> {:ok, _, @port} = nif_lookup.(srv_engine, "c@#{@domain}") end},
      miss: {200, fn -> {:ok, _, @port, 6} = Epmd.address_please(~c"c", @host, :inet) end},
      bare: {200, fn -> [_] = :inet_res.lookup(~c"b.#{@domain}", :in, :srv, nameservers: ns) end}
    ]

    samples =
      for _ <- 1..rounds, {step, {n, fun}} <- steps, reduce: %{} do
        acc ->
          s = Stats.time_n(n, fun)
          Map.update(acc, step, s, &(s ++ &1))
      end

    Map.new(samples, fn {k, v} -> {k, Stats.summary(v)} end)
  end

  # What await_lookup/4 adds around the NIF: a process, an alias, two messages.
  defp spawn_reply do
    reply_to = :erlang.alias([:reply])
    spawn(fn -> send(reply_to, {reply_to, :ok}) end)

    receive do
      {^reply_to, :ok} -> :ok
    end
  end

  def profile_section(p, warm) do
    d = &Stats.dur/1

    rows = [
      [
        "hit: `Native.lookup_cached/3` alone (NIF call)",
        d.(p.hit_nif.p50),
        d.(p.hit_nif.p99),
        Stats.ratio(p.hit_nif.p50, warm.p50)
      ],
      [
        "hit: `address_please/3` (adds name formatting, `persistent_term`)",
        d.(warm.p50),
        d.(warm.p99),
        "1.00×"
      ],
      [
        "miss: `Native.lookup_cached/3` answering `:miss`",
        d.(p.miss_nif.p50),
        d.(p.miss_nif.p99),
        Stats.ratio(p.miss_nif.p50, p.bare.p50)
      ],
      [
        "miss: proxy process + alias round trip, no NIF",
        d.(p.proxy.p50),
        d.(p.proxy.p99),
        Stats.ratio(p.proxy.p50, p.bare.p50)
      ],
      [
        "miss: `Native.lookup/5` with no DNS (IP host): DNS-thread hop + reply message",
        d.(p.hop.p50),
        d.(p.hop.p99),
        Stats.ratio(p.hop.p50, p.bare.p50)
      ],
      [
        "miss: `Native.lookup/5` of an SRV name: hop + hickory query",
        d.(p.nif_srv.p50),
        d.(p.nif_srv.p99),
        Stats.ratio(p.nif_srv.p50, p.bare.p50)
      ],
      [
        "miss: `address_please/3` (all of the above)",
        d.(p.miss.p50),
        d.(p.miss.p99),
        Stats.ratio(p.miss.p50, p.bare.p50)
      ],
      ["one bare `:inet_res` SRV query", d.(p.bare.p50), d.(p.bare.p99), "1.00×"]
    ]

    %{
      key: :latency_profile,
      title: "1b. Profile: where a hit and a miss spend their time",
      columns: [
        "Step (measured alone, interleaved)",
        "p50",
        "p99",
        "p50 relative to the whole (hit) / bare SRV query (miss)"
      ],
      rows: rows,
      notes: [
        "Each step timed on its own in the same run: the NIF calls directly (`DynamicSrv.Native`, the private boundary), the Elixir wrapper around them, and the cost of handing a miss to the DNS thread with no DNS in it (a name-mode engine and an IP host, answered on the DNS thread without a query)."
      ],
      goals: [],
      data: p
    }
  end

  defp result(s, ttl0, profile, extra) do
    d = &Stats.dur/1
    r = &Stats.ratio/2
    w = s.ours_warm
    c = s.ours_cold
    k = s.classic
    st = s.stock
    b = s.bare

    rows =
      for {label, key} <- [{"p50", :p50}, {"p99", :p99}, {"max", :max}] do
        [
          "warm (cached entry) #{label}",
          d.(w[key]),
          d.(k[key]),
          d.(st[key]),
          d.(b[key]),
          r.(w[key], k[key]),
          r.(w[key], b[key])
        ]
      end ++
        for {label, key} <- [{"p50", :p50}, {"p99", :p99}, {"max", :max}] do
          [
            "cold (miss, one SRV query) #{label}",
            d.(c[key]),
            d.(k[key]),
            d.(st[key]),
            d.(b[key]),
            r.(c[key], k[key]),
            r.(c[key], b[key])
          ]
        end ++
        for {label, key} <- [{"p50", :p50}, {"p99", :p99}, {"max", :max}] do
          [
            "TTL 0 records, 1 call/ms #{label}",
            d.(ttl0.ours[key]),
            d.(ttl0.classic[key]),
            "—",
            "—",
            r.(ttl0.ours[key], ttl0.classic[key]),
            "—"
          ]
        end ++
        [
          [
            "TTL 0 records: DNS queries per call",
            Stats.fmt(ttl0.ours_queries / ttl0.calls, 4),
            Stats.fmt(ttl0.classic_queries / ttl0.calls, 2),
            "—",
            "—",
            r.(ttl0.ours_queries, ttl0.classic_queries),
            "—"
          ]
        ]

    %{
      key: :latency,
      title: "1. `address_please/3` latency",
      columns: [
        "",
        "Ours",
        "Classic",
        "Stock epmd",
        "One bare SRV query",
        "Ours / Classic",
        "Ours / bare SRV"
      ],
      rows: rows,
      notes: [
        "Calls made in the benchmark VM against one dnsmasq on loopback, #{w.n} warm and #{c.n} cold calls for ours, #{k.n} for each other arm, interleaved in rounds. " <>
          "Per-call wall time including the timer (#{d.(extra.timer_p50)} p50 for an empty call).",
        "Cold: `DYNAMIC_SRV_MIN_TTL_MS=0` so every call misses the cache; DNS queries per cold call: #{Stats.fmt(extra.cold_queries_per_call, 2)} (one SRV query; its additional section carries the A record). " <>
          "The classic module has no cache, so every call is cold; the same classic samples (#{Stats.fmt(extra.classic_queries_per_call, 2)} queries per call: SRV + A) appear in the warm and cold rows.",
        "Stock epmd: `:inet.getaddr/2` of the host (one A query) plus a PORT2_REQ to an epmd daemon on a new TCP connection, as OTP's `erl_epmd` does.",
        "TTL 0: dnsmasq's default TTL (Consul's too) and our default hold (`DYNAMIC_SRV_MIN_TTL_MS=5000`); #{ttl0.calls} calls per arm over #{Stats.fmt(ttl0.seconds, 0)} s, round robin over 20 peers. " <>
          "Ours asked DNS #{ttl0.ours_queries} times, the classic module #{ttl0.classic_queries} times."
      ],
      goals: [
        {"warm p50 ≤ 2 µs", d.(w.p50), w.p50 <= 2_000},
        {"warm p50 ≤ 0.05× one SRV query", r.(w.p50, b.p50), w.p50 <= 0.05 * b.p50},
        {"cold p50 ≤ 1.2× one SRV query", r.(c.p50, b.p50), c.p50 <= 1.2 * b.p50}
      ],
      data: %{stats: s, ttl0: ttl0, extra: extra}
    }
    |> then(&[&1, profile_section(profile, w)])
  end
end
