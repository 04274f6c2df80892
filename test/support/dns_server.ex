defmodule DynamicSrv.Test.DnsServer do
  @moduledoc false
  # A real dnsmasq on a free loopback port, serving the records a test gives it, logging
  # every query. Stopped by its OS pid; the port owner (the test process) dying stops it too.

  defstruct [:port, :os_pid, :owner_port, :dir, :records, listen_address: "127.0.0.1"]

  @dnsmasq "/usr/sbin/dnsmasq"

  @doc """
  Records: `{:srv, name, target, port}`, `{:srv, name, target, port, priority, weight}`,
  `{:a, name, ip_string}` (IPv4 or IPv6).

  Options: `:port`, `:extra` (more dnsmasq arguments), `:tcp_workers` (default `false`),
  `:listen_address` (default `"127.0.0.1"`, e.g. `"::1"`), `:netns` (run inside a network
  namespace made by `DynamicSrv.Test.Netns`).
  By default dnsmasq runs with `--no-daemon`, which also makes it serve TCP inline in its one
  process: a client that keeps its TCP connection open (hickory reuses connections) then
  starves every other client, UDP included. `tcp_workers: true` runs it with
  `--keep-in-foreground` instead, so each TCP connection gets its own child, as in production.
  """
  def start!(records, opts \\ []) do
    unless File.exists?(@dnsmasq) do
      raise "dnsmasq not found at #{@dnsmasq}: apt-get install dnsmasq-base (./scripts/test does)"
    end

    dir =
      Path.join(
        System.tmp_dir!(),
        "dynamic_srv_dns_#{:os.getpid()}_#{System.unique_integer([:positive])}"
      )

    File.rm_rf!(dir)
    File.mkdir_p!(dir)
    port = Keyword.get_lazy(opts, :port, &DynamicSrv.Test.Ports.free/0)
    start_on(port, records, dir, opts)
  end

  defp start_on(port, records, dir, opts) do
    args =
      [
        if(Keyword.get(opts, :tcp_workers, false),
          do: "--keep-in-foreground",
          else: "--no-daemon"
        ),
        "--port=#{port}",
        "--listen-address=#{Keyword.get(opts, :listen_address, "127.0.0.1")}",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--user=#{System.get_env("USER", "root")}",
        "--pid-file=#{dir}/pid",
        "--log-queries",
        "--log-facility=#{dir}/log"
      ] ++
        Enum.map(Keyword.get(opts, :extra, []), & &1) ++
        Enum.map(records, &record_arg/1)

    {executable, args} = DynamicSrv.Test.Netns.wrap(Keyword.get(opts, :netns), @dnsmasq, args)

    owner =
      Port.open({:spawn_executable, executable}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: args
      ])

    {:os_pid, os_pid} = Port.info(owner, :os_pid)

    server = %__MODULE__{
      port: port,
      os_pid: os_pid,
      owner_port: owner,
      dir: dir,
      records: records,
      listen_address: Keyword.get(opts, :listen_address, "127.0.0.1")
    }

    wait_until_answering!(server)
    hand_output_to_drainer(server)
    server
  end

  # With --no-daemon dnsmasq also echoes every log line on stderr: two messages per query that
  # would pile up in the caller's mailbox over a long test. Once it answers, a drainer owns the
  # port and drops them. When the caller exits without stopping the server, the drainer stops
  # it: closing the port alone would leave dnsmasq running until it next writes a log line.
  defp hand_output_to_drainer(%__MODULE__{owner_port: owner} = server) do
    caller = self()

    drainer =
      spawn(fn ->
        ref = Process.monitor(caller)
        drain(server, ref)
      end)

    Port.connect(owner, drainer)
    Process.unlink(owner)
    flush_output(owner)
  end

  defp drain(%__MODULE__{owner_port: owner} = server, ref) do
    receive do
      {^owner, {:exit_status, _}} -> :ok
      {^owner, {:data, _}} -> drain(server, ref)
      {:DOWN, ^ref, :process, _, _} -> stop(server)
    end
  end

  defp flush_output(owner) do
    receive do
      {^owner, {:data, _}} -> flush_output(owner)
    after
      0 -> :ok
    end
  end

  @doc "Stops the server and starts it again on the same port with new records."
  def restart!(%__MODULE__{} = server, records, opts \\ []) do
    stop(server)
    # The old log already says "started": without it, readiness waits for the new server.
    File.rm(Path.join(server.dir, "log"))
    start_on(server.port, records, server.dir, opts)
  end

  # Waits on /proc rather than on the port's exit_status: in on_exit callbacks the caller is
  # not the port owner and would never receive it.
  #
  # With `tcp_workers: true` dnsmasq forks a child per TCP connection, and a child outlives
  # its parent while its client keeps the connection open: it goes on answering with the old
  # records and holds the port, so a new dnsmasq cannot bind it. Those children carry the
  # parent's command line, which names this server's own directory: they are found by it and
  # stopped too.
  def stop(%__MODULE__{os_pid: os_pid} = server) do
    terminate(os_pid)

    for pid <- tcp_workers(server), do: terminate(pid)

    :ok
  end

  defp terminate(os_pid) do
    System.cmd("kill", ["-TERM", Integer.to_string(os_pid)], stderr_to_stdout: true)

    unless gone_within?(os_pid, 250) do
      System.cmd("kill", ["-KILL", Integer.to_string(os_pid)], stderr_to_stdout: true)
      gone_within?(os_pid, 250)
    end
  end

  defp tcp_workers(%__MODULE__{dir: dir}) when is_binary(dir) do
    marker = "--pid-file=#{dir}/pid"

    for entry <- File.ls!("/proc"),
        {pid, ""} <- [Integer.parse(entry)],
        {:ok, cmdline} <- [File.read("/proc/#{entry}/cmdline")],
        marker in String.split(cmdline, <<0>>),
        alive?(pid),
        do: pid
  end

  defp tcp_workers(_server), do: []

  defp gone_within?(os_pid, tries) do
    cond do
      not alive?(os_pid) -> true
      tries == 0 -> false
      true -> Process.sleep(20) && gone_within?(os_pid, tries - 1)
    end
  end

  defp alive?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} -> not (stat |> String.split(") ") |> List.last() |> String.starts_with?("Z"))
      _ -> false
    end
  end

  @doc "Stops the server and removes its files."
  def stop_and_clean(%__MODULE__{dir: dir} = server) do
    stop(server)
    File.rm_rf(dir)
    :ok
  end

  @doc "The server as a `DYNAMIC_SRV_NAMESERVERS` entry, e.g. `127.0.0.1:5353` or `[::1]:5353`."
  def nameserver(%__MODULE__{port: port, listen_address: address}) do
    if String.contains?(address, ":"), do: "[#{address}]:#{port}", else: "#{address}:#{port}"
  end

  @doc "The query lines dnsmasq logged, e.g. `query[SRV] n1.dyn.test from 127.0.0.1`."
  def queries(%__MODULE__{dir: dir}) do
    case File.read(Path.join(dir, "log")) do
      {:ok, text} ->
        for line <- String.split(text, "\n"),
            [_, q] <- [Regex.run(~r/dnsmasq\[\d+\]: (query\[.*)$/, line)],
            do: q

      {:error, _} ->
        []
    end
  end

  defp record_arg({:srv, name, target, port}), do: "--srv-host=#{name},#{target},#{port}"

  defp record_arg({:srv, name, target, port, prio, weight}),
    do: "--srv-host=#{name},#{target},#{port},#{prio},#{weight}"

  defp record_arg({:a, name, ip}), do: "--host-record=#{name},#{ip}"

  defp wait_until_answering!(server, attempts \\ 100) do
    query = Path.join(server.dir, "log")

    cond do
      File.exists?(query) and File.read!(query) =~ "started" ->
        :ok

      attempts == 0 ->
        stop(server)
        raise "dnsmasq did not start on port #{server.port}"

      true ->
        receive do
          {port, {:exit_status, status}} when port == server.owner_port ->
            raise "dnsmasq exited with status #{status} on port #{server.port}"
        after
          50 -> wait_until_answering!(server, attempts - 1)
        end
    end
  end
end
