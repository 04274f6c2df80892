# Cold and warm DynamicSrv.Epmd.address_please/3 against a real dnsmasq, side by side with one
# bare :inet_res SRV query in the same run. A first look; ./scripts/bench (issue 5) is the
# rigorous version.
#
#   MIX_ENV=test mix run bench/address_please.exs
alias DynamicSrv.Test.DnsServer

n = 2_000

dns =
  DnsServer.start!([
    {:srv, "peer.dyn.test", "peer-host.dyn.test", 4370},
    {:a, "peer-host.dyn.test", "127.0.0.1"}
  ])

{:ok, _} = Application.ensure_all_started(:libcluster_dynamic_srv)

stats = fn samples ->
  sorted = Enum.sort(samples)
  at = fn q -> Enum.at(sorted, min(length(sorted) - 1, trunc(q * length(sorted)))) end
  %{p50: at.(0.5), p99: at.(0.99), max: List.last(sorted)}
end

time = fn fun ->
  for _ <- 1..n do
    t0 = System.monotonic_time(:nanosecond)
    fun.()
    System.monotonic_time(:nanosecond) - t0
  end
end

configure = fn min_ttl ->
  System.put_env(%{
    "ERL_DIST_PORT" => "4999",
    "DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns),
    "DYNAMIC_SRV_MIN_TTL_MS" => Integer.to_string(min_ttl)
  })

  :ignore = DynamicSrv.Epmd.start_link()
end

{ip, port} = {{127, 0, 0, 1}, 4370}

# Cold: a zero hold time makes every call a miss, i.e. one SRV query with its additional A.
configure.(0)

cold =
  time.(fn ->
    {:ok, ^ip, ^port, 6} = DynamicSrv.Epmd.address_please(~c"peer", ~c"dyn.test", :inet)
  end)

# Warm: the answer is held for an hour.
configure.(3_600_000)
{:ok, ^ip, ^port, 6} = DynamicSrv.Epmd.address_please(~c"peer", ~c"dyn.test", :inet)

warm =
  time.(fn ->
    {:ok, ^ip, ^port, 6} = DynamicSrv.Epmd.address_please(~c"peer", ~c"dyn.test", :inet)
  end)

# Baseline: one bare SRV query through OTP's resolver, same server.
ns = [{{127, 0, 0, 1}, dns.port}]
bare = time.(fn -> [_] = :inet_res.lookup(~c"peer.dyn.test", :in, :srv, nameservers: ns) end)

DnsServer.stop_and_clean(dns)

[cold, warm, bare] = Enum.map([cold, warm, bare], stats)
us = fn ns -> :io_lib.format("~.2f", [ns / 1000]) end

IO.puts("""
address_please/3, #{n} calls each, µs (p50 / p99 / max)
  warm (cached)        #{us.(warm.p50)} / #{us.(warm.p99)} / #{us.(warm.max)}
  cold (one SRV query) #{us.(cold.p50)} / #{us.(cold.p99)} / #{us.(cold.max)}
  bare :inet_res SRV   #{us.(bare.p50)} / #{us.(bare.p99)} / #{us.(bare.max)}
  warm/bare p50 ratio  #{:io_lib.format("~.4f", [warm.p50 / bare.p50])}
  cold/bare p50 ratio  #{:io_lib.format("~.2f", [cold.p50 / bare.p50])}
""")
