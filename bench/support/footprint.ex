defmodule DynamicSrv.Bench.Footprint do
  @moduledoc false
  # (5) RSS and OS threads of idle nodes booted with our epmd module (the NIF and its DNS
  # thread loaded at distribution start) and with the classic module (no NIF), same flags
  # otherwise; /proc/<os_pid>/status read from outside. The in-cluster figures come from the
  # DNS load run (10 nodes per arm, 30 s of polling).

  alias DynamicSrv.Bench.{Dns, Os, Peer, Stats}

  @library "libdynamic_srv_nif"

  def run(opts \\ []) do
    per_arm = Keyword.get(opts, :nodes, 6)
    settle_ms = Keyword.get(opts, :settle_ms, 2_000)
    service = "fp.bench.test"
    nodes = for i <- 1..(2 * per_arm), do: {"f#{i}", Os.free_port()}
    dns = Dns.start!(DynamicSrv.Bench.ClusterRun.records(service, nodes))

    try do
      # Alternate the arms so both boot under the same load.
      specs =
        for {{name, port}, i} <- Enum.with_index(nodes) do
          {"#{name}@#{service}", if(rem(i, 2) == 0, do: :ours, else: :classic), port}
        end

      peers = Peer.start_many!(specs, dns)

      try do
        Process.sleep(settle_ms)
        # One lookup each, so our DNS thread and resolver have done real work.
        [first | _] = peers

        for peer <- peers, peer != first do
          mod = if peer.arm == :ours, do: DynamicSrv.Epmd, else: DynamicSrv.Bench.ClassicEpmd
          [name, host] = first.name |> Atom.to_string() |> String.split("@")

          {:ok, _, _, 6} =
            Peer.call(peer, mod, :address_please, [~c"#{name}", ~c"#{host}", :inet])
        end

        Peer.call_all(peers, :erlang, :garbage_collect, [])
        Process.sleep(200)
        statuses = Enum.map(peers, &{&1.arm, Os.status(&1.os_pid)})
        nif = for peer <- peers, peer.arm == :ours, do: Os.mapping_rss(peer.os_pid, @library)

        statuses
        |> summarize()
        |> Map.put(:nif, %{
          rss: Stats.median(Enum.map(nif, &elem(&1, 0))),
          pss: Stats.median(Enum.map(nif, &elem(&1, 1)))
        })
        |> Map.put(:spread, spread(statuses))
      after
        Peer.stop_all(peers)
      end
    after
      Dns.stop_and_clean(dns)
    end
  end

  defp spread(statuses) do
    for arm <- [:ours, :classic], into: %{} do
      rss = for {^arm, s} <- statuses, do: s["VmRSS"]
      {arm, {Enum.min(rss), Enum.max(rss)}}
    end
  end

  @doc "Medians per arm of VmRSS, RssAnon, RssFile (kB) and Threads."
  def summarize(statuses) do
    for arm <- [:ours, :classic], into: %{} do
      list = for {^arm, s} <- statuses, do: s

      {arm,
       Map.new(["VmRSS", "RssAnon", "RssFile", "Threads"], fn key ->
         {key, Stats.median(Enum.map(list, & &1[key]))}
       end)
       |> Map.put(:n, length(list))}
    end
  end

  def result(idle, cluster, keep_s \\ 30) do
    row = fn label, key, unit ->
      fmt = fn v -> if unit == :kb, do: Stats.kb(v), else: "#{v}" end

      for {scope, m} <- [{"idle", idle}, {"in a 10-node cluster", cluster}], m != nil do
        o = m.ours[key]
        c = m.classic[key]
        ["#{label}, #{scope}", fmt.(o), fmt.(c), delta(o, c, unit)]
      end
    end

    rows =
      row.("VmRSS", "VmRSS", :kb) ++
        row.("RssAnon", "RssAnon", :kb) ++
        row.("RssFile", "RssFile", :kb) ++ row.("OS threads", "Threads", :count)

    {omin, omax} = idle.spread.ours
    {cmin, cmax} = idle.spread.classic

    rows =
      rows ++
        [
          [
            "VmRSS spread (min–max), idle",
            "#{Stats.kb(omin)}–#{Stats.kb(omax)}",
            "#{Stats.kb(cmin)}–#{Stats.kb(cmax)}",
            "—"
          ],
          [
            "the NIF library's resident pages (smaps Rss / Pss), idle",
            "#{Stats.kb(idle.nif.rss)} / #{Stats.kb(idle.nif.pss)}",
            "—",
            "—"
          ]
        ]

    rss = idle.ours["VmRSS"] - idle.classic["VmRSS"]
    threads = idle.ours["Threads"] - idle.classic["Threads"]

    {cluster_rss, cluster_threads} =
      if cluster,
        do:
          {cluster.ours["VmRSS"] - cluster.classic["VmRSS"],
           cluster.ours["Threads"] - cluster.classic["Threads"]},
        else: {rss, threads}

    %{
      key: :footprint,
      title: "5. Footprint per node: the NIF and its DNS thread",
      columns: ["Median per node", "Ours (NIF loaded)", "Classic (no NIF)", "Added by ours"],
      rows: rows,
      notes: [
        "Idle: #{idle.ours.n} + #{idle.classic.n} nodes booted together (arms alternating), distribution up, one peer lookup each, #{"garbage collected"}; in a cluster: the #{if cluster, do: cluster.ours.n, else: 0} + #{if cluster, do: cluster.classic.n, else: 0} nodes of the DNS load run after #{keep_s} s of 1 s polls (ours runs `DynamicSrv.Cluster`, classic the classic poller). " <>
          "Same VM flags in both arms; /proc/<pid>/status of the beam.smp process. " <>
          "RssFile includes the NIF library's resident code pages (its loadable segments are about 2.3 MB); they are file-backed and shared by every node on the host that loads the same file, which is what Pss (proportional share) shows."
      ],
      goals: [
        {"≤ 2 MB RSS added (idle / in cluster)",
         "#{Stats.kb(rss)} / #{Stats.kb(cluster_rss)} (anonymous: #{signed(idle.ours["RssAnon"] - idle.classic["RssAnon"])} / #{signed(if cluster, do: cluster.ours["RssAnon"] - cluster.classic["RssAnon"], else: 0)}; the rest is the NIF's shared code pages)",
         rss <= 2048 and cluster_rss <= 2048},
        {"≤ 1 OS thread added (idle / in cluster)", "#{threads} / #{cluster_threads}",
         threads <= 1 and cluster_threads <= 1}
      ],
      data: %{idle: idle, cluster: cluster}
    }
  end

  defp signed(kb), do: if(kb >= 0, do: "+", else: "−") <> Stats.kb(abs(kb))

  defp delta(o, c, :kb), do: if(o - c >= 0, do: "+", else: "−") <> Stats.kb(abs(o - c))
  defp delta(o, c, :count), do: if(o - c >= 0, do: "+#{o - c}", else: "#{o - c}")
end
