# One node of ./scripts/demo (not meant to be run by hand; scripts/demo starts three).
#
#   elixir --erl "-start_epmd false -epmd_module Elixir.DynamicSrv.Epmd ..." --name n1@dyn.test \
#     scripts/demo_node.exs DIR PARENT_PID peer|driver [OTHER_NODE ...]
#
# Every node writes DIR/<name>.ready ("<os pid>") once distribution is up, then stays up until
# DIR/stop exists, PARENT_PID (the demo script) is gone, or two minutes have passed, so no
# node outlives the demo even if the script is killed with SIGKILL.
#
# The driver (n1) additionally waits for DIR/go, connects to the other nodes with plain
# Node.connect/1, checks the mesh and that epmd was not used, appends what it finds to
# DIR/report and writes DIR/result ("ok" or the failures, one per line).

defmodule DynamicSrv.Demo do
  @max_life_ms 120_000
  @poll_ms 100

  def main([dir, parent, role | others]) do
    deadline = System.monotonic_time(:millisecond) + @max_life_ms
    File.write!(Path.join(dir, "#{node()}.ready"), System.pid())

    if role == "driver" do
      wait_for(dir, parent, deadline, fn -> File.exists?(Path.join(dir, "go")) end)
      result = drive(dir, Enum.map(others, &String.to_atom/1))
      File.write!(Path.join(dir, "result"), result)
    end

    wait_for(dir, parent, deadline, fn -> false end)
  end

  # Polls `done?` and halts the VM when the demo is over, whatever we were waiting for.
  defp wait_for(dir, parent, deadline, done?) do
    cond do
      File.exists?(Path.join(dir, "stop")) ->
        System.halt(0)

      not parent_alive?(parent) ->
        System.halt(0)

      System.monotonic_time(:millisecond) > deadline ->
        System.halt(0)

      done?.() ->
        :ok

      true ->
        Process.sleep(@poll_ms)
        wait_for(dir, parent, deadline, done?)
    end
  end

  defp parent_alive?(parent) do
    not File.dir?("/proc/self") or File.exists?("/proc/#{parent}")
  end

  defp drive(dir, others) do
    report = Path.join(dir, "report")
    say = fn line -> File.write!(report, [line, "\n"], [:append]) end
    all = [node() | others]

    for other <- others do
      say.("#{node()}: Node.connect(#{inspect(other)}) = #{inspect(Node.connect(other))}")
    end

    mesh =
      case eventually(fn -> full_mesh?(all) end, 50) do
        true ->
          "full mesh: yes (the other pair connected on its own, through :global)"

        false ->
          # :global normally joins the other pair within milliseconds; if it did not, ask them.
          for a <- others, b <- others, a < b do
            say.("#{a}: Node.connect(#{inspect(b)}) = #{inspect(rpc(a, Node, :connect, [b]))}")
          end

          if eventually(fn -> full_mesh?(all) end, 50),
            do: "full mesh: yes (once the other pair was asked to connect)",
            else: "full mesh: NO"
      end

    for n <- all, do: say.("#{n} Node.list() = #{inspect(Enum.sort(node_list(n)))}")
    say.(mesh)

    # One line per failure, "mesh: ..." or "epmd: ...", for scripts/demo to report.
    failures =
      if(full_mesh?(all), do: [], else: ["mesh: the three nodes did not form a full mesh"]) ++
        Enum.flat_map(all, fn n -> epmd_check(n, say) end)

    case failures do
      [] -> "ok\n"
      _ -> Enum.map(failures, &[&1, "\n"])
    end
  end

  defp epmd_check(n, say) do
    case rpc(n, :net_kernel, :epmd_module, []) do
      {:rpc_failed, _, reason} ->
        say.("#{n}: unreachable (#{inspect(reason)}), epmd facts not checked")
        ["epmd: #{n} unreachable, could not check that it did not use epmd"]

      epmd_module ->
        erl_epmd = rpc(n, Process, :whereis, [:erl_epmd])
        start_epmd = rpc(n, :init, :get_argument, [:start_epmd])
        names = rpc(n, :erl_epmd, :names, [])

        say.(
          "#{n}: epmd_module=#{inspect(epmd_module)}, start_epmd=#{format_arg(start_epmd)}, " <>
            "Process.whereis(:erl_epmd)=#{inspect(erl_epmd)}, :erl_epmd.names()=#{inspect(names)}"
        )

        [
          epmd_module == DynamicSrv.Epmd || "#{n}: epmd_module is #{inspect(epmd_module)}",
          erl_epmd == nil || "#{n}: :erl_epmd is running (#{inspect(erl_epmd)})",
          start_epmd == {:ok, [[~c"false"]]} || "#{n}: -start_epmd is #{inspect(start_epmd)}",
          match?({:error, _}, names) ||
            "#{n}: an epmd answered :erl_epmd.names(): #{inspect(names)}"
        ]
        |> Enum.reject(&(&1 == true))
        |> Enum.map(&"epmd: #{&1}")
    end
  end

  defp format_arg({:ok, [[value]]}), do: to_string(value)
  defp format_arg(other), do: inspect(other)

  defp full_mesh?(all) do
    Enum.all?(all, fn n -> Enum.sort(node_list(n)) == Enum.sort(all -- [n]) end)
  end

  defp node_list(n) do
    case rpc(n, Node, :list, []) do
      list when is_list(list) -> list
      _error -> []
    end
  end

  defp rpc(n, m, f, a) when n == node(), do: apply(m, f, a)

  defp rpc(n, m, f, a) do
    :erpc.call(n, m, f, a, 5_000)
  catch
    kind, reason -> {:rpc_failed, kind, reason}
  end

  defp eventually(fun, tries) do
    cond do
      fun.() ->
        true

      tries <= 1 ->
        false

      true ->
        Process.sleep(100)
        eventually(fun, tries - 1)
    end
  end
end

DynamicSrv.Demo.main(System.argv())
