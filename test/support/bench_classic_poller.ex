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
  use GenServer

  defstruct service: nil,
            interval: 5_000,
            members: MapSet.new(),
            connect: {:net_kernel, :connect_node, []},
            disconnect: {:erlang, :disconnect_node, []},
            list_nodes: {:erlang, :nodes, [:connected]},
            disconnect?: true,
            lookup: nil

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
      lookup: Keyword.get(opts, :inet_res_options, [])
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
    service = to_charlist(state.service)
    suffix = "." <> state.service

    members =
      for {_priority, _weight, _port, target} <-
            :inet_res.lookup(service, :in, :srv, state.lookup),
          target = List.to_string(target),
          String.ends_with?(target, suffix),
          into: MapSet.new() do
        String.to_atom(String.replace_suffix(target, suffix, "") <> "@" <> state.service)
      end

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

  defp apply_mfa({m, f, a}, extra), do: apply(m, f, a ++ extra)
end
