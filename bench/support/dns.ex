defmodule DynamicSrv.Bench.Dns do
  @moduledoc false
  # One dnsmasq on a free loopback port, records from a conf file, every query logged.
  # Started and stopped by its OS pid. Each (re)start logs to a new file; `queries/1` counts
  # the queries of every start so far.

  defstruct [:port, :os_pid, :owner, :dir, :logs, :ttl]

  @dnsmasq "/usr/sbin/dnsmasq"

  @doc """
  Records: `{:srv, name, target, port}`, `{:a, name, ip}`. Option `:ttl` (seconds) sets
  `--local-ttl`; without it dnsmasq serves its local records with TTL 0, like Consul.
  """
  def start!(records, opts \\ []) do
    File.exists?(@dnsmasq) ||
      raise "dnsmasq not found at #{@dnsmasq} (apt-get install dnsmasq-base)"

    dir = DynamicSrv.Bench.Os.tmp_dir("dns")
    port = DynamicSrv.Bench.Os.free_port()
    launch(%__MODULE__{port: port, dir: dir, logs: [], ttl: opts[:ttl]}, records)
  end

  def restart!(%__MODULE__{} = dns, records) do
    stop(dns)
    launch(%{dns | os_pid: nil, owner: nil}, records)
  end

  defp launch(dns, records, attempts \\ 20) do
    n = length(dns.logs)
    conf = Path.join(dns.dir, "records#{n}.conf")
    log = Path.join(dns.dir, "query#{n}.log")
    File.write!(conf, Enum.map(records, &line/1))

    args =
      [
        "--keep-in-foreground",
        "--port=#{dns.port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--user=#{System.get_env("USER", "root")}",
        "--pid-file=#{dns.dir}/pid",
        "--log-queries",
        "--log-facility=#{log}",
        "--conf-file=#{conf}"
      ] ++ if(dns.ttl, do: ["--local-ttl=#{dns.ttl}"], else: [])

    {owner, os_pid} = DynamicSrv.Bench.Os.spawn_drained(@dnsmasq, args)
    dns = %{dns | owner: owner, os_pid: os_pid, logs: dns.logs ++ [log]}

    case await_started(dns, log, 200) do
      :ok ->
        dns

      {:exit, _status} when attempts > 0 ->
        # The port may still be held by the previous instance for a moment.
        Process.sleep(50)
        launch(%{dns | logs: Enum.drop(dns.logs, -1)}, records, attempts - 1)

      other ->
        raise "dnsmasq did not start on port #{dns.port}: #{inspect(other)}"
    end
  end

  defp await_started(dns, log, tries) do
    owner = dns.owner

    cond do
      File.exists?(log) and File.read!(log) =~ "started" ->
        :ok

      tries == 0 ->
        DynamicSrv.Bench.Os.stop_pid(dns.os_pid)
        :timeout

      true ->
        if Process.alive?(owner) do
          Process.sleep(20)
          await_started(dns, log, tries - 1)
        else
          {:exit, :gone}
        end
    end
  end

  # dnsmasq forks a worker per TCP connection; those are ended too, by pid, all at once: one
  # by one, each given a grace period, a restart amid 200 polling nodes took up to 80 s.
  # Stopped first, so it forks no worker between the listing and the kill; dnsmasq keeps
  # nothing a graceful end would save (its query log is written as it goes).
  def stop(%__MODULE__{os_pid: os_pid, owner: owner}) do
    alias DynamicSrv.Bench.Os
    Os.signal_all([os_pid], "STOP")
    Os.kill_all([os_pid | Os.children(os_pid)])
    Process.exit(owner, :kill)
    :ok
  end

  def stop_and_clean(%__MODULE__{} = dns) do
    stop(dns)
    File.rm_rf(dns.dir)
    :ok
  end

  def nameserver(%__MODULE__{port: port}), do: "127.0.0.1:#{port}"
  def nameservers(%__MODULE__{port: port}), do: [{{127, 0, 0, 1}, port}]

  @doc "The inetrc terms that point OTP's own resolver at this server, with no cache."
  def inetrc(%__MODULE__{port: port}) do
    [
      {:lookup, [:dns]},
      {:resolv_conf, ~c"/dev/null"},
      {:hosts_file, ~c"/dev/null"},
      {:nameserver, {127, 0, 0, 1}, port},
      {:cache_size, 0}
    ]
  end

  @doc """
  Query counts so far, by type (\"SRV\", \"A\", ...) and `:total`; with `only`, a regex, just
  the queries for names it matches.
  """
  def queries(%__MODULE__{logs: logs}, only \\ nil) do
    types =
      for log <- logs,
          {:ok, text} <- [File.read(log)],
          [_, type, name] <- Regex.scan(~r/: query\[(\w+)\] (\S+) from/, text),
          only == nil or Regex.match?(only, name),
          reduce: %{} do
        acc -> Map.update(acc, type, 1, &(&1 + 1))
      end

    Map.put(types, :total, types |> Map.values() |> Enum.sum())
  end

  def total(dns), do: queries(dns).total

  @doc "Counts minus an earlier count."
  def diff(now, before) do
    Map.new(now, fn {k, v} -> {k, v - Map.get(before, k, 0)} end)
  end

  defp line({:srv, name, target, port}), do: "srv-host=#{name},#{target},#{port}\n"
  defp line({:a, name, ip}), do: "host-record=#{name},#{ip}\n"
end
