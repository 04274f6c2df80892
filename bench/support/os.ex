defmodule DynamicSrv.Bench.Os do
  @moduledoc false
  # Free loopback ports, /proc readings and ending OS processes by pid (never by name).

  @doc "A loopback port that is free, never handed out twice, below the ephemeral range."
  defdelegate free_port, to: DynamicSrv.Test.Ports, as: :free

  @doc "MemAvailable from /proc/meminfo, in MB."
  def mem_available_mb do
    meminfo = File.read!("/proc/meminfo")
    [kb] = Regex.run(~r/MemAvailable:\s+(\d+) kB/, meminfo, capture: :all_but_first)
    div(String.to_integer(kb), 1024)
  end

  @doc "VmRSS, RssAnon, RssFile (kB) and Threads of an OS process."
  def status(os_pid) do
    case File.read("/proc/#{os_pid}/status") do
      {:ok, text} ->
        for line <- String.split(text, "\n"),
            [key, value] <- [String.split(line, ":", parts: 2)],
            key in ["VmRSS", "RssAnon", "RssFile", "Threads"],
            into: %{} do
          {key, value |> String.trim() |> String.split(" ") |> hd() |> String.to_integer()}
        end

      {:error, _} ->
        %{}
    end
  end

  @doc "Rss and Pss (kB) of the mappings of an OS process whose path contains `part`."
  def mapping_rss(os_pid, part) do
    case File.read("/proc/#{os_pid}/smaps") do
      {:ok, text} ->
        text
        |> String.split(~r/\n(?=[0-9a-f]+-[0-9a-f]+ )/)
        |> Enum.filter(fn entry ->
          entry |> String.split("\n", parts: 2) |> hd() |> String.contains?(part)
        end)
        |> Enum.reduce({0, 0}, fn entry, {rss, pss} ->
          {rss + field(entry, "Rss"), pss + field(entry, "Pss")}
        end)

      {:error, _} ->
        {0, 0}
    end
  end

  defp field(entry, name) do
    case Regex.run(~r/\n#{name}:\s+(\d+) kB/, entry) do
      [_, kb] -> String.to_integer(kb)
      nil -> 0
    end
  end

  @doc "The pids of the direct children of an OS process (e.g. dnsmasq's TCP workers)."
  def children(os_pid) do
    for stat <- Path.wildcard("/proc/[0-9]*/stat"),
        {:ok, text} <- [File.read(stat)],
        [_, rest] <- [String.split(text, ") ", parts: 2)],
        [_state, ppid | _] <- [String.split(rest, " ")],
        ppid == Integer.to_string(os_pid),
        do: stat |> Path.dirname() |> Path.basename() |> String.to_integer()
  end

  def alive?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} -> not (stat |> String.split(") ") |> List.last() |> String.starts_with?("Z"))
      _ -> false
    end
  end

  @doc "SIGTERM, then SIGKILL if the process is still there after `grace_ms`."
  def stop_pid(os_pid, grace_ms \\ 2_000) do
    signal(os_pid, "TERM")

    unless gone_within?(os_pid, div(grace_ms, 20)) do
      signal(os_pid, "KILL")
      gone_within?(os_pid, 100)
    end

    :ok
  end

  @doc "Those of `os_pids` still running after up to `ms` milliseconds."
  def still_running(os_pids, ms) do
    running = Enum.filter(os_pids, &alive?/1)

    if running == [] or ms <= 0,
      do: running,
      else: Process.sleep(min(ms, 50)) && still_running(running, ms - 50)
  end

  @doc "SIGKILL to all of `os_pids` in one command; waits up to 2 s for them to go."
  def kill_all(os_pids) do
    signal_all(os_pids, "KILL")
    still_running(os_pids, 2_000)
    :ok
  end

  @doc """
  Sets the niceness of every thread of `os_pid` (Linux's setpriority acts on one thread, and
  threads started later inherit it). Below 0 needs root: returns `{:error, output}` then.
  """
  def renice(os_pid, niceness) do
    tids = File.ls!("/proc/#{os_pid}/task")
    args = ["-n", Integer.to_string(niceness), "-p" | tids]

    case System.cmd("renice", args, stderr_to_stdout: true) do
      {_, 0} -> :ok
      {output, _} -> {:error, String.trim(output)}
    end
  rescue
    error in [File.Error, ErlangError] -> {:error, Exception.message(error)}
  end

  @doc "One signal to all of `os_pids`, in one command (a fork each is slow on a busy machine)."
  def signal_all([], _sig), do: :ok

  def signal_all(os_pids, sig) do
    args = ["-#{sig}" | Enum.map(os_pids, &Integer.to_string/1)]
    System.cmd("kill", args, stderr_to_stdout: true)
    :ok
  end

  def signal(os_pid, sig) do
    System.cmd("kill", ["-#{sig}", Integer.to_string(os_pid)], stderr_to_stdout: true)
  end

  def gone_within?(os_pid, tries) do
    cond do
      not alive?(os_pid) -> true
      tries <= 0 -> false
      true -> Process.sleep(20) && gone_within?(os_pid, tries - 1)
    end
  end

  @doc """
  Starts an executable in a process that owns its port and throws its output away (so it
  never piles up in a caller's mailbox). Returns `{owner_pid, os_pid}`.
  """
  def spawn_drained(executable, args, env \\ []) do
    parent = self()

    owner =
      spawn(fn ->
        port =
          Port.open({:spawn_executable, executable}, [
            :binary,
            :exit_status,
            :stderr_to_stdout,
            args: args,
            env: env
          ])

        {:os_pid, os_pid} = Port.info(port, :os_pid)
        track(os_pid)
        send(parent, {self(), os_pid})
        drain(port)
      end)

    receive do
      {^owner, os_pid} -> {owner, os_pid}
    after
      10_000 -> raise "could not start #{executable}"
    end
  end

  @doc """
  Appends an OS pid and its start time to `$BENCH_PIDFILE` (set by scripts/bench), whose exit
  trap ends whatever is still running if this VM dies before cleaning up (and only if the pid
  still has that start time, so a reused pid is left alone).
  """
  def track(os_pid) do
    with file when is_binary(file) <- System.get_env("BENCH_PIDFILE"),
         # Field 22 of /proc/<pid>/stat (the 20th after the command name): the start time.
         start when is_binary(start) <- start_time(os_pid) do
      File.write(file, "#{os_pid} #{start}\n", [:append])
    end

    :ok
  end

  @doc "The `{os_pid, start time}` pairs tracked so far whose process still runs."
  def tracked do
    with file when is_binary(file) <- System.get_env("BENCH_PIDFILE"),
         {:ok, text} <- File.read(file) do
      for line <- String.split(text, "\n", trim: true),
          [pid, start] <- [String.split(line)],
          pid = String.to_integer(pid),
          start_time(pid) == start,
          do: {pid, start}
    else
      _ -> []
    end
  end

  defp start_time(os_pid) do
    with {:ok, stat} <- File.read("/proc/#{os_pid}/stat"),
         [_, rest] <- String.split(stat, ") ", parts: 2) do
      rest |> String.split(" ") |> Enum.at(19)
    else
      _ -> nil
    end
  end

  defp drain(port) do
    receive do
      {^port, {:exit_status, _}} -> :ok
      {^port, _data} -> drain(port)
      _other -> drain(port)
    end
  end

  def tmp_dir(tag) do
    dir =
      Path.join(
        System.tmp_dir!(),
        "dynamic_srv_bench_#{tag}_#{:os.getpid()}_#{System.unique_integer([:positive])}"
      )

    File.rm_rf!(dir)
    File.mkdir_p!(dir)
    dir
  end
end
