# Memory over many lookups: does RSS stay flat? Samples this VM's VmRSS (/proc/self/status)
# while it makes 1,000,000 cached `DynamicSrv.Epmd.address_please/3` calls and then 100,000
# lookups of names that do not exist (NXDOMAIN from a real dnsmasq), each side by side with a
# baseline loop in the same run: a trivial Erlang call for the hits, one `:inet_res` SRV query
# for the misses. RSS growth is split into what the BEAM's allocators hold
# (`:erlang.memory(:total)`) and the rest (the NIF, hickory, tokio, libc). Prints the figures;
# exits 1 if the rest grows past a generous bound (32 MB).
#
#   MIX_ENV=test mix run bench/rss_lookups.exs [hits] [misses]
#
# Needs dnsmasq (./scripts/test installs it). Everything on loopback; dnsmasq is ended by PID.
{:ok, _} = Application.ensure_all_started(:libcluster_dynamic_srv)
# Each miss logs a debug line; measure the lookups, not a million log lines.
Logger.configure(level: :info)

alias DynamicSrv.Epmd
alias DynamicSrv.Test.DnsServer

defmodule RssBench do
  @moduledoc false

  def rss_kb do
    "/proc/self/status"
    |> File.read!()
    |> String.split("\n")
    |> Enum.find_value(fn
      "VmRSS:" <> rest ->
        rest |> String.trim() |> String.trim_trailing(" kB") |> String.to_integer()

      _ ->
        nil
    end)
  end

  # Runs `fun.(i)` for i in 1..n, sampling RSS (after a full GC, so the Erlang heap's own
  # growth does not hide or fake a native leak) every n/10 calls.
  def run(label, n, fun) do
    samples =
      for chunk <- 0..9 do
        from = div(n * chunk, 10) + 1
        to = div(n * (chunk + 1), 10)
        Enum.each(from..to, fun)
        flush()
        :erlang.garbage_collect()
        {rss_kb(), div(:erlang.memory(:total), 1024)}
      end

    {label, n, samples}
  end

  # dnsmasq's query log lines arrive as messages from its port (this process owns it): two
  # per query, which would otherwise pile up here and show as growth of both arms.
  defp flush do
    receive do
      _ -> flush()
    after
      0 -> :ok
    end
  end
end

{hits, misses} =
  case System.argv() do
    [h, m] -> {String.to_integer(h), String.to_integer(m)}
    [h] -> {String.to_integer(h), 100_000}
    [] -> {1_000_000, 100_000}
  end

dns =
  DnsServer.start!(
    [{:srv, "hit.rss.test", "hit.rss.test", 4370}, {:a, "hit.rss.test", "127.0.0.9"}],
    extra: ["--local=/rss.test/", "--local-ttl=3600"]
  )

try do
  nameserver = DnsServer.nameserver(dns)
  [ip, port] = String.split(nameserver, ":")
  {:ok, ip} = :inet.parse_address(String.to_charlist(ip))
  ns = {ip, String.to_integer(port)}

  for {var, value} <- [
        {"ERL_DIST_PORT", "4370"},
        {"DYNAMIC_SRV_NAMESERVERS", nameserver},
        {"DYNAMIC_SRV_MIN_TTL_MS", "3600000"}
      ],
      do: System.put_env(var, value)

  :ignore = Epmd.start_link()
  {:ok, {127, 0, 0, 9}, 4370, 6} = Epmd.address_please(~c"hit", ~c"rss.test", :inet)

  hit = fn _ -> {:ok, _, _, _} = Epmd.address_please(~c"hit", ~c"rss.test", :inet) end
  trivial = fn i -> :erlang.phash2({~c"hit", ~c"rss.test", :inet, i}) end

  miss = fn i ->
    {:error, :nxdomain} = Epmd.address_please(~c"missing#{i}", ~c"rss.test", :inet)
  end

  inet_res = fn i ->
    {:error, _nxdomain} =
      :inet_res.resolve(~c"missing#{i}.rss.test", :in, :srv, nameservers: [ns], timeout: 5_000)
  end

  # Warm-up, so allocator and code loading costs land before the first sample.
  Enum.each(1..10_000, hit)
  Enum.each(1..10_000, trivial)
  Enum.each(1..1_000, miss)
  Enum.each(1..1_000, inet_res)

  results = [
    RssBench.run("address_please, cache hit", hits, hit),
    RssBench.run("baseline: :erlang.phash2/1", hits, trivial),
    RssBench.run("address_please, NXDOMAIN miss", misses, miss),
    RssBench.run("baseline: :inet_res SRV, NXDOMAIN", misses, inet_res)
  ]

  IO.puts(
    "\n| loop | calls | RSS before (MB) | RSS after (MB) | RSS growth (MB) | ratio | " <>
      "BEAM-allocated growth (MB) | rest (native) growth (MB) | rest samples (MB, every 10%) |"
  )

  IO.puts("|---|---:|---:|---:|---:|---:|---:|---:|---|")

  mb = fn kb -> :erlang.float_to_binary(kb / 1024, decimals: 1) end

  growth = fn samples ->
    {{rss0, beam0}, {rss1, beam1}} = {hd(samples), List.last(samples)}
    %{rss: rss1 - rss0, beam: beam1 - beam0, native: rss1 - beam1 - (rss0 - beam0)}
  end

  for {label, n, samples} <- results do
    {before, _} = hd(samples)
    {last, _} = List.last(samples)
    g = growth.(samples)

    IO.puts(
      "| #{label} | #{n} | #{mb.(before)} | #{mb.(last)} | #{mb.(g.rss)} | " <>
        "#{:erlang.float_to_binary(last / before, decimals: 3)} | #{mb.(g.beam)} | " <>
        "#{mb.(g.native)} | #{Enum.map_join(samples, " ", fn {rss, beam} -> mb.(rss - beam) end)} |"
    )
  end

  IO.puts(
    "\n(growth: last sample minus the first, each after a full GC, the first after 10% of the " <>
      "calls; BEAM-allocated is :erlang.memory(:total), native is RSS minus that)"
  )

  [{_, _, hit_samples}, _, {_, _, miss_samples}, _] = results
  bound_kb = 32 * 1024

  if growth.(hit_samples).native > bound_kb or growth.(miss_samples).native > bound_kb do
    IO.puts("FAIL: memory outside the BEAM's allocators grew by more than 32 MB over the loop")
    System.halt(1)
  end
after
  DnsServer.stop_and_clean(dns)
end
