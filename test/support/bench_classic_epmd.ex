defmodule DynamicSrv.Bench.ClassicEpmd do
  @moduledoc false
  # Benchmarks only (./scripts/bench): the baseline arm. The classic pure-Erlang way an epmd
  # module finds a peer through DNS, with no cache: every `address_please/3` asks DNS for the
  # SRV record `name.host` (the port and target) with `:inet_res`, then resolves the target with
  # `:inet.getaddr/2`. The node's resolver settings (an inetrc: `{lookup, [dns]}`, the
  # benchmark's dnsmasq as nameserver, `{cache_size, 0}`) decide which server is asked.
  #
  # Run with `-start_epmd false -epmd_module Elixir.DynamicSrv.Bench.ClassicEpmd` and
  # `ERL_DIST_PORT`. It can also be called as a plain module (the latency benchmark does).

  @dist_version 6

  def start_link, do: :ignore

  def listen_port_please(_name, _host) do
    case Integer.parse(System.get_env("ERL_DIST_PORT") || "") do
      {port, ""} when port in 1..65_535 -> {:ok, port}
      _ -> {:error, :no_erl_dist_port}
    end
  end

  def register_node(name, port), do: register_node(name, port, :inet_tcp)
  def register_node(_name, _port, _driver_or_family), do: {:ok, -1}

  def address_please(name, host, family) do
    case :inet_res.lookup(~c"#{name}.#{host}", :in, :srv) do
      [{_priority, _weight, port, target} | _] ->
        case :inet.getaddr(target, family) do
          {:ok, ip} -> {:ok, ip, port, @dist_version}
          {:error, reason} -> {:error, reason}
        end

      [] ->
        {:error, :nxdomain}
    end
  end

  def port_please(name, host), do: port_please(name, host, :infinity)

  def port_please(_name, ip, _timeout) when is_tuple(ip), do: :noport

  def port_please(name, host, _timeout) do
    case :inet_res.lookup(~c"#{name}.#{host}", :in, :srv) do
      [{_priority, _weight, port, _target} | _] -> {:port, port, @dist_version}
      [] -> :noport
    end
  end

  def names(_host), do: {:ok, []}
end
