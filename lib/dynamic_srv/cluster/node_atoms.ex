defmodule DynamicSrv.Cluster.NodeAtoms do
  @moduledoc false
  # Turns node names from DNS into atoms without letting hostile DNS grow the atom table:
  # names whose atom already exists are free; new atoms are limited to `limit` per topology
  # for the life of the VM (atoms are never garbage collected).
  #
  # "Per topology for the life of the VM" means the count must survive the poller: a
  # supervisor restarting a crashing topology, or an app stopping and starting it, must not
  # get a fresh budget each time. So the count lives in an :atomics counter found through
  # :persistent_term under the topology's key. The term is written once per key, when the
  # counter is made; counting never rewrites it (each :persistent_term write of an existing
  # key makes every process on the VM be scanned), and :atomics keeps two pollers sharing a
  # key from losing each other's counts.

  defstruct [:counter, limit: 0]

  @type t :: %__MODULE__{counter: :atomics.atomics_ref(), limit: pos_integer()}

  @doc """
  The budget of topology `key`: `limit` new atoms, minus those already made under `key`
  since the VM started (by this poller or any earlier one with the same key).
  """
  @spec new(term(), pos_integer()) :: t()
  def new(key, limit), do: %__MODULE__{counter: counter(key), limit: limit}

  @doc "How many new atoms topology `key` has made since the VM started."
  @spec created(term()) :: non_neg_integer()
  def created(key) do
    case :persistent_term.get(term_key(key), nil) do
      nil -> 0
      counter -> :atomics.get(counter, 1)
    end
  end

  @doc "Returns the atoms, the budget and how many names were refused."
  @spec to_atoms(t(), [String.t()]) :: {[node()], t(), non_neg_integer()}
  def to_atoms(budget, names) do
    {atoms, refused} =
      Enum.reduce(names, {[], 0}, fn name, {atoms, refused} ->
        case existing(name) do
          {:ok, atom} ->
            {[atom | atoms], refused}

          :error ->
            if reserve(budget),
              do: {[String.to_atom(name) | atoms], refused},
              else: {atoms, refused + 1}
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

  # Counts before making the atom, so two pollers of one key never both take the last one.
  defp reserve(%{counter: counter, limit: limit}) do
    cond do
      :atomics.get(counter, 1) >= limit ->
        false

      :atomics.add_get(counter, 1, 1) <= limit ->
        true

      true ->
        :atomics.sub(counter, 1, 1)
        false
    end
  end

  defp counter(key) do
    term_key = term_key(key)

    with nil <- :persistent_term.get(term_key, nil) do
      # Two pollers of one key starting at once must end up with the same counter.
      :global.trans({term_key, self()}, fn -> make_counter(term_key) end, [node()])
    end
  end

  defp make_counter(term_key) do
    with nil <- :persistent_term.get(term_key, nil) do
      counter = :atomics.new(1, signed: false)
      :persistent_term.put(term_key, counter)
      counter
    end
  end

  defp term_key(key), do: {__MODULE__, key}
end
