defmodule DynamicSrv.Test.ReleaseCommands do
  @moduledoc false
  # Runs a Mix release's `bin/APP` commands the way operators do: `start` as a port whose OS
  # pid is the node's (ended by that pid, only while it still runs this release), `rpc` with
  # the value returned as a term, `remote` on a pty. Shared by the release and packaging tests.
  import ExUnit.Assertions
  import ExUnit.Callbacks, only: [on_exit: 1]

  alias DynamicSrv.Test.Mesh

  @command_timeout 60_000

  def start_node!(bin, env) do
    port =
      Port.open({:spawn_executable, bin}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: ["start"],
        env: port_env(env)
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    node = %{port: port, os_pid: os_pid, bin: bin}
    on_exit(fn -> kill_if_ours(os_pid, bin) end)
    node
  end

  # `bin/app start` execs down to beam.smp, so the port's OS pid is the node's. Ended by that
  # pid, and only while it still runs this release (a recycled pid is left alone).
  def kill_if_ours(os_pid, bin) do
    root = bin |> Path.dirname() |> Path.dirname()

    for signal <- ["-TERM", "-KILL"] do
      case File.read("/proc/#{os_pid}/cmdline") do
        {:ok, cmdline} ->
          if String.contains?(cmdline, root) do
            System.cmd("kill", [signal, Integer.to_string(os_pid)], stderr_to_stdout: true)
            Mesh.eventually(fn -> not File.exists?("/proc/#{os_pid}/cmdline") end, 40, 50)
          end

        {:error, _} ->
          :ok
      end
    end

    :ok
  end

  def assert_exit(%{port: port} = node, expected) do
    receive do
      {^port, {:exit_status, status}} -> assert status == expected
    after
      @command_timeout ->
        flunk("node #{node.os_pid} did not exit after bin/#{Path.basename(node.bin)} stop")
    end
  end

  # --- release commands -------------------------------------------------------------------

  # `bin/app rpc` prints what the expression prints (the helper's group leader), so the value
  # travels back as base64 of its external term format.
  def try_rpc_term(bin, env, expression) do
    code = "IO.puts(\"TERM:\" <> Base.encode64(:erlang.term_to_binary(#{expression})))"

    case run!(bin, ["rpc", code], env) do
      {output, 0} ->
        case Regex.run(~r/TERM:([A-Za-z0-9+\/=]+)/, output) do
          [_, encoded] -> {:ok, :erlang.binary_to_term(Base.decode64!(encoded))}
          nil -> {:error, output}
        end

      {output, status} ->
        {:error, {status, output}}
    end
  end

  def rpc_term!(bin, env, expression) do
    case try_rpc_term(bin, env, expression) do
      {:ok, term} -> term
      {:error, reason} -> flunk("bin/#{Path.basename(bin)} rpc #{expression}: #{inspect(reason)}")
    end
  end

  # Runs a command to completion; killed by its pid if it outlives the timeout.
  def run!(executable, args, env) do
    port =
      Port.open({:spawn_executable, executable}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: args,
        env: port_env(env)
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    collect(port, os_pid, "", System.monotonic_time(:millisecond) + @command_timeout)
  end

  defp collect(port, os_pid, acc, deadline) do
    remaining = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^port, {:data, data}} -> collect(port, os_pid, acc <> data, deadline)
      {^port, {:exit_status, status}} -> {acc, status}
    after
      remaining ->
        System.cmd("kill", ["-KILL", Integer.to_string(os_pid)], stderr_to_stdout: true)
        flunk("command timed out; output so far:\n#{acc}")
    end
  end

  # `iex --remsh` needs a terminal (on a pipe IEx falls back to its limited shell and ignores
  # --remsh; so does a terminal without cursor control, such as TERM=dumb), so the shell runs
  # under script(1) with TERM=vt100. Types two expressions, then Ctrl-G q, which
  # quits the helper node and leaves the running node alone.
  def remote_eval!(bin, env) do
    script = System.find_executable("script") || flunk("script(1) not found (bsdutils)")

    port =
      Port.open({:spawn_executable, script}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: ["-qfec", "'#{bin}' remote", "/dev/null"],
        env: port_env(Map.put(env, "TERM", "vt100"))
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)

    on_exit(fn -> kill_if_ours(os_pid, bin) end)

    deadline = System.monotonic_time(:millisecond) + @command_timeout

    output = await_output(port, "", ~r/iex\(.*\)1> /, deadline)

    # The echoed input shows the expressions, never their results ("55", the helper's name).
    Port.command(
      port,
      "IO.puts(\"REMOTE \" <> Atom.to_string(node()) <> \" \" <> Integer.to_string(Enum.sum(1..10)))\r"
    )

    output = await_output(port, output, ~r/REMOTE \S+ \d+/, deadline)
    Port.command(port, "IO.puts(\"HIDDEN \" <> inspect(Node.list(:hidden)))\r")
    output = await_output(port, output, ~r/HIDDEN \[.*\]/, deadline)
    Port.command(port, "\a")
    output = await_output(port, output, ~r/-->/, deadline)
    Port.command(port, "q\r")

    receive do
      {^port, {:exit_status, status}} ->
        assert status == 0, output
        output
    after
      @command_timeout -> flunk("bin/#{Path.basename(bin)} remote did not quit:\n#{output}")
    end
  end

  defp await_output(port, acc, pattern, deadline) do
    if acc =~ pattern do
      acc
    else
      remaining = max(deadline - System.monotonic_time(:millisecond), 0)

      receive do
        {^port, {:data, data}} ->
          await_output(port, acc <> data, pattern, deadline)

        {^port, {:exit_status, status}} ->
          flunk("exited with #{status} before #{inspect(pattern)}:\n#{acc}")
      after
        remaining -> flunk("no #{inspect(pattern)} in:\n#{acc}")
      end
    end
  end

  def port_env(env) do
    for {var, value} <- env do
      {String.to_charlist(var), if(value, do: String.to_charlist(value), else: false)}
    end
  end
end
