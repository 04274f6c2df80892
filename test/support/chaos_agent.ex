defmodule DynamicSrv.Test.ChaosAgent do
  @moduledoc false
  # Runs inside the fault suite's nodes (called through DynamicSrv.Test.Peer): processes and
  # probes that show whether a pid of a killed node's old incarnation aliases a process of
  # its new one.

  @catcher :dynamic_srv_chaos_catcher
  # Far above what a node spawns while booting and joining, so a freshly booted node can
  # still reach the same pid number by spawning.
  @sleeper_number 20_000

  @doc """
  Spawns throwaway processes until the pid number reaches #{@sleeper_number}, then a process
  that lives until the node dies; returns its pid.
  """
  def spawn_sleeper do
    pid = spawn_until(@sleeper_number)
    true = :erlang.register(:dynamic_srv_chaos_sleeper, pid)
    pid
  end

  @doc """
  Spawns a process whose pid has the same number and serial as `old_pid` (only the node's
  creation can tell them apart) and that keeps every message it receives (`caught/0`).
  `{:error, reason}` if this node's pids have already passed that number.
  """
  def spawn_catcher_like(old_pid) do
    {number, serial} = pid_fields(old_pid)
    pid = spawn_until(number)

    if pid_fields(pid) == {number, serial} do
      true = :erlang.register(@catcher, pid)
      pid
    else
      send(pid, :stop)
      {:error, {:pid_fields, pid_fields(pid), :wanted, {number, serial}}}
    end
  end

  defp spawn_until(number) do
    pid = spawn(&catch_loop/0)

    if elem(pid_fields(pid), 0) < number do
      send(pid, :stop)
      spawn_until(number)
    else
      pid
    end
  end

  defp catch_loop(caught \\ []) do
    receive do
      :stop ->
        :ok

      {:caught?, from} ->
        send(from, {:caught, Enum.reverse(caught)})
        catch_loop(caught)

      message ->
        catch_loop([message | caught])
    end
  end

  @doc "Every message the catcher received, in order."
  def caught do
    send(@catcher, {:caught?, self()})

    receive do
      {:caught, messages} -> messages
    after
      5_000 -> {:error, :catcher_silent}
    end
  end

  @doc """
  From a node connected to the new incarnation: monitors `old_pid` and returns the monitor's
  DOWN reason, then sends `old_pid` a probe and `new_pid` a marker right after it. The
  distribution keeps one sender's messages to one process in order, so if the probe had been
  delivered to `new_pid` it would arrive before the marker (see `caught/0`).
  """
  def probe_old_pid(old_pid, new_pid) do
    ref = Process.monitor(old_pid)

    reason =
      receive do
        {:DOWN, ^ref, :process, ^old_pid, reason} -> reason
      after
        10_000 -> :no_down_within_10_s
      end

    send(old_pid, {:probe_to_old_pid, node()})
    send(new_pid, {:marker_to_new_pid, node()})
    reason
  end

  @doc "`{number, serial}` of a pid, as the external term format carries them."
  def pid_fields(pid) do
    <<number::32, serial::32, _creation::32>> = tail(pid)
    {number, serial}
  end

  @doc "The creation of the node incarnation a pid belongs to."
  def creation(pid) do
    <<_number::32, _serial::32, creation::32>> = tail(pid)
    creation
  end

  # NEW_PID_EXT (tag 88): the node atom, then 32-bit id, serial and creation.
  defp tail(pid) do
    <<131, 88, _::binary>> = bin = :erlang.term_to_binary(pid)
    binary_part(bin, byte_size(bin) - 12, 12)
  end
end
