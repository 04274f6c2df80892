defmodule DynamicSrv.Bench.ClassicPoller do
  @moduledoc false
  # Benchmarks only (./scripts/bench): the baseline membership poller, the classic way. Every
  # `polling_interval` ms one `:inet_res` SRV query on `service` (no cache, resolver settings of
  # the node), each target mapped to a node atom by the original library's convention (target
  # `n1.svc.example` under service `svc.example` is `n1@svc.example`), the members diffed with
  # the previous poll, and every member not yet connected passed to `connect` one after the
  # other, as libcluster's `Cluster.Strategy.connect_nodes/4` does. Options: `service`,
  # `polling_interval`, `disconnect_on_deregister`, the `connect`/`disconnect`/`list_nodes` MFAs
  # and `inet_res_options` (e.g. `nameservers:`; default: the node's resolver settings).
  # `node_naming: {:basename_port_ip, "app"}` maps each SRV record to `app-PORT@IP` instead, IP
  # from the A record the answer's additional section gives for its target (Consul sends one;
  # a target without one is skipped): the Consul + Nomad recipe's names, so the baseline can
  # run against Consul's real answers (bench section 8). Still one query per poll.
  use GenServer

  defstruct service: nil,
            interval: 5_000,
            members: MapSet.new(),
            connect: {:net_kernel, :connect_node, []},
            disconnect: {:erlang, :disconnect_node, []},
            list_nodes: {:erlang, :nodes, [:connected]},
            disconnect?: true,
            lookup: nil,
            naming: :service_prefix

  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  @doc "A poller state outside any process, for timing `poll/1` directly."
  def new(opts) do
    %__MODULE__{
      service: Keyword.fetch!(opts, :service),
      interval: Keyword.get(opts, :polling_interval, 5_000),
      connect: Keyword.get(opts, :connect, {:net_kernel, :connect_node, []}),
      disconnect: Keyword.get(opts, :disconnect, {:erlang, :disconnect_node, []}),
      list_nodes: Keyword.get(opts, :list_nodes, {:erlang, :nodes, [:connected]}),
      disconnect?: Keyword.get(opts, :disconnect_on_deregister, true),
      lookup: Keyword.get(opts, :inet_res_options, []),
      naming: Keyword.get(opts, :node_naming, :service_prefix)
    }
  end

  @impl true
  def init(opts) do
    state = new(opts)
    send(self(), :poll)
    {:ok, state}
  end

  @impl true
  def handle_info(:poll, state) do
    state = poll(state)
    Process.send_after(self(), :poll, state.interval)
    {:noreply, state}
  end

  @doc "One poll: SRV query, mapping, diff, disconnects and connects. Returns the new state."
  def poll(state) do
    members = members(state.naming, state)
    connected = MapSet.new(apply_mfa(state.list_nodes, []))
    left = MapSet.difference(state.members, members)

    if state.disconnect? do
      for node <- left, MapSet.member?(connected, node), do: apply_mfa(state.disconnect, [node])
    end

    me = node()

    for node <- members, node != me, not MapSet.member?(connected, node) do
      apply_mfa(state.connect, [node])
    end

    %{state | members: members}
  end

  defp members(:service_prefix, state) do
    suffix = "." <> state.service

    for {_priority, _weight, _port, target} <-
          :inet_res.lookup(to_charlist(state.service), :in, :srv, state.lookup),
        target = List.to_string(target),
        String.ends_with?(target, suffix),
        into: MapSet.new() do
      String.to_atom(String.replace_suffix(target, suffix, "") <> "@" <> state.service)
    end
  end

  # As :inet_res.lookup/4 does, a failed query counts as an empty answer.
  defp members({:basename_port_ip, base}, state) do
    case :inet_res.resolve(to_charlist(state.service), :in, :srv, state.lookup) do
      {:ok, msg} ->
        records = fn section -> Enum.map(:inet_dns.msg(msg, section), &:inet_dns.rr/1) end

        addresses =
          for rr <- records.(:arlist), rr[:type] == :a, into: %{} do
            {String.downcase(to_string(rr[:domain])), rr[:data]}
          end

        for rr <- records.(:anlist),
            rr[:type] == :srv,
            {_priority, _weight, port, target} = rr[:data],
            ip = addresses[String.downcase(to_string(target))],
            ip != nil,
            into: MapSet.new() do
          String.to_atom("#{base}-#{port}@#{:inet.ntoa(ip)}")
        end

      {:error, _} ->
        MapSet.new()
    end
  end

  defp apply_mfa({m, f, a}, extra), do: apply(m, f, a ++ extra)
end
