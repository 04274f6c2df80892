defmodule DynamicSrv.Test.Peer do
  @moduledoc false
  # Boots a real BEAM node as an OS process with our epmd module and no epmd daemon, and
  # drives it through DynamicSrv.Test.NodeAgent over stdin/stdout. Ended by its OS pid.

  defstruct [:name, :os_pid, :port, :env, boot_output: []]

  @cookie "dynamic_srv_test"

  @doc """
  Starts a node named `name` (e.g. `"n1@dyn.test"`) with the given environment. Every node
  gets `ERL_EPMD_PORT` pointing at a port where nothing listens, so any use of epmd fails.
  Options: `:erl_args` (extra VM arguments), `:dist` (`"-name"`, default; `"-sname"`;
  `:none` for a node that is not distributed), `:netns` (run the
  node inside a network namespace made by `DynamicSrv.Test.Netns`), `:epmd_config` (how the
  VM is told to use DynamicSrv.Epmd: `:flag`, the default, for `-epmd_module`; `:kernel` for
  the kernel parameter `-kernel epmd_module "'Elixir.DynamicSrv.Epmd'"`; `:both`; `:none`
  for the stock epmd module), `:start_epmd_false` (default `true`; `false` leaves out
  `-start_epmd false`, so the VM starts an epmd daemon on `ERL_EPMD_PORT`), `:cd` (the
  node's working directory), `:stderr_to` (a file that receives the node's stderr alone; the
  output returned is then stdout only).
  """
  def start!(name, env, opts \\ []) do
    case start(name, env, opts) do
      {:ok, peer} -> peer
      {:error, status, output} -> raise "node #{name} exited with #{status} at boot:\n#{output}"
    end
  end

  @doc "Starts a node; `{:error, exit_status, output}` if it dies before it is ready."
  def start(name, env, opts \\ []) do
    erl = System.find_executable("erl") || raise "erl not found"

    args =
      ["-noshell"] ++
        if(Keyword.get(opts, :start_epmd_false, true), do: ["-start_epmd", "false"], else: []) ++
        epmd_config(Keyword.get(opts, :epmd_config, :flag)) ++
        dist_args(Keyword.get(opts, :dist, "-name"), name) ++
        Enum.flat_map(code_paths(), &["-pa", &1]) ++
        Keyword.get(opts, :erl_args, []) ++
        ["-s", "Elixir.DynamicSrv.Test.NodeAgent", "main"]

    {executable, args} = DynamicSrv.Test.Netns.wrap(Keyword.get(opts, :netns), erl, args)
    {executable, args} = stderr_to(Keyword.get(opts, :stderr_to), executable, args)

    port =
      Port.open(
        {:spawn_executable, executable},
        [
          :binary,
          :exit_status,
          :stderr_to_stdout,
          {:line, 1_000_000},
          args: args,
          env: port_env(env)
        ] ++ if(cd = Keyword.get(opts, :cd), do: [cd: cd], else: [])
      )

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    peer = %__MODULE__{name: String.to_atom(name), os_pid: os_pid, port: port, env: env}

    case await_ready(port, []) do
      {:ok, lines} -> {:ok, %{peer | boot_output: lines}}
      {:exit, status, output} -> {:error, status, output}
    end
  end

  # `dist: :none` boots a node that is not distributed (`name` is then only a label).
  defp dist_args(:none, _name), do: ["-setcookie", @cookie]
  defp dist_args(flag, name), do: [flag, name, "-setcookie", @cookie]

  # Through sh for the redirection; `exec` keeps the OS pid the port reports the node's.
  defp stderr_to(nil, executable, args), do: {executable, args}

  defp stderr_to(file, executable, args) do
    quoted = "'" <> String.replace(file, "'", ~S('\'')) <> "'"
    {"/bin/sh", ["-c", ~s(exec "$0" "$@" 2>) <> quoted, executable | args]}
  end

  # Arguments go to the VM as they are (no shell): the inner quotes are part of the value.
  defp epmd_config(:flag), do: ["-epmd_module", "Elixir.DynamicSrv.Epmd"]
  defp epmd_config(:kernel), do: ["-kernel", "epmd_module", "'Elixir.DynamicSrv.Epmd'"]
  defp epmd_config(:both), do: epmd_config(:flag) ++ epmd_config(:kernel)
  defp epmd_config(:none), do: []

  @doc "Boots a node expected to refuse to start; returns `{exit_status, output}`."
  def boot_failure(name, env, opts \\ []) do
    case start(name, env, opts) do
      {:error, status, output} ->
        {status, output}

      {:ok, peer} ->
        stop(peer)
        flunk_started(name)
    end
  end

  defp flunk_started(name),
    do: raise(ExUnit.AssertionError, "node #{name} started but was expected to refuse")

  @doc "Applies `m.f(a...)` on the peer and returns the result (re-raising its exceptions)."
  def call(%__MODULE__{port: port} = peer, m, f, a, timeout \\ 30_000) do
    Port.command(port, Base.encode64(:erlang.term_to_binary({m, f, a})) <> "\n")
    await_reply(peer, timeout)
  end

  @doc "Halts the node, then SIGKILLs its OS pid if it has not exited within 5 s."
  def stop(%__MODULE__{port: port, os_pid: os_pid}) do
    if request_halt(port) do
      receive do
        {^port, {:exit_status, _}} -> :ok
      after
        5_000 -> kill(os_pid)
      end
    end

    unless wait_gone(os_pid, 100) do
      kill(os_pid)
      wait_gone(os_pid, 100)
    end

    :ok
  end

  # false when the port has closed: the VM exited by itself (perhaps since any check).
  defp request_halt(port) do
    Port.command(port, Base.encode64(:erlang.term_to_binary({:erlang, :halt, [0]})) <> "\n")
  rescue
    ArgumentError -> false
  end

  @doc "SIGKILLs the node, as a crash would."
  def kill(%__MODULE__{os_pid: os_pid} = peer) do
    kill(os_pid)
    wait_gone(os_pid, 100)
    close_port(peer.port)
  end

  def kill(os_pid) when is_integer(os_pid) do
    System.cmd("kill", ["-KILL", Integer.to_string(os_pid)], stderr_to_stdout: true)
  end

  # The port also closes by itself once the VM's exit reaches it, which can come between any
  # check and the close: a closed port is the outcome wanted, not an error.
  defp close_port(port) do
    Port.close(port)
    :ok
  rescue
    ArgumentError -> :ok
  end

  defp wait_gone(_os_pid, 0), do: false

  defp wait_gone(os_pid, tries) do
    if File.exists?("/proc/#{os_pid}") and not zombie?(os_pid) do
      Process.sleep(20)
      wait_gone(os_pid, tries - 1)
    else
      true
    end
  end

  defp zombie?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} -> stat |> String.split(") ") |> List.last() |> String.starts_with?("Z")
      _ -> true
    end
  end

  defp code_paths do
    own = :code.lib_dir(:libcluster_dynamic_srv) |> to_string() |> Path.join("ebin")
    elixir = :code.lib_dir(:elixir) |> to_string() |> Path.join("ebin")
    logger = :code.lib_dir(:logger) |> to_string() |> Path.join("ebin")
    [own, elixir, logger]
  end

  # Start from a clean slate: no inherited distribution or DynamicSrv settings.
  defp port_env(env) do
    cleared =
      for var <- ~w(ERL_DIST_PORT DYNAMIC_SRV_NAMESERVERS DYNAMIC_SRV_PORT_MODE
                    DYNAMIC_SRV_LOOKUP_TIMEOUT_MS DYNAMIC_SRV_MIN_TTL_MS DYNAMIC_SRV_MAX_STALE_S
                    ERL_AFLAGS ERL_FLAGS ERL_ZFLAGS ELIXIR_ERL_OPTIONS),
          do: {String.to_charlist(var), false}

    defaults = %{
      "ERL_EPMD_PORT" => Integer.to_string(dead_port()),
      "ERL_CRASH_DUMP_SECONDS" => "0"
    }

    set =
      for {k, v} <- Map.merge(defaults, env),
          do: {String.to_charlist(k), if(v, do: String.to_charlist(v), else: false)}

    cleared ++ set
  end

  @doc "A port nothing listens on, shared by every node of the run, used as ERL_EPMD_PORT."
  def dead_port do
    case :persistent_term.get({__MODULE__, :dead_port}, nil) do
      nil ->
        port = DynamicSrv.Test.Ports.free()
        :persistent_term.put({__MODULE__, :dead_port}, port)
        port

      port ->
        port
    end
  end

  defp await_ready(port, acc) do
    receive do
      # Every line the node printed before READY, for tests that assert a quiet boot.
      {^port, {:data, {:eol, "READY " <> _}}} -> {:ok, Enum.reverse(acc)}
      {^port, {:data, {_, line}}} -> await_ready(port, [line | acc])
      {^port, {:exit_status, status}} -> {:exit, status, acc |> Enum.reverse() |> Enum.join("\n")}
    after
      30_000 -> {:exit, :timeout, acc |> Enum.reverse() |> Enum.join("\n")}
    end
  end

  defp await_reply(%__MODULE__{port: port, name: name} = peer, timeout) do
    receive do
      {^port, {:data, {:eol, "REPLY " <> encoded}}} ->
        case :erlang.binary_to_term(Base.decode64!(encoded)) do
          {:ok, result} -> result
          {:raise, kind, reason} -> :erlang.raise(kind, reason, [])
        end

      {^port, {:data, _other_output}} ->
        await_reply(peer, timeout)

      {^port, {:exit_status, status}} ->
        raise "node #{name} exited with status #{status}"
    after
      timeout -> raise "node #{name} did not answer within #{timeout} ms"
    end
  end
end
