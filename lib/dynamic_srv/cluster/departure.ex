defmodule DynamicSrv.Cluster.Departure do
  @moduledoc false
  # How a node that left DNS leaves the cluster without `global` cutting healthy links.
  #
  # With `prevent_overlapping_partitions` (OTP 25+'s default), a node that loses a connection
  # tells every node it still sees, and they disconnect the node it lost. So when node A
  # drops a delisted node X on its own, X reports "lost A" to the rest, and they all drop A:
  # 2×(N−1) nodedowns between healthy nodes per delisting. OTP's answer is
  # `:global.disconnect/0`, run on X: it leaves every node at once without reporting a loss.
  #
  # The protocol: a member that finds X gone tells X's poller (the same registered name on
  # every node) and gives X `disconnect_grace` to leave before it disconnects X itself. X
  # leaves when its own poll also finds it gone *and* a member told it so: a lie told to X
  # alone, or to one member alone, makes nobody leave. The fallback disconnect targets the
  # connection X had when it left, never a new incarnation under the same name.

  @default_disconnect {:erlang, :disconnect_node, []}

  # `left?`: this node left the cluster and dials nobody until its own answer lists it again.
  # `departing`: node => the ref of the grace it was given (a node can depart twice within
  # one grace: only the grace of its latest departure may disconnect it).
  defstruct name: nil, confirmed_by: nil, left?: false, departing: %{}

  @typedoc """
  `:left` (it disconnected through `:global.disconnect/0`), `:alone` (nothing to leave) or
  `{:never, why}` (leave the disconnects to the others).
  """
  @type outcome :: :left | :alone | {:never, String.t()}

  @doc """
  Called from the poller's `init/1`: watches nodedowns (a departure ends with its
  connection) and registers the poller under the name the other nodes' pollers send to:
  `name` if the poller was started with a local one, else one derived from the topology.
  """
  def init(topology, name) do
    # Hidden nodes too: the default list_nodes counts them as connected.
    :net_kernel.monitor_nodes(true, node_type: :all)

    name =
      if is_atom(name) and name != nil,
        do: name,
        else: register(:"Elixir.DynamicSrv.Cluster.#{topology}")

    %__MODULE__{name: name}
  end

  # The same topology started twice on one node: only the first hears departures.
  defp register(name) do
    Process.register(self(), name)
    name
  rescue
    ArgumentError -> nil
  end

  @doc """
  Nodes this node's poll found gone: tells those still connected, and returns the ref of
  their grace: when it ends, `due/2` gives those to disconnect, unless their connection
  ended first (`nodedown/2`) or they departed again since.
  """
  def others_left(%__MODULE__{} = dep, nodes, service, connected) do
    connected = MapSet.new(connected)
    still = Enum.filter(nodes, &MapSet.member?(connected, &1))

    if dep.name do
      for node <- still,
          do: :erlang.send({dep.name, node}, {:dynamic_srv_left, service, node()}, [:noconnect])
    end

    grace = make_ref()
    {%{dep | departing: Enum.into(still, dep.departing, &{&1, grace})}, grace}
  end

  def nodedown(%__MODULE__{} = dep, node),
    do: %{dep | departing: Map.delete(dep.departing, node)}

  @doc "The nodes whose latest grace is `grace`, still on the connection they left on."
  def due(%__MODULE__{} = dep, grace) do
    due = for {node, ^grace} <- dep.departing, do: node
    {%{dep | departing: Map.drop(dep.departing, due)}, due}
  end

  @doc "A member told this node it left `service`."
  def confirmed(%__MODULE__{} = dep, from), do: %{dep | confirmed_by: from}

  @doc "This node's own poll lists it: earlier confirmations no longer stand."
  def listed(%__MODULE__{} = dep), do: %{dep | confirmed_by: nil, left?: false}

  @doc """
  Leaves if this node's own poll found it gone (missing from its last complete answer) and a
  member confirmed it. Returns the updated state and a line to log, or nil.
  """
  def maybe_leave(%__MODULE__{confirmed_by: nil} = dep, _disconnect), do: {dep, nil}

  def maybe_leave(%__MODULE__{} = dep, disconnect) do
    connected = Node.list(:visible)
    outcome = plan(disconnect, connected, global_disconnect?())
    # It waits for every nodedown: off the poller, so polls and calls go on meanwhile.
    if outcome == :left, do: spawn(fn -> :global.disconnect() end)
    line = "#{describe(outcome, length(connected))} (#{dep.confirmed_by} found it gone too)"
    {%{dep | confirmed_by: nil, left?: outcome in [:left, :alone]}, line}
  end

  @doc """
  What `maybe_leave/2` does, given the node's visible connections. It leaves every one of
  them, as `:global.disconnect/0` does: a node not listed yet is not dialed by the others
  either, and a node in two topologies is dialed again by the other one's next poll.
  """
  @spec plan({module(), atom(), list()}, [node()], boolean()) :: outcome()
  def plan(disconnect, connected, global_disconnect?) do
    cond do
      disconnect != @default_disconnect ->
        {:never, "a custom disconnect function is configured"}

      not global_disconnect? ->
        {:never, ":global.disconnect/0 needs OTP 25.1+ and global running"}

      connected == [] ->
        :alone

      true ->
        :left
    end
  end

  @doc "The log line for an outcome, given how many nodes it left."
  @spec describe(outcome(), non_neg_integer()) :: String.t()
  def describe(:left, connected),
    do:
      "this node leaves the cluster: disconnecting from its #{count(connected, "node")} " <>
        "through :global.disconnect/0, so global on the others keeps their links"

  def describe(:alone, _connected), do: "this node left DNS and is not connected to any node"

  def describe({:never, why}, _connected),
    do: "this node left DNS; leaving the disconnects to the other nodes (#{why})"

  @doc "\"1 node\", \"2 nodes\"."
  def count(n, noun) when is_integer(n), do: "#{n} #{noun}#{if n == 1, do: "", else: "s"}"
  def count(list, noun), do: count(length(list), noun)

  defp global_disconnect? do
    Code.ensure_loaded?(:global) and function_exported?(:global, :disconnect, 0) and
      Process.whereis(:global_name_server) != nil
  end
end
