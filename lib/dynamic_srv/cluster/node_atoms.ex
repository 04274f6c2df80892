defmodule DynamicSrv.Cluster.NodeAtoms do
  @moduledoc false
  # Turns node names from DNS into atoms without letting hostile DNS grow the atom table:
  # names whose atom already exists are free; new atoms are limited to `limit` per topology
  # for the life of the VM (atoms are never garbage collected).

  defstruct created: 0, limit: 0

  @type t :: %__MODULE__{created: non_neg_integer(), limit: pos_integer()}

  @spec new(pos_integer()) :: t()
  def new(limit), do: %__MODULE__{limit: limit}

  @doc "Returns the atoms, the updated budget and how many names were refused."
  @spec to_atoms(t(), [String.t()]) :: {[node()], t(), non_neg_integer()}
  def to_atoms(budget, names) do
    {atoms, budget, refused} =
      Enum.reduce(names, {[], budget, 0}, fn name, {atoms, budget, refused} ->
        case existing(name) do
          {:ok, atom} ->
            {[atom | atoms], budget, refused}

          :error when budget.created < budget.limit ->
            {[String.to_atom(name) | atoms], %{budget | created: budget.created + 1}, refused}

          :error ->
            {atoms, budget, refused + 1}
        end
      end)

    {Enum.reverse(atoms), budget, refused}
  end

  @doc "The atom for a name if it exists (a node we never knew cannot be connected)."
  @spec existing(String.t()) :: {:ok, atom()} | :error
  def existing(name) do
    {:ok, String.to_existing_atom(name)}
  rescue
    ArgumentError -> :error
  end
end
