defmodule DynamicSrv.Cluster.Seed do
  @moduledoc false
  # The starting membership of a poller: libcluster's `%Cluster.Strategy.State{meta: ...}`,
  # or `initial_members:` given to DynamicSrv.Cluster. The nodes become members of the Rust
  # membership before the first poll, so they are connected by it and removed only by the
  # membership rules (missing from 2 agreeing complete answers for :removal_delay), like
  # nodes DNS listed. This node itself is never a seed.

  require DynamicSrv.Logger, as: Logger

  alias DynamicSrv.Native

  @doc "Normalises what a caller gave (nil, a list or MapSet of node atoms or strings)."
  @spec nodes(term()) :: {:ok, [String.t()]} | {:error, String.t()}
  def nodes(nil), do: {:ok, []}
  def nodes(%MapSet{} = set), do: nodes(MapSet.to_list(set))

  def nodes(list) when is_list(list) do
    if Enum.all?(list, &(is_atom(&1) or is_binary(&1))) do
      me = node() |> Atom.to_string() |> String.downcase()

      {:ok,
       list
       |> Enum.map(&to_string/1)
       |> Enum.reject(&(String.downcase(&1) == me))
       |> Enum.uniq()}
    else
      {:error, "expected a list or MapSet of node names, got #{inspect(list, limit: 5)}"}
    end
  end

  def nodes(other), do: {:error, "expected a list or MapSet of node names, got #{inspect(other)}"}

  defp warn_not_taken(names, members, state) do
    taken = MapSet.new(members, &String.downcase/1)

    case Enum.reject(names, &MapSet.member?(taken, String.downcase(&1))) do
      [] ->
        :ok

      skipped ->
        Logger.warning(
          "ignoring #{length(skipped)} of the starting members of #{state.options.service} " <>
            "(not node names a peer can be dialed by, or beyond max_nodes): " <>
            Enum.map_join(Enum.take(skipped, 5), ", ", &inspect/1)
        )
    end
  end

  @doc "Seeds the poller's state (its `:native` topology, `:members` and `:atoms`)."
  @spec apply(map(), term()) :: map()
  def apply(state, given) do
    case nodes(given) do
      {:ok, []} ->
        state

      {:ok, names} ->
        members = Native.topology_seed(state.native, names)
        warn_not_taken(names, members, state)
        {atoms, budget, _refused} = DynamicSrv.Cluster.NodeAtoms.to_atoms(state.atoms, members)
        # As if a poll had listed them: a seed that leaves is disconnected like any member.
        %{state | members: atoms, member_names: members, atoms: budget}

      {:error, why} ->
        Logger.warning("ignoring the starting members of #{state.options.service}: #{why}")
        state
    end
  end
end
