defmodule DynamicSrv.Test.NodeAgent do
  @moduledoc false
  # Runs inside every BEAM node the integration tests boot. Reads requests from stdin, one
  # per line: base64 of term_to_binary({mod, fun, args}); answers on stdout with
  # "REPLY <base64 of term_to_binary({:ok, result} | {:raise, kind, reason})>". Stdin
  # closing (the test VM went away) halts the node, so no node outlives its test.

  @reply "REPLY "

  def main do
    {:ok, _} = Application.ensure_all_started(:elixir)
    serve()
  end

  @doc "Announces the node and answers requests until stdin closes (also used by the bench agent)."
  def serve do
    IO.puts("READY #{node()}")
    loop()
  end

  defp loop do
    case IO.gets("") do
      line when is_binary(line) ->
        {m, f, a} = line |> String.trim() |> Base.decode64!() |> :erlang.binary_to_term()

        result =
          try do
            {:ok, apply(m, f, a)}
          catch
            kind, reason -> {:raise, kind, reason}
          end

        IO.puts(@reply <> Base.encode64(:erlang.term_to_binary(result)))
        loop()

      _eof_or_error ->
        System.halt(0)
    end
  end

  @doc "Connects to each node with plain Node.connect/1; returns [{node, result}]."
  def connect_all(nodes) do
    for node <- nodes, node != node(), do: {node, Node.connect(node)}
  end

  @doc "Facts that show epmd was not used."
  def epmd_facts do
    %{
      epmd_module: :net_kernel.epmd_module(),
      erl_epmd_running: Process.whereis(:erl_epmd) != nil,
      start_epmd: :init.get_argument(:start_epmd),
      creation: :erlang.system_info(:creation)
    }
  end

  # --- Helpers for the membership tests (DynamicSrv.Cluster running on the node itself) ---

  @events :dynamic_srv_test_events
  @recorder DynamicSrv.Test.NodeAgent.Recorder
  @cluster DynamicSrv.Test.NodeAgent.Cluster

  @doc """
  Starts (once) a process that did `:net_kernel.monitor_nodes(true)` and records every
  nodeup/nodedown, and owns the public ETS table the counting MFAs below write to.
  """
  def start_recorder do
    case Process.whereis(@recorder) do
      nil ->
        caller = self()
        ref = make_ref()

        spawn(fn ->
          :ets.new(@events, [:named_table, :public, :set])
          :ok = :net_kernel.monitor_nodes(true, node_type: :all)
          Process.register(self(), @recorder)
          send(caller, {ref, :ready})
          record_loop()
        end)

        receive do
          {^ref, :ready} -> :ok
        after
          5_000 -> {:error, :recorder_not_started}
        end

      _pid ->
        :ok
    end
  end

  defp record_loop do
    receive do
      {kind, node, _info} when kind in [:nodeup, :nodedown] ->
        :ets.insert(@events, {{:event, System.unique_integer([:monotonic])}, kind, node})
    end

    record_loop()
  end

  @doc "Every `{:nodeup | :nodedown, node}` seen since `start_recorder/0`, in order."
  def node_events do
    @events
    |> :ets.match_object({{:event, :_}, :_, :_})
    |> Enum.sort()
    |> Enum.map(fn {_key, kind, node} -> {kind, node} end)
  end

  @doc "How many nodedown events the recorder saw."
  def nodedown_count, do: Enum.count(node_events(), &match?({:nodedown, _}, &1))

  @doc """
  Starts `DynamicSrv.Cluster` with `opts` under a keeper process that outlives the call,
  traps exits and records the cluster's exit if it ever dies. Starts the recorder first.
  """
  def start_cluster(opts) do
    :ok = start_recorder()
    caller = self()
    ref = make_ref()

    spawn(fn ->
      Process.flag(:trap_exit, true)
      send(caller, {ref, DynamicSrv.Cluster.start_link(Keyword.put(opts, :name, @cluster))})
      keep_loop()
    end)

    receive do
      {^ref, result} -> result
    after
      10_000 -> {:error, :cluster_not_started}
    end
  end

  defp keep_loop do
    receive do
      {:EXIT, pid, reason} ->
        key = {:cluster_exit, System.unique_integer([:monotonic])}
        :ets.insert(@events, {key, pid, reason})
    end

    keep_loop()
  end

  @doc "The running cluster's pid, or nil."
  def cluster_pid, do: Process.whereis(@cluster)

  @doc "Exits of the cluster process recorded by its keeper: `[{pid, reason}]`."
  def cluster_exits do
    for {{:cluster_exit, _}, pid, reason} <-
          :ets.match_object(@events, {{:cluster_exit, :_}, :_, :_}),
        do: {pid, reason}
  end

  @doc "DynamicSrv.Cluster.members/1 of the cluster started by start_cluster/1."
  def cluster_members, do: DynamicSrv.Cluster.members(@cluster)

  @doc "DynamicSrv.Cluster.poll_now/1 of the cluster started by start_cluster/1."
  def cluster_poll_now, do: DynamicSrv.Cluster.poll_now(@cluster)

  @doc "Stops the cluster started by start_cluster/1 (its keeper records the :shutdown exit)."
  def stop_cluster, do: GenServer.stop(@cluster, :shutdown)

  @doc "A `:connect` MFA target: counts the attempts per node, then connects as the default."
  def counting_connect(node) do
    :ets.update_counter(@events, {:connects, node}, 1, {{:connects, node}, 0})
    :net_kernel.connect_node(node)
  end

  @doc "A `:list_nodes` MFA target: counts the calls (one per applied poll), as the default."
  def counting_list_nodes do
    :ets.update_counter(@events, :list_nodes_calls, 1, {:list_nodes_calls, 0})
    :erlang.nodes(:connected)
  end

  @doc "How many times counting_connect/1 was called for `node`."
  def connect_count(node) do
    case :ets.lookup(@events, {:connects, node}) do
      [{_, n}] -> n
      [] -> 0
    end
  end

  @doc "How many times counting_list_nodes/0 was called."
  def list_nodes_calls do
    case :ets.lookup(@events, :list_nodes_calls) do
      [{_, n}] -> n
      [] -> 0
    end
  end

  @doc "The names (binaries) that exist as atoms on this node; creates no atom."
  def existing_atoms(names) do
    Enum.filter(names, fn name ->
      try do
        _ = :erlang.binary_to_existing_atom(name, :utf8)
        true
      rescue
        ArgumentError -> false
      end
    end)
  end

  @doc """
  Keeps every log event at `level` or above from now on (in the recorder's table), so a
  test can read what the node logged: `captured_logs/0`. Starts the recorder.
  """
  def start_log_capture(level \\ :info) do
    :ok = start_recorder()
    :logger.add_handler(:dynamic_srv_test_capture, __MODULE__, %{level: level})
  end

  @doc false
  # :logger handler callback for start_log_capture/1.
  def log(%{level: level, msg: msg, meta: meta}, _config) do
    text =
      case msg do
        {:string, chardata} -> IO.chardata_to_string(chardata)
        {:report, report} -> inspect(report)
        {format, args} -> format |> :io_lib.format(args) |> IO.chardata_to_string()
      end

    key = {:log, System.unique_integer([:monotonic])}
    :ets.insert(@events, {key, level, text, Map.get(meta, :mfa), Map.get(meta, :dynamic_srv)})
  rescue
    _ -> :ok
  end

  @doc "The log events captured since start_log_capture/1: `[{level, text}]`, in order."
  def captured_logs do
    @events
    |> :ets.match_object({{:log, :_}, :_, :_, :_, :_})
    |> Enum.sort()
    |> Enum.map(fn {_key, level, text, _mfa, _dynamic_srv} -> {level, text} end)
  end

  @doc "Like captured_logs/0, only the events forwarded from the Rust side (`dynamic_srv: true`)."
  def captured_rust_logs do
    @events
    |> :ets.match_object({{:log, :_}, :_, :_, :_, true})
    |> Enum.sort()
    |> Enum.map(fn {_key, level, text, _mfa, true} -> {level, text} end)
  end

  @doc "Runs `m.f(a...)` with a StringIO as group leader; returns `{result, printed_text}`."
  def capture_output(m, f, a) do
    {:ok, io} = StringIO.open("")
    leader = Process.group_leader()
    Process.group_leader(self(), io)

    result =
      try do
        apply(m, f, a)
      after
        Process.group_leader(self(), leader)
      end

    {:ok, {_, output}} = StringIO.close(io)
    {result, output}
  end
end
