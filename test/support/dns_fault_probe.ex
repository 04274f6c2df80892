defmodule DynamicSrv.Test.DnsFaultProbe do
  @moduledoc false
  # Runs inside a test node (through Peer.call): times address_please/3 and Node.connect/1
  # there, so the figures are the node's own, not the test VM's.

  @doc "Calls address_please for every name at once; `[{name, result, ms}]`."
  def time_address_please(names, host) do
    names
    |> Enum.map(fn name ->
      Task.async(fn ->
        {us, result} =
          :timer.tc(DynamicSrv.Epmd, :address_please, [
            to_charlist(name),
            to_charlist(host),
            :inet
          ])

        {name, result, us / 1000}
      end)
    end)
    |> Enum.map(&Task.await(&1, 60_000))
  end

  @doc """
  Starts `Node.connect/1` to each of `ghosts` (nodes whose addresses are not cached), waits
  `head_start_ms` so they are inside net_kernel, then times `Node.connect(target)`.
  Returns `%{target: {result, ms}, ghosts: [{node, result, ms}], ghosts_returned_before: n}`
  once every ghost returned, `n` being how many had returned when the target connect did.
  """
  def connect_while_lookups_hang(target, ghosts, head_start_ms) do
    parent = self()

    for ghost <- ghosts do
      spawn(fn ->
        {us, result} = :timer.tc(Node, :connect, [ghost])
        send(parent, {:ghost, ghost, result, us / 1000})
      end)
    end

    Process.sleep(head_start_ms)
    {us, result} = :timer.tc(Node, :connect, [target])
    {:messages, mailbox} = Process.info(self(), :messages)
    returned_before = Enum.count(mailbox, &match?({:ghost, _, _, _}, &1))

    ghosts =
      for ghost <- ghosts do
        receive do
          {:ghost, ^ghost, result, ms} -> {ghost, result, ms}
        after
          60_000 -> {ghost, :no_return, nil}
        end
      end

    %{target: {result, us / 1000}, ghosts: ghosts, ghosts_returned_before: returned_before}
  end

  @doc "Disconnects `node` and waits until it is gone from Node.list/0."
  def disconnect_and_wait(node) do
    Node.disconnect(node)
    wait_gone(node, 200)
  end

  defp wait_gone(node, 0), do: node not in Node.list()

  defp wait_gone(node, tries) do
    if node in Node.list() do
      Process.sleep(10)
      wait_gone(node, tries - 1)
    else
      true
    end
  end
end
