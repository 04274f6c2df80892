defmodule DynamicSrv.Bench.Peer do
  @moduledoc false
  # A real BEAM node as an OS process, driven through DynamicSrv.Bench.Agent over stdin/stdout
  # by a process of ours that owns the port. Two arms:
  #   :ours    -epmd_module Elixir.DynamicSrv.Epmd (the NIF), poller DynamicSrv.Cluster
  #   :classic -epmd_module Elixir.DynamicSrv.Bench.ClassicEpmd (no NIF), poller
  #            DynamicSrv.Bench.ClassicPoller
  # (`epmd_module` overrides the arm's: section 8 runs every arm on DynamicSrv.Epmd.)
  # Both arms get the same inetrc (OTP's resolver -> the benchmark's dnsmasq, no cache), the
  # same cookie and flags, and ERL_EPMD_PORT pointing where nothing listens. Ended by OS pid.

  alias DynamicSrv.Bench.{Dns, Os}

  defstruct [:name, :arm, :os_pid, :owner, :dist_port]

  @cookie "dynamic_srv_bench"
  @reply "REPLY "

  @doc """
  Boots nodes in parallel. Each spec is `{name, arm, dist_port}` or `{name, arm, dist_port,
  spec_opts}`; every node resolves through `dns`: the benchmark's dnsmasq (`%Dns{}`) or any
  server on 127.0.0.1 given as `%{port: port, dir: scratch_dir}` (the Consul section's
  ConsulDns). Options, for all nodes or per spec (a spec's `erl_args` come after the shared
  ones, its `env` is merged over them, its `ebin`/`epmd_module` win): `erl_args`, `env`,
  `ebin`, `epmd_module` (default: the arm's), `nice` (run the VM at this niceness). Returns
  the peers in spec order.
  """
  def start_many!(specs, dns, opts \\ []) do
    inetrc = write_inetrc(dns)

    specs
    |> Enum.map(fn
      {name, arm, dist_port} -> launch(name, arm, dist_port, dns, inetrc, opts)
      {name, arm, dist_port, own} -> launch(name, arm, dist_port, dns, inetrc, merge(opts, own))
    end)
    |> Enum.map(&await_ready!/1)
  end

  defp merge(shared, own) do
    Keyword.merge(shared, own, fn
      :erl_args, a, b -> a ++ b
      :env, a, b -> Map.merge(a, b)
      _key, _a, b -> b
    end)
  end

  def start!(name, arm, dist_port, dns, opts \\ []),
    do: hd(start_many!([{name, arm, dist_port}], dns, opts))

  # Both kinds of `dns` are a server at 127.0.0.1:port plus a directory for the inetrc.
  defp write_inetrc(%{dir: dir, port: port}) do
    path = Path.join(dir, "inetrc")
    terms = Dns.inetrc(%Dns{port: port})
    File.write!(path, Enum.map(terms, &:io_lib.format("~p.~n", [&1])))
    path
  end

  defp launch(name, arm, dist_port, dns, inetrc, opts) do
    erl = System.find_executable("erl") || raise "erl not found"

    epmd_module =
      case {opts[:epmd_module], arm} do
        {nil, :ours} -> "Elixir.DynamicSrv.Epmd"
        {nil, :classic} -> "Elixir.DynamicSrv.Bench.ClassicEpmd"
        {module, _arm} -> module
      end

    args =
      ["-noshell", "-start_epmd", "false", "-epmd_module", epmd_module] ++
        ["-name", name, "-setcookie", @cookie, "-kernel", "inetrc", inspect(inetrc)] ++
        Enum.flat_map(code_paths(opts[:ebin]), &["-pa", &1]) ++
        Keyword.get(opts, :erl_args, []) ++
        ["-s", "Elixir.DynamicSrv.Bench.Agent", "main"]

    env =
      %{
        "ERL_DIST_PORT" => Integer.to_string(dist_port),
        "DYNAMIC_SRV_NAMESERVERS" => "127.0.0.1:#{dns.port}",
        "ERL_EPMD_PORT" => Integer.to_string(dead_port()),
        "ERL_CRASH_DUMP_SECONDS" => "0"
      }
      |> Map.merge(Keyword.get(opts, :env, %{}))

    parent = self()

    # nice execs erl: the OS pid is the VM's either way.
    {executable, args} =
      case opts[:nice] do
        nil -> {erl, args}
        n -> {System.find_executable("nice"), ["-n", Integer.to_string(n), erl | args]}
      end

    owner =
      spawn(fn ->
        port =
          Port.open({:spawn_executable, executable}, [
            :binary,
            :exit_status,
            :stderr_to_stdout,
            {:line, 1_000_000},
            args: args,
            env: port_env(env)
          ])

        {:os_pid, os_pid} = Port.info(port, :os_pid)
        Os.track(os_pid)
        send(parent, {self(), :os_pid, os_pid})
        boot(port, parent, [])
      end)

    os_pid =
      receive do
        {^owner, :os_pid, os_pid} -> os_pid
      end

    %__MODULE__{
      name: String.to_atom(name),
      arm: arm,
      os_pid: os_pid,
      owner: owner,
      dist_port: dist_port
    }
  end

  # The owner process: waits for READY, then serves calls one at a time.
  defp boot(port, parent, output) do
    receive do
      {^port, {:data, {:eol, "READY " <> _}}} ->
        send(parent, {self(), :ready})
        serve(port)

      {^port, {:data, {_, line}}} ->
        boot(port, parent, [line | Enum.take(output, 50)])

      {^port, {:exit_status, status}} ->
        send(parent, {self(), :failed, status, output |> Enum.reverse() |> Enum.join("\n")})
    end
  end

  defp serve(port) do
    receive do
      {:call, from, ref, mfa} ->
        Port.command(port, Base.encode64(:erlang.term_to_binary(mfa)) <> "\n")
        send(from, {ref, await_reply(port)})
        serve(port)

      {^port, {:exit_status, _}} ->
        :ok

      {^port, _output} ->
        serve(port)
    end
  end

  defp await_reply(port) do
    receive do
      {^port, {:data, {:eol, @reply <> encoded}}} ->
        :erlang.binary_to_term(Base.decode64!(encoded))

      {^port, {:data, _}} ->
        await_reply(port)

      {^port, {:exit_status, status}} ->
        {:raise, :error, {:node_exited, status}}
    end
  end

  defp await_ready!(%__MODULE__{owner: owner} = peer) do
    receive do
      {^owner, :ready} ->
        peer

      {^owner, :failed, status, output} ->
        raise "node #{peer.name} exited with #{status} at boot:\n#{output}"
    after
      90_000 ->
        Os.stop_pid(peer.os_pid, 0)
        raise "node #{peer.name} did not boot within 90 s"
    end
  end

  @doc "Applies `m.f(a...)` on the peer and returns the result."
  def call(%__MODULE__{} = peer, m, f, a, timeout \\ 60_000) do
    case request(peer, m, f, a, timeout) do
      {:ok, result} -> result
      :no_answer -> raise "#{peer.name} did not answer within #{timeout} ms"
    end
  end

  # The call runs on the peer after the ones before it, whether or not anyone still waits.
  defp request(peer, m, f, a, timeout) do
    ref = make_ref()
    send(peer.owner, {:call, self(), ref, {m, f, a}})

    receive do
      {^ref, {:ok, result}} -> {:ok, result}
      {^ref, {:raise, kind, reason}} -> raise "#{peer.name}: #{inspect({kind, reason})}"
    after
      timeout -> :no_answer
    end
  end

  @doc "The same call on every peer, concurrently; results in peer order."
  def call_all(peers, m, f, a, timeout \\ 60_000) do
    peers
    |> Enum.map(fn peer -> Task.async(fn -> call(peer, m, f, a, timeout) end) end)
    |> Task.await_many(timeout + 1_000)
  end

  @doc """
  Like `call_all/5`, for a watch that must outlast nodes too busy to answer: `{:ok, result}`
  per peer, or `:no_answer` for one that did not answer within `timeout`.
  """
  def call_each(peers, m, f, a, timeout) do
    peers
    |> Enum.map(fn peer -> Task.async(fn -> request(peer, m, f, a, timeout) end) end)
    |> Task.await_many(timeout + 1_000)
  end

  @doc """
  Halts the nodes (closing stdin halts them too); SIGKILL by pid to those still running 5 s
  later, all at once: a hundred busy VMs waited for one by one took minutes.
  """
  def stop_all(peers) do
    for peer <- peers, Process.alive?(peer.owner) do
      send(peer.owner, {:call, self(), make_ref(), {:erlang, :halt, [0]}})
    end

    pids = Enum.map(peers, & &1.os_pid)
    Os.kill_all(Os.still_running(pids, 5_000))
    Enum.each(peers, &Process.exit(&1.owner, :kill))
    :ok
  end

  # `ebin`: another build of this library (its NIF is looked up in ../priv/native).
  defp code_paths(ebin) do
    own = ebin || :code.lib_dir(:libcluster_dynamic_srv) |> to_string() |> Path.join("ebin")

    [
      own
      | for(app <- [:elixir, :logger], do: :code.lib_dir(app) |> to_string() |> Path.join("ebin"))
    ]
  end

  defp port_env(env) do
    cleared =
      for var <- ~w(ERL_DIST_PORT DYNAMIC_SRV_NAMESERVERS DYNAMIC_SRV_PORT_MODE
                    DYNAMIC_SRV_LOOKUP_TIMEOUT_MS DYNAMIC_SRV_MIN_TTL_MS DYNAMIC_SRV_MAX_STALE_S
                    ERL_AFLAGS ERL_FLAGS ERL_ZFLAGS ELIXIR_ERL_OPTIONS ERL_LIBS),
          do: {String.to_charlist(var), false}

    cleared ++ for({k, v} <- env, do: {String.to_charlist(k), v && String.to_charlist(v)})
  end

  @doc "A port nothing listens on, for ERL_EPMD_PORT: any use of epmd fails."
  def dead_port do
    case :persistent_term.get({__MODULE__, :dead_port}, nil) do
      nil ->
        port = Os.free_port()
        :persistent_term.put({__MODULE__, :dead_port}, port)
        port

      port ->
        port
    end
  end
end
