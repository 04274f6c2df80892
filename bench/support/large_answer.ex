defmodule DynamicSrv.Bench.LargeAnswer do
  @moduledoc false
  # (4) One poll of a 1000-record SRV answer (over TCP: it does not fit a UDP reply), including
  # mapping targets to node atoms and diffing with the previous membership. Nothing is
  # connected: `list_nodes` reports every member as connected already, in both arms.

  alias DynamicSrv.Bench.{ClassicPoller, Dns, Stats}
  alias DynamicSrv.Native

  @service "big.bench.test"

  def records(n) do
    for i <- 1..n, do: {:srv, @service, "n#{i}.#{@service}", 10_000 + i}
  end

  # The "connected" list both arms diff against.
  def connected, do: :persistent_term.get({__MODULE__, :connected}, [])
  def connect(_node), do: true
  def disconnect(_node), do: true

  def run(opts \\ []) do
    n = Keyword.get(opts, :records, 1_000)
    polls = Keyword.get(opts, :polls, 40)
    dns = Dns.start!(records(n))
    DynamicSrv.Bench.Local.use_dns(dns)

    try do
      nodes = for i <- 1..n, do: String.to_atom("n#{i}@#{@service}")
      :persistent_term.put({__MODULE__, :connected}, nodes)
      fake = [connect: {__MODULE__, :connect, []}, disconnect: {__MODULE__, :disconnect, []}]
      fake = [{:list_nodes, {__MODULE__, :connected, []}} | fake]

      {:ok, cluster} =
        DynamicSrv.Cluster.start_link(
          [service: @service, polling_interval: 3_600_000, nameservers: Dns.nameserver(dns)] ++
            fake
        )

      # The first poll runs at start; wait for it, check it saw every record.
      :ok = DynamicSrv.Cluster.poll_now(cluster)
      members = DynamicSrv.Cluster.members(cluster)
      length(members) == n || raise "ours saw #{length(members)} of #{n} members"

      {:ok, topology} =
        Native.topology_new(
          Native.environment(),
          # The poller's defaults for the last element (dns_transport :tcp, removal_delay
          # 10 s), as DynamicSrv.Cluster.native_options/1 builds it.
          {@service, :service_prefix, nil, :inet, 1024, Dns.nameserver(dns),
           {:tcp, 10_000, 5_000}}
        )

      nif_poll = fn ->
        tag = make_ref()
        :ok = Native.topology_poll(topology, self(), tag)

        receive do
          {^tag, poll} -> poll
        after
          10_000 -> raise "no topology poll answer"
        end
      end

      first = nif_poll.()

      length(first.members) == n ||
        raise "the NIF poll did not see #{n} members: #{inspect(Map.drop(first, [:members]))}"

      classic =
        ClassicPoller.new(
          [service: @service, inet_res_options: [nameservers: Dns.nameservers(dns)]] ++ fake
        )

      classic = ClassicPoller.poll(classic)
      MapSet.size(classic.members) == n || raise "classic saw #{MapSet.size(classic.members)}"
      q0 = Dns.queries(dns)

      samples =
        for _ <- 1..polls, reduce: %{ours: [], nif: [], classic: []} do
          acc ->
            [o] = Stats.time_n(1, fn -> :ok = DynamicSrv.Cluster.poll_now(cluster) end)
            [f] = Stats.time_n(1, nif_poll)
            [c] = Stats.time_n(1, fn -> ClassicPoller.poll(classic) end)
            %{ours: [o | acc.ours], nif: [f | acc.nif], classic: [c | acc.classic]}
        end

      queries = Dns.diff(Dns.queries(dns), q0)
      GenServer.stop(cluster)
      bytes = answer_size(dns)
      result(Map.new(samples, fn {k, v} -> {k, Stats.summary(v)} end), n, polls, queries, bytes)
    after
      Dns.stop_and_clean(dns)
    end
  end

  # The size of the answer, as :inet_res received it over TCP.
  defp answer_size(dns) do
    {:ok, msg} = :inet_res.resolve(~c"#{@service}", :in, :srv, nameservers: Dns.nameservers(dns))
    byte_size(:inet_dns.encode(msg))
  end

  defp result(s, n, polls, queries, bytes) do
    d = &Stats.dur/1
    r = &Stats.ratio/2

    rows =
      for {label, key} <- [{"p50", :p50}, {"p99", :p99}, {"max", :max}] do
        [
          "poll of #{n} SRV records #{label}",
          d.(s.ours[key]),
          d.(s.nif[key]),
          d.(s.classic[key]),
          r.(s.ours[key], s.classic[key]),
          r.(s.nif[key], s.classic[key])
        ]
      end

    %{
      key: :large_answer,
      title: "4. Large answers: one poll of a #{n}-record SRV answer over TCP",
      columns: [
        "",
        "Ours: `Cluster.poll_now/1`",
        "Ours: NIF `topology_poll` alone",
        "Classic: `:inet_res` + map + diff",
        "poll_now / Classic",
        "NIF / Classic"
      ],
      rows: rows,
      notes: [
        "#{polls} polls per arm, interleaved. The answer is #{Stats.group(Integer.to_string(bytes))} bytes (no additional A records, below the 64 KB dnsmasq can send); the classic resolver tries UDP, gets a truncated reply and repeats the query over TCP; ours asks over TCP directly (`dns_transport: :tcp`, the default since issue 10). " <>
          "dnsmasq logged #{queries.total} queries for the #{3 * polls} timed polls.",
        "`poll_now/1` is the whole engine: the SRV query on the DNS thread, target -> node name mapping and membership diff in Rust, the cache fill, the message back, node atoms and the connect/disconnect decision in the GenServer. " <>
          "The classic arm does the same decisions in Elixir. No node is actually connected in either arm."
      ],
      goals: [],
      data: s
    }
  end
end
