defmodule DynamicSrv.Test.Chaos do
  @moduledoc false
  # Measures what a fault did to a fleet (DynamicSrv.Test.Fleet): connections lost, from the
  # nodedown events every node's recorder saw, and time to heal; prints them on lines starting
  # with "[chaos]", which ./scripts/chaos gathers into its summary. Figures are printed, never
  # asserted on.
  import ExUnit.Assertions

  alias DynamicSrv.Test.{Fleet, NodeAgent, Peer}

  @doc "Milliseconds on the monotonic clock."
  def now, do: System.monotonic_time(:millisecond)

  @doc "How many events each peer has recorded so far: pass to `nodedowns_since/2`."
  def mark(peers), do: Map.new(peers, &{&1.name, length(events(&1))})

  defp events(peer), do: Peer.call(peer, NodeAgent, :node_events, [])

  @doc "`%{peer_name => [node]}`: the nodedowns each peer saw since `mark` (0 for new peers)."
  def nodedowns_since(peers, mark) do
    Map.new(peers, fn peer ->
      downs =
        for {:nodedown, node} <- Enum.drop(events(peer), Map.get(mark, peer.name, 0)), do: node

      {peer.name, downs}
    end)
  end

  @doc """
  Connections lost, from `nodedowns_since/2`: a dropped connection shows as a nodedown on
  both ends (or only on the survivor's, when the other end was killed), so each pair counts
  the larger of its two ends' counts.
  """
  def connections_lost(downs) do
    pairs =
      for {name, nodes} <- downs, node <- nodes, reduce: %{} do
        acc -> Map.update(acc, {name, node}, 1, &(&1 + 1))
      end

    pairs
    |> Enum.group_by(fn {{a, b}, _} -> Enum.sort([a, b]) end, fn {_, n} -> n end)
    |> Enum.map(fn {_pair, counts} -> Enum.max(counts) end)
    |> Enum.sum()
  end

  @doc """
  Waits for the full mesh among `peers`, checking every 20 ms for up to `limit_ms`; returns
  the monotonic time it was first seen. Flunks with every peer's view if it never forms.
  """
  def await_full_mesh(peers, limit_ms \\ 120_000) do
    deadline = now() + limit_ms
    await_mesh(peers, deadline)
  end

  defp await_mesh(peers, deadline) do
    cond do
      Fleet.full_mesh?(peers) ->
        now()

      now() > deadline ->
        views = for peer <- peers, do: {peer.name, Fleet.node_list(peer)}
        flunk("no full mesh: #{inspect(views)}")

      true ->
        Process.sleep(20)
        await_mesh(peers, deadline)
    end
  end

  @doc "Milliseconds since `t0` (a `System.monotonic_time/0`), fractional."
  def ms_since(t0),
    do: System.convert_time_unit(System.monotonic_time() - t0, :native, :microsecond) / 1000

  @doc "min / median / p90 / max of a list of numbers, rounded, for printing."
  def distribution(values) do
    sorted = Enum.sort(values)
    n = length(sorted)
    at = fn q -> Enum.at(sorted, min(n - 1, trunc(q * n))) end

    "n=#{n} min=#{round1(hd(sorted))} median=#{round1(at.(0.5))} p90=#{round1(at.(0.9))} " <>
      "max=#{round1(List.last(sorted))}"
  end

  defp round1(x), do: Float.round(x / 1, 1)

  @doc "`ms` in polling intervals of `poll_ms`, one decimal."
  def intervals(ms, poll_ms), do: Float.round(ms / poll_ms, 1)

  @doc "Prints `[chaos] fault: key=value, ...` (keyword order kept)."
  def report(fault, figures) do
    line = Enum.map_join(figures, ", ", fn {k, v} -> "#{k}=#{format(v)}" end)
    IO.puts("\n[chaos] #{fault}: #{line}")
  end

  defp format(v) when is_binary(v), do: v
  defp format(v), do: inspect(v, charlists: :as_lists)
end
