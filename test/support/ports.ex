defmodule DynamicSrv.Test.Ports do
  @moduledoc false
  # Free loopback ports for the nodes and DNS servers that tests and benchmarks start.

  @doc """
  A loopback port free for both TCP and UDP right now, never handed out twice in this VM (two
  nodes of one test must not get one port: the kernel can give a just-closed port again), and
  below the kernel's ephemeral range, so an outgoing connection (the nodes open many) cannot
  take it between now and the moment a node or a DNS server binds it.
  """
  def free(tries \\ 500) do
    {low, high} = candidate_range()
    port = low + :rand.uniform(high - low + 1) - 1

    cond do
      tries == 0 -> raise "no free port in #{low}..#{high}"
      :ets.member(handed_out(), port) -> free(tries - 1)
      bindable?(port) and :ets.insert_new(handed_out(), {port}) -> port
      true -> free(tries - 1)
    end
  end

  defp bindable?(port) do
    with {:ok, tcp} <- :gen_tcp.listen(port, ip: {127, 0, 0, 1}),
         :ok <- :gen_tcp.close(tcp),
         {:ok, udp} <- :gen_udp.open(port, ip: {127, 0, 0, 1}) do
      :gen_udp.close(udp)
      true
    else
      _ -> false
    end
  end

  defp candidate_range do
    ephemeral_low =
      with {:ok, text} <- File.read("/proc/sys/net/ipv4/ip_local_port_range"),
           [low | _] <- String.split(text) do
        String.to_integer(low)
      else
        _ -> 32_768
      end

    if ephemeral_low > 12_000, do: {10_000, ephemeral_low - 1}, else: {61_000, 65_000}
  end

  # A table that outlives the test process that first asks (tests run in processes of their own).
  defp handed_out do
    case :ets.whereis(__MODULE__) do
      :undefined ->
        parent = self()

        spawn(fn ->
          # Another process may have made it first: then this one ends.
          try do
            :ets.new(__MODULE__, [:named_table, :public, :set])
            send(parent, {:table, __MODULE__})
            Process.sleep(:infinity)
          rescue
            ArgumentError -> send(parent, {:table, __MODULE__})
          end
        end)

        receive do
          {:table, _} -> __MODULE__
        after
          5_000 -> raise "could not create the port table"
        end

      _ ->
        __MODULE__
    end
  end
end
