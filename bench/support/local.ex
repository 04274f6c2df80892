defmodule DynamicSrv.Bench.Local do
  @moduledoc false
  # Resolver settings of the benchmark VM itself, for the benchmarks that call the epmd modules
  # directly (latency, scheduler safety, concurrency).

  alias DynamicSrv.Bench.Dns

  @our_vars ~w(DYNAMIC_SRV_NAMESERVERS DYNAMIC_SRV_PORT_MODE DYNAMIC_SRV_LOOKUP_TIMEOUT_MS
               DYNAMIC_SRV_MIN_TTL_MS DYNAMIC_SRV_MAX_STALE_S)

  @doc "Points OTP's resolver (`:inet.getaddr/2`, `:inet_res`) at `dns`, with no cache."
  def use_dns(%Dns{} = dns) do
    :ok = :inet_db.add_rc_list(Dns.inetrc(dns))
    :ok = :inet_db.res_option(:nameservers, Dns.nameservers(dns))
    :ok
  end

  @doc """
  (Re)configures DynamicSrv.Epmd in this VM, as at distribution start, from the environment:
  `dns` as nameserver plus `extra` variables (e.g. `DYNAMIC_SRV_MIN_TTL_MS`).
  """
  def configure_ours(%Dns{} = dns, extra \\ %{}) do
    Enum.each(@our_vars, &System.delete_env/1)

    System.put_env(
      Map.merge(
        %{"ERL_DIST_PORT" => "4999", "DYNAMIC_SRV_NAMESERVERS" => Dns.nameserver(dns)},
        extra
      )
    )

    :ignore = DynamicSrv.Epmd.start_link()
    :ok
  end
end
