defmodule DynamicSrv.Cluster.Departure do
  @moduledoc false
  # How a node that left DNS leaves the cluster without `global` cutting healthy links.
  #
  # With `prevent_overlapping_partitions` (OTP 25+'s default), a node that loses a connection
  # tells every node it still sees, and they disconnect the node it lost. So when node A
  # drops a delisted node X on its own, X reports "lost A" to the rest, and they all drop A:
  # 2×(N−1) nodedowns between healthy nodes per delisting. OTP's answer is
  # `:global.disconnect/0`, run on X: it leaves every node at once without reporting any
  # loss. So X leaves by itself when its own poll sees it delisted, and the others wait
  # `disconnect_grace` before disconnecting X themselves (the fallback for a node that does
  # not run this poller, or sees DNS differently).

  @default_disconnect {:erlang, :disconnect_node, []}

  @doc """
  Called once when this node's own poll finds it delisted. Leaves through
  `:global.disconnect/0` when that is safe to do for this topology; returns a phrase for the
  log line saying what happened.
  """
  @spec leave(disconnect :: {module(), atom(), list()}, former_members :: [node()]) :: String.t()
  def leave(disconnect, former_members) do
    connected = Node.list(:visible)
    outside = connected -- former_members

    cond do
      disconnect != @default_disconnect ->
        "leaving the disconnects to the others (a custom disconnect function is configured)"

      not global_disconnect?() ->
        "leaving the disconnects to the others (:global.disconnect/0 needs OTP 25.1+ and global running)"

      connected == [] ->
        "not connected to any node"

      outside != [] ->
        # :global.disconnect/0 would also drop nodes this topology never listed.
        "leaving the disconnects to the others: #{length(outside)} connected nodes are not " <>
          "members of this topology (#{Enum.join(Enum.take(outside, 3), ", ")})"

      true ->
        # It waits for every nodedown: off the poller, so polls and calls go on meanwhile.
        spawn(fn -> :global.disconnect() end)

        "leaving the cluster: disconnecting from its #{length(connected)} nodes through " <>
          ":global.disconnect/0, so global on the others keeps their links"
    end
  end

  defp global_disconnect? do
    Code.ensure_loaded?(:global) and function_exported?(:global, :disconnect, 0) and
      Process.whereis(:global_name_server) != nil
  end
end
