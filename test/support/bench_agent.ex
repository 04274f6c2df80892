defmodule DynamicSrv.Bench.Agent do
  @moduledoc false
  # Benchmarks only (./scripts/bench). Runs inside every node the benchmark boots, like
  # DynamicSrv.Test.NodeAgent, whose request loop it runs: one request per stdin line (base64
  # of term_to_binary of {mod, fun, args}), one "REPLY <base64>" line per answer.
  #
  # Timestamps are System.os_time(:microsecond): every node runs on the same machine, so
  # they compare across OS processes (monotonic time does not).

  @mesh {__MODULE__, :mesh}
  @long {__MODULE__, :long_schedule}
  @warnings DynamicSrv.Bench.Agent.Warnings

  def main do
    {:ok, _} = Application.ensure_all_started(:elixir)
    {:ok, _} = Application.ensure_all_started(:logger)
    # Only errors are printed, but the poller's last warnings are kept for mesh_gap/0.
    Logger.configure(level: :warning)
    :ets.new(@warnings, [:named_table, :public])
    :ok = :logger.add_primary_filter(@warnings, {&__MODULE__.keep_warning/2, []})
    DynamicSrv.Test.NodeAgent.serve()
  end

  @doc false
  def keep_warning(%{level: :warning, msg: msg}, _) do
    text = msg |> format_msg() |> String.slice(0, 300)
    :ets.insert(@warnings, {:last, Enum.take([text | last_warnings()], 3)})
    :stop
  end

  def keep_warning(%{level: level}, _),
    do: if(:logger.compare_levels(level, :error) == :lt, do: :stop, else: :ignore)

  defp last_warnings, do: Enum.flat_map(:ets.lookup(@warnings, :last), fn {_, list} -> list end)

  defp format_msg({:string, chardata}), do: IO.chardata_to_string(chardata)
  defp format_msg({format, args}) when is_list(args), do: to_string(:io_lib.format(format, args))
  defp format_msg(other), do: inspect(other)

  @doc """
  Starts the membership poller of `arm` at wall-clock time `at_us` (os_time, µs), in a process
  of its own so the agent keeps answering. `arm` is `:ours` (DynamicSrv.Cluster) or
  `:classic` (DynamicSrv.Bench.ClassicPoller).
  """
  def start_poller_at(arm, at_us, opts) do
    owner =
      spawn(fn ->
        wait_until(at_us)

        {:ok, _pid} =
          case arm do
            :ours -> DynamicSrv.Cluster.start_link(opts)
            :classic -> DynamicSrv.Bench.ClassicPoller.start_link(opts)
          end

        receive do
          :stop -> :ok
        end
      end)

    :persistent_term.put({__MODULE__, :poller_owner}, owner)
    :ok
  end

  @doc """
  Watches connections until every node of `expected` is connected; `mesh_time/0` then gives
  the os_time (µs) at which that first happened.
  """
  def watch_mesh(expected) do
    :persistent_term.put(@mesh, nil)
    :persistent_term.put({__MODULE__, :expected}, expected)
    parent = self()

    pid =
      spawn(fn ->
        :ok = :net_kernel.monitor_nodes(true)
        send(parent, {:watching, self()})
        await_mesh(MapSet.new(expected) |> MapSet.delete(node()))
      end)

    receive do
      {:watching, ^pid} -> :ok
    after
      5_000 -> :error
    end
  end

  defp await_mesh(expected) do
    if MapSet.subset?(expected, MapSet.new(Node.list())) do
      :persistent_term.put(@mesh, System.os_time(:microsecond))
      :net_kernel.monitor_nodes(false)
    else
      receive do
        {:nodeup, _} -> await_mesh(expected)
        {:nodedown, _} -> await_mesh(expected)
      after
        50 -> await_mesh(expected)
      end
    end
  end

  def mesh_time, do: :persistent_term.get(@mesh, nil)

  @doc """
  What keeps this node from the mesh `watch_mesh/1` waits for: the expected nodes it is not
  connected to, and of those the ones its poller does not list (nil: no poller running).
  """
  def mesh_gap do
    expected = :persistent_term.get({__MODULE__, :expected}, []) -- [node()]
    missing = expected -- Node.list()
    listed = poller_members()

    %{
      missing: missing,
      unlisted: listed && Enum.reject(missing, &(&1 in listed)),
      unexpected: listed && listed -- [node() | expected],
      poller: poller_facts(),
      warnings: last_warnings()
    }
  end

  # One SRV query over TCP from this node, outside the NIF: how long the server takes now.
  defp probe(%{service: service, nameservers: "127.0.0.1:" <> port}) do
    host = "127.0.0.1"
    {:ok, ip} = :inet.parse_address(String.to_charlist(host))

    {us, result} =
      :timer.tc(fn ->
        :inet_res.resolve(String.to_charlist(service), :in, :srv,
          nameservers: [{ip, String.to_integer(port)}],
          usevc: true,
          timeout: 10_000
        )
      end)

    case result do
      {:ok, msg} -> {div(us, 1000), length(:inet_dns.msg(msg, :anlist))}
      other -> {div(us, 1000), other}
    end
  end

  defp probe(options), do: {:no_probe, options.nameservers}

  defp poller_facts do
    with owner when is_pid(owner) <- :persistent_term.get({__MODULE__, :poller_owner}, nil),
         {:links, [poller | _]} <- Process.info(owner, :links) do
      s = :sys.get_state(poller, 5_000)

      %{
        members: length(s.members),
        in_flight: s.poll_tag != nil,
        connecting: MapSet.size(s.connecting),
        queue: elem(Process.info(poller, :message_queue_len), 1),
        topology_members: length(DynamicSrv.Native.topology_members(s.native)),
        outage: s[:telemetry_outage],
        probe: probe(s.options),
        poll_now: timed_poll_now(poller)
      }
    else
      _ -> nil
    end
  catch
    kind, why -> {kind, why}
  end

  # ms a poll of the running poller takes now, and whether DNS is still failing after it.
  defp timed_poll_now(poller) do
    {us, result} = :timer.tc(fn -> DynamicSrv.Cluster.poll_now(poller, 15_000) end)
    {div(us, 1000), result, :sys.get_state(poller, 5_000)[:telemetry_outage] && :failing}
  catch
    kind, why -> {kind, why}
  end

  defp poller_members do
    with owner when is_pid(owner) <- :persistent_term.get({__MODULE__, :poller_owner}, nil),
         {:links, [poller | _]} <- Process.info(owner, :links),
         {:ok, members} <- safe_members(poller) do
      members
    else
      _ -> nil
    end
  end

  defp safe_members(poller) do
    {:ok, DynamicSrv.Cluster.members(poller)}
  catch
    :exit, _ -> :error
  end

  @doc "Counts long_schedule events (>= `ms`) on this node until `long_schedule_report/0`."
  def monitor_long_schedule(ms) do
    parent = self()

    pid =
      spawn(fn ->
        :erlang.system_monitor(self(), [{:long_schedule, ms}])
        send(parent, {:monitoring, self()})
        empty = %{count: 0, max_ms: 0, sample: []}
        collect_long(empty, empty)
      end)

    receive do
      {:monitoring, ^pid} -> :persistent_term.put(@long, pid)
    after
      5_000 -> :error
    end
  end

  # Keeps the count and maximum of all events, and separately those whose process was in
  # lookup code when scheduled in or out: DynamicSrv modules (epmd module, poller, NIF boundary;
  # for the classic arm DynamicSrv.Bench.Classic*) or OTP's resolver (:inet_res, :inet_db).
  defp collect_long(all, lookup) do
    receive do
      {:monitor, _pid_or_port, :long_schedule, info} ->
        time = Keyword.get(info, :timeout, 0)
        where = {Keyword.get(info, :in), Keyword.get(info, :out)}
        all = add_event(all, time, where)
        lookup = if lookup_code?(where), do: add_event(lookup, time, where), else: lookup
        collect_long(all, lookup)

      {:report, from} ->
        send(from, {:long_schedule, %{all: all, lookup_code: lookup}})
        collect_long(all, lookup)

      :stop ->
        :erlang.system_monitor(:undefined)
    end
  end

  defp add_event(%{count: count, max_ms: max, sample: sample}, time, where),
    do: %{
      count: count + 1,
      max_ms: Kernel.max(max, time),
      sample: Enum.take([{time, where} | sample], 5)
    }

  defp lookup_code?({from, to}), do: lookup_mfa?(from) or lookup_mfa?(to)

  defp lookup_mfa?({module, _f, _a}) when module in [:inet_res, :inet_db], do: true

  defp lookup_mfa?({module, _f, _a}) when is_atom(module) do
    name = Atom.to_string(module)
    String.starts_with?(name, "Elixir.DynamicSrv.") and module != __MODULE__
  end

  defp lookup_mfa?(_), do: false

  @doc "Stops monitoring (system_monitor is per VM: one monitor at a time)."
  def stop_long_schedule do
    case :persistent_term.get(@long, nil) do
      nil ->
        :ok

      pid ->
        :persistent_term.erase(@long)
        ref = Process.monitor(pid)
        send(pid, :stop)

        receive do
          {:DOWN, ^ref, _, _, _} -> :ok
        after
          5_000 -> :ok
        end
    end
  end

  def long_schedule_report do
    case :persistent_term.get(@long, nil) do
      nil ->
        nil

      pid ->
        send(pid, {:report, self()})

        receive do
          {:long_schedule, report} -> report
        after
          5_000 -> nil
        end
    end
  end

  @doc "Connects to nodes one by one with Node.connect/1; returns the results."
  def connect_all(nodes), do: for(n <- nodes, n != node(), do: {n, Node.connect(n)})

  @doc "VmRSS (kB), RssAnon (kB) and Threads of this OS process, from /proc/self/status."
  def footprint do
    :erlang.garbage_collect()

    for line <- String.split(File.read!("/proc/self/status"), "\n"),
        [key, value] <- [String.split(line, ":", parts: 2)],
        key in ["VmRSS", "RssAnon", "RssFile", "Threads"],
        into: %{} do
      {key, value |> String.trim() |> String.split(" ") |> hd() |> String.to_integer()}
    end
  end

  @doc """
  CPU time (clock ticks, 1/100 s) this OS process has used: `total` (every thread) and
  `nif`, the library's DNS thread (named `dynamic_srv_dns`; 0 where the NIF is not loaded).
  """
  def cpu_ticks do
    threads =
      for dir <- Path.wildcard("/proc/self/task/*"),
          {:ok, comm} <- [File.read(Path.join(dir, "comm"))],
          {:ok, stat} <- [File.read(Path.join(dir, "stat"))],
          do: {String.trim(comm), stat_ticks(stat)}

    {:ok, stat} = File.read("/proc/self/stat")
    nif = for {"dynamic_srv_dns", ticks} <- threads, reduce: 0, do: (acc -> acc + ticks)
    %{total: stat_ticks(stat), nif: nif}
  end

  # utime + stime: fields 14 and 15 of a stat line, the 12th and 13th after the name.
  defp stat_ticks(stat) do
    [_, rest] = String.split(stat, ") ", parts: 2)
    fields = String.split(rest, " ")
    String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))
  end

  @doc """
  The CPU one poll of `DynamicSrv.Cluster` costs this node: a poller with `opts` whose
  `list_nodes` lists every member (so nothing is dialed), 5 polls to warm up, then `polls`
  `poll_now/1` calls. Returns the members, the wall time and the CPU ticks they used.
  """
  def poll_cost(opts, polls) do
    {:ok, pid} = GenServer.start(DynamicSrv.Cluster, opts)

    try do
      for _ <- 1..5, do: :ok = DynamicSrv.Cluster.poll_now(pid)
      before = cpu_ticks()
      t0 = System.monotonic_time(:microsecond)
      for _ <- 1..polls, do: :ok = DynamicSrv.Cluster.poll_now(pid)
      wall = System.monotonic_time(:microsecond) - t0
      after_ = cpu_ticks()

      %{
        members: length(DynamicSrv.Cluster.members(pid)),
        polls: polls,
        wall_us: wall,
        total: after_.total - before.total,
        nif: after_.nif - before.nif
      }
    after
      GenServer.stop(pid)
    end
  end

  defp wait_until(at_us) do
    left_ms = div(at_us - System.os_time(:microsecond), 1000)
    if left_ms > 0, do: Process.sleep(left_ms)
    spin_until(at_us)
  end

  # The last millisecond, so every node starts within a few µs of the same instant.
  defp spin_until(at_us) do
    if System.os_time(:microsecond) < at_us, do: spin_until(at_us), else: :ok
  end
end
