defmodule DynamicSrv.Test.NodeAgent do
  @moduledoc false
  # Runs inside every BEAM node the integration tests boot. Reads requests from stdin, one
  # per line: base64 of term_to_binary({mod, fun, args}); answers on stdout with
  # "REPLY <base64 of term_to_binary({:ok, result} | {:raise, kind, reason})>". Stdin
  # closing (the test VM went away) halts the node, so no node outlives its test.

  @reply "REPLY "

  def main do
    {:ok, _} = Application.ensure_all_started(:elixir)
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
end
