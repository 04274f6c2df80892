defmodule DynamicSrv.Cluster.Misconfig do
  @moduledoc false
  # The misconfigurations DynamicSrv.Cluster must not be silent about. Each gives one warning
  # when a poll first sees it (so within two polls of starting), none while it lasts, and
  # another if it goes away and comes back:
  #
  #   * this node is not distributed, or uses short names, or runs the stock epmd module, or
  #     was started with -epmd_module DynamicSrv.Epmd but without -start_epmd false (an epmd
  #     daemon was started alongside; read from the VM's arguments, which is what decides
  #     it: a port probe would also see any other epmd on the host);
  #   * DNS says the polled service does not exist (NXDOMAIN) or has no records (NODATA).
  #     Not an outage (the membership follows the answer), but almost always a wrong name or
  #     the wrong DNS server: the warning names the service, the servers asked and the likely
  #     fix, and is repeated every @absent_repeat_ms while it lasts. One info line when the
  #     service is listed again.
  #
  # Also: `service: :ignore` or `service: nil` disables a topology with one info line
  # (dns_cluster's idiom for switching clustering off in dev).

  alias DynamicSrv.Nameservers

  require Logger

  @absent_repeat_ms 5 * 60_000
  @repeated "(Repeated every #{div(@absent_repeat_ms, 60_000)} min while it lasts.)"

  defstruct node_warned: [], absent_warned_at: nil, absent_announced?: false

  # absent_warned_at: when the last absence warning was logged (kept while the service
  # flaps, so the warning stays at one per absent_repeat_ms); absent_announced?: a warning
  # was logged and no "listed again" line has followed it yet.
  @type t :: %__MODULE__{
          node_warned: [atom()],
          absent_warned_at: integer() | nil,
          absent_announced?: boolean()
        }
  @type line :: {:warning | :info, String.t()}

  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc "How often the warning about an absent service is repeated while it lasts."
  @spec absent_repeat_ms() :: pos_integer()
  def absent_repeat_ms, do: @absent_repeat_ms

  @doc """
  `:ignore` (after one info line) when `opts` switch the topology off with
  `service: :ignore` or `service: nil`; `:enabled` otherwise.
  """
  @spec disabled(keyword()) :: :enabled | :ignore
  def disabled(opts) do
    case Keyword.fetch(opts, :service) do
      {:ok, value} when value in [:ignore, nil] ->
        topology = Keyword.get(opts, :topology, :dynamic_srv)
        # Logged by the caller (no poller runs): libcluster's prefix spelled out here.
        prefix = if opts[:log_prefix], do: "[libcluster:#{topology}] ", else: ""

        Logger.info(
          "#{prefix}DynamicSrv.Cluster topology #{inspect(topology)}: service is " <>
            "#{inspect(value)}, so this topology is disabled (nothing is polled or connected)"
        )

        :ignore

      _ ->
        :enabled
    end
  end

  @doc """
  What a poll shows about this node and the service: the new state and the lines to log.
  The poll itself says whether DNS called the service absent, which kind, and which servers
  answered: no query is made here.
  """
  @spec check(t(), map(), map(), integer()) :: {t(), [line()]}
  def check(state, poll, options, now \\ System.monotonic_time(:millisecond)) do
    {state, node_lines} = check_node(state, node_problems(node_facts(), options.service))
    {state, absent} = absent(state, absent?(poll, options), now)

    service_lines =
      case absent do
        :warn -> [absent_warning(options, poll.absent)]
        :listed_again -> [{:info, "#{options.service} is listed in DNS again"}]
        :none -> []
      end

    {state, node_lines ++ service_lines}
  end

  # --- this node -----------------------------------------------------------------------------

  @doc false
  @spec node_facts() :: map()
  def node_facts do
    %{
      alive?: Node.alive?(),
      node: node(),
      longnames: :net_kernel.longnames(),
      epmd_module: if(Node.alive?(), do: :net_kernel.epmd_module(), else: nil),
      named_at_boot?: argument?(:name) or argument?(:sname),
      start_epmd: start_epmd()
    }
  end

  defp argument?(flag), do: match?({:ok, _}, :init.get_argument(flag))

  defp start_epmd do
    case :init.get_argument(:start_epmd) do
      {:ok, values} -> values |> List.last() |> List.last() |> to_string()
      :error -> nil
    end
  end

  @doc false
  # `[{key, message}]` for the facts of node_facts/0.
  @spec node_problems(map(), String.t()) :: [{atom(), String.t()}]
  def node_problems(%{alive?: false}, service) do
    [
      {:not_distributed,
       "this node is not distributed (nonode@nohost), so it cannot connect to the nodes " <>
         "#{service} lists; start it with a node name (--name NAME@HOST, in a release " <>
         "RELEASE_DISTRIBUTION=name) and -start_epmd false -epmd_module Elixir.DynamicSrv.Epmd"}
    ]
  end

  def node_problems(facts, service) do
    short =
      if facts.longnames == false do
        [
          {:short_names,
           "this node uses short names (#{facts.node}, -sname), so it cannot connect to " <>
             "nodes with long names such as those #{service} lists; start it with " <>
             "--name NAME@HOST (in a release RELEASE_DISTRIBUTION=name)"}
        ]
      else
        []
      end

    epmd =
      cond do
        facts.epmd_module != DynamicSrv.Epmd ->
          [
            {:stock_epmd,
             "this node's epmd module is #{inspect(facts.epmd_module)}, not DynamicSrv.Epmd: " <>
               "it asks an epmd daemon for each peer's port and never uses the ports in " <>
               "#{service}'s SRV records; start the VM with -start_epmd false " <>
               "-epmd_module Elixir.DynamicSrv.Epmd"}
          ]

        facts.named_at_boot? and facts.start_epmd != "false" ->
          [
            {:epmd_daemon,
             "this VM was started without -start_epmd false, so an epmd daemon was started " <>
               "(or tried to start) alongside DynamicSrv.Epmd, which never uses it; add " <>
               "-start_epmd false next to -epmd_module Elixir.DynamicSrv.Epmd"}
          ]

        true ->
          []
      end

    short ++ epmd
  end

  defp check_node(state, problems) do
    keys = Enum.map(problems, &elem(&1, 0))
    lines = for {key, message} <- problems, key not in state.node_warned, do: {:warning, message}
    # A problem that went away may warn again if it comes back.
    {%{state | node_warned: keys}, lines}
  end

  # --- the service -----------------------------------------------------------------------------

  # DNS answered, with no record: NXDOMAIN and NODATA reach here as an empty answer (a
  # failed poll is an outage, logged as such). A custom resolver is not DNS.
  defp absent?(poll, options), do: options.resolver == nil and is_map(Map.get(poll, :absent))

  @doc false
  @spec absent(t(), boolean(), integer()) :: {t(), :warn | :listed_again | :none}
  def absent(state, true, now) do
    if state.absent_warned_at == nil or now - state.absent_warned_at >= @absent_repeat_ms,
      do: {%{state | absent_warned_at: now, absent_announced?: true}, :warn},
      else: {state, :none}
  end

  def absent(%{absent_announced?: true} = state, false, _now),
    do: {%{state | absent_announced?: false}, :listed_again}

  def absent(state, false, _now), do: {state, :none}

  defp absent_warning(options, %{reason: reason, servers: servers}) do
    label = options |> query_kind() |> Atom.to_string() |> String.upcase()
    service = options.service
    source = Nameservers.source(options.nameservers)
    asked = "Asked #{servers}#{source_note(source)}"

    case reason do
      "nxdomain" ->
        {:warning,
         "DNS says #{service} does not exist (NXDOMAIN): no members from it. #{asked}. " <>
           "Likely fix: #{nxdomain_fix(source, service)}. #{@repeated}"}

      _no_records ->
        {:warning,
         "DNS says #{service} exists but has no #{label} records (NODATA): no members " <>
           "from it. #{asked}. Likely fix: #{nodata_fix(query_kind(options))}. #{@repeated}"}
    end
  end

  defp nxdomain_fix(:resolv_conf, _service) do
    "the system resolver does not know this name (a Consul or other private zone?): set " <>
      "DYNAMIC_SRV_NAMESERVERS (or the topology's nameservers:) to the DNS server that " <>
      "serves it, e.g. the Consul agent, 127.0.0.1:8600"
  end

  defp nxdomain_fix(_explicit, service) do
    "check the service name #{inspect(service)} (Consul: NAME.service.consul; Kubernetes: " <>
      "_PORT._tcp.SERVICE.NAMESPACE.svc.cluster.local) and that an instance is registered " <>
      "under it; or the servers asked are not the ones that serve it"
  end

  defp nodata_fix(:srv) do
    "register the nodes as SRV records under this name, or, if it lists the nodes as " <>
      "A/AAAA records, use node_naming: {:basename_ip, \"app\"}"
  end

  defp nodata_fix(kind) do
    "publish #{kind |> Atom.to_string() |> String.upcase()} records for the nodes under " <>
      "this name, or, if it has SRV records, use an SRV node_naming (the default " <>
      ":service_prefix, {:basename_port_ip, \"app\"}, ...)"
  end

  defp source_note({:option, _}), do: " (the topology's nameservers: option)"
  defp source_note({:env, _}), do: " (from DYNAMIC_SRV_NAMESERVERS)"
  defp source_note({:inetrc, file, _}), do: " (from OTP's inetrc #{file})"
  defp source_note(:resolv_conf), do: ""

  defp query_kind(%{node_naming: {:basename_ip, _}, ip_family: :inet6}), do: :aaaa
  defp query_kind(%{node_naming: {:basename_ip, _}}), do: :a
  defp query_kind(_options), do: :srv
end
