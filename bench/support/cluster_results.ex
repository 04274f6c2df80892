defmodule DynamicSrv.Bench.ClusterResults do
  @moduledoc false
  # Turns ClusterRun trials into the tables of sections 2 (DNS load) and 3 (convergence).

  alias DynamicSrv.Bench.Stats

  def dns_load(ours, classic) do
    form = fn r -> r.form_queries.total end
    keep = fn r -> r.keep_queries.total end
    secs = ours.keep_ms / 1000

    steady = fn r ->
      # Queries per second once the mesh formed, over the rest of the window.
      (keep.(r) - form.(r)) / max(secs - r.converge_us / 1_000_000, 0.001)
    end

    rows = [
      [
        "queries to form the full mesh",
        "#{form.(ours)} (#{types(ours.form_queries)})",
        "#{form.(classic)} (#{types(classic.form_queries)})",
        Stats.ratio(form.(ours), form.(classic))
      ],
      [
        "queries in the #{Stats.fmt(secs, 0)} s from the start (forming + keeping)",
        "#{keep.(ours)} (#{types(ours.keep_queries)})",
        "#{keep.(classic)} (#{types(classic.keep_queries)})",
        Stats.ratio(keep.(ours), keep.(classic))
      ],
      [
        "queries per second once formed",
        Stats.fmt(steady.(ours), 1),
        Stats.fmt(steady.(classic), 1),
        Stats.ratio(steady.(ours), steady.(classic))
      ],
      [
        "queries while an 11th node joins",
        "#{ours.join.queries.total} (#{types(ours.join.queries)})",
        "#{classic.join.queries.total} (#{types(classic.join.queries)})",
        Stats.ratio(ours.join.queries.total, classic.join.queries.total)
      ]
    ]

    %{
      key: :dns_load,
      title: "2. DNS load: a 10-node cluster at a 1 s poll",
      columns: ["Queries dnsmasq logged", "Ours", "Classic", "Ours / Classic"],
      rows: rows,
      notes: [
        "10 real nodes per arm (OS processes, no epmd), all booted first, then every node's poller started at the same instant T with a 1 s interval; counted from T. " <>
          "Ours: `DynamicSrv.Cluster` + `DynamicSrv.Epmd` (the SRV answer's additional A records fill the cache `address_please/3` answers from). " <>
          "Classic: one `:inet_res` SRV query per poll feeding `Node.connect/1` one node after the other, and an epmd module asking SRV + A per `address_please/3` (OTP calls it twice per connection). " <>
          "Both with OTP defaults otherwise (so `global` also connects nodes it hears about). Records have TTL 0.",
        "The full #{Stats.fmt(secs, 0)} s were run. \"Join\": counted from the moment DNS serves the new node's records (and its poller starts) until all 11 nodes see the full mesh; the 10 running pollers keep polling meanwhile."
      ],
      goals: [
        {"queries to form 10 nodes ≤ 0.2× classic", Stats.ratio(form.(ours), form.(classic)),
         form.(ours) <= 0.2 * form.(classic)}
      ],
      data: %{ours: Map.drop(ours, [:footprint]), classic: Map.drop(classic, [:footprint])}
    }
  end

  def convergence(trials, load_ours, load_classic) do
    sizes = trials |> Enum.map(& &1.n) |> Enum.uniq() |> Enum.sort()

    rows =
      for n <- sizes do
        o = for t <- trials, t.n == n, t.arm == :ours, do: t.converge_us
        c = for t <- trials, t.n == n, t.arm == :classic, do: t.converge_us
        qo = Stats.median(for t <- trials, t.n == n, t.arm == :ours, do: t.form_queries.total)
        qc = Stats.median(for t <- trials, t.n == n, t.arm == :classic, do: t.form_queries.total)

        [
          "#{n} nodes: time to full mesh",
          spread(o),
          spread(c),
          Stats.ratio(Stats.median(o), Stats.median(c)),
          "#{qo} / #{qc}"
        ]
      end

    join_o = load_ours.join.us
    join_c = load_classic.join.us

    rows =
      rows ++
        [
          [
            "1 node joins a 10-node cluster",
            Stats.dur(join_o * 1000),
            Stats.dur(join_c * 1000),
            Stats.ratio(join_o, join_c),
            "#{load_ours.join.queries.total} / #{load_classic.join.queries.total}"
          ]
        ]

    per = trials |> Enum.filter(&(&1.arm == :ours and &1.n == hd(sizes))) |> length()

    %{
      key: :convergence,
      title: "3. Convergence: time to full mesh",
      columns: [
        "Pollers started together, 1 s interval",
        "Ours",
        "Classic",
        "Ours / Classic",
        "DNS queries (ours / classic)"
      ],
      rows: rows,
      notes: [
        "Median of #{per} trials per size and arm (min–max in brackets), fresh nodes and a fresh dnsmasq each trial, arms alternating. " <>
          "Time from the instant every poller starts (all nodes already up) until every node sees all others, from each node's own `:net_kernel.monitor_nodes/1` timestamps (wall clock, same machine). " <>
          "The first poll runs at start in both arms, so this is one poll plus connection set-up: ours connects to all missing peers in parallel from cached addresses; the classic poller connects one after the other, each `address_please/3` asking DNS twice. " <>
          "Join: one run (from the DNS load run), timed from the moment DNS serves the new node's records and its poller starts."
      ],
      goals: [],
      data: %{trials: Enum.map(trials, &Map.drop(&1, [:footprint, :long_schedule]))}
    }
  end

  defp spread([]), do: "—"

  defp spread(values) do
    s = Stats.summary(values)

    "#{Stats.dur(s.p50 * 1000)} (#{Stats.dur(Enum.min(values) * 1000)}–#{Stats.dur(s.max * 1000)})"
  end

  defp types(counts) do
    counts
    |> Enum.reject(fn {k, _} -> k == :total end)
    |> Enum.sort()
    |> Enum.map(fn {type, n} -> "#{n} #{type}" end)
    |> Enum.join(", ")
    |> case do
      "" -> "none"
      text -> text
    end
  end
end
